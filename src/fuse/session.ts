// The FUSE server: one request chain in, one reply out. Decodes fuse_in_header and each op's
// arguments (every length from the guest is checked here), calls the FileSystem, and encodes
// the reply into the chain's writable buffers. Knows nothing of vhost-user or host syscalls.
//
// Strings (names, link targets, xattr names) are decoded as latin1 ("binary") strings: one
// char per byte, so a host file name that is not UTF-8 survives the round trip unchanged.

import type { Logger } from '../log';
import { WalkedChain, type DescChain } from '../virtio/split-queue';
import { Replay } from '../virtio/queue-runner';
import { ChainReader, ChainWriter } from '../virtio/chain-io';
import { STAT_SLOTS, ST } from '../native/binding';
import {
  OP, OP_NAMES, SIZE, FATTR, FUSE_GETATTR_FH, FUSE_FSYNC_FDATASYNC, FUSE_LK_FLOCK, INIT,
  FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION, MAX_BUFFER_SIZE,
} from './abi';
import type { Ctx, EntryResult, FileSystem, DirSink, OpenResult, FileLock, InitRequest, InitReply } from './filesystem';
import { E } from '../errno';
import { Journal, J_DONE } from '../state/journal';
import { crashpoint } from '../state/crashpoint';

const NAME_MAX = 255;
const PATH_MAX = 4096;
const XATTR_NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;
/** Largest non-WRITE request body we accept (names, xattr values, ...). */
const MAX_BODY = XATTR_SIZE_MAX + XATTR_NAME_MAX + 64;

const NO_REPLY = -100000;

/** Bytes of reply body each op needs at least; checked before the op runs, so an op with
 *  side effects never runs when its reply cannot be delivered. */
const MIN_REPLY: Record<number, number> = {
  [OP.FUSE_LOOKUP]: SIZE.entry_out, [OP.FUSE_GETATTR]: SIZE.attr_out, [OP.FUSE_SETATTR]: SIZE.attr_out,
  [OP.FUSE_SYMLINK]: SIZE.entry_out, [OP.FUSE_MKNOD]: SIZE.entry_out, [OP.FUSE_MKDIR]: SIZE.entry_out,
  [OP.FUSE_LINK]: SIZE.entry_out, [OP.FUSE_OPEN]: SIZE.open_out, [OP.FUSE_OPENDIR]: SIZE.open_out,
  [OP.FUSE_CREATE]: SIZE.entry_out + SIZE.open_out, [OP.FUSE_TMPFILE]: SIZE.entry_out + SIZE.open_out,
  [OP.FUSE_WRITE]: SIZE.write_out, [OP.FUSE_STATFS]: SIZE.kstatfs, [OP.FUSE_INIT]: SIZE.init_out,
  [OP.FUSE_GETLK]: SIZE.lk_out, [OP.FUSE_LSEEK]: SIZE.lseek_out, [OP.FUSE_COPY_FILE_RANGE]: SIZE.write_out,
};

/** Bodies up to this size are copied into the request's own buffer, larger ones (names of long
 *  symlink targets, xattr values: synchronous ops only) into the session's. */
const SMALL_BODY = 1024;
/** Zeroed bytes kept after every body: a read past the body sees zeros, and a string scan stops. */
const BODY_PAD = 64;
/** Reply sizes up to this get a cached view of the reply buffer (no subarray per reply). */
const OUT_VIEW_CACHE = 8192;
/** Request objects kept for reuse. */
const MAX_FREE_REQS = 1024;

/** Largest number of guest buffers one READ/WRITE passes as (offset, length) pairs (IOV_MAX). */
const MAX_RANGES = 1024;

/**
 * READ/WRITE with the guest buffers as (offset, length) pairs in one window of guest memory
 * instead of a view each: what PassthroughFs offers besides the FileSystem interface. iov is read
 * before the call returns.
 */
interface RangeIo {
  readRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, cb: (r: number) => void): void;
  writeRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, writeFlags: number, cb: (r: number) => void): void;
}

const noop = (): void => {};
const NO_SEGS: Uint8Array[] = [];
const NO_VIEWS: Uint8Array[] = [];

/**
 * One request from its chain to its completion. Reused: a Req goes back to the session's free
 * list once the request has completed and handle() has returned, whichever is later, so an op
 * that replies later (READ, WRITE, FSYNC, SETLK(W)) owns its Req (cursors, header position,
 * callbacks) until then. Its body buffer, though, is read only while dispatch() runs.
 */
class Req {
  opcode = 0;
  uniqueLo = 0;
  uniqueHi = 0;
  nodeid = 0;   // 0 when the guest sent a value no node can have
  readonly ctx: { uid: number; gid: number; pid: number } = { uid: 0, gid: 0, pid: 0 };
  /** Op arguments (after the in_header, without extensions): body[0, bodyLen), then zeros. */
  body: Uint8Array;
  bodyStr: Buffer;  // the same bytes, for latin1 decoding
  bodyLen = 0;
  dv: DataView;     // over body
  readonly reader = new ChainReader(NO_SEGS);
  readonly writer = new ChainWriter(NO_SEGS);
  complete: (usedLen: number) => void = noop;
  /** Journaled request: its queue's journal. */
  journal: Journal | null = null;
  /** The chain's descriptor head (the journal's record index). */
  head = 0;
  /** A re-run after a crash whose first run may have completed: relax EEXIST/ENOENT. */
  relaxed = false;
  /** What the journal intent recorded before the first run (see preState). */
  pre = 0;
  /** handle() is still running for it. */
  inHandle = false;
  /** complete() has been called. */
  done = false;
  /** On the free list. */
  free = false;
  // Own storage: [0, in_header) the header, then the body when it is small.
  readonly hdr: DataView;
  readonly hdrBytes: Uint8Array;
  readonly smallBody: Uint8Array;
  readonly smallStr: Buffer;
  readonly smallDv: DataView;
  /** Completion callbacks, made once per Req instead of a closure per request. */
  readonly onRead: (r: number) => void;
  readonly onWrite: (r: number) => void;
  readonly onStatus: (r: number) => void;

  constructor(s: FuseSession) {
    const ab = new ArrayBuffer(SIZE.in_header + SMALL_BODY + BODY_PAD);
    this.hdr = new DataView(ab, 0, SIZE.in_header);
    this.hdrBytes = new Uint8Array(ab, 0, SIZE.in_header);
    this.smallBody = new Uint8Array(ab, SIZE.in_header);
    this.smallStr = Buffer.from(ab, SIZE.in_header);
    this.smallDv = new DataView(ab, SIZE.in_header);
    this.body = this.smallBody;
    this.bodyStr = this.smallStr;
    this.dv = this.smallDv;
    this.onRead = (r) => s.readDone(this, r);
    this.onWrite = (r) => s.writeDone(this, r);
    this.onStatus = (r) => s.statusDone(this, r);
  }
}

const PRE_ABSENT = 1;
const PRE_EXISTED = 2;
/** RENAME_EXCHANGE: PRE_INO + the source name's inode number (nameIno) before the first run. */
const PRE_INO = 3;
const RENAME_EXCHANGE = 2;

