// Where the rings are served. The vhost-user control plane (backend.ts) decides when a ring
// runs; a DataPlane runs it: in this process (LocalDataPlane), or in a worker process that the
// keeper supervises (keeper/worker-data-plane.ts).

import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import type { GuestMemory } from '../virtio/guest-memory';
import { SplitQueue } from '../virtio/split-queue';
import { QueueRunner, type ChainHandler } from '../virtio/queue-runner';
import type { MemRegion } from './message';

/** Everything needed to serve one ring (addresses are frontend virtual addresses). */
export interface RingConfig {
  index: number;
  size: number;
  descVa: number;
  availVa: number;
  usedVa: number;
  /** Next avail index to process. */
  base: number;
  eventIdx: boolean;
  kickFd: number;
  callFd: number;
}

/** The memory table, with the fds the backend owns (a data plane dups what it keeps). */
export interface MemoryTable {
  regions: ReadonlyArray<MemRegion & { fd: number }>;
  /** The backend's own mapping, for planes that run in this process. */
  mem: GuestMemory;
}

export interface DataPlane {
  /** Start serving a ring. Throws if it cannot. */
  startRing(cfg: RingConfig, table: MemoryTable): void;
  /** Stop popping; resolve with the next avail index once every popped request completed. */
  stopRing(index: number): Promise<number>;
  /** The guest's interrupt fd changed (-1: none). */
  setCallFd(index: number, fd: number): void;
  /** The device is stopping a ring: requests that could wait forever must finish now. */
  ringStopping?(index: number): void;
}

export class LocalDataPlane implements DataPlane {
  private readonly runners = new Map<number, QueueRunner>();

  constructor(private readonly o: { native: NativeBinding; log: Logger; makeHandler(queueIndex: number): ChainHandler; onRingStopping?(q: number): void }) {}

  startRing(cfg: RingConfig, table: MemoryTable): void {
    const queue = new SplitQueue(table.mem, {
      size: cfg.size, descVa: cfg.descVa, availVa: cfg.availVa, usedVa: cfg.usedVa,
      lastAvail: cfg.base, eventIdx: cfg.eventIdx, log: this.o.log, index: cfg.index,
    });
    const runner = new QueueRunner({
      native: this.o.native, mem: table.mem, index: cfg.index, queue, kickFd: cfg.kickFd, callFd: cfg.callFd,
      handler: this.o.makeHandler(cfg.index), log: this.o.log,
    });
    runner.start();
    this.runners.set(cfg.index, runner);
    // Requests may be waiting already (the kick may have come before we watched the fd).
    runner.kick();
  }

  async stopRing(index: number): Promise<number> {
    const r = this.runners.get(index);
    if (!r) throw new Error(`ring ${index} is not running`);
    this.runners.delete(index);
    return r.stop();
  }

  setCallFd(index: number, fd: number): void {
    this.runners.get(index)?.setCallFd(fd);
  }

  ringStopping(index: number): void {
    this.o.onRingStopping?.(index);
  }
}
