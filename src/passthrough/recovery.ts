// The state a worker starts from: new maps, or the maps a previous worker left in shared memory
// (after a crash or for an upgrade), with the fds the keeper kept for it. Everything a worker is
// handed (FsState) is taken here, in one place.
//
// A previous worker's records are checked, not trusted (a guest may have taken that worker
// over): an inode record must match the inode its handle or fd opens (InodeTable.badRecord,
// "refused"), an open file's fd must be of the node its record names, and whatever is reopened
// goes through the same special-file check as OPEN (reopenInode). What cannot be had back is
// "lost": its node id or fh answers EBADF until the guest lets it go. An fd the keeper kept under
// a key no valid record claims is closed, and the keeper told to drop it.

import { ST, STAT_SLOTS, toBinary, type NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import { InodeTable, type Inode } from './inode-table';
import { inodeFdCacheLimit } from './inode-fds';
import { HandleTable, HANDLE_LAYOUT } from './handle-table';
import { MountFds } from './mount-fds';
import { MemfdBacking, MemoryBacking, type SlotBacking } from '../state/slot-table';
import { NO_FD_REGISTRY, fdKey, parseFdKey, type FdRegistry } from '../state/fd-registry';
import { reopenInode, type Share } from './share';
import type { FsOptions } from './options';

/** The memfds of the three maps. */
export interface StateFds { inodes: number; files: number; dirs: number }

/** Where the maps live and who keeps the fds: set by a worker, empty for one process. */
export interface FsState {
  /** Adopt these memfds (a restarted worker: the maps of its predecessor). */
  fds?: Partial<StateFds>;
  registry?: FdRegistry;
  /** Fds the keeper kept for the previous worker, by registry key; consumed. */
  recovered?: Map<string, number>;
  /** The shared directory as an fd (a sandboxed worker's share tree), reopened through
   *  /proc/self/fd instead of opening opts.sharedDir by path. */
  shareFd?: number;
  /** /proc/self/fd opened before a chroot (owned from now on), and the prefix that names an fd
   *  through it in a path ('' when it is the working directory). */
  proc?: { fd: number; prefix: string };
}

/** A guest POSIX lock owner's open file description, kept by the keeper for a previous worker. */
export interface RecoveredLockOwner { nodeid: number; owner: bigint; pid: number; fd: number }

/** What a worker serves from: the maps, how it reaches their inodes (Share holds them), and the
 *  lock owners a previous worker left (Locks adopts them). */
export type StartState = Pick<Share, 'procFd' | 'procPrefix' | 'mounts' | 'inodes' | 'files' | 'dirs' | 'registry'> & {
  readonly lockOwners: RecoveredLockOwner[];
};

/** Open the shared directory and its maps: new, or adopted from state. Throws if it cannot serve. */
export function startState(native: NativeBinding, opts: FsOptions, log: Logger, state: FsState = {}): StartState {
  const backing = (name: keyof StateFds): SlotBacking => {
    const fd = state.fds?.[name] ?? -1;
    if (fd >= 0) return new MemfdBacking(native, `vfsd-${name}`, fd);
    return opts.memfdState ? new MemfdBacking(native, `vfsd-${name}`) : new MemoryBacking();
  };
  const registry = state.registry ?? NO_FD_REGISTRY;
  const recovered = state.recovered ?? new Map<string, number>();

  const procFd = state.proc?.fd ?? native.openat(K.AT_FDCWD, '/proc/self/fd', K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
  if (procFd < 0) throw new Error(`cannot open /proc/self/fd: errno ${-procFd}`);
  const procPrefix = state.proc?.prefix ?? '/proc/self/fd/';
  // Through the share tree's fd if the worker has one, else by path.
  const openShare = (flags: number): number => state.shareFd !== undefined
    ? native.openat(procFd, String(state.shareFd), flags, 0)
    : native.openat(K.AT_FDCWD, toBinary(opts.sharedDir), flags, 0);
  const rootFd = openShare(K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC);
  if (rootFd < 0) throw new Error(`cannot open shared directory ${opts.sharedDir}: errno ${-rootFd}`);
  const st = new BigUint64Array(STAT_SLOTS);
  const r = native.stat(rootFd, '', K.AT_EMPTY_PATH | K.AT_SYMLINK_NOFOLLOW, st);
  if (r < 0) throw new Error(`cannot stat shared directory: errno ${-r}`);
  const mounts = state.registry ? fileHandles(native, opts, log, procFd, openShare, st[ST.mntId]!, registry, recovered) : null;

  const inodes = new InodeTable(native, backing('inodes'), registry, recovered, mounts, opts.limits.inodes, inodeFdCacheLimit(opts.limits.fds));
  const inodeFd = (ino: Inode): number => inodes.fd(ino);
  const reopen = (nodeid: number, flags: number): number => {
    const ino = inodes.get(nodeid);
    return ino ? reopenInode(native, procFd, ino, inodeFd, flags) : -E.EBADF;
  };
  // A recovered handle's fd must be of the node its record names.
  const isOf = (nodeid: number, fd: number): boolean => {
    const ino = inodes.get(nodeid);
    const hs = new BigUint64Array(STAT_SLOTS);
    if (!ino || native.statFd(fd, hs) < 0) return false;
    return hs[ST.dev] === ino.dev && hs[ST.ino] === ino.ino;
  };
  // Reopened with the flags they were opened with, less O_TRUNC: the truncation was done once.
  const files = new HandleTable(native, backing('files'), HANDLE_LAYOUT.kindFile, fdKey.file, registry, recovered,
    (nodeid, flags) => reopen(nodeid, flags & ~K.O_TRUNC), isOf, opts.limits.handles);
  const dirs = new HandleTable(native, backing('dirs'), HANDLE_LAYOUT.kindDir, fdKey.dir, registry, recovered,
    (nodeid) => reopen(nodeid, K.O_RDONLY | K.O_DIRECTORY), isOf, opts.limits.handles);

  // A node whose handle no longer opens (deleted on the host) may live on in an open file or dir
  // the guest holds: the node gets an O_PATH fd of that open file.
  if (inodes.lost > 0) {
    for (const h of [...files.all(), ...dirs.all()]) {
      const ino = inodes.get(h.nodeid);
      if (!ino?.lost) continue;
      const fd = native.openat(procFd, String(h.fd), K.O_PATH | K.O_CLOEXEC, 0);
      if (fd >= 0) inodes.revive(h.nodeid, fd);
    }
  }
  const root = inodes.root;
  if (root) {
    // An adopted table: its root must still be the shared directory.
    native.close(rootFd);
    if (root.dev !== st[ST.dev] || root.ino !== st[ST.ino]) throw new Error('recovered state is for another shared directory');
    if (root.fd < 0) throw new Error('the keeper holds no fd for the shared directory');
  } else {
    inodes.setRoot(rootFd, st[ST.dev]!, st[ST.ino]!, st[ST.mntId]!, Number(st[ST.mode]!));
  }

  // Lock owners' open file descriptions (their locks live on them); anything else left over
  // belongs to no valid record.
  const lockOwners: RecoveredLockOwner[] = [];
  for (const [key, fd] of recovered) {
    const k = parseFdKey(key);
    if (k?.kind === 'lock' && inodes.get(k.nodeid)) {
      lockOwners.push({ nodeid: k.nodeid, owner: k.owner, pid: k.pid, fd });
    } else {
      native.close(fd);
      registry.del(key);
    }
  }
  recovered.clear();
  report(log, inodes, files, dirs);
  return { procFd, procPrefix, mounts, inodes, files, dirs, registry, lockOwners };
}

/**
 * The mounts to make file handles on, if --inode-file-handles allows and they work on the shared
 * directory (a probe makes a handle of it and opens it again); submounts are probed when seen.
 */
function fileHandles(native: NativeBinding, opts: FsOptions, log: Logger, procFd: number, openShare: (flags: number) => number, mntId: bigint,
  registry: FdRegistry, recovered: Map<string, number>): MountFds | null {
  const mode = opts.inodeFileHandles;
  if (mode === 'never') return null;
  const mounts = new MountFds(native, registry, procFd);
  const rootFd = openShare(K.O_RDONLY | K.O_DIRECTORY | K.O_CLOEXEC);
  const why = rootFd < 0 ? rootFd : mounts.probe(rootFd);
  if (why === 0) {
    mounts.setRoot(mntId, rootFd);
    mounts.adopt(recovered);
    return mounts;
  }
  if (rootFd >= 0) native.close(rootFd);
  const msg = `file handles do not work on the shared directory (errno ${-why}${why === -E.EPERM ? ': needs CAP_DAC_READ_SEARCH' : ''})`;
  if (mode === 'mandatory') throw new Error(`--inode-file-handles=mandatory: ${msg}`);
  log.info(`${msg}; the keeper holds an O_PATH fd per inode instead`);
  return null;
}

/** What was adopted, and what could not be: one line, a warning when the guest will notice. */
function report(log: Logger, inodes: InodeTable, files: HandleTable, dirs: HandleTable): void {
  // A record that does not match its inode (see InodeTable.badRecord) was not adopted.
  if (inodes.refused > 0) log.warn({ refused: inodes.refused }, 'inode records that do not match their inode were refused; their ops fail with EBADF');
  if (inodes.count <= 1) return;
  const lost = { inodes: inodes.lost, files: files.lost, dirs: dirs.lost };
  const fields = { inodes: inodes.count, byHandle: inodes.handleCount, files: files.count, dirs: dirs.count, lost };
  // A lost inode is routine (deleted, and the guest has not sent its FORGET yet); a lost open
  // file or dir is an fh the guest may still use.
  if (lost.files + lost.dirs > 0) log.warn(fields, 'state recovered; some open files could not be opened again (their ops fail with EBADF)');
  else log.info(fields, 'state recovered');
  if (inodes.lostByError.size > 0) {
    log.warn({ errnos: Object.fromEntries(inodes.lostByError) }, 'some inodes did not open by file handle (not deleted); their ops fail with EBADF: consider --inode-file-handles=never');
  }
}
