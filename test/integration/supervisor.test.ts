// Worker supervision through upgrades, case by case and deterministically: the incoming worker of
// a planned upgrade (SIGHUP, or the one a re-executed keeper starts after SIGUSR2) is killed,
// or hangs, at each point of its life, and the serving worker is killed in the middle of an
// upgrade. Test holds (VFSD_HOLD=incoming:<point>, src/worker/hold.ts) stop the incoming worker
// exactly where the case needs it. Every case runs a stream of O_APPEND writes and GETATTRs
// through it and ends with: one serving worker, the keeper's decision in its log, every request
// answered exactly once (each reply carries its own unique; used.idx equals requests posted;
// every append in the file once, in order) and check-state clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { loadNative } from '../../src/native/binding';
import { checkState, formatReport } from '../../src/tools/check-state';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { isLive, startDaemon, type Daemon } from '../support/daemon';
import { checkedTransport, usedEntryProblems } from '../support/crash-harness';

type Trigger = 'hup' | 'usr2';
type Point = 'spawned' | 'loading' | 'recovering' | 'serving';

interface Case {
  name: string;
  trigger: Trigger;
  /** Where the incoming worker stops (a test hold); none: it runs freely. */
  hold?: Point;
  /** kill-incoming: SIGKILL it at the hold (or once it serves); hang: leave it held for the
   *  keeper's deadline; kill-serving: SIGKILL the worker that served before the upgrade. */
  action: 'kill-incoming' | 'hang' | 'kill-serving';
  /** What the keeper must log about it. */
  decision: RegExp;
}

const LOST_WHILE_SERVING = /"msg":"incoming worker lost during the upgrade; starting another \(the serving worker serves meanwhile\)"/;
const CRASH = /"msg":"worker exited; starting a new one"/;

const CASES: Case[] = [];
for (const trigger of ['hup', 'usr2'] as const) {
  for (const hold of ['spawned', 'loading'] as const) {
    CASES.push({ name: `the incoming worker killed while ${hold} (${trigger})`, trigger, hold, action: 'kill-incoming', decision: LOST_WHILE_SERVING });
  }
  CASES.push({ name: `the incoming worker killed while recovering (${trigger})`, trigger, hold: 'recovering', action: 'kill-incoming', decision: /"was":"recovering".*"msg":"worker exited; starting a new one"/ });
  CASES.push({ name: `the incoming worker killed once it serves (${trigger})`, trigger, action: 'kill-incoming', decision: /"was":"serving".*"msg":"worker exited; starting a new one"/ });
  CASES.push({ name: `the incoming worker hangs while loading (${trigger})`, trigger, hold: 'loading', action: 'hang', decision: /"msg":"worker did not load in time; killing it"/ });
  CASES.push({ name: `the serving worker killed while the incoming one loads (${trigger})`, trigger, hold: 'loading', action: 'kill-serving', decision: CRASH });
}
CASES.push({ name: 'the incoming worker hangs while recovering (hup)', trigger: 'hup', hold: 'recovering', action: 'hang', decision: /"msg":"worker did not finish recovering in time; killing it"/ });
CASES.push({ name: 'the incoming worker hangs once it serves: the watchdog (hup)', trigger: 'hup', hold: 'serving', action: 'hang', decision: /"msg":"worker stopped answering \(watchdog\); killing it"/ });
CASES.push({ name: 'the serving worker killed right after SIGHUP, no hold (hup)', trigger: 'hup', action: 'kill-serving', decision: CRASH });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function lines(d: Daemon): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const l of d.stderr().split('\n')) {
    if (!l.startsWith('{')) continue;
    try { out.push(JSON.parse(l) as Record<string, unknown>); } catch { /* partial line */ }
  }
  return out;
}

