// FUSE wire ABI as a Linux 6.1 guest speaks it over virtio-fs (include/uapi/linux/fuse.h, 7.38).
// Names keep the header's spelling so a grep against fuse.h works. Offsets are little-endian.

export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 38;
export const FUSE_ROOT_ID = 1;

export const OP = {
  FUSE_LOOKUP: 1, FUSE_FORGET: 2, FUSE_GETATTR: 3, FUSE_SETATTR: 4, FUSE_READLINK: 5, FUSE_SYMLINK: 6,
  FUSE_MKNOD: 8, FUSE_MKDIR: 9, FUSE_UNLINK: 10, FUSE_RMDIR: 11, FUSE_RENAME: 12, FUSE_LINK: 13,
  FUSE_OPEN: 14, FUSE_READ: 15, FUSE_WRITE: 16, FUSE_STATFS: 17, FUSE_RELEASE: 18, FUSE_FSYNC: 20,
  FUSE_SETXATTR: 21, FUSE_GETXATTR: 22, FUSE_LISTXATTR: 23, FUSE_REMOVEXATTR: 24, FUSE_FLUSH: 25,
  FUSE_INIT: 26, FUSE_OPENDIR: 27, FUSE_READDIR: 28, FUSE_RELEASEDIR: 29, FUSE_FSYNCDIR: 30,
  FUSE_GETLK: 31, FUSE_SETLK: 32, FUSE_SETLKW: 33, FUSE_ACCESS: 34, FUSE_CREATE: 35,
  FUSE_INTERRUPT: 36, FUSE_BMAP: 37, FUSE_DESTROY: 38, FUSE_IOCTL: 39, FUSE_POLL: 40,
  FUSE_NOTIFY_REPLY: 41, FUSE_BATCH_FORGET: 42, FUSE_FALLOCATE: 43, FUSE_READDIRPLUS: 44,
  FUSE_RENAME2: 45, FUSE_LSEEK: 46, FUSE_COPY_FILE_RANGE: 47, FUSE_SETUPMAPPING: 48,
  FUSE_REMOVEMAPPING: 49, FUSE_SYNCFS: 50, FUSE_TMPFILE: 51,
} as const;

export const OP_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(OP).map(([k, v]) => [v, k.slice(5)]),
);

// FUSE_INIT flags (bit numbers; bits >= 32 travel in flags2 when INIT_EXT is negotiated).
export const INIT = {
  ASYNC_READ: 0, POSIX_LOCKS: 1, FILE_OPS: 2, ATOMIC_O_TRUNC: 3, EXPORT_SUPPORT: 4, BIG_WRITES: 5,
  DONT_MASK: 6, SPLICE_WRITE: 7, SPLICE_MOVE: 8, SPLICE_READ: 9, FLOCK_LOCKS: 10, HAS_IOCTL_DIR: 11,
  AUTO_INVAL_DATA: 12, DO_READDIRPLUS: 13, READDIRPLUS_AUTO: 14, ASYNC_DIO: 15, WRITEBACK_CACHE: 16,
  NO_OPEN_SUPPORT: 17, PARALLEL_DIROPS: 18, HANDLE_KILLPRIV: 19, POSIX_ACL: 20, ABORT_ERROR: 21,
  MAX_PAGES: 22, CACHE_SYMLINKS: 23, NO_OPENDIR_SUPPORT: 24, EXPLICIT_INVAL_DATA: 25, MAP_ALIGNMENT: 26,
  SUBMOUNTS: 27, HANDLE_KILLPRIV_V2: 28, SETXATTR_EXT: 29, INIT_EXT: 30, INIT_RESERVED: 31,
  SECURITY_CTX: 32, HAS_INODE_DAX: 33, CREATE_SUPP_GROUP: 34, HAS_EXPIRE_ONLY: 35, DIRECT_IO_ALLOW_MMAP: 36,
} as const;

export const SIZE = {
  in_header: 40, out_header: 16, attr: 88, entry_out: 128, attr_out: 104, open_out: 16,
  init_in: 64, init_in_v7_6: 16, init_out: 64, getattr_in: 16, setattr_in: 88, mknod_in: 16, mkdir_in: 8,
  rename_in: 8, rename2_in: 16, link_in: 8, open_in: 8, create_in: 16, read_in: 40, write_in: 40,
  write_out: 8, kstatfs: 80, release_in: 24, fsync_in: 16, setxattr_in: 8, setxattr_in_ext: 16,
  getxattr_in: 8, getxattr_out: 8, flush_in: 24, lk_in: 48, lk_out: 24, access_in: 8, interrupt_in: 8,
  forget_in: 8, batch_forget_in: 8, forget_one: 16, fallocate_in: 32, lseek_in: 24, lseek_out: 8,
  copy_file_range_in: 56, syncfs_in: 8, dirent: 24, direntplus: 152, ioctl_in: 32, poll_in: 24,
} as const;

// fuse_setattr_in.valid
export const FATTR = {
  MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5, FH: 1 << 6,
  ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8, LOCKOWNER: 1 << 9, CTIME: 1 << 10, KILL_SUIDGID: 1 << 11,
} as const;

// fuse_open_out.open_flags
export const FOPEN = { DIRECT_IO: 1, KEEP_CACHE: 2, NONSEEKABLE: 4, CACHE_DIR: 8, STREAM: 16, NOFLUSH: 32 } as const;

export const FUSE_GETATTR_FH = 1;
export const FUSE_WRITE_KILL_SUIDGID = 4;
export const FUSE_RELEASE_FLUSH = 1;
export const FUSE_RELEASE_FLOCK_UNLOCK = 2;
export const FUSE_FSYNC_FDATASYNC = 1;
export const FUSE_LK_FLOCK = 1;
export const FUSE_SETXATTR_ACL_KILL_SGID = 1;
export const FUSE_ATTR_SUBMOUNT = 1;
/** Largest WRITE/READ payload we accept (the Rust virtiofsd's MAX_BUFFER_SIZE). */
export const MAX_BUFFER_SIZE = 1 << 20;
