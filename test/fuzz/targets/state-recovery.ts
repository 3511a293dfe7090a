// Fuzz target: a new worker adopting corrupted state regions. The images are what a worker
// writes (and a worker a guest took over could write anything), so a new worker must refuse a
// bad record, never crash or read out of bounds.
//
// Once per process a real worker (PassthroughFs over memfds, with a keeper-like fd registry)
// serves some requests on a scratch tree, and its state is kept: the inode, open-file and
// open-dir slot tables, the keeper's fds, an in-flight region, an outcome journal and a device
// state region. Each input corrupts copies of them (header words, record fields with edge
// values, NaN and negative doubles, records copied onto other slots, lengths cut or grown,
// keeper fds missing or extra) and then:
//   - a PassthroughFs adopts the tables: it must either refuse the image as a whole with a
//     clean Error (the worker then exits and the keeper starts another), or come up serving, and
//     then GETATTR, LOOKUP, OPEN(DIR), READ(DIR), RELEASE and FORGET on every node id and handle
//     it kept must answer, the root must still work, no two node ids may hold one host inode
//     (one host inode, one node id), and closing it must leave no fd behind;
//   - InflightRegion.recover and Journal.validate/find must answer or refuse (an Error), with
//     heads in range and bodies within the record;
//   - check-state (the operator's tool) reads the same regions from /proc and must report
//     problems, not throw.
// A TypeError or RangeError escaping is an out-of-bounds read or a wrong assumption: a bug.

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { FuzzInput } from '../lib/input';
import type { FuzzTarget } from '../lib/harness';
import { loadNative, type NativeBinding } from '../../../src/native/binding';
import { FuseSession } from '../../../src/fuse/session';
import { PassthroughFs, DEFAULT_FS_OPTIONS, type FsOptions } from '../../../src/passthrough/passthrough-fs';
import type { FdRegistry } from '../../../src/state/fd-registry';
import { InflightRegion, INFLIGHT_LAYOUT } from '../../../src/state/inflight';
import { Journal, JOURNAL_LAYOUT, JOURNAL_MAX_REPLY } from '../../../src/state/journal';
import { DeviceRegion, DEVICE_HEADER, DH } from '../../../src/state/device-region';
import { SLOT_HEADER, SLOT_STATE } from '../../../src/state/slot-table';
import { INODE_LAYOUT } from '../../../src/passthrough/inode-table';
import { HANDLE_LAYOUT } from '../../../src/passthrough/handle-table';
import { checkState } from '../../../src/tools/check-state';
import { initialDeviceState } from '../../../src/vhost/backend';
import { FuseClient } from '../../support/fuse-client';
import { directTransport } from '../../support/direct-transport';
import { OP, SIZE } from '../../../src/fuse/abi';

const BASE = fs.existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
const TABLES = ['inodes', 'files', 'dirs'] as const;
type TableName = typeof TABLES[number];
/** Record sizes and the offsets of their fields (src/passthrough/inode-table.ts, handle-table.ts). */
const I = INODE_LAYOUT, HL = HANDLE_LAYOUT;
const RECORD: Record<TableName, number> = { inodes: I.record, files: HL.record, dirs: HL.record };
const HANDLE_FIELDS = [SLOT_STATE, HL.nodeid, HL.fd, HL.flags];
const FIELDS: Record<TableName, number[]> = {
  inodes: [SLOT_STATE, I.gen, I.nlookup, I.dev, I.ino, I.mnt, I.fd, I.mode, I.handle, I.handle + 4, I.handle + 8],
  files: HANDLE_FIELDS, dirs: HANDLE_FIELDS,
};
const HEADER_FIELDS = [SLOT_HEADER.magic, SLOT_HEADER.version, SLOT_HEADER.record, SLOT_HEADER.capacity, SLOT_HEADER.kind];
const HDR = SLOT_HEADER.bytes;
const IL = INFLIGHT_LAYOUT, JL = JOURNAL_LAYOUT;
/** The fields of an in-flight descriptor and of a journal record that corrupt() aims at. */
const INFLIGHT_FIELDS = [IL.flag, IL.started, IL.next, IL.counter];
const JOURNAL_FIELDS = [JL.state, JL.opcode, JL.uniqueLo, JL.uniqueHi, JL.error, JL.len, JL.pre];
const QUEUE = 8;

