// npm run reliability: what a restart costs, measured through the project's own vhost-user
// front-end (test/support/frontend.ts) in this process, no guest. A benchmark, not a test:
// it prints numbers and compares them with the targets of issue 3; it fails only when a
// request fails or the daemon dies.
//
// 1. Restart stall. ./bin/virtiofsd-ts (keeper + worker) serves a steady loop at 1 request in
//    flight (GETATTR, LOOKUP, 4 KiB WRITE in turn; a FORGET every 1024 LOOKUPs) while this
//    script, at random moments (0.3-1.5 s apart, after the previous restart has served a
//    request), sends
//      --kills N   SIGKILL to the current worker (default 30)
//      --hups M    SIGHUP to the keeper: planned worker upgrade (default 10)
//      --usr2 K    SIGUSR2 to the keeper: keeper re-exec (default 3)
//      --upgrade-kills U   each of: SIGHUP, then SIGKILL of the incoming worker while it loads;
//                  SIGHUP, then SIGKILL of the serving worker while the incoming one loads; and
//                  the same two after SIGUSR2 (the re-executed keeper's upgrade) (default 3)
//    For these, the stall is measured from the SIGKILL.
//    Per event: stall = the longest time a request waited after the event (its completion
//    minus the later of its start and the event), over the requests in flight at the event or
//    started within 2 s after it: with one request in flight that is "from the kill until the
//    next request completes". Also the longest latency of any one of those requests. Every
//    reply is checked (error 0, the unique of its request).
// 2. Steady-state cost of the crash-consistency machinery (fd registration with the keeper,
//    the in-flight table, the outcome journal): the same loops against the default daemon and
//    against --no-keeper (one process, none of that), both up at once. This machine's speed
//    varies by 2-3x from one second to the next (other tenants), so the cost is measured in
//    pairs: each round runs every workload for --duration s on one daemon and right after on
//    the other (the order alternates), and the cost of that pair is the ratio of the two. The
//    report gives the median pair (and the middle half of the pairs): ops/s and the daemon's
//    CPU time per op (every thread of its process tree, /proc/<pid>/task/<tid>/schedstat, ns) for
//      getattr   GETATTR of a file
//      create    CREATE + RELEASE + UNLINK of a new name (the nodes are given back with one
//                BATCH_FORGET per 64, as a guest evicting them would)
//      write4k   4 KiB WRITE at a random 4 KiB-aligned offset of a 16 MiB file
//      read4k    4 KiB READ, same
// 3. The machinery step by step (parts): each piece the keeper mode adds to a request, timed in
//    tight loops with the real code, and summed per workload.
//
// Arguments: --kills N --hups M --usr2 K (stall part) --duration S (per overhead cell, default
//   0.6) --warmup S (default 0.15) --rounds R (default 20) --workloads a,b --only stall,overhead,parts
//   --seed N --md FILE (also write the markdown report to FILE) --daemon-args '...' (more flags
//   for the stall part's daemon, e.g. '--sandbox=none --seccomp=none' to see what the sandbox
//   adds to a restart).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, type NativeBinding } from '../src/native/binding';
import { SIZE } from '../src/fuse/abi';
import { liveWorker, startDaemon, workerPids, type Daemon } from '../test/support/daemon';
import { VhostUserFrontend } from '../test/support/frontend';
import { FuseClient, type Transport } from '../test/support/fuse-client';
import { treeCpuNs } from '../test/support/proc-stat';
import { Journal } from '../src/state/journal';
import { InflightRegion } from '../src/state/inflight';
import { BatchingFdRegistry } from '../src/state/fd-registry';

const PAGE = 4096;
const MIB = 1024 * 1024;
const FILE_SIZE = 16 * MIB;
const MAX_SAMPLES = 4_000_000;
const REQ_TIMEOUT_MS = 30_000;
const O_RDWR = 0o2;
const O_CREAT = 0o100;

const TARGETS = { killP50: 300, killP99: 1000, upgrade: 200, overheadPct: 10 };

const WORKLOADS = ['getattr', 'create', 'write4k', 'read4k'] as const;
type Workload = (typeof WORKLOADS)[number];

interface Opts {
  kills: number; hups: number; usr2: number; upgradeKills: number; duration: number; warmup: number; rounds: number;
  only: Array<'stall' | 'overhead' | 'parts'>; workloads: Workload[]; seed: number; md?: string;
  /** More flags for the stall part's daemon (e.g. '--sandbox=none --seccomp=none'). */
  daemonArgs: string[];
}

