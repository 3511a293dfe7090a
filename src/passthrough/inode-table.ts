// The inode map: FUSE node id <-> host inode. A node id is the index of the inode's slot in a
// shared-memory SlotTable (node id 1 = the shared directory's root), and the generation in
// the slot tells a reused slot from the old one (the guest sees (nodeid, generation) pairs).
// Identity is (st_dev, st_ino, mnt_id), so one host file never gets two node ids (Hanna Reitz,
// "Re: [PATCH v3 08/10] virtiofsd: Add inodes_by_handle hash table", qemu-devel, 2021-08-10).
// An inode is held one of two ways. By file handle (name_to_handle_at, kept in the record) when
// its mount gives handles that open again: then it costs its record and no fd; the ops take an
// O_PATH fd from a bounded cache that opens the handle on a miss (inode-fds.ts, fd()), and a
// restarted worker gets it back from the same handle. Otherwise by an O_PATH fd it keeps for its
// life, whose duplicate the keeper gets before the record is published. nlookup counts the
// guest's references (LOOKUP, CREATE, READDIRPLUS, ... add one; FORGET subtracts); at zero the
// slot is freed and the fd closed.
//
// Without a held fd the host may delete an inode the guest still knows and give its number to a
// new file; the handle tells them apart (it carries the inode's generation), so a LOOKUP that
// finds a known (dev, ino, mnt_id) whose fd is not cached compares handles, and a mismatch makes
// the old node lost (see recover) and the new file a new node.
// All methods are synchronous: decide and mutate in one stretch (state read before an await may
// be stale after it: Kevin Wolf, "qcow2: Bring synchronous read/write back to life", qemu-devel, 2009-10-08).

import { ST, type NativeBinding } from '../native/binding';
import { SlotTable, type SlotBacking } from '../state/slot-table';
import { NO_FD_REGISTRY, fdKey, type FdRegistry } from '../state/fd-registry';
import type { MountFds } from './mount-fds';
import { InodeFds, INODE_FD_CACHE_MAX } from './inode-fds';
import { AT_EMPTY_PATH, E, O_CLOEXEC, O_NOFOLLOW, O_PATH, S_IFMT } from '../linux/constants';

/**
 * An inode record (bytes): state i32 | generation u32 | nlookup f64 | dev u64 | ino u64 |
 * mnt_id u64 | fd i32 | mode u32 | handle: handle_len u32 | handle_type i32 | bytes[maxHandle]
 * (nameToHandleAt's output without its mount id). fd is the held fd, -1 for an inode held by
 * handle (informational: fd numbers mean nothing to another process). The slot table's kind is
 * `kind`. 128 bytes: the handles of ext4, xfs, btrfs and tmpfs take 8 to 20 bytes (a parentless
 * handle, as name_to_handle_at(2) makes without AT_HANDLE_FID); one longer than maxHandle (an
 * overlayfs handle may be) is not kept, and its inode is held by fd.
 */
export const INODE_LAYOUT = {
  record: 128, kind: 1, gen: 4, nlookup: 8, dev: 16, ino: 24, mnt: 32, fd: 40, mode: 44, handle: 48, maxHandle: 72,
} as const;
/**
 * The record of the releases before 128-byte records: the same fields, room for MAX_HANDLE_SZ
 * (128) handle bytes. A table an earlier worker made in it (a running daemon upgraded in place:
 * its keeper keeps the region for the VM's life) is adopted and used in it (layoutOf).
 */
export const INODE_LAYOUT_V1 = { ...INODE_LAYOUT, record: 192, maxHandle: 128 } as const;
export type InodeLayout = typeof INODE_LAYOUT | typeof INODE_LAYOUT_V1;
/** The layout of an inode table whose header says records of recordSize bytes (undefined: none of ours). */
export function inodeLayoutOf(recordSize: number): InodeLayout | undefined {
  return [INODE_LAYOUT, INODE_LAYOUT_V1].find((l) => l.record === recordSize);
}
export const INODE_RECORD = INODE_LAYOUT.record;
export const INODE_TABLE_KIND = INODE_LAYOUT.kind;
const { gen: R_GEN, nlookup: R_NLOOKUP, dev: R_DEV, ino: R_INO, mnt: R_MNT, fd: R_FD, mode: R_MODE, handle: R_HANDLE } = INODE_LAYOUT;
/** nameToHandleAt's output: u32 mount_id | u32 handle_bytes | i32 handle_type | bytes (MAX_HANDLE_SZ 128). */
const HANDLE_HDR = 12, HANDLE_BUF = HANDLE_HDR + 128;

