// The keeper <-> worker protocol: every message either side sends, as one discriminated union
// per direction, and the decoders that turn what arrives into one of them or refuse it.
//
// Versions. Keeper and worker of different releases meet during upgrades (a worker from the code
// now on disk under a keeper image from before; a keeper image adopting the worker the image
// before it left running), so every message any earlier release sent stays readable here, and
// what a newer side adds is optional:
//   1 (session 1)  fd registrations one per message: fd-put {k} / fd-del {k}
//   2 (session 2)  fd-ops {ops} batches them (the keeper says it takes them: init.fdOps)
//   3              hello {pings}: the worker answers ping with pong (the keeper's watchdog);
//                  ring-start cfg.stuckBefore: requests to answer EIO, not re-run
//   4              init fs.idMap, fs.xattrMap: the mapping layers; hello {maps}: the worker
//                  applies them (a keeper with a mapping kills a worker that does not say so)
// A keeper never trusts a worker (it parses what a guest sends): decodeToKeeper checks every
// field it will use, and a packet it refuses is logged and its fds closed. The worker trusts its
// keeper, but still refuses what it cannot read.

import { DEFAULT_FS_OPTIONS, type CacheMode, type FsOptions } from '../passthrough/passthrough-fs';
import type { GuestLimits } from '../passthrough/budget';
import { IdMapError, NO_ID_MAP, idMappers, type IdMapOptions } from '../passthrough/id-map';
import { XattrMapError, parseXattrMap } from '../passthrough/xattr-map';
import type { RingConfig } from '../vhost/data-plane';
import type { MemRegion } from '../vhost/message';

export const PROTOCOL_VERSION = 4;

/** The FUSE_INIT a guest sent, in JSON-safe form (flags as a decimal string). */
export interface FuseInitRecord { major: number; minor: number; maxReadahead: number; flags: string }

/** An fd registry op on the wire: [key, 1] a put (its fd rides along, in op order), [key, 0] a del. */
export type WireFdOp = [string, 0 | 1];

/** Keeper -> worker. The fds each message carries are listed after it. */
export type ToWorker =
  /** [inodes, files, dirs memfds]: the maps' shared memory. fdOps: the keeper takes fd-ops. */
  | { t: 'init'; fs: FsOptions; logLevel: string; fuseInit: FuseInitRecord | null; fdOps?: boolean }
  /** [one fd per key]: fds kept for earlier workers (any number of these). */
  | { t: 'fds'; keys: string[] }
  /** Adopt the maps, open the share, build the session. */
  | { t: 'go' }
  /** [one fd per region]: replace the memory table (rings are stopped). */
  | { t: 'mem'; regions: MemRegion[] }
  /** [kick, inflight, journal, call?]: serve a ring. */
  | { t: 'ring-start'; cfg: RingConfig; recover: boolean; hasCall: boolean }
  /** Finish requests that could wait forever (lock waits). */
  | { t: 'ring-stopping'; index: number }
  /** Stop; answer ring-stopped with the same seq. */
  | { t: 'ring-stop'; index: number; seq: number }
  /** [fd]?: the guest's interrupt fd changed (none: no fd). */
  | { t: 'call-fd'; index: number }
  /** Planned upgrade: finish what was popped, exit 0. */
  | { t: 'shutdown' }
  /** The watchdog: answer pong with the same n. */
  | { t: 'ping'; n: number };

/** Worker -> keeper. */
export type ToKeeper =
  /** Loaded; pings: it answers ping (version 3); maps: it applies fs.idMap and fs.xattrMap (version 4). */
  | { t: 'hello'; pid: number; pings?: boolean; maps?: boolean }
  /** The maps are adopted (after go). */
  | { t: 'ready'; pid: number }
  | { t: 'ring-stopped'; index: number; seq: number; base: number }
  /** [one fd per put, in op order]: registry puts and dels (version 2). */
  | { t: 'fd-ops'; ops: WireFdOp[] }
  /** [fd]: one put (version 1, to keepers that do not take fd-ops). */
  | { t: 'fd-put'; k: string }
  /** One del (version 1). */
  | { t: 'fd-del'; k: string }
  /** The guest's FUSE_INIT (null: DESTROY), replayed into every later worker. */
  | { t: 'fuse-init'; req: FuseInitRecord | null }
  | { t: 'pong'; n: number }
  /** Planned exit: everything popped is answered. */
  | { t: 'bye' };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInt = (v: unknown, lo = 0, hi = Number.MAX_SAFE_INTEGER): v is number => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
