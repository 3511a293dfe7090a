// The driver (guest) side of a split virtqueue, for tests: plays the role of Linux's virtio_ring.c
// closely enough to drive this daemon or the C virtiofsd through a test frontend.
//
// GuestRam is the guest's RAM: a memfd (shareable with a backend over vhost-user) mapped here, or a
// plain ArrayBuffer for unit tests. Guest-physical address = offset in the RAM.

import { ftruncateSync } from 'node:fs';
import type { NativeBinding } from '../../src/native/binding';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** First allocatable address: GPA 0 stays unused so that a zero address is always a bug. */
const RAM_RESERVED = 4096;

export interface GuestRamOptions {
  /** Use a plain ArrayBuffer (fd = -1) instead of a memfd; native may then be null. */
  plain?: boolean;
}

export class GuestRam {
  readonly fd: number;
  readonly size: number;
  readonly buf: Uint8Array;
  private readonly native: NativeBinding | null;
  private readonly mapped: ArrayBuffer | null;
  private free: Array<{ start: number; len: number }>; // sorted, coalesced
  private readonly live = new Map<number, { start: number; len: number }>(); // gpa → block
  private closed = false;

  constructor(native: NativeBinding | null, size: number, o: GuestRamOptions = {}) {
    if (!Number.isSafeInteger(size) || size <= RAM_RESERVED) throw new RangeError(`bad RAM size ${size}`);
    this.size = size;
    this.native = native;
    if (o.plain || native === null) {
      this.fd = -1;
      this.mapped = null;
      this.buf = new Uint8Array(new ArrayBuffer(size));
    } else {
      const fd = native.memfdCreate('virtq-guest-ram', 0);
      if (fd < 0) throw new Error(`memfd_create: errno ${-fd}`);
      try {
        ftruncateSync(fd, size);
        const ab = native.mmap(fd, 0, size);
        if (typeof ab === 'number') throw new Error(`mmap: errno ${-ab}`);
        this.mapped = ab;
        this.buf = new Uint8Array(ab);
      } catch (e) {
        native.close(fd);
        throw e;
      }
      this.fd = fd;
    }
    this.free = [{ start: RAM_RESERVED, len: size - RAM_RESERVED }];
  }

  /** Allocate len bytes (first fit) aligned to align; returns the gpa. Throws when out of RAM. */
  alloc(len: number, align = 16): number {
    if (!(Number.isSafeInteger(len) && len >= 0)) throw new RangeError(`bad length ${len}`);
    if (align < 1 || (align & (align - 1)) !== 0) throw new RangeError(`bad alignment ${align}`);
    const want = Math.max(len, 1);
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i];
      const gpa = Math.ceil(f.start / align) * align;
      if (gpa + want > f.start + f.len) continue;
      // Carve [f.start, gpa + want) out of the block; the alignment gap goes back to the free list.
      const pieces: Array<{ start: number; len: number }> = [];
      if (gpa > f.start) pieces.push({ start: f.start, len: gpa - f.start });
      const end = f.start + f.len;
      if (gpa + want < end) pieces.push({ start: gpa + want, len: end - gpa - want });
      this.free.splice(i, 1, ...pieces);
      this.live.set(gpa, { start: gpa, len: want });
      return gpa;
    }
    throw new Error(`guest RAM exhausted (want ${len})`);
  }

  /** Return an allocation made by alloc(). */
  release(gpa: number): void {
    const b = this.live.get(gpa);
    if (b === undefined) throw new Error(`release of unallocated gpa ${gpa}`);
    this.live.delete(gpa);
    const list = this.free;
    let i = 0;
    while (i < list.length && list[i].start < b.start) i++;
    list.splice(i, 0, { start: b.start, len: b.len });
    // Coalesce with the neighbours.
    if (i + 1 < list.length && list[i].start + list[i].len === list[i + 1].start) {
      list[i].len += list[i + 1].len;
      list.splice(i + 1, 1);
    }
    if (i > 0 && list[i - 1].start + list[i - 1].len === list[i].start) {
      list[i - 1].len += list[i].len;
      list.splice(i, 1);
    }
  }

  view(gpa: number, len: number): Uint8Array {
    if (!(gpa >= 0 && len >= 0 && gpa + len <= this.size)) throw new RangeError(`gpa range ${gpa}+${len} outside RAM`);
    return this.buf.subarray(gpa, gpa + len);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.native !== null && this.mapped !== null) {
      this.native.munmap(this.mapped);
      this.native.close(this.fd);
    }
  }
}

export interface VirtqDriverOptions {
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /** Like Linux with VIRTIO_RING_F_INDIRECT_DESC: an indirect table for every chain of more than one
   *  buffer, unless add() says otherwise. */
  indirect?: boolean;
}

