// npm run bench: our daemon and the C virtiofsd side by side, through the project's own vhost-user
// front-end (test/support/frontend.ts) running in this process.
//
// Three columns, each a separate daemon process serving a fresh temp dir, run one after the other
// (never two daemons at once):
//   c      /usr/lib/qemu/virtiofsd -o cache=auto (default --thread-pool-size=0: each queue's
//          thread serves its requests inline)
//   ts     ./bin/virtiofsd-ts with default flags (thread pool 4)
//   ts-p0  ./bin/virtiofsd-ts --thread-pool-size=0 (READ/WRITE on the event loop)
//   ts-nosb ./bin/virtiofsd-ts --sandbox=none --seccomp=none (not by default: --sandbox-cost
//          runs ts beside it and adds a table of what the worker sandbox and its seccomp cost)
//
// Workloads, each at 1 and at 32 requests in flight on request queue 1 (queue size 128):
//   getattr  GETATTR of a file
//   lookup   LOOKUP of an existing name in the root (a FORGET on hiprio every 1024 lookups)
//   read4k   4 KiB READ at a random 4 KiB-aligned offset of a 64 MiB file in the page cache
//   write4k  4 KiB WRITE, same offsets and file
//   read1m   1 MiB READ (256 device-writable 4 KiB buffers, as a Linux guest lays out its pages)
// Each cell: a warm-up, then a fixed duration. Per cell: ops/s, p50/p99 latency seen by the
// front-end, the daemon's CPU time per op (utime+stime of its process tree from /proc, CLK_TCK
// granularity) and the front-end's (this process) CPU time per op.
//
// Arguments: --duration SECONDS (default 3), --warmup SECONDS (default 0.5),
//   --only getattr,read4k,... , --json FILE,
//   --rounds N (median of N interleaved rounds), --depths 1,32, --peers c,ts,ts-p0,ts-nosb,
//   --sandbox-cost (= --peers ts,ts-nosb, and the cost table),
//   --profile DIR (run our daemons under node --cpu-prof, profiles written to DIR on exit),
//   --node-flags '...' (more node flags for our daemons, e.g. --perf-basic-prof for perf(1)).

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { execFileSync } from 'node:child_process';
import { loadNative, type NativeBinding } from '../src/native/binding';
import { OP, SIZE } from '../src/fuse/abi';
import { startDaemon, C_VIRTIOFSD, type Daemon, type Peer } from '../test/support/daemon';
import { VhostUserFrontend } from '../test/support/frontend';
import { FuseClient } from '../test/support/fuse-client';
import { treeCpuTicks } from '../test/support/proc-stat';

const FILE_SIZE = 64 * 1024 * 1024;
const PAGE = 4096;
const MIB = 1024 * 1024;
const QUEUE_SIZE = 256;
const RAM_SIZE = 96 * MIB; // 32 x 1 MiB in flight + tables + rings, with room to spare
const MAX_SAMPLES = 2_000_000; // bound per cell (a cell also ends at this many ops)
const FORGET_EVERY = 1024;
const CLK_TCK = 100;

const WORKLOADS = ['getattr', 'lookup', 'read4k', 'write4k', 'read1m'] as const;
type Workload = (typeof WORKLOADS)[number];

interface Column { name: string; peer: Peer; args: string[]; label: string }
const COLUMNS: Column[] = [
  { name: 'c', peer: 'c', args: ['-o', 'cache=auto'], label: 'C virtiofsd (-o cache=auto)' },
  { name: 'ts', peer: 'ts', args: [], label: 'virtiofsd-ts (defaults: thread pool 4)' },
  { name: 'ts-p0', peer: 'ts', args: ['--thread-pool-size=0'], label: 'virtiofsd-ts --thread-pool-size=0' },
  { name: 'ts-nosb', peer: 'ts', args: ['--sandbox=none', '--seccomp=none'], label: 'virtiofsd-ts --sandbox=none --seccomp=none' },
];
const DEFAULT_PEERS = ['c', 'ts', 'ts-p0'];