const isStr = (v: unknown): v is string => typeof v === 'string';

function fuseInit(v: unknown): FuseInitRecord | null | undefined {
  if (v === null || v === undefined) return null;
  if (!isObj(v) || !isInt(v.major, 0, 0xffffffff) || !isInt(v.minor, 0, 0xffffffff) || !isInt(v.maxReadahead, 0, 0xffffffff)) return undefined;
  if (!isStr(v.flags) || !/^\d{1,20}$/.test(v.flags)) return undefined;
  return { major: v.major, minor: v.minor, maxReadahead: v.maxReadahead, flags: v.flags };
}

/** What a worker sent, checked field by field; null: refuse it (the worker is not trusted). */
export function decodeToKeeper(m: unknown): ToKeeper | null {
  if (!isObj(m) || !isStr(m.t)) return null;
  switch (m.t) {
    case 'hello':
      return isInt(m.pid, 1) ? { t: 'hello', pid: m.pid, pings: m.pings === true, maps: m.maps === true } : null;
    case 'ready':
      return isInt(m.pid, 1) ? { t: 'ready', pid: m.pid } : null;
    case 'ring-stopped':
      return isInt(m.index, 0, 0xffff) && isInt(m.seq) && isInt(m.base, 0, 0xffff) ? { t: 'ring-stopped', index: m.index, seq: m.seq, base: m.base } : null;
    case 'fd-ops': {
      if (!Array.isArray(m.ops)) return null;
      const ops: WireFdOp[] = [];
      for (const op of m.ops as unknown[]) {
        if (!Array.isArray(op) || !isStr(op[0]) || (op[1] !== 0 && op[1] !== 1)) return null;
        ops.push([op[0], op[1]]);
      }
      return { t: 'fd-ops', ops };
    }
    case 'fd-put':
    case 'fd-del':
      return isStr(m.k) ? { t: m.t, k: m.k } : null;
    case 'fuse-init': {
      const req = fuseInit(m.req);
      return req === undefined ? null : { t: 'fuse-init', req };
    }
    case 'pong':
      return isInt(m.n) ? { t: 'pong', n: m.n } : null;
    case 'bye':
      return { t: 'bye' };
    default:
      return null;
  }
}

/** A keeper's file system options; fields an older keeper did not send take their defaults. */
function fsOptions(v: Obj): FsOptions | null {
  const d = DEFAULT_FS_OPTIONS;
  const bool = (k: keyof FsOptions, dflt: boolean): boolean | null => (v[k] === undefined ? dflt : typeof v[k] === 'boolean' ? v[k] as boolean : null);
  const cache = ['never', 'metadata', 'auto', 'always'].find((c) => c === v.cache) as CacheMode | undefined;
  const handles = ['never', 'prefer', 'mandatory'].find((c) => c === (v.inodeFileHandles ?? 'never')) as FsOptions['inodeFileHandles'] | undefined;
  const flags = {
    xattr: bool('xattr', d.xattr), posixAcl: bool('posixAcl', d.posixAcl), announceSubmounts: bool('announceSubmounts', d.announceSubmounts),
    readonly: bool('readonly', d.readonly), writeback: bool('writeback', d.writeback), allowDirectIo: bool('allowDirectIo', d.allowDirectIo),
    readdirplus: bool('readdirplus', d.readdirplus), killprivV2: bool('killprivV2', d.killprivV2), syncIo: bool('syncIo', d.syncIo),
    memfdState: bool('memfdState', d.memfdState),
  };
  if (!isStr(v.sharedDir) || !cache || !handles || Object.values(flags).some((f) => f === null)) return null;
  let limits: GuestLimits = d.limits;
  if (v.limits !== undefined) {
    const l = v.limits;
    if (!isObj(l) || ![l.inodes, l.handles, l.lockOwners, l.fds, l.workerNofile].every((n) => isInt(n))) return null;
    limits = { inodes: l.inodes as number, handles: l.handles as number, lockOwners: l.lockOwners as number, fds: l.fds as number, workerNofile: l.workerNofile as number };
  }
  const idMap = idMapOptions(v.idMap);
  const xattrMap = v.xattrMap === undefined || v.xattrMap === null ? null : isStr(v.xattrMap) && parses(() => parseXattrMap(v.xattrMap as string)) ? v.xattrMap : undefined;
  if (!idMap || xattrMap === undefined) return null;
  return { ...(flags as { [K in keyof typeof flags]: boolean }), sharedDir: v.sharedDir, cache, inodeFileHandles: handles, limits, idMap, xattrMap };
}

