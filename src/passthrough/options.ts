// What the passthrough is asked to serve, from the command line (src/config.ts).

import { DEFAULT_GUEST_LIMITS, type GuestLimits } from './budget';
import { NO_ID_MAP, type IdMapOptions } from './id-map';

export type CacheMode = 'never' | 'metadata' | 'auto' | 'always';

export interface FsOptions {
  sharedDir: string;
  cache: CacheMode;
  xattr: boolean;
  posixAcl: boolean;
  announceSubmounts: boolean;
  readonly: boolean;
  writeback: boolean;
  allowDirectIo: boolean;
  /** Offer READDIRPLUS at INIT (the command line's default: not with cache=never). */
  readdirplus: boolean;
  killprivV2: boolean;
  /** Do READ/WRITE/FSYNC on the event loop instead of the thread pool (--thread-pool-size=0). */
  syncIo: boolean;
  /** Keep the maps in memfds (the daemon) or plain memory (unit tests). */
  memfdState: boolean;
  /** What the guest may hold (budget.ts). */
  limits: GuestLimits;
  /**
   * How a restarted worker gets inodes back: by file handle (nothing to hand to the keeper) or
   * by the keeper's duplicate of each O_PATH fd. prefer: handles when the shared directory's
   * file system gives them and open_by_handle_at works (CAP_DAC_READ_SEARCH); mandatory: refuse
   * to start otherwise. Only used with a keeper.
   */
  inodeFileHandles: 'never' | 'prefer' | 'mandatory';
  /** UID/GID mapping (id-map.ts): --translate-uid/-gid, --uid-map/--gid-map, as given. */
  idMap: IdMapOptions;
  /** --xattrmap (xattr-map.ts), as given; null: names pass unchanged. */
  xattrMap: string | null;
}

export const DEFAULT_FS_OPTIONS: Omit<FsOptions, 'sharedDir'> = {
  cache: 'auto', xattr: false, posixAcl: false, announceSubmounts: true, readonly: false,
  writeback: false, allowDirectIo: false, readdirplus: true, killprivV2: false, syncIo: false, memfdState: true,
  inodeFileHandles: 'prefer', limits: DEFAULT_GUEST_LIMITS, idMap: NO_ID_MAP, xattrMap: null,
};
