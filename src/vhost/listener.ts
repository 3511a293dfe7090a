// The listening unix socket a front-end (QEMU) connects to, the lock that makes it ours, and
// accepting its connection.
//
// Whoever connects first is the front-end, and a front-end can make the guest's requests come
// from uid 0 (a setuid-root file in the share, for one). So the socket is 0700 (0770 with a
// group), never 0777: both peers create it under umask 077 (007 with --socket-group), QEMU
// 7.2's fv_create_listen_socket() and the Rust virtiofsd's main(). And `<socket>.pid` is
// locked with flock(2) for as long as the daemon lives, as the Rust virtiofsd's
// write_pid_file() does, so a second daemon on the same path is refused instead of silently
// taking the path over.

import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { ST, STAT_SLOTS, watchFd, type NativeBinding } from '../native/binding';
import {
  AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, LOCK_EX, LOCK_NB, O_CLOEXEC, O_CREAT, O_NOFOLLOW, O_PATH, O_RDWR, S_IFMT, S_IFSOCK,
} from '../linux/constants';

const { EAGAIN, EINTR, ECONNABORTED, ENOENT } = osConstants.errno;
const POLL_READABLE = 1;
/** Mode bits bind(2) must not give the socket: 0700 (0770 with a group) from the start. */
const SOCKET_UMASK = 0o077;
const GROUP_SOCKET_MODE = 0o770;
const PID_FILE_MODE = 0o600;

/** Errors of this module carry the negative errno of the failed call. */
export class ListenerError extends Error {
  readonly errno: number;
  constructor(message: string, errno: number) {
    super(message);
    this.name = 'ListenerError';
    this.errno = errno;
  }
}

/**
 * Create a listening socket at path (nonblocking, CLOEXEC), mode 0700, or 0770 owned by group
 * gid. A stale socket file left by an earlier run is removed first (take the pid file lock
 * first: lockPidFile); any other kind of file at path is an error rather than something to
 * delete. Returns the listening fd.
 */
export function listenUnix(native: NativeBinding, path: string, backlog = 1, gid?: number): number {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (st) {
    if (!st.isSocket()) throw new ListenerError(`${path} exists and is not a socket`, -osConstants.errno.EEXIST);
    fs.unlinkSync(path);
  }
  // The mode comes from the umask at bind(2): there is no moment at which it is wider.
  const umask = native.umask(SOCKET_UMASK);
  const fd = native.unixListen(path, backlog);
  native.umask(umask);
  if (fd < 0) throw new ListenerError(`cannot listen on ${path}: errno ${-fd}`, fd);
  if (gid !== undefined) {
    const r = shareWithGroup(native, path, gid);
    if (r < 0) {
      native.close(fd);
      throw new ListenerError(`cannot give ${path} to group ${gid}: errno ${-r}`, r);
    }
  }
  return fd;
}

/**
 * chgrp and chmod 0770 the socket node bind(2) made, through an O_PATH fd of it rather than by
 * path: a path could be swapped for a symlink by a writer of its directory between two calls
 * (and chown(2) and chmod(2) follow symlinks). Group first: the mode opens it to the group last.
 */
function shareWithGroup(native: NativeBinding, path: string, gid: number): number {
  const pfd = native.openat(AT_FDCWD, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
  if (pfd < 0) return pfd;
  const st = new BigUint64Array(STAT_SLOTS);
  let r = native.statFd(pfd, st);
  if (r === 0 && (Number(st[ST.mode]!) & S_IFMT) !== S_IFSOCK) r = -osConstants.errno.EEXIST;
  if (r === 0) r = native.fchownat(pfd, '', -1, gid, AT_EMPTY_PATH);
  if (r === 0) r = native.fchmodat(AT_FDCWD, `/proc/self/fd/${pfd}`, GROUP_SOCKET_MODE, 0);
  native.close(pfd);
  return r;
}

/**
 * Lock `<socketPath>.pid` (created 0600) for the life of this process and write our pid into it.
 * Returns its fd, which must stay open (the lock goes with it: carry it across execve); throws a
 * ListenerError naming the holder when another daemon has it. As the Rust virtiofsd does, the
 * file is left in place at exit: the lock, not the file, says who serves.
 */
export function lockPidFile(native: NativeBinding, socketPath: string): number {
  const path = `${socketPath}.pid`;
  const st = new BigUint64Array(STAT_SLOTS);
  const now = new BigUint64Array(STAT_SLOTS);
  // A holder that exits may unlink the file and another daemon make a new one: lock, then check
  // that the path still names the file locked; a few rounds settle any such race.
  for (let round = 0; round < 8; round++) {
    const umask = native.umask(SOCKET_UMASK);
    const fd = native.openat(AT_FDCWD, path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, PID_FILE_MODE);
    native.umask(umask);
    if (fd < 0) throw new ListenerError(`cannot open ${path}: errno ${-fd}`, fd);
    const r = native.flock(fd, LOCK_EX | LOCK_NB);
    if (r < 0) {
      const holder = r === -EAGAIN ? readPid(native, fd) : '';
      native.close(fd);
      if (r === -EAGAIN) {
        throw new ListenerError(`another daemon${holder ? ` (pid ${holder})` : ''} is serving ${socketPath}: it holds the lock on ${path}`, r);
      }
      throw new ListenerError(`cannot lock ${path}: errno ${-r}`, r);
    }
    const same = native.statFd(fd, st) === 0 && native.stat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, now) === 0
      && st[ST.dev] === now[ST.dev] && st[ST.ino] === now[ST.ino];
    if (same) {
      const pid = Buffer.from(`${process.pid}\n`);
      native.ftruncate(fd, 0);
      native.pwrite(fd, pid, 0);
      return fd;
    }
    native.close(fd);
  }
  throw new ListenerError(`cannot lock ${path}: it keeps being replaced`, -ENOENT);
}

function readPid(native: NativeBinding, fd: number): string {
  const buf = new Uint8Array(32);
  const n = native.pread(fd, buf, 0);
  return n > 0 ? Buffer.from(buf.subarray(0, n)).toString('latin1').trim() : '';
}

/**
 * Wait for one connection on a nonblocking listening fd and accept it. Resolves with the connected
 * fd (blocking, CLOEXEC). Rejects on an accept error or when signal aborts.
 */
export function acceptOne(native: NativeBinding, listenFd: number, signal?: AbortSignal): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const tryAccept = (): boolean => {
      for (;;) {
        const fd = native.accept(listenFd);
        if (fd >= 0) {
          resolve(fd);
          return true;
        }
        if (fd === -EINTR || fd === -ECONNABORTED) continue;
        if (fd === -EAGAIN) return false;
        reject(new ListenerError(`accept failed: errno ${-fd}`, fd));
        return true;
      }
    };
    if (signal?.aborted) {
      reject(new ListenerError('accept aborted', -osConstants.errno.ECANCELED));
      return;
    }
    if (tryAccept()) return;
    const onAbort = (): void => {
      native.pollStop(h);
      reject(new ListenerError('accept aborted', -osConstants.errno.ECANCELED));
    };
    const h = watchFd(native, listenFd, POLL_READABLE, (status) => {
      if (status < 0) {
        native.pollStop(h);
        signal?.removeEventListener('abort', onAbort);
        reject(new ListenerError(`poll on listening socket failed: ${status}`, status));
        return;
      }
      if (tryAccept()) {
        native.pollStop(h);
        signal?.removeEventListener('abort', onAbort);
      }
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
