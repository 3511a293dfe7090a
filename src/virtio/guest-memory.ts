// Guest memory as the vhost-user frontend shares it (SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG).
//
// Each region is an fd; we map [0, size + mmapOffset) of it and the guest-physical address g of the
// region lives at host offset mmapOffset + (g - gpa) (vhost-user spec "Memory access"; libvhost-user
// maps the same way). Ring addresses from SET_VRING_ADDR are frontend virtual addresses (translated via
// uaddr); descriptor addresses are guest-physical.
//
// A typed array cannot exceed 4 GiB on Node 20, so regions whose mapping would exceed 2 * windowSize
// (4 GiB by default) are mapped as several windows of windowSize bytes at windowSize-aligned file
// offsets (windowSize is a power of two >= 4 KiB, hence page aligned). A view never straddles two
// windows: gpaView returns null for such a range; gpaSegments/appendGpaRanges split it.

import type { NativeBinding } from '../native/binding';

export interface MemRegionDesc { gpa: number; size: number; uaddr: number; mmapOffset: number; fd: number }

export type GuestMemoryNative = Pick<NativeBinding, 'mmap' | 'munmap'>;

export interface GuestMemoryOptions {
  /** Window size for large regions (power of two, >= 4096). Default 2 GiB. */
  windowSize?: number;
}

const EINVAL = 22;
const TWO_GIB = 2 ** 31;
const MAX_ADDR = Number.MAX_SAFE_INTEGER; // 2^53 - 1: addresses at or beyond are rejected

/** One contiguous host view: part (or all) of one region. */
interface Mapping {
  gpa: number;          // first guest-physical address covered
  uaddr: number;        // matching frontend virtual address
  len: number;          // bytes covered
  u8: Uint8Array;       // the window
  u32: Uint32Array | null; // same bytes as u32 words when the window is 4-aligned (host order)
  off: number;          // offset in u8 of gpa
  region: MemRegionDesc;
  owned: ArrayBuffer | null; // native mapping to munmap, null for injected buffers
}

export class GuestMemory {
  private readonly native: GuestMemoryNative | null;
  private readonly windowSize: number;
  private readonly list: MemRegionDesc[] = [];
  private maps: Mapping[] = [];
  private lastGpa: Mapping | null = null;
  private lastVa: Mapping | null = null;

  /** Result of the last successful resolveGpa(): the window, the same window as u32 words (or null
   *  when it is not 4-aligned), and the byte offset of the address in it. */
  resolvedU8: Uint8Array = new Uint8Array(0);
  resolvedU32: Uint32Array | null = null;
  resolvedOff = 0;

  constructor(native: GuestMemoryNative | null, o: GuestMemoryOptions = {}) {
    this.native = native;
    const w = o.windowSize ?? TWO_GIB;
    if (!Number.isInteger(w) || w < 4096 || w > TWO_GIB || (w & (w - 1)) !== 0) {
      throw new RangeError(`windowSize must be a power of two in [4096, 2^31], got ${w}`);
    }
    this.windowSize = w;
  }

  get regions(): readonly MemRegionDesc[] { return this.list; }

  /** mmap the region's fd and add it. Returns 0 or -errno. The fd is not closed (the caller owns it;
   *  it may be closed as soon as this returns, the mapping keeps the memory alive). */
  addRegion(r: MemRegionDesc): number {
    if (this.native === null) return -EINVAL;
    const native = this.native;
    return this.add(r, (start, len) => native.mmap(r.fd, start, len));
  }

  /** Add a region backed by an ArrayBuffer standing for the mapping of its fd from offset 0
   *  (buf.byteLength >= size + mmapOffset). For unit tests: no native code involved. */
  addRegionBuffer(r: Omit<MemRegionDesc, 'fd'>, buf: ArrayBuffer): number {
    if (buf.byteLength < r.size + r.mmapOffset) return -EINVAL;
    return this.add({ ...r, fd: -1 }, (start, len) => new Uint8Array(buf, start, len), true);
  }

  /** Remove by gpa/size/uaddr (REM_MEM_REG); unmaps. */
  removeRegion(gpa: number, size: number, uaddr: number): boolean {
    const i = this.list.findIndex((r) => r.gpa === gpa && r.size === size && r.uaddr === uaddr);
    if (i < 0) return false;
    const reg = this.list[i];
    this.list.splice(i, 1);
    const keep: Mapping[] = [];
    for (const m of this.maps) {
      if (m.region === reg) this.unmap(m); else keep.push(m);
    }
    this.maps = keep;
    this.lastGpa = this.lastVa = null;
    return true;
  }

  /** Unmap everything (SET_MEM_TABLE replaces the whole table). */
  clear(): void {
    for (const m of this.maps) this.unmap(m);
    this.maps = [];
    this.list.length = 0;
    this.lastGpa = this.lastVa = null;
  }

  /** View of guest-physical [gpa, gpa+len), or null unless wholly inside one mapped region/window. */
  gpaView(gpa: number, len: number): Uint8Array | null {
    const m = this.findGpa(gpa, len);
    if (m === null) return null;
    const o = m.off + (gpa - m.gpa);
    return m.u8.subarray(o, o + len);
  }

  /** Same for a frontend (QEMU) virtual address, as SET_VRING_ADDR carries. */
  vaView(uaddr: number, len: number): Uint8Array | null {
    const m = this.findVa(uaddr, len);
    if (m === null) return null;
    const o = m.off + (uaddr - m.uaddr);
    return m.u8.subarray(o, o + len);
  }

