import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import pino from 'pino';
import { GuestMemory } from '../../../src/virtio/guest-memory';
import { SplitQueue, vringNeedEvent, type DescChain } from '../../../src/virtio/split-queue';
import {
  GuestRam, VirtqDriver, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../support/virtq-driver';

const UA = 0x7f12_3400_0000; // frontend virtual address of guest RAM (gpa 0)
const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;

interface LogLine { level: number; msg: string; head?: number; reason?: string }

/** split: describe the RAM as two adjacent regions meeting at that gpa (same backing buffer). */
function setup(size = 8, eventIdx = false, lastAvail = 0, split = 0) {
  const ram = new GuestRam(null, 1 << 20, { plain: true });
  const drv = new VirtqDriver(ram, size, { eventIdx });
  const mem = new GuestMemory(null);
  const ab = ram.buf.buffer as ArrayBuffer;
  if (split === 0) {
    assert.equal(mem.addRegionBuffer({ gpa: 0, size: ram.size, uaddr: UA, mmapOffset: 0 }, ab), 0);
  } else {
    assert.equal(mem.addRegionBuffer({ gpa: 0, size: split, uaddr: UA, mmapOffset: 0 }, ab), 0);
    assert.equal(mem.addRegionBuffer({ gpa: split, size: ram.size - split, uaddr: UA + split, mmapOffset: split }, ab), 0);
  }
  const lines: LogLine[] = [];
  const log = pino({ level: 'trace' }, { write: (s: string) => { lines.push(JSON.parse(s) as LogLine); } });
  const q = new SplitQueue(mem, {
    size, descVa: UA + drv.descGpa, availVa: UA + drv.availGpa, usedVa: UA + drv.usedGpa, lastAvail, eventIdx, log,
  });
  return { ram, drv, mem, q, lines };
}

const te = (s: string): Uint8Array => new TextEncoder().encode(s);
const concat = (segs: Uint8Array[]): Uint8Array => Buffer.concat(segs);
const text = (segs: Uint8Array[]): string => Buffer.from(concat(segs)).toString();

function popOk(q: SplitQueue): DescChain {
  const c = q.pop();
  assert.ok(c !== null, 'expected a chain');
  return c;
}

/** A ring buffer in guest RAM, filled with a byte. */
function buf(ram: GuestRam, len: number, fill = 0xaa): number {
  const g = ram.alloc(len);
  ram.view(g, len).fill(fill);
  return g;
}

test('simple chain: readable then writable buffers reach the device and the reply reaches the driver', () => {
  const { drv, q } = setup();
  const head = drv.add([te('hello'), te('world!')], [16, 8], { indirect: false });
  const c = popOk(q);
  assert.equal(c.head, head);
  assert.equal(c.readable.length, 2);
  assert.equal(c.readableLen, 11);
  assert.equal(text(c.readable), 'helloworld!');
  assert.deepEqual(c.writable.map((s) => s.length), [16, 8]);
  assert.equal(c.writableLen, 24);
  c.writable[0].set(te('reply'));
  assert.equal(q.pop(), null);
  assert.equal(drv.free, 8 - 4);
  q.pushUsed(head, 5);
  const used = drv.takeUsed();
  assert.equal(used.length, 1);
  assert.equal(used[0].head, head);
  assert.equal(used[0].len, 5);
  assert.equal(Buffer.from(used[0].in[0].subarray(0, 5)).toString(), 'reply');
  assert.equal(drv.free, 8);
  assert.equal(q.lastAvail, 1);
});

test('indirect chain: the table is walked from entry 0 and uses one ring descriptor', () => {
  const { drv, q } = setup();
  const head = drv.add([te('abc'), te('def')], [4, 4, 4], { indirect: true });
  assert.equal(drv.free, 7);
  const c = popOk(q);
  assert.equal(c.head, head);
  assert.equal(text(c.readable), 'abcdef');
  assert.deepEqual(c.writable.map((s) => s.length), [4, 4, 4]);
  q.pushUsed(head, 12);
  assert.equal(drv.takeUsed()[0].len, 12);
  assert.equal(drv.free, 8);
});

test('mixed direct and indirect chains are served in ring order', () => {
  const { drv, q } = setup();
  const a = drv.add([te('A')], [2], { indirect: false });
  const b = drv.add([te('B'), te('b')], [2], { indirect: true });
  const c = drv.add([te('C')], [], { indirect: false });
  const got = [popOk(q), popOk(q), popOk(q)];
  assert.deepEqual(got.map((x) => x.head), [a, b, c]);
  assert.deepEqual(got.map((x) => text(x.readable)), ['A', 'Bb', 'C']);
  assert.equal(got[2].writable.length, 0);
  assert.equal(q.pop(), null);
});

test('a direct descriptor may chain to a final indirect descriptor', () => {
  const { ram, drv, q } = setup();
  const [d0, d1] = drv.reserveDesc(2);
  const x = ram.alloc(3); ram.view(x, 3).set(te('xyz'));
  const y = ram.alloc(2); ram.view(y, 2).set(te('YY'));
  const w = buf(ram, 6);
  const table = ram.alloc(32);
  drv.putDesc(table, y, 2, NEXT, 1);
  drv.putDesc(table + 16, w, 6, WRITE, 0);
  drv.writeDesc(d0, x, 3, NEXT, d1);
  drv.writeDesc(d1, table, 32, INDIRECT | WRITE /* WRITE on the table descriptor is ignored */, 0);
  drv.publishAvail(d0);
  const c = popOk(q);
  assert.equal(c.head, d0);
  assert.equal(text(c.readable), 'xyzYY');
  assert.equal(c.writableLen, 6);
});

test('misaligned indirect table is read correctly', () => {
  const { ram, drv, q } = setup();
  const [d] = drv.reserveDesc(1);
  const table = ram.alloc(48) + 3;
  const x = ram.alloc(2); ram.view(x, 2).set(te('hi'));
  drv.putDesc(table, x, 2, NEXT, 1);
  drv.putDesc(table + 16, buf(ram, 5), 5, WRITE, 0);
  drv.writeDesc(d, table, 32, INDIRECT, 0);
  drv.publishAvail(d);
  const c = popOk(q);
  assert.equal(text(c.readable), 'hi');
  assert.equal(c.writableLen, 5);
});

test('indirect table and buffers straddling two memory regions are followed', () => {
  const split = 0x80000;
  const { ram, drv, q } = setup(8, false, 0, split);
  // Carve the RAM around the region edge: a table across it and a buffer across it.
  const [d] = drv.reserveDesc(1);
  const table = split - 16;
  const data = split + 64 - 3;
  ram.view(data, 6).set(te('abcdef'));
  drv.putDesc(table, data, 6, NEXT, 1);
  drv.putDesc(table + 16, split - 2, 4, WRITE, 0);
  drv.writeDesc(d, table, 32, INDIRECT, 0);
  drv.publishAvail(d);
  const c = popOk(q);
  assert.equal(text(c.readable), 'abcdef');
  assert.deepEqual(c.writable.map((s) => s.length), [2, 2], 'split at the region edge');
});

test('zero-length descriptors are accepted and contribute no segment', () => {
  const { ram, drv, q } = setup();
  const [d0, d1, d2] = drv.reserveDesc(3);
  const x = buf(ram, 4);
  const w = buf(ram, 4);
  drv.writeDesc(d0, x, 4, NEXT, d1);
  drv.writeDesc(d1, 0, 0, NEXT, d2);
  drv.writeDesc(d2, w, 4, WRITE, 0);
  drv.publishAvail(d0);
  const c = popOk(q);
  assert.equal(c.readable.length, 1);
  assert.equal(c.writable.length, 1);
});

/** Publish a hand-made chain at d0, then a good chain; the bad one must come back with len 0 and
 *  the good one must still be served. */
function expectDropped(s: ReturnType<typeof setup>, bad: number, reason: RegExp): void {
  const { drv, q, lines } = s;
  drv.publishAvail(bad);
  const good = drv.add([te('ok')], [4], { indirect: false });
  const c = popOk(q);
  assert.equal(c.head, good);
  const used = drv.takeUsed();
  assert.deepEqual(used.map((u) => [u.head, u.len]), [[bad, 0]]);
  const warn = lines.find((l) => l.level === 40 && l.head === bad);
  assert.ok(warn, 'a warning names the head');
  assert.match(warn.reason ?? '', reason);
}

test('chain loop is dropped with used len 0 and the next chain is still served', () => {
  const s = setup();
  const [a, b] = s.drv.reserveDesc(2);
  const x = buf(s.ram, 4);
  s.drv.writeDesc(a, x, 4, NEXT, b);
  s.drv.writeDesc(b, x, 4, NEXT, a);
  expectDropped(s, a, /loop/);
});

test('loop inside an indirect table is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  const x = buf(s.ram, 4);
  const table = s.ram.alloc(32);
  s.drv.putDesc(table, x, 4, NEXT, 1);
  s.drv.putDesc(table + 16, x, 4, NEXT, 0);
  s.drv.writeDesc(d, table, 32, INDIRECT, 0);
  expectDropped(s, d, /loop/);
});

