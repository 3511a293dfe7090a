// Drives one virtqueue: kick eventfd readable → drain it → pop chains → hand them to the handler.
// Completions (sync inside the handler, or later from async I/O) push used entries; the call eventfd
// is signalled at the end of each drain pass and every NOTIFY_EVERY completions within it, and
// completions arriving outside a pass are signalled together once per turn of the event loop
// (setImmediate), always after the last of them
// (the driver's EVENT_IDX / NO_INTERRUPT choice is honoured by SplitQueue.shouldNotify).
//
// With an InflightRegion (src/state/inflight.ts) every request is recorded there, so that a worker
// killed at any instruction can be replaced by one that re-runs exactly the requests the guest is
// still waiting for (`resubmit`, from InflightRegion.recover), oldest first, before new ones:
//   popHead → markInflight → [after-mark-inflight] → chainAt → handler → ... → complete:
//   prePut → pushUsed → [after-push-used] → postPut → [after-post-put]      ([..] = crash points)

import { watchFd, type NativeBinding, type PollHandle } from '../native/binding';
import type { Logger } from '../log';
import { stampBefore, type InflightRegion } from '../state/inflight';
import { crashpoint, SimulatedCrash } from '../state/crashpoint';
import type { GuestMemory } from './guest-memory';
import type { DescChain, SplitQueue } from './split-queue';

/**
 * How a chain comes to the handler:
 *   Fresh   popped now
 *   Replay  popped by a previous worker that died before completing it, so its side effects may
 *           already have happened (non-idempotent operations need to know)
 *   Stuck   a replay of a request the previous worker was stuck in when the keeper's watchdog
 *           killed it: answer it with an error rather than run it into the same wall again
 */
export enum Replay { Fresh = 0, Replay = 1, Stuck = 2 }
export type ChainHandler = (chain: DescChain, complete: (usedLen: number) => void, replay: Replay) => void;

/** The part of the native shim a runner uses (injectable for tests). */
export type QueueRunnerNative = Pick<NativeBinding, 'pollStart' | 'pollStop' | 'eventfdRead' | 'eventfdWrite'>;

export interface QueueRunnerOptions {
  native: QueueRunnerNative; mem: GuestMemory; index: number; queue: SplitQueue;
  kickFd: number; callFd: number; handler: ChainHandler; log: Logger;
  /** Chains popped per pass before yielding to the event loop (default: queue size). */
  batch?: number;
  /** Record every request in this region (its desc_num must equal the queue size). */
  inflight?: InflightRegion;
  /** Heads to run before any new avail entry, in order (InflightRegion.recover().resubmit; the queue
   *  must then start at recover().lastAvail). They stay recorded as in flight with their old counters. */
  resubmit?: number[];
  /** The previous worker was killed as stuck: resubmitted requests popped before this time
   *  (wallMs32()) are handed over as Replay.Stuck. */
  stuckBefore?: number;
}

const POLL_READABLE = 1;
/** Completions within one pass after which the call eventfd is signalled without waiting for
 *  the pass to end (EVENT_IDX still suppresses it while the driver is not listening). */
const NOTIFY_EVERY = 8;

export class QueueRunner {
  readonly index: number;
  private readonly native: QueueRunnerNative;
  private readonly queue: SplitQueue;
  private readonly kickFd: number;
  private callFd: number;
  private readonly handler: ChainHandler;
  private readonly log: Logger;
  private readonly batch: number;
  /** One completion function per descriptor head, made on first use and reused: no per-request closure. */
  private readonly completers: Array<((usedLen: number) => void) | undefined>;
  private readonly outstanding: Uint8Array;     // 1 while the chain at this head is with the handler
  private readonly writableLen: Float64Array;   // its writable length, to bound usedLen
  private outstandingCount = 0;
  private poll: PollHandle | null = null;
  private started = false;
  private stopping = false;
  private inPass = false;
  private rerun = false;
  private immediate: NodeJS.Immediate | null = null;
  private stopPromise: Promise<number> | null = null;
  private stopResolve: ((lastAvail: number) => void) | null = null;
  private readonly inflight: InflightRegion | null;
  private readonly resubmit: number[];
  private resubmitPos = 0;
  private readonly stuckBefore: number | undefined;
  private flush: NodeJS.Immediate | null = null; // pending call for completions outside a pass
  private sincePassNotify = 0;
  private readonly onReadable: (status: number, events: number) => void;
  private readonly onImmediate: () => void;
  private readonly onFlush: () => void;

