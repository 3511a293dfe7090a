// node dist/scripts/crash-steps.js [--rounds N] [--ops N]: what each crash-consistency step costs
// per request, in isolation, on the same shared-memory regions (memfds) the worker writes:
//   inflight    markInflight + prePut + postPut of one head (every request; state/inflight.ts)
//   stamp       wallMs32() alone (part of markInflight: the watchdog's "started" stamp)
//   journal     intent + done with a 16-byte reply body (non-idempotent requests; state/journal.ts)
//   slot        alloc + publish + release of a 192-byte inode record (a new inode; state/slot-table.ts)
//   fd-lazy     putLazy + del of one key before a flush: an open and release inside one flush
//               interval (state/fd-registry.ts; the batch's send is not included)
//   probe       fstatat of an existing name: the replay probe of CREATE (O_EXCL), MKDIR, MKNOD,
//               SYMLINK, LINK, UNLINK, RMDIR, RENAME (fuse/replay.ts nameIno)
//   handle      name_to_handle_at of a file: what a new inode costs so a new worker can open it
//               again (passthrough/inode-table.ts; --inode-file-handles=prefer, the default)
// Heads cycle over 32 (32 requests in flight). Each number is the median over the rounds of
// the mean CPU time (user + system) per op. The doc's table (docs/performance.md, "crash machinery") puts these next
// to the CPU per op of the bench's rows.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../src/native/binding';
import { sealedMemfd } from '../src/state/memfd';
import { InflightRegion, wallMs32 } from '../src/state/inflight';
import { Journal } from '../src/state/journal';
import { SlotTable, MemfdBacking } from '../src/state/slot-table';
import { BatchingFdRegistry } from '../src/state/fd-registry';
import { INODE_LAYOUT } from '../src/passthrough/inode-table';
import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, O_DIRECTORY, O_PATH, O_RDONLY } from '../src/linux/constants';

const native = loadNative();
const DEPTH = 32;
const QUEUE = 128;

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`invalid ${name}`);
  return v;
}
const ROUNDS = arg('--rounds', 5);
const OPS = arg('--ops', 200_000);

function region(bytes: number): ArrayBuffer {
  const fd = sealedMemfd(native, 'crash-steps', bytes);
  if (fd < 0) throw new Error(`memfd: ${fd}`);
  const m = native.mmap(fd, 0, bytes);
  if (typeof m === 'number') throw new Error(`mmap: ${m}`);
  return m;
}

/** Median over ROUNDS of the mean CPU ns per op of body(i) for i in [0, ops). */
function measure(ops: number, body: (i: number) => void): number {
  const per: number[] = [];
  for (let r = 0; r < ROUNDS + 1; r++) {
    // CPU time, not wall time: on a shared machine the loop is preempted, and that is not its cost.
    const t0 = process.cpuUsage();
    for (let i = 0; i < ops; i++) body(i);
    const t = process.cpuUsage(t0);
    const ns = ((t.user + t.system) * 1000) / ops;
    if (r > 0) per.push(ns); // round 0 warms the JIT
  }
  per.sort((a, b) => a - b);
  return per[per.length >> 1]!;
}

const rows: [string, number][] = [];

const inflight = new InflightRegion(region(InflightRegion.sizeFor(QUEUE)));
inflight.format(QUEUE);
let used = 0;
rows.push(['inflight', measure(OPS, (i) => {
  const h = i % DEPTH;
  inflight.markInflight(h);
  inflight.prePut(h);
  inflight.postPut(h, ++used);
})]);
let sink = 0;
rows.push(['stamp', measure(OPS, () => { sink ^= wallMs32(); })]);

const journal = new Journal(region(Journal.sizeFor(QUEUE)));
journal.format(QUEUE);
const body = new Uint8Array(16);
rows.push(['journal', measure(OPS, (i) => {
  const h = i % DEPTH;
  journal.intent(h, i, 0, 35, 1);
  journal.done(h, 0, body);
})]);

const slots = new SlotTable(new MemfdBacking(native, 'crash-steps-slots'), INODE_LAYOUT.record, 256, 1, 2);
rows.push(['slot', measure(OPS, () => {
  const s = slots.alloc();
  slots.dv.setUint32(slots.off(s) + 8, s, true);
  slots.publish(s);
  slots.release(s);
})]);

let sent = 0;
const reg = new BatchingFdRegistry((ops) => { sent += ops.length; }, () => {});
const keys = Array.from({ length: DEPTH }, (_, i) => `f${i}`);
rows.push(['fd-lazy', measure(OPS, (i) => {
  const k = keys[i % DEPTH]!;
  reg.putLazy(k, 3);
  reg.del(k);
})]);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-crash-steps-'));
try {
  fs.writeFileSync(path.join(dir, 'f'), '');
  const dfd = native.openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0);
  const st = new BigUint64Array(32);
  const fewer = Math.max(1, Math.floor(OPS / 10));
  rows.push(['probe', measure(fewer, () => { sink ^= native.stat(dfd, 'f', AT_SYMLINK_NOFOLLOW, st); })]);
  const out = new Uint8Array(256);
  const fh = native.nameToHandleAt(dfd, 'f', 0, out);
  if (fh >= 0) rows.push(['handle', measure(fewer, () => { sink ^= native.nameToHandleAt(dfd, 'f', 0, out); })]);
  else rows.push(['handle (unsupported here)', Number.NaN]);
  const pfd = native.openat(dfd, 'f', O_PATH, 0);
  native.close(pfd);
  native.close(dfd);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

process.stdout.write(`crash steps: ${ROUNDS} rounds × ${OPS} ops (probe, handle: ${Math.floor(OPS / 10)}), median of the rounds' mean CPU time per op; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n\n`);
process.stdout.write('| step | CPU ns per op |\n|---|---:|\n');
for (const [name, ns] of rows) process.stdout.write(`| ${name} | ${Number.isNaN(ns) ? '–' : ns.toFixed(0)} |\n`);
if (sink === 0.5 || sent < 0) process.stdout.write('\n'); // keep the loops' results alive
