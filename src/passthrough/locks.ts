// POSIX (GETLK/SETLK/SETLKW) and flock locks, served with OFD locks on the host.
//
// A guest's POSIX locks belong to a lock owner (its process's files table), not to an open file.
// On the host they are OFD locks (fcntl(2), "Open file description locks"), on one open file
// description per (inode, owner) that this module opens for the purpose: OFD locks conflict
// between descriptions and not within one, as POSIX locks do between owners and not within one,
// and they live as long as the description. The keeper holds a duplicate of each description,
// so an owner's locks stay held across a worker crash (process-associated POSIX locks would die
// with the worker). flock locks need nothing of that: they already live on the guest's open
// file description, which the keeper holds too.
//
// SETLKW cannot block the event loop: it tries F_OFD_SETLK again with a growing delay until the
// lock is free. A ring stop (guest reset, VM stop) ends every wait with EINTR (cancelWaits), as
// a signal would: QEMU waits for every request in flight to complete.

import type { Ctx, FileLock } from '../fuse/filesystem';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import { fdKey } from '../state/fd-registry';
import type { BudgetKind } from './budget';
import type { Share } from './share';
import type { RecoveredLockOwner } from './recovery';

const LOCK_OWNER: readonly BudgetKind[] = ['lockOwners'];
/** Longest pause between two tries of a waiting SETLKW. */
const LOCK_RETRY_MAX_MS = 50;

/** A guest lock owner's private open file description on one inode, and the pid its locks report. */
export interface LockOwner { readonly fd: number; pid: number }

/** A SETLKW waiting for its lock. */
interface LockWait { timer: NodeJS.Timeout | undefined; cb: (r: number) => void }

export class Locks {
  /** nodeid -> owner -> its open file description. */
  private readonly owners = new Map<number, Map<bigint, LockOwner>>();
  private ownerCount = 0;
  private readonly waits = new Set<LockWait>();

  /**
   * writable: a lock owner's description may be opened for writing (which a write lock needs).
   * False with --readonly, so that nothing of the share is ever open for writing, not even a
   * description the guest never sees: a write lock then gets EBADF, as on a file opened
   * read-only. The read-only layer cannot decide this: the open happens inside SETLK.
   * adopted: the owners a previous worker left (recovery.ts).
   */
  constructor(private readonly share: Share, private readonly writable: boolean, adopted: readonly RecoveredLockOwner[] = []) {
    for (const a of adopted) this.install(a.nodeid, a.owner, { fd: a.fd, pid: a.pid });
  }

  /** Lock owners with a description (the guest's budget counts them). */
  get count(): number { return this.ownerCount; }

  /** SETLKW requests waiting for their lock. */
  get waitCount(): number { return this.waits.size; }

  /** Lock owners with a description, by node (for checks and diagnostics). */
  get byNode(): ReadonlyMap<number, ReadonlyMap<bigint, Readonly<LockOwner>>> {
    return this.owners;
  }

  private install(nodeid: number, owner: bigint, l: LockOwner): void {
    let owners = this.owners.get(nodeid);
    if (!owners) this.owners.set(nodeid, (owners = new Map()));
    owners.set(owner, l);
    this.ownerCount++;
  }

  /** The open file description that carries `owner`'s POSIX locks on this inode. */
  private lockOwner(nodeid: number, owner: bigint, create: boolean): LockOwner | number {
    const known = this.owners.get(nodeid)?.get(owner);
    if (known) return known;
    if (!create) return -E.ENOENT;
    const s = this.share;
    const ino = s.inodes.get(nodeid);
    if (!ino) return -E.EBADF;
    if (!s.budget.fits(LOCK_OWNER)) return s.budget.refuse(LOCK_OWNER);
    const ro = K.O_RDONLY | K.O_NONBLOCK;
    let fd = s.reopen(ino, this.writable ? K.O_RDWR | K.O_NONBLOCK : ro);
    // A file the worker may not write (or a directory): read locks still work.
    if (this.writable && (fd === -E.EACCES || fd === -E.EROFS || fd === -E.EISDIR || fd === -E.ETXTBSY)) fd = s.reopen(ino, ro);
    if (fd < 0) return fd;
    const l: LockOwner = { fd, pid: 0 };
    // The keeper holds the description before any lock is taken on it.
    s.registry.put(fdKey.lock(nodeid, owner, 0), fd);
    this.install(nodeid, owner, l);
    return l;
  }