/** The keeper's side of the fd registry: a duplicate of every fd put, by key. */
class Keeper implements FdRegistry {
  readonly fds = new Map<string, number>();
  constructor(private readonly native: NativeBinding) {}
  put(key: string, fd: number): void {
    const old = this.fds.get(key);
    if (old !== undefined) this.native.close(old);
    this.fds.set(key, this.native.dup(fd));
  }
  putLazy(key: string, fd: number): void { this.put(key, fd); }
  del(key: string): void {
    const old = this.fds.get(key);
    if (old !== undefined) this.native.close(old);
    this.fds.delete(key);
  }
  flush(): void {}
  closeAll(): void { for (const fd of this.fds.values()) this.native.close(fd); this.fds.clear(); }
}

interface Base {
  dir: string;
  images: Record<TableName, Uint8Array>;
  keeper: Keeper;
  inflight: Uint8Array;
  journal: Uint8Array;
  device: Uint8Array;
}

let base: Base | null = null;

function options(dir: string, handles: FsOptions['inodeFileHandles']): FsOptions {
  return { ...DEFAULT_FS_OPTIONS, sharedDir: path.join(dir, 'share'), memfdState: true, xattr: true, syncIo: true, inodeFileHandles: handles };
}

function readFd(fd: number): Uint8Array {
  return new Uint8Array(fs.readFileSync(`/proc/self/fd/${fd}`));
}

/** A worker's state after some work, kept as images. */
async function makeBase(native: NativeBinding): Promise<Base> {
  const dir = fs.mkdtempSync(path.join(BASE, 'vfsd-fuzz-state-'));
  fs.mkdirSync(path.join(dir, 'share/d/e'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'share/a'), 'hello\n');
  fs.writeFileSync(path.join(dir, 'share/d/b'), 'b');
  fs.symlinkSync('a', path.join(dir, 'share/l'));
  const keeper = new Keeper(native);
  const pfs = new PassthroughFs(native, options(dir, 'prefer'), pino({ level: 'silent' }), { registry: keeper, recovered: new Map() });
  const c = new FuseClient(directTransport(new FuseSession(pfs, pino({ level: 'silent' }), { probes: pfs, rangeIo: pfs })));
  await c.init();
  const a = (await c.lookup(1, 'a')).entry!.nodeid, d = (await c.lookup(1, 'd')).entry!.nodeid;
  const b = (await c.lookup(d, 'b')).entry!.nodeid;
  await c.lookup(d, 'e');
  await c.lookup(1, 'l');
  await c.open(a, 2);
  await c.open(b, 0);
  await c.opendir(d);
  await c.opendir(1);
  // A lock owner's open file description, as SETLK leaves one.
  const fh = (await c.open(a, 2)).fh!;
  const r = await c.call(OP.FUSE_SETLK, a, [lk(fh, 7n)], 0);
  assert.equal(r.error, 0, 'SETLK for the base image');
  const images = {} as Record<TableName, Uint8Array>;
  const fds = pfs.stateFds;
  for (const t of TABLES) images[t] = readFd(fds[t]);
  // (The tables stay open: closing the file system would forget everything.)
  const inflightBuf = new ArrayBuffer(InflightRegion.sizeFor(QUEUE));
  const inflight = new InflightRegion(inflightBuf);
  inflight.format(QUEUE, 5);
  for (const h of [3, 1, 6]) inflight.markInflight(h);
  inflight.prePut(1);
  const journalBuf = new ArrayBuffer(Journal.sizeFor(QUEUE));
  const journal = new Journal(journalBuf);
  journal.format(QUEUE);
  journal.intent(3, 9, 0, OP.FUSE_MKDIR, 1);
  journal.intent(6, 10, 0, OP.FUSE_CREATE, 2);
  journal.done(6, 0, new Uint8Array(SIZE.entry_out + SIZE.open_out).fill(7));
  const dev = new DeviceRegion(native);
  const st = initialDeviceState(2);
  st.features = 2 ** 32 + 2 ** 28;
  st.regions.push({ gpa: 0, size: 1 << 20, uaddr: 2 ** 40, mmapOffset: 0, fd: 9 });
  st.rings[1] = { ...st.rings[1]!, num: QUEUE, addr: { flags: 0, descVa: 2 ** 40, usedVa: 2 ** 40 + 4096, availVa: 2 ** 40 + 2048, logGpa: 0 }, kickFd: 10, started: true, enabled: true };
  dev.write(st);
  const device = readFd(dev.fd);
  native.close(dev.fd);
  return { dir, images, keeper, inflight: new Uint8Array(inflightBuf), journal: new Uint8Array(journalBuf), device };
}