interface Cell {
  workload: Workload; depth: number; column: string;
  ops: number; seconds: number; opsPerSec: number;
  p50us: number; p99us: number;
  daemonCpuUsPerOp: number; frontendCpuUsPerOp: number;
  errors: number;
}

// ---------------------------------------------------------------- arguments

interface Opts { duration: number; warmup: number; rounds: number; only: Workload[]; depths: number[]; peers: string[]; json?: string; profile?: string; nodeFlags: string[] }

class UsageError extends Error {}

function parseOpts(argv: string[]): Opts {
  const o: Opts = { duration: 3, warmup: 0.5, rounds: 1, only: [...WORKLOADS], depths: [1, 32], peers: [...DEFAULT_PEERS], nodeFlags: [] };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = (): string => {
      if (v !== undefined) return v;
      const n = argv[++i];
      if (n === undefined) throw new UsageError(`${a} needs a value`);
      return n;
    };
    const list = (): string[] => val().split(',').map((s) => s.trim()).filter(Boolean);
    switch (a) {
      case '--duration': o.duration = Number(val()); break;
      case '--warmup': o.warmup = Number(val()); break;
      case '--rounds': o.rounds = Number(val()); break;
      case '--only': o.only = list() as Workload[]; break;
      case '--depths': o.depths = list().map(Number); break;
      case '--peers': o.peers = list(); break;
      case '--sandbox-cost': o.peers = ['ts', 'ts-nosb']; break;
      case '--json': o.json = val(); break;
      case '--profile': o.profile = path.resolve(val()); break;
      case '--node-flags': o.nodeFlags = val().split(/\s+/).filter(Boolean); break;
      case '-h': case '--help':
        process.stdout.write('usage: npm run bench -- [--duration S] [--warmup S] [--rounds N] [--only getattr,lookup,read4k,write4k,read1m] [--depths 1,32] [--peers c,ts,ts-p0,ts-nosb] [--sandbox-cost] [--json FILE] [--profile DIR] [--node-flags "--perf-basic-prof ..."]\n');
        process.exit(0);
        break;
      default: throw new UsageError(`unknown argument ${a}`);
    }
  }
  if (!(o.duration > 0 && o.duration <= 600)) throw new UsageError('--duration must be in (0, 600]');
  if (!(o.warmup >= 0 && o.warmup <= 60)) throw new UsageError('--warmup must be in [0, 60]');
  if (!(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 20)) throw new UsageError('--rounds must be an integer in [1, 20]');
  for (const w of o.only) if (!WORKLOADS.includes(w)) throw new UsageError(`unknown workload ${w} (one of ${WORKLOADS.join(',')})`);
  for (const d of o.depths) if (!(Number.isInteger(d) && d >= 1 && d <= 64)) throw new UsageError(`bad depth ${d} (1..64)`);
  for (const p of o.peers) if (!COLUMNS.some((c) => c.name === p)) throw new UsageError(`unknown peer ${p}`);
  return o;
}

// ---------------------------------------------------------------- /proc CPU accounting


// ---------------------------------------------------------------- request templates

/** xorshift32: deterministic offsets, no allocation. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
}

function inHeader(opcode: number, nodeid: bigint, bodyLen: number): Buffer {
  const h = Buffer.alloc(SIZE.in_header);
  h.writeUInt32LE(SIZE.in_header + bodyLen, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(nodeid, 16);
  h.writeUInt32LE(1, 32); // pid
  return h;
}

interface Target { nodeid: bigint; fh: bigint; name: string }

/** One in-flight slot's request: buffers are reused (the driver copies them into guest RAM at
 *  add()), so the front-end's cost per op is small and the same for every daemon. */
class Requester {
  private unique: bigint;
  private readonly hdr: Buffer;
  private readonly body: Buffer[];
  private readonly inLens: number[];
  private readonly next: () => number;
  private lookups = 0;

