// Device side of a split virtqueue (VIRTIO 1.2 section 2.7), little-endian (VIRTIO_F_VERSION_1).
//
//   desc  (16-aligned): { u64 addr (GPA); u32 len; u16 flags; u16 next }[size]
//   avail (2-aligned):  u16 flags; u16 idx; u16 ring[size]; u16 used_event   (EVENT_IDX)
//   used  (4-aligned):  u16 flags; u16 idx; { u32 id; u32 len }[size]; u16 avail_event (EVENT_IDX)
//
// Ring memory is located once (frontend virtual addresses, via GuestMemory.vaView) and accessed
// through typed arrays in host byte order; the host must be little-endian (x86-64, arm64).
// The guest is untrusted: every rule below is checked and a malformed chain is returned to the used
// ring with len 0 instead of being followed, so a hostile driver cannot wedge or crash us.

import * as os from 'node:os';
import type { Logger } from '../log';
import { silentLogger } from '../log';
import type { GuestMemory } from './guest-memory';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Largest indirect table accepted (entries) when the queue is smaller: Linux may use tables up to
 *  the queue size, and QEMU/libvhost-user cap chains at VIRTQUEUE_MAX_SIZE = 1024. */
export const MAX_INDIRECT_ENTRIES = 1024;
const MAX_CHAIN_BYTES = 0xffffffff; // used.len is a u32

export interface DescChain {
  head: number;                 // descriptor index to push to the used ring
  readable: Uint8Array[];       // device-readable segments, in order (views into guest memory)
  writable: Uint8Array[];       // device-writable segments, in order
  readableLen: number; writableLen: number;
}

/** Views of the segments [first, end) of a (window, offset, length) triple list. */
function segmentViews(segs: Array<Uint8Array | number>, first: number, end: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let k = first; k < end; k++) {
    const w = segs[3 * k] as Uint8Array, o = segs[3 * k + 1] as number;
    out.push(w.subarray(o, o + (segs[3 * k + 2] as number)));
  }
  return out;
}

/**
 * The chains pop() and chainAt() return. The walk records each segment as a (window, offset,
 * length) triple instead of making a view per descriptor (a 1 MiB READ has 256): the session
 * reads them as they are, and `readable` / `writable` are made on first use.
 */
export class WalkedChain implements DescChain {
  private r: Uint8Array[] | null = null;
  private w: Uint8Array[] | null = null;

  constructor(
    readonly head: number,
    /** Segment k is bytes [segs[3k+1], segs[3k+1] + segs[3k+2]) of the window segs[3k]. */
    readonly segs: Array<Uint8Array | number>,
    /** Segments [0, nReadable) are device-readable, the rest device-writable. */
    readonly nReadable: number,
    readonly readableLen: number,
    readonly writableLen: number,
  ) {}

  get readable(): Uint8Array[] {
    if (this.r === null) this.r = segmentViews(this.segs, 0, this.nReadable);
    return this.r;
  }

  get writable(): Uint8Array[] {
    if (this.w === null) this.w = segmentViews(this.segs, this.nReadable, this.segs.length / 3);
    return this.w;
  }
}

export interface SplitQueueOptions {
  size: number; descVa: number; availVa: number; usedVa: number;
  lastAvail: number; eventIdx: boolean;
  /** For diagnostics only. */
  log?: Logger; index?: number;
}

/** vring_need_event() from the virtio spec / linux virtio_ring.h: all u16 arithmetic. */
export function vringNeedEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

function rd32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 0x1000000;
}

