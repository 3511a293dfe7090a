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
import { listenUnix, acceptOne, lockPidFile } from './vhost/listener';
import { planFds } from './keeper/fd-plan';
import { E } from './errno';
import * as K from './linux/constants';
import { WorkerDataPlane, type PlaneState, type WorkerDataPlaneOptions } from './keeper/worker-data-plane';
import type { DeviceState } from './vhost/backend';
import * as nodefs from 'node:fs';
import type { FsOptions } from './passthrough/passthrough-fs';
import { checkStateMain } from './tools/check-state-cli';
import { DeviceRegion } from './state/device-region';
import { WorkerSandbox, SandboxError, restrictKeeper, openShareDir } from './keeper/sandbox';
import * as nodepath from 'node:path';

/** plan: RLIMIT_NOFILE of the worker and the fds the guest may make it hold (planFds). */
function fsOptions(cfg: Config, plan: { worker: number; guestFds: number }): FsOptions {
  const { sharedDir, cache, xattr, posixAcl, announceSubmounts, readonly, writeback, allowDirectIo, readdirplus, killprivV2 } = cfg;
  return {
    ...DEFAULT_FS_OPTIONS, sharedDir, cache, xattr, posixAcl, announceSubmounts, readonly, writeback, allowDirectIo,
    readdirplus, killprivV2, syncIo: cfg.threadPoolSize === 0, inodeFileHandles: cfg.inodeFileHandles,
    limits: { ...cfg.limits, fds: plan.guestFds, workerNofile: cfg.keeper ? plan.worker : 0 },
  };
}

function planeOptions(cfg: Config, native: NativeBinding, log: Logger, fs: FsOptions, sandbox: WorkerSandbox): WorkerDataPlaneOptions {
  return { native, log, fs, logLevel: cfg.logLevel, spare: cfg.spareWorker, sandbox, timeoutMs: cfg.workerTimeoutS * 1000 };
}

/** RLIMIT_NOFILE when --rlimit-nofile does not say. */
const DEFAULT_NOFILE = 1_000_000;

/**
 * Set RLIMIT_NOFILE as --rlimit-nofile asks and return it. As the Rust virtiofsd (src/limits.rs
 * there): exactly N; 0 leaves it; by default 1000000 (at most fs.nr_open, proc(5)), raising the
 * hard limit where we may (CAP_SYS_RESOURCE), else as high as the hard limit lets us.
 */
function setupNofile(cfg: Config, native: NativeBinding, log: Logger): number {
  const want = cfg.rlimitNofile;
  if (want === 0) return native.raiseNofile(0);
  if (want !== undefined) {
    const r = native.setNofile(want, false);
    if (r < 0) throw new Error(`--rlimit-nofile ${want}: cannot set RLIMIT_NOFILE: errno ${-r}`);
    return r;
  }
  const current = native.raiseNofile(0);
  let nrOpen = DEFAULT_NOFILE;
  try {
    nrOpen = Number(nodefs.readFileSync('/proc/sys/fs/nr_open', 'latin1').trim()) || DEFAULT_NOFILE;
  } catch { /* no /proc/sys: try the default */ }
  const target = Math.min(DEFAULT_NOFILE, nrOpen);
  if (current >= target) return current;
  const r = native.setNofile(target, false);
  if (r >= 0) return r;
  const raised = native.raiseNofile(target);
  if (raised < 0) log.warn({ errno: -raised }, 'could not raise RLIMIT_NOFILE');
  return raised < 0 ? current : raised;
}

/** The gid of --socket-group (a name, through NSS, or a number). */
function socketGid(native: NativeBinding, group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  const gid = native.getgrnam(toBinary(group));
  if (gid === -E.ENOENT) throw new Error(`--socket-group: there is no group ${group}`);
  if (gid < 0) throw new Error(`--socket-group ${group}: errno ${-gid}`);
  return gid;
}

/**
 * Listen (or take --fd), announce readiness, accept QEMU's one connection. With --socket-path,
 * `<socket>.pid` is locked first (pidFd: keep it open for as long as the daemon lives).
 */
async function acceptFrontend(cfg: Config, native: NativeBinding, log: Logger): Promise<{ conn: number; pidFd: number }> {
  let listenFd: number;
  let pidFd = -1;
  if (cfg.fd !== undefined) {
    listenFd = cfg.fd;
    const r = native.setNonblocking(listenFd, true);
    if (r < 0) throw new Error(`--fd ${cfg.fd} is not usable: errno ${-r}`);
  } else {
    const gid = cfg.socketGroup === undefined ? undefined : socketGid(native, cfg.socketGroup);
    pidFd = lockPidFile(native, toBinary(cfg.socketPath!));
    listenFd = listenUnix(native, toBinary(cfg.socketPath!), 1, gid);
  }
  log.info({ sharedDir: cfg.sharedDir, socket: cfg.socketPath ?? `fd ${cfg.fd}` }, 'Waiting for vhost-user socket connection...');
  const conn = await acceptOne(native, listenFd);
  native.close(listenFd);
  log.info('vhost-user connection established');
  return { conn, pidFd };
}

/**
 * SIGHUP and SIGUSR2 held by the launcher (bin/virtiofsd-ts) from its first line: until the
 * keeper listens for them, their default action would kill it, and a re-executed image takes a
 * while to load. release() stops holding them and delivers what was held.
 */
