// Extended attributes (xattr(7)): SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR.
//
// Off unless --xattr: then the guest is told the file has none (set and remove get EOPNOTSUPP,
// get ENODATA, list an empty list). POSIX ACLs (acl(5)) are the xattrs system.posix_acl_access
// and system.posix_acl_default; without --posix-acl (which has the guest enforce them,
// FUSE_POSIX_ACL) the guest neither sees nor sets them.
//
// The calls go through /proc/self/fd/N of the inode's O_PATH fd: the path forms of the *xattr(2)
// calls follow that magic link to the inode, and the f*xattr(2) forms refuse O_PATH fds. For a
// symlink that path names the magic link, not the symlink: symlinks get EOPNOTSUPP.

import type { Ctx } from '../fuse/filesystem';
import { E } from '../linux/constants';
import * as K from '../linux/constants';
import type { Inode } from './inode-table';
import type { Share } from './share';

const ACL_PREFIX = 'system.posix_acl_';
const EMPTY_BUF = new Uint8Array(0);

export class Xattrs {
  constructor(private readonly share: Share, private readonly xattr: boolean, private readonly posixAcl: boolean) {}

  /** The inode an xattr op works on, or why not (name null: LISTXATTR). */
  private target(nodeid: number, name: string | null): Inode | number {
    if (!this.xattr) return -E.EOPNOTSUPP;
    const ino = this.share.inodes.get(nodeid);
    if (!ino) return -E.EBADF;
    if (name !== null && !this.posixAcl && name.startsWith(ACL_PREFIX)) return -E.EOPNOTSUPP;
    if ((ino.mode & K.S_IFMT) === K.S_IFLNK) return -E.EOPNOTSUPP;
    return ino;
  }

  setxattr(_ctx: Ctx, nodeid: number, name: string, value: Uint8Array, flags: number): number {
    const ino = this.target(nodeid, name);
    if (typeof ino === 'number') return ino;
    const p = this.share.procPath(ino);
    if (typeof p === 'number') return p;
    return this.share.native.setxattr(p, name, value, flags & (K.XATTR_CREATE | K.XATTR_REPLACE), false);
  }

  getxattr(_ctx: Ctx, nodeid: number, name: string, buf: Uint8Array): number {
    const ino = this.target(nodeid, name);
    if (typeof ino === 'number') return ino === -E.EOPNOTSUPP ? -E.ENODATA : ino;
    const p = this.share.procPath(ino);
    if (typeof p === 'number') return p;
    return this.share.native.getxattr(p, name, buf, false);
  }

  listxattr(_ctx: Ctx, nodeid: number, buf: Uint8Array): number {
    const ino = this.target(nodeid, null);
    if (typeof ino === 'number') return ino === -E.EOPNOTSUPP ? 0 : ino;
    const p = this.share.procPath(ino);
    if (typeof p === 'number') return p;
    const r = this.share.native.listxattr(p, buf, false);
    if (r <= 0 || this.posixAcl) return r;
    return withoutAclNames(buf, r);
  }

  removexattr(_ctx: Ctx, nodeid: number, name: string): number {
    const ino = this.target(nodeid, name);
    if (typeof ino === 'number') return ino;
    const p = this.share.procPath(ino);
    if (typeof p === 'number') return p;
    return this.share.native.removexattr(p, name, false);
  }

  /** The replay probe of SETXATTR: does the inode have this xattr now? */
  has(nodeid: number, name: string): boolean {
    const ino = this.target(nodeid, name);
    const p = typeof ino === 'number' ? ino : this.share.procPath(ino);
    return typeof p === 'string' && this.share.native.getxattr(p, name, EMPTY_BUF, false) >= 0;
  }
}

/**
 * The first len bytes of buf, a LISTXATTR result (names, each NUL-terminated), rewritten in place
 * without the POSIX ACL names; returns the new length. A size probe (buf empty) gets len back:
 * an upper bound is a valid answer to one.
 */
export function withoutAclNames(buf: Uint8Array, len: number): number {
  if (buf.length === 0) return len;
  const names = Buffer.from(buf.buffer, buf.byteOffset, len).toString('latin1').split('\0').filter((s) => s && !s.startsWith(ACL_PREFIX));
  const out = names.length ? Buffer.from(names.join('\0') + '\0', 'latin1') : Buffer.alloc(0);
  buf.set(out);
  return out.length;
}
