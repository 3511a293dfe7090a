// Path-relative syscalls: openat/openat2, statx, directory ops, handles, binary names.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STAT_SLOTS, ST, toBinary } from '../../src/native/binding';

const n = loadNative();
const E = os.constants.errno;
const C = fs.constants;
const AT_FDCWD = -100;
const O_PATH = 0o10000000;
const AT_SYMLINK_NOFOLLOW = 0x100;
const AT_REMOVEDIR = 0x200;
const AT_EMPTY_PATH = 0x1000;
const RESOLVE_BENEATH = 0x08;
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;

let dir = '';
let dfd = -1;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-path-'));
  dfd = n.openat(AT_FDCWD, dir, O_PATH | C.O_DIRECTORY, 0);
  assert.ok(dfd >= 0, `open tmp dir: ${dfd}`);
});

after(() => {
  n.close(dfd);
  fs.rmSync(dir, { recursive: true, force: true });
});

function statOf(dirfd: number, p: string, flags = 0): BigUint64Array {
  const out = new BigUint64Array(STAT_SLOTS);
  const r = n.stat(dirfd, p, flags, out);
  assert.equal(r, 0, `stat ${p}: ${r}`);
  return out;
}

function fdinfoField(fd: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(m, `${field} in fdinfo`);
  return Number(m[1]);
}

test('openat with O_PATH|O_NOFOLLOW on a symlink returns an fd, statting it reports S_IFLNK', () => {
  fs.writeFileSync(path.join(dir, 'target'), 'data');
  fs.symlinkSync('target', path.join(dir, 'link'));
  const fd = n.openat(dfd, 'link', O_PATH | C.O_NOFOLLOW, 0);
  assert.ok(fd >= 0, `openat: ${fd}`);
  try {
    const st = statOf(fd, '', AT_EMPTY_PATH);
    assert.equal(Number(st[ST.mode]) & C.S_IFMT, C.S_IFLNK);
    assert.equal(st[ST.size], 6n, 'symlink size is the target length');
    const followed = statOf(dfd, 'link');
    assert.equal(Number(followed[ST.mode]) & C.S_IFMT, C.S_IFREG, 'stat without NOFOLLOW follows');
    assert.equal(Number(statOf(dfd, 'link', AT_SYMLINK_NOFOLLOW)[ST.mode]) & C.S_IFMT, C.S_IFLNK);
  } finally {
    n.close(fd);
  }
});

test('stat fills the ST slots as fs.statSync sees them, plus the mount id', () => {
  const p = path.join(dir, 'statme');
  fs.writeFileSync(p, Buffer.alloc(5000, 1));
  fs.utimesSync(p, 1_600_000_000.25, 1_700_000_000.5);
  const st = statOf(AT_FDCWD, p);
  const ref = fs.statSync(p, { bigint: true });
  assert.equal(st[ST.dev], ref.dev);
  assert.equal(st[ST.ino], ref.ino);
  assert.equal(st[ST.nlink], ref.nlink);
  assert.equal(st[ST.mode], ref.mode);
  assert.equal(st[ST.uid], ref.uid);
  assert.equal(st[ST.gid], ref.gid);
  assert.equal(st[ST.rdev], ref.rdev);
  assert.equal(st[ST.size], 5000n);
  assert.equal(st[ST.blksize], ref.blksize);
  assert.equal(st[ST.blocks], ref.blocks);
  assert.equal(st[ST.atime], 1_600_000_000n);
  assert.equal(st[ST.atimensec], 250_000_000n);
  assert.equal(st[ST.mtime], 1_700_000_000n);
  assert.equal(st[ST.mtimensec], 500_000_000n);
  assert.equal(st[ST.ctime] * 1_000_000_000n + st[ST.ctimensec], ref.ctimeNs);
  const fd = n.openat(AT_FDCWD, p, C.O_RDONLY, 0);
  try {
    assert.ok(st[ST.mntId] > 0n);
    assert.equal(Number(st[ST.mntId]), fdinfoField(fd, 'mnt_id'));
  } finally {
    n.close(fd);
  }
});

