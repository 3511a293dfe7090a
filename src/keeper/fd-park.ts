// Keeper crashes survived under a service manager. With systemd's fd store
// (systemd.service(5) FileDescriptorStoreMax=; sd_pid_notify_with_fds(3) FDSTORE=1, FDNAME=)
// the keeper parks there every fd a successor needs: QEMU's connection, the device and state
// memfds, the ring eventfds, guest memory, the pid file lock, the share tree, the worker's
// registered fds. When the keeper is killed, the service manager keeps them open (QEMU sees
// no close) and passes them to the keeper it restarts (sd_listen_fds(3) LISTEN_FDS,
// LISTEN_FDNAMES), which resumes as after a worker crash: a new worker recovers the rings.
//
// What the fds are for is the re-exec hand-over (reexec.ts Handover), kept current in a memfd
// of the device region's layout (state/device-region.ts) named vfsd-keeper, parked itself under
// that FDNAME. The hand-over names fds by this keeper's numbers; the record adds the FDNAME of
// each, so a successor maps them onto its own. The worker's registered fds are not in it: each
// is parked under a name made from its registry key, which is all a successor needs.
//
// Order (a kill may come between any two steps): a new fd is stored before the record names it;
// a dropped one is removed after the record stopped naming it. The store keeps one copy of an
// open file description (a second FDSTORE of the same one is ignored), so the keeper itself
// finds such duplicates (kcmp(2) KCMP_FILE) and names them once; and removes a key's old fd
// before storing its new one, or another key's fd of the same description (a lock owner's,
// moved to a new key) before storing it under the new key.
//
// systemd reads notifications before it acts on the death of their sender (its notify socket's
// event source has a higher priority than SIGCHLD's), so what was sent before a kill counts.

import type { Logger } from '../log';
import { ST, STAT_SLOTS, type NativeBinding } from '../native/binding';
import { DeviceRegion } from '../state/device-region';
import { mapHandoverFds, type HandoverV2 } from './reexec';
import { validFdName, type ListenFd, type Notifier } from './systemd';

/** The FDNAME of the record's memfd (and its memfd name). */
export const KEEPER_FDNAME = 'vfsd-keeper';
const CORE_PREFIX = 'c.';
const REGISTRY_PREFIX = 'r.';

/** The record: the hand-over (without the registry) and the FDNAME of each fd it names. */
export interface ParkRecord {
  v: 1;
  handover: HandoverV2;
  /** [fd number in the keeper that wrote it, FDNAME]; aliases (one open file description under
   *  two numbers) share a name. */
  names: Array<[number, string]>;
  /** The next core name's number (names are never reused while the store may hold them). */
  next: number;
}

/** A registry key's FDNAME: fdKey's keys are ASCII, and ':' (not allowed) only separates decimals. */
export function registryFdName(key: string): string {
  return REGISTRY_PREFIX + key.replace(/:/g, '.');
}

export function registryKeyOf(name: string): string | null {
  return name.startsWith(REGISTRY_PREFIX) ? name.slice(REGISTRY_PREFIX.length).replace(/\./g, ':') : null;
}

/** A name this module makes (a leftover of ours when there is no record to go with it). */
function ours(name: string): boolean {
  return name === KEEPER_FDNAME || name.startsWith(CORE_PREFIX) || name.startsWith(REGISTRY_PREFIX);
}

interface Core { name: string; dup: number }

export class FdPark {
  /** fd number -> its name and our duplicate of it (to see a number reused by another file). */
  private readonly core = new Map<number, Core>();
  /** Registry names in the store -> the inode their fd refers to (dev:ino). */
  private readonly registry = new Map<string, string>();
  /** dev:ino -> the registry names parked with an fd of that inode (to find a duplicate description). */
  private readonly byInode = new Map<string, Set<string>>();
  private readonly st = new BigUint64Array(STAT_SLOTS);
  private next: number;
  private warnedFull = false;
  private cleared = false;

  private constructor(
    private readonly native: NativeBinding,
    private readonly log: Logger,
    private readonly notifier: Notifier,
    /** FileDescriptorStoreMax= when the service manager tells it ($FDSTORE), else unknown. */
    private readonly limit: number | undefined,
    readonly region: DeviceRegion,
    next: number,
  ) {
    this.next = next;
  }

  /** Start parking: a new record region, stored at once. */
  static create(native: NativeBinding, log: Logger, notifier: Notifier, limit: number | undefined): FdPark {
    const p = new FdPark(native, log, notifier, limit, new DeviceRegion(native, -1, KEEPER_FDNAME), 1);
    // Without kcmp every sync would take each fd for a new file, and the store refuses those.
    const k = native.kcmpFile(p.region.fd, p.region.fd);
    if (k !== 0) throw new Error(`the fd store needs kcmp(2) (KCMP_FILE): errno ${-k}`);
    const r = notifier.store(KEEPER_FDNAME, p.region.fd);
    if (r < 0) throw new Error(`cannot store fds with the service manager (${notifier.path}): errno ${-r}`);
    return p;
  }

