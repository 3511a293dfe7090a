// The shared directory as every part of the passthrough reaches it: the inode and handle maps,
// the guest's budget, the keeper's fd registry, and the few primitives the ops, I/O, locks and
// xattrs share: how an inode is opened, how a name becomes a node id, how a new file gets the
// caller's ids.
//
// Containment: every op reaches an inode through an O_PATH|O_NOFOLLOW fd of it (its own, or one
// opened from its file handle: fdOf) and every name the guest sends is one path component
// resolved with an *at call relative to its parent's fd, never followed if it is a symlink. Files
// are (re)opened through /proc/self/fd/N of such an fd, which names the inode itself, not a path,
// so no rename or symlink on the host can redirect it outside.
// The session has already rejected names containing '/', "." and "..".
//
// Only regular files and directories are ever opened (reopenInode): opening a device node the
// guest made with MKNOD would hand it the host's device (CVE-2020-35517), and opening a FIFO
// blocks the event loop until a writer comes. Both peers refuse them with EBADF: QEMU 7.2's C
// virtiofsd in lo_inode_open() (tools/virtiofsd/passthrough_ll.c, "virtiofsd: prevent opening
// of special files (CVE-2020-35517)"), the Rust virtiofsd through is_safe_inode(). The file type
// is fixed for an inode's life and the O_PATH fd pins the inode, so the check cannot race.
// (A file handle names one inode for its whole life, generation included.)

