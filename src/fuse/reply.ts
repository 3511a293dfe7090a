// Reply encoding: the session's reply buffer and the encoders of the FUSE reply structs
// (fuse_out_header, fuse_attr, fuse_entry_out, fuse_attr_out, fuse_open_out, dirents), with the
// offsets structs.ts names. A reply is built at out[OUT_HEADER_SIZE...] and copied into the
// guest's buffers in one go when the op is done.

import { SIZE, MAX_BUFFER_SIZE } from './abi';
import { ATTR, ATTR_OUT, DIRENT, ENTRY_OUT, OPEN_OUT, OUT_HEADER } from './structs';
import { STAT_SLOTS, ST } from '../native/binding';
import type { DirSink, EntryResult, OpenResult } from './filesystem';

/** Reply sizes up to this get a cached view of the reply buffer (no subarray per reply). */
const OUT_VIEW_CACHE = 8192;

/** What a request's reply header needs from it. */
export interface Unique { readonly uniqueLo: number; readonly uniqueHi: number }

export class ReplyBuffer {
  readonly out = Buffer.alloc(SIZE.out_header + MAX_BUFFER_SIZE + 4096);
  readonly dv = new DataView(this.out.buffer, this.out.byteOffset, this.out.byteLength);
  /** Stat results the ops fill and the encoders read: one per entry of a reply. */
  readonly st = new BigUint64Array(STAT_SLOTS);
  readonly st2 = new BigUint64Array(STAT_SLOTS);
  /** The same stat results as u32 words (lo, hi per slot): encoded without making BigInts. */
  private readonly stW = new Uint32Array(this.st.buffer, this.st.byteOffset, 2 * STAT_SLOTS);
  private readonly st2W = new Uint32Array(this.st2.buffer, this.st2.byteOffset, 2 * STAT_SLOTS);
  /** out[0, n) for reply sizes n <= OUT_VIEW_CACHE, made on first use. */
  private readonly views: (Uint8Array | undefined)[] = [];

  /** Entry and attribute validity in seconds (the cache policy). */
  constructor(private readonly timeouts: { readonly entryTimeout: number; readonly attrTimeout: number }) {}

  /** out[0, n). */
  prefix(n: number): Uint8Array {
    if (n > OUT_VIEW_CACHE) return this.out.subarray(0, n);
    let v = this.views[n];
    if (v === undefined) v = this.views[n] = this.out.subarray(0, n);
    return v;
  }

  /** fuse_out_header at off of dv (this buffer's, or another's such as a READ's own). */
  header(dv: DataView, off: number, req: Unique, len: number, error: number): void {
    dv.setUint32(off + OUT_HEADER.len, len, true);
    dv.setInt32(off + OUT_HEADER.error, error, true);
    dv.setUint32(off + OUT_HEADER.unique, req.uniqueLo, true);
    dv.setUint32(off + OUT_HEADER.unique + 4, req.uniqueHi, true);
  }

  u32(off: number, v: number): void {
    this.dv.setUint32(off, v, true);
  }

  /** A u64 field from a non-negative safe integer. */
  u64(off: number, v: number): void {
    if (v <= 0xffffffff) {
      this.dv.setUint32(off, v, true);
      this.dv.setUint32(off + 4, 0, true);
    } else {
      this.dv.setUint32(off, v >>> 0, true);
      this.dv.setUint32(off + 4, Math.floor(v / 0x100000000), true);
    }
  }

  big(off: number, v: bigint): void {
    this.dv.setBigUint64(off, v, true);
  }

  zero(from: number, to: number): void {
    this.out.fill(0, from, to);
  }

  /** st as u32 words (lo, hi per u64 slot). */
  private words(st: BigUint64Array): Uint32Array {
    if (st === this.st) return this.stW;
    if (st === this.st2) return this.st2W;
    return new Uint32Array(st.buffer, st.byteOffset, 2 * STAT_SLOTS);
  }