export class SplitQueue {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly index: number;
  private readonly mem: GuestMemory;
  private readonly log: Logger;
  private readonly mask: number;
  private readonly maxIndirect: number;
  private readonly desc: Uint8Array;       // the descriptor table, 16 * size bytes
  private readonly desc32: Uint32Array | null; // same, as words, when 4-aligned (always in practice)
  private readonly avail: Uint16Array;     // [0] flags, [1] idx, [2 + i] ring[i], [2 + size] used_event
  private readonly used16: Uint16Array;    // [0] flags, [1] idx, ..., [availEventSlot] avail_event
  private readonly used32: Uint32Array;    // ring elements: [2i] id, [2i + 1] len
  private readonly usedEventSlot: number;
  private readonly availEventSlot: number;
  private last: number;                    // next avail index to consume (u16)
  private shadowAvail: number;             // avail.idx as last read
  private usedIdx: number;                 // our used.idx (u16)
  private signalledUsed: number;           // used.idx at the last notification decision
  private signalledValid = false;
  private corrupt = false;
  private reason = '';

  constructor(mem: GuestMemory, o: SplitQueueOptions) {
    if (os.endianness() !== 'LE') throw new Error('SplitQueue needs a little-endian host');
    const size = o.size;
    // VIRTIO 1.2 2.7: split queue size is a power of 2, at most 32768.
    if (!Number.isInteger(size) || size < 1 || size > 32768 || (size & (size - 1)) !== 0) {
      throw new RangeError(`invalid queue size ${size}`);
    }
    this.size = size;
    this.mask = size - 1;
    this.maxIndirect = Math.max(size, MAX_INDIRECT_ENTRIES);
    this.eventIdx = o.eventIdx;
    this.index = o.index ?? 0;
    this.mem = mem;
    this.log = o.log ?? silentLogger;
    const ev = o.eventIdx ? 2 : 0;
    const desc = mem.vaView(o.descVa, 16 * size);
    const avail = mem.vaView(o.availVa, 4 + 2 * size + ev);
    const used = mem.vaView(o.usedVa, 4 + 8 * size + ev);
    if (desc === null || avail === null || used === null) {
      throw new RangeError(`queue ${this.index}: ring addresses not in mapped memory`);
    }
    // VIRTIO 1.2 2.7 table "Virtqueue Part / Alignment": avail 2, used 4 (desc 16 is not needed here).
    if ((avail.byteOffset & 1) !== 0 || (used.byteOffset & 3) !== 0) {
      throw new RangeError(`queue ${this.index}: misaligned avail/used ring`);
    }
    this.desc = desc;
    this.desc32 = (desc.byteOffset & 3) === 0 ? new Uint32Array(desc.buffer, desc.byteOffset, 4 * size) : null;
    this.avail = new Uint16Array(avail.buffer, avail.byteOffset, (avail.byteLength >> 1));
    this.used16 = new Uint16Array(used.buffer, used.byteOffset, (used.byteLength >> 1));
    this.used32 = new Uint32Array(used.buffer, used.byteOffset + 4, 2 * size);
    this.usedEventSlot = 2 + size;
    this.availEventSlot = 2 + 4 * size;
    this.last = o.lastAvail & 0xffff;
    this.shadowAvail = this.last;
    // vhost-user: the used index is taken from the ring in guest memory (SET_VRING_BASE only
    // carries the avail index for split rings).
    this.usedIdx = Atomics.load(this.used16, 1);
    this.signalledUsed = this.usedIdx;
    if (this.eventIdx) Atomics.store(this.used16, this.availEventSlot, this.last);
  }

  /** Next avail index to process (GET_VRING_BASE). */
  get lastAvail(): number { return this.last; }
  /** The used index we last published. */
  get usedIndex(): number { return this.usedIdx; }

