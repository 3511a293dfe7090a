// The inode map across a worker restart: inodes come back by file handle (nothing handed to the
// keeper, and no fd held: fds come from a bounded cache), the root by the keeper's fd; a record
// whose handle no longer opens keeps its node id out of the identity index until an fd of the
// same inode revives it or the guest forgets it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, ST, STAT_SLOTS } from '../../src/native/binding';
import { InodeTable, INODE_LAYOUT, INODE_LAYOUT_V1, INODE_RECORD, INODE_TABLE_KIND } from '../../src/passthrough/inode-table';
import { MemfdBacking, SlotTable, SLOT_HEADER } from '../../src/state/slot-table';
import { fdKey, type FdRegistry } from '../../src/state/fd-registry';
import { MountFds } from '../../src/passthrough/mount-fds';
import { INODE_FD_PINS } from '../../src/passthrough/inode-fds';

const native = loadNative();
const O_PATH = 0o10000000, O_NOFOLLOW = 0o400000, O_CLOEXEC = 0o2000000, O_RDONLY = 0, O_DIRECTORY = 0o200000;
const AT_FDCWD = -100;

function recordingRegistry(): FdRegistry & { puts: string[]; dels: string[] } {
  const puts: string[] = [], dels: string[] = [];
  return { puts, dels, put: (k) => { puts.push(k); }, putLazy: (k) => { puts.push(k); }, del: (k) => { dels.push(k); }, flush() {} };
}

function openPath(p: string): number {
  const fd = native.openat(AT_FDCWD, p, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
  assert.ok(fd >= 0, `open ${p}: ${fd}`);
  return fd;
}

/** A table over a fresh memfd with root + the given files, as a first worker leaves it. */
function firstWorker(dir: string, names: string[], cacheLimit?: number) {
  const st = new BigUint64Array(STAT_SLOTS);
  const mountFd = native.openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  const rootFd = openPath(dir);
  assert.equal(native.statFd(rootFd, st), 0);
  const handles = new MountFds(native, recordingRegistry(), native.openat(AT_FDCWD, '/proc/self/fd', O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
  handles.setRoot(st[ST.mntId]!, mountFd);
  const reg = recordingRegistry();
  const backing = new MemfdBacking(native, 'test-inodes');
  const t = new InodeTable(native, backing, reg, new Map(), handles, undefined, cacheLimit);
  t.setRoot(rootFd, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!));
  const ids = new Map<string, number>();
  for (const n of names) {
    const fd = openPath(path.join(dir, n));
    assert.equal(native.statFd(fd, st), 0);
    ids.set(n, t.lookupOrInsert(fd, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!)).nodeid);
  }
  return { t, reg, handles, memfd: backing.fd, rootFd, ids };
}

/** A second worker's table over the same memfd; the keeper kept the root's fd. */
function secondWorker(memfd: number, rootFd: number, handles: MountFds) {
  const reg = recordingRegistry();
  const dupMemfd = native.dup(memfd);
  const recovered = new Map([[fdKey.inode(1), native.dup(rootFd)]]);
  const t = new InodeTable(native, new MemfdBacking(native, 'test-inodes', dupMemfd), reg, recovered, handles);
  return { t, reg, recovered };
}

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-inodes-'));
}

test('inodes come back by file handle with the same node ids; only the root is handed to the keeper', () => {
  const dir = tmpdir();
  for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), n);
  fs.mkdirSync(path.join(dir, 'd'));
  fs.symlinkSync('a', path.join(dir, 'l'));
  const w1 = firstWorker(dir, ['a', 'b', 'd', 'l']);
  assert.deepEqual(w1.reg.puts, [fdKey.inode(1)], 'no fd registered for inodes with a handle');
  const w2 = secondWorker(w1.memfd, w1.rootFd, w1.handles);
  assert.equal(w2.t.lost, 0);
  assert.equal(w2.t.count, 5);
  assert.equal(w2.t.handleCount, 4);
  const st = new BigUint64Array(STAT_SLOTS);
  for (const [n, id] of w1.ids) {
    const ino = w2.t.get(id)!;
    assert.equal(ino.fd, -1, `${n}: held by its handle, no fd of its own`);
    const fd = w2.t.fd(ino);
    assert.ok(fd >= 0, n);
    assert.equal(native.statFd(fd, st), 0);
    assert.equal(st[ST.ino], fs.lstatSync(path.join(dir, n), { bigint: true }).ino, `${n}: the same inode`);
    assert.equal(w2.t.find(ino.dev, ino.ino, ino.mntId), ino);
  }
  assert.equal((Number(w2.t.get(w1.ids.get('l')!)!.mode) & 0o170000), 0o120000, 'the symlink itself, not its target');
  fs.rmSync(dir, { recursive: true });
});

