// The op table: one entry per FUSE opcode, holding everything the session needs to know about
// it: its name, the reply room it needs (checked before it runs, so an op with side effects
// never runs when its reply cannot be delivered), how a re-run after a crash is answered
// exactly once (replay.ts; absent for idempotent ops), and run(), which decodes its arguments
// (structs.ts), calls the file system and encodes the reply (reply.ts).
//
// run() returns the reply body's length (the body is at SIZE.out_header in the reply buffer),
// -errno, or NO_REPLY when the op completes the request itself (later, as READ does, or with no
// reply at all, as FORGET). A new op is one entry here plus its FileSystem method.

import type { Logger } from '../log';
import {
  OP, SIZE, FATTR, FUSE_GETATTR_FH, FUSE_FSYNC_FDATASYNC, FUSE_LK_FLOCK, MAX_BUFFER_SIZE,
} from './abi';
import {
  ACCESS_IN, BATCH_FORGET_IN, COPY_FILE_RANGE_IN, CREATE_IN, FALLOCATE_IN, FLUSH_IN, FORGET_IN, FORGET_ONE,
  FSYNC_IN, GETATTR_IN, GETXATTR_IN, GETXATTR_OUT, KSTATFS, LINK_IN, LK_IN, LK_OUT, LSEEK_IN, LSEEK_OUT,
  MKDIR_IN, MKNOD_IN, OPEN_IN, PATH_MAX, NAME_MAX, READ_IN, RELEASE_IN, RENAME2_IN, RENAME_IN, SETATTR_IN,
  SETXATTR_IN, WRITE_IN, WRITE_OUT, XATTR_SIZE_MAX, type Str,
} from './structs';
import { PRE_ABSENT, PRE_EXISTED, PRE_INO, type ReplayProbes, type ReplayRule } from './replay';
import type { ReplyBuffer } from './reply';
import type { Req } from './request';
import type { EntryResult, FileLock, FileSystem, Ctx } from './filesystem';
import { E, O_CREAT, O_EXCL, O_TRUNC } from '../linux/constants';

/** run() completed the request itself (or will). */
export const NO_REPLY = -100000;

/**
 * READ/WRITE with the guest buffers as (offset, length) pairs in one window of guest memory
 * instead of a view each (what the passthrough offers besides FileSystem). iov is read before
 * the call returns.
 */
export interface RangeIo {
  readRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, cb: (r: number) => void): void;
  writeRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, writeFlags: number, cb: (r: number) => void): void;
}

/** What an op's run() gets from the session. */
export interface OpEnv {
  readonly fs: FileSystem;
  readonly probes: ReplayProbes;
  readonly rangeIo: RangeIo | null;
  readonly r: ReplyBuffer;
  readonly log: Logger;
  /** (offset, length) pairs for RangeIo. */
  readonly iov: Float64Array;
  /** SETXATTR_EXT was negotiated: fuse_setxattr_in is the 16-byte form. */
  readonly setxattrExt: boolean;
  /** FUSE_INIT and FUSE_DESTROY change the session itself. */
  init(req: Req): number;
  destroy(): number;
  /** Finish the request with no reply (FORGET, INTERRUPT); why: it was malformed. */
  noReply(req: Req, why?: string): number;
  /** Journal a no-reply op's outcome (FORGET), as the session does for the others after run(). */
  record(req: Req, r: number): void;
}

export interface Op {
  readonly name: string;
  /** Reply body bytes the op needs at least. */
  readonly minReply?: number;
  /** Never replied to: FORGET, BATCH_FORGET, INTERRUPT. */
  readonly noReply?: boolean;
  /** How a re-run is answered exactly once: present for non-idempotent ops (replay.ts). */
  readonly replay?: ReplayRule<OpEnv>;
  run(env: OpEnv, req: Req): number;
}

const H = SIZE.out_header;
const RENAME_EXCHANGE = 2;

/** LOOKUP-like result into an entry reply. */
function entryReply(env: OpEnv, r: EntryResult | number): number {
  return typeof r === 'number' ? r : env.r.entry(H, r, env.r.st);
}

/** The one name of MKDIR, MKNOD, SYMLINK, LINK, CREATE, UNLINK, RMDIR, or the first of RENAME(2). */
function nameAt(fixed: number): (req: Req) => Str | number {
  return (req) => (req.args.has(fixed) ? req.args.name(fixed) : -E.EINVAL);
}

