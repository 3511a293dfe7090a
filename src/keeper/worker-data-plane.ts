// The keeper's side of the data plane: rings are served by a worker process, which this class
// spawns, feeds (memory table, ring addresses, kick/call fds) and restarts when it dies. The
// vhost-user connection and every fd QEMU sent stay here, so QEMU never sees the worker go.
//
// What a restarted worker is given: the same init, the current memory table and every ring
// that was running, marked `recover` so it resumes from the ring's state in guest memory.
// A stop requested while no worker is alive waits for the next one.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import type { DataPlane, MemoryTable, RingConfig } from '../vhost/data-plane';
import type { FsOptions } from '../passthrough/passthrough-fs';
import { ControlChannel, MAX_FDS_PER_PACKET, type ChannelMessage } from './channel';
import { FdStore } from './fd-store';
import { workerEnv, type WorkerCommand, type WorkerSandbox } from './sandbox';
import { InflightRegion } from '../state/inflight';
import { Journal } from '../state/journal';
import type { FuseInitRecord } from '../worker/worker';

export interface WorkerDataPlaneOptions {
  native: NativeBinding;
  log: Logger;
  fs: FsOptions;
  logLevel: string;
  /** The worker's entry script (default: the compiled src/worker/worker.js beside us). */
  workerScript?: string;
  /** Extra environment for the worker (tests: crash points). */
  env?: NodeJS.ProcessEnv;
  /**
   * Keep a spare worker loaded and idle, so that after a crash the keeper feeds it at once
   * instead of waiting for a Node start-up (default true). Costs one idle process.
   */
  spare?: boolean;
  /** Start workers in this sandbox (src/keeper/sandbox.ts); undefined: plain node, as this process. */
  sandbox?: WorkerSandbox;
}

/** After a spare was used, wait this long before loading the next (not to slow the recovery). */
const SPARE_DELAY_MS = 200;

interface Stop { index: number; resolve: (base: number) => void }

/** A worker process: spawned by this keeper image, or adopted from the image before a re-exec. */
interface WorkerProc {
  readonly pid: number;
  readonly channel: ControlChannel;
  kill(signal: NodeJS.Signals): void;
  /** Settles once the process has exited (and has been reaped). */
  readonly gone: Promise<{ code: number | null; signal: string | null }>;
  /** Set when gone has settled. */
  dead?: boolean;
}

/** How often an adopted worker is looked for with waitpid once its channel has closed. */
const REAP_POLL_MS = 5;

/** What a re-executed keeper needs to carry on serving (fd numbers survive execve). */
export interface PlaneState {
  stateFds: { inodes: number; files: number; dirs: number };
  regionFds: Array<[string, { fd: number; bytes: number }]>;
  fds: Array<[string, number]>;
  fuseInit: FuseInitRecord | null;
  rings: RingConfig[];
  regions: Array<MemoryTable['regions'][number]>;
  /** The serving worker, left running across the re-exec: its pid and our end of its channel. */
  worker?: { pid: number; channelFd: number };
}

export class WorkerDataPlane implements DataPlane {
  private child: WorkerProc | null = null;
  private channel: ControlChannel | null = null;
  private readonly rings = new Map<number, RingConfig>();
  private regions: MemoryTable['regions'] = [];
  private memSent = '';
  private seq = 0;
  private readonly stops = new Map<number, Stop>();
  private closing = false;
  private readonly regionFds = new Map<string, { fd: number; bytes: number }>();
  /** The guest's FUSE_INIT, replayed into every new worker (the guest sends it only once). */
  private fuseInit: FuseInitRecord | null = null;
  private exited: Promise<void> = Promise.resolve();
  private readonly exits: Promise<void>[] = [];
  private upgrading = false;
  private restartAgain = false;
  /** The worker was retired for a keeper re-exec: do not replace it. */
  private handingOver = false;
  /** A worker started ahead of a planned upgrade, idle until the old one has gone. */
  private prestarted: WorkerProc | null = null;
  /** A loaded, idle worker for the next crash (see WorkerDataPlaneOptions.spare). */
  private spare: WorkerProc | null = null;
  /** A worker the image before us left running (re-exec), to adopt at start(). */
  private adoptable: { pid: number; channelFd: number } | null = null;
  /** The serving worker's channel is detached for a hand-over (see handover()). */
  private detached = false;
  private spareTimer: NodeJS.Timeout | null = null;
  /** Worker starts so far (1 = the first). */
  starts = 0;
  /** Duplicates of every fd the worker registered: they outlive it. */
  readonly fds: FdStore;
  /** The memfds of the inode, open-file and open-dir maps, kept across workers. */
  private readonly stateFds: { inodes: number; files: number; dirs: number };

