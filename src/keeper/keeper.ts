// The keeper (the default mode): it holds QEMU's vhost-user connection, the device state and
// every fd that matters, and serves the rings from worker processes it supervises
// (worker-data-plane.ts, supervisor.ts), each in its sandbox (sandbox.ts). SIGHUP upgrades the
// worker; SIGUSR2 re-executes the keeper itself (reexec.ts). Serves one connection, then exits,
// as both peer virtiofsds do.

import * as nodepath from 'node:path';
import type { Config } from '../config';
import type { Logger } from '../log';
import { toBinary, type NativeBinding } from '../native/binding';
import { VhostUserFsBackend, mapDeviceStateFds, type DeviceState } from '../vhost/backend';
import { lockPidFile } from '../vhost/listener';
import { DeviceRegion } from '../state/device-region';
import * as K from '../linux/constants';
import type { FsOptions } from '../passthrough/passthrough-fs';
import { WorkerDataPlane, type WorkerDataPlaneOptions } from './worker-data-plane';
import { WorkerSandbox, restrictKeeper, openShareDir } from './sandbox';
import { acceptFrontend, prepare } from './startup';
import { describeKeeper, readHandover, reexec, type Handover } from './reexec';
import { Service } from './service';
import { ControlApi, type KeeperView } from './api';

/**
 * SIGHUP and SIGUSR2 held by the launcher (bin/virtiofsd-ts) from its first line: until the
 * keeper listens for them, their default action would kill it, and a re-executed image takes a
 * while to load. release() stops holding them and delivers what was held.
 */
export interface HeldSignals { release(): void }

/** The worker's entry script, beside us (also what the sandbox probe runs). */
const WORKER_SCRIPT = nodepath.join(__dirname, '..', 'worker', 'entry.js');

type PlaneHooks = Pick<WorkerDataPlaneOptions, 'onChange' | 'onResumed'>;

function planeOptions(cfg: Config, native: NativeBinding, log: Logger, fs: FsOptions, sandbox: WorkerSandbox, hooks: PlaneHooks): WorkerDataPlaneOptions {
  return { native, log, fs, logLevel: cfg.logLevel, spare: cfg.spareWorker, sandbox, timeoutMs: cfg.workerTimeoutS * 1000, workerScript: WORKER_SCRIPT, ...hooks };
}

