// --readonly through the real session (request bytes in, reply bytes out): every request that
// would change the share gets EROFS and the host tree is left exactly as it was (names, modes,
// sizes, contents, times, xattrs); reads, listings, xattr reads, locks and syncs still work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { FuseSession } from '../../src/fuse/session';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { FuseClient } from '../support/fuse-client';
import { directTransport } from '../support/direct-transport';
import {
  F_RDLCK, F_UNLCK, O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, R_OK, RENAME_EXCHANGE, S_IFREG, W_OK, X_OK,
} from '../../src/linux/constants';
import { E } from '../../src/linux/constants';

const native = loadNative();

/** Everything about the tree a change could touch. */
function snapshot(dir: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const walk = (rel: string): void => {
    const p = path.join(dir, rel);
    const st = fs.lstatSync(p, { bigint: true });
    const xattrs = Buffer.alloc(4096);
    const n = st.isSymbolicLink() ? 0 : native.listxattr(p, xattrs, false);
    const names = n > 0 ? xattrs.subarray(0, n).toString('latin1').split('\0').filter(Boolean).sort() : [];
    const values = names.map((x) => {
      const b = Buffer.alloc(256);
      const len = native.getxattr(p, x, b, false);
      return `${x}=${b.subarray(0, Math.max(len, 0)).toString('hex')}`;
    });
    out[rel || '.'] = {
      mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, nlink: st.nlink, ino: st.ino, mtime: st.mtimeNs, ctime: st.ctimeNs,
      xattrs: values,
      data: st.isFile() ? fs.readFileSync(p).toString('hex') : st.isSymbolicLink() ? fs.readlinkSync(p) : fs.readdirSync(p).sort(),
    };
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(rel, e));
  };
  walk('');
  return out;
}

