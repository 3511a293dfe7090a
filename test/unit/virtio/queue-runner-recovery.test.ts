// A worker killed mid-stream and its successor, over the same guest memory and in-flight region:
// every request gets exactly one used entry, unfinished ones are re-run in their original order.
import { test, afterEach } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import pino from 'pino';
import type { PollHandle } from '../../../src/native/binding';
import { GuestMemory } from '../../../src/virtio/guest-memory';
import { SplitQueue, type DescChain } from '../../../src/virtio/split-queue';
import { QueueRunner, Replay, type ChainHandler, type QueueRunnerNative } from '../../../src/virtio/queue-runner';
import { InflightRegion, stampBefore, wallMs32 } from '../../../src/state/inflight';
import { armCrashpointForTest, SimulatedCrash } from '../../../src/state/crashpoint';
import { GuestRam, VirtqDriver, VIRTQ_DESC_F_NEXT } from '../../support/virtq-driver';

const UA = 0x7f00_0000_0000;
const KICK = 10;
const CALL = 11;
const SIZE = 8;

class FakeNative implements QueueRunnerNative {
  polls: Array<{ cb: (status: number, events: number) => void; active: boolean }> = [];
  writes = 0;
  pollStart(_fd: number, _events: number, cb: (status: number, events: number) => void): PollHandle {
    const h = { cb, active: true };
    this.polls.push(h);
    return h as unknown as PollHandle;
  }
  pollStop(h: PollHandle): void { (h as unknown as { active: boolean }).active = false; }
  eventfdRead(): number { return 1; }
  eventfdWrite(fd: number): number { assert.equal(fd, CALL); this.writes++; return 0; }
  fire(): void { for (const p of this.polls) if (p.active) p.cb(0, 1); }
}

class Crash extends SimulatedCrash {}

const te = (s: string): Uint8Array => new TextEncoder().encode(s);
const td = (b: Uint8Array): string => new TextDecoder().decode(b);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** The guest: RAM, its driver, and the in-flight region the keeper holds for the device. */
function guest(o: { eventIdx?: boolean } = {}) {
  const ram = new GuestRam(null, 1 << 20, { plain: true });
  const drv = new VirtqDriver(ram, SIZE, { eventIdx: o.eventIdx ?? false });
  const regionBuf = new ArrayBuffer(InflightRegion.sizeFor(SIZE));
  new InflightRegion(regionBuf).format(SIZE);
  const replies = new Map<string, number>(); // reply text → used entries seen
  /** Reap the used ring; every reply names its request. */
  const reap = (): void => {
    for (const u of drv.takeUsed()) {
      const name = u.len === 0 ? `<empty ${u.head}>` : td(u.in[0].subarray(0, u.len));
      replies.set(name, (replies.get(name) ?? 0) + 1);
    }
  };
  return { ram, drv, regionBuf, replies, reap };
}

/** One worker process's view: its own GuestMemory, SplitQueue, region view and runner. */
function worker(g: ReturnType<typeof guest>, handler: ChainHandler, o: { recover?: boolean; batch?: number; stuckBefore?: number } = {}) {
  const mem = new GuestMemory(null);
  mem.addRegionBuffer({ gpa: 0, size: g.ram.size, uaddr: UA, mmapOffset: 0 }, g.ram.buf.buffer as ArrayBuffer);
  const inflight = new InflightRegion(g.regionBuf);
  const rec = o.recover ? inflight.recover(g.drv.usedIdx) : { resubmit: [], lastAvail: 0, repaired: -1, usedGap: 0 };
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'trace' }, { write: (s: string) => { lines.push(JSON.parse(s) as { level: number; msg: string }); } });
  const queue = new SplitQueue(mem, {
    size: SIZE, descVa: UA + g.drv.descGpa, availVa: UA + g.drv.availGpa, usedVa: UA + g.drv.usedGpa,
    lastAvail: rec.lastAvail, eventIdx: g.drv.eventIdx, log,
  });
  const native = new FakeNative();
  const runner = new QueueRunner({
    native, mem, index: 1, queue, kickFd: KICK, callFd: CALL, handler, log, batch: o.batch,
    inflight, resubmit: rec.resubmit, stuckBefore: o.stuckBefore,
  });
  return { queue, native, runner, inflight, rec, lines };
}