  /** Next chain, null when the ring is empty. A malformed chain is logged, returned to the used
   *  ring with len 0 and skipped. Throws only if the ring memory has been unmapped. */
  pop(): DescChain | null {
    for (;;) {
      if (this.last === this.shadowAvail) {
        // Acquire: the ring entries and descriptors we read next were written before avail.idx.
        const idx = Atomics.load(this.avail, 1);
        const pending = (idx - this.last) & 0xffff;
        if (pending === 0) return null;
        // VIRTIO 1.2 2.7.6: the driver can be at most size entries ahead of us.
        if (pending > this.size) {
          if (!this.corrupt) {
            this.corrupt = true;
            this.log.error({ queue: this.index, availIdx: idx, lastAvail: this.last, size: this.size },
              'avail ring index moved by more than the queue size; ring ignored');
          }
          return null;
        }
        this.corrupt = false;
        this.shadowAvail = idx;
      }
      const head = this.avail[2 + (this.last & this.mask)];
      this.last = (this.last + 1) & 0xffff;
      // VIRTIO 1.2 2.7.10: with VIRTIO_F_EVENT_IDX the driver kicks only when avail.idx passes
      // avail_event, so keep it at our next index. Seq-cst store = full barrier before we re-read idx.
      if (this.eventIdx) Atomics.store(this.used16, this.availEventSlot, this.last);
      if (head >= this.size) {
        // Not a descriptor index: nothing we could put in the used ring.
        this.log.warn({ queue: this.index, head }, 'avail ring entry out of range; skipped');
        continue;
      }
      const chain = this.walk(head);
      if (chain !== null) return chain;
      this.log.warn({ queue: this.index, head, reason: this.reason }, 'invalid descriptor chain dropped');
      this.pushUsed(head, 0);
    }
  }

