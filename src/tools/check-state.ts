// The state checker: validates the crash-consistent state a keeper holds, from outside it.
//
// It finds the keeper's state memfds by their names in /proc/<pid>/fd ("/memfd:vfsd-inodes
// (deleted)", ...), reads each through /proc/<pid>/fd/N (a fresh open of the same memfd: the
// keeper is not disturbed) and checks what a restarted worker relies on:
//   - slot tables (vfsd-inodes, vfsd-files, vfsd-dirs): header (magic, version, record size,
//     kind, capacity within the file), every state word free or valid;
//   - inode records (128 bytes, or 192 in a table a release before made): a valid record has
//     nlookup > 0 (the root, slot 1, excepted), generation > 0, a file type, and no two valid
//     records name the same (dev, ino, mnt_id) (one host inode, one node id: Hanna Reitz, "Re:
//     [PATCH v3 08/10] virtiofsd: Add inodes_by_handle hash table", qemu-devel, 2021-08-10),
//     unless both have file handles and these differ: then they are two inodes, the host deleted
//     the first (no fd holds an inode held by handle) and gave its number to the second (noted);
//   - open-file and open-dir records point at a valid inode slot (of a directory for dirs);
//   - in-flight regions (vfsd-inflight-<q>): version, desc_num, size, last_batch_head; the number
//     of descriptors recorded in flight is counted (not a problem by itself);
//   - outcome journals (vfsd-journal-<q>): header (magic, version, desc_num = the ring's, record
//     size, size), record states and reply lengths; intent-only records on heads that are not in
//     flight (an outcome never recorded, harmless: nobody replays them) are noted;
//   - inode records with a file handle: the handle is well formed and opens (through an fd the
//     keeper holds on the record's mount: the root, or a submount's fd) the very (dev, ino)
//     recorded; one that no longer opens (ESTALE: deleted on
//     the host while nothing held it) is noted, not a problem: a restarted worker keeps its node
//     id reserved and answers EBADF on it;
//   - the keeper holds at least as many path fds as there are inode records without a file
//     handle (approximate: it counts /proc/<pid>/fd links that are paths, leaving out memfds,
//     sockets, eventfds, pipes, /dev and fds 0-2; open files, lock fds and leaked fds make it
//     larger, which is allowed). Open files and dirs need none: a restarted worker opens them
//     again from their inode when the keeper has no fd for them.
//   - the device state (vfsd-device): header, the published JSON, queue count, ring sizes (powers
//     of two, equal to the ring's in-flight region), guest memory regions that do not overlap;
// Only the state regions are read: never guest memory. Other vfsd-* memfds (regions this checker
// does not know) are listed and left alone.

import * as fs from 'node:fs';
import { SLOT_MAGIC, SLOT_VERSION, SLOT_FREE, SLOT_VALID, SLOT_HEADER, SLOT_STATE } from '../state/slot-table';
import { InflightRegion, INFLIGHT_LAYOUT } from '../state/inflight';
import { Journal, JOURNAL_LAYOUT, JOURNAL_MAGIC, JOURNAL_VERSION, JOURNAL_MAX_REPLY, J_EMPTY, J_INTENT, J_DONE } from '../state/journal';
import { INODE_LAYOUT, inodeLayoutOf } from '../passthrough/inode-table';
import { HANDLE_LAYOUT } from '../passthrough/handle-table';
import { loadNative, ST, type NativeBinding } from '../native/binding';
import { readDeviceState } from '../state/device-region';
import type { DeviceState } from '../vhost/backend';
import { readCounters } from '../state/counters';
import type { ParkRecord } from '../keeper/fd-park';
import { E, O_NOFOLLOW, O_PATH, S_IFDIR, S_IFMT } from '../linux/constants';

// Every layout comes from the module that writes it: the checker reads what the code writes.
const HEADER = SLOT_HEADER.bytes;
const { magic: H_MAGIC, version: H_VERSION, record: H_RECORD, capacity: H_CAPACITY, kind: H_KIND } = SLOT_HEADER;
// The offsets are the same in both record sizes (INODE_LAYOUT_V1); the size and handle room are
// read from the table's header.
const { kind: INODE_TABLE_KIND, gen: I_GEN, nlookup: I_NLOOKUP, dev: I_DEV, ino: I_INO, mnt: I_MNT, mode: I_MODE, handle: I_HANDLE } = INODE_LAYOUT;
/** MAX_HANDLE_SZ (linux/exportfs.h): the room a handle buffer needs. */
const HANDLE_BUF = 12 + 128;
const { record: HANDLE_RECORD, nodeid: H_NODEID, kindFile: KIND_FILE, kindDir: KIND_DIR } = HANDLE_LAYOUT;

