// The worker: the process that touches guest data. It serves the rings the keeper hands it
// (memory table, ring addresses, kick/call fds) with the FUSE session over the passthrough
// file system. It owns nothing that must outlive it: when it dies, the keeper starts another.
//
// What the keeper and the worker say to each other is src/protocol/worker-channel.ts.

import type { Logger } from '../log';
import { createLogger } from '../log';
import { loadNative, type NativeBinding } from '../native/binding';
import { ControlChannel, MAX_FDS_PER_PACKET } from '../protocol/channel';
import { decodeToWorker, type ToKeeper, type ToWorker, type WireFdOp } from '../protocol/worker-channel';
import { GuestMemory } from '../virtio/guest-memory';
import { LocalDataPlane } from '../vhost/data-plane';
import type { MemRegion } from '../vhost/message';
import { PassthroughFs } from '../passthrough/passthrough-fs';
import { FuseSession } from '../fuse/session';
import { BatchingFdRegistry, type FdOp } from '../state/fd-registry';
import { holdAt } from './hold';
import { enterSandbox, probeReport, workerPid, type WorkerSandboxState } from './sandbox';

/** Longest a lazy fd registration waits before it is sent to the keeper. */
const FD_FLUSH_MS = 20;
/** Most ops per fd-ops packet (keeps the JSON well under the packet size). */
const FD_OPS_PER_PACKET = Math.min(MAX_FDS_PER_PACKET, 500);

/** What the keeper's init said (fdOps: it takes batched fd-ops; keepers before take fd-put / fd-del). */
type WorkerInit = Extract<ToWorker, { t: 'init' }>;

/** The worker's end of its channel to the keeper. */
export type WorkerEnd = ControlChannel<ToWorker, ToKeeper>;

/** The fd a worker finds its control channel on. */
export const WORKER_CHANNEL_FD = 3;

export class Worker {
  private fs: PassthroughFs | null = null;
  private session: FuseSession | null = null;
  private plane: LocalDataPlane | null = null;
  private readonly mem: GuestMemory;
  private regions: Array<MemRegion & { fd: number }> = [];
  /** The worker's own duplicates of each ring's kick and call fds. */
  private readonly ringFds = new Map<number, { kick: number; call: number; inflight: number; journal: number }>();
  private init: WorkerInit | null = null;
  private stateFds: number[] = [];
  private registry: BatchingFdRegistry | null = null;
  /** Fds the keeper kept for our predecessors, by registry key, until the maps claim them. */
  private readonly recovered = new Map<string, number>();

  constructor(private readonly native: NativeBinding, private readonly channel: WorkerEnd, private log: Logger,
    private readonly sandbox: WorkerSandboxState = {}) {
    this.mem = new GuestMemory(native);
  }

  start(): void {
    this.channel.on('close', (why: string) => {
      // The keeper is gone: so is the connection to QEMU. Nothing left to serve.
      this.log.info({ why }, 'control channel closed; worker exiting');
      process.exit(0);
    });
    this.channel.start((m, fds, fdsLost) => {
      if (fdsLost) {
        // A ring's eventfd or a memory region we will never get: no way to serve correctly.
        this.log.fatal({ t: m.t, fds: fds.length }, 'a control message lost its fds (MSG_CTRUNC); worker exiting');
        process.exit(70);
      }
      try {
        this.onMessage(m, fds);
      } catch (e) {
        // Our own invariant broke: die, and let the keeper start a fresh worker.
        this.log.fatal({ err: e, t: m.t }, 'worker failed handling a control message');
        process.exit(70);
      }
    });
    holdAt('loading');
    // Loaded and listening: a keeper upgrading workers retires the old one now.
    this.channel.send({ t: 'hello', pid: workerPid(), pings: true, maps: true });
  }

