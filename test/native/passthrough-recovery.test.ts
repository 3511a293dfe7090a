// A restarted worker rebuilds its maps from shared memory a previous worker wrote, with the fds
// the keeper kept (src/passthrough/recovery.ts): open files come back from the keeper's fd or are
// opened again from their record (less O_TRUNC), a lock owner's description and the pid its locks
// report come back from its registry key, what cannot come back is lost (EBADF) and said so in
// the log, and a record that does not match its inode is refused. Whatever the records say, it
// opens no special file: an open-file record naming a FIFO's node is reopened through the same
// check as OPEN (EBADF, never a blocking open), and an inode's type is taken from the inode, not
// from its record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STAT_SLOTS } from '../../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { INODE_LAYOUT } from '../../src/passthrough/inode-table';
import { HANDLE_LAYOUT } from '../../src/passthrough/handle-table';
import { SLOT_HEADER } from '../../src/state/slot-table';
import { fdKey, type FdRegistry } from '../../src/state/fd-registry';
import type { FileLock } from '../../src/fuse/filesystem';
import { AT_FDCWD, F_WRLCK, O_NONBLOCK, O_RDONLY, O_RDWR, O_TRUNC, S_IFIFO, S_IFREG } from '../../src/linux/constants';
import pino from 'pino';

const native = loadNative();
const E = os.constants.errno;
const CTX = { uid: 0, gid: 0, pid: 1 };
const inodeAt = (nodeid: number): number => SLOT_HEADER.bytes + nodeid * INODE_LAYOUT.record;
const handleAt = (fh: number): number => SLOT_HEADER.bytes + fh * HANDLE_LAYOUT.record;

/** The keeper's fd store: a duplicate of every fd put. */
function keeper(): FdRegistry & { fds: Map<string, number>; dels: string[] } {
  const fds = new Map<string, number>();
  const dels: string[] = [];
  const put = (k: string, fd: number): void => { const old = fds.get(k); if (old !== undefined) native.close(old); fds.set(k, native.dup(fd)); };
  return {
    fds, dels, put, putLazy: put, flush() {},
    del: (k) => { dels.push(k); const fd = fds.get(k); if (fd !== undefined) native.close(fd); fds.delete(k); },
  };
}

/** What the keeper hands a new worker: duplicates of its fds, but for the keys left out. */
function handOver(k: { fds: Map<string, number> }, leaveOut: (key: string) => boolean = () => false): Map<string, number> {
  return new Map([...k.fds].filter(([key]) => !leaveOut(key)).map(([key, fd]) => [key, native.dup(fd)] as [string, number]));
}

/** A logger whose lines the test reads. */
function logLines(): { log: pino.Logger; lines: Array<{ level: number; msg: string } & Record<string, unknown>> } {
  const lines: Array<{ level: number; msg: string } & Record<string, unknown>> = [];
  return { lines, log: pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s)); } }) };
}

function mapped(fd: number): DataView {
  const buf = native.mmap(fd, 0, fs.fstatSync(fd).size);
  assert.ok(typeof buf !== 'number');
  return new DataView(buf);
}

