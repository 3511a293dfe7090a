import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChainReader, ChainWriter } from '../../../src/virtio/chain-io';

/** Three segments of one backing buffer (as guest memory would be): [0..4), [8..10), [16..22). */
function segments(): { mem: Uint8Array; segs: Uint8Array[] } {
  const mem = new Uint8Array(32);
  for (let i = 0; i < mem.length; i++) mem[i] = i;
  return { mem, segs: [mem.subarray(0, 4), mem.subarray(8, 10), mem.subarray(16, 22)] };
}

test('ChainReader bytes() returns a view inside one segment', () => {
  const { mem, segs } = segments();
  const r = new ChainReader(segs);
  assert.equal(r.remaining, 12);
  const b = r.bytes(3);
  assert.ok(b);
  assert.deepEqual([...b], [0, 1, 2]);
  assert.equal(b.buffer, mem.buffer, 'a view, not a copy');
  assert.equal(r.remaining, 9);
});

test('ChainReader bytes() copies across segments', () => {
  const { mem, segs } = segments();
  const r = new ChainReader(segs);
  assert.ok(r.skip(2));
  const b = r.bytes(6);
  assert.ok(b);
  assert.deepEqual([...b], [2, 3, 8, 9, 16, 17]);
  assert.notEqual(b.buffer, mem.buffer, 'a copy');
  mem[2] = 99;
  assert.equal(b[0], 2);
  assert.equal(r.remaining, 4);
  assert.deepEqual([...(r.bytes(4) ?? [])], [18, 19, 20, 21]);
  assert.equal(r.remaining, 0);
  assert.equal(r.bytes(1), null);
  assert.equal(r.bytes(0)?.length, 0);
});

test('ChainReader views() does not copy and splits at segment edges', () => {
  const { mem, segs } = segments();
  const r = new ChainReader(segs);
  r.skip(3);
  const v = r.views(5);
  assert.ok(v);
  assert.deepEqual(v.map((x) => [...x]), [[3], [8, 9], [16, 17]]);
  for (const x of v) assert.equal(x.buffer, mem.buffer);
  mem[8] = 77;
  assert.equal(v[1][0], 77, 'sees later writes: it is guest memory');
  assert.equal(r.remaining, 4);
});

test('ChainReader refuses to read past the end and does not move', () => {
  const { segs } = segments();
  const r = new ChainReader(segs);
  assert.equal(r.bytes(13), null);
  assert.equal(r.views(13), null);
  assert.equal(r.skip(13), false);
  assert.equal(r.bytes(-1), null);
  assert.equal(r.bytes(1.5), null);
  assert.equal(r.remaining, 12);
});

test('ChainReader skips empty segments', () => {
  const a = new Uint8Array([1, 2]);
  const r = new ChainReader([new Uint8Array(0), a, new Uint8Array(0), new Uint8Array([3])]);
  assert.deepEqual([...(r.bytes(3) ?? [])], [1, 2, 3]);
  assert.equal(new ChainReader([]).remaining, 0);
});

test('ChainWriter write() is all or nothing', () => {
  const { mem, segs } = segments();
  const w = new ChainWriter(segs);
  assert.equal(w.remaining, 12);
  assert.equal(w.write(new Uint8Array(13).fill(0xee)), false);
  assert.equal(w.written, 0);
  assert.equal(w.remaining, 12);
  assert.ok(!mem.includes(0xee), 'nothing written on failure');
  assert.equal(w.write(new Uint8Array([0xa0, 0xa1, 0xa2, 0xa3, 0xa4])), true);
  assert.deepEqual([...mem.subarray(0, 4)], [0xa0, 0xa1, 0xa2, 0xa3]);
  assert.equal(mem[8], 0xa4);
  assert.equal(mem[4], 4, 'gap between segments untouched');
  assert.equal(w.written, 5);
  assert.equal(w.remaining, 7);
  assert.equal(w.write(new Uint8Array(8)), false);
  assert.equal(w.written, 5);
  assert.equal(w.write(new Uint8Array(7).fill(0xbb)), true);
  assert.equal(w.remaining, 0);
  assert.deepEqual([...mem.subarray(16, 22)], [0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb]);
  assert.equal(w.write(new Uint8Array(0)), true);
});

test('ChainWriter views() hands out guest memory and counts it as written', () => {
  const { mem, segs } = segments();
  const w = new ChainWriter(segs);
  w.write(new Uint8Array([1]));
  const v = w.views(6);
  assert.ok(v);
  assert.deepEqual(v.map((x) => x.length), [3, 2, 1]);
  v[1].set([42, 43]);
  assert.deepEqual([...mem.subarray(8, 10)], [42, 43]);
  assert.equal(w.written, 7);
  assert.equal(w.remaining, 5);
  assert.equal(w.views(6), null);
  assert.equal(w.written, 7);
});