/** Where file handles are made and opened: the mounts they work on (see mount-fds.ts). */
export type InodeHandles = Pick<MountFds, 'get' | 'forInode'>;

export interface Inode {
  readonly nodeid: number;
  readonly generation: number;
  /**
   * The O_PATH | O_NOFOLLOW fd the inode holds for its life, or -1: held by file handle (an op
   * takes an fd with InodeTable.fd) or lost. Changes only when revive() gives it one.
   */
  fd: number;
  readonly dev: bigint;
  readonly ino: bigint;
  readonly mntId: bigint;
  mode: number;                 // S_IFMT bits are what matter; permission bits may be stale
  readonly key: string;
  nlookup: number;
  /** The keeper holds a duplicate of fd (the inode has no usable file handle). */
  registered: boolean;
  /** No way back to the host inode (see recover): out of the identity index; ops fail with EBADF. */
  lost: boolean;
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
  private readonly hbuf = new Uint8Array(HANDLE_BUF);
  private readonly hbuf2 = new Uint8Array(HANDLE_BUF);
  private readonly st = new BigUint64Array(17);
  /** The record layout of this table (INODE_LAYOUT, or an adopted INODE_LAYOUT_V1 table's). */
  readonly layout: InodeLayout;
  /** O_PATH fds of the inodes held by handle, opened on demand. */
  private readonly cache: InodeFds;
  /** Inodes holding an fd for life (by fd, or revived). */
  private held = 0;
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
   * fdCacheLimit: how many fds of inodes held by handle stay open (inode-fds.ts).
   */
  constructor(
    private readonly native: NativeBinding,
    backing: SlotBacking,
    private readonly registry: FdRegistry = NO_FD_REGISTRY,
    recovered?: Map<string, number>,
    private readonly handles: InodeHandles | null = null,
    maxInodes = Number.MAX_SAFE_INTEGER / 4,
    fdCacheLimit = INODE_FD_CACHE_MAX,
  ) {
    const existing = SlotTable.recordSizeOf(backing);
    // Another size is refused by the slot table's own check, with its message.
    this.layout = (existing !== undefined ? inodeLayoutOf(existing) : undefined) ?? INODE_LAYOUT;
    this.cache = new InodeFds(native, fdCacheLimit);
    // Slots 0 (invalid node id) and 1 (root) are never handed out by alloc().
    this.slots = new SlotTable(backing, this.layout.record, 1024, INODE_TABLE_KIND, 2, 2 * maxInodes + 2);
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
        // ever be opened (see PassthroughFs).
        mode = Number(this.st[ST.mode]);
        dv.setUint32(o + R_MODE, mode, true);
      }
      // Held by handle: the fd that proved the record goes to the cache, not to the inode.
      const byHandle = fd >= 0 && !reg;
      const inode: Inode = {
        nodeid: slot, generation: gen, fd: byHandle ? -1 : fd, dev, ino, mntId, mode,
        key: inodeKey(dev, ino, mntId), nlookup: dv.getFloat64(o + R_NLOOKUP, true), registered: reg, lost: fd < 0,
      };
      this.byNodeid[slot] = inode;
      if (fd < 0) {
        // Gone from the host (deleted while no process held it) or no way back to it. The guest
        // still holds the node id: keep the slot until it forgets it, so the id is not reused
        // under it, but out of the identity index; every op on it fails with EBADF.
        this.lost++;
        continue;
      }
      if (byHandle) this.cache.put(slot, fd, false);
      else this.held++;
      dv.setInt32(o + R_FD, inode.fd, true);
      this.byKey.set(inode.key, inode);
      this.index(slot, dv.getUint32(o + R_INO, true), dv.getUint32(o + R_INO + 4, true));
    }
  }

  /**
   * Is the record at o unfit to adopt with fd? The image was written by an earlier worker, one a
   * guest may have taken over: the fd (the keeper's, or opened by the handle) must be the inode
   * the record names, with the recorded file type, and no earlier record may name it (one host
   * inode, one node id, as in the thread cited above); nlookup must be a count.
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
   * Give a node whose handle no longer opens its inode back through fd (O_PATH, consumed), opened
   * from an open file or directory the guest holds on it: a file deleted (on the host, or its last
   * link by the guest), or a directory removed, no longer opens by handle but lives on in those.
   * The node may be lost (see recover) or held by a handle that has just failed (Share.fdOf). From
   * now on it holds fd for life, and the keeper gets a duplicate (the handle is of no use any
   * more). False (fd closed) if fd is not the recorded inode.
   */
  revive(nodeid: number, fd: number): boolean {
    const inode = this.byNodeid[nodeid];
    const st = this.st;
    const other = inode && this.byKey.get(inode.key);
    if (!inode || inode.fd >= 0 || this.refusedNodes.has(nodeid) || this.native.statFd(fd, st) < 0 || st[0] !== inode.dev || st[1] !== inode.ino ||
      (other !== undefined && other !== inode)) {
      this.native.close(fd);
      return false;
    }
    this.registry.put(fdKey.inode(nodeid), fd);
    this.cache.drop(nodeid);
    // The type, as in recover(), from the inode.
    inode.fd = fd;
    inode.registered = true;
    inode.mode = Number(st[ST.mode]);
    this.held++;
    const dv = this.slots.dv, o = this.slots.off(nodeid);
    dv.setInt32(o + R_FD, fd, true);
    dv.setUint32(o + R_MODE, inode.mode, true);
    if (!inode.lost) return true;
    inode.lost = false;
    this.byKey.set(inode.key, inode);
    this.index(nodeid, dv.getUint32(o + R_INO, true), dv.getUint32(o + R_INO + 4, true));
    this.lost--;
    return true;
  }

  /**
   * An O_PATH fd of ino for the op in hand, or -errno: its own fd, else the cached one, else its
   * handle opened again (ESTALE or ENOENT: the inode is gone, or lives on only in open files; see
   * Share.fdOf). Valid for the op in hand (inode-fds.ts: pinned until INODE_FD_PINS more are
   * taken): take it again after an await, never keep it.
   */
  fd(ino: Inode): number {
    if (ino.fd >= 0) return ino.fd;
    // Lost, or a stale object of a node the guest forgot (its slot may hold another inode now).
    if (ino.lost || this.byNodeid[ino.nodeid] !== ino) return -E.EBADF;
    const cached = this.cache.get(ino.nodeid);
    if (cached !== undefined) return cached;
    const fd = this.openHandle(this.slots.off(ino.nodeid));
    if (fd < 0) return fd;
    this.cache.put(ino.nodeid, fd, true);
    return fd;
  }

  /** Open the inode of the record at o by its file handle; -errno if it has none or it is gone. */
  private openHandle(o: number): number {
    const dv = this.slots.dv;
    const len = dv.getUint32(o + R_HANDLE, true);
    // No handle (and the keeper has no fd: cannot happen, the put precedes the publish), or a
    // length no handle has.
    const mountFd = this.handles?.get(dv.getBigUint64(o + R_MNT, true));
    if (mountFd === undefined || len === 0) return -E.EBADF;
    if (len > this.layout.maxHandle) return -E.EINVAL;
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
  /** Fds the inodes hold now: their own (held by fd) and the cache's (held by handle). */
  get fdCount(): number { return this.held + this.cache.size; }
  /** Fds inodes hold at the most: their own, and the cache's bound. */
  get fdReserve(): number { return this.held + (this.handles ? this.cache.limit : 0); }
  /** The cache of the fds of inodes held by handle (its bound, size and misses). */
  get fdCache(): Pick<InodeFds, 'limit' | 'size' | 'misses'> { return this.cache; }
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
    if (known && known.fd >= 0) {
      if (known.fd !== fd) this.native.close(fd);
      this.addRef(known, 1);
      return known;
    }
    if (known && this.cache.has(known.nodeid)) {
      // The cached fd pins the inode, so it cannot be another one (and an op may be using it).
      if (this.cache.get(known.nodeid, false) !== fd) this.native.close(fd);
      this.addRef(known, 1);
      return known;
    }
    if (known && this.sameHandle(known, fd)) {
      // Kept: it saves the next op an open.
      this.cache.put(known.nodeid, fd, false);
      this.addRef(known, 1);
      return known;
    }
    // Known by number only: the host deleted that inode and gave its number to this one.
    if (known) this.supersede(known);
    const dev = u64(st32[W_DEV]!, st32[W_DEV + 1]!), ino = u64(st32[W_INO]!, st32[W_INO + 1]!), mntId = u64(st32[W_MNT]!, st32[W_MNT + 1]!);
    const slot = this.slots.alloc();
    const gen = (this.generations[slot] ?? 0) + 1;
    return this.install(slot, fd, dev, ino, mntId, mode, gen);
  }

  /**
   * Is fd's inode the one ino's handle names? Only asked when no fd pins ino's inode. A handle
   * that cannot be made now is taken as the same (the number and mount matched).
   */
  private sameHandle(ino: Inode, fd: number): boolean {
    const h = this.hbuf2;
    const r = this.native.nameToHandleAt(fd, '', AT_EMPTY_PATH, h);
    if (r <= HANDLE_HDR) return true;
    const dv = this.slots.dv, o = this.slots.off(ino.nodeid);
    const len = dv.getUint32(o + R_HANDLE, true);
    if (len !== r - HANDLE_HDR || len > this.layout.maxHandle) return false;
    const rec = new Uint8Array(dv.buffer, dv.byteOffset + o + R_HANDLE, 8 + len);
    for (let i = 0; i < rec.length; i++) if (rec[i] !== h[4 + i]) return false;
    return true;
  }

  /** ino's inode is gone from the host: the node stays until the guest forgets it, lost. */
  private supersede(ino: Inode): void {
    this.unindex(ino.nodeid);
    this.byKey.delete(ino.key);
    this.cache.drop(ino.nodeid);
    ino.lost = true;
    // No open file can hold it (one would pin the number): nothing to revive it from.
    this.refusedNodes.add(ino.nodeid);
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
    this.cache.close();
    this.byKey.clear();
    this.byIno.clear();
    this.byNodeid.length = 0;
    this.slots.close();
  }

  private remove(inode: Inode): void {
    // Invalidate first (slot), then drop the caches and the keeper's copy, then close the fd.
    const lost = inode.lost;
    if (!lost) this.unindex(inode.nodeid); // reads the record: before release clears it
    this.slots.release(inode.nodeid);
    this.byNodeid[inode.nodeid] = undefined;
    this.refusedNodes.delete(inode.nodeid);
    if (lost) return;
    this.byKey.delete(inode.key);
    if (inode.fd < 0) {
      this.cache.drop(inode.nodeid);
      return;
    }
    if (inode.registered) this.registry.del(fdKey.inode(inode.nodeid));
    this.native.close(inode.fd);
    this.held--;
  }

  private install(slot: number, fd: number, dev: bigint, ino: bigint, mntId: bigint, mode: number, gen: number, byHandle = true): Inode {
    const dv = this.slots.dv;
    const o = this.slots.off(slot);
    // A file handle in the record, or the keeper holds the fd, before the record becomes valid.
    const registered = !this.writeHandle(byHandle ? fd : -1, mntId, mode, o);
    if (registered) this.registry.put(fdKey.inode(slot), fd);
    const own = registered ? fd : -1;
    dv.setUint32(o + R_GEN, gen, true);
    dv.setFloat64(o + R_NLOOKUP, 1, true);
    dv.setBigUint64(o + R_DEV, dev, true);
    dv.setBigUint64(o + R_INO, ino, true);
    dv.setBigUint64(o + R_MNT, mntId, true);
    dv.setInt32(o + R_FD, own, true);
    dv.setUint32(o + R_MODE, mode, true);
    this.slots.publish(slot);
    this.generations[slot] = gen;
    // Held by handle: the fd is the cache's from now on (it may close it at once).
    if (registered) this.held++;
    else this.cache.put(slot, fd, false);
    const inode: Inode = { nodeid: slot, generation: gen, fd: own, dev, ino, mntId, mode, key: inodeKey(dev, ino, mntId), nlookup: 1, registered, lost: false };
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
    // A handle longer than the record holds: the inode is held by fd instead.
    if (r <= HANDLE_HDR || r - HANDLE_HDR > this.layout.maxHandle) {
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