class UsageError extends Error {}

function parseOpts(argv: string[]): Opts {
  const o: Opts = { kills: 30, hups: 10, usr2: 3, upgradeKills: 3, duration: 0.6, warmup: 0.15, rounds: 20, only: ['stall', 'overhead', 'parts'], workloads: [...WORKLOADS], seed: Date.now() & 0x7fffffff, daemonArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]!;
    let v: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = (): string => {
      if (v !== undefined) return v;
      const n = argv[++i];
      if (n === undefined) throw new UsageError(`${a} needs a value`);
      return n;
    };
    const int = (lo: number, hi: number): number => {
      const n = Number(val());
      if (!Number.isInteger(n) || n < lo || n > hi) throw new UsageError(`${a} must be an integer in [${lo}, ${hi}]`);
      return n;
    };
    switch (a) {
      case '--kills': o.kills = int(0, 1000); break;
      case '--hups': o.hups = int(0, 1000); break;
      case '--usr2': o.usr2 = int(0, 100); break;
      case '--upgrade-kills': o.upgradeKills = int(0, 100); break;
      case '--rounds': o.rounds = int(1, 200); break;
      case '--seed': o.seed = int(0, 2 ** 31 - 1); break;
      case '--duration': o.duration = Number(val()); break;
      case '--warmup': o.warmup = Number(val()); break;
      case '--only': o.only = val().split(',').map((s) => s.trim()) as Opts['only']; break;
      case '--md': o.md = path.resolve(val()); break;
      case '--daemon-args': o.daemonArgs = val().split(/\s+/).filter(Boolean); break;
      case '--workloads': o.workloads = val().split(',').map((s) => s.trim()) as Workload[]; break;
      case '-h': case '--help':
        process.stdout.write('usage: npm run reliability -- [--kills 30] [--hups 10] [--usr2 3] [--upgrade-kills 3] [--duration 0.6] [--warmup 0.15] [--rounds 20] [--only stall,overhead,parts] [--workloads getattr,create,write4k,read4k] [--seed N] [--md FILE] [--daemon-args "--sandbox=none ..."]\n');
        process.exit(0);
        break;
      default: throw new UsageError(`unknown argument ${a}`);
    }
  }
  if (!(o.duration > 0 && o.duration <= 120)) throw new UsageError('--duration must be in (0, 120]');
  if (!(o.warmup >= 0 && o.warmup <= 30)) throw new UsageError('--warmup must be in [0, 30]');
  for (const x of o.only) if (x !== 'stall' && x !== 'overhead' && x !== 'parts') throw new UsageError(`--only: unknown part ${x}`);
  for (const w of o.workloads) if (!WORKLOADS.includes(w)) throw new UsageError(`--workloads: unknown workload ${w} (${WORKLOADS.join(',')})`);
  return o;
}

// ---------------------------------------------------------------- helpers

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}


/** The incoming worker of the upgrade just asked for (logged after mark), once it is started. */
async function waitIncoming(d: Daemon, mark: number): Promise<number> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = /"upgrade":true,"pid":(\d+)/.exec(d.stderr().slice(mark));
    if (m) return Number(m[1]);
    if (Date.now() > deadline) throw new Error(`no incoming worker within 20 s:\n${d.stderr().slice(-2000)}`);
    await sleep(1);
  }
}

function pct(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  return n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(p * n))]!;
}

function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

const f0 = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : '–');
const f1 = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : '–');

/** A transport that checks each reply belongs to its request and counts failures. */
function checked(fe: VhostUserFrontend, problems: string[]): Transport {
  return async (queue, out, inLens) => {
    const h = Buffer.from(out[0]!.buffer, out[0]!.byteOffset, out[0]!.byteLength);
    const unique = h.readBigUInt64LE(8);
    const r = await fe.request(queue, out, inLens, REQ_TIMEOUT_MS);
    if (inLens.length > 0 && r.len >= SIZE.out_header) {
      const first = r.in[0]!;
      const got = Buffer.from(first.buffer, first.byteOffset, first.byteLength).readBigUInt64LE(8);
      if (got !== unique && problems.length < 50) problems.push(`request ${unique} (opcode ${h.readUInt32LE(4)}) answered with unique ${got}`);
    }
    return r;
  };
}

interface Session { d: Daemon; fe: VhostUserFrontend; c: FuseClient; problems: string[]; file: { nodeid: bigint; fh: bigint } }

