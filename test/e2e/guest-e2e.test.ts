// Real-guest end-to-end test: boot a Linux guest under QEMU (TCG) against a vhost-user-fs
// backend, run every workload in scripts/guest/workloads in ONE boot, and check that
//   - every workload passed,
//   - the guest's digest of each workload's tree equals the host's digest of the same directory,
//   - (several backends) the digests of all backends are byte-for-byte identical.
//
// Env:
//   VFSD_E2E_BACKEND  c | ts | both (= c,ts) | any comma list (e.g. "c,c" to check determinism).
//                     Default: both.
//   VFSD_E2E_WORKLOADS  space-separated subset (default: all.sh's list)
//   VFSD_E2E_TIMEOUT    seconds per guest boot (default 720)
//   VFSD_E2E_KEEP=1     keep the temp dirs (share, console, logs) even on success
//   VFSD_E2E_SKIP=1     skip everything
//   VFSD_GUEST_CACHE    guest kernel/initramfs cache (default <repo>/.cache/guest)
// See docs/testing-e2e.md.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO } from '../support/daemon';
import { watchWorkerSandboxes } from '../support/sandbox';



const GUEST = path.join(REPO, 'scripts', 'guest');
const C_VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const BOOT_TIMEOUT_S = Number(process.env.VFSD_E2E_TIMEOUT ?? 720);
const KEEP = process.env.VFSD_E2E_KEEP === '1';

type Backend = 'c' | 'ts';

function parseBackends(v: string | undefined): Backend[] {
  const raw = (v ?? 'both').trim();
  const list = raw === 'both' ? ['c', 'ts'] : raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  for (const b of list) {
    if (b !== 'c' && b !== 'ts') throw new Error(`VFSD_E2E_BACKEND: unknown backend '${b}' (use c, ts, both or a comma list)`);
  }
  return list as Backend[];
}

interface WorkloadResult { name: string; rc: number; seconds: number; digestSeconds: number }
interface RunResult {
  backend: Backend;
  label: string;
  workDir: string;
  exitCode: number | null;
  wallSeconds: number;
  bootMarks: Record<string, number>;
  workloads: WorkloadResult[];
  digests: Map<string, string>;
  logs: Map<string, string>;
  hostDigests: Map<string, string>;
  failures: string[];
  /** ts: the workers whose sandbox was checked while the guest ran. */
  sandboxed: number[];
}

function backendCommand(b: Backend, sock: string, share: string): { cmd: string; args: string[] } {
  if (b === 'c') {
    // xattr is off by default in the C virtiofsd; the meta workload needs it.
    return { cmd: C_VIRTIOFSD, args: [`--socket-path=${sock}`, '-o', `source=${share}`, '-o', 'cache=auto', '-o', 'xattr'] };
  }
  return {
    cmd: path.join(REPO, 'bin', 'virtiofsd-ts'),
    args: [`--socket-path=${sock}`, `--shared-dir=${share}`, '--cache=auto', '--xattr'],
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitForSocket(p: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`backend exited (code ${child.exitCode}, signal ${child.signalCode}) before creating ${p}`);
    }
    try {
      if (fs.statSync(p).isSocket()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`backend socket ${p} did not appear within ${timeoutMs} ms`);
    await sleep(50);
  }
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** End a child we started (and its process group, spawned detached), TERM then KILL. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const kill = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-(child.pid as number), sig);
    } catch {
      try { child.kill(sig); } catch { /* gone */ }
    }
  };
  kill('SIGTERM');
  if (!(await waitExit(child, 5000))) {
    kill('SIGKILL');
    await waitExit(child, 5000);
  }
}

function tail(file: string, lines: number): string {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
  } catch {
    return `(no ${path.basename(file)})`;
  }
}

function digestDiff(a: string, b: string, max = 15): string {
  const la = a.split('\n');
  const lb = b.split('\n');
  const sa = new Set(la);
  const sb = new Set(lb);
  const onlyA = la.filter((l) => !sb.has(l)).slice(0, max).map((l) => '- ' + l);
  const onlyB = lb.filter((l) => !sa.has(l)).slice(0, max).map((l) => '+ ' + l);
  return [...onlyA, ...onlyB].join('\n');
}

