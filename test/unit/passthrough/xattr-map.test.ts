// xattr name mapping (src/passthrough/xattr-map.ts): the parser on the rules and examples of the
// documented language (QEMU 7.2 docs/tools/virtiofsd.rst "xattr-mapping"; the Rust virtiofsd's
// doc/xattr-mapping.md), the mapping of guest names and host lists, and the layer over a
// recording file system.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XattrMapError, XattrMapFs, XattrMapper, parseXattrMap, type XattrRule } from '../../../src/passthrough/xattr-map';
import { ForwardingFs, type FsLayer } from '../../../src/passthrough/layer';
import type { SetattrArgs } from '../../../src/fuse/filesystem';
import { FATTR } from '../../../src/fuse/abi';
import { E, O_TRUNC, O_WRONLY } from '../../../src/linux/constants';
import { INIT } from '../../../src/fuse/abi';

const ALL = { client: true, server: true };
const TERMINATOR: XattrRule = { type: 'bad', ...ALL, key: '', prepend: '' };

test('each documented single rule parses to its type, scope, key and prepend', () => {
  assert.deepEqual(parseXattrMap(':prefix:client:trusted.:user.virtiofs.:'),
    [{ type: 'prefix', client: true, server: false, key: 'trusted.', prepend: 'user.virtiofs.' }, TERMINATOR]);
  assert.deepEqual(parseXattrMap(':prefix:server::user.virtiofs.:')[0], { type: 'prefix', client: false, server: true, key: '', prepend: 'user.virtiofs.' });
  assert.deepEqual(parseXattrMap(':prefix:all:trusted.:user.virtiofs.:')[0], { type: 'prefix', ...ALL, key: 'trusted.', prepend: 'user.virtiofs.' });
  assert.deepEqual(parseXattrMap(':ok:client:user.::')[0], { type: 'ok', client: true, server: false, key: 'user.', prepend: '' });
  assert.deepEqual(parseXattrMap(':ok:server::security.:')[0], { type: 'ok', client: false, server: true, key: '', prepend: 'security.' });
  assert.deepEqual(parseXattrMap(':ok:all:::')[0], { type: 'ok', ...ALL, key: '', prepend: '' });
  assert.deepEqual(parseXattrMap(':bad:server::security.:')[0], { type: 'bad', client: false, server: true, key: '', prepend: 'security.' });
  assert.deepEqual(parseXattrMap(':unsupported:client:trusted.::')[0], { type: 'unsupported', client: true, server: false, key: 'trusted.', prepend: '' });
});

test('example 1: ":prefix:all::user.virtiofs.::bad:all:::" equals ":map::user.virtiofs.:"', () => {
  const long = parseXattrMap(':prefix:all::user.virtiofs.::bad:all:::');
  assert.deepEqual(long, [{ type: 'prefix', ...ALL, key: '', prepend: 'user.virtiofs.' }, TERMINATOR, TERMINATOR]);
  assert.deepEqual(parseXattrMap(':map::user.virtiofs.:'), long);
});

test('example 2: four "/" rules over several lines equal "/map/trusted./user.virtiofs./"', () => {
  const long = parseXattrMap(`/prefix/all/trusted./user.virtiofs./
            /bad/server//trusted./
            /bad/client/user.virtiofs.//
            /ok/all///`);
  assert.equal(long.length, 5);
  const m = new XattrMapper(long);
  const short = new XattrMapper(parseXattrMap('/map/trusted./user.virtiofs./'));
  for (const name of ['trusted.a', 'user.virtiofs.trusted.a', 'user.virtiofs.x', 'user.x', 'security.selinux']) {
    assert.equal(short.toHost(name), m.toHost(name), name);
  }
  for (const name of ['trusted.a', 'user.virtiofs.trusted.a', 'user.x', 'security.selinux']) {
    assert.equal(short.toGuest(name), m.toGuest(name), name);
  }
  assert.equal(m.toHost('trusted.a'), 'user.virtiofs.trusted.a');
  assert.equal(m.toHost('user.virtiofs.trusted.a'), -E.EPERM);
  assert.equal(m.toHost('user.x'), 'user.x');
  assert.equal(m.toGuest('user.virtiofs.trusted.a'), 'trusted.a');
  assert.equal(m.toGuest('trusted.a'), null);
  assert.equal(m.toGuest('user.x'), 'user.x');
});