/** Probe and relaxation of ops that make a name: MKDIR, MKNOD, SYMLINK, LINK. */
function makesName(name: (req: Req) => Str | number): ReplayRule<OpEnv> {
  return {
    probe: (env, req) => existed(env, req, name(req)),
    relax(env, req, r) {
      const n = name(req);
      return r === -E.EEXIST && typeof n !== 'number' ? entryReply(env, env.fs.lookup(req.ctx, req.nodeid, n.s, env.r.st)) : r;
    },
  };
}

function existed(env: OpEnv, req: Req, n: Str | number): number {
  if (typeof n === 'number') return 0;
  return env.probes.nameIno(req.ctx, req.nodeid, n.s) >= 0 ? PRE_EXISTED : PRE_ABSENT;
}

/** UNLINK, RMDIR: ENOENT after a first run that did it is success. */
function removesName(name: (req: Req) => Str | number): ReplayRule<OpEnv> {
  return {
    probe: (env, req) => existed(env, req, name(req)),
    relax: (_env, _req, r) => (r === -E.ENOENT ? 0 : r),
  };
}

function isExchange(req: Req): boolean {
  return req.opcode === OP.FUSE_RENAME2 && req.args.has(SIZE.rename2_in) && (req.args.u32(RENAME2_IN.flags) & RENAME_EXCHANGE) !== 0;
}

/** RENAME, RENAME2: names, flags and the target. */
function renameArgs(req: Req): { a: Str; b: Str; newParent: number; flags: number } | number {
  const rename2 = req.opcode === OP.FUSE_RENAME2;
  const fixed = rename2 ? SIZE.rename2_in : SIZE.rename_in;
  const args = req.args;
  if (!args.has(fixed)) return -E.EINVAL;
  const a = args.name(fixed);
  if (typeof a === 'number') return a;
  const b = args.name(a.next);
  if (typeof b === 'number') return b;
  return { a, b, newParent: args.id(rename2 ? RENAME2_IN.newdir : RENAME_IN.newdir), flags: rename2 ? args.u32(RENAME2_IN.flags) : 0 };
}

const renameRule: ReplayRule<OpEnv> = {
  probe(env, req) {
    const a = renameArgs(req);
    if (typeof a === 'number') return 0;
    const ino = env.probes.nameIno(req.ctx, req.nodeid, a.a.s);
    if (ino < 0) return PRE_ABSENT;
    return isExchange(req) ? PRE_INO + ino : PRE_EXISTED;
  },
  /**
   * A re-run of a RENAME_EXCHANGE: running it again would swap the names back. If the source
   * name no longer holds the inode it held before the first run, that run swapped them.
   */
  landed(env, req) {
    if (req.pre < PRE_INO || !isExchange(req)) return null;
    const a = renameArgs(req);
    if (typeof a === 'number') return null;
    const now = env.probes.nameIno(req.ctx, req.nodeid, a.a.s);
    if (now < 0 || now === req.pre - PRE_INO) return null;
    env.log.info({ op: 'RENAME2', flags: 'RENAME_EXCHANGE' }, 'replayed request: the names were already exchanged; not run again');
    return 0;
  },
  /** Source gone: done if the target is there. */
  relax(env, req, r) {
    if (r !== -E.ENOENT) return r;
    const a = renameArgs(req);
    if (typeof a === 'number') return r;
    const e = env.fs.lookup(req.ctx, a.newParent, a.b.s, env.r.st);
    if (typeof e === 'number') return r;
    env.fs.forget(e.nodeid, 1);
    return 0;
  },
};

/** A rule for journaled ops whose re-run needs nothing special (the journal answers completed ones). */
const journaledOnly: ReplayRule<OpEnv> = { probe: () => 0 };

function createOrTmpfile(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.create_in)) return -E.EINVAL;
  const flags = args.u32(CREATE_IN.flags), mode = args.u32(CREATE_IN.mode), umask = args.u32(CREATE_IN.umask);
  let r;
  if (req.opcode === OP.FUSE_CREATE) {
    const n = args.name(SIZE.create_in);
    if (typeof n === 'number') return n;
    r = env.fs.create(req.ctx, req.nodeid, n.s, flags, mode, umask, env.r.st);
  } else {
    r = env.fs.tmpfile(req.ctx, req.nodeid, flags, mode, umask, env.r.st);
  }
  if (typeof r === 'number') return r;
  env.r.entry(H, r.entry, env.r.st);
  env.r.open(H + SIZE.entry_out, r.open);
  return SIZE.entry_out + SIZE.open_out;
}