  private onMessage(m: ToWorker, fds: number[]): void {
    switch (m.t) {
      case 'init': {
        // (decodeToWorker gave what a keeper from before sent no value for its default.)
        this.init = m;
        this.stateFds = fds;
        this.log = createLogger(this.init.logLevel, logBase());
        limitFds(this.native, this.log, this.init.fs.limits.workerNofile);
        return;
      }
      case 'fds': {
        const keys = m.keys;
        if (keys.length !== fds.length) throw new Error(`fds: ${keys.length} keys, ${fds.length} fds`);
        keys.forEach((k, i) => this.recovered.set(k, fds[i]!));
        return;
      }
      case 'ping':
        this.channel.send({ t: 'pong', n: m.n });
        return;
      case 'go': {
        if (!this.init) throw new Error('go before init');
        holdAt('recovering');
        const [inodes, files, dirs] = this.stateFds;
        const channel = this.channel;
        // A worker started by an older keeper (a planned upgrade under it) speaks its protocol.
        const batched = this.init.fdOps === true;
        const registry = new BatchingFdRegistry(
          (ops) => sendFdOps(channel, ops, batched),
          (fn) => { setTimeout(fn, FD_FLUSH_MS); },
        );
        this.registry = registry;
        this.fs = new PassthroughFs(this.native, this.init.fs, this.log, {
          fds: { inodes, files, dirs }, registry, recovered: this.recovered, shareFd: this.sandbox.shareFd, proc: this.sandbox.proc,
        });
        const session = new FuseSession(this.fs, this.log, { probes: this.fs, rangeIo: this.fs });
        this.session = session;
        const fuseInit = this.init.fuseInit;
        if (fuseInit && !session.restoreInit({ ...fuseInit, flags: BigInt(fuseInit.flags) })) throw new Error('cannot resume the FUSE session');
        session.onInit = (req) => {
          this.channel.send({ t: 'fuse-init', req: req ? { major: req.major, minor: req.minor, maxReadahead: req.maxReadahead, flags: req.flags.toString() } : null });
        };
        const fs = this.fs;
        this.plane = new LocalDataPlane({
          native: this.native, log: this.log,
          makeHandler: (q, journal) => session.handlerFor(q, journal),
          onRingStopping: () => fs.cancelWaits(),
        });
        this.channel.send({ t: 'ready', pid: workerPid() });
        setImmediate(() => holdAt('serving'));
        return;
      }
      case 'mem': {
        const regions = m.regions;
        if (fds.length !== regions.length) throw new Error(`mem: ${regions.length} regions, ${fds.length} fds`);
        this.mem.clear();
        for (const r of this.regions) this.native.close(r.fd);
        this.regions = regions.map((r, i) => ({ ...r, fd: fds[i]! }));
        for (const r of this.regions) {
          const rc = this.mem.addRegion({ ...r });
          if (rc < 0) throw new Error(`cannot map guest memory region at gpa 0x${r.gpa.toString(16)}: errno ${-rc}`);
        }
        return;
      }
      case 'ring-start': {
        const { cfg, recover, hasCall } = m;
        const [kick, inflightFd, journalFd, call] = [fds[0] ?? -1, fds[1] ?? -1, fds[2] ?? -1, hasCall ? fds[3] ?? -1 : -1];
        this.ringFds.set(cfg.index, { kick, call, inflight: inflightFd, journal: journalFd });
        this.plane!.startRing({ ...cfg, kickFd: kick, callFd: call, inflightFd, journalFd, recover }, { regions: this.regions, mem: this.mem });
        return;
      }
      case 'ring-stopping':
        this.plane!.ringStopping(m.index);
        return;
      case 'ring-stop': {
        const { index, seq } = m;
        void this.plane!.stopRing(index).then((base) => {
          const f = this.ringFds.get(index);
          this.ringFds.delete(index);
          if (f) for (const fd of [f.kick, f.call, f.inflight, f.journal]) if (fd >= 0) this.native.close(fd);
          this.channel.send({ t: 'ring-stopped', index, seq, base });
        });
        return;
      }
      case 'call-fd': {
        const index = m.index;
        const fd = fds[0] ?? -1;
        const f = this.ringFds.get(index);
        this.plane!.setCallFd(index, fd);
        if (f) {
          if (f.call >= 0) this.native.close(f.call);
          f.call = fd;
        } else if (fd >= 0) {
          this.native.close(fd);
        }
        return;
      }
      case 'shutdown': {
        // Planned retirement: stop popping, let what was popped finish (SETLKW waits excepted:
        // they are re-run by the successor, which keeps waiting), then leave.
        const plane = this.plane;
        const fs = this.fs;
        if (!plane || !fs) process.exit(0);
        plane.quiesce();
        const check = (): void => {
          if (plane.inFlight() <= fs.lockWaitCount) {
            this.registry?.flush();
            this.channel.send({ t: 'bye' });
            process.exit(0);
          }
          setTimeout(check, 1);
        };
        check();
        return;
      }
      default: {
        const never: never = m;
        for (const fd of fds) this.native.close(fd);
        this.log.warn({ m: never }, 'unknown control message');
      }
    }
  }
}

