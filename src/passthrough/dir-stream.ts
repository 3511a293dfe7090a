// Where each open directory's getdents64(2) stream stands, and the entries read from it that no
// reply has taken yet, so that a listing costs what it returns.
//
// A guest lists a directory with READDIRs of one page (Linux asks for 4 KiB), each at the d_off
// cookie of the last entry it got. getdents64 hands out whole records and cannot be asked for
// "as many as fit in 4 KiB of fuse_dirent", so a read brings more than one reply takes. The rest
// stays with the handle: the next READDIR at that cookie starts from it without a syscall, and
// once it is used up the fd is exactly at the cookie, so the next getdents64 needs no seek. A
// READDIR at any other offset (telldir/seekdir, rewinddir, a retry, a new worker) drops what is
// kept and seeks the fd to the cookie (lseek(2) on a directory takes d_off values).
//
// Memory is bounded: buffers come from one pool of MAX_STREAM_BUFFERS. When all are held, the
// stream used longest ago loses its unread entries (its next READDIR seeks and reads them
// again), so a guest holding many directories open costs re-reads, not memory.
//
// This is the worker's own state: nothing is in shared memory and READDIR is not journaled. A
// new worker's handles start with an unknown position and seek on their first READDIR
// (docs/crash-consistency.md).

import type { NativeBinding } from '../native/binding';

/** Bytes per getdents64 read: some 400 short names, 4-10 READDIR replies of 4 KiB. */
export const DIR_STREAM_BUF = 16 * 1024;
/** Buffers in the pool: MAX_STREAM_BUFFERS × DIR_STREAM_BUF bytes at most (4 MiB). */
export const MAX_STREAM_BUFFERS = 256;

// struct linux_dirent64 (getdents64(2)): d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name.
export const DIRENT64 = { ino: 0, off: 8, reclen: 16, type: 18, name: 19 } as const;

/** Where a position is not known (after a failed seek, or in a new worker). */
const UNKNOWN = -1n;

export class DirStream {
  /** The cookie the unread entries follow: the offset a READDIR continuing this stream sends. */
  pos: bigint;
  /** Where the fd's own position is, when no entries are kept (UNKNOWN: seek before reading). */
  fdAt: bigint;
  /** The kept entries are bytes [start, end) of bytes/dv. */
  bytes: Uint8Array | null = null;
  dv: DataView | null = null;
  start = 0;
  end = 0;

  /** at: the fd's position now (0 for a directory just opened; UNKNOWN for one recovered). */
  constructor(at: bigint) {
    this.pos = at;
    this.fdAt = at;
  }

  get kept(): number { return this.end - this.start; }

  /** The guest took the kept entry at start, whose record is reclen bytes and whose d_off is next. */
  take(reclen: number, next: bigint): void {
    this.start += reclen;
    this.pos = next;
    // The last kept entry was the last one read: the fd stands right after it.
    if (this.start >= this.end) this.fdAt = next;
  }
}

export class DirStreams {
  /** Streams holding a buffer, least recently used first (Map keeps insertion order). */
  private readonly holders = new Map<DirStream, true>();
  private readonly free: Uint8Array[] = [];
  private allocated = 0;

  constructor(private readonly native: NativeBinding, private readonly maxBuffers = MAX_STREAM_BUFFERS,
    private readonly bufBytes = DIR_STREAM_BUF) {}

  /**
   * Make s continue at offset: keep its entries if they follow offset, otherwise drop them and
   * seek the fd there. 0 or -errno (the position is then unknown).
   */
  seek(s: DirStream, fd: number, offset: bigint): number {
    if (s.pos === offset && (s.kept > 0 || s.fdAt === offset)) return 0;
    this.drop(s);
    s.pos = offset;
    const r = this.native.seekDir(fd, offset);
    s.fdAt = r < 0 ? UNKNOWN : offset;
    return r;
  }

  /**
   * Have kept entries for s (after seek()): read more if none are left. Bytes kept, 0 at the end
   * of the directory, or -errno.
   */
  fill(s: DirStream, fd: number): number {
    if (s.kept > 0) {
      this.touch(s);
      return s.kept;
    }
    if (s.fdAt !== s.pos) {
      const r = this.seek(s, fd, s.pos);
      if (r < 0) return r;
    }
    const bytes = this.bufferFor(s);
    const len = this.native.getdents64(fd, bytes);
    if (len <= 0) {
      // Nothing read (or an error): the buffer goes back, the position stays.
      this.drop(s);
      return len;
    }
    s.start = 0;
    s.end = len;
    return len;
  }

  /** After a reply: a stream whose kept entries are all taken gives its buffer back. */
  settle(s: DirStream): void {
    if (s.kept === 0) this.drop(s);
  }

  /** RELEASEDIR (or a whole session's end): forget s and give its buffer back. */
  drop(s: DirStream): void {
    if (!s.bytes) return;
    this.holders.delete(s);
    this.free.push(s.bytes);
    s.bytes = null;
    s.dv = null;
    s.start = s.end = 0;
  }

  /** Every stream gives its buffer back (DESTROY: the handles are gone). */
  dropAll(): void {
    for (const s of [...this.holders.keys()]) this.drop(s);
  }

  /** Buffers in use (for tests and the log). */
  get inUse(): number { return this.holders.size; }

  private touch(s: DirStream): void {
    this.holders.delete(s);
    this.holders.set(s, true);
  }

  private bufferFor(s: DirStream): Uint8Array {
    if (!s.bytes) {
      let b = this.free.pop();
      if (!b && this.allocated < this.maxBuffers) {
        b = new Uint8Array(this.bufBytes);
        this.allocated++;
      }
      if (!b) {
        // Take the least recently used stream's buffer; its unread entries are read again
        // when it is next listed (its fd is past them: it must seek).
        const victim = this.holders.keys().next().value as DirStream;
        victim.fdAt = UNKNOWN;
        this.drop(victim);
        b = this.free.pop()!;
      }
      s.bytes = b;
      s.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    }
    this.touch(s);
    return s.bytes;
  }
}

/** The position of a directory handle a new worker inherits: unknown, so it seeks first. */
export function recoveredStream(): DirStream {
  return new DirStream(UNKNOWN);
}
