// A reader of fuzz bytes (in the manner of libFuzzer's FuzzedDataProvider): each target turns
// its input into a scenario by asking this for numbers, choices and byte strings. It never
// fails: past the end it answers 0, so every byte string is a valid input, mutations of the
// corpus stay meaningful, and a shrunk counterexample is still a scenario.

/** Values that sit on edges of the checks the daemon makes (sizes, 2^32, 2^53, sign bits). */
const EDGE32 = [0, 1, 2, 3, 7, 8, 15, 16, 17, 24, 40, 63, 64, 255, 256, 4095, 4096, 4097, 65535, 65536,
  0x7fffffff, 0x80000000, 0xfffffff0, 0xfffffffe, 0xffffffff];

export class FuzzInput {
  private pos = 0;
  constructor(readonly data: Uint8Array) {}

  get left(): number { return this.data.length - this.pos; }
  get done(): boolean { return this.pos >= this.data.length; }

  u8(): number {
    return this.pos < this.data.length ? this.data[this.pos++]! : 0;
  }

  u16(): number { return this.u8() | (this.u8() << 8); }

  u32(): number { return (this.u16() + this.u16() * 0x10000) >>> 0; }

  /** An integer in [min, max] (inclusive), from as few bytes as the range needs. */
  int(min: number, max: number): number {
    const span = max - min + 1;
    if (span <= 1) return min;
    const v = span <= 0x100 ? this.u8() : span <= 0x10000 ? this.u16() : this.u32();
    return min + (v % span);
  }

  bool(): boolean { return (this.u8() & 1) === 1; }

  /** True with probability about n/256. */
  chance(n: number): boolean { return this.u8() < n; }

  pick<T>(a: readonly T[]): T { return a[this.int(0, a.length - 1)]!; }

  /** A u32 that is an edge value about half the time. */
  u32e(): number {
    const c = this.u8();
    if (c < 96) return this.pick(EDGE32);
    if (c < 160) return this.u8();
    return this.u32();
  }

  /** A u64 as [lo, hi] words: usually small, sometimes at 2^32, 2^53 or the top. */
  u64e(): [number, number] {
    switch (this.int(0, 7)) {
      case 0: return [this.pick([0xffffffff, 0]), this.pick([0x1fffff, 0x200000, 0xffffffff, 0x7fffffff, 1])];
      case 1: return [this.u32(), this.u32()];
      default: return [this.u32e(), 0];
    }
  }

  /** Up to n bytes (fewer when the input runs out). */
  bytes(n: number): Uint8Array {
    const end = Math.min(this.data.length, this.pos + Math.max(0, n));
    const b = this.data.slice(this.pos, end);
    this.pos = end;
    return b;
  }
}
