// The keeper's side of the data plane: rings are served by a worker process, which this class
// spawns, feeds (memory table, ring addresses, kick/call fds) and restarts when it dies. The
// vhost-user connection and every fd QEMU sent stay here, so QEMU never sees the worker go.
//
// What a restarted worker is given: the same init, the current memory table and every ring
// that was running, marked `recover` so it resumes from the ring's state in guest memory.
// A stop requested while no worker is alive waits for the next one.

import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import type { DataPlane, MemoryTable, RingConfig } from '../vhost/data-plane';
import type { FsOptions } from '../passthrough/passthrough-fs';
import { ControlChannel, type ChannelMessage } from './channel';

export interface WorkerDataPlaneOptions {
  native: NativeBinding;
  log: Logger;
  fs: FsOptions;
  logLevel: string;
  /** The worker's entry script (default: the compiled src/worker/worker.js beside us). */
  workerScript?: string;
  /** Extra environment for the worker (tests: crash points). */
  env?: NodeJS.ProcessEnv;
}

interface Stop { index: number; resolve: (base: number) => void }

export class WorkerDataPlane implements DataPlane {
  private child: ChildProcess | null = null;
  private channel: ControlChannel | null = null;
  private readonly rings = new Map<number, RingConfig>();
  private regions: MemoryTable['regions'] = [];
  private memSent = '';
  private seq = 0;
  private readonly stops = new Map<number, Stop>();
  private closing = false;
  private exited: Promise<void> = Promise.resolve();
  /** Worker starts so far (1 = the first). */
  starts = 0;

  constructor(private readonly o: WorkerDataPlaneOptions) {}

  /** Start the first worker. */
  start(): void {
    this.spawnWorker(false);
  }

  get workerPid(): number | undefined {
    return this.child?.pid;
  }

  startRing(cfg: RingConfig, table: MemoryTable): void {
    this.regions = table.regions;
    this.rings.set(cfg.index, { ...cfg });
    this.sendMem();
    this.sendRingStart(cfg, false);
  }

  stopRing(index: number): Promise<number> {
    if (!this.rings.has(index)) return Promise.reject(new Error(`ring ${index} is not running`));
    const seq = ++this.seq;
    return new Promise<number>((resolve) => {
      this.stops.set(seq, { index, resolve });
      this.channel?.send({ t: 'ring-stop', index, seq });
    });
  }

  ringStopping(index: number): void {
    this.channel?.send({ t: 'ring-stopping', index });
  }

  setCallFd(index: number, fd: number): void {
    const r = this.rings.get(index);
    if (r) r.callFd = fd;
    this.channel?.send({ t: 'call-fd', index }, fd >= 0 ? [fd] : []);
  }

  /** Stop the worker for good (the connection to QEMU is gone). */
  async close(): Promise<void> {
    this.closing = true;
    this.channel?.close();
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** Planned upgrade: start a new worker from the code on disk and retire the old one. */
  restart(): void {
    this.child?.kill('SIGKILL');
  }

  private spawnWorker(recover: boolean): void {
    const n = this.o.native;
    const pair = new Int32Array(2);
    const r = n.socketpair(pair, true);
    if (r < 0) throw new Error(`socketpair: errno ${-r}`);
    const [mine, theirs] = [pair[0]!, pair[1]!];
    const script = this.o.workerScript ?? path.join(__dirname, '..', 'worker', 'worker.js');
    const child = spawn(process.execPath, [script], {
      stdio: ['ignore', 'inherit', 'inherit', theirs],
      env: { ...process.env, ...this.o.env },
    });
    n.close(theirs);
    this.child = child;
    this.starts++;
    this.o.log.info({ pid: child.pid, start: this.starts, recover }, 'worker started');
    const channel = new ControlChannel(n, mine, this.o.log);
    this.channel = channel;
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        channel.close();
        if (this.child === child) {
          this.child = null;
          this.channel = null;
        }
        resolve();
        if (this.closing) return;
        this.o.log.warn({ pid: child.pid, code, signal }, 'worker exited; starting a new one');
        this.spawnWorker(true);
      });
    });
    channel.start((m, fds) => this.onMessage(m, fds));
    channel.send({ t: 'init', fs: this.o.fs, logLevel: this.o.logLevel });
    this.memSent = '';
    if (this.regions.length > 0) this.sendMem();
    for (const cfg of this.rings.values()) this.sendRingStart(cfg, recover);
    // A stop asked of the dead worker is asked again of this one.
    for (const [seq, s] of this.stops) channel.send({ t: 'ring-stop', index: s.index, seq });
  }

  private sendMem(): void {
    const key = JSON.stringify(this.regions);
    if (key === this.memSent || !this.channel) return;
    const regions = this.regions.map(({ gpa, size, uaddr, mmapOffset }) => ({ gpa, size, uaddr, mmapOffset }));
    this.channel.send({ t: 'mem', regions }, this.regions.map((r) => r.fd));
    this.memSent = key;
  }

  private sendRingStart(cfg: RingConfig, recover: boolean): void {
    const fds = cfg.callFd >= 0 ? [cfg.kickFd, cfg.callFd] : [cfg.kickFd];
    this.channel?.send({ t: 'ring-start', cfg: { ...cfg, kickFd: -1, callFd: -1 }, recover }, fds);
  }

  private onMessage(m: ChannelMessage, fds: number[]): void {
    for (const fd of fds) this.o.native.close(fd);
    switch (m.t) {
      case 'ready':
        return;
      case 'ring-stopped': {
        const { seq, base, index } = m as unknown as { seq: number; base: number; index: number };
        const s = this.stops.get(seq);
        if (!s) return;
        this.stops.delete(seq);
        this.rings.delete(index);
        s.resolve(base);
        return;
      }
      default:
        this.o.log.warn({ t: m.t }, 'unknown message from worker');
    }
  }
}