  /** Locate [gpa, gpa+len) inside one window without allocating: on true, the bytes are
   *  resolvedU8[resolvedOff .. resolvedOff+len). */
  resolveGpa(gpa: number, len: number): boolean {
    const m = this.findGpa(gpa, len);
    if (m === null) return false;
    this.resolvedU8 = m.u8;
    this.resolvedU32 = m.u32;
    this.resolvedOff = m.off + (gpa - m.gpa);
    return true;
  }

  /** Views covering [gpa, gpa+len), split at window and region edges; null if any byte is unmapped. */
  gpaSegments(gpa: number, len: number): Uint8Array[] | null {
    const r: Array<Uint8Array | number> = [];
    if (!this.appendGpaRanges(gpa, len, r)) return null;
    const out: Uint8Array[] = [];
    for (let i = 0; i < r.length; i += 3) {
      const off = r[i + 1] as number;
      out.push((r[i] as Uint8Array).subarray(off, off + (r[i + 2] as number)));
    }
    return out;
  }

  /** The pieces of [gpa, gpa+len), split at window and region edges, each appended to out as
   *  three entries: (window, byte offset in it, length); no view is made (the chain walker's
   *  allocation-free form). On false (a byte unmapped), out may have received some already.
   *  len 0 appends nothing and succeeds. */
  appendGpaRanges(gpa: number, len: number, out: Array<Uint8Array | number>): boolean {
    if (!(gpa >= 0 && len >= 0 && gpa + len <= MAX_ADDR)) return false;
    while (len > 0) {
      const m = this.findGpa(gpa, 1);
      if (m === null) return false;
      const avail = m.gpa + m.len - gpa;
      const take = len < avail ? len : avail;
      out.push(m.u8, m.off + (gpa - m.gpa), take);
      gpa += take;
      len -= take;
    }
    return true;
  }

  // ---- internals ----

  private findGpa(gpa: number, len: number): Mapping | null {
    const end = gpa + len;
    let m = this.lastGpa;
    if (m !== null && gpa >= m.gpa && end <= m.gpa + m.len) return m;
    if (!(gpa >= 0 && len >= 0 && end <= MAX_ADDR)) return null;
    const maps = this.maps;
    for (let i = 0; i < maps.length; i++) {
      m = maps[i];
      if (gpa >= m.gpa && end <= m.gpa + m.len) { this.lastGpa = m; return m; }
    }
    return null;
  }

  private findVa(va: number, len: number): Mapping | null {
    const end = va + len;
    let m = this.lastVa;
    if (m !== null && va >= m.uaddr && end <= m.uaddr + m.len) return m;
    if (!(va >= 0 && len >= 0 && end <= MAX_ADDR)) return null;
    const maps = this.maps;
    for (let i = 0; i < maps.length; i++) {
      m = maps[i];
      if (va >= m.uaddr && end <= m.uaddr + m.len) { this.lastVa = m; return m; }
    }
    return null;
  }

  private unmap(m: Mapping): void {
    if (m.owned !== null && this.native !== null) this.native.munmap(m.owned);
  }

  /** Validate r and map it with mapFn(fileStart, length) window by window. */
  private add(r: MemRegionDesc, mapFn: (start: number, len: number) => ArrayBuffer | Uint8Array | number,
    injected = false): number {
    const ok = (v: number): boolean => Number.isSafeInteger(v) && v >= 0;
    if (!ok(r.gpa) || !ok(r.size) || !ok(r.uaddr) || !ok(r.mmapOffset) || r.size === 0 ||
        r.gpa + r.size > MAX_ADDR || r.uaddr + r.size > MAX_ADDR || r.size + r.mmapOffset > MAX_ADDR) {
      return -EINVAL;
    }
    for (const o of this.list) {
      if (r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size) return -EINVAL; // overlapping GPA ranges
    }
    const region: MemRegionDesc = { gpa: r.gpa, size: r.size, uaddr: r.uaddr, mmapOffset: r.mmapOffset, fd: r.fd };
    const end = r.mmapOffset + r.size; // file offset just past the region
    const W = this.windowSize;
    // One mapping of [0, end) when it fits in a typed array, else windowSize windows.
    const windows: Array<[number, number]> = [];
    if (end <= 2 * W) {
      windows.push([0, end]);
    } else {
      for (let s = Math.floor(r.mmapOffset / W) * W; s < end; s += W) windows.push([s, Math.min(s + W, end)]);
    }
    const made: Mapping[] = [];
    for (const [ws, we] of windows) {
      const res = mapFn(ws, we - ws);
      if (typeof res === 'number') {
        for (const m of made) this.unmap(m);
        return res < 0 ? res : -EINVAL;
      }
      const u8 = res instanceof Uint8Array ? res : new Uint8Array(res);
      const first = Math.max(ws, r.mmapOffset); // first file offset of the region in this window
      made.push({
        gpa: r.gpa + (first - r.mmapOffset),
        uaddr: r.uaddr + (first - r.mmapOffset),
        len: we - first,
        u8,
        u32: (u8.byteOffset & 3) === 0 ? new Uint32Array(u8.buffer, u8.byteOffset, u8.length >>> 2) : null,
        off: first - ws,
        region,
        owned: injected || res instanceof Uint8Array ? null : res,
      });
    }
    this.list.push(region);
    for (const m of made) this.maps.push(m);
    this.lastGpa = this.lastVa = null;
    return 0;
  }
}
