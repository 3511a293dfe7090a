// Args (src/fuse/structs.ts): every value the guest sends is read within what it sent, and what
// no real value can be comes back as such (-1, 0, an errno).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Args } from '../../../src/fuse/structs';
import { E } from '../../../src/linux/constants';

function args(bytes: number[] | Buffer, len = bytes.length): Args {
  const b = new Uint8Array(8192);
  b.set(bytes);
  const a = new Args(b, Buffer.from(b.buffer), new DataView(b.buffer));
  a.len = len;
  return a;
}

test('u64 gives exact numbers below 2^53 and -1 from there on', () => {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(2n ** 53n - 1n, 0);
  b.writeBigUInt64LE(2n ** 53n, 8);
  const a = args(b);
  assert.equal(a.u64(0), 2 ** 53 - 1);
  assert.equal(a.u64(8), -1);
});

test('id gives the slot for values below 2^32 and 0 (no slot) above', () => {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(7n, 0);
  b.writeBigUInt64LE(2n ** 32n + 7n, 8);
  const a = args(b);
  assert.equal(a.id(0), 7);
  assert.equal(a.id(8), 0);
});

test('a name is one path component: not empty, ".", "..", with "/", nor past NAME_MAX', () => {
  const name = (s: string): number | string => {
    const r = args(Buffer.from(`${s}\0`, 'latin1')).name(0);
    return typeof r === 'number' ? r : r.s;
  };
  assert.equal(name('ok'), 'ok');
  assert.equal(name('\xe9t\xe9'), '\xe9t\xe9', 'bytes that are not UTF-8 survive as latin1');
  for (const bad of ['', '.', '..', 'a/b']) assert.equal(name(bad), -E.EINVAL, JSON.stringify(bad));
  assert.equal(name('x'.repeat(256)), -E.ENAMETOOLONG);
  assert.equal(name('x'.repeat(255)), 'x'.repeat(255));
});

test('a string whose NUL lies past what the guest sent is no string', () => {
  const a = args(Buffer.from('abc\0', 'latin1'), 3);
  assert.equal(a.cstr(0, 100), null);
  assert.equal(a.name(0), -E.EINVAL);
  assert.equal(args(Buffer.from('abc\0')).cstr(0, 2), null, 'longer than max');
});

test('has() checks the length the guest sent, not the buffer', () => {
  const a = args([1, 2, 3, 4], 4);
  assert.ok(a.has(4));
  assert.ok(!a.has(5));
});