  constructor(private readonly fe: VhostUserFrontend, private readonly w: Workload, private readonly t: Target, slot: number) {
    this.unique = BigInt(slot + 1) << 40n;
    this.next = rng(0x9e3779b9 ^ (slot * 7919 + 1));
    switch (w) {
      case 'getattr':
        this.body = [Buffer.alloc(16)];
        this.hdr = inHeader(OP.FUSE_GETATTR, t.nodeid, 16);
        this.inLens = [SIZE.out_header, SIZE.attr_out];
        break;
      case 'lookup': {
        const name = Buffer.from(`${t.name}\0`);
        this.body = [name];
        this.hdr = inHeader(OP.FUSE_LOOKUP, 1n, name.length);
        this.inLens = [SIZE.out_header, SIZE.entry_out];
        break;
      }
      case 'read4k': case 'read1m': {
        const size = w === 'read4k' ? PAGE : MIB;
        const b = Buffer.alloc(40);
        b.writeBigUInt64LE(t.fh, 0);
        b.writeUInt32LE(size, 16);
        b.writeUInt32LE(0o2, 32); // flags: O_RDWR, as the file was opened
        this.body = [b];
        this.hdr = inHeader(OP.FUSE_READ, t.nodeid, 40);
        this.inLens = [SIZE.out_header, ...new Array<number>(size / PAGE).fill(PAGE)];
        break;
      }
      case 'write4k': {
        const b = Buffer.alloc(40);
        b.writeBigUInt64LE(t.fh, 0);
        b.writeUInt32LE(PAGE, 16);
        b.writeUInt32LE(0o2, 32);
        const data = Buffer.alloc(PAGE, 0x5a + slot);
        this.body = [b, data];
        this.hdr = inHeader(OP.FUSE_WRITE, t.nodeid, 40 + PAGE);
        this.inLens = [SIZE.out_header, SIZE.write_out];
        break;
      }
    }
  }

  /** Send one request and wait for it; returns false when the reply is not a success. */
  async once(): Promise<boolean> {
    this.hdr.writeBigUInt64LE(this.unique++, 8);
    if (this.w === 'read4k' || this.w === 'write4k' || this.w === 'read1m') {
      const span = this.w === 'read1m' ? FILE_SIZE / MIB : FILE_SIZE / PAGE;
      const unit = this.w === 'read1m' ? MIB : PAGE;
      this.body[0].writeBigUInt64LE(BigInt((this.next() % span) * unit), 8);
    }
    const r = await this.fe.request(1, [this.hdr, ...this.body], this.inLens, 30_000);
    const out = r.in[0];
    const err = out[4] | (out[5] << 8) | (out[6] << 16) | (out[7] << 24);
    if (err !== 0) return false;
    if (this.w === 'read4k' && r.len !== SIZE.out_header + PAGE) return false;
    if (this.w === 'read1m' && r.len !== SIZE.out_header + MIB) return false;
    if (this.w === 'lookup' && ++this.lookups >= FORGET_EVERY) await this.forget();
    return true;
  }

  /** Give back the lookups this slot took (FORGET on hiprio; no reply, only a used entry). */
  async forget(): Promise<void> {
    if (this.lookups === 0) return;
    const h = inHeader(OP.FUSE_FORGET, this.t.nodeid, 8);
    h.writeBigUInt64LE(this.unique++, 8);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(this.lookups));
    this.lookups = 0;
    await this.fe.request(0, [h, b], [], 30_000);
  }
}

// ---------------------------------------------------------------- one cell

