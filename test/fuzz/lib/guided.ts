// The long-running loop of `npm run fuzz`, one target per worker thread: inputs come from
// fast-check (seeded) and, with coverage feedback, from mutations of a corpus that grows with
// every input that runs a block (or a block a new number of times) nothing before it ran.
// Coverage is taken once per batch; only a batch that found something is re-run input by input
// to see which inputs to keep. The parent thread watches a progress counter in shared memory,
// so an input stuck in a synchronous loop is caught (the worker is terminated) and saved.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import fc from 'fast-check';
import { corpusFiles, failureOf, minimize, runOne, saveInput, type FuzzTarget } from './harness';
import { Coverage, type FileCoverage } from './coverage';
import { TARGETS } from '../targets';

export interface WorkerJob {
  target: string; runs: number; seconds: number; seed: number; guided: boolean; save: boolean;
  /** Int32[0] = inputs started, Int32[1] = current input length, bytes from 8 = the input. */
  shared: SharedArrayBuffer;
}

export type WorkerReport =
  | { t: 'progress'; runs: number; corpus: number; features: number }
  | { t: 'fail'; runs: number; input: Uint8Array; message: string; file: string }
  | { t: 'done'; runs: number; corpus: number; features: number; added: number; coverage: FileCoverage[] };

const BATCH = 32;

/** A small PRNG (xorshift32) for the mutator, seeded from the job. */
function rng(seed: number): () => number {
  let x = (seed >>> 0) || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x;
  };
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40];

/** libFuzzer-style mutations: flip, set, interesting byte or word, insert, erase, copy, splice. */
export function mutate(d: Uint8Array, other: Uint8Array | undefined, r: () => number, max: number): Uint8Array {
  let b = Array.from(d);
  const n = 1 + (r() % 4);
  for (let k = 0; k < n; k++) {
    const at = b.length === 0 ? 0 : r() % b.length;
    switch (r() % 9) {
      case 0: if (b.length) b[at] = b[at]! ^ (1 << (r() % 8)); break;
      case 1: if (b.length) b[at] = r() & 0xff; break;
      case 2: if (b.length) b[at] = INTERESTING[r() % INTERESTING.length]!; break;
      case 3: { const w = [0, 0xffffffff, 0x80000000, 0x7fffffff, 16, 4096, 65536][r() % 7]!; for (let i = 0; i < 4 && at + i < b.length; i++) b[at + i] = (w >>> (8 * i)) & 0xff; break; }
      case 4: { const len = 1 + (r() % 16); b.splice(at, 0, ...Array.from({ length: len }, () => r() & 0xff)); break; }
      case 5: b.splice(at, 1 + (r() % 16)); break;
      case 6: { const len = 1 + (r() % 32); const from = b.length ? r() % b.length : 0; b.splice(at, 0, ...b.slice(from, from + len)); break; }
      case 7: if (other && other.length) { const from = r() % other.length; b = b.slice(0, at).concat(Array.from(other.subarray(from, from + 1 + (r() % 64)))).concat(b.slice(at)); } break;
      default: if (b.length) b[at] = (b[at]! + ((r() % 35) - 17)) & 0xff;
    }
  }
  if (b.length > max) b = b.slice(0, max);
  return Uint8Array.from(b);
}

