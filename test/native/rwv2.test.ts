// preadv2 / pwritev2: vectored I/O at an explicit offset, RWF_NOWAIT, errors and misuse.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, RWF_NOWAIT } from '../../src/native/binding';

const n = loadNative();
const E = os.constants.errno;
const C = fs.constants;
const AT_FDCWD = -100;
const SEEK_CUR = 1;
const IOV_MAX = 1024;
const POSIX_FADV_DONTNEED = 4;

let dir = '';
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-rwv2-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function open(name: string, flags = C.O_RDWR | C.O_CREAT): number {
  const fd = n.openat(AT_FDCWD, path.join(dir, name), flags, 0o644);
  assert.ok(fd >= 0, `open ${name}: ${fd}`);
  return fd;
}

test('preadv2/pwritev2 scatter and gather over the views, in order, at the offset; the fd position stays', () => {
  const fd = open('vec');
  try {
    const backing = new Uint8Array(32).fill(0xee);
    const a = backing.subarray(2, 5), b = backing.subarray(10, 10), c = backing.subarray(20, 24);
    a.set([1, 2, 3]);
    c.set([4, 5, 6, 7]);
    assert.equal(n.pwritev2(fd, [a, b, c], 2 ** 32 + 1, 0), 7);
    assert.equal(n.lseek(fd, 0, SEEK_CUR), 0, 'position not used or moved');
    const x = new Uint8Array(2), y = new Uint8Array(8);
    assert.equal(n.preadv2(fd, [x, y], 2 ** 32 + 1, 0), 7, 'short at EOF');
    assert.deepEqual([...x, ...y], [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]);
    assert.equal(n.preadv2(fd, [x], 2 ** 40, 0), 0, 'EOF');
    assert.equal(n.preadv2(fd, [], 0, 0), 0, 'no buffers');
    assert.equal(n.lseek(fd, 0, SEEK_CUR), 0);
  } finally {
    n.close(fd);
  }
});