/** Requests whose second run would differ from the first: answered exactly once via the journal. */
const JOURNALED = new Set<number>([
  OP.FUSE_MKDIR, OP.FUSE_MKNOD, OP.FUSE_SYMLINK, OP.FUSE_LINK, OP.FUSE_CREATE, OP.FUSE_TMPFILE,
  OP.FUSE_UNLINK, OP.FUSE_RMDIR, OP.FUSE_RENAME, OP.FUSE_RENAME2, OP.FUSE_SETATTR, OP.FUSE_WRITE,
  OP.FUSE_SETXATTR, OP.FUSE_REMOVEXATTR, OP.FUSE_FALLOCATE, OP.FUSE_COPY_FILE_RANGE, OP.FUSE_FORGET,
]);

export interface SessionStats { requests: number; errors: number; malformed: number }

export class FuseSession {
  private readonly out = Buffer.alloc(SIZE.out_header + MAX_BUFFER_SIZE + 4096);
  private readonly outDv = new DataView(this.out.buffer, this.out.byteOffset, this.out.byteLength);
  /** out[0, n) for reply sizes n <= OUT_VIEW_CACHE, made on first use. */
  private readonly outViews: (Uint8Array | undefined)[] = [];
  private readonly st = new BigUint64Array(STAT_SLOTS);
  private readonly st2 = new BigUint64Array(STAT_SLOTS);
  /** The same stat results as u32 words (lo, hi per slot): encoded without making BigInts. */
  private readonly stW = new Uint32Array(this.st.buffer, this.st.byteOffset, 2 * STAT_SLOTS);
  private readonly st2W = new Uint32Array(this.st2.buffer, this.st2.byteOffset, 2 * STAT_SLOTS);
  /** Large bodies (see SMALL_BODY). */
  private readonly bigBody = new Uint8Array(MAX_BODY + BODY_PAD);
  private readonly bigStr = Buffer.from(this.bigBody.buffer, this.bigBody.byteOffset, this.bigBody.byteLength);
  private readonly bigDv = new DataView(this.bigBody.buffer, this.bigBody.byteOffset, this.bigBody.byteLength);
  /** A READ's out_header, built here and copied to the place its request set aside. */
  private readonly readHdr = new Uint8Array(SIZE.out_header);
  private readonly readHdrDv = new DataView(this.readHdr.buffer);
  private readonly freeReqs: Req[] = [];
  /** fs, when it takes READ/WRITE buffers as ranges. */
  private readonly rangeIo: RangeIo | null;
  private readonly iov = new Float64Array(2 * MAX_RANGES);
  private initialized = false;
  private readdirplus = true;
  readonly stats: SessionStats = { requests: 0, errors: 0, malformed: 0 };

  /** Told of every FUSE_INIT that succeeded (null after DESTROY): a restarted worker replays it. */
  onInit: ((req: InitRequest | null) => void) | null = null;

  constructor(private readonly fs: FileSystem, private readonly log: Logger) {
    const r = fs as FileSystem & Partial<RangeIo>;
    this.rangeIo = typeof r.readRanges === 'function' && typeof r.writeRanges === 'function' ? r as FileSystem & RangeIo : null;
  }

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

  /** The handler for one queue: hiprio (0) or a request queue with its outcome journal. */
  handlerFor(_queueIndex: number, journal: Journal | null): (chain: DescChain, complete: (len: number) => void, replay: Replay) => void {
    return (chain, complete, replay) => this.handle(chain, complete, replay, journal);
  }

  private handle(chain: DescChain, complete: (len: number) => void, replay = Replay.Fresh, journal: Journal | null = null): void {
    this.stats.requests++;
    const req = this.freeReqs.pop() ?? new Req(this);
    req.free = false;
    req.done = false;
    req.inHandle = true;
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
    req.free = true;
    req.complete = noop;
    req.journal = null;
    req.relaxed = false;
    req.pre = 0;
    req.reader.reset(NO_SEGS); // drop the views of guest memory
    req.writer.reset(NO_SEGS);
    if (this.freeReqs.length < MAX_FREE_REQS) this.freeReqs.push(req);
  }

  /** Give the chain back with usedLen bytes written: once per request. */
  private finish(req: Req, usedLen: number): void {
    if (req.done) {
      this.log.error({ op: OP_NAMES[req.opcode] ?? req.opcode, head: req.head }, 'request completed twice; ignored');
      return;
    }
    req.done = true;
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
    const len = h.getUint32(0, true);
    const opcode = h.getUint32(4, true);
    const nodeLo = h.getUint32(16, true), nodeHi = h.getUint32(20, true);
    const extlen = h.getUint16(36, true) * 8;
    req.opcode = opcode;
    req.uniqueLo = h.getUint32(8, true);
    req.uniqueHi = h.getUint32(12, true);
    req.nodeid = nodeHi === 0 ? nodeLo : 0;
    const ctx = req.ctx;
    ctx.uid = h.getUint32(24, true);
    ctx.gid = h.getUint32(28, true);
    ctx.pid = h.getUint32(32, true);
    req.body = req.smallBody;
    req.bodyStr = req.smallStr;
    req.dv = req.smallDv;
    req.bodyLen = 0;
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
    if (bodyLen > SMALL_BODY) {
      req.body = this.bigBody;
      req.bodyStr = this.bigStr;
      req.dv = this.bigDv;
    }
    if (!reader.copyTo(req.body, 0, bodyLen)) {
      return this.malformed(req, opcode === OP.FUSE_WRITE ? 'short WRITE' : 'request body shorter than in_header.len');
    }
    req.bodyLen = bodyLen;
    const body = req.body;
    for (let i = bodyLen; i < bodyLen + BODY_PAD; i++) body[i] = 0; // (cheaper than fill() here)

    const isForget = opcode === OP.FUSE_FORGET || opcode === OP.FUSE_BATCH_FORGET || opcode === OP.FUSE_INTERRUPT;
    if (!isForget) {
      const need = SIZE.out_header + (MIN_REPLY[opcode] ?? 0);
      if (writer.remaining < SIZE.out_header) {
        return this.malformed(req, `no room for a reply (${writer.remaining} writable bytes)`);
      }
      if (writer.remaining < need) {
        this.log.warn({ op: OP_NAMES[opcode], writable: writer.remaining, need }, 'reply buffer too small');
        return this.reply(req, -E.EINVAL);
      }
    }
    if (!this.initialized && opcode !== OP.FUSE_INIT && !isForget) {
      this.log.warn({ op: OP_NAMES[opcode] ?? opcode }, 'request before FUSE_INIT');
      return this.reply(req, -E.EIO);
    }
    if (replay === Replay.Stuck && this.answerStuck(req, journal)) return;
    if (journal !== null && JOURNALED.has(opcode)) {
      if (replay !== Replay.Fresh) {
        const rec = journal.find(chain.head, req.uniqueLo, req.uniqueHi, opcode);
        if (rec && rec.state === J_DONE) {
          // Ran to completion before the crash: answer as it was answered, do not run it again.
          this.log.info({ op: OP_NAMES[opcode], head: chain.head }, 'replayed request answered from the journal');
          if (opcode === OP.FUSE_FORGET) return this.finish(req, 0);
          if (rec.error < 0) return this.reply(req, rec.error);
          this.out.set(rec.body, SIZE.out_header);
          return this.reply(req, rec.body.length);
        }
        if (rec) {
          req.relaxed = true;
          req.pre = rec.pre;
        }
      }
      if (!req.relaxed) req.pre = this.preState(req);
      journal.intent(chain.head, req.uniqueLo, req.uniqueHi, opcode, req.pre);
      req.journal = journal;
      crashpoint('after-journal-intent');
    }
    let r: number;
    try {
      r = req.relaxed && this.exchangeDone(req) ? 0 : this.dispatch(req);
      if (req.relaxed && r !== NO_REPLY) r = this.relax(req, r);
    } catch (e) {
      // An exception is a bug in us, not bad input: answer EIO and keep serving.
      this.log.error({ err: e, op: OP_NAMES[opcode] ?? opcode, nodeid: req.nodeid }, 'op threw');
      if (process.env.NODE_ENV === 'test') throw e;
      r = -E.EIO;
    }
    if (r === NO_REPLY) return; // the op completes (or already completed) the chain itself
    this.record(req, r);
    this.reply(req, r);
  }