  /** Used element, then used.idx with a release store (VIRTIO 1.2 2.7.8). */
  pushUsed(head: number, len: number): void {
    const slot = (this.usedIdx & this.mask) << 1;
    this.used32[slot] = head;
    this.used32[slot + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    Atomics.store(this.used16, 1, this.usedIdx);
  }

  /** True if the driver wants an interrupt for what was pushed since the last decision
   *  (VIRTIO 1.2 2.7.7 / 2.7.10; same algorithm as libvhost-user vring_notify). */
  shouldNotify(): boolean {
    const newIdx = this.usedIdx;
    const old = this.signalledUsed;
    if (newIdx === old) return false; // nothing pushed since the last decision
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (!this.eventIdx) return (Atomics.load(this.avail, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    // The seq-cst store of used.idx in pushUsed orders it before this read of used_event.
    return !valid || vringNeedEvent(Atomics.load(this.avail, this.usedEventSlot), newIdx, old);
  }

  /** Walk the chain at head; null (with this.reason set) when it breaks a rule. */
  private walk(head: number): WalkedChain | null {
    const mem = this.mem;
    const segs: Array<Uint8Array | number> = [];
    let nReadable = 0;
    let rlen = 0;
    let wlen = 0;
    let tbl = this.desc;
    let base = 0;           // byte offset of the table in tbl
    let w32 = this.desc32;  // tbl as words when base is 4-aligned: the fast path
    let n = this.size;      // entries in the current table
    let ttl = this.size;    // loop guard: no chain visits more descriptors than its table holds
    let inIndirect = false;
    let sawWrite = false;
    let i = head;
    for (;;) {
      if (ttl-- === 0) return this.fail('descriptor loop (chain longer than its table)');
      if (i >= n) return this.fail('next index out of range');
      const o = base + 16 * i;
      let lo: number, hi: number, len: number, fn: number;
      if (w32 !== null) {
        const j = o >>> 2;
        lo = w32[j]; hi = w32[j + 1]; len = w32[j + 2]; fn = w32[j + 3];
      } else {
        lo = rd32(tbl, o); hi = rd32(tbl, o + 4); len = rd32(tbl, o + 8); fn = rd32(tbl, o + 12);
      }
      const flags = fn & 0xffff;
      if (hi > 0x1fffff) return this.fail('address beyond 2^53');
      const addr = hi * 0x100000000 + lo;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // VIRTIO 1.2 2.7.5.3.1: no INDIRECT inside an indirect table, and not together with NEXT.
        if (inIndirect) return this.fail('nested indirect descriptor');
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return this.fail('indirect descriptor with NEXT');
        // The table is an array of 16-byte descriptors (2.7.5.3); an empty one is meaningless.
        if (len === 0 || (len & 15) !== 0) return this.fail('indirect table length not a nonzero multiple of 16');
        const entries = len >>> 4;
        if (entries > this.maxIndirect) return this.fail('indirect table too large');
        if (mem.resolveGpa(addr, len)) {
          tbl = mem.resolvedU8;
          base = mem.resolvedOff;
          w32 = (base & 3) === 0 ? mem.resolvedU32 : null;
        } else {
          // Rare: the table straddles a window or region edge. Copy it.
          const segs = mem.gpaSegments(addr, len);
          if (segs === null) return this.fail('indirect table outside guest memory');
          tbl = new Uint8Array(len);
          let p = 0;
          for (const s of segs) { tbl.set(s, p); p += s.length; }
          base = 0;
          w32 = null;
        }
        // 2.7.5.3.2: the device MUST ignore the WRITE flag of the descriptor naming the table.
        inIndirect = true;
        n = entries;
        ttl = entries;
        i = 0;
        continue;
      }
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        sawWrite = true;
        if (len !== 0) {
          wlen += len;
          if (rlen + wlen > MAX_CHAIN_BYTES) return this.fail('chain longer than 2^32 - 1 bytes');
          if (!mem.appendGpaRanges(addr, len, segs)) return this.fail('buffer outside guest memory');
        }
      } else {
        // VIRTIO 1.2 2.7.4.2: the driver MUST place device-writable descriptors after readable ones.
        if (sawWrite) return this.fail('device-readable descriptor after a device-writable one');
        if (len !== 0) {
          rlen += len;
          if (rlen + wlen > MAX_CHAIN_BYTES) return this.fail('chain longer than 2^32 - 1 bytes');
          if (!mem.appendGpaRanges(addr, len, segs)) return this.fail('buffer outside guest memory');
          nReadable = segs.length / 3;
        }
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      i = fn >>> 16;
    }
    return new WalkedChain(head, segs, nReadable, rlen, wlen);
  }

  private fail(reason: string): null {
    this.reason = reason;
    return null;
  }

  // ---- In-flight tracking (QueueRunner with an InflightRegion) ----
  // With an in-flight region, nothing may reach the used ring without prePut/postPut around it, so
  // the runner pops heads, records them, and walks them itself: an invalid chain goes back through
  // its tracked completion instead of pop()'s silent pushUsed.

  /** Next avail entry's head without walking its chain, or -1 when the ring is empty. The same
   *  avail-index rules as pop(); an out-of-range entry is logged and skipped, as there. */
  popHead(): number {
    for (;;) {
      if (this.last === this.shadowAvail) {
        const idx = Atomics.load(this.avail, 1); // acquire, as in pop()
        const pending = (idx - this.last) & 0xffff;
        if (pending === 0) return -1;
        if (pending > this.size) {
          if (!this.corrupt) {
            this.corrupt = true;
            this.log.error({ queue: this.index, availIdx: idx, lastAvail: this.last, size: this.size },
              'avail ring index moved by more than the queue size; ring ignored');
          }
          return -1;
        }
        this.corrupt = false;
        this.shadowAvail = idx;
      }
      const head = this.avail[2 + (this.last & this.mask)];
      this.last = (this.last + 1) & 0xffff;
      if (this.eventIdx) Atomics.store(this.used16, this.availEventSlot, this.last);
      if (head < this.size) return head;
      this.log.warn({ queue: this.index, head }, 'avail ring entry out of range; skipped');
    }
  }

  /** The chain starting at descriptor `head`, with pop()'s validation, leaving the avail ring and
   *  lastAvail alone (for heads from popHead() or resubmitted after a restart). null, logged, if
   *  the chain is invalid; nothing is pushed. */
  chainAt(head: number): DescChain | null {
    if (!(Number.isInteger(head) && head >= 0 && head < this.size)) {
      this.log.warn({ queue: this.index, head }, 'descriptor head out of range');
      return null;
    }
    const chain = this.walk(head);
    if (chain === null) this.log.warn({ queue: this.index, head, reason: this.reason }, 'invalid descriptor chain');
    return chain;
  }
}
