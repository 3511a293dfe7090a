// A real guest through keeper crashes under systemd: the daemon runs under the stand-in for
// systemd (test/support/service-manager.ts) with an fd store; while the guest runs the
// verifying workload (survive.sh, docs/reliability.md), the keeper itself is SIGKILLed
// KEEPER_KILLS times and restarted by the stand-in from the fd store. QEMU's connection must
// never close: the workload passes, and the guest's and the host's digests of its tree equal
// the kill-free host reference.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO, isLive } from '../support/daemon';
import { sandboxProblem } from '../support/sandbox';
import { waitFor } from '../support/crash-harness';
import { GUEST, WL, digestDiff, readOr, reference, startSurvive, stopChild, tail } from '../support/guest';
import { ServiceManager } from '../support/service-manager';

const BOOT_TIMEOUT_S = Number(process.env.VFSD_E2E_TIMEOUT ?? 480);
// Fewer iterations than guest-kill's: the kills come in the first ~25 s; the rest is checking.
const ITERS = Number(process.env.SURVIVE_ITERS ?? 400);
const KEEPER_KILLS = 5;
const RESUMED = 'keeper restarted by the service manager; resuming from the fd store';

const skipReason = ((): string | false => {
  if (process.env.VFSD_E2E_SKIP === '1') return 'VFSD_E2E_SKIP=1';
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs linux x86_64';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (apt-get, drop_caches in the guest)';
  return false;
})();

const count = (s: string, what: string): number => s.split(what).length - 1;

test(`real guest survives ${KEEPER_KILLS} keeper SIGKILLs under systemd (fd store, restart)`,
  { skip: skipReason, timeout: (10 * 60 + BOOT_TIMEOUT_S) * 1000 }, async (t: TestContext) => {
    const setup = spawnSync('bash', [path.join(GUEST, 'setup.sh')], { cwd: REPO, encoding: 'utf8', timeout: 15 * 60 * 1000 });
    assert.equal(setup.status, 0, `scripts/guest/setup.sh failed:\n${setup.stderr}\n${setup.stdout}`);
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-keeperkill-'));
    const share = path.join(workDir, 'share');
    const out = path.join(workDir, 'out');
    const sock = path.join(workDir, 'vhost.sock');
    fs.mkdirSync(share);
    fs.mkdirSync(out);
    const ref = reference(workDir, ITERS);
    const sm = new ServiceManager({
      argv: [process.execPath, path.join(REPO, 'bin', 'virtiofsd-ts'), `--socket-path=${sock}`, `--shared-dir=${share}`, '--cache=auto', '--xattr', '--log-level=info'],
    });
    let run: ChildProcess | null = null;
    let ok = false;
    try {
      sm.start();
      await waitFor('READY=1', () => sm.seen('READY').length === 1, () => sm.stderr(), 60_000);
      let runExit: number | null = null;
      let runOut = '';
      const g = startSurvive(sock, out, ref.helper, ITERS, BOOT_TIMEOUT_S, (o) => { runOut += o; });
      run = g.proc;
      const runDone = g.done.then((code) => { runExit = code; });
      const clock = path.join(share, 'clock');
      await waitFor('the guest churn', () => runExit !== null || (fs.existsSync(clock) && fs.readdirSync(clock).some((n) => /^sync-\d+$/.test(n))), () => runOut + sm.stderr(), BOOT_TIMEOUT_S * 1000);
      const g0 = Date.now();
      const sandboxProblems: string[] = [];
      for (let k = 1; k <= KEEPER_KILLS && runExit === null; k++) {
        await new Promise((r) => setTimeout(r, 1000 + Math.random() * 2000));
        const keeper = sm.main.pid!;
        process.kill(keeper, 'SIGKILL');
        await waitFor(`resume ${k}`, () => count(sm.stderr(), RESUMED) === k, () => sm.stderr(), 60_000);
        const before = sm.stderr().lastIndexOf(RESUMED);
        await waitFor(`a worker serving after resume ${k}`, () => sm.stderr().indexOf('"msg":"worker serving"', before) > 0, () => sm.stderr(), 60_000);
        // Default flags: the restarted keeper's worker is sandboxed too.
        const servingLine = sm.stderr().slice(before).split('\n').find((l) => l.includes('"msg":"worker serving"'))!;
        const served = (JSON.parse(servingLine) as { pid: number }).pid;
        const sb = sandboxProblem(served, share);
        if (sb && isLive(served)) sandboxProblems.push(sb);
        t.diagnostic(`keeper kill ${k} (pid ${keeper}) at ${((Date.now() - g0) / 1000).toFixed(1)} s; restarted as ${sm.main.pid}`);
      }
      fs.writeFileSync(path.join(clock, 'stop'), '');
      await runDone;
      for (const line of runOut.trim().split('\n').slice(-10)) if (line) t.diagnostic(`run.sh: ${line}`);
      const ctx = (): string => `\n--- survive.log\n${readOr(path.join(out, 'survive.log')).split('\n').slice(-30).join('\n')}` +
        `\n--- console (tail)\n${tail(path.join(out, 'console.log'), 20)}\n--- keeper (tail)\n${sm.stderr().split('\n').slice(-30).join('\n')}`;
      assert.equal(count(sm.stderr(), RESUMED), KEEPER_KILLS, 'every kill came while the guest ran' + ctx());
      assert.equal(runExit, 0, `guest workload failed (run.sh exit ${runExit})` + ctx());
      assert.deepEqual(sandboxProblems, [], 'every worker serving after a keeper restart ran sandboxed');
      assert.equal(readOr(path.join(out, 'survive.result')).trim(), 'PASS', 'survive.sh did not report PASS' + ctx());
      const guestDigest = readOr(path.join(out, 'survive.digest'));
      assert.ok(guestDigest === ref.digest, `guest digest differs from the kill-free host reference:\n${digestDiff(ref.digest, guestDigest)}`);
      const host = spawnSync('perl', [path.join(WL, 'digest.pl'), path.join(share, 'survive')], { encoding: 'utf8', maxBuffer: 64 << 20 });
      assert.ok(host.stdout === ref.digest, `host view of the share differs from the reference:\n${digestDiff(ref.digest, host.stdout)}`);
      const errors = sm.stderr().split('\n').filter((l) => /"level":(50|60)/.test(l));
      assert.deepEqual(errors, [], 'the keepers logged no error');
      assert.equal(sm.refused, 0, 'the store refused no fd');
      ok = true;
    } finally {
      if (run) await stopChild(run);
      await sm.stop();
      if (ok && process.env.VFSD_E2E_KEEP !== '1') fs.rmSync(workDir, { recursive: true, force: true });
      else t.diagnostic(`kept ${workDir}`);
    }
  });