  /**
   * Go on parking with the record region regionFd (an earlier image's, across a re-exec: its
   * fd numbers are ours; or one remapped by restore()), whose fds are in the store under the
   * names the record gives, and the registry's fds under their keys' names.
   */
  static adopt(native: NativeBinding, log: Logger, notifier: Notifier, limit: number | undefined, regionFd: number, registry: ReadonlyArray<readonly [string, number]>, names?: Map<number, string>): FdPark {
    const region = new DeviceRegion(native, regionFd, KEEPER_FDNAME);
    const rec = region.read() as ParkRecord | null;
    const p = new FdPark(native, log, notifier, limit, region, rec?.next ?? 1);
    for (const [fd, name] of names ?? rec?.names ?? []) p.track(fd, name);
    for (const [k, fd] of registry) p.index(registryFdName(k), fd);
    return p;
  }

  private track(fd: number, name: string): void {
    const dup = this.native.dup(fd);
    if (dup < 0) {
      this.log.warn({ fd, errno: -dup }, 'fd store: cannot follow a parked fd');
      return;
    }
    this.core.set(fd, { name, dup });
  }

  get count(): number { return this.core.size + this.registry.size + 1; }

  /**
   * The keeper's state changed (h: describeKeeper(..., registry false)): store what is new,
   * write the record, remove what it no longer names.
   */
  sync(h: HandoverV2): void {
    if (this.cleared) return;
    const want = new Set(h.fds.filter((fd) => fd !== this.region.fd));
    const gone = new Map<number, Core>();
    for (const [fd, c] of this.core) {
      if (!want.has(fd) || this.native.kcmpFile(fd, c.dup) !== 0) {
        gone.set(fd, c);
        this.core.delete(fd);
      }
    }
    for (const fd of want) {
      if (this.core.has(fd)) continue;
      // One open file description is stored once: under a name it already has here (an alias,
      // or the same file moved to another number), else under a new one.
      const same = [...this.core.values(), ...gone.values()].find((c) => this.native.kcmpFile(fd, c.dup) === 0);
      let name = same?.name;
      if (!name) {
        name = `${CORE_PREFIX}${this.next++}`;
        const r = this.notifier.store(name, fd);
        if (r < 0) this.log.error({ fd, name, errno: -r }, 'fd store: could not park an fd; a restarted keeper could not resume');
      }
      this.track(fd, name);
    }
    const rec: ParkRecord = { v: 1, handover: h, names: [...this.core].map(([fd, c]) => [fd, c.name]), next: this.next };
    if (!this.region.write(rec)) this.log.error('fd store: the keeper record does not fit its region; a restarted keeper would resume an older one');
    const kept = new Set([...this.core.values()].map((c) => c.name));
    for (const c of gone.values()) {
      if (!kept.has(c.name)) this.notifier.remove(c.name);
      this.native.close(c.dup);
    }
  }

  /** Registry keys were put or dropped: fd(key) is what the keeper holds under each now. */
  registryChanged(keys: readonly string[], fd: (key: string) => number | undefined): void {
    if (this.cleared) return;
    const touched = [...new Set(keys)];
    // Removals first: a key moved to another in one batch keeps its open file description,
    // which the store would refuse as a duplicate while the old name still holds it.
    for (const k of touched) this.unpark(registryFdName(k));
    for (const k of touched) {
      const f = fd(k);
      if (f === undefined) continue;
      const name = registryFdName(k);
      if (!validFdName(name)) continue;
      if (this.limit !== undefined && this.count >= this.limit) {
        if (!this.warnedFull) this.log.warn({ limit: this.limit }, 'fd store full (FileDescriptorStoreMax=): files opened from now on are re-opened from their records after a keeper restart; locks and inodes without file handles would be lost');
        this.warnedFull = true;
        continue;
      }
      const inode = this.native.statFd(f, this.st) === 0 ? `${this.st[ST.dev]}:${this.st[ST.ino]}` : '';
      // The same open file description parked under another key (a lock owner's fd moves to the
      // key naming the locking pid, and the old key's del may come in a later batch): the store
      // would refuse it, so it moves to the new name; the old key comes back without it.
      for (const other of this.byInode.get(inode) ?? []) {
        const of = fd(registryKeyOf(other)!);
        if (of !== undefined && this.native.kcmpFile(of, f) === 0) this.unpark(other);
      }
      const r = this.notifier.store(name, f);
      if (r < 0) {
        this.log.warn({ key: k, errno: -r }, 'fd store: could not park a registered fd');
        continue;
      }
      this.index(name, f, inode);
    }
  }