test('errors come back as -errno (ENOENT, EBADF, ENOTDIR, EEXIST)', () => {
  const out = new BigUint64Array(STAT_SLOTS);
  assert.equal(n.openat(dfd, 'does-not-exist', C.O_RDONLY, 0), -E.ENOENT);
  assert.equal(n.stat(dfd, 'does-not-exist', 0, out), -E.ENOENT);
  assert.equal(n.stat(123456, 'x', 0, out), -E.EBADF);
  assert.equal(n.close(123456), -E.EBADF);
  assert.equal(n.openat(123456, 'x', C.O_RDONLY, 0), -E.EBADF);
  fs.writeFileSync(path.join(dir, 'plain'), '');
  assert.equal(n.openat(dfd, 'plain/x', C.O_RDONLY, 0), -E.ENOTDIR);
  assert.equal(n.mkdirat(dfd, 'plain', 0o755), -E.EEXIST);
});

test('misuse throws TypeError; wrong values of the right type return -EINVAL', () => {
  const out = new BigUint64Array(STAT_SLOTS);
  assert.throws(() => n.openat('x' as unknown as number, 'p', 0, 0), TypeError);
  assert.throws(() => n.openat(dfd, 1 as unknown as string, 0, 0), TypeError);
  assert.throws(() => n.stat(dfd, '', AT_EMPTY_PATH, new BigUint64Array(STAT_SLOTS - 1)), TypeError);
  assert.throws(() => n.stat(dfd, '', AT_EMPTY_PATH, new Float64Array(STAT_SLOTS) as unknown as BigUint64Array), TypeError);
  assert.equal(n.openat(dfd, 'a\0b', C.O_RDONLY, 0), -E.EINVAL, 'embedded NUL');
  assert.equal(n.openat(dfd, '\u0100', C.O_RDONLY, 0), -E.EINVAL, 'char above 0xff is not a byte');
  assert.equal(n.openat(1.5, 'x', C.O_RDONLY, 0), -E.EINVAL);
  assert.equal(n.stat(NaN, 'x', 0, out), -E.EINVAL);
});

test('names are binary strings: bytes that are not UTF-8 pass through unchanged', () => {
  const raw = 'caf\xe9\xff';
  const fd = n.openat(dfd, raw, C.O_CREAT | C.O_WRONLY | C.O_EXCL, 0o644);
  assert.ok(fd >= 0, `openat: ${fd}`);
  n.close(fd);
  const names = fs.readdirSync(dir, { encoding: 'buffer' }).map((b) => b.toString('hex'));
  assert.ok(names.includes('636166e9ff'), names.join(','));
  const utf8 = 'naïve';
  const fd2 = n.openat(dfd, toBinary(utf8), C.O_CREAT | C.O_WRONLY, 0o644);
  assert.ok(fd2 >= 0);
  n.close(fd2);
  assert.ok(fs.existsSync(path.join(dir, utf8)), 'toBinary() form reaches the kernel as UTF-8');
  const buf = new Uint8Array(64);
  assert.equal(n.symlinkat(raw, dfd, 'rawlink'), 0);
  const len = n.readlinkat(dfd, 'rawlink', buf);
  assert.equal(Buffer.from(buf.subarray(0, len)).toString('latin1'), raw);
});

test('openat2 RESOLVE_BENEATH refuses ".." and absolute paths (EXDEV) but opens paths below', () => {
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'f'), 'x');
  const sub = n.openat(dfd, 'sub', O_PATH | C.O_DIRECTORY, 0);
  try {
    assert.equal(n.openat2(sub, '../plain', C.O_RDONLY, 0, RESOLVE_BENEATH), -E.EXDEV);
    assert.equal(n.openat2(sub, '/etc/hostname', C.O_RDONLY, 0, RESOLVE_BENEATH), -E.EXDEV);
    const fd = n.openat2(sub, 'f', C.O_RDONLY | 0o2000000 /* O_CLOEXEC */, 0, RESOLVE_BENEATH);
    assert.ok(fd >= 0, `openat2: ${fd}`);
    n.close(fd);
    assert.equal(n.openat2(sub, 'f', C.O_RDONLY, 0o644, 0), -E.EINVAL, 'mode without O_CREAT');
  } finally {
    n.close(sub);
  }
});

