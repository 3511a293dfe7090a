// The keeper's re-exec (SIGUSR2): the code now on disk replaces the keeper in place, same pid,
// same connection to QEMU; the serving worker (and a loaded spare) go on running and the new
// image adopts them, then upgrades them as for SIGHUP. What crosses the execve: the fds (their
// numbers survive it) and a hand-over memfd naming them.

import * as nodefs from 'node:fs';
import type { Logger } from '../log';
import type { NativeBinding } from '../native/binding';
import type { VhostUserFsBackend, DeviceState } from '../vhost/backend';
import type { DeviceRegion } from '../state/device-region';
import { mapPlaneStateFds, type PlaneState, type WorkerDataPlane } from './worker-data-plane';
import type { WorkerSandbox } from './sandbox';

/**
 * What one keeper image hands the next through a memfd (--restore-fd), and what a keeper parks
 * for its successor in a service manager's fd store (fd-park.ts). The device state itself
 * is in the vfsd-device region (deviceFd), which the keeper keeps current after every message.
 * shareFd: the share as the worker sandbox reaches it (images from before the sandbox leave it out).
 * parkFd: the fd-store region (fd-park.ts), when the keeper parks its state there (images before
 * leave it out, and a re-executed image then starts parking afresh).
 */
export type Handover = { v: 2; connFd: number; deviceFd: number; plane: PlaneState; fds: number[]; pidFd?: number; shareFd?: number; parkFd?: number }
  /** Written by images before the vfsd-device region (read, never written, by this one). */
  | { v: 1; connFd: number; device: DeviceState; plane: PlaneState; fds: number[] };

/** The hand-over an earlier image left in memfd fd (closed here); its fds close-on-exec again. */
export function readHandover(native: NativeBinding, fd: number): Handover {
  const h = JSON.parse(nodefs.readFileSync(`/proc/self/fd/${fd}`, 'utf8')) as Handover;
  native.close(fd);
  for (const f of h.fds) native.setCloexec(f, true);
  return h;
}

export type HandoverV2 = Extract<Handover, { v: 2 }>;

/**
 * The hand-over as of now, with every fd it names in fds. registry false: without the worker's
 * registered fds (see WorkerDataPlane.exportState).
 */
export function describeKeeper(backend: VhostUserFsBackend, plane: WorkerDataPlane, region: DeviceRegion, pidFd: number, sandbox: WorkerSandbox, registry = true, parkFd = -1): HandoverV2 {
  const device = backend.snapshot();
  const exported = plane.exportState(registry);
  const connFd = backend.connectionFd;
  // The pid file lock lives as long as its open file description, and every worker's share tree
  // is the one made at start: hand both fds on.
  const shareFd = sandbox.shareFd >= 0 ? sandbox.shareFd : undefined;
  const fds = [connFd, region.fd, ...device.fds.map((f) => f.fd), ...exported.fds, pidFd, shareFd ?? -1, parkFd].filter((fd) => fd >= 0);
  return {
    v: 2, connFd, deviceFd: region.fd, plane: exported.state, fds: [...new Set(fds)],
    ...(pidFd >= 0 ? { pidFd } : {}), shareFd, ...(parkFd >= 0 ? { parkFd } : {}),
  };
}

/** A copy of h with every fd number replaced by f(fd) (a keeper that got them under other numbers). */
export function mapHandoverFds(h: HandoverV2, f: (fd: number) => number): HandoverV2 {
  const m = (fd: number): number => (fd >= 0 ? f(fd) : fd);
  const out: HandoverV2 = { ...h, connFd: m(h.connFd), deviceFd: m(h.deviceFd), plane: mapPlaneStateFds(h.plane, f), fds: h.fds.map(m) };
  if (h.pidFd !== undefined) out.pidFd = m(h.pidFd);
  if (h.shareFd !== undefined) out.shareFd = m(h.shareFd);
  if (h.parkFd !== undefined) out.parkFd = m(h.parkFd);
  return out;
}

/**
 * Upgrade the keeper in place (SIGUSR2): finish the vhost-user message in hand, leave the worker
 * serving (or retire it, during a planned upgrade), publish the device state, clear FD_CLOEXEC
 * on every fd that matters and execve the code now on disk with --restore-fd. The pid, QEMU's
 * connection and the worker stay.
 */
export async function reexec(native: NativeBinding, log: Logger, backend: VhostUserFsBackend, plane: WorkerDataPlane, region: DeviceRegion, pidFd: number, sandbox: WorkerSandbox, parkFd = -1): Promise<void> {
  log.info('SIGUSR2: re-executing the keeper');
  await backend.quiesce();
  log.debug('re-exec: vhost-user connection quiet');
  // The worker goes on serving the rings while we re-execute (it needs us only for control
  // messages, which wait in its channel); one already retiring in an upgrade finishes instead.
  if (await plane.prepareReexec()) log.debug('re-exec: the worker stays');
  else log.debug('re-exec: worker retired');
  if (!region.write(backend.snapshot().state)) {
    log.error('keeper re-exec: the device state does not fit its region; serving on');
    plane.resume();
    backend.resume();
    return;
  }
  const h = describeKeeper(backend, plane, region, pidFd, sandbox, true, parkFd);
  const fds = h.fds;
  const memfd = native.memfdCreate('vfsd-handover', 0);
  if (memfd >= 0) nodefs.writeSync(memfd, JSON.stringify(h));
  const all = [...fds, memfd];
  // stdio too: Node marks its pipes close-on-exec, and operators read our stderr.
  for (const fd of [0, 1, 2, ...all]) native.setCloexec(fd, false);
  const script = process.argv[1]!;
  const args = process.argv.slice(2).filter((a) => !a.startsWith('--restore-fd'));
  const env = Object.entries(process.env).map(([k, v]) => `${k}=${v ?? ''}`);
  const r = memfd < 0 ? memfd : native.execve(process.execPath, [process.execPath, script, ...args, `--restore-fd=${memfd}`], env);
  // Only reached when execve failed: keep serving as we were.
  log.error({ errno: -r }, 'keeper re-exec failed; serving on');
  for (const fd of all) native.setCloexec(fd, true);
  if (memfd >= 0) native.close(memfd);
  plane.resume();
  backend.resume();
}