function lk(fh: number | bigint, owner: bigint): Buffer {
  const b = Buffer.alloc(SIZE.lk_in);
  b.writeBigUInt64LE(BigInt(fh), 0);
  b.writeBigUInt64LE(owner, 8);
  b.writeBigUInt64LE(0n, 16);
  b.writeBigUInt64LE(10n, 24);
  b.writeUInt32LE(1, 32); // F_WRLCK
  b.writeUInt32LE(1, 36);
  return b;
}

const F64 = [NaN, -1, 0, 0.5, 1, 2 ** 53, Infinity, -Infinity, 1e300, 3];

/** Corrupt an image as the input says. */
function corrupt(inp: FuzzInput, img: Uint8Array, record: number, fields: number[]): Uint8Array {
  let b = img.slice();
  const n = inp.int(0, 6);
  for (let i = 0; i < n; i++) {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const slots = Math.max(1, Math.floor((b.length - HDR) / record));
    const at = (): number => (inp.chance(48) ? inp.pick(HEADER_FIELDS) : HDR + record * inp.int(0, Math.min(slots, 12)) + inp.pick(fields));
    switch (inp.int(0, 7)) {
      case 0: { const o = at(); if (o + 4 <= b.length) dv.setUint32(o, inp.u32e(), true); break; }
      case 1: { const o = at(); if (o + 8 <= b.length) dv.setFloat64(o, inp.pick(F64), true); break; }
      case 2: { const o = at(); if (o + 4 <= b.length) dv.setInt32(o, inp.pick([-1, 0, 1, 2, -100, 0x7fffffff]), true); break; }
      case 3: { // a record copied onto another slot (two records, one host inode)
        const from = HDR + record * inp.int(0, slots - 1), to = HDR + record * inp.int(0, slots - 1);
        if (from + record <= b.length && to + record <= b.length) b.copyWithin(to, from, from + record);
        break;
      }
      case 4: b = b.slice(0, inp.pick([0, 10, 63, 64, 65, b.length - 1, b.length - record, inp.int(0, b.length)])); break;
      case 5: { const g = new Uint8Array(b.length + inp.pick([1, 3, record, 4096])); g.set(b); b = g; break; }
      case 6: { const o = inp.int(0, Math.max(0, b.length - 1)); const r = inp.bytes(inp.int(1, 16)); for (let k = 0; k < r.length && o + k < b.length; k++) b[o + k] = r[k]!; break; }
      default: { const o = at(); if (o < b.length) b[o] = inp.u8(); }
    }
  }
  return b;
}

function memfd(native: NativeBinding, name: string, bytes: Uint8Array): number {
  const fd = native.memfdCreate(name, 0);
  assert.ok(fd >= 0, `memfd_create: ${fd}`);
  if (bytes.length > 0) fs.writeSync(fd, bytes, 0, bytes.length, 0);
  return fd;
}

function fdCount(): number { return fs.readdirSync('/proc/self/fd').length; }

/** What a worker may throw at start-up when it refuses an image (then it exits). */
function isRefusal(e: unknown): boolean {
  return e instanceof Error && e.constructor === Error && /not usable|another shared directory|holds no fd|state region/.test(e.message);
}

