// The passthrough file system: the FUSE ops over a host directory.
//
// PassthroughFs is what a worker serves: HostFs, which does every op on the host, under the
// layers the options ask for (layer.ts; --readonly: read-only.ts; UID/GID and xattr name
// mapping: id-map.ts, xattr-map.ts). HostFs keeps the name and attribute ops, opens and directory
// listings here, over the maps share.ts holds, and hands the rest to a part per job:
//   io.ts        READ, WRITE, FSYNC (inline or on the thread pool), FALLOCATE, LSEEK, COPY_FILE_RANGE
//   locks.ts     GETLK, SETLK, SETLKW and flock, on OFD locks
//   xattr.ts     extended attributes and POSIX ACLs
//   dirs.ts      OPENDIR, READDIR(PLUS), RELEASEDIR, FSYNCDIR
//   recovery.ts  the maps a worker starts from (a previous worker's, checked)
//
// Concurrency: in JavaScript every callback lets other requests run, so a map decision held
// across one may be stale after it. Every op decides and mutates the maps in one synchronous
// stretch; only the data syscalls of io.ts and the waits of locks.ts finish later, and what
// they touch then is a handle's busy count, no map. Errors are -errno, never thrown.

import * as nodefs from 'node:fs';
import { ST, type NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import { INIT, FOPEN, FATTR, FUSE_RELEASE_FLOCK_UNLOCK, MAX_BUFFER_SIZE } from '../fuse/abi';
import type {
  Ctx, DirSink, EntryResult, FileLock, InitReply, InitRequest, OpenResult, SetattrArgs,
} from '../fuse/filesystem';
import type { Inode } from './inode-table';
import type { Handle } from './handle-table';
import type { BudgetKind } from './budget';
import { ForwardingFs, type FsLayer } from './layer';
import { ReadOnlyFs } from './read-only';
import { IdMapFs, idMappers } from './id-map';
import { XattrMapFs, parseXattrMap } from './xattr-map';
import { Share, INODE, NEVER_OPEN_FLAGS } from './share';
import { Io, errnoOf } from './io';
import { Locks } from './locks';
import { Xattrs } from './xattr';
import { Dirs } from './dirs';
import { startState, type FsState, type StateFds } from './recovery';
import type { FsOptions } from './options';

export { DEFAULT_FS_OPTIONS, type CacheMode, type FsOptions } from './options';
export type { FsState, StateFds } from './recovery';

const HANDLE: readonly BudgetKind[] = ['handles'];
const INODE_AND_HANDLE: readonly BudgetKind[] = ['inodes', 'handles'];

/** nameIno's answer: the inode number's low 48 bits, which the journal keeps exactly (a double). */
const INO_LOW_48 = (1n << 48n) - 1n;

const bit = (n: number): bigint => 1n << BigInt(n);

/**
 * The layers over the host file system, bottom to top, as the options ask: names and ids are
 * mapped nearest the host (what the host stores), --readonly refuses changes before any mapping
 * runs. The options were checked by the command line and again by the worker channel's decoder,
 * so the parsers do not throw here.
 */
function layers(host: FsLayer, opts: FsOptions, log: Logger): FsLayer {
  let fs = host;
  for (const m of idMappers(opts.idMap)) fs = new IdMapFs(fs, m.uid, m.gid);
  if (opts.xattrMap !== null) fs = new XattrMapFs(fs, parseXattrMap(opts.xattrMap), log);
  if (opts.readonly) fs = new ReadOnlyFs(fs);
  return fs;
}

/** What a worker serves: the host file system under its layers, and the parts' lifecycle. */
export class PassthroughFs extends ForwardingFs {
  private readonly host: HostFs;

  constructor(native: NativeBinding, opts: FsOptions, log: Logger, state: FsState = {}) {
    const host = new HostFs(native, opts, log, state);
    super(layers(host, opts, log));
    this.host = host;
  }

  get inodes(): Share['inodes'] { return this.host.share.inodes; }
  get files(): Share['files'] { return this.host.share.files; }
  get dirs(): Share['dirs'] { return this.host.share.dirs; }
  /** The memfds holding the maps (the keeper keeps them across workers). */
  get stateFds(): StateFds { return this.host.share.stateFds; }
  get locks(): Locks { return this.host.locks; }
  /** SETLKW requests waiting for their lock. */
  get lockWaitCount(): number { return this.host.locks.waitCount; }
  /** Directory streams holding unread entries (dir-stream.ts; bounded by its pool). */
  get dirStreamBuffers(): number { return this.host.dirStreams.inUse; }

  /** The device is stopping: every SETLKW still waiting ends with EINTR (locks.ts). */
  cancelWaits(): void { this.host.locks.cancelWaits(); }

  close(): void { this.host.close(); }
}

/** Every op, done on the host. */
export class HostFs implements FsLayer {
  readonly share: Share;
  readonly locks: Locks;
  private readonly io: Io;
  private readonly xattrs: Xattrs;
  private readonly dirs: Dirs;
  get dirStreams(): Dirs['streams'] { return this.dirs.streams; }
  readonly entryTimeout: number;
  readonly attrTimeout: number;

  constructor(private readonly native: NativeBinding, readonly opts: FsOptions, private readonly log: Logger, state: FsState = {}) {
    const start = startState(native, opts, log, state);
    this.share = new Share(native, opts, log, start, () => this.locks.count);
    this.locks = new Locks(this.share, !opts.readonly, start.lockOwners);
    this.io = new Io(this.share, opts.syncIo);
    this.xattrs = new Xattrs(this.share, opts.xattr, opts.posixAcl);
    this.dirs = new Dirs(this.share, opts.cache === 'always');
    const t = { never: 0, metadata: 86400, auto: 1, always: 86400 }[opts.cache];
    this.entryTimeout = t;
    this.attrTimeout = t;
  }

  close(): void {
    this.destroy();
    this.share.close();
  }

  private inode(nodeid: number): Inode | undefined {
    return this.share.inodes.get(nodeid);
  }

  private fileHandle(fh: number): Handle | undefined {
    return this.share.files.get(fh);
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

  // ---- session ----

  init(req: InitRequest): InitReply | number {
    const o = this.opts;
    let want = bit(INIT.ASYNC_READ) | bit(INIT.PARALLEL_DIROPS) | bit(INIT.BIG_WRITES) | bit(INIT.ASYNC_DIO)
      | bit(INIT.ATOMIC_O_TRUNC) | bit(INIT.MAX_PAGES) | bit(INIT.INIT_EXT) | bit(INIT.HAS_IOCTL_DIR)
      | bit(INIT.POSIX_LOCKS) | bit(INIT.FLOCK_LOCKS);
    if (o.cache === 'auto') want |= bit(INIT.AUTO_INVAL_DATA);
    // Off by default with cache=never (src/config.ts); neither bit is offered when off.
    if (o.readdirplus) want |= bit(INIT.DO_READDIRPLUS) | bit(INIT.READDIRPLUS_AUTO);
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
    this.share.dontMask = (flags & bit(INIT.DONT_MASK)) !== 0n;
    return {
      flags, maxReadahead: req.maxReadahead, maxWrite: MAX_BUFFER_SIZE, maxPages: MAX_BUFFER_SIZE / 4096,
      timeGran: 1, maxBackground: 64, congestionThreshold: 48,
    };
  }

  destroy(): void {
    this.share.files.removeAll();
    this.share.dirs.removeAll();
    this.dirs.streams.dropAll();
    this.locks.dropAll();
    this.share.inodes.forgetAll();
  }

  // ---- names ----

  lookup(_ctx: Ctx, parent: number, name: string, st: BigUint64Array): EntryResult | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    if (name.length === 0 || name.includes('/') || name === '.' || name === '..') return -E.EINVAL;
    return this.share.lookupName(p, name, st);
  }

  forget(nodeid: number, nlookup: number): void {
    if (nlookup <= 0) return;
    const ino = this.inode(nodeid);
    if (ino && ino.nlookup <= nlookup) this.locks.dropNode(nodeid);
    this.share.inodes.forget(nodeid, nlookup);
  }

  getattr(_ctx: Ctx, nodeid: number, _fh: number | null, st: BigUint64Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    return this.share.statInode(ino, st);
  }

  setattr(_ctx: Ctx, nodeid: number, a: SetattrArgs, st: BigUint64Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    const s = this.share, n = this.native;
    let h: Handle | undefined;
    if (a.valid & FATTR.FH) {
      h = this.fileHandle(a.fh);
      if (!h || h.nodeid !== nodeid) return -E.EBADF;
    }
    const isLink = (ino.mode & K.S_IFMT) === K.S_IFLNK;
    // Taken once for the op (pinned, inode-fds.ts), and again by the helpers below: the same fd.
    const fd = s.fdOf(ino);
    if (fd < 0) return fd;
    let r = 0;
    if (a.valid & FATTR.MODE) {
      if (isLink) return -E.EOPNOTSUPP;
      r = n.fchmodat(s.procFd, String(h ? h.fd : fd), a.mode & K.S_IALLUGO, 0);
      if (r < 0) return r;
    }
    if (a.valid & (FATTR.UID | FATTR.GID)) {
      const uid = a.valid & FATTR.UID ? a.uid : -1;
      const gid = a.valid & FATTR.GID ? a.gid : -1;
      r = n.fchownat(fd, '', uid, gid, K.AT_EMPTY_PATH | K.AT_SYMLINK_NOFOLLOW);
      if (r < 0) return r;
    }
    if (a.valid & FATTR.SIZE) {
      if (h) {
        r = n.ftruncate(h.fd, a.size);
      } else {
        const fd = s.reopen(ino, K.O_WRONLY | K.O_NONBLOCK);
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
        ? n.utimensat(fd, '', at[0]!, at[1]!, mt[0]!, mt[1]!, K.AT_EMPTY_PATH | K.AT_SYMLINK_NOFOLLOW)
        : n.utimensat(K.AT_FDCWD, `${s.procPrefix}${fd}`, at[0]!, at[1]!, mt[0]!, mt[1]!, 0);
      if (r < 0) return r;
    }
    r = s.statInode(ino, st);
    if (r < 0) return r;
    if ((a.valid & FATTR.KILL_SUIDGID) && !(a.valid & FATTR.MODE)) {
      r = s.killSuidgid(ino, st);
      if (r < 0) return r;
    }
    return 0;
  }

  readlink(_ctx: Ctx, nodeid: number, buf: Uint8Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if ((ino.mode & K.S_IFMT) !== K.S_IFLNK) return -E.EINVAL;
    const fd = this.share.fdOf(ino);
    return fd < 0 ? fd : this.native.readlinkat(fd, '', buf);
  }

  /** fn gets the parent's fd. */
  private make(ctx: Ctx, parent: number, name: string, umask: number, st: BigUint64Array, fn: (pfd: number) => number): EntryResult | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    const s = this.share;
    // Refused before anything is made: a new name whose node the guest cannot get helps no one.
    if (!s.budget.fits(INODE)) return s.budget.refuse(INODE);
    const pfd = s.fdOf(p);
    if (pfd < 0) return pfd;
    const r = s.asCaller(ctx, umask, () => fn(pfd));
    if (r < 0) return r;
    return s.lookupName(p, name, st);
  }

  symlink(ctx: Ctx, parent: number, name: string, target: string, st: BigUint64Array): EntryResult | number {
    return this.make(ctx, parent, name, 0, st, (pfd) => this.native.symlinkat(target, pfd, name));
  }

  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number, umask: number, st: BigUint64Array): EntryResult | number {
    return this.make(ctx, parent, name, umask, st, (pfd) => this.native.mknodat(pfd, name, mode, rdev));
  }

  mkdir(ctx: Ctx, parent: number, name: string, mode: number, umask: number, st: BigUint64Array): EntryResult | number {
    return this.make(ctx, parent, name, umask, st, (pfd) => this.native.mkdirat(pfd, name, mode & K.S_IALLUGO));
  }

  unlink(_ctx: Ctx, parent: number, name: string): number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    const pfd = this.share.fdOf(p);
    if (pfd < 0) return pfd;
    this.beforeLastLinkGoes();
    return this.native.unlinkat(pfd, name, 0);
  }

  rmdir(_ctx: Ctx, parent: number, name: string): number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    const pfd = this.share.fdOf(p);
    if (pfd < 0) return pfd;
    this.beforeLastLinkGoes();
    return this.native.unlinkat(pfd, name, K.AT_REMOVEDIR);
  }

  rename(_ctx: Ctx, parent: number, name: string, newParent: number, newName: string, flags: number): number {
    const p = this.inode(parent), np = this.inode(newParent);
    if (!p || !np) return -E.EBADF;
    if (flags & ~(K.RENAME_NOREPLACE | K.RENAME_EXCHANGE | K.RENAME_WHITEOUT)) return -E.EINVAL;
    // Both taken for this op: the cache keeps both open (inode-fds.ts pins).
    const pfd = this.share.fdOf(p), npfd = this.share.fdOf(np);
    if (pfd < 0) return pfd;
    if (npfd < 0) return npfd;
    this.beforeLastLinkGoes();
    return this.native.renameat2(pfd, name, npfd, newName, flags);
  }

  link(_ctx: Ctx, nodeid: number, newParent: number, newName: string, st: BigUint64Array): EntryResult | number {
    const ino = this.inode(nodeid), np = this.inode(newParent);
    if (!ino || !np) return -E.EBADF;
    const fd = this.share.fdOf(ino), npfd = this.share.fdOf(np);
    if (fd < 0) return fd;
    if (npfd < 0) return npfd;
    // AT_EMPTY_PATH links the inode itself (needs CAP_DAC_READ_SEARCH); the /proc path is the fallback.
    let r = this.native.linkat(fd, '', npfd, newName, K.AT_EMPTY_PATH);
    if (r === -E.ENOENT || r === -E.EPERM) {
      r = this.native.linkat(K.AT_FDCWD, `${this.share.procPrefix}${fd}`, npfd, newName, K.AT_SYMLINK_FOLLOW);
    }
    if (r < 0) return r;
    return this.share.lookupName(np, newName, st);
  }

  /**
   * Before a name goes: an open file's inode may lose its last link, and then only open fds keep
   * it alive; a file handle can no longer bring it back. So the keeper gets every open handle's
   * fd that is still queued (usually none: queued ones are recent, and most are released
   * before the flush).
   */
  private beforeLastLinkGoes(): void {
    this.share.registry.flush();
  }

  // ---- files ----

  open(_ctx: Ctx, nodeid: number, flags: number): OpenResult | number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    const s = this.share;
    if (!s.budget.fits(HANDLE)) return s.budget.refuse(HANDLE);
    const f = this.openFlags(flags);
    const fd = s.reopen(ino, f);
    if (fd < 0) return fd;
    const h = s.files.add(nodeid, fd, f);
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
    const s = this.share;
    if (!s.budget.fits(INODE_AND_HANDLE)) return s.budget.refuse(INODE_AND_HANDLE);
    const f = this.openFlags(flags) | K.O_CLOEXEC;
    const pfd = s.fdOf(p);
    if (pfd < 0) return pfd;
    const fd = s.asCaller(ctx, umask, () => this.native.openat(pfd, name, f | K.O_CREAT | K.O_EXCL | K.O_NOFOLLOW, mode & K.S_IALLUGO));
    if (fd >= 0) return this.adoptOpenFd(p, fd, f, st);
    if (fd !== -E.EEXIST || (flags & K.O_EXCL)) return fd;
    const entry = s.lookupName(p, name, st);
    if (typeof entry === 'number') return entry;
    // As the caller, as the O_CREAT open of an existing file used to be (its permissions apply).
    const open = s.asCaller(ctx, umask, () => this.open(ctx, entry.nodeid, flags));
    if (typeof open === 'number') {
      this.forget(entry.nodeid, 1);
      return open;
    }
    return { entry, open };
  }

  tmpfile(ctx: Ctx, parent: number, flags: number, mode: number, umask: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | number {
    const p = this.inode(parent);
    if (!p) return -E.EBADF;
    const s = this.share;
    if (!s.budget.fits(INODE_AND_HANDLE)) return s.budget.refuse(INODE_AND_HANDLE);
    let f = this.openFlags(flags) & ~K.O_TRUNC;
    if ((f & K.O_ACCMODE) === K.O_RDONLY) f |= K.O_RDWR; // O_TMPFILE needs write access
    const pfd = s.fdOf(p);
    if (pfd < 0) return pfd;
    const fd = s.asCaller(ctx, umask, () => this.native.openat(pfd, '.', f | K.O_TMPFILE | K.O_CLOEXEC, mode & K.S_IALLUGO));
    if (fd < 0) return fd;
    const r = this.adoptOpenFd(p, fd, f, st);
    // Born without a link: only the open fd keeps it, so the keeper needs it before the reply.
    s.registry.flush();
    return r;
  }

  /** A freshly created open file: its inode comes from the fd itself, so no host race can swap it. */
  private adoptOpenFd(p: Inode, fd: number, flags: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | number {
    const s = this.share;
    const pathFd = this.native.openat(s.procFd, String(fd), K.O_PATH | K.O_CLOEXEC, 0);
    if (pathFd < 0) {
      this.native.close(fd);
      return pathFd;
    }
    const entry = s.entryOf(p, pathFd, st);
    if (typeof entry === 'number') {
      this.native.close(fd);
      return entry;
    }
    const h = s.files.add(entry.nodeid, fd, flags);
    return { entry, open: { fh: h.fh, openFlags: this.fopenFlags() } };
  }

  read(ctx: Ctx, fh: number, offset: number, dst: Uint8Array[], cb: (r: number) => void): void { this.io.read(ctx, fh, offset, dst, cb); }
  readRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, cb: (r: number) => void): void { this.io.readRanges(ctx, fh, offset, win, iov, count, cb); }
  write(ctx: Ctx, fh: number, offset: number, src: Uint8Array[], writeFlags: number, cb: (r: number) => void): void { this.io.write(ctx, fh, offset, src, writeFlags, cb); }
  writeRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, writeFlags: number, cb: (r: number) => void): void { this.io.writeRanges(ctx, fh, offset, win, iov, count, writeFlags, cb); }
  fsync(ctx: Ctx, fh: number, datasync: boolean, cb: (r: number) => void): void { this.io.fsync(ctx, fh, datasync, cb); }
  fallocate(ctx: Ctx, fh: number, mode: number, offset: number, length: number): number { return this.io.fallocate(ctx, fh, mode, offset, length); }
  lseek(ctx: Ctx, fh: number, offset: number, whence: number): number { return this.io.lseek(ctx, fh, offset, whence); }
  copyFileRange(ctx: Ctx, fhIn: number, offIn: number, fhOut: number, offOut: number, len: number, flags: number): number { return this.io.copyFileRange(ctx, fhIn, offIn, fhOut, offOut, len, flags); }
  statfs(_ctx: Ctx, nodeid: number, out: BigUint64Array): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    const fd = this.share.fdOf(ino);
    return fd < 0 ? fd : this.native.fstatfs(fd, out);
  }

  release(_ctx: Ctx, fh: number, _flags: number, releaseFlags: number): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    if (releaseFlags & FUSE_RELEASE_FLOCK_UNLOCK) this.locks.releaseFlock(h.fd);
    this.share.files.remove(h);
    return 0;
  }

  flush(_ctx: Ctx, nodeid: number, fh: number, lockOwner: bigint): number {
    const h = this.fileHandle(fh);
    if (!h) return -E.EBADF;
    // close() semantics: POSIX locks of this owner on this inode go away ...
    this.locks.releaseOwner(nodeid, lockOwner);
    // ... and a file system that acts on close (NFS) sees one: close a duplicate.
    const d = this.native.dup(h.fd);
    if (d < 0) return d;
    return this.native.close(d);
  }

  // ---- xattrs (xattr.ts) ----

  setxattr(ctx: Ctx, nodeid: number, name: string, value: Uint8Array, flags: number): number { return this.xattrs.setxattr(ctx, nodeid, name, value, flags); }
  getxattr(ctx: Ctx, nodeid: number, name: string, buf: Uint8Array): number { return this.xattrs.getxattr(ctx, nodeid, name, buf); }
  listxattr(ctx: Ctx, nodeid: number, buf: Uint8Array): number { return this.xattrs.listxattr(ctx, nodeid, buf); }
  removexattr(ctx: Ctx, nodeid: number, name: string): number { return this.xattrs.removexattr(ctx, nodeid, name); }
  // ---- directories (dirs.ts) ----

  opendir(ctx: Ctx, nodeid: number, flags: number): OpenResult | number { return this.dirs.opendir(ctx, nodeid, flags); }
  readdir(ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): number { return this.dirs.readdir(ctx, fh, offset, plus, sink, st); }
  releasedir(ctx: Ctx, fh: number): number { return this.dirs.releasedir(ctx, fh); }
  fsyncdir(ctx: Ctx, fh: number, datasync: boolean): number { return this.dirs.fsyncdir(ctx, fh, datasync); }

  // ---- locks (locks.ts) ----

  getlk(ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock): FileLock | number { return this.locks.getlk(ctx, nodeid, fh, owner, lk); }
  setlk(ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock, flock: boolean, sleep: boolean, cb: (r: number) => void): void { this.locks.setlk(ctx, nodeid, fh, owner, lk, flock, sleep, cb); }
  // ---- misc ----

  access(_ctx: Ctx, nodeid: number, mask: number): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    if ((ino.mode & K.S_IFMT) === K.S_IFLNK) return 0;
    const p = this.share.procPath(ino);
    if (typeof p === 'number') return p;
    try {
      nodefs.accessSync(p, mask & (K.R_OK | K.W_OK | K.X_OK));
      return 0;
    } catch (e) {
      return errnoOf(e);
    }
  }

  syncfs(_ctx: Ctx, nodeid: number): number {
    const ino = this.inode(nodeid);
    if (!ino) return -E.EBADF;
    // syncfs(2) refuses O_PATH fds: open the inode for reading (a special file: EBADF, as the
    // peers; Linux asks through the root of the mount or submount, a directory).
    const fd = this.share.reopen(ino, K.O_RDONLY | K.O_NONBLOCK);
    if (fd < 0) return fd;
    const r = this.native.syncfs(fd);
    this.native.close(fd);
    return r;
  }

  // ---- replay probes (fuse/replay.ts) ----

  nameIno(_ctx: Ctx, parent: number, name: string): number {
    const p = this.inode(parent);
    const st = this.share.tmpSt;
    const pfd = p ? this.share.fdOf(p) : -1;
    if (pfd < 0 || this.native.stat(pfd, name, K.AT_SYMLINK_NOFOLLOW, st) !== 0) return -1;
    return Number(st[ST.ino]! & INO_LOW_48);
  }

  hasXattr(_ctx: Ctx, nodeid: number, name: string): boolean {
    return this.xattrs.has(nodeid, name);
  }

  lookupCount(nodeid: number): number {
    return this.inode(nodeid)?.nlookup ?? -1;
  }

  appendSize(fh: number): number {
    const h = this.fileHandle(fh);
    if (!h || !(h.flags & K.O_APPEND)) return -1;
    const st = this.share.tmpSt;
    return this.native.stat(h.fd, '', K.AT_EMPTY_PATH, st) === 0 ? Number(st[ST.size]!) : -1;
  }
}
