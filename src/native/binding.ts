// The typed surface of the native shim (native/src/*.cc) and its loader.
// The shim is a syscall table: each function makes one syscall (or a fixed, tiny sequence)
// and returns a non-negative result or -errno. It throws only TypeError on misuse.
// Results that are not one integer are written into caller-owned typed arrays.
// Nothing here knows about vhost-user, virtio or FUSE.

import * as path from 'node:path';

/** Layout of the array `stat()` fills: 17 little-endian u64 slots (index constants below). */
export const STAT_SLOTS = 17;
export const ST = {
  dev: 0, ino: 1, nlink: 2, mode: 3, uid: 4, gid: 5, rdev: 6, size: 7, blksize: 8, blocks: 9,
  atime: 10, atimensec: 11, mtime: 12, mtimensec: 13, ctime: 14, ctimensec: 15, mntId: 16,
} as const;

/** Layout of the array `fstatfs()` fills: 8 u64 slots. */
export const STATFS = { bsize: 0, frsize: 1, blocks: 2, bfree: 3, bavail: 4, files: 5, ffree: 6, namelen: 7 } as const;

/** preadv2/pwritev2 flag: do not wait for I/O (page-cache hits only); -EAGAIN otherwise,
 *  -EOPNOTSUPP where the file (or kernel) does not support it for that operation. */
export const RWF_NOWAIT = 8;

/** Opaque handle of an fd watched on the libuv loop. */
export interface PollHandle { readonly __poll: unique symbol }

export interface NativeBinding {
  // ---- unix sockets and fd passing ----
  /** socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK) + bind(path) + listen(backlog). fd or -errno. */
  unixListen(path: string, backlog: number): number;
  /** connect(2) to a unix stream socket (blocking socket, CLOEXEC). fd or -errno. */
  unixConnect(path: string): number;
  /** accept4(fd, SOCK_CLOEXEC). The new fd is blocking. fd or -errno (EAGAIN when none is pending). */
  accept(fd: number): number;
  /** socketpair(AF_UNIX, SOCK_STREAM (or SOCK_SEQPACKET) | SOCK_CLOEXEC); writes both fds to
   *  out[0], out[1]. 0 or -errno. */
  socketpair(out: Int32Array, seqpacket?: boolean): number;
  /** recvmsg(2) with SCM_RIGHTS (MSG_CMSG_CLOEXEC). Bytes read (0 = EOF) or -errno; received fds are
   *  written to fds[0..], the rest of fds is set to -1. Fds beyond fds.length are closed.
   *  flags[0], if given, receives msg_flags: MSG_CTRUNC when fds were lost (the kernel could not
   *  install them, e.g. EMFILE, or they were closed for want of a slot in fds). */
  recvmsg(fd: number, buf: Uint8Array, fds: Int32Array, flags?: Int32Array): number;
  /** sendmsg(2) of buf[0..len) with the given fds as SCM_RIGHTS (may be empty). Bytes sent or -errno. */
  sendmsg(fd: number, buf: Uint8Array, len: number, fds: ArrayLike<number>): number;
  /** Set or clear O_NONBLOCK. 0 or -errno. */
  setNonblocking(fd: number, on: boolean): number;

  // ---- event loop integration ----
  /** Watch fd for readability (events = 1) / writability (2) with uv_poll_t on Node's loop.
   *  cb(status, events): status < 0 is a libuv error. The handle keeps the loop alive until pollStop.
   *  -errno on failure (EEXIST: the fd number is already watched; pollStop before close). libuv
   *  switches the fd to O_NONBLOCK. */
  pollStart(fd: number, events: number, cb: (status: number, events: number) => void): PollHandle | number;
  /** Stop and free the watcher. Idempotent. */
  pollStop(h: PollHandle): void;

  // ---- eventfd ----
  /** eventfd(initval, EFD_CLOEXEC|EFD_NONBLOCK). fd or -errno. */
  eventfd(initval: number): number;
  /** read(2) 8 bytes: the counter (as a number) or -errno (-EAGAIN when zero). */
  eventfdRead(fd: number): number;
  /** write(2) of the u64 value. 0 or -errno. */
  eventfdWrite(fd: number, value: number): number;

