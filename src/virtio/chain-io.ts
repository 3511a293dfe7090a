// Cursors over a descriptor chain's segments (guest memory). All bounds are checked: a request
// for more bytes than remain fails without moving the cursor.
//
// A cursor works on segments as (window, offset, length) triples, the form SplitQueue's walk
// records (WalkedChain.segs), so no view object is made per descriptor; an array of views (the
// DescChain form) is taken too. A cursor can be reset() onto another chain, so one pair can
// serve request after request (FuseSession keeps one per request in flight) without allocating.

const EMPTY = new Uint8Array(0);
const NO_SEGS: Array<Uint8Array | number> = [];
/** Copies up to this many bytes go byte by byte: cheaper than making a subarray to set() from. */
const SMALL_COPY = 64;

/** Views as triples (for chains that come as views: tests, the direct transport). */
function triples(views: Uint8Array[]): Array<Uint8Array | number> {
  const out: Array<Uint8Array | number> = [];
  for (let i = 0; i < views.length; i++) {
    const v = views[i];
    out.push(v, 0, v.length);
  }
  return out;
}

/** What the two cursors share: the segment list and a position in it. */
abstract class Cursor {
  protected segs: Array<Uint8Array | number> = NO_SEGS;
  protected seg = 0;      // current segment
  protected end = 0;      // one past the last segment
  protected off = 0;      // offset inside the current segment
  protected left = 0;     // bytes from here to the end
  /** The window of the last ranges() call. */
  rangeWin: Uint8Array = EMPTY;

  constructor(segs: Uint8Array[] | undefined) {
    if (segs !== undefined) this.reset(segs);
  }

  /** Start over on another chain's segments, given as views. */
  reset(views: Uint8Array[]): void {
    const t = views.length === 0 ? NO_SEGS : triples(views);
    this.resetRanges(t, 0, views.length);
  }

  /** Start over on segments [first, end) of a triple list (WalkedChain.segs). */
  resetRanges(segs: Array<Uint8Array | number>, first: number, end: number): void {
    this.segs = segs;
    this.seg = first;
    this.end = end;
    this.off = 0;
    let n = 0;
    for (let k = first; k < end; k++) n += segs[3 * k + 2] as number;
    this.left = n;
    this.onReset();
    this.settle();
  }

  protected onReset(): void {}

  get remaining(): number { return this.left; }

  /** n bytes as views (no copy), possibly several; null if fewer remain. A whole segment view is
   *  passed on as itself. */
  views(n: number): Uint8Array[] | null {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return null;
    const out: Uint8Array[] = [];
    const segs = this.segs;
    while (n > 0) {
      const k = 3 * this.seg;
      const w = segs[k] as Uint8Array, base = segs[k + 1] as number, len = segs[k + 2] as number;
      const take = Math.min(n, len - this.off);
      const o = base + this.off;
      out.push(o === 0 && take === w.length ? w : w.subarray(o, o + take));
      n -= take;
      this.advance(take);
    }
    return out;
  }

  /**
   * The next n bytes as (offset, length) pairs in one window, written to iov (2 numbers a pair);
   * advances. Returns the number of pairs, with the window in rangeWin; -1, without moving, if
   * fewer than n bytes remain, the bytes span windows, or iov is too short (use views()).
   */
  ranges(n: number, iov: Float64Array): number {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return -1;
    const segs = this.segs;
    // Check first, so that a refusal leaves the cursor where it was.
    let k = this.seg, off = this.off, left = n, count = 0;
    const win = k < this.end ? segs[3 * k] as Uint8Array : EMPTY;
    while (left > 0) {
      if (segs[3 * k] !== win || 2 * count >= iov.length) return -1;
      const take = Math.min(left, (segs[3 * k + 2] as number) - off);
      iov[2 * count] = (segs[3 * k + 1] as number) + off;
      iov[2 * count + 1] = take;
      count++;
      left -= take;
      k++;
      off = 0;
    }
    this.rangeWin = win;
    this.skip(n);
    return count;
  }

  skip(n: number): boolean {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return false;
    while (n > 0) {
      const take = Math.min(n, (this.segs[3 * this.seg + 2] as number) - this.off);
      n -= take;
      this.advance(take);
    }
    return true;
  }

  /** Move forward by n bytes, n <= bytes left in the current segment. */
  protected advance(n: number): void {
    this.off += n;
    this.left -= n;
    this.settle();
  }

