// Where the rings are served. The vhost-user control plane (backend.ts) decides when a ring
// runs; a DataPlane runs it: in this process (LocalDataPlane), or in a worker process that the
// keeper supervises (keeper/worker-data-plane.ts).

import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import type { GuestMemory } from '../virtio/guest-memory';
import { SplitQueue } from '../virtio/split-queue';
import { QueueRunner, type ChainHandler } from '../virtio/queue-runner';
import type { MemRegion } from './message';
import { InflightRegion, type InflightRecovery } from '../state/inflight';
import { Journal } from '../state/journal';

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
  /** Outcome journal (a memfd of Journal.sizeFor(size) bytes), or -1. */
  journalFd?: number;
  /** A restarted worker resumes a ring an earlier one was serving: base and the requests to
   *  re-run come from the in-flight region, not from `base`. */
  recover?: boolean;
  /** With recover: the previous worker was killed as stuck; requests it popped before this time
   *  (wallMs32(), src/state/inflight.ts) are answered with an error instead of re-run. */
  stuckBefore?: number;
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
  private readonly maps = new Map<number, ArrayBuffer[]>();

  constructor(private readonly o: {
    native: NativeBinding; log: Logger;
    /** The chain handler of a queue; journal: where its non-idempotent outcomes are recorded. */
    makeHandler(queueIndex: number, journal: Journal | null): ChainHandler;
    onRingStopping?(q: number): void;
  }) {}

  /** Map a ring's state memfd; kept until the ring stops. */
  private mapRegion(index: number, fd: number, bytes: number, what: string): ArrayBuffer {
    const buf = this.o.native.mmap(fd, 0, bytes);
    if (typeof buf === 'number') throw new Error(`cannot map the ${what} of ring ${index}: errno ${-buf}`);
    const list = this.maps.get(index) ?? [];
    list.push(buf);
    this.maps.set(index, list);
    return buf;
  }

  startRing(cfg: RingConfig, table: MemoryTable): void {
    const make = (lastAvail: number): SplitQueue => new SplitQueue(table.mem, {
      size: cfg.size, descVa: cfg.descVa, availVa: cfg.availVa, usedVa: cfg.usedVa,
      lastAvail, eventIdx: cfg.eventIdx, log: this.o.log, index: cfg.index,
    });
    let queue = make(cfg.base);
    let inflight: InflightRegion | undefined;
    let resubmit: number[] | undefined;
    if (cfg.inflightFd !== undefined && cfg.inflightFd >= 0) {
      inflight = new InflightRegion(this.mapRegion(cfg.index, cfg.inflightFd, InflightRegion.sizeFor(cfg.size), 'in-flight region'));
      let r: InflightRecovery | null = null;
      if (cfg.recover) {
        // libvhost-user's vu_check_queue_inflights: repair a torn completion, then re-run
        // what the guest still waits for, oldest first.
        try {
          r = inflight.recover(queue.usedIndex);
        } catch (e) {
          // Not a region a worker of ours leaves (corrupted): failing here would fail every
          // worker after this one. The ring goes on; the requests it recorded are not re-run.
          this.o.log.error({ queue: cfg.index, why: (e as Error).message }, 'in-flight region unusable; requests in flight are lost');
        }
      }
      if (r !== null) {
        queue = make(r.lastAvail);
        resubmit = r.resubmit;
        this.o.log.info({ queue: cfg.index, base: r.lastAvail, resubmit: r.resubmit.length, repaired: r.repaired }, 'ring recovered');
      } else {
        if (cfg.recover) queue = make(queue.usedIndex);
        inflight.format(cfg.size, queue.usedIndex);
      }
    } else if (cfg.recover) {
      // No in-flight record: everything the guest got back is done; resume after it.
      queue = make(queue.usedIndex);
    }
    let journal: Journal | null = null;
    if (cfg.journalFd !== undefined && cfg.journalFd >= 0) {
      journal = new Journal(this.mapRegion(cfg.index, cfg.journalFd, Journal.sizeFor(cfg.size), 'journal'));
      const bad = cfg.recover ? journal.validate(cfg.size) : 'fresh start';
      if (bad !== null) {
        if (cfg.recover) this.o.log.warn({ queue: cfg.index, why: bad }, 'journal not usable; starting a new one');
        journal.format(cfg.size);
      }
    }
    const runner = new QueueRunner({
      native: this.o.native, mem: table.mem, index: cfg.index, queue, kickFd: cfg.kickFd, callFd: cfg.callFd,
      handler: this.o.makeHandler(cfg.index, journal), log: this.o.log,
      ...(inflight ? { inflight } : {}), ...(resubmit ? { resubmit } : {}),
      ...(cfg.recover && cfg.stuckBefore !== undefined ? { stuckBefore: cfg.stuckBefore } : {}),
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
    for (const buf of this.maps.get(index) ?? []) this.o.native.munmap(buf);
    this.maps.delete(index);
    return base;
  }

  setCallFd(index: number, fd: number): void {
    this.runners.get(index)?.setCallFd(fd);
  }

  /** Stop popping on every ring (requests already popped still complete). */
  quiesce(): void {
    for (const r of this.runners.values()) void r.stop();
  }

  /** Requests popped and not yet completed, over all rings. */
  inFlight(): number {
    let n = 0;
    for (const r of this.runners.values()) n += r.inFlight;
    return n;
  }

  ringStopping(index: number): void {
    this.o.onRingStopping?.(index);
  }
}
