// The service manager's two interfaces a daemon speaks, our own implementation of what the man
// pages document (no libsystemd):
//   - sd_notify(3): one datagram of newline-separated VAR=VALUE assignments to the unix datagram
//     socket named by $NOTIFY_SOCKET (a path, or '@' for an abstract name), with fds as
//     SCM_RIGHTS for FDSTORE=1 (sd_pid_notify_with_fds(3));
//   - sd_listen_fds(3): fds passed from SD_LISTEN_FDS_START (3) on, $LISTEN_FDS of them, meant
//     for us only when $LISTEN_PID is our pid, named by the colon-separated $LISTEN_FDNAMES.
// Both sets of variables are dropped from our environment once read (the "unset_environment"
// of the man pages), so that no worker we start takes them as its own.

import type { NativeBinding } from '../native/binding';
import { E } from '../linux/constants';

/** sd_listen_fds(3): the first passed fd. */
export const SD_LISTEN_FDS_START = 3;
/** sd_pid_notify_with_fds(3): FDNAME is at most this long, ASCII without control characters or ':'. */
export const FDNAME_MAX = 255;

/** A fd the service manager passed us, with its name ("unknown" when none was given). */
export interface ListenFd { fd: number; name: string }

/**
 * The fds passed to us (sd_listen_fds_with_names semantics), marked close-on-exec; [] when none
 * or when they were meant for another process (LISTEN_PID). Malformed variables are an error.
 */
export function takeListenFds(native: NativeBinding, env: NodeJS.ProcessEnv = process.env): ListenFd[] {
  const pid = env.LISTEN_PID, count = env.LISTEN_FDS, names = env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pid === undefined || count === undefined) return [];
  if (!/^[1-9][0-9]*$/.test(pid) || Number(pid) !== process.pid) return [];
  if (!/^[0-9]+$/.test(count)) throw new Error(`LISTEN_FDS=${count} is not a number`);
  const n = Number(count);
  const list = names === undefined ? [] : names.split(':');
  if (names !== undefined && list.length !== n) throw new Error(`LISTEN_FDNAMES has ${list.length} names for ${n} fds`);
  const out: ListenFd[] = [];
  for (let i = 0; i < n; i++) {
    const fd = SD_LISTEN_FDS_START + i;
    const r = native.setCloexec(fd, true);
    if (r < 0) throw new Error(`LISTEN_FDS: fd ${fd} is not open: errno ${-r}`);
    out.push({ fd, name: list[i] || 'unknown' });
  }
  return out;
}

/** Whether s can be an FDNAME (see FDNAME_MAX). */
export function validFdName(s: string): boolean {
  return s.length > 0 && s.length <= FDNAME_MAX && /^[\x20-\x39\x3b-\x7e]+$/.test(s);
}

/** Talks to the service manager through $NOTIFY_SOCKET; every call is a no-op without one. */
export class Notifier {
  /** The socket's address, or undefined when the service manager gave none. */
  readonly path: string | undefined;

  constructor(private readonly native: NativeBinding, env: NodeJS.ProcessEnv = process.env) {
    const p = env.NOTIFY_SOCKET;
    // Only paths and abstract names (sd_notify(3) also allows vsock: addresses, for VMs).
    this.path = p !== undefined && (p.startsWith('/') || (p.startsWith('@') && p.length > 1)) ? p : undefined;
    // Kept in our own environment for a re-executed image of the keeper (same pid, same service),
    // never handed to a worker: see workerEnv.
  }

  get enabled(): boolean { return this.path !== undefined; }

  /**
   * Send assignments (and fds); 0 or -errno. A newline inside a value would start another
   * assignment: refused (EINVAL), as is a message to no socket (ENOTCONN, nothing sent).
   */
  send(fields: ReadonlyArray<readonly [string, string]>, fds: readonly number[] = []): number {
    if (!this.path) return -E.ENOTCONN;
    if (fields.some(([k, v]) => !/^[A-Z_][A-Z0-9_]*$/.test(k) || v.includes('\n'))) return -E.EINVAL;
    const msg = Buffer.from(fields.map(([k, v]) => `${k}=${v}`).join('\n'), 'utf8');
    const r = this.native.unixDgramSend(this.path, msg, msg.length, fds);
    return r < 0 ? r : 0;
  }

  ready(status: string): number { return this.send([['READY', '1'], ['STATUS', oneLine(status)]]); }

  status(status: string): number { return this.send([['STATUS', oneLine(status)]]); }

  stopping(status: string): number { return this.send([['STOPPING', '1'], ['STATUS', oneLine(status)]]); }

  /** Park fd in the fd store under name (FDSTORE=1, FDNAME=); FDPOLL=0: keep it even when it
   *  reports an error or hang-up (a peer gone meanwhile is ours to see, on restart). */
  store(name: string, fd: number): number {
    return this.send([['FDSTORE', '1'], ['FDNAME', name], ['FDPOLL', '0']], [fd]);
  }

  /** Drop every fd stored under name (FDSTOREREMOVE=1). */
  remove(name: string): number {
    return this.send([['FDSTOREREMOVE', '1'], ['FDNAME', name]]);
  }
}

function oneLine(s: string): string {
  return s.replace(/\n/g, ' ');
}
