// Directory listings through the real session (request bytes in, reply bytes out): a large
// directory read in 4 KiB replies gives every name exactly once, a READDIR at an earlier cookie
// (seekdir) continues from there, consecutive READDIRs read the directory once without seeking,
// changes during a listing break nothing, and a pool smaller than the open streams still lists
// each of them completely.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, type NativeBinding } from '../../src/native/binding';
import { FuseSession } from '../../src/fuse/session';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { DirStream, DirStreams, DIRENT64, DIR_STREAM_BUF } from '../../src/passthrough/dir-stream';
import { silentLogger } from '../../src/log';
import { FuseClient, type Dirent } from '../support/fuse-client';
import { directTransport } from '../support/direct-transport';
import { AT_FDCWD, O_DIRECTORY, O_RDONLY } from '../../src/linux/constants';
import { INIT } from '../../src/fuse/abi';

const native = loadNative();
const N = 10_000;

/** The native binding, counting getdents64 and seekDir calls. */
function counting(): { native: NativeBinding; calls: { getdents64: number; seekDir: number } } {
  const calls = { getdents64: 0, seekDir: 0 };
  const wrapped: NativeBinding = Object.create(native);
  wrapped.getdents64 = (fd, buf) => { calls.getdents64++; return native.getdents64(fd, buf); };
  wrapped.seekDir = (fd, off) => { calls.seekDir++; return native.seekDir(fd, off); };
  return { native: wrapped, calls };
}

function bigDir(n: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-dirs-'));
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(dir, `file-${String(i).padStart(5, '0')}`), '');
  return dir;
}

/** One 10,000-entry directory for the tests that only read it. */
let shared: string | undefined;
function sharedBigDir(): string {
  shared ??= bigDir(N);
  return shared;
}
after(() => { if (shared) fs.rmSync(shared, { recursive: true, force: true }); });

function session(dir: string, nat: NativeBinding): { c: FuseClient; pfs: PassthroughFs } {
  const pfs = new PassthroughFs(nat, { ...DEFAULT_FS_OPTIONS, sharedDir: dir }, silentLogger);
  return { c: new FuseClient(directTransport(new FuseSession(pfs, silentLogger, { probes: pfs, rangeIo: pfs }))), pfs };
}

function assertOnce(ents: Dirent[], want: string[], what: string): void {
  const names = ents.map((e) => e.name).filter((x) => x !== '.' && x !== '..');
  assert.equal(new Set(names).size, names.length, `${what}: no name twice`);
  assert.deepEqual(names.sort(), want, `${what}: every name`);
}

test('a 10,000-entry directory in 4 KiB READDIR and READDIRPLUS replies: every name once, one read of the directory, no seek', async () => {
  const dir = sharedBigDir();
  const want = fs.readdirSync(dir).sort();
  const { native: nat, calls } = counting();
  const { c, pfs } = session(dir, nat);
  try {
    assert.equal((await c.init()).error, 0);
    for (const plus of [false, true]) {
      const dh = await c.opendir(1);
      assert.equal(dh.error, 0);
      calls.getdents64 = calls.seekDir = 0;
      const ents = await c.readdirAll(1, dh.fh!, 4096, plus);
      assertOnce(ents, want, plus ? 'READDIRPLUS' : 'READDIR');
      // Each getdents64 fills a DIR_STREAM_BUF buffer (records of at most 40 bytes here) and
      // every byte of it is sent before the next read; one more read meets the end.
      const atMost = Math.ceil(((N + 2) * 40) / (DIR_STREAM_BUF - 280)) + 2;
      assert.ok(calls.getdents64 <= atMost, `${calls.getdents64} getdents64 calls for one listing (at most ${atMost})`);
      assert.equal(calls.seekDir, 0, 'consecutive READDIRs never seek');
      if (plus) {
        for (const e of ents) if (e.entry && e.entry.nodeid !== 0n) assert.equal((await c.forget(e.entry.nodeid, 1)).error, 0);
      }
      assert.equal((await c.releasedir(1, dh.fh!)).error, 0);
    }
    assert.equal(pfs.dirStreamBuffers, 0, 'every stream buffer is back in the pool');
  } finally {
    pfs.close();
  }
});

test('a READDIR at an earlier cookie (seekdir) continues right after that entry; offset 0 starts over', async () => {
  const dir = sharedBigDir();
  const want = fs.readdirSync(dir).sort();
  const { c, pfs } = session(dir, native);
  try {
    assert.equal((await c.init()).error, 0);
    const dh = await c.opendir(1);
    const all = await c.readdirAll(1, dh.fh!);
    assertOnce(all, want, 'first listing');
    // seekdir to the middle (the cookie of entry k), then read on from there.
    const k = Math.floor(all.length / 2) + 7;
    const tail = await c.readdirAll(1, dh.fh!, 4096, false, all[k]!.off);
    assert.deepEqual(tail.map((e) => e.name), all.slice(k + 1).map((e) => e.name), 'the entries after the cookie, in order');
    // Half a page, then back to an earlier cookie while entries are kept for the next one.
    const part = await c.readdir(1, dh.fh!, all[100]!.off, 4096);
    assert.equal(part.error, 0);
    const back = await c.readdirAll(1, dh.fh!, 4096, false, all[20]!.off);
    assert.deepEqual(back.map((e) => e.name), all.slice(21).map((e) => e.name));
    assertOnce(await c.readdirAll(1, dh.fh!), want, 'rewinddir');
    assert.equal((await c.releasedir(1, dh.fh!)).error, 0);
  } finally {
    pfs.close();
  }
});

