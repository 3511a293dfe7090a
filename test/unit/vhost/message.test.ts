import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  HEADER_SIZE,
  MAX_PAYLOAD,
  PayloadSize,
  REPLY_FLAGS,
  Req,
  VHOST_USER_NEED_REPLY_MASK,
  VhostUserError,
  bit,
  bits,
  checkRequestHeader,
  decodeEmpty,
  decodeHeader,
  decodeLog,
  decodeMemTable,
  decodeSingleMemRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeHeader,
  encodeMemTable,
  encodeMessage,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  hasBit,
  isSubset,
  maskAnd,
  maskClear,
  maskOr,
  needsReply,
  requestName,
} from '../../../src/vhost/message';

function throwsKind(fn: () => unknown, kind: string): void {
  assert.throws(fn, (e: unknown) => e instanceof VhostUserError && e.kind === kind);
}

function u64le(lo: number, hi: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, lo, true);
  v.setUint32(4, hi, true);
  return b;
}

test('request codes carry the spec numbers and names', () => {
  assert.equal(Req.VHOST_USER_GET_FEATURES, 1);
  assert.equal(Req.VHOST_USER_SET_VRING_ENABLE, 18);
  assert.equal(Req.VHOST_USER_SET_BACKEND_REQ_FD, 21);
  assert.equal(Req.VHOST_USER_GET_INFLIGHT_FD, 31);
  assert.equal(Req.VHOST_USER_SET_INFLIGHT_FD, 32);
  assert.equal(Req.VHOST_USER_RESET_DEVICE, 34);
  assert.equal(Req.VHOST_USER_GET_MAX_MEM_SLOTS, 36);
  assert.equal(Req.VHOST_USER_ADD_MEM_REG, 37);
  assert.equal(Req.VHOST_USER_REM_MEM_REG, 38);
  assert.equal(Req.VHOST_USER_SET_STATUS, 39);
  assert.equal(Req.VHOST_USER_GET_STATUS, 40);
  assert.equal(requestName(5), 'VHOST_USER_SET_MEM_TABLE');
  assert.equal(requestName(999), 'UNKNOWN(999)');
});

test('header round trip; 12 bytes, native order', () => {
  const b = encodeHeader({ request: 13, flags: 0x9, size: 8 });
  assert.equal(b.length, HEADER_SIZE);
  assert.deepEqual([...b], [13, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0]);
  assert.deepEqual(decodeHeader(b), { request: 13, flags: 9, size: 8 });
  const m = encodeMessage(1, REPLY_FLAGS, encodeU64(7));
  assert.equal(m.length, 20);
  assert.deepEqual(decodeHeader(m), { request: 1, flags: 5, size: 8 });
  assert.equal(decodeU64(m.subarray(12)), 7);
  throwsKind(() => decodeHeader(new Uint8Array(11)), 'bad-header');
});

test('request header checks: version, REPLY bit, payload bound', () => {
  checkRequestHeader({ request: 1, flags: 1, size: 0 });
  checkRequestHeader({ request: 1, flags: 1 | VHOST_USER_NEED_REPLY_MASK, size: MAX_PAYLOAD });
  throwsKind(() => checkRequestHeader({ request: 1, flags: 2, size: 0 }), 'bad-header');
  throwsKind(() => checkRequestHeader({ request: 1, flags: 0, size: 0 }), 'bad-header');
  throwsKind(() => checkRequestHeader({ request: 1, flags: REPLY_FLAGS, size: 0 }), 'bad-header');
  throwsKind(() => checkRequestHeader({ request: 1, flags: 1, size: MAX_PAYLOAD + 1 }), 'bad-header');
  assert.equal(needsReply(0x9), true);
  assert.equal(needsReply(0x1), false);
});

