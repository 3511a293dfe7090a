// UID/GID mapping between the guest and the host, as a layer (layer.ts) over the file system.
//
// Two command-line forms, two meanings, one layer:
//
// --translate-uid / --translate-gid (the Rust virtiofsd's soft ID map, virtiofsd README
// "--translate-uid"): rules `TYPE:A:B:COUNT`, the separator being the first character that is
// not alphanumeric, '-' or '_' (the same for every field):
//   guest:G:H:N         guest ids [G, G+N) map 1:1 to host ids [H, H+N)    (guest -> host only)
//   host:H:G:N          host ids [H, H+N) map 1:1 to guest ids [G, G+N)    (host -> guest only)
//   squash-guest:G:H:N  guest ids [G, G+N) all map to host id H
//   squash-host:H:G:N   host ids [H, H+N) all map to guest id G
//   forbid-guest:G:N    guest ids [G, G+N) are refused (EPERM) where they would be given to a file
//   map:G:H:N           both `guest:G:H:N` and `host:H:G:N`
// The two directions are independent; an id no rule of its direction covers maps to itself;
// the source ranges of one direction must not overlap.
//
// --uid-map / --gid-map (`:NS:HOST:COUNT:`, as libvirt passes them to an unprivileged daemon):
// in the Rust virtiofsd these are the user namespace the daemon runs in (user_namespaces(7)),
// so the kernel maps: a host id inside a range shows as its namespace id, any other as the
// overflow id (65534, /proc/sys/kernel/overflowuid's default), and a guest id outside every
// range cannot be used (the kernel's EINVAL). We give the same view with the same layer (see
// docs/mapping.md for why not a namespace): nsView() below.
//
// Requests map guest -> host: the caller's uid/gid of the ops that make a file (the file's
// owner; share.ts asCaller) and SETATTR's uid/gid. Replies map host -> guest: the attributes of
// every ENTRY, ATTR and READDIRPLUS reply. Permission checks the host kernel does (as the mapped
// caller) need nothing more. POSIX ACLs carry ids inside xattr values, which no layer rewrites:
// the options refuse --posix-acl with a mapping, as the Rust virtiofsd does.

import type { Ctx, DirSink, EntryResult, OpenResult, SetattrArgs } from '../fuse/filesystem';
import { FATTR } from '../fuse/abi';
import { ST } from '../native/binding';
import { E } from '../linux/constants';
import { ForwardingFs, type FsLayer } from './layer';

const U32_END = 2 ** 32;
/** The kernel's default overflowuid/overflowgid: what an unmapped id looks like in a namespace. */
export const OVERFLOW_ID = 65534;

export class IdMapError extends Error {}

/** One --translate-uid/--translate-gid rule, as written. */
export type TranslateRule =
  | { kind: 'guest' | 'host' | 'squash-guest' | 'squash-host' | 'map'; from: number; to: number; count: number }
  | { kind: 'forbid-guest'; from: number; count: number };

const KINDS_3 = ['guest', 'host', 'squash-guest', 'squash-host', 'map'] as const;

function u32(field: string, what: string): number {
  if (!/^\d{1,10}$/.test(field) || Number(field) >= U32_END) throw new IdMapError(`invalid ${what} '${field}' (want 0 to 4294967295)`);
  return Number(field);
}

/** Parse one --translate-uid/--translate-gid value; throws IdMapError saying what is wrong. */
export function parseTranslate(spec: string): TranslateRule {
  const m = /^([A-Za-z0-9_-]*)(.)/su.exec(spec);
  if (!m) throw new IdMapError(`invalid ID map '${spec}' (want TYPE:A:B:COUNT, e.g. map:1000:0:1)`);
  const kind = m[1]!.toLowerCase();
  const fields = spec.slice(m[0].length).split(m[2]!);
  const want = kind === 'forbid-guest' ? 2 : 3;
  if (kind !== 'forbid-guest' && !KINDS_3.some((k) => k === kind)) {
    throw new IdMapError(`invalid ID map type '${kind}' in '${spec}' (want guest, host, squash-guest, squash-host, forbid-guest or map)`);
  }
  if (fields.length !== want) throw new IdMapError(`ID map '${spec}': ${kind} takes ${want} numbers, got ${fields.length}`);
  const count = u32(fields[want - 1]!, 'count');
  if (count === 0) throw new IdMapError(`ID map '${spec}': count must be at least 1`);
  const from = u32(fields[0]!, 'base id');
  if (from + count > U32_END) throw new IdMapError(`ID map '${spec}': the range overflows 32 bits`);
  if (kind === 'forbid-guest') return { kind, from, count };
  const to = u32(fields[1]!, 'target id');
  if ((kind === 'guest' || kind === 'host' || kind === 'map') && to + count > U32_END) {
    throw new IdMapError(`ID map '${spec}': the target range overflows 32 bits`);
  }
  return { kind: kind as (typeof KINDS_3)[number], from, to, count };
}

