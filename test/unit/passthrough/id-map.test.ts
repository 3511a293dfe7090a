// UID/GID mapping (src/passthrough/id-map.ts): the --translate-uid/--translate-gid parser on the
// forms of the Rust virtiofsd's README, the --uid-map/--gid-map parser, the mappers' two
// directions, the command-line checks, and the layer over a recording file system: guest ids in
// the ops that give a file an owner map to the host's, host ids in every attribute reply map to
// the guest's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IdMapError, IdMapFs, IdMapper, OVERFLOW_ID, idMapFromArgs, parseNsMap, parseTranslate,
} from '../../../src/passthrough/id-map';
import { ForwardingFs, type FsLayer } from '../../../src/passthrough/layer';
import type { Ctx, DirSink, EntryResult, SetattrArgs } from '../../../src/fuse/filesystem';
import { FATTR } from '../../../src/fuse/abi';
import { ST } from '../../../src/native/binding';
import { E } from '../../../src/linux/constants';

test('parseTranslate reads every form of the Rust virtiofsd README', () => {
  assert.deepEqual(parseTranslate('guest:1000:2000:10'), { kind: 'guest', from: 1000, to: 2000, count: 10 });
  assert.deepEqual(parseTranslate('host:1001:1000:1'), { kind: 'host', from: 1001, to: 1000, count: 1 });
  assert.deepEqual(parseTranslate('squash-guest:0:1001:4294967295'), { kind: 'squash-guest', from: 0, to: 1001, count: 4294967295 });
  assert.deepEqual(parseTranslate('squash-host:0:65534:100'), { kind: 'squash-host', from: 0, to: 65534, count: 100 });
  assert.deepEqual(parseTranslate('forbid-guest:0:1'), { kind: 'forbid-guest', from: 0, count: 1 });
  assert.deepEqual(parseTranslate('map:1000:0:1'), { kind: 'map', from: 1000, to: 0, count: 1 });
});

test('parseTranslate takes any separator that is not alphanumeric, - or _, and a type in any case', () => {
  assert.deepEqual(parseTranslate('MAP/5/6/7'), { kind: 'map', from: 5, to: 6, count: 7 });
  assert.deepEqual(parseTranslate('guest,1,2,3'), { kind: 'guest', from: 1, to: 2, count: 3 });
});

test('parseTranslate refuses a bad type, field count, number, zero count or a range past 32 bits', () => {
  for (const bad of ['', 'map', 'swap:1:2:3', 'map:1:2', 'map:1:2:3:4', 'forbid-guest:1:2:3', 'map:1:x:3', 'map:-1:2:3',
    'map:1:2:0', 'map:4294967296:0:1', 'guest:4294967295:0:2', 'map:0:4294967295:2', 'map:1:2:3:', 'map:1/2/3']) {
    assert.throws(() => parseTranslate(bad), IdMapError, bad);
  }
});

test('translate: the two directions are independent, uncovered ids map to themselves', () => {
  // The README's example: every guest id squashed to 1001 on the host; host 1001 seen as 1000.
  const m = IdMapper.translate([parseTranslate('squash-guest:0:1001:4294967295'), parseTranslate('host:1001:1000:1')]);
  assert.equal(m.toHost(0), 1001);
  assert.equal(m.toHost(4294967294), 1001);
  assert.equal(m.toGuest(1001), 1000);
  assert.equal(m.toGuest(0), 0);
  assert.equal(m.toGuest(1002), 1002);
});

test('translate: map is both directions, ranges shift, forbid-guest refuses with EPERM', () => {
  const m = IdMapper.translate([parseTranslate('map:1000:5000:10'), parseTranslate('forbid-guest:0:1')]);
  assert.equal(m.toHost(1009), 5009);
  assert.equal(m.toHost(1010), 1010);
  assert.equal(m.toGuest(5000), 1000);
  assert.equal(m.toGuest(1000), 1000);
  assert.equal(m.toHost(0), -E.EPERM);
  assert.equal(m.toGuest(0), 0);
});

