// A FUSE client for tests: builds request bytes the way a Linux 6.1 guest lays them out and
// parses replies. Transport-agnostic: a direct call into a FuseSession, or a vhost-user
// frontend driving our daemon or the C virtiofsd over real virtqueues.

import { OP, SIZE, INIT, FATTR } from '../../src/fuse/abi';

/** Sends one request chain: device-readable buffers, then writable buffer sizes. */
export type Transport = (queue: number, out: Uint8Array[], inLens: number[]) => Promise<{ len: number; in: Uint8Array[] }>;

export interface Attr {
  ino: bigint; size: bigint; blocks: bigint; atime: bigint; mtime: bigint; ctime: bigint;
  atimensec: number; mtimensec: number; ctimensec: number; mode: number; nlink: number;
  uid: number; gid: number; rdev: number; blksize: number; flags: number;
}
export interface Entry { nodeid: bigint; generation: bigint; entryValid: bigint; attrValid: bigint; attr: Attr }
export interface Reply { error: number; len: number; unique: bigint; body: Buffer }
export interface Dirent { ino: bigint; off: bigint; type: number; name: string; entry?: Entry }

export function parseAttr(b: Buffer, o: number): Attr {
  return {
    ino: b.readBigUInt64LE(o), size: b.readBigUInt64LE(o + 8), blocks: b.readBigUInt64LE(o + 16),
    atime: b.readBigUInt64LE(o + 24), mtime: b.readBigUInt64LE(o + 32), ctime: b.readBigUInt64LE(o + 40),
    atimensec: b.readUInt32LE(o + 48), mtimensec: b.readUInt32LE(o + 52), ctimensec: b.readUInt32LE(o + 56),
    mode: b.readUInt32LE(o + 60), nlink: b.readUInt32LE(o + 64), uid: b.readUInt32LE(o + 68), gid: b.readUInt32LE(o + 72),
    rdev: b.readUInt32LE(o + 76), blksize: b.readUInt32LE(o + 80), flags: b.readUInt32LE(o + 84),
  };
}

export function parseEntry(b: Buffer, o = 0): Entry {
  return {
    nodeid: b.readBigUInt64LE(o), generation: b.readBigUInt64LE(o + 8), entryValid: b.readBigUInt64LE(o + 16),
    attrValid: b.readBigUInt64LE(o + 24), attr: parseAttr(b, o + 40),
  };
}

const cstr = (s: string | Buffer): Buffer => Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : s, Buffer.from([0])]);

function u32s(...v: number[]): Buffer {
  const b = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, i * 4));
  return b;
}
function u64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

export interface ClientOptions { uid?: number; gid?: number; pid?: number; queue?: number; maxRead?: number }

export class FuseClient {
  private unique = 1n;
  uid: number; gid: number; pid: number;
  readonly queue: number;
  initFlags = 0n;

  constructor(private readonly send: Transport, o: ClientOptions = {}) {
    this.uid = o.uid ?? 0;
    this.gid = o.gid ?? 0;
    this.pid = o.pid ?? 1;
    this.queue = o.queue ?? 1;
  }

  header(opcode: number, nodeid: bigint | number, bodyLen: number, unique = this.unique++): Buffer {
    const h = Buffer.alloc(SIZE.in_header);
    h.writeUInt32LE(SIZE.in_header + bodyLen, 0);
    h.writeUInt32LE(opcode, 4);
    h.writeBigUInt64LE(unique, 8);
    h.writeBigUInt64LE(BigInt(nodeid), 16);
    h.writeUInt32LE(this.uid, 24);
    h.writeUInt32LE(this.gid, 28);
    h.writeUInt32LE(this.pid, 32);
    return h;
  }

  /** Send one request; args are laid out as separate buffers, as the guest does. */
  async call(opcode: number, nodeid: bigint | number, args: Buffer[], replyLen: number, extraOut: Uint8Array[] = []): Promise<Reply> {
    const bodyLen = args.reduce((n, a) => n + a.length, 0) + extraOut.reduce((n, a) => n + a.length, 0);
    const out = [this.header(opcode, nodeid, bodyLen), ...args.filter((a) => a.length > 0), ...extraOut];
    const r = await this.send(this.queue, out, replyLen > 0 ? [SIZE.out_header, replyLen] : [SIZE.out_header]);
    return FuseClient.parseReply(r);
  }

