// Real-guest check of the mapping layers (docs/mapping.md), one boot: ./bin/virtiofsd-ts (keeper,
// sandboxed worker, default flags) serves a share with
//   --translate-uid=map:1000:5000:1 --translate-gid=map:1000:6000:1 --xattrmap=:map::user.virtiofs.:
// and the guest (scripts/guest/workloads/mapping.sh) lists owners with `ls -ln`, makes a file as
// uid 1000 and one as root, sets an xattr and dumps the names with getfattr. Pass: the guest sees
// the host's 5000:6000 file as 1000:1000 and its own 1000 file lands as 5000:6000 on the host;
// root's stays 0:0 (no rule covers it); the guest sees the host's user.virtiofs.user.fromhost as
// user.fromhost and not the unprefixed user.hidden; its user.fromguest is stored prefixed.
//
// Env: VFSD_E2E_SKIP=1 skips; VFSD_E2E_TIMEOUT (s, default 720) for the boot; VFSD_E2E_KEEP=1
// keeps the temp dir. See docs/testing-e2e.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO } from '../support/daemon';
import { loadNative } from '../../src/native/binding';
import { watchWorkerSandboxes } from '../support/sandbox';

/** Run a command to its end without blocking the event loop (the sandbox watch polls meanwhile). */
function runAsync(cmd: string, args: string[], timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    c.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.once('close', (status) => { clearTimeout(t); resolve({ status, stdout, stderr }); });
  });
}

const GUEST = path.join(REPO, 'scripts', 'guest');
const BOOT_TIMEOUT_S = Number(process.env.VFSD_E2E_TIMEOUT ?? 720);
const KEEP = process.env.VFSD_E2E_KEEP === '1';

const skipReason = ((): string | false => {
  if (process.env.VFSD_E2E_SKIP === '1') return 'VFSD_E2E_SKIP=1';
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs linux x86_64';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (files of other owners, apt-get)';
  return false;
})();

function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => { clearTimeout(t); resolve(true); });
  });
}

/** `ls -ln` lines by name: [uid, gid]. */
function owners(listing: string): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  for (const line of listing.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 9 && /^[-dl]/.test(f[0]!)) out.set(f.slice(8).join(' '), [Number(f[2]), Number(f[3])]);
  }
  return out;
}

test('a real guest sees mapped owners (ls -ln) and mapped xattr names (getfattr)', { skip: skipReason, timeout: (15 * 60 + BOOT_TIMEOUT_S + 90) * 1000 }, async (t) => {
  const setup = spawnSync('bash', [path.join(GUEST, 'setup.sh')], { cwd: REPO, encoding: 'utf8', timeout: 15 * 60 * 1000 });
  assert.equal(setup.status, 0, `scripts/guest/setup.sh failed:\n${setup.stderr}\n${setup.stdout}`);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-e2e-mapping-'));
  const share = path.join(work, 'share');
  const out = path.join(work, 'out');
  const sock = path.join(work, 'vhost.sock');
  fs.mkdirSync(share, { mode: 0o777 });
  fs.chmodSync(share, 0o777);
  fs.mkdirSync(out);
  const hostfile = path.join(share, 'hostfile');
  fs.writeFileSync(hostfile, 'x');
  fs.chownSync(hostfile, 5000, 6000);
  const native = loadNative();
  assert.equal(native.setxattr(hostfile, 'user.virtiofs.user.fromhost', Buffer.from('h'), 0, false), 0);
  assert.equal(native.setxattr(hostfile, 'user.hidden', Buffer.from('x'), 0, false), 0);

  const log = fs.openSync(path.join(work, 'backend.log'), 'w');
  const daemon = spawn(path.join(REPO, 'bin', 'virtiofsd-ts'), [
    `--socket-path=${sock}`, `--shared-dir=${share}`, '--cache=auto',
    '--translate-uid=map:1000:5000:1', '--translate-gid=map:1000:6000:1', '--xattrmap=:map::user.virtiofs.:',
  ], { cwd: REPO, stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  let passed = false;
  try {
    for (const end = Date.now() + 15_000; !fs.existsSync(sock); await new Promise((r) => setTimeout(r, 50))) {
      assert.ok(Date.now() < end && daemon.exitCode === null, `the daemon did not listen:\n${fs.readFileSync(path.join(work, 'backend.log'), 'utf8')}`);
    }
    // Default flags: every worker is checked sandboxed from outside while the guest runs.
    const sandboxes = watchWorkerSandboxes(path.join(work, 'backend.log'), share);
    const run = await runAsync('bash', [path.join(GUEST, 'run.sh'), '--socket', sock, '--tag', 'myfs',
      '--script', path.join(GUEST, 'workloads', 'mapping.sh'), '--out', out, '--timeout', String(BOOT_TIMEOUT_S)],
    (BOOT_TIMEOUT_S + 60) * 1000);
    const sb = sandboxes.stop();
    assert.deepEqual(sb.problems, [], 'every worker ran sandboxed');
    assert.ok(sb.checked.length >= 1, 'the serving worker was checked sandboxed');
    t.diagnostic(`run.sh exit ${run.status}`);
    const read = (f: string): string => (fs.existsSync(path.join(out, f)) ? fs.readFileSync(path.join(out, f), 'utf8') : `(no ${f})`);
    assert.equal(run.status, 0, `guest run failed (exit ${run.status}):\n${run.stdout}${run.stderr}\n${read('console.log').slice(-3000)}`);

    const before = owners(read('ls-before.txt'));
    assert.deepEqual(before.get('hostfile'), [1000, 1000], `host 5000:6000 seen as 1000:1000:\n${read('ls-before.txt')}`);
    const after = owners(read('ls-after.txt'));
    assert.deepEqual(after.get('made-by-1000'), [1000, 1000], read('ls-after.txt'));
    assert.deepEqual(after.get('made-by-root'), [0, 0], read('ls-after.txt'));
    const host = (f: string): [number, number] => { const s = fs.statSync(path.join(share, f)); return [s.uid, s.gid]; };
    assert.deepEqual(host('made-by-1000'), [5000, 6000], 'guest 1000 makes files owned by host 5000:6000');
    assert.deepEqual(host('made-by-root'), [0, 0]);

    const attrs = read('getfattr.txt');
    assert.match(attrs, /^user\.fromhost="h"$/m, attrs);
    assert.match(attrs, /^user\.fromguest="g"$/m, attrs);
    assert.doesNotMatch(attrs, /hidden|virtiofs/, attrs);
    const v = Buffer.alloc(8);
    assert.equal(native.getxattr(hostfile, 'user.virtiofs.user.fromguest', v, false), 1, 'the guest\'s xattr is stored prefixed');
    assert.equal(native.getxattr(hostfile, 'user.fromguest', v, false) < 0, true);
    passed = true;
  } finally {
    try { process.kill(-daemon.pid!, 'SIGTERM'); } catch { /* gone */ }
    if (!(await exited(daemon, 5000))) { try { process.kill(-daemon.pid!, 'SIGKILL'); } catch { /* gone */ } }
    if (passed && !KEEP) fs.rmSync(work, { recursive: true, force: true });
    else t.diagnostic(`kept ${work}`);
  }
});
