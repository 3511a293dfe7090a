// What every fuzz target is and how one is run: over the checked-in corpus (replay), over inputs
// fast-check generates from a seed (a fixed number of runs in `npm test`, as many as asked for
// in `npm run fuzz`), and over mutations of the corpus that reach new code (guided.ts).
// A target's run() throws (or rejects, or does not settle in time) when it finds a bug.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import fc from 'fast-check';

export interface FuzzTarget {
  readonly name: string;
  /** What it exercises, for the run summary and docs. */
  readonly about: string;
  /** Longest input worth generating, bytes. */
  readonly maxLength: number;
  /** The source files it aims at (relative to the repo), for coverage figures. */
  readonly files: readonly string[];
  setup?(): void | Promise<void>;
  run(data: Uint8Array): void | Promise<void>;
  teardown?(): void | Promise<void>;
}

/** The repository root (this file is dist/test/fuzz/lib/harness.js once built). */
export const REPO = path.resolve(__dirname, '../../../..');
export const CORPUS = path.join(REPO, 'test/fuzz/corpus');

/** A run that has not settled after this long is a hang. */
export const RUN_TIMEOUT_MS = 10_000;

export function corpusFiles(target: string): string[] {
  const dir = path.join(CORPUS, target);
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => !f.startsWith('.')).sort().map((f) => path.join(dir, f));
}

/** Store an input in the target's corpus under its content hash (prefix "crash-" for one that
 *  failed, kept when the corpus is distilled); returns the path. */
export function saveInput(target: string, data: Uint8Array, prefix = ''): string {
  const dir = path.join(CORPUS, target);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, prefix + createHash('sha1').update(data).digest('hex').slice(0, 16));
  fs.writeFileSync(file, data);
  return file;
}

/** One input, with the hang check. */
export async function runOne(t: FuzzTarget, data: Uint8Array, timeoutMs = RUN_TIMEOUT_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${t.name}: input did not finish within ${timeoutMs} ms (hang)`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(() => t.run(data)), hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every corpus input of the target; returns how many ran. Throws on the first failure, naming the file. */
export async function replayCorpus(t: FuzzTarget): Promise<number> {
  const files = corpusFiles(t.name);
  for (const f of files) {
    try {
      await runOne(t, fs.readFileSync(f));
    } catch (e) {
      (e as Error).message = `${path.relative(REPO, f)}: ${(e as Error).message}`;
      throw e;
    }
  }
  return files.length;
}

export interface GenOptions { runs: number; seed: number; onFailure?: (data: Uint8Array) => void; minimizeBudget?: number }

/**
 * runs inputs that fast-check generates from seed. On a failure fast-check shrinks the input to
 * a small one that still fails, which is thrown (with the seed and the bytes in hex) after
 * onFailure has seen it.
 */
export async function runGenerated(t: FuzzTarget, o: GenOptions): Promise<void> {
  // No shrinking by fast-check (see minimize()).
  const arb = fc.noShrink(fc.uint8Array({ maxLength: t.maxLength, size: 'max' }));
  const details = await fc.check(fc.asyncProperty(arb, async (data) => { await runOne(t, data); }), {
    numRuns: o.runs, seed: o.seed, endOnFailure: true,
  });
  if (!details.failed) return;
  const data = await minimize(t, details.counterexample?.[0] ?? new Uint8Array(0), o.minimizeBudget ?? 300);
  o.onFailure?.(data);
  const err = (await failureOf(t, data)) ?? (details.errorInstance instanceof Error ? details.errorInstance : new Error(String(details.errorInstance)));
  err.message = `${t.name}: seed ${o.seed}, input ${Buffer.from(data).toString('hex')}: ${err.message}`;
  throw err;
}

/** The failure of one input, or null when it passes. */
export async function failureOf(t: FuzzTarget, data: Uint8Array, timeoutMs = RUN_TIMEOUT_MS): Promise<Error | null> {
  try {
    await runOne(t, data, timeoutMs);
    return null;
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

/** What makes two failures "the same" while minimizing: the first line, digits left out. */
const signature = (e: Error): string => (e.message.split('\n')[0] ?? '').replace(/\d+/g, '#');

/**
 * Shrink a failing input within a budget of runs (fast-check's own shrinking of a 4 KiB byte
 * array can take hours): cut the tail (reads past the end give 0), then drop and zero chunks,
 * keeping each change that still fails the same way.
 */
export async function minimize(t: FuzzTarget, data: Uint8Array, budget = 2000): Promise<Uint8Array> {
  const first = await failureOf(t, data);
  if (!first) return data;
  const sig = signature(first);
  // A plain Uint8Array: Buffer's slice() would be a view, and zeroing it would zero the original.
  let best = Uint8Array.from(data);
  let runs = 0;
  const fails = async (d: Uint8Array): Promise<boolean> => {
    runs++;
    const e = await failureOf(t, d, 2000);
    return e !== null && signature(e) === sig;
  };
  // Shortest failing prefix (binary search; not exact when failing is not monotone, fine).
  let lo = 0, hi = best.length;
  while (lo < hi && runs < budget) {
    const mid = (lo + hi) >> 1;
    if (await fails(best.subarray(0, mid))) hi = mid; else lo = mid + 1;
  }
  best = best.slice(0, hi);
  for (const chunk of [64, 16, 4, 1]) {
    for (let at = 0; at < best.length && runs < budget;) {
      const cut = new Uint8Array(best.length - Math.min(chunk, best.length - at));
      cut.set(best.subarray(0, at));
      cut.set(best.subarray(at + chunk), at);
      if (await fails(cut)) { best = cut; continue; }
      const z = best.slice();
      let any = false;
      for (let i = at; i < Math.min(at + chunk, z.length); i++) { if (z[i] !== 0) any = true; z[i] = 0; }
      if (any && await fails(z)) best = z;
      at += chunk;
    }
  }
  return best;
}