function open(env: OpEnv, req: Req): number {
  if (!req.args.has(SIZE.open_in)) return -E.EINVAL;
  const flags = req.args.u32(OPEN_IN.flags);
  const r = req.opcode === OP.FUSE_OPEN ? env.fs.open(req.ctx, req.nodeid, flags) : env.fs.opendir(req.ctx, req.nodeid, flags);
  return typeof r === 'number' ? r : env.r.open(H, r);
}

function release(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.release_in)) return -E.EINVAL;
  // The free and the reply happen in one synchronous stretch, so no OPEN can be given this fh
  // before the reply is on the used ring; a RELEASE re-run after a crash in between finds no
  // handle (EBADF, which the guest ignores) and frees nothing else.
  const fh = args.id(RELEASE_IN.fh);
  const r = req.opcode === OP.FUSE_RELEASE
    ? env.fs.release(req.ctx, fh, args.u32(RELEASE_IN.flags), args.u32(RELEASE_IN.release_flags), args.big(RELEASE_IN.lock_owner))
    : env.fs.releasedir(req.ctx, fh);
  if (r < 0) env.log.debug({ op: req.opcode === OP.FUSE_RELEASE ? 'RELEASE' : 'RELEASEDIR', fh, errno: -r }, 'release of an unknown handle');
  return r;
}

function getOrListXattr(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.getxattr_in)) return -E.EINVAL;
  const size = args.u32(GETXATTR_IN.size);
  let name = '';
  if (req.opcode === OP.FUSE_GETXATTR) {
    const n = args.xattrName(SIZE.getxattr_in);
    if (typeof n === 'number') return n;
    name = n.s;
  }
  if (size > 0 && size > req.writer.remaining - H) return -E.ERANGE;
  const buf = env.r.out.subarray(H, H + Math.min(size, XATTR_SIZE_MAX));
  const r = req.opcode === OP.FUSE_GETXATTR ? env.fs.getxattr(req.ctx, req.nodeid, name, buf) : env.fs.listxattr(req.ctx, req.nodeid, buf);
  if (r < 0 || size > 0) return r;
  // A size probe: fuse_getxattr_out { size, padding }.
  env.r.u32(H + GETXATTR_OUT.size, r);
  env.r.u32(H + GETXATTR_OUT.size + 4, 0);
  return SIZE.getxattr_out;
}

function readdir(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.read_in)) return -E.EINVAL;
  // Directory offsets are opaque getdents64 cookies (ext4 uses 64-bit hashes): keep them exact.
  const size = Math.min(args.u32(READ_IN.size), req.writer.remaining - H, MAX_BUFFER_SIZE);
  const sink = env.r.dir(H, size);
  const r = env.fs.readdir(req.ctx, args.id(READ_IN.fh), args.big(READ_IN.offset), req.opcode === OP.FUSE_READDIRPLUS, sink, env.r.st2);
  return r < 0 ? r : sink.used;
}

function lock(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.lk_in)) return -E.EINVAL;
  const fh = args.id(LK_IN.fh);
  const owner = args.big(LK_IN.owner);
  const lk: FileLock = { start: args.big(LK_IN.start), end: args.big(LK_IN.end), type: args.u32(LK_IN.type), pid: args.u32(LK_IN.pid) };
  if (req.opcode === OP.FUSE_GETLK) {
    const r = env.fs.getlk(req.ctx, req.nodeid, fh, owner, lk);
    if (typeof r === 'number') return r;
    env.r.big(H + LK_OUT.start, r.start);
    env.r.big(H + LK_OUT.end, r.end);
    env.r.u32(H + LK_OUT.type, r.type);
    env.r.u32(H + LK_OUT.pid, r.pid);
    return SIZE.lk_out;
  }
  const flock = (args.u32(LK_IN.lk_flags) & FUSE_LK_FLOCK) !== 0;
  env.fs.setlk(req.ctx, req.nodeid, fh, owner, lk, flock, req.opcode === OP.FUSE_SETLKW, req.onStatus);
  return NO_REPLY;
}