test('example 3: "/bad/all/security./security./ /ok/all///" hides and refuses security.*, passes the rest', () => {
  const m = new XattrMapper(parseXattrMap('/bad/all/security./security./\n            /ok/all///'));
  assert.equal(m.toHost('security.selinux'), -E.EPERM);
  assert.equal(m.toGuest('security.selinux'), null);
  assert.equal(m.toHost('user.a'), 'user.a');
  assert.equal(m.toGuest('trusted.b'), 'trusted.b');
});

test('the first matching rule wins; unsupported refuses with EOPNOTSUPP and hides; a name no rule takes is bad', () => {
  const m = new XattrMapper(parseXattrMap(':unsupported:all:trusted.:trusted.: :ok:all:user.:user.:'));
  assert.equal(m.toHost('trusted.x'), -E.EOPNOTSUPP);
  assert.equal(m.toGuest('trusted.x'), null);
  assert.equal(m.toHost('user.x'), 'user.x');
  // Not covered: the implicit terminator (the C daemon's) makes it bad.
  assert.equal(m.toHost('security.x'), -E.EPERM);
  assert.equal(m.toGuest('security.x'), null);
});

test('a host list maps name by name: prefixes stripped, hidden names gone', () => {
  const m = new XattrMapper(parseXattrMap(':map::user.virtiofs.:'));
  const raw = Buffer.from('user.virtiofs.security.selinux\0user.plain\0user.virtiofs.user.a\0', 'latin1');
  assert.equal(m.list(raw).toString('latin1'), 'security.selinux\0user.a\0');
  assert.equal(m.list(Buffer.alloc(0)).length, 0);
});

test('the parser refuses an unknown type or scope, an unterminated field, a map rule not last, and no rules', () => {
  for (const bad of [':swap:all:::', ':ok:both:::', ':ok:all::', ':prefix:all:a:b', ':map::x.::ok:all:::', '', '   \n ', ':map:a:']) {
    assert.throws(() => parseXattrMap(bad), XattrMapError, JSON.stringify(bad));
  }
});

test('rule fields are bytes: a UTF-8 prefix matches the latin1 form names travel in', () => {
  const m = new XattrMapper(parseXattrMap(':prefix:all::user.é.::ok:all:::'));
  const hostName = Buffer.from('user.é.x', 'utf8').toString('latin1');
  assert.equal(m.toHost('x'), hostName);
  assert.equal(m.toGuest(hostName), 'x');
});

// ---- the layer ----

interface Call { op: string; name?: string }

/** A host holding the xattrs `names` (latin1), recording what it is asked. */
function host(names: string[]): { fs: FsLayer; calls: Call[] } {
  const calls: Call[] = [];
  const list = Buffer.from(names.map((n) => n + '\0').join(''), 'latin1');
  const fs = new Proxy({}, {
    get(_t, op: string) {
      return (...args: unknown[]) => {
        if (op === 'listxattr') {
          calls.push({ op });
          const buf = args[2] as Uint8Array;
          if (buf.length === 0) return list.length;
          if (buf.length < list.length) return -E.ERANGE;
          buf.set(list);
          return list.length;
        }
        const name = args[2] as string;
        calls.push({ op, name });
        if (op === 'hasXattr') return names.includes(name);
        return op === 'open' ? { fh: 1, openFlags: 0 } : 0;
      };
    },
  }) as FsLayer;
  return { fs, calls };
}

const ctx = { uid: 0, gid: 0, pid: 1 };

