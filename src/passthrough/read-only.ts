// --readonly: the share exported read-only, as a layer over the host file system. Every op that
// would change the share is answered EROFS before it reaches the host; everything else (lookups,
// attributes, reads, directory listings, xattr reads, locks, fsync) goes down unchanged. The Rust
// virtiofsd does the same with its PassthroughFsRo wrapper (src/passthrough/read_only.rs there).
//
// EROFS comes first, before any other check: as with a file system mounted read-only, where
// open(2), mkdir(2), truncate(2), setxattr(2), ... fail with EROFS. Only the open of an existing
// file depends on what it asks: reading is fine, write access or O_TRUNC is a change (open(2):
// "EROFS: pathname refers to a file on a read-only filesystem and write access was requested";
// Linux counts O_TRUNC as a write). CREATE and TMPFILE always make a file: EROFS (the guest
// sends CREATE only for a name it found absent).
//
// What this layer cannot see stays below it, as a narrow option: the description a POSIX lock
// owner's locks live on is opened inside SETLK, read-only when the share is (locks.ts).

import type { Ctx, EntryResult, OpenResult } from '../fuse/filesystem';
import { ForwardingFs } from './layer';
import { E } from '../linux/constants';
import { O_ACCMODE, O_RDONLY, O_TRUNC, W_OK } from '../linux/constants';

const EROFS = -E.EROFS;

type Created = { entry: EntryResult; open: OpenResult } | number;

export class ReadOnlyFs extends ForwardingFs {
  override setattr(): number { return EROFS; }
  override symlink(): EntryResult | number { return EROFS; }
  override mknod(): EntryResult | number { return EROFS; }
  override mkdir(): EntryResult | number { return EROFS; }
  override unlink(): number { return EROFS; }
  override rmdir(): number { return EROFS; }
  override rename(): number { return EROFS; }
  override link(): EntryResult | number { return EROFS; }
  override create(): Created { return EROFS; }
  override tmpfile(): Created { return EROFS; }
  override setxattr(): number { return EROFS; }
  override removexattr(): number { return EROFS; }
  override fallocate(): number { return EROFS; }
  override copyFileRange(): number { return EROFS; }
  // No handle is ever open for writing here, so the host would say EBADF; EROFS says why.
  override write(_ctx: Ctx, _fh: number, _offset: number, _src: Uint8Array[], _writeFlags: number, cb: (r: number) => void): void {
    cb(EROFS);
  }
  override writeRanges(_ctx: Ctx, _fh: number, _offset: number, _win: Uint8Array, _iov: Float64Array, _count: number, _writeFlags: number, cb: (r: number) => void): void {
    cb(EROFS);
  }

  override open(ctx: Ctx, nodeid: number, flags: number): OpenResult | number {
    return writes(flags) ? EROFS : this.inner.open(ctx, nodeid, flags);
  }

  /** access(2): "EROFS: write permission was requested for a file on a read-only filesystem". */
  override access(ctx: Ctx, nodeid: number, mask: number): number {
    return mask & W_OK ? EROFS : this.inner.access(ctx, nodeid, mask);
  }
}

/** Does an open with these flags change the file? Write access, or O_TRUNC (even read-only). */
export function writes(flags: number): boolean {
  return (flags & O_ACCMODE) !== O_RDONLY || (flags & O_TRUNC) !== 0;
}
