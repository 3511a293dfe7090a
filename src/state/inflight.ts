// In-flight request tracking for one split virtqueue, in libvhost-user's shared-memory layout
// (VuVirtqInflight / VuDescStateSplit; vhost-user.rst "Inflight I/O tracking"). QEMU's
// vhost-user-fs never asks for such a region, so ours lives in a memfd that the long-lived keeper
// holds; a worker killed at any instruction leaves it behind, and its successor calls recover() to
// learn which requests the guest is still waiting for.
//
// Per queue (host byte order, like libvhost-user; the host is little-endian, see SplitQueue):
//   +0  u64 features        0
//   +8  u16 version         1 = formatted (0 = never formatted)
//   +10 u16 desc_num        queue size
//   +12 u16 last_batch_head head whose used entry is being published (pre_put)
//   +14 u16 used_idx        our copy of used.idx, updated after each publication (post_put)
//   +16 desc[desc_num], 16 bytes each: u8 inflight; u8 padding; u16 started[2]; u16 next; u64 counter
//       (started: when the request was popped, wall-clock ms mod 2^32 as two u16 halves, low
//       first; libvhost-user leaves these bytes as padding. The keeper's watchdog uses it to tell
//       a request that wedged a worker from the others, see startedAt().)
// Queue regions are 64-byte aligned and sized by sizeFor(); queue i of a device starts at
// i * sizeFor(queueSize), as libvhost-user lays out the fd it hands to QEMU.
//
// Protocol, one request on head h (every store is an Atomics.store: seq-cst, so neither V8 nor the
// CPU moves a later store before an earlier one, and another process sees them in program order):
//   pop:      markInflight(h)          counter, then inflight = 1
//   complete: prePut(h)                last_batch_head = h
//             SplitQueue.pushUsed      used element, then used.idx  <- the guest sees it here
//             postPut(h, used.idx)     inflight = 0, then used_idx
// A crash between pushUsed and the end of postPut leaves used_idx != used.idx; recover() then knows
// that last_batch_head was published and clears it. Every other inflight head is re-run.

export const INFLIGHT_VERSION = 1;
/** Alignment of each queue's region (libvhost-user INFLIGHT_ALIGNMENT). */
export const INFLIGHT_ALIGN = 64;

/** The layout in bytes: the header, then one descriptor state per head (see the comment above). */
export const INFLIGHT_LAYOUT = { header: 16, desc: 16, flag: 0, started: 2, next: 6, counter: 8 } as const;
const HEADER_BYTES = INFLIGHT_LAYOUT.header;
const DESC_BYTES = INFLIGHT_LAYOUT.desc;
// Header fields as u16 indices (features is u32 indices 0 and 1).
const W_VERSION = 4;
const W_DESC_NUM = 5;
const W_LAST_BATCH_HEAD = 6;
const W_USED_IDX = 7;

/** Byte offset of desc[h].inflight. */
const flagAt = (h: number): number => HEADER_BYTES + DESC_BYTES * h + INFLIGHT_LAYOUT.flag;
/** u32 index of the low half of desc[h].counter. */
const counterAt = (h: number): number => (HEADER_BYTES + DESC_BYTES * h + INFLIGHT_LAYOUT.counter) >> 2;
/** u16 index of the low half of desc[h].started. */
const startedAt = (h: number): number => (HEADER_BYTES + DESC_BYTES * h + INFLIGHT_LAYOUT.started) >> 1;

/** Wall-clock ms mod 2^32: comparable between processes (a worker and its successor). */
export function wallMs32(): number {
  return (performance.timeOrigin + performance.now()) >>> 0;
}

/** Whether wall-clock stamp a (mod 2^32) is before b: modular, for spans under 24 days. */
export function stampBefore(a: number, b: number): boolean {
  const d = (b - a) >>> 0;
  return d !== 0 && d < 0x80000000;
}

export interface InflightRecovery {
  /** Heads still in flight, oldest first (the order they were popped in). */
  resubmit: number[];
  /** Next avail index to pop: every entry before it is either used or in `resubmit`. */
  lastAvail: number;
  /** The head whose torn completion was repaired (published, post_put missing), or -1. */
  repaired: number;
  /** (guest used.idx - region used_idx) mod 2^16 before repair. 0 or 1 after a crash of ours;
   *  more means the region was out of step (formatted late, or a push bypassed it). */
  usedGap: number;
}

