// Extended attributes through the passthrough (src/passthrough/xattr.ts) on a real file: off
// without --xattr, the POSIX ACL names hidden and refused without --posix-acl, symlinks refused,
// the replay probe (hasXattr) agreeing with GETXATTR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STAT_SLOTS } from '../../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { XATTR_CREATE, XATTR_REPLACE } from '../../src/linux/constants';
import { E } from '../../src/linux/constants';

const native = loadNative();
const CTX = { uid: 0, gid: 0, pid: 1 };
const ACL = 'system.posix_acl_access';
/** acl(5) in its xattr form: version 2, then (tag u16, perm u16, id u32) entries in tag order:
 *  user::rw-, user:1000:r--, group::r--, mask::r--, other::r-- (not one a mode can stand for, so
 *  the kernel keeps it as an xattr). */
function aclValue(): Buffer {
  const entries: Array<[number, number, number]> = [[0x01, 6, -1], [0x02, 4, 1000], [0x04, 4, -1], [0x10, 4, -1], [0x20, 4, -1]];
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeInt32LE(id, 8 + 8 * i);
  });
  return b;
}
const ACL_VALUE = aclValue();

function setup(t: { after: (fn: () => void) => void }, o: { xattr: boolean; posixAcl?: boolean }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-pxattr-'));
  fs.writeFileSync(path.join(dir, 'f'), 'f');
  fs.symlinkSync('f', path.join(dir, 'l'));
  const pfs = new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, memfdState: false, xattr: o.xattr, posixAcl: o.posixAcl ?? false }, silentLogger);
  t.after(() => {
    pfs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const st = new BigUint64Array(STAT_SLOTS);
  const node = (name: string): number => {
    const e = pfs.lookup(CTX, 1, name, st);
    assert.ok(typeof e !== 'number');
    return e.nodeid;
  };
  const get = (nodeid: number, name: string): string | number => {
    const buf = Buffer.alloc(256);
    const r = pfs.getxattr(CTX, nodeid, name, buf);
    return r < 0 ? r : buf.subarray(0, r).toString('latin1');
  };
  const list = (nodeid: number): string[] | number => {
    const buf = Buffer.alloc(1024);
    const r = pfs.listxattr(CTX, nodeid, buf);
    return r < 0 ? r : buf.subarray(0, r).toString('latin1').split('\0').filter(Boolean).sort();
  };
  return { pfs, dir, f: node('f'), l: node('l'), get, list };
}

test('without --xattr: set and remove EOPNOTSUPP, get ENODATA, an empty list; the host keeps its xattrs', (t) => {
  const { pfs, dir, f, get, list } = setup(t, { xattr: false });
  assert.equal(native.setxattr(path.join(dir, 'f'), 'user.host', Buffer.from('h'), 0, false), 0);
  assert.equal(pfs.setxattr(CTX, f, 'user.k', Buffer.from('v'), 0), -E.EOPNOTSUPP);
  assert.equal(get(f, 'user.host'), -E.ENODATA);
  assert.equal(pfs.listxattr(CTX, f, Buffer.alloc(0)), 0, 'size probe: nothing');
  assert.deepEqual(list(f), []);
  assert.equal(pfs.removexattr(CTX, f, 'user.host'), -E.EOPNOTSUPP);
  assert.equal(pfs.hasXattr(CTX, f, 'user.host'), false);
  assert.equal(native.getxattr(path.join(dir, 'f'), 'user.host', Buffer.alloc(8), false), 1, 'untouched');
});

test('with --xattr: set, get, list, remove; CREATE and REPLACE as setxattr(2); other flag bits are not passed on', (t) => {
  const { pfs, f, get, list } = setup(t, { xattr: true });
  assert.equal(pfs.setxattr(CTX, f, 'user.k', Buffer.from('v1'), XATTR_CREATE), 0);
  assert.equal(pfs.setxattr(CTX, f, 'user.k', Buffer.from('v2'), XATTR_CREATE), -E.EEXIST);
  assert.equal(pfs.setxattr(CTX, f, 'user.n', Buffer.from('x'), XATTR_REPLACE), -E.ENODATA);
  assert.equal(pfs.setxattr(CTX, f, 'user.k', Buffer.from('v3'), XATTR_REPLACE | 0x100), 0);
  assert.equal(get(f, 'user.k'), 'v3');
  assert.equal(pfs.getxattr(CTX, f, 'user.k', Buffer.alloc(0)), 2, 'size probe');
  assert.equal(pfs.getxattr(CTX, f, 'user.k', Buffer.alloc(1)), -E.ERANGE);
  assert.equal(pfs.hasXattr(CTX, f, 'user.k'), true);
  assert.deepEqual(list(f), ['user.k']);
  assert.equal(pfs.removexattr(CTX, f, 'user.k'), 0);
  assert.equal(pfs.removexattr(CTX, f, 'user.k'), -E.ENODATA);
  assert.equal(pfs.hasXattr(CTX, f, 'user.k'), false);
  assert.equal(get(4242, 'user.k'), -E.EBADF);
});

test('without --posix-acl the ACL xattrs are neither seen nor set; with it, they are', (t) => {
  const off = setup(t, { xattr: true });
  assert.equal(native.setxattr(path.join(off.dir, 'f'), ACL, ACL_VALUE, 0, false), 0, 'an ACL on the host');
  assert.equal(native.setxattr(path.join(off.dir, 'f'), 'user.k', Buffer.from('v'), 0, false), 0);
  assert.equal(native.listxattr(path.join(off.dir, 'f'), Buffer.alloc(256), false), `${ACL}\0user.k\0`.length, 'the host lists both');
  assert.deepEqual(off.list(off.f), ['user.k']);
  assert.ok(off.pfs.listxattr(CTX, off.f, Buffer.alloc(0)) >= 'user.k\0'.length, 'a size probe may count them (an upper bound)');
  assert.equal(off.get(off.f, ACL), -E.ENODATA);
  assert.equal(off.pfs.setxattr(CTX, off.f, ACL, ACL_VALUE, 0), -E.EOPNOTSUPP);
  assert.equal(off.pfs.removexattr(CTX, off.f, ACL), -E.EOPNOTSUPP);
  assert.equal(off.pfs.hasXattr(CTX, off.f, ACL), false);

  const on = setup(t, { xattr: true, posixAcl: true });
  assert.equal(on.pfs.setxattr(CTX, on.f, ACL, ACL_VALUE, 0), 0);
  assert.deepEqual(on.list(on.f), [ACL]);
  assert.equal(on.pfs.hasXattr(CTX, on.f, ACL), true);
});

test('a symlink\'s xattrs are not served: its /proc path would name the magic link', (t) => {
  const { pfs, l, get, list } = setup(t, { xattr: true });
  assert.equal(pfs.setxattr(CTX, l, 'user.k', Buffer.from('v'), 0), -E.EOPNOTSUPP);
  assert.equal(get(l, 'user.k'), -E.ENODATA);
  assert.deepEqual(list(l), []);
  assert.equal(pfs.removexattr(CTX, l, 'user.k'), -E.EOPNOTSUPP);
});