  constructor(private readonly o: WorkerDataPlaneOptions, restored?: PlaneState) {
    this.fds = new FdStore(o.native);
    if (restored) {
      this.stateFds = restored.stateFds;
      for (const [k, v] of restored.regionFds) this.regionFds.set(k, v);
      for (const [k, fd] of restored.fds) this.fds.put(k, fd);
      this.fuseInit = restored.fuseInit;
      for (const r of restored.rings) this.rings.set(r.index, r);
      this.regions = restored.regions;
      this.adoptable = restored.worker ?? null;
      return;
    }
    const mk = (name: string): number => {
      const fd = o.native.memfdCreate(`vfsd-${name}`, 0);
      if (fd < 0) throw new Error(`memfd_create: errno ${-fd}`);
      return fd;
    };
    this.stateFds = { inodes: mk('inodes'), files: mk('files'), dirs: mk('dirs') };
  }

  /** Start the first worker (recover: resume rings an earlier keeper image was serving). */
  start(recover = false): void {
    const a = this.adoptable;
    this.adoptable = null;
    if (a) {
      // The worker kept serving the guest while we re-executed: carry on with it as it is.
      const w = this.adopt(a.pid, a.channelFd);
      this.child = w;
      this.channel = w.channel;
      this.exited = Promise.all(this.exits).then(() => undefined);
      this.memSent = JSON.stringify(this.regions);
      this.o.log.info({ pid: w.pid, fds: this.fds.size, rings: this.rings.size }, 'worker adopted');
    } else {
      this.feed(this.launch(), recover);
    }
    this.scheduleSpare();
  }

  /** Load a spare worker after delay ms, unless one is loaded or we are going away. */
  private scheduleSpare(delay = SPARE_DELAY_MS): void {
    if (this.o.spare === false || this.spare || this.spareTimer || this.closing || this.handingOver) return;
    this.spareTimer = setTimeout(() => {
      this.spareTimer = null;
      if (this.spare || this.closing || this.handingOver) return;
      this.spare = this.launch('spare');
    }, delay);
  }

  /** Drop the spare (it runs the code that was on disk when it started). */
  private dropSpare(): void {
    if (this.spareTimer) clearTimeout(this.spareTimer);
    this.spareTimer = null;
    this.spare?.channel.close();
    this.spare?.kill('SIGKILL');
    this.spare = null;
  }

  /** Everything a new keeper image needs, and the fds it must inherit. */
  exportState(): { state: PlaneState; fds: number[] } {
    const state: PlaneState = {
      stateFds: this.stateFds,
      regionFds: [...this.regionFds.entries()],
      fds: [...this.fds.entries()],
      fuseInit: this.fuseInit,
      rings: [...this.rings.values()],
      regions: [...this.regions],
    };
    if (this.detached && this.child) state.worker = { pid: this.child.pid, channelFd: this.child.channel.fd };
    const fds = [
      ...Object.values(this.stateFds), ...[...this.regionFds.values()].map((r) => r.fd), ...state.fds.map(([, fd]) => fd),
      ...(state.worker ? [state.worker.channelFd] : []),
    ];
    return { state, fds };
  }

