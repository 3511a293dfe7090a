// The inode map: FUSE node id <-> host inode. A node id is the index of the inode's slot in a
// shared-memory SlotTable (node id 1 = the shared directory's root), and the generation in
// the slot tells a reused slot from the old one (the guest sees (nodeid, generation) pairs).
// Each inode is held by an O_PATH fd; identity is (st_dev, st_ino, mnt_id), so one host file
// never gets two node ids (seed 002). nlookup counts the guest's references (LOOKUP, CREATE,
// READDIRPLUS, ... add one; FORGET subtracts); at zero the slot is freed and the fd closed.
// All methods are synchronous: decide and mutate in one stretch (seed 004).

import type { NativeBinding } from '../native/binding';
import { SlotTable, type SlotBacking } from '../state/slot-table';
import { NO_FD_REGISTRY, fdKey, type FdRegistry } from '../state/fd-registry';

// Record layout (bytes): state i32 | generation u32 | nlookup f64 | dev u64 | ino u64 |
// mnt_id u64 | fd i32 | mode u32 | handle_len u32 | handle_type i32 | handle[128]
export const INODE_RECORD = 192;
const R_GEN = 4, R_NLOOKUP = 8, R_DEV = 16, R_INO = 24, R_MNT = 32, R_FD = 40, R_MODE = 44;
export const INODE_TABLE_KIND = 1;

export interface Inode {
  readonly nodeid: number;
  readonly generation: number;
  readonly fd: number;          // O_PATH | O_NOFOLLOW
  readonly dev: bigint;
  readonly ino: bigint;
  readonly mntId: bigint;
  readonly mode: number;        // S_IFMT bits are what matter; permission bits may be stale
  readonly key: string;
  nlookup: number;
}

export function inodeKey(dev: bigint, ino: bigint, mntId: bigint): string {
  return `${dev}:${ino}:${mntId}`;
}

export class InodeTable {
  private readonly slots: SlotTable;
  private readonly byNodeid: (Inode | undefined)[] = [];
  private readonly byKey = new Map<string, Inode>();
  private readonly generations: number[] = [];

  /**
   * recovered: the fds a previous worker registered, by key. When the backing already holds a
   * table, every published record is rebuilt with its fd from there (and taken out of the map).
   */
  constructor(
    private readonly native: NativeBinding,
    backing: SlotBacking,
    private readonly registry: FdRegistry = NO_FD_REGISTRY,
    recovered?: Map<string, number>,
  ) {
    // Slots 0 (invalid node id) and 1 (root) are never handed out by alloc().
    this.slots = new SlotTable(backing, INODE_RECORD, 1024, INODE_TABLE_KIND, 2);
    if (this.slots.inUse > 0) this.recover(recovered ?? new Map());
  }

  /** Rebuild the caches from the published records of a previous worker. */
  private recover(fds: Map<string, number>): void {
    const dv = this.slots.dv;
    for (const slot of [...this.slots.validSlots()]) {
      const o = this.slots.off(slot);
      const key = fdKey.inode(slot);
      const fd = fds.get(key);
      if (fd === undefined) {
        // Published without its fd cannot happen (put precedes publish); treat as torn.
        this.slots.release(slot);
        continue;
      }
      fds.delete(key);
      const dev = dv.getBigUint64(o + R_DEV, true), ino = dv.getBigUint64(o + R_INO, true), mntId = dv.getBigUint64(o + R_MNT, true);
      const gen = dv.getUint32(o + R_GEN, true);
      const inode: Inode = {
        nodeid: slot, generation: gen, fd, dev, ino, mntId, mode: dv.getUint32(o + R_MODE, true),
        key: inodeKey(dev, ino, mntId), nlookup: dv.getFloat64(o + R_NLOOKUP, true),
      };
      dv.setInt32(o + R_FD, fd, true);
      this.generations[slot] = gen;
      this.byNodeid[slot] = inode;
      this.byKey.set(inode.key, inode);
    }
  }

