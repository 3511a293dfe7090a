// The file system a FUSE session serves: the lowlevel op table, in semantic types.
// Every op returns a result or a negative errno (never throws for an expected failure).
// Ops that finish off the event loop take a callback instead of returning.
// Node ids and file handles are plain numbers (slot indexes); stat results are written into
// a caller-provided array with the native STAT layout (ST in native/binding.ts).

export type Errno = number; // always < 0

export interface Ctx {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** What LOOKUP-like ops hand back: the node and its attributes (in the caller's stat array). */
export interface EntryResult {
  readonly nodeid: number;
  readonly generation: number;
  /** FUSE_ATTR_* flags (e.g. SUBMOUNT). */
  readonly attrFlags: number;
}

export interface OpenResult {
  readonly fh: number;
  /** FOPEN_* flags. */
  readonly openFlags: number;
}

export interface SetattrArgs {
  valid: number;
  fh: number;
  size: number;
  atime: number; atimensec: number;
  mtime: number; mtimensec: number;
  mode: number; uid: number; gid: number;
}

/** A POSIX or flock lock as FUSE describes it (fuse_file_lock). end is inclusive; OFFSET_MAX = to EOF. */
export interface FileLock { start: bigint; end: bigint; type: number; pid: number }

export interface InitRequest { major: number; minor: number; maxReadahead: number; flags: bigint }
export interface InitReply {
  flags: bigint; maxReadahead: number; maxWrite: number; maxPages: number; timeGran: number;
  maxBackground: number; congestionThreshold: number;
}

/** Where readdir puts entries: returns false when the entry does not fit (nothing written). */
export interface DirSink {
  /** Room left in bytes. */
  readonly room: number;
  add(ino: bigint, nextOff: bigint, type: number, name: Uint8Array): boolean;
  /** READDIRPLUS: entry is null for "." / ".." / vanished entries (node id 0 is sent). */
  addPlus(entry: EntryResult | null, st: BigUint64Array | null, ino: bigint, nextOff: bigint, type: number, name: Uint8Array): boolean;
}

export interface FileSystem {
  init(req: InitRequest): InitReply | Errno;
  destroy(): void;
  /** Entry and attribute validity in seconds, by cache policy. */
  readonly entryTimeout: number;
  readonly attrTimeout: number;

  lookup(ctx: Ctx, parent: number, name: string, st: BigUint64Array): EntryResult | Errno;
  forget(nodeid: number, nlookup: number): void;
  getattr(ctx: Ctx, nodeid: number, fh: number | null, st: BigUint64Array): 0 | Errno;
  setattr(ctx: Ctx, nodeid: number, a: SetattrArgs, st: BigUint64Array): 0 | Errno;
  readlink(ctx: Ctx, nodeid: number, buf: Uint8Array): number | Errno;
  symlink(ctx: Ctx, parent: number, name: string, target: string, st: BigUint64Array): EntryResult | Errno;
  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number, umask: number, st: BigUint64Array): EntryResult | Errno;
  mkdir(ctx: Ctx, parent: number, name: string, mode: number, umask: number, st: BigUint64Array): EntryResult | Errno;
  unlink(ctx: Ctx, parent: number, name: string): 0 | Errno;
  rmdir(ctx: Ctx, parent: number, name: string): 0 | Errno;
  rename(ctx: Ctx, parent: number, name: string, newParent: number, newName: string, flags: number): 0 | Errno;
  link(ctx: Ctx, nodeid: number, newParent: number, newName: string, st: BigUint64Array): EntryResult | Errno;
  open(ctx: Ctx, nodeid: number, flags: number): OpenResult | Errno;
  create(ctx: Ctx, parent: number, name: string, flags: number, mode: number, umask: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | Errno;
  tmpfile(ctx: Ctx, parent: number, flags: number, mode: number, umask: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | Errno;
  /** Read into dst (views of guest memory); cb(bytes | -errno). */
  read(ctx: Ctx, fh: number, offset: number, dst: Uint8Array[], cb: (r: number) => void): void;
  /** Write src (views of guest memory); cb(bytes | -errno). */
  write(ctx: Ctx, fh: number, offset: number, src: Uint8Array[], writeFlags: number, cb: (r: number) => void): void;
  statfs(ctx: Ctx, nodeid: number, out: BigUint64Array): 0 | Errno;
  release(ctx: Ctx, fh: number, flags: number, releaseFlags: number, lockOwner: bigint): 0 | Errno;
  flush(ctx: Ctx, nodeid: number, fh: number, lockOwner: bigint): 0 | Errno;
  fsync(ctx: Ctx, fh: number, datasync: boolean, cb: (r: number) => void): void;
  setxattr(ctx: Ctx, nodeid: number, name: string, value: Uint8Array, flags: number): 0 | Errno;
  /** buf.length 0 = size probe. Returns the size or -errno (-ERANGE if buf is too small). */
  getxattr(ctx: Ctx, nodeid: number, name: string, buf: Uint8Array): number | Errno;
  listxattr(ctx: Ctx, nodeid: number, buf: Uint8Array): number | Errno;
  removexattr(ctx: Ctx, nodeid: number, name: string): 0 | Errno;
  opendir(ctx: Ctx, nodeid: number, flags: number): OpenResult | Errno;
  readdir(ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): 0 | Errno;
  releasedir(ctx: Ctx, fh: number): 0 | Errno;
  fsyncdir(ctx: Ctx, fh: number, datasync: boolean): 0 | Errno;
  getlk(ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock): FileLock | Errno;
  /** SETLK/SETLKW; cb(0 | -errno). sleep = SETLKW. */
  setlk(ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock, flock: boolean, sleep: boolean, cb: (r: number) => void): void;
  access(ctx: Ctx, nodeid: number, mask: number): 0 | Errno;
  fallocate(ctx: Ctx, fh: number, mode: number, offset: number, length: number): 0 | Errno;
  lseek(ctx: Ctx, fh: number, offset: number, whence: number): number | Errno;
  copyFileRange(ctx: Ctx, fhIn: number, offIn: number, fhOut: number, offOut: number, len: number, flags: number): number | Errno;
  syncfs(ctx: Ctx, nodeid: number): 0 | Errno;
}
