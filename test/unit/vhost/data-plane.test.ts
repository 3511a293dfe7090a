// LocalDataPlane resuming a ring after a worker restart, when the in-flight region it is handed
// is corrupted and InflightRegion.recover refuses it (as the state-recovery fuzz target makes it
// do): the ring must go on, not fail every worker that tries it.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import pino from 'pino';
import type { NativeBinding, PollHandle } from '../../../src/native/binding';
import { LocalDataPlane } from '../../../src/vhost/data-plane';
import { GuestMemory } from '../../../src/virtio/guest-memory';
import { InflightRegion } from '../../../src/state/inflight';
import { GuestRam, VirtqDriver } from '../../support/virtq-driver';

const UA = 0x7f00_0000_0000;
const INFLIGHT_FD = 50;

test('a corrupted in-flight region is reported and replaced; the ring serves new requests', async () => {
  const ram = new GuestRam(null, 1 << 20, { plain: true });
  const drv = new VirtqDriver(ram, 8);
  const mem = new GuestMemory(null);
  mem.addRegionBuffer({ gpa: 0, size: ram.size, uaddr: UA, mmapOffset: 0 }, ram.buf.buffer as ArrayBuffer);
  const region = new ArrayBuffer(InflightRegion.sizeFor(8));
  new InflightRegion(region).format(8);
  new Uint16Array(region)[5] = 3; // desc_num 3: not a queue size
  const native = {
    mmap: (fd: number) => (fd === INFLIGHT_FD ? region : -9),
    munmap: () => 0,
    pollStart: (_fd: number, _ev: number, cb: (status: number, events: number) => void) => { kick = cb; return {} as PollHandle; },
    pollStop: () => {},
    eventfdRead: () => 1,
    eventfdWrite: () => 0,
  } as unknown as NativeBinding;
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s) as { level: number; msg: string }); } });
  const served: number[] = [];
  let kick: ((status: number, events: number) => void) | null = null;
  const plane = new LocalDataPlane({ native, log, makeHandler: () => (chain, complete) => { served.push(chain.head); complete(0); } });
  assert.doesNotThrow(() => plane.startRing({
    index: 1, size: 8, descVa: UA + drv.descGpa, availVa: UA + drv.availGpa, usedVa: UA + drv.usedGpa,
    base: 0, eventIdx: false, kickFd: 10, callFd: 11, inflightFd: INFLIGHT_FD, recover: true,
  }, { regions: [], mem }));
  assert.ok(lines.some((l) => l.level === 50 && /in-flight region unusable/.test(l.msg)), 'reported');
  assert.equal(new InflightRegion(region).validate(8), null, 'a fresh region in its place');
  const head = drv.add([new Uint8Array(4)], [16]);
  kick!(0, 1); // the kick fd became readable
  assert.deepEqual(served, [head]);
  assert.equal(await plane.stopRing(1), 1);
});
