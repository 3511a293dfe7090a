// virtiofsd-ts entry point: parse the command line, wait for QEMU on the vhost-user socket,
// serve that one connection, exit when it closes (as both peer virtiofsds do).
//
// By default this process is the keeper: it holds the vhost-user connection and the device
// state and runs the data plane in a worker process (src/worker), restarting it when it dies
// (SIGHUP: restart it on purpose, e.g. after an upgrade). --no-keeper serves in one process.

import { parseArgs, ConfigError, CAPABILITIES, type Config } from './config';
import { createLogger, type Logger } from './log';
import { loadNative, toBinary, type NativeBinding } from './native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from './passthrough/passthrough-fs';
import { FuseSession } from './fuse/session';
import { VhostUserFsBackend } from './vhost/backend';
import { listenUnix, acceptOne } from './vhost/listener';
import { WorkerDataPlane, type PlaneState } from './keeper/worker-data-plane';
import type { DeviceState } from './vhost/backend';
import * as nodefs from 'node:fs';
import type { FsOptions } from './passthrough/passthrough-fs';
import { checkStateMain } from './cli-check-state';
import { DeviceRegion } from './state/device-region';
import { WorkerSandbox, SandboxError, restrictKeeper, openShareDir } from './keeper/sandbox';
import * as nodepath from 'node:path';

function fsOptions(cfg: Config): FsOptions {
  const { sharedDir, cache, xattr, posixAcl, announceSubmounts, readonly, writeback, allowDirectIo, readdirplus, killprivV2 } = cfg;
  return {
    ...DEFAULT_FS_OPTIONS, sharedDir, cache, xattr, posixAcl, announceSubmounts, readonly, writeback, allowDirectIo,
    readdirplus, killprivV2, syncIo: cfg.threadPoolSize === 0, inodeFileHandles: cfg.inodeFileHandles,
  };
}

/** Listen (or take --fd), announce readiness, accept QEMU's one connection. */
async function acceptFrontend(cfg: Config, native: NativeBinding, log: Logger): Promise<number> {
  let listenFd: number;
  if (cfg.fd !== undefined) {
    listenFd = cfg.fd;
    const r = native.setNonblocking(listenFd, true);
    if (r < 0) throw new Error(`--fd ${cfg.fd} is not usable: errno ${-r}`);
  } else {
    listenFd = listenUnix(native, toBinary(cfg.socketPath!));
  }
  log.info({ sharedDir: cfg.sharedDir, socket: cfg.socketPath ?? `fd ${cfg.fd}` }, 'Waiting for vhost-user socket connection...');
  const conn = await acceptOne(native, listenFd);
  native.close(listenFd);
  log.info('vhost-user connection established');
  return conn;
}

/**
 * SIGHUP and SIGUSR2 held by the launcher (bin/virtiofsd-ts) from its first line: until the
 * keeper listens for them, their default action would kill it, and a re-executed image takes a
 * while to load. release() stops holding them and delivers what was held.
 */
export interface HeldSignals { release(): void }

export async function serve(cfg: Config, native: NativeBinding, log: Logger, early?: HeldSignals): Promise<void> {
  // The guest's requests carry modes already masked by the guest; ours must not mask again.
  native.umask(0);
  const nofile = native.raiseNofile(cfg.rlimitNofile ?? 1_000_000);
  if (nofile < 0) log.warn({ errno: -nofile }, 'could not raise RLIMIT_NOFILE');
  if (!cfg.keeper) {
    log.warn('--no-keeper: one process, no sandbox and no seccomp filter (the sandbox is the worker\'s)');
    const fs = new PassthroughFs(native, fsOptions(cfg), log);
    const session = new FuseSession(fs, log);
    const backend = new VhostUserFsBackend({
      native, log, numRequestQueues: cfg.numRequestQueues,
      makeHandler: (q) => session.handlerFor(q, null),
      onRingStopping: () => fs.cancelWaits(),
    });
    await backend.serve(await acceptFrontend(cfg, native, log));
    log.info({ stats: session.stats }, 'client disconnected, shutting down');
    fs.close();
    return;
  }

  // Fail early, in the keeper, on a shared directory the worker could not open.
  const probe = native.openat(-100, toBinary(cfg.sharedDir), 0o10000000 | 0o200000 | 0o2000000, 0);
  if (probe < 0) throw new Error(`cannot open shared directory ${cfg.sharedDir}: errno ${-probe}`);
  native.close(probe);

  // A new image of the keeper (re-exec) carries on with what the old one left.
  let h: Handover | undefined;
  if (cfg.restoreFd !== undefined) {
    h = JSON.parse(nodefs.readFileSync(`/proc/self/fd/${cfg.restoreFd}`, 'utf8')) as Handover;
    native.close(cfg.restoreFd);
    for (const fd of h.fds) native.setCloexec(fd, true);
  }
  const sandbox = await setUpSandbox(cfg, native, log, h);

  let plane: WorkerDataPlane;
  let backend: VhostUserFsBackend;
  let conn: number;
  let device: DeviceRegion;
  const publish = (state: Readonly<DeviceState>): void => {
    if (!device.write(state)) log.error('the device state does not fit its region; a keeper re-exec would resume an older one');
  };
  if (h) {
    let state: DeviceState | null;
    if (h.v === 1) {
      // From an image that carried the device state in the hand-over itself (no vfsd-device).
      device = new DeviceRegion(native);
      state = h.device;
    } else if (h.v === 2) {
      device = new DeviceRegion(native, h.deviceFd);
      state = device.read() as DeviceState | null;
    } else {
      throw new Error(`keeper hand-over version ${String((h as { v: unknown }).v)}; this image reads versions 1 and 2`);
    }
    if (!state) throw new Error('the device state region is empty');
    plane = new WorkerDataPlane({ native, log, fs: fsOptions(cfg), logLevel: cfg.logLevel, spare: cfg.spareWorker, sandbox }, h.plane);
    backend = new VhostUserFsBackend({ native, log, numRequestQueues: cfg.numRequestQueues, dataPlane: plane, onState: publish });
    backend.adopt(state);
    conn = h.connFd;
    const adopted = h.v === 2 && h.plane.worker !== undefined;
    plane.start(true);
    log.info({ rings: backend.runningRings(), fds: h.fds.length }, 'keeper re-executed; serving on');
    // The adopted worker runs the code of the image before: a whole-package upgrade goes on with
    // a planned worker upgrade (it serves until its successor has loaded).
    if (adopted) plane.restart();
  } else {
    conn = await acceptFrontend(cfg, native, log);
    device = new DeviceRegion(native);
    plane = new WorkerDataPlane({ native, log, fs: fsOptions(cfg), logLevel: cfg.logLevel, spare: cfg.spareWorker, sandbox });
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
    void reexec(native, log, backend, plane, device, sandbox).finally(() => { reexecuting = false; });
  });
  // Signals the launcher held while we loaded (bin/virtiofsd-ts) are acted on now.
  early?.release();
  await backend.serve(conn);
  log.info({ workerStarts: plane.starts }, 'client disconnected, shutting down');
  await plane.close();
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
  const script = nodepath.join(__dirname, 'worker', 'worker.js');
  return WorkerSandbox.setUp(opts, native, log, script, { probe: !h });
}