test('next index beyond the table is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  s.drv.writeDesc(d, buf(s.ram, 4), 4, NEXT, 8);
  expectDropped(s, d, /out of range/);
});

test('descriptor address outside guest memory is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  s.drv.writeDesc(d, s.ram.size - 2, 4, 0, 0); // straddles the end of RAM
  expectDropped(s, d, /outside guest memory/);
});

test('descriptor address beyond 2^53 is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  s.drv.writeDesc(d, 2 ** 60, 4, WRITE, 0);
  expectDropped(s, d, /2\^53/);
});

test('indirect table outside guest memory is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  s.drv.writeDesc(d, s.ram.size + 4096, 32, INDIRECT, 0);
  expectDropped(s, d, /indirect table outside/);
});

test('writable descriptor before a readable one is dropped', () => {
  const s = setup();
  const [a, b] = s.drv.reserveDesc(2);
  s.drv.writeDesc(a, buf(s.ram, 4), 4, WRITE | NEXT, b);
  s.drv.writeDesc(b, buf(s.ram, 4), 4, 0, 0);
  expectDropped(s, a, /readable descriptor after a device-writable/);
});

test('writable before readable inside an indirect table is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  const table = s.ram.alloc(32);
  s.drv.putDesc(table, buf(s.ram, 4), 4, WRITE | NEXT, 1);
  s.drv.putDesc(table + 16, buf(s.ram, 4), 4, 0, 0);
  s.drv.writeDesc(d, table, 32, INDIRECT, 0);
  expectDropped(s, d, /readable descriptor after/);
});

