// O_PATH fds of the inodes held by file handle, opened when an op needs one and kept in a
// bounded cache: with file handles a known inode costs its shared-memory record, not an fd (as
// in the Rust virtiofsd, which opens a handle-backed inode for each op and keeps no fd for it).
// Without the cache a guest `find` over more files than RLIMIT_NOFILE would end in EMFILE.
//
// What goes first is chosen by the clock (second chance) algorithm, an approximation of least
// recently used that costs O(1) per op (F. J. Corbato, "A Paging Experiment with the Multics
// System", MIT Project MAC report MAC-M-384, 1968; Tanenbaum, "Modern Operating Systems", 3.4.5).
// The last PINS fds ops took (get(), or put() on a miss) are
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
  /** node id -> its slot in the arrays below. */
  private readonly slotOf = new Map<number, number>();
  /** Per slot: the node id (0: free), its fd, and the clock's reference bit. */
  private readonly node: Float64Array;
  private readonly fds: Int32Array;
  private readonly used: Uint8Array;
  private readonly free: number[] = [];
  private hand = 0;
  /** Node ids of the last INODE_FD_PINS fds ops took (0: none). */
  private readonly pinned = new Float64Array(INODE_FD_PINS);
  private nextPin = 0;
  /** Fds opened on a miss (for the tests and the bench: how often the bound bites). */
  misses = 0;

  constructor(private readonly native: NativeBinding, readonly limit: number) {
    if (!(limit >= 1)) throw new Error(`inode fd cache bound ${limit}`);
    // Past the bound: the pinned ones, and the one being put before the room is made.
    const slots = limit + INODE_FD_PINS + 1;
    this.node = new Float64Array(slots);
    this.fds = new Int32Array(slots);
    this.used = new Uint8Array(slots);
    for (let i = slots - 1; i >= 0; i--) this.free.push(i);
  }

  get size(): number { return this.slotOf.size; }

  /** The cached fd of nodeid, marked used and (pin) pinned; undefined on a miss. */
  get(nodeid: number, pin = true): number | undefined {
    const s = this.slotOf.get(nodeid);
    if (s === undefined) return undefined;
    this.used[s] = 1;
    if (pin) this.pin(nodeid);
    return this.fds[s];
  }

  /**
   * Keep fd (owned from now on) as nodeid's. pin: an op is about to use it (a miss of get); an fd
   * kept for later (a new node from LOOKUP or READDIRPLUS) is not pinned nor marked used, so it
   * goes first, and a READDIRPLUS of a large directory does not push out the fds in use. A node
   * with a cached fd keeps that one (an op may be using it), and fd is closed.
   */
  put(nodeid: number, fd: number, pin: boolean): void {
    if (this.slotOf.has(nodeid)) {
      if (this.get(nodeid, pin) !== fd) this.native.close(fd);
      return;
    }
    const s = this.free.pop()!;
    this.node[s] = nodeid;
    this.fds[s] = fd;
    this.used[s] = pin ? 1 : 0;
    this.slotOf.set(nodeid, s);
    if (pin) {
      this.misses++;
      this.pin(nodeid);
    }
    while (this.slotOf.size > this.limit && this.evictOne()) { /* until within the bound, or only pins are left */ }
  }

  /** The node is gone: close its fd, if cached. */
  drop(nodeid: number): void {
    const s = this.slotOf.get(nodeid);
    if (s !== undefined) this.release(s);
  }

  /** Is nodeid's fd cached (the inode is pinned on the host by it)? */
  has(nodeid: number): boolean { return this.slotOf.has(nodeid); }

  close(): void {
    for (const s of this.slotOf.values()) this.native.close(this.fds[s]!);
    this.slotOf.clear();
    this.node.fill(0);
    this.free.length = 0;
    for (let i = this.node.length - 1; i >= 0; i--) this.free.push(i);
    this.pinned.fill(0);
  }

  private pin(nodeid: number): void {
    this.pinned[this.nextPin] = nodeid;
    this.nextPin = (this.nextPin + 1) % INODE_FD_PINS;
  }

  /**
   * The clock's hand moves on to a slot neither pinned nor used since it last passed (clearing
   * the used bits it passes) and closes that fd. False if every cached fd is pinned.
   */
  private evictOne(): boolean {
    const n = this.node.length;
    for (let step = 0; step < 2 * n; step++) {
      const s = this.hand;
      this.hand = (this.hand + 1) % n;
      const nodeid = this.node[s]!;
      if (nodeid === 0 || this.pinned.includes(nodeid)) continue;
      if (this.used[s]) {
        this.used[s] = 0;
        continue;
      }
      this.release(s);
      return true;
    }
    return false;
  }

  private release(s: number): void {
    this.native.close(this.fds[s]!);
    this.slotOf.delete(this.node[s]!);
    this.node[s] = 0;
    this.free.push(s);
  }
}