  /**
   * A request the previous worker was stuck in when the keeper's watchdog killed it: answer EIO
   * instead of running it into the same wall (an fd that blocks forever, storage that does not
   * answer). Not for what waits by design (SETLKW, which ring stops cancel) or has no reply, nor
   * for a journaled request that completed (the journal's answer stands). False: run it.
   */
  private answerStuck(req: Req, journal: Journal | null): boolean {
    const op = req.opcode;
    if (op === OP.FUSE_SETLKW || op === OP.FUSE_FORGET || op === OP.FUSE_BATCH_FORGET || op === OP.FUSE_INTERRUPT) return false;
    const journaled = journal !== null && JOURNALED.has(op);
    if (journaled && journal.find(req.head, req.uniqueLo, req.uniqueHi, op)?.state === J_DONE) return false;
    this.log.warn({ op: OP_NAMES[op] ?? op, nodeid: req.nodeid, head: req.head }, 'request the previous worker was stuck in: answered EIO, not run again');
    if (journaled) {
      // Recorded, so that a crash before the reply is pushed gives the same answer again.
      journal.intent(req.head, req.uniqueLo, req.uniqueHi, op, 0);
      journal.done(req.head, -E.EIO, EMPTY);
    }
    this.reply(req, -E.EIO);
    return true;
  }

  /** Journal the outcome of a journaled request, before its reply can reach the guest. */
  private record(req: Req, r: number): void {
    if (req.journal === null) return;
    crashpoint('after-op');
    req.journal.done(req.head, r < 0 ? r : 0, r < 0 ? EMPTY : this.out.subarray(SIZE.out_header, SIZE.out_header + r));
    crashpoint('after-journal-done');
  }

  private isExchange(req: Req): boolean {
    return req.opcode === OP.FUSE_RENAME2 && req.bodyLen >= SIZE.rename2_in && (req.dv.getUint32(8, true) & RENAME_EXCHANGE) !== 0;
  }

  /**
   * A re-run of a RENAME_EXCHANGE: running it again would swap the names back. If the source
   * name no longer holds the inode it held before the first run, that run swapped them.
   */
  private exchangeDone(req: Req): boolean {
    if (req.pre < PRE_INO || !this.isExchange(req)) return false;
    const n = this.name(req, SIZE.rename2_in);
    if (typeof n === 'number') return false;
    const now = this.fs.nameIno(req.ctx, req.nodeid, n.s);
    if (now < 0 || now === req.pre - PRE_INO) return false;
    this.log.info({ op: 'RENAME2', flags: 'RENAME_EXCHANGE' }, 'replayed request: the names were already exchanged; not run again');
    return true;
  }

  /**
   * A re-run of a request whose first run may have completed before the crash (journal intent,
   * no outcome): the errors that first run would cause now mean success (the seed's relaxation).
   */
  private relax(req: Req, r: number): number {
    const fs = this.fs, ctx = req.ctx, op = req.opcode;
    // The intent recorded what was there before the first run (PRE_*): an error the first run
    // cannot have caused is the request's own answer.
    const existedBefore = req.pre === PRE_EXISTED, absentBefore = req.pre === PRE_ABSENT;
    if ((r === -E.EEXIST && existedBefore) || (r === -E.ENOENT && absentBefore)) return r;
    let out = r;
    if (r === -E.EEXIST && (op === OP.FUSE_MKDIR || op === OP.FUSE_MKNOD || op === OP.FUSE_SYMLINK || op === OP.FUSE_LINK)) {
      const name = this.lastName(req);
      if (name !== null) out = this.entryReply(fs.lookup(ctx, req.nodeid, name, this.st));
    } else if (r === -E.EEXIST && op === OP.FUSE_CREATE) {
      const name = this.lastName(req);
      if (name !== null) {
        const e = fs.lookup(ctx, req.nodeid, name, this.st);
        if (typeof e !== 'number') {
          const flags = req.dv.getUint32(0, true) & ~(0o100 | 0o200 | 0o1000); // O_CREAT|O_EXCL|O_TRUNC
          const o = fs.open(ctx, e.nodeid, flags);
          if (typeof o === 'number') {
            fs.forget(e.nodeid, 1);
          } else {
            this.encodeEntry(SIZE.out_header, e, this.st);
            this.encodeOpen(SIZE.out_header + SIZE.entry_out, o);
            out = SIZE.entry_out + SIZE.open_out;
          }
        }
      }
    } else if (r === -E.ENOENT && (op === OP.FUSE_UNLINK || op === OP.FUSE_RMDIR)) {
      out = 0;
    } else if (r === -E.ENOENT && (op === OP.FUSE_RENAME || op === OP.FUSE_RENAME2)) {
      // Source gone: done if the target is there.
      const names = this.twoNames(req);
      if (names) {
        const e = fs.lookup(ctx, names.newParent, names.newName, this.st);
        if (typeof e !== 'number') {
          fs.forget(e.nodeid, 1);
          out = 0;
        }
      }
    } else if (r === -E.EEXIST && op === OP.FUSE_SETXATTR) {
      out = 0;
    }
    if (out !== r) this.log.info({ op: OP_NAMES[op], errno: r }, 'replayed request: its error taken as the first run having completed');
    return out;
  }

