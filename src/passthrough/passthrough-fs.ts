// PassthroughFs: the FUSE op table over a host directory.
//
// Containment: every inode is held by an O_PATH|O_NOFOLLOW fd and every name the guest sends is
// one path component resolved with an *at call relative to its parent's fd, never followed if it
// is a symlink. Files are (re)opened through /proc/self/fd/N of the inode's own fd, which names
// the inode itself, not a path, so no rename or symlink on the host can redirect it outside.
// The session has already rejected names containing '/', "." and "..".
//
// Only regular files and directories are ever opened (reopen()): opening a device node the guest
// made with MKNOD would hand it the host's device (CVE-2020-35517), and opening a FIFO blocks the
// event loop until a writer comes. Both peers refuse them with EBADF: QEMU 7.2's C virtiofsd in
// lo_inode_open() (tools/virtiofsd/passthrough_ll.c, "virtiofsd: prevent opening of special
// files (CVE-2020-35517)"), the Rust virtiofsd through is_safe_inode(). The file type is fixed
// for an inode's life and the O_PATH fd pins the inode, so the check cannot race.
// What the guest may hold is budgeted (budget.ts): inodes, open files, lock owners.
//
// Concurrency: every op decides and mutates the maps in one synchronous stretch (a decision made
// before an await may be stale after it: Kevin Wolf, "qcow2: Bring synchronous read/write back to life", qemu-devel, 2009-10-08).
// READ and WRITE first try their syscall inline with RWF_NOWAIT (page-cache hits finish on the
// event loop); what would block, and FSYNC, runs on the libuv thread pool. Around a pool op only
// the handle's busy count changes, and completion touches no map.

import * as nodefs from 'node:fs';
import type { NativeBinding } from '../native/binding';
import { ST, RWF_NOWAIT, toBinary } from '../native/binding';
import type { Logger } from '../log';
import { E } from '../linux/constants';
import { INIT, FOPEN, FATTR, FUSE_ATTR_SUBMOUNT, FUSE_WRITE_KILL_SUIDGID, FUSE_RELEASE_FLOCK_UNLOCK, MAX_BUFFER_SIZE } from '../fuse/abi';
import type {
  Ctx, DirSink, EntryResult, FileLock, FileSystem, InitReply, InitRequest, OpenResult, SetattrArgs,
} from '../fuse/filesystem';
import type { ReplayProbes } from '../fuse/replay';
import type { RangeIo } from '../fuse/ops';
import { InodeTable, type Inode } from './inode-table';
import { MountFds } from './mount-fds';
import { HandleTable, HANDLE_LAYOUT, type Handle } from './handle-table';
import { MemfdBacking, MemoryBacking, type SlotBacking } from '../state/slot-table';
import { NO_FD_REGISTRY, fdKey, type FdRegistry } from '../state/fd-registry';
import * as K from '../linux/constants';
import { DEFAULT_GUEST_LIMITS, GuestBudget, type BudgetKind, type GuestLimits } from './budget';

export type CacheMode = 'never' | 'metadata' | 'auto' | 'always';

export interface FsOptions {
  sharedDir: string;
  cache: CacheMode;
  xattr: boolean;
  posixAcl: boolean;
  announceSubmounts: boolean;
  readonly: boolean;
  writeback: boolean;
  allowDirectIo: boolean;
  readdirplus: boolean;
  killprivV2: boolean;
  /** Do READ/WRITE/FSYNC on the event loop instead of the thread pool (--thread-pool-size=0). */
  syncIo: boolean;
  /** Keep the maps in memfds (the daemon) or plain memory (unit tests). */
  memfdState: boolean;
  /** What the guest may hold (budget.ts). */
  limits: GuestLimits;
  /**
   * How a restarted worker gets inodes back: by file handle (nothing to hand to the keeper) or
   * by the keeper's duplicate of each O_PATH fd. prefer: handles when the shared directory's
   * file system gives them and open_by_handle_at works (CAP_DAC_READ_SEARCH); mandatory: refuse
   * to start otherwise. Only used with a keeper.
   */
  inodeFileHandles: 'never' | 'prefer' | 'mandatory';
}

/** The memfds of the three maps. */
export interface StateFds { inodes: number; files: number; dirs: number }

/** Where the maps live and who keeps the fds: set by a worker, empty for one process. */
export interface FsState {
  /** Adopt these memfds (a restarted worker: the maps of its predecessor). */
  fds?: Partial<StateFds>;
  registry?: FdRegistry;
  /** Fds the keeper kept for the previous worker, by registry key; consumed. */
  recovered?: Map<string, number>;
  /** The shared directory as an fd (a sandboxed worker's share tree), reopened through
   *  /proc/self/fd instead of opening opts.sharedDir by path. */
  shareFd?: number;
  /** /proc/self/fd opened before a chroot (owned from now on), and the prefix that names an fd
   *  through it in a path ('' when it is the working directory). */
  proc?: { fd: number; prefix: string };
}

export const DEFAULT_FS_OPTIONS: Omit<FsOptions, 'sharedDir'> = {
  cache: 'auto', xattr: false, posixAcl: false, announceSubmounts: true, readonly: false,
  writeback: false, allowDirectIo: false, readdirplus: true, killprivV2: false, syncIo: false, memfdState: true,
  inodeFileHandles: 'prefer', limits: DEFAULT_GUEST_LIMITS,
};

const EMPTY_BUF = new Uint8Array(0);
const DIRENT_BUF = 64 * 1024;
/** Largest COPY_FILE_RANGE done in one request: it runs on the event loop. A short count is legal. */
const COPY_CHUNK = 8 * MAX_BUFFER_SIZE;
const LOCK_RETRY_MAX_MS = 50;
/**
 * Buffered writes the file system cannot do with RWF_NOWAIT (ext4, tmpfs) are done inline on the
 * event loop while they are fast: copying into the page cache costs less than the two thread
 * hand-offs of the pool. One that takes longer than this (dirty-page throttling, a journal
 * commit, a read for a partial page) sends writes to the pool for WRITE_POOL_MS.
 */
const SLOW_INLINE_WRITE_MS = 10;
const WRITE_POOL_MS = 1000;

const bit = (n: number): bigint => 1n << BigInt(n);

const INODE: readonly BudgetKind[] = ['inodes'];
const HANDLE: readonly BudgetKind[] = ['handles'];
const INODE_AND_HANDLE: readonly BudgetKind[] = ['inodes', 'handles'];
const LOCK_OWNER: readonly BudgetKind[] = ['lockOwners'];
/** Open flags a guest may not pass on: an O_PATH handle does no I/O, and OPEN is not O_TMPFILE. */
const NEVER_OPEN_FLAGS = K.O_PATH | K.O_TMPFILE_BIT;

function errnoOf(e: unknown): number {
  const n = (e as { errno?: unknown }).errno;
  return typeof n === 'number' && n < 0 ? n : -E.EIO;
}