  /**
   * Release an owner's POSIX locks and close its open file description. The unlock is explicit
   * because the keeper's duplicate keeps the description (and so its OFD locks) alive until it
   * processes our fd-del, and the guest expects the locks gone as of this request.
   */
  private closeOwner(nodeid: number, owner: bigint, l: LockOwner): void {
    const s = this.share;
    s.native.ofdLock(l.fd, K.F_OFD_SETLK, BigInt64Array.of(BigInt(K.F_UNLCK), BigInt(K.SEEK_SET), 0n, 0n, 0n));
    s.registry.del(fdKey.lock(nodeid, owner, l.pid));
    s.native.close(l.fd);
    this.ownerCount--;
  }

  /** FLUSH (the guest closed a file): close(2) drops the closing process's POSIX locks on the inode. */
  releaseOwner(nodeid: number, owner: bigint): void {
    const owners = this.owners.get(nodeid);
    const l = owners?.get(owner);
    if (!l) return;
    owners!.delete(owner);
    this.closeOwner(nodeid, owner, l);
  }

  /** The node is forgotten: every owner's locks on it go. */
  dropNode(nodeid: number): void {
    const owners = this.owners.get(nodeid);
    if (!owners) return;
    for (const [owner, l] of owners) this.closeOwner(nodeid, owner, l);
    this.owners.delete(nodeid);
  }

  dropAll(): void {
    for (const nodeid of [...this.owners.keys()]) this.dropNode(nodeid);
  }

  /** RELEASE with FUSE_RELEASE_FLOCK_UNLOCK: the keeper's duplicate keeps the open file description
   *  (and its flock) alive until it hears of the close; drop the lock now, as the guest's close did. */
  releaseFlock(fd: number): void {
    this.share.native.flock(fd, K.LOCK_UN);
  }

  /**
   * GETLK takes no lock owner's description: F_OFD_GETLK reports the conflicting locks of every
   * other open file description, through any description of the file (fcntl(2)), and ignores
   * only those of the one it is asked through. An owner with a description asks through it (its
   * own locks are no conflict); one without holds no lock here, so any other description will
   * do: the guest's open file, or one opened just for the question. An O_PATH fd will not: fcntl
   * refuses lock commands on those.
   */
  getlk(_ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock): FileLock | number {
    const s = this.share;
    const ino = s.inodes.get(nodeid);
    if (!ino) return -E.EBADF;
    if (lk.type !== K.F_RDLCK && lk.type !== K.F_WRLCK) return -E.EINVAL;
    const fl = toFlock(lk);
    const mine = this.owners.get(nodeid)?.get(owner);
    const h = mine ? undefined : s.files.get(fh);
    let r: number;
    if (mine) r = s.native.ofdLock(mine.fd, K.F_OFD_GETLK, fl);
    else if (h && h.nodeid === nodeid) r = s.native.ofdLock(h.fd, K.F_OFD_GETLK, fl);
    else {
      let fd = s.reopen(ino, K.O_RDONLY | K.O_NONBLOCK);
      if (fd === -E.EACCES && this.writable) fd = s.reopen(ino, K.O_WRONLY | K.O_NONBLOCK);
      if (fd < 0) return fd;
      r = s.native.ofdLock(fd, K.F_OFD_GETLK, fl);
      s.native.close(fd);
    }
    if (r < 0) return r;
    const type = Number(fl[0]!);
    if (type === K.F_UNLCK) return { start: 0n, end: 0n, type, pid: 0 };
    const start = BigInt.asUintN(64, fl[2]!);
    const end = fl[3]! === 0n ? K.OFFSET_MAX : start + fl[3]! - 1n;
    return { start, end, type, pid: this.holderPid(nodeid, owner, lk, fl) };
  }

