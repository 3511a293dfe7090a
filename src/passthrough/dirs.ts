// Open directories: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR.
//
// A directory handle is an fd the stream is read from with getdents64(2). The offsets the guest
// sends back are the d_off cookies of earlier entries (opaque: ext4 uses 64-bit hashes). Each
// handle keeps where its stream stands and the entries read but not yet sent (dir-stream.ts), so
// consecutive READDIRs continue without a seek or a re-read and a READDIR costs the entries it
// returns; one at another offset seeks. READDIRPLUS looks each entry up as LOOKUP does (one guest
// reference each), except "." and "..", which get node id 0.

import type { Ctx, DirSink, OpenResult } from '../fuse/filesystem';
import { FOPEN, SIZE } from '../fuse/abi';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import type { BudgetKind } from './budget';
import type { Handle } from './handle-table';
import type { Share } from './share';
import { DIRENT64, DirStream, DirStreams, recoveredStream } from './dir-stream';

const HANDLE: readonly BudgetKind[] = ['handles'];

export class Dirs {
  private readonly streamOf = new WeakMap<Handle, DirStream>();
  readonly streams: DirStreams;

  /** cacheDir: the guest may keep directory contents cached (--cache=always, FOPEN_CACHE_DIR). */
  constructor(private readonly share: Share, private readonly cacheDir: boolean, streams?: DirStreams) {
    this.streams = streams ?? new DirStreams(share.native);
  }

  opendir(_ctx: Ctx, nodeid: number, _flags: number): OpenResult | number {
    const s = this.share;
    const ino = s.inodes.get(nodeid);
    if (!ino) return -E.EBADF;
    if (!s.budget.fits(HANDLE)) return s.budget.refuse(HANDLE);
    const fd = s.reopen(ino, K.O_RDONLY | K.O_DIRECTORY);
    if (fd < 0) return fd;
    const h = s.dirs.add(nodeid, fd, K.O_RDONLY);
    this.streamOf.set(h, new DirStream(0n));
    return { fh: h.fh, openFlags: this.cacheDir ? FOPEN.CACHE_DIR : 0 };
  }

  readdir(_ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): number {
    const s = this.share;
    const h = s.dirs.get(fh);
    if (!h) return -E.EBADF;
    const dir = s.inodes.get(h.nodeid);
    if (!dir) return -E.EBADF;
    let ds = this.streamOf.get(h);
    if (!ds) {
      // A handle a new worker took over: where its fd stands is not known.
      ds = recoveredStream();
      this.streamOf.set(h, ds);
    }
    const streams = this.streams;
    const r = streams.seek(ds, h.fd, offset);
    if (r < 0) return r;
    let sent = 0;
    for (;;) {
      const len = streams.fill(ds, h.fd);
      // An error after some entries: send those; the next READDIR meets the error again.
      if (len < 0) return sent > 0 ? 0 : len;
      if (len === 0) break;
      const buf = ds.bytes!, dv = ds.dv!;
      while (ds.start < ds.end) {
        const o = ds.start;
        const ino = dv.getBigUint64(o + DIRENT64.ino, true);
        const next = BigInt.asUintN(64, dv.getBigInt64(o + DIRENT64.off, true));
        const reclen = dv.getUint16(o + DIRENT64.reclen, true);
        const type = dv.getUint8(o + DIRENT64.type);
        let end = buf.indexOf(0, o + DIRENT64.name);
        if (end < 0 || end > o + reclen) end = o + reclen;
        const name = buf.subarray(o + DIRENT64.name, end);
        let ok: boolean;
        if (!plus) {
          ok = sink.add(ino, next, type, name);
        } else if (!fitsPlus(sink, name.length)) {
          ok = false;
        } else if (isDots(name)) {
          ok = sink.addPlus(null, null, ino, next, type, name);
        } else {
          const e = s.lookupName(dir, Buffer.from(name).toString('latin1'), st);
          ok = typeof e === 'number' ? sink.addPlus(null, null, ino, next, type, name) : sink.addPlus(e, st, ino, next, type, name);
        }
        if (!ok) {
          // This entry does not fit: it stays kept for the READDIR that continues here.
          streams.settle(ds);
          return 0;
        }
        ds.take(reclen, next);
        sent++;
      }
    }
    streams.settle(ds);
    return 0;
  }

  releasedir(_ctx: Ctx, fh: number): number {
    const h = this.share.dirs.get(fh);
    if (!h) return -E.EBADF;
    const ds = this.streamOf.get(h);
    if (ds) this.streams.drop(ds);
    this.share.dirs.remove(h);
    return 0;
  }

  fsyncdir(_ctx: Ctx, fh: number, datasync: boolean): number {
    const h = this.share.dirs.get(fh);
    if (!h) return -E.EBADF;
    return this.share.native.fsync(h.fd, datasync);
  }
}

/** Does a READDIRPLUS entry with a name this long fit (fuse_direntplus, padded to 8 bytes)? A
 *  lookup is only done for an entry that fits: it takes a guest reference. */
function fitsPlus(sink: DirSink, nameLen: number): boolean {
  return ((SIZE.direntplus + nameLen + 7) & ~7) <= sink.room;
}

const DOT = 0x2e;

function isDots(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === DOT) || (name.length === 2 && name[0] === DOT && name[1] === DOT);
}