test('names added and removed during listings: no error, and every name never touched is listed once', async () => {
  const dir = bigDir(2_000);
  const stable = fs.readdirSync(dir).sort();
  const { c, pfs } = session(dir, native);
  try {
    assert.equal((await c.init()).error, 0);
    let made = 0;
    for (let round = 0; round < 3; round++) {
      const handles = await Promise.all([0, 1, 2, 3].map(() => c.opendir(1)));
      const offs = handles.map(() => 0n);
      const seen: Dirent[][] = handles.map(() => []);
      const done = handles.map(() => false);
      while (done.includes(false)) {
        for (let i = 0; i < handles.length; i++) {
          if (done[i]) continue;
          const r = await c.readdir(1, handles[i]!.fh!, offs[i]!, 4096, i % 2 === 1);
          assert.equal(r.error, 0, 'READDIR during changes');
          if (r.entries!.length === 0) { done[i] = true; continue; }
          seen[i]!.push(...r.entries!);
          offs[i] = r.entries![r.entries!.length - 1]!.off;
          for (const e of r.entries!) if (e.entry && e.entry.nodeid !== 0n) await c.forget(e.entry.nodeid, 1);
          // Churn between replies: new names, and some of the churned ones go again.
          for (let j = 0; j < 5; j++) fs.writeFileSync(path.join(dir, `churn-${made++}`), '');
          for (let j = made - 9; j < made; j += 2) fs.rmSync(path.join(dir, `churn-${j}`), { force: true });
        }
      }
      for (let i = 0; i < handles.length; i++) {
        const names = seen[i]!.map((e) => e.name).filter((x) => x.startsWith('file-'));
        assert.equal(new Set(names).size, names.length, 'no stable name twice');
        assert.deepEqual(names.sort(), stable, 'every stable name');
        assert.equal((await c.releasedir(1, handles[i]!.fh!)).error, 0);
      }
    }
  } finally {
    pfs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('more open streams than pool buffers: each stream still lists every entry once', () => {
  const dir = bigDir(1_500);
  const want = fs.readdirSync(dir).sort();
  const pool = new DirStreams(native, 2, 4096);
  const fds = [0, 1, 2, 3, 4].map(() => native.openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0));
  try {
    for (const fd of fds) assert.ok(fd >= 0);
    const streams = fds.map(() => new DirStream(0n));
    const names: string[][] = fds.map(() => []);
    const done = fds.map(() => false);
    while (done.includes(false)) {
      for (let i = 0; i < fds.length; i++) {
        if (done[i]) continue;
        const s = streams[i]!;
        // A guest's READDIR at the stream's own cookie: take up to 7 entries, then stop.
        assert.equal(pool.seek(s, fds[i]!, s.pos), 0);
        for (let taken = 0; taken < 7; taken++) {
          const len = pool.fill(s, fds[i]!);
          assert.ok(len >= 0);
          if (len === 0) { done[i] = true; break; }
          const dv = s.dv!, o = s.start;
          const reclen = dv.getUint16(o + DIRENT64.reclen, true);
          const raw = s.bytes!.subarray(o + DIRENT64.name, o + reclen);
          const name = Buffer.from(raw.subarray(0, raw.indexOf(0))).toString('latin1');
          names[i]!.push(name);
          s.take(reclen, BigInt.asUintN(64, dv.getBigInt64(o + DIRENT64.off, true)));
        }
        pool.settle(s);
        assert.ok(pool.inUse <= 2, 'never more buffers than the pool has');
      }
    }
    for (const n of names) {
      const files = n.filter((x) => x !== '.' && x !== '..');
      assert.equal(new Set(files).size, files.length);
      assert.deepEqual(files.sort(), want);
    }
  } finally {
    for (const fd of fds) if (fd >= 0) native.close(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('FUSE_INIT offers DO_READDIRPLUS and READDIRPLUS_AUTO only when READDIRPLUS is on', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-rdp-'));
  try {
    for (const readdirplus of [true, false]) {
      const pfs = new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, readdirplus }, silentLogger);
      const c = new FuseClient(directTransport(new FuseSession(pfs, silentLogger, { probes: pfs, rangeIo: pfs })));
      assert.equal((await c.init()).error, 0);
      assert.equal(c.hasInit(INIT.DO_READDIRPLUS), readdirplus, `DO_READDIRPLUS with readdirplus=${readdirplus}`);
      assert.equal(c.hasInit(INIT.READDIRPLUS_AUTO), readdirplus, `READDIRPLUS_AUTO with readdirplus=${readdirplus}`);
      pfs.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