async function runCell(fe: VhostUserFrontend, d: Daemon, t: Target, w: Workload, depth: number, o: Opts, column: string): Promise<Cell> {
  const slots = Array.from({ length: depth }, (_, i) => new Requester(fe, w, t, i));
  const lat = new Float64Array(MAX_SAMPLES);
  let n = 0;
  let errors = 0;
  let measuring = false;
  let stopAt = 0;

  const worker = async (r: Requester): Promise<void> => {
    while (performance.now() < stopAt && n < MAX_SAMPLES) {
      const t0 = performance.now();
      const ok = await r.once();
      if (!ok) errors++;
      if (measuring && n < MAX_SAMPLES) lat[n++] = performance.now() - t0;
    }
  };

  // Warm-up: same depth, not counted.
  if (o.warmup > 0) {
    stopAt = performance.now() + o.warmup * 1000;
    await Promise.all(slots.map(worker));
  }
  const errorsAfterWarmup = errors;
  const pid = d.proc.pid!;
  measuring = true;
  const cpu0 = treeCpuTicks(pid);
  const fe0 = process.cpuUsage();
  const t0 = performance.now();
  stopAt = t0 + o.duration * 1000;
  await Promise.all(slots.map(worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = treeCpuTicks(pid);
  const fe1 = process.cpuUsage(fe0);
  if (w === 'lookup') for (const s of slots) await s.forget();

  const sorted = lat.subarray(0, n).sort();
  const pct = (p: number): number => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(p * n))] * 1000);
  return {
    workload: w, depth, column, ops: n, seconds, opsPerSec: n / seconds,
    p50us: pct(0.5), p99us: pct(0.99),
    daemonCpuUsPerOp: n === 0 ? NaN : ((cpu1 - cpu0) * 1e6) / CLK_TCK / n,
    frontendCpuUsPerOp: n === 0 ? NaN : (fe1.user + fe1.system) / n,
    errors: errors - errorsAfterWarmup,
  };
}

// ---------------------------------------------------------------- one daemon

async function waitExit(d: Daemon, ms: number): Promise<void> {
  if (d.proc.exitCode !== null || d.proc.signalCode !== null) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    new Promise<void>((r) => d.proc.once('exit', () => r())),
    new Promise<void>((r) => { timer = setTimeout(r, ms); }),
  ]);
  clearTimeout(timer);
}

interface Session { col: Column; d: Daemon; fe?: VhostUserFrontend; client?: FuseClient; t?: Target }

/** Start one daemon, put the data file in its share (written from the host: in the page cache),
 *  connect a front-end, INIT, LOOKUP and OPEN the file. */
