// The keeper's side of the data plane: rings are served by a worker process, which this class
// feeds (memory table, ring addresses, kick/call fds, the maps and the fds kept for it). Which
// worker serves, and what happens when one dies, hangs or is upgraded, is the supervisor's
// business (supervisor.ts). The vhost-user connection and every fd QEMU sent stay here, so QEMU
// never sees a worker go.
//
// What a new worker is given: the same init, the current memory table and every ring that was
// running, marked `recover` so it resumes from the ring's state in guest memory. A stop
// requested while no worker is alive waits for the next one.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import type { DataPlane, MemoryTable, RingConfig } from '../vhost/data-plane';
import type { FsOptions } from '../passthrough/passthrough-fs';
import { hasIdMap } from '../passthrough/id-map';
import { MAX_FDS_PER_PACKET } from '../protocol/channel';
import type { FuseInitRecord, ToKeeper, WireFdOp } from '../protocol/worker-channel';
import { FdStore } from './fd-store';
import { sealedMemfd } from '../state/memfd';
import { workerEnv, type WorkerCommand, type WorkerSandbox } from './sandbox';
import { InflightRegion } from '../state/inflight';
import { Journal } from '../state/journal';
import { Supervisor, type Adoptable, type Role } from './supervisor';
import { WorkerProcess } from './worker-process';

export interface WorkerDataPlaneOptions {
  native: NativeBinding;
  log: Logger;
  fs: FsOptions;
  logLevel: string;
  /** The worker's entry script (default: the compiled src/worker/entry.js beside us). */
  workerScript?: string;
  /** Extra environment for the worker (tests: crash points, holds). */
  env?: NodeJS.ProcessEnv;
  /**
   * Keep a spare worker loaded and idle, so that after a crash the keeper feeds it at once
   * instead of waiting for a Node start-up (default true). Costs one idle process.
   */
  spare?: boolean;
  /** Start workers in this sandbox (src/keeper/sandbox.ts); undefined: plain node, as this process. */
  sandbox?: WorkerSandbox;
  /** How long a worker may take to load, recover or retire, or stay silent (ms; default 20 s). */
  timeoutMs?: number;
}

export const DEFAULT_WORKER_TIMEOUT_MS = 20_000;

interface Stop { index: number; resolve: (base: number) => void }

/** What a re-executed keeper needs to carry on serving (fd numbers survive execve). */
export interface PlaneState {
  stateFds: { inodes: number; files: number; dirs: number };
  regionFds: Array<[string, { fd: number; bytes: number }]>;
  fds: Array<[string, number]>;
  fuseInit: FuseInitRecord | null;
  rings: RingConfig[];
  regions: Array<MemoryTable['regions'][number]>;
  /** The serving worker, left running across the re-exec: its pid, our end of its channel,
   *  whether it answers pings and applies the mapping layers (older workers do not). */
  worker?: Adoptable;
  /** A loaded spare, left running likewise. */
  spare?: Adoptable;
}

export class WorkerDataPlane implements DataPlane {
  private readonly rings = new Map<number, RingConfig>();
  private regions: MemoryTable['regions'] = [];
  private memSent = '';
  private seq = 0;
  private readonly stops = new Map<number, Stop>();
  private readonly regionFds = new Map<string, { fd: number; bytes: number }>();
  /** The guest's FUSE_INIT, replayed into every new worker (the guest sends it only once). */
  private fuseInit: FuseInitRecord | null = null;
  /** Workers the image before us left running (re-exec), to adopt at start(). */
  private adoptable: { worker?: Adoptable; spare?: Adoptable } = {};
  /** Test holds (VFSD_HOLD=role:point) still to be handed to a worker of that role. */
  private hold: { role: string; spec: string } | null = null;
  private readonly sup: Supervisor;
  /** Duplicates of every fd the worker registered: they outlive it. */
  readonly fds: FdStore;
  /** The memfds of the inode, open-file and open-dir maps, kept across workers. */
  private readonly stateFds: { inodes: number; files: number; dirs: number };