test('a record whose handle no longer opens keeps its node id, out of the index; revive takes only an fd of that inode', () => {
  const dir = tmpdir();
  for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), n);
  const w1 = firstWorker(dir, ['a', 'b']);
  const a = w1.ids.get('a')!;
  // Spoil a's handle bytes in the shared record: open_by_handle_at refuses it.
  const mem = Buffer.alloc(SLOT_HEADER.bytes + (a + 1) * INODE_RECORD);
  fs.readSync(w1.memfd, mem, 0, mem.length, 0);
  const at = SLOT_HEADER.bytes + a * INODE_RECORD + INODE_LAYOUT.handle;
  mem.fill(0xff, at + 8, at + 8 + mem.readUInt32LE(at));
  fs.writeSync(w1.memfd, mem, at, 8 + mem.readUInt32LE(at), at);

  const w2 = secondWorker(w1.memfd, w1.rootFd, w1.handles);
  assert.equal(w2.t.lost, 1);
  assert.deepEqual([...w2.t.lostByError], [], 'a handle naming no inode says ESTALE: counted as deleted');
  const lost = w2.t.get(a)!;
  assert.ok(lost.lost, 'kept, with no fd: ops on it fail with EBADF');
  assert.equal(w2.t.fd(lost), -9 /* EBADF */);
  assert.equal(w2.t.find(lost.dev, lost.ino, lost.mntId), undefined, 'not found by identity');

  assert.equal(w2.t.revive(a, openPath(path.join(dir, 'b'))), false, 'another inode is refused');
  assert.equal(w2.t.get(a)!.fd, -1);
  assert.ok(w2.t.revive(a, openPath(path.join(dir, 'a'))));
  const back = w2.t.get(a)!;
  assert.ok(back.fd >= 0 && back.registered);
  assert.equal(w2.t.find(back.dev, back.ino, back.mntId), back);
  assert.deepEqual(w2.reg.puts, [fdKey.inode(a)], 'the keeper holds the revived fd (its handle is no use)');
  assert.equal(w2.t.lost, 0);
  fs.rmSync(dir, { recursive: true });
});

test('a handle the file system refuses (not ESTALE) is counted apart, for the warning', () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'a'), 'a');
  const w1 = firstWorker(dir, ['a']);
  const a = w1.ids.get('a')!;
  const lenAt = SLOT_HEADER.bytes + a * INODE_RECORD + INODE_LAYOUT.handle;
  const b = Buffer.alloc(4);
  b.writeUInt32LE(200);
  fs.writeSync(w1.memfd, b, 0, 4, lenAt); // longer than any handle: EINVAL, not "deleted"
  const w2 = secondWorker(w1.memfd, w1.rootFd, w1.handles);
  assert.equal(w2.t.lost, 1);
  assert.deepEqual([...w2.t.lostByError], [[22, 1]]);
  fs.rmSync(dir, { recursive: true });
});

test('FORGET of a lost node frees its slot', () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'gone'), '');
  fs.writeFileSync(path.join(dir, 'other'), '');
  // A cache of one: 'other' pushes out 'gone''s fd, so nothing holds that inode any more.
  const w1 = firstWorker(dir, ['gone', 'other'], 1);
  const id = w1.ids.get('gone')!;
  fs.unlinkSync(path.join(dir, 'gone'));
  const w2 = secondWorker(w1.memfd, w1.rootFd, w1.handles);
  assert.equal(w2.t.lost, 1);
  w2.t.forget(id, 1);
  assert.equal(w2.t.get(id), undefined);
  assert.deepEqual(w2.reg.dels, [], 'nothing was registered for it');
  fs.rmSync(dir, { recursive: true });
});

// Corrupted images (found by the state-recovery fuzz target): a worker a guest took over may have
// written anything into the records, so a new worker checks each against the inode it opens.

/** Overwrite bytes of the shared image at a record's offset. */
function poke(memfd: number, at: number, bytes: Buffer): void {
  fs.writeSync(memfd, bytes, 0, bytes.length, at);
}
function record(memfd: number, slot: number): Buffer {
  const b = Buffer.alloc(INODE_RECORD);
  fs.readSync(memfd, b, 0, INODE_RECORD, SLOT_HEADER.bytes + slot * INODE_RECORD);
  return b;
}

test('a record copied onto another slot is refused: one host inode never gets two node ids', () => {
  const dir = tmpdir();
  for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), n);
  const w1 = firstWorker(dir, ['a', 'b']);
  const a = w1.ids.get('a')!, b = w1.ids.get('b')!;
  poke(w1.memfd, SLOT_HEADER.bytes + b * INODE_RECORD, record(w1.memfd, a)); // b's slot now names a
  const w2 = secondWorker(w1.memfd, w1.rootFd, w1.handles);
  assert.ok(w2.t.fd(w2.t.get(a)!) >= 0, 'the first record of the inode is adopted');
  assert.ok(w2.t.get(b)!.lost, 'the second is refused: its ops fail with EBADF');
  assert.equal(w2.t.refused, 1);
  assert.equal(w2.t.count, 2, 'root and a');
  fs.rmSync(dir, { recursive: true });
});