/**
 * What one keeper image hands the next through a memfd (--restore-fd). The device state itself
 * is in the vfsd-device region (deviceFd), which the keeper keeps current after every message.
 * shareFd: the share as the worker sandbox reaches it (images from before the sandbox leave it out).
 */
type Handover = { v: 2; connFd: number; deviceFd: number; plane: PlaneState; fds: number[]; shareFd?: number }
  /** Written by images before the vfsd-device region (read, never written, by this one). */
  | { v: 1; connFd: number; device: DeviceState; plane: PlaneState; fds: number[] };

/**
 * Upgrade the keeper in place (SIGUSR2): finish the vhost-user message in hand, leave the worker
 * serving (or retire it, during a planned upgrade), publish the device state, clear FD_CLOEXEC
 * on every fd that matters and execve the code now on disk with --restore-fd. The pid, QEMU's
 * connection and the worker stay.
 */
async function reexec(native: NativeBinding, log: Logger, backend: VhostUserFsBackend, plane: WorkerDataPlane, region: DeviceRegion, sandbox: WorkerSandbox): Promise<void> {
  log.info('SIGUSR2: re-executing the keeper');
  await backend.quiesce();
  log.debug('re-exec: vhost-user connection quiet');
  // The worker goes on serving the rings while we re-execute (it needs us only for control
  // messages, which wait in its channel); during a planned upgrade it is retired instead.
  if (plane.handover()) log.debug('re-exec: the worker stays');
  else {
    await plane.retire();
    log.debug('re-exec: worker retired');
  }
  const device = backend.snapshot();
  if (!region.write(device.state)) {
    log.error('keeper re-exec: the device state does not fit its region; serving on');
    plane.unretire();
    backend.resume();
    return;
  }
  const exported = plane.exportState();
  const connFd = backend.connectionFd;
  const shareFd = sandbox.shareFd >= 0 ? sandbox.shareFd : undefined;
  const fds = [connFd, region.fd, ...device.fds.map((f) => f.fd), ...exported.fds, shareFd ?? -1].filter((fd) => fd >= 0);
  const h: Handover = { v: 2, connFd, deviceFd: region.fd, plane: exported.state, fds, shareFd };
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
  plane.unretire();
  backend.resume();
}

export function main(argv: string[], early?: HeldSignals): void {
  if (argv[0] === 'check-state') {
    return checkStateMain(argv.slice(1));
  }
  let cfg: Config;
  try {
    cfg = parseArgs(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`virtiofsd-ts: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (cfg.printCapabilities) {
    process.stdout.write(JSON.stringify(CAPABILITIES) + '\n');
    return;
  }
  // Must be set before the first thread-pool job: libuv sizes its pool once.
  if (cfg.threadPoolSize > 0) process.env.UV_THREADPOOL_SIZE = String(cfg.threadPoolSize);
  const log = cfg.keeper ? createLogger(cfg.logLevel, { role: 'keeper' }) : createLogger(cfg.logLevel);
  serve(cfg, loadNative(), log, early).then(
    () => process.exit(0),
    (e: unknown) => {
      // A sandbox that cannot be set up: one line naming the part (fail closed).
      if (e instanceof SandboxError) log.fatal({ part: e.part }, e.message);
      else log.fatal({ err: e }, 'fatal error');
      process.exit(1);
    },
  );
}

if (require.main === module) main(process.argv.slice(2));
