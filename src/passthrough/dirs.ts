// Open directories: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR.
//
// A directory handle is an fd the stream is read from with getdents64(2). The offsets the guest
// sends back are the d_off cookies of earlier entries (opaque: ext4 uses 64-bit hashes), so a
// READDIR that does not start where the stream is seeks to it first; one whose last entry does
// not fit in the reply leaves the stream just before that entry. READDIRPLUS looks each entry up
// as LOOKUP does (one guest reference each), except "." and "..", which get node id 0.

import type { Ctx, DirSink, OpenResult } from '../fuse/filesystem';
import { FOPEN, SIZE } from '../fuse/abi';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import type { BudgetKind } from './budget';
import type { Share } from './share';

/** getdents64 reads up to this much at a time. */
const DIRENT_BUF = 64 * 1024;
const HANDLE: readonly BudgetKind[] = ['handles'];
// struct linux_dirent64 (getdents64(2)): d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name.
const D_OFF = 8, D_RECLEN = 16, D_TYPE = 18, D_NAME = 19;

export class Dirs {
  private readonly buf = new Uint8Array(DIRENT_BUF);
  private readonly dv = new DataView(this.buf.buffer);

  /** cacheDir: the guest may keep directory contents cached (--cache=always, FOPEN_CACHE_DIR). */
  constructor(private readonly share: Share, private readonly cacheDir: boolean) {}

  opendir(_ctx: Ctx, nodeid: number, _flags: number): OpenResult | number {
    const s = this.share;
    const ino = s.inodes.get(nodeid);
    if (!ino) return -E.EBADF;
    if (!s.budget.fits(HANDLE)) return s.budget.refuse(HANDLE);
    const fd = s.reopen(ino, K.O_RDONLY | K.O_DIRECTORY);
    if (fd < 0) return fd;
    const h = s.dirs.add(nodeid, fd, K.O_RDONLY);
    return { fh: h.fh, openFlags: this.cacheDir ? FOPEN.CACHE_DIR : 0 };
  }

  readdir(_ctx: Ctx, fh: number, offset: bigint, plus: boolean, sink: DirSink, st: BigUint64Array): number {
    const s = this.share;
    const h = s.dirs.get(fh);
    if (!h) return -E.EBADF;
    const dir = s.inodes.get(h.nodeid);
    if (!dir) return -E.EBADF;
    const n = s.native;
    if (h.dirOffset !== offset) {
      const r = n.seekDir(h.fd, offset);
      if (r < 0) return r;
    }
    let pos = offset;
    const buf = this.buf, dv = this.dv;
    for (;;) {
      const len = n.getdents64(h.fd, buf);
      if (len < 0) return len;
      if (len === 0) break;
      for (let o = 0; o < len;) {
        const ino = dv.getBigUint64(o, true);
        const next = BigInt.asUintN(64, dv.getBigInt64(o + D_OFF, true));
        const reclen = dv.getUint16(o + D_RECLEN, true);
        const type = dv.getUint8(o + D_TYPE);
        let end = buf.indexOf(0, o + D_NAME);
        if (end < 0 || end > o + reclen) end = o + reclen;
        const name = buf.subarray(o + D_NAME, end);
        o += reclen;
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
          // This entry did not fit: leave the stream just before it for the next call.
          const r = n.seekDir(h.fd, pos);
          h.dirOffset = r < 0 ? -1n : pos;
          return r < 0 ? r : 0;
        }
        pos = next;
      }
    }
    h.dirOffset = pos;
    return 0;
  }

  releasedir(_ctx: Ctx, fh: number): number {
    const h = this.share.dirs.get(fh);
    if (!h) return -E.EBADF;
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