/** The file types a record may name (inode(7) S_IFIFO ... S_IFSOCK). */
const FILE_TYPES = new Set([0o010000, 0o020000, 0o040000, 0o060000, 0o100000, 0o120000, 0o140000]);

export interface TableReport {
  name: string;
  fd: number;
  bytes: number;
  capacity: number;
  valid: number;
  /** Inode table: the sum of the valid records' nlookup (the guest's references). */
  nlookup?: number;
  /** Inode table: records held by file handle, and how many of those opened to their inode. */
  byHandle?: number;
  handlesOpened?: number;
}

export interface InflightReport {
  name: string;
  queue: number;
  fd: number;
  bytes: number;
  version: number;
  descNum: number;
  usedIdx: number;
  lastBatchHead: number;
  /** Descriptor heads recorded in flight (requests a restarted worker would re-run). */
  inflight: number[];
}

export interface JournalReport {
  name: string;
  queue: number;
  fd: number;
  bytes: number;
  descNum: number;
  /** Heads whose record holds an intent only / a recorded outcome. */
  intent: number[];
  done: number;
}

export interface DeviceReport {
  name: string;
  fd: number;
  /** Nothing published yet (no vhost-user message handled). */
  empty: boolean;
  features: string;
  protocolFeatures: string;
  regions: number;
  regionBytes: number;
  /** Queues the front-end started and enabled, with their sizes. */
  running: Array<{ queue: number; num: number }>;
}

export interface FdCounts {
  total: number;
  memfds: number;
  sockets: number;
  eventfds: number;
  /** Links that are paths (files and directories the keeper holds for the worker). */
  paths: number;
  other: number;
}

export interface Report {
  pid: number;
  tables: TableReport[];
  inflight: InflightReport[];
  journals: JournalReport[];
  device: DeviceReport | null;
  /** vfsd-* memfds this checker does not know how to validate. */
  unknown: Array<{ name: string; fd: number; bytes: number }>;
  fds: FdCounts;
  /** Valid inode records without a file handle: fds the keeper must hold at least. */
  expectedFds: number;
  problems: string[];
  notes: string[];
  clean: boolean;
}

interface Memfd { fd: number; name: string }

/** The keeper's memfds and fd counts, from /proc/<pid>/fd. */
function scanFds(pid: number): { memfds: Memfd[]; counts: FdCounts } {
  const dir = `/proc/${pid}/fd`;
  const counts: FdCounts = { total: 0, memfds: 0, sockets: 0, eventfds: 0, paths: 0, other: 0 };
  const memfds: Memfd[] = [];
  const seen = new Set<number>();
  for (const ent of fs.readdirSync(dir).sort((a, b) => Number(a) - Number(b))) {
    const fd = Number(ent);
    let link: string;
    try {
      link = fs.readlinkSync(`${dir}/${ent}`);
    } catch {
      continue; // closed while we looked
    }
    counts.total++;
    const m = /^\/memfd:(.*?)(?: \(deleted\))?$/.exec(link);
    if (m) {
      counts.memfds++;
      // The keeper may hold one memfd under two numbers (the fd store follows each fd it parks
      // with a duplicate, keeper/fd-park.ts): one region, checked once.
      let ino: number | undefined;
      try { ino = fs.statSync(`${dir}/${ent}`).ino; } catch { /* closed while we looked */ }
      if (ino !== undefined && seen.has(ino)) continue;
      if (ino !== undefined) seen.add(ino);
      memfds.push({ fd, name: m[1]! });
    } else if (link.startsWith('socket:')) counts.sockets++;
    else if (link === 'anon_inode:[eventfd]') counts.eventfds++;
    else if (link.startsWith('/') && !link.startsWith('/dev/') && fd > 2) counts.paths++;
    else counts.other++;
  }
  memfds.sort((a, b) => a.fd - b.fd);
  return { memfds, counts };
}

function readRegion(pid: number, fd: number): Buffer {
  return fs.readFileSync(`/proc/${pid}/fd/${fd}`);
}

