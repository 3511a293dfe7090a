// Real-guest kill -9 / upgrade test (issue 3): a Linux guest under QEMU 7.2 (TCG) runs the
// verifying workload scripts/guest/workloads/survive.sh on ./bin/virtiofsd-ts while this test,
// from the host, in one boot:
//   phase 1  SIGKILLs the current worker 20 times at random moments (gaps 0.5-3 s),
//   phase 2  sends 5 planned upgrades (SIGHUP to the keeper),
//   phase 3  re-executes the keeper once (SIGUSR2),
//   phase 4  goes on SIGKILLing the worker until the guest's churn is done (bounded).
// Pass: the guest workload exits 0 (it checks every step, the held and the unlinked-but-open
// files, the fcntl lock, st_ino before/after); its digest of the result tree equals the digest
// of the same workload run on the host directly (no virtio-fs, no kills: the tree is
// deterministic) and the host's digest of the share after the guest is gone; the st_ino the
// guest recorded are the host's; the keeper (same pid throughout) logged a 'worker started'
// line for every restart (>= 21 + 5); every worker that met an event ran sandboxed (default
// flags), checked from outside right before the event (test/support/sandbox.ts).
// Each event's guest-visible stall (the longest a guest operation waited after it) is reported
// with t.diagnostic: the guest's churn logs CLOCK_MONOTONIC start/end of every
// operation, and clock markers it creates in the share (seen on the host through inotify) map
// guest time onto host time.
//
// Env: VFSD_E2E_SKIP=1 skips; VFSD_E2E_TIMEOUT (s, default 720) per boot; VFSD_E2E_KEEP=1 keeps
// the temp dir; VFSD_KILL_SEED fixes the random schedule; SURVIVE_ITERS (default 1400) the
// churn length. The churn does its iterations, then goes on with iterations that leave the tree
// as it is until the host, its schedule done, creates $SHARE/clock/stop: the result stays
// deterministic however slow the guest or long the schedule. See docs/reliability.md.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO, isLive } from '../support/daemon';
import { sandboxProblem, waitInnerWorker } from '../support/sandbox';



const GUEST = path.join(REPO, 'scripts', 'guest');
const WL = path.join(GUEST, 'workloads');
const BOOT_TIMEOUT_S = Number(process.env.VFSD_E2E_TIMEOUT ?? 720);
const KEEP = process.env.VFSD_E2E_KEEP === '1';
const ITERS = Number(process.env.SURVIVE_ITERS ?? 1400);
/** The marker the churn creates when it is over (survive_helper.c); numbered ones are >= 0. */
const END_MARKER = -1;
const KILLS_FIRST = 20;
const HUPS = 5;
const USR2S = 1;
const MAX_EVENTS = 120;

type Kind = 'kill' | 'hup' | 'usr2';
interface Ev { kind: Kind; n: number; hostMs: number; pid: number }
interface Op { iter: number; op: string; t0: number; t1: number }

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** xorshift32, seeded: the schedule of a failing run can be replayed (VFSD_KILL_SEED). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => { clearTimeout(t); resolve(true); });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const kill = (sig: NodeJS.Signals): void => {
    try { process.kill(-(child.pid as number), sig); } catch { try { child.kill(sig); } catch { /* gone */ } }
  };
  kill('SIGTERM');
  if (!(await waitExit(child, 5000))) { kill('SIGKILL'); await waitExit(child, 5000); }
}

function tail(file: string, lines: number): string {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
  } catch {
    return `(no ${path.basename(file)})`;
  }
}

function readOr(file: string, dflt = ''): string {
  try { return fs.readFileSync(file, 'utf8'); } catch { return dflt; }
}

function digestDiff(a: string, b: string, max = 15): string {
  const la = a.split('\n');
  const lb = b.split('\n');
  const sa = new Set(la);
  const sb = new Set(lb);
  return [...la.filter((l) => !sb.has(l)).slice(0, max).map((l) => '- ' + l),
    ...lb.filter((l) => !sa.has(l)).slice(0, max).map((l) => '+ ' + l)].join('\n');
}