/** One --uid-map/--gid-map value: `:NS:HOST:COUNT:`, the separator any non-alphanumeric character. */
export interface NsRange { ns: number; host: number; count: number }

export function parseNsMap(spec: string): NsRange {
  const sep = spec[0];
  if (sep === undefined || /[A-Za-z0-9]/.test(sep) || !spec.endsWith(sep) || spec.length < 2) {
    throw new IdMapError(`invalid namespace ID map '${spec}' (want :NAMESPACE_ID:HOST_ID:COUNT:)`);
  }
  const fields = spec.slice(1, -1).split(sep);
  if (fields.length !== 3) throw new IdMapError(`namespace ID map '${spec}': want 3 numbers, got ${fields.length}`);
  const [ns, host, count] = [u32(fields[0]!, 'namespace id'), u32(fields[1]!, 'host id'), u32(fields[2]!, 'count')];
  if (count === 0) throw new IdMapError(`namespace ID map '${spec}': count must be at least 1`);
  if (ns + count > U32_END || host + count > U32_END) throw new IdMapError(`namespace ID map '${spec}': the range overflows 32 bits`);
  return { ns, host, count };
}

/** One direction's rule: ids [start, end) become `to + (id - start)` (range), `to` (squash), or an error. */
interface Span { start: number; end: number; how: 'range' | 'squash' | 'fail'; to: number }

/** Guest -> host and host -> guest, each by its own spans; an id no span covers gets `dflt`. */
export class IdMapper {
  private constructor(
    private readonly toHostSpans: Span[], private readonly toGuestSpans: Span[],
    /** What an uncovered id becomes: itself (translate) or a fixed answer (namespace view). */
    private readonly uncoveredToHost: number | null, private readonly uncoveredToGuest: number | null,
    private readonly failErrno: number,
  ) {}

  /** The --translate-* rules of one id kind; throws IdMapError on overlapping source ranges. */
  static translate(rules: readonly TranslateRule[]): IdMapper {
    const g: Span[] = [];
    const h: Span[] = [];
    for (const r of rules) {
      const span = (start: number, how: Span['how'], to: number): Span => ({ start, end: start + r.count, how, to });
      switch (r.kind) {
        case 'guest': add(g, span(r.from, 'range', r.to), 'guest-to-host'); break;
        case 'host': add(h, span(r.from, 'range', r.to), 'host-to-guest'); break;
        case 'squash-guest': add(g, span(r.from, 'squash', r.to), 'guest-to-host'); break;
        case 'squash-host': add(h, span(r.from, 'squash', r.to), 'host-to-guest'); break;
        case 'forbid-guest': add(g, span(r.from, 'fail', 0), 'guest-to-host'); break;
        case 'map':
          add(g, span(r.from, 'range', r.to), 'guest-to-host');
          add(h, span(r.to, 'range', r.from), 'host-to-guest');
          break;
      }
    }
    return new IdMapper(g, h, null, null, E.EPERM);
  }

  /**
   * A user namespace's view (user_namespaces(7)): namespace id <-> host id both ways within the
   * ranges; a host id outside them shows as the overflow id, a guest id outside them is refused
   * with EINVAL (what setfsuid/chown give for an id the namespace does not map).
   */
  static nsView(ranges: readonly NsRange[]): IdMapper {
    const g: Span[] = [];
    const h: Span[] = [];
    for (const r of ranges) {
      add(g, { start: r.ns, end: r.ns + r.count, how: 'range', to: r.host }, 'namespace');
      add(h, { start: r.host, end: r.host + r.count, how: 'range', to: r.ns }, 'host');
    }
    return new IdMapper(g, h, -E.EINVAL, OVERFLOW_ID, E.EINVAL);
  }

  /** A guest id as the host sees it, or -errno: refused. */
  toHost(id: number): number {
    const s = find(this.toHostSpans, id);
    if (!s) return this.uncoveredToHost ?? id;
    return s.how === 'fail' ? -this.failErrno : apply(s, id);
  }

  /** A host id as the guest sees it (never refused). */
  toGuest(id: number): number {
    const s = find(this.toGuestSpans, id);
    if (!s) return this.uncoveredToGuest ?? id;
    return apply(s, id);
  }
}