/** Validate a slot table's header; returns its capacity, or -1 (with a problem) when unusable. */
function checkHeader(name: string, b: Buffer, record: number, kind: number, problems: string[]): number {
  if (b.length < HEADER) {
    problems.push(`${name}: ${b.length} bytes, shorter than the ${HEADER}-byte header`);
    return -1;
  }
  const magic = b.readUInt32LE(H_MAGIC), version = b.readUInt32LE(H_VERSION);
  const rec = b.readUInt32LE(H_RECORD), cap = b.readUInt32LE(H_CAPACITY), k = b.readUInt32LE(H_KIND);
  const bad: string[] = [];
  if (magic !== SLOT_MAGIC) bad.push(`magic 0x${magic.toString(16)}`);
  if (version !== SLOT_VERSION) bad.push(`version ${version}`);
  if (rec !== record) bad.push(`record size ${rec}, expected ${record}`);
  if (k !== kind) bad.push(`kind ${k}, expected ${kind}`);
  if (cap < 2) bad.push(`capacity ${cap}`);
  else if (HEADER + cap * rec > b.length) bad.push(`capacity ${cap} needs ${HEADER + cap * rec} bytes, region has ${b.length}`);
  if (bad.length > 0) {
    problems.push(`${name}: bad header: ${bad.join(', ')}`);
    return -1;
  }
  return cap;
}

/** Valid slots of a table, checking every state word. */
function validSlots(name: string, b: Buffer, record: number, cap: number, problems: string[]): number[] {
  const out: number[] = [];
  for (let s = 0; s < cap; s++) {
    const st = b.readInt32LE(HEADER + s * record + SLOT_STATE);
    if (st === SLOT_VALID) {
      if (s === 0) problems.push(`${name}: slot 0 (never handed out) is valid`);
      else out.push(s);
    } else if (st !== SLOT_FREE) {
      problems.push(`${name}: slot ${s} has state word ${st} (neither free nor valid)`);
    }
  }
  return out;
}

interface InodeInfo { mode: number; dev: bigint; ino: bigint; mnt: bigint; handle: Buffer | null }

function checkInodes(m: Memfd, b: Buffer, problems: string[], notes: string[]): { table: TableReport; inodes: Map<number, InodeInfo> } | null {
  const table: TableReport = { name: m.name, fd: m.fd, bytes: b.length, capacity: 0, valid: 0 };
  const inodes = new Map<number, InodeInfo>();
  if (b.length === 0) {
    notes.push(`${m.name}: empty (no worker has formatted it yet)`);
    return { table, inodes };
  }
  const layout = (b.length >= HEADER ? inodeLayoutOf(b.readUInt32LE(H_RECORD)) : undefined) ?? INODE_LAYOUT;
  const INODE_RECORD = layout.record, MAX_HANDLE = layout.maxHandle;
  const cap = checkHeader(m.name, b, INODE_RECORD, INODE_TABLE_KIND, problems);
  if (cap < 0) return null;
  table.capacity = cap;
  const byId = new Map<string, number[]>();
  table.nlookup = 0;
  for (const s of validSlots(m.name, b, INODE_RECORD, cap, problems)) {
    const o = HEADER + s * INODE_RECORD;
    const gen = b.readUInt32LE(o + I_GEN);
    const nlookup = b.readDoubleLE(o + I_NLOOKUP);
    const id = `${b.readBigUInt64LE(o + I_DEV)}:${b.readBigUInt64LE(o + I_INO)}:${b.readBigUInt64LE(o + I_MNT)}`;
    const mode = b.readUInt32LE(o + I_MODE);
    const hlen = b.readUInt32LE(o + I_HANDLE);
    if (hlen > MAX_HANDLE) problems.push(`${m.name}: node ${s} has a ${hlen}-byte file handle (at most ${MAX_HANDLE})`);
    if (s === 1 && hlen !== 0) problems.push(`${m.name}: the root (node 1) has a file handle; it must be held by fd`);
    if (gen === 0) problems.push(`${m.name}: node ${s} is valid with generation 0`);
    if (s !== 1 && !(nlookup > 0)) problems.push(`${m.name}: node ${s} is valid with nlookup ${nlookup}`);
    if (!Number.isInteger(nlookup) || nlookup < 0) problems.push(`${m.name}: node ${s} has nlookup ${nlookup}`);
    if (!FILE_TYPES.has(mode & S_IFMT)) problems.push(`${m.name}: node ${s} has mode 0${mode.toString(8)} (no file type)`);
    if (s === 1 && (mode & S_IFMT) !== S_IFDIR) problems.push(`${m.name}: the root (node 1) is not a directory (mode 0${mode.toString(8)})`);
    const handle = hlen > 0 && hlen <= MAX_HANDLE ? b.subarray(o + I_HANDLE, o + I_HANDLE + 8 + hlen) : null;
    const same = byId.get(id) ?? [];
    for (const other of same) {
      const oh = inodes.get(other)!.handle;
      if (handle !== null && oh !== null && !handle.equals(oh)) notes.push(`${m.name}: nodes ${other} and ${s} are two inodes (their handles differ) with number ${id}: the host deleted one and reused its number`);
      else problems.push(`${m.name}: nodes ${other} and ${s} both name host inode (dev:ino:mnt) ${id}`);
    }
    same.push(s);
    byId.set(id, same);
    inodes.set(s, { mode, dev: b.readBigUInt64LE(o + I_DEV), ino: b.readBigUInt64LE(o + I_INO), mnt: b.readBigUInt64LE(o + I_MNT), handle });
    table.nlookup += nlookup;
  }
  table.valid = inodes.size;
  table.byHandle = [...inodes.values()].filter((i) => i.handle !== null).length;
  if (inodes.size > 0 && !inodes.has(1)) problems.push(`${m.name}: ${inodes.size} valid nodes but no root (node 1)`);
  return { table, inodes };
}

