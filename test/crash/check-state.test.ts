// The state checker against state images made by hand: this test process plays the keeper (it
// holds memfds named like the keeper's), so every rule the checker enforces can be broken on
// purpose and the report compared. Also the CLI's exit codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { checkState, formatReport } from '../../src/tools/check-state';
import { SLOT_MAGIC, SLOT_VERSION, SLOT_HEADER, SLOT_STATE } from '../../src/state/slot-table';
import { INODE_LAYOUT } from '../../src/passthrough/inode-table';
import { HANDLE_LAYOUT } from '../../src/passthrough/handle-table';
import { JOURNAL_LAYOUT } from '../../src/state/journal';
import { S_IFDIR, S_IFREG } from '../../src/linux/constants';
import { InflightRegion } from '../../src/state/inflight';
import { Journal } from '../../src/state/journal';
import { REPO } from '../support/daemon';
import { DeviceRegion } from '../../src/state/device-region';
import { initialDeviceState, type DeviceState } from '../../src/vhost/backend';

const native = loadNative();
// The images are written with the layouts the daemon's own modules export.
const I = INODE_LAYOUT, HL = HANDLE_LAYOUT, SH = SLOT_HEADER;
const INODE_RECORD = I.record, INODE_TABLE_KIND = I.kind, HANDLE_RECORD = HL.record;
const slotAt = (record: number, slot: number): number => SH.bytes + slot * record;

function table(record: number, kind: number, capacity: number): Buffer {
  const b = Buffer.alloc(SH.bytes + record * capacity);
  b.writeUInt32LE(SLOT_MAGIC, SH.magic);
  b.writeUInt32LE(SLOT_VERSION, SH.version);
  b.writeUInt32LE(record, SH.record);
  b.writeUInt32LE(capacity, SH.capacity);
  b.writeUInt32LE(kind, SH.kind);
  return b;
}
function inode(b: Buffer, slot: number, o: { state?: number; gen?: number; nlookup?: number; ino: number; mode: number }): void {
  const at = slotAt(INODE_RECORD, slot);
  b.writeInt32LE(o.state ?? 1, at + SLOT_STATE);
  b.writeUInt32LE(o.gen ?? 1, at + I.gen);
  b.writeDoubleLE(o.nlookup ?? 1, at + I.nlookup);
  b.writeBigUInt64LE(2049n, at + I.dev);
  b.writeBigUInt64LE(BigInt(o.ino), at + I.ino);
  b.writeBigUInt64LE(21n, at + I.mnt);
  b.writeUInt32LE(o.mode, at + I.mode);
}
function handle(b: Buffer, fh: number, nodeid: number): void {
  const at = slotAt(HANDLE_RECORD, fh);
  b.writeInt32LE(1, at + SLOT_STATE);
  b.writeUInt32LE(nodeid, at + HL.nodeid);
}