  /**
   * OFD locks carry no pid, but the guest wants the holder's. The holder is the other owner
   * whose own view (F_OFD_GETLK ignores one's own locks) does not show the same conflict;
   * its pid is the one its SETLK carried.
   */
  private holderPid(nodeid: number, owner: bigint, lk: FileLock, conflict: BigInt64Array): number {
    for (const [o, l] of this.owners.get(nodeid) ?? []) {
      if (o === owner) continue;
      const probe = toFlock(lk);
      if (this.share.native.ofdLock(l.fd, K.F_OFD_GETLK, probe) < 0) continue;
      if (probe[0] !== conflict[0] || probe[2] !== conflict[2] || probe[3] !== conflict[3]) return l.pid;
    }
    return 0;
  }

  setlk(_ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock, flock: boolean, sleep: boolean, cb: (r: number) => void): void {
    if (lk.type !== K.F_RDLCK && lk.type !== K.F_WRLCK && lk.type !== K.F_UNLCK) return cb(-E.EINVAL);
    let delay = 1;
    const wait: LockWait = { timer: undefined, cb };
    const attempt = (): void => {
      // Each attempt re-resolves handle and lock owner: state may have changed while we waited.
      const r = flock ? this.tryFlock(fh, lk.type) : this.tryPosixLock(nodeid, owner, lk);
      if (r === -E.EAGAIN && sleep) {
        wait.timer = setTimeout(attempt, delay);
        this.waits.add(wait);
        delay = Math.min(delay * 2, LOCK_RETRY_MAX_MS);
        return;
      }
      this.waits.delete(wait);
      cb(r);
    };
    attempt();
  }

  /**
   * Finish every SETLKW still waiting, with EINTR (as a signal would). The device is stopping
   * (guest reset, VM stop, QEMU exit) and QEMU waits for every request in flight to complete.
   */
  cancelWaits(): void {
    const waits = [...this.waits];
    this.waits.clear();
    for (const w of waits) {
      clearTimeout(w.timer);
      w.cb(-E.EINTR);
    }
  }

  private tryPosixLock(nodeid: number, owner: bigint, lk: FileLock): number {
    if (!this.share.inodes.get(nodeid)) return -E.EBADF;
    const l = this.lockOwner(nodeid, owner, lk.type !== K.F_UNLCK);
    if (l === -E.ENOENT) return 0; // unlocking with no locks held
    if (typeof l === 'number') return l;
    const r = this.share.native.ofdLock(l.fd, K.F_OFD_SETLK, toFlock(lk));
    if (r === 0 && lk.type !== K.F_UNLCK && l.pid !== lk.pid) {
      // The pid GETLK reports lives in the registry key, so a restarted worker reports it too.
      this.share.registry.put(fdKey.lock(nodeid, owner, lk.pid), l.fd);
      this.share.registry.del(fdKey.lock(nodeid, owner, l.pid));
      l.pid = lk.pid;
    }
    return r === -E.EACCES ? -E.EAGAIN : r;
  }

  private tryFlock(fh: number, type: number): number {
    const h = this.share.files.get(fh);
    if (!h) return -E.EBADF;
    const op = type === K.F_RDLCK ? K.LOCK_SH : type === K.F_WRLCK ? K.LOCK_EX : K.LOCK_UN;
    const r = this.share.native.flock(h.fd, op | K.LOCK_NB);
    // The lock lives on this open file description: the keeper's duplicate keeps it held.
    if (r === 0 && op !== K.LOCK_UN) this.share.registry.flush();
    return r === -E.EWOULDBLOCK ? -E.EAGAIN : r;
  }
}

/** A FUSE lock as struct flock (l_type, l_whence, l_start, l_len, l_pid); l_len 0 = to EOF. */
function toFlock(lk: FileLock): BigInt64Array {
  const len = lk.end >= K.OFFSET_MAX ? 0n : lk.end - lk.start + 1n;
  return BigInt64Array.of(BigInt(lk.type), BigInt(K.SEEK_SET), BigInt.asIntN(64, lk.start), len, 0n);
}