async function open(native: NativeBinding, args: string[]): Promise<Session> {
  const d = await startDaemon('ts', { args: ['--log-level=info', ...args] });
  const problems: string[] = [];
  try {
    const chunk = Buffer.alloc(MIB);
    const fd = fs.openSync(path.join(d.dir, 'data.bin'), 'w');
    for (let i = 0; i < FILE_SIZE / MIB; i++) { chunk.fill(i & 0xff); fs.writeSync(fd, chunk); }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const fe = await VhostUserFrontend.connect(native, d.socket, { ramSize: 16 * MIB, queueSize: 128, connectTimeoutMs: 10_000, replyTimeoutMs: 30_000 });
    const c = new FuseClient(checked(fe, problems));
    const init = await c.init();
    if (init.error !== 0) throw new Error(`FUSE_INIT: ${init.error}`);
    const lk = await c.lookup(1, 'data.bin');
    if (!lk.entry) throw new Error(`LOOKUP data.bin: ${lk.error}`);
    const op = await c.open(lk.entry.nodeid, O_RDWR);
    if (op.fh === undefined) throw new Error(`OPEN data.bin: ${op.error}`);
    return { d, fe, c, problems, file: { nodeid: lk.entry.nodeid, fh: op.fh } };
  } catch (e) {
    await d.stop();
    throw e;
  }
}

async function close(s: Session): Promise<void> {
  s.fe.close();
  const exited = s.d.proc.exitCode !== null || s.d.proc.signalCode !== null;
  if (!exited) await Promise.race([new Promise((r) => s.d.proc.once('exit', r)), sleep(10_000)]);
  await s.d.stop();
}

// ---------------------------------------------------------------- 1. restart stall

const UPGRADE_KILLS = ['hup-kill-incoming', 'hup-kill-serving', 'usr2-kill-incoming', 'usr2-kill-serving'] as const;
type Kind = 'kill' | 'hup' | 'usr2' | (typeof UPGRADE_KILLS)[number];
const KINDS: readonly Kind[] = ['kill', 'hup', 'usr2', ...UPGRADE_KILLS];
/** spare: a kill after which the keeper fed its loaded spare worker (no Node start-up to wait for). */
interface StallRow { kind: Kind; stallMs: number; longestMs: number; spare: boolean }