  constructor(private readonly o: WorkerDataPlaneOptions, restored?: PlaneState) {
    this.fds = new FdStore(o.native);
    const holdSpec = o.env?.VFSD_HOLD ?? process.env.VFSD_HOLD;
    if (holdSpec) this.hold = { role: holdSpec.slice(0, holdSpec.indexOf(':')), spec: holdSpec };
    this.sup = new Supervisor(
      {
        native: o.native, log: o.log, spare: o.spare !== false, timeoutMs: o.timeoutMs ?? DEFAULT_WORKER_TIMEOUT_MS,
        needsMaps: hasIdMap(o.fs.idMap) || o.fs.xattrMap !== null,
      },
      {
        spawn: (role) => this.spawn(role),
        feed: (w, recover, stuckBefore) => this.feed(w, recover, stuckBefore),
        message: (w, m, fds, fdsLost) => this.onMessage(w, m, fds, fdsLost),
      },
    );
    if (restored) {
      this.stateFds = restored.stateFds;
      for (const [k, v] of restored.regionFds) this.regionFds.set(k, v);
      for (const [k, fd] of restored.fds) this.fds.put(k, fd);
      this.fuseInit = restored.fuseInit;
      for (const r of restored.rings) this.rings.set(r.index, r);
      this.regions = restored.regions;
      this.adoptable = { worker: restored.worker, spare: restored.spare };
      return;
    }
    const mk = (name: string): number => {
      const fd = sealedMemfd(o.native, `vfsd-${name}`);
      if (fd < 0) throw new Error(`memfd_create: errno ${-fd}`);
      return fd;
    };
    this.stateFds = { inodes: mk('inodes'), files: mk('files'), dirs: mk('dirs') };
  }

  /** Worker starts so far (1 = the first). */
  get starts(): number { return this.sup.starts; }

  get workerPid(): number | undefined {
    return this.sup.current?.pid;
  }

  /**
   * Start serving (recover: resume rings an earlier keeper image was serving). True when
   * workers an earlier image left running were adopted (they run that image's code).
   */
  start(recover = false): boolean {
    const a = this.adoptable;
    this.adoptable = {};
    // A worker that kept serving the guest while we re-executed carries on as it is.
    if (a.worker) this.memSent = JSON.stringify(this.regions);
    return this.sup.start(recover, a);
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
    const { worker, spare } = this.sup.handedOver;
    if (worker) state.worker = { pid: worker.pid, channelFd: worker.channel.fd, pings: worker.answersPings, maps: worker.appliesMaps };
    if (spare) state.spare = { pid: spare.pid, channelFd: spare.channel.fd, pings: spare.answersPings, maps: spare.appliesMaps };
    const fds = [
      ...Object.values(this.stateFds), ...[...this.regionFds.values()].map((r) => r.fd), ...state.fds.map(([, fd]) => fd),
      ...[state.worker, state.spare].flatMap((x) => (x ? [x.channelFd] : [])),
    ];
    return { state, fds };
  }

  /**
   * Get ready for the keeper's re-exec: leave the serving worker (and a loaded spare) running for
   * the next image (true), or, when it is already retiring in an upgrade, let it finish and exit
   * (false). Every other worker is stopped either way.
   */
  prepareReexec(): Promise<boolean> {
    return this.sup.handover();
  }

  /** The re-exec failed: serve again, with the worker we still have or a new one. */
  resume(): void {
    this.sup.resume();
  }