/**
 * Open every recorded file handle through the keeper's root fd and compare the inode it names
 * with the record. Needs the native addon and CAP_DAC_READ_SEARCH; without them, noted.
 */
function resolveHandles(pid: number, inodes: Map<number, InodeInfo>, table: TableReport, problems: string[], notes: string[]): void {
  const withHandle = [...inodes].filter(([, i]) => i.handle !== null);
  if (withHandle.length === 0) return;
  let native: NativeBinding;
  try {
    native = loadNative();
  } catch (e) {
    notes.push(`file handles not opened: ${(e as Error).message}`);
    return;
  }
  // An fd open_by_handle_at takes, per mount: any directory or regular file the keeper holds
  // there (the root, a submount's fd), opened afresh through /proc.
  const mountFds = new Map<bigint, number>();
  for (const ent of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^mnt_id:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${ent}`, 'latin1'));
      if (!m || mountFds.has(BigInt(m[1]!))) continue;
      const st = fs.statSync(`/proc/${pid}/fd/${ent}`);
      const flags = st.isDirectory() ? fs.constants.O_RDONLY | fs.constants.O_DIRECTORY : st.isFile() ? fs.constants.O_RDONLY | fs.constants.O_NONBLOCK : -1;
      if (flags >= 0) mountFds.set(BigInt(m[1]!), fs.openSync(`/proc/${pid}/fd/${ent}`, flags));
    } catch { /* closed while we looked, or not openable */ }
  }
  const h = new Uint8Array(HANDLE_BUF);
  const st = new BigUint64Array(17);
  let opened = 0;
  const stale: number[] = [];
  try {
    for (const [s, i] of withHandle) {
      const mountFd = mountFds.get(i.mnt);
      if (mountFd === undefined) {
        problems.push(`${table.name}: node ${s} has a file handle on mount ${i.mnt}, but the keeper holds no fd on that mount to open it through`);
        continue;
      }
      h.set(i.handle!, 4);
      const fd = native.openByHandleAt(mountFd, h.subarray(0, 4 + i.handle!.length), O_PATH | O_NOFOLLOW);
      if (fd === -E.ESTALE || fd === -E.ENOENT) {
        stale.push(s);
        continue;
      }
      if (fd < 0) {
        notes.push(`file handles not opened: errno ${-fd}${fd === -E.EPERM ? ' (needs CAP_DAC_READ_SEARCH)' : ''}`);
        return;
      }
      const r = native.statFd(fd, st);
      native.close(fd);
      if (r < 0) problems.push(`${table.name}: node ${s}: fstat of its handle's inode failed: errno ${-r}`);
      else if (st[ST.dev] !== i.dev || st[ST.ino] !== i.ino) problems.push(`${table.name}: node ${s}: its file handle opens inode ${st[0]}:${st[1]}, the record says ${i.dev}:${i.ino}`);
      else opened++;
    }
  } finally {
    for (const fd of mountFds.values()) fs.closeSync(fd);
  }
  table.handlesOpened = opened;
  if (stale.length > 0) notes.push(`${table.name}: nodes whose file handle no longer opens (deleted on the host): ${stale.join(' ')}`);
}