  static parseReply(r: { len: number; in: Uint8Array[] }): Reply {
    const all = Buffer.concat(r.in.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
    if (r.len < SIZE.out_header) return { error: NaN, len: r.len, unique: 0n, body: Buffer.alloc(0) };
    const len = all.readUInt32LE(0);
    return { error: all.readInt32LE(4), len, unique: all.readBigUInt64LE(8), body: all.subarray(SIZE.out_header, Math.min(len, r.len)) };
  }

  /** FUSE_INIT with the flags a Linux 6.1 guest offers. */
  async init(flags = 0x7bfffffbn | (0xbn << 32n)): Promise<Reply> {
    const b = Buffer.alloc(SIZE.init_in);
    b.writeUInt32LE(7, 0);
    b.writeUInt32LE(38, 4);
    b.writeUInt32LE(131072, 8);
    b.writeUInt32LE(Number(flags & 0xffffffffn), 12);
    b.writeUInt32LE(Number(flags >> 32n), 16);
    const r = await this.call(OP.FUSE_INIT, 0, [b], SIZE.init_out);
    if (r.error === 0 && r.body.length >= 16) {
      this.initFlags = BigInt(r.body.readUInt32LE(12)) | (r.body.length >= 36 ? BigInt(r.body.readUInt32LE(32)) << 32n : 0n);
    }
    return r;
  }

  hasInit(bit: number): boolean { return (this.initFlags & (1n << BigInt(bit))) !== 0n; }

  async lookup(parent: bigint | number, name: string | Buffer): Promise<Reply & { entry?: Entry }> {
    const r = await this.call(OP.FUSE_LOOKUP, parent, [cstr(name)], SIZE.entry_out);
    return r.error === 0 ? { ...r, entry: parseEntry(r.body) } : r;
  }

  async forget(nodeid: bigint | number, nlookup: number): Promise<Reply> {
    const out = [this.header(OP.FUSE_FORGET, nodeid, 8), u64(nlookup)];
    const r = await this.send(0, out, []);
    return { error: 0, len: r.len, unique: 0n, body: Buffer.alloc(0) };
  }

  async batchForget(items: Array<[bigint | number, number]>): Promise<Reply> {
    const b = Buffer.concat([u32s(items.length, 0), ...items.map(([n, c]) => Buffer.concat([u64(n), u64(c)]))]);
    const r = await this.send(0, [this.header(OP.FUSE_BATCH_FORGET, 0, b.length), b], []);
    return { error: 0, len: r.len, unique: 0n, body: Buffer.alloc(0) };
  }

  async getattr(nodeid: bigint | number, fh?: bigint | number): Promise<Reply & { attr?: Attr }> {
    const b = Buffer.concat([u32s(fh === undefined ? 0 : 1, 0), u64(fh ?? 0)]);
    const r = await this.call(OP.FUSE_GETATTR, nodeid, [b], SIZE.attr_out);
    return r.error === 0 ? { ...r, attr: parseAttr(r.body, 16) } : r;
  }

  async setattr(nodeid: bigint | number, s: { mode?: number; uid?: number; gid?: number; size?: number | bigint; atime?: [number, number] | 'now'; mtime?: [number, number] | 'now'; fh?: bigint | number; killSuidgid?: boolean }): Promise<Reply & { attr?: Attr }> {
    const b = Buffer.alloc(SIZE.setattr_in);
    let valid = 0;
    if (s.mode !== undefined) { valid |= FATTR.MODE; b.writeUInt32LE(s.mode, 68); }
    if (s.uid !== undefined) { valid |= FATTR.UID; b.writeUInt32LE(s.uid, 76); }
    if (s.gid !== undefined) { valid |= FATTR.GID; b.writeUInt32LE(s.gid, 80); }
    if (s.size !== undefined) { valid |= FATTR.SIZE; b.writeBigUInt64LE(BigInt(s.size), 16); }
    if (s.fh !== undefined) { valid |= FATTR.FH; b.writeBigUInt64LE(BigInt(s.fh), 8); }
    if (s.atime === 'now') valid |= FATTR.ATIME | FATTR.ATIME_NOW;
    else if (s.atime) { valid |= FATTR.ATIME; b.writeBigUInt64LE(BigInt(s.atime[0]), 32); b.writeUInt32LE(s.atime[1], 56); }
    if (s.mtime === 'now') valid |= FATTR.MTIME | FATTR.MTIME_NOW;
    else if (s.mtime) { valid |= FATTR.MTIME; b.writeBigUInt64LE(BigInt(s.mtime[0]), 40); b.writeUInt32LE(s.mtime[1], 60); }
    if (s.killSuidgid) valid |= FATTR.KILL_SUIDGID;
    b.writeUInt32LE(valid, 0);
    const r = await this.call(OP.FUSE_SETATTR, nodeid, [b], SIZE.attr_out);
    return r.error === 0 ? { ...r, attr: parseAttr(r.body, 16) } : r;
  }

  private async entryOp(opcode: number, nodeid: bigint | number, args: Buffer[]): Promise<Reply & { entry?: Entry }> {
    const r = await this.call(opcode, nodeid, args, SIZE.entry_out);
    return r.error === 0 ? { ...r, entry: parseEntry(r.body) } : r;
  }

  mkdir(parent: bigint | number, name: string | Buffer, mode = 0o755, umask = 0o022) {
    return this.entryOp(OP.FUSE_MKDIR, parent, [u32s(mode, umask), cstr(name)]);
  }
  mknod(parent: bigint | number, name: string | Buffer, mode: number, rdev = 0, umask = 0o022) {
    return this.entryOp(OP.FUSE_MKNOD, parent, [u32s(mode, rdev, umask, 0), cstr(name)]);
  }
  symlink(parent: bigint | number, name: string | Buffer, target: string | Buffer) {
    return this.entryOp(OP.FUSE_SYMLINK, parent, [cstr(name), cstr(target)]);
  }
  link(nodeid: bigint | number, newParent: bigint | number, name: string | Buffer) {
    return this.entryOp(OP.FUSE_LINK, newParent, [u64(nodeid), cstr(name)]);
  }
  async readlink(nodeid: bigint | number): Promise<Reply> {
    return this.call(OP.FUSE_READLINK, nodeid, [], 4096);
  }
  unlink(parent: bigint | number, name: string | Buffer) { return this.call(OP.FUSE_UNLINK, parent, [cstr(name)], 0); }
  rmdir(parent: bigint | number, name: string | Buffer) { return this.call(OP.FUSE_RMDIR, parent, [cstr(name)], 0); }
  rename(parent: bigint | number, name: string, newParent: bigint | number, newName: string, flags?: number) {
    if (flags === undefined) return this.call(OP.FUSE_RENAME, parent, [u64(newParent), cstr(name), cstr(newName)], 0);
    return this.call(OP.FUSE_RENAME2, parent, [Buffer.concat([u64(newParent), u32s(flags, 0)]), cstr(name), cstr(newName)], 0);
  }

  async open(nodeid: bigint | number, flags: number, dir = false): Promise<Reply & { fh?: bigint; openFlags?: number }> {
    const r = await this.call(dir ? OP.FUSE_OPENDIR : OP.FUSE_OPEN, nodeid, [u32s(flags, 0)], SIZE.open_out);
    return r.error === 0 ? { ...r, fh: r.body.readBigUInt64LE(0), openFlags: r.body.readUInt32LE(8) } : r;
  }
  opendir(nodeid: bigint | number) { return this.open(nodeid, 0, true); }

  async create(parent: bigint | number, name: string | Buffer, flags: number, mode = 0o644, umask = 0o022, tmpfile = false): Promise<Reply & { entry?: Entry; fh?: bigint }> {
    const args = [u32s(flags, mode, umask, 0)];
    if (!tmpfile) args.push(cstr(name));
    else args.push(cstr('tmpfile'));
    const r = await this.call(tmpfile ? OP.FUSE_TMPFILE : OP.FUSE_CREATE, parent, args, SIZE.entry_out + SIZE.open_out);
    return r.error === 0 ? { ...r, entry: parseEntry(r.body), fh: r.body.readBigUInt64LE(SIZE.entry_out) } : r;
  }

  async read(nodeid: bigint | number, fh: bigint | number, offset: number | bigint, size: number): Promise<Reply> {
    const b = Buffer.concat([u64(fh), u64(offset), u32s(size, 0), u64(0), u32s(0, 0)]);
    return this.call(OP.FUSE_READ, nodeid, [b], size);
  }

  async write(nodeid: bigint | number, fh: bigint | number, offset: number | bigint, data: Buffer, writeFlags = 0): Promise<Reply & { size?: number }> {
    const b = Buffer.concat([u64(fh), u64(offset), u32s(data.length, writeFlags), u64(0), u32s(0, 0)]);
    const r = await this.call(OP.FUSE_WRITE, nodeid, [b], SIZE.write_out, data.length ? [data] : []);
    return r.error === 0 ? { ...r, size: r.body.readUInt32LE(0) } : r;
  }

  release(nodeid: bigint | number, fh: bigint | number, dir = false, lockOwner = 0n, releaseFlags = 0) {
    return this.call(dir ? OP.FUSE_RELEASEDIR : OP.FUSE_RELEASE, nodeid, [Buffer.concat([u64(fh), u32s(0, releaseFlags), u64(lockOwner)])], 0);
  }
  releasedir(nodeid: bigint | number, fh: bigint | number) { return this.release(nodeid, fh, true); }
  flush(nodeid: bigint | number, fh: bigint | number, lockOwner = 0n) {
    return this.call(OP.FUSE_FLUSH, nodeid, [Buffer.concat([u64(fh), u32s(0, 0), u64(lockOwner)])], 0);
  }
  fsync(nodeid: bigint | number, fh: bigint | number, datasync = false, dir = false) {
    return this.call(dir ? OP.FUSE_FSYNCDIR : OP.FUSE_FSYNC, nodeid, [Buffer.concat([u64(fh), u32s(datasync ? 1 : 0, 0)])], 0);
  }
  async statfs(nodeid: bigint | number = 1): Promise<Reply & { blocks?: bigint; bsize?: number; namelen?: number; files?: bigint }> {
    const r = await this.call(OP.FUSE_STATFS, nodeid, [], SIZE.kstatfs);
    return r.error === 0 ? { ...r, blocks: r.body.readBigUInt64LE(0), files: r.body.readBigUInt64LE(24), bsize: r.body.readUInt32LE(40), namelen: r.body.readUInt32LE(44) } : r;
  }

  setxattr(nodeid: bigint | number, name: string, value: Buffer, flags = 0) {
    const ext = this.hasInit(INIT.SETXATTR_EXT);
    const fixed = ext ? u32s(value.length, flags, 0, 0) : u32s(value.length, flags);
    return this.call(OP.FUSE_SETXATTR, nodeid, [fixed, cstr(name), value], 0);
  }
  getxattr(nodeid: bigint | number, name: string, size: number) {
    return this.call(OP.FUSE_GETXATTR, nodeid, [u32s(size, 0), cstr(name)], size === 0 ? SIZE.getxattr_out : size);
  }
  listxattr(nodeid: bigint | number, size: number) {
    return this.call(OP.FUSE_LISTXATTR, nodeid, [u32s(size, 0)], size === 0 ? SIZE.getxattr_out : size);
  }
  removexattr(nodeid: bigint | number, name: string) { return this.call(OP.FUSE_REMOVEXATTR, nodeid, [cstr(name)], 0); }

  async readdir(nodeid: bigint | number, fh: bigint | number, offset: bigint | number, size: number, plus = false): Promise<Reply & { entries?: Dirent[] }> {
    const b = Buffer.concat([u64(fh), u64(offset), u32s(size, 0), u64(0), u32s(0, 0)]);
    const r = await this.call(plus ? OP.FUSE_READDIRPLUS : OP.FUSE_READDIR, nodeid, [b], size);
    if (r.error !== 0) return r;
    const entries: Dirent[] = [];
    let o = 0;
    const body = r.body;
    while (o < body.length) {
      let entry: Entry | undefined;
      if (plus) { entry = parseEntry(body, o); o += SIZE.entry_out; }
      const namelen = body.readUInt32LE(o + 16);
      entries.push({ ino: body.readBigUInt64LE(o), off: body.readBigUInt64LE(o + 8), type: body.readUInt32LE(o + 20), name: body.subarray(o + 24, o + 24 + namelen).toString('utf8'), ...(entry ? { entry } : {}) });
      o += (24 + namelen + 7) & ~7;
    }
    return { ...r, entries };
  }

  /** Read a whole directory (from the cookie `from`) with READDIR(PLUS) calls of `size` bytes. */
  async readdirAll(nodeid: bigint | number, fh: bigint | number, size = 4096, plus = false, from = 0n): Promise<Dirent[]> {
    const all: Dirent[] = [];
    let off = from;
    for (;;) {
      const r = await this.readdir(nodeid, fh, off, size, plus);
      if (r.error !== 0) throw new Error(`readdir failed: ${r.error}`);
      if (!r.entries || r.entries.length === 0) return all;
      all.push(...r.entries);
      off = r.entries[r.entries.length - 1]!.off;
    }
  }

  private lk(fh: bigint | number, owner: bigint, start: bigint, end: bigint, type: number, pid: number, flock: boolean): Buffer {
    return Buffer.concat([u64(fh), u64(owner), u64(start), u64(end), u32s(type, pid, flock ? 1 : 0, 0)]);
  }
  async getlk(nodeid: bigint | number, fh: bigint | number, owner: bigint, start: bigint, end: bigint, type: number): Promise<Reply & { lock?: { start: bigint; end: bigint; type: number; pid: number } }> {
    const r = await this.call(OP.FUSE_GETLK, nodeid, [this.lk(fh, owner, start, end, type, this.pid, false)], SIZE.lk_out);
    return r.error === 0 ? { ...r, lock: { start: r.body.readBigUInt64LE(0), end: r.body.readBigUInt64LE(8), type: r.body.readUInt32LE(16), pid: r.body.readUInt32LE(20) } } : r;
  }
  setlk(nodeid: bigint | number, fh: bigint | number, owner: bigint, start: bigint, end: bigint, type: number, o: { sleep?: boolean; flock?: boolean } = {}) {
    return this.call(o.sleep ? OP.FUSE_SETLKW : OP.FUSE_SETLK, nodeid, [this.lk(fh, owner, start, end, type, this.pid, o.flock ?? false)], 0);
  }

  access(nodeid: bigint | number, mask: number) { return this.call(OP.FUSE_ACCESS, nodeid, [u32s(mask, 0)], 0); }
  fallocate(nodeid: bigint | number, fh: bigint | number, offset: number, length: number, mode = 0) {
    return this.call(OP.FUSE_FALLOCATE, nodeid, [Buffer.concat([u64(fh), u64(offset), u64(length), u32s(mode, 0)])], 0);
  }
  async lseek(nodeid: bigint | number, fh: bigint | number, offset: number, whence: number): Promise<Reply & { offset?: bigint }> {
    const r = await this.call(OP.FUSE_LSEEK, nodeid, [Buffer.concat([u64(fh), u64(offset), u32s(whence, 0)])], SIZE.lseek_out);
    return r.error === 0 ? { ...r, offset: r.body.readBigUInt64LE(0) } : r;
  }
  async copyFileRange(nodeIn: bigint | number, fhIn: bigint | number, offIn: number, nodeOut: bigint | number, fhOut: bigint | number, offOut: number, len: number): Promise<Reply & { size?: number }> {
    const b = Buffer.concat([u64(fhIn), u64(offIn), u64(nodeOut), u64(fhOut), u64(offOut), u64(len), u64(0)]);
    const r = await this.call(OP.FUSE_COPY_FILE_RANGE, nodeIn, [b], SIZE.write_out);
    return r.error === 0 ? { ...r, size: r.body.readUInt32LE(0) } : r;
  }
  syncfs(nodeid: bigint | number = 1) { return this.call(OP.FUSE_SYNCFS, nodeid, [u64(0)], 0); }
  destroy() { return this.call(OP.FUSE_DESTROY, 0, [], 0); }
  async interrupt(unique: bigint): Promise<number> {
    const r = await this.send(this.queue, [this.header(OP.FUSE_INTERRUPT, 0, 8), u64(unique)], []);
    return r.len;
  }
}