  constructor(o: QueueRunnerOptions) {
    this.index = o.index;
    this.native = o.native;
    this.queue = o.queue;
    this.kickFd = o.kickFd;
    this.callFd = o.callFd;
    this.handler = o.handler;
    this.log = o.log;
    this.batch = o.batch ?? o.queue.size;
    const size = o.queue.size;
    this.completers = new Array(size);
    this.outstanding = new Uint8Array(size);
    this.writableLen = new Float64Array(size);
    this.inflight = o.inflight ?? null;
    this.resubmit = o.resubmit !== undefined ? o.resubmit.slice() : [];
    this.stuckBefore = o.stuckBefore;
    if (this.inflight !== null) {
      const bad = this.inflight.validate(size);
      if (bad !== null) throw new Error(`queue ${o.index}: ${bad}`);
    }
    this.onReadable = (status: number) => {
      if (status < 0) {
        this.log.error({ queue: this.index, status }, 'kick fd poll error');
        return;
      }
      this.native.eventfdRead(this.kickFd); // drain; -EAGAIN (spurious wakeup) is fine
      this.pass();
    };
    this.onImmediate = () => {
      this.immediate = null;
      this.pass();
    };
    this.onFlush = () => {
      this.flush = null;
      this.notify();
    };
  }

  /** Chains handed to the handler and not yet completed. */
  get inFlight(): number { return this.outstandingCount; }

  /** Watch kickFd and run one pass at once (requests may already be waiting, e.g. after a backend
   *  restart, when the kick that announced them went to the previous process). The pass runs the
   *  resubmitted heads first. */
  start(): void {
    if (this.started || this.stopping) return;
    this.started = true;
    this.poll = watchFd(this.native, this.kickFd, POLL_READABLE, this.onReadable);
    this.pass();
  }

  /** Stop popping; resolve with lastAvail once every handed-out chain has completed.
   *  Completions that arrive after stop() are still pushed to the used ring. */
  stop(): Promise<number> {
    if (this.stopPromise !== null) return this.stopPromise;
    this.stopping = true;
    if (this.poll !== null) {
      this.native.pollStop(this.poll);
      this.poll = null;
    }
    if (this.immediate !== null) {
      clearImmediate(this.immediate);
      this.immediate = null;
    }
    if (this.flush !== null) { clearImmediate(this.flush); this.flush = null; this.notify(); }
    this.stopPromise = new Promise<number>((resolve) => {
      if (this.outstandingCount === 0) resolve(this.queue.lastAvail);
      else this.stopResolve = resolve;
    });
    return this.stopPromise;
  }

  /** -1 = none. */
  setCallFd(fd: number): void { this.callFd = fd; }

  /** Re-check the avail ring now (after start/restart, or when a kick may have been missed). */
  kick(): void { this.pass(); }

  private pass(): void {
    if (this.stopping) return;
    if (this.inPass) { this.rerun = true; return; } // e.g. kick() from inside the handler
    this.inPass = true;
    let n = 0;
    try {
      do {
        this.rerun = false;
        // pop() re-reads avail.idx once it has consumed what it saw, so a kick coalesced into the
        // eventfd drain above (or arriving during the pass) is still picked up here.
        while (!this.stopping) {
          if (n >= this.batch) {
            // Let async completions and other queues run; continue right after.
            if (this.immediate === null) this.immediate = setImmediate(this.onImmediate);
            break;
          }
          if (this.resubmitPos < this.resubmit.length) {
            // Not counted against the batch: all of them (at most the queue size) go out in the
            // first pass, so a stop() right after start() still waits for every one.
            this.replay(this.resubmit[this.resubmitPos++]);
            continue;
          }
          if (this.inflight !== null) {
            const head = this.queue.popHead();
            if (head < 0) break;
            n++;
            this.popTracked(head, this.inflight);
            continue;
          }
          const chain = this.queue.pop();
          if (chain === null) break;
          n++;
          this.dispatch(chain, Replay.Fresh);
        }
      } while (this.rerun && !this.stopping && this.immediate === null);
    } catch (e) {
      if (e instanceof SimulatedCrash) throw e;
      // pop() throws only when the ring memory went away: this queue cannot go on.
      this.log.error({ queue: this.index, err: e }, 'virtqueue unusable; no longer polled');
      if (this.poll !== null) { this.native.pollStop(this.poll); this.poll = null; }
    } finally {
      this.inPass = false;
      if (this.flush !== null) { clearImmediate(this.flush); this.flush = null; } // covered below
      this.notify(); // once per pass: covers sync completions and chains dropped by pop()
    }
  }