for (const [name, len] of [['not a multiple of 16', 24], ['zero', 0]] as const) {
  test(`indirect table of bad length (${name}) is dropped`, () => {
    const s = setup();
    const [d] = s.drv.reserveDesc(1);
    const table = s.ram.alloc(32);
    s.drv.putDesc(table, buf(s.ram, 4), 4, 0, 0);
    s.drv.writeDesc(d, table, len, INDIRECT, 0);
    expectDropped(s, d, /multiple of 16/);
  });
}

test('indirect table larger than 1024 entries (and the queue size) is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  const n = 1025;
  const table = s.ram.alloc(16 * n);
  const x = buf(s.ram, 1);
  for (let i = 0; i < n; i++) s.drv.putDesc(table + 16 * i, x, 1, i + 1 < n ? NEXT : 0, i + 1);
  s.drv.writeDesc(d, table, 16 * n, INDIRECT, 0);
  expectDropped(s, d, /too large/);
});

test('indirect table of 1024 entries on a small queue is accepted', () => {
  const { ram, drv, q } = setup();
  const [d] = drv.reserveDesc(1);
  const n = 1024;
  const table = ram.alloc(16 * n);
  const x = buf(ram, 1);
  for (let i = 0; i < n; i++) drv.putDesc(table + 16 * i, x, 1, i + 1 < n ? NEXT : 0, i + 1);
  drv.writeDesc(d, table, 16 * n, INDIRECT, 0);
  drv.publishAvail(d);
  const c = popOk(q);
  assert.equal(c.readableLen, 1024);
});

test('nested indirect descriptor is dropped', () => {
  const s = setup();
  const [d] = s.drv.reserveDesc(1);
  const inner = s.ram.alloc(16);
  s.drv.putDesc(inner, buf(s.ram, 4), 4, 0, 0);
  const table = s.ram.alloc(16);
  s.drv.putDesc(table, inner, 16, INDIRECT, 0);
  s.drv.writeDesc(d, table, 16, INDIRECT, 0);
  expectDropped(s, d, /nested indirect/);
});

test('indirect descriptor with NEXT is dropped', () => {
  const s = setup();
  const [a, b] = s.drv.reserveDesc(2);
  const table = s.ram.alloc(16);
  s.drv.putDesc(table, buf(s.ram, 4), 4, 0, 0);
  s.drv.writeDesc(a, table, 16, INDIRECT | NEXT, b);
  s.drv.writeDesc(b, buf(s.ram, 4), 4, WRITE, 0);
  expectDropped(s, a, /with NEXT/);
});

test('avail ring entry that is not a descriptor index is skipped without a used entry', () => {
  const { drv, q, lines } = setup();
  drv.publishAvail(100);
  const good = drv.add([te('ok')], [], { indirect: false });
  assert.equal(popOk(q).head, good);
  assert.deepEqual(drv.takeUsed(), []);
  assert.ok(lines.some((l) => l.level === 40 && l.head === 100));
});

test('avail.idx jumping more than the queue size ahead returns null without spinning', () => {
  const { drv, q, lines } = setup();
  drv.setAvailIdx(9);
  assert.equal(q.pop(), null);
  assert.equal(q.pop(), null);
  assert.equal(q.lastAvail, 0);
  assert.equal(lines.filter((l) => l.level === 50).length, 1, 'logged once');
  // A driver that comes back to its senses is served again.
  drv.setAvailIdx(0);
  const h = drv.add([te('x')], [], { indirect: false });
  assert.equal(popOk(q).head, h);
});

