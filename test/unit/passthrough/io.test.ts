// The I/O strategy's pure parts (src/passthrough/io.ts): when buffered writes that RWF_NOWAIT
// cannot do run inline and when they go to the thread pool, on a clock the test moves; and the
// views a partial READ or WRITE goes on with. The syscalls themselves: test/native/passthrough-io.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InlineWrites, SLOW_INLINE_WRITE_MS, WRITE_POOL_MS, rangeViews, skipBytes, skipRanges } from '../../../src/passthrough/io';
import type { Logger } from '../../../src/log';

function clock(): { now: () => number; set: (t: number) => void; log: Logger; slowLines: () => number } {
  let t = 1000;
  let lines = 0;
  const log = { debug: () => { lines++; } } as unknown as Logger;
  return { now: () => t, set: (v) => { t = v; }, log, slowLines: () => lines };
}

test('inline writes stay inline while each is fast', () => {
  const c = clock();
  const w = new InlineWrites(c.log, c.now);
  for (let i = 0; i < 5; i++) {
    assert.equal(w.allowed, true);
    const t0 = w.start();
    c.set(t0 + SLOW_INLINE_WRITE_MS); // at the threshold: not slow
    assert.equal(w.ended(t0, 4096), 4096, 'the result passes through');
  }
  assert.equal(w.allowed, true);
  assert.equal(c.slowLines(), 0);
});

test('one slow inline write sends writes to the pool for WRITE_POOL_MS, then inline again', () => {
  const c = clock();
  const w = new InlineWrites(c.log, c.now);
  const t0 = w.start();
  c.set(t0 + SLOW_INLINE_WRITE_MS + 1);
  assert.equal(w.ended(t0, -5), -5, 'an error passes through too');
  const slowEnd = t0 + SLOW_INLINE_WRITE_MS + 1;
  assert.equal(w.allowed, false, 'right after the slow one: the pool');
  c.set(slowEnd + WRITE_POOL_MS - 1);
  assert.equal(w.allowed, false, 'still within the pool period');
  c.set(slowEnd + WRITE_POOL_MS);
  assert.equal(w.allowed, true, 'the period is over: inline again');
  assert.equal(c.slowLines(), 1, 'one debug line per slow write');
});

test('each slow inline write after a pool period starts a new one', () => {
  const c = clock();
  const w = new InlineWrites(c.log, c.now);
  for (let round = 0; round < 3; round++) {
    assert.equal(w.allowed, true, `round ${round}: inline`);
    const t0 = w.start();
    c.set(t0 + 3 * SLOW_INLINE_WRITE_MS);
    w.ended(t0, 1);
    assert.equal(w.allowed, false, `round ${round}: the pool`);
    c.set(c.now() + WRITE_POOL_MS);
  }
  assert.equal(c.slowLines(), 3);
});

test('skipBytes: the views after the first n bytes, sharing memory with the originals', () => {
  const a = Uint8Array.of(1, 2, 3), b = Uint8Array.of(4, 5), d = Uint8Array.of(6);
  const flat = (v: Uint8Array[]): number[] => v.flatMap((x) => [...x]);
  assert.deepEqual(flat(skipBytes([a, b, d], 0)), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(flat(skipBytes([a, b, d], 2)), [3, 4, 5, 6]);
  assert.deepEqual(skipBytes([a, b, d], 3).length, 2, 'a buffer used up is dropped');
  assert.deepEqual(flat(skipBytes([a, b, d], 4)), [5, 6]);
  assert.deepEqual(skipBytes([a, b, d], 6), []);
  const rest = skipBytes([a, b], 1);
  rest[0]![0] = 9;
  assert.equal(a[1], 9, 'a view, not a copy (the pool writes into guest memory)');
});

test('rangeViews: (offset, length) pairs of a window as views of it', () => {
  const win = Uint8Array.from({ length: 16 }, (_, i) => i);
  const iov = Float64Array.of(2, 3, 10, 4, 0, 0);
  const v = rangeViews(win, iov, 2);
  assert.deepEqual(v.map((x) => [...x]), [[2, 3, 4], [10, 11, 12, 13]]);
  v[1]![0] = 99;
  assert.equal(win[10], 99);
});

test('skipRanges: the (offset, length) pairs after the first n bytes, the first one cut', () => {
  const iov = new Float64Array([100, 4, 0, 2, 50, 3, 7, 7]); // the last pair is past count
  const at = (n: number): number[] => { const [p, c] = skipRanges(iov, 3, n); assert.equal(p.length, 2 * c); return [...p]; };
  assert.deepEqual(at(0), [100, 4, 0, 2, 50, 3]);
  assert.deepEqual(at(1), [101, 3, 0, 2, 50, 3]);
  assert.deepEqual(at(4), [0, 2, 50, 3], 'a pair used up is dropped');
  assert.deepEqual(at(7), [51, 2]);
  assert.deepEqual(at(8), [52, 1]);
  assert.deepEqual(at(9), []);
});
