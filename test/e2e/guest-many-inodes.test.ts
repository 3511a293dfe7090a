// Real-guest test of inodes held by file handle (src/passthrough/inode-fds.ts): a Linux guest
// under QEMU (TCG) walks (find) a tree of VFSD_MANY_FILES (default 100,000) files served by
// ./bin/virtiofsd-ts under --rlimit-nofile=1024 with --inode-file-handles=mandatory, and stats
// every file of its first VFSD_MANY_STAT_DIRS (default 20) directories of 1,000: far more inodes
// than the worker may hold fds. (Every stat is a LOOKUP round trip of some 4-5 ms under TCG, so
// statting all 100,000 would take over 7 minutes; find alone does no LOOKUP per file.) The host
// SIGKILLs the worker in the middle, and the guest checks st_ino of every 20th file it statted,
// through its old node ids and after drop_caches (scripts/guest/workloads/many-inodes.sh). Pass:
// the workload exits 0, its st_ino are the host's, the new worker adopted the inodes by handle,
// and the worker's and keeper's fd counts, read while the guest holds all those inodes, stay far
// below 1024 (they do not grow with the inodes). The tree is on tmpfs (/dev/shm, which gives
// file handles too) when there is one: 100,000 creates on a busy ext4 take minutes.
//
// Env: VFSD_E2E_SKIP=1 skips; VFSD_E2E_TIMEOUT (s, default 480) for the boot; VFSD_E2E_KEEP=1
// keeps the temp dir; VFSD_MANY_FILES the tree's size. See docs/testing-e2e.md.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO, isLive } from '../support/daemon';
import { innerWorker, sandboxProblem } from '../support/sandbox';

const GUEST = path.join(REPO, 'scripts', 'guest');
const BOOT_TIMEOUT_S = Number(process.env.VFSD_E2E_TIMEOUT ?? 480);
const KEEP = process.env.VFSD_E2E_KEEP === '1';
const FILES = Number(process.env.VFSD_MANY_FILES ?? 100_000);
const STAT_DIRS = Math.min(Number(process.env.VFSD_MANY_STAT_DIRS ?? 20), Math.floor(FILES / 1000));
const PER_DIR = 1000;
const NOFILE = 1024;

const skipReason = ((): string | false => {
  if (process.env.VFSD_E2E_SKIP === '1') return 'VFSD_E2E_SKIP=1';
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs linux x86_64';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (apt-get, file handles, drop_caches in the guest)';
  return false;
})();

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function readOr(file: string, dflt = ''): string {
  try { return fs.readFileSync(file, 'utf8'); } catch { return dflt; }
}