test('mkdirat, symlinkat, readlinkat, linkat, renameat2 and unlinkat manage entries', () => {
  assert.equal(n.mkdirat(dfd, 'd1', 0o700), 0);
  assert.equal(Number(statOf(dfd, 'd1')[ST.mode]) & 0o7777, 0o700);
  fs.writeFileSync(path.join(dir, 'a'), 'A');
  fs.writeFileSync(path.join(dir, 'b'), 'B');
  assert.equal(n.symlinkat('a', dfd, 's'), 0);
  const buf = new Uint8Array(16);
  assert.equal(n.readlinkat(dfd, 's', buf), 1);
  assert.equal(buf[0], 'a'.charCodeAt(0));
  assert.equal(n.readlinkat(dfd, 'a', buf), -E.EINVAL, 'not a symlink');
  assert.equal(n.linkat(dfd, 'a', dfd, 'a2', 0), 0);
  assert.equal(statOf(dfd, 'a')[ST.nlink], 2n);
  assert.equal(n.renameat2(dfd, 'a', dfd, 'b', RENAME_NOREPLACE), -E.EEXIST);
  assert.equal(n.renameat2(dfd, 'a', dfd, 'b', RENAME_EXCHANGE), 0);
  assert.equal(fs.readFileSync(path.join(dir, 'a'), 'utf8'), 'B');
  assert.equal(fs.readFileSync(path.join(dir, 'b'), 'utf8'), 'A');
  assert.equal(n.renameat2(dfd, 'b', dfd, 'c', 0), 0);
  assert.equal(n.unlinkat(dfd, 'c', 0), 0);
  assert.equal(n.unlinkat(dfd, 'd1', 0), -E.EISDIR);
  assert.equal(n.unlinkat(dfd, 'd1', AT_REMOVEDIR), 0);
  assert.equal(fs.existsSync(path.join(dir, 'd1')), false);
});

