// Extended attributes, path and fd forms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';

const n = loadNative();
const E = os.constants.errno;
const C = fs.constants;
const AT_FDCWD = -100;
const O_PATH = 0o10000000;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;

function names(buf: Uint8Array, len: number): string[] {
  return Buffer.from(buf.subarray(0, len)).toString('latin1').split('\0').filter(Boolean).sort();
}

test('xattr set/get/list/remove on a tmp file (path and fd forms, size probes)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-xattr-'));
  try {
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, '');
    const first = n.setxattr(p, 'user.one', Buffer.from('value-1'), 0, false);
    if (first === -E.EOPNOTSUPP) {
      t.skip(`${os.tmpdir()} does not support user xattrs (setxattr returned EOPNOTSUPP)`);
      return;
    }
    assert.equal(first, 0);
    assert.equal(n.setxattr(p, 'user.one', Buffer.from('x'), XATTR_CREATE, false), -E.EEXIST);
    assert.equal(n.setxattr(p, 'user.none', Buffer.from('x'), XATTR_REPLACE, false), -E.ENODATA);

    assert.equal(n.getxattr(p, 'user.one', new Uint8Array(0), false), 7, 'size probe');
    const buf = new Uint8Array(64);
    assert.equal(n.getxattr(p, 'user.one', buf, false), 7);
    assert.equal(Buffer.from(buf.subarray(0, 7)).toString(), 'value-1');
    assert.equal(n.getxattr(p, 'user.one', new Uint8Array(3), false), -E.ERANGE);
    assert.equal(n.getxattr(p, 'user.missing', buf, false), -E.ENODATA);

    const fd = n.openat(AT_FDCWD, p, C.O_RDONLY, 0);
    try {
      assert.equal(n.fsetxattr(fd, 'user.two', new Uint8Array(0), 0), 0, 'empty value');
      assert.equal(n.fgetxattr(fd, 'user.two', buf), 0);
      assert.equal(n.fgetxattr(fd, 'user.one', buf), 7);
      const size = n.flistxattr(fd, new Uint8Array(0));
      assert.equal(size, 'user.one\0user.two\0'.length);
      assert.deepEqual(names(buf, n.flistxattr(fd, buf)), ['user.one', 'user.two']);
      assert.deepEqual(names(buf, n.listxattr(p, buf, false)), ['user.one', 'user.two']);
      assert.equal(n.fremovexattr(fd, 'user.two'), 0);
      assert.equal(n.fremovexattr(fd, 'user.two'), -E.ENODATA);
    } finally {
      n.close(fd);
    }

    // O_PATH fds cannot use f*xattr; the /proc/self/fd path form works.
    const opath = n.openat(AT_FDCWD, p, O_PATH, 0);
    try {
      assert.equal(n.fgetxattr(opath, 'user.one', buf), -E.EBADF);
      assert.equal(n.getxattr(`/proc/self/fd/${opath}`, 'user.one', buf, false), 7);
    } finally {
      n.close(opath);
    }

    // nofollow acts on the symlink itself (user.* is not allowed on symlinks).
    fs.symlinkSync('f', path.join(dir, 'l'));
    const l = path.join(dir, 'l');
    assert.equal(n.getxattr(l, 'user.one', buf, false), 7, 'followed');
    assert.equal(n.getxattr(l, 'user.one', buf, true), -E.ENODATA, 'not followed');
    assert.equal(n.setxattr(l, 'user.x', Buffer.from('1'), 0, true), -E.EPERM);
    assert.equal(n.listxattr(l, buf, true), 0);

    assert.equal(n.removexattr(p, 'user.one', false), 0);
    assert.equal(n.listxattr(p, buf, false), 0);
    assert.equal(n.removexattr(p, 'user.one', true), -E.ENODATA);

    assert.equal(n.getxattr(path.join(dir, 'missing'), 'user.one', buf, false), -E.ENOENT);
    assert.equal(n.setxattr(p, 'user.a\0b', Buffer.from('1'), 0, false), -E.EINVAL);
    assert.throws(() => n.getxattr(p, 'user.one', buf, 0 as unknown as boolean), TypeError);
    assert.throws(() => n.setxattr(p, 'user.one', 'v' as unknown as Uint8Array, 0, false), TypeError);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
