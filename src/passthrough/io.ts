// READ, WRITE and FSYNC on open files, and the other ops on a file's data (FALLOCATE, LSEEK,
// COPY_FILE_RANGE): where each syscall runs.
//
// A READ or WRITE on slow storage must not hold up every other request, and one the page cache
// serves must not pay for two thread hand-offs. So with the thread pool (the default):
//   - READ is tried inline with RWF_NOWAIT (preadv2(2): fail with EAGAIN rather than wait for
//     I/O): a page-cache hit completes on the event loop; the rest goes to the libuv pool, as one
//     native call over the guest's (offset, length) pairs (preadv2RangesAsync), not a view per
//     page through node:fs (for 1 MiB, 256 views that cost the event loop more than the copy).
//   - WRITE is tried the same way. ext4 and tmpfs do no NOWAIT buffered writes (EOPNOTSUPP,
//     remembered per handle); those are written inline while inline writes are fast, and one
//     slow one (dirty-page throttling, a journal commit) sends writes to the pool for a while
//     (InlineWrites).
//   - FSYNC always goes to the pool.
// A partial inline result is continued, never replied short: the guest takes a short READ as
// EOF. With --thread-pool-size=0 every syscall runs on the event loop.
//
// Around a pool op only the handle's busy count changes (HandleTable.hold), so a RELEASE cannot
// close the fd under it; completion touches no map.

import * as nodefs from 'node:fs';
import { RWF_NOWAIT } from '../native/binding';
import type { Logger } from '../log';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import { FUSE_WRITE_KILL_SUIDGID, MAX_BUFFER_SIZE } from '../fuse/abi';
import type { Ctx } from '../fuse/filesystem';
import type { RangeIo } from '../fuse/ops';
import type { Handle } from './handle-table';
import type { Share } from './share';

/** Largest COPY_FILE_RANGE done in one request: it runs on the event loop. A short count is legal. */
const COPY_CHUNK = 8 * MAX_BUFFER_SIZE;
/** An inline write that took longer than this sends writes to the pool ... */
export const SLOW_INLINE_WRITE_MS = 10;
/** ... for this long. */
export const WRITE_POOL_MS = 1000;

/** -errno of an error from node:fs (EIO if it carries none). */
export function errnoOf(e: unknown): number {
  const n = (e as { errno?: unknown }).errno;
  return typeof n === 'number' && n < 0 ? n : -E.EIO;
}

/**
 * Whether a buffered write that cannot be done with RWF_NOWAIT may run inline: copying into the
 * page cache costs less than the pool's two thread hand-offs while it is fast, but a slow one
 * would stall every request behind it, and the next one likely would too.
 */
export class InlineWrites {
  /** Until then (now()), such writes go to the pool. */
  private poolUntil = 0;

  constructor(private readonly log: Logger, private readonly now: () => number = () => performance.now()) {}

  get allowed(): boolean {
    return this.now() >= this.poolUntil;
  }

  /** When an inline write began: pass it to ended(). */
  start(): number {
    return this.now();
  }

  /** An inline write that began at t0 is done; r is its result, passed through. */
  ended(t0: number, r: number): number {
    const t1 = this.now();
    if (t1 - t0 > SLOW_INLINE_WRITE_MS) {
      this.poolUntil = t1 + WRITE_POOL_MS;
      this.log.debug({ ms: t1 - t0 }, 'slow inline write; writes go to the thread pool for a while');
    }
    return r;
  }
}

export class Io implements RangeIo {
  /** Handles whose file said EOPNOTSUPP to RWF_NOWAIT reads / writes (by fh; a reused fh holds
   *  another Handle object, so it is tried again). */
  private readonly nowaitRead: (Handle | undefined)[] = [];
  private readonly nowaitWrite: (Handle | undefined)[] = [];
  readonly inlineWrites: InlineWrites;

