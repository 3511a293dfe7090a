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
