// The cursors over (window, offset, length) triples (SplitQueue's WalkedChain form): copyTo,
// ranges, reserve/fillReserved, and reuse through reset.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChainReader, ChainWriter } from '../../../src/virtio/chain-io';

/** One window of 64 bytes (value = index) and a second one; segments as triples. */
function setup(): { win: Uint8Array; other: Uint8Array; segs: Array<Uint8Array | number> } {
  const win = new Uint8Array(64);
  for (let i = 0; i < win.length; i++) win[i] = i;
  const other = new Uint8Array(16).fill(200);
  // Segments: win[0..4), win[8..10), win[16..22), other[0..4)
  return { win, other, segs: [win, 0, 4, win, 8, 2, win, 16, 6, other, 0, 4] };
}

test('ChainReader over triples: copyTo copies across segments without moving on failure; views and bytes', () => {
  const { win, segs } = setup();
  const r = new ChainReader();
  r.resetRanges(segs, 0, 3);
  assert.equal(r.remaining, 12);
  const dst = new Uint8Array(10).fill(9);
  assert.equal(r.copyTo(dst, 1, 13), false, 'more than remains');
  assert.equal(r.copyTo(dst, 5, 6), false, 'past dst');
  assert.equal(r.remaining, 12);
  assert.ok(r.copyTo(dst, 1, 7));
  assert.deepEqual([...dst], [9, 0, 1, 2, 3, 8, 9, 16, 9, 9]);
  assert.equal(r.remaining, 5);
  const v = r.views(5)!;
  assert.deepEqual(v.map((x) => [...x]), [[17, 18, 19, 20, 21]]);
  assert.equal(v[0]!.buffer, win.buffer, 'a view, not a copy');
  assert.equal(r.remaining, 0);
  r.resetRanges(segs, 1, 3);
  assert.deepEqual([...r.bytes(3)!], [8, 9, 16], 'bytes() across segments copies');
});

test('ranges(): (offset, length) pairs in one window; refused across windows or when iov is short', () => {
  const { win, other, segs } = setup();
  const r = new ChainReader();
  r.resetRanges(segs, 0, 4);
  assert.ok(r.skip(2));
  const iov = new Float64Array(8);
  assert.equal(r.ranges(7, iov), 3);
  assert.equal(r.rangeWin, win);
  assert.deepEqual([...iov.subarray(0, 6)], [2, 2, 8, 2, 16, 3]);
  assert.equal(r.remaining, 7);
  assert.equal(r.ranges(5, iov), -1, 'the rest spans two windows');
  assert.equal(r.remaining, 7, 'not moved');
  assert.equal(r.ranges(3, iov), 1);
  assert.deepEqual([...iov.subarray(0, 2)], [19, 3]);
  assert.equal(r.ranges(4, iov), 1);
  assert.equal(r.rangeWin, other);
  assert.equal(r.ranges(1, iov), -1, 'nothing left');
  r.resetRanges(segs, 0, 3);
  assert.equal(r.ranges(12, new Float64Array(4)), -1, 'three pairs do not fit in two');
  assert.equal(r.ranges(0, iov), 0);
});

test('ChainWriter over triples: reserve() then fillReserved() across a segment edge; written counts both', () => {
  const { win, segs } = setup();
  const w = new ChainWriter();
  w.resetRanges(segs, 0, 3);
  assert.equal(w.fillReserved(new Uint8Array(4)), false, 'nothing reserved');
  assert.ok(w.skip(2));
  assert.ok(w.reserve(3)); // win[2..4) + win[8..9)
  assert.ok(w.write(Uint8Array.of(100, 101, 102)));
  assert.equal(w.written, 8);
  assert.equal(w.fillReserved(Uint8Array.of(1)), false, 'src too short');
  assert.ok(w.fillReserved(Uint8Array.of(50, 51, 52, 53)));
  assert.deepEqual([...win.subarray(0, 12)], [0, 1, 50, 51, 4, 5, 6, 7, 52, 100, 10, 11]);
  assert.deepEqual([...win.subarray(16, 18)], [101, 102]);
  assert.equal(w.reserve(5), false, 'more than remains');
  // Reused on another chain: a fresh start.
  w.reset([new Uint8Array(3)]);
  assert.equal(w.written, 0);
  assert.equal(w.remaining, 3);
  assert.equal(w.fillReserved(new Uint8Array(4)), false, 'the old reservation is gone');
});
