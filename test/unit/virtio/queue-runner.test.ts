import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import pino from 'pino';
import type { PollHandle } from '../../../src/native/binding';
import { GuestMemory } from '../../../src/virtio/guest-memory';
import { SplitQueue, type DescChain } from '../../../src/virtio/split-queue';
import { QueueRunner, type ChainHandler, type QueueRunnerNative } from '../../../src/virtio/queue-runner';
import { GuestRam, VirtqDriver, VIRTQ_DESC_F_NEXT } from '../../support/virtq-driver';
import { SimulatedCrash } from '../../../src/state/crashpoint';

const UA = 0x7f00_0000_0000;
const KICK = 10;
const CALL = 11;

class FakeNative implements QueueRunnerNative {
  polls: Array<{ fd: number; cb: (status: number, events: number) => void; active: boolean }> = [];
  reads = 0;
  writes: Array<[number, number]> = [];
  pollStart(fd: number, _events: number, cb: (status: number, events: number) => void): PollHandle {
    const h = { fd, cb, active: true };
    this.polls.push(h);
    return h as unknown as PollHandle;
  }
  pollStop(h: PollHandle): void { (h as unknown as { active: boolean }).active = false; }
  eventfdRead(fd: number): number { assert.equal(fd, KICK); this.reads++; return 1; }
  eventfdWrite(fd: number, value: number): number { this.writes.push([fd, value]); return 0; }
  /** The kick fd became readable. */
  fire(): void { for (const p of this.polls) if (p.active) p.cb(0, 1); }
  get active(): number { return this.polls.filter((p) => p.active).length; }
}

interface LogLine { level: number; msg: string; head?: number }

function setup(handler: ChainHandler, o: { size?: number; eventIdx?: boolean; batch?: number } = {}) {
  const size = o.size ?? 8;
  const eventIdx = o.eventIdx ?? false;
  const ram = new GuestRam(null, 1 << 20, { plain: true });
  const drv = new VirtqDriver(ram, size, { eventIdx });
  const mem = new GuestMemory(null);
  mem.addRegionBuffer({ gpa: 0, size: ram.size, uaddr: UA, mmapOffset: 0 }, ram.buf.buffer as ArrayBuffer);
  const lines: LogLine[] = [];
  const log = pino({ level: 'trace' }, { write: (s: string) => { lines.push(JSON.parse(s) as LogLine); } });
  const queue = new SplitQueue(mem, {
    size, descVa: UA + drv.descGpa, availVa: UA + drv.availGpa, usedVa: UA + drv.usedGpa, lastAvail: 0, eventIdx, log,
  });
  const native = new FakeNative();
  const runner = new QueueRunner({ native, mem, index: 1, queue, kickFd: KICK, callFd: CALL, handler, log, batch: o.batch });
  return { ram, drv, queue, native, runner, lines };
}

const te = (s: string): Uint8Array => new TextEncoder().encode(s);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Handler that echoes the request into the reply buffer and completes at once. */
const echo: ChainHandler = (chain, complete) => {
  const req = Buffer.concat(chain.readable);
  chain.writable[0].set(req.subarray(0, chain.writable[0].length));
  complete(Math.min(req.length, chain.writableLen));
};

test('sync completions on a kick: one drain, one call per pass', () => {
  const { drv, native, runner } = setup(echo);
  runner.start();
  assert.equal(native.active, 1);
  assert.equal(native.writes.length, 0, 'empty ring: no call');
  for (const s of ['one', 'two', 'three']) drv.add([te(s)], [8], { indirect: false });
  native.fire();
  assert.equal(native.reads, 1);
  assert.deepEqual(native.writes, [[CALL, 1]]);
  const used = drv.takeUsed();
  assert.deepEqual(used.map((u) => Buffer.from(u.in[0].subarray(0, u.len)).toString()), ['one', 'two', 'three']);
});

test('start() serves requests that were already waiting', () => {
  const { drv, native, runner } = setup(echo);
  drv.add([te('early')], [8], { indirect: true });
  runner.start();
  assert.equal(drv.takeUsed().length, 1);
  assert.equal(native.writes.length, 1);
});

test('async completions outside a pass are signalled in the same turn of the event loop', async () => {
  const pending: Array<() => void> = [];
  const { drv, native, runner } = setup((chain, complete) => {
    pending.push(() => complete(chain.writableLen));
  });
  runner.start();
  drv.add([te('a')], [4], { indirect: false });
  drv.add([te('b')], [4], { indirect: false });
  native.fire();
  assert.equal(native.writes.length, 0, 'nothing completed yet');
  assert.equal(runner.inFlight, 2);
  await tick();
  pending[0]();
  assert.equal(drv.takeUsed().length, 1, 'pushed at once');
  await tick();
  assert.equal(native.writes.length, 1, 'signalled before the next turn');
  pending[1]();
  await tick();
  assert.equal(native.writes.length, 2);
  assert.equal(runner.inFlight, 0);
});

test('chains are processed in batches and a pass re-checks avail', async () => {
  let seen = 0;
  const { drv, native, runner } = setup((chain, complete) => { seen++; complete(0); }, { batch: 2 });
  for (let i = 0; i < 5; i++) drv.add([te(`r${i}`)], [4], { indirect: true });
  runner.start();
  assert.equal(seen, 2, 'first batch only');
  assert.equal(native.writes.length, 1);
  for (let i = 0; i < 5 && seen < 5; i++) await tick();
  assert.equal(seen, 5);
  assert.equal(native.writes.length, 3, 'one call per pass');
  // A chain added while a pass runs (coalesced kick) is still served in that pass.
  let added = false;
  const r2 = setup((chain, complete) => {
    if (!added) { added = true; r2.drv.add([te('late')], [4], { indirect: false }); }
    complete(0);
  });
  r2.drv.add([te('first')], [4], { indirect: false });
  r2.runner.start();
  assert.equal(r2.drv.takeUsed().length, 2);
  assert.equal(r2.native.writes.length, 1);
});

