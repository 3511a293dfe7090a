// Syscalls on open fds: I/O, directory reads, space management, locks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STATFS } from '../../src/native/binding';

const n = loadNative();
const E = os.constants.errno;
const C = fs.constants;
const AT_FDCWD = -100;
const SEEK_SET = 0;
const SEEK_CUR = 1;
const SEEK_END = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;
const F_GETLK = 5;
const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const DT_DIR = 4;
const DT_REG = 8;

let dir = '';
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-fd-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function open(name: string, flags = C.O_RDWR | C.O_CREAT): number {
  const fd = n.openat(AT_FDCWD, path.join(dir, name), flags, 0o644);
  assert.ok(fd >= 0, `open ${name}: ${fd}`);
  return fd;
}

interface Dirent { ino: bigint; off: bigint; type: number; name: string }
function parseDirents(buf: Uint8Array, len: number): Dirent[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, len);
  const out: Dirent[] = [];
  for (let p = 0; p < len; ) {
    const reclen = dv.getUint16(p + 16, true);
    const nameBytes = buf.subarray(p + 19, p + reclen);
    const name = Buffer.from(nameBytes.subarray(0, nameBytes.indexOf(0))).toString('latin1');
    out.push({ ino: dv.getBigUint64(p, true), off: dv.getBigInt64(p + 8, true), type: dv.getUint8(p + 18), name });
    p += reclen;
  }
  return out;
}

test('getdents64 returns entries with names, types and inode numbers; 0 at the end', () => {
  const d = path.join(dir, 'listing');
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'file1'), '');
  fs.mkdirSync(path.join(d, 'sub'));
  const fd = n.openat(AT_FDCWD, d, C.O_RDONLY | C.O_DIRECTORY, 0);
  try {
    const buf = new Uint8Array(4096);
    const len = n.getdents64(fd, buf);
    assert.ok(len > 0, `getdents64: ${len}`);
    const ents = parseDirents(buf, len);
    const byName = new Map(ents.map((e) => [e.name, e]));
    assert.deepEqual([...byName.keys()].sort(), ['.', '..', 'file1', 'sub']);
    assert.equal(byName.get('file1')!.type, DT_REG);
    assert.equal(byName.get('sub')!.type, DT_DIR);
    assert.equal(byName.get('file1')!.ino, fs.statSync(path.join(d, 'file1'), { bigint: true }).ino);
    assert.equal(n.getdents64(fd, buf), 0, 'end of directory');

    // seekDir takes the exact 64-bit d_off cookie (ext4 hash cookies exceed 2^53).
    const second = ents[1];
    assert.equal(n.seekDir(fd, ents[0].off), 0);
    const rest = parseDirents(buf, n.getdents64(fd, buf));
    assert.equal(rest[0].name, second.name, 'reading resumes after the first entry');
    assert.equal(n.seekDir(fd, 0n), 0);
    assert.equal(parseDirents(buf, n.getdents64(fd, buf)).length, ents.length);
    assert.equal(n.seekDir(fd, 2n ** 64n), -E.EINVAL, 'beyond 64 bits');
    assert.throws(() => n.seekDir(fd, 5 as unknown as bigint), TypeError);
    assert.equal(n.seekDir(fd, 0n), 0);
    assert.equal(n.getdents64(fd, new Uint8Array(8)), -E.EINVAL, 'buffer too small for one entry');
  } finally {
    n.close(fd);
  }
  const f = open('notadir');
  try {
    assert.equal(n.getdents64(f, new Uint8Array(512)), -E.ENOTDIR);
  } finally {
    n.close(f);
  }
});

