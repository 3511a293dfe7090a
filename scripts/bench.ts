// npm run bench: our daemon and the C virtiofsd side by side, driven by a native vhost-user-fs
// front-end (native/bench, `vfsd-bench frontend`) that batches kicks and reaches well over a
// million ops/s against its null back-end, so the daemons, not the front-end, set the numbers.
//
// Columns (--peers), each a separate daemon process serving a fresh temp dir, all started at the
// beginning and kept up (an idle daemon sleeps in poll); every cell is run for each column back
// to back, in a rotating order, so load from elsewhere on the machine hits them alike:
//   c          /usr/lib/qemu/virtiofsd -o cache=none
//   ts         ./bin/virtiofsd-ts --cache=never (keeper + worker + spare worker)
//   null       vfsd-bench null: canned replies; the front-end's own ceiling
//   c-auto     /usr/lib/qemu/virtiofsd -o cache=auto          (optional)
//   ts-auto    ./bin/virtiofsd-ts (defaults: cache=auto)       (optional)
//   ts-p0      ./bin/virtiofsd-ts --cache=never --thread-pool-size=0   (optional)
//   ts-nokeeper ./bin/virtiofsd-ts --cache=never --no-keeper    (optional)
// Rows (--only), each at --depths requests in flight:
//   getattr      GETATTR of a file
//   lookup       LOOKUP of an existing name; each slot FORGETs its lookups every 1024
//   read4k       4 KiB READ at a random offset of a 64 MiB file in the page cache
//   write4k      4 KiB WRITE at a random offset of another 64 MiB file
//   read1m       1 MiB READ (256 device-writable 4 KiB buffers, as a Linux guest lays out pages)
//   write1m      1 MiB WRITE (256 readable 4 KiB buffers)
//   readdirplus  OPENDIR, READDIRPLUS (4 KiB each) to the end of a --dir-entries directory,
//                RELEASEDIR; an op is one READDIRPLUS; the entries' lookups go back in BATCH_FORGETs
//   readdir      the same with READDIR (what a guest sends when READDIRPLUS is not negotiated, as
//                the C virtiofsd does with cache=none)
//   create       CREATE + WRITE 4 KiB + RELEASE + UNLINK of a new file (one op, four requests),
//                the node ids given back in BATCH_FORGETs
// Per cell: ops/s, latency p50/p99 per op (post to used entry), CPU µs per op of the daemon's
// whole process tree (on-CPU time of every thread, /proc/<pid>/task/<tid>/schedstat), the
// front-end's CPU µs per op, and requests per kick. Rounds are many and short (5 x 1.2 s) so that
// load from elsewhere, which comes and goes over seconds, lands on every column alike; each
// number is the median over the rounds.
//
// --driver ts runs the older TypeScript front-end (scripts/bench/ts-driver.ts) instead: first five
// rows only, no null column; it caps near 60,000-80,000 ops/s.
//
// Calls (--calls): the front-end sleeps until the daemon signals its call eventfd, and tells it
// when to (EVENT_IDX used_event). batch (default): once 3/4 of the requests in flight are used
// (Linux's virtqueue_enable_cb_delayed), so a daemon pays no signal per reply and the front-end
// wakes a few times per depth: each daemon's own cost. each: at the next used entry, as Linux's
// virtio_fs asks: a daemon that signals after every reply (the C virtiofsd) pays for it.
//
// Arguments: --duration S (1.2), --warmup S (0.3), --rounds N (5), --only ROWS, --depths 1,32,128,
//   --peers c,ts,null, --sandbox-cost (= --peers ts,ts-nosb: what the sandbox and seccomp cost),
//   --dir-entries N (10000), --calls batch|each, --json FILE, --markdown FILE, --driver native|ts,
//   --profile DIR (our daemons under node --cpu-prof), --node-flags '...' (more node flags for them),
//   --baseline DIR (a column ts-base: DIR/bin/virtiofsd-ts --cache=never, an earlier build of ours in
//   a checkout of its own, for before/after tables; its ratio is ts-base/ts).

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { execFileSync } from 'node:child_process';
import { startDaemon, C_VIRTIOFSD } from '../test/support/daemon';
import { NATIVE_WORKLOADS, NativeFrontend, VFSD_BENCH, prepareShare, startNullBackend, type NativeWorkload } from '../test/support/native-frontend';
import { TS_DRIVER_WORKLOADS, openTsSession } from './bench/ts-driver';
import type { DriverCell, DriverSession } from './bench/types';
import { UsageError, list, median, parseArgs, ratio, runMain } from './bench/common';

