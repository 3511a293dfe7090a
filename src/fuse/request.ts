// One FUSE request from its descriptor chain to its completion. Reused: a Req goes back to the
// session's free list once the request has completed and the session's handle() has returned,
// whichever is later, so an op that replies later (READ, WRITE, FSYNC, SETLK(W)) owns its Req
// (cursors, header position, callbacks) until then. Its argument bytes, though, are read only
// while the op's run() runs (large ones live in a buffer the session shares).

import { ChainReader, ChainWriter } from '../virtio/chain-io';
import { SIZE } from './abi';
import { Args } from './structs';
import type { Journal } from '../state/journal';

/** Argument bodies up to this size are copied into the request's own buffer. */
export const SMALL_BODY = 1024;
/** Zeroed bytes kept after every body: a read past the body sees zeros, and a string scan stops. */
export const BODY_PAD = 64;

const noop = (): void => {};
const NO_SEGS: Uint8Array[] = [];

/** Where a finished READ, WRITE or status op reports back (the session). */
export interface Completions {
  readDone(req: Req, r: number): void;
  writeDone(req: Req, r: number): void;
  statusDone(req: Req, r: number): void;
}

export class Req {
  opcode = 0;
  uniqueLo = 0;
  uniqueHi = 0;
  /** 0 when the guest sent a value no node can have. */
  nodeid = 0;
  readonly ctx: { uid: number; gid: number; pid: number } = { uid: 0, gid: 0, pid: 0 };
  /** The op's arguments: this request's own small buffer, or the session's large one. */
  args: Args;
  readonly smallArgs: Args;
  readonly reader = new ChainReader(NO_SEGS);
  readonly writer = new ChainWriter(NO_SEGS);
  complete: (usedLen: number) => void = noop;
  /** Journaled request: its queue's journal. */
  journal: Journal | null = null;
  /** The chain's descriptor head (the journal's record index). */
  head = 0;
  /** A re-run after a crash whose first run may have completed (replay.ts). */
  relaxed = false;
  /** What the journal intent recorded before the first run (replay.ts PRE_*). */
  pre = 0;
  /** handle() is still running for it. */
  inHandle = false;
  /** complete() has been called. */
  done = false;
  /** On the free list. */
  free = false;
  /** performance.now() when handle() took it (for the latency counters). */
  t0 = 0;
  /** Answered with an errno. */
  failed = false;
  // Own storage: [0, in_header) the header, then the body when it is small.
  readonly hdr: DataView;
  readonly hdrBytes: Uint8Array;
  /** Completion callbacks, made once per Req instead of a closure per request. */
  readonly onRead: (r: number) => void;
  readonly onWrite: (r: number) => void;
  readonly onStatus: (r: number) => void;

  constructor(c: Completions) {
    const ab = new ArrayBuffer(SIZE.in_header + SMALL_BODY + BODY_PAD);
    this.hdr = new DataView(ab, 0, SIZE.in_header);
    this.hdrBytes = new Uint8Array(ab, 0, SIZE.in_header);
    this.smallArgs = new Args(new Uint8Array(ab, SIZE.in_header), Buffer.from(ab, SIZE.in_header), new DataView(ab, SIZE.in_header));
    this.args = this.smallArgs;
    this.onRead = (r) => c.readDone(this, r);
    this.onWrite = (r) => c.writeDone(this, r);
    this.onStatus = (r) => c.statusDone(this, r);
  }

  /** Back to its idle state (on the free list). */
  reset(): void {
    this.free = true;
    this.complete = noop;
    this.journal = null;
    this.relaxed = false;
    this.pre = 0;
    this.args = this.smallArgs;
    this.reader.reset(NO_SEGS); // drop the views of guest memory
    this.writer.reset(NO_SEGS);
  }
}