test('pread/pwrite use the Uint8Array range (byteOffset/byteLength) and offsets above 2^32', () => {
  const fd = open('rw');
  try {
    const backing = new Uint8Array(16).fill(0xee);
    const view = backing.subarray(4, 8);
    view.set([1, 2, 3, 4]);
    assert.equal(n.pwrite(fd, view, 2 ** 32 + 10), 4);
    assert.equal(fs.fstatSync(fd).size, 2 ** 32 + 14);
    const dst = new Uint8Array(16);
    assert.equal(n.pread(fd, dst.subarray(8, 12), 2 ** 32 + 10), 4);
    assert.deepEqual([...dst], [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0]);
    assert.equal(n.pread(fd, new Uint8Array(4), 2 ** 40), 0, 'EOF');
    assert.equal(n.pread(fd, new Uint8Array(4), -1), -E.EINVAL);
    assert.equal(n.pread(fd, new Uint8Array(4), 2 ** 53 + 2), -E.EINVAL);
    assert.throws(() => n.pread(fd, new Uint8Array(4), 1n as unknown as number), TypeError);
    assert.throws(() => n.pwrite(fd, new Uint16Array(2) as unknown as Uint8Array, 0), TypeError);
    assert.equal(n.pread(123456, new Uint8Array(1), 0), -E.EBADF);
  } finally {
    n.close(fd);
  }
});

test('copy_file_range copies between offsets without moving either file position', () => {
  const src = open('cfr-src');
  const dst = open('cfr-dst');
  try {
    const data = Buffer.from('0123456789abcdef');
    assert.equal(n.pwrite(src, data, 0), 16);
    assert.equal(n.copyFileRange(src, 4, dst, 100, 8, 0), 8);
    const got = new Uint8Array(8);
    assert.equal(n.pread(dst, got, 100), 8);
    assert.equal(Buffer.from(got).toString(), '456789ab');
    assert.equal(n.lseek(src, 0, SEEK_CUR), 0);
    assert.equal(n.lseek(dst, 0, SEEK_CUR), 0);
    assert.equal(n.copyFileRange(src, 16, dst, 0, 8, 0), 0, 'at EOF');
    assert.equal(n.copyFileRange(src, 0, dst, 0, 8, 1), -E.EINVAL, 'flags must be 0');
  } finally {
    n.close(src);
    n.close(dst);
  }
});

test('fallocate allocates, keeps size with KEEP_SIZE and punches holes', () => {
  const fd = open('falloc');
  try {
    assert.equal(n.fallocate(fd, 0, 0, 1 << 20), 0);
    assert.equal(fs.fstatSync(fd).size, 1 << 20);
    assert.equal(n.fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20), 0);
    assert.equal(fs.fstatSync(fd).size, 1 << 20, 'KEEP_SIZE leaves the size alone');
    const before = fs.fstatSync(fd).blocks;
    assert.equal(n.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 19), 0);
    assert.ok(fs.fstatSync(fd).blocks < before, 'punching frees blocks');
    assert.equal(n.fallocate(fd, 0, 0, 0), -E.EINVAL);
    assert.equal(n.fallocate(fd, 0, -1, 10), -E.EINVAL);
  } finally {
    n.close(fd);
  }
});

test('lseek SEEK_DATA/SEEK_HOLE find the data and the hole of a sparse file', () => {
  const fd = open('sparse');
  try {
    const MB = 1 << 20;
    assert.equal(n.ftruncate(fd, 4 * MB), 0);
    assert.equal(n.pwrite(fd, new Uint8Array(MB).fill(1), 2 * MB), MB);
    assert.equal(n.lseek(fd, 0, SEEK_DATA), 2 * MB);
    assert.equal(n.lseek(fd, 2 * MB, SEEK_HOLE), 3 * MB);
    assert.equal(n.lseek(fd, 3 * MB, SEEK_DATA), -E.ENXIO);
    assert.equal(n.lseek(fd, 0, SEEK_HOLE), 0);
    assert.equal(n.lseek(fd, -10, SEEK_END), 4 * MB - 10);
    assert.equal(n.lseek(fd, 5, SEEK_SET), 5);
    assert.equal(n.lseek(fd, -10, SEEK_SET), -E.EINVAL);
  } finally {
    n.close(fd);
  }
});

test('fstatfs fills the STATFS slots as fs.statfsSync sees them', () => {
  const fd = n.openat(AT_FDCWD, dir, C.O_RDONLY | C.O_DIRECTORY, 0);
  try {
    const out = new BigUint64Array(8);
    assert.equal(n.fstatfs(fd, out), 0);
    const ref = fs.statfsSync(dir, { bigint: true });
    assert.equal(out[STATFS.bsize], ref.bsize);
    assert.equal(out[STATFS.blocks], ref.blocks);
    assert.equal(out[STATFS.files], ref.files);
    assert.ok(out[STATFS.frsize] > 0n);
    assert.ok(out[STATFS.bavail] <= out[STATFS.bfree]);
    assert.equal(out[STATFS.namelen], 255n);
    assert.throws(() => n.fstatfs(fd, new BigUint64Array(7)), TypeError);
  } finally {
    n.close(fd);
  }
});