interface Column { name: string; kind: 'c' | 'ts' | 'null'; args: string[]; label: string; vs?: string; bin?: string }
const COLUMNS: Column[] = [
  { name: 'c', kind: 'c', args: ['-o', 'cache=none'], label: 'C virtiofsd -o cache=none' },
  { name: 'ts', kind: 'ts', args: ['--cache=never'], label: 'virtiofsd-ts --cache=never', vs: 'c' },
  { name: 'null', kind: 'null', args: [], label: 'null back-end (canned replies: the front-end\'s ceiling)' },
  { name: 'c-auto', kind: 'c', args: ['-o', 'cache=auto'], label: 'C virtiofsd -o cache=auto' },
  { name: 'ts-auto', kind: 'ts', args: [], label: 'virtiofsd-ts (defaults, cache=auto)', vs: 'c-auto' },
  { name: 'ts-p0', kind: 'ts', args: ['--cache=never', '--thread-pool-size=0'], label: 'virtiofsd-ts --cache=never --thread-pool-size=0', vs: 'c' },
  { name: 'ts-nokeeper', kind: 'ts', args: ['--cache=never', '--no-keeper'], label: 'virtiofsd-ts --cache=never --no-keeper', vs: 'c' },
  // What the worker sandbox and its seccomp filter cost: ts-nosb/ts (--sandbox-cost).
  { name: 'ts-nosb', kind: 'ts', args: ['--cache=never', '--sandbox=none', '--seccomp=none'], label: 'virtiofsd-ts --cache=never --sandbox=none --seccomp=none', vs: 'ts' },
];
const DIR_NAME = 'dir';

interface Cell {
  workload: string; depth: number; column: string;
  ops: number; requests: number; entries: number; seconds: number;
  opsPerSec: number; entriesPerSec: number;
  p50us: number; p99us: number;
  daemonCpuUsPerOp: number; frontendCpuUsPerOp: number;
  requestsPerKick: number;
  errors: number; firstError: string;
  rounds: Array<Omit<Cell, 'rounds'>>;
}

// ---------------------------------------------------------------- arguments

interface Opts {
  driver: 'native' | 'ts'; duration: number; warmup: number; rounds: number; only: string[]; depths: number[];
  peers: string[]; baseline?: string; dirEntries: number; calls: 'each' | 'batch'; json?: string; markdown?: string; profile?: string; nodeFlags: string[];
}