  /** syncIo: --thread-pool-size=0, every syscall on the event loop. */
  constructor(private readonly share: Share, private readonly syncIo: boolean, now?: () => number) {
    this.inlineWrites = new InlineWrites(share.log, now);
  }

  read(_ctx: Ctx, fh: number, offset: number, dst: Uint8Array[], cb: (r: number) => void): void {
    const h = this.share.files.get(fh);
    if (!h) return cb(-E.EBADF);
    if (dst.length === 0) return cb(0);
    const n = this.share.native;
    if (this.syncIo) return cb(n.preadv2(h.fd, dst, offset, 0));
    const r = this.nowaitOk(h, this.nowaitRead) ? n.preadv2(h.fd, dst, offset, RWF_NOWAIT) : -E.EAGAIN;
    this.readOn(h, dst, offset, r, cb);
  }

  /**
   * READ into `count` (offset, length) pairs of iov in the window win (guest memory), as read():
   * the session's form, with no view object per guest buffer. iov is read before this returns.
   */
  readRanges(_ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, cb: (r: number) => void): void {
    const h = this.share.files.get(fh);
    if (!h) return cb(-E.EBADF);
    if (count === 0) return cb(0);
    const n = this.share.native;
    if (this.syncIo) return cb(n.preadv2Ranges(h.fd, win, iov, count, offset, 0));
    let done = 0;
    if (this.nowaitOk(h, this.nowaitRead)) {
      let r = n.preadv2Ranges(h.fd, win, iov, count, offset, RWF_NOWAIT);
      const total = rangesLength(iov, count);
      if (r === 0 || r === total) return cb(r);
      // A partial hit goes on inline while the cache has the data (and stops at EOF).
      while (r > 0) {
        done += r;
        if (done >= total) return cb(done);
        const [rest, restCount] = skipRanges(iov, count, done);
        r = n.preadv2Ranges(h.fd, win, rest, restCount, offset + done, RWF_NOWAIT);
        if (r === 0) return cb(done);
      }
      if (r === -E.EOPNOTSUPP) this.nowaitRead[h.fh] = h;
      else if (r !== -E.EAGAIN) return cb(done > 0 ? done : r);
    }
    this.rangesOnPool(h, false, win, iov, count, offset, done, cb);
  }