test('mknodat makes a FIFO and a char device from a FUSE (new_encode_dev) device number', () => {
  assert.equal(n.mknodat(dfd, 'fifo', C.S_IFIFO | 0o600, 0), 0);
  assert.equal(Number(statOf(dfd, 'fifo')[ST.mode]) & C.S_IFMT, C.S_IFIFO);
  const major = 10;
  const minor = 300; // > 255: exercises the split minor field
  const enc = (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
  assert.equal(n.mknodat(dfd, 'chr', C.S_IFCHR | 0o600, enc), 0);
  const st = statOf(dfd, 'chr');
  assert.equal(Number(st[ST.mode]) & C.S_IFMT, C.S_IFCHR);
  assert.equal(st[ST.rdev], fs.statSync(path.join(dir, 'chr'), { bigint: true }).rdev);
  const rdev = Number(st[ST.rdev]);
  assert.equal(((rdev >> 8) & 0xfff), major);
  assert.equal((rdev & 0xff) | ((rdev >> 12) & ~0xff), minor);
});

test('fchownat, fchmodat and utimensat change attributes (incl. AT_EMPTY_PATH on an O_PATH fd)', () => {
  const p = path.join(dir, 'attrs');
  fs.writeFileSync(p, '');
  assert.equal(n.fchownat(dfd, 'attrs', 1234, 5678, 0), 0);
  let st = statOf(dfd, 'attrs');
  assert.deepEqual([st[ST.uid], st[ST.gid]], [1234n, 5678n]);
  assert.equal(n.fchownat(dfd, 'attrs', -1, 42, 0), 0, '-1 leaves the uid alone');
  st = statOf(dfd, 'attrs');
  assert.deepEqual([st[ST.uid], st[ST.gid]], [1234n, 42n]);
  assert.equal(n.fchmodat(dfd, 'attrs', 0o640, 0), 0);
  assert.equal(Number(statOf(dfd, 'attrs')[ST.mode]) & 0o7777, 0o640);
  const fd = n.openat(dfd, 'attrs', O_PATH, 0);
  try {
    assert.equal(n.fchmodat(fd, '', 0o604, AT_EMPTY_PATH), 0);
    assert.equal(Number(statOf(dfd, 'attrs')[ST.mode]) & 0o7777, 0o604);
    assert.equal(n.fchownat(fd, '', 0, 0, AT_EMPTY_PATH), 0);
    assert.equal(statOf(dfd, 'attrs')[ST.uid], 0n);
  } finally {
    n.close(fd);
  }
  // 2^33 s: beyond 32 bits, still inside ext4's timestamp range (which ends in 2446).
  assert.equal(n.utimensat(dfd, 'attrs', 1000, 5, 2 ** 33, 999_999_999, 0), 0);
  st = statOf(dfd, 'attrs');
  assert.deepEqual([st[ST.atime], st[ST.atimensec], st[ST.mtime], st[ST.mtimensec]], [1000n, 5n, 2n ** 33n, 999_999_999n]);
  assert.equal(n.utimensat(dfd, 'attrs', 0, UTIME_OMIT, 0, UTIME_NOW, 0), 0);
  st = statOf(dfd, 'attrs');
  assert.equal(st[ST.atime], 1000n, 'UTIME_OMIT keeps atime');
  assert.ok(Math.abs(Number(st[ST.mtime]) - Date.now() / 1000) < 60, 'UTIME_NOW sets mtime to now');
  assert.equal(n.utimensat(dfd, 'attrs', 0, 2 ** 31, 0, 0, 0), -E.EINVAL);
});

test('name_to_handle_at / open_by_handle_at round trip', () => {
  const p = path.join(dir, 'handled');
  fs.writeFileSync(p, 'by-handle');
  const out = new Uint8Array(12 + 128);
  const r = n.nameToHandleAt(dfd, 'handled', 0, out);
  assert.ok(r > 12, `nameToHandleAt: ${r}`);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const handleBytes = dv.getUint32(4, true);
  assert.equal(r, 12 + handleBytes);
  assert.equal(dv.getUint32(0, true), Number(statOf(dfd, 'handled')[ST.mntId]), 'mount_id matches statx');
  const mountFd = n.openat(AT_FDCWD, dir, C.O_RDONLY | C.O_DIRECTORY, 0);
  try {
    const fd = n.openByHandleAt(mountFd, out.subarray(0, r), C.O_RDONLY);
    assert.ok(fd >= 0, `openByHandleAt: ${fd}`);
    const buf = new Uint8Array(32);
    const got = n.pread(fd, buf, 0);
    assert.equal(Buffer.from(buf.subarray(0, got)).toString(), 'by-handle');
    n.close(fd);
    assert.equal(n.openByHandleAt(mountFd, out.subarray(0, r - 1), C.O_RDONLY), -E.EINVAL, 'truncated handle');
    assert.equal(n.openByHandleAt(mountFd, out.subarray(0, 8), C.O_RDONLY), -E.EINVAL, 'no header');
    const bad = out.slice(0, r);
    new DataView(bad.buffer).setUint32(4, 129, true);
    assert.equal(n.openByHandleAt(mountFd, bad, C.O_RDONLY), -E.EINVAL, 'handle_bytes > MAX_HANDLE_SZ');
    fs.unlinkSync(p);
    assert.equal(n.openByHandleAt(mountFd, out.subarray(0, r), C.O_RDONLY), -E.ESTALE, 'deleted file');
  } finally {
    n.close(mountFd);
  }
  assert.throws(() => n.nameToHandleAt(dfd, 'x', 0, new Uint8Array(139)), TypeError);
});