function checkHandles(m: Memfd, b: Buffer, kind: number, inodes: Map<number, InodeInfo> | null, problems: string[], notes: string[]): TableReport | null {
  const table: TableReport = { name: m.name, fd: m.fd, bytes: b.length, capacity: 0, valid: 0 };
  if (b.length === 0) {
    notes.push(`${m.name}: empty (no worker has formatted it yet)`);
    return table;
  }
  const cap = checkHeader(m.name, b, HANDLE_RECORD, kind, problems);
  if (cap < 0) return null;
  table.capacity = cap;
  for (const fh of validSlots(m.name, b, HANDLE_RECORD, cap, problems)) {
    table.valid++;
    const nodeid = b.readUInt32LE(HEADER + fh * HANDLE_RECORD + H_NODEID);
    if (inodes === null) continue; // the inode table itself is unusable; already reported
    const ino = inodes.get(nodeid);
    if (ino === undefined) {
      problems.push(`${m.name}: fh ${fh} points at node ${nodeid}, which is not a valid inode`);
    } else if (kind === KIND_DIR && (ino.mode & S_IFMT) !== S_IFDIR) {
      problems.push(`${m.name}: fh ${fh} is an open dir on node ${nodeid}, which is not a directory`);
    } else if (kind === KIND_FILE && (ino.mode & S_IFMT) === S_IFDIR) {
      problems.push(`${m.name}: fh ${fh} is an open file on node ${nodeid}, which is a directory`);
    }
  }
  return table;
}

function checkInflight(m: Memfd, queue: number, b: Buffer, problems: string[]): InflightReport {
  const r: InflightReport = { name: m.name, queue, fd: m.fd, bytes: b.length, version: 0, descNum: 0, usedIdx: 0, lastBatchHead: 0, inflight: [] };
  if (b.length < INFLIGHT_LAYOUT.header) {
    problems.push(`${m.name}: ${b.length} bytes, too small for an in-flight region`);
    return r;
  }
  const ab = new ArrayBuffer(b.length);
  new Uint8Array(ab).set(b);
  const region = new InflightRegion(ab);
  r.version = region.version;
  r.descNum = region.descNum;
  r.usedIdx = region.usedIdx;
  r.lastBatchHead = region.lastBatchHead;
  const bad = region.validate();
  if (bad !== null) {
    problems.push(`${m.name}: ${bad}`);
    return r;
  }
  if (r.lastBatchHead >= r.descNum) problems.push(`${m.name}: last_batch_head ${r.lastBatchHead} out of range (desc_num ${r.descNum})`);
  for (let h = 0; h < r.descNum; h++) {
    const flag = region.flagOf(h);
    if (flag === 1) r.inflight.push(h);
    else if (flag !== 0) problems.push(`${m.name}: desc ${h} has inflight flag ${flag}`);
  }
  return r;
}

// Journal header and record (src/state/journal.ts).
const { header: J_HEADER, record: J_RECORD, magic: JH_MAGIC, version: JH_VERSION, descNum: JH_DESC_NUM, recordSize: JH_RECORD, state: JR_STATE, len: JR_LEN } = JOURNAL_LAYOUT;

