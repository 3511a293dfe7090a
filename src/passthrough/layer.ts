// Layers of the passthrough. What a session serves is a stack: the host file system at the
// bottom (HostFs in passthrough-fs.ts), and above it one layer per feature that changes what the
// guest sees, each a FileSystem over the one below: --readonly (read-only.ts) today, ID mapping
// or xattr name mapping tomorrow. passthrough-fs.ts stacks them (layers()).
//
// A new layer extends ForwardingFs and overrides only the ops it changes; everything else goes
// down unchanged. The replay probes and range I/O go down the stack too, so a layer that changes
// an op changes its probe or range form with it (one mapping xattr names maps hasXattr as well;
// one refusing WRITE refuses writeRanges as well).
//
// A layer answers with -errno and never throws, decides in the synchronous stretch of the call
// (fuse/session.ts replies with what the op returns), and keeps no state that must survive a
// worker restart: only the maps in shared memory do.

import type {
  Ctx, DirSink, EntryResult, FileLock, FileSystem, InitReply, InitRequest, OpenResult, SetattrArgs,
} from '../fuse/filesystem';
import type { ReplayProbes } from '../fuse/replay';
import type { RangeIo } from '../fuse/ops';

/** What each layer serves: the op table's file system, its replay probes, its range I/O. */
export type FsLayer = FileSystem & ReplayProbes & RangeIo;

type Created = { entry: EntryResult; open: OpenResult } | number;

/** A layer that changes nothing: every op goes to `inner`. The base of every other layer. */
export class ForwardingFs implements FsLayer {
  constructor(protected readonly inner: FsLayer) {}

  get entryTimeout(): number { return this.inner.entryTimeout; }
  get attrTimeout(): number { return this.inner.attrTimeout; }

  init(req: InitRequest): InitReply | number { return this.inner.init(req); }
  destroy(): void { this.inner.destroy(); }

