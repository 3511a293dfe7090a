// Start a vhost-user-fs daemon (ours or the C virtiofsd) on a temp socket serving a temp dir.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

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
   * arguments (e.g. a shell that opens an fd and execs it, as a launcher that leaks one would).
   */
  launcher?: string[];
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
  const exe = peer === 'ts' ? process.execPath : C_VIRTIOFSD;
  const [cmd, ...pre] = o.launcher ?? [exe];
  const proc = spawn(cmd!, o.launcher ? [...pre, exe, ...args] : args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...o.env } });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  for (let i = 0; i < 200 && !fs.existsSync(socket); i++) {
    if (proc.exitCode !== null) throw new Error(`${peer} daemon exited early: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!fs.existsSync(socket)) throw new Error(`${peer} daemon did not create its socket: ${err}`);
  return {
    proc, socket, dir,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      fs.rmSync(work, { recursive: true, force: true });
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