async function until(what: string, d: Daemon, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${d.stderr().slice(-4000)}`);
    await sleep(10);
  }
}

/** Live workers that the keeper said serve (or adopted): exactly one when all is well. */
function servingPids(d: Daemon): number[] {
  const pids = new Set<number>();
  for (const l of lines(d)) {
    if ((l.msg === 'worker serving' || l.msg === 'worker adopted') && typeof l.pid === 'number' && l.role === 'keeper') pids.add(l.pid);
  }
  return [...pids].filter(isLive);
}

for (const c of CASES) {
  test(`supervision: ${c.name}: one worker serves after it, every request answered once`, { timeout: 90_000 }, async () => {
    const d = await startDaemon('ts', {
      args: ['--log-level=info', '--worker-timeout=3'],
      env: c.hold ? { VFSD_HOLD: `incoming:${c.hold}` } : {},
    });
    const problems: string[] = [];
    const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
    let stop = false;
    let loop: Promise<void> | null = null;
    try {
      const { send, posted } = checkedTransport(fe, problems, 30_000);
      const client = new FuseClient(send);
      assert.equal((await client.init()).error, 0);
      const cr = await client.create(1, 'stream', 0o102 | 0o2000 /* O_RDWR|O_CREAT|O_APPEND */);
      assert.equal(cr.error, 0);
      const node = cr.entry!.nodeid;
      let n = 0;
      loop = (async () => {
        while (!stop) {
          const w = await client.write(node, cr.fh!, 0, Buffer.from(`line ${n}\n`));
          if (w.error !== 0) problems.push(`write ${n}: error ${w.error}`);
          n++;
          const g = await client.getattr(node);
          if (g.error !== 0) problems.push(`getattr: error ${g.error}`);
        }
      })();
      await until('the first worker serving', d, () => servingPids(d).length === 1);
      const before = servingPids(d)[0]!;
      const keeper = d.proc.pid!;
      process.kill(keeper, c.trigger === 'hup' ? 'SIGHUP' : 'SIGUSR2');
      if (c.trigger === 'usr2') await until('the re-exec', d, () => d.stderr().includes('"msg":"keeper re-executed; serving on"'));
      const incoming = (): number | undefined => lines(d).filter((l) => l.msg === 'worker started' && l.upgrade === true).map((l) => l.pid as number)[0];
      await until('the incoming worker', d, () => incoming() !== undefined);
      const inc = incoming()!;
      if (c.hold) await until(`the hold at ${c.hold}`, d, () => d.stderr().includes(`"hold":"${c.hold}","msg":"worker holding (VFSD_HOLD)"`));
      else if (c.action === 'kill-incoming') await until('the incoming worker serving', d, () => new RegExp(`"pid":${inc},"msg":"worker serving"`).test(d.stderr()));
      const mark = n;
      if (c.action === 'kill-incoming') process.kill(inc, 'SIGKILL');
      if (c.action === 'kill-serving') process.kill(before, 'SIGKILL');
      await until('the keeper\'s decision', d, () => c.decision.test(d.stderr()));
      // Back to normal: one worker serves (not the one held or killed), and the stream goes on.
      await until('one serving worker', d, () => {
        const s = servingPids(d);
        // Killed right after SIGHUP with no hold, the upgrade goes on: whichever worker took over
        // first, the incoming one serves in the end (an older spare serves only until it loads).
        return s.length === 1 && s[0] !== before && (c.action === 'kill-serving' && !c.hold ? s[0] === inc : s[0] !== inc);
      }, 30_000);
      // A held incoming worker nobody killed is found by its deadline.
      if (c.hold) await until('the held incoming worker gone', d, () => !isLive(inc));
      await until('the stream going on', d, () => n >= mark + 30);
      stop = true;
      await loop;
      loop = null;
      const onDisk = fs.readFileSync(`${d.dir}/stream`, 'utf8').split('\n').filter(Boolean);
      assert.deepEqual(onDisk, Array.from({ length: n }, (_, k) => `line ${k}`), 'every append landed exactly once, in order');
      problems.push(...usedEntryProblems(fe, posted));
      assert.deepEqual(problems, [], problems.join('\n'));
      assert.equal(d.proc.exitCode, null, 'the keeper still serves');
      assert.ok(!isLive(inc) || servingPids(d)[0] === inc, 'the held or killed incoming worker is gone');
      const r = checkState(keeper);
      assert.ok(r.clean, formatReport(r));
    } finally {
      stop = true;
      if (loop) await loop.catch(() => undefined);
      fe.close();
      await d.stop();
    }
  });
}

test('supervision: workers that keep dying before they serve are replaced with a growing wait, not in a tight loop; one that recovers serves', { timeout: 90_000 }, async () => {
  // Without the sandbox a worker opens the share by path: moved away and replaced by another
  // directory, every new worker refuses the adopted maps ("recovered state is for another shared
  // directory") and dies while recovering. Moved back, the next one serves.
  const d = await startDaemon('ts', { args: ['--log-level=info', '--sandbox=none', '--seccomp=none'] });
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const problems: string[] = [];
    const { send } = checkedTransport(fe, problems, 60_000);
    const client = new FuseClient(send);
    assert.equal((await client.init()).error, 0);
    const cr = await client.create(1, 'kept', 0o102);
    assert.equal(cr.error, 0);
    await until('the first worker serving', d, () => servingPids(d).length === 1);
    fs.renameSync(d.dir, `${d.dir}.away`);
    fs.mkdirSync(d.dir);
    const t0 = Date.now();
    process.kill(servingPids(d)[0]!, 'SIGKILL');
    const waits = (): number[] => lines(d).filter((l) => l.msg === 'workers keep dying before they serve; waiting before the next').map((l) => l.inMs as number);
    await until('three waits', d, () => waits().length >= 3, 30_000);
    const w = waits();
    assert.ok(w[1]! > w[0]! && w[2]! > w[1]!, `the waits grow: ${w.join(', ')}`);
    // In a tight loop a worker start costs a Node start-up, no more: far more starts than this.
    const died = lines(d).filter((l) => l.msg === 'worker exited; starting a new one' && l.was === 'recovering').length;
    assert.ok(died <= 3 + w.length + 1, `${died} workers died while recovering in ${Date.now() - t0} ms`);
    fs.rmdirSync(d.dir);
    fs.renameSync(`${d.dir}.away`, d.dir);
    await until('a worker serving again', d, () => servingPids(d).length === 1, 30_000);
    const g = await client.getattr(cr.entry!.nodeid);
    assert.equal(g.error, 0, 'the node the guest held is served again');
    assert.deepEqual(problems, []);
    assert.equal(d.proc.exitCode, null, 'the keeper still serves');
  } finally {
    fe.close();
    await d.stop();
  }
});
