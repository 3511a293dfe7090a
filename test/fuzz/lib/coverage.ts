// Coverage feedback and figures from V8's own block coverage (the inspector's precise coverage,
// the data NODE_V8_COVERAGE and c8 use), for the project's compiled sources only.
//   - features(): the blocks that ran since the last call, as strings (a block + a hit-count
//     bucket, as libFuzzer counts edges), for the guided loop to tell an input that reached new
//     code;
//   - report(): line, branch (block) and function percentages per file over everything seen.
// The figures are for dist/src/**/*.js, which tsc emits line for line from src/**/*.ts (ES2022,
// no downlevelling), so they stand for the TypeScript files.

import * as fs from 'node:fs';
import * as inspector from 'node:inspector';

interface Range { startOffset: number; endOffset: number; count: number }
interface FnCov { functionName: string; ranges: Range[]; isBlockCoverage: boolean }
interface ScriptCov { scriptId: string; url: string; functions: FnCov[] }

const bucket = (n: number): number => (n >= 128 ? 8 : n >= 32 ? 7 : n >= 16 ? 6 : n >= 8 ? 5 : n >= 4 ? 4 : n);

export interface FileCoverage { file: string; lines: [number, number]; branches: [number, number]; functions: [number, number] }

export class Coverage {
  private readonly session = new inspector.Session();
  /** url -> "start:end" -> [covered, isFunctionRange] */
  private readonly seen = new Map<string, Map<string, [boolean, boolean]>>();

  constructor(private readonly match: (url: string) => boolean = (u) => u.includes('/dist/src/')) {
    this.session.connect();
    this.post('Profiler.enable');
    this.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  }

  private post(method: string, params?: object): unknown {
    // A session on this thread answers synchronously.
    let out: unknown, err: Error | null = null;
    this.session.post(method, params ?? {}, (e, r) => { err = e; out = r; });
    if (err) throw err;
    return out;
  }

  /** Blocks run since the last call (counters reset each time). */
  take(): ScriptCov[] {
    const r = this.post('Profiler.takePreciseCoverage') as { result: ScriptCov[] };
    const out = r.result.filter((s) => this.match(s.url));
    for (const s of out) {
      let m = this.seen.get(s.url);
      if (!m) this.seen.set(s.url, (m = new Map()));
      for (const f of s.functions) {
        f.ranges.forEach((rg, i) => {
          const k = `${rg.startOffset}:${rg.endOffset}`;
          const prev = m!.get(k);
          m!.set(k, [(prev?.[0] ?? false) || rg.count > 0, i === 0]);
        });
      }
    }
    return out;
  }

  /** Feature strings of the blocks that ran since the last take(). */
  features(): string[] {
    const f: string[] = [];
    for (const s of this.take()) {
      for (const fn of s.functions) {
        for (const rg of fn.ranges) if (rg.count > 0) f.push(`${s.scriptId}:${rg.startOffset}:${rg.endOffset}:${bucket(rg.count)}`);
      }
    }
    return f;
  }

  /** Percentages for the files whose url ends with one of `files` (given as src/... .ts paths). */
  report(files: readonly string[]): FileCoverage[] {
    this.take();
    const out: FileCoverage[] = [];
    for (const file of files) {
      const js = '/dist/' + file.replace(/\.ts$/, '.js');
      const url = [...this.seen.keys()].find((u) => u.endsWith(js));
      if (!url) { out.push({ file, lines: [0, 0], branches: [0, 0], functions: [0, 0] }); continue; }
      const m = this.seen.get(url)!;
      const ranges = [...m].map(([k, [cov, fn]]) => {
        const [s, e] = k.split(':').map(Number) as [number, number];
        return { s, e, cov, fn };
      });
      const branches: [number, number] = [0, 0], functions: [number, number] = [0, 0];
      for (const r of ranges) {
        const c = r.fn ? functions : branches;
        c[1]++;
        if (r.cov) c[0]++;
      }
      // A line counts when the innermost range around its first character ever ran.
      const src = fs.readFileSync(new URL(url), 'utf8');
      const lines: [number, number] = [0, 0];
      let off = 0;
      for (const line of src.split('\n')) {
        const t = line.trimStart();
        const at = off + (line.length - t.length);
        off += line.length + 1;
        if (t === '' || t.startsWith('//') || t.startsWith('*') || t.startsWith('/*') || /^[})\];,]*$/.test(t) || t.startsWith('import ') || t.startsWith('//# sourceMappingURL')) continue;
        let best: { s: number; e: number; cov: boolean } | null = null;
        for (const r of ranges) {
          if (r.s <= at && at < r.e && (!best || r.e - r.s < best.e - best.s)) best = r;
        }
        if (!best) continue; // top-level code outside any function range
        lines[1]++;
        if (best.cov) lines[0]++;
      }
      out.push({ file, lines, branches, functions });
    }
    return out;
  }

  close(): void {
    this.post('Profiler.stopPreciseCoverage');
    this.session.disconnect();
  }
}

export const pct = ([a, b]: [number, number]): string => (b === 0 ? '-' : `${((100 * a) / b).toFixed(1)}%`);
