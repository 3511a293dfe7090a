// Support for the real-guest tests (test/e2e/): the guest scripts, the survive.sh workload's
// host reference run, and small process and file helpers.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO } from './daemon';

export const GUEST = path.join(REPO, 'scripts', 'guest');
export const WL = path.join(GUEST, 'workloads');

export function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => { clearTimeout(t); resolve(true); });
  });
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const kill = (sig: NodeJS.Signals): void => {
    try { process.kill(-(child.pid as number), sig); } catch { try { child.kill(sig); } catch { /* gone */ } }
  };
  kill('SIGTERM');
  if (!(await waitExit(child, 5000))) { kill('SIGKILL'); await waitExit(child, 5000); }
}

export function tail(file: string, lines: number): string {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
  } catch {
    return `(no ${path.basename(file)})`;
  }
}

export function readOr(file: string, dflt = ''): string {
  try { return fs.readFileSync(file, 'utf8'); } catch { return dflt; }
}

export function digestDiff(a: string, b: string, max = 15): string {
  const la = a.split('\n');
  const lb = b.split('\n');
  const sa = new Set(la);
  const sb = new Set(lb);
  return [...la.filter((l) => !sb.has(l)).slice(0, max).map((l) => '- ' + l),
    ...lb.filter((l) => !sa.has(l)).slice(0, max).map((l) => '+ ' + l)].join('\n');
}

/** Host-side: compile the helper once, run the workload on a plain host directory. */
export function reference(workDir: string, iters: number): { helper: string; digest: string; log: string } {
  const helper = path.join(workDir, 'survive_helper');
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-Werror', '-o', helper, path.join(WL, 'survive_helper.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `gcc survive_helper.c failed:\n${cc.stderr}`);
  const share = path.join(workDir, 'ref-share');
  const out = path.join(workDir, 'ref-out');
  fs.mkdirSync(share);
  fs.mkdirSync(out);
  const r = spawnSync('sh', [path.join(WL, 'survive.sh')], {
    cwd: share, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, SHARE: share, OUT: out, SURVIVE_REF: '1', SURVIVE_HELPER: helper, SURVIVE_ITERS: String(iters) },
  });
  const log = readOr(path.join(out, 'survive.log'));
  assert.equal(r.status, 0, `reference run of survive.sh on the host failed (exit ${r.status}):\n${log}\n${r.stderr}`);
  return { helper, digest: readOr(path.join(out, 'survive.digest')), log };
}


/**
 * Boot the guest (run.sh, QEMU) on the vhost-user socket sock with survive.sh, which runs until
 * the host creates clock/stop in the share; onOutput gets run.sh's output. done: its exit code.
 */
export function startSurvive(sock: string, out: string, helper: string, iters: number, bootTimeoutS: number, onOutput: (s: string) => void): { proc: ChildProcess; done: Promise<number | null> } {
  const proc = spawn('bash', [path.join(GUEST, 'run.sh'), '--socket', sock, '--tag', 'myfs', '--script', path.join(WL, 'survive.sh'),
    '--out', out, '--timeout', String(bootTimeoutS),
    '--env', `SURVIVE_ITERS=${iters}`, '--env', `SURVIVE_HELPER=/mnt/host${helper}`, '--env', 'SURVIVE_UNTIL=/mnt/vfs/clock/stop'],
  { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  proc.stdout?.on('data', (d: Buffer) => onOutput(d.toString()));
  proc.stderr?.on('data', (d: Buffer) => onOutput(d.toString()));
  return { proc, done: new Promise((resolve) => proc.once('close', () => resolve(proc.exitCode))) };
}
