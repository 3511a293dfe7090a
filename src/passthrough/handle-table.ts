// Open-file and open-dir maps: FUSE fh <-> host fd. fh is the slot index in a shared-memory
// SlotTable (record: state i32 | nodeid u32 | fd i32 | open flags u32 | 16 spare bytes).
// A handle with I/O in flight is closed only when the last operation finishes, so a RELEASE
// racing a thread-pool READ can never close (and let the kernel reuse) an fd under it.
// The keeper gets each handle's fd lazily (FdRegistry.putLazy): a restarted worker takes the
// keeper's duplicate when there is one and otherwise opens the handle's inode again with the
// recorded flags, so a handle opened and released between two flushes costs the keeper nothing.

import type { NativeBinding } from '../native/binding';
import { SlotTable, type SlotBacking } from '../state/slot-table';
import { NO_FD_REGISTRY, type FdRegistry } from '../state/fd-registry';
import { E } from '../linux/constants';

/** A handle record (bytes): state i32 | nodeid u32 | fd i32 | open flags u32 | 16 spare; the
 *  slot table's kind says which map it is (open files or open dirs). */
export const HANDLE_LAYOUT = { record: 32, nodeid: 4, fd: 8, flags: 12, kindFile: 2, kindDir: 3 } as const;
export const HANDLE_RECORD = HANDLE_LAYOUT.record;
const { nodeid: R_NODEID, fd: R_FD, flags: R_FLAGS } = HANDLE_LAYOUT;

export interface Handle {
  readonly fh: number;
  readonly nodeid: number;
  readonly fd: number;
  readonly flags: number;
  /** Operations running off the event loop on this fd. */
  busy: number;
  closing: boolean;
}

export class HandleTable {
  private readonly slots: SlotTable;
  private readonly byFh: (Handle | undefined)[] = [];
  private live = 0;

  /** Handles a restarted worker could not get back (their inode is gone or will not open). */
  lost = 0;

  /**
   * keyOf: the fd registry key of a handle. recovered: as for InodeTable. reopen: open the inode
   * nodeid again with a handle's recorded flags (fd or -errno), for a handle the keeper has no
   * fd for. maxHandles: the guest's budget (checked by the caller before add()), which bounds
   * the region.
   */
  constructor(
    private readonly native: NativeBinding,
    backing: SlotBacking,
    kind: number,
    private readonly keyOf: (fh: number) => string = String,
    private readonly registry: FdRegistry = NO_FD_REGISTRY,
    recovered?: Map<string, number>,
    reopen: (nodeid: number, flags: number) => number = () => -E.EBADF,
    /** Is fd an open file of node nodeid? Checked for the keeper's fds (the record may lie). */
    isOf: (nodeid: number, fd: number) => boolean = () => true,
    maxHandles = Number.MAX_SAFE_INTEGER / 2,
  ) {
    this.slots = new SlotTable(backing, HANDLE_RECORD, 256, kind, 1, maxHandles + 1);
    if (this.slots.inUse > 0) this.recover(recovered ?? new Map(), reopen, isOf);
  }

  private recover(fds: Map<string, number>, reopen: (nodeid: number, flags: number) => number,
    isOf: (nodeid: number, fd: number) => boolean): void {
    const dv = this.slots.dv;
    for (const fh of [...this.slots.validSlots()]) {
      const o = this.slots.off(fh);
      const key = this.keyOf(fh);
      let fd = fds.get(key);
      fds.delete(key);
      if (fd !== undefined && !isOf(dv.getUint32(o + R_NODEID, true), fd)) {
        // A record (written by a worker a guest may have taken over) naming another node than
        // the file the keeper holds: drop that fd and open the named node, if it exists.
        this.native.close(fd);
        this.registry.del(key);
        fd = undefined;
      }
      if (fd === undefined) {
        fd = reopen(dv.getUint32(o + R_NODEID, true), dv.getUint32(o + R_FLAGS, true) | 0);
        if (fd < 0) {
          // The guest's next op on this fh gets EBADF; its RELEASE finds nothing to do.
          this.lost++;
          this.slots.release(fh);
          continue;
        }
        this.registry.putLazy(key, fd);
      }
      dv.setInt32(o + R_FD, fd, true);
      this.byFh[fh] = { fh, nodeid: dv.getUint32(o + R_NODEID, true), fd, flags: dv.getUint32(o + R_FLAGS, true) | 0, busy: 0, closing: false };
      this.live++;
    }
  }

  get count(): number { return this.live; }
  get stateFd(): number { return this.slots.fd; }

  /** Every live handle. */
  all(): Iterable<Handle> {
    return this.byFh.filter((h): h is Handle => h !== undefined);
  }

  get(fh: number): Handle | undefined {
    return this.byFh[fh];
  }

  add(nodeid: number, fd: number, flags: number): Handle {
    const fh = this.slots.alloc();
    this.registry.putLazy(this.keyOf(fh), fd);
    const o = this.slots.off(fh);
    const dv = this.slots.dv;
    dv.setUint32(o + R_NODEID, nodeid, true);
    dv.setInt32(o + R_FD, fd, true);
    dv.setUint32(o + R_FLAGS, flags >>> 0, true);
    this.slots.publish(fh);
    const h: Handle = { fh, nodeid, fd, flags, busy: 0, closing: false };
    this.byFh[fh] = h;
    this.live++;
    return h;
  }

  /** RELEASE: forget the handle now; close its fd now or when the last in-flight op ends. */
  remove(h: Handle): void {
    if (this.byFh[h.fh] !== h) return;
    this.slots.release(h.fh);
    // Now, not at close: the fh may be handed out again before an in-flight op lets us close.
    this.registry.del(this.keyOf(h.fh));
    this.byFh[h.fh] = undefined;
    this.live--;
    h.closing = true;
    if (h.busy === 0) this.closeFds(h);
  }

  /** Mark the start and end of an operation that uses h.fd off the event loop. */
  hold(h: Handle): void { h.busy++; }
  unhold(h: Handle): void {
    h.busy--;
    if (h.busy === 0 && h.closing) this.closeFds(h);
  }

  removeAll(): void {
    for (const h of this.byFh) if (h) this.remove(h);
  }

  close(): void {
    this.removeAll();
    this.slots.close();
  }

  private closeFds(h: Handle): void {
    this.native.close(h.fd);
  }
}
