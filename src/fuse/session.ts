// The FUSE server: one request chain in, one reply out. Decodes fuse_in_header, checks every
// length the guest sent, finds the op in the op table (ops.ts) and runs it, then copies the reply
// into the chain's writable buffers. Knows nothing of vhost-user or host syscalls; how a re-run
// after a crash is answered exactly once is replay.ts's business.

import type { Logger } from '../log';
import { WalkedChain, type DescChain } from '../virtio/split-queue';
import { Replay } from '../virtio/queue-runner';
import {
  OP, OP_NAMES, SIZE, INIT, FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION,
} from './abi';
import { Args, INIT_IN, INIT_OUT, IN_HEADER, XATTR_NAME_MAX, XATTR_SIZE_MAX } from './structs';
import { ReplyBuffer } from './reply';
import { BODY_PAD, Req, SMALL_BODY, type Completions } from './request';
import { OPS, NO_REPLY, writeReply, type OpEnv, type RangeIo } from './ops';
import { ReplayPolicy, NO_ANSWER, type ReplayProbes } from './replay';
import type { FileSystem, InitRequest, InitReply } from './filesystem';
import type { Journal } from '../state/journal';
import { E } from '../linux/constants';

/** Largest non-WRITE request body we accept (names, xattr values, ...). */
const MAX_BODY = XATTR_SIZE_MAX + XATTR_NAME_MAX + 64;
/** Request objects kept for reuse. */
const MAX_FREE_REQS = 1024;
/** Largest number of guest buffers one READ/WRITE passes as (offset, length) pairs (IOV_MAX). */
const MAX_RANGES = 1024;

/** Probes for a session that journals nothing: every answer "unknown". */
const NO_PROBES: ReplayProbes = { nameIno: () => -1, hasXattr: () => false, lookupCount: () => -1, appendSize: () => -1 };

export interface SessionStats { requests: number; errors: number; malformed: number }

export interface SessionOptions {
  /** What replay asks the host (needed when a journal is used). */
  probes?: ReplayProbes;
  /** READ/WRITE by (offset, length) pairs, when the file system offers it. */
  rangeIo?: RangeIo;
  /** Where each finished request is counted (state/counters.ts), if anywhere. */
  counters?: RequestCounters;
}

/** What the session counts (CounterWriter's shape; the session does not own the region). */
export interface RequestCounters {
  request(opcode: number, seconds: number, error: boolean): void;
  add(which: 'bytesRead' | 'bytesWritten', n: number): void;
}

export class FuseSession implements OpEnv, Completions {
  readonly r: ReplyBuffer;
  readonly probes: ReplayProbes;
  readonly rangeIo: RangeIo | null;
  readonly iov = new Float64Array(2 * MAX_RANGES);
  setxattrExt = false;
  /** READDIRPLUS was negotiated (for the log). */
  private readdirplus = true;
  private initialized = false;
  /** Large bodies: read only while an op's run() runs, so one per session does. */
  private readonly bigArgs: Args;
  /** A READ's out_header, built here and copied to the place its request set aside. */
  private readonly readHdr = new Uint8Array(SIZE.out_header);
  private readonly readHdrDv = new DataView(this.readHdr.buffer);
  private readonly freeReqs: Req[] = [];
  private readonly replay: ReplayPolicy<OpEnv>;
  readonly stats: SessionStats = { requests: 0, errors: 0, malformed: 0 };
  private counters: RequestCounters | null;

  /** Told of every FUSE_INIT that succeeded (null after DESTROY): a restarted worker replays it. */
  onInit: ((req: InitRequest | null) => void) | null = null;

  constructor(readonly fs: FileSystem, readonly log: Logger, o: SessionOptions = {}) {
    this.r = new ReplyBuffer(fs);
    this.probes = o.probes ?? NO_PROBES;
    this.rangeIo = o.rangeIo ?? null;
    this.counters = o.counters ?? null;
    this.replay = new ReplayPolicy(log);
    const big = new Uint8Array(MAX_BODY + BODY_PAD);
    this.bigArgs = new Args(big, Buffer.from(big.buffer, big.byteOffset, big.byteLength), new DataView(big.buffer, big.byteOffset, big.byteLength));
  }

  /** Count requests from now on (the counters region may come after the session is made). */
  useCounters(c: RequestCounters): void {
    this.counters = c;
  }