function checkJournal(m: Memfd, queue: number, b: Buffer, problems: string[]): JournalReport {
  const r: JournalReport = { name: m.name, queue, fd: m.fd, bytes: b.length, descNum: 0, intent: [], done: 0 };
  if (b.length < J_HEADER) {
    problems.push(`${m.name}: ${b.length} bytes, shorter than the ${J_HEADER}-byte header`);
    return r;
  }
  const magic = b.readUInt32LE(JH_MAGIC), version = b.readUInt32LE(JH_VERSION);
  const n = b.readUInt32LE(JH_DESC_NUM), rec = b.readUInt32LE(JH_RECORD);
  const bad: string[] = [];
  if (magic !== JOURNAL_MAGIC) bad.push(magic === 0 ? 'not formatted' : `magic 0x${magic.toString(16)}`);
  else {
    if (version !== JOURNAL_VERSION) bad.push(`version ${version}`);
    if (rec !== J_RECORD) bad.push(`record size ${rec}, expected ${J_RECORD}`);
    if (n === 0 || n > 32768 || (n & (n - 1)) !== 0) bad.push(`desc_num ${n} is not a queue size`);
    else if (Journal.sizeFor(n) > b.length) bad.push(`desc_num ${n} needs ${Journal.sizeFor(n)} bytes, region has ${b.length}`);
  }
  if (bad.length > 0) {
    problems.push(`${m.name}: bad header: ${bad.join(', ')}`);
    return r;
  }
  r.descNum = n;
  for (let h = 0; h < n; h++) {
    const o = J_HEADER + h * J_RECORD;
    const st = b.readUInt32LE(o + JR_STATE);
    if (st === J_EMPTY) continue;
    if (st === J_INTENT) r.intent.push(h);
    else if (st === J_DONE) {
      r.done++;
      const len = b.readUInt32LE(o + JR_LEN);
      if (len > JOURNAL_MAX_REPLY) problems.push(`${m.name}: head ${h} records a ${len}-byte reply (at most ${JOURNAL_MAX_REPLY})`);
    } else problems.push(`${m.name}: head ${h} has record state ${st}`);
  }
  return r;
}

/** What in a parsed device state is not shaped as DeviceState (the fields checked below), or null. */
function deviceShape(s: unknown): string | null {
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  const count = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!isObj(s) || s.version !== 1) return 'version';
  for (const k of ['numQueues', 'features', 'protocolFeatures'] as const) if (!count(s[k])) return k;
  if (!Array.isArray(s.regions) || !s.regions.every((g) => isObj(g) && count(g.gpa) && count(g.size))) return 'regions';
  if (!Array.isArray(s.rings) || !s.rings.every((q) => isObj(q) && count(q.num))) return 'rings';
  return null;
}

/** The workers' counters (statistics only: nothing in them can be wrong, only unformatted). */
function describeCounters(m: Memfd, b: Buffer): string {
  const c = readCounters(new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength - (b.byteLength % 8))));
  if (!c) return `${m.name} (fd ${m.fd}): not formatted (no worker of protocol version 4 has served)`;
  const total = c.ops.reduce((n, o) => n + o.requests, 0);
  return `${m.name} (fd ${m.fd}): ${total} requests over ${c.ops.length} opcodes, ${c.bytesRead} bytes read, ${c.bytesWritten} written`;
}

/** The keeper's record for the fd store (keeper/fd-park.ts): readable, and naming every fd it uses. */
function checkParkRecord(m: Memfd, b: Buffer, notes: string[], problems: string[]): void {
  let rec: ParkRecord | null;
  try {
    rec = readDeviceState(b) as ParkRecord | null;
  } catch (e) {
    problems.push(`${m.name}: ${(e as Error).message}`);
    return;
  }
  if (!rec) { notes.push(`${m.name} (fd ${m.fd}): no record yet`); return; }
  if (rec.v !== 1 || !rec.handover || !Array.isArray(rec.names)) { problems.push(`${m.name}: not a keeper record of version 1`); return; }
  const named = new Set(rec.names.map(([fd]) => fd));
  const unnamed = rec.handover.fds.filter((fd) => fd !== rec!.handover.parkFd && !named.has(fd));
  if (unnamed.length > 0) problems.push(`${m.name}: the hand-over uses fds ${unnamed.join(' ')} that have no name in the fd store`);
  notes.push(`${m.name} (fd ${m.fd}): keeper record, ${rec.names.length} fds named in the service manager's fd store`);
}

