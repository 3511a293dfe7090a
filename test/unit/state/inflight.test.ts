import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InflightRegion, INFLIGHT_VERSION } from '../../../src/state/inflight';

const Q = 8;

/** A formatted region, and a way to look at the same bytes as a restarted process would. */
function fresh(usedIdx = 0): { buf: ArrayBuffer; r: InflightRegion; reopen: () => InflightRegion } {
  const buf = new ArrayBuffer(InflightRegion.sizeFor(Q));
  const r = new InflightRegion(buf);
  r.format(Q, usedIdx);
  return { buf, r, reopen: () => new InflightRegion(buf) };
}

/** One completion as the runner does it, against a fake guest used.idx. */
class Ring {
  used: number;
  constructor(used = 0) { this.used = used; }
  complete(r: InflightRegion, head: number, crash?: 'after-push'): void {
    r.prePut(head);
    this.used = (this.used + 1) & 0xffff; // pushUsed: the guest sees it here
    if (crash === 'after-push') return;
    r.postPut(head, this.used);
  }
}

test('sizeFor rounds up to 64 bytes and matches libvhost-user for every queue size', () => {
  for (let q = 1; q <= 32768; q *= 2) {
    const s = InflightRegion.sizeFor(q);
    assert.equal(s % 64, 0);
    assert.ok(s >= 16 + 16 * q);
    assert.equal(s, Math.ceil((16 * q + 2) / 64) * 64, `queue size ${q}`);
  }
  assert.equal(InflightRegion.sizeFor(8), 192);
  assert.throws(() => InflightRegion.sizeFor(0), RangeError);
});

test('format writes version 1, desc_num and a zeroed descriptor table', () => {
  const buf = new ArrayBuffer(InflightRegion.sizeFor(Q));
  new Uint8Array(buf).fill(0xa5);
  const r = new InflightRegion(buf);
  r.format(Q, 7);
  const dv = new DataView(buf);
  assert.equal(dv.getBigUint64(0, true), 0n, 'features');
  assert.equal(dv.getUint16(8, true), INFLIGHT_VERSION);
  assert.equal(dv.getUint16(10, true), Q);
  assert.equal(dv.getUint16(14, true), 7, 'used_idx');
  for (let h = 0; h < Q; h++) {
    assert.equal(r.isInflight(h), false);
    assert.equal(r.counterOf(h), 0);
  }
  assert.equal(r.validate(Q), null);
});

test('markInflight stores the counter and the flag in libvhost-user layout', () => {
  const { buf, r } = fresh();
  r.markInflight(3);
  r.markInflight(5);
  const dv = new DataView(buf);
  const d = (h: number): number => 16 + 16 * h;
  assert.equal(dv.getUint8(d(3)), 1);
  assert.equal(dv.getBigUint64(d(3) + 8, true), 1n);
  assert.equal(dv.getBigUint64(d(5) + 8, true), 2n);
  r.prePut(5);
  assert.equal(dv.getUint16(12, true), 5, 'last_batch_head');
  r.postPut(5, 1);
  assert.equal(dv.getUint8(d(5)), 0);
  assert.equal(dv.getUint16(14, true), 1, 'used_idx');
});

test('a request that crashed before its used entry was published is resubmitted', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(3);
  r.prePut(3); // even with last_batch_head set: used.idx never moved
  const rec = reopen().recover(ring.used);
  assert.deepEqual(rec, { resubmit: [3], lastAvail: 1, repaired: -1, usedGap: 0 });
});

test('a request published before post_put is not resubmitted and used_idx is repaired', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(3);
  r.markInflight(5);
  ring.complete(r, 3, 'after-push');
  const r2 = reopen();
  const rec = r2.recover(ring.used);
  assert.deepEqual(rec, { resubmit: [5], lastAvail: 2, repaired: 3, usedGap: 1 });
  assert.equal(r2.usedIdx, 1);
  assert.equal(r2.isInflight(3), false);
  // Recovery is idempotent: crashing again before doing anything gives the same answer.
  assert.deepEqual(reopen().recover(ring.used), { resubmit: [5], lastAvail: 2, repaired: -1, usedGap: 0 });
});

test('a crash between post_put\'s two stores is repaired the same way', () => {
  const { buf, r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(6);
  ring.complete(r, 6, 'after-push');
  new Uint8Array(buf)[16 + 16 * 6] = 0; // postPut's first store happened, used_idx not yet
  assert.deepEqual(reopen().recover(ring.used), { resubmit: [], lastAvail: 1, repaired: 6, usedGap: 1 });
});

test('a request completed through post_put is not resubmitted', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(2);
  ring.complete(r, 2);
  assert.deepEqual(reopen().recover(ring.used), { resubmit: [], lastAvail: 1, repaired: -1, usedGap: 0 });
});

test('requests completed out of order leave the rest resubmitted in pop order', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  for (const h of [7, 2, 5, 0, 4]) r.markInflight(h);
  ring.complete(r, 5);
  ring.complete(r, 7);
  ring.complete(r, 0, 'after-push');
  assert.deepEqual(reopen().recover(ring.used), { resubmit: [2, 4], lastAvail: 5, repaired: 0, usedGap: 1 });
});

test('a head re-posted after completion is a new request, ordered by its new pop', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(1); // avail[0]
  r.markInflight(2); // avail[1]
  ring.complete(r, 1);
  r.markInflight(1); // the guest re-posted 1 as avail[2]
  assert.deepEqual(reopen().recover(ring.used), { resubmit: [2, 1], lastAvail: 3, repaired: -1, usedGap: 0 });
});

