// npm run bench:guest: the guest-level table. Boots the e2e guest (scripts/guest/run.sh, QEMU 7.2
// under TCG) once per daemon and round, against the C virtiofsd (-o cache=none) and ours
// (--cache=never), and runs scripts/guest/bench-guest.sh in it: fio (sequential 1 MiB O_DIRECT
// write, sequential 1 MiB read, random 4 KiB read and write, each time-based) and a perl loop
// (readdir of a 1,500-entry directory, create, stat, unlink). Prints each row per daemon and
// the ratio ours / C (above 1× means we are faster). Rounds alternate which daemon goes first.
//
// Arguments: --rounds N (2), --peers c,ts[,c-auto,ts-auto], --runtime S per fio job (10),
//   --files N (2000), --dir-entries N (1500), --timeout S per boot (900), --json FILE,
//   --markdown FILE. VFSD_GUEST_CACHE points at a built guest (scripts/guest/setup.sh runs if
//   there is none).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { startDaemon, C_VIRTIOFSD, REPO } from '../test/support/daemon';
import { UsageError, list, median, parseArgs, ratio, runMain } from './bench/common';

interface Column { name: string; kind: 'c' | 'ts'; args: string[]; label: string; vs?: string }
const COLUMNS: Column[] = [
  { name: 'c', kind: 'c', args: ['-o', 'cache=none'], label: 'C virtiofsd -o cache=none' },
  { name: 'ts', kind: 'ts', args: ['--cache=never'], label: 'virtiofsd-ts --cache=never', vs: 'c' },
  { name: 'c-auto', kind: 'c', args: ['-o', 'cache=auto'], label: 'C virtiofsd -o cache=auto' },
  { name: 'ts-auto', kind: 'ts', args: [], label: 'virtiofsd-ts (defaults, cache=auto)', vs: 'c-auto' },
];

/** Each row: where it comes from in the guest's results, and its unit (higher is better). */
interface Row { key: string; label: string; unit: string; get(r: GuestResults): number }
const thousands = (n: number): string => n.toLocaleString('en-US');
interface FioJob { read: { bw: number; iops: number }; write: { bw: number; iops: number } }
interface GuestResults { fio: Record<string, FioJob>; meta: { readdirListingsPerS: number; createPerS: number; statPerS: number; unlinkPerS: number } }
const ROWS: Row[] = [
  { key: 'readdir', label: 'readdir of a DIR_ENTRIES-entry directory', unit: 'listings/s', get: (r) => r.meta.readdirListingsPerS },
  { key: 'seqwrite', label: 'sequential 1 MiB O_DIRECT write', unit: 'MiB/s', get: (r) => r.fio['seqwrite-1m-direct'].write.bw / 1024 },
  { key: 'seqread', label: 'sequential 1 MiB read', unit: 'MiB/s', get: (r) => r.fio['seqread-1m'].read.bw / 1024 },
  { key: 'randread', label: 'random 4 KiB read', unit: 'IOPS', get: (r) => r.fio['randread-4k'].read.iops },
  { key: 'randwrite', label: 'random 4 KiB write', unit: 'IOPS', get: (r) => r.fio['randwrite-4k'].write.iops },
  { key: 'create', label: 'create (empty file)', unit: 'files/s', get: (r) => r.meta.createPerS },
  { key: 'stat', label: 'stat', unit: 'stats/s', get: (r) => r.meta.statPerS },
  { key: 'unlink', label: 'unlink', unit: 'files/s', get: (r) => r.meta.unlinkPerS },
];

interface Opts { rounds: number; peers: string[]; runtime: number; files: number; dirEntries: number; timeout: number; json?: string; markdown?: string }

function parseOpts(argv: string[]): Opts {
  const o: Opts = { rounds: 2, peers: ['c', 'ts'], runtime: 10, files: 2000, dirEntries: 1500, timeout: 900 };
  parseArgs(argv, (a, val) => {
    switch (a) {
      case '--rounds': o.rounds = Number(val()); break;
      case '--peers': o.peers = list(val()); break;
      case '--runtime': o.runtime = Number(val()); break;
      case '--files': o.files = Number(val()); break;
      case '--dir-entries': o.dirEntries = Number(val()); break;
      case '--timeout': o.timeout = Number(val()); break;
      case '--json': o.json = val(); break;
      case '--markdown': o.markdown = val(); break;
      case '-h': case '--help':
        process.stdout.write('usage: npm run bench:guest -- [--rounds N] [--peers c,ts,c-auto,ts-auto] [--runtime S] [--files N] [--dir-entries N] [--timeout S] [--json FILE] [--markdown FILE]\n');
        process.exit(0);
        break;
      default: return false;
    }
    return true;
  });
  if (!(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 10)) throw new UsageError('--rounds must be in [1, 10]');
  if (!(o.runtime >= 1 && o.runtime <= 600)) throw new UsageError('--runtime must be in [1, 600]');
  if (!(Number.isInteger(o.files) && o.files >= 1)) throw new UsageError('--files must be a positive integer');
  if (!(Number.isInteger(o.dirEntries) && o.dirEntries >= 1)) throw new UsageError('--dir-entries must be a positive integer');
  for (const p of o.peers) if (!COLUMNS.some((c) => c.name === p)) throw new UsageError(`unknown peer ${p}`);
  return o;
}

