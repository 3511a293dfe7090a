// Fixed-size records in a shared-memory region (a memfd), with a free list: the home of the
// inode, open-file and open-dir maps (virtiofsd's lo_maps). The region is the truth; the JS
// objects and indexes built over it are caches that a restarted worker rebuilds by scanning.
//
// Layout: a 64-byte header, then `capacity` records of `recordSize` bytes. The first 4 bytes
// of a record are its state word: 0 = free, 1 = valid. Publish last, invalidate first: a
// record's body is written with plain stores and only then made valid with Atomics.store;
// removal clears the state word before the slot joins the free list (the ordering of
// Jiachen Zhang, "[RFC PATCH 8/9] virtiofsd: Ensure crash consistency after reconnection", qemu-devel, 2020-12-16).

import * as fs from 'node:fs';
import type { NativeBinding } from '../native/binding';
import { sealedMemfd } from './memfd';

export const SLOT_MAGIC = 0x56465354; // "VFST"
export const SLOT_VERSION = 1;
/** The region's layout: a header of `bytes` bytes (u32 fields at these offsets), then the records. */
export const SLOT_HEADER = { bytes: 64, magic: 0, version: 4, record: 8, capacity: 12, kind: 16 } as const;
/** Offset of a record's state word (SLOT_FREE / SLOT_VALID; i32). */
export const SLOT_STATE = 0;
const HEADER = SLOT_HEADER.bytes;
const { magic: H_MAGIC, version: H_VERSION, record: H_RECORD, capacity: H_CAPACITY, kind: H_KIND } = SLOT_HEADER;

export const SLOT_FREE = 0;
export const SLOT_VALID = 1;

/** Where a table's bytes live: a memfd (the daemon) or plain memory (unit tests). */
export interface SlotBacking {
  /** Make the region at least `bytes` long and return a view of all of it. */
  resize(bytes: number): ArrayBuffer;
  /** Current size in bytes (0 for a new region). */
  readonly bytes: number;
  readonly fd: number; // -1 for plain memory
  close(): void;
}

export class MemfdBacking implements SlotBacking {
  readonly fd: number;
  private buf: ArrayBuffer | null = null;
  /** A new memfd, or (adopt) one made earlier, e.g. by a worker that has since died. */
  constructor(private readonly native: NativeBinding, name: string, adopt = -1) {
    const fd = adopt >= 0 ? adopt : sealedMemfd(native, name);
    if (fd < 0) throw new Error(`memfd_create(${name}) failed: errno ${-fd}`);
    this.fd = fd;
  }
  /** Current size of the region in bytes. */
  get bytes(): number {
    return fs.fstatSync(this.fd).size;
  }
  resize(bytes: number): ArrayBuffer {
    // Grow the file first, then map the new size: the old mapping stays valid until replaced.
    // Never shrink: another process may hold records past the size asked for.
    if (bytes > this.bytes) fs.ftruncateSync(this.fd, bytes);
    const m = this.native.mmap(this.fd, 0, bytes);
    if (typeof m === 'number') throw new Error(`mmap of state region failed: errno ${-m}`);
    if (this.buf) this.native.munmap(this.buf);
    this.buf = m;
    return m;
  }
  close(): void {
    if (this.buf) this.native.munmap(this.buf);
    this.buf = null;
    this.native.close(this.fd);
  }
}

export class MemoryBacking implements SlotBacking {
  readonly fd = -1;
  private buf = new ArrayBuffer(0);
  get bytes(): number { return this.buf.byteLength; }
  resize(bytes: number): ArrayBuffer {
    if (bytes <= this.buf.byteLength) return this.buf;
    const n = new ArrayBuffer(bytes);
    new Uint8Array(n).set(new Uint8Array(this.buf));
    this.buf = n;
    return n;
  }
  close(): void { this.buf = new ArrayBuffer(0); }
}

export class SlotTable {
  /** Current view of the whole region. Re-read after alloc(): growing replaces the buffer. */
  dv!: DataView;
  private state!: Int32Array;
  private capacity = 0;
  private readonly free: number[] = [];
  private used = 0;

  /**
   * A table over `backing`. An empty backing is formatted; a backing that already holds a table
   * (a restarted worker adopting its predecessor's region) is validated and its free list and
   * counts are rebuilt from the records' state words.
   */
  constructor(
    private readonly backing: SlotBacking,
    readonly recordSize: number,
    initialCapacity: number,
    readonly kind: number,
    /** Slots below this are never handed out by alloc() (e.g. 0 unused, 1 = root inode). */
    private readonly reserved = 1,
    /**
     * The most slots the region may grow to (the guest's budget bounds what is in use; this
     * bounds the memfd even if that accounting were wrong).
     */
    private readonly maxCapacity = Number.MAX_SAFE_INTEGER,
  ) {
    if (recordSize % 8 !== 0 || recordSize < 8) throw new Error('recordSize must be a multiple of 8');
    if (backing.bytes >= HEADER) {
      this.attach();
      return;
    }
    this.map(Math.min(Math.max(initialCapacity, reserved + 1), Math.max(maxCapacity, reserved + 1)));
    this.dv.setUint32(H_MAGIC, SLOT_MAGIC, true);
    this.dv.setUint32(H_VERSION, SLOT_VERSION, true);
    this.dv.setUint32(H_RECORD, this.recordSize, true);
    this.dv.setUint32(H_KIND, kind, true);
    for (let i = this.capacity - 1; i >= reserved; i--) this.free.push(i);
  }