  /** The root, if this table was recovered with one. */
  get root(): Inode | undefined {
    return this.byNodeid[1];
  }

  get count(): number { return this.byKey.size; }
  get stateFd(): number { return this.slots.fd; }

  get(nodeid: number): Inode | undefined {
    return this.byNodeid[nodeid];
  }

  /** Install the root (node id 1) from an O_PATH fd of the shared directory. */
  setRoot(fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number): Inode {
    this.slots.claimReserved(1);
    return this.install(1, fd, dev, ino, mntId, mode, 1);
  }

  /**
   * Account one more guest reference to the host inode that `fd` (O_PATH) refers to.
   * If the inode is known, `fd` is closed and the existing node returned; otherwise `fd`
   * becomes the node's fd.
   */
  lookupOrInsert(fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number): Inode {
    const key = inodeKey(dev, ino, mntId);
    const known = this.byKey.get(key);
    if (known) {
      if (known.fd !== fd) this.native.close(fd);
      this.addRef(known, 1);
      return known;
    }
    const slot = this.slots.alloc();
    const gen = (this.generations[slot] ?? 0) + 1;
    return this.install(slot, fd, dev, ino, mntId, mode, gen);
  }

  /** The node of a host inode if the guest already holds it (no reference taken). */
  find(dev: bigint, ino: bigint, mntId: bigint): Inode | undefined {
    return this.byKey.get(inodeKey(dev, ino, mntId));
  }

  addRef(inode: Inode, n: number): void {
    inode.nlookup += n;
    this.slots.dv.setFloat64(this.slots.off(inode.nodeid) + R_NLOOKUP, inode.nlookup, true);
  }

  /** FORGET: drop n references; frees the node at zero. The root is never freed. */
  forget(nodeid: number, n: number): void {
    const inode = this.byNodeid[nodeid];
    if (!inode) return;
    inode.nlookup = n >= inode.nlookup ? 0 : inode.nlookup - n;
    if (inode.nlookup > 0 || nodeid === 1) {
      this.slots.dv.setFloat64(this.slots.off(nodeid) + R_NLOOKUP, inode.nlookup, true);
      return;
    }
    this.remove(inode);
  }

  /** DESTROY: forget everything but the root. */
  forgetAll(): void {
    for (const inode of this.byKey.values()) if (inode.nodeid !== 1) this.remove(inode);
  }

  close(): void {
    for (const inode of this.byKey.values()) this.native.close(inode.fd);
    this.byKey.clear();
    this.byNodeid.length = 0;
    this.slots.close();
  }

  private remove(inode: Inode): void {
    // Invalidate first (slot), then drop the caches and the keeper's copy, then close the fd.
    this.slots.release(inode.nodeid);
    this.byNodeid[inode.nodeid] = undefined;
    this.byKey.delete(inode.key);
    this.registry.del(fdKey.inode(inode.nodeid));
    this.native.close(inode.fd);
  }

  private install(slot: number, fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number, gen: number): Inode {
    // The keeper holds the fd before the record that names it becomes valid.
    this.registry.put(fdKey.inode(slot), fd);
    const dv = this.slots.dv;
    const o = this.slots.off(slot);
    dv.setUint32(o + R_GEN, gen, true);
    dv.setFloat64(o + R_NLOOKUP, 1, true);
    dv.setBigUint64(o + R_DEV, dev, true);
    dv.setBigUint64(o + R_INO, ino, true);
    dv.setBigUint64(o + R_MNT, mntId, true);
    dv.setInt32(o + R_FD, fd, true);
    dv.setUint32(o + R_MODE, mode, true);
    this.slots.publish(slot);
    this.generations[slot] = gen;
    const inode: Inode = { nodeid: slot, generation: gen, fd, dev, ino, mntId, mode, key: inodeKey(dev, ino, mntId), nlookup: 1 };
    this.byNodeid[slot] = inode;
    this.byKey.set(inode.key, inode);
    return inode;
  }
}