function checkDevice(m: Memfd, b: Buffer, problems: string[]): DeviceReport {
  const r: DeviceReport = { name: m.name, fd: m.fd, empty: true, features: '0x0', protocolFeatures: '0x0', regions: 0, regionBytes: 0, running: [] };
  let s: DeviceState | null;
  try {
    s = readDeviceState(b) as DeviceState | null;
  } catch (e) {
    problems.push(`${m.name}: ${(e as Error).message}`);
    return r;
  }
  if (s === null) return r;
  r.empty = false;
  const bad = deviceShape(s);
  if (bad !== null) {
    problems.push(`${m.name}: not a device state of version 1: ${bad}`);
    return r;
  }
  r.features = `0x${s.features.toString(16)}`;
  r.protocolFeatures = `0x${s.protocolFeatures.toString(16)}`;
  r.regions = s.regions.length;
  if (s.rings.length !== s.numQueues) problems.push(`${m.name}: ${s.rings.length} rings for ${s.numQueues} queues`);
  const byGpa = [...s.regions].sort((a, b) => a.gpa - b.gpa);
  byGpa.forEach((g, i) => {
    r.regionBytes += g.size;
    if (!(g.size > 0)) problems.push(`${m.name}: memory region at gpa 0x${g.gpa.toString(16)} has size ${g.size}`);
    const next = byGpa[i + 1];
    if (next && g.gpa + g.size > next.gpa) problems.push(`${m.name}: memory regions at gpa 0x${g.gpa.toString(16)} and 0x${next.gpa.toString(16)} overlap`);
  });
  s.rings.forEach((q, i) => {
    if (q.num !== 0 && (q.num > 32768 || (q.num & (q.num - 1)) !== 0)) problems.push(`${m.name}: ring ${i} has size ${q.num}, not a power of two up to 32768`);
    if (q.started && q.enabled && q.addr && q.num > 0) r.running.push({ queue: i, num: q.num });
  });
  return r;
}

/** Validate the state a keeper (pid) holds. Throws when /proc/<pid>/fd cannot be read. */
export function checkState(pid: number): Report {
  const { memfds, counts } = scanFds(pid);
  const problems: string[] = [];
  const notes: string[] = [];
  const tables: TableReport[] = [];
  const inflight: InflightReport[] = [];
  const journals: JournalReport[] = [];
  const unknown: Report['unknown'] = [];
  let device: DeviceReport | null = null;
  const read = (m: Memfd): Buffer | null => {
    try {
      return readRegion(pid, m.fd);
    } catch (e) {
      problems.push(`${m.name} (fd ${m.fd}): cannot read: ${(e as Error).message}`);
      return null;
    }
  };
  const named = (n: string): Memfd[] => memfds.filter((m) => m.name === n);
  const one = (n: string): Memfd | null => {
    const all = named(n);
    if (all.length === 0) {
      problems.push(`no ${n} memfd among the keeper's fds`);
      return null;
    }
    if (all.length > 1) problems.push(`${all.length} ${n} memfds (fds ${all.map((x) => x.fd).join(', ')}); checking fd ${all[0]!.fd}`);
    return all[0]!;
  };

  let inodes: Map<number, InodeInfo> | null = null;
  const mi = one('vfsd-inodes');
  if (mi) {
    const b = read(mi);
    const r = b === null ? null : checkInodes(mi, b, problems, notes);
    if (r) {
      tables.push(r.table);
      inodes = r.inodes;
      resolveHandles(pid, inodes, r.table, problems, notes);
    }
  }
  for (const [n, kind] of [['vfsd-files', KIND_FILE], ['vfsd-dirs', KIND_DIR]] as const) {
    const m = one(n);
    if (!m) continue;
    const b = read(m);
    const t = b === null ? null : checkHandles(m, b, kind, inodes, problems, notes);
    if (t) tables.push(t);
  }
  const queues = new Set<number>();
  for (const m of memfds) {
    const q = /^vfsd-inflight-(\d+)$/.exec(m.name);
    if (q) {
      const queue = Number(q[1]);
      if (queues.has(queue)) problems.push(`more than one in-flight region for queue ${queue}`);
      queues.add(queue);
      const b = read(m);
      if (b !== null) inflight.push(checkInflight(m, queue, b, problems));
    } else if (/^vfsd-journal-\d+$/.test(m.name)) {
      const b = read(m);
      if (b !== null) journals.push(checkJournal(m, Number(m.name.slice('vfsd-journal-'.length)), b, problems));
    } else if (m.name === 'vfsd-device') {
      if (device) problems.push(`more than one vfsd-device memfd`);
      const b = read(m);
      if (b !== null) device = checkDevice(m, b, problems);
    } else if (m.name === 'vfsd-counters') {
      const b = read(m);
      if (b !== null) notes.push(describeCounters(m, b));
    } else if (m.name === 'vfsd-keeper') {
      const b = read(m);
      if (b !== null) checkParkRecord(m, b, notes, problems);
    } else if (m.name.startsWith('vfsd-') && !['vfsd-inodes', 'vfsd-files', 'vfsd-dirs'].includes(m.name)) {
      let bytes = -1;
      try { bytes = fs.statSync(`/proc/${pid}/fd/${m.fd}`).size; } catch { /* gone */ }
      unknown.push({ name: m.name, fd: m.fd, bytes });
      notes.push(`${m.name} (fd ${m.fd}): not a region this checker knows; not checked`);
    }
  }
  inflight.sort((a, b) => a.queue - b.queue);
  journals.sort((a, b) => a.queue - b.queue);
  for (const j of journals) {
    if (j.descNum === 0) continue;
    const q = inflight.find((x) => x.queue === j.queue);
    if (q && q.descNum !== 0 && q.descNum !== j.descNum) problems.push(`${j.name}: desc_num ${j.descNum}, the ring's in-flight region says ${q.descNum}`);
    const idle = j.intent.filter((h) => !q?.inflight.includes(h));
    if (idle.length > 0) notes.push(`${j.name}: intent without outcome on heads not in flight (${idle.join(' ')}): completed without a recorded outcome`);
  }

  const dev = device as DeviceReport | null;
  if (!dev) problems.push('no vfsd-device memfd among the keeper\'s fds');
  for (const run of dev?.running ?? []) {
    const q = inflight.find((x) => x.queue === run.queue);
    if (q && q.descNum !== 0 && q.descNum !== run.num) problems.push(`${q.name}: desc_num ${q.descNum}, the running ring ${run.queue} has ${run.num} descriptors`);
  }
  const it = tables.find((t) => t.name === 'vfsd-inodes');
  const expectedFds = it ? it.valid - (it.byHandle ?? 0) : 0;
  if (counts.paths < expectedFds) {
    problems.push(`the keeper holds ${counts.paths} path fds, fewer than the ${expectedFds} inode records without a file handle need`);
  }
  return { pid, tables, inflight, journals, device, unknown, fds: counts, expectedFds, problems, notes, clean: problems.length === 0 };
}