export interface HeldSignals { release(): void }

export async function serve(cfg: Config, native: NativeBinding, log: Logger, early?: HeldSignals): Promise<void> {
  // Nothing our launcher left open may reach a worker: every fd opened before us (and, re-executed,
  // every fd the image before handed us) is close-on-exec; workers get exactly what spawn() maps.
  const swept = native.cloexecFrom(3);
  if (swept < 0) log.warn({ errno: -swept }, 'could not mark inherited fds close-on-exec');
  // The guest's requests carry modes already masked by the guest; ours must not mask again (the
  // socket and the pid file are made under their own umask, see vhost/listener.ts).
  native.umask(0);
  const nofile = setupNofile(cfg, native, log);
  const plan = planFds(nofile, cfg.keeper, 1 + cfg.numRequestQueues);
  if (typeof plan === 'string') throw new Error(plan);
  const fsOpts = fsOptions(cfg, plan);
  log.info({ nofile, limits: fsOpts.limits }, 'file descriptor budget');

  if (!cfg.keeper) {
    log.warn('--no-keeper: one process, no sandbox and no seccomp filter (the sandbox is the worker\'s)');
    const fs = new PassthroughFs(native, fsOpts, log);
    const session = new FuseSession(fs, log, { probes: fs, rangeIo: fs });
    const backend = new VhostUserFsBackend({
      native, log, numRequestQueues: cfg.numRequestQueues,
      makeHandler: (q) => session.handlerFor(q, null),
      onRingStopping: () => fs.cancelWaits(),
    });
    await backend.serve((await acceptFrontend(cfg, native, log)).conn);
    log.info({ stats: session.stats }, 'client disconnected, shutting down');
    fs.close();
    return;
  }

  // Fail early, in the keeper, on a shared directory the worker could not open.
  const probe = native.openat(K.AT_FDCWD, toBinary(cfg.sharedDir), K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
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
  /** The locked `<socket>.pid` (-1 with --fd): held until we exit, across re-execs too. */
  let pidFd = -1;
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
    plane = new WorkerDataPlane(planeOptions(cfg, native, log, fsOpts, sandbox), h.plane);
    backend = new VhostUserFsBackend({ native, log, numRequestQueues: cfg.numRequestQueues, dataPlane: plane, onState: publish });
    backend.adopt(state);
    conn = h.connFd;
    const adopted = plane.start(true);
    log.info({ rings: backend.runningRings(), fds: h.fds.length }, 'keeper re-executed; serving on');
    // The adopted worker runs the code of the image before: a whole-package upgrade goes on with
    // a planned worker upgrade (it serves until its successor has loaded).
    if (adopted) plane.restart();
  } else {
    ({ conn, pidFd } = await acceptFrontend(cfg, native, log));
    device = new DeviceRegion(native);
    plane = new WorkerDataPlane(planeOptions(cfg, native, log, fsOpts, sandbox));
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
    void reexec(native, log, backend, plane, device, pidFd, sandbox).finally(() => { reexecuting = false; });
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
type Handover = { v: 2; connFd: number; deviceFd: number; plane: PlaneState; fds: number[]; pidFd?: number; shareFd?: number }
  /** Written by images before the vfsd-device region (read, never written, by this one). */
  | { v: 1; connFd: number; device: DeviceState; plane: PlaneState; fds: number[] };

/**
 * Upgrade the keeper in place (SIGUSR2): finish the vhost-user message in hand, leave the worker
 * serving (or retire it, during a planned upgrade), publish the device state, clear FD_CLOEXEC
 * on every fd that matters and execve the code now on disk with --restore-fd. The pid, QEMU's
 * connection and the worker stay.
 */
async function reexec(native: NativeBinding, log: Logger, backend: VhostUserFsBackend, plane: WorkerDataPlane, region: DeviceRegion, pidFd: number, sandbox: WorkerSandbox): Promise<void> {
  log.info('SIGUSR2: re-executing the keeper');
  await backend.quiesce();
  log.debug('re-exec: vhost-user connection quiet');
  // The worker goes on serving the rings while we re-execute (it needs us only for control
  // messages, which wait in its channel); one already retiring in an upgrade finishes instead.
  if (await plane.prepareReexec()) log.debug('re-exec: the worker stays');
  else log.debug('re-exec: worker retired');
  const device = backend.snapshot();
  if (!region.write(device.state)) {
    log.error('keeper re-exec: the device state does not fit its region; serving on');
    plane.resume();
    backend.resume();
    return;
  }
  const exported = plane.exportState();
  const connFd = backend.connectionFd;
  // The pid file lock lives as long as its open file description, and every worker's share tree
  // is the one made at start: hand both fds on.
  const shareFd = sandbox.shareFd >= 0 ? sandbox.shareFd : undefined;
  const fds = [connFd, region.fd, ...device.fds.map((f) => f.fd), ...exported.fds, pidFd, shareFd ?? -1].filter((fd) => fd >= 0);
  const h: Handover = { v: 2, connFd, deviceFd: region.fd, plane: exported.state, fds, ...(pidFd >= 0 ? { pidFd } : {}), shareFd };
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