async function stallPart(native: NativeBinding, o: Opts, log: (s: string) => void): Promise<{ rows: StallRow[]; baseline: { p50: number; p99: number; max: number; n: number }; errors: number; ops: number; workers: number }> {
  const s = await open(native, o.daemonArgs);
  const rand = rng(o.seed);
  const t0s = new Float64Array(MAX_SAMPLES);
  const t1s = new Float64Array(MAX_SAMPLES);
  let n = 0;
  let errors = 0;
  let stop = false;
  const { c, file } = s;
  const data = Buffer.alloc(PAGE, 0x5a);
  const loop = async (): Promise<void> => {
    let i = 0;
    let lookups = 0;
    while (!stop && n < MAX_SAMPLES) {
      const kind = i % 3;
      const t0 = performance.now();
      let err: number;
      if (kind === 0) err = (await c.getattr(file.nodeid)).error;
      else if (kind === 1) {
        const r = await c.lookup(1, 'data.bin');
        err = r.error;
        if (r.entry && r.entry.nodeid !== file.nodeid) { err = -1; s.problems.push(`LOOKUP gave node ${r.entry.nodeid}, was ${file.nodeid}`); }
        if (++lookups >= 1024) { await c.forget(file.nodeid, lookups); lookups = 0; }
      } else {
        const r = await c.write(file.nodeid, file.fh, ((i * 7919) % (FILE_SIZE / PAGE)) * PAGE, data);
        err = r.error !== 0 ? r.error : r.size === PAGE ? 0 : -1;
      }
      const t1 = performance.now();
      if (err !== 0) errors++;
      t0s[n] = t0;
      t1s[n] = t1;
      n++;
      i++;
    }
    if (lookups > 0) await c.forget(file.nodeid, lookups);
  };
  const running = loop();
  const events: Array<{ kind: Kind; at: number; spare: boolean }> = [];
  try {
    await sleep(500); // steady state first
    const plan: Kind[] = [...Array<Kind>(o.kills).fill('kill'), ...Array<Kind>(o.hups).fill('hup'), ...Array<Kind>(o.usr2).fill('usr2')];
    for (let k = 0; k < o.upgradeKills; k++) plan.push(...UPGRADE_KILLS);
    // what the keeper logs once the event is over and a new worker serves
    const doneMsgs: Record<Kind, string[]> = {
      kill: ['"worker started"'],
      hup: ['"worker retired"'],
      usr2: ['"keeper re-executed; serving on"'],
      'hup-kill-incoming': ['"worker retired"'],
      'hup-kill-serving': ['"worker serving"'],
      'usr2-kill-incoming': ['"worker retired"'],
      'usr2-kill-serving': ['"worker serving"'],
    };
    for (const kind of plan) {
      await sleep(300 + rand() * 1200);
      if (s.d.proc.exitCode !== null || s.d.proc.signalCode !== null) throw new Error(`the keeper exited:\n${s.d.stderr().slice(-2000)}`);
      const pid = liveWorker(s.d.stderr())!;
      let mark = s.d.stderr().length;
      if (kind === 'kill') process.kill(pid, 'SIGKILL');
      else if (kind === 'hup' || kind === 'usr2') process.kill(s.d.proc.pid!, kind === 'hup' ? 'SIGHUP' : 'SIGUSR2');
      else {
        // An upgrade, then a SIGKILL while its incoming worker loads: of that worker, or of the
        // one that serves (after SIGUSR2: the worker the new keeper image adopted).
        process.kill(s.d.proc.pid!, kind.startsWith('hup') ? 'SIGHUP' : 'SIGUSR2');
        const started = await waitIncoming(s.d, mark);
        mark = s.d.stderr().length;
        process.kill(kind.endsWith('incoming') ? started : pid, 'SIGKILL');
      }
      const at = performance.now();
      const ev = { kind, at, spare: false };
      events.push(ev);
      // the next event only once the keeper says a new worker serves, and a request done after that
      const deadline = Date.now() + 20_000;
      const over = (): boolean => doneMsgs[kind].every((m) => s.d.stderr().slice(mark).includes(m));
      while (!over() && Date.now() < deadline) await sleep(5);
      ev.spare = kind === 'kill' && s.d.stderr().slice(mark).includes('"spare":true');
      const served = performance.now();
      while (t1s[Math.max(0, n - 1)]! <= served && Date.now() < deadline) await sleep(5);
      if (Date.now() >= deadline) throw new Error(`no new worker served a request within 20 s after ${kind} ${events.length}:\n${s.d.stderr().slice(-2000)}`);
      if (events.length % 10 === 0) log(`  ${events.length}/${plan.length} events`);
    }
    await sleep(300);
  } finally {
    stop = true;
    await running;
  }
  const workers = workerPids(s.d.stderr()).length;
  await close(s);
  if (s.problems.length) throw new Error(`reply problems:\n${s.problems.join('\n')}`);

  const rows: StallRow[] = [];
  for (let k = 0; k < events.length; k++) {
    const at = events[k]!.at;
    const until = Math.min(at + 2000, k + 1 < events.length ? events[k + 1]!.at : Infinity);
    let stall = 0;
    let longest = 0;
    for (let j = 0; j < n; j++) {
      if (t1s[j]! <= at || t0s[j]! >= until) continue;
      stall = Math.max(stall, t1s[j]! - Math.max(t0s[j]!, at));
      longest = Math.max(longest, t1s[j]! - t0s[j]!);
    }
    rows.push({ kind: events[k]!.kind, stallMs: stall, longestMs: longest, spare: events[k]!.spare });
  }
  // request latency away from any event (2 s after each), for comparison
  const base: number[] = [];
  for (let j = 0, k = 0; j < n; j++) {
    while (k < events.length && events[k]!.at + 2000 < t0s[j]!) k++;
    const near = k < events.length && t1s[j]! > events[k]!.at && t0s[j]! < events[k]!.at + 2000;
    if (!near) base.push(t1s[j]! - t0s[j]!);
  }
  base.sort((a, b) => a - b);
  return { rows, baseline: { p50: pct(base, 0.5), p99: pct(base, 0.99), max: pct(base, 1), n: base.length }, errors, ops: n, workers };
}

// ---------------------------------------------------------------- 2. overhead

