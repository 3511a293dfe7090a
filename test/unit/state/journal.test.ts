// The outcome journal (src/state/journal.ts): one record per descriptor head, an intent before
// the op changes the host and its outcome before the reply is pushed; a record answers only the
// request it was written for, and a torn write never looks like an outcome.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal, JOURNAL_LAYOUT, JOURNAL_MAX_REPLY, J_DONE, J_INTENT } from '../../../src/state/journal';

const make = (q = 8): { j: Journal; buf: ArrayBuffer } => {
  const buf = new ArrayBuffer(Journal.sizeFor(q));
  const j = new Journal(buf);
  j.format(q);
  return { j, buf };
};

test('a formatted journal validates for its queue size only; an unformatted or small one does not', () => {
  const { j } = make(8);
  assert.equal(j.validate(8), null);
  assert.match(j.validate(16) ?? '', /too small|queue size/);
  assert.equal(new Journal(new ArrayBuffer(Journal.sizeFor(8))).validate(8), 'bad magic');
  assert.equal(Journal.sizeFor(8), JOURNAL_LAYOUT.header + 8 * JOURNAL_LAYOUT.record);
});

test('intent, then outcome: find() gives each to the request it was written for, and to no other', () => {
  const { j } = make();
  j.intent(3, 42, 1, 9, 2.5);
  assert.deepEqual({ ...j.find(3, 42, 1, 9), body: [] }, { state: J_INTENT, error: 0, body: [], pre: 2.5 });
  assert.equal(j.find(3, 43, 1, 9), null, 'another unique');
  assert.equal(j.find(3, 42, 1, 10), null, 'another opcode');
  assert.equal(j.find(4, 42, 1, 9), null, 'another head');
  assert.ok(j.done(3, 0, new Uint8Array([1, 2, 3])));
  const r = j.find(3, 42, 1, 9)!;
  assert.equal(r.state, J_DONE);
  assert.deepEqual([...r.body], [1, 2, 3]);
  assert.ok(j.done(3, -28, new Uint8Array(0)));
  assert.equal(j.find(3, 42, 1, 9)!.error, -28);
});

test('a reply too big for a record is not recorded: the record stays an intent (a re-run is relaxed)', () => {
  const { j } = make();
  j.intent(0, 1, 0, 35);
  assert.equal(j.done(0, 0, new Uint8Array(JOURNAL_MAX_REPLY + 1)), false);
  assert.equal(j.find(0, 1, 0, 35)!.state, J_INTENT);
  assert.ok(j.done(0, 0, new Uint8Array(JOURNAL_MAX_REPLY)));
});

test('a new intent on a head invalidates the record it replaces before it writes (a torn write is no outcome)', () => {
  const { j, buf } = make();
  j.intent(2, 7, 0, 9);
  j.done(2, 0, new Uint8Array([5]));
  // Stop a second intent after its first store: the state word alone, as a crash would leave it.
  const dv = new DataView(buf);
  const at = JOURNAL_LAYOUT.header + 2 * JOURNAL_LAYOUT.record + JOURNAL_LAYOUT.state;
  dv.setInt32(at, 0, true);
  assert.equal(j.find(2, 7, 0, 9), null, 'neither the old outcome nor a half-written intent');
});
