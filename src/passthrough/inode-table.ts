// The inode map: FUSE node id <-> host inode. A node id is the index of the inode's slot in a
// shared-memory SlotTable (node id 1 = the shared directory's root), and the generation in
// the slot tells a reused slot from the old one (the guest sees (nodeid, generation) pairs).
// Each inode is held by an O_PATH fd; identity is (st_dev, st_ino, mnt_id), so one host file
// never gets two node ids. What lets a restarted worker get the inode back: its file
// handle (name_to_handle_at, kept in the record) when the file system gives one, else the
// keeper's duplicate of the O_PATH fd, handed over before the record is published. nlookup counts the guest's references (LOOKUP, CREATE,
// READDIRPLUS, ... add one; FORGET subtracts); at zero the slot is freed and the fd closed.
// All methods are synchronous: decide and mutate in one stretch.

import { ST, type NativeBinding } from '../native/binding';
import { SlotTable, type SlotBacking } from '../state/slot-table';
import { NO_FD_REGISTRY, fdKey, type FdRegistry } from '../state/fd-registry';
import type { MountFds } from './mount-fds';
import { AT_EMPTY_PATH, O_CLOEXEC, O_NOFOLLOW, O_PATH, S_IFMT } from '../linux/constants';
import { E } from '../errno';

/**
 * An inode record (bytes): state i32 | generation u32 | nlookup f64 | dev u64 | ino u64 |
 * mnt_id u64 | fd i32 | mode u32 | handle: handle_len u32 | handle_type i32 | bytes[maxHandle]
 * (nameToHandleAt's output without its mount id). The slot table's kind is `kind`.
 */
export const INODE_LAYOUT = {
  record: 192, kind: 1, gen: 4, nlookup: 8, dev: 16, ino: 24, mnt: 32, fd: 40, mode: 44, handle: 48, maxHandle: 128,
} as const;
export const INODE_RECORD = INODE_LAYOUT.record;
export const INODE_TABLE_KIND = INODE_LAYOUT.kind;
const { gen: R_GEN, nlookup: R_NLOOKUP, dev: R_DEV, ino: R_INO, mnt: R_MNT, fd: R_FD, mode: R_MODE, handle: R_HANDLE } = INODE_LAYOUT;
/** nameToHandleAt's output: u32 mount_id | u32 handle_bytes | i32 handle_type | bytes. */
const HANDLE_HDR = 12, MAX_HANDLE = INODE_LAYOUT.maxHandle;

/** Where file handles are made and opened: the mounts they work on (see mount-fds.ts). */
export type InodeHandles = Pick<MountFds, 'get' | 'forInode'>;

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
  /** The keeper holds a duplicate of fd (the inode has no file handle). */
  readonly registered: boolean;
}

export function inodeKey(dev: bigint, ino: bigint, mntId: bigint): string {
  return `${dev}:${ino}:${mntId}`;
}

/** The u32 words of (dev, ino, mnt_id) in a stat() result viewed as a Uint32Array (STAT_SLOTS u64
 *  slots, little-endian): dev = slot 0, ino = slot 1, mnt_id = slot 16. */
const W_DEV = 0, W_INO = 2, W_MNT = 32;
const TWO32 = 4294967296;

export class InodeTable {
  private readonly slots: SlotTable;
  private readonly byNodeid: (Inode | undefined)[] = [];
  private readonly byKey = new Map<string, Inode>();
  /** Lookup index without BigInt: ino (as a double, inexact past 2^53) -> node id(s); a candidate
   *  is confirmed against the exact words of its record. */
  private readonly byIno = new Map<number, number | number[]>();
  /** Scratch words for the bigint forms of the API. */
  private readonly w = new Uint32Array(34);
  private readonly generations: number[] = [];
  private readonly hbuf = new Uint8Array(HANDLE_HDR + MAX_HANDLE);
  private readonly st = new BigUint64Array(17);
  /** Records whose inode a restarted worker could not get back (see recover). */
  lost = 0;
  /** Of those, records refused as inconsistent (see badRecord). */
  refused = 0;
  private readonly refusedNodes = new Set<number>();
  /** Of those, the ones whose handle failed with an error other than "deleted": errno -> count. */
  readonly lostByError = new Map<number, number>();