  /** name is parked with fd: remember it, and under its inode. */
  private index(name: string, fd: number, inode = this.native.statFd(fd, this.st) === 0 ? `${this.st[ST.dev]}:${this.st[ST.ino]}` : ''): void {
    this.registry.set(name, inode);
    if (!inode) return;
    let set = this.byInode.get(inode);
    if (!set) this.byInode.set(inode, (set = new Set()));
    set.add(name);
  }

  private unpark(name: string): void {
    const inode = this.registry.get(name);
    if (inode === undefined) return;
    this.registry.delete(name);
    const set = this.byInode.get(inode);
    set?.delete(name);
    if (set?.size === 0) this.byInode.delete(inode);
    this.notifier.remove(name);
  }

  /** A clean stop: nothing is left for a successor (FDSTOREREMOVE=1 of every name, the record first). */
  clear(): void {
    if (this.cleared) return;
    this.cleared = true;
    this.notifier.remove(KEEPER_FDNAME);
    for (const name of new Set([...this.core.values()].map((c) => c.name))) this.notifier.remove(name);
    for (const name of this.registry.keys()) this.notifier.remove(name);
    for (const c of this.core.values()) this.native.close(c.dup);
    this.core.clear();
    this.registry.clear();
    this.byInode.clear();
  }
}

/** What a keeper restarted by its service manager resumes from. */
export interface Restored {
  /** The hand-over, in our fd numbers, its registry filled from the store. */
  handover: HandoverV2;
  /** Our fd number -> its FDNAME, for FdPark.adopt. */
  names: Map<number, string>;
  /** An fd number of the keeper that wrote the record -> ours (for the device state's). */
  remap(fd: number): number;
}

/**
 * The fds the service manager passed (takeListenFds): the record and what it names, remapped
 * to our fd numbers, or null when no record was passed (a fresh start: our leftovers are
 * closed). The rest (a socket unit's listening sockets) is left in `others`. Throws when the
 * record names an fd the store did not give back.
 */
export function restore(native: NativeBinding, log: Logger, passed: ListenFd[], others: ListenFd[]): Restored | null {
  const byName = new Map<string, number>();
  for (const p of passed) {
    if (!ours(p.name)) { others.push(p); continue; }
    if (byName.has(p.name)) { native.close(p.fd); continue; }
    byName.set(p.name, p.fd);
  }
  const regionFd = byName.get(KEEPER_FDNAME);
  if (regionFd === undefined) {
    if (byName.size > 0) log.warn({ fds: byName.size }, 'fd store: fds of ours without a keeper record; closing them');
    for (const fd of byName.values()) native.close(fd);
    return null;
  }
  const rec = new DeviceRegion(native, regionFd, KEEPER_FDNAME).read() as ParkRecord | null;
  if (!rec) {
    // Killed before it had a connection to describe: a fresh start.
    log.warn('fd store: an empty keeper record; starting afresh');
    for (const fd of byName.values()) native.close(fd);
    return null;
  }
  if (rec.v !== 1) throw new Error(`fd store: a keeper record of version ${String(rec.v)}; this keeper reads version 1`);
  // Old number -> ours. A name given to two numbers (one open file description) gets a
  // duplicate for the second: the code closes each number on its own.
  const map = new Map<number, number>();
  const names = new Map<number, string>();
  const used = new Set<string>();
  const missing: string[] = [];
  for (const [old, name] of rec.names) {
    const fd = byName.get(name);
    if (fd === undefined) { missing.push(name); continue; }
    const mine = used.has(name) ? native.dup(fd) : fd;
    if (mine < 0) throw new Error(`fd store: dup: errno ${-mine}`);
    used.add(name);
    map.set(old, mine);
    names.set(mine, name);
  }
  map.set(rec.handover.parkFd ?? -1, regionFd);
  if (missing.length > 0) throw new Error(`fd store: the keeper record names fds the service manager did not pass back: ${missing.join(', ')}`);
  const remap = (fd: number): number => {
    const m = map.get(fd);
    if (m === undefined) throw new Error(`fd store: the keeper record uses fd ${fd} without naming it`);
    return m;
  };
  const h = mapHandoverFds(rec.handover, remap);
  h.parkFd = regionFd;
  for (const [name, fd] of byName) {
    const key = registryKeyOf(name);
    if (key === null) {
      if (name !== KEEPER_FDNAME && !used.has(name)) native.close(fd);
      continue;
    }
    h.plane.fds.push([key, fd]);
    h.fds.push(fd);
  }
  return { handover: h, names, remap };
}
