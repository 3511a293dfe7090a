// POSIX and flock locks (src/passthrough/locks.ts) on real OFD locks: conflicts between lock
// owners and none within one, the holder's pid in GETLK, one open file description per owner
// (and its registry key), FLUSH and FORGET releasing an owner's locks, SETLKW waits that end when
// the lock is free or when the rings stop, and a lock owner opened read-only under --readonly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STAT_SLOTS } from '../../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { fdKey, type FdRegistry } from '../../src/state/fd-registry';
import { FUSE_RELEASE_FLOCK_UNLOCK } from '../../src/fuse/abi';
import type { FileLock } from '../../src/fuse/filesystem';
import { F_RDLCK, F_UNLCK, F_WRLCK, O_ACCMODE, O_RDONLY, O_RDWR, OFFSET_MAX } from '../../src/linux/constants';
import { E } from '../../src/linux/constants';

const native = loadNative();
const CTX = { uid: 0, gid: 0, pid: 1 };
const A = 0xa11cen, B = 0xb0bn;

/** A registry that records the keys it holds. */
function registry(): FdRegistry & { keys: Set<string> } {
  const keys = new Set<string>();
  return { keys, put: (k) => { keys.add(k); }, putLazy: (k) => { keys.add(k); }, del: (k) => { keys.delete(k); }, flush() {} };
}

function setup(t: { after: (fn: () => void) => void }, o: { readonly?: boolean } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-locks-'));
  fs.writeFileSync(path.join(dir, 'f'), 'x'.repeat(100));
  const reg = registry();
  const pfs = new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, memfdState: false, readonly: o.readonly ?? false }, silentLogger, { registry: reg });
  t.after(() => {
    pfs.cancelWaits();
    pfs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const st = new BigUint64Array(STAT_SLOTS);
  const e = pfs.lookup(CTX, 1, 'f', st);
  assert.ok(typeof e !== 'number');
  const open = (flags: number): number => {
    const h = pfs.open(CTX, e.nodeid, flags);
    assert.ok(typeof h !== 'number');
    return h.fh;
  };
  const lk = (start: bigint, end: bigint, type: number, pid = 0): FileLock => ({ start, end, type, pid });
  const setlk = (fh: number, owner: bigint, l: FileLock, o2: { sleep?: boolean; flock?: boolean } = {}): Promise<number> =>
    new Promise((resolve) => pfs.setlk(CTX, e.nodeid, fh, owner, l, o2.flock ?? false, o2.sleep ?? false, resolve));
  return { pfs, reg, node: e.nodeid, open, lk, setlk };
}

test('POSIX locks: owners conflict, an owner never conflicts with itself; GETLK names the holder and its pid', async (t) => {
  const { pfs, node, open, lk, setlk } = setup(t);
  const fh = open(O_RDWR);
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_WRLCK, 111)), 0);
  assert.equal(await setlk(fh, B, lk(5n, 14n, F_WRLCK, 222)), -E.EAGAIN, 'B on A\'s range');
  assert.equal(await setlk(fh, B, lk(5n, 14n, F_RDLCK, 222)), -E.EAGAIN, 'a read lock too');
  assert.equal(await setlk(fh, B, lk(10n, 19n, F_WRLCK, 222)), 0, 'next to it');
  assert.equal(await setlk(fh, A, lk(0n, 14n, F_WRLCK, 111)), -E.EAGAIN, 'A into B\'s range');
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_RDLCK, 111)), 0, 'A turns its own lock into a read lock');

  assert.deepEqual(pfs.getlk(CTX, node, fh, B, lk(0n, 4n, F_WRLCK)), { start: 0n, end: 9n, type: F_RDLCK, pid: 111 });
  assert.deepEqual(pfs.getlk(CTX, node, fh, A, lk(12n, 12n, F_RDLCK)), { start: 10n, end: 19n, type: F_WRLCK, pid: 222 });
  assert.equal((pfs.getlk(CTX, node, fh, A, lk(0n, 9n, F_WRLCK)) as FileLock).type, F_UNLCK, 'its own lock is no conflict');
  assert.deepEqual(pfs.getlk(CTX, node, fh, 0xcn, lk(15n, OFFSET_MAX, F_RDLCK)), { start: 10n, end: 19n, type: F_WRLCK, pid: 222 },
    'an owner with no locks asks through the open file');
  assert.equal(pfs.getlk(CTX, node, fh, A, lk(0n, 0n, F_UNLCK)), -E.EINVAL);
  assert.equal(await setlk(fh, A, lk(0n, 0n, 7)), -E.EINVAL);
  assert.equal(pfs.getlk(CTX, 4242, fh, A, lk(0n, 0n, F_RDLCK)), -E.EBADF);
});