  /**
   * What a journaled request's first run will find, recorded with its intent so that a re-run
   * can tell its own effects from the request's true answer: whether the name it creates,
   * removes or renames existed (PRE_EXISTED / PRE_ABSENT), the lookup count a FORGET starts from
   * and the size an O_APPEND WRITE starts from (value + 1). 0 = not recorded.
   */
  private preState(req: Req): number {
    const fs = this.fs, op = req.opcode;
    switch (op) {
      case OP.FUSE_MKDIR: case OP.FUSE_MKNOD: case OP.FUSE_SYMLINK: case OP.FUSE_LINK: case OP.FUSE_CREATE: {
        // A CREATE without O_EXCL opens what is there: no EEXIST for a re-run to judge.
        if (op === OP.FUSE_CREATE && (req.bodyLen < 4 || (req.dv.getUint32(0, true) & 0o200 /* O_EXCL */) === 0)) return 0;
        const name = this.lastName(req);
        return name === null ? 0 : fs.nameIno(req.ctx, req.nodeid, name) >= 0 ? PRE_EXISTED : PRE_ABSENT;
      }
      case OP.FUSE_UNLINK: case OP.FUSE_RMDIR: case OP.FUSE_RENAME: case OP.FUSE_RENAME2: {
        const fixed = op === OP.FUSE_RENAME ? SIZE.rename_in : op === OP.FUSE_RENAME2 ? SIZE.rename2_in : 0;
        const n = this.name(req, fixed);
        if (typeof n === 'number') return 0;
        const ino = fs.nameIno(req.ctx, req.nodeid, n.s);
        if (ino < 0) return PRE_ABSENT;
        return this.isExchange(req) ? PRE_INO + ino : PRE_EXISTED;
      }
      case OP.FUSE_SETXATTR: {
        const fixed = this.setxattrExt ? SIZE.setxattr_in_ext : SIZE.setxattr_in;
        const n = req.bodyLen >= fixed ? this.cstr(req, fixed, XATTR_NAME_MAX) : null;
        return n ? (fs.hasXattr(req.ctx, req.nodeid, n.s) ? PRE_EXISTED : PRE_ABSENT) : 0;
      }
      case OP.FUSE_FORGET: {
        const c = fs.lookupCount(req.nodeid);
        return c < 0 ? 0 : c + 1;
      }
      case OP.FUSE_WRITE: {
        const size = req.bodyLen >= SIZE.write_in ? fs.appendSize(this.id(req, 0)) : -1;
        return size < 0 ? 0 : size + 1;
      }
      default:
        return 0;
    }
  }

  /** The (single) name argument of MKDIR/MKNOD/SYMLINK/LINK/CREATE. */
  private lastName(req: Req): string | null {
    const fixed = ({ [OP.FUSE_MKDIR]: SIZE.mkdir_in, [OP.FUSE_MKNOD]: SIZE.mknod_in, [OP.FUSE_LINK]: SIZE.link_in,
      [OP.FUSE_CREATE]: SIZE.create_in, [OP.FUSE_SYMLINK]: 0 } as Record<number, number>)[req.opcode] ?? 0;
    const n = this.name(req, fixed);
    return typeof n === 'number' ? null : n.s;
  }

  private twoNames(req: Req): { newParent: number; newName: string } | null {
    const fixed = req.opcode === OP.FUSE_RENAME ? SIZE.rename_in : SIZE.rename2_in;
    const a = this.name(req, fixed);
    if (typeof a === 'number') return null;
    const b = this.name(req, a.next);
    if (typeof b === 'number') return null;
    return { newParent: this.id(req, 0), newName: b.s };
  }

  /** Finish a request: r >= 0 is a reply body of r bytes in this.out after the header, r < 0 an errno. */
  private reply(req: Req, r: number): void {
    const bodyLen = r >= 0 ? r : 0;
    const total = SIZE.out_header + bodyLen;
    if (r < 0) this.stats.errors++;
    this.writeOutHeader(this.outDv, 0, req, total, r < 0 ? r : 0);
    if (!req.writer.write(this.outPrefix(total))) {
      // Checked up front for fixed-size replies; variable ones (readdir, xattr) are sized by the op.
      this.log.warn({ op: OP_NAMES[req.opcode], total, room: req.writer.remaining }, 'reply does not fit the buffer');
      this.writeOutHeader(this.outDv, 0, req, SIZE.out_header, -E.EIO);
      req.writer.write(this.outPrefix(SIZE.out_header));
    }
    this.finish(req, req.writer.written);
  }

  /** this.out[0, n). */
  private outPrefix(n: number): Uint8Array {
    if (n > OUT_VIEW_CACHE) return this.out.subarray(0, n);
    let v = this.outViews[n];
    if (v === undefined) v = this.outViews[n] = this.out.subarray(0, n);
    return v;
  }

