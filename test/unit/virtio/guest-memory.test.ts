import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { GuestMemory, type GuestMemoryNative } from '../../../src/virtio/guest-memory';

const W = 4096;

function pattern(n: number): ArrayBuffer {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 8)) & 0xff;
  return b.buffer;
}

test('gpaView and vaView translate through mmapOffset', () => {
  const ab = pattern(3 * W);
  const mem = new GuestMemory(null);
  assert.equal(mem.addRegionBuffer({ gpa: 0x10000, size: 2 * W, uaddr: 0x7000_0000, mmapOffset: W }, ab), 0);
  const v = mem.gpaView(0x10000 + 10, 4);
  assert.ok(v);
  assert.deepEqual([...v], [...new Uint8Array(ab, W + 10, 4)]);
  assert.equal(v.buffer, ab, 'a view');
  const u = mem.vaView(0x7000_0000 + 10, 4);
  assert.deepEqual([...(u ?? [])], [...v]);
  assert.equal(mem.gpaView(0x10000 + 2 * W - 2, 4), null, 'runs past the region');
  assert.equal(mem.gpaView(0x10000 - 1, 2), null);
  assert.equal(mem.gpaView(-1, 1), null);
  assert.equal(mem.gpaView(2 ** 53, 1), null);
  assert.ok(mem.resolveGpa(0x10000 + 5, 3));
  assert.equal(mem.resolvedU8[mem.resolvedOff], new Uint8Array(ab)[W + 5]);
  assert.equal(mem.regions.length, 1);
});

test('regions larger than two windows are split into windows; views never cross a window edge', () => {
  const mmapOffset = W + 512;
  const size = 5 * W + 100;
  const ab = pattern(mmapOffset + size);
  const all = new Uint8Array(ab);
  const mem = new GuestMemory(null, { windowSize: W });
  const gpa = 0x100000;
  assert.equal(mem.addRegionBuffer({ gpa, size, uaddr: 0x9000_0000, mmapOffset }, ab), 0);
  // File offset f holds gpa + (f - mmapOffset); window edges are at file offsets k * W.
  const edge = gpa + (2 * W - mmapOffset); // file offset 2W
  const inside = mem.gpaView(edge - 8, 8);
  assert.ok(inside);
  assert.deepEqual([...inside], [...all.subarray(2 * W - 8, 2 * W)]);
  assert.equal(mem.gpaView(edge - 4, 8), null, 'crosses a window edge');
  assert.equal(mem.vaView(0x9000_0000 + (edge - gpa) - 4, 8), null);
  const segs = mem.gpaSegments(edge - 4, 8);
  assert.ok(segs);
  assert.deepEqual(segs.map((s) => s.length), [4, 4]);
  assert.deepEqual([...Buffer.concat(segs)], [...all.subarray(2 * W - 4, 2 * W + 4)]);
  // The whole region: first window clipped at mmapOffset, last at the end.
  const whole = mem.gpaSegments(gpa, size);
  assert.ok(whole);
  assert.deepEqual(whole.map((s) => s.length), [W - 512, W, W, W, W, 612]);
  assert.deepEqual([...Buffer.concat(whole)], [...all.subarray(mmapOffset, mmapOffset + size)]);
  assert.equal(mem.gpaSegments(gpa + size - 4, 8), null, 'runs past the region');
  assert.deepEqual(mem.gpaSegments(gpa, 0), []);
});

test('gpaSegments splits across adjacent regions; gpaView does not', () => {
  const a = pattern(W);
  const b = pattern(2 * W);
  const mem = new GuestMemory(null);
  assert.equal(mem.addRegionBuffer({ gpa: 0, size: W, uaddr: 0x1_0000_0000, mmapOffset: 0 }, a), 0);
  assert.equal(mem.addRegionBuffer({ gpa: W, size: W, uaddr: 0x2_0000_0000, mmapOffset: W }, b), 0);
  assert.equal(mem.gpaView(W - 2, 4), null);
  const segs = mem.gpaSegments(W - 2, 4);
  assert.ok(segs);
  assert.deepEqual([...Buffer.concat(segs)], [...new Uint8Array(a, W - 2, 2), ...new Uint8Array(b, W, 2)]);
  assert.equal(mem.gpaSegments(2 * W - 1, 2), null);
});