  /** The record size in the header of the table backing already holds; undefined if it holds none. */
  static recordSizeOf(backing: SlotBacking): number | undefined {
    if (backing.bytes < HEADER) return undefined;
    const dv = new DataView(backing.resize(backing.bytes));
    return dv.getUint32(H_MAGIC, true) === SLOT_MAGIC ? dv.getUint32(H_RECORD, true) : undefined;
  }

  private attach(): void {
    const dv = new DataView(this.backing.resize(this.backing.bytes));
    const bad = (why: string): Error => new Error(`state region (kind ${this.kind}) is not usable: ${why}`);
    if (dv.getUint32(H_MAGIC, true) !== SLOT_MAGIC) throw bad('bad magic');
    if (dv.getUint32(H_VERSION, true) !== SLOT_VERSION) throw bad(`version ${dv.getUint32(H_VERSION, true)}`);
    if (dv.getUint32(H_RECORD, true) !== this.recordSize) throw bad(`record size ${dv.getUint32(H_RECORD, true)}`);
    if (dv.getUint32(H_KIND, true) !== this.kind) throw bad(`kind ${dv.getUint32(H_KIND, true)}`);
    // The capacity word is written after the region grew, so the region is at least that big.
    const capacity = dv.getUint32(H_CAPACITY, true);
    if (HEADER + capacity * this.recordSize > this.backing.bytes) throw bad(`capacity ${capacity} past the region`);
    // A formatted table has room past its reserved slots (the root is written into slot 1, and
    // grow() doubles the capacity: from 0 it never would).
    if (capacity <= this.reserved) throw bad(`capacity ${capacity}`);
    this.map(capacity);
    for (let i = capacity - 1; i >= this.reserved; i--) {
      if (Atomics.load(this.state, this.off(i) >> 2) === SLOT_VALID) this.used++;
      else this.free.push(i);
    }
    for (let i = 1; i < this.reserved; i++) if (this.isValid(i)) this.used++;
  }

  /** Slots that hold a published record, in index order. */
  *validSlots(): IterableIterator<number> {
    for (let i = 1; i < this.capacity; i++) if (this.isValid(i)) yield i;
  }

  get fd(): number { return this.backing.fd; }
  get size(): number { return this.capacity; }
  get inUse(): number { return this.used; }

  /** Byte offset of a record. */
  off(slot: number): number { return HEADER + slot * this.recordSize; }

  isValid(slot: number): boolean {
    return slot > 0 && slot < this.capacity && Atomics.load(this.state, this.off(slot) >> 2) === SLOT_VALID;
  }

  /** A free slot, zeroed, not yet valid. */
  alloc(): number {
    if (this.free.length === 0) this.grow();
    const slot = this.free.pop()!;
    new Uint8Array(this.dv.buffer, this.off(slot), this.recordSize).fill(0);
    this.used++;
    return slot;
  }

  /** Make a filled slot valid: the last store of a publish. */
  publish(slot: number): void {
    Atomics.store(this.state, this.off(slot) >> 2, SLOT_VALID);
  }

  /** Invalidate first, then recycle. */
  release(slot: number): void {
    Atomics.store(this.state, this.off(slot) >> 2, SLOT_FREE);
    this.free.push(slot);
    this.used--;
  }

  /** Claim a reserved slot (below `reserved`) directly, e.g. the root inode. */
  claimReserved(slot: number): void {
    if (slot >= this.reserved) throw new Error('not a reserved slot');
    new Uint8Array(this.dv.buffer, this.off(slot), this.recordSize).fill(0);
    this.used++;
  }

  private grow(): void {
    // Grow-then-count: the region is made larger before the new capacity is recorded.
    const old = this.capacity;
    const next = Math.min(old * 2, this.maxCapacity);
    // Callers check the guest's budget first: reaching this is a bug, answered EIO by the session.
    if (next <= old) throw new Error(`state table (kind ${this.kind}) is full at ${old} slots`);
    this.map(next);
    for (let i = this.capacity - 1; i >= old; i--) this.free.push(i);
  }

  private map(capacity: number): void {
    const buf = this.backing.resize(HEADER + capacity * this.recordSize);
    this.dv = new DataView(buf);
    this.state = new Int32Array(buf);
    this.capacity = capacity;
    this.dv.setUint32(H_CAPACITY, capacity, true);
  }

  close(): void { this.backing.close(); }
}
