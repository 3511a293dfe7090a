// Every FUSE opcode a Linux 6.1 virtio-fs guest sends, with its error cases, checked against
// what the host file system says. Runs over any transport: straight into a FuseSession, or
// over vhost-user against our daemon or the C virtiofsd (peer = 'c' notes where it differs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants as os } from 'node:os';
import { FuseClient } from './fuse-client';
import { OP } from '../../src/fuse/abi';

export interface SuiteEnv {
  client: FuseClient;
  /** The host directory being served. */
  dir: string;
  teardown(): Promise<void>;
  /** Stop and restart the device's rings (as a VM stop/cont does), where the transport has rings. */
  stopRings?(): Promise<void>;
}

export interface SuiteOptions {
  peer: 'ts' | 'c';
  /** The daemon was started with xattr support. */
  xattr: boolean;
  setup(): Promise<SuiteEnv>;
}

const E = os.errno;
const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFIFO = 0o010000, S_IFCHR = 0o020000;
const O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0o100, O_EXCL = 0o200, O_TRUNC = 0o1000, O_APPEND = 0o2000;

export function defineOpSuite(name: string, o: SuiteOptions): void {
  let env: SuiteEnv;
  let c: FuseClient;
  let dir: string;
  const host = (...p: string[]): string => path.join(dir, ...p);
  const ts = o.peer === 'ts';

  /** Look a name up under the root and return its node id (asserting success). */
  async function node(name: string, parent: bigint | number = 1): Promise<bigint> {
    const r = await c.lookup(parent, name);
    assert.equal(r.error, 0, `lookup ${name}: ${r.error}`);
    return r.entry!.nodeid;
  }

  async function createFile(name: string, data = ''): Promise<{ nodeid: bigint; fh: bigint }> {
    const r = await c.create(1, name, O_RDWR | O_CREAT, 0o644);
    assert.equal(r.error, 0, `create ${name}: ${r.error}`);
    if (data) assert.equal((await c.write(r.entry!.nodeid, r.fh!, 0, Buffer.from(data))).size, data.length);
    return { nodeid: r.entry!.nodeid, fh: r.fh! };
  }

  test(name, async (t) => {
    env = await o.setup();
    c = env.client;
    dir = env.dir;
    t.after(async () => env.teardown());

    await t.test('INIT negotiates protocol 7.x with a 1 MiB max_write', async () => {
      const r = await c.init();
      assert.equal(r.error, 0);
      assert.equal(r.body.readUInt32LE(0), 7);
      if (ts) {
        assert.equal(r.body.readUInt32LE(4), 38);
        assert.equal(r.body.readUInt32LE(20), 1 << 20);
      }
    });

    await t.test('GETATTR of the root describes the shared directory', async () => {
      const r = await c.getattr(1);
      assert.equal(r.error, 0);
      const st = fs.statSync(dir, { bigint: true });
      assert.equal(r.attr!.ino, st.ino);
      assert.equal(r.attr!.mode & S_IFMT, S_IFDIR);
    });

    await t.test('LOOKUP returns the host attributes and one node id per host inode', async () => {
      fs.writeFileSync(host('a.txt'), 'hello');
      fs.linkSync(host('a.txt'), host('a-link'));
      const r = await c.lookup(1, 'a.txt');
      assert.equal(r.error, 0);
      const st = fs.statSync(host('a.txt'), { bigint: true });
      assert.equal(r.entry!.attr.ino, st.ino);
      assert.equal(r.entry!.attr.size, 5n);
      assert.equal(r.entry!.attr.mode, Number(st.mode));
      assert.equal((await c.lookup(1, 'a.txt')).entry!.nodeid, r.entry!.nodeid);
      assert.equal((await c.lookup(1, 'a-link')).entry!.nodeid, r.entry!.nodeid, 'a hard link is the same node');
    });

    await t.test('LOOKUP errors: missing name, unknown parent, names that are not one component', async () => {
      assert.equal((await c.lookup(1, 'missing')).error, -E.ENOENT);
      assert.equal((await c.lookup(987654, 'x')).error, ts ? -E.EBADF : -E.ENOENT);
      assert.equal((await c.lookup(1, 'x'.repeat(300))).error, -E.ENAMETOOLONG);
      if (ts) {
        assert.equal((await c.lookup(1, 'a/b')).error, -E.EINVAL);
        assert.equal((await c.lookup(1, '..')).error, -E.EINVAL);
      }
    });

    await t.test('LOOKUP does not follow symlinks, and a symlink is not a directory to look into', async () => {
      fs.symlinkSync('/', host('escape'));
      const r = await c.lookup(1, 'escape');
      assert.equal(r.error, 0);
      assert.equal(r.entry!.attr.mode & S_IFMT, S_IFLNK);
      assert.equal((await c.lookup(r.entry!.nodeid, 'etc')).error, -E.ENOTDIR);
      const l = await c.readlink(r.entry!.nodeid);
      assert.equal(l.body.toString(), '/');
    });

    await t.test('FORGET releases a node once its lookup count reaches zero; BATCH_FORGET too', async () => {
      fs.writeFileSync(host('forget-me'), 'x');
      const a = await c.lookup(1, 'forget-me');
      await c.lookup(1, 'forget-me');
      await c.forget(a.entry!.nodeid, 1);
      assert.equal((await c.getattr(a.entry!.nodeid)).error, 0, 'one reference left');
      const fr = await c.forget(a.entry!.nodeid, 1);
      assert.equal(fr.len, 0, 'FORGET is returned to the used ring with no reply');
      if (ts) assert.equal((await c.getattr(a.entry!.nodeid)).error, -E.EBADF);
      const b = await c.lookup(1, 'forget-me');
      await c.batchForget([[b.entry!.nodeid, 1], [123456, 5]]);
      if (ts) assert.equal((await c.getattr(b.entry!.nodeid)).error, -E.EBADF);
    });

    await t.test('SETATTR changes mode, owner, size and times', async () => {
      const { nodeid, fh } = await createFile('attrs', 'abcdef');
      let r = await c.setattr(nodeid, { mode: 0o600 });
      assert.equal(r.error, 0);
      assert.equal(r.attr!.mode & 0o7777, 0o600);
      assert.equal(fs.statSync(host('attrs')).mode & 0o7777, 0o600);
      r = await c.setattr(nodeid, { uid: 1234, gid: 4321 });
      assert.equal(r.error, 0);
      assert.equal(fs.statSync(host('attrs')).uid, 1234);
      assert.equal(fs.statSync(host('attrs')).gid, 4321);
      r = await c.setattr(nodeid, { size: 2 });
      assert.equal(r.attr!.size, 2n);
      assert.equal(fs.readFileSync(host('attrs'), 'utf8'), 'ab');
      r = await c.setattr(nodeid, { size: 10, fh });
      assert.equal(fs.statSync(host('attrs')).size, 10);
      r = await c.setattr(nodeid, { atime: [1000, 5], mtime: [2000, 7] });
      assert.equal(r.attr!.mtime, 2000n);
      assert.equal(r.attr!.atime, 1000n);
      assert.equal(Math.floor(fs.statSync(host('attrs')).mtimeMs), 2000000);
      r = await c.setattr(nodeid, { mtime: 'now' });
      assert.ok(r.attr!.mtime > 2000n);
      assert.equal((await c.setattr(nodeid, { size: 1, fh: 99999 })).error, -E.EBADF);
      await c.release(nodeid, fh);
    });

    await t.test('SETATTR with KILL_SUIDGID clears setuid', async () => {
      if (!ts) return;
      const { nodeid, fh } = await createFile('suid', 'x');
      await c.setattr(nodeid, { mode: 0o4755 });
      const r = await c.setattr(nodeid, { size: 0, killSuidgid: true });
      assert.equal(r.error, 0);
      assert.equal(fs.statSync(host('suid')).mode & 0o7777, 0o755);
      await c.release(nodeid, fh);
    });

    await t.test('READLINK and SYMLINK', async () => {
      const r = await c.symlink(1, 'sl', 'target/path');
      assert.equal(r.error, 0);
      assert.equal(r.entry!.attr.mode & S_IFMT, S_IFLNK);
      assert.equal(fs.readlinkSync(host('sl')), 'target/path');
      assert.equal((await c.readlink(r.entry!.nodeid)).body.toString(), 'target/path');
      assert.equal((await c.symlink(1, 'sl', 'x')).error, -E.EEXIST);
      assert.equal((await c.readlink(1)).error, ts ? -E.EINVAL : -E.ENOENT);
    });

    await t.test('MKNOD makes FIFOs and regular files; MKDIR makes directories', async () => {
      let r = await c.mknod(1, 'fifo', S_IFIFO | 0o644);
      assert.equal(r.error, 0);
      assert.ok(fs.statSync(host('fifo')).isFIFO());
      r = await c.mknod(1, 'plain', S_IFREG | 0o640);
      assert.equal(r.error, 0);
      assert.equal(fs.statSync(host('plain')).mode & 0o7777, 0o640);
      assert.equal((await c.mknod(1, 'plain', S_IFREG | 0o640)).error, -E.EEXIST);
      r = await c.mkdir(1, 'd1', 0o750);
      assert.equal(r.error, 0);
      assert.equal(r.entry!.attr.mode & S_IFMT, S_IFDIR);
      assert.equal(fs.statSync(host('d1')).mode & 0o7777, 0o750);
      assert.equal((await c.mkdir(1, 'd1')).error, -E.EEXIST);
      assert.equal((await c.mkdir(424242, 'x')).error, -E.EBADF);
    });

    await t.test('new files belong to the requesting uid/gid', async () => {
      c.uid = 1000; c.gid = 1000;
      try {
        fs.chmodSync(dir, 0o777);
        const r = await c.mkdir(1, 'owned', 0o755);
        assert.equal(r.error, 0);
        const st = fs.statSync(host('owned'));
        assert.equal(st.uid, 1000);
        assert.equal(st.gid, 1000);
        assert.equal(r.entry!.attr.uid, 1000);
        const f = await c.create(1, 'owned-file', O_RDWR | O_CREAT, 0o600);
        assert.equal(f.error, 0);
        assert.equal(fs.statSync(host('owned-file')).uid, 1000);
        await c.release(f.entry!.nodeid, f.fh!);
      } finally {
        c.uid = 0; c.gid = 0;
      }
    });

    await t.test('UNLINK and RMDIR remove entries with the host errors', async () => {
      fs.writeFileSync(host('gone'), '');
      fs.mkdirSync(host('full'));
      fs.writeFileSync(host('full', 'x'), '');
      // A guest looks a name up before it removes it (the C virtiofsd answers EIO otherwise).
      for (const n of ['gone', 'full', 'a.txt']) await node(n);
      assert.equal((await c.unlink(1, 'gone')).error, 0);
      assert.ok(!fs.existsSync(host('gone')));
      assert.equal((await c.unlink(1, 'gone')).error, ts ? -E.ENOENT : -E.EIO);
      assert.equal((await c.unlink(1, 'full')).error, -E.EISDIR);
      assert.equal((await c.rmdir(1, 'full')).error, -E.ENOTEMPTY);
      assert.equal((await c.rmdir(1, 'a.txt')).error, -E.ENOTDIR);
      fs.unlinkSync(host('full', 'x'));
      assert.equal((await c.rmdir(1, 'full')).error, 0);
    });

    await t.test('RENAME and RENAME2 (NOREPLACE, EXCHANGE, WHITEOUT)', async () => {
      fs.writeFileSync(host('r1'), '1');
      fs.writeFileSync(host('r2'), '2');
      fs.mkdirSync(host('rdir'));
      const rdir = await node('rdir');
      await node('r1');
      await node('r2');
      assert.equal((await c.rename(1, 'r1', rdir, 'moved')).error, 0);
      await node('moved', rdir);
      assert.equal(fs.readFileSync(host('rdir', 'moved'), 'utf8'), '1');
      assert.equal((await c.rename(rdir, 'moved', 1, 'r2')).error, 0, 'rename over an existing file');
      assert.equal(fs.readFileSync(host('r2'), 'utf8'), '1');
      assert.equal((await c.rename(1, 'nope', 1, 'x')).error, ts ? -E.ENOENT : -E.EIO);
      fs.writeFileSync(host('r3'), '3');
      await node('r3');
      assert.equal((await c.rename(1, 'r3', 1, 'r2', 1)).error, -E.EEXIST, 'NOREPLACE');
      assert.equal((await c.rename(1, 'r3', 1, 'r2', 2)).error, 0, 'EXCHANGE');
      assert.equal(fs.readFileSync(host('r2'), 'utf8'), '3');
      assert.equal(fs.readFileSync(host('r3'), 'utf8'), '1');
      const w = await c.rename(1, 'r3', 1, 'r4', 4);
      assert.equal(w.error, 0, 'WHITEOUT');
      const st = fs.statSync(host('r3'));
      assert.ok(st.isCharacterDevice() && st.rdev === 0, 'a whiteout is left behind');
      assert.equal((await c.rename(1, 'r4', 1, 'r5', 64)).error, -E.EINVAL);
    });

    await t.test('LINK makes a hard link to the same node', async () => {
      fs.writeFileSync(host('orig'), 'o');
      const n = await node('orig');
      const r = await c.link(n, 1, 'hard');
      assert.equal(r.error, 0);
      assert.equal(r.entry!.nodeid, n);
      assert.equal(r.entry!.attr.nlink, 2);
      assert.equal(fs.statSync(host('hard')).ino, fs.statSync(host('orig')).ino);
      assert.equal((await c.link(n, 1, 'hard')).error, -E.EEXIST);
    });

    await t.test('OPEN, READ, WRITE, FLUSH, RELEASE', async () => {
      fs.writeFileSync(host('rw'), 'hello world');
      const n = await node('rw');
      const o1 = await c.open(n, O_RDWR);
      assert.equal(o1.error, 0);
      let r = await c.read(n, o1.fh!, 6, 100);
      assert.equal(r.error, 0);
      assert.equal(r.body.toString(), 'world');
      assert.equal((await c.read(n, o1.fh!, 1000, 10)).body.length, 0, 'read past EOF');
      const w = await c.write(n, o1.fh!, 0, Buffer.from('HELLO'));
      assert.equal(w.size, 5);
      assert.equal(fs.readFileSync(host('rw'), 'utf8'), 'HELLO world');
      assert.equal((await c.flush(n, o1.fh!)).error, 0);
      assert.equal((await c.release(n, o1.fh!)).error, 0);
      if (ts) assert.equal((await c.read(n, o1.fh!, 0, 10)).error, -E.EBADF, 'released handle');
      if (ts) assert.equal((await c.release(n, o1.fh!)).error, -E.EBADF, 'a second RELEASE finds no handle');
      const ro = await c.open(n, O_RDONLY);
      assert.equal((await c.write(n, ro.fh!, 0, Buffer.from('x'))).error, -E.EBADF, 'write on a read-only open');
      await c.release(n, ro.fh!);
      assert.equal((await c.open(1, O_WRONLY)).error, -E.EISDIR);
      const tr = await c.open(n, O_WRONLY | O_TRUNC);
      assert.equal(fs.statSync(host('rw')).size, 0, 'O_TRUNC');
      await c.release(n, tr.fh!);
      fs.writeFileSync(host('app'), 'ab');
      const an = await node('app');
      const ap = await c.open(an, O_WRONLY | O_APPEND);
      await c.write(an, ap.fh!, 0, Buffer.from('cd'));
      assert.equal(fs.readFileSync(host('app'), 'utf8'), 'abcd', 'O_APPEND appends');
      await c.release(an, ap.fh!);
    });

    await t.test('1 MiB READ and WRITE move whole buffers', async () => {
      const data = Buffer.alloc(1 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
      const { nodeid, fh } = await createFile('big');
      assert.equal((await c.write(nodeid, fh, 0, data)).size, data.length);
      const r = await c.read(nodeid, fh, 0, 1 << 20);
      assert.ok(r.body.equals(data));
      assert.ok(fs.readFileSync(host('big')).equals(data));
      await c.release(nodeid, fh);
    });

    await t.test('CREATE opens a new file; O_EXCL fails on an existing one', async () => {
      const r = await c.create(1, 'created', O_RDWR | O_CREAT | O_EXCL, 0o640);
      assert.equal(r.error, 0);
      assert.equal(r.entry!.attr.mode, S_IFREG | 0o640);
      assert.equal(fs.statSync(host('created')).mode & 0o777, 0o640);
      assert.equal((await c.create(1, 'created', O_RDWR | O_CREAT | O_EXCL)).error, -E.EEXIST);
      await c.release(r.entry!.nodeid, r.fh!);
    });

    await t.test('FSYNC, FSYNCDIR and SYNCFS succeed', async () => {
      const { nodeid, fh } = await createFile('synced', 'data');
      assert.equal((await c.fsync(nodeid, fh)).error, 0);
      assert.equal((await c.fsync(nodeid, fh, true)).error, 0);
      const d = await c.opendir(1);
      assert.equal((await c.fsync(1, d.fh!, false, true)).error, 0);
      await c.releasedir(1, d.fh!);
      assert.equal((await c.syncfs(1)).error, 0);
      await c.release(nodeid, fh);
    });

    await t.test('STATFS reports the host file system', async () => {
      const r = await c.statfs(1);
      assert.equal(r.error, 0);
      const s = fs.statfsSync(dir, { bigint: true });
      assert.equal(r.blocks, s.blocks);
      assert.equal(BigInt(r.bsize!), s.bsize);
    });

    await t.test('extended attributes', async () => {
      const { nodeid, fh } = await createFile('xa');
      if (!o.xattr) {
        assert.equal((await c.setxattr(nodeid, 'user.k', Buffer.from('v'))).error, ts ? -E.EOPNOTSUPP : -E.ENOSYS);
        return;
      }
      assert.equal((await c.setxattr(nodeid, 'user.k', Buffer.from('value'))).error, 0);
      let r = await c.getxattr(nodeid, 'user.k', 0);
      assert.equal(r.body.readUInt32LE(0), 5, 'size probe');
      r = await c.getxattr(nodeid, 'user.k', 64);
      assert.equal(r.body.toString(), 'value');
      assert.equal((await c.getxattr(nodeid, 'user.k', 2)).error, -E.ERANGE);
      assert.equal((await c.getxattr(nodeid, 'user.none', 64)).error, -E.ENODATA);
      assert.equal((await c.setxattr(nodeid, 'user.k', Buffer.from('x'), 1)).error, -E.EEXIST, 'XATTR_CREATE');
      assert.equal((await c.setxattr(nodeid, 'user.z', Buffer.from('x'), 2)).error, -E.ENODATA, 'XATTR_REPLACE');
      const l = await c.listxattr(nodeid, 256);
      assert.ok(l.body.toString('latin1').split('\0').includes('user.k'));
      assert.equal((await c.removexattr(nodeid, 'user.k')).error, 0);
      assert.equal((await c.removexattr(nodeid, 'user.k')).error, -E.ENODATA);
      await c.release(nodeid, fh);
    });

    await t.test('READDIR lists exactly the host entries across many small calls', async () => {
      fs.mkdirSync(host('many'));
      const names = new Set<string>();
      for (let i = 0; i < 1500; i++) {
        const nm = `file-${i}-${'y'.repeat(i % 40)}`;
        fs.writeFileSync(host('many', nm), '');
        names.add(nm);
      }
      const n = await node('many');
      const d = await c.opendir(n);
      assert.equal(d.error, 0);
      const all = await c.readdirAll(n, d.fh!, 1024);
      const got = all.map((e) => e.name).filter((x) => x !== '.' && x !== '..');
      assert.equal(got.length, 1500, 'no entry lost or repeated');
      assert.deepEqual(new Set(got), names);
      await c.releasedir(n, d.fh!);
    });

    await t.test('READDIRPLUS returns entries with node ids that the guest then holds', async () => {
      fs.mkdirSync(host('plus'));
      fs.writeFileSync(host('plus', 'p1'), '12345');
      fs.mkdirSync(host('plus', 'p2'));
      const n = await node('plus');
      const d = await c.opendir(n);
      const all = await c.readdirAll(n, d.fh!, 4096, true);
      const p1 = all.find((e) => e.name === 'p1')!;
      assert.ok(p1.entry && p1.entry.nodeid > 0n);
      assert.equal(p1.entry.attr.size, 5n);
      assert.equal(p1.entry.nodeid, await node('p1', n), 'same node as a LOOKUP');
      await c.releasedir(n, d.fh!);
    });

    await t.test('OPENDIR of a file fails; READDIR on a bad handle fails', async () => {
      const n = await node('a.txt');
      assert.equal((await c.opendir(n)).error, -E.ENOTDIR);
      if (ts) assert.equal((await c.readdir(1, 77777, 0, 4096)).error, -E.EBADF);
    });

    await t.test('POSIX locks: GETLK sees a conflict, SETLK fails fast, SETLKW waits', async () => {
      if (!ts) return; // the C virtiofsd answers ENOSYS unless started with -o posix_lock
      const { nodeid, fh } = await createFile('locked', 'x'.repeat(100));
      const F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2;
      const MAX = 0x7fffffffffffffffn;
      const pid = c.pid;
      c.pid = 4242;
      assert.equal((await c.setlk(nodeid, fh, 1n, 0n, MAX, F_WRLCK)).error, 0);
      c.pid = pid;
      const g = await c.getlk(nodeid, fh, 2n, 0n, 10n, F_RDLCK);
      assert.equal(g.error, 0);
      assert.equal(g.lock!.type, F_WRLCK, 'owner 2 sees owner 1 lock');
      assert.equal(g.lock!.pid, 4242, 'with the pid that took it');
      assert.equal((await c.getlk(nodeid, fh, 1n, 0n, 10n, F_WRLCK)).lock!.type, F_UNLCK, 'own lock is no conflict');
      assert.equal((await c.setlk(nodeid, fh, 2n, 0n, 10n, F_WRLCK)).error, -E.EAGAIN);
      const waiting = c.setlk(nodeid, fh, 2n, 0n, 10n, F_WRLCK, { sleep: true });
      let done = false;
      void waiting.then(() => { done = true; });
      await new Promise((r) => setTimeout(r, 30));
      assert.equal(done, false, 'SETLKW blocks while the lock is held');
      assert.equal((await c.setlk(nodeid, fh, 1n, 0n, MAX, F_UNLCK)).error, 0);
      assert.equal((await waiting).error, 0, 'SETLKW succeeds once released');
      assert.equal((await c.flush(nodeid, fh, 2n)).error, 0, 'FLUSH drops owner 2 locks');
      if (env.stopRings) {
        // A SETLKW still waiting when the device stops finishes with EINTR, so QEMU's
        // GET_VRING_BASE is not held up forever.
        assert.equal((await c.setlk(nodeid, fh, 1n, 0n, MAX, F_WRLCK)).error, 0);
        const stuck = c.setlk(nodeid, fh, 3n, 0n, 10n, F_WRLCK, { sleep: true });
        await new Promise((r) => setTimeout(r, 20));
        await env.stopRings();
        assert.equal((await stuck).error, -E.EINTR);
      }
      assert.equal((await c.setlk(nodeid, fh, 1n, 0n, 10n, F_WRLCK)).error, 0);
      await c.release(nodeid, fh);
    });

    await t.test('flock locks through FUSE_LK_FLOCK', async () => {
      if (!ts) return;
      const { nodeid, fh } = await createFile('flocked');
      const o2 = await c.open(nodeid, O_RDWR);
      assert.equal((await c.setlk(nodeid, fh, 1n, 0n, 0n, 1, { flock: true })).error, 0);
      assert.equal((await c.setlk(nodeid, o2.fh!, 2n, 0n, 0n, 1, { flock: true })).error, -E.EAGAIN);
      assert.equal((await c.setlk(nodeid, fh, 1n, 0n, 0n, 2, { flock: true })).error, 0);
      assert.equal((await c.setlk(nodeid, o2.fh!, 2n, 0n, 0n, 1, { flock: true })).error, 0);
      await c.release(nodeid, fh);
      await c.release(nodeid, o2.fh!);
    });

    await t.test('ACCESS', async () => {
      if (!ts) return; // the C virtiofsd has no access op (ENOSYS)
      assert.equal((await c.access(1, 0)).error, 0);
      assert.equal((await c.access(1, 7)).error, 0);
    });

    await t.test('FALLOCATE, LSEEK (SEEK_DATA/SEEK_HOLE) and COPY_FILE_RANGE', async () => {
      const { nodeid, fh } = await createFile('sparse');
      assert.equal((await c.fallocate(nodeid, fh, 0, 8192)).error, 0);
      assert.equal(fs.statSync(host('sparse')).size, 8192);
      assert.equal((await c.write(nodeid, fh, 0, Buffer.from('head'))).size, 4);
      assert.equal((await c.write(nodeid, fh, 1 << 20, Buffer.from('tail'))).size, 4);
      const SEEK_DATA = 3, SEEK_HOLE = 4;
      const hole = await c.lseek(nodeid, fh, 0, SEEK_HOLE);
      assert.equal(hole.error, 0);
      assert.ok(hole.offset! >= 4n && hole.offset! <= 1n << 20n, `hole at ${hole.offset}`);
      const data = await c.lseek(nodeid, fh, Number(hole.offset!), SEEK_DATA);
      assert.equal(data.error, 0);
      assert.ok(data.offset! <= 1n << 20n);
      assert.equal((await c.lseek(nodeid, fh, (1 << 20) + 100, SEEK_DATA)).error, -E.ENXIO);
      const dst = await createFile('copy-dst');
      const cr = await c.copyFileRange(nodeid, fh, 1 << 20, dst.nodeid, dst.fh, 0, 4);
      assert.equal(cr.error, 0);
      assert.equal(cr.size, 4);
      assert.equal(fs.readFileSync(host('copy-dst'), 'utf8'), 'tail');
      assert.equal((await c.fallocate(nodeid, 9999, 0, 10)).error, -E.EBADF);
      await c.release(nodeid, fh);
      await c.release(dst.nodeid, dst.fh);
    });

    await t.test('TMPFILE makes an unnamed file that can be written and read', async () => {
      const before = fs.readdirSync(dir).length;
      const r = await c.create(1, '', O_RDWR, 0o600, 0, true);
      if (!ts && r.error === -E.ENOSYS) return;
      assert.equal(r.error, 0);
      assert.equal((await c.write(r.entry!.nodeid, r.fh!, 0, Buffer.from('tmp'))).size, 3);
      assert.equal((await c.read(r.entry!.nodeid, r.fh!, 0, 10)).body.toString(), 'tmp');
      assert.equal(fs.readdirSync(dir).length, before, 'no name appears');
      await c.release(r.entry!.nodeid, r.fh!);
    });

    await t.test('INTERRUPT gets no reply; IOCTL is not passed through; unknown opcodes are ENOSYS', async () => {
      assert.equal(await c.interrupt(12345n), 0);
      if (ts) assert.equal((await c.call(OP.FUSE_IOCTL, 1, [Buffer.alloc(32)], 0)).error, -E.ENOTTY);
      assert.equal((await c.call(99, 1, [], 0)).error, -E.ENOSYS);
    });

    await t.test('hostile requests get an error reply, never a crash', async () => {
      if (!ts) return;
      // in_header.len larger than the chain
      const h = c.header(OP.FUSE_GETATTR, 1, 16);
      h.writeUInt32LE(4096, 0);
      let r = FuseClient.parseReply(await (c as unknown as { send: (q: number, o: Uint8Array[], i: number[]) => Promise<{ len: number; in: Uint8Array[] }> }).send(1, [h, Buffer.alloc(16)], [16, 104]));
      assert.equal(r.error, -E.EINVAL);
      // GETATTR with a short body
      assert.equal((await c.call(OP.FUSE_GETATTR, 1, [Buffer.alloc(4)], 104)).error, -E.EINVAL);
      // a name without its NUL
      assert.equal((await c.call(OP.FUSE_LOOKUP, 1, [Buffer.from('abc')], 128)).error, -E.EINVAL);
      // a reply buffer too small for the reply: the op must not run
      r = await c.call(OP.FUSE_MKDIR, 1, [Buffer.alloc(8), Buffer.from('not-made\0')], 8);
      assert.equal(r.error, -E.EINVAL);
      assert.ok(!fs.existsSync(host('not-made')));
      // a node id no node can have
      assert.equal((await c.getattr(0xffffffff00000001n)).error, -E.EBADF);
      // READ larger than max_write, WRITE claiming more data than sent
      assert.equal((await c.read(1, 1, 0, (1 << 20) + 1)).error, -E.EINVAL);
      const wr = Buffer.alloc(40);
      wr.writeUInt32LE(1000, 16);
      assert.equal((await c.call(OP.FUSE_WRITE, 1, [wr], 8, [Buffer.alloc(10)])).error, -E.EINVAL);
      // a BATCH_FORGET whose count runs past the body
      const bf = Buffer.alloc(8);
      bf.writeUInt32LE(1000000, 0);
      await (c as unknown as { send: (q: number, o: Uint8Array[], i: number[]) => Promise<unknown> }).send(0, [c.header(OP.FUSE_BATCH_FORGET, 0, 8), bf], []);
      assert.equal((await c.getattr(1)).error, 0, 'still serving');
    });

    await t.test('DESTROY ends the session; requests before a new INIT fail', async () => {
      if (!ts) return; // the C virtiofsd answers DESTROY with EAGAIN over vhost-user
      assert.equal((await c.destroy()).error, 0);
      assert.equal((await c.getattr(1)).error, -E.EIO);
      assert.equal((await c.init()).error, 0);
      assert.equal((await c.getattr(1)).error, 0);
    });
  });
}