  private writeOutHeader(dv: DataView, off: number, req: Req, len: number, error: number): void {
    dv.setUint32(off, len, true);
    dv.setInt32(off + 4, error, true);
    dv.setUint32(off + 8, req.uniqueLo, true);
    dv.setUint32(off + 12, req.uniqueHi, true);
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

  // ---- argument helpers ----

  /** A NUL-terminated string at off; null if it runs past the body. */
  private cstr(req: Req, off: number, max: number): { s: string; next: number } | null {
    // The body is followed by zeros, so the scan stops; a NUL past the body is no terminator.
    const end = req.body.indexOf(0, off);
    if (end < 0 || end >= req.bodyLen || end - off > max) return null;
    return { s: req.bodyStr.toString('latin1', off, end), next: end + 1 };
  }

  /** A single path component from the guest. */
  private name(req: Req, off: number): { s: string; next: number } | number {
    const n = this.cstr(req, off, PATH_MAX);
    if (!n) return -E.EINVAL;
    if (n.s.length > NAME_MAX) return -E.ENAMETOOLONG;
    if (n.s.length === 0 || n.s.includes('/') || n.s === '.' || n.s === '..') return -E.EINVAL;
    return n;
  }

  private u64(req: Req, off: number): number {
    // Offsets and sizes: anything past 2^53 cannot be a real file position here.
    const lo = req.dv.getUint32(off, true), hi = req.dv.getUint32(off + 4, true);
    if (hi >= 0x200000) return -1;
    return hi * 0x100000000 + lo;
  }

  /** A u64 id (node id, fh) that must be a slot index: 0 for anything larger than 2^32. */
  private id(req: Req, off: number): number {
    return req.dv.getUint32(off + 4, true) === 0 ? req.dv.getUint32(off, true) : 0;
  }

  private need(req: Req, n: number): boolean {
    return req.bodyLen >= n;
  }

  // ---- reply encoders (into this.out after the header) ----

  /** st as u32 words (lo, hi per u64 slot). */
  private words(st: BigUint64Array): Uint32Array {
    if (st === this.st) return this.stW;
    if (st === this.st2) return this.st2W;
    return new Uint32Array(st.buffer, st.byteOffset, 2 * STAT_SLOTS);
  }

  /** A u64 field from a non-negative safe integer. */
  private setU64(off: number, v: number): void {
    const dv = this.outDv;
    if (v <= 0xffffffff) {
      dv.setUint32(off, v, true);
      dv.setUint32(off + 4, 0, true);
    } else {
      dv.setUint32(off, v >>> 0, true);
      dv.setUint32(off + 4, Math.floor(v / 0x100000000), true);
    }
  }

  /** fuse_attr from a stat() result: u64 fields copied as their two words, u32 fields from the low
   *  word (nlink and rdev are truncated, as before). */
  private encodeAttr(off: number, st: BigUint64Array, flags: number): void {
    const dv = this.outDv, w = this.words(st);
    dv.setUint32(off, w[2 * ST.ino]!, true);
    dv.setUint32(off + 4, w[2 * ST.ino + 1]!, true);
    dv.setUint32(off + 8, w[2 * ST.size]!, true);
    dv.setUint32(off + 12, w[2 * ST.size + 1]!, true);
    dv.setUint32(off + 16, w[2 * ST.blocks]!, true);
    dv.setUint32(off + 20, w[2 * ST.blocks + 1]!, true);
    dv.setUint32(off + 24, w[2 * ST.atime]!, true);
    dv.setUint32(off + 28, w[2 * ST.atime + 1]!, true);
    dv.setUint32(off + 32, w[2 * ST.mtime]!, true);
    dv.setUint32(off + 36, w[2 * ST.mtime + 1]!, true);
    dv.setUint32(off + 40, w[2 * ST.ctime]!, true);
    dv.setUint32(off + 44, w[2 * ST.ctime + 1]!, true);
    dv.setUint32(off + 48, w[2 * ST.atimensec]!, true);
    dv.setUint32(off + 52, w[2 * ST.mtimensec]!, true);
    dv.setUint32(off + 56, w[2 * ST.ctimensec]!, true);
    dv.setUint32(off + 60, w[2 * ST.mode]!, true);
    dv.setUint32(off + 64, w[2 * ST.nlink]!, true);
    dv.setUint32(off + 68, w[2 * ST.uid]!, true);
    dv.setUint32(off + 72, w[2 * ST.gid]!, true);
    dv.setUint32(off + 76, w[2 * ST.rdev]!, true);
    dv.setUint32(off + 80, w[2 * ST.blksize]!, true);
    dv.setUint32(off + 84, flags, true);
  }

  private encodeEntry(off: number, e: EntryResult | null, st: BigUint64Array | null): number {
    const dv = this.outDv;
    if (!e || !st) {
      this.out.fill(0, off, off + SIZE.entry_out);
      return SIZE.entry_out;
    }
    const et = this.fs.entryTimeout, at = this.fs.attrTimeout;
    this.setU64(off, e.nodeid);
    this.setU64(off + 8, e.generation);
    this.setU64(off + 16, Math.floor(et));
    this.setU64(off + 24, Math.floor(at));
    dv.setUint32(off + 32, Math.round((et % 1) * 1e9), true);
    dv.setUint32(off + 36, Math.round((at % 1) * 1e9), true);
    this.encodeAttr(off + 40, st, e.attrFlags);
    return SIZE.entry_out;
  }

  private encodeAttrOut(off: number, st: BigUint64Array): number {
    const at = this.fs.attrTimeout;
    this.setU64(off, Math.floor(at));
    this.outDv.setUint32(off + 8, Math.round((at % 1) * 1e9), true);
    this.outDv.setUint32(off + 12, 0, true);
    this.encodeAttr(off + 16, st, 0);
    return SIZE.attr_out;
  }

  private encodeOpen(off: number, o: OpenResult): number {
    this.setU64(off, o.fh);
    this.outDv.setUint32(off + 8, o.openFlags, true);
    this.outDv.setUint32(off + 12, 0, true);
    return SIZE.open_out;
  }

  private entryReply(r: EntryResult | number): number {
    if (typeof r === 'number') return r;
    return this.encodeEntry(SIZE.out_header, r, this.st);
  }

  // ---- dispatch ----

  private dispatch(req: Req): number {
    const fs = this.fs, ctx = req.ctx, dv = req.dv, H = SIZE.out_header;
    switch (req.opcode) {
      case OP.FUSE_INIT: return this.doInit(req);
      case OP.FUSE_DESTROY:
        fs.destroy();
        this.initialized = false;
        this.onInit?.(null);
        return 0;
      case OP.FUSE_LOOKUP: {
        const n = this.cstr(req, 0, PATH_MAX);
        if (!n) return -E.EINVAL;
        if (n.s.length > NAME_MAX) return -E.ENAMETOOLONG;
        return this.entryReply(fs.lookup(ctx, req.nodeid, n.s, this.st));
      }
      case OP.FUSE_FORGET: {
        if (!this.need(req, SIZE.forget_in)) return this.noReply(req, 'short FORGET');
        const n = this.u64(req, 0);
        // A re-run whose first run already dropped the count (it is below what the intent saw)
        // must not drop it again.
        const applied = req.relaxed === true && req.pre > 0 && fs.lookupCount(req.nodeid) < req.pre - 1;
        if (!applied) fs.forget(req.nodeid, n);
        if (req.journal) {
          crashpoint('after-op');
          req.journal.done(req.head, 0, EMPTY);
          crashpoint('after-journal-done');
        }
        return this.noReply(req);
      }
      case OP.FUSE_BATCH_FORGET: {
        if (!this.need(req, SIZE.batch_forget_in)) return this.noReply(req, 'short BATCH_FORGET');
        const count = dv.getUint32(0, true);
        if (SIZE.batch_forget_in + count * SIZE.forget_one > req.bodyLen) return this.noReply(req, 'BATCH_FORGET count past the body');
        const items: number[] = [];
        for (let i = 0; i < count; i++) {
          const o = SIZE.batch_forget_in + i * SIZE.forget_one;
          items.push(this.id(req, o), this.u64(req, o + 8));
        }
        this.noReply(req);
        for (let i = 0; i < items.length; i += 2) fs.forget(items[i]!, items[i + 1]!);
        return NO_REPLY;
      }
      case OP.FUSE_INTERRUPT:
        // virtio-fs guests never send it (Linux 6.1 virtio_fs_wake_interrupt_and_unlock is a no-op);
        // requests run to completion anyway, so there is nothing to interrupt.
        return this.noReply(req);
      case OP.FUSE_GETATTR: {
        if (!this.need(req, SIZE.getattr_in)) return -E.EINVAL;
        const fh = dv.getUint32(0, true) & FUSE_GETATTR_FH ? this.id(req, 8) : null;
        const r = fs.getattr(ctx, req.nodeid, fh, this.st);
        return r < 0 ? r : this.encodeAttrOut(H, this.st);
      }
      case OP.FUSE_SETATTR: {
        if (!this.need(req, SIZE.setattr_in)) return -E.EINVAL;
        const valid = dv.getUint32(0, true);
        const size = this.u64(req, 16);
        if ((valid & FATTR.SIZE) && size < 0) return -E.EFBIG;
        const r = fs.setattr(ctx, req.nodeid, {
          valid, fh: valid & FATTR.FH ? this.id(req, 8) : 0, size,
          atime: Number(dv.getBigInt64(32, true)), mtime: Number(dv.getBigInt64(40, true)),
          atimensec: dv.getUint32(56, true), mtimensec: dv.getUint32(60, true),
          mode: dv.getUint32(68, true), uid: dv.getUint32(76, true), gid: dv.getUint32(80, true),
        }, this.st);
        return r < 0 ? r : this.encodeAttrOut(H, this.st);
      }
      case OP.FUSE_READLINK: {
        const room = Math.min(req.writer.remaining - H, PATH_MAX);
        if (room <= 0) return -E.ERANGE;
        return fs.readlink(ctx, req.nodeid, this.out.subarray(H, H + room));
      }
      case OP.FUSE_SYMLINK: {
        const n = this.name(req, 0);
        if (typeof n === 'number') return n;
        const t = this.cstr(req, n.next, PATH_MAX);
        if (!t || t.s.length === 0) return -E.EINVAL;
        return this.entryReply(fs.symlink(ctx, req.nodeid, n.s, t.s, this.st));
      }
      case OP.FUSE_MKNOD: {
        if (!this.need(req, SIZE.mknod_in)) return -E.EINVAL;
        const n = this.name(req, SIZE.mknod_in);
        if (typeof n === 'number') return n;
        return this.entryReply(fs.mknod(ctx, req.nodeid, n.s, dv.getUint32(0, true), dv.getUint32(4, true), dv.getUint32(8, true), this.st));
      }
      case OP.FUSE_MKDIR: {
        if (!this.need(req, SIZE.mkdir_in)) return -E.EINVAL;
        const n = this.name(req, SIZE.mkdir_in);
        if (typeof n === 'number') return n;
        return this.entryReply(fs.mkdir(ctx, req.nodeid, n.s, dv.getUint32(0, true), dv.getUint32(4, true), this.st));
      }
      case OP.FUSE_UNLINK:
      case OP.FUSE_RMDIR: {
        const n = this.name(req, 0);
        if (typeof n === 'number') return n;
        return req.opcode === OP.FUSE_UNLINK ? fs.unlink(ctx, req.nodeid, n.s) : fs.rmdir(ctx, req.nodeid, n.s);
      }
      case OP.FUSE_RENAME:
      case OP.FUSE_RENAME2: {
        const fixed = req.opcode === OP.FUSE_RENAME ? SIZE.rename_in : SIZE.rename2_in;
        if (!this.need(req, fixed)) return -E.EINVAL;
        const flags = req.opcode === OP.FUSE_RENAME2 ? dv.getUint32(8, true) : 0;
        const a = this.name(req, fixed);
        if (typeof a === 'number') return a;
        const b = this.name(req, a.next);
        if (typeof b === 'number') return b;
        return fs.rename(ctx, req.nodeid, a.s, this.id(req, 0), b.s, flags);
      }
      case OP.FUSE_LINK: {
        if (!this.need(req, SIZE.link_in)) return -E.EINVAL;
        const n = this.name(req, SIZE.link_in);
        if (typeof n === 'number') return n;
        return this.entryReply(fs.link(ctx, this.id(req, 0), req.nodeid, n.s, this.st));
      }
      case OP.FUSE_OPEN:
      case OP.FUSE_OPENDIR: {
        if (!this.need(req, SIZE.open_in)) return -E.EINVAL;
        const flags = dv.getUint32(0, true);
        const r = req.opcode === OP.FUSE_OPEN ? fs.open(ctx, req.nodeid, flags) : fs.opendir(ctx, req.nodeid, flags);
        return typeof r === 'number' ? r : this.encodeOpen(H, r);
      }
      case OP.FUSE_CREATE:
      case OP.FUSE_TMPFILE: {
        if (!this.need(req, SIZE.create_in)) return -E.EINVAL;
        const flags = dv.getUint32(0, true), mode = dv.getUint32(4, true), umask = dv.getUint32(8, true);
        let r;
        if (req.opcode === OP.FUSE_CREATE) {
          const n = this.name(req, SIZE.create_in);
          if (typeof n === 'number') return n;
          r = fs.create(ctx, req.nodeid, n.s, flags, mode, umask, this.st);
        } else {
          r = fs.tmpfile(ctx, req.nodeid, flags, mode, umask, this.st);
        }
        if (typeof r === 'number') return r;
        this.encodeEntry(H, r.entry, this.st);
        this.encodeOpen(H + SIZE.entry_out, r.open);
        return SIZE.entry_out + SIZE.open_out;
      }
      case OP.FUSE_READ: return this.doRead(req);
      case OP.FUSE_WRITE: return this.doWrite(req);
      case OP.FUSE_STATFS: {
        const sf = this.st2;
        const r = fs.statfs(ctx, req.nodeid, sf);
        if (r < 0) return r;
        const o = this.outDv;
        o.setBigUint64(H, sf[2]!, true); o.setBigUint64(H + 8, sf[3]!, true); o.setBigUint64(H + 16, sf[4]!, true);
        o.setBigUint64(H + 24, sf[5]!, true); o.setBigUint64(H + 32, sf[6]!, true);
        o.setUint32(H + 40, Number(sf[0]!), true); o.setUint32(H + 44, Number(sf[7]!), true);
        o.setUint32(H + 48, Number(sf[1]!), true);
        this.out.fill(0, H + 52, H + SIZE.kstatfs);
        return SIZE.kstatfs;
      }
      case OP.FUSE_RELEASE:
      case OP.FUSE_RELEASEDIR: {
        if (!this.need(req, SIZE.release_in)) return -E.EINVAL;
        // The free and the reply happen in one synchronous stretch, so no OPEN can be given this
        // fh before the reply is on the used ring; a RELEASE re-run after a crash in between
        // finds no handle (EBADF, which the guest ignores) and frees nothing else.
        const fh = this.id(req, 0), flags = dv.getUint32(8, true), rflags = dv.getUint32(12, true), owner = dv.getBigUint64(16, true);
        const r = req.opcode === OP.FUSE_RELEASE ? fs.release(ctx, fh, flags, rflags, owner) : fs.releasedir(ctx, fh);
        if (r < 0) this.log.debug({ op: OP_NAMES[req.opcode], fh, errno: -r }, 'release of an unknown handle');
        return r;
      }
      case OP.FUSE_FLUSH: {
        if (!this.need(req, SIZE.flush_in)) return -E.EINVAL;
        return fs.flush(ctx, req.nodeid, this.id(req, 0), dv.getBigUint64(16, true));
      }
      case OP.FUSE_FSYNC: {
        if (!this.need(req, SIZE.fsync_in)) return -E.EINVAL;
        fs.fsync(ctx, this.id(req, 0), (dv.getUint32(8, true) & FUSE_FSYNC_FDATASYNC) !== 0, req.onStatus);
        return NO_REPLY;
      }
      case OP.FUSE_FSYNCDIR: {
        if (!this.need(req, SIZE.fsync_in)) return -E.EINVAL;
        return fs.fsyncdir(ctx, this.id(req, 0), (dv.getUint32(8, true) & FUSE_FSYNC_FDATASYNC) !== 0);
      }
      case OP.FUSE_SETXATTR: {
        const fixed = this.setxattrExt ? SIZE.setxattr_in_ext : SIZE.setxattr_in;
        if (!this.need(req, fixed)) return -E.EINVAL;
        const size = dv.getUint32(0, true), flags = dv.getUint32(4, true);
        const n = this.cstr(req, fixed, XATTR_NAME_MAX);
        if (!n || n.s.length === 0) return n ? -E.EINVAL : -E.ERANGE;
        if (size > XATTR_SIZE_MAX || n.next + size > req.bodyLen) return -E.EINVAL;
        return fs.setxattr(ctx, req.nodeid, n.s, req.body.subarray(n.next, n.next + size), flags);
      }
      case OP.FUSE_GETXATTR:
      case OP.FUSE_LISTXATTR: {
        if (!this.need(req, SIZE.getxattr_in)) return -E.EINVAL;
        const size = dv.getUint32(0, true);
        let name = '';
        if (req.opcode === OP.FUSE_GETXATTR) {
          const n = this.cstr(req, SIZE.getxattr_in, XATTR_NAME_MAX);
          if (!n || n.s.length === 0) return n ? -E.EINVAL : -E.ERANGE;
          name = n.s;
        }
        if (size > 0 && size > req.writer.remaining - H) return -E.ERANGE;
        const buf = this.out.subarray(H, H + Math.min(size, XATTR_SIZE_MAX));
        const r = req.opcode === OP.FUSE_GETXATTR ? fs.getxattr(ctx, req.nodeid, name, buf) : fs.listxattr(ctx, req.nodeid, buf);
        if (r < 0) return r;
        if (size === 0) {
          // Size probe: fuse_getxattr_out { size, padding }
          this.outDv.setUint32(H, r, true);
          this.outDv.setUint32(H + 4, 0, true);
          return SIZE.getxattr_out;
        }
        return r;
      }
      case OP.FUSE_REMOVEXATTR: {
        const n = this.cstr(req, 0, XATTR_NAME_MAX);
        if (!n || n.s.length === 0) return -E.EINVAL;
        return fs.removexattr(ctx, req.nodeid, n.s);
      }
      case OP.FUSE_READDIR:
      case OP.FUSE_READDIRPLUS: return this.doReaddir(req);
      case OP.FUSE_GETLK:
      case OP.FUSE_SETLK:
      case OP.FUSE_SETLKW: return this.doLock(req);
      case OP.FUSE_ACCESS: {
        if (!this.need(req, SIZE.access_in)) return -E.EINVAL;
        return fs.access(ctx, req.nodeid, dv.getUint32(0, true));
      }
      case OP.FUSE_FALLOCATE: {
        if (!this.need(req, SIZE.fallocate_in)) return -E.EINVAL;
        const off = this.u64(req, 8), len = this.u64(req, 16);
        if (off < 0 || len <= 0) return len === 0 ? -E.EINVAL : -E.EFBIG;
        return fs.fallocate(ctx, this.id(req, 0), dv.getUint32(24, true), off, len);
      }
      case OP.FUSE_LSEEK: {
        if (!this.need(req, SIZE.lseek_in)) return -E.EINVAL;
        const off = this.u64(req, 8);
        if (off < 0) return -E.ENXIO;
        const r = fs.lseek(ctx, this.id(req, 0), off, dv.getUint32(16, true));
        if (r < 0) return r;
        this.setU64(H, r);
        return SIZE.lseek_out;
      }
      case OP.FUSE_COPY_FILE_RANGE: {
        if (!this.need(req, SIZE.copy_file_range_in)) return -E.EINVAL;
        const offIn = this.u64(req, 8), offOut = this.u64(req, 32), len = this.u64(req, 40);
        if (offIn < 0 || offOut < 0) return -E.EINVAL;
        const r = fs.copyFileRange(ctx, this.id(req, 0), offIn, this.id(req, 24), offOut,
          len < 0 ? MAX_BUFFER_SIZE * 1024 : len, Number(dv.getBigUint64(48, true) & 0xffffffffn));
        if (r < 0) return r;
        this.outDv.setUint32(H, r, true);
        this.outDv.setUint32(H + 4, 0, true);
        return SIZE.write_out;
      }
      case OP.FUSE_SYNCFS: return fs.syncfs(ctx, req.nodeid);
      case OP.FUSE_IOCTL:
        // Like both peer virtiofsds: no ioctls are passed through to the host.
        return -E.ENOTTY;
      default:
        this.log.warn({ opcode: req.opcode, name: OP_NAMES[req.opcode] }, 'unsupported opcode');
        return -E.ENOSYS;
    }
  }

  private setxattrExt = false;

  private noReply(req: Req, why?: string): number {
    if (why) {
      this.stats.malformed++;
      this.log.warn({ op: OP_NAMES[req.opcode], why }, 'malformed request');
    }
    this.finish(req, 0);
    return NO_REPLY;
  }

  private doInit(req: Req): number {
    if (!this.need(req, SIZE.init_in_v7_6)) return -E.EINVAL;
    const dv = req.dv;
    const major = dv.getUint32(0, true), minor = dv.getUint32(4, true);
    let flags = BigInt(dv.getUint32(12, true));
    if (major !== FUSE_KERNEL_VERSION) {
      // The kernel retries with our major if we answer with it and no error (fuse.h "INIT request and reply").
      this.log.warn({ major, minor }, 'unsupported FUSE major version');
      if (major < FUSE_KERNEL_VERSION) return -E.EPROTO;
      this.out.fill(0, SIZE.out_header, SIZE.out_header + SIZE.init_out);
      this.outDv.setUint32(SIZE.out_header, FUSE_KERNEL_VERSION, true);
      this.outDv.setUint32(SIZE.out_header + 4, FUSE_KERNEL_MINOR_VERSION, true);
      return SIZE.init_out;
    }
    if (req.bodyLen >= SIZE.init_in && (flags & (1n << BigInt(INIT.INIT_EXT)))) {
      flags |= BigInt(dv.getUint32(16, true)) << 32n;
    }
    const initReq: InitRequest = { major, minor, maxReadahead: dv.getUint32(8, true), flags };
    const r = this.fs.init(initReq);
    if (typeof r === 'number') return r;
    this.applyInit(r);
    this.onInit?.(initReq);
    const o = this.outDv, H = SIZE.out_header;
    this.out.fill(0, H, H + SIZE.init_out);
    o.setUint32(H, FUSE_KERNEL_VERSION, true);
    o.setUint32(H + 4, Math.min(minor, FUSE_KERNEL_MINOR_VERSION), true);
    o.setUint32(H + 8, r.maxReadahead, true);
    o.setUint32(H + 12, Number(r.flags & 0xffffffffn), true);
    o.setUint16(H + 16, r.maxBackground, true);
    o.setUint16(H + 18, r.congestionThreshold, true);
    o.setUint32(H + 20, r.maxWrite, true);
    o.setUint32(H + 24, r.timeGran, true);
    o.setUint16(H + 28, r.maxPages, true);
    o.setUint16(H + 30, 0, true);
    o.setUint32(H + 32, Number(r.flags >> 32n), true);
    this.log.info({ minor, flags: '0x' + r.flags.toString(16), readdirplus: this.readdirplus }, 'FUSE session initialized');
    // Old kernels (minor < 23) expect the 24-byte init_out.
    return minor < 23 ? 24 : SIZE.init_out;
  }

  private doRead(req: Req): number {
    if (!this.need(req, SIZE.read_in)) return -E.EINVAL;
    const offset = this.u64(req, 8);
    const size = req.dv.getUint32(16, true);
    if (offset < 0) return -E.EINVAL;
    if (size > MAX_BUFFER_SIZE) return -E.EINVAL;
    const H = SIZE.out_header;
    const room = req.writer.remaining - H;
    if (room < 0) return -E.EINVAL;
    // Header first (filled in when the length is known), then the data straight into guest memory.
    const n = Math.min(size, room);
    if (!req.writer.reserve(H)) return -E.EIO;
    if (n > 0 && this.rangeIo !== null) {
      const count = req.writer.ranges(n, this.iov);
      if (count >= 0) {
        this.rangeIo.readRanges(req.ctx, this.id(req, 0), offset, req.writer.rangeWin, this.iov, count, req.onRead);
        return NO_REPLY;
      }
    }
    const dst = n > 0 ? req.writer.views(n) : NO_VIEWS;
    if (!dst) return -E.EIO;
    this.fs.read(req.ctx, this.id(req, 0), offset, dst, req.onRead);
    return NO_REPLY;
  }

  /** @internal A READ's data is in: fill in its header, give the chain back. */
  readDone(req: Req, r: number): void {
    const H = SIZE.out_header;
    const len = r < 0 ? H : H + r;
    this.writeOutHeader(this.readHdrDv, 0, req, len, r < 0 ? r : 0);
    req.writer.fillReserved(this.readHdr);
    if (r < 0) this.stats.errors++;
    this.finish(req, len);
  }

  private doWrite(req: Req): number {
    if (!this.need(req, SIZE.write_in)) return -E.EINVAL;
    const offset = this.u64(req, 8);
    const size = req.dv.getUint32(16, true);
    const writeFlags = req.dv.getUint32(20, true);
    if (offset < 0) return -E.EFBIG;
    if (size > MAX_BUFFER_SIZE || size > req.reader.remaining) return -E.EINVAL;
    if (req.relaxed && req.pre > 0 && this.fs.appendSize(this.id(req, 0)) >= req.pre - 1 + size) {
      // An O_APPEND write whose first run landed (the file grew by it): do not append twice.
      this.log.info({ size }, 'replayed O_APPEND write had landed; not written again');
      this.outDv.setUint32(SIZE.out_header, size, true);
      this.outDv.setUint32(SIZE.out_header + 4, 0, true);
      return SIZE.write_out;
    }
    if (size > 0 && this.rangeIo !== null) {
      const count = req.reader.ranges(size, this.iov);
      if (count >= 0) {
        this.rangeIo.writeRanges(req.ctx, this.id(req, 0), offset, req.reader.rangeWin, this.iov, count, writeFlags, req.onWrite);
        return NO_REPLY;
      }
    }
    const src = size > 0 ? req.reader.views(size) : NO_VIEWS;
    if (!src) return -E.EINVAL;
    this.fs.write(req.ctx, this.id(req, 0), offset, src, writeFlags, req.onWrite);
    return NO_REPLY;
  }

  /** @internal A WRITE is done: bytes written or -errno. */
  writeDone(req: Req, r: number): void {
    if (r >= 0) {
      this.outDv.setUint32(SIZE.out_header, r, true);
      this.outDv.setUint32(SIZE.out_header + 4, 0, true);
    }
    const res = r < 0 ? r : SIZE.write_out;
    this.record(req, res);
    this.reply(req, res);
  }

  /** @internal FSYNC, SETLK(W) done: a reply with no body. */
  statusDone(req: Req, r: number): void {
    this.reply(req, r < 0 ? r : 0);
  }

  private doReaddir(req: Req): number {
    if (!this.need(req, SIZE.read_in)) return -E.EINVAL;
    const plus = req.opcode === OP.FUSE_READDIRPLUS;
    // Directory offsets are opaque getdents64 cookies (ext4 uses 64-bit hashes): keep them exact.
    const offset = req.dv.getBigUint64(8, true);
    const size = Math.min(req.dv.getUint32(16, true), req.writer.remaining - SIZE.out_header, MAX_BUFFER_SIZE);
    const sink = new DirBuffer(this, SIZE.out_header, size);
    const r = this.fs.readdir(req.ctx, this.id(req, 0), offset, plus, sink, this.st2);
    return r < 0 ? r : sink.used;
  }

  private doLock(req: Req): number {
    if (!this.need(req, SIZE.lk_in)) return -E.EINVAL;
    const dv = req.dv;
    const fh = this.id(req, 0);
    const owner = dv.getBigUint64(8, true);
    const lk: FileLock = {
      start: dv.getBigUint64(16, true), end: dv.getBigUint64(24, true),
      type: dv.getUint32(32, true), pid: dv.getUint32(36, true),
    };
    const flock = (dv.getUint32(40, true) & FUSE_LK_FLOCK) !== 0;
    if (req.opcode === OP.FUSE_GETLK) {
      const r = this.fs.getlk(req.ctx, req.nodeid, fh, owner, lk);
      if (typeof r === 'number') return r;
      const o = this.outDv, H = SIZE.out_header;
      o.setBigUint64(H, r.start, true);
      o.setBigUint64(H + 8, r.end, true);
      o.setUint32(H + 16, r.type, true);
      o.setUint32(H + 20, r.pid, true);
      return SIZE.lk_out;
    }
    this.fs.setlk(req.ctx, req.nodeid, fh, owner, lk, flock, req.opcode === OP.FUSE_SETLKW, req.onStatus);
    return NO_REPLY;
  }

  /** @internal DirBuffer writes entries here. */
  get outBuffer(): Buffer { return this.out; }
  /** @internal */
  get outView(): DataView { return this.outDv; }
  /** @internal */
  encodeEntryAt(off: number, e: EntryResult | null, st: BigUint64Array | null): number { return this.encodeEntry(off, e, st); }
}

const EMPTY = new Uint8Array(0);

/** Packs fuse_dirent / fuse_direntplus records into the session's reply buffer. */
class DirBuffer implements DirSink {
  used = 0;
  constructor(private readonly s: FuseSession, private readonly base: number, private readonly size: number) {}

