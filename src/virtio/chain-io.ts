// Cursors over a descriptor chain's segments (views into guest memory). All bounds are checked:
// a request for more bytes than remain fails without moving the cursor.

const EMPTY = new Uint8Array(0);

/** Cursor over chain.readable. */
export class ChainReader {
  private readonly segs: Uint8Array[];
  private seg = 0;      // current segment
  private off = 0;      // offset inside it
  private left: number;

  constructor(segs: Uint8Array[]) {
    this.segs = segs;
    let n = 0;
    for (let i = 0; i < segs.length; i++) n += segs[i].length;
    this.left = n;
    this.settle();
  }

  get remaining(): number { return this.left; }

  /** n bytes as one Uint8Array: a view when within one segment, else a copy. null if fewer remain. */
  bytes(n: number): Uint8Array | null {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return null;
    if (n === 0) return EMPTY;
    const s = this.segs[this.seg];
    if (this.off + n <= s.length) {
      const v = s.subarray(this.off, this.off + n);
      this.advance(n);
      return v;
    }
    const out = new Uint8Array(n);
    let p = 0;
    while (p < n) {
      const cur = this.segs[this.seg];
      const take = Math.min(n - p, cur.length - this.off);
      out.set(cur.subarray(this.off, this.off + take), p);
      p += take;
      this.advance(take);
    }
    return out;
  }

  /** n bytes as views (no copy), possibly several; null if fewer remain. */
  views(n: number): Uint8Array[] | null {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return null;
    const out: Uint8Array[] = [];
    while (n > 0) {
      const cur = this.segs[this.seg];
      const take = Math.min(n, cur.length - this.off);
      out.push(cur.subarray(this.off, this.off + take));
      n -= take;
      this.advance(take);
    }
    return out;
  }

  skip(n: number): boolean {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return false;
    while (n > 0) {
      const take = Math.min(n, this.segs[this.seg].length - this.off);
      n -= take;
      this.advance(take);
    }
    return true;
  }

  /** Move forward by n bytes, n <= bytes left in the current segment. */
  private advance(n: number): void {
    this.off += n;
    this.left -= n;
    this.settle();
  }

  /** Step over exhausted (and empty) segments. */
  private settle(): void {
    while (this.seg < this.segs.length && this.off >= this.segs[this.seg].length) {
      this.seg++;
      this.off = 0;
    }
  }
}

/** Cursor over chain.writable. */
export class ChainWriter {
  private readonly segs: Uint8Array[];
  private seg = 0;
  private off = 0;
  private left: number;
  private done = 0;

  constructor(segs: Uint8Array[]) {
    this.segs = segs;
    let n = 0;
    for (let i = 0; i < segs.length; i++) n += segs[i].length;
    this.left = n;
    this.settle();
  }

  get remaining(): number { return this.left; }
  get written(): number { return this.done; }

  /** Copy all of src, or nothing (false) when it does not fit. */
  write(src: Uint8Array): boolean {
    const n = src.length;
    if (n > this.left) return false;
    let p = 0;
    while (p < n) {
      const cur = this.segs[this.seg];
      const take = Math.min(n - p, cur.length - this.off);
      cur.set(take === n ? src : src.subarray(p, p + take), this.off);
      p += take;
      this.advance(take);
    }
    return true;
  }

  /** Views of the next n writable bytes (no copy), e.g. for preadv straight into guest memory;
   *  advances (they count as written). null if fewer remain. */
  views(n: number): Uint8Array[] | null {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return null;
    const out: Uint8Array[] = [];
    while (n > 0) {
      const cur = this.segs[this.seg];
      const take = Math.min(n, cur.length - this.off);
      out.push(cur.subarray(this.off, this.off + take));
      n -= take;
      this.advance(take);
    }
    return out;
  }

  private advance(n: number): void {
    this.off += n;
    this.left -= n;
    this.done += n;
    this.settle();
  }

  private settle(): void {
    while (this.seg < this.segs.length && this.off >= this.segs[this.seg].length) {
      this.seg++;
      this.off = 0;
    }
  }
}
