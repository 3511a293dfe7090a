// What the daemon does before QEMU connects, in either mode (keeper, or --no-keeper): the file
// descriptor budget, the file system's options, and the vhost-user socket (listen, or take
// --fd; the pid file lock; QEMU's one connection).

import * as nodefs from 'node:fs';
import type { Config } from '../config';
import type { Logger } from '../log';
import { toBinary, type NativeBinding } from '../native/binding';
import { DEFAULT_FS_OPTIONS, type FsOptions } from '../passthrough/passthrough-fs';
import { listenUnix, acceptOne, lockPidFile } from '../vhost/listener';
import { planFds } from './fd-plan';
import { E } from '../linux/constants';

/** plan: RLIMIT_NOFILE of the worker and the fds the guest may make it hold (planFds). */
export function fsOptions(cfg: Config, plan: { worker: number; guestFds: number }): FsOptions {
  const { sharedDir, cache, xattr, posixAcl, announceSubmounts, readonly, writeback, allowDirectIo, readdirplus, killprivV2 } = cfg;
  return {
    ...DEFAULT_FS_OPTIONS, sharedDir, cache, xattr, posixAcl, announceSubmounts, readonly, writeback, allowDirectIo,
    readdirplus, killprivV2, syncIo: cfg.threadPoolSize === 0, inodeFileHandles: cfg.inodeFileHandles,
    idMap: cfg.idMap, xattrMap: cfg.xattrMap,
    limits: { ...cfg.limits, fds: plan.guestFds, workerNofile: cfg.keeper ? plan.worker : 0 },
  };
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
export async function acceptFrontend(cfg: Config, native: NativeBinding, log: Logger): Promise<{ conn: number; pidFd: number }> {
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
 * The process-wide set-up both modes share: nothing inherited reaches a worker, no umask of our
 * own, RLIMIT_NOFILE and the fd plan. The file system's options, budget included.
 */
export function prepare(cfg: Config, native: NativeBinding, log: Logger): FsOptions {
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
  return fsOpts;
}