test('--readonly: every change is EROFS and the host tree is untouched; reads, listings, locks work', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-ro-'));
  fs.writeFileSync(path.join(dir, 'f'), 'hello, world');
  fs.mkdirSync(path.join(dir, 'd'));
  fs.writeFileSync(path.join(dir, 'd', 'g'), 'g');
  fs.symlinkSync('f', path.join(dir, 'l'));
  assert.equal(native.setxattr(path.join(dir, 'f'), 'user.k', Buffer.from('v'), 0, false), 0);
  const pfs = new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, xattr: true, readonly: true }, silentLogger);
  const c = new FuseClient(directTransport(new FuseSession(pfs, silentLogger, { probes: pfs, rangeIo: pfs })));
  try {
    assert.equal((await c.init()).error, 0);
    const before = snapshot(dir);

    // Reads.
    const f = (await c.lookup(1, 'f')).entry!;
    const d = (await c.lookup(1, 'd')).entry!;
    const l = (await c.lookup(1, 'l')).entry!;
    assert.equal(f.attr.mode & S_IFREG, S_IFREG);
    assert.equal((await c.getattr(f.nodeid)).error, 0);
    const o = await c.open(f.nodeid, O_RDONLY);
    assert.equal(o.error, 0, 'OPEN for reading');
    const r = await c.read(f.nodeid, o.fh!, 7, 5);
    assert.equal(r.body.toString(), 'world');
    assert.equal((await c.open(f.nodeid, O_RDONLY | O_APPEND)).error, 0, 'O_APPEND alone asks for no write');
    assert.equal((await c.readlink(l.nodeid)).body.toString(), 'f');
    const dh = await c.opendir(1);
    assert.deepEqual((await c.readdirAll(1, dh.fh!)).map((e) => e.name).sort(), ['.', '..', 'd', 'f', 'l']);
    assert.deepEqual((await c.readdirAll(1, dh.fh!, 4096, true)).filter((e) => e.entry && e.entry.nodeid !== 0n).map((e) => e.name).sort(), ['d', 'f', 'l']);
    assert.equal((await c.releasedir(1, dh.fh!)).error, 0);
    assert.equal((await c.statfs(1)).error, 0);
    assert.equal((await c.getxattr(f.nodeid, 'user.k', 64)).body.toString(), 'v');
    assert.ok((await c.listxattr(f.nodeid, 256)).body.toString('latin1').includes('user.k\0'));
    assert.equal((await c.access(f.nodeid, R_OK)).error, 0);
    assert.equal((await c.access(d.nodeid, R_OK | X_OK)).error, 0);
    assert.equal((await c.setlk(f.nodeid, o.fh!, 3n, 0n, 9n, F_RDLCK)).error, 0, 'a read lock');
    assert.equal((await c.setlk(f.nodeid, o.fh!, 3n, 0n, 9n, F_UNLCK)).error, 0);
    assert.equal((await c.setlk(f.nodeid, o.fh!, 3n, 0n, 0n, F_RDLCK, { flock: true })).error, 0, 'a shared flock');
    assert.equal((await c.fsync(f.nodeid, o.fh!)).error, 0);
    assert.equal((await c.lseek(f.nodeid, o.fh!, 0, 2 /* SEEK_END */)).offset, 12n);
    assert.equal((await c.syncfs(1)).error, 0);

    // Changes: each one EROFS.
    const erofs = async (what: string, p: Promise<{ error: number }>): Promise<void> => {
      assert.equal((await p).error, -E.EROFS, what);
    };
    await erofs('SETATTR mode', c.setattr(f.nodeid, { mode: 0o600 }));
    await erofs('SETATTR size', c.setattr(f.nodeid, { size: 0 }));
    await erofs('SETATTR size on an open file', c.setattr(f.nodeid, { size: 1, fh: o.fh! }));
    await erofs('SETATTR times', c.setattr(f.nodeid, { mtime: 'now' }));
    await erofs('SETATTR owner', c.setattr(f.nodeid, { uid: 1 }));
    await erofs('MKDIR', c.mkdir(1, 'new'));
    await erofs('MKNOD', c.mknod(1, 'node', S_IFREG | 0o644));
    await erofs('SYMLINK', c.symlink(1, 'sl', 'f'));
    await erofs('LINK', c.link(f.nodeid, 1, 'hard'));
    await erofs('UNLINK', c.unlink(1, 'f'));
    await erofs('UNLINK of a name that is not there', c.unlink(1, 'nothing'));
    await erofs('RMDIR', c.rmdir(1, 'd'));
    await erofs('RENAME', c.rename(1, 'f', d.nodeid, 'f2'));
    await erofs('RENAME2 exchange', c.rename(1, 'f', 1, 'd', RENAME_EXCHANGE));
    await erofs('CREATE', c.create(1, 'new', O_CREAT | O_RDWR));
    await erofs('CREATE of an existing name', c.create(1, 'f', O_CREAT | O_RDONLY));
    await erofs('CREATE O_EXCL', c.create(1, 'f', O_CREAT | O_EXCL | O_WRONLY));
    await erofs('TMPFILE', c.create(1, '', O_RDWR, 0o600, 0o022, true));
    await erofs('OPEN O_WRONLY', c.open(f.nodeid, O_WRONLY));
    await erofs('OPEN O_RDWR', c.open(f.nodeid, O_RDWR));
    await erofs('OPEN O_TRUNC', c.open(f.nodeid, O_RDONLY | O_TRUNC));
    await erofs('WRITE', c.write(f.nodeid, o.fh!, 0, Buffer.from('XX')));
    await erofs('FALLOCATE', c.fallocate(f.nodeid, o.fh!, 0, 4096));
    await erofs('COPY_FILE_RANGE', c.copyFileRange(f.nodeid, o.fh!, 0, f.nodeid, o.fh!, 100, 5));
    await erofs('SETXATTR', c.setxattr(f.nodeid, 'user.k', Buffer.from('w')));
    await erofs('SETXATTR new', c.setxattr(f.nodeid, 'user.n', Buffer.from('w')));
    await erofs('REMOVEXATTR', c.removexattr(f.nodeid, 'user.k'));
    await erofs('ACCESS W_OK', c.access(f.nodeid, W_OK));

    // Still served after all that.
    assert.equal((await c.read(f.nodeid, o.fh!, 0, 64)).body.toString(), 'hello, world');
    assert.equal((await c.flush(f.nodeid, o.fh!, 3n)).error, 0);
    assert.equal((await c.release(f.nodeid, o.fh!)).error, 0);
    assert.deepEqual(snapshot(dir), before, 'the host tree is as it was');
  } finally {
    pfs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
