import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotTable, MemoryBacking } from '../../../src/state/slot-table';

test('a slot is valid only after publish and invalid from the moment it is released', () => {
  const t = new SlotTable(new MemoryBacking(), 32, 4, 7, 1);
  const s = t.alloc();
  assert.equal(t.isValid(s), false, 'filled but not yet published');
  t.publish(s);
  assert.equal(t.isValid(s), true);
  t.release(s);
  assert.equal(t.isValid(s), false);
});

test('reserved slots are never handed out and the table grows keeping its records', () => {
  const t = new SlotTable(new MemoryBacking(), 16, 4, 1, 2);
  const got: number[] = [];
  for (let i = 0; i < 20; i++) {
    const s = t.alloc();
    t.dv.setUint32(t.off(s) + 8, 1000 + s, true);
    t.publish(s);
    got.push(s);
  }
  assert.ok(got.every((s) => s >= 2));
  assert.equal(new Set(got).size, 20);
  for (const s of got) assert.equal(t.dv.getUint32(t.off(s) + 8, true), 1000 + s);
  assert.ok(t.size >= 22);
});

test('a released slot is reused zeroed', () => {
  const t = new SlotTable(new MemoryBacking(), 16, 4, 1, 1);
  const s = t.alloc();
  t.dv.setUint32(t.off(s) + 4, 42, true);
  t.publish(s);
  t.release(s);
  const s2 = t.alloc();
  assert.equal(s2, s);
  assert.equal(t.dv.getUint32(t.off(s2) + 4, true), 0);
});

test('a table adopted from an existing region keeps its published records and reuses only free slots', () => {
  const backing = new MemoryBacking();
  const t = new SlotTable(backing, 16, 4, 3, 2);
  const kept: number[] = [];
  for (let i = 0; i < 6; i++) {
    const s = t.alloc();
    t.dv.setUint32(t.off(s) + 8, 7000 + s, true);
    if (i % 2 === 0) { t.publish(s); kept.push(s); }
    // odd ones: filled but never published, as if the writer died before the publish store
  }
  const again = new SlotTable(backing, 16, 4, 3, 2);
  assert.deepEqual([...again.validSlots()], kept);
  assert.equal(again.inUse, kept.length);
  for (const s of kept) assert.equal(again.dv.getUint32(again.off(s) + 8, true), 7000 + s);
  const fresh = new Set<number>();
  for (let i = 0; i < 10; i++) fresh.add(again.alloc());
  for (const s of kept) assert.ok(!fresh.has(s), `published slot ${s} handed out again`);
});

test('a region of another kind or record size is refused', () => {
  const backing = new MemoryBacking();
  new SlotTable(backing, 16, 4, 3, 1);
  assert.throws(() => new SlotTable(backing, 32, 4, 3, 1), /record size/);
  assert.throws(() => new SlotTable(backing, 16, 4, 9, 1), /kind/);
});

test('the region grows no further than maxCapacity: the last alloc past it throws, the region stays that size', () => {
  const backing = new MemoryBacking();
  const t = new SlotTable(backing, 16, 4, 1, 1, 10);
  for (let i = 1; i < 10; i++) t.alloc();
  assert.equal(t.size, 10);
  assert.throws(() => t.alloc(), /full at 10 slots/);
  assert.equal(backing.bytes, 64 + 10 * 16);
});

test('an image whose capacity leaves no slot past the reserved ones is refused as a whole (found by fuzzing)', () => {
  const backing = new MemoryBacking();
  const first = new SlotTable(backing, 16, 4, 1, 2);
  for (const cap of [0, 1, 2]) {
    first.dv.setUint32(12, cap, true); // header: capacity
    assert.throws(() => new SlotTable(backing, 16, 4, 1, 2), (e: Error) => e.constructor === Error && /not usable: capacity/.test(e.message), `capacity ${cap}`);
  }
  first.dv.setUint32(12, 3, true);
  assert.equal(new SlotTable(backing, 16, 4, 1, 2).size, 3, 'one slot past the reserved ones is a table');
});