test('overlapping or invalid regions are rejected', () => {
  const mem = new GuestMemory(null);
  assert.equal(mem.addRegionBuffer({ gpa: 0, size: 2 * W, uaddr: 0, mmapOffset: 0 }, pattern(2 * W)), 0);
  assert.equal(mem.addRegionBuffer({ gpa: W, size: W, uaddr: 0x10_0000, mmapOffset: 0 }, pattern(W)), -22);
  assert.equal(mem.addRegionBuffer({ gpa: 4 * W, size: 0, uaddr: 0x10_0000, mmapOffset: 0 }, pattern(W)), -22);
  assert.equal(mem.addRegionBuffer({ gpa: 4 * W, size: 2 * W, uaddr: 0x10_0000, mmapOffset: 0 }, pattern(W)), -22, 'buffer too small');
  assert.equal(mem.regions.length, 1);
  assert.throws(() => new GuestMemory(null, { windowSize: 5000 }), RangeError);
});

class FakeMmap implements GuestMemoryNative {
  calls: Array<{ fd: number; offset: number; length: number }> = [];
  unmapped: ArrayBuffer[] = [];
  failAt = -1;
  mmap(fd: number, offset: number, length: number): ArrayBuffer | number {
    if (this.calls.length === this.failAt) return -12;
    this.calls.push({ fd, offset, length });
    return new ArrayBuffer(length);
  }
  munmap(buf: ArrayBuffer): number { this.unmapped.push(buf); return 0; }
}

test('addRegion maps [0, size + mmapOffset) once when it fits', () => {
  const fake = new FakeMmap();
  const mem = new GuestMemory(fake, { windowSize: W });
  assert.equal(mem.addRegion({ gpa: 0, size: W, uaddr: 0x5000_0000, mmapOffset: W, fd: 7 }), 0);
  assert.deepEqual(fake.calls, [{ fd: 7, offset: 0, length: 2 * W }]);
  assert.ok(mem.gpaView(0, W));
  assert.equal(mem.removeRegion(0, W, 0x5000_0000), true);
  assert.equal(fake.unmapped.length, 1);
  assert.equal(mem.gpaView(0, 1), null);
  assert.equal(mem.removeRegion(0, W, 0x5000_0000), false);
});

test('addRegion maps a large region in page-aligned windows and unmaps them all', () => {
  const fake = new FakeMmap();
  const mem = new GuestMemory(fake, { windowSize: W });
  const r = { gpa: 0x40000, size: 4 * W, uaddr: 0x5000_0000, mmapOffset: 3 * W + 16, fd: 9 };
  assert.equal(mem.addRegion(r), 0);
  assert.deepEqual(fake.calls.map((c) => [c.offset, c.length]),
    [[3 * W, W], [4 * W, W], [5 * W, W], [6 * W, W], [7 * W, 16]]);
  for (const c of fake.calls) assert.equal(c.offset % W, 0);
  const segs = mem.gpaSegments(r.gpa, r.size);
  assert.deepEqual(segs?.map((s) => s.length), [W - 16, W, W, W, 16]);
  mem.clear();
  assert.equal(fake.unmapped.length, 5);
  assert.equal(mem.regions.length, 0);
});

test('addRegion failure returns -errno and leaves nothing mapped', () => {
  const fake = new FakeMmap();
  fake.failAt = 2;
  const mem = new GuestMemory(fake, { windowSize: W });
  assert.equal(mem.addRegion({ gpa: 0, size: 5 * W, uaddr: 0, mmapOffset: 0, fd: 3 }), -12);
  assert.equal(fake.unmapped.length, 2);
  assert.equal(mem.regions.length, 0);
  assert.equal(mem.gpaView(0, 1), null);
});