test('OFD lock conflict is visible through F_OFD_GETLK from a second open file description', () => {
  const a = open('locked');
  const b = open('locked', C.O_RDWR);
  try {
    const lk = BigInt64Array.of(BigInt(F_WRLCK), 0n, 10n, 20n, 0n);
    assert.equal(n.ofdLock(a, F_OFD_SETLK, lk), 0);
    const probe = BigInt64Array.of(BigInt(F_RDLCK), 0n, 0n, 0n, 0n);
    assert.equal(n.ofdLock(b, F_OFD_GETLK, probe), 0);
    assert.deepEqual([...probe], [BigInt(F_WRLCK), 0n, 10n, 20n, -1n], 'the conflicting lock, pid -1 for OFD locks');
    assert.equal(n.ofdLock(b, F_OFD_SETLK, BigInt64Array.of(BigInt(F_WRLCK), 0n, 15n, 1n, 0n)), -E.EAGAIN);
    const free = BigInt64Array.of(BigInt(F_WRLCK), 0n, 30n, 5n, 0n);
    assert.equal(n.ofdLock(b, F_OFD_GETLK, free), 0);
    assert.equal(free[0], BigInt(F_UNLCK), 'no conflict outside the locked range');
    assert.equal(n.ofdLock(a, F_OFD_SETLK, BigInt64Array.of(BigInt(F_UNLCK), 0n, 0n, 0n, 0n)), 0);
    assert.equal(n.ofdLock(b, F_OFD_SETLK, BigInt64Array.of(BigInt(F_WRLCK), 0n, 15n, 1n, 0n)), 0);
    // Same process, classic locks: F_GETLK is accepted too (struct flock commands only).
    assert.equal(n.ofdLock(a, F_GETLK, BigInt64Array.of(BigInt(F_RDLCK), 0n, 0n, 0n, 0n)), 0);
    assert.equal(n.ofdLock(a, 1 /* F_GETFD */, BigInt64Array.of(0n, 0n, 0n, 0n, 0n)), -E.EINVAL);
    assert.throws(() => n.ofdLock(a, F_OFD_GETLK, new BigInt64Array(4)), TypeError);
  } finally {
    n.close(a);
    n.close(b);
  }
});

test('flock conflicts between two open file descriptions', () => {
  const a = open('flocked');
  const b = open('flocked', C.O_RDWR);
  try {
    assert.equal(n.flock(a, LOCK_EX | LOCK_NB), 0);
    assert.equal(n.flock(b, LOCK_EX | LOCK_NB), -E.EWOULDBLOCK);
    assert.equal(n.flock(a, LOCK_UN), 0);
    assert.equal(n.flock(b, LOCK_EX | LOCK_NB), 0);
  } finally {
    n.close(a);
    n.close(b);
  }
});

test('dup, getfl, ftruncate, fsync, syncfs and close', () => {
  const fd = open('misc', C.O_RDWR | C.O_CREAT | C.O_APPEND);
  const d = n.dup(fd);
  try {
    assert.ok(d >= 0 && d !== fd);
    const fl = n.getfl(d);
    assert.equal(fl & 3 /* O_ACCMODE */, C.O_RDWR);
    assert.ok(fl & C.O_APPEND, 'dup shares the open file description');
    assert.equal(n.ftruncate(fd, 12345), 0);
    assert.equal(fs.fstatSync(d).size, 12345);
    assert.equal(n.ftruncate(fd, -1), -E.EINVAL);
    assert.equal(n.fsync(fd, false), 0);
    assert.equal(n.fsync(fd, true), 0);
    assert.equal(n.syncfs(fd), 0);
    assert.throws(() => n.fsync(fd, 1 as unknown as boolean), TypeError);
  } finally {
    assert.equal(n.close(d), 0);
    assert.equal(n.close(fd), 0);
  }
  assert.equal(n.close(fd), -E.EBADF);
  assert.equal(n.getfl(fd), -E.EBADF);
  assert.equal(n.dup(fd), -E.EBADF);
});
