// O_PATH fds of the inodes held by file handle, opened when an op needs one and kept in a
// bounded cache: with file handles a known inode costs its shared-memory record, not an fd (as
// in the Rust virtiofsd, which opens a handle-backed inode for each op and keeps no fd for it).
// Without the cache a guest `find` over more files than RLIMIT_NOFILE would end in EMFILE.
//
// Least recently used goes first. The last PINS fds ops took (get(), or put() on a miss) are
// pinned: never closed to make room, so an op that takes two (RENAME: both parents; an op takes
// at most three) cannot see the first closed by the second. The pins are a ring, not "until the
// stretch ends": the session serves a whole batch of requests in one synchronous pass, and pins
// held to its end would let a batch of GETATTRs of uncached inodes hold one fd each past the
// bound, up to the queue's size (EMFILE under a low RLIMIT_NOFILE). So the cache holds at most
// limit + PINS fds. No inode fd from here is used across an await: the I/O that runs on the
// thread pool uses open files' fds (handle-table.ts), which are not cached; an op takes its
// fds again after any await.

import type { NativeBinding } from '../native/binding';

/** The cache's bound when the guest's fd budget allows it: fds held for inodes the guest is
 *  using right now; a miss costs one open_by_handle_at. */
export const INODE_FD_CACHE_MAX = 1024;
/** The smallest bound. */
export const INODE_FD_CACHE_MIN = 16;
/** Fds kept open past the bound for the ops that took them last (an op takes at most three). */
export const INODE_FD_PINS = 8;

/**
 * The bound for a guest fd budget of `guestFds` (fd-plan.ts: RLIMIT_NOFILE less what the worker
 * and keeper keep for themselves): a quarter of it, between INODE_FD_CACHE_MIN and
 * INODE_FD_CACHE_MAX, so that open files and lock owners keep three quarters.
 */
export function inodeFdCacheLimit(guestFds: number): number {
  return Math.max(INODE_FD_CACHE_MIN, Math.min(INODE_FD_CACHE_MAX, Math.floor(guestFds / 4)));
}

export class InodeFds {
  /** node id -> fd, least recently used first (a Map iterates in insertion order). */
  private readonly lru = new Map<number, number>();
  /** Node ids of the last INODE_FD_PINS fds ops took (0: none). */
  private readonly pinned = new Float64Array(INODE_FD_PINS);
  private nextPin = 0;
  /** Fds opened on a miss (for the tests and the log: how often the bound bites). */
  misses = 0;

  constructor(private readonly native: NativeBinding, readonly limit: number) {
    if (!(limit >= 1)) throw new Error(`inode fd cache bound ${limit}`);
  }

  get size(): number { return this.lru.size; }

  /** The cached fd of nodeid, now the most recently used and (pin) pinned; undefined on a miss. */
  get(nodeid: number, pin = true): number | undefined {
    const fd = this.lru.get(nodeid);
    if (fd === undefined) return undefined;
    this.lru.delete(nodeid);
    this.lru.set(nodeid, fd);
    if (pin) this.pin(nodeid);
    return fd;
  }

  /**
   * Keep fd (owned from now on) as nodeid's, most recently used. pin: an op is about to use it (a
   * miss of get); an fd kept for later (a new node from LOOKUP or READDIRPLUS) is not pinned, so
   * a READDIRPLUS of a large directory does not hold its entries' fds past the bound. A node
   * with a cached fd keeps that one (an op may be using it), and fd is closed.
   */
  put(nodeid: number, fd: number, pin: boolean): void {
    if (this.lru.has(nodeid)) {
      if (this.get(nodeid, pin) !== fd) this.native.close(fd);
      return;
    }
    this.lru.set(nodeid, fd);
    if (pin) {
      this.misses++;
      this.pin(nodeid);
    }
    this.trim();
  }

  /** The node is gone: close its fd, if cached. */
  drop(nodeid: number): void {
    const fd = this.lru.get(nodeid);
    if (fd === undefined) return;
    this.lru.delete(nodeid);
    this.native.close(fd);
  }

  /** Is nodeid's fd cached (the inode is pinned on the host by it)? */
  has(nodeid: number): boolean { return this.lru.has(nodeid); }

  close(): void {
    for (const fd of this.lru.values()) this.native.close(fd);
    this.lru.clear();
    this.pinned.fill(0);
  }

  private pin(nodeid: number): void {
    this.pinned[this.nextPin] = nodeid;
    this.nextPin = (this.nextPin + 1) % INODE_FD_PINS;
  }

  /** Close least recently used fds past the bound, skipping pinned ones. */
  private trim(): void {
    let over = this.lru.size - this.limit;
    if (over <= 0) return;
    for (const [nodeid, fd] of this.lru) {
      if (over <= 0) break;
      if (this.pinned.includes(nodeid)) continue;
      this.lru.delete(nodeid);
      this.native.close(fd);
      over--;
    }
  }
}