test('a record whose keeper fd is another inode, or whose file type or nlookup is wrong, is refused', () => {
  const dir = tmpdir();
  for (const n of ['a', 'b', 'c']) fs.writeFileSync(path.join(dir, n), n);
  const w1 = firstWorker(dir, ['a', 'b', 'c']);
  const a = w1.ids.get('a')!, b = w1.ids.get('b')!, c = w1.ids.get('c')!;
  const nan = Buffer.alloc(8);
  nan.writeDoubleLE(NaN);
  poke(w1.memfd, SLOT_HEADER.bytes + b * INODE_RECORD + INODE_LAYOUT.nlookup, nan); // nlookup
  const dirMode = Buffer.alloc(4);
  dirMode.writeUInt32LE(0o040755);
  poke(w1.memfd, SLOT_HEADER.bytes + c * INODE_RECORD + INODE_LAYOUT.mode, dirMode); // a regular file recorded as a directory
  const reg = recordingRegistry();
  // The keeper holds an fd for a (as without file handles), but of the root directory.
  const recovered = new Map([[fdKey.inode(1), native.dup(w1.rootFd)], [fdKey.inode(a), native.dup(w1.rootFd)]]);
  const t = new InodeTable(native, new MemfdBacking(native, 'test-inodes', native.dup(w1.memfd)), reg, recovered, w1.handles);
  for (const n of [a, b, c]) assert.ok(t.get(n)!.lost, `node ${n} refused`);
  assert.equal(t.refused, 3);
  assert.deepEqual(reg.dels, [fdKey.inode(a)], 'the keeper drops the fd it held for the refused record');
  assert.ok(t.get(1)!.fd >= 0, 'the root is adopted');
  assert.equal(t.revive(c, openPath(path.join(dir, 'c'))), false, 'a refused record is not revived');
  fs.rmSync(dir, { recursive: true });
});

/** Fds this process has open. */
function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

test('inodes held by file handle cost no fd each: 300 known, at most the cache bound open, each fd() its own inode', () => {
  const dir = tmpdir();
  const names = Array.from({ length: 300 }, (_, i) => `f${i}`);
  for (const n of names) fs.writeFileSync(path.join(dir, n), '');
  const before = openFds();
  const w1 = firstWorker(dir, names, 8);
  // The root's fd and its mount fd, the memfd, /proc/self/fd, and at most 8 cached.
  assert.ok(openFds() - before <= 4 + 8, `${openFds() - before} fds for 300 inodes`);
  assert.ok(w1.t.fdCount <= 1 + 8);
  const st = new BigUint64Array(STAT_SLOTS);
  for (const n of names) {
    const ino = w1.t.get(w1.ids.get(n)!)!;
    assert.equal(ino.fd, -1);
    const fd = w1.t.fd(ino);
    assert.ok(fd >= 0);
    assert.equal(native.statFd(fd, st), 0);
    assert.equal(st[ST.ino], fs.statSync(path.join(dir, n), { bigint: true }).ino, n);
  }
  assert.ok(w1.t.fdCache.misses >= 300 - 8, 'the ones pushed out were opened again by handle');
  assert.ok(openFds() - before <= 4 + 8 + INODE_FD_PINS, 'the cache holds its bound, and the last fds taken');
  fs.rmSync(dir, { recursive: true });
});

test('the last fds ops took stay open even when the cache must push others out', () => {
  const dir = tmpdir();
  const names = ['a', 'b', 'c', 'd'];
  for (const n of names) fs.writeFileSync(path.join(dir, n), n);
  const w1 = firstWorker(dir, names, 1);
  const st = new BigUint64Array(STAT_SLOTS);
  const fds = names.map((n) => w1.t.fd(w1.t.get(w1.ids.get(n)!)!));
  fds.forEach((fd, i) => {
    assert.equal(native.statFd(fd, st), 0, `${names[i]}'s fd still open`);
    assert.equal(st[ST.ino], fs.statSync(path.join(dir, names[i]!), { bigint: true }).ino);
  });
  fs.rmSync(dir, { recursive: true });
});