test('a head re-posted after a torn completion is popped again from the avail ring', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(1); // avail[0]
  r.markInflight(2); // avail[1]
  ring.complete(r, 1, 'after-push'); // the guest saw it and re-posted 1 as avail[2]
  const rec = reopen().recover(ring.used);
  assert.deepEqual(rec, { resubmit: [2], lastAvail: 2, repaired: 1, usedGap: 1 });
  // lastAvail 2 is exactly the re-posted entry: it runs once, as a new request.
});

test('a torn completion clears only its own head, not an earlier head in flight again', () => {
  const { r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(1);
  r.markInflight(2);
  ring.complete(r, 1); // last_batch_head = 1
  r.markInflight(1); // re-posted and popped again
  ring.complete(r, 2, 'after-push'); // last_batch_head = 2
  assert.deepEqual(reopen().recover(ring.used), { resubmit: [1], lastAvail: 3, repaired: 2, usedGap: 1 });
});

test('16-bit used and avail indices wrap around', () => {
  {
    const { r, reopen } = fresh(0xfffe);
    const ring = new Ring(0xfffe);
    for (const h of [0, 1, 2]) r.markInflight(h);
    ring.complete(r, 1); // used 0xffff
    ring.complete(r, 0, 'after-push'); // used 0x0000
    const r2 = reopen();
    assert.deepEqual(r2.recover(ring.used), { resubmit: [2], lastAvail: 1, repaired: 0, usedGap: 1 });
    assert.equal(r2.usedIdx, 0);
  }
  {
    const { r, reopen } = fresh(0xffff);
    for (const h of [6, 3, 4]) r.markInflight(h);
    assert.deepEqual(reopen().recover(0xffff), { resubmit: [6, 3, 4], lastAvail: 2, repaired: -1, usedGap: 0 });
  }
  {
    // The guest index may be passed unmasked.
    const { reopen } = fresh(5);
    assert.equal(reopen().recover(0x10005).lastAvail, 5);
  }
});

test('the counter continues above the newest in-flight request after recovery', () => {
  const { buf, r, reopen } = fresh();
  const ring = new Ring();
  r.markInflight(4);
  r.markInflight(6);
  const r2 = reopen(); // a new process: its own counter starts at 0
  assert.deepEqual(r2.recover(ring.used).resubmit, [4, 6]);
  r2.markInflight(1);
  assert.ok(r2.counterOf(1) > r2.counterOf(6));
  // A second crash keeps the order: old resubmitted ones first, then the new one.
  assert.deepEqual(reopen().recover(ring.used).resubmit, [4, 6, 1]);
  // Counters are u64: the carry into the high half is exact.
  const dv = new DataView(buf);
  dv.setBigUint64(16 + 16 * 6 + 8, 0xffffffffn, true);
  const r3 = reopen();
  assert.deepEqual(r3.recover(ring.used).resubmit, [4, 1, 6]);
  r3.markInflight(7);
  assert.equal(dv.getBigUint64(16 + 16 * 7 + 8, true), 0x100000000n);
  assert.deepEqual(reopen().recover(ring.used).resubmit, [4, 1, 6, 7]);
});

test('validate rejects an unformatted region, a wrong version, a wrong queue size or a short buffer', () => {
  const buf = new ArrayBuffer(InflightRegion.sizeFor(Q));
  const r = new InflightRegion(buf);
  assert.match(r.validate() ?? '', /not formatted/);
  assert.throws(() => r.recover(0), /not formatted/);
  r.format(Q);
  assert.equal(r.validate(), null);
  assert.equal(r.validate(Q), null);
  assert.match(r.validate(16) ?? '', /desc_num 8, queue size 16/);
  new DataView(buf).setUint16(8, 2, true);
  assert.match(r.validate(Q) ?? '', /version 2/);
  r.format(Q);
  assert.match(new InflightRegion(buf, 0, 64).validate(Q) ?? '', /too small/);
  new DataView(buf).setUint16(10, 6, true);
  assert.match(r.validate() ?? '', /desc_num 6/);
  assert.throws(() => new InflightRegion(buf, 4), RangeError);
  assert.throws(() => new InflightRegion(new ArrayBuffer(64)).format(Q), RangeError);
});

test('recover refuses a torn completion whose last_batch_head is out of range', () => {
  const { buf, reopen } = fresh();
  new DataView(buf).setUint16(12, Q, true);
  assert.throws(() => reopen().recover(1), /last_batch_head 8 out of range/);
  assert.doesNotThrow(() => reopen().recover(0), 'not needed when nothing is torn');
});

test('queues laid out side by side at sizeFor strides do not overlap', () => {
  const stride = InflightRegion.sizeFor(Q);
  const buf = new ArrayBuffer(2 * stride);
  const q0 = new InflightRegion(buf, 0, stride);
  const q1 = new InflightRegion(buf, stride, stride);
  q0.format(Q);
  q1.format(Q, 9);
  for (let h = 0; h < Q; h++) q0.markInflight(h);
  q0.prePut(Q - 1);
  assert.deepEqual(q1.recover(9), { resubmit: [], lastAvail: 9, repaired: -1, usedGap: 0 });
  assert.equal(q0.recover(0).resubmit.length, Q);
});