  /** The reply buffer (replay answers from the journal there). */
  get out(): Uint8Array { return this.r.out; }

  /**
   * Resume a session negotiated by an earlier worker: the guest will not send INIT again.
   * The same request gives the same negotiation.
   */
  restoreInit(req: InitRequest): boolean {
    const r = this.fs.init(req);
    if (typeof r === 'number') return false;
    this.applyInit(r);
    return true;
  }

  private applyInit(r: InitReply): void {
    this.setxattrExt = (r.flags & (1n << BigInt(INIT.SETXATTR_EXT))) !== 0n;
    this.readdirplus = (r.flags & (1n << BigInt(INIT.DO_READDIRPLUS))) !== 0n;
    this.initialized = true;
  }

  /** Handler for the hiprio queue: FORGET / BATCH_FORGET; never replied, always returned. */
  readonly handleHiprio = (chain: DescChain, complete: (len: number) => void): void => {
    this.handle(chain, complete);
  };

  /** Handler for request queues. */
  readonly handleRequest = (chain: DescChain, complete: (len: number) => void): void => {
    this.handle(chain, complete, Replay.Fresh, null);
  };

  /** A queue's chain handler; journal: where its non-idempotent outcomes are recorded. */
  handlerFor(_queueIndex: number, journal: Journal | null): (chain: DescChain, complete: (len: number) => void, replay: Replay) => void {
    return (chain, complete, replay) => this.handle(chain, complete, replay, journal);
  }

  private handle(chain: DescChain, complete: (len: number) => void, replay = Replay.Fresh, journal: Journal | null = null): void {
    this.stats.requests++;
    const req = this.freeReqs.pop() ?? new Req(this);
    req.free = false;
    req.done = false;
    req.inHandle = true;
    req.failed = false;
    req.t0 = this.counters ? performance.now() : 0;
    req.complete = complete;
    req.head = chain.head;
    try {
      this.run(req, chain, replay, journal);
    } finally {
      req.inHandle = false;
      if (req.done) this.recycle(req);
    }
  }

  /** Back to the free list: the request completed and handle() has returned. */
  private recycle(req: Req): void {
    if (req.free) return;
    req.reset();
    if (this.freeReqs.length < MAX_FREE_REQS) this.freeReqs.push(req);
  }

  /** Give the chain back with usedLen bytes written: once per request. */
  private finish(req: Req, usedLen: number): void {
    if (req.done) {
      this.log.error({ op: OP_NAMES[req.opcode] ?? req.opcode, head: req.head }, 'request completed twice; ignored');
      return;
    }
    req.done = true;
    if (this.counters && req.t0 > 0) this.counters.request(req.opcode, (performance.now() - req.t0) / 1000, req.failed);
    req.complete(usedLen);
    if (!req.inHandle) this.recycle(req);
  }