  /** Planned upgrade (SIGHUP): a worker from the code now on disk takes over once loaded. */
  restart(): void {
    this.sup.startUpgrade();
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
      this.sup.current?.send({ t: 'ring-stop', index, seq });
      this.watchStop(seq);
    });
  }

  /**
   * QEMU waits for a ring stop (GET_VRING_BASE) synchronously: a worker that does not finish it
   * in time (a request stuck in the kernel) is killed as stuck; its successor answers the stuck
   * requests with an error and then the stop. Checked again until the stop is answered.
   */
  private watchStop(seq: number): void {
    const timer = setTimeout(() => {
      if (!this.stops.has(seq)) return;
      const w = this.sup.current;
      if (w && w.phase !== 'recovering' && w.killedAt === null) {
        this.o.log.warn({ pid: w.pid, seq }, 'ring stop not answered in time; killing the worker as stuck');
        this.sup.killStuck(w);
      }
      this.watchStop(seq);
    }, this.sup.timeoutMs);
    timer.unref();
  }

  ringStopping(index: number): void {
    this.sup.current?.send({ t: 'ring-stopping', index });
  }

  setCallFd(index: number, fd: number): void {
    const r = this.rings.get(index);
    if (r) r.callFd = fd;
    this.sup.current?.send({ t: 'call-fd', index }, fd >= 0 ? [fd] : []);
  }

  /** Stop the workers for good (the connection to QEMU is gone). */
  async close(): Promise<void> {
    await this.sup.close();
    this.fds.clear();
    for (const fd of Object.values(this.stateFds)) this.o.native.close(fd);
    for (const r of this.regionFds.values()) this.o.native.close(r.fd);
  }

  /** Start a worker process; it loads, says hello and waits, idle, until fed. */
  private spawn(role: Role): WorkerProcess | null {
    const script = this.o.workerScript ?? path.join(__dirname, '..', 'worker', 'entry.js');
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.o.env };
    // A test's crash point fires in the first worker only; its successors must recover.
    if (this.sup.starts > 0) delete env.VFSD_CRASHPOINT;
    // A test's hold (VFSD_HOLD=role:point) applies to the first worker of that role only.
    delete env.VFSD_HOLD;
    if (this.hold && this.hold.role === role) {
      env.VFSD_HOLD = this.hold.spec;
      this.hold = null;
    }
    const c = this.workerCommand(script);
    return WorkerProcess.spawn(this.o.native, this.o.log, c, workerEnv({ ...env, ...c.env }));
  }

  /** The command that starts a worker: in its sandbox, or node itself without one. */
  private workerCommand(script: string): WorkerCommand {
    return this.o.sandbox?.command(script) ?? { file: process.execPath, args: [script], env: {}, fds: [] };
  }

  /** Make w the serving worker: hand it the maps, the fds, the memory table and the rings. */
  private feed(w: WorkerProcess, recover: boolean, stuckBefore?: number): void {
    const { inodes, files, dirs } = this.stateFds;
    w.send({ t: 'init', fs: this.o.fs, logLevel: this.o.logLevel, fuseInit: this.fuseInit, fdOps: true }, [inodes, files, dirs]);
    // Hand back every fd the previous workers registered, then let the worker build its maps.
    let keys: string[] = [];
    let batch: number[] = [];
    for (const [k, fd] of this.fds.entries()) {
      keys.push(k);
      batch.push(fd);
      if (batch.length === MAX_FDS_PER_PACKET) {
        w.send({ t: 'fds', keys }, batch);
        keys = [];
        batch = [];
      }
    }
    if (batch.length > 0) w.send({ t: 'fds', keys }, batch);
    w.send({ t: 'go' });
    this.memSent = '';
    if (this.regions.length > 0) this.sendMem();
    for (const cfg of this.rings.values()) this.sendRingStart(cfg, recover, stuckBefore);
    // A stop asked of the dead worker is asked again of this one.
    for (const [seq, s] of this.stops) w.send({ t: 'ring-stop', index: s.index, seq });
    this.o.log.debug({ pid: w.pid, recover, fds: this.fds.size, rings: this.rings.size }, 'worker fed');
  }

  private sendMem(): void {
    const key = JSON.stringify(this.regions);
    const w = this.sup.current;
    if (key === this.memSent || !w) return;
    const regions = this.regions.map(({ gpa, size, uaddr, mmapOffset }) => ({ gpa, size, uaddr, mmapOffset }));
    w.send({ t: 'mem', regions }, this.regions.map((r) => r.fd));
    this.memSent = key;
  }

  private sendRingStart(cfg: RingConfig, recover: boolean, stuckBefore?: number): void {
    const r = this.rings.get(cfg.index) ?? cfg;
    const fds = [r.kickFd, r.inflightFd!, r.journalFd!, r.callFd].filter((fd) => fd >= 0);
    const wire = { ...r, kickFd: -1, callFd: -1, inflightFd: -1, journalFd: -1, ...(stuckBefore !== undefined ? { stuckBefore } : {}) };
    this.sup.current?.send({ t: 'ring-start', cfg: wire, recover, hasCall: r.callFd >= 0 }, fds);
  }

  /** A ring's state memfd (in-flight region, journal), kept across workers; re-made if it must grow. */
  private ringRegion(name: string, want: number): number {
    const have = this.regionFds.get(name);
    if (have && have.bytes >= want) return have.fd;
    if (have) this.o.native.close(have.fd);
    const fd = sealedMemfd(this.o.native, `vfsd-${name}`, want);
    if (fd < 0) throw new Error(`memfd_create: errno ${-fd}`);
    this.regionFds.set(name, { fd, bytes: want });
    return fd;
  }

  /**
   * Puts and dels of the worker's fds, in order; each put takes the next fd of the packet. With
   * fdsLost (MSG_CTRUNC: our fd table was full), the fds that came are the first puts' and the
   * later puts' never arrived: their keys are dropped (what we held under one is not its fd any
   * more). A restarted worker opens such files again from their records; an inode without a file
   * handle or a lock owner is lost to it. The fd plan (fd-plan.ts) keeps us from getting here.
   */
  private applyFdOps(ops: readonly WireFdOp[], fds: number[], fdsLost: boolean): void {
    let next = 0;
    let lost = 0;
    for (const [key, put] of ops) {
      if (put === 0) {
        this.fds.del(key);
        continue;
      }
      const fd = fds[next++];
      if (fd === undefined) {
        if (!fdsLost) break;
        this.fds.del(key);
        lost++;
        continue;
      }
      this.fds.put(key, fd);
    }
    if (fdsLost) this.o.log.error({ lost, got: fds.length }, 'fd-ops: fds did not arrive (MSG_CTRUNC: the keeper\'s fd table is full); a restarted worker will lack them');
    else if (next !== fds.length) this.o.log.warn({ fds: fds.length, used: next }, 'fd-ops: fds and puts do not match');
    for (const fd of fds.slice(next)) this.o.native.close(fd);
  }

  private onMessage(_w: WorkerProcess, m: ToKeeper, fds: number[], fdsLost: boolean): void {
    switch (m.t) {
      case 'fd-ops':
        this.applyFdOps(m.ops, fds, fdsLost);
        return;
      // A worker of release 1 registers one fd per message (see worker-channel.ts).
      case 'fd-put':
        this.applyFdOps([[m.k, 1]], fds, fdsLost);
        return;
      case 'fd-del':
        this.applyFdOps([[m.k, 0]], fds, fdsLost);
        return;
      default:
    }
    for (const fd of fds) this.o.native.close(fd);
    switch (m.t) {
      case 'fuse-init':
        this.fuseInit = m.req;
        return;
      case 'ring-stopped': {
        const s = this.stops.get(m.seq);
        if (!s) return;
        this.stops.delete(m.seq);
        // The ring the stop was asked for, whatever index the worker names.
        this.rings.delete(s.index);
        s.resolve(m.base);
        return;
      }
      default:
        this.o.log.warn({ t: m.t }, 'unexpected message from worker');
    }
  }
}