export class PassthroughFs implements FileSystem, ReplayProbes, RangeIo {
  readonly inodes: InodeTable;
  readonly files: HandleTable;
  readonly dirs: HandleTable;
  entryTimeout: number;
  attrTimeout: number;
  private readonly procFd: number;
  /** How a path names an fd through /proc/self/fd (see FsState.proc). */
  private readonly procPrefix: string;
  private readonly shareFd: number | undefined;
  /** The mounts file handles are made on (null without file handles). */
  private readonly mounts: MountFds | null;
  private readonly dentBuf = new Uint8Array(DIRENT_BUF);
  private readonly dentDv = new DataView(this.dentBuf.buffer);
  private readonly tmpSt: BigUint64Array = new BigUint64Array(17);
  /** POSIX lock owner's private open file description, per inode (OFD locks stand in for POSIX ones). */
  private readonly lockFds = new Map<number, Map<bigint, LockOwner>>();
  private lockOwnerCount = 0;
  readonly budget: GuestBudget;
  private readonly used: Record<BudgetKind, number> = { inodes: 0, handles: 0, lockOwners: 0 };
  private dontMask = false;
  private readonly registry: FdRegistry;
  private readonly lockWaits = new Set<LockWait>();
  private hasOpenat2 = true;
  /** Handles whose file said EOPNOTSUPP to RWF_NOWAIT reads / writes (by fh; a reused fh holds
   *  another Handle object, so it is tried again). */
  private readonly nowaitRead: (Handle | undefined)[] = [];
  private readonly nowaitWrite: (Handle | undefined)[] = [];
  /** Until then (performance.now()), writes without NOWAIT go to the pool (see SLOW_INLINE_WRITE_MS). */
  private writePoolUntil = 0;
  /** The last two stat arrays seen by words(), with their u32 views. */
  private wSt: BigUint64Array | null = null;
  private wView: Uint32Array = new Uint32Array(0);
  private wSt2: BigUint64Array | null = null;
  private wView2: Uint32Array = new Uint32Array(0);

  constructor(private readonly native: NativeBinding, readonly opts: FsOptions, private readonly log: Logger, state: FsState = {}) {
    const backing = (name: keyof StateFds): SlotBacking => {
      const fd = state.fds?.[name] ?? -1;
      if (fd >= 0) return new MemfdBacking(native, `vfsd-${name}`, fd);
      return opts.memfdState ? new MemfdBacking(native, `vfsd-${name}`) : new MemoryBacking();
    };
    const registry = state.registry ?? NO_FD_REGISTRY;
    this.registry = registry;
    const recovered = state.recovered ?? new Map<string, number>();
    const t = { never: 0, metadata: 86400, auto: 1, always: 86400 }[opts.cache];
    this.entryTimeout = t;
    this.attrTimeout = t;

    this.procFd = state.proc?.fd ?? native.openat(K.AT_FDCWD, '/proc/self/fd', K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
    if (this.procFd < 0) throw new Error(`cannot open /proc/self/fd: errno ${-this.procFd}`);
    this.procPrefix = state.proc?.prefix ?? '/proc/self/fd/';
    this.shareFd = state.shareFd;
    const rootFd = this.openShare(K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC);
    if (rootFd < 0) throw new Error(`cannot open shared directory ${opts.sharedDir}: errno ${-rootFd}`);
    const st = this.tmpSt;
    const r = native.stat(rootFd, '', K.AT_EMPTY_PATH | K.AT_SYMLINK_NOFOLLOW, st);
    if (r < 0) throw new Error(`cannot stat shared directory: errno ${-r}`);
    this.mounts = state.registry ? this.fileHandles(st[ST.mntId]!, registry, recovered) : null;
    const handles = this.mounts;

    this.budget = new GuestBudget(opts.limits, log, () => this.usage());
    this.inodes = new InodeTable(native, backing('inodes'), registry, recovered, handles, opts.limits.inodes);
    const reopenFile = (nodeid: number, flags: number): number => {
      const ino = this.inodes.get(nodeid);
      return ino ? this.reopen(ino, flags & ~K.O_TRUNC) : -E.EBADF;
    };
    const reopenDir = (nodeid: number): number => {
      const ino = this.inodes.get(nodeid);
      return ino ? this.reopen(ino, K.O_RDONLY | K.O_DIRECTORY) : -E.EBADF;
    };
    // A recovered handle's fd must be of the node its record names (a crashed worker's records
    // are checked, not trusted).
    const isOf = (nodeid: number, fd: number): boolean => {
      const ino = this.inodes.get(nodeid);
      const hs = new BigUint64Array(17);
      if (!ino || native.statFd(fd, hs) < 0) return false;
      return hs[ST.dev] === ino.dev && hs[ST.ino] === ino.ino;
    };
    this.files = new HandleTable(native, backing('files'), HANDLE_LAYOUT.kindFile, fdKey.file, registry, recovered, reopenFile, isOf, opts.limits.handles);
    this.dirs = new HandleTable(native, backing('dirs'), HANDLE_LAYOUT.kindDir, fdKey.dir, registry, recovered, reopenDir, isOf, opts.limits.handles);
    // A node whose handle no longer opens may live on in an open file or dir the guest holds.
    if (this.inodes.lost > 0) {
      for (const h of [...this.files.all(), ...this.dirs.all()]) {
        const ino = this.inodes.get(h.nodeid);
        if (!ino || ino.fd >= 0) continue;
        const fd = native.openat(this.procFd, String(h.fd), K.O_PATH | K.O_CLOEXEC, 0);
        if (fd >= 0) this.inodes.revive(h.nodeid, fd);
      }
    }
    const root = this.inodes.root;
    if (root) {
      // A recovered table: its root must still be the shared directory.
      native.close(rootFd);
      if (root.dev !== st[ST.dev] || root.ino !== st[ST.ino]) throw new Error('recovered state is for another shared directory');
      if (root.fd < 0) throw new Error('the keeper holds no fd for the shared directory');
    } else {
      this.inodes.setRoot(rootFd, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!));
    }
    // Lock owners' open file descriptions; anything else left over belongs to no valid record.
    for (const [key, fd] of recovered) {
      const m = /^l(\d+):(\d+):(\d+)$/.exec(key);
      if (m && this.inodes.get(Number(m[1]))) {
        const nodeid = Number(m[1]);
        let owners = this.lockFds.get(nodeid);
        if (!owners) this.lockFds.set(nodeid, (owners = new Map()));
        owners.set(BigInt(m[2]!), { fd, pid: Number(m[3]) });
        this.lockOwnerCount++;
      } else {
        native.close(fd);
        registry.del(key);
      }
    }
    recovered.clear();
    // A record that does not match its inode (see InodeTable.badRecord) was not adopted.
    if (this.inodes.refused > 0) log.warn({ refused: this.inodes.refused }, 'inode records that do not match their inode were refused; their ops fail with EBADF');
    if (this.inodes.count > 1) {
      const lost = { inodes: this.inodes.lost, files: this.files.lost, dirs: this.dirs.lost };
      const fields = { inodes: this.inodes.count, byHandle: this.inodes.handleCount, files: this.files.count, dirs: this.dirs.count, lost };
      // A lost inode is routine (deleted, and the guest has not sent its FORGET yet); a lost
      // open file or dir is an fh the guest may still use.
      if (lost.files + lost.dirs > 0) log.warn(fields, 'state recovered; some open files could not be opened again (their ops fail with EBADF)');
      else log.info(fields, 'state recovered');
      if (this.inodes.lostByError.size > 0) {
        log.warn({ errnos: Object.fromEntries(this.inodes.lostByError) }, 'some inodes did not open by file handle (not deleted); their ops fail with EBADF: consider --inode-file-handles=never');
      }
    }
  }