  /** fuse_attr from a stat() result: u64 fields copied as their two words, u32 fields from the
   *  low word (nlink and rdev are truncated, as fuse_attr has them). */
  attr(off: number, st: BigUint64Array, flags: number): void {
    // Unrolled: this runs for every entry and attribute reply.
    const dv = this.dv, w = this.words(st);
    dv.setUint32(off + ATTR.ino, w[2 * ST.ino]!, true);
    dv.setUint32(off + ATTR.ino + 4, w[2 * ST.ino + 1]!, true);
    dv.setUint32(off + ATTR.size, w[2 * ST.size]!, true);
    dv.setUint32(off + ATTR.size + 4, w[2 * ST.size + 1]!, true);
    dv.setUint32(off + ATTR.blocks, w[2 * ST.blocks]!, true);
    dv.setUint32(off + ATTR.blocks + 4, w[2 * ST.blocks + 1]!, true);
    dv.setUint32(off + ATTR.atime, w[2 * ST.atime]!, true);
    dv.setUint32(off + ATTR.atime + 4, w[2 * ST.atime + 1]!, true);
    dv.setUint32(off + ATTR.mtime, w[2 * ST.mtime]!, true);
    dv.setUint32(off + ATTR.mtime + 4, w[2 * ST.mtime + 1]!, true);
    dv.setUint32(off + ATTR.ctime, w[2 * ST.ctime]!, true);
    dv.setUint32(off + ATTR.ctime + 4, w[2 * ST.ctime + 1]!, true);
    dv.setUint32(off + ATTR.atimensec, w[2 * ST.atimensec]!, true);
    dv.setUint32(off + ATTR.mtimensec, w[2 * ST.mtimensec]!, true);
    dv.setUint32(off + ATTR.ctimensec, w[2 * ST.ctimensec]!, true);
    dv.setUint32(off + ATTR.mode, w[2 * ST.mode]!, true);
    dv.setUint32(off + ATTR.nlink, w[2 * ST.nlink]!, true);
    dv.setUint32(off + ATTR.uid, w[2 * ST.uid]!, true);
    dv.setUint32(off + ATTR.gid, w[2 * ST.gid]!, true);
    dv.setUint32(off + ATTR.rdev, w[2 * ST.rdev]!, true);
    dv.setUint32(off + ATTR.blksize, w[2 * ST.blksize]!, true);
    dv.setUint32(off + ATTR.flags, flags, true);
  }

  /** fuse_entry_out at off; all zeros (a negative entry, or "." in READDIRPLUS) without e. */
  entry(off: number, e: EntryResult | null, st: BigUint64Array | null): number {
    if (!e || !st) {
      this.out.fill(0, off, off + SIZE.entry_out);
      return SIZE.entry_out;
    }
    const et = this.timeouts.entryTimeout, at = this.timeouts.attrTimeout;
    this.u64(off + ENTRY_OUT.nodeid, e.nodeid);
    this.u64(off + ENTRY_OUT.generation, e.generation);
    this.u64(off + ENTRY_OUT.entry_valid, Math.floor(et));
    this.u64(off + ENTRY_OUT.attr_valid, Math.floor(at));
    this.dv.setUint32(off + ENTRY_OUT.entry_valid_nsec, Math.round((et % 1) * 1e9), true);
    this.dv.setUint32(off + ENTRY_OUT.attr_valid_nsec, Math.round((at % 1) * 1e9), true);
    this.attr(off + ENTRY_OUT.attr, st, e.attrFlags);
    return SIZE.entry_out;
  }

  /** fuse_attr_out at off. */
  attrOut(off: number, st: BigUint64Array): number {
    const at = this.timeouts.attrTimeout;
    this.u64(off + ATTR_OUT.attr_valid, Math.floor(at));
    this.dv.setUint32(off + ATTR_OUT.attr_valid_nsec, Math.round((at % 1) * 1e9), true);
    this.dv.setUint32(off + ATTR_OUT.attr_valid_nsec + 4, 0, true);
    this.attr(off + ATTR_OUT.attr, st, 0);
    return SIZE.attr_out;
  }

  /** fuse_open_out at off. */
  open(off: number, o: OpenResult): number {
    this.u64(off + OPEN_OUT.fh, o.fh);
    this.dv.setUint32(off + OPEN_OUT.open_flags, o.openFlags, true);
    this.dv.setUint32(off + OPEN_OUT.open_flags + 4, 0, true);
    return SIZE.open_out;
  }

  /** A directory listing of at most size bytes at base. */
  dir(base: number, size: number): DirBuffer {
    return new DirBuffer(this, base, size);
  }
}

/** Packs fuse_dirent / fuse_direntplus records into the reply buffer. */
export class DirBuffer implements DirSink {
  used = 0;
  constructor(private readonly r: ReplyBuffer, private readonly base: number, private readonly size: number) {}

  get room(): number { return this.size - this.used; }

  add(ino: bigint, nextOff: bigint, type: number, name: Uint8Array): boolean {
    const reclen = (SIZE.dirent + name.length + 7) & ~7;
    if (reclen > this.room) return false;
    this.dirent(this.base + this.used, ino, nextOff, type, name, reclen);
    this.used += reclen;
    return true;
  }

  addPlus(entry: EntryResult | null, st: BigUint64Array | null, ino: bigint, nextOff: bigint, type: number, name: Uint8Array): boolean {
    const reclen = (SIZE.direntplus + name.length + 7) & ~7;
    if (reclen > this.room) return false;
    const off = this.base + this.used;
    this.r.entry(off, entry, st);
    this.dirent(off + SIZE.entry_out, ino, nextOff, type, name, reclen - SIZE.entry_out);
    this.used += reclen;
    return true;
  }

  private dirent(off: number, ino: bigint, nextOff: bigint, type: number, name: Uint8Array, reclen: number): void {
    const dv = this.r.dv, out = this.r.out;
    dv.setBigUint64(off + DIRENT.ino, ino, true);
    dv.setBigUint64(off + DIRENT.off, nextOff, true);
    dv.setUint32(off + DIRENT.namelen, name.length, true);
    dv.setUint32(off + DIRENT.type, type, true);
    out.set(name, off + DIRENT.name);
    out.fill(0, off + DIRENT.name + name.length, off + reclen);
  }
}