/** Does fn parse (the mapping parsers throw their own error class on bad input)? */
function parses(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (e instanceof IdMapError || e instanceof XattrMapError) return false;
    throw e;
  }
}

/** fs.idMap (absent from keepers before version 4: no mapping), each list checked by its parser. */
function idMapOptions(v: unknown): IdMapOptions | null {
  if (v === undefined) return NO_ID_MAP;
  if (!isObj(v)) return null;
  const lists = [v.translateUid, v.translateGid, v.nsUid, v.nsGid];
  if (!lists.every((l) => Array.isArray(l) && l.every(isStr))) return null;
  const o: IdMapOptions = { translateUid: v.translateUid as string[], translateGid: v.translateGid as string[], nsUid: v.nsUid as string[], nsGid: v.nsGid as string[] };
  return parses(() => idMappers(o)) ? o : null;
}

function memRegion(v: unknown): MemRegion | null {
  if (!isObj(v) || !isInt(v.gpa) || !isInt(v.size, 1) || !isInt(v.uaddr) || !isInt(v.mmapOffset)) return null;
  return { gpa: v.gpa, size: v.size, uaddr: v.uaddr, mmapOffset: v.mmapOffset };
}

function ringConfig(v: unknown): RingConfig | null {
  if (!isObj(v) || !isInt(v.index, 0, 0xffff) || !isInt(v.size, 1, 32768) || !isInt(v.descVa) || !isInt(v.availVa) || !isInt(v.usedVa)) return null;
  if (!isInt(v.base, 0, 0xffff) || typeof v.eventIdx !== 'boolean') return null;
  const cfg: RingConfig = {
    index: v.index, size: v.size, descVa: v.descVa, availVa: v.availVa, usedVa: v.usedVa, base: v.base, eventIdx: v.eventIdx,
    // The fds ride with the message; the numbers in it are the sender's.
    kickFd: -1, callFd: -1,
  };
  if (v.stuckBefore !== undefined) {
    if (!isInt(v.stuckBefore, 0, 0xffffffff)) return null;
    cfg.stuckBefore = v.stuckBefore;
  }
  return cfg;
}

/** What the keeper sent; null: a message this worker does not know (a newer keeper's) or cannot read. */
export function decodeToWorker(m: unknown): ToWorker | null {
  if (!isObj(m) || !isStr(m.t)) return null;
  switch (m.t) {
    case 'init': {
      const fs = isObj(m.fs) ? fsOptions(m.fs) : null;
      const init = fuseInit(m.fuseInit);
      if (!fs || !isStr(m.logLevel) || init === undefined) return null;
      return { t: 'init', fs, logLevel: m.logLevel, fuseInit: init, fdOps: m.fdOps === true };
    }
    case 'fds':
      return Array.isArray(m.keys) && m.keys.every(isStr) ? { t: 'fds', keys: m.keys } : null;
    case 'go':
    case 'shutdown':
      return { t: m.t };
    case 'mem': {
      if (!Array.isArray(m.regions)) return null;
      const regions = m.regions.map(memRegion);
      return regions.every((r): r is MemRegion => r !== null) ? { t: 'mem', regions } : null;
    }
    case 'ring-start': {
      const cfg = ringConfig(m.cfg);
      return cfg && typeof m.recover === 'boolean' && typeof m.hasCall === 'boolean' ? { t: 'ring-start', cfg, recover: m.recover, hasCall: m.hasCall } : null;
    }
    case 'ring-stopping':
      return isInt(m.index, 0, 0xffff) ? { t: 'ring-stopping', index: m.index } : null;
    case 'ring-stop':
      return isInt(m.index, 0, 0xffff) && isInt(m.seq) ? { t: 'ring-stop', index: m.index, seq: m.seq } : null;
    case 'call-fd':
      return isInt(m.index, 0, 0xffff) ? { t: 'call-fd', index: m.index } : null;
    case 'ping':
      return isInt(m.n) ? { t: 'ping', n: m.n } : null;
    default:
      return null;
  }
}