function read(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.read_in)) return -E.EINVAL;
  const offset = args.u64(READ_IN.offset);
  const size = args.u32(READ_IN.size);
  if (offset < 0 || size > MAX_BUFFER_SIZE) return -E.EINVAL;
  const room = req.writer.remaining - H;
  if (room < 0) return -E.EINVAL;
  // Header first (filled in when the length is known), then the data straight into guest memory.
  const n = Math.min(size, room);
  if (!req.writer.reserve(H)) return -E.EIO;
  const fh = args.id(READ_IN.fh);
  if (n > 0 && env.rangeIo !== null) {
    const count = req.writer.ranges(n, env.iov);
    if (count >= 0) {
      env.rangeIo.readRanges(req.ctx, fh, offset, req.writer.rangeWin, env.iov, count, req.onRead);
      return NO_REPLY;
    }
  }
  const dst = n > 0 ? req.writer.views(n) : NO_VIEWS;
  if (!dst) return -E.EIO;
  env.fs.read(req.ctx, fh, offset, dst, req.onRead);
  return NO_REPLY;
}

/** A WRITE's reply once size bytes are written. */
export function writeReply(r: ReplyBuffer, size: number): number {
  r.u32(H + WRITE_OUT.size, size);
  r.u32(H + WRITE_OUT.size + 4, 0);
  return SIZE.write_out;
}

function write(env: OpEnv, req: Req): number {
  const args = req.args;
  if (!args.has(SIZE.write_in)) return -E.EINVAL;
  const offset = args.u64(WRITE_IN.offset);
  const size = args.u32(WRITE_IN.size);
  if (offset < 0) return -E.EFBIG;
  if (size > MAX_BUFFER_SIZE || size > req.reader.remaining) return -E.EINVAL;
  const fh = args.id(WRITE_IN.fh), writeFlags = args.u32(WRITE_IN.write_flags);
  if (size > 0 && env.rangeIo !== null) {
    const count = req.reader.ranges(size, env.iov);
    if (count >= 0) {
      env.rangeIo.writeRanges(req.ctx, fh, offset, req.reader.rangeWin, env.iov, count, writeFlags, req.onWrite);
      return NO_REPLY;
    }
  }
  const src = size > 0 ? req.reader.views(size) : NO_VIEWS;
  if (!src) return -E.EINVAL;
  env.fs.write(req.ctx, fh, offset, src, writeFlags, req.onWrite);
  return NO_REPLY;
}

const NO_VIEWS: Uint8Array[] = [];

function entry(op: Omit<Op, 'minReply'>): Op {
  return { ...op, minReply: SIZE.entry_out };
}

const mknodName = nameAt(SIZE.mknod_in), mkdirName = nameAt(SIZE.mkdir_in), linkName = nameAt(SIZE.link_in);
const symlinkName = nameAt(0), createName = nameAt(SIZE.create_in), firstName = nameAt(0);

