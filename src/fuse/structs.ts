// The FUSE structs a request carries and a reply returns, field by field, as Linux's
// include/uapi/linux/fuse.h (7.38) lays them out (little-endian; sizes in abi.ts SIZE). Every
// offset the server reads or writes is named here once; the op table (ops.ts) and the reply
// encoders (reply.ts) use these names, never numbers.
//
// Args is the typed reader over one request's argument bytes: every read is bounds-checked
// against what the guest sent, u64 values beyond 2^53 come back as -1 (no file offset or size
// can be that large here), and node ids and file handles that no slot can have come back as 0.

import { SIZE } from './abi';
import { E } from '../linux/constants';

export const IN_HEADER = { len: 0, opcode: 4, unique: 8, nodeid: 16, uid: 24, gid: 28, pid: 32, total_extlen: 36 } as const;
export const OUT_HEADER = { len: 0, error: 4, unique: 8 } as const;

export const INIT_IN = { major: 0, minor: 4, max_readahead: 8, flags: 12, flags2: 16 } as const;
export const INIT_OUT = {
  major: 0, minor: 4, max_readahead: 8, flags: 12, max_background: 16, congestion_threshold: 18,
  max_write: 20, time_gran: 24, max_pages: 28, map_alignment: 30, flags2: 32,
} as const;
export const FORGET_IN = { nlookup: 0 } as const;
export const BATCH_FORGET_IN = { count: 0 } as const;
export const FORGET_ONE = { nodeid: 0, nlookup: 8 } as const;
export const GETATTR_IN = { getattr_flags: 0, fh: 8 } as const;
export const SETATTR_IN = {
  valid: 0, fh: 8, size: 16, lock_owner: 24, atime: 32, mtime: 40, ctime: 48,
  atimensec: 56, mtimensec: 60, ctimensec: 64, mode: 68, uid: 76, gid: 80,
} as const;
export const MKNOD_IN = { mode: 0, rdev: 4, umask: 8 } as const;
export const MKDIR_IN = { mode: 0, umask: 4 } as const;
export const RENAME_IN = { newdir: 0 } as const;
export const RENAME2_IN = { newdir: 0, flags: 8 } as const;
export const LINK_IN = { oldnodeid: 0 } as const;
export const OPEN_IN = { flags: 0, open_flags: 4 } as const;
export const CREATE_IN = { flags: 0, mode: 4, umask: 8, open_flags: 12 } as const;
/** fuse_read_in and fuse_write_in share their first fields. */
export const READ_IN = { fh: 0, offset: 8, size: 16, read_flags: 20, lock_owner: 24, flags: 32 } as const;
export const WRITE_IN = { fh: 0, offset: 8, size: 16, write_flags: 20, lock_owner: 24, flags: 32 } as const;
export const RELEASE_IN = { fh: 0, flags: 8, release_flags: 12, lock_owner: 16 } as const;
export const FLUSH_IN = { fh: 0, lock_owner: 16 } as const;
export const FSYNC_IN = { fh: 0, fsync_flags: 8 } as const;
/** fuse_setxattr_in; with SETXATTR_EXT it is 16 bytes (setxattr_flags at 8). */
export const SETXATTR_IN = { size: 0, flags: 4, setxattr_flags: 8 } as const;
export const GETXATTR_IN = { size: 0 } as const;
export const LK_IN = { fh: 0, owner: 8, start: 16, end: 24, type: 32, pid: 36, lk_flags: 40 } as const;
export const ACCESS_IN = { mask: 0 } as const;
export const FALLOCATE_IN = { fh: 0, offset: 8, length: 16, mode: 24 } as const;
export const LSEEK_IN = { fh: 0, offset: 8, whence: 16 } as const;
export const COPY_FILE_RANGE_IN = { fh_in: 0, off_in: 8, nodeid_out: 16, fh_out: 24, off_out: 32, len: 40, flags: 48 } as const;

