// Extended attribute name mapping (--xattrmap, -o xattrmap=...): the rule language of the C
// virtiofsd (QEMU 7.2 docs/tools/virtiofsd.rst, "xattr-mapping") and the Rust virtiofsd
// (doc/xattr-mapping.md there), as a layer (layer.ts) over the file system.
//
// A mapping is a list of rules; each rule's fields are separated by its first non-blank
// character, which must also end the rule:
//   :TYPE:SCOPE:KEY:PREPEND:     TYPE prefix | ok | bad | unsupported; SCOPE client | server | all
//   :map:KEY:PREPEND:            shorthand, only as the last rule (expanded below)
// A name from the guest (GETXATTR, SETXATTR, REMOVEXATTR) takes the first client rule whose KEY
// starts it: prefix sends PREPEND+name to the host, ok the name unchanged, bad fails with EPERM,
// unsupported with EOPNOTSUPP. A name from the host (each LISTXATTR entry) takes the first
// server rule whose PREPEND starts it: prefix strips PREPEND, ok passes it, bad and unsupported
// hide it. A name no rule matches is treated as `bad` (the C daemon's parser appends that
// terminator; the Rust daemon would panic).
//
// When security.capability is renamed, the host kernel no longer drops it where it drops file
// capabilities (a change of owner, chown(2); a truncation or write, capabilities(7) "File
// capabilities"): the layer removes the renamed one after a SETATTR of owner or size and an open
// or create with O_TRUNC, as both peers do. A write clears it where the guest kernel does it
// itself (file_remove_privs() asks GETXATTR security.capability and sends REMOVEXATTR, both
// mapped here); with FUSE_HANDLE_KILLPRIV_V2 the guest leaves that to the server, which cannot
// see the renamed name on a write, so the layer does not offer it (logged once).

import type { Ctx, EntryResult, InitReply, InitRequest, OpenResult, SetattrArgs } from '../fuse/filesystem';
import { FATTR, INIT } from '../fuse/abi';
import { E, O_TRUNC } from '../linux/constants';
import type { Logger } from '../log';
import { ForwardingFs, type FsLayer } from './layer';

export class XattrMapError extends Error {}

export type XattrRuleType = 'prefix' | 'ok' | 'bad' | 'unsupported';
export interface XattrRule {
  type: XattrRuleType;
  client: boolean;
  server: boolean;
  /** Tested against guest names; latin1 strings of the bytes (as fuse/structs.ts decodes names). */
  key: string;
  /** Tested against host names, and the prefix a `prefix` rule adds. */
  prepend: string;
}

const TYPES = ['prefix', 'ok', 'bad', 'unsupported', 'map'] as const;
const SCOPES: Record<string, { client: boolean; server: boolean }> = {
  client: { client: true, server: false }, server: { client: false, server: true }, all: { client: true, server: true },
};

/** The bytes of a command-line string, as a latin1 string (the form names travel in). */
const bytes = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

/** Parse a mapping into its rules (map expanded, the implicit terminator appended). */
export function parseXattrMap(input: string): XattrRule[] {
  const rules: XattrRule[] = [];
  let i = 0;
  const s = input;
  let n = 0;
  while (i < s.length) {
    if (/\s/.test(s[i]!)) { i++; continue; }
    n++;
    const sep = s[i++]!;
    const field = (what: string): string => {
      const end = s.indexOf(sep, i);
      if (end < 0) throw new XattrMapError(`xattrmap rule ${n}: no '${sep}' after its ${what} (every field ends with the separator)`);
      const v = s.slice(i, end);
      i = end + 1;
      return v;
    };
    const type = field('type');
    if (!TYPES.some((t) => t === type)) throw new XattrMapError(`xattrmap rule ${n}: unknown type '${type}' (want prefix, ok, bad, unsupported or map)`);
    if (type === 'map') {
      const key = bytes(field('key'));
      const prepend = bytes(field('prepend'));
      if (s.slice(i).trim() !== '') throw new XattrMapError(`xattrmap rule ${n}: a map rule must be the last rule`);
      rules.push(...expandMap(key, prepend));
      break;
    }
    const scopeName = field('scope');
    const scope = SCOPES[scopeName];
    if (!scope) throw new XattrMapError(`xattrmap rule ${n}: unknown scope '${scopeName}' (want client, server or all)`);
    rules.push({ type: type as XattrRuleType, ...scope, key: bytes(field('key')), prepend: bytes(field('prepend')) });
  }
  if (rules.length === 0) throw new XattrMapError('xattrmap: no rules');
  rules.push({ type: 'bad', client: true, server: true, key: '', prepend: '' });
  return rules;
}

/**
 * `:map:KEY:PREPEND:`: prefix KEY (every name if empty) with PREPEND; with a KEY, also hide host
 * names that start with KEY unprefixed and refuse guest names that start with PREPEND (the
 * guest could otherwise reach the target of the mapping directly), then let the rest through;
 * without a KEY, hide and refuse everything else.
 */
function expandMap(key: string, prepend: string): XattrRule[] {
  const all = { client: true, server: true };
  const out: XattrRule[] = [{ type: 'prefix', ...all, key, prepend }];
  if (key !== '') out.push({ type: 'bad', ...all, key: prepend, prepend: key });
  out.push({ type: key !== '' ? 'ok' : 'bad', ...all, key: '', prepend: '' });
  return out;
}

/** Applies parsed rules. */
export class XattrMapper {
  constructor(private readonly rules: readonly XattrRule[]) {}