function workerPids(logFile: string): number[] {
  return [...readOr(logFile).matchAll(/"pid":(\d+),"start":\d+,"msg":"worker started"/g)].map((m) => Number(m[1]));
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

test(`a real guest finds ${FILES} files and stats ${STAT_DIRS * 1000} under RLIMIT_NOFILE=${NOFILE} with file handles; st_ino survive a worker SIGKILL`,
  { skip: skipReason, timeout: (5 * 60 + BOOT_TIMEOUT_S) * 1000 }, async (t: TestContext) => {
    const setup = spawnSync('bash', [path.join(GUEST, 'setup.sh')], { cwd: REPO, encoding: 'utf8', timeout: 15 * 60 * 1000 });
    assert.equal(setup.status, 0, `scripts/guest/setup.sh failed:\n${setup.stderr}\n${setup.stdout}`);

    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-many-'));
    const tree = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/vfsd-many-') : work;
    const share = path.join(tree, 'share'), out = path.join(work, 'out'), sock = path.join(work, 'vhost.sock');
    const logFile = path.join(work, 'backend.log');
    fs.mkdirSync(out);
    const g0 = Date.now();
    for (let d = 0; d * PER_DIR < FILES; d++) {
      const dir = path.join(share, 'tree', `d${d}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let i = d * PER_DIR; i < Math.min(FILES, (d + 1) * PER_DIR); i++) fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'w'));
    }
    t.diagnostic(`tree of ${FILES} files made on the host in ${((Date.now() - g0) / 1000).toFixed(1)} s`);

    const blog = fs.openSync(logFile, 'w');
    const daemon = spawn(path.join(REPO, 'bin', 'virtiofsd-ts'),
      [`--socket-path=${sock}`, `--shared-dir=${share}`, '--cache=auto', '--log-level=info', '--inode-file-handles=mandatory', `--rlimit-nofile=${NOFILE}`],
      { cwd: REPO, stdio: ['ignore', blog, blog], detached: true });
    fs.closeSync(blog);
    let ok = false;
    let runOut = '';
    try {
      for (let i = 0; i < 300 && !fs.existsSync(sock); i++) await sleep(50);
      assert.ok(fs.existsSync(sock), `the daemon did not listen:\n${readOr(logFile)}`);
      const run = spawn('bash', [path.join(GUEST, 'run.sh'), '--socket', sock, '--tag', 'myfs',
        '--script', path.join(GUEST, 'workloads', 'many-inodes.sh'), '--out', out, '--timeout', String(BOOT_TIMEOUT_S),
        '--env', `MANY_FILES=${FILES}`, '--env', `MANY_STAT_DIRS=${STAT_DIRS}`], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
      run.stdout.on('data', (b: Buffer) => { runOut += b.toString(); });
      run.stderr.on('data', (b: Buffer) => { runOut += b.toString(); });
      const exited = new Promise<number | null>((r) => run.once('close', (code) => r(code)));
      let runExit: number | null | undefined;
      void exited.then((c) => { runExit = c; });

      // Phase 1 done: the guest holds a node id of every file. Count fds, then kill the worker.
      while (!fs.existsSync(path.join(out, 'phase1')) && runExit === undefined) await sleep(200);
      assert.ok(fs.existsSync(path.join(out, 'phase1')), `the guest stopped before phase 1 (run.sh exit ${runExit}):\n${runOut}\n${readOr(path.join(out, 'many.log'))}`);
      const before = workerPids(logFile);
      const worker = before.at(-1)!;
      // Default flags: the worker is sandboxed (NoNewPrivs, seccomp, own mount namespace, a root
      // with the share and no /etc).
      assert.equal(sandboxProblem(worker, share), null, 'the serving worker is sandboxed');
      // The worker itself, below its sandbox launcher (the pid the keeper logs).
      const fds = { worker: fdCount(innerWorker(worker)), keeper: fdCount(daemon.pid!) };
      t.diagnostic(`with ${STAT_DIRS * 1000}+ inodes known: worker ${fds.worker} fds, keeper ${fds.keeper} fds (RLIMIT_NOFILE ${NOFILE})`);
      assert.ok(fds.worker < NOFILE / 2 && fds.keeper < NOFILE, `fds: ${JSON.stringify(fds)}`);
      process.kill(worker, 'SIGKILL');
      for (let i = 0; i < 600 && (workerPids(logFile).length <= before.length || !isLive(workerPids(logFile).at(-1)!)); i++) await sleep(50);
      assert.ok(workerPids(logFile).length > before.length, 'a new worker started');
      fs.writeFileSync(path.join(share, 'killed'), '');

      const code = await exited;
      const times = readOr(path.join(out, 'times')).trim().split('\n').join(', ');
      t.diagnostic(`guest steps (s): ${times}; run.sh wall ${((Date.now() - g0) / 1000).toFixed(0)} s since the tree was started`);
      assert.equal(code, 0, `guest workload failed (run.sh exit ${code}):\n${readOr(path.join(out, 'many.log'))}\n${runOut}`);
      assert.equal(readOr(path.join(out, 'many.result')).trim(), 'PASS');
      // The guest's st_ino are the host's.
      const sample = readOr(path.join(out, 'ino.sample')).trim().split('\n');
      assert.equal(sample.length, STAT_DIRS * 1000 / 20);
      for (const line of sample) {
        const [ino, p] = line.split(' ') as [string, string];
        assert.equal(BigInt(ino), fs.statSync(path.join(share, 'tree', p), { bigint: true }).ino, p);
      }
      const rec = readOr(logFile).split('\n').find((l) => l.includes('"state recovered"'));
      assert.ok(rec && JSON.parse(rec).byHandle >= STAT_DIRS * 1000, `the new worker adopted the inodes by handle: ${rec}`);
      ok = true;
    } finally {
      try { process.kill(-daemon.pid!, 'SIGTERM'); } catch { /* gone */ }
      if (ok && !KEEP) {
        fs.rmSync(work, { recursive: true, force: true });
        fs.rmSync(tree, { recursive: true, force: true });
      } else {
        t.diagnostic(`kept ${work} ${tree}`);
      }
    }
  });
