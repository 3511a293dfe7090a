// `npm run fuzz -- [options]`: fuzz for as long as asked, with coverage feedback.
//
//   --target a,b     targets to run, one after the other (default: all; --list shows them)
//   --runs N         inputs per target (default 100000, or unlimited with --seconds)
//   --seconds S      time per target
//   --seed N         first seed (default: from the clock; printed, so a run can be repeated)
//   --no-guided      fast-check's generated inputs only, no corpus mutation
//   --save           distil the corpus and the inputs that reached new code into
//                    test/fuzz/corpus/<target>/ (replacing it; crash- inputs stay)
//   --replay FILE..  run these inputs (the target from --target) and report each
//   --minimize FILE  shrink a failing input (written to FILE.min)
// An input that fails (an exception, a broken invariant, a hang) is shrunk and saved under
// test/fuzz/corpus/<target>/, so `npm test` replays it from then on: fix the bug, keep the input.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { TARGETS } from './targets';
import { failureOf, minimize, saveInput, REPO, type FuzzTarget } from './lib/harness';
import { pct } from './lib/coverage';
import type { WorkerJob, WorkerReport } from './lib/guided';

const HANG_SECONDS = 30;

function args(argv: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  let key = '';
  for (const a of argv) {
    if (a.startsWith('--')) { key = a.slice(2); if (!m.has(key)) m.set(key, []); } else m.get(key)?.push(a);
  }
  return m;
}

async function fuzzOne(t: FuzzTarget, o: { runs: number; seconds: number; seed: number; guided: boolean; save: boolean }): Promise<boolean> {
  const shared = new SharedArrayBuffer(8 + t.maxLength + 4096);
  const job: WorkerJob = { target: t.name, ...o, shared };
  const w = new Worker(path.join(__dirname, 'lib', 'guided.js'), { workerData: job });
  const counter = new Int32Array(shared, 0, 2);
  const started = Date.now();
  console.log(`${t.name}: seed ${o.seed}, ${o.seconds > 0 ? `${o.seconds} s` : `${o.runs} runs`}${o.guided ? ', coverage-guided' : ''}`);
  return new Promise<boolean>((resolve) => {
    let last = -1, still = 0, done = false;
    const watch = setInterval(() => {
      const n = Atomics.load(counter, 0);
      if (n !== last) { last = n; still = 0; return; }
      if (++still < HANG_SECONDS) return;
      // No new input for HANG_SECONDS: the current one is stuck (a synchronous loop or a wait).
      const len = Atomics.load(counter, 1);
      const input = new Uint8Array(shared, 8, Math.min(len, t.maxLength + 4096)).slice();
      const file = saveInput(t.name, input, 'crash-');
      console.log(`${t.name}: HANG after ${n} inputs: ${path.relative(REPO, file)}`);
      done = true;
      clearInterval(watch);
      void w.terminate();
      resolve(false);
    }, 1000);
    w.on('message', (m: WorkerReport) => {
      if (m.t === 'progress') console.log(`${t.name}: ${m.runs} inputs, corpus ${m.corpus}, ${m.features} features, ${Math.round((Date.now() - started) / 1000)} s`);
      else if (m.t === 'fail') {
        console.log(`${t.name}: FAILURE after ${m.runs} inputs, saved as ${path.relative(REPO, m.file)} (${m.input.length} bytes, hex ${Buffer.from(m.input).toString('hex').slice(0, 200)})\n${m.message}`);
        done = true;
        clearInterval(watch);
        resolve(false);
      } else {
        const secs = (Date.now() - started) / 1000;
        console.log(`${t.name}: ${m.runs} inputs in ${secs.toFixed(0)} s (${Math.round(m.runs / secs)}/s), corpus ${m.corpus} (+${m.added}), ${m.features} features, no failure`);
        for (const c of m.coverage) console.log(`  ${c.file.padEnd(36)} lines ${pct(c.lines).padStart(6)} (${c.lines[0]}/${c.lines[1]})  branches ${pct(c.branches).padStart(6)} (${c.branches[0]}/${c.branches[1]})  functions ${pct(c.functions).padStart(6)}`);
        done = true;
        clearInterval(watch);
        resolve(true);
      }
    });
    w.on('error', (e) => { console.log(`${t.name}: worker error ${e.stack ?? e}`); clearInterval(watch); done = true; resolve(false); });
    w.on('exit', () => { clearInterval(watch); if (!done) resolve(false); });
  });
}

async function main(): Promise<void> {
  const a = args(process.argv.slice(2));
  if (a.has('list')) { for (const t of TARGETS) console.log(`${t.name.padEnd(16)} ${t.about}`); return; }
  const names = a.get('target')?.join(',').split(',').filter(Boolean) ?? TARGETS.map((t) => t.name);
  const targets = names.map((n) => {
    const t = TARGETS.find((x) => x.name === n);
    if (!t) throw new Error(`unknown target ${n} (have ${TARGETS.map((x) => x.name).join(', ')})`);
    return t;
  });
  if (a.has('replay') || a.has('minimize')) {
    const t = targets[0]!;
    await t.setup?.();
    for (const f of a.get('replay') ?? []) {
      const e = await failureOf(t, fs.readFileSync(f));
      console.log(`${f}: ${e ? `FAIL ${e.stack}` : 'ok'}`);
    }
    for (const f of a.get('minimize') ?? []) {
      const d = await minimize(t, fs.readFileSync(f), 5000);
      fs.writeFileSync(`${f}.min`, d);
      console.log(`${f}.min: ${d.length} bytes: ${(await failureOf(t, d))?.message ?? 'passes'}`);
    }
    await t.teardown?.();
    return;
  }
  const seconds = Number(a.get('seconds')?.[0] ?? 0);
  const runs = Number(a.get('runs')?.[0] ?? (seconds > 0 ? Infinity : 100000));
  const seed = Number(a.get('seed')?.[0] ?? (Date.now() % 0x7fffffff));
  let ok = true;
  for (const t of targets) {
    if (!(await fuzzOne(t, { runs, seconds, seed, guided: !a.has('no-guided'), save: a.has('save') }))) ok = false;
  }
  process.exitCode = ok ? 0 : 1;
}

void main();
