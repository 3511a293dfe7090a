// The listening unix socket a front-end (QEMU) connects to, and accepting its connection.

import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { watchFd, type NativeBinding } from '../native/binding';

const { EAGAIN, EINTR, ECONNABORTED } = osConstants.errno;
const POLL_READABLE = 1;

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
 * Create a listening socket at path (nonblocking, CLOEXEC). A stale socket file left by an earlier
 * run is removed first; any other kind of file at path is an error rather than something to delete.
 * Returns the listening fd.
 */
export function listenUnix(native: NativeBinding, path: string, backlog = 1): number {
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
  const fd = native.unixListen(path, backlog);
  if (fd < 0) throw new ListenerError(`cannot listen on ${path}: errno ${-fd}`, fd);
  return fd;
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