/** Hold memfds named like the keeper's, with these contents, while fn runs. */
function withRegions(regions: Record<string, Buffer>, extraPathFds: number, fn: () => void): void {
  const fds: number[] = [];
  try {
    for (const [name, content] of Object.entries(regions)) {
      const fd = native.memfdCreate(name, 0);
      assert.ok(fd >= 0);
      fds.push(fd);
      fs.writeSync(fd, content, 0, content.length, 0);
    }
    for (let i = 0; i < extraPathFds; i++) fds.push(fs.openSync(REPO, 'r'));
    fn();
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
}

function inflight(queueSize: number, heads: number[], version = 1): Buffer {
  const ab = new ArrayBuffer(InflightRegion.sizeFor(queueSize));
  const r = new InflightRegion(ab);
  r.format(queueSize, 0);
  for (const h of heads) r.markInflight(h);
  const b = Buffer.from(ab);
  if (version !== 1) b.writeUInt16LE(version, 8);
  return b;
}
function journal(queueSize: number): Buffer {
  const ab = new ArrayBuffer(Journal.sizeFor(queueSize));
  new Journal(ab).format(queueSize);
  return Buffer.from(ab);
}

/** A vfsd-device region's bytes holding state (as the keeper publishes it). */
function deviceRegion(edit: (s: DeviceState) => void = () => {}): Buffer {
  const s = initialDeviceState(2);
  s.features = 0x140000000;
  s.regions.push({ gpa: 0, size: 0xa0000, uaddr: 0x7f0000000000, mmapOffset: 0, fd: 20 }, { gpa: 0x100000, size: 0x7f00000, uaddr: 0x7f0000100000, mmapOffset: 0x100000, fd: 20 });
  for (const q of [0, 1]) Object.assign(s.rings[q]!, { num: 128, addr: { flags: 0, descVa: 1, usedVa: 2, availVa: 3, logGpa: 0 }, started: true, enabled: true, kickFd: 30 + q });
  edit(s);
  const r = new DeviceRegion(native);
  assert.ok(r.write(s));
  const b = fs.readFileSync(`/proc/self/fd/${r.fd}`);
  fs.closeSync(r.fd);
  return b;
}

function goodImage(): Record<string, Buffer> {
  const inodes = table(INODE_RECORD, INODE_TABLE_KIND, 8);
  inode(inodes, 1, { ino: 2, mode: S_IFDIR | 0o755 });
  inode(inodes, 2, { ino: 12, mode: S_IFREG | 0o644, nlookup: 3, gen: 2 });
  inode(inodes, 3, { ino: 13, mode: S_IFDIR | 0o755 });
  const files = table(HANDLE_RECORD, HL.kindFile, 4);
  handle(files, 1, 2);
  const dirs = table(HANDLE_RECORD, HL.kindDir, 4);
  handle(dirs, 1, 3);
  return {
    'vfsd-inodes': inodes, 'vfsd-files': files, 'vfsd-dirs': dirs,
    'vfsd-inflight-0': inflight(128, []), 'vfsd-inflight-1': inflight(128, [3, 7]),
    'vfsd-journal-0': journal(128), 'vfsd-journal-1': journal(128),
    'vfsd-device': deviceRegion(),
  };
}

test('a well-formed state image is clean; in-flight heads are counted', () => {
  withRegions(goodImage(), 5, () => {
    const r = checkState(process.pid);
    assert.deepEqual(r.problems, [], formatReport(r));
    assert.ok(r.clean);
    assert.deepEqual(r.tables.map((t) => [t.name, t.valid]), [['vfsd-inodes', 3], ['vfsd-files', 1], ['vfsd-dirs', 1]]);
    assert.equal(r.tables[0]!.nlookup, 5);
    assert.deepEqual(r.inflight.map((q) => [q.queue, q.descNum, q.inflight]), [[0, 128, []], [1, 128, [3, 7]]]);
    assert.deepEqual(r.journals.map((j) => [j.queue, j.descNum]), [[0, 128], [1, 128]]);
    assert.equal(r.expectedFds, 3, 'one fd per inode without a file handle; open files and dirs need none');
    assert.deepEqual(r.device?.running, [{ queue: 0, num: 128 }, { queue: 1, num: 128 }]);
    assert.equal(r.device?.regions, 2);
    assert.ok(r.fds.paths >= 3);
    assert.match(formatReport(r), /\nstate: clean$/);
  });
});

test('every broken rule is reported', () => {
  const img = goodImage();
  const inodes = img['vfsd-inodes']!;
  inode(inodes, 4, { ino: 14, mode: S_IFREG | 0o644, nlookup: 0 });   // valid with nlookup 0
  inode(inodes, 5, { ino: 12, mode: S_IFREG | 0o644 });               // same host inode as node 2
  inode(inodes, 6, { ino: 16, mode: S_IFREG | 0o644, gen: 0 });       // generation 0
  inodes.writeInt32LE(7, slotAt(INODE_RECORD, 7) + SLOT_STATE);       // state word neither 0 nor 1
  handle(img['vfsd-files']!, 2, 9);                                   // open file on no valid node
  handle(img['vfsd-dirs']!, 2, 2);                                    // open dir on a regular file
  img['vfsd-inflight-0'] = inflight(128, [], 3);                      // unknown version
  img['vfsd-journal-1']!.writeUInt32LE(0xdeadbeef, JOURNAL_LAYOUT.magic); // bad magic
  img['vfsd-device'] = deviceRegion((d) => {
    d.rings[0]!.num = 64;                                             // in-flight region says 128
    d.rings[1]!.num = 100;                                            // not a power of two
    d.regions[1]!.gpa = 0x90000;                                      // overlaps the first
  });
  withRegions(img, 0, () => {
    const r = checkState(process.pid);
    const text = formatReport(r);
    const expect = [
      /vfsd-inodes: slot 7 has state word 7/,
      /vfsd-inodes: node 4 is valid with nlookup 0/,
      /vfsd-inodes: nodes 2 and 5 both name host inode \(dev:ino:mnt\) 2049:12:21/,
      /vfsd-inodes: node 6 is valid with generation 0/,
      /vfsd-files: fh 2 points at node 9, which is not a valid inode/,
      /vfsd-dirs: fh 2 is an open dir on node 2, which is not a directory/,
      /vfsd-inflight-0: inflight region version 3/,
      /vfsd-journal-1: bad header: magic 0xdeadbeef/,
      /vfsd-inflight-0: desc_num 128, the running ring 0 has 64 descriptors/,
      /vfsd-device: ring 1 has size 100, not a power of two/,
      /vfsd-device: memory regions at gpa 0x0 and 0x90000 overlap/,
    ];
    for (const re of expect) assert.ok(r.problems.some((p) => re.test(p)), `${re} not reported:\n${text}`);
    assert.ok(!r.clean);
    assert.match(text, new RegExp(`\\nstate: ${r.problems.length} problems$`));
  });
});

test('a bad header or a missing region is reported, not thrown', () => {
  const img = goodImage();
  img['vfsd-files']!.writeUInt32LE(1000, 12); // capacity past the region
  delete img['vfsd-dirs'];
  delete img['vfsd-device'];
  withRegions(img, 5, () => {
    const r = checkState(process.pid);
    assert.ok(r.problems.some((p) => /vfsd-files: bad header: capacity 1000 needs/.test(p)), formatReport(r));
    assert.ok(r.problems.some((p) => /no vfsd-dirs memfd/.test(p)), formatReport(r));
    assert.ok(r.problems.some((p) => /no vfsd-device memfd/.test(p)), formatReport(r));
  });
});

test('a device state of the wrong shape is reported, not thrown (found by fuzzing)', () => {
  const cases: Array<[string, (s: DeviceState) => void]> = [
    ['features', (s) => { (s as unknown as Record<string, unknown>).features = null; }],
    ['rings', (s) => { (s.rings as unknown[])[1] = null; }],
    ['regions', (s) => { (s.regions as unknown[]).push('x'); }],
    ['numQueues', (s) => { (s as unknown as Record<string, unknown>).numQueues = -1; }],
  ];
  for (const [what, edit] of cases) {
    const img = goodImage();
    img['vfsd-device'] = deviceRegion(edit);
    withRegions(img, 5, () => {
      const r = checkState(process.pid);
      assert.ok(r.problems.some((p) => p === `vfsd-device: not a device state of version 1: ${what}`), formatReport(r));
    });
  }
});

test('the keeper must hold a path fd per inode record without a file handle', () => {
  withRegions(goodImage(), 0, () => {
    const r = checkState(process.pid);
    const reported = r.problems.some((p) => /path fds, fewer than the 3 inode records without a file handle need/.test(p));
    assert.equal(reported, r.fds.paths < 3, formatReport(r));
  });
});

/** statx's mnt_id of a path (what the daemon records). */
function mntIdOf(p: string): bigint {
  const st = new BigUint64Array(17);
  assert.equal(native.stat(-100, p, 0x100 /* AT_SYMLINK_NOFOLLOW */, st), 0);
  return st[16]!;
}

test('file handles in inode records are opened and must name the recorded inode', () => {
  const dir = fs.mkdtempSync('/tmp/vfsd-checkfh-');
  const rootFd = fs.openSync(dir, 'r');
  try {
    const root = fs.statSync(dir, { bigint: true });
    const inodes = table(INODE_RECORD, INODE_TABLE_KIND, 8);
    const put = (slot: number, name: string | null, o: { ino?: bigint; handleLen?: number; otherGeneration?: boolean } = {}): void => {
      const at = slotAt(INODE_RECORD, slot);
      const p = name === null ? dir : path.join(dir, name);
      const st = fs.statSync(p, { bigint: true });
      inodes.writeInt32LE(1, at + SLOT_STATE);
      inodes.writeUInt32LE(1, at + I.gen);
      inodes.writeDoubleLE(1, at + I.nlookup);
      inodes.writeBigUInt64LE(st.dev, at + I.dev);
      inodes.writeBigUInt64LE(o.ino ?? st.ino, at + I.ino);
      inodes.writeBigUInt64LE(mntIdOf(p), at + I.mnt);
      inodes.writeUInt32LE(Number(st.mode), at + I.mode);
      if (name === null) return;
      const h = new Uint8Array(12 + 128 /* MAX_HANDLE_SZ */);
      const n = native.nameToHandleAt(rootFd, name, 0, h);
      assert.ok(n > 12, `name_to_handle_at: ${n}`);
      // The handle of an earlier inode with the same number (deleted, its number reused).
      if (o.otherGeneration) h[n - 1] ^= 0xff;
      inodes.set(h.subarray(4, n), at + I.handle);
      if (o.handleLen !== undefined) inodes.writeUInt32LE(o.handleLen, at + I.handle);
    };
    for (const f of ['a', 'b', 'gone']) fs.writeFileSync(path.join(dir, f), f);
    put(1, null);
    put(2, 'a');
    put(3, 'gone');
    fs.unlinkSync(path.join(dir, 'gone'));
    const img = { ...goodImage(), 'vfsd-inodes': inodes, 'vfsd-files': table(HANDLE_RECORD, HL.kindFile, 4), 'vfsd-dirs': table(HANDLE_RECORD, HL.kindDir, 4) };
    withRegions(img, 0, () => {
      const r = checkState(process.pid);
      assert.deepEqual(r.problems, [], formatReport(r));
      assert.equal(r.tables[0]!.byHandle, 2);
      assert.equal(r.tables[0]!.handlesOpened, 1);
      assert.equal(r.expectedFds, 1, 'only the root needs an fd');
      assert.ok(r.notes.some((n) => /file handle no longer opens \(deleted on the host\): 3$/.test(n)), formatReport(r));
      assert.equal(root.ino, fs.fstatSync(rootFd, { bigint: true }).ino);
    });
    put(4, 'b', { ino: 999999n });        // the handle opens another inode than the record's
    put(5, 'a', { handleLen: 4096 });     // longer than any handle
    withRegions({ ...img, 'vfsd-inodes': inodes }, 0, () => {
      const r = checkState(process.pid);
      const text = formatReport(r);
      assert.ok(r.problems.some((p) => /node 4: its file handle opens inode \d+:\d+, the record says \d+:999999/.test(p)), text);
      assert.ok(r.problems.some((p) => /node 5 has a 4096-byte file handle/.test(p)), text);
    });
    // Two records of one inode number whose handles differ are two inodes: noted, not a problem;
    // two with the same handle are one inode with two node ids.
    inodes.fill(0, slotAt(INODE_RECORD, 4));
    put(4, 'b');
    put(5, 'b', { otherGeneration: true });
    withRegions({ ...img, 'vfsd-inodes': inodes }, 0, () => {
      const r = checkState(process.pid);
      assert.ok(!r.problems.some((p) => /both name host inode/.test(p)), formatReport(r));
      assert.ok(r.notes.some((n) => /nodes 4 and 5 are two inodes \(their handles differ\)/.test(n)), formatReport(r));
    });
    put(5, 'b');
    withRegions({ ...img, 'vfsd-inodes': inodes }, 0, () => {
      const r = checkState(process.pid);
      assert.ok(r.problems.some((p) => /nodes 4 and 5 both name host inode/.test(p)), formatReport(r));
    });
  } finally {
    fs.closeSync(rootFd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('virtiofsd-ts check-state --pid: exit 0 when clean, 1 with problems, 2 on bad usage', () => {
  const bin = path.join(REPO, 'bin', 'virtiofsd-ts');
  const cli = (...args: string[]) => spawnSync(process.execPath, [bin, 'check-state', ...args], { encoding: 'utf8' });
  withRegions(goodImage(), 5, () => {
    const r = cli('--pid', String(process.pid));
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /vfsd-inodes .* 3 valid/);
    assert.match(r.stdout, /state: clean\n$/);
  });
  const bad = goodImage();
  handle(bad['vfsd-files']!, 2, 9);
  withRegions(bad, 8, () => {
    const r = cli(`--pid=${process.pid}`);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /PROBLEM: vfsd-files: fh 2 points at node 9/);
    assert.match(r.stdout, /state: 1 problems\n$/);
  });
  assert.equal(cli().status, 2);
  assert.equal(cli('--pid', 'x').status, 2);
  assert.equal(cli('--pid', '999999999').status, 2);
});