async function main(job: WorkerJob): Promise<void> {
  const t: FuzzTarget | undefined = TARGETS.find((x) => x.name === job.target);
  if (!t) throw new Error(`no fuzz target ${job.target}`);
  const counter = new Int32Array(job.shared, 0, 2);
  const cur = new Uint8Array(job.shared, 8);
  const post = (m: WorkerReport): void => parentPort!.postMessage(m);
  await t.setup?.();
  const cov = new Coverage();
  const seen = new Set<string>();
  const corpus: Uint8Array[] = corpusFiles(t.name).map((f) => new Uint8Array(fs.readFileSync(f)));
  let added = 0;
  const absorb = (fs_: string[]): number => {
    let n = 0;
    for (const f of fs_) if (!seen.has(f)) { seen.add(f); n++; }
    return n;
  };
  let runs = 0;
  const one = async (d: Uint8Array): Promise<void> => {
    cur.set(d.subarray(0, cur.length));
    Atomics.store(counter, 1, d.length);
    Atomics.add(counter, 0, 1);
    runs++;
    try {
      await runOne(t, d);
    } catch {
      const min = await minimize(t, d, 2000);
      const e = await failureOf(t, min) ?? new Error('failed once, not again (flaky)');
      const file = saveInput(t.name, min.length > 0 ? min : d, 'crash-');
      post({ t: 'fail', runs, input: min, message: e.stack ?? e.message, file });
      await t.teardown?.();
      process.exit(1);
    }
  };
  // The corpus first: its coverage is the starting point.
  for (const d of corpus) { await one(d); absorb(cov.features()); }
  const r = rng(job.seed);
  const arb = fc.noShrink(fc.uint8Array({ maxLength: t.maxLength, size: 'max' }));
  const deadline = job.seconds > 0 ? Date.now() + job.seconds * 1000 : Infinity;
  let lastReport = Date.now();
  for (let b = 0; runs < job.runs && Date.now() < deadline; b++) {
    const fresh = fc.sample(arb, { numRuns: BATCH, seed: job.seed + b });
    const batch: Uint8Array[] = [];
    for (let i = 0; i < BATCH; i++) {
      const d = job.guided && corpus.length > 0 && (r() % 10) < 8
        ? mutate(corpus[r() % corpus.length]!, corpus[r() % corpus.length], r, t.maxLength)
        : fresh[i]!;
      batch.push(d);
      await one(d);
    }
    if (job.guided) {
      const fresh = cov.features().filter((f) => !seen.has(f));
      if (fresh.length > 0) {
        // Which inputs of the batch reached it? Run them again one at a time.
        for (const d of batch) {
          cov.features();
          await one(d);
          if (absorb(cov.features()) > 0) {
            corpus.push(d);
            added++;
          }
        }
      }
    }
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      post({ t: 'progress', runs, corpus: corpus.length, features: seen.size });
    }
  }
  if (job.save) {
    // Distil: a greedy set cover of the blocks the corpus runs (hit counts left out, so the
    // checked-in corpus stays small): the input that adds most, until none adds any. The result
    // replaces the target's corpus (crash- inputs stay).
    const per: Array<{ d: Uint8Array; f: Set<string> }> = [];
    for (const d of corpus) {
      cov.features();
      await one(d);
      per.push({ d, f: new Set(cov.features().map((x) => x.slice(0, x.lastIndexOf(':')))) });
    }
    const keep: Uint8Array[] = [];
    const covered = new Set<string>();
    for (;;) {
      let best: { d: Uint8Array; f: Set<string> } | null = null, gain = 0;
      for (const p of per) {
        let g = 0;
        for (const x of p.f) if (!covered.has(x)) g++;
        if (g > gain || (g === gain && g > 0 && best !== null && p.d.length < best.d.length)) { gain = g; best = p; }
      }
      if (best === null) break;
      keep.push(best.d);
      for (const x of best.f) covered.add(x);
    }
    for (const f of corpusFiles(t.name)) if (!path.basename(f).startsWith('crash-')) fs.unlinkSync(f);
    for (const d of keep) saveInput(t.name, d);
    post({ t: 'progress', runs, corpus: keep.length, features: covered.size });
  }
  const coverage = cov.report(t.files);
  cov.close();
  await t.teardown?.();
  post({ t: 'done', runs, corpus: corpus.length, features: seen.size, added, coverage });
}

if (parentPort && workerData) {
  main(workerData as WorkerJob).catch((e: unknown) => {
    parentPort!.postMessage({ t: 'fail', runs: 0, input: new Uint8Array(0), message: String((e as Error).stack ?? e), file: '' });
    process.exit(1);
  });
}
