// With file handles a known inode costs the worker no fd (src/passthrough/inode-fds.ts): its ops
// open it by handle on demand, through a cache bounded by a quarter of the guest's fd budget. A
// file whose last link goes while the guest holds it open lives on through the open file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STAT_SLOTS, ST } from '../../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { DEFAULT_GUEST_LIMITS } from '../../src/passthrough/budget';
import { INODE_FD_CACHE_MIN, INODE_FD_PINS } from '../../src/passthrough/inode-fds';
import { silentLogger } from '../../src/log';
import { INODE_LAYOUT } from '../../src/passthrough/inode-table';
import { SLOT_HEADER } from '../../src/state/slot-table';
import { fdKey, type FdRegistry } from '../../src/state/fd-registry';
import { O_RDWR } from '../../src/linux/constants';

const native = loadNative();
const CTX = { uid: 0, gid: 0, pid: 1 };

/** The keeper's fd store, as far as these tests look: which keys it was given. */
function keeper(): FdRegistry & { keys: Set<string> } {
  const keys = new Set<string>();
  return { keys, put: (k) => { keys.add(k); }, putLazy: (k) => { keys.add(k); }, del: (k) => { keys.delete(k); }, flush() {} };
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** A passthrough over dir with file handles and a guest fd budget of 64 (a cache of 16). */
function serve(dir: string): { fs: PassthroughFs; k: ReturnType<typeof keeper> } {
  const k = keeper();
  const opts = { ...DEFAULT_FS_OPTIONS, sharedDir: dir, inodeFileHandles: 'mandatory' as const, limits: { ...DEFAULT_GUEST_LIMITS, fds: 64 } };
  return { fs: new PassthroughFs(native, opts, silentLogger, { registry: k }), k };
}

test('2,000 known inodes held by file handle keep the fds open within the cache bound; each GETATTR is its own inode', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-inode-fds-'));
  const N = 2000;
  for (let i = 0; i < N; i++) fs.writeFileSync(path.join(dir, `f${i}`), '');
  const before = openFds();
  const { fs: p, k } = serve(dir);
  try {
    assert.equal(p.inodes.fdCache.limit, INODE_FD_CACHE_MIN, 'a quarter of 64');
    const st = new BigUint64Array(STAT_SLOTS);
    const ids: number[] = [];
    for (let i = 0; i < N; i++) {
      const e = p.lookup(CTX, 1, `f${i}`, st);
      assert.ok(typeof e !== 'number', `lookup f${i}: ${String(e)}`);
      ids.push(e.nodeid);
    }
    const fdsAfterLookups = openFds() - before;
    // The maps' memfds, /proc/self/fd, the root and its mount fd, and the cache.
    assert.ok(fdsAfterLookups <= 8 + INODE_FD_CACHE_MIN + INODE_FD_PINS, `${fdsAfterLookups} fds for ${N} inodes`);
    for (let i = 0; i < N; i++) {
      assert.equal(p.getattr(CTX, ids[i]!, null, st), 0);
      assert.equal(st[ST.ino], fs.statSync(path.join(dir, `f${i}`), { bigint: true }).ino, `f${i}`);
    }
    assert.ok(openFds() - before <= 8 + INODE_FD_CACHE_MIN + INODE_FD_PINS, 'GETATTRs took fds by handle and the cache let them go');
    assert.deepEqual([...k.keys].filter((key) => key !== fdKey.inode(1) && key.startsWith('i')), [], 'the keeper was given no inode fd');
    // Two parents not in the cache in one op: RENAME gets both.
    fs.mkdirSync(path.join(dir, 'x'));
    fs.mkdirSync(path.join(dir, 'y'));
    fs.writeFileSync(path.join(dir, 'x', 'moved'), 'm');
    const x = p.lookup(CTX, 1, 'x', st), y = p.lookup(CTX, 1, 'y', st);
    assert.ok(typeof x !== 'number' && typeof y !== 'number');
    for (let i = 0; i < 100; i++) p.getattr(CTX, ids[i]!, null, st);
    assert.equal(p.rename(CTX, x.nodeid, 'moved', y.nodeid, 'moved', 0), 0);
    assert.ok(fs.existsSync(path.join(dir, 'y', 'moved')));
  } finally {
    p.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a node whose handle no longer opens but which the guest holds open answers through the open file (revived: the keeper gets its fd)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-inode-fds-'));
  for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(dir, `f${i}`), '');
  fs.writeFileSync(path.join(dir, 'victim'), 'still here');
  const { fs: p, k } = serve(dir);
  try {
    const st = new BigUint64Array(STAT_SLOTS);
    const v = p.lookup(CTX, 1, 'victim', st);
    assert.ok(typeof v !== 'number');
    const ino = st[ST.ino];
    const o = p.open(CTX, v.nodeid, O_RDWR);
    assert.ok(typeof o !== 'number');
    assert.equal(p.unlink(CTX, 1, 'victim'), 0);
    // Ext4 and tmpfs still open an unlinked inode by handle while it is in use; other file systems
    // say ESTALE, as every one does for a handle naming no inode: spoil the record's handle bytes.
    const at = SLOT_HEADER.bytes + v.nodeid * INODE_LAYOUT.record + INODE_LAYOUT.handle;
    const len = Buffer.alloc(4);
    fs.readSync(p.stateFds.inodes, len, 0, 4, at);
    fs.writeSync(p.stateFds.inodes, Buffer.alloc(len.readUInt32LE(0), 0xff), 0, len.readUInt32LE(0), at + 8);
    // Push victim's fd out of the cache: newer ones take the pins and the room.
    for (let i = 0; i < 100; i++) {
      const e = p.lookup(CTX, 1, `f${i}`, st);
      assert.ok(typeof e !== 'number');
      assert.equal(p.getattr(CTX, e.nodeid, null, st), 0);
    }
    const misses = p.inodes.fdCache.misses;
    assert.equal(p.getattr(CTX, v.nodeid, null, st), 0);
    assert.equal(st[ST.ino], ino);
    assert.equal(st[ST.nlink], 0n);
    assert.equal(p.inodes.fdCache.misses, misses, 'not from the cache: the handle failed, the open file answered');
    assert.ok(k.keys.has(fdKey.inode(v.nodeid)), `the node ${[...k.keys].join(' ')} ${v.nodeid} now holds an fd, and the keeper a duplicate (a restarted worker needs it)`);
    assert.equal(p.release(CTX, o.fh, 0, 0, 0n), 0);
    p.forget(v.nodeid, 1);
    assert.ok(!k.keys.has(fdKey.inode(v.nodeid)), 'FORGET drops it');
  } finally {
    p.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
