// Fds that must outlive the worker: inode O_PATH fds, open files and directories, lock
// owners' open file descriptions. The worker puts a duplicate of each with the keeper before
// the record that names it is published, and takes it back after the record is invalidated,
// so a crash leaves at worst an fd the keeper holds for a record that is not valid (a leak the
// next worker cleans up), never a valid record without its fd.

export interface FdRegistry {
  /** Hand a duplicate of fd to the keeper under key (replacing any earlier one). */
  put(key: string, fd: number): void;
  /** The keeper closes its duplicate. */
  del(key: string): void;
}

/** One process, nobody to hand fds to. */
export const NO_FD_REGISTRY: FdRegistry = { put() {}, del() {} };

/** Keys: one namespace per map, the slot index (node id or fh) after the prefix. */
export const fdKey = {
  inode: (nodeid: number): string => `i${nodeid}`,
  file: (fh: number): string => `f${fh}`,
  dir: (fh: number): string => `d${fh}`,
  /** pid: the guest process the owner's locks report (F_GETLK) */
  lock: (nodeid: number, owner: bigint, pid: number): string => `l${nodeid}:${owner}:${pid}`,
};