test('one open file description per owner and inode, in the registry under the pid its locks report', async (t) => {
  const { pfs, reg, node, open, lk, setlk } = setup(t);
  const fh = open(O_RDWR);
  assert.equal(await setlk(fh, A, lk(0n, 0n, F_UNLCK)), 0, 'unlocking without locks opens nothing');
  assert.equal(pfs.locks.count, 0);
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_WRLCK, 111)), 0);
  assert.equal(await setlk(fh, A, lk(20n, 29n, F_WRLCK, 111)), 0);
  assert.equal(await setlk(fh, B, lk(40n, 49n, F_RDLCK, 222)), 0);
  assert.equal(pfs.locks.count, 2);
  const owners = pfs.locks.byNode.get(node)!;
  assert.equal(native.getfl(owners.get(A)!.fd) & O_ACCMODE, O_RDWR, 'writable, for write locks');
  assert.ok([...reg.keys].includes(fdKey.lock(node, A, 111)) && [...reg.keys].includes(fdKey.lock(node, B, 222)));
  assert.equal(await setlk(fh, A, lk(60n, 69n, F_RDLCK, 333)), 0, 'a lock under another pid (a thread of the same owner)');
  assert.ok(reg.keys.has(fdKey.lock(node, A, 333)) && !reg.keys.has(fdKey.lock(node, A, 111)), 'the key follows the pid');
});

test('FLUSH drops that owner\'s locks on the inode (close(2)); FORGET of the last reference drops every owner', async (t) => {
  const { pfs, reg, node, open, lk, setlk } = setup(t);
  const fh = open(O_RDWR);
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_WRLCK, 1)), 0);
  assert.equal(await setlk(fh, B, lk(20n, 29n, F_WRLCK, 2)), 0);
  const aFd = pfs.locks.byNode.get(node)!.get(A)!.fd;
  assert.equal(pfs.flush(CTX, node, fh, A), 0);
  assert.equal(native.getfl(aFd), -E.EBADF, 'A\'s description is closed');
  assert.ok(!reg.keys.has(fdKey.lock(node, A, 1)), 'and the keeper lets its duplicate go');
  assert.equal(await setlk(fh, B, lk(0n, 9n, F_WRLCK, 2)), 0, 'A\'s range is free');
  assert.equal(pfs.locks.count, 1);
  pfs.forget(node, 1);
  assert.equal(pfs.locks.count, 0, 'the node is gone, and its lock owners with it');
  assert.equal(pfs.locks.byNode.get(node), undefined);
  assert.deepEqual([...reg.keys].filter((k) => k.startsWith('l')), []);
});

test('SETLKW waits until the lock is free; a ring stop ends the waits with EINTR, each once', async (t) => {
  const { pfs, node, open, lk, setlk } = setup(t);
  const fh = open(O_RDWR);
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_WRLCK)), 0);
  const got: number[] = [];
  const granted = setlk(fh, B, lk(0n, 9n, F_WRLCK), { sleep: true }).then((r) => { got.push(r); return r; });
  await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(got, [], 'still waiting');
  assert.equal(pfs.lockWaitCount, 1);
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_UNLCK)), 0);
  assert.equal(await granted, 0, 'granted once A let go');
  assert.equal(pfs.lockWaitCount, 0);

  // B holds it now: A and a third owner wait, then the device stops.
  const ends: number[] = [];
  const w1 = setlk(fh, A, lk(0n, 0n, F_RDLCK), { sleep: true }).then((r) => ends.push(r));
  const w2 = setlk(fh, 0xcn, lk(5n, 5n, F_WRLCK), { sleep: true }).then((r) => ends.push(r));
  await new Promise((res) => setTimeout(res, 5));
  assert.equal(pfs.lockWaitCount, 2);
  pfs.cancelWaits();
  await Promise.all([w1, w2]);
  assert.deepEqual(ends, [-E.EINTR, -E.EINTR]);
  assert.equal(pfs.lockWaitCount, 0);
  await new Promise((res) => setTimeout(res, 120)); // past the longest retry delay
  assert.deepEqual(ends, [-E.EINTR, -E.EINTR], 'no retry fired after the cancel');
  assert.equal((pfs.getlk(CTX, node, fh, 0xcn, lk(0n, 9n, F_WRLCK)) as FileLock).type, F_WRLCK, 'B still holds it');
});

test('flock: exclusive between open files, released by RELEASE with FLOCK_UNLOCK', async (t) => {
  const { pfs, open, lk, setlk } = setup(t);
  const one = open(O_RDWR), two = open(O_RDONLY);
  assert.equal(await setlk(one, A, lk(0n, 0n, F_WRLCK), { flock: true }), 0);
  assert.equal(await setlk(two, B, lk(0n, 0n, F_RDLCK), { flock: true }), -E.EAGAIN);
  assert.equal(pfs.release(CTX, one, 0, FUSE_RELEASE_FLOCK_UNLOCK, A), 0);
  assert.equal(await setlk(two, B, lk(0n, 0n, F_WRLCK), { flock: true }), 0, 'free once released');
  assert.equal(await setlk(4242, B, lk(0n, 0n, F_WRLCK), { flock: true }), -E.EBADF);
  assert.equal(pfs.locks.count, 0, 'flock takes no lock owner description');
});

test('--readonly: a lock owner\'s description is read-only; read locks work, write locks get EBADF', async (t) => {
  const { pfs, node, open, lk, setlk } = setup(t, { readonly: true });
  const fh = open(O_RDONLY);
  assert.equal(await setlk(fh, A, lk(0n, 9n, F_RDLCK)), 0);
  assert.equal(native.getfl(pfs.locks.byNode.get(node)!.get(A)!.fd) & O_ACCMODE, O_RDONLY);
  assert.equal(await setlk(fh, B, lk(0n, 9n, F_WRLCK)), -E.EBADF);
  assert.equal((pfs.getlk(CTX, node, fh, B, lk(0n, 9n, F_WRLCK)) as FileLock).type, F_RDLCK);
});
