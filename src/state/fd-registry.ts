// Fds that must outlive the worker: inode O_PATH fds (when the inode has no file handle), open
// files and directories, lock owners' open file descriptions. The keeper keeps a duplicate of
// each under a key.
//
// Two kinds of put:
//   - put: the keeper holds the fd before put returns. For fds nothing else can bring back (an
//     inode without a file handle, a lock owner's open file description): the record naming
//     the fd is published only after the put, so a crash leaves at worst a leaked fd, never a
//     valid record without its fd.
//   - putLazy: for fds a restarted worker can re-open from their record (an open file or
//     directory, from its inode and flags). The put may wait for the next flush; a del of the
//     same key before then cancels both, so a short-lived open costs the keeper nothing.
// A del may always wait: until it reaches the keeper, the keeper only holds one fd too many.

export interface FdRegistry {
  /** Hand a duplicate of fd to the keeper under key now. */
  put(key: string, fd: number): void;
  /** Hand it over at the next flush, unless del(key) comes first. fd must stay open until then. */
  putLazy(key: string, fd: number): void;
  /** The keeper closes its duplicate (at the next flush at the latest). */
  del(key: string): void;
  /** Send everything pending now. */
  flush(): void;
}

/** One process, nobody to hand fds to. */
export const NO_FD_REGISTRY: FdRegistry = { put() {}, putLazy() {}, del() {}, flush() {} };

/** A put (fd >= 0) or a del (fd = -1) of one key, in the order they must reach the keeper. */
export type FdOp = [key: string, fd: number];

/**
 * The worker's registry: puts and dels queue up and leave in one batch (sendBatch), in order.
 * The batch is sent on flush(), before any strict put, and at the latest flushDelayMs after the
 * first op queued (via schedule).
 */
export class BatchingFdRegistry implements FdRegistry {
  /** key -> fd to put, or -1: del. Map order is the order ops were queued. */
  private readonly pending = new Map<string, number>();
  private scheduled = false;

  constructor(
    private readonly sendBatch: (ops: FdOp[]) => void,
    private readonly schedule: (fn: () => void) => void,
  ) {}

  get pendingCount(): number { return this.pending.size; }

  put(key: string, fd: number): void {
    this.pending.delete(key);
    this.pending.set(key, fd);
    this.flush();
  }

  putLazy(key: string, fd: number): void {
    // A queued del of the same key must reach the keeper before this put can be cancelled by a
    // later del: send it now (rare: a slot reused within one flush interval).
    if (this.pending.has(key)) this.flush();
    this.pending.set(key, fd);
    this.arm();
  }

  del(key: string): void {
    const queued = this.pending.get(key);
    if (queued !== undefined && queued >= 0) {
      // Never sent: the keeper has nothing under this key (putLazy flushed any older del).
      this.pending.delete(key);
      return;
    }
    this.pending.set(key, -1);
    this.arm();
  }

  flush(): void {
    if (this.pending.size === 0) return;
    const ops: FdOp[] = [...this.pending];
    this.pending.clear();
    this.sendBatch(ops);
  }

  private arm(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      this.flush();
    });
  }
}

/**
 * Keys: one namespace per map, the slot index (node id or fh) after the prefix. A restarted worker
 * reads keys its predecessors made (perhaps an older release): parseFdKey is the one reader.
 */
export const fdKey = {
  inode: (nodeid: number): string => `i${nodeid}`,
  file: (fh: number): string => `f${fh}`,
  dir: (fh: number): string => `d${fh}`,
  /** A submount's fd for open_by_handle_at (see passthrough/mount-fds.ts). */
  mount: (mntId: bigint): string => `m${mntId}`,
  /** pid: the guest process the owner's locks report (F_GETLK) */
  lock: (nodeid: number, owner: bigint, pid: number): string => `l${nodeid}:${owner}:${pid}`,
};

/** A registry key as fdKey made it. */
export type FdKey =
  | { kind: 'inode'; nodeid: number }
  | { kind: 'file'; fh: number }
  | { kind: 'dir'; fh: number }
  | { kind: 'mount'; mntId: bigint }
  | { kind: 'lock'; nodeid: number; owner: bigint; pid: number };

/** What fdKey made `key` from; null for anything fdKey does not make (the key is then no use to anyone). */
export function parseFdKey(key: string): FdKey | null {
  const rest = key.slice(1);
  switch (key[0]) {
    case 'i': { const nodeid = index(rest); return nodeid === null ? null : { kind: 'inode', nodeid }; }
    case 'f': { const fh = index(rest); return fh === null ? null : { kind: 'file', fh }; }
    case 'd': { const fh = index(rest); return fh === null ? null : { kind: 'dir', fh }; }
    case 'm': { const mntId = u64(rest); return mntId === null ? null : { kind: 'mount', mntId }; }
    case 'l': {
      const parts = rest.split(':');
      if (parts.length !== 3) return null;
      const nodeid = index(parts[0]!), owner = u64(parts[1]!), pid = index(parts[2]!);
      return nodeid === null || owner === null || pid === null || pid > 0xffffffff ? null : { kind: 'lock', nodeid, owner, pid };
    }
    default: return null;
  }
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

/** A slot index or pid: decimal digits, a safe integer. */
function index(s: string): number | null {
  if (!DECIMAL.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/** A u64 (mount id, lock owner): decimal digits below 2^64. */
function u64(s: string): bigint | null {
  if (!DECIMAL.test(s)) return null;
  const n = BigInt(s);
  return n < 1n << 64n ? n : null;
}