  /**
   * recovered: the fds a previous worker registered, by key. When the backing already holds a
   * table, every published record is rebuilt with its fd from there (and taken out of the map)
   * or from its file handle. handles: the mounts to make file handles on (null: hand every
   * inode's fd to the registry). maxInodes: the guest's budget (checked by the caller before it
   * inserts); the region holds twice that at the most, room for nodes lost in a restart too.
   */
  constructor(
    private readonly native: NativeBinding,
    backing: SlotBacking,
    private readonly registry: FdRegistry = NO_FD_REGISTRY,
    recovered?: Map<string, number>,
    private readonly handles: InodeHandles | null = null,
    maxInodes = Number.MAX_SAFE_INTEGER / 4,
  ) {
    // Slots 0 (invalid node id) and 1 (root) are never handed out by alloc().
    this.slots = new SlotTable(backing, INODE_RECORD, 1024, INODE_TABLE_KIND, 2, 2 * maxInodes + 2);
    if (this.slots.inUse > 0) this.recover(recovered ?? new Map());
  }

  /** Rebuild the caches from the published records of a previous worker. */
  private recover(fds: Map<string, number>): void {
    const dv = this.slots.dv;
    for (const slot of [...this.slots.validSlots()]) {
      const o = this.slots.off(slot);
      const key = fdKey.inode(slot);
      let fd = fds.get(key);
      const registered = fd !== undefined;
      fds.delete(key);
      if (fd === undefined) {
        const r = this.openHandle(o);
        // ESTALE / ENOENT: deleted on the host. Anything else means handles failed us.
        if (r < 0 && r !== -E.ESTALE && r !== -E.ENOENT) this.lostByError.set(-r, (this.lostByError.get(-r) ?? 0) + 1);
        // -1, never another negative value: -100 is AT_FDCWD to every *at call.
        fd = Math.max(r, -1);
      }
      const dev = dv.getBigUint64(o + R_DEV, true), ino = dv.getBigUint64(o + R_INO, true), mntId = dv.getBigUint64(o + R_MNT, true);
      let mode = dv.getUint32(o + R_MODE, true);
      const gen = dv.getUint32(o + R_GEN, true);
      this.generations[slot] = gen;
      let reg = registered;
      if (fd >= 0 && this.badRecord(o, fd, inodeKey(dev, ino, mntId))) {
        // Refused: the node id stays reserved, as for a lost inode, and answers EBADF.
        this.native.close(fd);
        if (reg) this.registry.del(key);
        reg = false;
        fd = -1;
        this.refused++;
        this.refusedNodes.add(slot);
      } else if (fd >= 0) {
        // The file type every later open is checked against comes from the inode itself (which
        // badRecord just statted), not from the record: only a regular file or a directory may
        // ever be opened (see share.ts).
        mode = Number(this.st[ST.mode]);
        dv.setUint32(o + R_MODE, mode, true);
      }
      const inode: Inode = {
        nodeid: slot, generation: gen, fd, dev, ino, mntId, mode,
        key: inodeKey(dev, ino, mntId), nlookup: dv.getFloat64(o + R_NLOOKUP, true), registered: reg,
      };
      this.byNodeid[slot] = inode;
      if (fd < 0) {
        // Gone from the host (deleted while no process held it) or no way back to it. The guest
        // still holds the node id: keep the slot until it forgets it, so the id is not reused
        // under it, but out of the identity index; every op on it fails with EBADF.
        this.lost++;
        continue;
      }
      dv.setInt32(o + R_FD, fd, true);
      this.byKey.set(inode.key, inode);
      this.index(slot, dv.getUint32(o + R_INO, true), dv.getUint32(o + R_INO + 4, true));
    }
  }