interface Cell { w: Workload; col: string; opsPerSec: number; cpuUsPerOp: number; p50us: number; errors: number }
/** One round of one workload: the default daemon's cell and --no-keeper's, run back to back. */
interface Pair { w: Workload; def: Cell; nk: Cell }
/** The cost of the machinery in one pair, in %: time per op and CPU per op. */
const timeCost = (p: Pair): number => (p.nk.opsPerSec / p.def.opsPerSec - 1) * 100;
const cpuCost = (p: Pair): number => (p.def.cpuUsPerOp / p.nk.cpuUsPerOp - 1) * 100;

async function cell(s: Session, w: Workload, col: string, o: Opts, round: number): Promise<Cell> {
  const { c, file } = s;
  const next = rng(0x1234567 + round * 31 + WORKLOADS.indexOf(w));
  const data = Buffer.alloc(PAGE, 0xa5);
  let seq = 0;
  const forgets: Array<[bigint, number]> = [];
  const one = async (): Promise<number> => {
    switch (w) {
      case 'getattr': return (await c.getattr(file.nodeid)).error;
      case 'write4k': {
        const r = await c.write(file.nodeid, file.fh, Math.floor(next() * (FILE_SIZE / PAGE)) * PAGE, data);
        return r.error !== 0 ? r.error : r.size === PAGE ? 0 : -1;
      }
      case 'read4k': {
        const r = await c.read(file.nodeid, file.fh, Math.floor(next() * (FILE_SIZE / PAGE)) * PAGE, PAGE);
        return r.error !== 0 ? r.error : r.body.length === PAGE ? 0 : -1;
      }
      case 'create': {
        const name = `c-${col}-${round}-${seq++}`;
        const cr = await c.create(1, name, O_RDWR | O_CREAT, 0o644);
        if (cr.error !== 0 || !cr.entry || cr.fh === undefined) return cr.error || -1;
        const rl = await c.release(cr.entry.nodeid, cr.fh);
        if (rl.error !== 0) return rl.error;
        const ul = await c.unlink(1, name);
        if (ul.error !== 0) return ul.error;
        forgets.push([cr.entry.nodeid, 1]);
        if (forgets.length >= 64) await c.batchForget(forgets.splice(0));
        return 0;
      }
    }
  };
  let stopAt = performance.now() + o.warmup * 1000;
  let errors = 0;
  while (performance.now() < stopAt) if ((await one()) !== 0) errors++;
  const lat: number[] = [];
  const pid = s.d.proc.pid!;
  const cpu0 = treeCpuNs(pid);
  const t0 = performance.now();
  stopAt = t0 + o.duration * 1000;
  while (performance.now() < stopAt) {
    const a = performance.now();
    if ((await one()) !== 0) errors++;
    lat.push(performance.now() - a);
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu1 = treeCpuNs(pid);
  if (forgets.length) await c.batchForget(forgets.splice(0));
  lat.sort((a, b) => a - b);
  return { w, col, opsPerSec: lat.length / secs, cpuUsPerOp: (cpu1 - cpu0) / 1000 / lat.length, p50us: pct(lat, 0.5) * 1000, errors };
}

async function overheadPart(native: NativeBinding, o: Opts, log: (s: string) => void): Promise<Pair[]> {
  const cols = [{ name: 'default', args: [] as string[] }, { name: 'no-keeper', args: ['--no-keeper'] }];
  const sessions: Session[] = [];
  const out: Pair[] = [];
  try {
    for (const col of cols) sessions.push(await open(native, col.args));
    for (let r = 0; r < o.rounds; r++) {
      for (const w of o.workloads) {
        const first = r % 2;
        const cells: Cell[] = [];
        for (const i of [first, 1 - first]) cells[i] = await cell(sessions[i]!, w, cols[i]!.name, o, r);
        const p: Pair = { w, def: cells[0]!, nk: cells[1]! };
        out.push(p);
        log(`  round ${String(r + 1).padStart(2)} ${w.padEnd(8)} default ${f0(p.def.opsPerSec)} ops/s ${f1(p.def.cpuUsPerOp)} µs CPU/op, ` +
          `no-keeper ${f0(p.nk.opsPerSec)} ops/s ${f1(p.nk.cpuUsPerOp)} µs CPU/op: cost ${f1(timeCost(p))}% time, ${f1(cpuCost(p))}% CPU` +
          `${p.def.errors + p.nk.errors ? `, ${p.def.errors + p.nk.errors} errors` : ''}`);
      }
    }
    for (const s of sessions) if (s.problems.length) throw new Error(`reply problems:\n${s.problems.join('\n')}`);
  } finally {
    for (const s of sessions) await close(s).catch(() => undefined);
  }
  return out;
}

// ---------------------------------------------------------------- 3. parts

/**
 * What the machinery adds to each request, step by step, timed in tight loops with the real
 * code (best of 7 runs of N calls each): far less exposed to this machine's swings than the
 * end-to-end pairs, and it says where the cost is. Syscalls are timed whole (kernel included).
 */
function partCosts(native: NativeBinding): Record<string, number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-parts-'));
  fs.writeFileSync(path.join(dir, 'f'), 'x');
  const O_PATH = 0o10000000, O_DIRECTORY = 0o200000, AT_EMPTY_PATH = 0x1000, AT_SYMLINK_NOFOLLOW = 0x100;
  const dirFd = native.openat(-100, dir, O_PATH | O_DIRECTORY, 0);
  const fileFd = native.openat(-100, path.join(dir, 'f'), O_PATH, 0);
  const st = new BigUint64Array(17);
  const hb = new Uint8Array(12 + 128);
  const journal = new Journal(new ArrayBuffer(Journal.sizeFor(128)));
  journal.format(128);
  const body = new Uint8Array(SIZE.entry_out + SIZE.open_out);
  const inflight = new InflightRegion(new ArrayBuffer(InflightRegion.sizeFor(128)));
  inflight.format(128, 0);
  const registry = new BatchingFdRegistry(() => undefined, () => undefined);
  const time = (n: number, fn: (i: number) => void): number => {
    for (let i = 0; i < 2000; i++) fn(i);
    let best = Infinity;
    for (let r = 0; r < 7; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) fn(i);
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / n / 1000);
    }
    return best;
  };
  try {
    return {
      inflight: time(200_000, (i) => { inflight.markInflight(i & 127); inflight.prePut(i & 127); inflight.postPut(i & 127, i & 0xffff); }),
      journal: time(200_000, (i) => { journal.intent(i & 127, i, 0, 35, 0); journal.done(i & 127, 0, body); }),
      probe: time(100_000, () => native.stat(dirFd, 'f', AT_SYMLINK_NOFOLLOW, st)),
      handle: time(100_000, () => native.nameToHandleAt(fileFd, '', AT_EMPTY_PATH, hb)),
      registry: time(200_000, (i) => { const k = `f${i & 255}`; registry.putLazy(k, 5); registry.del(k); }),
    };
  } finally {
    native.close(dirFd);
    native.close(fileFd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** How many of each step one op of a workload takes with the keeper (none with --no-keeper). */
const PART_COUNTS: Record<Workload, Record<string, number>> = {
  getattr: { inflight: 1 },
  read4k: { inflight: 1 },
  write4k: { inflight: 1, journal: 1 },
  // CREATE, RELEASE, UNLINK and a 64th of a BATCH_FORGET; CREATE and UNLINK are journaled,
  // UNLINK probes its name, CREATE makes a file handle and queues its fh (RELEASE cancels it).
  create: { inflight: 3 + 1 / 64, journal: 2, probe: 1, handle: 1, registry: 1 },
};

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  const native = loadNative();
  const log = (s: string): void => { process.stderr.write(s + '\n'); };
  const started = Date.now();
  const load0 = os.loadavg();
  const md: string[] = [];
  const verdicts: string[] = [];

  if (o.only.includes('stall')) {
    log(`reliability: stall part: ${o.kills} SIGKILL, ${o.hups} SIGHUP, ${o.usr2} SIGUSR2, ${o.upgradeKills}× each upgrade-then-kill, seed ${o.seed}`);
    const r = await stallPart(native, o, log);
    md.push(`### Restart stall (1 request in flight: GETATTR, LOOKUP, 4 KiB WRITE in turn)`, '');
    md.push(`${r.ops} requests, ${r.errors} failed; ${r.workers} workers started; seed ${o.seed}.`, '');
    md.push('| event | n | stall p50 ms | stall p99 ms | stall max ms | longest request p50 ms | longest request max ms | target | met |');
    md.push('|---|---:|---:|---:|---:|---:|---:|---|---|');
    const names: Record<Kind, string> = {
      kill: 'SIGKILL worker', hup: 'SIGHUP (planned upgrade)', usr2: 'SIGUSR2 (keeper re-exec)',
      'hup-kill-incoming': 'SIGHUP, then SIGKILL of the loading incoming worker',
      'hup-kill-serving': 'SIGHUP, then SIGKILL of the serving worker while the incoming one loads',
      'usr2-kill-incoming': 'SIGUSR2, then SIGKILL of the loading incoming worker',
      'usr2-kill-serving': 'SIGUSR2, then SIGKILL of the adopted worker while the incoming one loads',
    };
    for (const kind of KINDS) {
      const rows = r.rows.filter((x) => x.kind === kind);
      if (rows.length === 0) continue;
      const st = rows.map((x) => x.stallMs).sort((a, b) => a - b);
      const lo = rows.map((x) => x.longestMs).sort((a, b) => a - b);
      let target = '–';
      let met = '–';
      if (kind === 'kill') {
        target = `p50 < ${TARGETS.killP50}, p99 < ${TARGETS.killP99}`;
        met = pct(st, 0.5) < TARGETS.killP50 && pct(st, 0.99) < TARGETS.killP99 ? 'yes' : 'no';
      } else if (kind === 'hup' || UPGRADE_KILLS.includes(kind as (typeof UPGRADE_KILLS)[number])) {
        target = `< ${TARGETS.upgrade} (every one)`;
        met = st.at(-1)! < TARGETS.upgrade ? 'yes' : `no (p50 ${pct(st, 0.5) < TARGETS.upgrade ? '<' : '≥'} ${TARGETS.upgrade})`;
      }
      md.push(`| ${names[kind]} | ${rows.length} | ${f0(pct(st, 0.5))} | ${f0(pct(st, 0.99))} | ${f0(st.at(-1)!)} | ${f0(pct(lo, 0.5))} | ${f0(lo.at(-1)!)} | ${target} | ${met} |`);
      verdicts.push(`${names[kind]}: stall p50 ${f0(pct(st, 0.5))} ms, p99 ${f0(pct(st, 0.99))} ms, max ${f0(st.at(-1)!)} ms${met !== '–' ? ` (target ${target}: ${met})` : ''}`);      if (kind === 'kill') {
        // The spare worker cuts the stall to the hand-over; a kill that comes before the next
        // spare has loaded waits for a Node start-up.
        for (const [label, spare] of [['  of which: a loaded spare took over', true], ['  of which: no spare loaded yet', false]] as const) {
          const sub = rows.filter((x) => x.spare === spare).map((x) => x.stallMs).sort((a, b) => a - b);
          if (sub.length) md.push(`| ${label} | ${sub.length} | ${f0(pct(sub, 0.5))} | ${f0(pct(sub, 0.99))} | ${f0(sub.at(-1)!)} | | | | |`);
        }
      }
    }
    md.push('', `Request latency away from the events (${r.baseline.n} requests): p50 ${(r.baseline.p50 * 1000).toFixed(0)} µs, p99 ${(r.baseline.p99 * 1000).toFixed(0)} µs, max ${f1(r.baseline.max)} ms.`, '');
    md.push(`Per event (ms; * = a loaded spare took over): ${KINDS.map((k) => `${k}: ${r.rows.filter((x) => x.kind === k).map((x) => f0(x.stallMs) + (x.spare ? '*' : '')).join(' ')}`).join('; ')}`, '');
    if (r.errors) throw new Error(`${r.errors} requests failed during the stall part`);
  }

  let pairs: Pair[] = [];
  if (o.only.includes('overhead')) {
    log(`reliability: overhead part: ${o.workloads.join(', ')}, default vs --no-keeper, ${o.rounds} rounds × (${o.warmup} s + ${o.duration} s)`);
    pairs = await overheadPart(native, o, log);
    md.push(`### Steady-state cost of the crash-consistency machinery (1 request in flight; ${o.rounds} rounds; per round and workload ${o.duration} s on each daemon, back to back)`, '');
    md.push('Cost of one pair = default vs --no-keeper run right after each other; the table gives the median pair and, in brackets, the middle half of the pairs (25th-75th percentile). ops/s and CPU/op: medians over the rounds.', '');
    md.push('| workload | default ops/s | --no-keeper ops/s | time/op cost | default CPU µs/op | --no-keeper CPU µs/op | CPU/op cost | target < 10% met |');
    md.push('|---|---:|---:|---:|---:|---:|---:|---|');
    const names: Record<Workload, string> = { getattr: 'GETATTR', create: 'CREATE+RELEASE+UNLINK', write4k: '4 KiB WRITE', read4k: '4 KiB READ' };
    const pctS = (v: number): string => `${v >= 0 ? '+' : ''}${f1(v)}%`;
    const spread = (xs: number[]): string => {
      const s = [...xs].sort((a, b) => a - b);
      return `${pctS(pct(s, 0.5))} [${pctS(pct(s, 0.25))}, ${pctS(pct(s, 0.75))}]`;
    };
    for (const w of o.workloads) {
      const ps = pairs.filter((p) => p.w === w);
      const errors = ps.reduce((a, p) => a + p.def.errors + p.nk.errors, 0);
      const tc = ps.map(timeCost), cc = ps.map(cpuCost);
      const met = median(tc) < TARGETS.overheadPct && median(cc) < TARGETS.overheadPct ? 'yes' : 'no';
      md.push(`| ${names[w]} | ${f0(median(ps.map((p) => p.def.opsPerSec)))} | ${f0(median(ps.map((p) => p.nk.opsPerSec)))} | ${spread(tc)} | ` +
        `${f1(median(ps.map((p) => p.def.cpuUsPerOp)))} | ${f1(median(ps.map((p) => p.nk.cpuUsPerOp)))} | ${spread(cc)} | ${met} |`);
      verdicts.push(`${names[w]}: time/op cost ${spread(tc)}, CPU/op cost ${spread(cc)} (median pair < ${TARGETS.overheadPct}%: ${met})`);
      if (errors) throw new Error(`${names[w]}: ${errors} failed requests`);
    }
    md.push('', 'time/op cost = no-keeper ops/s ÷ default ops/s − 1; CPU/op cost = default CPU/op (keeper + worker) ÷ no-keeper CPU/op (the one process) − 1.', '');
  }

  if (o.only.includes('parts')) {
    log('reliability: parts: the machinery step by step, in tight loops');
    const c = partCosts(native);
    md.push('### The machinery step by step (tight loops, best of 7 runs)', '');
    md.push(`Per call, µs: in-flight mark + pre_put + post_put ${c.inflight!.toFixed(3)}; journal intent + outcome (144-byte reply) ${c.journal!.toFixed(3)}; ` +
      `name probe (statx) ${c.probe!.toFixed(2)}; name_to_handle_at ${c.handle!.toFixed(2)}; lazy fd put + cancelling del ${c.registry!.toFixed(3)}.`, '');
    md.push('| workload | steps per op with the keeper | added µs per op | --no-keeper CPU µs/op (overhead part, median) | added |');
    md.push('|---|---|---:|---:|---:|');
    const names: Record<Workload, string> = { getattr: 'GETATTR', create: 'CREATE+RELEASE+UNLINK', write4k: '4 KiB WRITE', read4k: '4 KiB READ' };
    for (const w of o.workloads) {
      const counts = PART_COUNTS[w];
      const added = Object.entries(counts).reduce((a, [k, n]) => a + n * c[k]!, 0);
      const base = median(pairs.filter((p) => p.w === w).map((p) => p.nk.cpuUsPerOp));
      const steps = Object.entries(counts).map(([k, n]) => `${Number.isInteger(n) ? n : n.toFixed(2)} ${k}`).join(', ');
      md.push(`| ${names[w]} | ${steps} | ${added.toFixed(2)} | ${f1(base)} | ${Number.isFinite(base) ? `${((added / base) * 100).toFixed(1)}%` : '–'} |`);
      if (Number.isFinite(base)) verdicts.push(`${names[w]}: the machinery's own steps add ${added.toFixed(2)} µs per op, ${((added / base) * 100).toFixed(1)}% of --no-keeper's ${f1(base)} µs`);
    }
    md.push('', 'Not in these steps: cache effects, and the keeper and spare processes (idle in steady state: no fd crosses the control socket in these loops).', '');
  }

  const head = `virtiofsd-ts reliability — ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, Linux ${os.release()}; ${new Date().toISOString()}; ${((Date.now() - started) / 1000).toFixed(0)} s; load average ${load0.map((x) => x.toFixed(2)).join(' ')} at start, ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} at end`;
  const report = [head, '', `Command: \`npm run reliability -- ${process.argv.slice(2).join(' ')}\``.replace(/ -- `$/, '`'), '', ...md, 'Summary:', ...verdicts.map((v) => `- ${v}`), ''].join('\n');
  process.stdout.write(report);
  if (o.md) fs.writeFileSync(o.md, report);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    if (e instanceof UsageError) process.stderr.write(`reliability: ${e.message} (--help for usage)\n`);
    else process.stderr.write(`reliability failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  },
);
