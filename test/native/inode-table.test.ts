// The inode map across a worker restart: inodes come back by file handle (nothing handed to the
// keeper), the root by the keeper's fd; a record whose handle no longer opens keeps its node id
// out of the identity index until an fd of the same inode revives it or the guest forgets it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, ST, STAT_SLOTS } from '../../src/native/binding';
import { InodeTable, INODE_LAYOUT, INODE_RECORD } from '../../src/passthrough/inode-table';
import { MemfdBacking, SLOT_HEADER } from '../../src/state/slot-table';
import { fdKey, type FdRegistry } from '../../src/state/fd-registry';
import { MountFds } from '../../src/passthrough/mount-fds';

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
function firstWorker(dir: string, names: string[]) {
  const st = new BigUint64Array(STAT_SLOTS);
  const mountFd = native.openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  const rootFd = openPath(dir);
  assert.equal(native.statFd(rootFd, st), 0);
  const handles = new MountFds(native, recordingRegistry(), native.openat(AT_FDCWD, '/proc/self/fd', O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
  handles.setRoot(st[ST.mntId]!, mountFd);
  const reg = recordingRegistry();
  const backing = new MemfdBacking(native, 'test-inodes');
  const t = new InodeTable(native, backing, reg, new Map(), handles);
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
    assert.ok(ino && ino.fd >= 0, n);
    assert.equal(native.statFd(ino.fd, st), 0);
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
  assert.equal(lost.fd, -1, 'kept, with no fd: ops on it fail with EBADF');
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
  const w1 = firstWorker(dir, ['gone']);
  const id = w1.ids.get('gone')!;
  fs.unlinkSync(path.join(dir, 'gone'));
  native.close(w1.t.get(id)!.fd); // the worker dies: nothing holds the inode any more
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
  assert.ok(w2.t.get(a)!.fd >= 0, 'the first record of the inode is adopted');
  assert.equal(w2.t.get(b)!.fd, -1, 'the second is refused: its ops fail with EBADF');
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
  for (const n of [a, b, c]) assert.equal(t.get(n)!.fd, -1, `node ${n} refused`);
  assert.equal(t.refused, 3);
  assert.deepEqual(reg.dels, [fdKey.inode(a)], 'the keeper drops the fd it held for the refused record');
  assert.ok(t.get(1)!.fd >= 0, 'the root is adopted');
  assert.equal(t.revive(c, openPath(path.join(dir, 'c'))), false, 'a refused record is not revived');
  fs.rmSync(dir, { recursive: true });
});