  lookup(ctx: Ctx, parent: number, name: string, st: BigUint64Array): EntryResult | number {
    return this.inner.lookup(ctx, parent, name, st);
  }
  forget(nodeid: number, nlookup: number): void { this.inner.forget(nodeid, nlookup); }
  getattr(ctx: Ctx, nodeid: number, fh: number | null, st: BigUint64Array): number {
    return this.inner.getattr(ctx, nodeid, fh, st);
  }
  setattr(ctx: Ctx, nodeid: number, a: SetattrArgs, st: BigUint64Array): number {
    return this.inner.setattr(ctx, nodeid, a, st);
  }
  readlink(ctx: Ctx, nodeid: number, buf: Uint8Array): number { return this.inner.readlink(ctx, nodeid, buf); }
  symlink(ctx: Ctx, parent: number, name: string, target: string, st: BigUint64Array): EntryResult | number {
    return this.inner.symlink(ctx, parent, name, target, st);
  }
  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number, umask: number, st: BigUint64Array): EntryResult | number {
    return this.inner.mknod(ctx, parent, name, mode, rdev, umask, st);
  }
  mkdir(ctx: Ctx, parent: number, name: string, mode: number, umask: number, st: BigUint64Array): EntryResult | number {
    return this.inner.mkdir(ctx, parent, name, mode, umask, st);
  }
  unlink(ctx: Ctx, parent: number, name: string): number { return this.inner.unlink(ctx, parent, name); }
  rmdir(ctx: Ctx, parent: number, name: string): number { return this.inner.rmdir(ctx, parent, name); }
  rename(ctx: Ctx, parent: number, name: string, newParent: number, newName: string, flags: number): number {
    return this.inner.rename(ctx, parent, name, newParent, newName, flags);
  }
  link(ctx: Ctx, nodeid: number, newParent: number, newName: string, st: BigUint64Array): EntryResult | number {
    return this.inner.link(ctx, nodeid, newParent, newName, st);
  }
  open(ctx: Ctx, nodeid: number, flags: number): OpenResult | number { return this.inner.open(ctx, nodeid, flags); }
  create(ctx: Ctx, parent: number, name: string, flags: number, mode: number, umask: number, st: BigUint64Array): Created {
    return this.inner.create(ctx, parent, name, flags, mode, umask, st);
  }
  tmpfile(ctx: Ctx, parent: number, flags: number, mode: number, umask: number, st: BigUint64Array): Created {
    return this.inner.tmpfile(ctx, parent, flags, mode, umask, st);
  }
  read(ctx: Ctx, fh: number, offset: number, dst: Uint8Array[], cb: (r: number) => void): void {
    this.inner.read(ctx, fh, offset, dst, cb);
  }
  readRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, cb: (r: number) => void): void {
    this.inner.readRanges(ctx, fh, offset, win, iov, count, cb);
  }
  write(ctx: Ctx, fh: number, offset: number, src: Uint8Array[], writeFlags: number, cb: (r: number) => void): void {
    this.inner.write(ctx, fh, offset, src, writeFlags, cb);
  }
  writeRanges(ctx: Ctx, fh: number, offset: number, win: Uint8Array, iov: Float64Array, count: number, writeFlags: number, cb: (r: number) => void): void {
    this.inner.writeRanges(ctx, fh, offset, win, iov, count, writeFlags, cb);
  }
  statfs(ctx: Ctx, nodeid: number, out: BigUint64Array): number { return this.inner.statfs(ctx, nodeid, out); }
  release(ctx: Ctx, fh: number, flags: number, releaseFlags: number, lockOwner: bigint): number {
    return this.inner.release(ctx, fh, flags, releaseFlags, lockOwner);
  }
  flush(ctx: Ctx, nodeid: number, fh: number, lockOwner: bigint): number { return this.inner.flush(ctx, nodeid, fh, lockOwner); }
  fsync(ctx: Ctx, fh: number, datasync: boolean, cb: (r: number) => void): void { this.inner.fsync(ctx, fh, datasync, cb); }
  setxattr(ctx: Ctx, nodeid: number, name: string, value: Uint8Array, flags: number): number {
    return this.inner.setxattr(ctx, nodeid, name, value, flags);
  }
  getxattr(ctx: Ctx, nodeid: number, name: string, buf: Uint8Array): number { return this.inner.getxattr(ctx, nodeid, name, buf); }
  listxattr(ctx: Ctx, nodeid: number, buf: Uint8Array): number { return this.inner.listxattr(ctx, nodeid, buf); }
  removexattr(ctx: Ctx, nodeid: number, name: string): number { return this.inner.removexattr(ctx, nodeid, name); }
  opendir(ctx: Ctx, nodeid: number, flags: number): OpenResult | number { return this.inner.opendir(ctx, nodeid, flags); }
  readdir(ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): number {
    return this.inner.readdir(ctx, fh, offset, plus, sink, st);
  }
  releasedir(ctx: Ctx, fh: number): number { return this.inner.releasedir(ctx, fh); }
  fsyncdir(ctx: Ctx, fh: number, datasync: boolean): number { return this.inner.fsyncdir(ctx, fh, datasync); }
  getlk(ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock): FileLock | number {
    return this.inner.getlk(ctx, nodeid, fh, owner, lk);
  }
  setlk(ctx: Ctx, nodeid: number, fh: number, owner: bigint, lk: FileLock, flock: boolean, sleep: boolean, cb: (r: number) => void): void {
    this.inner.setlk(ctx, nodeid, fh, owner, lk, flock, sleep, cb);
  }
  access(ctx: Ctx, nodeid: number, mask: number): number { return this.inner.access(ctx, nodeid, mask); }
  fallocate(ctx: Ctx, fh: number, mode: number, offset: number, length: number): number {
    return this.inner.fallocate(ctx, fh, mode, offset, length);
  }
  lseek(ctx: Ctx, fh: number, offset: number, whence: number): number { return this.inner.lseek(ctx, fh, offset, whence); }
  copyFileRange(ctx: Ctx, fhIn: number, offIn: number, fhOut: number, offOut: number, len: number, flags: number): number {
    return this.inner.copyFileRange(ctx, fhIn, offIn, fhOut, offOut, len, flags);
  }
  syncfs(ctx: Ctx, nodeid: number): number { return this.inner.syncfs(ctx, nodeid); }

  // Replay probes (fuse/replay.ts): what a non-idempotent op will find, asked before it runs.
  nameIno(ctx: Ctx, parent: number, name: string): number { return this.inner.nameIno(ctx, parent, name); }
  hasXattr(ctx: Ctx, nodeid: number, name: string): boolean { return this.inner.hasXattr(ctx, nodeid, name); }
  lookupCount(nodeid: number): number { return this.inner.lookupCount(nodeid); }
  appendSize(fh: number): number { return this.inner.appendSize(fh); }
}
