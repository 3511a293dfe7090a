// The worker's fd registry: what reaches the keeper, in which order, and what never does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchingFdRegistry, fdKey, parseFdKey, type FdOp } from '../../../src/state/fd-registry';

function harness(): { reg: BatchingFdRegistry; sent: FdOp[][]; fire: () => void; readonly armed: number } {
  const sent: FdOp[][] = [];
  const timers: Array<() => void> = [];
  const reg = new BatchingFdRegistry((ops) => sent.push(ops), (fn) => timers.push(fn));
  return {
    reg, sent,
    get armed() { return timers.length; },
    fire: () => { for (const fn of timers.splice(0)) fn(); },
  };
}

test('a strict put reaches the keeper at once, after everything queued before it', () => {
  const h = harness();
  h.reg.del('i4');
  h.reg.putLazy('f1', 11);
  h.reg.put('i5', 5);
  assert.deepEqual(h.sent, [[['i4', -1], ['f1', 11], ['i5', 5]]]);
  assert.equal(h.reg.pendingCount, 0);
});

test('lazy puts and dels wait for the timer and leave in one batch, in order', () => {
  const h = harness();
  h.reg.putLazy('f1', 11);
  h.reg.del('i4');
  h.reg.putLazy('d2', 12);
  assert.deepEqual(h.sent, []);
  assert.equal(h.armed, 1, 'one timer for the whole batch');
  h.fire();
  assert.deepEqual(h.sent, [[['f1', 11], ['i4', -1], ['d2', 12]]]);
  h.fire();
  assert.equal(h.sent.length, 1, 'nothing left to send');
});

test('a handle opened and released between two flushes never reaches the keeper', () => {
  const h = harness();
  h.reg.putLazy('f1', 11);
  h.reg.del('f1');
  h.fire();
  h.reg.flush();
  assert.deepEqual(h.sent, []);
});

test('a del of a key the keeper holds is sent even when the key is put lazily again before the flush', () => {
  // f1 reached the keeper; released (del queued); fh 1 handed out again (lazy put); released.
  const h = harness();
  h.reg.put('f1', 11);
  h.reg.del('f1');
  h.reg.putLazy('f1', 21);
  h.reg.del('f1');
  h.reg.flush();
  const ops = h.sent.flat();
  assert.deepEqual(ops.at(-1), ['f1', -1], `the keeper must end up without f1: ${JSON.stringify(ops)}`);
  assert.ok(!ops.some(([k, fd]) => k === 'f1' && fd === 21), 'the short-lived second put need not be sent');
});

test('a lazy put of a key whose del is queued sends the del first, so the keeper never holds the old fd under the new record', () => {
  const h = harness();
  h.reg.put('f1', 11);
  h.reg.del('f1');
  h.reg.putLazy('f1', 21);
  h.reg.flush();
  assert.deepEqual(h.sent.flat(), [['f1', 11], ['f1', -1], ['f1', 21]]);
});

test('parseFdKey reads back every key fdKey makes', () => {
  const big = (1n << 64n) - 1n;
  assert.deepEqual(parseFdKey(fdKey.inode(1)), { kind: 'inode', nodeid: 1 });
  assert.deepEqual(parseFdKey(fdKey.file(0)), { kind: 'file', fh: 0 });
  assert.deepEqual(parseFdKey(fdKey.dir(65535)), { kind: 'dir', fh: 65535 });
  assert.deepEqual(parseFdKey(fdKey.mount(big)), { kind: 'mount', mntId: big });
  assert.deepEqual(parseFdKey(fdKey.lock(7, big, 0xffffffff)), { kind: 'lock', nodeid: 7, owner: big, pid: 0xffffffff });
  assert.deepEqual(parseFdKey(fdKey.lock(2, 0n, 0)), { kind: 'lock', nodeid: 2, owner: 0n, pid: 0 });
});

test('parseFdKey: what fdKey never makes is null, not a guess', () => {
  for (const key of ['', 'i', 'x1', 'i-1', 'i1.5', 'i01', 'i 1', 'f1a', 'd', 'm', `m${1n << 64n}`, 'l1:2', 'l1:2:3:4', 'l1::3',
    `l1:${1n << 64n}:3`, 'l1:2:4294967296', 'i9007199254740993', 'L1:2:3']) {
    assert.equal(parseFdKey(key), null, JSON.stringify(key));
  }
});