/** Echo the request into the reply buffer. */
function reply(chain: DescChain, complete: (n: number) => void): void {
  const req = Buffer.concat(chain.readable);
  chain.writable[0].set(req.subarray(0, chain.writable[0].length));
  complete(Math.min(req.length, chain.writableLen));
}

afterEach(() => {
  armCrashpointForTest(undefined);
});

test('a restarted worker re-runs unfinished requests in order, then new ones, each answered once', async () => {
  const g = guest();
  const names = ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'];
  const headOf = new Map<string, number>();
  for (const n of names) headOf.set(n, g.drv.add([te(n)], [8], { indirect: n !== 'r2' }));
  // Worker 1 answers r1 and r3 at once, r4 a turn later, and never r0, r2, r5.
  const later: Array<() => void> = [];
  const w1 = worker(g, (chain, complete) => {
    const name = td(Buffer.concat(chain.readable));
    if (name === 'r1' || name === 'r3') reply(chain, complete);
    else if (name === 'r4') later.push(() => reply(chain, complete));
  });
  w1.runner.start();
  await tick();
  later[0]();
  assert.equal(w1.runner.inFlight, 3);
  g.reap();
  // The worker dies. The guest keeps posting, and re-posts the heads it got back.
  for (const n of ['r6', 'r7', 'r8']) g.drv.add([te(n)], [8], { indirect: true });

  const order: Array<[string, boolean]> = [];
  const w2 = worker(g, (chain, complete, replay) => {
    order.push([td(Buffer.concat(chain.readable)), replay !== Replay.Fresh]);
    reply(chain, complete);
  }, { recover: true });
  assert.deepEqual(w2.rec.resubmit, ['r0', 'r2', 'r5'].map((n) => headOf.get(n)));
  assert.equal(w2.rec.lastAvail, 6);
  w2.runner.start();
  assert.deepEqual(order, [['r0', true], ['r2', true], ['r5', true], ['r6', false], ['r7', false], ['r8', false]]);
  g.reap();
  assert.deepEqual([...g.replies.entries()].sort(), names.concat(['r6', 'r7', 'r8']).map((n) => [n, 1]).sort());
  assert.equal(w2.queue.lastAvail, 9);
  assert.equal(w2.inflight.usedIdx, g.drv.usedIdx, 'region in step with the ring');
  assert.deepEqual(new InflightRegion(g.regionBuf).recover(g.drv.usedIdx).resubmit, [], 'nothing left in flight');
  assert.equal(w2.native.writes, 1);
});

for (const point of ['after-mark-inflight', 'after-push-used', 'after-post-put']) {
  for (let hit = 1; hit <= 4; hit++) {
    test(`killed at ${point} #${hit}: every request is answered exactly once`, async () => {
      const g = guest({ eventIdx: hit % 2 === 0 });
      const names = ['a', 'b', 'c', 'd', 'e', 'f'];
      for (const n of names) g.drv.add([te(n)], [8], { indirect: n !== 'c' });
      // Worker 1: sync replies for a, c, e; the rest a turn later.
      armCrashpointForTest(`${point}:${hit}`, () => { throw new Crash(point); });
      let crashed = false;
      const later: Array<() => void> = [];
      const w1 = worker(g, (chain, complete) => {
        if (/[ace]/.test(td(Buffer.concat(chain.readable)))) reply(chain, complete);
        else later.push(() => reply(chain, complete));
      });
      try {
        w1.runner.start();
        await tick();
        for (const f of later) f();
      } catch (e) {
        if (!(e instanceof Crash)) throw e;
        crashed = true;
      }
      assert.ok(crashed, 'the crash point was reached');
      armCrashpointForTest(undefined);
      g.reap();
      g.drv.add([te('g')], [8], { indirect: true });

      const seen: string[] = [];
      const w2 = worker(g, (chain, complete) => { seen.push(td(Buffer.concat(chain.readable))); reply(chain, complete); },
        { recover: true });
      if (point === 'after-push-used') assert.equal(w2.rec.usedGap, 1, 'torn completion found');
      else assert.equal(w2.rec.usedGap, 0);
      w2.runner.start();
      g.reap();
      assert.deepEqual([...g.replies.entries()].sort(), names.concat('g').map((n) => [n, 1]).sort());
      assert.equal(seen.length, new Set(seen).size, 'nothing run twice by the new worker');
      assert.equal(w2.queue.lastAvail, 7);
      assert.equal(w2.runner.inFlight, 0);
      assert.ok(w2.native.writes >= 1, 'the guest is signalled after recovery');
    });
  }
}