import { ST, STAT_SLOTS, type NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import { FUSE_ATTR_SUBMOUNT } from '../fuse/abi';
import type { Ctx, EntryResult } from '../fuse/filesystem';
import type { InodeTable, Inode } from './inode-table';
import type { HandleTable } from './handle-table';
import type { MountFds } from './mount-fds';
import type { FdRegistry } from '../state/fd-registry';
import { GuestBudget, type BudgetKind, type BudgetUse } from './budget';
import type { FsOptions } from './options';
import type { StartState, StateFds } from './recovery';

/** Open flags a guest may not pass on: an O_PATH handle does no I/O, and OPEN is not O_TMPFILE. */
export const NEVER_OPEN_FLAGS = K.O_PATH | K.O_TMPFILE_BIT;
export const INODE: readonly BudgetKind[] = ['inodes'];

/**
 * Open the inode itself (not a path) with new flags, through its /proc/self/fd magic link: the
 * one way anything the guest names gets opened. Only regular files and directories (see the top
 * of this file); everything else is EBADF, as with both peers.
 */
export function reopenInode(native: NativeBinding, procFd: number, ino: Inode, fdOf: (ino: Inode) => number, flags: number): number {
  const type = ino.mode & K.S_IFMT;
  if (type !== K.S_IFREG && type !== K.S_IFDIR) return -E.EBADF;
  const fd = fdOf(ino);
  if (fd < 0) return fd;
  const f = (flags & ~(K.O_CREAT | K.O_EXCL | K.O_NOCTTY | K.O_NOFOLLOW | NEVER_OPEN_FLAGS)) | K.O_CLOEXEC;
  return native.openat(procFd, String(fd), f, 0);
}

export class Share {
  /** /proc/self/fd, the directory every inode is reopened through. */
  readonly procFd: number;
  /** How a path names an fd through procFd: '/proc/self/fd/', or '' in a chrooted worker whose
   *  working directory it is (FsState.proc). */
  readonly procPrefix: string;
  /** The mounts file handles are made on (null without file handles). */
  readonly mounts: MountFds | null;
  readonly inodes: InodeTable;
  readonly files: HandleTable;
  readonly dirs: HandleTable;
  readonly registry: FdRegistry;
  readonly budget: GuestBudget;
  /** The guest asked us not to apply the umask (FUSE_DONT_MASK): creating ops take it from the request. */
  dontMask = false;
  /** Scratch stat array for the parts (used and read within one synchronous stretch). */
  readonly tmpSt = new BigUint64Array(STAT_SLOTS);
  private readonly used: BudgetUse = { inodes: 0, inodeFds: 0, handles: 0, lockOwners: 0 };
  private hasOpenat2 = true;
  /** The last two stat arrays seen by words(), with their u32 views. */
  private wSt: BigUint64Array | null = null;
  private wView: Uint32Array = new Uint32Array(0);
  private wSt2: BigUint64Array | null = null;
  private wView2: Uint32Array = new Uint32Array(0);

  /** lockOwners: how many POSIX lock owners the guest has (locks.ts), for its budget. */
  constructor(readonly native: NativeBinding, readonly opts: FsOptions, readonly log: Logger, s: StartState, lockOwners: () => number) {
    this.procFd = s.procFd;
    this.procPrefix = s.procPrefix;
    this.mounts = s.mounts;
    this.inodes = s.inodes;
    this.files = s.files;
    this.dirs = s.dirs;
    this.registry = s.registry;
    this.budget = new GuestBudget(opts.limits, log, () => {
      // One object, refilled: LOOKUP asks every time.
      const u = this.used;
      u.inodes = this.inodes.count;
      u.inodeFds = this.inodes.fdReserve;
      u.handles = this.files.count + this.dirs.count;
      u.lockOwners = lockOwners();
      return u;
    });
  }

  /** The memfds holding the maps (the keeper keeps them across workers). */
  get stateFds(): StateFds {
    return { inodes: this.inodes.stateFd, files: this.files.stateFd, dirs: this.dirs.stateFd };
  }

  reopen(ino: Inode, flags: number): number {
    return reopenInode(this.native, this.procFd, ino, this.fdOf, flags);
  }

  /**
   * The one way an op gets an O_PATH fd of an inode: its own, or one opened from its file handle
   * (InodeTable.fd), valid for the op in hand only (never across an await). A handle that no longer opens
   * (ESTALE, ENOENT) may be of a file whose last link is gone while the guest holds it open: the
   * open file's fd still reaches the inode, and the node keeps an O_PATH fd of it from now on
   * (revive), as a restarted worker does for such a node (recovery.ts). Otherwise -errno.
   */
  readonly fdOf = (ino: Inode): number => {
    const fd = this.inodes.fd(ino);
    if (fd !== -E.ESTALE && fd !== -E.ENOENT) return fd;
    for (const h of this.files.all()) if (h.nodeid === ino.nodeid && this.revive(ino, h.fd)) return ino.fd;
    for (const h of this.dirs.all()) if (h.nodeid === ino.nodeid && this.revive(ino, h.fd)) return ino.fd;
    return fd;
  };

  /** Give ino an O_PATH fd of the open file openFd (see fdOf). */
  private revive(ino: Inode, openFd: number): boolean {
    const pathFd = this.native.openat(this.procFd, String(openFd), K.O_PATH | K.O_CLOEXEC, 0);
    return pathFd >= 0 && this.inodes.revive(ino.nodeid, pathFd);
  }

  /** A path naming the inode itself, for the calls that take no fd (xattrs, access, utimensat),
   *  valid for the op in hand (see fdOf); -errno if there is no fd of it. */
  procPath(ino: Inode): string | number {
    const fd = this.fdOf(ino);
    return fd < 0 ? fd : `${this.procPrefix}${fd}`;
  }

  statInode(ino: Inode, st: BigUint64Array): number {
    const fd = this.fdOf(ino);
    return fd < 0 ? fd : this.native.statFd(fd, st);
  }

  /** Clear setuid, and setgid when group-executable, as a non-root write or truncate would. */
  killSuidgid(ino: Inode, st: BigUint64Array): number {
    const mode = Number(st[ST.mode]!);
    let clear = mode & K.S_ISUID;
    if ((mode & (K.S_ISGID | K.S_IXGRP)) === (K.S_ISGID | K.S_IXGRP)) clear |= K.S_ISGID;
    if (!clear || (mode & K.S_IFMT) !== K.S_IFREG) return 0;
    const fd = this.fdOf(ino);
    if (fd < 0) return fd;
    const r = this.native.fchmodat(this.procFd, String(fd), mode & K.S_IALLUGO & ~clear, 0);
    return r < 0 ? r : this.statInode(ino, st);
  }

  /** Run a creating syscall with the caller's fs ids (new files belong to the guest user) and umask. */
  asCaller<T>(ctx: Ctx, umask: number, fn: () => T): T {
    const n = this.native;
    const switchIds = ctx.uid !== 0 || ctx.gid !== 0;
    const oldMask = this.dontMask ? n.umask(umask & K.S_IRWXUGO) : -1;
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
  lookupName(parent: Inode, name: string, st: BigUint64Array): EntryResult | number {
    const flags = K.O_PATH | K.O_NOFOLLOW | K.O_CLOEXEC;
    const pfd = this.fdOf(parent);
    if (pfd < 0) return pfd;
    let fd = -E.ENOSYS;
    if (this.hasOpenat2) {
      // Defence in depth: the kernel itself refuses to leave the parent or follow any link.
      fd = this.native.openat2(pfd, name, flags, 0, K.RESOLVE_BENEATH | K.RESOLVE_NO_MAGICLINKS | K.RESOLVE_NO_SYMLINKS);
      if (fd === -E.ENOSYS) this.hasOpenat2 = false;
    }
    if (fd === -E.ENOSYS) fd = this.native.openat(pfd, name, flags, 0);
    if (fd < 0) return fd;
    return this.entryOf(parent, fd, st);
  }

  /** Take one guest reference on the inode behind an O_PATH fd (consumed: kept or closed). */
  entryOf(parent: Inode, fd: number, st: BigUint64Array): EntryResult | number {
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

  close(): void {
    this.files.close();
    this.dirs.close();
    this.inodes.close();
    this.native.close(this.procFd);
    this.mounts?.close();
  }
}