test('stop() resolves with lastAvail only after outstanding completions', async () => {
  const pending: Array<() => void> = [];
  const { drv, native, runner } = setup((chain, complete) => { pending.push(() => complete(0)); });
  runner.start();
  for (let i = 0; i < 3; i++) drv.add([te('x')], [4], { indirect: false });
  native.fire();
  let result: number | undefined;
  const p = runner.stop().then((v) => { result = v; });
  assert.equal(native.active, 0, 'poller stopped');
  assert.equal(runner.stop() instanceof Promise, true);
  await tick();
  assert.equal(result, undefined);
  pending[0]();
  pending[1]();
  await tick();
  assert.equal(result, undefined);
  // Nothing more is popped after stop.
  drv.add([te('after')], [4], { indirect: false });
  runner.kick();
  assert.equal(pending.length, 3);
  pending[2]();
  await p;
  assert.equal(result, 3);
  assert.equal(drv.takeUsed().length, 3, 'completions after stop() still reach the used ring');
});

test('stop() with nothing outstanding resolves at once', async () => {
  const { runner } = setup(echo);
  runner.start();
  assert.equal(await runner.stop(), 0);
});

test('double complete is logged and ignored', () => {
  let saved: ((n: number) => void) | undefined;
  const { drv, native, runner, lines } = setup((chain, complete) => { complete(1); saved = complete; });
  drv.add([te('x')], [4], { indirect: false });
  runner.start();
  saved?.(2);
  assert.deepEqual(drv.takeUsed().map((u) => u.len), [1]);
  assert.equal(native.writes.length, 1);
  assert.ok(lines.some((l) => l.level === 50 && /completed twice/.test(l.msg)));
});

test('used length above the writable length is clamped', () => {
  const { drv, runner, lines } = setup((chain, complete) => complete(1e9));
  drv.add([te('x')], [4, 4], { indirect: false });
  runner.start();
  assert.deepEqual(drv.takeUsed().map((u) => u.len), [8]);
  assert.ok(lines.some((l) => l.level === 50 && /clamped/.test(l.msg)));
});

test('a handler that throws gets its chain completed with 0 and an error line; the queue goes on', () => {
  let calls = 0;
  const { drv, native, runner, lines } = setup(() => { calls++; throw new Error('boom'); });
  drv.add([te('x')], [4], { indirect: false });
  drv.add([te('y')], [4], { indirect: false });
  runner.start();
  assert.equal(calls, 2);
  assert.deepEqual(drv.takeUsed().map((u) => u.len), [0, 0]);
  assert.equal(native.writes.length, 1);
  assert.equal(lines.filter((l) => l.level === 50).length, 2);
});

test('a simulated crash (a crash point in an in-process test) passes through the runner', () => {
  const { drv, runner } = setup(() => { throw new SimulatedCrash('crash'); });
  drv.add([te('x')], [4], { indirect: false });
  assert.throws(() => runner.start(), SimulatedCrash);
});

test('an invalid chain alone still gets its used entry signalled', () => {
  let calls = 0;
  const { drv, native, runner } = setup((c, complete) => { calls++; complete(0); });
  const [a] = drv.reserveDesc(1);
  drv.writeDesc(a, 0x10_0000_0000, 4, 0, 0);
  drv.publishAvail(a);
  runner.start();
  assert.equal(calls, 0);
  assert.deepEqual(drv.takeUsed().map((u) => [u.head, u.len]), [[a, 0]]);
  assert.equal(native.writes.length, 1);
});

test('a head re-posted while in flight is not handed out twice', () => {
  const chains: DescChain[] = [];
  const dones: Array<(n: number) => void> = [];
  const { ram, drv, runner, lines } = setup((c, complete) => { chains.push(c); dones.push(complete); });
  const [a, b] = drv.reserveDesc(2);
  const x = ram.alloc(4);
  drv.writeDesc(a, x, 4, VIRTQ_DESC_F_NEXT, b);
  drv.writeDesc(b, x, 4, 2, 0);
  drv.publishAvail(a);
  drv.publishAvail(a);
  runner.start();
  assert.equal(chains.length, 1);
  assert.ok(lines.some((l) => l.level === 50 && l.head === a));
  dones[0](4);
  assert.deepEqual(drv.takeUsed().map((u) => [u.head, u.len]), [[a, 4]]);
});

test('no call fd: completions are pushed without signalling', () => {
  const { drv, native, runner } = setup(echo);
  runner.setCallFd(-1);
  drv.add([te('x')], [4], { indirect: false });
  runner.start();
  assert.equal(drv.takeUsed().length, 1);
  assert.equal(native.writes.length, 0);
});

test('EVENT_IDX: the runner calls only when used_event asks for it', async () => {
  const pending: Array<() => void> = [];
  const { drv, native, runner } = setup((c, complete) => { pending.push(() => complete(0)); }, { eventIdx: true });
  runner.start();
  for (let i = 0; i < 3; i++) drv.add([te('x')], [4], { indirect: false });
  native.fire();
  pending[0]();
  await tick();
  assert.equal(native.writes.length, 1, 'first completion');
  drv.setUsedEvent(10); // driver is not interested until used idx 11
  pending[1]();
  await tick();
  assert.equal(native.writes.length, 1);
  drv.setUsedEvent(2);
  pending[2]();
  await tick();
  assert.equal(native.writes.length, 2);
});