  /** A head from popHead(): record it, then walk it. */
  private popTracked(head: number, inflight: InflightRegion): void {
    if (this.outstanding[head] !== 0) {
      // Checked before markInflight so that the request in flight keeps its counter.
      this.log.error({ queue: this.index, head }, 'driver re-posted an in-flight descriptor head; ignored');
      return;
    }
    inflight.markInflight(head);
    crashpoint('after-mark-inflight');
    const chain = this.queue.chainAt(head);
    if (chain !== null) this.dispatch(chain, Replay.Fresh);
    else this.completeInvalid(head);
  }

  /** A head left in flight by a previous worker (already recorded, so not marked again). */
  private replay(head: number): void {
    if (!(Number.isInteger(head) && head >= 0 && head < this.queue.size) || this.outstanding[head] !== 0) {
      this.log.error({ queue: this.index, head }, 'resubmitted head out of range or repeated; ignored');
      return;
    }
    const chain = this.queue.chainAt(head);
    if (chain === null) return this.completeInvalid(head);
    const stuck = this.stuckBefore !== undefined && this.inflight !== null && stampBefore(this.inflight.startedAt(head), this.stuckBefore);
    this.dispatch(chain, stuck ? Replay.Stuck : Replay.Replay);
  }

  /** An invalid chain goes back to the guest with len 0, through the tracked completion. */
  private completeInvalid(head: number): void {
    this.outstanding[head] = 1;
    this.writableLen[head] = 0;
    this.outstandingCount++;
    this.complete(head, 0);
  }

  private dispatch(chain: DescChain, replay: Replay): void {
    const head = chain.head;
    if (this.outstanding[head] !== 0) {
      // The driver re-posted a head it has not got back: it cannot tell the two apart either.
      this.log.error({ queue: this.index, head }, 'driver re-posted an in-flight descriptor head; ignored');
      return;
    }
    this.outstanding[head] = 1;
    this.writableLen[head] = chain.writableLen;
    this.outstandingCount++;
    let complete = this.completers[head];
    if (complete === undefined) complete = this.completers[head] = this.makeCompleter(head);
    try {
      this.handler(chain, complete, replay);
    } catch (e) {
      if (e instanceof SimulatedCrash) throw e;
      this.log.error({ queue: this.index, head, err: e }, 'request handler threw; completing with 0');
      if (this.outstanding[head] !== 0) complete(0);
    }
  }

  private makeCompleter(head: number): (usedLen: number) => void {
    return (usedLen: number) => this.complete(head, usedLen);
  }

  private complete(head: number, usedLen: number): void {
    if (this.outstanding[head] === 0) {
      this.log.error({ queue: this.index, head }, 'descriptor chain completed twice; ignored');
      return;
    }
    const max = this.writableLen[head];
    if (!(usedLen >= 0 && usedLen <= max)) {
      // VIRTIO 1.2 2.7.8.2: len MUST NOT exceed the device-writable length.
      this.log.error({ queue: this.index, head, usedLen, writable: max }, 'used length out of range; clamped');
      usedLen = usedLen > max ? max : 0;
    }
    this.outstanding[head] = 0;
    this.outstandingCount--;
    const inflight = this.inflight;
    if (inflight === null) {
      this.queue.pushUsed(head, usedLen >>> 0);
    } else {
      // ORDER (libvhost-user vu_queue_push): name the head, publish it, then retire it.
      inflight.prePut(head);
      this.queue.pushUsed(head, usedLen >>> 0);
      crashpoint('after-push-used');
      inflight.postPut(head, this.queue.usedIndex);
      crashpoint('after-post-put');
    }
    if (!this.inPass) {
      if (this.flush === null) this.flush = setImmediate(this.onFlush);
    } else if (++this.sincePassNotify >= NOTIFY_EVERY) {
      // A long pass tells the driver as it goes, so it can take its replies (and post more
      // requests) while we work on the rest, instead of both sides taking turns.
      this.notify();
    }
    if (this.outstandingCount === 0 && this.stopResolve !== null) {
      // The caller may drop the call fd once stop() resolves: signal now rather than next turn.
      if (this.flush !== null) { clearImmediate(this.flush); this.flush = null; this.notify(); }
      const resolve = this.stopResolve;
      this.stopResolve = null;
      resolve(this.queue.lastAvail);
    }
  }

  private notify(): void {
    this.sincePassNotify = 0;
    if (this.callFd < 0 || !this.queue.shouldNotify()) return;
    const r = this.native.eventfdWrite(this.callFd, 1);
    if (r < 0) this.log.warn({ queue: this.index, errno: -r }, 'call eventfd write failed');
  }
}