test('RWF_NOWAIT reads what is in the page cache inline; a partial hit at EOF is short; 0 at EOF', () => {
  const fd = open('cached');
  try {
    const data = Buffer.alloc(64 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
    assert.equal(n.pwritev2(fd, [data], 0, 0), data.length); // buffered: now in the page cache
    const dst = [new Uint8Array(4096), new Uint8Array(4096)];
    assert.equal(n.preadv2(fd, dst, 8192, RWF_NOWAIT), 8192);
    assert.deepEqual(Buffer.concat(dst), data.subarray(8192, 16384));
    assert.equal(n.preadv2(fd, [new Uint8Array(4096)], data.length - 100, RWF_NOWAIT), 100);
    assert.equal(n.preadv2(fd, [new Uint8Array(4096)], data.length, RWF_NOWAIT), 0);
  } finally {
    n.close(fd);
  }
});

test('RWF_NOWAIT on data that is not cached: -EAGAIN, and a plain read then gets it', (t) => {
  const fd = open('uncached');
  try {
    assert.equal(n.pwritev2(fd, [Buffer.alloc(256 * 1024, 0x5a)], 0, 0), 256 * 1024);
    assert.equal(n.fsync(fd, true), 0);
    // Clean pages can be dropped; a page still on another CPU's LRU batch may stay (rarely).
    for (let i = 0; i < 3; i++) assert.equal(n.fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    const dst = new Uint8Array(4096);
    const r = n.preadv2(fd, [dst], 128 * 1024, RWF_NOWAIT);
    if (r === 4096) {
      t.skip('the page stayed in the page cache');
      return;
    }
    assert.equal(r, -E.EAGAIN);
    assert.equal(n.preadv2(fd, [dst], 128 * 1024, 0), 4096);
    assert.ok(dst.every((v) => v === 0x5a));
    assert.equal(n.preadv2(fd, [dst], 128 * 1024, RWF_NOWAIT), 4096, 'cached now');
  } finally {
    n.close(fd);
  }
});

test('fadvise: 0, or -errno', () => {
  const fd = open('advice');
  try {
    assert.equal(n.fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    assert.equal(n.fadvise(fd, 0, 0, 12345), -E.EINVAL);
    assert.equal(n.fadvise(123456, 0, 0, POSIX_FADV_DONTNEED), -E.EBADF);
  } finally {
    n.close(fd);
  }
});

test('RWF_NOWAIT where the file system has no NOWAIT support: -EOPNOTSUPP', (t) => {
  // tmpfs has none (reads or writes); ext4 has none for buffered writes.
  let tmpfsDir: string;
  try {
    tmpfsDir = fs.mkdtempSync('/dev/shm/vfsd-native-rwv2-');
  } catch {
    t.skip('no /dev/shm');
    return;
  }
  const fd = n.openat(AT_FDCWD, path.join(tmpfsDir, 'f'), C.O_RDWR | C.O_CREAT, 0o644);
  try {
    assert.ok(fd >= 0);
    assert.equal(n.pwritev2(fd, [new Uint8Array(16)], 0, 0), 16);
    const r = n.preadv2(fd, [new Uint8Array(16)], 0, RWF_NOWAIT);
    assert.ok(r === -E.EOPNOTSUPP || r === 16, `tmpfs NOWAIT read: ${r}`);
    const w = n.pwritev2(fd, [new Uint8Array(16)], 0, RWF_NOWAIT);
    assert.ok(w === -E.EOPNOTSUPP || w === 16, `tmpfs NOWAIT write: ${w}`);
  } finally {
    if (fd >= 0) n.close(fd);
    fs.rmSync(tmpfsDir, { recursive: true, force: true });
  }
});

test('preadv2/pwritev2 errors come back as -errno', () => {
  const fd = open('errs');
  const ro = open('errs', C.O_RDONLY);
  try {
    const b = new Uint8Array(8);
    assert.equal(n.preadv2(123456, [b], 0, 0), -E.EBADF);
    assert.equal(n.pwritev2(ro, [b], 0, 0), -E.EBADF, 'write on a read-only fd');
    assert.equal(n.preadv2(fd, [b], -1, 0), -E.EINVAL, 'negative offset');
    assert.equal(n.preadv2(fd, [b], 2 ** 53 + 2, 0), -E.EINVAL, 'offset past 2^53');
    assert.equal(n.preadv2(fd, [b], 0, 0x40000000), -E.EOPNOTSUPP, 'unknown RWF flag');
    const one = b.subarray(0, 1);
    assert.equal(n.preadv2(fd, new Array<Uint8Array>(IOV_MAX + 1).fill(one), 0, 0), -E.EINVAL, 'more than IOV_MAX');
    assert.equal(n.pwritev2(fd, new Array<Uint8Array>(IOV_MAX).fill(one), 0, 0), IOV_MAX, 'IOV_MAX is fine (heap iovec)');
    assert.equal(n.preadv2(fd, new Array<Uint8Array>(300).fill(one), 0, 0), 300, 'more than the stack iovec');
  } finally {
    n.close(fd);
    n.close(ro);
  }
});

test('preadv2/pwritev2 throw TypeError for a buffer list that is not an array of Uint8Array', () => {
  const fd = open('misuse');
  try {
    const bad: unknown[] = [
      new Uint8Array(4),                     // not an array
      [new Uint8Array(4), new Uint16Array(2)],
      [new DataView(new ArrayBuffer(4))],
      [new ArrayBuffer(4)],
      [4],
      [null],
      'abc',
    ];
    for (const b of bad) {
      assert.throws(() => n.preadv2(fd, b as Uint8Array[], 0, 0), TypeError, `preadv2 ${String(b)}`);
      assert.throws(() => n.pwritev2(fd, b as Uint8Array[], 0, 0), TypeError, `pwritev2 ${String(b)}`);
    }
    assert.throws(() => n.preadv2(fd, [new Uint8Array(1)], 1n as unknown as number, 0), TypeError);
    assert.throws(() => n.preadv2('x' as unknown as number, [new Uint8Array(1)], 0, 0), TypeError);
    assert.equal(fs.fstatSync(fd).size, 0, 'nothing was written');
  } finally {
    n.close(fd);
  }
});

test('preadv2Ranges/pwritev2Ranges: (offset, length) pairs in one window', () => {
  const fd = open('ranges');
  try {
    const win = new Uint8Array(64);
    for (let i = 0; i < 64; i++) win[i] = i;
    const iov = new Float64Array([4, 3, 20, 0, 40, 5, 99, 99]); // the last pair is past count
    assert.equal(n.pwritev2Ranges(fd, win, iov, 3, 10, 0), 8);
    assert.equal(n.lseek(fd, 0, SEEK_CUR), 0, 'position not used or moved');
    const got = Buffer.alloc(18);
    assert.equal(n.pread(fd, got, 0), 18);
    assert.deepEqual([...got.subarray(10)], [4, 5, 6, 40, 41, 42, 43, 44]);
    const dst = new Uint8Array(16);
    assert.equal(n.preadv2Ranges(fd, dst, new Float64Array([8, 2, 1, 4]), 2, 11, RWF_NOWAIT), 6);
    assert.deepEqual([...dst], [0, 40, 41, 42, 43, 0, 0, 0, 5, 6, 0, 0, 0, 0, 0, 0], 'file bytes 11..17 scattered in pair order');
    assert.equal(n.preadv2Ranges(fd, dst, iov, 0, 0, 0), 0, 'no pairs');
    assert.equal(n.preadv2Ranges(fd, dst, new Float64Array([0, 16]), 1, 1 << 20, 0), 0, 'EOF');
  } finally {
    n.close(fd);
  }
});

test('preadv2Ranges/pwritev2Ranges: pairs outside the window and bad counts are -EINVAL; wrong types throw', () => {
  const fd = open('ranges-bad');
  try {
    const win = new Uint8Array(16);
    const bad: Array<[number[], number]> = [
      [[0, 17], 1],         // past the window
      [[16, 1], 1],
      [[-1, 2], 1],
      [[0.5, 2], 1],        // not integers
      [[0, 1.5], 1],
      [[0, 4, 8, NaN], 2],
      [[0, 4], 2],          // count past iov
      [[0, 4], -1],
      [[0, 4], 1025],       // above IOV_MAX
    ];
    for (const [pairs, count] of bad) {
      assert.equal(n.preadv2Ranges(fd, win, new Float64Array(pairs), count, 0, 0), -E.EINVAL, `read ${pairs} x${count}`);
      assert.equal(n.pwritev2Ranges(fd, win, new Float64Array(pairs), count, 0, 0), -E.EINVAL, `write ${pairs} x${count}`);
    }
    assert.equal(fs.fstatSync(fd).size, 0, 'nothing was written');
    const many = new Float64Array(2 * 300);
    for (let i = 0; i < 300; i++) { many[2 * i] = i % 16; many[2 * i + 1] = 1; }
    assert.equal(n.pwritev2Ranges(fd, win, many, 300, 0, 0), 300, 'more pairs than the stack iovec');
    assert.equal(n.preadv2Ranges(123456, win, many, 1, 0, 0), -E.EBADF);
    assert.throws(() => n.preadv2Ranges(fd, [win] as unknown as Uint8Array, many, 1, 0, 0), TypeError);
    assert.throws(() => n.preadv2Ranges(fd, win, [0, 1] as unknown as Float64Array, 1, 0, 0), TypeError);
    assert.throws(() => n.preadv2Ranges(fd, win, new Uint32Array(2) as unknown as Float64Array, 1, 0, 0), TypeError);
    assert.throws(() => n.pwritev2Ranges(fd, win, many, '1' as unknown as number, 0, 0), TypeError);
  } finally {
    n.close(fd);
  }
});

test('preadv2RangesAsync/pwritev2RangesAsync: the pairs on the thread pool; iov reusable at once; a read past EOF is short; -errno through cb', async () => {
  const fd = open('ranges-async');
  try {
    const win = new Uint8Array(1 << 20);
    for (let i = 0; i < win.length; i++) win[i] = (i * 7) & 0xff;
    // 256 pages in reverse order, as scattered as a guest's.
    const iov = new Float64Array(2 * 256);
    for (let i = 0; i < 256; i++) { iov[2 * i] = (255 - i) * 4096; iov[2 * i + 1] = 4096; }
    const want = Buffer.concat(Array.from({ length: 256 }, (_, i) => Buffer.from(win.subarray((255 - i) * 4096, (256 - i) * 4096))));
    const wrote = new Promise<number>((resolve) => assert.equal(n.pwritev2RangesAsync(fd, win, iov, 256, 4096, 0, resolve), 0));
    iov.fill(0); // the caller's array may be reused as soon as the call returns
    assert.equal(await wrote, 1 << 20);
    const back = Buffer.alloc(1 << 20);
    assert.equal(n.pread(fd, back, 4096), 1 << 20);
    assert.ok(back.equals(want), 'the pages landed in pair order');

    const dst = new Uint8Array(3 * 4096);
    const pairs = new Float64Array([8192, 4096, 0, 4096, 4096, 4096]);
    const read = await new Promise<number>((resolve) => assert.equal(n.preadv2RangesAsync(fd, dst, pairs, 3, 4096 + (1 << 20) - 6000, 0, resolve), 0));
    assert.equal(read, 6000, 'short at EOF: what the file has');
    assert.ok(Buffer.from(dst.subarray(8192, 12288)).equals(want.subarray((1 << 20) - 6000, (1 << 20) - 6000 + 4096)));
    assert.ok(Buffer.from(dst.subarray(0, 6000 - 4096)).equals(want.subarray((1 << 20) - 6000 + 4096)));

    assert.equal(await new Promise<number>((resolve) => assert.equal(n.preadv2RangesAsync(123456, dst, pairs, 1, 0, 0, resolve), 0)), -E.EBADF);
    let called = false;
    assert.equal(n.pwritev2RangesAsync(fd, dst, new Float64Array([0, 99999]), 1, 0, 0, () => { called = true; }), -E.EINVAL, 'past the window');
    assert.equal(n.pwritev2RangesAsync(fd, dst, pairs, 0, 0, 0, () => { called = true; }), -E.EINVAL, 'no pairs');
    await new Promise((r) => setImmediate(r));
    assert.equal(called, false, 'a refused call never calls back');
    assert.throws(() => n.preadv2RangesAsync(fd, dst, pairs, 1, 0, 0, 'cb' as unknown as () => void), TypeError);
  } finally {
    n.close(fd);
  }
});