export class InflightRegion {
  /** Bytes one queue of `queueSize` descriptors needs, rounded up to 64. Equal to libvhost-user's
   *  ALIGN_UP(16 * size + 2, 64) for every power-of-two size. */
  static sizeFor(queueSize: number): number {
    if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768) {
      throw new RangeError(`invalid queue size ${queueSize}`);
    }
    const raw = HEADER_BYTES + DESC_BYTES * queueSize;
    return Math.ceil(raw / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
  }

  readonly byteLength: number;
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  // The last counter handed out, as two u32 halves (exact for the whole u64 range).
  private cLo = 0;
  private cHi = 0;

  /** A view of one queue's region at byteOffset (8-aligned; 64 in a multi-queue layout). Nothing is
   *  read or written until format(), validate() or recover(). */
  constructor(buf: ArrayBuffer, byteOffset = 0, byteLength = buf.byteLength - byteOffset) {
    if ((byteOffset & 7) !== 0) throw new RangeError(`inflight region offset ${byteOffset} not 8-aligned`);
    const len = byteLength & ~7;
    if (byteOffset < 0 || len < HEADER_BYTES || byteOffset + len > buf.byteLength) {
      throw new RangeError(`inflight region ${byteOffset}+${byteLength} does not fit a ${buf.byteLength}-byte buffer`);
    }
    this.byteLength = len;
    this.u8 = new Uint8Array(buf, byteOffset, len);
    this.u16 = new Uint16Array(buf, byteOffset, len >> 1);
    this.u32 = new Uint32Array(buf, byteOffset, len >> 2);
  }

  get version(): number { return Atomics.load(this.u16, W_VERSION); }
  get descNum(): number { return Atomics.load(this.u16, W_DESC_NUM); }
  get usedIdx(): number { return Atomics.load(this.u16, W_USED_IDX); }
  get lastBatchHead(): number { return Atomics.load(this.u16, W_LAST_BATCH_HEAD); }
  isInflight(head: number): boolean { return Atomics.load(this.u8, flagAt(head)) === 1; }
  /** desc[head].inflight as stored (0 or 1 in a sound region). */
  flagOf(head: number): number { return Atomics.load(this.u8, flagAt(head)); }
  /** When head's request was popped (wallMs32() then). */
  startedAt(head: number): number {
    const w = startedAt(head);
    return (Atomics.load(this.u16, w + 1) * 0x10000 + Atomics.load(this.u16, w)) >>> 0;
  }

  /** desc[head].counter (exact below 2^53). */
  counterOf(head: number): number {
    const w = counterAt(head);
    return Atomics.load(this.u32, w + 1) * 0x100000000 + Atomics.load(this.u32, w);
  }

  /** Start afresh: nothing in flight, used_idx = usedIdx (the ring's used.idx when the region is
   *  made for a ring that already ran; 0 for a new ring). */
  format(queueSize: number, usedIdx = 0): void {
    const need = InflightRegion.sizeFor(queueSize);
    if (need > this.byteLength) throw new RangeError(`inflight region of ${this.byteLength} bytes cannot hold ${queueSize} descriptors (${need})`);
    if ((queueSize & (queueSize - 1)) !== 0) throw new RangeError(`invalid queue size ${queueSize}`);
    // ORDER: unpublish (version 0) first, publish (version 1) last: a crash midway leaves a region
    // that validate() rejects, never a half-cleared one that looks formatted.
    Atomics.store(this.u16, W_VERSION, 0);
    for (let i = 2; i < need >> 2; i++) Atomics.store(this.u32, i, 0);
    Atomics.store(this.u32, 0, 0);
    Atomics.store(this.u32, 1, 0);
    Atomics.store(this.u16, W_DESC_NUM, queueSize);
    Atomics.store(this.u16, W_USED_IDX, usedIdx & 0xffff);
    Atomics.store(this.u16, W_VERSION, INFLIGHT_VERSION);
    this.cLo = 0;
    this.cHi = 0;
  }

  /** Why this region cannot be used for a queue of queueSize (any size when omitted), or null. */
  validate(queueSize?: number): string | null {
    const version = this.version;
    if (version !== INFLIGHT_VERSION) {
      return version === 0 ? 'inflight region not formatted' : `inflight region version ${version}, expected ${INFLIGHT_VERSION}`;
    }
    const n = this.descNum;
    if (n === 0 || (n & (n - 1)) !== 0) return `inflight region desc_num ${n} is not a queue size`;
    if (queueSize !== undefined && n !== queueSize) return `inflight region desc_num ${n}, queue size ${queueSize}`;
    if (this.byteLength < InflightRegion.sizeFor(n)) {
      return `inflight region of ${this.byteLength} bytes too small for ${n} descriptors`;
    }
    return null;
  }