function parseOpts(argv: string[]): Opts {
  const o: Opts = { driver: 'native', duration: 1.2, warmup: 0.3, rounds: 5, only: [], depths: [1, 32, 128], peers: [], dirEntries: 10_000, calls: 'batch', nodeFlags: [] };
  parseArgs(argv, (a, val) => {
    switch (a) {
      case '--driver': o.driver = val() as Opts['driver']; break;
      case '--duration': o.duration = Number(val()); break;
      case '--warmup': o.warmup = Number(val()); break;
      case '--rounds': o.rounds = Number(val()); break;
      case '--only': o.only = list(val()); break;
      case '--depths': o.depths = list(val()).map(Number); break;
      case '--peers': o.peers = list(val()); break;
      case '--sandbox-cost': o.peers = ['ts', 'ts-nosb']; break;
      case '--baseline': o.baseline = path.resolve(val()); break;
      case '--dir-entries': o.dirEntries = Number(val()); break;
      case '--calls': o.calls = val() as Opts['calls']; break;
      case '--json': o.json = val(); break;
      case '--markdown': o.markdown = val(); break;
      case '--profile': o.profile = path.resolve(val()); break;
      case '--node-flags': o.nodeFlags = val().split(/\s+/).filter(Boolean); break;
      case '-h': case '--help':
        process.stdout.write(`usage: npm run bench -- [--duration S] [--warmup S] [--rounds N] [--only ${NATIVE_WORKLOADS.join(',')}] [--depths 1,32,128] [--peers ${COLUMNS.map((c) => c.name).join(',')}] [--sandbox-cost] [--dir-entries N] [--calls batch|each] [--json FILE] [--markdown FILE] [--driver native|ts] [--profile DIR] [--node-flags "..."] [--baseline DIR]\n`);
        process.exit(0);
        break;
      default: return false;
    }
    return true;
  });
  if (o.driver !== 'native' && o.driver !== 'ts') throw new UsageError('--driver is native or ts');
  if (o.calls !== 'each' && o.calls !== 'batch') throw new UsageError('--calls is each or batch');
  const rows = o.driver === 'native' ? [...NATIVE_WORKLOADS] as string[] : TS_DRIVER_WORKLOADS;
  if (o.only.length === 0) o.only = rows;
  if (o.peers.length === 0) o.peers = o.driver === 'native' ? ['c', 'ts', 'null'] : ['c', 'ts'];
  if (!(o.duration > 0 && o.duration <= 600)) throw new UsageError('--duration must be in (0, 600]');
  if (!(o.warmup >= 0 && o.warmup <= 60)) throw new UsageError('--warmup must be in [0, 60]');
  if (!(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 20)) throw new UsageError('--rounds must be an integer in [1, 20]');
  if (!(Number.isInteger(o.dirEntries) && o.dirEntries >= 1 && o.dirEntries <= 1_000_000)) throw new UsageError('--dir-entries must be in [1, 1000000]');
  for (const w of o.only) if (!rows.includes(w)) throw new UsageError(`unknown row ${w} for the ${o.driver} driver (one of ${rows.join(',')})`);
  const maxDepth = o.driver === 'native' ? 128 : 64;
  for (const d of o.depths) if (!(Number.isInteger(d) && d >= 1 && d <= maxDepth)) throw new UsageError(`bad depth ${d} (1..${maxDepth})`);
  if (o.baseline) {
    const bin = path.join(o.baseline, 'bin', 'virtiofsd-ts');
    if (!fs.existsSync(bin)) throw new UsageError(`--baseline: ${bin} does not exist (a built checkout of ours)`);
    COLUMNS.push({ name: 'ts-base', kind: 'ts', args: ['--cache=never'], bin, label: `virtiofsd-ts --cache=never, the build in ${o.baseline}`, vs: 'ts' });
    if (!o.peers.includes('ts-base')) o.peers.push('ts-base');
  }
  for (const p of o.peers) if (!COLUMNS.some((c) => c.name === p)) throw new UsageError(`unknown peer ${p}`);
  if (o.driver === 'ts' && o.peers.includes('null')) throw new UsageError('the null back-end needs the native driver');
  return o;
}

// ---------------------------------------------------------------- sessions

interface Session { col: Column; pid: number; stderr(): string; stop(): Promise<void>; driver?: DriverSession }

/** NativeFrontend as a DriverSession. */
function nativeSession(fe: NativeFrontend): DriverSession {
  return {
    async run(w, depth, o) {
      const c = await fe.run(w as NativeWorkload, depth, o);
      return {
        ops: c.ops, requests: c.requests, entries: c.entries, seconds: c.seconds, p50us: c.p50us, p99us: c.p99us,
        daemonCpuNs: c.daemonCpuNs, frontendCpuUs: c.frontendCpuS * 1e6, kicks: c.kicks, posted: c.posted,
        errors: c.errors, firstError: c.firstError,
      };
    },
    close: () => fe.close(),
  };
}