test('a crash during replay keeps the original order for the next worker', () => {
  const g = guest();
  for (const n of ['x', 'y', 'z']) g.drv.add([te(n)], [8], { indirect: true });
  worker(g, () => { /* never completes */ }).runner.start();
  // Worker 2 completes x and dies publishing y.
  armCrashpointForTest('after-push-used:2', () => { throw new Crash(); });
  const w2 = worker(g, reply, { recover: true });
  assert.throws(() => w2.runner.start(), Crash);
  armCrashpointForTest(undefined);
  g.drv.add([te('w')], [8], { indirect: true });
  const order: Array<[string, boolean]> = [];
  const w3 = worker(g, (chain, complete, replay) => { order.push([td(Buffer.concat(chain.readable)), replay !== Replay.Fresh]); reply(chain, complete); },
    { recover: true });
  w3.runner.start();
  assert.deepEqual(order, [['z', true], ['w', false]]);
  g.reap();
  assert.deepEqual([...g.replies.entries()].sort(), [['w', 1], ['x', 1], ['y', 1], ['z', 1]]);
});

test('with a region, an invalid chain is answered through the tracked path', () => {
  const g = guest();
  const [a] = g.drv.reserveDesc(1);
  g.drv.writeDesc(a, 0x10_0000_0000, 4, 0, 0); // outside guest memory
  g.drv.publishAvail(a);
  g.drv.add([te('ok')], [8], { indirect: true });
  const w = worker(g, reply);
  w.runner.start();
  g.reap();
  assert.deepEqual([...g.replies.keys()].sort(), [`<empty ${a}>`, 'ok']);
  assert.equal(w.inflight.usedIdx, 2);
  assert.equal(w.inflight.isInflight(a), false);
  assert.ok(w.lines.some((l) => /invalid descriptor chain/.test(l.msg)));
});

test('a head re-posted while in flight keeps its place in the region', () => {
  const g = guest();
  const dones: Array<(n: number) => void> = [];
  const [a, b] = g.drv.reserveDesc(2);
  const x = g.ram.alloc(4);
  g.drv.writeDesc(a, x, 4, VIRTQ_DESC_F_NEXT, b);
  g.drv.writeDesc(b, x, 4, 2, 0);
  g.drv.publishAvail(a);
  const mid = g.drv.add([te('mid')], [8], { indirect: true });
  g.drv.publishAvail(a);
  const w = worker(g, (c, complete) => { dones.push(complete); });
  w.runner.start();
  assert.equal(dones.length, 2);
  assert.equal(w.inflight.counterOf(a), 1, 'not re-marked');
  assert.deepEqual(new InflightRegion(g.regionBuf).recover(g.drv.usedIdx).resubmit, [a, mid]);
  assert.ok(w.lines.some((l) => l.level === 50 && /re-posted/.test(l.msg)));
});