  /**
   * Is the record at o unfit to adopt with fd? The image was written by an earlier worker, one a
   * guest may have taken over: the fd (the keeper's, or opened by the handle) must be the inode
   * the record names, with the recorded file type, and no earlier record may name it (one host
   * inode, one node id); nlookup must be a count.
   */
  private badRecord(o: number, fd: number, key: string): boolean {
    const dv = this.slots.dv, st = this.st;
    const nlookup = dv.getFloat64(o + R_NLOOKUP, true);
    if (!(Number.isFinite(nlookup) && nlookup >= 0)) return true;
    if (this.native.statFd(fd, st) < 0) return true;
    if (st[ST.dev] !== dv.getBigUint64(o + R_DEV, true) || st[ST.ino] !== dv.getBigUint64(o + R_INO, true)) return true;
    if (st[ST.mntId] !== 0n && st[ST.mntId] !== dv.getBigUint64(o + R_MNT, true)) return true;
    if ((Number(st[ST.mode]) & S_IFMT) !== (dv.getUint32(o + R_MODE, true) & S_IFMT)) return true;
    return this.byKey.has(key);
  }

  /**
   * Give a lost node (see recover) its inode back through fd (O_PATH, consumed), opened from an
   * open file or directory the guest holds on it: a file deleted on the host, or a directory
   * removed, no longer opens by handle but lives on in those. The keeper gets the fd (the
   * handle is of no use any more). False (fd closed) if fd is not the recorded inode.
   */
  revive(nodeid: number, fd: number): boolean {
    const old = this.byNodeid[nodeid];
    const st = this.st;
    if (!old || old.fd >= 0 || this.refusedNodes.has(nodeid) || this.native.statFd(fd, st) < 0 || st[0] !== old.dev || st[1] !== old.ino || this.byKey.has(old.key)) {
      this.native.close(fd);
      return false;
    }
    this.registry.put(fdKey.inode(nodeid), fd);
    // The type, as in recover(), from the inode.
    const inode: Inode = { ...old, fd, registered: true, mode: Number(st[ST.mode]) };
    this.byNodeid[nodeid] = inode;
    this.slots.dv.setInt32(this.slots.off(nodeid) + R_FD, fd, true);
    this.slots.dv.setUint32(this.slots.off(nodeid) + R_MODE, inode.mode, true);
    this.byKey.set(inode.key, inode);
    const dv = this.slots.dv, o = this.slots.off(nodeid);
    this.index(nodeid, dv.getUint32(o + R_INO, true), dv.getUint32(o + R_INO + 4, true));
    this.lost--;
    return true;
  }