interface Posted {
  descs: number[];                       // ring descriptors used (1 for an indirect chain)
  bufs: number[];                        // RAM allocations (buffers, then the table if any)
  inBufs: Array<{ gpa: number; len: number }>;
}

export class VirtqDriver {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly size: number;
  readonly eventIdx: boolean;
  private readonly ram: GuestRam;
  private readonly dv: DataView;
  private readonly avail16: Uint16Array;   // [0] flags, [1] idx, [2 + i] ring, [2 + size] used_event
  private readonly used16: Uint16Array;    // [0] flags, [1] idx, ..., [2 + 4 * size] avail_event
  private readonly defaultIndirect: boolean;
  private readonly nextFree: Int32Array;   // driver-private free list (Linux keeps it out of reach of the device too)
  private freeHead = 0;
  private numFree: number;
  private availIdx = 0;                    // driver's shadow of avail.idx
  private kickedAvail = 0;                 // avail.idx at the last kick decision
  private lastUsed = 0;
  private readonly posted: Array<Posted | undefined>;

  constructor(ram: GuestRam, size: number, o: VirtqDriverOptions = {}) {
    if (!Number.isInteger(size) || size < 1 || size > 32768 || (size & (size - 1)) !== 0) {
      throw new RangeError(`queue size must be a power of two <= 32768, got ${size}`);
    }
    this.ram = ram;
    this.size = size;
    this.eventIdx = o.eventIdx ?? false;
    this.defaultIndirect = o.indirect ?? false;
    // VIRTIO 1.2 2.7: alignment 16 / 2 / 4; the event fields are always allocated, as Linux does.
    this.descGpa = ram.alloc(16 * size, 16);
    this.availGpa = ram.alloc(6 + 2 * size, 2);
    this.usedGpa = ram.alloc(6 + 8 * size, 4);
    ram.view(this.descGpa, 16 * size).fill(0);
    ram.view(this.availGpa, 6 + 2 * size).fill(0);
    ram.view(this.usedGpa, 6 + 8 * size).fill(0);
    const b = ram.buf;
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.avail16 = new Uint16Array(b.buffer, b.byteOffset + this.availGpa, 3 + size);
    this.used16 = new Uint16Array(b.buffer, b.byteOffset + this.usedGpa, 3 + 4 * size);
    this.nextFree = new Int32Array(size);
    for (let i = 0; i < size; i++) this.nextFree[i] = i + 1 < size ? i + 1 : -1;
    this.numFree = size;
    this.posted = new Array(size);
  }

  /** Free descriptors in the ring. */
  get free(): number { return this.numFree; }