function add(spans: Span[], s: Span, dir: string): void {
  const o = spans.find((x) => s.start < x.end && x.start < s.end);
  if (o) throw new IdMapError(`${dir} range [${s.start}, ${s.end}) overlaps [${o.start}, ${o.end}) of an earlier rule`);
  spans.push(s);
}

function find(spans: Span[], id: number): Span | undefined {
  for (const s of spans) if (id >= s.start && id < s.end) return s;
  return undefined;
}

function apply(s: Span, id: number): number {
  return s.how === 'squash' ? s.to : s.to + (id - s.start);
}

/** What the command line asks for, as it travels to the worker (protocol/worker-channel.ts). */
export interface IdMapOptions {
  translateUid: string[];
  translateGid: string[];
  /** --uid-map / --gid-map: the namespace view. */
  nsUid: string[];
  nsGid: string[];
}

export const NO_ID_MAP: IdMapOptions = { translateUid: [], translateGid: [], nsUid: [], nsGid: [] };

export function hasIdMap(o: IdMapOptions): boolean {
  return o.translateUid.length + o.translateGid.length + o.nsUid.length + o.nsGid.length > 0;
}

/** What the command line gave, before it is checked. */
export interface IdMapArgs { translateUid: string[]; translateGid: string[]; uidMap: string[]; gidMap: string[] }

/**
 * The command line's mapping, checked as the Rust virtiofsd checks it, or IdMapError:
 * - no --translate-* or --uid-map/--gid-map with --posix-acl (ACL xattrs carry ids no layer rewrites);
 * - --uid-map/--gid-map only for a daemon not started as root (the Rust daemon: "uid_map can
 *   only be used by unprivileged user"), and only the one range an unprivileged process may set
 *   up itself (user_namespaces(7): one line, its own id, count 1); more needs newuidmap(1) and
 *   the subordinate ids of subuid(5), which we do not run;
 * - the map not given is the daemon's own id, 1:1 (the Rust default).
 */
export function idMapFromArgs(a: IdMapArgs, posixAcl: boolean, self: { euid: number; egid: number }): IdMapOptions {
  const o: IdMapOptions = { translateUid: a.translateUid, translateGid: a.translateGid, nsUid: a.uidMap, nsGid: a.gidMap };
  if (!hasIdMap(o)) return NO_ID_MAP;
  if (posixAcl) throw new IdMapError('UID/GID mapping cannot be used with --posix-acl (ACLs hold ids the mapping would not translate)');
  if (a.uidMap.length + a.gidMap.length > 0) {
    if (self.euid === 0) throw new IdMapError('--uid-map/--gid-map map ids into the user namespace of an unprivileged daemon; as root, use --translate-uid/--translate-gid');
    for (const [flag, specs, own] of [['--uid-map', a.uidMap, self.euid], ['--gid-map', a.gidMap, self.egid]] as const) {
      const r = specs.map(parseNsMap);
      if (r.length > 1 || r.some((x) => x.host !== own || x.count !== 1)) {
        throw new IdMapError(`${flag} ${specs.join(' ')}: only the daemon's own id (${own}) with count 1 can be mapped without newuidmap(1)/newgidmap(1), which this daemon does not run`);
      }
    }
    if (a.uidMap.length === 0) o.nsUid = [`:${self.euid}:${self.euid}:1:`];
    if (a.gidMap.length === 0) o.nsGid = [`:${self.egid}:${self.egid}:1:`];
  }
  idMappers(o);
  return o;
}

/** The mappers the options describe, bottom (nearest the host) first; throws IdMapError. */
export function idMappers(o: IdMapOptions): Array<{ uid: IdMapper; gid: IdMapper }> {
  const out: Array<{ uid: IdMapper; gid: IdMapper }> = [];
  // The namespace is nearest the host: the translation, where both are given, works on
  // namespace ids, as the Rust virtiofsd's does inside its namespace.
  if (o.nsUid.length + o.nsGid.length > 0) {
    out.push({ uid: nsOrIdentity(o.nsUid), gid: nsOrIdentity(o.nsGid) });
  }
  if (o.translateUid.length + o.translateGid.length > 0) {
    out.push({ uid: IdMapper.translate(o.translateUid.map(parseTranslate)), gid: IdMapper.translate(o.translateGid.map(parseTranslate)) });
  }
  return out;
}

/** A namespace needs both maps: the options fill the one not given with the daemon's own id
 *  (the Rust default, its euid/egid 1:1: config.ts); none at all is no namespace view. */
function nsOrIdentity(specs: string[]): IdMapper {
  return specs.length > 0 ? IdMapper.nsView(specs.map(parseNsMap)) : IdMapper.translate([]);
}

type Created = { entry: EntryResult; open: OpenResult } | number;

