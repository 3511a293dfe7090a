// Drive native/bench (vfsd-bench): the native vhost-user-fs front-end that `npm run bench` uses,
// and its null back-end. One front-end process per daemon connection; commands go in on stdin,
// one JSON line per answer comes back on stdout (native/bench/frontend.cc).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { REPO } from './daemon';

export const VFSD_BENCH = path.join(REPO, 'native', 'build', 'Release', 'vfsd-bench');

export const NATIVE_WORKLOADS = ['getattr', 'lookup', 'read4k', 'write4k', 'read1m', 'write1m', 'readdirplus', 'readdir', 'create'] as const;
export type NativeWorkload = (typeof NATIVE_WORKLOADS)[number];

/** The front-end's first line: what was negotiated. */
export interface ReadyInfo {
  ready: true;
  features: number;
  protocolFeatures: number;
  eventIdx: boolean;
  init: { major: number; minor: number; flags: number; maxWrite: number; maxPages: number; readdirplus: boolean };
}

/** One measured cell, as the front-end reports it (times over the measured window only). */
export interface NativeCell {
  ok: true;
  workload: NativeWorkload;
  depth: number;
  /** Completed ops: one request, or for create one CREATE+WRITE+RELEASE+UNLINK, for readdir(plus) one READDIR(PLUS). */
  ops: number;
  /** Completed FUSE requests on the request queue (FORGETs not counted). */
  requests: number;
  /** readdir(plus): directory entries returned (without . and ..). */
  entries: number;
  /** readdir(plus): entries one full scan returned (every scan must agree). */
  entriesPerScan: number;
  seconds: number;
  p50us: number;
  p99us: number;
  /** CPU seconds of the front-end process. */
  frontendCpuS: number;
  /** On-CPU ns of every live thread of the daemon's process tree (schedstat). */
  daemonCpuNs: number;
  /** utime+stime clock ticks of the daemon's processes (exited threads included). */
  daemonCpuTicks: number;
  daemonProcs: number;
  daemonThreads: number;
  posted: number;
  kicks: number;
  wakeups: number;
  forgets: number;
  errors: number;
  firstError: string;
}

export interface RunOptions {
  warmup?: number; duration?: number; maxOps?: number; verify?: boolean; timeoutMs?: number;
  /** each: ask for a call after every used entry, as Linux's virtio_fs; batch (default): after 3/4 of those in flight. */
  calls?: 'each' | 'batch';
}

export class NativeFrontend {
  private readonly lines: string[] = [];
  private waiter: ((l: string | null) => void) | null = null;
  private err = '';
  private exited = false;

  private constructor(readonly proc: ChildProcess, public ready?: ReadyInfo) {
    proc.stderr!.on('data', (b: Buffer) => { this.err += b.toString(); });
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      const w = this.waiter;
      if (w) { this.waiter = null; w(l); } else this.lines.push(l);
    });
    proc.once('exit', () => {
      this.exited = true;
      const w = this.waiter;
      this.waiter = null;
      w?.(null);
    });
  }

  /** Connect to a daemon's socket, start the device, FUSE_INIT, and look up the given names in its root. */
  static async start(o: { socket: string; pid?: number; file?: string; wfile?: string; dir?: string; timeoutMs?: number }): Promise<NativeFrontend> {
    const args = ['frontend', '--socket', o.socket];
    if (o.pid) args.push('--pid', String(o.pid));
    if (o.file) args.push('--file', o.file);
    if (o.wfile) args.push('--wfile', o.wfile);
    if (o.dir) args.push('--dir', o.dir);
    const fe = new NativeFrontend(spawn(VFSD_BENCH, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
    const first = await fe.nextLine(o.timeoutMs ?? 30_000);
    fe.ready = JSON.parse(first) as ReadyInfo;
    return fe;
  }

  stderr(): string {
    return this.err;
  }

  /** Run one cell: warm-up, then until the duration or maxOps; resolves with the front-end's report. */
  async run(workload: NativeWorkload, depth: number, o: RunOptions = {}): Promise<NativeCell> {
    const cmd = `run ${workload} ${depth} ${o.warmup ?? 0} ${o.duration ?? 0} ${o.maxOps ?? 0}${o.verify ? ' verify' : ''} calls=${o.calls ?? 'batch'}\n`;
    this.proc.stdin!.write(cmd);
    const timeout = o.timeoutMs ?? ((o.warmup ?? 0) + (o.duration ?? 0)) * 1000 + 120_000;
    const r = JSON.parse(await this.nextLine(timeout)) as NativeCell | { ok: false; error: string };
    if (!r.ok) throw new Error(`vfsd-bench: ${r.error}`);
    return r;
  }

  /** Release what start() opened, disconnect (the daemons then exit), and wait for the process. */
  async close(): Promise<void> {
    if (!this.exited) {
      this.proc.stdin!.end('quit\n');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 30_000);
      await new Promise<void>((r) => (this.exited ? r() : this.proc.once('exit', () => r())));
      clearTimeout(t);
    }
  }

  private nextLine(timeoutMs: number): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.exited) return Promise.reject(new Error(`vfsd-bench exited: ${this.err.slice(-2000)}`));
    return new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`vfsd-bench: no answer within ${timeoutMs} ms; stderr: ${this.err.slice(-2000)}`));
      }, timeoutMs);
      this.waiter = (line) => {
        clearTimeout(t);
        if (line === null) reject(new Error(`vfsd-bench exited: ${this.err.slice(-2000)}`));
        else resolve(line);
      };
    });
  }
}

export interface NullBackend { proc: ChildProcess; socket: string; stderr(): string; stop(): Promise<void> }

/** The null back-end on a fresh socket; dirEntries is the size of the directory it makes up for READDIRPLUS. */
export async function startNullBackend(dirEntries = 10_000): Promise<NullBackend> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-null-'));
  const socket = path.join(work, 'vhost.sock');
  const proc = spawn(VFSD_BENCH, ['null', '--socket', socket, '--dir-entries', String(dirEntries)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  for (let i = 0; i < 200 && !err.includes('waiting on'); i++) {
    if (proc.exitCode !== null) throw new Error(`null back-end exited early: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!fs.existsSync(socket)) throw new Error(`null back-end did not listen: ${err}`);
  return {
    proc, socket,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

/**
 * The files the workloads use, in a share's root: data.bin (64 MiB, byte = offset / 1 MiB, for
 * READ; `verify` checks it), wdata.bin (64 MiB, target of WRITE) and a directory of dirEntries
 * empty files for READDIRPLUS. Written from the host and fsync'ed, so they sit in the page cache
 * and the flusher does not write them back during the first cells.
 */
export function prepareShare(dir: string, dirEntries: number, dirName = 'dir'): void {
  const MIB = 1024 * 1024;
  const chunk = Buffer.alloc(MIB);
  for (const [name, pattern] of [['data.bin', true], ['wdata.bin', false]] as const) {
    const fd = fs.openSync(path.join(dir, name), 'w');
    for (let i = 0; i < 64; i++) {
      chunk.fill(pattern ? i & 0xff : 0x5a);
      fs.writeSync(fd, chunk);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  const d = path.join(dir, dirName);
  fs.mkdirSync(d, { recursive: true });
  for (let i = 0; i < dirEntries; i++) fs.closeSync(fs.openSync(path.join(d, `entry-${String(i).padStart(6, '0')}`), 'w'));
}