  private run(req: Req, chain: DescChain, replay: Replay, journal: Journal | null): void {
    const reader = req.reader, writer = req.writer;
    if (chain instanceof WalkedChain) {
      // The walk's own segment list: no view is made per descriptor.
      const n = chain.segs.length / 3;
      reader.resetRanges(chain.segs, 0, chain.nReadable);
      writer.resetRanges(chain.segs, chain.nReadable, n);
    } else {
      reader.reset(chain.readable);
      writer.reset(chain.writable);
    }
    const h = req.hdr;
    if (!reader.copyTo(req.hdrBytes, 0, SIZE.in_header)) {
      // Without a header there is no unique to answer to: return the buffers, log, move on.
      this.stats.malformed++;
      this.log.warn({ head: chain.head, readable: chain.readableLen }, 'request shorter than fuse_in_header; dropped');
      return this.finish(req, 0);
    }
    const len = h.getUint32(IN_HEADER.len, true);
    const opcode = h.getUint32(IN_HEADER.opcode, true);
    const nodeLo = h.getUint32(IN_HEADER.nodeid, true), nodeHi = h.getUint32(IN_HEADER.nodeid + 4, true);
    const extlen = h.getUint16(IN_HEADER.total_extlen, true) * 8;
    req.opcode = opcode;
    req.uniqueLo = h.getUint32(IN_HEADER.unique, true);
    req.uniqueHi = h.getUint32(IN_HEADER.unique + 4, true);
    req.nodeid = nodeHi === 0 ? nodeLo : 0;
    const ctx = req.ctx;
    ctx.uid = h.getUint32(IN_HEADER.uid, true);
    ctx.gid = h.getUint32(IN_HEADER.gid, true);
    ctx.pid = h.getUint32(IN_HEADER.pid, true);
    req.args = req.smallArgs;
    req.args.len = 0;
    req.pre = 0;
    if (len < SIZE.in_header + extlen || len > chain.readableLen) {
      return this.malformed(req, `in_header.len ${len} does not match the request (${chain.readableLen} readable, extlen ${extlen})`);
    }
    let bodyLen = len - SIZE.in_header - extlen;
    if (opcode === OP.FUSE_WRITE) {
      bodyLen = Math.min(bodyLen, SIZE.write_in); // the data stays in guest memory
    } else if (bodyLen > MAX_BODY) {
      return this.malformed(req, `request body of ${bodyLen} bytes is too large`);
    }
    const args = bodyLen > SMALL_BODY ? this.bigArgs : req.smallArgs;
    req.args = args;
    if (!reader.copyTo(args.bytes, 0, bodyLen)) {
      return this.malformed(req, opcode === OP.FUSE_WRITE ? 'short WRITE' : 'request body shorter than in_header.len');
    }
    args.len = bodyLen;
    const body = args.bytes;
    for (let i = bodyLen; i < bodyLen + BODY_PAD; i++) body[i] = 0; // (cheaper than fill() here)

    const op = OPS[opcode];
    const replied = op === undefined || !op.noReply;
    if (replied) {
      if (writer.remaining < SIZE.out_header) {
        return this.malformed(req, `no room for a reply (${writer.remaining} writable bytes)`);
      }
      const need = SIZE.out_header + (op?.minReply ?? 0);
      if (writer.remaining < need) {
        this.log.warn({ op: op?.name, writable: writer.remaining, need }, 'reply buffer too small');
        return this.reply(req, -E.EINVAL);
      }
    }
    if (!this.initialized && opcode !== OP.FUSE_INIT && replied) {
      this.log.warn({ op: OP_NAMES[opcode] ?? opcode }, 'request before FUSE_INIT');
      return this.reply(req, -E.EIO);
    }
    if (op === undefined) {
      this.log.warn({ opcode, name: OP_NAMES[opcode] }, 'unsupported opcode');
      return this.reply(req, -E.ENOSYS);
    }
    const answer = this.replay.begin(this, op.replay, req, replay, journal);
    if (answer !== NO_ANSWER) return op.noReply ? this.finish(req, 0) : this.reply(req, answer);
    let r: number;
    try {
      r = req.relaxed ? this.replay.rerun(this, op, req, NO_REPLY) : op.run(this, req);
    } catch (e) {
      // An exception is a bug in us, not bad input: answer EIO and keep serving.
      this.log.error({ err: e, op: op.name, nodeid: req.nodeid }, 'op threw');
      r = -E.EIO;
    }
    if (r === NO_REPLY) return; // the op completes (or already completed) the chain itself
    this.record(req, r);
    this.reply(req, r);
  }

  /** Journal the outcome of a journaled request, before its reply can reach the guest. */
  record(req: Req, r: number): void {
    this.replay.record(req, r, this.r.out.subarray(SIZE.out_header, SIZE.out_header + Math.max(r, 0)));
  }

  /** Finish a request: r >= 0 is a reply body of r bytes after the header in the reply buffer, r < 0 an errno. */
  private reply(req: Req, r: number): void {
    const bodyLen = r >= 0 ? r : 0;
    const total = SIZE.out_header + bodyLen;
    if (r < 0) { this.stats.errors++; req.failed = true; }
    const out = this.r;
    out.header(out.dv, 0, req, total, r < 0 ? r : 0);
    if (!req.writer.write(out.prefix(total))) {
      // Checked up front for fixed-size replies; variable ones (readdir, xattr) are sized by the op.
      this.log.warn({ op: OP_NAMES[req.opcode], total, room: req.writer.remaining }, 'reply does not fit the buffer');
      out.header(out.dv, 0, req, SIZE.out_header, -E.EIO);
      req.writer.write(out.prefix(SIZE.out_header));
    }
    this.finish(req, req.writer.written);
  }