test('recovery opens no special file, whatever the records say', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-recovery-special-'));
  try {
    assert.equal(native.mknodat(AT_FDCWD, path.join(dir, 'fifo'), S_IFIFO | 0o600, 0), 0);
    // Held open at both ends, so that a regression fails this test rather than hanging it in openat.
    const holder = native.openat(AT_FDCWD, path.join(dir, 'fifo'), O_RDWR | O_NONBLOCK, 0);
    assert.ok(holder >= 0);
    fs.writeFileSync(path.join(dir, 'reg'), 'data');
    const opts = { ...DEFAULT_FS_OPTIONS, sharedDir: dir, inodeFileHandles: 'never' as const };
    const st = new BigUint64Array(STAT_SLOTS);
    const k = keeper();
    const first = new PassthroughFs(native, opts, silentLogger, { registry: k });
    const fifo = first.lookup(CTX, 1, 'fifo', st);
    const reg = first.lookup(CTX, 1, 'reg', st);
    assert.ok(typeof fifo !== 'number' && typeof reg !== 'number');
    const open = first.open(CTX, reg.nodeid, O_RDONLY);
    assert.ok(typeof open !== 'number');
    assert.equal(first.open(CTX, fifo.nodeid, O_RDONLY), -E.EBADF);

    // The first worker dies; its records are then what a buggy or hostile worker could leave:
    // the open file names the FIFO's node, and the FIFO's record says it is a regular file.
    const stateFds = first.stateFds;
    const files = mapped(stateFds.files), inodes = mapped(stateFds.inodes);
    files.setUint32(handleAt(open.fh) + HANDLE_LAYOUT.nodeid, fifo.nodeid, true);
    inodes.setUint32(inodeAt(fifo.nodeid) + INODE_LAYOUT.mode, S_IFREG | 0o644, true);
    // The keeper has every inode's fd; not the open file's, so that it is opened again.
    const recovered = handOver(k, (key) => key.startsWith('f'));

    const second = new PassthroughFs(native, opts, silentLogger, {
      registry: keeper(), recovered,
      fds: { inodes: native.dup(stateFds.inodes), files: native.dup(stateFds.files), dirs: native.dup(stateFds.dirs) },
    });
    assert.equal(second.files.lost, 1, 'the open file naming the FIFO is lost, not opened');
    assert.equal(second.files.get(open.fh), undefined);
    assert.equal(second.open(CTX, fifo.nodeid, O_RDONLY), -E.EBADF, 'the FIFO is known by its real type');
    assert.equal(second.getlk(CTX, fifo.nodeid, 0, 5n, { start: 0n, end: 0n, type: 0, pid: 0 }), -E.EBADF);
    const again = second.open(CTX, reg.nodeid, O_RDONLY);
    assert.ok(typeof again !== 'number', 'the regular file opens');
    second.close();
    native.close(holder);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('open files come back from the keeper or from their record; what cannot is lost and logged; lock owners come back with their pid', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-recovery-'));
  const opts = { ...DEFAULT_FS_OPTIONS, sharedDir: dir, inodeFileHandles: 'never' as const };
  const st = new BigUint64Array(STAT_SLOTS);
  const lk = (type: number, pid = 0): FileLock => ({ start: 0n, end: 9n, type, pid });
  fs.writeFileSync(path.join(dir, 'kept'), 'one');
  fs.writeFileSync(path.join(dir, 'reopened'), 'two');
  fs.writeFileSync(path.join(dir, 'lost'), 'three');
  const k = keeper();
  const first = new PassthroughFs(native, opts, silentLogger, { registry: k });
  let second: PassthroughFs | undefined;
  const stray = [native.dup(0), native.dup(0)];
  try {
    const node = (name: string): number => {
      const e = first.lookup(CTX, 1, name, st);
      assert.ok(typeof e !== 'number');
      return e.nodeid;
    };
    const fh = (nodeid: number, flags: number): number => {
      const o = first.open(CTX, nodeid, flags);
      assert.ok(typeof o !== 'number');
      return o.fh;
    };
    const kept = node('kept'), reopened = node('reopened'), lost = node('lost');
    const keptFh = fh(kept, O_RDONLY), reopenedFh = fh(reopened, O_RDWR | O_TRUNC), lostFh = fh(lost, O_RDONLY);
    // Written after the O_TRUNC open: a reopen with O_TRUNC would lose it.
    assert.equal(native.pwritev2(first.files.get(reopenedFh)!.fd, [Buffer.from('TWO')], 0, 0), 3);
    let granted = -1;
    first.setlk(CTX, kept, keptFh, 0xa11cen, lk(F_WRLCK, 77), false, false, (r) => { granted = r; });
    assert.equal(granted, 0);

    // The first worker dies. The keeper never got the reopened file's fd (a lazy put not yet
    // flushed), nor anything of the lost file's inode; it holds two fds under keys no record makes.
    const recovered = handOver(k, (key) => key === fdKey.file(reopenedFh) || key === fdKey.inode(lost) || key === fdKey.file(lostFh));
    recovered.set('l999:1:2', stray[0]!);
    recovered.set('nonsense', stray[1]!);
    const s = first.stateFds;
    const k2 = keeper();
    const { log, lines } = logLines();
    second = new PassthroughFs(native, opts, log, {
      registry: k2, recovered, fds: { inodes: native.dup(s.inodes), files: native.dup(s.files), dirs: native.dup(s.dirs) },
    });

    // Checked first: a later open may reuse the numbers.
    for (const fd of stray) assert.equal(native.getfl(fd), -E.EBADF, 'fds under keys no record claims are closed');
    assert.deepEqual(k2.dels.sort(), ['l999:1:2', 'nonsense'], 'and the keeper drops them');
    const again = second.files.get(keptFh)!;
    assert.equal(again.nodeid, kept, 'from the keeper\'s fd');
    const r = second.files.get(reopenedFh)!;
    assert.equal(r.nodeid, reopened, 'opened again from its record');
    assert.equal(native.getfl(r.fd) & O_TRUNC, 0);
    assert.equal(fs.readFileSync(path.join(dir, 'reopened'), 'utf8'), 'TWO', 'not truncated again');
    assert.ok(k2.fds.has(fdKey.file(reopenedFh)), 'the keeper gets the reopened fd');
    assert.equal(second.files.get(lostFh), undefined, 'lost');
    assert.equal(second.files.lost, 1);
    assert.equal(second.getattr(CTX, lost, null, st), -E.EBADF, 'its node is lost too');
    assert.equal(second.getattr(CTX, kept, null, st), 0);

    assert.equal(second.locks.count, 1, 'the lock owner is adopted');
    assert.deepEqual(second.getlk(CTX, kept, keptFh, 0xb0bn, lk(F_WRLCK)), { start: 0n, end: 9n, type: F_WRLCK, pid: 77 }, 'with its pid');
    let conflict = -1;
    second.setlk(CTX, kept, keptFh, 0xb0bn, lk(F_WRLCK), false, false, (x) => { conflict = x; });
    assert.equal(conflict, -E.EAGAIN, 'and its lock still held');

    const warn = lines.find((l) => l.msg.startsWith('state recovered'))!;
    assert.equal(warn.level, 40, 'a lost open file is a warning');
    assert.deepEqual(warn.lost, { inodes: 1, files: 1, dirs: 0 });
  } finally {
    second?.close();
    first.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an inode record that does not match its inode is refused: EBADF for its node, one warning', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-recovery-refused-'));
  const opts = { ...DEFAULT_FS_OPTIONS, sharedDir: dir, inodeFileHandles: 'never' as const };
  const st = new BigUint64Array(STAT_SLOTS);
  fs.writeFileSync(path.join(dir, 'a'), 'a');
  fs.writeFileSync(path.join(dir, 'b'), 'b');
  const k = keeper();
  const first = new PassthroughFs(native, opts, silentLogger, { registry: k });
  let second: PassthroughFs | undefined;
  try {
    const a = first.lookup(CTX, 1, 'a', st), b = first.lookup(CTX, 1, 'b', st);
    assert.ok(typeof a !== 'number' && typeof b !== 'number');
    const s = first.stateFds;
    // The record of a claims another inode number than the file the keeper holds for it.
    const inodes = mapped(s.inodes);
    const at = inodeAt(a.nodeid) + INODE_LAYOUT.ino;
    inodes.setBigUint64(at, inodes.getBigUint64(at, true) + 1n, true);
    const { log, lines } = logLines();
    second = new PassthroughFs(native, opts, log, {
      registry: keeper(), recovered: handOver(k), fds: { inodes: native.dup(s.inodes), files: native.dup(s.files), dirs: native.dup(s.dirs) },
    });
    assert.equal(second.inodes.refused, 1);
    assert.equal(second.getattr(CTX, a.nodeid, null, st), -E.EBADF);
    assert.equal(second.getattr(CTX, b.nodeid, null, st), 0, 'the others are adopted');
    const again = second.lookup(CTX, 1, 'a', st);
    assert.ok(typeof again !== 'number' && again.nodeid !== a.nodeid, 'a lookup gives the file a new node id');
    assert.equal(lines.filter((l) => l.level === 40 && /refused/.test(l.msg)).length, 1);
  } finally {
    second?.close();
    first.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