  /**
   * The rest of a READ or WRITE of ranges, after `done` bytes moved inline, on the libuv pool in
   * one native call (no view per guest buffer; the native side continues a short transfer).
   * cb gets the total moved, or -errno if nothing moved.
   */
  private rangesOnPool(h: Handle, write: boolean, win: Uint8Array, iov: Float64Array, count: number, offset: number, done: number, cb: (r: number) => void): void {
    let pairs = iov, n = count;
    if (done > 0) [pairs, n] = skipRanges(iov, count, done);
    const files = this.share.files;
    files.hold(h);
    const end = (m: number): void => {
      files.unhold(h);
      cb(m < 0 ? (done > 0 ? done : m) : done + m);
    };
    const nat = this.share.native;
    const q = write ? nat.pwritev2RangesAsync(h.fd, win, pairs, n, offset + done, 0, end) : nat.preadv2RangesAsync(h.fd, win, pairs, n, offset + done, 0, end);
    if (q < 0) end(q);
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
        r = this.share.native.preadv2(h.fd, skipBytes(dst, done), offset + done, RWF_NOWAIT);
        continue;
      }
      if (r === 0) return cb(done); // EOF
      if (r === -E.EOPNOTSUPP) this.nowaitRead[h.fh] = h;
      else if (r !== -E.EAGAIN) return cb(done > 0 ? done : r);
      break;
    }
    const rest = done === 0 ? dst : skipBytes(dst, done);
    const before = done;
    const files = this.share.files;
    files.hold(h);
    nodefs.readv(h.fd, rest, offset + before, (err, m) => {
      files.unhold(h);
      cb(err ? (before > 0 ? before : errnoOf(err)) : before + m);
    });
  }

  /** WRITE: as READ (inline with RWF_NOWAIT first, the rest on the pool). A short write is continued. */
  write(_ctx: Ctx, fh: number, offset: number, src: Uint8Array[], writeFlags: number, cb: (r: number) => void): void {
    const h = this.share.files.get(fh);
    if (!h) return cb(-E.EBADF);
    if (src.length === 0) return cb(0);
    const n = this.share.native;
    if (this.syncIo) return this.writeDone(h, writeFlags, n.pwritev2(h.fd, src, offset, 0), cb);
    if (this.inlineWriteOk(h)) {
      const t0 = this.inlineWrites.start();
      return this.writeDone(h, writeFlags, this.inlineWrites.ended(t0, n.pwritev2(h.fd, src, offset, 0)), cb);
    }
    const r = this.nowaitOk(h, this.nowaitWrite) ? n.pwritev2(h.fd, src, offset, RWF_NOWAIT) : -E.EAGAIN;
    this.writeOn(h, src, offset, r, writeFlags, cb);
  }

  /** WRITE from `count` (offset, length) pairs of iov in the window win, as readRanges(). */
  writeRanges(_ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, writeFlags: number, cb: (r: number) => void): void {
    const h = this.share.files.get(fh);
    if (!h) return cb(-E.EBADF);
    if (count === 0) return cb(0);
    const n = this.share.native;
    if (this.syncIo) return this.writeDone(h, writeFlags, n.pwritev2Ranges(h.fd, win, iov, count, offset, 0), cb);
    if (this.inlineWriteOk(h)) {
      const t0 = this.inlineWrites.start();
      return this.writeDone(h, writeFlags, this.inlineWrites.ended(t0, n.pwritev2Ranges(h.fd, win, iov, count, offset, 0)), cb);
    }
    let done = 0;
    if (this.nowaitOk(h, this.nowaitWrite)) {
      const r = n.pwritev2Ranges(h.fd, win, iov, count, offset, RWF_NOWAIT);
      if (r === rangesLength(iov, count) || (r < 0 && r !== -E.EAGAIN && r !== -E.EOPNOTSUPP)) return this.writeDone(h, writeFlags, r, cb);
      if (r > 0) done = r;
      // ext4 (Linux 6.18) and tmpfs have no NOWAIT buffered writes: one try per handle.
      if (r === -E.EOPNOTSUPP) {
        this.nowaitWrite[h.fh] = h;
        if (this.inlineWriteOk(h)) {
          const t0 = this.inlineWrites.start();
          return this.writeDone(h, writeFlags, this.inlineWrites.ended(t0, n.pwritev2Ranges(h.fd, win, iov, count, offset, 0)), cb);
        }
      }
    }
    this.rangesOnPool(h, true, win, iov, count, offset, done, (m) => this.writeDone(h, writeFlags, m, cb));
  }

  /** No NOWAIT writes on this file, not O_DIRECT, and inline writes have been fast lately. */
  private inlineWriteOk(h: Handle): boolean {
    return this.nowaitWrite[h.fh] === h && (h.flags & K.O_DIRECT) === 0 && this.inlineWrites.allowed;
  }

  /** Go on with a WRITE whose first inline RWF_NOWAIT try gave r. */
  private writeOn(h: Handle, src: Uint8Array[], offset: number, r: number, writeFlags: number, cb: (r: number) => void): void {
    let done = 0, total = -1;
    for (;;) {
      if (r > 0) {
        done += r;
        if (total < 0) total = byteLength(src);
        if (done >= total) return this.writeDone(h, writeFlags, done, cb);
        r = this.share.native.pwritev2(h.fd, skipBytes(src, done), offset + done, RWF_NOWAIT);
        continue;
      }
      // ext4 (Linux 6.18) and tmpfs have no NOWAIT buffered writes: one try per handle.
      if (r === -E.EOPNOTSUPP) {
        this.nowaitWrite[h.fh] = h;
        if (this.inlineWriteOk(h)) {
          const rest = done === 0 ? src : skipBytes(src, done);
          const t0 = this.inlineWrites.start();
          const m = this.inlineWrites.ended(t0, this.share.native.pwritev2(h.fd, rest, offset + done, 0));
          return this.writeDone(h, writeFlags, m < 0 ? (done > 0 ? done : m) : done + m, cb);
        }
      } else if (r !== 0 && r !== -E.EAGAIN) return this.writeDone(h, writeFlags, done > 0 ? done : r, cb);
      break;
    }
    const rest = done === 0 ? src : skipBytes(src, done);
    const before = done;
    const files = this.share.files;
    files.hold(h);
    nodefs.writev(h.fd, rest, offset + before, (err, m) => {
      files.unhold(h);
      this.writeDone(h, writeFlags, err ? (before > 0 ? before : errnoOf(err)) : before + m, cb);
    });
  }

  /** FUSE_WRITE_KILL_SUIDGID: a write by a non-root guest user clears setuid/setgid, as write(2) does. */
  private writeDone(h: Handle, writeFlags: number, n: number, cb: (r: number) => void): void {
    if (n >= 0 && (writeFlags & FUSE_WRITE_KILL_SUIDGID)) {
      const s = this.share;
      const ino = s.inodes.get(h.nodeid);
      if (ino && s.statInode(ino, s.tmpSt) === 0) s.killSuidgid(ino, s.tmpSt);
    }
    cb(n);
  }

  fsync(_ctx: Ctx, fh: number, datasync: boolean, cb: (r: number) => void): void {
    const h = this.share.files.get(fh);
    if (!h) return cb(-E.EBADF);
    if (this.syncIo) return cb(this.share.native.fsync(h.fd, datasync));
    const files = this.share.files;
    files.hold(h);
    const done = (err: NodeJS.ErrnoException | null): void => {
      files.unhold(h);
      cb(err ? errnoOf(err) : 0);
    };
    if (datasync) nodefs.fdatasync(h.fd, done);
    else nodefs.fsync(h.fd, done);
  }

  fallocate(_ctx: Ctx, fh: number, mode: number, offset: number, length: number): number {
    const h = this.share.files.get(fh);
    if (!h) return -E.EBADF;
    return this.share.native.fallocate(h.fd, mode, offset, length);
  }

  lseek(_ctx: Ctx, fh: number, offset: number, whence: number): number {
    const h = this.share.files.get(fh);
    if (!h) return -E.EBADF;
    return this.share.native.lseek(h.fd, offset, whence);
  }

  copyFileRange(_ctx: Ctx, fhIn: number, offIn: number, fhOut: number, offOut: number, len: number, flags: number): number {
    const a = this.share.files.get(fhIn), b = this.share.files.get(fhOut);
    if (!a || !b) return -E.EBADF;
    return this.share.native.copyFileRange(a.fd, offIn, b.fd, offOut, Math.min(len, COPY_CHUNK), flags);
  }
}

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

/** The pairs of iov (count of them) after the first `skip` bytes, in a new array, and their count. */
export function skipRanges(iov: Float64Array, count: number, skip: number): [Float64Array, number] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const o = iov[2 * i]!, l = iov[2 * i + 1]!;
    if (skip >= l) { skip -= l; continue; }
    out.push(o + skip, l - skip);
    skip = 0;
  }
  return [Float64Array.from(out), out.length / 2];
}

/** The (offset, length) pairs of iov in win as views (for the pool, which takes views). */
export function rangeViews(win: Uint8Array, iov: Float64Array, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) out.push(win.subarray(iov[2 * i]!, iov[2 * i]! + iov[2 * i + 1]!));
  return out;
}

/** The views after the first `skip` bytes of bufs. */
export function skipBytes(bufs: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (skip >= b.length) { skip -= b.length; continue; }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