  /** Step over exhausted (and empty) segments. */
  protected settle(): void {
    while (this.seg < this.end && this.off >= (this.segs[3 * this.seg + 2] as number)) {
      this.seg++;
      this.off = 0;
    }
  }
}

/** Cursor over chain.readable. */
export class ChainReader extends Cursor {
  constructor(segs?: Uint8Array[]) {
    super(segs);
  }

  /** n bytes as one Uint8Array: a view when within one segment, else a copy. null if fewer remain. */
  bytes(n: number): Uint8Array | null {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return null;
    if (n === 0) return EMPTY;
    const k = 3 * this.seg;
    if (this.off + n <= (this.segs[k + 2] as number)) {
      const o = (this.segs[k + 1] as number) + this.off;
      const v = (this.segs[k] as Uint8Array).subarray(o, o + n);
      this.advance(n);
      return v;
    }
    const out = new Uint8Array(n);
    this.copyTo(out, 0, n);
    return out;
  }

  /** Copy the next n bytes to dst[at, at + n) (no allocation); false, without moving, if fewer
   *  remain or dst is too short. */
  copyTo(dst: Uint8Array, at: number, n: number): boolean {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left && at >= 0 && at + n <= dst.length)) return false;
    const segs = this.segs;
    while (n > 0) {
      const k = 3 * this.seg;
      const w = segs[k] as Uint8Array;
      const o = (segs[k + 1] as number) + this.off;
      const take = Math.min(n, (segs[k + 2] as number) - this.off);
      if (take <= SMALL_COPY) {
        for (let i = 0; i < take; i++) dst[at + i] = w[o + i];
      } else {
        dst.set(w.subarray(o, o + take), at);
      }
      at += take;
      n -= take;
      this.advance(take);
    }
    return true;
  }
}

/** Cursor over chain.writable. */
export class ChainWriter extends Cursor {
  private done = 0;
  // The range reserve() set aside, filled later by fillReserved().
  private resSeg = 0;
  private resOff = 0;
  private resLen = -1;

  constructor(segs?: Uint8Array[]) {
    super(segs);
  }

  protected override onReset(): void {
    this.done = 0;
    this.resLen = -1;
  }

  get written(): number { return this.done; }

  /** Copy all of src, or nothing (false) when it does not fit. */
  write(src: Uint8Array): boolean {
    const n = src.length;
    if (n > this.left) return false;
    const segs = this.segs;
    let p = 0;
    while (p < n) {
      const k = 3 * this.seg;
      const w = segs[k] as Uint8Array;
      const o = (segs[k + 1] as number) + this.off;
      const take = Math.min(n - p, (segs[k + 2] as number) - this.off);
      if (take === n) {
        w.set(src, o);
      } else if (take <= SMALL_COPY) {
        for (let i = 0; i < take; i++) w[o + i] = src[p + i];
      } else {
        w.set(src.subarray(p, p + take), o);
      }
      p += take;
      this.advance(take);
    }
    return true;
  }

  /** Set the next n bytes aside (they count as written) to be filled later by fillReserved(), e.g.
   *  a reply header whose length is known only once the data behind it is in. One reservation at a
   *  time. false, without moving, if fewer remain. */
  reserve(n: number): boolean {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.left)) return false;
    this.resSeg = this.seg;
    this.resOff = this.off;
    this.resLen = n;
    return this.skip(n);
  }

  /** Write src[0, n) into the reserved range (n = its length; src may be longer). false if nothing
   *  is reserved or src is too short. */
  fillReserved(src: Uint8Array): boolean {
    let n = this.resLen;
    if (n < 0 || src.length < n) return false;
    const segs = this.segs;
    let seg = this.resSeg, off = this.resOff, p = 0;
    while (n > 0) {
      const k = 3 * seg;
      const w = segs[k] as Uint8Array;
      const o = (segs[k + 1] as number) + off;
      const take = Math.min(n, (segs[k + 2] as number) - off);
      if (take <= SMALL_COPY) {
        for (let i = 0; i < take; i++) w[o + i] = src[p + i];
      } else {
        w.set(src.subarray(p, p + take), o);
      }
      p += take;
      n -= take;
      seg++;
      off = 0;
    }
    return true;
  }

  protected override advance(n: number): void {
    this.done += n;
    super.advance(n);
  }
}