async function runBackend(t: TestContext, backend: Backend, label: string): Promise<RunResult> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), `vfsd-e2e-${label}-`));
  const share = path.join(workDir, 'share');
  const out = path.join(workDir, 'out');
  const sock = path.join(workDir, 'vhost.sock');
  fs.mkdirSync(share);
  fs.mkdirSync(out);
  const res: RunResult = {
    backend, label, workDir, exitCode: null, wallSeconds: 0, bootMarks: {}, workloads: [],
    digests: new Map(), logs: new Map(), hostDigests: new Map(), failures: [], sandboxed: [],
  };

  const { cmd, args } = backendCommand(backend, sock, share);
  if (!fs.existsSync(cmd)) {
    res.failures.push(`backend binary ${cmd} does not exist`);
    return res;
  }
  const blog = fs.openSync(path.join(workDir, 'backend.log'), 'w');
  const t0 = Date.now();
  const child = spawn(cmd, args, { cwd: REPO, stdio: ['ignore', blog, blog], detached: true });
  fs.closeSync(blog);
  // Our workers run sandboxed (default flags): every one the keeper starts is checked from outside.
  const sandboxes = backend === 'ts' ? watchWorkerSandboxes(path.join(workDir, 'backend.log'), share) : null;
  let spawnError: Error | null = null;
  child.on('error', (e) => { spawnError = e; });
  try {
    await waitForSocket(sock, child, 15000);
    if (spawnError) throw spawnError;
    t.diagnostic(`${label}: backend pid ${child.pid} listening after ${Date.now() - t0} ms`);

    const runArgs = [path.join(GUEST, 'run.sh'), '--socket', sock, '--tag', 'myfs',
      '--script', path.join(GUEST, 'workloads', 'all.sh'), '--out', out, '--timeout', String(BOOT_TIMEOUT_S)];
    if (process.env.VFSD_E2E_WORKLOADS) runArgs.push('--env', `WORKLOADS=${process.env.VFSD_E2E_WORKLOADS}`);
    // The tar workload's tarball is in the guest cache, which the guest sees under the host root.
    const cache = path.resolve(process.env.VFSD_GUEST_CACHE ?? path.join(REPO, '.cache', 'guest'));
    runArgs.push('--env', `SRC_TAR=/mnt/host${cache}/src-tree.tar`);
    const g0 = Date.now();
    const run = spawn('bash', runArgs, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let runOut = '';
    run.stdout?.on('data', (d: Buffer) => { runOut += d.toString(); });
    run.stderr?.on('data', (d: Buffer) => { runOut += d.toString(); });
    // run.sh has its own QEMU timeout; this guard only covers run.sh itself hanging.
    const guard = setTimeout(() => { void stopChild(run); }, (BOOT_TIMEOUT_S + 60) * 1000);
    await new Promise<void>((resolve) => run.once('close', () => resolve()));
    clearTimeout(guard);
    res.exitCode = run.exitCode;
    res.wallSeconds = (Date.now() - g0) / 1000;
    t.diagnostic(`${label}: run.sh exit ${run.exitCode} after ${res.wallSeconds.toFixed(1)} s wall`);
    for (const line of runOut.trim().split('\n')) if (line) t.diagnostic(`${label}: ${line}`);
  } catch (e: unknown) {
    res.failures.push(`${label}: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (sandboxes) {
      const { checked, problems } = sandboxes.stop();
      res.sandboxed = checked;
      res.failures.push(...problems);
      t.diagnostic(`${label}: sandbox checked for workers ${checked.join(', ') || 'none'}`);
      // Nothing kills a worker here: one that died (e.g. SIGSYS from its seccomp filter) is a
      // failure even though its successor hid it from the guest.
      const exits = fs.readFileSync(path.join(workDir, 'backend.log'), 'utf8').split('\n').filter((l) => l.includes('"msg":"worker exited; starting a new one"'));
      if (exits.length > 0) res.failures.push(`${label}: ${exits.length} workers died during the run, first: ${exits[0]}`);
    }
    // The C virtiofsd exits by itself when QEMU disconnects; ours may not.
    if (!(await waitExit(child, 3000))) await stopChild(child);
  }

  const consoleLog = path.join(out, 'console.log');
  if (fs.existsSync(consoleLog)) {
    const text = fs.readFileSync(consoleLog, 'utf8');
    for (const m of text.matchAll(/VFSD-E2E-T ([a-z]+)=([0-9.]+)/g)) res.bootMarks[m[1]] = Number(m[2]);
    const b = res.bootMarks;
    if (b.virtiofs !== undefined) {
      t.diagnostic(`${label}: guest uptime at init ${b.init}s, virtio-fs mounted ${b.virtiofs}s, ` +
        `script done ${b.script ?? '?'}s, poweroff ${b.end ?? '?'}s`);
    }
  }
  const resultsFile = path.join(out, 'results');
  if (fs.existsSync(resultsFile)) {
    for (const line of fs.readFileSync(resultsFile, 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 3) continue;
      const w: WorkloadResult = { name: f[0], rc: Number(f[1]), seconds: Number(f[2]), digestSeconds: Number(f[3] ?? 0) };
      res.workloads.push(w);
      t.diagnostic(`${label}: workload ${w.name}: exit ${w.rc}, ${w.seconds}s (+${w.digestSeconds}s digest)`);
      const df = path.join(out, `${w.name}.digest`);
      if (fs.existsSync(df)) res.digests.set(w.name, fs.readFileSync(df, 'utf8'));
      const lf = path.join(out, `${w.name}.log`);
      if (fs.existsSync(lf)) res.logs.set(w.name, fs.readFileSync(lf, 'utf8'));
      const wdir = path.join(share, w.name);
      if (fs.existsSync(wdir)) {
        const h = spawnSync('perl', [path.join(GUEST, 'workloads', 'digest.pl'), wdir], { encoding: 'utf8', maxBuffer: 64 << 20 });
        if (h.status === 0) res.hostDigests.set(w.name, h.stdout);
        else res.failures.push(`${label}: host digest of ${w.name} failed: ${h.stderr}`);
      }
    }
  }
  return res;
}

function assertRun(res: RunResult): void {
  const { label, workDir } = res;
  const ctx = (): string =>
    `\n--- ${label} console (tail) [${workDir}/out/console.log]\n${tail(path.join(workDir, 'out', 'console.log'), 25)}` +
    `\n--- ${label} backend.log (tail)\n${tail(path.join(workDir, 'backend.log'), 15)}`;
  assert.deepEqual(res.failures, [], res.failures.join('\n') + ctx());
  assert.equal(res.exitCode, 0, `${label}: guest run failed (run.sh exit ${res.exitCode}; 124 = timeout, 125 = no exit code)` + ctx());
  assert.ok(res.workloads.length > 0, `${label}: no workload results` + ctx());
  if (res.backend === 'ts') assert.ok(res.sandboxed.length >= 1, `${label}: no worker's sandbox was checked` + ctx());
  for (const w of res.workloads) {
    assert.equal(w.rc, 0, `${label}: workload ${w.name} exited ${w.rc}:\n${tail(path.join(workDir, 'out', `${w.name}.log`), 30)}`);
  }
  for (const [name, guestDigest] of res.digests) {
    const hostDigest = res.hostDigests.get(name);
    assert.ok(hostDigest !== undefined, `${label}: no host digest for ${name}`);
    assert.ok(hostDigest === guestDigest,
      `${label}: guest and host views of ${name} differ:\n${digestDiff(guestDigest, hostDigest)}`);
  }
}

const skipReason = ((): string | false => {
  if (process.env.VFSD_E2E_SKIP === '1') return 'VFSD_E2E_SKIP=1';
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs linux x86_64';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (virtiofsd, apt-get)';
  return false;
})();

const backends = parseBackends(process.env.VFSD_E2E_BACKEND);
const totalTimeoutMs = (15 * 60 + backends.length * (BOOT_TIMEOUT_S + 90)) * 1000;

test('real-guest e2e (QEMU TCG + vhost-user-fs)', { skip: skipReason, timeout: totalTimeoutMs }, async (t) => {
  const s0 = Date.now();
  const setup = spawnSync('bash', [path.join(GUEST, 'setup.sh')], { cwd: REPO, encoding: 'utf8', timeout: 15 * 60 * 1000 });
  assert.equal(setup.status, 0, `scripts/guest/setup.sh failed:\n${setup.stderr}\n${setup.stdout}`);
  t.diagnostic(`setup.sh: ${((Date.now() - s0) / 1000).toFixed(1)} s`);

  const results: RunResult[] = [];
  const counts = new Map<Backend, number>();
  for (const b of backends) {
    const n = (counts.get(b) ?? 0) + 1;
    counts.set(b, n);
    const label = backends.filter((x) => x === b).length > 1 ? `${b}${n}` : b;
    await t.test(`backend ${label}: all workloads pass in one boot`, async (st) => {
      const res = await runBackend(st, b, label);
      results.push(res);
      try {
        assertRun(res);
      } catch (e) {
        st.diagnostic(`${label}: kept ${res.workDir} for inspection`);
        throw e;
      }
      if (!KEEP) fs.rmSync(res.workDir, { recursive: true, force: true });
      else st.diagnostic(`${label}: kept ${res.workDir}`);
    });
  }

  if (backends.length > 1) {
    await t.test('digests identical across backends', (st) => {
      assert.equal(results.length, backends.length, 'not every backend produced results');
      const [ref, ...rest] = results;
      for (const other of rest) {
        const names = new Set([...ref.digests.keys(), ...other.digests.keys()]);
        assert.ok(names.size > 0, 'no digests to compare');
        for (const name of [...names].sort()) {
          const a = ref.digests.get(name);
          const b = other.digests.get(name);
          assert.ok(a !== undefined && b !== undefined, `workload ${name}: digest missing for ${a === undefined ? ref.label : other.label}`);
          // assert.ok, not assert.equal: the diff below is readable, a full dump of both is not
          assert.ok(a === b, `workload ${name}: ${ref.label} vs ${other.label} digests differ:\n${digestDiff(a, b)}`);
        }
        // The workload logs are deterministic too (with the C virtiofsd, run twice); a difference
        // (say, a check that is skipped on one backend only) is reported, not failed.
        for (const [name, la] of ref.logs) {
          const lb = other.logs.get(name);
          if (lb !== undefined && lb !== la) {
            st.diagnostic(`workload ${name}: ${ref.label} vs ${other.label} logs differ:`);
            for (const l of digestDiff(la, lb).split('\n')) st.diagnostic(`  ${l}`);
          }
        }
      }
    });
  }
  t.diagnostic(`total ${((Date.now() - s0) / 1000).toFixed(1)} s`);
});
