// The guest's budget of host resources: known inodes, open files and directories, POSIX lock
// owners. Most cost the worker an fd (an inode held by fd its O_PATH fd, an open file its fd, a
// lock owner its open file description; inodes held by file handle share a bounded cache of fds,
// inode-fds.ts) and many cost the keeper a duplicate, so a guest that never
// sends FORGET or RELEASE, or takes locks under ever new owners, would otherwise fill both fd
// tables and the maps' memfds. Past a limit the one request that needs more gets ENFILE ("too
// many open files in system": the guest's system is this file system), as the Rust virtiofsd's
// guest fd limit answers (src/passthrough/guest_fd_limit.rs there), and one log line tells the
// operator which flag to raise, once per episode, not once per request.
//
// How much the guest may hold in all is set by the keeper (src/keeper/fd-plan.ts): what the
// worker can hold is bounded by its RLIMIT_NOFILE, which it lowers itself before it reads any
// guest request, so that the keeper, which holds at most one duplicate per fd of the worker,
// always has room left.

import type { Logger } from '../log';
import { E } from '../linux/constants';

export interface GuestLimits {
  /** Inodes the guest holds node ids of (--max-inodes). */
  inodes: number;
  /** Open files and directories, i.e. FUSE file handles (--max-open-files). */
  handles: number;
  /** POSIX lock owners, each with its own open file description (--max-lock-owners). */
  lockOwners: number;
  /** All of them together: the fds the worker may hold for the guest (from RLIMIT_NOFILE). */
  fds: number;
  /** RLIMIT_NOFILE (soft and hard) a worker sets for itself before any guest request; 0: none. */
  workerNofile: number;
}

export type BudgetKind = 'inodes' | 'handles' | 'lockOwners';
/** What the guest holds: of each kind, and the fds its inodes may take (held ones, and the bound
 *  of the cache of those held by handle), which count against `fds` in place of `inodes`. */
export type BudgetUse = Record<BudgetKind, number> & { inodeFds: number };

export const DEFAULT_GUEST_LIMITS: GuestLimits = {
  inodes: 1_000_000, handles: 65_536, lockOwners: 4_096, fds: Number.MAX_SAFE_INTEGER, workerNofile: 0,
};

const FLAG: Record<BudgetKind | 'fds', string> = {
  inodes: '--max-inodes', handles: '--max-open-files', lockOwners: '--max-lock-owners', fds: '--rlimit-nofile',
};
const WHAT: Record<BudgetKind | 'fds', string> = {
  inodes: 'known inodes', handles: 'open files and directories', lockOwners: 'POSIX lock owners', fds: 'file descriptors for the guest',
};
/** An episode ends when use is back at or below this share of the limit. */
const EPISODE_END = 0.9;

export class GuestBudget {
  /** The limits that are exhausted right now (an episode: logged once at its start). */
  private readonly exhausted = new Set<BudgetKind | 'fds'>();
  /** Requests refused so far (all episodes). */
  refused = 0;

  constructor(readonly limits: GuestLimits, private readonly log: Logger, private readonly used: () => BudgetUse) {}

  /** Is there room for one more of each of kinds? Synchronous with the allocation it guards. */
  fits(kinds: readonly BudgetKind[]): boolean {
    const u = this.used();
    const l = this.limits;
    let total = u.inodeFds + u.handles + u.lockOwners;
    for (const k of kinds) {
      if (u[k] >= l[k]) return false;
      total++;
    }
    if (total > l.fds) return false;
    if (this.exhausted.size > 0) this.endEpisodes(u);
    return true;
  }

  /** Refuse a request that did not fit: -ENFILE, and a log line if this starts an episode. */
  refuse(kinds: readonly BudgetKind[]): number {
    this.refused++;
    const u = this.used();
    const which = kinds.find((k) => u[k] >= this.limits[k]) ?? 'fds';
    if (!this.exhausted.has(which)) {
      this.exhausted.add(which);
      const inUse = which === 'fds' ? u.inodeFds + u.handles + u.lockOwners : u[which];
      this.log.warn({ limit: this.limits[which], inUse, flag: FLAG[which] },
        `guest budget: no more ${WHAT[which]}; refusing requests that need one with ENFILE until the guest lets some go (raise ${FLAG[which]} to allow more)`);
    }
    return -E.ENFILE;
  }

  private endEpisodes(u: BudgetUse): void {
    for (const k of this.exhausted) {
      const inUse = k === 'fds' ? u.inodeFds + u.handles + u.lockOwners : u[k];
      if (inUse <= this.limits[k] * EPISODE_END) this.exhausted.delete(k);
    }
  }
}
