// The mounts under the shared directory that file handles work on, each with an fd that
// open_by_handle_at accepts (it refuses O_PATH fds). The shared directory's own mount is opened
// by every worker; a submount's fd is opened on first sight of its root (through the inode's
// O_PATH fd, so no path is resolved) and handed to the keeper before any record names a handle
// on it, so a restarted worker can open those handles too. A mount where handles do not work
// is remembered as such, and its inodes go to the keeper as fds.

import type { NativeBinding } from '../native/binding';
import { fdKey, parseFdKey, type FdRegistry } from '../state/fd-registry';
import * as K from '../linux/constants';

const HANDLE_BUF = 12 + 128;

export class MountFds {
  /** mnt_id -> fd, or -1: no file handles on this mount. */
  private readonly byMnt = new Map<bigint, number>();
  private readonly probeBuf = new Uint8Array(HANDLE_BUF);

  constructor(private readonly native: NativeBinding, private readonly registry: FdRegistry, private readonly procFd: number) {}

  /** Does a handle of fd's inode open again through fd? 0, or the -errno that says no. */
  probe(fd: number): number {
    const n = this.native;
    const len = n.nameToHandleAt(fd, '', K.AT_EMPTY_PATH, this.probeBuf);
    const back = len < 0 ? len : n.openByHandleAt(fd, this.probeBuf.subarray(0, len), K.O_PATH | K.O_CLOEXEC);
    if (back < 0) return back;
    n.close(back);
    return 0;
  }

  /** The shared directory's mount, opened (and probed) by the caller; owned from now on. */
  setRoot(mntId: bigint, fd: number): void {
    this.byMnt.set(mntId, fd);
  }

  /** Take the submount fds a previous worker handed the keeper (out of recovered). */
  adopt(recovered: Map<string, number>): void {
    for (const [key, fd] of recovered) {
      const k = parseFdKey(key);
      if (k?.kind !== 'mount') continue;
      recovered.delete(key);
      this.byMnt.set(k.mntId, fd);
    }
  }

  /** The fd handles on mount mntId open through, if handles are used there. */
  get(mntId: bigint): number | undefined {
    const fd = this.byMnt.get(mntId);
    return fd !== undefined && fd >= 0 ? fd : undefined;
  }

  /**
   * The mount fd for a new inode on mount mntId (fd: its O_PATH fd, mode: its st_mode), setting
   * the mount up the first time one of its inodes is seen; undefined: no handles there.
   */
  forInode(mntId: bigint, fd: number, mode: number): number | undefined {
    const known = this.byMnt.get(mntId);
    if (known !== undefined) return known >= 0 ? known : undefined;
    const type = mode & K.S_IFMT;
    // The mount's root (the first of its inodes the guest can reach). Only a directory or a
    // regular file is opened: a device or FIFO must not be.
    const flags = type === K.S_IFDIR ? K.O_RDONLY | K.O_DIRECTORY : type === K.S_IFREG ? K.O_RDONLY | K.O_NONBLOCK | K.O_NOCTTY : -1;
    let mfd = flags < 0 ? -1 : this.native.openat(this.procFd, String(fd), flags | K.O_CLOEXEC, 0);
    if (mfd >= 0 && this.probe(mfd) !== 0) {
      this.native.close(mfd);
      mfd = -1;
    }
    // The keeper holds it before any record names a handle on this mount.
    if (mfd >= 0) this.registry.put(fdKey.mount(mntId), mfd);
    this.byMnt.set(mntId, mfd);
    return mfd >= 0 ? mfd : undefined;
  }

  close(): void {
    for (const fd of this.byMnt.values()) if (fd >= 0) this.native.close(fd);
    this.byMnt.clear();
  }
}