test('translate: overlapping source ranges of one direction are refused, of different directions accepted', () => {
  assert.throws(() => IdMapper.translate([parseTranslate('guest:0:10:5'), parseTranslate('squash-guest:4:1:1')]), IdMapError);
  assert.throws(() => IdMapper.translate([parseTranslate('map:0:100:5'), parseTranslate('host:104:9:1')]), IdMapError);
  IdMapper.translate([parseTranslate('guest:0:10:5'), parseTranslate('host:0:10:5')]);
});

test('parseNsMap reads libvirt\'s :NS:HOST:COUNT: and refuses other shapes', () => {
  assert.deepEqual(parseNsMap(':0:1000:1:'), { ns: 0, host: 1000, count: 1 });
  assert.deepEqual(parseNsMap('/1/100000/65536/'), { ns: 1, host: 100000, count: 65536 });
  for (const bad of ['', ':', '0:1000:1', ':0:1000:1', ':0:1000:0:', ':0:1000:', 'a0a1a1a', ':0:1000:1:2:']) {
    assert.throws(() => parseNsMap(bad), IdMapError, bad);
  }
});

test('the namespace view: mapped ids both ways, other host ids are the overflow id, other guest ids EINVAL', () => {
  const m = IdMapper.nsView([parseNsMap(':0:1000:1:')]);
  assert.equal(m.toGuest(1000), 0);
  assert.equal(m.toGuest(0), OVERFLOW_ID);
  assert.equal(m.toGuest(1001), OVERFLOW_ID);
  assert.equal(m.toHost(0), 1000);
  assert.equal(m.toHost(1000), -E.EINVAL);
});

test('command line: --uid-map only unprivileged, only the own id with count 1; the other map defaults to the own id; never with --posix-acl', () => {
  const none = { translateUid: [], translateGid: [], uidMap: [], gidMap: [] };
  const self = { euid: 1000, egid: 100 };
  assert.deepEqual(idMapFromArgs({ ...none, uidMap: [':0:1000:1:'] }, false, self), { translateUid: [], translateGid: [], nsUid: [':0:1000:1:'], nsGid: [':100:100:1:'] });
  assert.throws(() => idMapFromArgs({ ...none, uidMap: [':0:1000:1:'] }, false, { euid: 0, egid: 0 }), /unprivileged/);
  assert.throws(() => idMapFromArgs({ ...none, uidMap: [':0:1001:1:'] }, false, self), /newuidmap/);
  assert.throws(() => idMapFromArgs({ ...none, uidMap: [':0:1000:2:'] }, false, self), /newuidmap/);
  assert.throws(() => idMapFromArgs({ ...none, uidMap: [':0:1000:1:', ':1:100000:65536:'] }, false, self), /newuidmap/);
  assert.throws(() => idMapFromArgs({ ...none, gidMap: [':0:1000:1:'] }, false, self), /newuidmap/);
  assert.throws(() => idMapFromArgs({ ...none, translateUid: ['map:0:1000:1'] }, true, self), /posix-acl/);
  assert.throws(() => idMapFromArgs({ ...none, translateUid: ['map:0:1000:1', 'guest:0:5:1'] }, false, self), IdMapError);
  assert.deepEqual(idMapFromArgs(none, true, { euid: 0, egid: 0 }), { translateUid: [], translateGid: [], nsUid: [], nsGid: [] });
});

// ---- the layer ----

interface Call { op: string; ctx?: Ctx; a?: SetattrArgs }

/** A host that owns everything by uid 5000 / gid 6000, records the caller, and lists two entries. */
function host(): { fs: FsLayer; calls: Call[] } {
  const calls: Call[] = [];
  const fill = (st: BigUint64Array): void => { st[ST.uid] = 5000n; st[ST.gid] = 6000n; };
  const entry: EntryResult = { nodeid: 2, generation: 0, attrFlags: 0 };
  const fs = new Proxy({}, {
    get(_t, op: string) {
      return (...args: unknown[]) => {
        const ctx = args[0] as Ctx;
        const st = args.find((x) => x instanceof BigUint64Array) as BigUint64Array | undefined;
        calls.push({ op, ctx, a: op === 'setattr' ? args[2] as SetattrArgs : undefined });
        if (st) fill(st);
        if (op === 'readdir') {
          const sink = args[4] as DirSink;
          const s1 = new BigUint64Array(18); fill(s1);
          sink.addPlus(entry, s1, 2n, 1n, 4, Buffer.from('a'));
          sink.addPlus(null, null, 3n, 2n, 4, Buffer.from('..'));
          return 0;
        }
        if (op === 'getattr' || op === 'setattr') return 0;
        if (op === 'create' || op === 'tmpfile') return { entry, open: { fh: 1, openFlags: 0 } };
        return entry;
      };
    },
  }) as FsLayer;
  return { fs, calls };
}

