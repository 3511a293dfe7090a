// Linux constants in one place: errno values, and the flags of open(2), fcntl(2),
// memfd_create(2), recvmsg(2) and friends that node:fs and node:os do not export (x86_64/aarch64).
import { constants as fsc } from 'node:fs';
import { constants as osc } from 'node:os';

/** errno values (positive, as the kernel numbers them). Ops return them negated. */
export const E = osc.errno as typeof osc.errno & Record<string, number>;

/** Name of a negative or positive errno, for logs. */
export function errnoName(e: number): string {
  const n = Math.abs(e);
  for (const [k, v] of Object.entries(osc.errno)) if (v === n) return k;
  return `E${n}`;
}

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_SYMLINK_FOLLOW = 0x400;
export const AT_EMPTY_PATH = 0x1000;

export const O_RDONLY = fsc.O_RDONLY;
export const O_WRONLY = fsc.O_WRONLY;
export const O_RDWR = fsc.O_RDWR;
export const O_ACCMODE = 3;
export const O_CREAT = fsc.O_CREAT;
export const O_EXCL = fsc.O_EXCL;
export const O_NOCTTY = fsc.O_NOCTTY;
export const O_TRUNC = fsc.O_TRUNC;
export const O_APPEND = fsc.O_APPEND;
export const O_NONBLOCK = fsc.O_NONBLOCK;
export const O_DIRECTORY = fsc.O_DIRECTORY;
export const O_NOFOLLOW = fsc.O_NOFOLLOW;
export const O_DIRECT = fsc.O_DIRECT ?? 0x4000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
/** The bit of O_TMPFILE that is not O_DIRECTORY (open(2): O_TMPFILE = __O_TMPFILE | O_DIRECTORY). */
export const O_TMPFILE_BIT = 0o20000000;
export const O_TMPFILE = O_TMPFILE_BIT | O_DIRECTORY;

// access(2) modes
export const R_OK = fsc.R_OK;
export const W_OK = fsc.W_OK;
export const X_OK = fsc.X_OK;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_IXGRP = 0o010;
/** Every permission bit, and with them setuid, setgid and sticky (the kernel's S_IRWXUGO, S_IALLUGO). */
export const S_IRWXUGO = 0o777;
export const S_IALLUGO = 0o7777;

export const UTIME_NOW = (1 << 30) - 1;
export const UTIME_OMIT = (1 << 30) - 2;

export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
export const SEEK_SET = 0;

// memfd_create(2) flags and file seals (fcntl(2), "File Sealing")
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;

// recvmsg(2) msg_flags
export const MSG_TRUNC = 0x20;
export const MSG_CTRUNC = 0x8;

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

/** fuse_file_lock.end meaning "to end of file". */
export const OFFSET_MAX = 0x7fffffffffffffffn;

// openat2(2) struct open_how.resolve
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;