  /**
   * Retire the worker without a successor (the keeper is about to re-execute itself): it
   * finishes what it popped and exits. Resolves when it has.
   */
  async retire(): Promise<void> {
    const child = this.child;
    if (!child || !this.channel) return;
    this.handingOver = true;
    this.dropSpare();
    this.channel.send({ t: 'shutdown' });
    await child.gone;
  }

  /**
   * Prepare to leave the serving worker running across the keeper's re-exec: stop reading its
   * channel (after taking in what it sent so far; the rest waits in the socket for the next
   * image) and let exportState() name it. False when there is no worker to leave, or a planned
   * upgrade is under way (then retire()).
   */
  handover(): boolean {
    if (!this.child || !this.channel || this.upgrading || this.prestarted || this.channel.isClosed) return false;
    this.handingOver = true;
    this.dropSpare();
    this.channel.detach();
    this.detached = true;
    return true;
  }

  /** The hand-over failed: serve again, with the worker we still have or a new one. */
  unretire(): void {
    this.handingOver = false;
    const w = this.child;
    if (this.detached && w) {
      this.detached = false;
      if (w.dead) {
        // It died during the attempt (onExit left it to the next image): replace it now.
        w.channel.close();
        this.child = null;
        this.channel = null;
      } else {
        w.channel.start((m, fds) => this.onMessage(m, fds, w.channel));
      }
    }
    this.detached = false;
    if (!this.child) this.feed(this.launch(), true);
    this.scheduleSpare();
  }

  get workerPid(): number | undefined {
    return this.child?.pid;
  }

  startRing(cfg: RingConfig, table: MemoryTable): void {
    this.regions = table.regions;
    this.rings.set(cfg.index, {
      ...cfg,
      inflightFd: this.ringRegion(`inflight-${cfg.index}`, InflightRegion.sizeFor(cfg.size)),
      journalFd: this.ringRegion(`journal-${cfg.index}`, Journal.sizeFor(cfg.size)),
    });
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
    this.dropSpare();
    this.channel?.close();
    this.child?.kill('SIGKILL');
    this.prestarted?.kill('SIGKILL');
    await this.exited;
    this.fds.clear();
    for (const fd of Object.values(this.stateFds)) this.o.native.close(fd);
    for (const r of this.regionFds.values()) this.o.native.close(r.fd);
  }

  /**
   * Planned upgrade: start a new worker from the code now on disk and let it load while the old
   * one finishes what it popped (it then exits); the new one takes over from the same state.
   */
  restart(): void {
    if (!this.child || !this.channel) return;
    if (this.upgrading) {
      // One more after this one (the code on disk may have changed again).
      this.restartAgain = true;
      return;
    }
    this.upgrading = true;
    // The spare runs the old code: the next one is loaded from the code now on disk.
    this.dropSpare();
    // The old worker is asked to go once the new one has loaded (its 'hello'): the guest then
    // waits only for the hand-over, not for a Node start-up.
    this.prestarted = this.launch();
  }