test('a known inode number whose handle differs is another inode (the old one deleted, its number reused): a new node, the old one lost', () => {
  const dir = tmpdir();
  for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), n);
  const w1 = firstWorker(dir, ['a', 'b'], 1); // a's fd is pushed out by b's
  const a = w1.ids.get('a')!;
  // The record's handle as if of an earlier inode with a's number: another generation.
  const at = SLOT_HEADER.bytes + a * INODE_RECORD + INODE_LAYOUT.handle;
  const len = record(w1.memfd, a).readUInt32LE(INODE_LAYOUT.handle);
  const h = Buffer.alloc(len);
  fs.readSync(w1.memfd, h, 0, len, at + 8);
  h[len - 1] ^= 0xff;
  poke(w1.memfd, at + 8, h);
  const st = new BigUint64Array(STAT_SLOTS);
  const fd = openPath(path.join(dir, 'a'));
  assert.equal(native.statFd(fd, st), 0);
  const again = w1.t.lookupOrInsert(fd, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!));
  assert.notEqual(again.nodeid, a, 'a new node id for the new inode');
  assert.ok(w1.t.get(a)!.lost, 'the old node stays until forgotten, answering EBADF');
  assert.equal(w1.t.find(again.dev, again.ino, again.mntId), again);
  // The same file looked up again is the new node (its handle matches now).
  const fd2 = openPath(path.join(dir, 'a'));
  assert.equal(w1.t.lookupOrInsert(fd2, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!)).nodeid, again.nodeid);
  w1.t.forget(a, 1);
  assert.equal(w1.t.get(a), undefined);
  fs.rmSync(dir, { recursive: true });
});

test('a table of the previous release (192-byte records) is adopted and used in its own layout', () => {
  const dir = tmpdir();
  for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), n);
  const st = new BigUint64Array(STAT_SLOTS);
  const rootFd = openPath(dir);
  assert.equal(native.statFd(rootFd, st), 0);
  const mntId = st[ST.mntId]!;
  // What the previous release's worker left: root (by the keeper's fd) and 'a' by handle, in
  // INODE_LAYOUT_V1 (the fields at the same offsets, 128 handle bytes).
  const backing = new MemfdBacking(native, 'test-inodes');
  const old = new SlotTable(backing, INODE_LAYOUT_V1.record, 1024, INODE_TABLE_KIND, 2);
  const L = INODE_LAYOUT_V1;
  const write = (slot: number, fd: number, withHandle: boolean): void => {
    assert.equal(native.statFd(fd, st), 0);
    const o = old.off(slot), dv = old.dv;
    dv.setUint32(o + L.gen, 1, true);
    dv.setFloat64(o + L.nlookup, 1, true);
    dv.setBigUint64(o + L.dev, st[ST.dev]!, true);
    dv.setBigUint64(o + L.ino, st[ST.ino]!, true);
    dv.setBigUint64(o + L.mnt, mntId, true);
    dv.setUint32(o + L.mode, Number(st[ST.mode]!), true);
    if (withHandle) {
      const h = new Uint8Array(12 + 128);
      const r = native.nameToHandleAt(fd, '', 0x1000 /* AT_EMPTY_PATH */, h);
      assert.ok(r > 12);
      new Uint8Array(dv.buffer, o + L.handle, r - 4).set(h.subarray(4, r));
    }
    old.publish(slot);
  };
  old.claimReserved(1);
  write(1, rootFd, false);
  const aSlot = old.alloc();
  write(aSlot, openPath(path.join(dir, 'a')), true);
  const memfd = native.dup(backing.fd);

  const handles = new MountFds(native, recordingRegistry(), native.openat(AT_FDCWD, '/proc/self/fd', O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
  handles.setRoot(mntId, native.openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
  const t = new InodeTable(native, new MemfdBacking(native, 'test-inodes', memfd), recordingRegistry(),
    new Map([[fdKey.inode(1), native.dup(rootFd)]]), handles);
  assert.equal(t.layout.record, 192);
  assert.equal(t.lost, 0);
  const a = t.get(aSlot)!;
  assert.equal(native.statFd(t.fd(a), st), 0);
  assert.equal(st[ST.ino], fs.statSync(path.join(dir, 'a'), { bigint: true }).ino);
  // A new inode goes into the same layout, by handle, and a third worker adopts it too.
  const bfd = openPath(path.join(dir, 'b'));
  assert.equal(native.statFd(bfd, st), 0);
  const b = t.lookupOrInsert(bfd, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!));
  assert.equal(b.fd, -1);
  const t3 = new InodeTable(native, new MemfdBacking(native, 'test-inodes', native.dup(memfd)), recordingRegistry(),
    new Map([[fdKey.inode(1), native.dup(rootFd)]]), handles);
  assert.equal(t3.lost, 0);
  assert.equal(native.statFd(t3.fd(t3.get(b.nodeid)!), st), 0);
  assert.equal(st[ST.ino], fs.statSync(path.join(dir, 'b'), { bigint: true }).ino);
  fs.rmSync(dir, { recursive: true });
});

test('an inode record takes 128 bytes of shared memory', () => {
  assert.equal(INODE_RECORD, 128);
  assert.equal(INODE_LAYOUT.handle + 8 + INODE_LAYOUT.maxHandle, INODE_RECORD, 'the handle bytes fill the record');
});