/** The short human report (ends with `state: clean` or `state: N problems`). */
export function formatReport(r: Report): string {
  const lines: string[] = [`keeper pid ${r.pid}`];
  const d = r.device;
  if (d) {
    lines.push(d.empty ? `  ${d.name.padEnd(18)} fd ${String(d.fd).padEnd(4)} nothing published yet`
      : `  ${d.name.padEnd(18)} fd ${String(d.fd).padEnd(4)} features ${d.features}, protocol features ${d.protocolFeatures}, ` +
        `${d.regions} memory regions (${(d.regionBytes / 1048576).toFixed(0)} MiB), running rings ${d.running.map((x) => `${x.queue} (${x.num})`).join(', ') || 'none'}`);
  }
  for (const t of r.tables) lines.push(`  ${t.name.padEnd(18)} fd ${String(t.fd).padEnd(4)} ${t.bytes} bytes, capacity ${t.capacity}, ${t.valid} valid${t.nlookup !== undefined ? ` (nlookup total ${t.nlookup})` : ''}` +
    (t.byHandle ? `, ${t.byHandle} by file handle (${t.handlesOpened ?? 0} opened and matched)` : ''));
  for (const q of r.inflight) {
    lines.push(`  ${q.name.padEnd(18)} fd ${String(q.fd).padEnd(4)} version ${q.version}, desc_num ${q.descNum}, used_idx ${q.usedIdx}, ` +
      `last_batch_head ${q.lastBatchHead}, ${q.inflight.length} in flight${q.inflight.length > 0 ? ` (heads ${q.inflight.join(' ')})` : ''}`);
  }
  for (const j of r.journals) {
    lines.push(`  ${j.name.padEnd(18)} fd ${String(j.fd).padEnd(4)} desc_num ${j.descNum}, ${j.done} outcomes, ${j.intent.length} intents without outcome`);
  }
  const f = r.fds;
  lines.push(`  fds: ${f.total} total: ${f.paths} paths (need >= ${r.expectedFds}), ${f.memfds} memfds, ${f.sockets} sockets, ${f.eventfds} eventfds, ${f.other} other`);
  for (const n of r.notes) lines.push(`  note: ${n}`);
  for (const p of r.problems) lines.push(`  PROBLEM: ${p}`);
  lines.push(r.clean ? 'state: clean' : `state: ${r.problems.length} problems`);
  return lines.join('\n');
}