  get room(): number { return this.size - this.used; }

  add(ino: bigint, nextOff: bigint, type: number, name: Uint8Array): boolean {
    const reclen = (SIZE.dirent + name.length + 7) & ~7;
    if (reclen > this.room) return false;
    this.dirent(this.base + this.used, ino, nextOff, type, name, reclen);
    this.used += reclen;
    return true;
  }

  addPlus(entry: EntryResult | null, st: BigUint64Array | null, ino: bigint, nextOff: bigint, type: number, name: Uint8Array): boolean {
    const reclen = (SIZE.direntplus + name.length + 7) & ~7;
    if (reclen > this.room) return false;
    const off = this.base + this.used;
    this.s.encodeEntryAt(off, entry, st);
    this.dirent(off + SIZE.entry_out, ino, nextOff, type, name, reclen - SIZE.entry_out);
    this.used += reclen;
    return true;
  }

  private dirent(off: number, ino: bigint, nextOff: bigint, type: number, name: Uint8Array, reclen: number): void {
    const dv = this.s.outView, out = this.s.outBuffer;
    dv.setBigUint64(off, ino, true);
    dv.setBigUint64(off + 8, nextOff, true);
    dv.setUint32(off + 16, name.length, true);
    dv.setUint32(off + 20, type, true);
    out.set(name, off + SIZE.dirent);
    out.fill(0, off + SIZE.dirent + name.length, off + reclen);
  }
}