const guestCtx: Ctx = { uid: 1000, gid: 100, pid: 42 };

test('the layer maps the caller of every op that makes a file, and the owner in its reply', () => {
  const h = host();
  const layer = new IdMapFs(h.fs, IdMapper.translate([parseTranslate('map:1000:5000:1')]), IdMapper.translate([parseTranslate('map:100:6000:1')]));
  const st = new BigUint64Array(18);
  const makers: Array<[string, () => unknown]> = [
    ['mkdir', () => layer.mkdir(guestCtx, 1, 'd', 0o755, 0, st)],
    ['mknod', () => layer.mknod(guestCtx, 1, 'n', 0o644, 0, 0, st)],
    ['symlink', () => layer.symlink(guestCtx, 1, 's', 't', st)],
    ['create', () => layer.create(guestCtx, 1, 'f', 0, 0o644, 0, st)],
    ['tmpfile', () => layer.tmpfile(guestCtx, 1, 0, 0o644, 0, st)],
  ];
  for (const [op, run] of makers) {
    st.fill(0n);
    run();
    const c = h.calls.at(-1)!;
    assert.equal(c.op, op);
    assert.deepEqual(c.ctx, { uid: 5000, gid: 6000, pid: 42 }, op);
    assert.equal(st[ST.uid], 1000n, op);
    assert.equal(st[ST.gid], 100n, op);
  }
  for (const [op, run] of [['lookup', () => layer.lookup(guestCtx, 1, 'x', st)], ['getattr', () => layer.getattr(guestCtx, 2, null, st)],
    ['link', () => layer.link(guestCtx, 2, 1, 'l', st)]] as const) {
    st.fill(0n);
    run();
    assert.equal(st[ST.uid], 1000n, op);
    assert.equal(st[ST.gid], 100n, op);
  }
});

test('the layer refuses a forbidden or unmapped caller before the host sees the op', () => {
  const h = host();
  const layer = new IdMapFs(h.fs, IdMapper.translate([parseTranslate('forbid-guest:1000:1')]), IdMapper.translate([]));
  assert.equal(layer.mkdir(guestCtx, 1, 'd', 0o755, 0, new BigUint64Array(18)), -E.EPERM);
  const ns = new IdMapFs(h.fs, IdMapper.nsView([parseNsMap(':0:5000:1:')]), IdMapper.nsView([parseNsMap(':0:6000:1:')]));
  assert.equal(ns.create(guestCtx, 1, 'f', 0, 0o644, 0, new BigUint64Array(18)), -E.EINVAL);
  assert.equal(h.calls.length, 0);
  const st = new BigUint64Array(18);
  ns.mkdir({ uid: 0, gid: 0, pid: 1 }, 1, 'd', 0o755, 0, st);
  assert.deepEqual(h.calls.at(-1)!.ctx, { uid: 5000, gid: 6000, pid: 1 });
  assert.equal(st[ST.uid], 0n);
});

test('SETATTR maps the new owner guest -> host (only the ids it sets) and the reply host -> guest', () => {
  const h = host();
  const layer = new IdMapFs(h.fs, IdMapper.translate([parseTranslate('map:1000:5000:1'), parseTranslate('forbid-guest:7:1')]), IdMapper.translate([]));
  const st = new BigUint64Array(18);
  const a: SetattrArgs = { valid: FATTR.UID, fh: 0, size: 0, atime: 0, atimensec: 0, mtime: 0, mtimensec: 0, mode: 0, uid: 1000, gid: 77 };
  assert.equal(layer.setattr(guestCtx, 2, a, st), 0);
  assert.equal(h.calls.at(-1)!.a!.uid, 5000);
  assert.equal(h.calls.at(-1)!.a!.gid, 77);
  assert.equal(st[ST.uid], 1000n);
  assert.equal(layer.setattr(guestCtx, 2, { ...a, uid: 7 }, st), -E.EPERM);
  assert.equal(h.calls.length, 1);
  // Without FATTR_UID/GID the ids are not looked at (a forbidden one included).
  assert.equal(layer.setattr(guestCtx, 2, { ...a, valid: FATTR.MODE, uid: 7 }, st), 0);
});

