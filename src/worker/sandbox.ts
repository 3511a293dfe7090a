// The worker's side of the sandbox (the keeper's is src/keeper/sandbox.ts, the launcher's
// native/sandbox/vfsd-sandbox.c). The launcher has already set up the namespaces, capabilities,
// no_new_privs and seccomp filter; what is left needs Node loaded first:
// - chroot mode: chroot into the share tree (after every module is loaded: nothing of our code
//   or Node's is inside it), keeping /proc/self/fd as the working directory;
// - the lockdown filter: no execve or chroot from now on, on every thread.
// Environment (set by the keeper): VFSD_SANDBOX (mode), VFSD_SECCOMP, VFSD_SHARE_FD (the share
// tree), VFSD_WORKER_PID (the pid the keeper knows: ours is 2 inside a pid namespace),
// VFSD_SANDBOX_PROBE (report and exit).

import * as fs from 'node:fs';
import type { NativeBinding } from '../native/binding';
import * as K from '../linux/constants';
import type { ProbeReport } from '../keeper/sandbox';

/** What the file system needs to know about the sandbox it runs in. */
export interface WorkerSandboxState {
  /** The share tree (instead of opening the shared directory by path). */
  shareFd?: number;
  /** /proc/self/fd opened before a chroot, and the prefix that names an fd through it ('': it is
   *  the working directory). */
  proc?: { fd: number; prefix: string };
}

export class SandboxSetupError extends Error {}

/** The pid operators and the keeper know this worker by (its launcher's). */
export function workerPid(env: NodeJS.ProcessEnv = process.env): number {
  const p = Number(env.VFSD_WORKER_PID);
  return Number.isInteger(p) && p > 0 ? p : process.pid;
}

/** Finish the sandbox the launcher started (see above). Throws SandboxSetupError. */
export function enterSandbox(native: NativeBinding, env: NodeJS.ProcessEnv = process.env): WorkerSandboxState {
  const mode = env.VFSD_SANDBOX;
  // A worker started by a keeper from before the sandbox: as that keeper expects.
  if (mode === undefined) return {};
  const state: WorkerSandboxState = {};
  if (env.VFSD_SHARE_FD !== undefined) {
    const fd = Number(env.VFSD_SHARE_FD);
    if (!Number.isInteger(fd) || fd < 0) throw new SandboxSetupError(`VFSD_SHARE_FD=${env.VFSD_SHARE_FD}`);
    native.setCloexec(fd, true);
    state.shareFd = fd;
  }
  if (mode === 'chroot') {
    if (state.shareFd === undefined) throw new SandboxSetupError('chroot: no share tree');
    const procFd = native.openat(K.AT_FDCWD, '/proc/self/fd', K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
    if (procFd < 0) throw new SandboxSetupError(`chroot: open /proc/self/fd: errno ${-procFd}`);
    // /proc is not inside the share: paths through /proc/self/fd are spelt relative to it.
    const r = native.chrootAt(state.shareFd, procFd);
    if (r < 0) throw new SandboxSetupError(`chroot: errno ${-r}`);
    state.proc = { fd: procFd, prefix: '' };
  }
  // The launcher's allowlist lets execve through (it needed it once); a chroot-mode worker's
  // threads keep CAP_SYS_CHROOT. Neither is wanted from here on.
  if (mode === 'chroot' || env.VFSD_SECCOMP !== 'none') {
    const r = native.lockdown();
    if (r < 0) throw new SandboxSetupError(`lockdown filter: errno ${-r}`);
  }
  return state;
}

/** The probe's report (the keeper checks it before it accepts QEMU's connection). */
export function probeReport(native: NativeBinding, state: WorkerSandboxState): ProbeReport {
  const { noNewPrivs, seccomp } = native.sandboxStatus();
  const procFd = state.proc?.fd ?? native.openat(K.AT_FDCWD, '/proc/self/fd', K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
  let share = false;
  if (procFd >= 0 && state.shareFd !== undefined) {
    const fd = native.openat(procFd, String(state.shareFd), K.O_RDONLY | K.O_DIRECTORY | K.O_CLOEXEC, 0);
    share = fd >= 0;
    if (fd >= 0) native.close(fd);
  }
  let root: string[] | null = null;
  try { root = fs.readdirSync('/'); } catch { /* below: null */ }
  return { noNewPrivs, seccomp, root, share, proc: procFd >= 0 };
}