export const ATTR = {
  ino: 0, size: 8, blocks: 16, atime: 24, mtime: 32, ctime: 40, atimensec: 48, mtimensec: 52,
  ctimensec: 56, mode: 60, nlink: 64, uid: 68, gid: 72, rdev: 76, blksize: 80, flags: 84,
} as const;
export const ENTRY_OUT = { nodeid: 0, generation: 8, entry_valid: 16, attr_valid: 24, entry_valid_nsec: 32, attr_valid_nsec: 36, attr: 40 } as const;
export const ATTR_OUT = { attr_valid: 0, attr_valid_nsec: 8, attr: 16 } as const;
export const OPEN_OUT = { fh: 0, open_flags: 8 } as const;
export const WRITE_OUT = { size: 0 } as const;
export const KSTATFS = { blocks: 0, bfree: 8, bavail: 16, files: 24, ffree: 32, bsize: 40, namelen: 44, frsize: 48 } as const;
export const GETXATTR_OUT = { size: 0 } as const;
export const LK_OUT = { start: 0, end: 8, type: 16, pid: 20 } as const;
export const LSEEK_OUT = { offset: 0 } as const;
export const DIRENT = { ino: 0, off: 8, namelen: 16, type: 20, name: 24 } as const;

export const NAME_MAX = 255;
export const PATH_MAX = 4096;
export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 65536;

/** A decoded string and the offset just past its NUL. */
export interface Str { s: string; next: number }

/**
 * One request's argument bytes (after fuse_in_header): body[0, len), then zeros (so a string
 * scan always stops), with a latin1 view for names (one char per byte: a host name that is not
 * UTF-8 survives the round trip) and a DataView for numbers.
 */
export class Args {
  len = 0;
  constructor(public bytes: Uint8Array, public str: Buffer, public dv: DataView) {}

  /** At least n bytes were sent. */
  has(n: number): boolean {
    return this.len >= n;
  }

  u32(off: number): number {
    return this.dv.getUint32(off, true);
  }

  u16(off: number): number {
    return this.dv.getUint16(off, true);
  }

  /** A u64 as an exact number, or -1 when it is 2^53 or more (no real offset or size is). */
  u64(off: number): number {
    const lo = this.dv.getUint32(off, true), hi = this.dv.getUint32(off + 4, true);
    if (hi >= 0x200000) return -1;
    return hi * 0x100000000 + lo;
  }

  big(off: number): bigint {
    return this.dv.getBigUint64(off, true);
  }

  /** A u64 node id or file handle: the slot index, or 0 (no slot) when it is 2^32 or more. */
  id(off: number): number {
    return this.dv.getUint32(off + 4, true) === 0 ? this.dv.getUint32(off, true) : 0;
  }

  /** A NUL-terminated string at off of at most max bytes; null if it runs past the body. */
  cstr(off: number, max: number): Str | null {
    // The body is followed by zeros, so the scan stops; a NUL past the body is no terminator.
    const end = this.bytes.indexOf(0, off);
    if (end < 0 || end >= this.len || end - off > max) return null;
    return { s: this.str.toString('latin1', off, end), next: end + 1 };
  }

  /** A single path component (no '/', not '.' or '..', not empty), or -errno. */
  name(off: number): Str | number {
    const n = this.cstr(off, PATH_MAX);
    if (!n) return -E.EINVAL;
    if (n.s.length > NAME_MAX) return -E.ENAMETOOLONG;
    if (n.s.length === 0 || n.s.includes('/') || n.s === '.' || n.s === '..') return -E.EINVAL;
    return n;
  }

  /** An xattr name (not empty, at most XATTR_NAME_MAX), or -errno. */
  xattrName(off: number): Str | number {
    const n = this.cstr(off, XATTR_NAME_MAX);
    if (!n) return -E.ERANGE;
    return n.s.length === 0 ? -E.EINVAL : n;
  }
}

/** Bytes of the fixed part before the first name of each name-carrying op (0: the name comes first). */
export const NAME_AT: Readonly<Record<string, number>> = {
  MKNOD: SIZE.mknod_in, MKDIR: SIZE.mkdir_in, LINK: SIZE.link_in, CREATE: SIZE.create_in,
  RENAME: SIZE.rename_in, RENAME2: SIZE.rename2_in, SYMLINK: 0, UNLINK: 0, RMDIR: 0, LOOKUP: 0,
};