/** The layer: guest ids in requests to the host's, host ids in replies to the guest's. */
export class IdMapFs extends ForwardingFs {
  constructor(inner: FsLayer, private readonly uids: IdMapper, private readonly gids: IdMapper) {
    super(inner);
  }

  /** The caller as the host sees it, or -errno. */
  private host(ctx: Ctx): Ctx | number {
    const uid = this.uids.toHost(ctx.uid);
    if (uid < 0) return uid;
    const gid = this.gids.toHost(ctx.gid);
    if (gid < 0) return gid;
    return { uid, gid, pid: ctx.pid };
  }

  /** Rewrite a stat array's owner in place, host -> guest. */
  private guestAttrs(st: BigUint64Array): void {
    st[ST.uid] = BigInt(this.uids.toGuest(Number(st[ST.uid]!)));
    st[ST.gid] = BigInt(this.gids.toGuest(Number(st[ST.gid]!)));
  }

  private entry<T extends EntryResult | number>(r: T, st: BigUint64Array): T {
    if (typeof r !== 'number') this.guestAttrs(st);
    return r;
  }

  private created(r: Created, st: BigUint64Array): Created {
    if (typeof r !== 'number') this.guestAttrs(st);
    return r;
  }

  override lookup(ctx: Ctx, parent: number, name: string, st: BigUint64Array): EntryResult | number {
    return this.entry(this.inner.lookup(ctx, parent, name, st), st);
  }

  override getattr(ctx: Ctx, nodeid: number, fh: number | null, st: BigUint64Array): number {
    const r = this.inner.getattr(ctx, nodeid, fh, st);
    if (r === 0) this.guestAttrs(st);
    return r;
  }

  override setattr(ctx: Ctx, nodeid: number, a: SetattrArgs, st: BigUint64Array): number {
    let args = a;
    if (a.valid & (FATTR.UID | FATTR.GID)) {
      const uid = a.valid & FATTR.UID ? this.uids.toHost(a.uid) : a.uid;
      if (uid < 0) return uid;
      const gid = a.valid & FATTR.GID ? this.gids.toHost(a.gid) : a.gid;
      if (gid < 0) return gid;
      args = { ...a, uid, gid };
    }
    const r = this.inner.setattr(ctx, nodeid, args, st);
    if (r === 0) this.guestAttrs(st);
    return r;
  }

  override symlink(ctx: Ctx, parent: number, name: string, target: string, st: BigUint64Array): EntryResult | number {
    const c = this.host(ctx);
    return typeof c === 'number' ? c : this.entry(this.inner.symlink(c, parent, name, target, st), st);
  }

  override mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number, umask: number, st: BigUint64Array): EntryResult | number {
    const c = this.host(ctx);
    return typeof c === 'number' ? c : this.entry(this.inner.mknod(c, parent, name, mode, rdev, umask, st), st);
  }

  override mkdir(ctx: Ctx, parent: number, name: string, mode: number, umask: number, st: BigUint64Array): EntryResult | number {
    const c = this.host(ctx);
    return typeof c === 'number' ? c : this.entry(this.inner.mkdir(c, parent, name, mode, umask, st), st);
  }

  override link(ctx: Ctx, nodeid: number, newParent: number, newName: string, st: BigUint64Array): EntryResult | number {
    return this.entry(this.inner.link(ctx, nodeid, newParent, newName, st), st);
  }

  override create(ctx: Ctx, parent: number, name: string, flags: number, mode: number, umask: number, st: BigUint64Array): Created {
    const c = this.host(ctx);
    return typeof c === 'number' ? c : this.created(this.inner.create(c, parent, name, flags, mode, umask, st), st);
  }

  override tmpfile(ctx: Ctx, parent: number, flags: number, mode: number, umask: number, st: BigUint64Array): Created {
    const c = this.host(ctx);
    return typeof c === 'number' ? c : this.created(this.inner.tmpfile(c, parent, flags, mode, umask, st), st);
  }

  override readdir(ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): number {
    if (!plus) return this.inner.readdir(ctx, fh, offset, plus, sink, st);
    const guestAttrs = (s: BigUint64Array): void => this.guestAttrs(s);
    const mapped: DirSink = {
      get room() { return sink.room; },
      add: (ino, nextOff, type, name) => sink.add(ino, nextOff, type, name),
      addPlus: (entry, s, ino, nextOff, type, name) => {
        if (entry && s) guestAttrs(s);
        return sink.addPlus(entry, s, ino, nextOff, type, name);
      },
    };
    return this.inner.readdir(ctx, fh, offset, plus, mapped, st);
  }
}
