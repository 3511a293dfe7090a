// Drives one virtqueue: kick eventfd readable → drain it → pop chains → hand them to the handler.
// Completions (sync inside the handler, or later from async I/O) push used entries; the call eventfd
// is signalled at most once per drain pass, or at once for a completion arriving outside a pass
// (the driver's EVENT_IDX / NO_INTERRUPT choice is honoured by SplitQueue.shouldNotify).

import { watchFd, type NativeBinding, type PollHandle } from '../native/binding';
import type { Logger } from '../log';
import type { GuestMemory } from './guest-memory';
import type { DescChain, SplitQueue } from './split-queue';

export type ChainHandler = (chain: DescChain, complete: (usedLen: number) => void) => void;

/** The part of the native shim a runner uses (injectable for tests). */
export type QueueRunnerNative = Pick<NativeBinding, 'pollStart' | 'pollStop' | 'eventfdRead' | 'eventfdWrite'>;

export interface QueueRunnerOptions {
  native: QueueRunnerNative; mem: GuestMemory; index: number; queue: SplitQueue;
  kickFd: number; callFd: number; handler: ChainHandler; log: Logger;
  /** Chains popped per pass before yielding to the event loop (default: queue size). */
  batch?: number;
}

const POLL_READABLE = 1;

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
  private readonly onReadable: (status: number, events: number) => void;
  private readonly onImmediate: () => void;

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
  }

  /** Chains handed to the handler and not yet completed. */
  get inFlight(): number { return this.outstandingCount; }

  /** Watch kickFd and run one pass at once (requests may already be waiting, e.g. after a backend
   *  restart, when the kick that announced them went to the previous process). */
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
          const chain = this.queue.pop();
          if (chain === null) break;
          n++;
          this.dispatch(chain);
        }
      } while (this.rerun && !this.stopping && this.immediate === null);
    } catch (e) {
      if (process.env.NODE_ENV === 'test') throw e;
      // pop() throws only when the ring memory went away: this queue cannot go on.
      this.log.error({ queue: this.index, err: e }, 'virtqueue unusable; no longer polled');
      if (this.poll !== null) { this.native.pollStop(this.poll); this.poll = null; }
    } finally {
      this.inPass = false;
      this.notify(); // once per pass: covers sync completions and chains dropped by pop()
    }
  }

  private dispatch(chain: DescChain): void {
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
      this.handler(chain, complete);
    } catch (e) {
      if (process.env.NODE_ENV === 'test') throw e;
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
    this.queue.pushUsed(head, usedLen >>> 0);
    if (!this.inPass) this.notify();
    if (this.outstandingCount === 0 && this.stopResolve !== null) {
      const resolve = this.stopResolve;
      this.stopResolve = null;
      resolve(this.queue.lastAvail);
    }
  }

  private notify(): void {
    if (this.callFd < 0 || !this.queue.shouldNotify()) return;
    const r = this.native.eventfdWrite(this.callFd, 1);
    if (r < 0) this.log.warn({ queue: this.index, errno: -r }, 'call eventfd write failed');
  }
}
