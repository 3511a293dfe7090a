// The device state region: double-buffered publish, and what a reader sees of a torn write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { loadNative } from '../../../src/native/binding';
import { DeviceRegion, readDeviceState, DEVICE_HEADER, DEVICE_SLOT_BYTES, DH } from '../../../src/state/device-region';

const native = loadNative();

test('the last published state is what a reader (and a re-executed keeper adopting the fd) sees', () => {
  const r = new DeviceRegion(native);
  try {
    assert.equal(r.read(), null, 'nothing published yet');
    r.write({ features: 1, rings: [] });
    r.write({ features: 2, rings: [{ num: 128 }] });
    assert.deepEqual(r.read(), { features: 2, rings: [{ num: 128 }] });
    const again = new DeviceRegion(native, r.fd);
    assert.deepEqual(again.read(), { features: 2, rings: [{ num: 128 }] });
    again.write({ features: 3 });
    assert.deepEqual(readDeviceState(fs.readFileSync(`/proc/self/fd/${r.fd}`)), { features: 3 });
  } finally {
    fs.closeSync(r.fd);
  }
});

test('a write torn before the switch leaves the previous state readable', () => {
  const r = new DeviceRegion(native);
  try {
    r.write({ v: 'old' });
    const b = fs.readFileSync(`/proc/self/fd/${r.fd}`);
    // What a crash after the new slot's bytes and length, before the active word, leaves.
    const inactive = 1 - b.readUInt32LE(DH.active * 4);
    const json = Buffer.from(JSON.stringify({ v: 'new, never published' }));
    json.copy(b, DEVICE_HEADER + inactive * DEVICE_SLOT_BYTES);
    b.writeUInt32LE(json.length, (inactive === 0 ? DH.len0 : DH.len1) * 4);
    assert.deepEqual(readDeviceState(b), { v: 'old' });
  } finally {
    fs.closeSync(r.fd);
  }
});

test('a state larger than a slot is refused and the old one stays', () => {
  const r = new DeviceRegion(native);
  try {
    assert.ok(r.write({ v: 1 }));
    assert.equal(r.write({ big: 'x'.repeat(DEVICE_SLOT_BYTES) }), false);
    assert.deepEqual(r.read(), { v: 1 });
  } finally {
    fs.closeSync(r.fd);
  }
});

test('a malformed region is reported, not misread', () => {
  assert.throws(() => readDeviceState(Buffer.alloc(10)), /shorter than the header/);
  const b = Buffer.alloc(DEVICE_HEADER + 2 * 64);
  assert.throws(() => readDeviceState(b), /magic/);
});