async function adopt(inp: FuzzInput, native: NativeBinding, b: Base): Promise<void> {
  const images = {} as Record<TableName, Uint8Array>;
  for (const t of TABLES) images[t] = inp.chance(200) ? corrupt(inp, b.images[t], RECORD[t], FIELDS[t]) : b.images[t];
  const before = fdCount();
  const openBefore = new Set(fs.readdirSync('/proc/self/fd'));
  const fds = { inodes: memfd(native, 'vfsd-fuzz-inodes', images.inodes), files: memfd(native, 'vfsd-fuzz-files', images.files), dirs: memfd(native, 'vfsd-fuzz-dirs', images.dirs) };
  // The keeper's fds, as it hands them to a new worker (some missing, some extra).
  const recovered = new Map<string, number>();
  for (const [k, fd] of b.keeper.fds) if (!inp.chance(24)) recovered.set(k, native.dup(fd));
  if (inp.chance(24)) {
    // An fd under a key it does not belong to (replacing the right one, if any).
    const k = inp.pick(['i2', 'i999', 'f1', 'd7', 'l2:1:1', 'l9999:3:4', 'm1', 'zz', 'i0', 'f0']);
    const old = recovered.get(k);
    if (old !== undefined) native.close(old);
    recovered.set(k, native.dup(b.keeper.fds.values().next().value!));
  }
  const keeper = new Keeper(native);
  let pfs: PassthroughFs;
  try {
    pfs = new PassthroughFs(native, options(b.dir, inp.pick(['prefer', 'never'] as const)), pino({ level: 'silent' }), { fds, registry: keeper, recovered });
  } catch (e) {
    // The worker refuses the image and exits; nothing else may come out of here.
    if (!isRefusal(e)) throw e;
    // The worker exits now: close what it had open, as its exit would.
    keeper.closeAll();
    for (const f of fs.readdirSync('/proc/self/fd')) if (!openBefore.has(f)) native.close(Number(f));
    return;
  }
  if (process.env.VFSD_FUZZ_TRACE) {
    const locks = pfs.locks.byNode;
    console.error('[state-recovery] adopted; keeper keys', [...b.keeper.fds.keys()], 'nodes', [...Array(16).keys()].map((n) => pfs.inodes.get(n)).filter(Boolean).map((i) => [i!.nodeid, i!.fd, i!.nlookup]),
      'files', [...pfs.files.all()].map((h) => [h.fh, h.nodeid, h.fd]), 'dirs', [...pfs.dirs.all()].map((h) => [h.fh, h.nodeid, h.fd]), 'lock owners', [...locks].map(([n, m]) => [n, [...m].map(([o, l]) => [String(o), l.fd])]));
  }
  try {
    // No host inode under two node ids.
    const seen = new Map<string, number>();
    const st = new BigUint64Array(17);
    const nodes: number[] = [];
    for (let n = 1; n < 64; n++) {
      const ino = pfs.inodes.get(n);
      if (!ino) continue;
      nodes.push(n);
      if (ino.fd < 0) continue;
      assert.ok(native.statFd(ino.fd, st) === 0, `node ${n}: its fd ${ino.fd} is not open`);
      const id = `${st[0]}:${st[1]}`;
      const other = seen.get(id);
      assert.ok(other === undefined, `nodes ${other} and ${n} both hold host inode ${id}`);
      seen.set(id, n);
    }
    // Every open file or dir is of the node it says (its ops use both).
    const st2 = new BigUint64Array(17);
    for (const h of [...pfs.files.all(), ...pfs.dirs.all()]) {
      const ino = pfs.inodes.get(h.nodeid);
      assert.ok(ino !== undefined, `fh ${h.fh} is of node ${h.nodeid}, which does not exist`);
      assert.ok(native.statFd(h.fd, st) === 0, `fh ${h.fh}: its fd is not open`);
      if (ino.fd >= 0) {
        assert.equal(native.statFd(ino.fd, st2), 0);
        assert.ok(st[0] === st2[0] && st[1] === st2[1], `fh ${h.fh} is open on another inode than its node ${h.nodeid}`);
      } else {
        assert.ok(st[0] === ino.dev && st[1] === ino.ino, `fh ${h.fh} is open on another inode than its (lost) node ${h.nodeid}`);
      }
    }
    const c = new FuseClient(directTransport(new FuseSession(pfs, pino({ level: 'silent' }), { probes: pfs, rangeIo: pfs })));
    await c.init();
    const root = await c.call(OP.FUSE_GETATTR, 1, [Buffer.alloc(SIZE.getattr_in)], SIZE.attr_out);
    assert.equal(root.error, 0, `GETATTR of the root after recovery: errno ${root.error}`);
    const handles = [...pfs.files.all()].map((h) => h.fh), dirHandles = [...pfs.dirs.all()].map((h) => h.fh);
    const u64 = (v: number): Buffer => { const x = Buffer.alloc(8); x.writeBigUInt64LE(BigInt(v)); return x; };
    const readIn = (fh: number): Buffer => { const x = Buffer.alloc(SIZE.read_in); x.writeBigUInt64LE(BigInt(fh), 0); x.writeUInt32LE(4096, 16); return x; };
    for (const n of nodes) {
      await c.call(OP.FUSE_GETATTR, n, [Buffer.alloc(SIZE.getattr_in)], SIZE.attr_out);
      await c.call(OP.FUSE_LOOKUP, n, [Buffer.from('b\0')], SIZE.entry_out);
      const o = await c.call(OP.FUSE_OPENDIR, n, [Buffer.alloc(SIZE.open_in)], SIZE.open_out);
      if (o.error === 0) dirHandles.push(Number(o.body.readBigUInt64LE(0)));
      const f = await c.call(OP.FUSE_OPEN, n, [Buffer.alloc(SIZE.open_in)], SIZE.open_out);
      if (f.error === 0) handles.push(Number(f.body.readBigUInt64LE(0)));
      await c.call(OP.FUSE_GETLK, n, [lk(handles[0] ?? 0, 7n)], SIZE.lk_out);
    }
    for (const fh of handles) {
      await c.call(OP.FUSE_READ, 1, [readIn(fh)], 4096);
      await c.call(OP.FUSE_RELEASE, 1, [Buffer.concat([u64(fh), Buffer.alloc(16)])], 0);
    }
    for (const fh of dirHandles) {
      await c.call(OP.FUSE_READDIRPLUS, 1, [readIn(fh)], 4096);
      await c.call(OP.FUSE_RELEASEDIR, 1, [Buffer.concat([u64(fh), Buffer.alloc(16)])], 0);
    }
    for (const n of nodes) await c.forget(n, 2 ** 40);
  } finally {
    pfs.close();
    keeper.closeAll();
  }
  if (fdCount() !== before && process.env.VFSD_FUZZ_TRACE) {
    console.error('[state-recovery] open fds:', fs.readdirSync('/proc/self/fd').map((f) => { try { return `${f}=${fs.readlinkSync(`/proc/self/fd/${f}`)}`; } catch { return f; } }).slice(-12));
  }
  assert.equal(fdCount(), before, 'fds left open after the recovered file system closed');
}