  /**
   * The mounts to make file handles on, if --inode-file-handles allows and they work on the shared
   * directory (a probe makes a handle of it and opens it again); submounts are probed when seen.
   */
  private fileHandles(mntId: bigint, registry: FdRegistry, recovered: Map<string, number>): MountFds | null {
    const mode = this.opts.inodeFileHandles;
    if (mode === 'never') return null;
    const n = this.native;
    const mounts = new MountFds(n, registry, this.procFd);
    const rootFd = this.openShare(K.O_RDONLY | K.O_DIRECTORY | K.O_CLOEXEC);
    const why = rootFd < 0 ? rootFd : mounts.probe(rootFd);
    if (why === 0) {
      mounts.setRoot(mntId, rootFd);
      mounts.adopt(recovered);
      return mounts;
    }
    if (rootFd >= 0) n.close(rootFd);
    const msg = `file handles do not work on the shared directory (errno ${-why}${why === -E.EPERM ? ': needs CAP_DAC_READ_SEARCH' : ''})`;
    if (mode === 'mandatory') throw new Error(`--inode-file-handles=mandatory: ${msg}`);
    this.log.info(`${msg}; the keeper holds an O_PATH fd per inode instead`);
    return null;
  }

  /** The memfds holding the maps (the keeper keeps them across workers). */
  get stateFds(): StateFds {
    return { inodes: this.inodes.stateFd, files: this.files.stateFd, dirs: this.dirs.stateFd };
  }

  close(): void {
    this.destroy();
    this.files.close();
    this.dirs.close();
    this.inodes.close();
    this.native.close(this.procFd);
    this.mounts?.close();
  }

  // ---- helpers ----

  /** Open the shared directory: through the share tree's fd if the worker has one, else by path. */
  private openShare(flags: number): number {
    if (this.shareFd !== undefined) return this.native.openat(this.procFd, String(this.shareFd), flags, 0);
    return this.native.openat(K.AT_FDCWD, toBinary(this.opts.sharedDir), flags, 0);
  }

  private inode(nodeid: number): Inode | undefined {
    return this.inodes.get(nodeid);
  }

  private statInode(ino: Inode, st: BigUint64Array): number {
    return this.native.statFd(ino.fd, st);
  }

  /**
   * Open the inode itself (not a path) with new flags, through its /proc/self/fd magic link: the
   * one way anything the guest names gets opened. Only regular files and directories (see the top
   * of this file); everything else is EBADF, as with both peers.
   */
  private reopen(ino: Inode, flags: number): number {
    const type = ino.mode & K.S_IFMT;
    if ((type !== K.S_IFREG && type !== K.S_IFDIR) || ino.fd < 0) return -E.EBADF;
    const f = (flags & ~(K.O_CREAT | K.O_EXCL | K.O_NOCTTY | K.O_NOFOLLOW | NEVER_OPEN_FLAGS)) | K.O_CLOEXEC;
    return this.native.openat(this.procFd, String(ino.fd), f, 0);
  }

  /** What the guest holds now, against its budget (one object, refilled: LOOKUP asks every time). */
  private usage(): Record<BudgetKind, number> {
    const u = this.used;
    u.inodes = this.inodes.count;
    u.handles = this.files.count + this.dirs.count;
    u.lockOwners = this.lockOwnerCount;
    return u;
  }

  private procPath(ino: Inode): string {
    return `${this.procPrefix}${ino.fd}`;
  }

  /** Run a creating syscall with the caller's fs ids (new files belong to the guest user) and umask. */
  private asCaller<T>(ctx: Ctx, umask: number, fn: () => T): T {
    const n = this.native;
    const switchIds = ctx.uid !== 0 || ctx.gid !== 0;
    const oldMask = this.dontMask ? n.umask(umask & 0o777) : -1;
    if (switchIds) {
      n.setfsgid(ctx.gid);
      n.setfsuid(ctx.uid);
    }
    try {
      return fn();
    } finally {
      if (switchIds) {
        n.setfsuid(0);
        n.setfsgid(0);
      }
      if (oldMask >= 0) n.umask(oldMask);
    }
  }

  /** Resolve `name` in `parent` and take one guest reference on it. */
  private doLookup(parent: Inode, name: string, st: BigUint64Array): EntryResult | number {
    const flags = K.O_PATH | K.O_NOFOLLOW | K.O_CLOEXEC;
    let fd = -E.ENOSYS;
    if (this.hasOpenat2) {
      // Defence in depth: the kernel itself refuses to leave the parent or follow any link.
      fd = this.native.openat2(parent.fd, name, flags, 0, K.RESOLVE_BENEATH | K.RESOLVE_NO_MAGICLINKS | K.RESOLVE_NO_SYMLINKS);
      if (fd === -E.ENOSYS) this.hasOpenat2 = false;
    }
    if (fd === -E.ENOSYS) fd = this.native.openat(parent.fd, name, flags, 0);
    if (fd < 0) return fd;
    return this.entryFromPathFd(parent, fd, st);
  }

  /** Take one guest reference on the inode behind an O_PATH fd (consumed: kept or closed). */
  private entryFromPathFd(parent: Inode, fd: number, st: BigUint64Array): EntryResult | number {
    const r = this.native.statFd(fd, st);
    if (r < 0) {
      this.native.close(fd);
      return r;
    }
    const w = this.words(st);
    const mode = w[2 * ST.mode]!;
    if (!this.budget.fits(INODE) && !this.inodes.knows(w)) {
      this.native.close(fd);
      return this.budget.refuse(INODE);
    }
    const ino = this.inodes.lookupOrInsertStat(fd, w, mode);
    let attrFlags = 0;
    if (this.opts.announceSubmounts && (mode & K.S_IFMT) === K.S_IFDIR && (ino.mntId !== parent.mntId || ino.dev !== parent.dev)) {
      attrFlags |= FUSE_ATTR_SUBMOUNT;
    }
    return { nodeid: ino.nodeid, generation: ino.generation, attrFlags };
  }

  /** st (a stat() result) as u32 words, lo then hi per slot: read without making BigInts. */
  private words(st: BigUint64Array): Uint32Array {
    if (st === this.wSt) return this.wView;
    if (st === this.wSt2) return this.wView2;
    this.wSt2 = this.wSt; this.wView2 = this.wView;
    this.wSt = st;
    this.wView = new Uint32Array(st.buffer, st.byteOffset, st.length * 2);
    return this.wView;
  }

  private fileHandle(fh: number): Handle | undefined {
    return this.files.get(fh);
  }

  private openFlags(flags: number): number {
    let f = flags & ~(K.O_CREAT | K.O_EXCL | K.O_NOCTTY | NEVER_OPEN_FLAGS);
    if (!this.opts.allowDirectIo) f &= ~K.O_DIRECT;
    if (this.opts.writeback) {
      // With a writeback cache the guest may read pages of a write-only file and does
      // O_APPEND positioning itself (as the C and Rust virtiofsd do).
      if ((f & K.O_ACCMODE) === K.O_WRONLY) f = (f & ~K.O_ACCMODE) | K.O_RDWR;
      f &= ~K.O_APPEND;
    }
    return f;
  }

  private fopenFlags(): number {
    switch (this.opts.cache) {
      case 'never': case 'metadata': return FOPEN.DIRECT_IO;
      case 'always': return FOPEN.KEEP_CACHE;
      default: return 0;
    }
  }

  private writes(flags: number): boolean {
    return (flags & K.O_ACCMODE) !== K.O_RDONLY || (flags & K.O_TRUNC) !== 0;
  }

  // ---- session ----