  /** Open the inode of the record at o by its file handle; -errno if it has none or it is gone. */
  private openHandle(o: number): number {
    const dv = this.slots.dv;
    const len = dv.getUint32(o + R_HANDLE, true);
    // No handle (and the keeper has no fd: cannot happen, the put precedes the publish), or a
    // length no handle has.
    const mountFd = this.handles?.get(dv.getBigUint64(o + R_MNT, true));
    if (mountFd === undefined || len === 0) return -E.EBADF;
    if (len > MAX_HANDLE) return -E.EINVAL;
    const h = this.hbuf;
    h.set(new Uint8Array(dv.buffer, dv.byteOffset + o + R_HANDLE, 8 + len), 4);
    // A handle names one inode for its whole life; recover() checks it is the one recorded.
    return this.native.openByHandleAt(mountFd, h.subarray(0, HANDLE_HDR + len), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  }

  /** The root, if this table was recovered with one. */
  get root(): Inode | undefined {
    return this.byNodeid[1];
  }

  get count(): number { return this.byKey.size; }
  /** Inodes held by file handle (nothing handed to the keeper). */
  get handleCount(): number {
    let n = 0;
    for (const i of this.byKey.values()) if (!i.registered) n++;
    return n;
  }
  get stateFd(): number { return this.slots.fd; }

  get(nodeid: number): Inode | undefined {
    return this.byNodeid[nodeid];
  }

  /** Install the root (node id 1) from an O_PATH fd of the shared directory. */
  setRoot(fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number): Inode {
    this.slots.claimReserved(1);
    // Always by fd: a restarted worker must get the root back whatever the handle would say.
    return this.install(1, fd, dev, ino, mntId, mode, 1, false);
  }

  /**
   * Account one more guest reference to the host inode that `fd` (O_PATH) refers to.
   * If the inode is known, `fd` is closed and the existing node returned; otherwise `fd`
   * becomes the node's fd.
   */
  lookupOrInsert(fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number): Inode {
    return this.lookupOrInsertStat(fd, this.words(dev, ino, mntId), mode);
  }

  /**
   * lookupOrInsert with the identity read from a stat() result (STAT_SLOTS u64 slots) viewed as
   * a Uint32Array: no BigInt is made unless the inode is new.
   */
  lookupOrInsertStat(fd: number, st32: Uint32Array, mode: number): Inode {
    const known = this.findWords(st32);
    if (known) {
      if (known.fd !== fd) this.native.close(fd);
      this.addRef(known, 1);
      return known;
    }
    const dev = u64(st32[W_DEV]!, st32[W_DEV + 1]!), ino = u64(st32[W_INO]!, st32[W_INO + 1]!), mntId = u64(st32[W_MNT]!, st32[W_MNT + 1]!);
    const slot = this.slots.alloc();
    const gen = (this.generations[slot] ?? 0) + 1;
    return this.install(slot, fd, dev, ino, mntId, mode, gen);
  }

  /** Does the guest already hold the inode of this stat() result (as lookupOrInsertStat takes it)? */
  knows(st32: Uint32Array): boolean {
    return this.findWords(st32) !== undefined;
  }

  /** The node of a host inode if the guest already holds it (no reference taken). */
  find(dev: bigint, ino: bigint, mntId: bigint): Inode | undefined {
    return this.findWords(this.words(dev, ino, mntId));
  }

  private words(dev: bigint, ino: bigint, mntId: bigint): Uint32Array {
    const w = this.w;
    w[W_DEV] = Number(dev & 0xffffffffn); w[W_DEV + 1] = Number((dev >> 32n) & 0xffffffffn);
    w[W_INO] = Number(ino & 0xffffffffn); w[W_INO + 1] = Number((ino >> 32n) & 0xffffffffn);
    w[W_MNT] = Number(mntId & 0xffffffffn); w[W_MNT + 1] = Number((mntId >> 32n) & 0xffffffffn);
    return w;
  }

  private findWords(w: Uint32Array): Inode | undefined {
    const e = this.byIno.get(w[W_INO + 1]! * TWO32 + w[W_INO]!);
    if (e === undefined) return undefined;
    if (typeof e === 'number') return this.same(e, w) ? this.byNodeid[e] : undefined;
    for (let i = 0; i < e.length; i++) if (this.same(e[i]!, w)) return this.byNodeid[e[i]!];
    return undefined;
  }

  /** Does node id's record hold exactly this (dev, ino, mnt_id)? */
  private same(nodeid: number, w: Uint32Array): boolean {
    const dv = this.slots.dv, o = this.slots.off(nodeid);
    return dv.getUint32(o + R_INO, true) === w[W_INO] && dv.getUint32(o + R_INO + 4, true) === w[W_INO + 1] &&
      dv.getUint32(o + R_DEV, true) === w[W_DEV] && dv.getUint32(o + R_DEV + 4, true) === w[W_DEV + 1] &&
      dv.getUint32(o + R_MNT, true) === w[W_MNT] && dv.getUint32(o + R_MNT + 4, true) === w[W_MNT + 1];
  }

  private index(nodeid: number, inoLo: number, inoHi: number): void {
    const k = inoHi * TWO32 + inoLo;
    const e = this.byIno.get(k);
    if (e === undefined) this.byIno.set(k, nodeid);
    else if (typeof e === 'number') this.byIno.set(k, [e, nodeid]);
    else e.push(nodeid);
  }

  private unindex(nodeid: number): void {
    const dv = this.slots.dv, o = this.slots.off(nodeid);
    const k = dv.getUint32(o + R_INO + 4, true) * TWO32 + dv.getUint32(o + R_INO, true);
    const e = this.byIno.get(k);
    if (e === nodeid) {
      this.byIno.delete(k);
    } else if (typeof e === 'object') {
      const i = e.indexOf(nodeid);
      if (i >= 0) e.splice(i, 1);
      if (e.length === 1) this.byIno.set(k, e[0]!);
      else if (e.length === 0) this.byIno.delete(k);
    }
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
    for (const inode of this.byNodeid) if (inode && inode.nodeid !== 1) this.remove(inode);
  }

  close(): void {
    for (const inode of this.byNodeid) if (inode && inode.fd >= 0) this.native.close(inode.fd);
    this.byKey.clear();
    this.byIno.clear();
    this.byNodeid.length = 0;
    this.slots.close();
  }

  private remove(inode: Inode): void {
    // Invalidate first (slot), then drop the caches and the keeper's copy, then close the fd.
    const lost = inode.fd < 0;
    if (!lost) this.unindex(inode.nodeid); // reads the record: before release clears it
    this.slots.release(inode.nodeid);
    this.byNodeid[inode.nodeid] = undefined;
    if (lost) return;
    this.byKey.delete(inode.key);
    if (inode.registered) this.registry.del(fdKey.inode(inode.nodeid));
    this.native.close(inode.fd);
  }

  private install(slot: number, fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number, gen: number, byHandle = true): Inode {
    const dv = this.slots.dv;
    const o = this.slots.off(slot);
    // A file handle in the record, or the keeper holds the fd, before the record becomes valid.
    const registered = !this.writeHandle(byHandle ? fd : -1, mntId, mode, o);
    if (registered) this.registry.put(fdKey.inode(slot), fd);
    dv.setUint32(o + R_GEN, gen, true);
    dv.setFloat64(o + R_NLOOKUP, 1, true);
    dv.setBigUint64(o + R_DEV, dev, true);
    dv.setBigUint64(o + R_INO, ino, true);
    dv.setBigUint64(o + R_MNT, mntId, true);
    dv.setInt32(o + R_FD, fd, true);
    dv.setUint32(o + R_MODE, mode, true);
    this.slots.publish(slot);
    this.generations[slot] = gen;
    const inode: Inode = { nodeid: slot, generation: gen, fd, dev, ino, mntId, mode, key: inodeKey(dev, ino, mntId), nlookup: 1, registered };
    this.byNodeid[slot] = inode;
    this.byKey.set(inode.key, inode);
    this.index(slot, dv.getUint32(o + R_INO, true), dv.getUint32(o + R_INO + 4, true));
    return inode;
  }

  /** Put fd's file handle in the record at o (or an empty one); true if there is one. */
  private writeHandle(fd: number, mntId: bigint, mode: number, o: number): boolean {
    const dv = this.slots.dv;
    const h = this.hbuf;
    const usable = fd >= 0 && this.handles !== null && this.handles.forInode(mntId, fd, mode) !== undefined;
    const r = usable ? this.native.nameToHandleAt(fd, '', AT_EMPTY_PATH, h) : -1;
    if (r <= HANDLE_HDR) {
      dv.setUint32(o + R_HANDLE, 0, true);
      return false;
    }
    new Uint8Array(dv.buffer, dv.byteOffset + o + R_HANDLE, r - 4).set(h.subarray(4, r));
    return true;
  }
}

function u64(lo: number, hi: number): bigint {
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}
