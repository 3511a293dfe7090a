// Start a vhost-user-fs daemon (ours or the C virtiofsd) on a temp socket serving a temp dir.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import assert from 'node:assert/strict';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from './frontend';
import { FuseClient } from './fuse-client';

export const C_VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
export const REPO = path.resolve(__dirname, '..', '..', '..');

export interface Daemon {
  proc: ChildProcess;
  socket: string;
  dir: string;
  /** Everything the daemon wrote on stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

export type Peer = 'ts' | 'c';

export interface DaemonOptions {
  dir?: string;
  args?: string[];
  bin?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Start the daemon through this command, which gets the daemon's command line after its own
   * arguments (setpriv with fewer capabilities; a shell that opens an fd and execs it, as a
   * launcher that leaks one would).
   */
  wrap?: string[];
  /** Run the daemon as this uid and gid (setpriv, no supplementary groups); the temp dir is opened to it. */
  user?: number;
}

/** Spawn a daemon and wait until its socket exists. */
export async function startDaemon(peer: Peer, o: DaemonOptions = {}): Promise<Daemon> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `vfsd-${peer}-`));
  const dir = o.dir ?? path.join(work, 'share');
  fs.mkdirSync(dir, { recursive: true });
  const socket = path.join(work, 'vhost.sock');
  const args = peer === 'ts'
    ? [o.bin ?? path.join(REPO, 'bin', 'virtiofsd-ts'), `--socket-path=${socket}`, `--shared-dir=${dir}`, ...(o.args ?? [])]
    : [`--socket-path=${socket}`, '-o', `source=${dir}`, ...(o.args ?? [])];
  if (o.user !== undefined) fs.chmodSync(work, 0o777);
  const asUser = o.user !== undefined ? ['setpriv', `--reuid=${o.user}`, `--regid=${o.user}`, '--clear-groups', '--'] : [];
  const cmd = [...asUser, ...(o.wrap ?? []), peer === 'ts' ? process.execPath : C_VIRTIOFSD, ...args];
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...o.env } });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  // Our start-up includes a probe worker in the sandbox (a second Node start): slow on a busy machine.
  for (let i = 0; i < 600 && !fs.existsSync(socket); i++) {
    if (proc.exitCode !== null) throw new Error(`${peer} daemon exited early: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!fs.existsSync(socket)) {
    proc.kill('SIGKILL');
    throw new Error(`${peer} daemon did not create its socket: ${err}`);
  }
  return {
    proc, socket, dir,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      fs.rmSync(work, { recursive: true, force: true });
      assertNoSeccompKill(err);
    },
  };
}

/** The pids of the workers a keeper logged as started, oldest first. */
export function workerPids(stderr: string): number[] {
  return [...stderr.matchAll(/"pid":(\d+),"start":\d+,"msg":"worker started"/g)].map((m) => Number(m[1]));
}

/** Whether pid is a live process (not gone, not a zombie). */
export function isLive(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The newest worker the keeper logged that is still alive (one it stopped itself is skipped). */
export function liveWorker(stderr: string): number | undefined {
  return workerPids(stderr).reverse().find(isLive);
}

/**
 * No worker of the daemon (stderr) was killed by its seccomp filter: a syscall missing from the
 * allowlist, which the next worker may hide from the test (docs/security.md).
 */
export function assertNoSeccompKill(stderr: string): void {
  const line = stderr.split('\n').find((l) => l.includes('"signal":"SIGSYS"'));
  if (line) throw new Error(`a worker was killed by SIGSYS (a syscall outside the seccomp allowlist; the kernel's audit log names it): ${line}`);
}

/** Run fn against our daemon (--log-level=info and args), connected and past FUSE_INIT; stop it after. */
export async function withDaemon(args: string[], fn: (d: Daemon, c: FuseClient) => Promise<void>, dir?: string): Promise<void> {
  const d = await startDaemon('ts', { args: ['--log-level=info', ...args], dir });
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
    assert.equal((await c.init()).error, 0);
    await fn(d, c);
  } finally {
    fe.close();
    await d.stop();
  }
}