  private malformed(req: Req, why: string): void {
    this.stats.malformed++;
    this.log.warn({ op: OP_NAMES[req.opcode] ?? req.opcode, why }, 'malformed request');
    if (req.writer.remaining >= SIZE.out_header && req.opcode !== OP.FUSE_FORGET && req.opcode !== OP.FUSE_BATCH_FORGET) {
      this.reply(req, -E.EINVAL);
    } else {
      this.finish(req, 0);
    }
  }

  noReply(req: Req, why?: string): number {
    if (why) {
      this.stats.malformed++;
      this.log.warn({ op: OP_NAMES[req.opcode], why }, 'malformed request');
    }
    this.finish(req, 0);
    return NO_REPLY;
  }

  destroy(): number {
    this.fs.destroy();
    this.initialized = false;
    this.onInit?.(null);
    return 0;
  }

  init(req: Req): number {
    const a = req.args;
    if (!a.has(SIZE.init_in_v7_6)) return -E.EINVAL;
    const major = a.u32(INIT_IN.major), minor = a.u32(INIT_IN.minor);
    let flags = BigInt(a.u32(INIT_IN.flags));
    const H = SIZE.out_header, out = this.r;
    if (major !== FUSE_KERNEL_VERSION) {
      // The kernel retries with our major if we answer with it and no error (fuse.h "INIT request and reply").
      this.log.warn({ major, minor }, 'unsupported FUSE major version');
      if (major < FUSE_KERNEL_VERSION) return -E.EPROTO;
      out.zero(H, H + SIZE.init_out);
      out.u32(H + INIT_OUT.major, FUSE_KERNEL_VERSION);
      out.u32(H + INIT_OUT.minor, FUSE_KERNEL_MINOR_VERSION);
      return SIZE.init_out;
    }
    if (a.has(SIZE.init_in) && (flags & (1n << BigInt(INIT.INIT_EXT)))) flags |= BigInt(a.u32(INIT_IN.flags2)) << 32n;
    const initReq: InitRequest = { major, minor, maxReadahead: a.u32(INIT_IN.max_readahead), flags };
    const r = this.fs.init(initReq);
    if (typeof r === 'number') return r;
    this.applyInit(r);
    this.onInit?.(initReq);
    out.zero(H, H + SIZE.init_out);
    out.u32(H + INIT_OUT.major, FUSE_KERNEL_VERSION);
    out.u32(H + INIT_OUT.minor, Math.min(minor, FUSE_KERNEL_MINOR_VERSION));
    out.u32(H + INIT_OUT.max_readahead, r.maxReadahead);
    out.u32(H + INIT_OUT.flags, Number(r.flags & 0xffffffffn));
    out.dv.setUint16(H + INIT_OUT.max_background, r.maxBackground, true);
    out.dv.setUint16(H + INIT_OUT.congestion_threshold, r.congestionThreshold, true);
    out.u32(H + INIT_OUT.max_write, r.maxWrite);
    out.u32(H + INIT_OUT.time_gran, r.timeGran);
    out.dv.setUint16(H + INIT_OUT.max_pages, r.maxPages, true);
    out.u32(H + INIT_OUT.flags2, Number(r.flags >> 32n));
    this.log.info({ minor, flags: '0x' + r.flags.toString(16), readdirplus: this.readdirplus }, 'FUSE session initialized');
    // Old kernels (minor < 23) expect the 24-byte init_out.
    return minor < 23 ? 24 : SIZE.init_out;
  }

  /** @internal A READ's data is in: fill in its header, give the chain back. */
  readDone(req: Req, r: number): void {
    const len = r < 0 ? SIZE.out_header : SIZE.out_header + r;
    this.r.header(this.readHdrDv, 0, req, len, r < 0 ? r : 0);
    req.writer.fillReserved(this.readHdr);
    if (r < 0) { this.stats.errors++; req.failed = true; } else this.counters?.add('bytesRead', r);
    this.finish(req, len);
  }

  /** @internal A WRITE is done: bytes written or -errno. */
  writeDone(req: Req, r: number): void {
    if (r > 0) this.counters?.add('bytesWritten', r);
    const res = r < 0 ? r : writeReply(this.r, r);
    this.record(req, res);
    this.reply(req, res);
  }

  /** @internal FSYNC, SETLK(W) done: a reply with no body. */
  statusDone(req: Req, r: number): void {
    this.reply(req, r < 0 ? r : 0);
  }
}