const RUN_SH = path.join(REPO, 'scripts', 'guest', 'run.sh');
const GUEST_SCRIPT = path.join(REPO, 'scripts', 'guest', 'bench-guest.sh');

function ensureGuest(): void {
  const cache = process.env.VFSD_GUEST_CACHE ?? path.join(REPO, '.cache', 'guest');
  if (fs.existsSync(path.join(cache, 'vmlinuz')) && fs.existsSync(path.join(cache, 'initramfs.cpio.gz'))) return;
  process.stderr.write(`bench:guest: no guest in ${cache}; building it (scripts/guest/setup.sh)\n`);
  const r = spawnSync('bash', [path.join(REPO, 'scripts', 'guest', 'setup.sh')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('scripts/guest/setup.sh failed');
}

/** One boot: the column's daemon on a fresh share, the guest script, its results. */
async function boot(col: Column, o: Opts): Promise<{ results: GuestResults; seconds: number }> {
  const d = await startDaemon(col.kind, { args: col.args });
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `vfsd-bench-guest-${col.name}-`));
  const t0 = Date.now();
  try {
    const args = [RUN_SH, '--socket', d.socket, '--script', GUEST_SCRIPT, '--out', out, '--timeout', String(o.timeout),
      '--env', `BENCH_RUNTIME=${o.runtime}`, '--env', `BENCH_FILES=${o.files}`, '--env', `BENCH_DIR_ENTRIES=${o.dirEntries}`];
    const child = spawn('bash', args, { stdio: ['ignore', 'inherit', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    const rc = await new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    if (rc !== 0) {
      const console = fs.existsSync(path.join(out, 'console.log')) ? fs.readFileSync(path.join(out, 'console.log'), 'utf8').slice(-3000) : '';
      throw new Error(`${col.name}: run.sh exited ${rc}\n${err}\nconsole (tail):\n${console}\ndaemon stderr (tail):\n${d.stderr().slice(-2000)}`);
    }
    const dir = path.join(out, 'bench');
    const fio: Record<string, FioJob> = {};
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.json') && n !== 'meta.json')) {
      // fio may print notes before the JSON document.
      const text = fs.readFileSync(path.join(dir, f), 'utf8');
      fio[f.replace(/\.json$/, '')] = (JSON.parse(text.slice(text.indexOf('{'))) as { jobs: FioJob[] }).jobs[0];
    }
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as GuestResults['meta'];
    return { results: { fio, meta }, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await d.stop();
    fs.rmSync(out, { recursive: true, force: true });
  }
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { maximumFractionDigits: v < 100 ? 1 : 0 });
}

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  const cols = COLUMNS.filter((c) => o.peers.includes(c.name));
  if (cols.some((c) => c.kind === 'c') && !fs.existsSync(C_VIRTIOFSD)) throw new UsageError(`${C_VIRTIOFSD} is not installed`);
  ensureGuest();
  const started = new Date();
  const loadStart = os.loadavg();
  // values[column][row] = one number per round
  const values = new Map<string, Map<string, number[]>>(cols.map((c) => [c.name, new Map(ROWS.map((r) => [r.key, []]))]));
  const raw: Array<{ round: number; column: string; seconds: number; results: GuestResults }> = [];
  for (let round = 0; round < o.rounds; round++) {
    const order = cols.map((_, k) => cols[(k + round) % cols.length]);
    for (const col of order) {
      process.stderr.write(`bench:guest round ${round + 1}/${o.rounds}: ${col.name} (${col.label})\n`);
      const { results, seconds } = await boot(col, o);
      raw.push({ round, column: col.name, seconds, results });
      for (const r of ROWS) values.get(col.name)!.get(r.key)!.push(r.get(results));
      process.stderr.write(`  ${col.name}: ${ROWS.map((r) => `${r.key} ${fmt(r.get(results))}`).join(', ')} (${seconds.toFixed(0)} s)\n`);
    }
  }
  const med = (c: string, r: string): number => median(values.get(c)!.get(r)!);
  const pairs = cols.filter((c) => c.vs && cols.some((x) => x.name === c.vs));
  const lines = [
    `virtiofsd-ts guest bench — ${started.toISOString()}; QEMU 7.2 TCG guest, ${os.cpus().length} host CPUs; ${o.rounds} round(s), median; fio ${o.runtime} s per job, ${o.files} files, readdir of ${o.dirEntries} entries; load average ${loadStart.map((x) => x.toFixed(2)).join(' ')} at start, ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} at end`,
    `columns: ${cols.map((c) => `${c.name} = ${c.label}`).join('; ')}`,
    '',
    `| row | unit | ${cols.map((c) => c.name).join(' | ')} | ${pairs.map((c) => `${c.name}/${c.vs}`).join(' | ')} |`,
    `|---|---|${cols.map(() => '---:').join('|')}|${pairs.map(() => '---:').join('|')}|`,
    ...ROWS.map((r) => `| ${r.label.replace('DIR_ENTRIES', thousands(o.dirEntries))} | ${r.unit} | ${cols.map((c) => fmt(med(c.name, r.key))).join(' | ')} | ${pairs.map((c) => ratio(med(c.name, r.key), med(c.vs!, r.key))).join(' | ')} |`),
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(text);
  if (o.markdown) fs.writeFileSync(o.markdown, text);
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ started, options: o, columns: cols, raw }, null, 2) + '\n');
}

runMain('bench:guest', main);