test('u64: exact below 2^53, rejected at and above, wrong sizes rejected', () => {
  assert.equal(decodeU64(encodeU64(0x170000000)), 0x170000000);
  assert.equal(decodeU64(encodeU64(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
  assert.equal(decodeU64(u64le(0xffffffff, 0x1fffff)), 2 ** 53 - 1);
  throwsKind(() => decodeU64(u64le(0, 0x200000)), 'bad-value');
  throwsKind(() => decodeU64(u64le(0, 0x80000000)), 'bad-value');
  throwsKind(() => decodeU64(new Uint8Array(4)), 'bad-size');
  throwsKind(() => decodeU64(new Uint8Array(16)), 'bad-size');
  assert.throws(() => encodeU64(2 ** 53));
  assert.throws(() => encodeU64(-1));
});

test('empty payloads', () => {
  decodeEmpty(new Uint8Array(0));
  throwsKind(() => decodeEmpty(new Uint8Array(8)), 'bad-size');
});

test('vring state: 8 bytes', () => {
  const b = encodeVringState({ index: 2, num: 128 });
  assert.equal(b.length, PayloadSize.vringState);
  assert.deepEqual(decodeVringState(b), { index: 2, num: 128 });
  throwsKind(() => decodeVringState(new Uint8Array(4)), 'bad-size');
  throwsKind(() => decodeVringState(new Uint8Array(12)), 'bad-size');
});

test('vring addr: 40 bytes in the order index, flags, desc, used, avail, log', () => {
  const a = { index: 1, flags: 0, descVa: 0x7fe3d6a73000, usedVa: 0x7fe3d6a73940, availVa: 0x7fe3d6a73800, logGpa: 0x2a74940 };
  const b = encodeVringAddr(a);
  assert.equal(b.length, 40);
  const v = new DataView(b.buffer);
  assert.equal(v.getUint32(16, true) + v.getUint32(20, true) * 2 ** 32, a.usedVa);
  assert.equal(v.getUint32(24, true) + v.getUint32(28, true) * 2 ** 32, a.availVa);
  assert.deepEqual(decodeVringAddr(b), a);
  throwsKind(() => decodeVringAddr(new Uint8Array(32)), 'bad-size');
  const bad = encodeVringAddr(a);
  bad.set(u64le(0, 0xffffffff), 8);
  throwsKind(() => decodeVringAddr(bad), 'bad-value');
});

test('memory table: 8 + 32n bytes, n <= 8, size must match n', () => {
  const regions = [
    { gpa: 0, size: 0x20000000, uaddr: 0x7fe3d3fff000, mmapOffset: 0 },
    { gpa: 0x100000000, size: 0x1000, uaddr: 0x7f0000000000, mmapOffset: 0x1000 },
  ];
  const b = encodeMemTable(regions);
  assert.equal(b.length, 8 + 64);
  assert.deepEqual(decodeMemTable(b), regions);
  assert.deepEqual(decodeMemTable(encodeMemTable([])), []);
  throwsKind(() => decodeMemTable(b.subarray(0, 40)), 'bad-size'); // says 2, carries 1
  throwsKind(() => decodeMemTable(new Uint8Array(4)), 'bad-size');
  const full = new Uint8Array(8 + 8 * 32); // old-style full struct with nregions = 1
  full.set(encodeMemTable([regions[0]]));
  throwsKind(() => decodeMemTable(full), 'bad-size');
  const nine = new Uint8Array(8 + 9 * 32);
  new DataView(nine.buffer).setUint32(0, 9, true);
  throwsKind(() => decodeMemTable(nine), 'bad-value');
  const zero = encodeMemTable([{ ...regions[0], size: 1 }]);
  zero.fill(0, 16, 24); // size field = 0
  throwsKind(() => decodeMemTable(zero), 'bad-value');
  const wrap = encodeMemTable([regions[0]]);
  wrap.set(u64le(0xfffff000, 0x1fffff), 8); // gpa near 2^53: gpa + size overflows
  throwsKind(() => decodeMemTable(wrap), 'bad-value');
});

test('single memory region: u64 padding + region = 40 bytes', () => {
  const r = { gpa: 0, size: 0x20000000, uaddr: 0x7fe3d3fff000, mmapOffset: 0 };
  const b = encodeSingleMemRegion(r);
  assert.equal(b.length, 40);
  assert.deepEqual([...b.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(decodeSingleMemRegion(b), r);
  throwsKind(() => decodeSingleMemRegion(b.subarray(8)), 'bad-size');
});

test('vring file: index in bits 0-7, NOFD in bit 8, nothing above', () => {
  assert.deepEqual(decodeVringFile(encodeVringFile({ index: 3, noFd: false })), { index: 3, noFd: false });
  assert.deepEqual(decodeVringFile(encodeVringFile({ index: 255, noFd: true })), { index: 255, noFd: true });
  assert.equal(decodeU64(encodeVringFile({ index: 1, noFd: true })), 0x101);
  throwsKind(() => decodeVringFile(encodeU64(0x200)), 'bad-value');
  throwsKind(() => decodeVringFile(new Uint8Array(4)), 'bad-size');
});

test('log description: 16 bytes', () => {
  const b = new Uint8Array(16);
  b.set(u64le(0x1000, 0), 0);
  assert.deepEqual(decodeLog(b), { mmapSize: 0x1000, mmapOffset: 0 });
  throwsKind(() => decodeLog(new Uint8Array(8)), 'bad-size');
});

test('feature masks above 32 bits', () => {
  const f = bits(28, 29, 30, 32);
  assert.equal(f, 0x170000000);
  assert.equal(hasBit(f, 32), true);
  assert.equal(hasBit(f, 31), false);
  assert.equal(hasBit(f, 0), false);
  assert.equal(maskAnd(f, bits(32, 33)), bit(32));
  assert.equal(maskOr(bit(0), bit(40)), 2 ** 40 + 1);
  assert.equal(maskClear(f, bit(30)), 0x130000000);
  assert.equal(isSubset(bits(28, 32), f), true);
  assert.equal(isSubset(bits(28, 33), f), false);
  assert.equal(isSubset(0, 0), true);
  assert.equal(maskAnd(0x1b22b, 2 ** 17 - 1), 0x1b22b);
});