/**
 * Before any guest request: RLIMIT_NOFILE as the keeper planned it (soft and hard: we cannot
 * raise it again), below the keeper's by its headroom (keeper/fd-plan.ts). So whatever the guest
 * makes us hold, the keeper has room for its duplicates.
 */
function limitFds(native: NativeBinding, log: Logger, nofile: number): void {
  if (nofile <= 0) return; // none planned (a keeper from before the plan)
  const r = native.setNofile(nofile, true);
  if (r < 0) log.warn({ errno: -r, nofile }, 'could not lower RLIMIT_NOFILE as the keeper planned');
}

/**
 * Send fd registry ops in order: [key, fd] pairs; the fds of puts ride along in op order. Without
 * `batched`, one fd-put or fd-del message per op, as keepers before fd-ops understand.
 */
export function sendFdOps(channel: WorkerEnd, ops: FdOp[], batched = true): void {
  if (!batched) {
    for (const [k, fd] of ops) channel.send(fd >= 0 ? { t: 'fd-put', k } : { t: 'fd-del', k }, fd >= 0 ? [fd] : []);
    return;
  }
  for (let i = 0; i < ops.length; i += FD_OPS_PER_PACKET) {
    const part = ops.slice(i, i + FD_OPS_PER_PACKET);
    const fds: number[] = [];
    const wire: WireFdOp[] = [];
    for (const [k, fd] of part) {
      wire.push([k, fd >= 0 ? 1 : 0]);
      if (fd >= 0) fds.push(fd);
    }
    channel.send({ t: 'fd-ops', ops: wire }, fds);
  }
}

/** Log fields on every line: the pid the keeper knows, and ours where a pid namespace differs. */
function logBase(): Record<string, unknown> {
  const pid = workerPid();
  return pid === process.pid ? { role: 'worker', pid } : { role: 'worker', pid, nsPid: process.pid };
}

export function workerMain(): void {
  const native = loadNative();
  const log = createLogger(process.env.VFSD_LOG_LEVEL ?? 'info', logBase());
  // Every module is loaded by now (the imports above): the sandbox may close over our code.
  let sandbox: WorkerSandboxState;
  try {
    sandbox = enterSandbox(native);
  } catch (e) {
    log.fatal({ err: e, part: 'worker' }, `sandbox: ${(e as Error).message}`);
    process.exit(125);
  }
  if (process.env.VFSD_SANDBOX_PROBE) {
    process.stdout.write(`${JSON.stringify(probeReport(native, sandbox))}\n`);
    process.exit(0);
  }
  const channel: WorkerEnd = new ControlChannel(native, WORKER_CHANNEL_FD, log, decodeToWorker);
  new Worker(native, channel, log, sandbox).start();
}

if (require.main === module) workerMain();