  // ---- memory ----
  /** memfd_create(name, MFD_CLOEXEC | flags). fd or -errno. */
  memfdCreate(name: string, flags: number): number;
  /** mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset) as an external ArrayBuffer,
   *  unmapped by munmap() or when collected; -errno on failure. offset must be page aligned. */
  mmap(fd: number, offset: number, length: number): ArrayBuffer | number;
  /** Unmap a buffer made by mmap() now (detaches it). 0 or -errno. */
  munmap(buf: ArrayBuffer): number;

  // ---- path syscalls (dirfd may be AT_FDCWD = -100) ----
  // Every path/name string is taken as latin1 ("binary": one char = one byte), so names that are
  // not UTF-8 pass through unchanged; callers convert user-given UTF-8 paths with toBinary().
  openat(dirfd: number, path: string, flags: number, mode: number): number;
  /** openat2(2) with struct open_how {flags, mode, resolve}; -ENOSYS where the kernel lacks it. */
  openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): number;
  /** statx(dirfd, path, flags, STATX_BASIC_STATS|STATX_MNT_ID) into out (STAT_SLOTS u64, see ST);
   *  falls back to fstatat when statx is missing (mntId = 0). 0 or -errno. */
  stat(dirfd: number, path: string, flags: number, out: BigUint64Array): number;
  /** stat(fd, '', AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out): the inode an fd (O_PATH too) refers
   *  to, without a path string to convert. 0 or -errno. */
  statFd(fd: number, out: BigUint64Array): number;
  mkdirat(dirfd: number, path: string, mode: number): number;
  /** mknodat(2); dev is the Linux dev_t (new_encode_dev form as FUSE sends it). */
  mknodat(dirfd: number, path: string, mode: number, dev: number): number;
  symlinkat(target: string, dirfd: number, path: string): number;
  /** readlinkat(2) into buf. Bytes written or -errno. */
  readlinkat(dirfd: number, path: string, buf: Uint8Array): number;
  unlinkat(dirfd: number, path: string, flags: number): number;
  renameat2(olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags: number): number;
  linkat(olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags: number): number;
  fchownat(dirfd: number, path: string, uid: number, gid: number, flags: number): number;
  fchmodat(dirfd: number, path: string, mode: number, flags: number): number;
  /** utimensat(2). Nanosecond fields accept UTIME_NOW / UTIME_OMIT. Seconds are numbers (safe ints). */
  utimensat(dirfd: number, path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, flags: number): number;
  /** name_to_handle_at(2). out receives: u32 mount_id, u32 handle_bytes, i32 handle_type, then
   *  f_handle bytes (out must hold 12 + 128). Returns 12 + handle_bytes or -errno. */
  nameToHandleAt(dirfd: number, path: string, flags: number, out: Uint8Array): number;
  /** open_by_handle_at(2) with a handle in the layout nameToHandleAt writes (mount_id ignored). fd or -errno. */
  openByHandleAt(mountFd: number, handle: Uint8Array, flags: number): number;

  // ---- fd syscalls ----
  close(fd: number): number;
  /** fcntl(fd, F_DUPFD_CLOEXEC, 0). fd or -errno. */
  dup(fd: number): number;
  /** fcntl(fd, F_GETFL). flags or -errno. */
  getfl(fd: number): number;
  /** fcntl(fd, F_ADD_SEALS, seals) on a memfd made with MFD_ALLOW_SEALING. 0 or -errno. */
  addSeals(fd: number, seals: number): number;
  /** fcntl(fd, F_GET_SEALS): the seals or -errno. */
  getSeals(fd: number): number;
  ftruncate(fd: number, length: number): number;
  fsync(fd: number, datasync: boolean): number;
  syncfs(fd: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  /** lseek(2). New offset or -errno. */
  lseek(fd: number, offset: number, whence: number): number;
  /** lseek(fd, offset, SEEK_SET) with an exact 64-bit offset (getdents64 cookies can exceed 2^53). 0 or -errno. */
  seekDir(fd: number, offset: bigint): number;
  /** copy_file_range(2) at the given offsets (the fds' positions do not move). Bytes copied or -errno. */
  copyFileRange(fdIn: number, offIn: number, fdOut: number, offOut: number, len: number, flags: number): number;
  /** fstatfs(2) into out (8 u64, see STATFS). 0 or -errno. */
  fstatfs(fd: number, out: BigUint64Array): number;
  /** getdents64(2) into buf. Bytes or -errno (0 at end). */
  getdents64(fd: number, buf: Uint8Array): number;
  /** fcntl F_OFD_GETLK / F_OFD_SETLK / F_OFD_SETLKW (cmd is the raw fcntl command).
   *  lk = [type, whence, start, len, pid] in and out (struct flock). 0 or -errno. */
  ofdLock(fd: number, cmd: number, lk: BigInt64Array): number;
  /** flock(2). 0 or -errno. */
  flock(fd: number, op: number): number;
  /** pread(2)/pwrite(2) on the caller's buffer range, synchronous. Bytes or -errno. */
  pread(fd: number, buf: Uint8Array, offset: number): number;
  pwrite(fd: number, buf: Uint8Array, offset: number): number;
  /** preadv2(2) into the buffers, in order, at offset (the fd position is neither used nor moved),
   *  synchronous. flags: RWF_* (RWF_NOWAIT: -EAGAIN instead of waiting for I/O, so only a
   *  page-cache hit completes; a partial hit returns short). Bytes (0 = EOF) or -errno; -EINVAL
   *  for more than IOV_MAX buffers. A non-array or an element that is not a Uint8Array: TypeError. */
  preadv2(fd: number, bufs: readonly Uint8Array[], offset: number, flags: number): number;
  /** pwritev2(2) of the buffers, in order, at offset; as preadv2. May write short. */
  pwritev2(fd: number, bufs: readonly Uint8Array[], offset: number, flags: number): number;
  /** preadv2 with the buffers given as `count` (offset, length) pairs in iov (2 numbers a pair),
   *  all within `win`: no JS object per buffer (a 1 MiB READ is 256 of them). A pair outside win,
   *  count past iov or above IOV_MAX: -EINVAL. */
  preadv2Ranges(fd: number, win: Uint8Array, iov: Float64Array, count: number, offset: number, flags: number): number;
  /** posix_fadvise(2) (advice: POSIX_FADV_*, e.g. 4 = DONTNEED drops clean cached pages). 0 or -errno. */
  fadvise(fd: number, offset: number, length: number, advice: number): number;
  /** pwritev2 with the buffers given as in preadv2Ranges. */
  pwritev2Ranges(fd: number, win: Uint8Array, iov: Float64Array, count: number, offset: number, flags: number): number;
  /** preadv2Ranges on the libuv thread pool: the pairs are checked and copied before this returns
   *  (iov may be reused at once) and win is kept alive until cb. A short read is continued until
   *  done or EOF. cb(bytes read, or -errno if none); returns 0 when queued, or -errno (bad pairs,
   *  count 0) and then cb is never called. */
  preadv2RangesAsync(fd: number, win: Uint8Array, iov: Float64Array, count: number, offset: number, flags: number, cb: (r: number) => void): number;
  /** pwritev2 of ranges on the pool, as preadv2RangesAsync; a short write is continued. */
  pwritev2RangesAsync(fd: number, win: Uint8Array, iov: Float64Array, count: number, offset: number, flags: number, cb: (r: number) => void): number;

  // ---- xattrs (path forms follow symlinks unless nofollow; O_PATH fds need the /proc/self/fd path) ----
  /** getxattr/lgetxattr: value into buf (buf.length 0 = size probe). Size or -errno. */
  getxattr(path: string, name: string, buf: Uint8Array, nofollow: boolean): number;
  setxattr(path: string, name: string, value: Uint8Array, flags: number, nofollow: boolean): number;
  /** listxattr/llistxattr into buf (length 0 = size probe). Size or -errno. */
  listxattr(path: string, buf: Uint8Array, nofollow: boolean): number;
  removexattr(path: string, name: string, nofollow: boolean): number;
  fgetxattr(fd: number, name: string, buf: Uint8Array): number;
  fsetxattr(fd: number, name: string, value: Uint8Array, flags: number): number;
  flistxattr(fd: number, buf: Uint8Array): number;
  fremovexattr(fd: number, name: string): number;

  // ---- credentials and limits (thread-local fs ids, as the C and Rust virtiofsd use) ----
  /** setfsuid/setfsgid: returns the previous id. */
  setfsuid(uid: number): number;
  setfsgid(gid: number): number;
  /** Raise RLIMIT_NOFILE soft limit to min(want, hard). Returns the new soft limit or -errno. */
  raiseNofile(want: number): number;
  /** Set RLIMIT_NOFILE's soft limit to exactly soft (lower or higher); hard: the hard limit too
   *  (otherwise it is raised only where soft needs it). The new soft limit or -errno. */
  setNofile(soft: number, hard: boolean): number;
  /** getgrnam_r(3): the gid of a group name, -ENOENT if there is none, or -errno. */
  getgrnam(name: string): number;
  /** Mark every fd >= lowfd close-on-exec (close_range(2) CLOSE_RANGE_CLOEXEC, or /proc/self/fd). 0 or -errno. */
  cloexecFrom(lowfd: number): number;
  /** umask(2): returns the previous mask. */
  umask(mask: number): number;
  /** execve(2) (argv/envp as UTF-8 strings): replaces the process image, keeping the pid and
   *  every fd without FD_CLOEXEC. Returns only on failure, with -errno. */
  execve(path: string, argv: string[], envp: string[]): number;
  /** Set (true) or clear (false) FD_CLOEXEC. 0 or -errno. */
  setCloexec(fd: number, on: boolean): number;
  /** waitpid(pid, WNOHANG): pid once it has exited (reaped), 0 while it runs, or -errno. */
  reap(pid: number): number;

  // ---- sandbox (native/src/sandbox.cc; the launcher does the rest before Node starts) ----
  /** prctl PR_GET_NO_NEW_PRIVS and PR_GET_SECCOMP (2 = filter) of the calling thread. */
  sandboxStatus(): { noNewPrivs: number; seccomp: number };
  /** chroot into the directory rootFd, then fchdir(cwdFd). 0 or -errno. */
  chrootAt(rootFd: number, cwdFd: number): number;
  /** On every thread (TSYNC): execve, execveat and chroot fail with EPERM from now on. 0 or -errno. */
  lockdown(): number;
  /** prctl(PR_SET_NO_NEW_PRIVS) for the calling thread. 0 or -errno. */
  noNewPrivs(): number;
  /** prctl(PR_CAPBSET_DROP, cap) for the calling thread. 0 or -errno. */
  capbsetDrop(cap: number): number;
}

/** pollStart that throws (with the errno) where a watch cannot be set up. */
export function watchFd(native: Pick<NativeBinding, 'pollStart'>, fd: number, events: number, cb: (status: number, events: number) => void): PollHandle {
  const h = native.pollStart(fd, events, cb);
  if (typeof h === 'number') throw Object.assign(new Error(`cannot watch fd ${fd}: errno ${-h}`), { errno: h });
  return h;
}

/** A UTF-8 string (e.g. a path from the command line) in the one-char-per-byte form the shim takes. */
export function toBinary(s: string): string {
  return Buffer.from(s, 'utf8').toString('latin1');
}

let cached: NativeBinding | undefined;

/** Load the addon once: Release build first, then Debug. */
export function loadNative(): NativeBinding {
  if (cached) return cached;
  const root = path.resolve(__dirname, '..', '..', '..', 'native', 'build');
  const tried: string[] = [];
  for (const kind of ['Release', 'Debug']) {
    const file = path.join(root, kind, 'virtiofs_native.node');
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      cached = require(file) as NativeBinding;
      return cached;
    } catch (e) {
      tried.push(`${file}: ${(e as Error).message}`);
    }
  }
  throw new Error(`native addon not built (run npm run build:native):\n${tried.join('\n')}`);
}