  /** Start a worker process; it waits, idle, until fed. */
  private launch(role: 'worker' | 'spare' = 'worker'): WorkerProc {
    const n = this.o.native;
    const pair = new Int32Array(2);
    const r = n.socketpair(pair, true);
    if (r < 0) throw new Error(`socketpair: errno ${-r}`);
    const [mine, theirs] = [pair[0]!, pair[1]!];
    const script = this.o.workerScript ?? path.join(__dirname, '..', 'worker', 'worker.js');
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.o.env };
    // A test's crash point fires in the first worker only; its successors must recover.
    if (this.starts > 0) delete env.VFSD_CRASHPOINT;
    const c = this.workerCommand(script);
    const child = spawn(c.file, c.args, { stdio: ['ignore', 'inherit', 'inherit', theirs, ...c.fds], env: workerEnv({ ...env, ...c.env }) });
    n.close(theirs);
    this.starts++;
    // A spare logs its start when it takes over (operators and tests follow the serving worker).
    if (role === 'spare') this.o.log.info({ pid: child.pid }, 'spare worker loaded');
    else this.o.log.info({ pid: child.pid, start: this.starts }, 'worker started');
    const channel = new ControlChannel(n, mine, this.o.log);
    // Gone = exited and its channel closed: in a sandbox the process we spawned is the launcher,
    // and only the worker inside holds the channel; its end means every thread of it has exited.
    const closed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const w: WorkerProc = {
      pid: child.pid ?? -1,
      channel,
      kill: (sig) => { child.kill(sig); },
      gone: Promise.all([exited, closed]).then(([status]) => status),
    };
    this.watch(w);
    return w;
  }

  /** The command that starts a worker: in its sandbox, or node itself without one. */
  private workerCommand(script: string): WorkerCommand {
    return this.o.sandbox?.command(script) ?? { file: process.execPath, args: [script], env: {}, fds: [] };
  }

  /**
   * A worker the image before us spawned (we have the same pid, so it is still our child): its
   * end is seen on its channel, and it is reaped with waitpid, as libuv reaps only its own.
   */
  private adopt(pid: number, channelFd: number): WorkerProc {
    const channel = new ControlChannel(this.o.native, channelFd, this.o.log);
    const gone = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      channel.once('close', () => {
        const poll = (): void => {
          const r = this.o.native.reap(pid);
          if (r === 0) setTimeout(poll, REAP_POLL_MS);
          else resolve({ code: null, signal: null });
        };
        poll();
      });
    });
    const w: WorkerProc = {
      pid, channel, gone,
      kill: (sig) => { try { process.kill(pid, sig); } catch { /* already gone */ } },
    };
    this.watch(w);
    return w;
  }

  /** Listen to w, and act when it exits. */
  private watch(w: WorkerProc): void {
    const channel = w.channel;
    channel.start((m, fds) => this.onMessage(m, fds, channel));
    this.exits.push(w.gone.then(({ code, signal }) => {
      w.dead = true;
      this.onExit(w, code, signal);
    }));
  }

  private onExit(w: WorkerProc, code: number | null, signal: string | null): void {
    // Died while being handed to our next image: its channel belongs to that image now (which
    // will see it closed, find the process gone and start a worker).
    if (this.detached && this.child === w) return;
    // Take in what the worker said before it died (its last fd registrations) first.
    w.channel.drain();
    w.channel.close();
    if (this.spare === w) {
      // The idle spare died (killed by hand, or out of memory): load another later.
      this.spare = null;
      this.scheduleSpare();
      return;
    }
    if (this.child !== w) return; // a pre-started worker that was never fed
    this.child = null;
    this.channel = null;
    if (this.closing || this.handingOver) return;
    // An adopted worker's status is not known (null, null); during an upgrade it was asked to go.
    const planned = this.upgrading && (code === 0 || (code === null && signal === null));
    this.upgrading = false;
    if (planned) this.o.log.info({ pid: w.pid }, 'worker retired');
    else this.o.log.warn({ pid: w.pid, code, signal, spare: !this.prestarted && !!this.spare }, 'worker exited; starting a new one');
    const next = this.prestarted ?? this.spare ?? this.launch();
    if (next === this.spare) {
      this.spare = null;
      this.o.log.info({ spare: true, pid: next.pid, start: this.starts }, 'worker started');
    }
    this.prestarted = null;
    this.feed(next, true);
    this.scheduleSpare();
    if (this.restartAgain) {
      this.restartAgain = false;
      this.restart();
    }
  }

  /** Make w the serving worker: hand it the maps, the fds, the memory table and the rings. */
  private feed(w: WorkerProc, recover: boolean): void {
    const channel = w.channel;
    this.child = w;
    this.channel = channel;
    this.exited = Promise.all(this.exits).then(() => undefined);
    const { inodes, files, dirs } = this.stateFds;
    channel.send({ t: 'init', fs: this.o.fs, logLevel: this.o.logLevel, fuseInit: this.fuseInit, fdOps: true }, [inodes, files, dirs]);
    // Hand back every fd the previous workers registered, then let the worker build its maps.
    let keys: string[] = [];
    let batch: number[] = [];
    for (const [k, fd] of this.fds.entries()) {
      keys.push(k);
      batch.push(fd);
      if (batch.length === MAX_FDS_PER_PACKET) {
        channel.send({ t: 'fds', keys }, batch);
        keys = [];
        batch = [];
      }
    }
    if (batch.length > 0) channel.send({ t: 'fds', keys }, batch);
    channel.send({ t: 'go' });
    this.memSent = '';
    if (this.regions.length > 0) this.sendMem();
    for (const cfg of this.rings.values()) this.sendRingStart(cfg, recover);
    // A stop asked of the dead worker is asked again of this one.
    for (const [seq, s] of this.stops) channel.send({ t: 'ring-stop', index: s.index, seq });
    this.o.log.info({ pid: w.pid, recover, fds: this.fds.size, rings: this.rings.size }, 'worker serving');
  }

  private sendMem(): void {
    const key = JSON.stringify(this.regions);
    if (key === this.memSent || !this.channel) return;
    const regions = this.regions.map(({ gpa, size, uaddr, mmapOffset }) => ({ gpa, size, uaddr, mmapOffset }));
    this.channel.send({ t: 'mem', regions }, this.regions.map((r) => r.fd));
    this.memSent = key;
  }

  private sendRingStart(cfg: RingConfig, recover: boolean): void {
    const r = this.rings.get(cfg.index) ?? cfg;
    const fds = [r.kickFd, r.inflightFd!, r.journalFd!, r.callFd].filter((fd) => fd >= 0);
    this.channel?.send({ t: 'ring-start', cfg: { ...r, kickFd: -1, callFd: -1, inflightFd: -1, journalFd: -1 }, recover, hasCall: r.callFd >= 0 }, fds);
  }

  /** A ring's state memfd (in-flight region, journal), kept across workers; re-made if it must grow. */
  private ringRegion(name: string, want: number): number {
    const have = this.regionFds.get(name);
    if (have && have.bytes >= want) return have.fd;
    if (have) this.o.native.close(have.fd);
    const fd = this.o.native.memfdCreate(`vfsd-${name}`, 0);
    if (fd < 0) throw new Error(`memfd_create: errno ${-fd}`);
    fs.ftruncateSync(fd, want);
    this.regionFds.set(name, { fd, bytes: want });
    return fd;
  }

  /** Puts and dels of the worker's fds, in order; each put takes the next fd of the packet. */
  private applyFdOps(m: ChannelMessage, fds: number[]): void {
    const ops = m.ops;
    let next = 0;
    if (Array.isArray(ops)) {
      for (const op of ops as unknown[]) {
        if (!Array.isArray(op) || typeof op[0] !== 'string') continue;
        if (op[1] === 1) {
          const fd = fds[next++];
          if (fd === undefined) break;
          this.fds.put(op[0], fd);
        } else {
          this.fds.del(op[0]);
        }
      }
    }
    if (next !== fds.length) {
      this.o.log.warn({ fds: fds.length, used: next }, 'fd-ops: fds and puts do not match');
      for (const fd of fds.slice(next)) this.o.native.close(fd);
    }
  }

  private onMessage(m: ChannelMessage, fds: number[], from: ControlChannel): void {
    if (m.t === 'fd-ops') {
      this.applyFdOps(m, fds);
      return;
    }
    for (const fd of fds) this.o.native.close(fd);
    switch (m.t) {
      case 'fuse-init':
        this.fuseInit = (m as unknown as { req: FuseInitRecord | null }).req;
        return;
      case 'hello':
        if (this.upgrading && this.prestarted?.channel === from) this.channel?.send({ t: 'shutdown' });
        return;
      case 'ready':
      case 'bye':
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