  /** The chain at head was popped and is about to run (libvhost-user vu_queue_inflight_get). */
  markInflight(head: number): void {
    let lo = this.cLo + 1;
    let hi = this.cHi;
    if (lo > 0xffffffff) { lo = 0; hi = (hi + 1) >>> 0; }
    this.cLo = lo;
    this.cHi = hi;
    const w = counterAt(head);
    // ORDER: the counter and the stamp before the flag. A reader that sees inflight = 1 (an
    // Atomics.load) sees this request's counter and stamp; a crash before the flag store leaves
    // the head not in flight, whatever they hold. Plain stores suffice before the flag's
    // sequentially consistent one: it orders every earlier write before it for such a reader
    // (ECMA-262 "Memory Model": a SeqCst write synchronizes with the SeqCst read that sees it),
    // and it is one fenced store per request instead of five.
    this.u32[w] = lo;
    this.u32[w + 1] = hi;
    const now = wallMs32();
    const s = startedAt(head);
    this.u16[s] = now & 0xffff;
    this.u16[s + 1] = now >>> 16;
    Atomics.store(this.u8, flagAt(head), 1);
  }

  /** The used entry for head is about to be published (vu_queue_inflight_pre_put). */
  prePut(head: number): void {
    // ORDER: before used.idx moves, so a crash after the publication names the published head.
    Atomics.store(this.u16, W_LAST_BATCH_HEAD, head);
  }

  /** head's used entry is published and used.idx is now newUsedIdx (vu_queue_inflight_post_put). */
  postPut(head: number, newUsedIdx: number): void {
    // ORDER: the flag, then used_idx. Until used_idx catches up, recover() treats last_batch_head
    // as published and clears its flag itself, so a crash between the two stores is harmless.
    Atomics.store(this.u8, flagAt(head), 0);
    Atomics.store(this.u16, W_USED_IDX, newUsedIdx & 0xffff);
  }

  /** After a crash (vu_check_queue_inflights): repair a torn completion, then list the heads still
   *  in flight in the order they were popped. guestUsedIdx is used.idx read from the ring.
   *  Idempotent: a crash during recovery, or before any resubmitted head completes, gives the same
   *  answer next time. Throws when the region is unusable (validate(), or last_batch_head out of
   *  range when it would be needed). */
  recover(guestUsedIdx: number): InflightRecovery {
    const bad = this.validate();
    if (bad !== null) throw new Error(bad);
    const n = this.descNum;
    const guestUsed = guestUsedIdx & 0xffff;
    const usedGap = (guestUsed - this.usedIdx) & 0xffff;
    let repaired = -1;
    if (usedGap !== 0) {
      // The worker died after publishing last_batch_head's used entry and before post_put finished:
      // the guest has that completion, so the head must not be re-run.
      const h = this.lastBatchHead;
      if (h >= n) throw new Error(`inflight region last_batch_head ${h} out of range (desc_num ${n})`);
      // ORDER: clear the flag before adopting used_idx (same order as postPut).
      Atomics.store(this.u8, flagAt(h), 0);
      Atomics.store(this.u16, W_USED_IDX, guestUsed);
      repaired = h;
    }
    const heads: number[] = [];
    const his: number[] = [];
    const los: number[] = [];
    for (let h = 0; h < n; h++) {
      if (Atomics.load(this.u8, flagAt(h)) !== 1) continue;
      heads.push(h);
      los.push(Atomics.load(this.u32, counterAt(h)));
      his.push(Atomics.load(this.u32, counterAt(h) + 1));
    }
    const order = heads.map((_, i) => i);
    // Oldest first. Counters are u64 and never wrap in practice (libvhost-user's comparator only
    // tolerates a wrap within 2 * 1024 requests); compare them exactly, high half first.
    order.sort((a, b) => (his[a] - his[b]) || (los[a] - los[b]));
    const resubmit = order.map((i) => heads[i]);
    if (order.length > 0) {
      // Continue above the newest in-flight counter, so later pops sort after every resubmitted one.
      const last = order[order.length - 1];
      if (his[last] > this.cHi || (his[last] === this.cHi && los[last] > this.cLo)) {
        this.cHi = his[last];
        this.cLo = los[last];
      }
    }
    // Each avail entry before lastAvail was popped and is now either in the used ring (used.idx
    // counts it) or in flight (counted here). A head the guest re-posted after seeing it completed
    // is a later avail entry, at or after lastAvail, so it is popped again, not resubmitted.
    return { resubmit, lastAvail: (guestUsed + resubmit.length) & 0xffff, repaired, usedGap };
  }
}