async function openSession(native: NativeBinding, col: Column, o: Opts): Promise<Session> {
  // --profile / --node-flags: NODE_OPTIONS may not carry --cpu-prof, and startDaemon() runs
  // process.execPath, so point that at a wrapper script that adds the flags, for this one spawn.
  const savedExecPath = process.execPath;
  let tmpWrapperDir: string | undefined;
  if (col.peer === 'ts' && (o.profile || o.nodeFlags.length)) {
    const dir = o.profile ?? (tmpWrapperDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-bench-')));
    fs.mkdirSync(dir, { recursive: true });
    const flags = [...o.nodeFlags];
    if (o.profile) flags.push('--cpu-prof', `--cpu-prof-dir=${o.profile}`, `--cpu-prof-name=${col.name}-$$.cpuprofile`);
    const wrapper = path.join(dir, `node-${col.name}.sh`);
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec '${savedExecPath}' ${flags.map((f) => `"${f}"`).join(' ')} "$@"\n`, { mode: 0o755 });
    process.execPath = wrapper;
  }
  let d: Daemon;
  try {
    d = await startDaemon(col.peer, { args: col.args });
  } finally {
    process.execPath = savedExecPath;
    if (tmpWrapperDir) fs.rmSync(tmpWrapperDir, { recursive: true, force: true }); // exec'd already
  }
  process.stderr.write(`  ${col.name}: pid ${d.proc.pid}, share ${d.dir}\n`);
  const s: Session = { col, d };
  try {
    const name = 'data.bin';
    const chunk = Buffer.alloc(MIB);
    const fd = fs.openSync(path.join(d.dir, name), 'w');
    for (let i = 0; i < FILE_SIZE / MIB; i++) { chunk.fill(i & 0xff); fs.writeSync(fd, chunk); }
    // Written back now, not by the flusher during the first cells (the pages stay cached).
    fs.fsyncSync(fd);
    fs.closeSync(fd);

    const fe = s.fe = await VhostUserFrontend.connect(native, d.socket, { ramSize: RAM_SIZE, queueSize: QUEUE_SIZE, connectTimeoutMs: 10_000, replyTimeoutMs: 30_000 });
    const client = s.client = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 30_000));
    const init = await client.init();
    if (init.error !== 0) throw new Error(`FUSE_INIT: ${init.error}`);
    const lk = await client.lookup(1, name);
    if (!lk.entry) throw new Error(`LOOKUP ${name}: ${lk.error}`);
    const op = await client.open(lk.entry.nodeid, 0o2);
    if (op.fh === undefined) throw new Error(`OPEN ${name}: ${op.error}`);
    s.t = { nodeid: lk.entry.nodeid, fh: op.fh, name };
  } catch (e) {
    await closeSession(s);
    throw withStderr(e, s);
  }
  return s;
}

function withStderr(e: unknown, s: Session): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  err.message += `\n${s.col.name} daemon stderr (tail):\n${s.d.stderr().slice(-2000)}`;
  return err;
}

async function closeSession(s: Session): Promise<void> {
  try {
    if (s.client && s.t && s.fe && !s.fe.isDisconnected) {
      await s.client.release(s.t.nodeid, s.t.fh);
      await s.client.forget(s.t.nodeid, 1);
    }
  } catch { /* closing anyway */ }
  s.fe?.close();
  // Both daemons exit when the front-end disconnects; a clean exit writes the CPU profile.
  await waitExit(s.d, 10_000);
  await s.d.stop();
}

function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** Median of each metric over rounds (ops and errors summed). */
function combine(rs: Cell[]): Cell {
  if (rs.length === 1) return rs[0];
  return {
    workload: rs[0].workload, depth: rs[0].depth, column: rs[0].column,
    ops: rs.reduce((n, c) => n + c.ops, 0), seconds: rs.reduce((n, c) => n + c.seconds, 0),
    opsPerSec: median(rs.map((c) => c.opsPerSec)), p50us: median(rs.map((c) => c.p50us)), p99us: median(rs.map((c) => c.p99us)),
    daemonCpuUsPerOp: median(rs.map((c) => c.daemonCpuUsPerOp)), frontendCpuUsPerOp: median(rs.map((c) => c.frontendCpuUsPerOp)),
    errors: rs.reduce((n, c) => n + c.errors, 0),
  };
}

/** All daemons stay up (idle ones sleep in poll), and each cell is run for every daemon back to
 *  back, in a rotating order: load from elsewhere on the machine hits the columns alike. */
async function runAll(native: NativeBinding, cols: Column[], o: Opts): Promise<Cell[]> {
  const sessions: Session[] = [];
  const cells: Cell[] = [];
  try {
    for (const col of cols) sessions.push(await openSession(native, col, o));
    let turn = 0;
    for (const w of o.only) {
      for (const depth of o.depths) {
        const per = new Map<string, Cell[]>(cols.map((c) => [c.name, []]));
        for (let round = 0; round < o.rounds; round++) {
          for (let k = 0; k < sessions.length; k++) {
            const s = sessions[(k + turn) % sessions.length];
            let c: Cell;
            try {
              c = await runCell(s.fe!, s.d, s.t!, w, depth, o, s.col.name);
            } catch (e) {
              throw withStderr(e, s);
            }
            per.get(s.col.name)!.push(c);
            process.stderr.write(`  ${s.col.name.padEnd(6)} ${w.padEnd(8)} depth ${String(depth).padStart(2)}: ${fmt(c.opsPerSec, 0)} ops/s, p50 ${fmt(c.p50us, 0)} us, p99 ${fmt(c.p99us, 0)} us, daemon ${fmt(c.daemonCpuUsPerOp, 1)} us/op, front-end ${fmt(c.frontendCpuUsPerOp, 1)} us/op${c.errors ? `, ${c.errors} errors` : ''}\n`);
          }
          turn++;
        }
        for (const col of cols) cells.push(combine(per.get(col.name)!));
      }
    }
  } finally {
    for (const s of sessions) await closeSession(s);
  }
  return cells;
}

// ---------------------------------------------------------------- output

function fmt(v: number, digits: number): string {
  if (!Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–';
}

function markdown(cells: Cell[], o: Opts): string {
  const cols = COLUMNS.filter((c) => o.peers.includes(c.name));
  const get = (w: string, depth: number, col: string): Cell | undefined => cells.find((c) => c.workload === w && c.depth === depth && c.column === col);
  const lines: string[] = [];
  const tsCols = cols.filter((c) => c.peer === 'ts');
  const hasC = cols.some((c) => c.name === 'c');

  // Summary: throughput and CPU per op, ratio ours / C.
  lines.push(`| workload | depth | ${cols.map((c) => `${c.name} ops/s`).join(' | ')}${hasC ? tsCols.map((c) => ` | ${c.name}/c ops/s`).join('') : ''} | ${cols.map((c) => `${c.name} CPU µs/op`).join(' | ')}${hasC ? tsCols.map((c) => ` | ${c.name}/c CPU/op`).join('') : ''} |`);
  lines.push(`|---|---:|${cols.map(() => '---:').join('|')}|${hasC ? tsCols.map(() => '---:|').join('') : ''}${cols.map(() => '---:').join('|')}|${hasC ? tsCols.map(() => '---:|').join('') : ''}`);
  const noisy: string[] = [];
  for (const w of o.only) {
    for (const depth of o.depths) {
      const c = hasC ? get(w, depth, 'c') : undefined;
      // The front-end's own CPU per op is the same work for every daemon: when it differs a lot
      // between columns, the machine changed under the cell (other load); rerun it.
      const feCpu = cols.map((col) => get(w, depth, col.name)?.frontendCpuUsPerOp ?? NaN).filter(Number.isFinite);
      const flag = feCpu.length > 1 && Math.max(...feCpu) > 1.5 * Math.min(...feCpu);
      if (flag) noisy.push(`${w} depth ${depth}`);
      const row = [flag ? `${w} ⚠` : w, String(depth)];
      for (const col of cols) row.push(fmt(get(w, depth, col.name)?.opsPerSec ?? NaN, 0));
      if (c) for (const col of tsCols) row.push(ratio(get(w, depth, col.name)?.opsPerSec ?? NaN, c.opsPerSec));
      for (const col of cols) row.push(fmt(get(w, depth, col.name)?.daemonCpuUsPerOp ?? NaN, 1));
      if (c) for (const col of tsCols) row.push(ratio(get(w, depth, col.name)?.daemonCpuUsPerOp ?? NaN, c.daemonCpuUsPerOp));
      lines.push(`| ${row.join(' | ')} |`);
    }
  }
  lines.push('');
  // Latency.
  lines.push(`| workload | depth | ${cols.map((c) => `${c.name} p50 µs | ${c.name} p99 µs`).join(' | ')} | front-end CPU µs/op (${cols.map((c) => c.name).join(' / ')}) |`);
  lines.push(`|---|---:|${cols.map(() => '---:|---:').join('|')}|---:|`);
  for (const w of o.only) {
    for (const depth of o.depths) {
      const row = [w, String(depth)];
      for (const col of cols) {
        const x = get(w, depth, col.name);
        row.push(fmt(x?.p50us ?? NaN, 0), fmt(x?.p99us ?? NaN, 0));
      }
      row.push(cols.map((col) => fmt(get(w, depth, col.name)?.frontendCpuUsPerOp ?? NaN, 1)).join(' / '));
      lines.push(`| ${row.join(' | ')} |`);
    }
  }
  if (cols.some((c) => c.name === 'ts') && cols.some((c) => c.name === 'ts-nosb')) {
    // What the sandbox costs: the default daemon against the same with no sandbox and no filter.
    lines.push('');
    lines.push('| workload | depth | ts ops/s | ts-nosb ops/s | time/op cost | ts CPU µs/op | ts-nosb CPU µs/op | CPU/op cost |');
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|');
    const pctCost = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${((a / b - 1) * 100).toFixed(1)}%` : '–');
    for (const w of o.only) {
      for (const depth of o.depths) {
        const sb = get(w, depth, 'ts');
        const none = get(w, depth, 'ts-nosb');
        lines.push(`| ${w} | ${depth} | ${fmt(sb?.opsPerSec ?? NaN, 0)} | ${fmt(none?.opsPerSec ?? NaN, 0)} | ${pctCost(none?.opsPerSec ?? NaN, sb?.opsPerSec ?? NaN)} | ${fmt(sb?.daemonCpuUsPerOp ?? NaN, 1)} | ${fmt(none?.daemonCpuUsPerOp ?? NaN, 1)} | ${pctCost(sb?.daemonCpuUsPerOp ?? NaN, none?.daemonCpuUsPerOp ?? NaN)} |`);
      }
    }
    lines.push('');
    lines.push('time/op cost = ts-nosb ops/s ÷ ts ops/s − 1; CPU/op cost = ts CPU/op ÷ ts-nosb CPU/op − 1 (keeper, launchers and worker).');
  }
  if (noisy.length) {
    lines.push('');
    lines.push(`⚠ front-end CPU per op differs by more than 1.5× between columns (other load on the machine): ${noisy.join(', ')}; rerun those with --only/--depths, or use --rounds.`);
  }
  const errs = cells.filter((c) => c.errors > 0);
  if (errs.length) {
    lines.push('');
    for (const c of errs) lines.push(`- ${c.column} ${c.workload} depth ${c.depth}: ${c.errors} failed replies`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  const cols = COLUMNS.filter((c) => o.peers.includes(c.name));
  if (cols.some((c) => c.peer === 'c') && !fs.existsSync(C_VIRTIOFSD)) throw new Error(`${C_VIRTIOFSD} is not installed (use --peers ts,ts-p0)`);
  const native = loadNative();
  let cVersion = '';
  try { cVersion = execFileSync(C_VIRTIOFSD, ['--version'], { encoding: 'utf8' }).split('\n')[0]; } catch { /* optional */ }
  const cells: Cell[] = [];
  const started = Date.now();
  const loadavgStart = os.loadavg();
  process.stderr.write(`bench: ${o.only.length} workloads × ${o.depths.length} depths × ${cols.length} daemons × ${o.rounds} rounds, ${o.warmup} s warm-up + ${o.duration} s each\n`);
  cells.push(...await runAll(native, cols, o));
  const machine = {
    cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '?', node: process.version, kernel: os.release(),
    cVirtiofsd: cVersion, date: new Date().toISOString(), loadavgStart, loadavgEnd: os.loadavg(),
  };
  const out = [
    `virtiofsd-ts bench — ${machine.cpus} CPUs (${machine.cpuModel}), Node ${machine.node}, Linux ${machine.kernel}; ${o.warmup} s warm-up + ${o.duration} s per cell${o.rounds > 1 ? `, median of ${o.rounds} rounds` : ''}; total ${((Date.now() - started) / 1000).toFixed(0)} s; load average ${machine.loadavgStart.map((x) => x.toFixed(2)).join(' ')} at start, ${machine.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} at end`,
    `columns: ${cols.map((c) => `${c.name} = ${c.label}`).join('; ')}`,
    '',
    markdown(cells, o),
    '',
  ].join('\n');
  process.stdout.write(out);
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ machine, options: o, columns: cols, cells }, null, 2) + '\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    if (e instanceof UsageError) process.stderr.write(`bench: ${e.message} (--help for usage)\n`);
    else process.stderr.write(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  },
);