const TABLE: Array<[number, Op]> = [
  [OP.FUSE_INIT, { name: 'INIT', minReply: SIZE.init_out, run: (env, req) => env.init(req) }],
  [OP.FUSE_DESTROY, { name: 'DESTROY', run: (env) => env.destroy() }],
  [OP.FUSE_LOOKUP, entry({
    name: 'LOOKUP',
    run(env, req) {
      const n = req.args.cstr(0, PATH_MAX);
      if (!n) return -E.EINVAL;
      if (n.s.length > NAME_MAX) return -E.ENAMETOOLONG;
      return entryReply(env, env.fs.lookup(req.ctx, req.nodeid, n.s, env.r.st));
    },
  })],
  [OP.FUSE_FORGET, {
    name: 'FORGET', noReply: true,
    replay: {
      /** The lookup count the FORGET starts from, + 1. */
      probe(env, req) {
        const c = env.probes.lookupCount(req.nodeid);
        return c < 0 ? 0 : c + 1;
      },
    },
    run(env, req) {
      if (!req.args.has(SIZE.forget_in)) return env.noReply(req, 'short FORGET');
      // A re-run whose first run already dropped the count (it is below what the intent saw)
      // must not drop it again.
      const applied = req.relaxed && req.pre > 0 && env.probes.lookupCount(req.nodeid) < req.pre - 1;
      if (!applied) env.fs.forget(req.nodeid, req.args.u64(FORGET_IN.nlookup));
      env.record(req, 0);
      return env.noReply(req);
    },
  }],
  [OP.FUSE_BATCH_FORGET, {
    name: 'BATCH_FORGET', noReply: true,
    run(env, req) {
      const args = req.args;
      if (!args.has(SIZE.batch_forget_in)) return env.noReply(req, 'short BATCH_FORGET');
      const count = args.u32(BATCH_FORGET_IN.count);
      if (SIZE.batch_forget_in + count * SIZE.forget_one > args.len) return env.noReply(req, 'BATCH_FORGET count past the body');
      const items: number[] = [];
      for (let i = 0; i < count; i++) {
        const o = SIZE.batch_forget_in + i * SIZE.forget_one;
        items.push(args.id(o + FORGET_ONE.nodeid), args.u64(o + FORGET_ONE.nlookup));
      }
      // The arguments are read; the chain goes back before the (possibly long) work.
      env.noReply(req);
      for (let i = 0; i < items.length; i += 2) env.fs.forget(items[i]!, items[i + 1]!);
      return NO_REPLY;
    },
  }],
  // virtio-fs guests never send it (Linux 6.1 virtio_fs_wake_interrupt_and_unlock is a no-op);
  // requests run to completion anyway, so there is nothing to interrupt.
  [OP.FUSE_INTERRUPT, { name: 'INTERRUPT', noReply: true, run: (env, req) => env.noReply(req) }],
  [OP.FUSE_GETATTR, {
    name: 'GETATTR', minReply: SIZE.attr_out,
    run(env, req) {
      const args = req.args;
      if (!args.has(SIZE.getattr_in)) return -E.EINVAL;
      const fh = args.u32(GETATTR_IN.getattr_flags) & FUSE_GETATTR_FH ? args.id(GETATTR_IN.fh) : null;
      const r = env.fs.getattr(req.ctx, req.nodeid, fh, env.r.st);
      return r < 0 ? r : env.r.attrOut(H, env.r.st);
    },
  }],
  [OP.FUSE_SETATTR, {
    name: 'SETATTR', minReply: SIZE.attr_out, replay: journaledOnly,
    run(env, req) {
      const a = req.args;
      if (!a.has(SIZE.setattr_in)) return -E.EINVAL;
      const valid = a.u32(SETATTR_IN.valid);
      const size = a.u64(SETATTR_IN.size);
      if ((valid & FATTR.SIZE) && size < 0) return -E.EFBIG;
      const r = env.fs.setattr(req.ctx, req.nodeid, {
        valid, fh: valid & FATTR.FH ? a.id(SETATTR_IN.fh) : 0, size,
        atime: Number(a.dv.getBigInt64(SETATTR_IN.atime, true)), mtime: Number(a.dv.getBigInt64(SETATTR_IN.mtime, true)),
        atimensec: a.u32(SETATTR_IN.atimensec), mtimensec: a.u32(SETATTR_IN.mtimensec),
        mode: a.u32(SETATTR_IN.mode), uid: a.u32(SETATTR_IN.uid), gid: a.u32(SETATTR_IN.gid),
      }, env.r.st);
      return r < 0 ? r : env.r.attrOut(H, env.r.st);
    },
  }],
  [OP.FUSE_READLINK, {
    name: 'READLINK',
    run(env, req) {
      const room = Math.min(req.writer.remaining - H, PATH_MAX);
      if (room <= 0) return -E.ERANGE;
      return env.fs.readlink(req.ctx, req.nodeid, env.r.out.subarray(H, H + room));
    },
  }],
  [OP.FUSE_SYMLINK, entry({
    name: 'SYMLINK', replay: makesName(symlinkName),
    run(env, req) {
      const n = req.args.name(0);
      if (typeof n === 'number') return n;
      const t = req.args.cstr(n.next, PATH_MAX);
      if (!t || t.s.length === 0) return -E.EINVAL;
      return entryReply(env, env.fs.symlink(req.ctx, req.nodeid, n.s, t.s, env.r.st));
    },
  })],
  [OP.FUSE_MKNOD, entry({
    name: 'MKNOD', replay: makesName(mknodName),
    run(env, req) {
      const n = mknodName(req);
      if (typeof n === 'number') return n;
      const a = req.args;
      return entryReply(env, env.fs.mknod(req.ctx, req.nodeid, n.s, a.u32(MKNOD_IN.mode), a.u32(MKNOD_IN.rdev), a.u32(MKNOD_IN.umask), env.r.st));
    },
  })],
  [OP.FUSE_MKDIR, entry({
    name: 'MKDIR', replay: makesName(mkdirName),
    run(env, req) {
      const n = mkdirName(req);
      if (typeof n === 'number') return n;
      return entryReply(env, env.fs.mkdir(req.ctx, req.nodeid, n.s, req.args.u32(MKDIR_IN.mode), req.args.u32(MKDIR_IN.umask), env.r.st));
    },
  })],
  [OP.FUSE_UNLINK, {
    name: 'UNLINK', replay: removesName(firstName),
    run(env, req) {
      const n = req.args.name(0);
      return typeof n === 'number' ? n : env.fs.unlink(req.ctx, req.nodeid, n.s);
    },
  }],
  [OP.FUSE_RMDIR, {
    name: 'RMDIR', replay: removesName(firstName),
    run(env, req) {
      const n = req.args.name(0);
      return typeof n === 'number' ? n : env.fs.rmdir(req.ctx, req.nodeid, n.s);
    },
  }],
  [OP.FUSE_RENAME, { name: 'RENAME', replay: renameRule, run: rename }],
  [OP.FUSE_RENAME2, { name: 'RENAME2', replay: renameRule, run: rename }],
  [OP.FUSE_LINK, entry({
    name: 'LINK', replay: makesName(linkName),
    run(env, req) {
      const n = linkName(req);
      if (typeof n === 'number') return n;
      return entryReply(env, env.fs.link(req.ctx, req.args.id(LINK_IN.oldnodeid), req.nodeid, n.s, env.r.st));
    },
  })],
  [OP.FUSE_OPEN, { name: 'OPEN', minReply: SIZE.open_out, run: open }],
  [OP.FUSE_OPENDIR, { name: 'OPENDIR', minReply: SIZE.open_out, run: open }],
  [OP.FUSE_CREATE, {
    name: 'CREATE', minReply: SIZE.entry_out + SIZE.open_out, run: createOrTmpfile,
    replay: {
      probe(env, req) {
        // A CREATE without O_EXCL opens what is there: no EEXIST for a re-run to judge.
        if (!req.args.has(SIZE.create_in) || (req.args.u32(CREATE_IN.flags) & O_EXCL) === 0) return 0;
        return existed(env, req, createName(req));
      },
      /** EEXIST: the first run made it; open what is there as that run did. */
      relax(env, req, r) {
        const n = createName(req);
        if (r !== -E.EEXIST || typeof n === 'number') return r;
        const e = env.fs.lookup(req.ctx, req.nodeid, n.s, env.r.st);
        if (typeof e === 'number') return r;
        const o = env.fs.open(req.ctx, e.nodeid, req.args.u32(CREATE_IN.flags) & ~(O_CREAT | O_EXCL | O_TRUNC));
        if (typeof o === 'number') {
          env.fs.forget(e.nodeid, 1);
          return r;
        }
        env.r.entry(H, e, env.r.st);
        env.r.open(H + SIZE.entry_out, o);
        return SIZE.entry_out + SIZE.open_out;
      },
    },
  }],
  [OP.FUSE_TMPFILE, { name: 'TMPFILE', minReply: SIZE.entry_out + SIZE.open_out, replay: journaledOnly, run: createOrTmpfile }],
  [OP.FUSE_READ, { name: 'READ', run: read }],
  [OP.FUSE_WRITE, {
    name: 'WRITE', minReply: SIZE.write_out, run: write,
    replay: {
      /** An O_APPEND WRITE: the size it starts from, + 1. */
      probe(env, req) {
        const size = req.args.has(SIZE.write_in) ? env.probes.appendSize(req.args.id(WRITE_IN.fh)) : -1;
        return size < 0 ? 0 : size + 1;
      },
      /** An O_APPEND write whose first run landed (the file grew by it): not written twice. */
      landed(env, req) {
        if (req.pre <= 0 || !req.args.has(SIZE.write_in)) return null;
        const size = req.args.u32(WRITE_IN.size);
        if (env.probes.appendSize(req.args.id(WRITE_IN.fh)) < req.pre - 1 + size) return null;
        env.log.info({ size }, 'replayed O_APPEND write had landed; not written again');
        return writeReply(env.r, size);
      },
    },
  }],
  [OP.FUSE_STATFS, {
    name: 'STATFS', minReply: SIZE.kstatfs,
    run(env, req) {
      const sf = env.r.st2;
      const r = env.fs.statfs(req.ctx, req.nodeid, sf);
      if (r < 0) return r;
      // statfs() fills f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_namemax.
      const o = env.r;
      o.big(H + KSTATFS.blocks, sf[2]!); o.big(H + KSTATFS.bfree, sf[3]!); o.big(H + KSTATFS.bavail, sf[4]!);
      o.big(H + KSTATFS.files, sf[5]!); o.big(H + KSTATFS.ffree, sf[6]!);
      o.u32(H + KSTATFS.bsize, Number(sf[0]!)); o.u32(H + KSTATFS.namelen, Number(sf[7]!)); o.u32(H + KSTATFS.frsize, Number(sf[1]!));
      o.zero(H + KSTATFS.frsize + 4, H + SIZE.kstatfs);
      return SIZE.kstatfs;
    },
  }],
  [OP.FUSE_RELEASE, { name: 'RELEASE', run: release }],
  [OP.FUSE_RELEASEDIR, { name: 'RELEASEDIR', run: release }],
  [OP.FUSE_FLUSH, {
    name: 'FLUSH',
    run(env, req) {
      if (!req.args.has(SIZE.flush_in)) return -E.EINVAL;
      return env.fs.flush(req.ctx, req.nodeid, req.args.id(FLUSH_IN.fh), req.args.big(FLUSH_IN.lock_owner));
    },
  }],
  [OP.FUSE_FSYNC, {
    name: 'FSYNC',
    run(env, req) {
      if (!req.args.has(SIZE.fsync_in)) return -E.EINVAL;
      env.fs.fsync(req.ctx, req.args.id(FSYNC_IN.fh), (req.args.u32(FSYNC_IN.fsync_flags) & FUSE_FSYNC_FDATASYNC) !== 0, req.onStatus);
      return NO_REPLY;
    },
  }],
  [OP.FUSE_FSYNCDIR, {
    name: 'FSYNCDIR',
    run(env, req) {
      if (!req.args.has(SIZE.fsync_in)) return -E.EINVAL;
      return env.fs.fsyncdir(req.ctx, req.args.id(FSYNC_IN.fh), (req.args.u32(FSYNC_IN.fsync_flags) & FUSE_FSYNC_FDATASYNC) !== 0);
    },
  }],
  [OP.FUSE_SETXATTR, {
    name: 'SETXATTR',
    replay: {
      probe(env, req) {
        const n = setxattrName(env, req);
        return typeof n === 'number' ? 0 : env.probes.hasXattr(req.ctx, req.nodeid, n.s) ? PRE_EXISTED : PRE_ABSENT;
      },
      relax: (_env, _req, r) => (r === -E.EEXIST ? 0 : r),
    },
    run(env, req) {
      const a = req.args;
      const n = setxattrName(env, req);
      if (typeof n === 'number') return n;
      const size = a.u32(SETXATTR_IN.size);
      if (size > XATTR_SIZE_MAX || n.next + size > a.len) return -E.EINVAL;
      return env.fs.setxattr(req.ctx, req.nodeid, n.s, a.bytes.subarray(n.next, n.next + size), a.u32(SETXATTR_IN.flags));
    },
  }],
  [OP.FUSE_GETXATTR, { name: 'GETXATTR', run: getOrListXattr }],
  [OP.FUSE_LISTXATTR, { name: 'LISTXATTR', run: getOrListXattr }],
  [OP.FUSE_REMOVEXATTR, {
    name: 'REMOVEXATTR', replay: journaledOnly,
    run(env, req) {
      const n = req.args.xattrName(0);
      return typeof n === 'number' ? (n === -E.ERANGE ? -E.EINVAL : n) : env.fs.removexattr(req.ctx, req.nodeid, n.s);
    },
  }],
  [OP.FUSE_READDIR, { name: 'READDIR', run: readdir }],
  [OP.FUSE_READDIRPLUS, { name: 'READDIRPLUS', run: readdir }],
  [OP.FUSE_GETLK, { name: 'GETLK', minReply: SIZE.lk_out, run: lock }],
  [OP.FUSE_SETLK, { name: 'SETLK', run: lock }],
  [OP.FUSE_SETLKW, { name: 'SETLKW', run: lock }],
  [OP.FUSE_ACCESS, {
    name: 'ACCESS',
    run(env, req) {
      if (!req.args.has(SIZE.access_in)) return -E.EINVAL;
      return env.fs.access(req.ctx, req.nodeid, req.args.u32(ACCESS_IN.mask));
    },
  }],
  [OP.FUSE_FALLOCATE, {
    name: 'FALLOCATE', replay: journaledOnly,
    run(env, req) {
      const a = req.args;
      if (!a.has(SIZE.fallocate_in)) return -E.EINVAL;
      const off = a.u64(FALLOCATE_IN.offset), len = a.u64(FALLOCATE_IN.length);
      if (off < 0 || len <= 0) return len === 0 ? -E.EINVAL : -E.EFBIG;
      return env.fs.fallocate(req.ctx, a.id(FALLOCATE_IN.fh), a.u32(FALLOCATE_IN.mode), off, len);
    },
  }],
  [OP.FUSE_LSEEK, {
    name: 'LSEEK', minReply: SIZE.lseek_out,
    run(env, req) {
      const a = req.args;
      if (!a.has(SIZE.lseek_in)) return -E.EINVAL;
      const off = a.u64(LSEEK_IN.offset);
      if (off < 0) return -E.ENXIO;
      const r = env.fs.lseek(req.ctx, a.id(LSEEK_IN.fh), off, a.u32(LSEEK_IN.whence));
      if (r < 0) return r;
      env.r.u64(H + LSEEK_OUT.offset, r);
      return SIZE.lseek_out;
    },
  }],
  [OP.FUSE_COPY_FILE_RANGE, {
    name: 'COPY_FILE_RANGE', minReply: SIZE.write_out, replay: journaledOnly,
    run(env, req) {
      const a = req.args;
      if (!a.has(SIZE.copy_file_range_in)) return -E.EINVAL;
      const offIn = a.u64(COPY_FILE_RANGE_IN.off_in), offOut = a.u64(COPY_FILE_RANGE_IN.off_out), len = a.u64(COPY_FILE_RANGE_IN.len);
      if (offIn < 0 || offOut < 0) return -E.EINVAL;
      const r = env.fs.copyFileRange(req.ctx, a.id(COPY_FILE_RANGE_IN.fh_in), offIn, a.id(COPY_FILE_RANGE_IN.fh_out), offOut,
        len < 0 ? MAX_BUFFER_SIZE * 1024 : len, Number(a.big(COPY_FILE_RANGE_IN.flags) & 0xffffffffn));
      return r < 0 ? r : writeReply(env.r, r);
    },
  }],
  [OP.FUSE_SYNCFS, { name: 'SYNCFS', run: (env, req) => env.fs.syncfs(req.ctx, req.nodeid) }],
  // Like both peer virtiofsds: no ioctls are passed through to the host.
  [OP.FUSE_IOCTL, { name: 'IOCTL', run: () => -E.ENOTTY }],
];

function rename(env: OpEnv, req: Req): number {
  const a = renameArgs(req);
  if (typeof a === 'number') return a;
  return env.fs.rename(req.ctx, req.nodeid, a.a.s, a.newParent, a.b.s, a.flags);
}

function setxattrName(env: OpEnv, req: Req): Str | number {
  const fixed = env.setxattrExt ? SIZE.setxattr_in_ext : SIZE.setxattr_in;
  if (!req.args.has(fixed)) return -E.EINVAL;
  return req.args.xattrName(fixed);
}

/** The table, indexed by opcode (undefined: not served, ENOSYS). */
export const OPS: ReadonlyArray<Op | undefined> = (() => {
  const t: Array<Op | undefined> = [];
  for (const [code, op] of TABLE) t[code] = op;
  return t;
})();

/** Names of the ops answered exactly once through the journal (tests follow this list). */
export const JOURNALED_OPS: readonly string[] = TABLE.filter(([, op]) => op.replay !== undefined).map(([, op]) => op.name);