  /** A guest name as the host gets it, or -errno (EPERM: bad; EOPNOTSUPP: unsupported). */
  toHost(name: string): string | number {
    const r = this.rules.find((x) => x.client && name.startsWith(x.key))!;
    switch (r.type) {
      case 'ok': return name;
      case 'prefix': return r.prepend + name;
      case 'bad': return -E.EPERM;
      case 'unsupported': return -E.EOPNOTSUPP;
    }
  }

  /** A host name as the guest sees it, or null: hidden. */
  toGuest(name: string): string | null {
    const r = this.rules.find((x) => x.server && name.startsWith(x.prepend))!;
    switch (r.type) {
      case 'ok': return name;
      case 'prefix': return name.slice(r.prepend.length);
      default: return null;
    }
  }

  /** A LISTXATTR result (NUL-terminated names) as the guest sees it. */
  list(raw: Uint8Array): Buffer {
    const names = Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString('latin1').split('\0');
    let out = '';
    for (const n of names) {
      if (n === '') continue;
      const g = this.toGuest(n);
      if (g !== null && g !== '') out += g + '\0';
    }
    return Buffer.from(out, 'latin1');
  }
}

/** listxattr(2) answers at most XATTR_LIST_MAX (64 KiB) on Linux (linux/limits.h). */
const XATTR_LIST_MAX = 65536;
const CAPABILITY = 'security.capability';

export class XattrMapFs extends ForwardingFs {
  private readonly map: XattrMapper;
  /** What security.capability is stored as on the host, when that is another name. */
  private readonly capabilityAs: string | null;
  private readonly scratch = new Uint8Array(XATTR_LIST_MAX);

  constructor(inner: FsLayer, rules: readonly XattrRule[], private readonly log?: Logger) {
    super(inner);
    this.map = new XattrMapper(rules);
    const cap = this.map.toHost(CAPABILITY);
    this.capabilityAs = typeof cap === 'string' && cap !== CAPABILITY ? cap : null;
  }

  override setxattr(ctx: Ctx, nodeid: number, name: string, value: Uint8Array, flags: number): number {
    const h = this.map.toHost(name);
    return typeof h === 'number' ? h : this.inner.setxattr(ctx, nodeid, h, value, flags);
  }

  override getxattr(ctx: Ctx, nodeid: number, name: string, buf: Uint8Array): number {
    const h = this.map.toHost(name);
    return typeof h === 'number' ? h : this.inner.getxattr(ctx, nodeid, h, buf);
  }

  override removexattr(ctx: Ctx, nodeid: number, name: string): number {
    const h = this.map.toHost(name);
    return typeof h === 'number' ? h : this.inner.removexattr(ctx, nodeid, h);
  }

  override hasXattr(ctx: Ctx, nodeid: number, name: string): boolean {
    const h = this.map.toHost(name);
    return typeof h !== 'number' && this.inner.hasXattr(ctx, nodeid, h);
  }

  /**
   * The host's list, mapped. The guest's buffer bounds the mapped list, not the host's (which
   * may be longer: hidden names, prefixes), so the host's is read whole first, into a buffer of
   * the most listxattr(2) ever answers (longer: E2BIG). One at a time: the op is synchronous.
   */
  override listxattr(ctx: Ctx, nodeid: number, buf: Uint8Array): number {
    const r = this.inner.listxattr(ctx, nodeid, this.scratch);
    if (r <= 0) return r;
    const out = this.map.list(this.scratch.subarray(0, r));
    if (buf.length === 0) return out.length;
    if (out.length > buf.length) return -E.ERANGE;
    buf.set(out);
    return out.length;
  }

  override init(req: InitRequest): InitReply | number {
    const r = this.inner.init(req);
    if (typeof r === 'number' || this.capabilityAs === null) return r;
    const v2 = 1n << BigInt(INIT.HANDLE_KILLPRIV_V2);
    if (!(r.flags & v2)) return r;
    this.log?.warn({ capabilityAs: this.capabilityAs }, 'security.capability is renamed by --xattrmap: FUSE_HANDLE_KILLPRIV_V2 is not offered (the guest drops file capabilities itself, through the mapping)');
    return { ...r, flags: r.flags & ~v2 };
  }

  /** After a change that clears file capabilities: drop the renamed one (none there: nothing to do). */
  private dropCapability(ctx: Ctx, nodeid: number): void {
    // ENODATA (none) and EOPNOTSUPP (no xattrs here) leave nothing to drop.
    if (this.capabilityAs !== null) this.inner.removexattr(ctx, nodeid, this.capabilityAs);
  }

  override setattr(ctx: Ctx, nodeid: number, a: SetattrArgs, st: BigUint64Array): number {
    const r = this.inner.setattr(ctx, nodeid, a, st);
    if (r === 0 && (a.valid & (FATTR.UID | FATTR.GID | FATTR.SIZE))) this.dropCapability(ctx, nodeid);
    return r;
  }

  override open(ctx: Ctx, nodeid: number, flags: number): OpenResult | number {
    const r = this.inner.open(ctx, nodeid, flags);
    if (typeof r !== 'number' && (flags & O_TRUNC)) this.dropCapability(ctx, nodeid);
    return r;
  }

  override create(ctx: Ctx, parent: number, name: string, flags: number, mode: number, umask: number, st: BigUint64Array): { entry: EntryResult; open: OpenResult } | number {
    const r = this.inner.create(ctx, parent, name, flags, mode, umask, st);
    if (typeof r !== 'number' && (flags & O_TRUNC)) this.dropCapability(ctx, r.entry.nodeid);
    return r;
  }
}