test('N completions outside a pass in one turn give one call; the last one is always signalled', async () => {
  const g = guest();
  const pending: Array<() => void> = [];
  const w = worker(g, (chain, complete) => { pending.push(() => complete(0)); });
  w.runner.start();
  for (let i = 0; i < 6; i++) g.drv.add([te(`q${i}`)], [4], { indirect: true });
  w.native.fire();
  assert.equal(pending.length, 6);
  for (let i = 0; i < 4; i++) pending[i]();
  assert.equal(w.native.writes, 0, 'deferred to the end of the turn');
  await tick();
  assert.equal(w.native.writes, 1);
  pending[4]();
  await tick();
  assert.equal(w.native.writes, 2, 'a lone later completion is signalled too');
  // A completion outside a pass followed by a pass in the same turn: the pass's call covers it.
  pending[5]();
  g.drv.add([te('sync')], [4], { indirect: true });
  w.runner.kick();
  assert.equal(pending.length, 7);
  assert.equal(w.native.writes, 3);
  await tick();
  assert.equal(w.native.writes, 3, 'no second call for the same entries');
  pending[6]();
  assert.equal(g.drv.usedIdx, 7);
  await tick();
  assert.equal(w.native.writes, 4);
});

test('stop() signals the last completion before it resolves', async () => {
  const g = guest();
  const pending: Array<() => void> = [];
  const w = worker(g, (chain, complete) => { pending.push(() => complete(0)); });
  w.runner.start();
  g.drv.add([te('s')], [4], { indirect: true });
  w.native.fire();
  const p = w.runner.stop();
  pending[0]();
  assert.equal(w.native.writes, 1, 'signalled synchronously');
  assert.equal(await p, 1);
  w.runner.setCallFd(-1);
  await tick();
  assert.equal(w.native.writes, 1);
});

test('a runner refuses a region formatted for another queue size', () => {
  const g = guest();
  new InflightRegion(g.regionBuf).format(4);
  assert.throws(() => worker(g, reply), /desc_num 4, queue size 8/);
});

test('VFSD_CRASHPOINT kills the process with SIGKILL at the count-th hit only', () => {
  const mod = path.resolve(__dirname, '../../../src/state/crashpoint.js');
  const script = `const fs = require('fs'); const { crashpoint } = require(${JSON.stringify(mod)});
    for (let i = 1; i <= 3; i++) { fs.writeSync(1, i + ' '); crashpoint('p'); crashpoint('q'); }`;
  const run = (spec?: string) => {
    const env = { ...process.env };
    delete env.VFSD_CRASHPOINT;
    if (spec !== undefined) env.VFSD_CRASHPOINT = spec;
    return spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
  };
  const killed = run('p:2');
  assert.equal(killed.signal, 'SIGKILL');
  assert.equal(killed.stdout, '1 2 ');
  assert.equal(run('q').stdout, '1 ');
  const unset = run();
  assert.equal(unset.status, 0);
  assert.equal(unset.stdout, '1 2 3 ');
  assert.equal(run('other').status, 0);
  assert.match(run('p:0').stderr, /VFSD_CRASHPOINT=p:0/);
});

test('after a watchdog kill, requests popped before its threshold are handed over as Stuck, later ones as Replay', async () => {
  const g = guest();
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  g.drv.add([te('old')], [8]);
  const w1 = worker(g, () => { /* never completes: the worker is stuck */ });
  w1.runner.start();
  await sleep(5);
  const threshold = wallMs32();
  await sleep(5);
  g.drv.add([te('new')], [8]);
  w1.runner.kick();
  assert.equal(w1.runner.inFlight, 2);
  const seen: Array<[string, Replay]> = [];
  const w2 = worker(g, (chain, complete, replay) => { seen.push([td(Buffer.concat(chain.readable)), replay]); reply(chain, complete); },
    { recover: true, stuckBefore: threshold });
  w2.runner.start();
  assert.deepEqual(seen, [['old', Replay.Stuck], ['new', Replay.Replay]]);
  g.reap();
  assert.deepEqual([...g.replies.keys()].sort(), ['new', 'old']);
});

test('stamps compare modulo 2^32', () => {
  assert.ok(stampBefore(0xfffffff0, 0x10), 'across the wrap');
  assert.ok(!stampBefore(0x10, 0xfffffff0));
  assert.ok(!stampBefore(5, 5));
});
