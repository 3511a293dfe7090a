// Test holds: VFSD_HOLD=role:point makes a worker stop at a point of its life and block its
// event loop, as a hung worker would, so that a test can kill it there or let the keeper's
// deadline find it. The keeper hands VFSD_HOLD to the first worker of that role only
// (keeper/worker-data-plane.ts); the worker checks the point. Unset, a hold costs one
// comparison. No dependencies: 'spawned' runs before the worker loads anything else.
//
// Points, in the order a worker passes them:
//   spawned     the entry script started; nothing of ours is loaded yet
//   loading     our modules are loaded; hello not yet sent
//   recovering  fed (the 'go' message came); the maps are not built yet
//   serving     ready sent; blocks the event loop of a serving worker (the watchdog's case)

import * as fs from 'node:fs';

export type HoldPoint = 'spawned' | 'loading' | 'recovering' | 'serving';

export function holdAt(point: HoldPoint): void {
  const spec = process.env.VFSD_HOLD;
  if (spec === undefined || spec.slice(spec.indexOf(':') + 1) !== point) return;
  // One JSON log line (the logger may not be loaded yet), then block until killed.
  fs.writeSync(2, `${JSON.stringify({ level: 30, time: Date.now(), pid: process.pid, hold: point, msg: 'worker holding (VFSD_HOLD)' })}\n`);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}