export async function serveKeeper(cfg: Config, native: NativeBinding, log: Logger, early?: HeldSignals): Promise<void> {
  const fsOpts = prepare(cfg, native, log);
  // Fail early, in the keeper, on a shared directory the worker could not open.
  const probe = native.openat(K.AT_FDCWD, toBinary(cfg.sharedDir), K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
  if (probe < 0) throw new Error(`cannot open shared directory ${cfg.sharedDir}: errno ${-probe}`);
  native.close(probe);

  // A new image of the keeper (re-exec) carries on with what the old one left; a keeper the
  // service manager restarted, with what the one before it parked in the fd store.
  const service = new Service(cfg, native, log);
  const restored = service.restored;
  const h = cfg.restoreFd !== undefined ? readHandover(native, cfg.restoreFd) : restored?.handover;
  const sandbox = await setUpSandbox(cfg, native, log, h);

  let plane: WorkerDataPlane;
  let backend: VhostUserFsBackend;
  let conn: number;
  let device: DeviceRegion;
  /** The locked `<socket>.pid` (-1 with --fd): held until we exit, across re-execs too. */
  let pidFd = -1;
  // The fd store's record follows every change of what a successor resumes from.
  const syncPark = (): void => {
    const park = service.park;
    if (!park || backend === undefined || backend.connectionFd < 0) return;
    park.sync(describeKeeper(backend, plane, device, pidFd, sandbox, false, park.region.fd));
  };
  let api: ControlApi | null = null;
  const hooks: PlaneHooks = {
    onChange: (keys) => {
      if (keys.length > 0) service.park?.registryChanged(keys, (k) => plane.registeredFd(k));
      else syncPark();
    },
    onResumed: (ms, after) => api?.resumed(ms, after),
  };
  const publish = (state: Readonly<DeviceState>): void => {
    if (!device.write(state)) log.error('the device state does not fit its region; a keeper re-exec would resume an older one');
    syncPark();
  };
  // Up before QEMU connects (a path it may not take fails the start, not a connection).
  if (cfg.apiSocket !== undefined) api = await ControlApi.start(cfg.apiSocket, keeperView(() => plane, () => backend, service), log);
  if (h) {
    let state: DeviceState | null;
    if (h.v === 1) {
      // From an image that carried the device state in the hand-over itself (no vfsd-device).
      device = new DeviceRegion(native);
      state = h.device;
    } else if (h.v === 2) {
      device = new DeviceRegion(native, h.deviceFd);
      state = device.read() as DeviceState | null;
      // Restarted: its fds came back from the fd store under other numbers.
      if (state && restored) state = mapDeviceStateFds(state, restored.remap);
    } else {
      throw new Error(`keeper hand-over version ${String((h as { v: unknown }).v)}; this image reads versions 1 and 2`);
    }
    if (!state) throw new Error('the device state region is empty');
    pidFd = h.v === 2 ? h.pidFd ?? -1 : -1;
    if (pidFd < 0 && cfg.socketPath !== undefined) {
      // From an image that held no pid file lock: take it now (it is ours to take, or a daemon
      // that took the path meanwhile keeps it; we serve our connection either way).
      try {
        pidFd = lockPidFile(native, toBinary(cfg.socketPath));
      } catch (e) {
        log.warn({ err: e }, 'keeper re-exec: could not lock the pid file');
      }
    }
    plane = new WorkerDataPlane(planeOptions(cfg, native, log, fsOpts, sandbox, hooks), h.plane);
    backend = new VhostUserFsBackend({ native, log, numRequestQueues: cfg.numRequestQueues, dataPlane: plane, onState: publish });
    backend.adopt(state);
    conn = h.connFd;
    service.startPark(h.v === 2 ? h : undefined);
    const adopted = plane.start(true);
    if (restored) {
      log.info({ rings: backend.runningRings(), fds: h.fds.length }, 'keeper restarted by the service manager; resuming from the fd store');
      service.notifier.ready('resumed after a keeper restart; serving');
    } else {
      log.info({ rings: backend.runningRings(), fds: h.fds.length }, 'keeper re-executed; serving on');
    }
    // The adopted worker runs the code of the image before: a whole-package upgrade goes on with
    // a planned worker upgrade (it serves until its successor has loaded).
    if (adopted) plane.restart();
  } else {
    service.closeSockets(cfg.fd);
    ({ conn, pidFd } = await acceptFrontend(cfg, native, log, () => { service.notifier.ready('waiting for the vhost-user connection'); }));
    service.notifier.status('serving');
    service.startPark(undefined);
    device = new DeviceRegion(native);
    plane = new WorkerDataPlane(planeOptions(cfg, native, log, fsOpts, sandbox, hooks));
    backend = new VhostUserFsBackend({ native, log, numRequestQueues: cfg.numRequestQueues, dataPlane: plane, onState: publish });
    publish(backend.state);
    plane.start();
  }
  process.on('SIGHUP', () => {
    log.info('SIGHUP: restarting the worker');
    plane.restart();
  });
  let reexecuting = false;
  process.on('SIGUSR2', () => {
    if (reexecuting) return;
    reexecuting = true;
    void reexec(native, log, backend, plane, device, pidFd, sandbox, service.park?.region.fd).finally(() => { reexecuting = false; });
  });
  if (service.notifier.enabled) {
    // systemctl stop: nothing is to be resumed, so nothing stays in the fd store.
    process.on('SIGTERM', () => {
      log.info('SIGTERM: stopping');
      service.stopping('stopping');
      process.exit(0);
    });
  }
  // Signals the launcher held while we loaded (bin/virtiofsd-ts) are acted on now.
  early?.release();
  const served = backend.serve(conn);
  syncPark();
  await served;
  log.info({ workerStarts: plane.starts }, 'client disconnected, shutting down');
  service.stopping('the vhost-user front-end disconnected');
  api?.close();
  await plane.close();
}

/** What the control API (api.ts) reads of this keeper. */
function keeperView(plane: () => WorkerDataPlane | undefined, backend: () => VhostUserFsBackend | undefined, service: Service): KeeperView {
  return {
    worker: () => {
      const p = plane();
      return { pid: p?.workerPid, starts: p?.starts ?? 0, serves: p?.serves ?? 0 };
    },
    device: () => {
      const b = backend();
      if (!b) return { features: 0, protocolFeatures: 0, rings: [] };
      const s = b.state;
      return { features: s.features, protocolFeatures: s.protocolFeatures, rings: b.runningRings().map((index) => ({ index, size: s.rings[index]?.num ?? 0 })) };
    },
    fuseInitFlags: () => {
      const f = plane()?.fuseInitRecord;
      return f ? '0x' + BigInt(f.flags).toString(16) : null;
    },
    counters: () => plane()?.counters() ?? null,
    fds: () => ({ registered: plane()?.registeredFds ?? 0, parked: service.park ? service.park.count : null }),
    // Before QEMU connects there is no worker to upgrade: the first one runs the code on disk.
    upgrade: () => plane()?.restart(),
  };
}

/**
 * The keeper's own restrictions, then the worker's sandbox, set up and tried once (a fresh start:
 * before QEMU's connection is accepted, so a host that cannot run it fails at once; a re-exec
 * keeps the share tree of the image before).
 */
async function setUpSandbox(cfg: Config, native: NativeBinding, log: Logger, h?: Handover): Promise<WorkerSandbox> {
  const dropped = restrictKeeper(native, cfg.workerCaps, log);
  log.debug({ dropped }, 'keeper: no_new_privs; capabilities dropped from the bounding set');
  if (cfg.sandbox === 'none') {
    log.warn({ seccomp: cfg.seccomp }, '--sandbox=none: the worker runs in the host\'s namespaces with the host\'s root (only its capabilities, no_new_privs and seccomp restrict it)');
  }
  let shareFd: number | undefined;
  if (h && cfg.sandbox !== 'none') {
    shareFd = h.v === 2 ? h.shareFd : undefined;
    if (shareFd === undefined) {
      // From a release without the sandbox: its workers' records carry the host's mount ids, so
      // ours must reach the share through the host's mounts too, not a tree of new ones. Then a
      // worker that is taken over could walk ".." out of the share: until the daemon restarts.
      shareFd = openShareDir(native, cfg.sharedDir);
      log.warn('the keeper image before had no worker sandbox: workers reach the share through the host\'s mounts until the daemon restarts');
    }
  }
  const opts = {
    mode: cfg.sandbox, seccomp: cfg.seccomp, sharedDir: cfg.sharedDir, shareFd,
    caps: process.getuid?.() === 0 ? cfg.workerCaps : undefined,
  };
  return WorkerSandbox.setUp(opts, native, log, WORKER_SCRIPT, { probe: !h });
}

