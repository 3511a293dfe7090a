// Named crash points for recovery tests: VFSD_CRASHPOINT=name (or name:count) makes the process
// SIGKILL itself at the count-th hit of that point (default the first), with no cleanup, the way a
// real crash would hit it. name:count:hang blocks it there instead, as a request stuck in the
// kernel would (the keeper's watchdog case). Unset, a crash point costs one comparison.
//
// Points (in the order one tracked request passes them; see src/virtio/queue-runner.ts):
//   after-mark-inflight  the chain is recorded in flight, its handler has not run
//   after-journal-intent a non-idempotent request's intent is journaled, the op has not run
//   after-op             the op ran (host changed, maps updated), its outcome is not journaled
//   after-journal-done   the outcome is journaled, the reply not yet pushed
//   after-push-used      its used entry is visible to the guest, post_put not done
//   after-post-put       the region records the completion
// Keep CRASHPOINTS below in step with this list: the crash tests (test/crash/) run every entry.

/** Every named crash point, in the order a tracked request passes them. */
export const CRASHPOINTS: readonly string[] = [
  'after-mark-inflight', 'after-journal-intent', 'after-op', 'after-journal-done', 'after-push-used', 'after-post-put',
];

let target: string | null = null;
let remaining = 0;
const kill = (): void => { process.kill(process.pid, 'SIGKILL'); };
const hang = (name: string): void => {
  process.stderr.write(`${JSON.stringify({ level: 30, pid: process.pid, point: name, msg: 'hanging at a crash point (VFSD_CRASHPOINT)' })}\n`);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
};
let onCrash: (name: string) => void = kill;

function arm(spec: string | undefined): void {
  target = null;
  if (spec === undefined || spec === '') return;
  const m = /^([^:]+)(?::(\d+))?(:hang)?$/.exec(spec);
  if (m === null || (m[2] !== undefined && Number(m[2]) < 1)) {
    throw new Error(`VFSD_CRASHPOINT=${spec}: expected name, name:count or name:count:hang (count >= 1)`);
  }
  target = m[1];
  remaining = m[2] === undefined ? 1 : Number(m[2]);
  onCrash = m[3] !== undefined ? hang : kill;
}

arm(process.env.VFSD_CRASHPOINT);

export function crashpoint(name: string): void {
  if (target === null || name !== target) return;
  if (--remaining > 0) return;
  target = null;
  onCrash(name);
}

/**
 * What an in-process test throws at a crash point in place of the SIGKILL: it passes through
 * every catch on the data path (as a real death would pass through them), so the state is left
 * exactly where the crash point is.
 */
export class SimulatedCrash extends Error {}

/** For in-process tests: arm a point (same syntax as VFSD_CRASHPOINT; undefined disarms) and
 *  replace the SIGKILL, e.g. with a function that throws a SimulatedCrash. */
export function armCrashpointForTest(spec: string | undefined, action?: (name: string) => void): void {
  arm(spec);
  if (action) onCrash = action;
}