function rings(inp: FuzzInput, b: Base): void {
  const img = corrupt(inp, b.inflight, IL.desc, INFLIGHT_FIELDS);
  if (img.length >= 16) {
    const buf = new ArrayBuffer(img.length);
    new Uint8Array(buf).set(img);
    const r = new InflightRegion(buf);
    r.validate(inp.chance(200) ? QUEUE : inp.u16());
    try {
      const rec = r.recover(inp.chance(128) ? 5 : inp.u16());
      const n = r.descNum;
      assert.ok(rec.resubmit.every((h) => Number.isInteger(h) && h >= 0 && h < n), 'a head to re-run out of range');
      assert.equal(new Set(rec.resubmit).size, rec.resubmit.length, 'a head to re-run twice');
    } catch (e) {
      if (!(e instanceof Error && e.constructor === Error)) throw e;
    }
  }
  const j = corrupt(inp, b.journal, JL.record, JOURNAL_FIELDS);
  const jb = new ArrayBuffer(j.length & ~3);
  new Uint8Array(jb).set(j.subarray(0, jb.byteLength));
  const journal = new Journal(jb);
  if (journal.validate(QUEUE) === null) {
    for (let h = 0; h < QUEUE; h++) {
      const rec = journal.find(h, inp.pick([9, 10, inp.u32()]), 0, inp.pick([OP.FUSE_MKDIR, OP.FUSE_CREATE, inp.u32()]));
      if (rec) assert.ok(rec.body.length <= JOURNAL_MAX_REPLY);
    }
  }
}