interface LogLine { level: number; msg: string; pid?: number; [k: string]: unknown }
function logLines(file: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of readOr(file).split('\n')) {
    if (!line.startsWith('{')) continue;
    try { out.push(JSON.parse(line) as LogLine); } catch { /* partial line */ }
  }
  return out;
}
function workerPids(file: string): number[] {
  return logLines(file).filter((l) => l.msg === 'worker started' && typeof l.pid === 'number').map((l) => l.pid as number);
}
/** The newest worker the keeper logged as started that is still alive: the serving one, or one
 *  still loading for an upgrade (killing that one is a case of its own: the keeper must notice
 *  at once and start another). */
function newestWorker(file: string): number | undefined {
  return workerPids(file).reverse().find(isLive);
}

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}
const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(0)} ms` : '?');

/** Host-side: compile the helper once, run the workload on a plain host directory. */
function reference(workDir: string): { helper: string; digest: string; log: string } {
  const helper = path.join(workDir, 'survive_helper');
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-Werror', '-o', helper, path.join(WL, 'survive_helper.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `gcc survive_helper.c failed:\n${cc.stderr}`);
  const share = path.join(workDir, 'ref-share');
  const out = path.join(workDir, 'ref-out');
  fs.mkdirSync(share);
  fs.mkdirSync(out);
  const r = spawnSync('sh', [path.join(WL, 'survive.sh')], {
    cwd: share, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, SHARE: share, OUT: out, SURVIVE_REF: '1', SURVIVE_HELPER: helper, SURVIVE_ITERS: String(ITERS) },
  });
  const log = readOr(path.join(out, 'survive.log'));
  assert.equal(r.status, 0, `reference run of survive.sh on the host failed (exit ${r.status}):\n${log}\n${r.stderr}`);
  return { helper, digest: readOr(path.join(out, 'survive.digest')), log };
}

interface Mapping { a: number; b: number; used: number; maxResidualMs: number }

/** host_ms = a + b * guest_s*1000, fitted on the clock markers whose create was quick. */
function fitClock(markers: Map<number, number>, trace: Op[]): Mapping | null {
  const pts: Array<[number, number]> = [];
  for (const o of trace) {
    if (o.op !== 'sync') continue;
    const h = markers.get(o.iter); // for a marker, iter is its number (-1: sync-end)
    if (h === undefined || (o.t1 - o.t0) * 1000 > 25) continue;
    // (a marker whose create spanned a restart took long in the guest: left out above)
    pts.push([((o.t0 + o.t1) / 2) * 1000, h]);
  }
  // least squares, then once more without the markers the host saw late (its event loop was
  // busy reading the daemon's log, say): more than 10 ms off the first fit
  const fit = (ps: Array<[number, number]>): Mapping | null => {
    if (ps.length < 2) return null;
    const n = ps.length;
    const mg = ps.reduce((s, p) => s + p[0], 0) / n;
    const mh = ps.reduce((s, p) => s + p[1], 0) / n;
    let sxy = 0;
    let sxx = 0;
    for (const [g, h] of ps) { sxy += (g - mg) * (h - mh); sxx += (g - mg) ** 2; }
    const b = sxx > 0 ? sxy / sxx : 1;
    const a = mh - b * mg;
    return { a, b, used: n, maxResidualMs: Math.max(...ps.map(([g, h]) => Math.abs(a + b * g - h))) };
  };
  const first = fit(pts);
  if (!first) return null;
  const kept = pts.filter(([g, h]) => Math.abs(first.a + first.b * g - h) <= 10);
  return kept.length >= Math.max(2, pts.length / 2) ? fit(kept) ?? first : first;
}

interface Stall { ev: Ev; stallMs: number; op: string; iter: number }

/**
 * For each event, the guest-visible stall: the longest time a churn operation waited after the
 * event (its end minus the later of its start and the event), over the operations that were in
 * flight at the event or started within 1 s after it (and before the next event). A request the
 * dying worker had already answered ends within a millisecond; one that the next worker (or the
 * re-run of it) answers ends when that worker serves it.
 */
function stalls(trace: Op[], events: Ev[], m: Mapping): { per: Stall[]; baseline: number[] } {
  const ops = trace.filter((o) => o.op !== 'verify');
  const toGuest = (hostMs: number): number => (hostMs - m.a) / m.b / 1000;
  const gEvents = events.map((e) => toGuest(e.hostMs));
  const per: Stall[] = [];
  for (let k = 0; k < events.length; k++) {
    const gk = gEvents[k]!;
    const until = Math.min(gk + 1, k + 1 < events.length ? gEvents[k + 1]! : Infinity);
    let worst: Op | null = null;
    let d = -1;
    for (const o of ops) {
      if (o.t1 <= gk || o.t0 >= until) continue;
      const w = o.t1 - Math.max(o.t0, gk);
      if (w > d) { d = w; worst = o; }
    }
    if (worst) per.push({ ev: events[k]!, stallMs: d * 1000, op: worst.op, iter: worst.iter });
  }
  // latencies of operations nowhere near an event (2 s after each), for comparison
  const baseline = ops.filter((o) => !gEvents.some((g) => o.t1 > g && o.t0 < g + 2)).map((o) => (o.t1 - o.t0) * 1000).sort((x, y) => x - y);
  return { per, baseline };
}

function markerIndex(name: string): number | null {
  if (name === 'sync-end') return END_MARKER;
  const m = /^sync-(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

function parseTrace(file: string): Op[] {
  const out: Op[] = [];
  for (const line of readOr(file).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(' ');
    if (f.length < 4) continue;
    out.push({ iter: Number(f[0]), op: f[1]!, t0: Number(f[2]), t1: Number(f[3]) });
  }
  return out;
}

const skipReason = ((): string | false => {
  if (process.env.VFSD_E2E_SKIP === '1') return 'VFSD_E2E_SKIP=1';
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs linux x86_64';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (apt-get, drop_caches in the guest)';
  return false;
})();

test('real guest survives 20+ worker SIGKILLs, 5 upgrades (SIGHUP) and a keeper re-exec (SIGUSR2)',
  { skip: skipReason, timeout: (10 * 60 + BOOT_TIMEOUT_S) * 1000 }, async (t: TestContext) => {
    const s0 = Date.now();
    const setup = spawnSync('bash', [path.join(GUEST, 'setup.sh')], { cwd: REPO, encoding: 'utf8', timeout: 15 * 60 * 1000 });
    assert.equal(setup.status, 0, `scripts/guest/setup.sh failed:\n${setup.stderr}\n${setup.stdout}`);

    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-kill-'));
    let ok = false;
    try {
      const ref = reference(workDir);
      const refDigest = ref.digest;
      assert.ok(refDigest.includes('total '), 'the reference run produced no digest');
      t.diagnostic(`reference (host, no virtio-fs): ${refDigest.trim().split('\n').at(-1)} after ${((Date.now() - s0) / 1000).toFixed(1)} s`);

      const share = path.join(workDir, 'share');
      const out = path.join(workDir, 'out');
      const sock = path.join(workDir, 'vhost.sock');
      const blogPath = path.join(workDir, 'backend.log');
      fs.mkdirSync(share);
      fs.mkdirSync(out);

      // --- the daemon (keeper), its stderr in a file we read for worker pids
      const blog = fs.openSync(blogPath, 'w');
      const daemon = spawn(path.join(REPO, 'bin', 'virtiofsd-ts'),
        [`--socket-path=${sock}`, `--shared-dir=${share}`, '--cache=auto', '--xattr', '--log-level=info'],
        { cwd: REPO, stdio: ['ignore', blog, blog], detached: true });
      fs.closeSync(blog);
      const keeperPid = daemon.pid!;
      let daemonExit: string | null = null;
      daemon.once('exit', (code, sig) => { daemonExit = `code ${code} signal ${sig}`; });

      // --- the clock markers: share/clock/sync-N, stamped on the host when inotify reports them
      const markers = new Map<number, number>();
      const watchers: fs.FSWatcher[] = [];
      const seeMarkers = (dir: string): void => {
        let names: string[] = [];
        try { names = fs.readdirSync(dir); } catch { return; }
        const now = performance.now();
        for (const n of names) {
          const idx = markerIndex(n);
          if (idx !== null && !markers.has(idx)) markers.set(idx, now);
        }
      };
      const clockDir = path.join(share, 'clock');
      let clockWatched = false;
      const watchClock = (): void => {
        if (clockWatched || !fs.existsSync(clockDir)) return;
        try {
          watchers.push(fs.watch(clockDir, (_e, name) => {
            const now = performance.now();
            const idx = name ? markerIndex(String(name)) : null;
            if (idx !== null && !markers.has(idx)) markers.set(idx, now);
          }));
          clockWatched = true;
          seeMarkers(clockDir);
        } catch { /* removed again: next time */ }
      };

      let runExit: number | null = null;
      let runOut = '';
      let run: ChildProcess | null = null;
      const events: Ev[] = [];
      const problems: string[] = [];
      let sandboxChecked = 0;
      const seed = Number(process.env.VFSD_KILL_SEED ?? (Date.now() & 0x7fffffff));
      const rand = rng(seed);
      let guestSeconds = 0;
      try {
        for (let i = 0; i < 300 && !fs.existsSync(sock); i++) {
          if (daemonExit) throw new Error(`daemon exited (${daemonExit}) before listening:\n${tail(blogPath, 20)}`);
          await sleep(50);
        }
        assert.ok(fs.existsSync(sock), `daemon socket ${sock} did not appear`);
        watchers.push(fs.watch(share, () => watchClock()));

        const g0 = Date.now();
        run = spawn('bash', [path.join(GUEST, 'run.sh'), '--socket', sock, '--tag', 'myfs', '--script', path.join(WL, 'survive.sh'),
          '--out', out, '--timeout', String(BOOT_TIMEOUT_S),
          '--env', `SURVIVE_ITERS=${ITERS}`, '--env', `SURVIVE_HELPER=/mnt/host${ref.helper}`, '--env', 'SURVIVE_UNTIL=/mnt/vfs/clock/stop'],
        { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
        run.stdout?.on('data', (d: Buffer) => { runOut += d.toString(); });
        run.stderr?.on('data', (d: Buffer) => { runOut += d.toString(); });
        const runDone = new Promise<void>((resolve) => run!.once('close', () => { runExit = run!.exitCode; resolve(); }));
        const guard = setTimeout(() => { if (run) void stopChild(run); }, (BOOT_TIMEOUT_S + 60) * 1000);

        // --- wait for the churn to start (marker 0), then the schedule
        const finished = (): boolean => runExit !== null || markers.has(END_MARKER);
        let stopWritten = false;
        while (!markers.has(0) && runExit === null) { watchClock(); await sleep(20); }
        t.diagnostic(`guest churn started ${((Date.now() - g0) / 1000).toFixed(1)} s after QEMU start; kill schedule seed ${seed}`);
        let lastTarget = -1;
        const counts: Record<Kind, number> = { kill: 0, hup: 0, usr2: 0 };
        while (!finished() && events.length < MAX_EVENTS) {
          const gap = 500 + rand() * 2500;
          const until = performance.now() + gap;
          while (performance.now() < until && !finished()) await sleep(Math.min(20, until - performance.now()));
          if (finished()) break;
          if (!stopWritten && counts.kill >= KILLS_FIRST && counts.hup >= HUPS && counts.usr2 >= USR2S) {
            // the required schedule is done: the churn may end once its iterations are
            fs.writeFileSync(path.join(clockDir, 'stop'), '');
            stopWritten = true;
          }
          if (daemonExit) { problems.push(`the keeper exited (${daemonExit}) during the run`); break; }
          const kind: Kind = counts.kill < KILLS_FIRST ? 'kill' : counts.hup < HUPS ? 'hup' : counts.usr2 < USR2S ? 'usr2' : 'kill';
          // the newest worker the keeper started; a new one after each event
          let target = newestWorker(blogPath);
          const waitStart = performance.now();
          while ((target === undefined || target === lastTarget) && performance.now() - waitStart < 15_000) {
            await sleep(10);
            target = newestWorker(blogPath);
          }
          if (target === undefined || target === lastTarget) {
            problems.push(`no new worker was logged within 15 s after event ${events.length} (${events.at(-1)?.kind ?? 'start'})`);
            break;
          }
          const worker = target;
          // Every worker that served (default flags: sandboxed), checked from outside before its event.
          const up = await waitInnerWorker(worker, 15_000).then(() => true, () => false);
          const notSandboxed = up ? sandboxProblem(worker, share) : `worker ${worker} did not come up within 15 s`;
          if (notSandboxed) problems.push(notSandboxed);
          else sandboxChecked++;
          try {
            if (kind === 'kill') process.kill(worker, 'SIGKILL');
            else process.kill(keeperPid, kind === 'hup' ? 'SIGHUP' : 'SIGUSR2');
          } catch (e) {
            problems.push(`${kind} of ${kind === 'kill' ? `worker ${worker}` : `keeper ${keeperPid}`}: ${(e as Error).message}`);
            break;
          }
          counts[kind]++;
          events.push({ kind, n: counts[kind], hostMs: performance.now(), pid: kind === 'kill' ? worker : keeperPid });
          lastTarget = worker;
        }
        t.diagnostic(`events sent: ${counts.kill} SIGKILL (worker), ${counts.hup} SIGHUP, ${counts.usr2} SIGUSR2 (keeper), over ${((Date.now() - g0) / 1000).toFixed(1)} s; sandbox checked for ${sandboxChecked} workers`);
        await runDone;
        clearTimeout(guard);
        guestSeconds = (Date.now() - g0) / 1000;
        t.diagnostic(`run.sh exit ${runExit} after ${guestSeconds.toFixed(1)} s wall`);
        for (const line of runOut.trim().split('\n')) if (line) t.diagnostic(`run.sh: ${line}`);
        if (!(await waitExit(daemon, 5000))) {
          problems.push('the keeper did not exit within 5 s after QEMU disconnected');
          await stopChild(daemon);
        }
      } finally {
        for (const w of watchers) w.close();
        if (run) await stopChild(run);
        await stopChild(daemon);
      }

      // --- what the daemon logged
      const lines = logLines(blogPath);
      const started = lines.filter((l) => l.msg === 'worker started').length;
      const bad = lines.filter((l) => l.level >= 40);
      const badSummary = new Map<string, number>();
      for (const l of bad) badSummary.set(`${l.level >= 50 ? 'error' : 'warn'}: ${l.msg}`, (badSummary.get(`${l.level >= 50 ? 'error' : 'warn'}: ${l.msg}`) ?? 0) + 1);
      t.diagnostic(`keeper logged ${started} 'worker started' lines; warn/error lines: ${[...badSummary].map(([k, v]) => `${v}× ${k}`).join('; ') || 'none'}`);
      // Our kills are expected to be logged (of the serving worker, or of one loading for an
      // upgrade); anything else at warn or above (e.g. an open file a restarted worker could not
      // get back, or a worker that died of anything but our SIGKILL, such as SIGSYS from its
      // seccomp filter) is a failure even when the guest did not notice.
      const ours = (l: LogLine): boolean => (l.msg === 'worker exited; starting a new one' && l.signal === 'SIGKILL')
        || (/^incoming worker lost/.test(l.msg) && l.why === 'killed by SIGKILL');
      const unexpected = bad.filter((l) => !ours(l));
      if (unexpected.length > 0) problems.push(`the daemon logged ${unexpected.length} unexpected warn/error lines, first: ${JSON.stringify(unexpected[0]).slice(0, 400)}`);

      // --- the guest's stalls (host-side times kept beside the trace, for a second look)
      fs.writeFileSync(path.join(workDir, 'events.json'), JSON.stringify({ seed, events, markers: [...markers] }, null, 1));
      const trace = parseTrace(path.join(out, 'survive.trace'));
      const map = fitClock(markers, trace);
      if (map && trace.length > 0) {
        const { per, baseline } = stalls(trace, events, map);
        t.diagnostic(`clock mapping from ${map.used} of ${markers.size} markers: guest/host rate ${map.b.toFixed(5)}, max residual ${map.maxResidualMs.toFixed(1)} ms`);
        for (const s of per) {
          t.diagnostic(`${s.ev.kind} ${s.ev.n}${s.ev.kind === 'kill' ? ` (worker ${s.ev.pid})` : ''}: guest stall ${ms(s.stallMs)} (${s.op} of iteration ${s.iter})`);
        }
        for (const kind of ['kill', 'hup', 'usr2'] as const) {
          const v = per.filter((s) => s.ev.kind === kind).map((s) => s.stallMs).sort((x, y) => x - y);
          if (v.length) t.diagnostic(`${kind}: ${v.length} events, stall p50 ${ms(pct(v, 0.5))}, p99 ${ms(pct(v, 0.99))}, max ${ms(v.at(-1)!)}`);
        }
        t.diagnostic(`op latency away from events (${baseline.length} ops): p50 ${pct(baseline, 0.5).toFixed(1)} ms, p99 ${pct(baseline, 0.99).toFixed(1)} ms, max ${pct(baseline, 1).toFixed(0)} ms`);
      } else {
        t.diagnostic(`no stall figures: ${trace.length} trace records, ${markers.size} clock markers seen`);
      }

      // --- verdict
      const guestLog = readOr(path.join(out, 'survive.log'));
      const ctx = (): string => `\n--- survive.log\n${guestLog.split('\n').slice(-30).join('\n')}` +
        `\n--- console (tail) [${out}/console.log]\n${tail(path.join(out, 'console.log'), 20)}` +
        `\n--- backend.log warn/error lines\n${bad.slice(0, 20).map((l) => JSON.stringify(l).slice(0, 400)).join('\n')}` +
        `\n--- backend.log (tail)\n${tail(blogPath, 10)}`;
      assert.deepEqual(problems, [], problems.join('\n') + ctx());
      assert.equal(runExit, 0, `guest workload failed (run.sh exit ${runExit}; 124 = timeout, 125 = no exit code)` + ctx());
      assert.equal(readOr(path.join(out, 'survive.result')).trim(), 'PASS', 'survive.sh did not report PASS' + ctx());
      const kills = events.filter((e) => e.kind === 'kill').length;
      const hups = events.filter((e) => e.kind === 'hup').length;
      const usr2s = events.filter((e) => e.kind === 'usr2').length;
      assert.ok(kills >= KILLS_FIRST && hups === HUPS && usr2s === USR2S,
        `the guest finished before the schedule did (${kills} kills, ${hups} SIGHUP, ${usr2s} SIGUSR2)`);
      const guestDigest = readOr(path.join(out, 'survive.digest'));
      assert.ok(guestDigest === refDigest, `guest digest differs from the kill-free host reference:\n${digestDiff(refDigest, guestDigest)}`);
      const host = spawnSync('perl', [path.join(WL, 'digest.pl'), path.join(share, 'survive')], { encoding: 'utf8', maxBuffer: 64 << 20 });
      assert.equal(host.status, 0, `host digest failed: ${host.stderr}`);
      assert.ok(host.stdout === refDigest, `host view of the share differs from the reference:\n${digestDiff(refDigest, host.stdout)}`);
      // the st_ino the guest saw (start and end, equal: survive.sh checked) are the host's
      const inoStart = readOr(path.join(out, 'survive.ino.start')).trim();
      assert.ok(inoStart.length > 0, 'no survive.ino.start');
      assert.equal(readOr(path.join(out, 'survive.ino.end')).trim(), inoStart, 'st_ino at the end differ from the start');
      for (const line of inoStart.split('\n')) {
        const [rel, ino] = line.split(' ');
        assert.equal(String(fs.statSync(path.join(share, 'survive', rel!)).ino), ino, `${rel}: guest st_ino ${ino} is not the host's`);
      }
      assert.ok(started >= 1 + kills + hups, `keeper logged ${started} 'worker started' lines for ${kills} kills and ${hups} upgrades`);
      assert.ok(started >= 21, `keeper logged only ${started} 'worker started' lines`);
      assert.equal(sandboxChecked, events.length, 'every worker that met an event was checked sandboxed (NoNewPrivs 1, Seccomp 2 on every thread, own mount namespace, a root with the share and no /etc)');
      ok = true;
    } finally {
      if (ok && !KEEP) fs.rmSync(workDir, { recursive: true, force: true });
      else t.diagnostic(`kept ${workDir}`);
      t.diagnostic(`total ${((Date.now() - s0) / 1000).toFixed(1)} s`);
    }
  });