test('READDIRPLUS entries carry mapped owners; plain READDIR and "." / ".." entries pass untouched', () => {
  const h = host();
  const layer = new IdMapFs(h.fs, IdMapper.translate([parseTranslate('host:5000:1:1')]), IdMapper.translate([parseTranslate('squash-host:6000:2:1')]));
  const seen: Array<[bigint, bigint] | null> = [];
  const sink: DirSink = {
    room: 4096,
    add: () => true,
    addPlus: (_e, s) => { seen.push(s ? [s[ST.uid]!, s[ST.gid]!] : null); return true; },
  };
  assert.equal(layer.readdir(guestCtx, 1, 0n, true, sink, new BigUint64Array(18)), 0);
  assert.deepEqual(seen, [[1n, 2n], null]);
});

test('any rule text either parses or fails with IdMapError', () => {
  let x = 777;
  const rnd = (n: number): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % n; };
  const pieces = [':', '/', '-', 'map', 'guest', 'host', 'squash-guest', 'forbid-guest', '0', '1', '4294967295', '4294967296', '99999999999', 'x', ''];
  let parsed = 0;
  for (let i = 0; i < 3000; i++) {
    const pick = (): string => pieces[rnd(pieces.length)]!;
    const num = (): string => ['0', '1', '1000', '4294967295', '4294967296', 'x', ''][rnd(7)]!;
    // Half of the inputs are rule-shaped: a type or nothing, then numbers, one separator.
    const s = rnd(2)
      ? (rnd(3) ? pick() + ':' : ':') + Array.from({ length: 2 + rnd(3) }, num).join(':') + (rnd(2) ? ':' : '')
      : Array.from({ length: 1 + rnd(9) }, pick).join('');
    for (const parse of [parseTranslate, parseNsMap]) {
      try {
        parse(s);
        parsed++;
      } catch (e) {
        assert.ok(e instanceof IdMapError, `${JSON.stringify(s)}: ${String(e)}`);
      }
    }
  }
  assert.ok(parsed >= 10, `some random inputs are rules (${parsed})`);
});

/** Every op of a layer: the methods of ForwardingFs. */
function allOps(): string[] {
  return Object.getOwnPropertyNames(ForwardingFs.prototype).filter((n) => n !== 'constructor' && typeof Object.getOwnPropertyDescriptor(ForwardingFs.prototype, n)!.value === 'function');
}

test('every op is classified: it carries ids the layer maps, or none (a new op must say which)', () => {
  /** The caller becomes a file's owner, or the reply holds attributes: mapped by IdMapFs. */
  const MAPPED = ['lookup', 'getattr', 'setattr', 'symlink', 'mknod', 'mkdir', 'link', 'create', 'tmpfile', 'readdir'];
  /** No ids in their arguments or replies that give or show an owner. */
  const NO_IDS = ['init', 'destroy', 'forget', 'readlink', 'unlink', 'rmdir', 'rename', 'open', 'read', 'readRanges', 'write',
    'writeRanges', 'statfs', 'release', 'flush', 'fsync', 'setxattr', 'getxattr', 'listxattr', 'removexattr', 'opendir',
    'releasedir', 'fsyncdir', 'getlk', 'setlk', 'access', 'fallocate', 'lseek', 'copyFileRange', 'syncfs',
    'nameIno', 'hasXattr', 'lookupCount', 'appendSize'];
  assert.deepEqual([...MAPPED, ...NO_IDS].sort(), allOps().sort());
  const overridden = Object.getOwnPropertyNames(IdMapFs.prototype).filter((n) => n !== 'constructor' && !n.startsWith('guest') && !['host', 'entry', 'created'].includes(n));
  assert.deepEqual(overridden.sort(), [...MAPPED].sort());
});
