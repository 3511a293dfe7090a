// The counters region (src/state/counters.ts): what a worker counts is what the keeper reads,
// across a second writer on the same region (the next worker), and nothing a hostile worker
// writes there reaches the keeper as anything but a finite count >= 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../../src/native/binding';
import { CounterReader, CounterWriter, COUNTERS_BYTES, LATENCY_BUCKETS, OPCODE_SLOTS, countersMemfd } from '../../../src/state/counters';
import { OP } from '../../../src/fuse/abi';

const native = loadNative();

test('counts per opcode, cumulative latency buckets, bytes and gauges read back, and run on under the next writer', () => {
  const fd = countersMemfd(native);
  assert.ok(fd >= 0);
  try {
    const r = new CounterReader(native, fd);
    assert.equal(r.read(), null, 'nothing until a worker formats it');
    const w = new CounterWriter(native, fd);
    w.request(OP.FUSE_WRITE, 0.0002, false);
    w.request(OP.FUSE_WRITE, 0.003, true);
    w.request(OP.FUSE_WRITE, 99, false);
    w.request(100_000, 0.00001, false);
    w.add('bytesWritten', 4096);
    w.gauges({ inodes: 5, handles: 2, inflight: 1 });
    const next = new CounterWriter(native, fd);
    next.request(OP.FUSE_WRITE, 0.0002, false);
    const s = r.read()!;
    const write = s.ops.find((o) => o.opcode === OP.FUSE_WRITE)!;
    assert.equal(write.requests, 4);
    assert.equal(write.errors, 1);
    assert.ok(Math.abs(write.latencySum - (0.0002 + 0.003 + 99 + 0.0002)) < 1e-9);
    const at = (le: number): number => write.buckets[LATENCY_BUCKETS.indexOf(le as typeof LATENCY_BUCKETS[number])]!;
    assert.equal(at(0.0001), 0);
    assert.equal(at(0.00025), 2);
    assert.equal(at(0.005), 3);
    assert.equal(at(5), 3, 'the 99 s request is only in +Inf (the count)');
    assert.deepEqual(s.ops.map((o) => o.opcode), [OP.FUSE_WRITE, OPCODE_SLOTS - 1], 'an opcode past the slots lands in the last one');
    assert.equal(s.bytesWritten, 4096);
    assert.deepEqual([s.inodes, s.handles, s.inflight], [5, 2, 1]);
  } finally {
    native.close(fd);
  }
});

test('garbage a worker writes into the region reads as zero counts, a foreign header as nothing', () => {
  const fd = countersMemfd(native);
  try {
    new CounterWriter(native, fd).request(OP.FUSE_GETATTR, 0.001, false);
    const m = native.mmap(fd, 0, COUNTERS_BYTES);
    assert.ok(typeof m !== 'number');
    const words = new Float64Array(m);
    for (let i = 8; i < words.length; i++) words[i] = [NaN, -1, Infinity, -Infinity][i % 4]!;
    const s = new CounterReader(native, fd).read()!;
    assert.deepEqual(s.ops, [], 'no opcode with a count');
    assert.deepEqual([s.bytesRead, s.bytesWritten, s.inodes, s.handles, s.inflight], [0, 0, 0, 0, 0]);
    words[0] = 1;
    assert.equal(new CounterReader(native, fd).read(), null);
  } finally {
    native.close(fd);
  }
});