  init(req: InitRequest): InitReply | number {
    const o = this.opts;
    let want = bit(INIT.ASYNC_READ) | bit(INIT.PARALLEL_DIROPS) | bit(INIT.BIG_WRITES) | bit(INIT.ASYNC_DIO)
      | bit(INIT.ATOMIC_O_TRUNC) | bit(INIT.MAX_PAGES) | bit(INIT.INIT_EXT) | bit(INIT.HAS_IOCTL_DIR)
      | bit(INIT.POSIX_LOCKS) | bit(INIT.FLOCK_LOCKS);
    if (o.cache === 'auto') want |= bit(INIT.AUTO_INVAL_DATA);
    if (o.readdirplus && o.cache !== 'never') want |= bit(INIT.DO_READDIRPLUS) | bit(INIT.READDIRPLUS_AUTO);
    if (o.announceSubmounts) want |= bit(INIT.SUBMOUNTS);
    if (o.writeback) want |= bit(INIT.WRITEBACK_CACHE);
    if (o.killprivV2) want |= bit(INIT.HANDLE_KILLPRIV_V2);
    if (o.posixAcl) {
      const acl = bit(INIT.POSIX_ACL) | bit(INIT.DONT_MASK) | bit(INIT.SETXATTR_EXT);
      if ((req.flags & acl) !== acl) {
        this.log.error('--posix-acl needs a guest that supports POSIX_ACL, DONT_MASK and SETXATTR_EXT');
        return -E.EPROTO;
      }
      want |= acl;
    }
    const flags = want & req.flags;
    this.dontMask = (flags & bit(INIT.DONT_MASK)) !== 0n;
    return {
      flags, maxReadahead: req.maxReadahead, maxWrite: MAX_BUFFER_SIZE, maxPages: MAX_BUFFER_SIZE / 4096,
      timeGran: 1, maxBackground: 64, congestionThreshold: 48,
    };
  }

  destroy(): void {
    this.files.removeAll();
    this.dirs.removeAll();
    for (const nodeid of [...this.lockFds.keys()]) this.dropLockFds(nodeid);
    this.inodes.forgetAll();
  }

  // ---- names ----