function checker(inp: FuzzInput, native: NativeBinding, b: Base): void {
  // Named as the keeper names them, so check-state finds them among this process's fds.
  const fds: number[] = [];
  for (const t of TABLES) fds.push(memfd(native, `vfsd-${t}`, corrupt(inp, b.images[t], RECORD[t], FIELDS[t])));
  fds.push(memfd(native, 'vfsd-inflight-1', corrupt(inp, b.inflight, IL.desc, INFLIGHT_FIELDS)));
  fds.push(memfd(native, 'vfsd-journal-1', corrupt(inp, b.journal, JL.record, JOURNAL_FIELDS)));
  let dev = b.device;
  if (inp.chance(160)) {
    // Corrupt the JSON itself: numbers become other things.
    // The header's u32 words (DH): active slot, slot size, length of slot 0 / 1.
    const hv = new DataView(dev.buffer, dev.byteOffset, DEVICE_HEADER);
    const active = hv.getUint32(4 * DH.active, true), at = DEVICE_HEADER + active * hv.getUint32(4 * DH.slotBytes, true);
    const text = Buffer.from(dev.subarray(at, at + hv.getUint32(4 * (DH.len0 + active), true))).toString();
    const swapped = text.replace(/-?\d+(\.\d+)?/g, (m) => (inp.chance(64) ? inp.pick(['null', '"x"', '[]', '{}', '-1', '1e400', '0.5', m]) : m))
      .replace(/\[\]|\{\}|null/g, (m) => (inp.chance(32) ? inp.pick(['[null]', '{}', '1', m]) : m));
    const enc = Buffer.from(swapped);
    dev = dev.slice();
    dev.set(enc, at);
    new DataView(dev.buffer).setUint32(4 * (DH.len0 + active), enc.length, true);
  }
  fds.push(memfd(native, 'vfsd-device', corrupt(inp, dev, 1, Object.values(DH).map((w) => 4 * w))));
  try {
    const report = checkState(process.pid);
    assert.ok(Array.isArray(report.problems));
  } finally {
    for (const fd of fds) native.close(fd);
  }
}

export const stateRecoveryTarget: FuzzTarget = {
  name: 'state-recovery',
  about: 'a new worker adopting corrupted state regions (slot tables, keeper fds, in-flight, journal) and check-state reading them',
  maxLength: 1024,
  files: ['src/state/slot-table.ts', 'src/passthrough/inode-table.ts', 'src/passthrough/handle-table.ts', 'src/passthrough/recovery.ts', 'src/passthrough/locks.ts', 'src/state/inflight.ts', 'src/state/journal.ts', 'src/state/device-region.ts', 'src/tools/check-state.ts'],
  async setup() {
    if (!base) base = await makeBase(loadNative());
  },
  teardown() {
    // The base stays for the process (its tables are open); only its tree goes at exit.
  },
  async run(data) {
    const native = loadNative();
    if (!base) base = await makeBase(native);
    const inp = new FuzzInput(data);
    switch (inp.int(0, 3)) {
      case 0: case 1: await adopt(inp, native, base); break;
      case 2: rings(inp, base); break;
      default: checker(inp, native, base);
    }
  },
};

process.on('exit', () => { if (base) fs.rmSync(base.dir, { recursive: true, force: true }); });
