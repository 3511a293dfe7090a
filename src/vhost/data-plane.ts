// Where the rings are served. The vhost-user control plane (backend.ts) decides when a ring
// runs; a DataPlane runs it: in this process (LocalDataPlane), or in a worker process that the
// keeper supervises (keeper/worker-data-plane.ts).

import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import type { GuestMemory } from '../virtio/guest-memory';
import { SplitQueue } from '../virtio/split-queue';
import { QueueRunner, type ChainHandler } from '../virtio/queue-runner';
import type { MemRegion } from './message';
import { InflightRegion } from '../state/inflight';

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
  /** In-flight tracking region (a memfd of InflightRegion.sizeFor(size) bytes), or -1. */
  inflightFd?: number;
  /** A restarted worker resumes a ring an earlier one was serving: base and the requests to
   *  re-run come from the in-flight region, not from `base`. */
  recover?: boolean;
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
  private readonly inflightMaps = new Map<number, ArrayBuffer>();

  constructor(private readonly o: { native: NativeBinding; log: Logger; makeHandler(queueIndex: number): ChainHandler; onRingStopping?(q: number): void }) {}

  startRing(cfg: RingConfig, table: MemoryTable): void {
    const make = (lastAvail: number): SplitQueue => new SplitQueue(table.mem, {
      size: cfg.size, descVa: cfg.descVa, availVa: cfg.availVa, usedVa: cfg.usedVa,
      lastAvail, eventIdx: cfg.eventIdx, log: this.o.log, index: cfg.index,
    });
    let queue = make(cfg.base);
    let inflight: InflightRegion | undefined;
    let resubmit: number[] | undefined;
    if (cfg.inflightFd !== undefined && cfg.inflightFd >= 0) {
      const buf = this.o.native.mmap(cfg.inflightFd, 0, InflightRegion.sizeFor(cfg.size));
      if (typeof buf === 'number') throw new Error(`cannot map the in-flight region: errno ${-buf}`);
      this.inflightMaps.set(cfg.index, buf);
      inflight = new InflightRegion(buf);
      if (cfg.recover) {
        // libvhost-user's vu_check_queue_inflights: repair a torn completion, then re-run
        // what the guest still waits for, oldest first.
        const r = inflight.recover(queue.usedIndex);
        queue = make(r.lastAvail);
        resubmit = r.resubmit;
        this.o.log.info({ queue: cfg.index, base: r.lastAvail, resubmit: r.resubmit.length, repaired: r.repaired }, 'ring recovered');
      } else {
        inflight.format(cfg.size, queue.usedIndex);
      }
    } else if (cfg.recover) {
      // No in-flight record: everything the guest got back is done; resume after it.
      queue = make(queue.usedIndex);
    }
    const runner = new QueueRunner({
      native: this.o.native, mem: table.mem, index: cfg.index, queue, kickFd: cfg.kickFd, callFd: cfg.callFd,
      handler: this.o.makeHandler(cfg.index), log: this.o.log,
      ...(inflight ? { inflight } : {}), ...(resubmit ? { resubmit } : {}),
    });
    runner.start();
    this.runners.set(cfg.index, runner);
    // Requests may be waiting already (the kick may have come before we watched the fd).
    runner.kick();
    // After a restart, a used entry may have been pushed without its interrupt, or a kick
    // consumed by the dead worker: one spurious interrupt is harmless, a missing one hangs.
    if (cfg.recover && cfg.callFd >= 0) this.o.native.eventfdWrite(cfg.callFd, 1);
  }

  async stopRing(index: number): Promise<number> {
    const r = this.runners.get(index);
    if (!r) throw new Error(`ring ${index} is not running`);
    this.runners.delete(index);
    const base = await r.stop();
    const buf = this.inflightMaps.get(index);
    if (buf) this.o.native.munmap(buf);
    this.inflightMaps.delete(index);
    return base;
  }

  setCallFd(index: number, fd: number): void {
    this.runners.get(index)?.setCallFd(fd);
  }

  ringStopping(index: number): void {
    this.o.onRingStopping?.(index);
  }
}