  lookup(_ctx: Ctx, parent: number, name: string, st: BigUint64Array): EntryResult | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (name.length === 0 || name.includes('/') || name === '.' || name === '..') return -E.EINVAL;
    return this.doLookup(p, name, st);
  }

  forget(nodeid: number, nlookup: number): void {
    if (nlookup <= 0) return;
    const ino = this.inodes.get(nodeid);
    if (ino && ino.nlookup <= nlookup) this.dropLockFds(nodeid);
    this.inodes.forget(nodeid, nlookup);
  }

  getattr(_ctx: Ctx, nodeid: number, _fh: number | null, st: BigUint64Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    return this.statInode(ino, st);
  }

  setattr(_ctx: Ctx, nodeid: number, a: SetattrArgs, st: BigUint64Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    const n = this.native;
    let h: Handle | undefined;
    if (a.valid & FATTR.FH) {
      h = this.fileHandle(a.fh);
      if (!h || h.nodeid !== nodeid) return -E.EBADF;
    }
    const isLink = (ino.mode & K.S_IFMT) === K.S_IFLNK;
    let r = 0;
    if (a.valid & FATTR.MODE) {
      if (isLink) return -E.EOPNOTSUPP;
      r = n.fchmodat(this.procFd, String(h ? h.fd : ino.fd), a.mode & 0o7777, 0);
      if (r < 0) return r;
    }
    if (a.valid & (FATTR.UID | FATTR.GID)) {
      const uid = a.valid & FATTR.UID ? a.uid : -1;
      const gid = a.valid & FATTR.GID ? a.gid : -1;
      r = n.fchownat(ino.fd, '', uid, gid, K.AT_EMPTY_PATH | K.AT_SYMLINK_NOFOLLOW);
      if (r < 0) return r;
    }
    if (a.valid & FATTR.SIZE) {
      if (h) {
        r = n.ftruncate(h.fd, a.size);
      } else {
        const fd = this.reopen(ino, K.O_WRONLY | K.O_NONBLOCK);
        if (fd < 0) return fd;
        r = n.ftruncate(fd, a.size);
        n.close(fd);
      }
      if (r < 0) return r;
    }
    if (a.valid & (FATTR.ATIME | FATTR.MTIME)) {
      const at = a.valid & FATTR.ATIME_NOW ? [0, K.UTIME_NOW] : a.valid & FATTR.ATIME ? [a.atime, a.atimensec] : [0, K.UTIME_OMIT];
      const mt = a.valid & FATTR.MTIME_NOW ? [0, K.UTIME_NOW] : a.valid & FATTR.MTIME ? [a.mtime, a.mtimensec] : [0, K.UTIME_OMIT];
      r = isLink
        ? n.utimensat(ino.fd, '', at[0]!, at[1]!, mt[0]!, mt[1]!, K.AT_EMPTY_PATH | K.AT_SYMLINK_NOFOLLOW)
        : n.utimensat(K.AT_FDCWD, this.procPath(ino), at[0]!, at[1]!, mt[0]!, mt[1]!, 0);
      if (r < 0) return r;
    }
    r = this.statInode(ino, st);
    if (r < 0) return r;
    if ((a.valid & FATTR.KILL_SUIDGID) && !(a.valid & FATTR.MODE)) {
      r = this.killSuidgid(ino, st);
      if (r < 0) return r;
    }
    return 0;
  }

  /** Clear setuid, and setgid when group-executable, as a non-root write or truncate would. */
  private killSuidgid(ino: Inode, st: BigUint64Array): number {
    const mode = Number(st[ST.mode]!);
    let clear = mode & K.S_ISUID;
    if ((mode & (K.S_ISGID | K.S_IXGRP)) === (K.S_ISGID | K.S_IXGRP)) clear |= K.S_ISGID;
    if (!clear || (mode & K.S_IFMT) !== K.S_IFREG) return 0;
    const r = this.native.fchmodat(this.procFd, String(ino.fd), mode & 0o7777 & ~clear, 0);
    return r < 0 ? r : this.statInode(ino, st);
  }

  readlink(_ctx: Ctx, nodeid: number, buf: Uint8Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if ((ino.mode & K.S_IFMT) !== K.S_IFLNK) return -E.EINVAL;
    return this.native.readlinkat(ino.fd, '', buf);
  }

  private make(ctx: Ctx, parent: number, name: string, umask: number, st: BigUint64Array, fn: (p: Inode) => number): EntryResult | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    // Refused before anything is made: a new name whose node the guest cannot get helps no one.
    if (!this.budget.fits(INODE)) return this.budget.refuse(INODE);
    const r = this.asCaller(ctx, umask, () => fn(p));
    if (r < 0) return r;
    return this.doLookup(p, name, st);
  }

  symlink(ctx: Ctx, parent: number, name: string, target: string, st: BigUint64Array): EntryResult | number {
    return this.make(ctx, parent, name, 0, st, (p) => this.native.symlinkat(target, p.fd, name));
  }

  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number, umask: number, st: BigUint64Array): EntryResult | number {
    return this.make(ctx, parent, name, umask, st, (p) => this.native.mknodat(p.fd, name, mode, rdev));
  }

  mkdir(ctx: Ctx, parent: number, name: string, mode: number, umask: number, st: BigUint64Array): EntryResult | number {
    return this.make(ctx, parent, name, umask, st, (p) => this.native.mkdirat(p.fd, name, mode & 0o7777));
  }

  unlink(_ctx: Ctx, parent: number, name: string): number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    this.beforeLastLinkGoes();
    return this.native.unlinkat(p.fd, name, 0);
  }

  rmdir(_ctx: Ctx, parent: number, name: string): number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    this.beforeLastLinkGoes();
    return this.native.unlinkat(p.fd, name, K.AT_REMOVEDIR);
  }

  rename(_ctx: Ctx, parent: number, name: string, newParent: number, newName: string, flags: number): number {
    const p = this.inode(parent), np = this.inode(newParent);
    if (!p || !np) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    if (flags & ~(K.RENAME_NOREPLACE | K.RENAME_EXCHANGE | K.RENAME_WHITEOUT)) return -E.EINVAL;
    this.beforeLastLinkGoes();
    return this.native.renameat2(p.fd, name, np.fd, newName, flags);
  }

  link(_ctx: Ctx, nodeid: number, newParent: number, newName: string, st: BigUint64Array): EntryResult | number {
    const ino = this.inode(nodeid), np = this.inode(newParent);
    if (!ino || !np) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    // AT_EMPTY_PATH links the inode itself (needs CAP_DAC_READ_SEARCH); the /proc path is the fallback.
    let r = this.native.linkat(ino.fd, '', np.fd, newName, K.AT_EMPTY_PATH);
    if (r === -E.ENOENT || r === -E.EPERM) {
      r = this.native.linkat(K.AT_FDCWD, this.procPath(ino), np.fd, newName, K.AT_SYMLINK_FOLLOW);
    }
    if (r < 0) return r;
    return this.doLookup(np, newName, st);
  }

  /**
   * Before a name goes: an open file's inode may lose its last link, and then only open fds keep
   * it alive; a file handle can no longer bring it back. So the keeper gets every open handle's
   * fd that is still queued (usually none: queued ones are recent, and most are released
   * before the flush).
   */
  private beforeLastLinkGoes(): void {
    this.registry.flush();
  }

  // ---- files ----

  open(_ctx: Ctx, nodeid: number, flags: number): OpenResult | number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if (this.opts.readonly && this.writes(flags)) return -E.EROFS;
    if (!this.budget.fits(HANDLE)) return this.budget.refuse(HANDLE);
    const f = this.openFlags(flags);
    const fd = this.reopen(ino, f);
    if (fd < 0) return fd;
    const h = this.files.add(nodeid, fd, f);
    return { fh: h.fh, openFlags: this.fopenFlags() };
  }

  /**
   * CREATE makes a new file and never opens an existing one by name: O_CREAT|O_EXCL first (which
   * opens nothing that exists, and follows no symlink), and only if the name exists and the guest
   * did not ask for O_EXCL, the checked open of OPEN on what LOOKUP finds there. As QEMU 7.2's
   * lo_create() does; an O_CREAT open of an existing device node or FIFO would open it.
   */
  create(ctx: Ctx, parent: number, name: string, flags: number, mode: number, umask: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    if (!this.budget.fits(INODE_AND_HANDLE)) return this.budget.refuse(INODE_AND_HANDLE);
    const f = this.openFlags(flags) | K.O_CLOEXEC;
    const fd = this.asCaller(ctx, umask, () => this.native.openat(p.fd, name, f | K.O_CREAT | K.O_EXCL | K.O_NOFOLLOW, mode & 0o7777));
    if (fd >= 0) return this.adoptOpenFd(p, fd, f, st);
    if (fd !== -E.EEXIST || (flags & K.O_EXCL)) return fd;
    const entry = this.doLookup(p, name, st);
    if (typeof entry === 'number') return entry;
    // As the caller, as the O_CREAT open of an existing file used to be (its permissions apply).
    const open = this.asCaller(ctx, umask, () => this.open(ctx, entry.nodeid, flags));
    if (typeof open === 'number') {
      this.forget(entry.nodeid, 1);
      return open;
    }
    return { entry, open };
  }

  tmpfile(ctx: Ctx, parent: number, flags: number, mode: number, umask: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    if (!this.budget.fits(INODE_AND_HANDLE)) return this.budget.refuse(INODE_AND_HANDLE);
    let f = this.openFlags(flags) & ~K.O_TRUNC;
    if ((f & K.O_ACCMODE) === K.O_RDONLY) f |= K.O_RDWR; // O_TMPFILE needs write access
    const fd = this.asCaller(ctx, umask, () => this.native.openat(p.fd, '.', f | K.O_TMPFILE | K.O_CLOEXEC, mode & 0o7777));
    if (fd < 0) return fd;
    const r = this.adoptOpenFd(p, fd, f, st);
    // Born without a link: only the open fd keeps it, so the keeper needs it before the reply.
    this.registry.flush();
    return r;
  }

  /** A freshly created open file: its inode comes from the fd itself, so no host race can swap it. */
  private adoptOpenFd(p: Inode, fd: number, flags: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | number {
    const pathFd = this.native.openat(this.procFd, String(fd), K.O_PATH | K.O_CLOEXEC, 0);
    if (pathFd < 0) {
      this.native.close(fd);
      return pathFd;
    }
    const entry = this.entryFromPathFd(p, pathFd, st);
    if (typeof entry === 'number') {
      this.native.close(fd);
      return entry;
    }
    const h = this.files.add(entry.nodeid, fd, flags);
    return { entry, open: { fh: h.fh, openFlags: this.fopenFlags() } };
  }

  /**
   * READ. With the pool (the default) the read is first tried inline with RWF_NOWAIT: a page-cache
   * hit completes on the event loop with no thread hand-off. What NOWAIT cannot do (-EAGAIN: not
   * cached; -EOPNOTSUPP: not supported for this file, remembered per handle) goes to the pool. A
   * partial hit is continued, never replied short: the guest takes a short READ as EOF.
   */
  read(_ctx: Ctx, fh: number, offset: number, dst: Uint8Array[], cb: (r: number) => void): void {
    const h = this.fileHandle(fh);
    if (!h) return cb(-E.EBADF);
    if (dst.length === 0) return cb(0);
    const n = this.native;
    if (this.opts.syncIo) return cb(n.preadv2(h.fd, dst, offset, 0));
    const r = this.nowaitOk(h, this.nowaitRead) ? n.preadv2(h.fd, dst, offset, RWF_NOWAIT) : -E.EAGAIN;
    this.readOn(h, dst, offset, r, cb);
  }

  /**
   * READ into `count` (offset, length) pairs of iov in the window win (guest memory), as read():
   * the session's form, with no view object per guest buffer. iov is read before this returns.
   */
  readRanges(_ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, cb: (r: number) => void): void {
    const h = this.fileHandle(fh);
    if (!h) return cb(-E.EBADF);
    if (count === 0) return cb(0);
    const n = this.native;
    if (this.opts.syncIo) return cb(n.preadv2Ranges(h.fd, win, iov, count, offset, 0));
    let r = -E.EAGAIN;
    if (this.nowaitOk(h, this.nowaitRead)) {
      r = n.preadv2Ranges(h.fd, win, iov, count, offset, RWF_NOWAIT);
      if (r === 0 || r === rangesLength(iov, count) || (r < 0 && r !== -E.EAGAIN && r !== -E.EOPNOTSUPP)) return cb(r);
    }
    this.readOn(h, rangeViews(win, iov, count), offset, r, cb);
  }

  private nowaitOk(h: Handle, unsupported: (Handle | undefined)[]): boolean {
    // O_DIRECT is left to the pool: a NOWAIT direct read still waits for the device.
    return unsupported[h.fh] !== h && (h.flags & K.O_DIRECT) === 0;
  }

  /** Go on with a READ whose first inline RWF_NOWAIT try gave r. */
  private readOn(h: Handle, dst: Uint8Array[], offset: number, r: number, cb: (r: number) => void): void {
    let done = 0, total = -1;
    for (;;) {
      if (r > 0) {
        done += r;
        if (total < 0) total = byteLength(dst);
        if (done >= total) return cb(done);
        r = this.native.preadv2(h.fd, skipBytes(dst, done), offset + done, RWF_NOWAIT);
        continue;
      }
      if (r === 0) return cb(done); // EOF
      if (r === -E.EOPNOTSUPP) this.nowaitRead[h.fh] = h;
      else if (r !== -E.EAGAIN) return cb(done > 0 ? done : r);
      break;
    }
    const rest = done === 0 ? dst : skipBytes(dst, done);
    const before = done;
    this.files.hold(h);
    nodefs.readv(h.fd, rest, offset + before, (err, m) => {
      this.files.unhold(h);
      cb(err ? (before > 0 ? before : errnoOf(err)) : before + m);
    });
  }

  /** WRITE: as READ (inline with RWF_NOWAIT first, the rest on the pool). A short write is continued. */
  write(_ctx: Ctx, fh: number, offset: number, src: Uint8Array[], writeFlags: number, cb: (r: number) => void): void {
    const h = this.fileHandle(fh);
    if (!h) return cb(-E.EBADF);
    if (this.opts.readonly) return cb(-E.EROFS);
    if (src.length === 0) return cb(0);
    const n = this.native;
    if (this.opts.syncIo) return this.writeDone(h, writeFlags, n.pwritev2(h.fd, src, offset, 0), cb);
    if (this.inlineWriteOk(h)) {
      const t0 = performance.now();
      return this.writeDone(h, writeFlags, this.timed(t0, n.pwritev2(h.fd, src, offset, 0)), cb);
    }
    const r = this.nowaitOk(h, this.nowaitWrite) ? n.pwritev2(h.fd, src, offset, RWF_NOWAIT) : -E.EAGAIN;
    this.writeOn(h, src, offset, r, writeFlags, cb);
  }

  /** No NOWAIT writes on this file, not O_DIRECT, and inline writes have been fast lately. */
  private inlineWriteOk(h: Handle): boolean {
    return this.nowaitWrite[h.fh] === h && (h.flags & K.O_DIRECT) === 0 && performance.now() >= this.writePoolUntil;
  }

  /** An inline write that started at t0 gave r; if it was slow, the next writes go to the pool
   *  for a while. Returns r. (No closure per write: this is the WRITE hot path.) */
  private timed(t0: number, r: number): number {
    const t1 = performance.now();
    if (t1 - t0 > SLOW_INLINE_WRITE_MS) {
      this.writePoolUntil = t1 + WRITE_POOL_MS;
      this.log.debug({ ms: t1 - t0 }, 'slow inline write; writes go to the thread pool for a while');
    }
    return r;
  }


  /** WRITE from `count` (offset, length) pairs of iov in the window win, as readRanges(). */
  writeRanges(_ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, writeFlags: number, cb: (r: number) => void): void {
    const h = this.fileHandle(fh);
    if (!h) return cb(-E.EBADF);
    if (this.opts.readonly) return cb(-E.EROFS);
    if (count === 0) return cb(0);
    const n = this.native;
    if (this.opts.syncIo) return this.writeDone(h, writeFlags, n.pwritev2Ranges(h.fd, win, iov, count, offset, 0), cb);
    if (this.inlineWriteOk(h)) {
      const t0 = performance.now();
      return this.writeDone(h, writeFlags, this.timed(t0, n.pwritev2Ranges(h.fd, win, iov, count, offset, 0)), cb);
    }
    let r = -E.EAGAIN;
    if (this.nowaitOk(h, this.nowaitWrite)) {
      r = n.pwritev2Ranges(h.fd, win, iov, count, offset, RWF_NOWAIT);
      if (r === rangesLength(iov, count) || (r < 0 && r !== -E.EAGAIN && r !== -E.EOPNOTSUPP)) return this.writeDone(h, writeFlags, r, cb);
    }
    this.writeOn(h, rangeViews(win, iov, count), offset, r, writeFlags, cb);
  }

  /** Go on with a WRITE whose first inline RWF_NOWAIT try gave r. */
  private writeOn(h: Handle, src: Uint8Array[], offset: number, r: number, writeFlags: number, cb: (r: number) => void): void {
    let done = 0, total = -1;
    for (;;) {
      if (r > 0) {
        done += r;
        if (total < 0) total = byteLength(src);
        if (done >= total) return this.writeDone(h, writeFlags, done, cb);
        r = this.native.pwritev2(h.fd, skipBytes(src, done), offset + done, RWF_NOWAIT);
        continue;
      }
      // ext4 (Linux 6.18) and tmpfs have no NOWAIT buffered writes: one try per handle.
      if (r === -E.EOPNOTSUPP) {
        this.nowaitWrite[h.fh] = h;
        if (this.inlineWriteOk(h)) {
          const rest = done === 0 ? src : skipBytes(src, done);
          const t0 = performance.now();
          const m = this.timed(t0, this.native.pwritev2(h.fd, rest, offset + done, 0));
          return this.writeDone(h, writeFlags, m < 0 ? (done > 0 ? done : m) : done + m, cb);
        }
      } else if (r !== 0 && r !== -E.EAGAIN) return this.writeDone(h, writeFlags, done > 0 ? done : r, cb);
      break;
    }
    const rest = done === 0 ? src : skipBytes(src, done);
    const before = done;
    this.files.hold(h);
    nodefs.writev(h.fd, rest, offset + before, (err, m) => {
      this.files.unhold(h);
      this.writeDone(h, writeFlags, err ? (before > 0 ? before : errnoOf(err)) : before + m, cb);
    });
  }

  private writeDone(h: Handle, writeFlags: number, n: number, cb: (r: number) => void): void {
    if (n >= 0 && (writeFlags & FUSE_WRITE_KILL_SUIDGID)) {
      const ino = this.inode(h.nodeid);
      if (ino && this.statInode(ino, this.tmpSt) === 0) this.killSuidgid(ino, this.tmpSt);
    }
    cb(n);
  }

  statfs(_ctx: Ctx, nodeid: number, out: BigUint64Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    return this.native.fstatfs(ino.fd, out);
  }

  release(_ctx: Ctx, fh: number, _flags: number, releaseFlags: number): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    // The keeper's duplicate keeps the open file description (and its flock) alive until it
    // hears of the close: drop the lock now, as the guest's close did.
    if (releaseFlags & FUSE_RELEASE_FLOCK_UNLOCK) this.native.flock(h.fd, K.LOCK_UN);
    this.files.remove(h);
    return 0;
  }

  flush(_ctx: Ctx, nodeid: number, fh: number, lockOwner: bigint): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    // close() semantics: POSIX locks of this owner on this inode go away ...
    const owners = this.lockFds.get(nodeid);
    const l = owners?.get(lockOwner);
    if (l) {
      owners!.delete(lockOwner);
      this.closeLockOwner(nodeid, lockOwner, l);
    }
    // ... and a file system that acts on close (NFS) sees one: close a duplicate.
    const d = this.native.dup(h.fd);
    if (d < 0) return d;
    return this.native.close(d);
  }

  fsync(_ctx: Ctx, fh: number, datasync: boolean, cb: (r: number) => void): void {
    const h = this.fileHandle(fh);
    if (!h) return cb(-E.EBADF);
    if (this.opts.syncIo) return cb(this.native.fsync(h.fd, datasync));
    this.files.hold(h);
    const done = (err: NodeJS.ErrnoException | null): void => {
      this.files.unhold(h);
      cb(err ? errnoOf(err) : 0);
    };
    if (datasync) nodefs.fdatasync(h.fd, done);
    else nodefs.fsync(h.fd, done);
  }

  fallocate(_ctx: Ctx, fh: number, mode: number, offset: number, length: number): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    return this.native.fallocate(h.fd, mode, offset, length);
  }

  lseek(_ctx: Ctx, fh: number, offset: number, whence: number): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    return this.native.lseek(h.fd, offset, whence);
  }

  copyFileRange(_ctx: Ctx, fhIn: number, offIn: number, fhOut: number, offOut: number, len: number, flags: number): number {
    const a = this.fileHandle(fhIn), b = this.fileHandle(fhOut);
    if (!a || !b) return -E.EBADF;
    if (this.opts.readonly) return -E.EROFS;
    return this.native.copyFileRange(a.fd, offIn, b.fd, offOut, Math.min(len, COPY_CHUNK), flags);
  }

  // ---- xattrs ----

  private xattrTarget(nodeid: number, name: string | null): Inode | number {
    if (!this.opts.xattr) return -E.EOPNOTSUPP;
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if (name !== null && !this.opts.posixAcl && name.startsWith('system.posix_acl_')) return -E.EOPNOTSUPP;
    // The /proc path of an O_PATH symlink fd names the magic link, not the symlink.
    if ((ino.mode & K.S_IFMT) === K.S_IFLNK) return -E.EOPNOTSUPP;
    return ino;
  }

  setxattr(_ctx: Ctx, nodeid: number, name: string, value: Uint8Array, flags: number): number {
    const ino = this.xattrTarget(nodeid, name);
    if (typeof ino === 'number') return ino;
    if (this.opts.readonly) return -E.EROFS;
    return this.native.setxattr(this.procPath(ino), name, value, flags & (K.XATTR_CREATE | K.XATTR_REPLACE), false);
  }

  getxattr(_ctx: Ctx, nodeid: number, name: string, buf: Uint8Array): number {
    const ino = this.xattrTarget(nodeid, name);
    if (typeof ino === 'number') return ino === -E.EOPNOTSUPP ? -E.ENODATA : ino;
    return this.native.getxattr(this.procPath(ino), name, buf, false);
  }

  listxattr(_ctx: Ctx, nodeid: number, buf: Uint8Array): number {
    const ino = this.xattrTarget(nodeid, null);
    if (typeof ino === 'number') return ino === -E.EOPNOTSUPP ? 0 : ino;
    const r = this.native.listxattr(this.procPath(ino), buf, false);
    if (r <= 0 || this.opts.posixAcl) return r;
    return this.hideAclNames(buf, r);
  }

  /** Without --posix-acl the guest must not see ACL xattrs it cannot use. */
  private hideAclNames(buf: Uint8Array, len: number): number {
    if (buf.length === 0) return len; // size probe: an upper bound is fine
    const names = Buffer.from(buf.buffer, buf.byteOffset, len).toString('latin1').split('\0').filter((s) => s && !s.startsWith('system.posix_acl_'));
    const out = names.length ? Buffer.from(names.join('\0') + '\0', 'latin1') : Buffer.alloc(0);
    buf.set(out);
    return out.length;
  }

  removexattr(_ctx: Ctx, nodeid: number, name: string): number {
    const ino = this.xattrTarget(nodeid, name);
    if (typeof ino === 'number') return ino;
    if (this.opts.readonly) return -E.EROFS;
    return this.native.removexattr(this.procPath(ino), name, false);
  }

  // ---- directories ----

  opendir(_ctx: Ctx, nodeid: number, _flags: number): OpenResult | number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if (!this.budget.fits(HANDLE)) return this.budget.refuse(HANDLE);
    const fd = this.reopen(ino, K.O_RDONLY | K.O_DIRECTORY);
    if (fd < 0) return fd;
    const h = this.dirs.add(nodeid, fd, K.O_RDONLY);
    return { fh: h.fh, openFlags: this.opts.cache === 'always' ? FOPEN.CACHE_DIR : 0 };
  }

  readdir(_ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): number {
    const h = this.dirs.get(fh);
    if (!h) return -E.EBADF;
    const dir = this.inode(h.nodeid);
    if (!dir) return -E.EBADF;
    const n = this.native;
    if (h.dirOffset !== offset) {
      const r = n.seekDir(h.fd, offset);
      if (r < 0) return r;
    }
    let pos = offset;
    const buf = this.dentBuf, dv = this.dentDv;
    for (;;) {
      const len = n.getdents64(h.fd, buf);
      if (len < 0) return len;
      if (len === 0) break;
      for (let o = 0; o < len;) {
        const ino = dv.getBigUint64(o, true);
        const next = BigInt.asUintN(64, dv.getBigInt64(o + 8, true));
        const reclen = dv.getUint16(o + 16, true);
        const type = dv.getUint8(o + 18);
        let end = buf.indexOf(0, o + 19);
        if (end < 0 || end > o + reclen) end = o + reclen;
        const name = buf.subarray(o + 19, end);
        o += reclen;
        let ok: boolean;
        if (!plus) {
          ok = sink.add(ino, next, type, name);
        } else if (!this.fitsPlus(sink, name.length)) {
          ok = false;
        } else if (isDots(name)) {
          ok = sink.addPlus(null, null, ino, next, type, name);
        } else {
          const e = this.doLookup(dir, Buffer.from(name).toString('latin1'), st);
          ok = typeof e === 'number' ? sink.addPlus(null, null, ino, next, type, name) : sink.addPlus(e, st, ino, next, type, name);
        }
        if (!ok) {
          // This entry did not fit: leave the stream just before it for the next call.
          const r = n.seekDir(h.fd, pos);
          h.dirOffset = r < 0 ? -1n : pos;
          return r < 0 ? r : 0;
        }
        pos = next;
      }
    }
    h.dirOffset = pos;
    return 0;
  }

  private fitsPlus(sink: DirSink, nameLen: number): boolean {
    return ((152 + nameLen + 7) & ~7) <= sink.room;
  }

  releasedir(_ctx: Ctx, fh: number): number {
    const h = this.dirs.get(fh);
    if (!h) return -E.EBADF;
    this.dirs.remove(h);
    return 0;
  }

  fsyncdir(_ctx: Ctx, fh: number, datasync: boolean): number {
    const h = this.dirs.get(fh);
    if (!h) return -E.EBADF;
    return this.native.fsync(h.fd, datasync);
  }

  // ---- locks ----

  /** The open file description that carries `owner`'s POSIX locks on this inode (OFD locks). */
  private lockOwner(nodeid: number, owner: bigint, create: boolean): LockOwner | number {
    let owners = this.lockFds.get(nodeid);
    const known = owners?.get(owner);
    if (known) return known;
    if (!create) return -E.ENOENT;
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if (!this.budget.fits(LOCK_OWNER)) return this.budget.refuse(LOCK_OWNER);
    // A write lock needs a description open for writing; with --readonly nothing is, and a write
    // lock gets EBADF (a guest only asks for one through a file it opened for writing).
    const ro = K.O_RDONLY | K.O_NONBLOCK;
    let fd = this.opts.readonly ? this.reopen(ino, ro) : this.reopen(ino, K.O_RDWR | K.O_NONBLOCK);
    if (!this.opts.readonly && (fd === -E.EACCES || fd === -E.EROFS || fd === -E.EISDIR || fd === -E.ETXTBSY)) fd = this.reopen(ino, ro);
    if (fd < 0) return fd;
    if (!owners) this.lockFds.set(nodeid, (owners = new Map()));
    const l: LockOwner = { fd, pid: 0 };
    this.registry.put(fdKey.lock(nodeid, owner, 0), fd);
    owners.set(owner, l);
    this.lockOwnerCount++;
    return l;
  }

  private dropLockFds(nodeid: number): void {
    const owners = this.lockFds.get(nodeid);
    if (!owners) return;
    for (const [owner, l] of owners) this.closeLockOwner(nodeid, owner, l);
    this.lockFds.delete(nodeid);
  }

  /**
   * Release an owner's POSIX locks and close its open file description. The unlock is explicit
   * because the keeper's duplicate keeps the description (and so its OFD locks) alive until it
   * processes our fd-del, and the guest expects the locks gone as of this request.
   */
  private closeLockOwner(nodeid: number, owner: bigint, l: LockOwner): void {
    this.native.ofdLock(l.fd, K.F_OFD_SETLK, BigInt64Array.of(BigInt(K.F_UNLCK), BigInt(K.SEEK_SET), 0n, 0n, 0n));
    this.registry.del(fdKey.lock(nodeid, owner, l.pid));
    this.native.close(l.fd);
    this.lockOwnerCount--;
  }

  private toFlock(lk: FileLock): BigInt64Array {
    const len = lk.end >= K.OFFSET_MAX ? 0n : lk.end - lk.start + 1n;
    return BigInt64Array.of(BigInt(lk.type), BigInt(K.SEEK_SET), BigInt.asIntN(64, lk.start), len, 0n);
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
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if (lk.type !== K.F_RDLCK && lk.type !== K.F_WRLCK) return -E.EINVAL;
    const fl = this.toFlock(lk);
    const mine = this.lockFds.get(nodeid)?.get(owner);
    const h = mine ? undefined : this.fileHandle(fh);
    let r: number;
    if (mine) r = this.native.ofdLock(mine.fd, K.F_OFD_GETLK, fl);
    else if (h && h.nodeid === nodeid) r = this.native.ofdLock(h.fd, K.F_OFD_GETLK, fl);
    else {
      let fd = this.reopen(ino, K.O_RDONLY | K.O_NONBLOCK);
      if (fd === -E.EACCES && !this.opts.readonly) fd = this.reopen(ino, K.O_WRONLY | K.O_NONBLOCK);
      if (fd < 0) return fd;
      r = this.native.ofdLock(fd, K.F_OFD_GETLK, fl);
      this.native.close(fd);
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
    for (const [o, l] of this.lockFds.get(nodeid) ?? []) {
      if (o === owner) continue;
      const probe = this.toFlock(lk);
      if (this.native.ofdLock(l.fd, K.F_OFD_GETLK, probe) < 0) continue;
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
        this.lockWaits.add(wait);
        delay = Math.min(delay * 2, LOCK_RETRY_MAX_MS);
        return;
      }
      this.lockWaits.delete(wait);
      cb(r);
    };
    attempt();
  }

  /** SETLKW requests waiting for their lock. */
  get lockWaitCount(): number {
    return this.lockWaits.size;
  }

  /**
   * Finish every SETLKW still waiting, with EINTR (as a signal would). The device is stopping
   * (guest reset, VM stop, QEMU exit) and QEMU waits for every request in flight to complete.
   */
  cancelWaits(): void {
    const waits = [...this.lockWaits];
    this.lockWaits.clear();
    for (const w of waits) {
      clearTimeout(w.timer);
      w.cb(-E.EINTR);
    }
  }

  private tryPosixLock(nodeid: number, owner: bigint, lk: FileLock): number {
    if (!this.inode(nodeid)) return -E.EBADF;
    const l = this.lockOwner(nodeid, owner, lk.type !== K.F_UNLCK);
    if (l === -E.ENOENT) return 0; // unlocking with no locks held
    if (typeof l === 'number') return l;
    const r = this.native.ofdLock(l.fd, K.F_OFD_SETLK, this.toFlock(lk));
    if (r === 0 && lk.type !== K.F_UNLCK && l.pid !== lk.pid) {
      // The pid GETLK reports lives in the registry key, so a restarted worker reports it too.
      this.registry.put(fdKey.lock(nodeid, owner, lk.pid), l.fd);
      this.registry.del(fdKey.lock(nodeid, owner, l.pid));
      l.pid = lk.pid;
    }
    return r === -E.EACCES ? -E.EAGAIN : r;
  }

  private tryFlock(fh: number, type: number): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    const op = type === K.F_RDLCK ? K.LOCK_SH : type === K.F_WRLCK ? K.LOCK_EX : K.LOCK_UN;
    const r = this.native.flock(h.fd, op | K.LOCK_NB);
    // The lock lives on this open file description: the keeper's duplicate keeps it held.
    if (r === 0 && op !== K.LOCK_UN) this.registry.flush();
    return r === -E.EWOULDBLOCK ? -E.EAGAIN : r;
  }

  // ---- misc ----

  access(_ctx: Ctx, nodeid: number, mask: number): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if ((ino.mode & K.S_IFMT) === K.S_IFLNK) return 0;
    try {
      nodefs.accessSync(this.procPath(ino), mask & 7);
      return 0;
    } catch (e) {
      return errnoOf(e);
    }
  }

  nameIno(_ctx: Ctx, parent: number, name: string): number {
    const p = this.inode(parent);
    if (!p || this.native.stat(p.fd, name, K.AT_SYMLINK_NOFOLLOW, this.tmpSt) !== 0) return -1;
    return Number(this.tmpSt[ST.ino]! & 0xffffffffffffn);
  }

  hasXattr(_ctx: Ctx, nodeid: number, name: string): boolean {
    const ino = this.xattrTarget(nodeid, name);
    return typeof ino !== 'number' && this.native.getxattr(this.procPath(ino), name, EMPTY_BUF, false) >= 0;
  }

  lookupCount(nodeid: number): number {
    return this.inodes.get(nodeid)?.nlookup ?? -1;
  }

  appendSize(fh: number): number {
    const h = this.fileHandle(fh);
    if (!h || !(h.flags & K.O_APPEND)) return -1;
    return this.native.stat(h.fd, '', K.AT_EMPTY_PATH, this.tmpSt) === 0 ? Number(this.tmpSt[ST.size]!) : -1;
  }

  syncfs(_ctx: Ctx, nodeid: number): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    // syncfs(2) refuses O_PATH fds: open the inode for reading (a special file: EBADF, as the
    // peers; Linux asks through the root of the mount or submount, a directory).
    const fd = this.reopen(ino, K.O_RDONLY | K.O_NONBLOCK);
    if (fd < 0) return fd;
    const r = this.native.syncfs(fd);
    this.native.close(fd);
    return r;
  }
}

/** A guest lock owner's private open file description on one inode, and the pid its locks report. */
interface LockOwner { fd: number; pid: number }

/** A SETLKW waiting for its lock. */
interface LockWait { timer: NodeJS.Timeout | undefined; cb: (r: number) => void }

function byteLength(bufs: Uint8Array[]): number {
  let n = 0;
  for (let i = 0; i < bufs.length; i++) n += bufs[i]!.length;
  return n;
}

function rangesLength(iov: Float64Array, count: number): number {
  let n = 0;
  for (let i = 0; i < count; i++) n += iov[2 * i + 1]!;
  return n;
}

/** The (offset, length) pairs of iov in win as views (for the pool, which takes views). */
function rangeViews(win: Uint8Array, iov: Float64Array, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) out.push(win.subarray(iov[2 * i]!, iov[2 * i]! + iov[2 * i + 1]!));
  return out;
}

/** The views after the first `skip` bytes of bufs. */
function skipBytes(bufs: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (skip >= b.length) { skip -= b.length; continue; }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

function isDots(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}