test('the layer sends mapped names to the host and refuses bad ones before it', () => {
  const h = host([]);
  const layer = new XattrMapFs(h.fs, parseXattrMap(':prefix:all:trusted.:user.virtiofs.: :bad:all:user.virtiofs.:: :ok:all:::'));
  assert.equal(layer.setxattr(ctx, 2, 'trusted.a', new Uint8Array(1), 0), 0);
  assert.equal(layer.getxattr(ctx, 2, 'trusted.a', new Uint8Array(0)), 0);
  assert.equal(layer.removexattr(ctx, 2, 'user.b'), 0);
  assert.deepEqual(h.calls, [{ op: 'setxattr', name: 'user.virtiofs.trusted.a' }, { op: 'getxattr', name: 'user.virtiofs.trusted.a' }, { op: 'removexattr', name: 'user.b' }]);
  assert.equal(layer.setxattr(ctx, 2, 'user.virtiofs.x', new Uint8Array(1), 0), -E.EPERM);
  assert.equal(layer.getxattr(ctx, 2, 'user.virtiofs.x', new Uint8Array(0)), -E.EPERM);
  assert.equal(layer.removexattr(ctx, 2, 'user.virtiofs.x'), -E.EPERM);
  assert.equal(layer.hasXattr(ctx, 2, 'user.virtiofs.x'), false);
  assert.equal(h.calls.length, 3);
});

test('the replay probe asks the host for the mapped name', () => {
  const h = host(['user.virtiofs.trusted.a']);
  const layer = new XattrMapFs(h.fs, parseXattrMap(':map:trusted.:user.virtiofs.:'));
  assert.equal(layer.hasXattr(ctx, 2, 'trusted.a'), true);
  assert.equal(layer.hasXattr(ctx, 2, 'trusted.b'), false);
});

test('LISTXATTR: the size probe answers the mapped size; a buffer that holds the mapped list is enough, a smaller one is ERANGE', () => {
  const h = host(['user.virtiofs.trusted.a', 'trusted.hidden', 'user.z']);
  const layer = new XattrMapFs(h.fs, parseXattrMap(':map:trusted.:user.virtiofs.:'));
  const want = 'trusted.a\0user.z\0';
  assert.equal(layer.listxattr(ctx, 2, new Uint8Array(0)), want.length);
  const buf = new Uint8Array(want.length);
  assert.equal(layer.listxattr(ctx, 2, buf), want.length);
  assert.equal(Buffer.from(buf).toString('latin1'), want);
  assert.equal(layer.listxattr(ctx, 2, new Uint8Array(want.length - 1)), -E.ERANGE);
});

test('a renamed security.capability is dropped by the layer on a change of owner or size and an O_TRUNC open, and only then', () => {
  const h = host([]);
  const layer = new XattrMapFs(h.fs, parseXattrMap(':map::user.virtiofs.:'));
  const a: SetattrArgs = { valid: FATTR.UID, fh: 0, size: 0, atime: 0, atimensec: 0, mtime: 0, mtimensec: 0, mode: 0, uid: 1, gid: 1 };
  layer.setattr(ctx, 2, a, new BigUint64Array(18));
  assert.deepEqual(h.calls.slice(-1), [{ op: 'removexattr', name: 'user.virtiofs.security.capability' }]);
  h.calls.length = 0;
  layer.setattr(ctx, 2, { ...a, valid: FATTR.MODE }, new BigUint64Array(18));
  assert.deepEqual(h.calls.map((c) => c.op), ['setattr']);
  h.calls.length = 0;
  layer.setattr(ctx, 2, { ...a, valid: FATTR.SIZE }, new BigUint64Array(18));
  layer.open(ctx, 2, O_WRONLY | O_TRUNC);
  layer.open(ctx, 2, O_WRONLY);
  assert.deepEqual(h.calls.map((c) => c.op), ['setattr', 'removexattr', 'open', 'removexattr', 'open']);
  // Not renamed: the host kernel drops it itself.
  const plain = host([]);
  new XattrMapFs(plain.fs, parseXattrMap(':prefix:all:trusted.:user.t.::ok:all:::')).setattr(ctx, 2, a, new BigUint64Array(18));
  assert.deepEqual(plain.calls.map((c) => c.op), ['setattr']);
});