test('avail.idx wrap-around at 2^16 is handled', () => {
  const { drv, q } = setup(8, false, 0xfffe);
  drv.setAvailIdx(0xfffe);
  const heads = [0, 1, 2].map(() => drv.add([te('w')], [], { indirect: false }));
  assert.equal(drv.availIndex, 1);
  assert.deepEqual([popOk(q).head, popOk(q).head, popOk(q).head], heads);
  assert.equal(q.lastAvail, 1);
  assert.equal(q.pop(), null);
});

test('EVENT_IDX: avail_event follows lastAvail after each pop', () => {
  const { drv, q } = setup(8, true);
  assert.equal(drv.availEvent, 0);
  drv.add([te('1')], [], { indirect: false });
  assert.equal(drv.needsKick(), true);
  drv.add([te('2')], [], { indirect: false });
  assert.equal(drv.needsKick(), false, 'device has not caught up: no second kick');
  popOk(q);
  assert.equal(drv.availEvent, 1);
  popOk(q);
  assert.equal(drv.availEvent, 2);
  assert.equal(q.pop(), null);
  drv.add([te('3')], [], { indirect: false });
  assert.equal(drv.needsKick(), true, 'device asked for the next kick');
});

test('EVENT_IDX: avail_event is initialised from lastAvail at construction', () => {
  const { drv } = setup(8, true, 5);
  assert.equal(drv.availEvent, 5);
});

test('shouldNotify honours used_event with EVENT_IDX', () => {
  const { drv, q } = setup(8, true);
  for (let i = 0; i < 4; i++) drv.add([te('r')], [], { indirect: false });
  const chains = [popOk(q), popOk(q), popOk(q), popOk(q)];
  assert.equal(q.shouldNotify(), false, 'nothing pushed');
  q.pushUsed(chains[0].head, 0);
  assert.equal(q.shouldNotify(), true, 'first decision always notifies');
  drv.setUsedEvent(1); // interrupt once used.idx passes 1
  q.pushUsed(chains[1].head, 0);
  assert.equal(q.shouldNotify(), true);
  drv.setUsedEvent(5);
  q.pushUsed(chains[2].head, 0);
  assert.equal(q.shouldNotify(), false, 'used_event not reached');
  q.pushUsed(chains[3].head, 0);
  assert.equal(q.shouldNotify(), false);
  for (let i = 0; i < 3; i++) drv.add([te('r')], [], { indirect: false });
  drv.takeUsed();
  drv.setUsedEvent(4);
  const more = [popOk(q), popOk(q)];
  q.pushUsed(more[0].head, 0); // used.idx 4 -> 5 crosses used_event 4
  q.pushUsed(more[1].head, 0);
  assert.equal(q.shouldNotify(), true);
});

test('shouldNotify honours NO_INTERRUPT without EVENT_IDX', () => {
  const { drv, q } = setup(8, false);
  for (let i = 0; i < 2; i++) drv.add([te('r')], [], { indirect: false });
  const [a, b] = [popOk(q), popOk(q)];
  drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  q.pushUsed(a.head, 0);
  assert.equal(q.shouldNotify(), false);
  drv.setAvailFlags(0);
  q.pushUsed(b.head, 0);
  assert.equal(q.shouldNotify(), true);
  assert.equal(q.shouldNotify(), false, 'nothing new');
});

test('vring_need_event arithmetic wraps at 2^16', () => {
  assert.equal(vringNeedEvent(0xffff, 0, 0xfffe), true);
  assert.equal(vringNeedEvent(0xffff, 0xfffe, 0xfffd), false);
  assert.equal(vringNeedEvent(10, 20, 5), true);
  assert.equal(vringNeedEvent(30, 20, 5), false);
});

test('used idx is taken from guest memory at construction', () => {
  const s = setup();
  s.drv.add([te('a')], [], { indirect: false });
  const c = popOk(s.q);
  s.q.pushUsed(c.head, 0);
  const q2 = new SplitQueue(s.mem, {
    size: 8, descVa: UA + s.drv.descGpa, availVa: UA + s.drv.availGpa, usedVa: UA + s.drv.usedGpa,
    lastAvail: s.q.lastAvail, eventIdx: false,
  });
  assert.equal(q2.usedIndex, 1);
  assert.equal(q2.pop(), null);
});

test('constructor rejects unmapped ring addresses and bad sizes', () => {
  const s = setup();
  assert.throws(() => new SplitQueue(s.mem, { size: 8, descVa: 0x1000, availVa: UA, usedVa: UA, lastAvail: 0, eventIdx: false }), RangeError);
  assert.throws(() => new SplitQueue(s.mem, { size: 6, descVa: UA, availVa: UA, usedVa: UA, lastAvail: 0, eventIdx: false }), RangeError);
});