/** Start one column's daemon (with its share prepared) and connect the driver. */
async function openSession(col: Column, o: Opts): Promise<Session> {
  let s: Session;
  if (col.kind === 'null') {
    const nb = await startNullBackend(o.dirEntries);
    s = { col, pid: nb.proc.pid!, stderr: nb.stderr, stop: nb.stop };
    s.driver = nativeSession(await NativeFrontend.start({ socket: nb.socket, pid: s.pid, file: 'data.bin', wfile: 'wdata.bin', dir: DIR_NAME }));
    return s;
  }
  // --profile / --node-flags: startDaemon() runs process.execPath, so point that at a wrapper
  // script that adds the flags, for this one spawn (NODE_OPTIONS may not carry --cpu-prof).
  const savedExecPath = process.execPath;
  let tmpWrapperDir: string | undefined;
  if (col.kind === 'ts' && (o.profile || o.nodeFlags.length)) {
    const dir = o.profile ?? (tmpWrapperDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-bench-')));
    fs.mkdirSync(dir, { recursive: true });
    const flags = [...o.nodeFlags];
    if (o.profile) flags.push('--cpu-prof', `--cpu-prof-dir=${o.profile}`, `--cpu-prof-name=${col.name}-$$.cpuprofile`);
    const wrapper = path.join(dir, `node-${col.name}.sh`);
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec '${savedExecPath}' ${flags.map((f) => `"${f}"`).join(' ')} "$@"\n`, { mode: 0o755 });
    process.execPath = wrapper;
  }
  let d;
  try {
    d = await startDaemon(col.kind, { args: col.args, bin: col.bin });
  } finally {
    process.execPath = savedExecPath;
    if (tmpWrapperDir) fs.rmSync(tmpWrapperDir, { recursive: true, force: true }); // exec'd already
  }
  s = {
    col, pid: d.proc.pid!, stderr: d.stderr,
    stop: async () => {
      // Both daemons exit when the front-end disconnects; a clean exit writes the CPU profile.
      if (d.proc.exitCode === null && d.proc.signalCode === null) {
        await Promise.race([new Promise((r) => d.proc.once('exit', r)), new Promise((r) => setTimeout(r, 10_000))]);
      }
      await d.stop();
    },
  };
  try {
    prepareShare(d.dir, o.driver === 'native' ? o.dirEntries : 0, DIR_NAME);
    s.driver = o.driver === 'native'
      ? nativeSession(await NativeFrontend.start({ socket: d.socket, pid: s.pid, file: 'data.bin', wfile: 'wdata.bin', dir: DIR_NAME }))
      : await openTsSession(d.socket, s.pid);
  } catch (e) {
    await s.stop();
    throw withStderr(e, s);
  }
  process.stderr.write(`  ${col.name}: pid ${s.pid}, share ${d.dir}\n`);
  return s;
}

function withStderr(e: unknown, s: Session): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  err.message += `\n${s.col.name} daemon stderr (tail):\n${s.stderr().slice(-2000)}`;
  return err;
}

async function closeSession(s: Session): Promise<void> {
  try { await s.driver?.close(); } catch { /* stopping anyway */ }
  await s.stop();
}

// ---------------------------------------------------------------- cells

function toCell(w: string, depth: number, column: string, r: DriverCell): Omit<Cell, 'rounds'> {
  return {
    workload: w, depth, column, ops: r.ops, requests: r.requests, entries: r.entries, seconds: r.seconds,
    opsPerSec: r.ops / r.seconds, entriesPerSec: r.entries / r.seconds,
    p50us: r.p50us, p99us: r.p99us,
    daemonCpuUsPerOp: r.ops ? r.daemonCpuNs / 1000 / r.ops : NaN,
    frontendCpuUsPerOp: r.ops ? r.frontendCpuUs / r.ops : NaN,
    requestsPerKick: r.kicks > 0 ? r.posted / r.kicks : NaN,
    errors: r.errors, firstError: r.firstError,
  };
}

/** Median of each rate over rounds (counts summed; the rounds kept for the JSON). */
function combine(rs: Array<Omit<Cell, 'rounds'>>): Cell {
  const med = (f: (c: Omit<Cell, 'rounds'>) => number): number => median(rs.map(f));
  const sum = (f: (c: Omit<Cell, 'rounds'>) => number): number => rs.reduce((n, c) => n + f(c), 0);
  return {
    workload: rs[0].workload, depth: rs[0].depth, column: rs[0].column,
    ops: sum((c) => c.ops), requests: sum((c) => c.requests), entries: sum((c) => c.entries), seconds: sum((c) => c.seconds),
    opsPerSec: med((c) => c.opsPerSec), entriesPerSec: med((c) => c.entriesPerSec),
    p50us: med((c) => c.p50us), p99us: med((c) => c.p99us),
    daemonCpuUsPerOp: med((c) => c.daemonCpuUsPerOp), frontendCpuUsPerOp: med((c) => c.frontendCpuUsPerOp),
    requestsPerKick: med((c) => c.requestsPerKick),
    errors: sum((c) => c.errors), firstError: rs.find((c) => c.firstError)?.firstError ?? '',
    rounds: rs,
  };
}

function fmt(v: number, digits: number): string {
  if (!Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Rounds of every cell, each round running the columns back to back in a rotating order. */
async function runAll(cols: Column[], o: Opts): Promise<Cell[]> {
  const sessions: Session[] = [];
  const cells: Cell[] = [];
  try {
    for (const col of cols) sessions.push(await openSession(col, o));
    let turn = 0;
    for (const w of o.only) {
      for (const depth of o.depths) {
        const per = new Map<string, Array<Omit<Cell, 'rounds'>>>(cols.map((c) => [c.name, []]));
        for (let round = 0; round < o.rounds; round++) {
          for (let k = 0; k < sessions.length; k++) {
            const s = sessions[(k + turn) % sessions.length];
            let c: Omit<Cell, 'rounds'>;
            try {
              c = toCell(w, depth, s.col.name, await s.driver!.run(w, depth, { warmup: o.warmup, duration: o.duration, calls: o.calls }));
            } catch (e) {
              throw withStderr(e, s);
            }
            per.get(s.col.name)!.push(c);
            process.stderr.write(`  ${s.col.name.padEnd(11)} ${w.padEnd(11)} depth ${String(depth).padStart(3)}: ${fmt(c.opsPerSec, 0)} ops/s, p50 ${fmt(c.p50us, 0)} us, p99 ${fmt(c.p99us, 0)} us, daemon ${fmt(c.daemonCpuUsPerOp, 2)} us/op, front-end ${fmt(c.frontendCpuUsPerOp, 2)} us/op${c.errors ? `, ${c.errors} errors: ${c.firstError}` : ''}\n`);
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

function markdown(cells: Cell[], cols: Column[], o: Opts): string {
  const get = (w: string, depth: number, col: string): Cell | undefined => cells.find((c) => c.workload === w && c.depth === depth && c.column === col);
  const pairs = cols.filter((c) => c.vs && cols.some((x) => x.name === c.vs));
  const lines: string[] = [];
  const row = (cellsOfRow: string[]): void => { lines.push(`| ${cellsOfRow.join(' | ')} |`); };
  const header = (names: string[]): void => {
    row(names);
    lines.push(`|---|---:|${names.slice(2).map(() => '---:').join('|')}|`);
  };
  const each = (f: (w: string, depth: number) => void): void => { for (const w of o.only) for (const depth of o.depths) f(w, depth); };

  // Throughput and CPU per op, with ratios ours / C.
  header(['row', 'depth', ...cols.map((c) => `${c.name} ops/s`), ...pairs.map((c) => `${c.name}/${c.vs} ops/s`),
    ...cols.filter((c) => c.kind !== 'null').map((c) => `${c.name} CPU µs/op`), ...pairs.map((c) => `${c.name}/${c.vs} CPU/op`)]);
  const noisy: string[] = [];
  each((w, depth) => {
    // A daemon column whose middle rounds (quartiles) disagree by more than 1.5x: the machine
    // changed under that cell. (The front-end's CPU per op is no such sign: it batches more
    // against a daemon that notifies less.)
    const flag = o.rounds > 1 && cols.some((c) => {
      if (c.kind === 'null') return false;
      const v = (get(w, depth, c.name)?.rounds ?? []).map((r) => r.opsPerSec).filter((x) => x > 0).sort((a, b) => a - b);
      return v.length > 1 && v[Math.ceil((3 * v.length) / 4) - 1] > 1.5 * v[Math.floor(v.length / 4)];
    });
    if (flag) noisy.push(`${w} depth ${depth}`);
    row([flag ? `${w} ⚠` : w, String(depth),
      ...cols.map((c) => fmt(get(w, depth, c.name)?.opsPerSec ?? NaN, 0)),
      ...pairs.map((c) => ratio(get(w, depth, c.name)?.opsPerSec ?? NaN, get(w, depth, c.vs!)?.opsPerSec ?? NaN)),
      ...cols.filter((c) => c.kind !== 'null').map((c) => fmt(get(w, depth, c.name)?.daemonCpuUsPerOp ?? NaN, 2)),
      ...pairs.map((c) => ratio(get(w, depth, c.name)?.daemonCpuUsPerOp ?? NaN, get(w, depth, c.vs!)?.daemonCpuUsPerOp ?? NaN))]);
  });
  lines.push('');

  // Latency, the front-end's own cost and the batching.
  header(['row', 'depth', ...cols.map((c) => `${c.name} p50 / p99 µs`), `front-end CPU µs/op (${cols.map((c) => c.name).join(' / ')})`, `requests per kick (${cols.map((c) => c.name).join(' / ')})`]);
  each((w, depth) => {
    row([w, String(depth),
      ...cols.map((c) => { const x = get(w, depth, c.name); return `${fmt(x?.p50us ?? NaN, 0)} / ${fmt(x?.p99us ?? NaN, 0)}`; }),
      cols.map((c) => fmt(get(w, depth, c.name)?.frontendCpuUsPerOp ?? NaN, 2)).join(' / '),
      cols.map((c) => fmt(get(w, depth, c.name)?.requestsPerKick ?? NaN, 1)).join(' / ')]);
  });

  const dirRows = o.only.filter((w) => w === 'readdirplus' || w === 'readdir');
  if (dirRows.length) {
    lines.push('');
    header(['directory rows', 'depth', ...cols.map((c) => `${c.name} entries/s`), ...pairs.map((c) => `${c.name}/${c.vs} entries/s`)]);
    for (const w of dirRows) {
      for (const depth of o.depths) {
        const g = (c: string): number => get(w, depth, c)?.entriesPerSec ?? NaN;
        row([`${w}, ${o.dirEntries} entries`, String(depth), ...cols.map((c) => fmt(g(c.name), 0)), ...pairs.map((c) => ratio(g(c.name), g(c.vs!)))]);
      }
    }
  }
  if (noisy.length) {
    lines.push('');
    lines.push(`⚠ a daemon column's ops/s differ by more than 1.5× between its first and third quartile round (other load on the machine): ${noisy.join(', ')}; rerun those with --only/--depths.`);
  }
  const errs = cells.filter((c) => c.errors > 0);
  if (errs.length) {
    lines.push('');
    for (const c of errs) lines.push(`- ${c.column} ${c.workload} depth ${c.depth}: ${c.errors} failed replies (${c.firstError})`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  const cols = COLUMNS.filter((c) => o.peers.includes(c.name));
  if (cols.some((c) => c.kind === 'c') && !fs.existsSync(C_VIRTIOFSD)) throw new UsageError(`${C_VIRTIOFSD} is not installed (leave c out of --peers)`);
  if (o.driver === 'native' && !fs.existsSync(VFSD_BENCH)) throw new UsageError(`${VFSD_BENCH} is missing: run npm run build:native`);
  let cVersion = '';
  try { cVersion = execFileSync(C_VIRTIOFSD, ['--version'], { encoding: 'utf8' }).split('\n')[0]; } catch { /* optional */ }
  const started = Date.now();
  const loadavgStart = os.loadavg();
  const cellCount = o.only.length * o.depths.length * cols.length * o.rounds;
  process.stderr.write(`bench (${o.driver} driver): ${o.only.length} rows × ${o.depths.length} depths × ${cols.length} columns × ${o.rounds} rounds, ${o.warmup} s warm-up + ${o.duration} s each: at least ${Math.ceil((cellCount * (o.warmup + o.duration)) / 60)} min\n`);
  const cells = await runAll(cols, o);
  const machine = {
    cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '?', node: process.version, kernel: os.release(),
    cVirtiofsd: cVersion, date: new Date().toISOString(), loadavgStart, loadavgEnd: os.loadavg(),
  };
  const out = [
    `virtiofsd-ts bench (${o.driver} driver${o.driver === 'native' ? `, calls=${o.calls}` : ''}) — ${machine.date}; ${machine.cpus} CPUs (${machine.cpuModel}), Node ${machine.node}, Linux ${machine.kernel}; ${o.warmup} s warm-up + ${o.duration} s per cell${o.rounds > 1 ? `, median of ${o.rounds} rounds` : ''}; total ${((Date.now() - started) / 1000).toFixed(0)} s; load average ${machine.loadavgStart.map((x) => x.toFixed(2)).join(' ')} at start, ${machine.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} at end`,
    `columns: ${cols.map((c) => `${c.name} = ${c.label}`).join('; ')}`,
    '',
    markdown(cells, cols, o),
    '',
  ].join('\n');
  process.stdout.write(out);
  if (o.markdown) fs.writeFileSync(o.markdown, out);
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ machine, options: o, columns: cols, cells }, null, 2) + '\n');
}

runMain('bench', main);