test('FUSE_HANDLE_KILLPRIV_V2 is not offered when security.capability is renamed (the guest then drops it through the mapping)', () => {
  const v2 = 1n << BigInt(INIT.HANDLE_KILLPRIV_V2);
  const below = (flags: bigint): FsLayer => new Proxy({}, {
    get: () => () => ({ flags: flags | 1n, maxReadahead: 0, maxWrite: 0, maxPages: 0, timeGran: 1, maxBackground: 1, congestionThreshold: 1 }),
  }) as FsLayer;
  const req = { major: 7, minor: 38, maxReadahead: 0, flags: v2 };
  const renamed = new XattrMapFs(below(v2), parseXattrMap(':map::user.virtiofs.:')).init(req);
  assert.ok(typeof renamed !== 'number' && renamed.flags === 1n);
  const kept = new XattrMapFs(below(v2), parseXattrMap(':prefix:all:trusted.:user.t.::ok:all:::')).init(req);
  assert.ok(typeof kept !== 'number' && kept.flags === (v2 | 1n));
});

test('any input either parses or fails with XattrMapError, and a parsed map answers every name without throwing', () => {
  let x = 12345;
  const rnd = (n: number): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % n; };
  const pieces = [':', '/', ' ', '\n', 'prefix', 'ok', 'bad', 'unsupported', 'map', 'all', 'client', 'server', 'user.', 'trusted.', 'é', ''];
  let parsed = 0;
  for (let i = 0; i < 3000; i++) {
    const pick = (): string => pieces[rnd(pieces.length)]!;
    // Half of the inputs are rule-shaped (fields from the pieces), with a character dropped now and then.
    let s = rnd(2)
      ? Array.from({ length: 1 + rnd(3) }, () => { const d = [':', '/'][rnd(2)]!; return d + [pick(), pick(), pick(), pick()].join(d) + d; }).join(' ')
      : Array.from({ length: 1 + rnd(12) }, pick).join('');
    if (rnd(4) === 0 && s.length > 0) { const k = rnd(s.length); s = s.slice(0, k) + s.slice(k + 1); }
    let rules: XattrRule[];
    try {
      rules = parseXattrMap(s);
    } catch (e) {
      assert.ok(e instanceof XattrMapError, `${JSON.stringify(s)}: ${String(e)}`);
      continue;
    }
    parsed++;
    const m = new XattrMapper(rules);
    for (const name of ['user.a', 'trusted.b', '', 'security.capability']) {
      const h = m.toHost(name);
      assert.ok(typeof h === 'string' || h === -E.EPERM || h === -E.EOPNOTSUPP);
      m.toGuest(name);
    }
  }
  assert.ok(parsed >= 10, `some random inputs are mappings (${parsed})`);
});

test('every op is classified: it carries xattr names the layer maps, drops a renamed capability, or neither (a new op must say which)', () => {
  const ops = Object.getOwnPropertyNames(ForwardingFs.prototype).filter((n) => n !== 'constructor' && typeof Object.getOwnPropertyDescriptor(ForwardingFs.prototype, n)!.value === 'function');
  const NAMES = ['setxattr', 'getxattr', 'listxattr', 'removexattr', 'hasXattr'];
  /** Clear file capabilities on the host (chown, truncation), or negotiate who clears them. */
  const CAPABILITY = ['init', 'setattr', 'open', 'create'];
  const NEITHER = ['destroy', 'lookup', 'forget', 'getattr', 'readlink', 'symlink', 'mknod', 'mkdir', 'unlink', 'rmdir', 'rename',
    'link', 'tmpfile', 'read', 'readRanges', 'write', 'writeRanges', 'statfs', 'release', 'flush', 'fsync', 'opendir', 'readdir',
    'releasedir', 'fsyncdir', 'getlk', 'setlk', 'access', 'fallocate', 'lseek', 'copyFileRange', 'syncfs', 'nameIno', 'lookupCount', 'appendSize'];
  assert.deepEqual([...NAMES, ...CAPABILITY, ...NEITHER].sort(), ops.sort());
  const overridden = Object.getOwnPropertyNames(XattrMapFs.prototype).filter((n) => n !== 'constructor' && n !== 'dropCapability');
  assert.deepEqual(overridden.sort(), [...NAMES, ...CAPABILITY].sort());
});
