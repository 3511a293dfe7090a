// The fuzz layer of `npm test`: for each target, replay its checked-in corpus, then a fixed
// number of inputs generated from a fixed seed (so a failure reproduces exactly).
import { test } from 'node:test';
import { replayCorpus, runGenerated, type FuzzTarget } from './harness';

/** Runs per target in `npm test` (VFSD_FUZZ_RUNS overrides). */
export function defineFuzzTests(t: FuzzTarget, runs: number, seed = 0x5eed): void {
  const n = Number(process.env.VFSD_FUZZ_RUNS ?? runs);
  test(`${t.name}: the checked-in corpus replays without a fault`, async () => {
    await t.setup?.();
    try {
      await replayCorpus(t);
    } finally {
      await t.teardown?.();
    }
  });
  test(`${t.name}: ${n} generated inputs (seed ${seed}) run without a fault`, async () => {
    await t.setup?.();
    try {
      await runGenerated(t, { runs: n, seed });
    } finally {
      await t.teardown?.();
    }
  });
}