  /** Post one chain: device-readable buffers, then device-writable buffers of the given sizes.
   *  indirect: put the chain in an indirect table. Returns the head. */
  add(out: Uint8Array[], inLens: number[], o: { indirect?: boolean } = {}): number {
    const total = out.length + inLens.length;
    if (total === 0) throw new Error('empty chain');
    const indirect = o.indirect ?? (this.defaultIndirect && total > 1);
    const need = indirect ? 1 : total;
    if (need > this.numFree) throw new Error(`virtqueue full (${this.numFree} free, ${need} needed)`);
    const ram = this.ram;
    const bufs: number[] = [];
    const inBufs: Array<{ gpa: number; len: number }> = [];
    const sg: Array<{ gpa: number; len: number; write: boolean }> = [];
    for (const src of out) {
      const gpa = ram.alloc(src.length, 8);
      ram.view(gpa, src.length).set(src);
      bufs.push(gpa);
      sg.push({ gpa, len: src.length, write: false });
    }
    for (const len of inLens) {
      const gpa = ram.alloc(len, 8);
      ram.view(gpa, len).fill(0);
      bufs.push(gpa);
      inBufs.push({ gpa, len });
      sg.push({ gpa, len, write: true });
    }
    let head: number;
    const descs: number[] = [];
    if (indirect) {
      const table = ram.alloc(16 * total, 16);
      bufs.push(table);
      for (let i = 0; i < total; i++) {
        const s = sg[i];
        const flags = (s.write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < total ? VIRTQ_DESC_F_NEXT : 0);
        this.putDesc(table + 16 * i, s.gpa, s.len, flags, i + 1 < total ? i + 1 : 0);
      }
      head = this.takeDesc();
      descs.push(head);
      this.writeDesc(head, table, 16 * total, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      // Same shape as Linux virtqueue_add_split: follow the free list, link with NEXT.
      for (let i = 0; i < total; i++) descs.push(this.takeDesc());
      head = descs[0];
      for (let i = 0; i < total; i++) {
        const s = sg[i];
        const last = i + 1 === total;
        this.writeDesc(descs[i], s.gpa, s.len, (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          last ? 0 : descs[i + 1]);
      }
    }
    this.posted[head] = { descs, bufs, inBufs };
    this.publishAvail(head);
    return head;
  }

  /** Used entries since last call, with copies of the chain's writable buffers (whole buffers;
   *  len says how much the device wrote). Frees the chain. With EVENT_IDX, asks for an interrupt at
   *  the next used entry (used_event = last seen used idx), as Linux's virtqueue_enable_cb does. */
  takeUsed(): Array<{ head: number; len: number; in: Uint8Array[] }> {
    const res: Array<{ head: number; len: number; in: Uint8Array[] }> = [];
    const usedIdx = Atomics.load(this.used16, 1); // acquire: entries were written before idx
    while (this.lastUsed !== usedIdx) {
      const e = this.usedGpa + 4 + 8 * (this.lastUsed & (this.size - 1));
      const head = this.dv.getUint32(e, true);
      const len = this.dv.getUint32(e + 4, true);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      const p = head < this.size ? this.posted[head] : undefined;
      const ins: Uint8Array[] = [];
      if (p !== undefined) {
        for (const b of p.inBufs) ins.push(this.ram.view(b.gpa, b.len).slice());
        this.posted[head] = undefined;
        for (const gpa of p.bufs) this.ram.release(gpa);
        for (let i = p.descs.length - 1; i >= 0; i--) this.giveDesc(p.descs[i]);
      }
      res.push({ head, len, in: ins });
    }
    if (this.eventIdx) Atomics.store(this.avail16, 2 + this.size, this.lastUsed);
    return res;
  }

  /** Whether the device wants a kick for what was published since the last call
   *  (Linux virtqueue_kick_prepare: EVENT_IDX avail_event, else used.flags NO_NOTIFY). */
  needsKick(): boolean {
    const newIdx = this.availIdx;
    const old = this.kickedAvail;
    this.kickedAvail = newIdx;
    if (this.eventIdx) {
      const ev = Atomics.load(this.used16, 2 + 4 * this.size);
      return ((newIdx - ev - 1) & 0xffff) < ((newIdx - old) & 0xffff);
    }
    return (Atomics.load(this.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  // ---- raw access for hostile tests ----

  /** Write descriptor i of the ring. */
  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    if (!(i >= 0 && i < this.size)) throw new RangeError(`descriptor ${i} out of range`);
    this.putDesc(this.descGpa + 16 * i, addr, len, flags, next);
  }

  /** Write a descriptor at any gpa (e.g. inside a hand-made indirect table). */
  putDesc(gpa: number, addr: number, len: number, flags: number, next: number): void {
    const dv = this.dv;
    dv.setUint32(gpa, addr % 0x100000000, true);
    dv.setUint32(gpa + 4, Math.floor(addr / 0x100000000), true);
    dv.setUint32(gpa + 8, len, true);
    dv.setUint16(gpa + 12, flags, true);
    dv.setUint16(gpa + 14, next, true);
  }

  /** Take n descriptors off the free list for hand-built chains (they are never given back). */
  reserveDesc(n: number): number[] {
    if (n > this.numFree) throw new Error('virtqueue full');
    const r: number[] = [];
    for (let i = 0; i < n; i++) r.push(this.takeDesc());
    return r;
  }

  /** Put head in the next avail slot, then publish avail.idx (release). */
  publishAvail(head: number): void {
    this.avail16[2 + (this.availIdx & (this.size - 1))] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    Atomics.store(this.avail16, 1, this.availIdx);
  }

  /** Overwrite avail.idx (to fake a corrupt driver). */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    Atomics.store(this.avail16, 1, this.availIdx);
  }

  setAvailFlags(flags: number): void { Atomics.store(this.avail16, 0, flags); }
  setUsedEvent(idx: number): void { Atomics.store(this.avail16, 2 + this.size, idx & 0xffff); }
  get availEvent(): number { return Atomics.load(this.used16, 2 + 4 * this.size); }
  get usedIdx(): number { return Atomics.load(this.used16, 1); }
  get availIndex(): number { return this.availIdx; }

  private takeDesc(): number {
    const d = this.freeHead;
    if (d < 0 || this.numFree === 0) throw new Error('virtqueue full');
    this.freeHead = this.nextFree[d];
    this.numFree--;
    return d;
  }

  private giveDesc(d: number): void {
    this.nextFree[d] = this.freeHead;
    this.freeHead = d;
    this.numFree++;
  }
}
