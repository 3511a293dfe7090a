// PassthroughFs READ/WRITE over the shim's preadv2/pwritev2: inline with RWF_NOWAIT when the page
// cache has the data, the thread pool for the rest (real uncached data, and a native that is made
// to answer -EAGAIN, short, or -EOPNOTSUPP), and the handle kept open while a pool op runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, RWF_NOWAIT, STAT_SLOTS, type NativeBinding } from '../../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';

const real = loadNative();
const E = os.constants.errno;
const C = fs.constants;
const CTX = { uid: 0, gid: 0, pid: 1 };

let dir = '';
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-pio-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Call { op: 'preadv2' | 'pwritev2'; offset: number; len: number; flags: number; r: number; ranges: boolean }

/**
 * The real shim, with preadv2/pwritev2 logged and, for RWF_NOWAIT calls, answered by `nowait`
 * when it returns a number: a count k > 0 means "do the real call on the first k bytes only".
 */
function wrap(nowait?: (op: Call['op'], offset: number, len: number) => number | undefined): { native: NativeBinding; calls: Call[] } {
  const calls: Call[] = [];
  const io = (op: Call['op'], ranges = false) => (fd: number, bufs: readonly Uint8Array[], offset: number, flags: number): number => {
    const len = bufs.reduce((s, b) => s + b.length, 0);
    let r: number;
    const forced = flags & RWF_NOWAIT && nowait ? nowait(op, offset, len) : undefined;
    if (forced !== undefined && forced > 0) {
      r = real[op](fd, firstBytes(bufs, forced), offset, 0);
    } else if (forced !== undefined) {
      r = forced;
    } else {
      r = real[op](fd, bufs, offset, flags);
    }
    calls.push({ op, offset, len, flags, r, ranges });
    return r;
  };
  const native = Object.create(real) as NativeBinding;
  native.preadv2 = io('preadv2');
  native.pwritev2 = io('pwritev2');
  // The ranges forms go through the same code with the pairs as views (checked like the shim).
  const ranges = (op: Call['op']) => (fd: number, win: Uint8Array, iov: Float64Array, count: number, offset: number, flags: number): number => {
    const views: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      assert.ok(iov[2 * i]! + iov[2 * i + 1]! <= win.length, 'pair inside the window');
      views.push(win.subarray(iov[2 * i]!, iov[2 * i]! + iov[2 * i + 1]!));
    }
    return io(op, true)(fd, views, offset, flags);
  };
  native.preadv2Ranges = ranges('preadv2');
  native.pwritev2Ranges = ranges('pwritev2');
  return { native, calls };
}

/** The views covering the first k bytes of bufs. */
function firstBytes(bufs: readonly Uint8Array[], k: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (k === 0) break;
    const take = Math.min(k, b.length);
    out.push(b.subarray(0, take));
    k -= take;
  }
  return out;
}

function mkfs(native: NativeBinding, syncIo = false): PassthroughFs {
  return new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, memfdState: false, syncIo }, silentLogger);
}

function openFile(pfs: PassthroughFs, name: string, flags: number): number {
  const st = new BigUint64Array(STAT_SLOTS);
  const e = pfs.lookup(CTX, 1, name, st);
  assert.ok(typeof e !== 'number', `lookup ${name}: ${String(e)}`);
  const o = pfs.open(CTX, e.nodeid, flags);
  assert.ok(typeof o !== 'number', `open ${name}: ${String(o)}`);
  return o.fh;
}

/** read() with a note of whether it completed before returning (inline) or later (pool). */
function read(pfs: PassthroughFs, fh: number, offset: number, dst: Uint8Array[]): Promise<{ r: number; inline: boolean }> {
  return new Promise((resolve) => {
    let returned = false;
    pfs.read(CTX, fh, offset, dst, (r) => resolve({ r, inline: !returned }));
    returned = true;
  });
}

function write(pfs: PassthroughFs, fh: number, offset: number, src: Uint8Array[]): Promise<{ r: number; inline: boolean }> {
  return new Promise((resolve) => {
    let returned = false;
    pfs.write(CTX, fh, offset, src, 0, (r) => resolve({ r, inline: !returned }));
    returned = true;
  });
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

/** Pages of 4 KiB, as a guest posts them. */
function pages(n: number): Uint8Array[] {
  return Array.from({ length: n }, () => new Uint8Array(4096));
}

test('a cached READ completes inline with one RWF_NOWAIT call', async () => {
  const data = pattern(64 * 1024, 1);
  fs.writeFileSync(path.join(dir, 'cached'), data);
  const { native, calls } = wrap();
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'cached', C.O_RDONLY);
    const dst = pages(2);
    const r = await read(pfs, fh, 4096, dst);
    assert.deepEqual(r, { r: 8192, inline: true });
    assert.deepEqual(Buffer.concat(dst), data.subarray(4096, 12288));
    assert.deepEqual(calls.map((c) => [c.op, c.flags, c.r]), [['preadv2', RWF_NOWAIT, 8192]]);
    // Short at EOF: one more NOWAIT call sees 0 (EOF), still inline, no pool.
    calls.length = 0;
    const tail = await read(pfs, fh, data.length - 100, pages(1));
    assert.deepEqual(tail, { r: 100, inline: true });
    assert.deepEqual(calls.map((c) => c.r), [100, 0]);
  } finally {
    pfs.close();
  }
});

test('an uncached READ falls back to the pool; the handle is held until it ends, even across RELEASE', async (t) => {
  const len = 256 * 1024;
  fs.writeFileSync(path.join(dir, 'cold'), pattern(len, 3));
  // Out of the page cache: written back, then dropped.
  const cfd = real.openat(-100, path.join(dir, 'cold'), C.O_RDONLY, 0);
  assert.equal(real.fsync(cfd, true), 0);
  for (let i = 0; i < 3; i++) assert.equal(real.fadvise(cfd, 0, 0, 4 /* POSIX_FADV_DONTNEED */), 0);
  real.close(cfd);

  const { native, calls } = wrap();
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'cold', C.O_RDONLY);
    const h = pfs.files.get(fh)!;
    const dst = pages(4);
    const p = read(pfs, fh, 64 * 1024, dst);
    if (calls[0]?.r === 16384) {
      await p; // rarely, a page stays cached (it sat in another CPU's LRU batch)
      t.skip('the data stayed in the page cache');
      return;
    }
    assert.deepEqual(calls.map((c) => [c.flags, c.r]), [[RWF_NOWAIT, -E.EAGAIN]], 'tried inline first');
    assert.equal(h.busy, 1, 'held while the pool reads');
    assert.equal(pfs.release(CTX, fh, 0, 0, 0n), 0, 'RELEASE while the read is in flight');
    assert.ok(real.getfl(h.fd) >= 0, 'the fd stays open under the pool read');
    const r = await p;
    assert.deepEqual(r, { r: 16384, inline: false });
    assert.deepEqual(Buffer.concat(dst), pattern(len, 3).subarray(64 * 1024, 80 * 1024));
    assert.equal(h.busy, 0);
    assert.equal(real.getfl(h.fd), -E.EBADF, 'closed once the read ended');
  } finally {
    pfs.close();
  }
});

test('a READ that NOWAIT serves in part is finished on the pool, never replied short', async () => {
  const data = pattern(64 * 1024, 5);
  fs.writeFileSync(path.join(dir, 'partial'), data);
  // First NOWAIT call: 5000 bytes (a partial hit that ends inside a page); then -EAGAIN.
  let n = 0;
  const { native, calls } = wrap((op) => (op === 'preadv2' ? (n++ === 0 ? 5000 : -E.EAGAIN) : undefined));
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'partial', C.O_RDONLY);
    const dst = pages(4);
    const r = await read(pfs, fh, 8192, dst);
    assert.deepEqual(r, { r: 16384, inline: false });
    assert.deepEqual(Buffer.concat(dst), data.subarray(8192, 8192 + 16384));
    assert.deepEqual(calls.map((c) => [c.offset, c.len, c.r]), [[8192, 16384, 5000], [13192, 11384, -E.EAGAIN]]);
    assert.equal(pfs.files.get(fh)!.busy, 0);
  } finally {
    pfs.close();
  }
});

test('-EOPNOTSUPP from NOWAIT: reads of the handle go to the pool for good, writes are done inline without NOWAIT; a new handle tries again', async () => {
  const data = pattern(8192, 9);
  fs.writeFileSync(path.join(dir, 'nonowait'), data);
  const { native, calls } = wrap(() => -E.EOPNOTSUPP);
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'nonowait', C.O_RDWR);
    for (let i = 0; i < 2; i++) {
      const dst = pages(1);
      assert.deepEqual(await read(pfs, fh, 4096, dst), { r: 4096, inline: false });
      assert.deepEqual(Buffer.from(dst[0]!), data.subarray(4096));
    }
    assert.deepEqual(await write(pfs, fh, 0, [Buffer.from('hello')]), { r: 5, inline: true });
    assert.deepEqual(await write(pfs, fh, 5, [Buffer.from('!')]), { r: 1, inline: true });
    assert.deepEqual(calls.filter((c) => c.flags & RWF_NOWAIT).map((c) => c.op), ['preadv2', 'pwritev2'], 'one try each');
    assert.deepEqual(calls.filter((c) => c.op === 'pwritev2' && c.flags === 0).map((c) => [c.offset, c.len]), [[0, 5], [5, 1]], 'the writes themselves, inline');
    assert.equal(fs.readFileSync(path.join(dir, 'nonowait')).subarray(0, 6).toString(), 'hello!');
    calls.length = 0;
    const fh2 = openFile(pfs, 'nonowait', C.O_RDONLY);
    await read(pfs, fh2, 0, pages(1));
    assert.equal(calls[0]!.flags, RWF_NOWAIT, 'a new handle tries NOWAIT again');
  } finally {
    pfs.close();
  }
});

test('a WRITE that NOWAIT does in part is finished on the pool', async () => {
  fs.writeFileSync(path.join(dir, 'wpart'), Buffer.alloc(0));
  let n = 0;
  const { native, calls } = wrap((op) => (op === 'pwritev2' ? (n++ === 0 ? 3000 : -E.EAGAIN) : undefined));
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'wpart', C.O_RDWR);
    const src = [pattern(4096, 11), pattern(4096, 12)];
    assert.deepEqual(await write(pfs, fh, 100, src), { r: 8192, inline: false });
    assert.deepEqual(calls.map((c) => [c.offset, c.len, c.r]), [[100, 8192, 3000], [3100, 5192, -E.EAGAIN]]);
    const got = fs.readFileSync(path.join(dir, 'wpart'));
    assert.equal(got.length, 100 + 8192);
    assert.deepEqual(got.subarray(100), Buffer.concat(src));
  } finally {
    pfs.close();
  }
});

test('WRITE completes inline when NOWAIT does all of it; errors are replied as -errno', async () => {
  fs.writeFileSync(path.join(dir, 'winline'), Buffer.alloc(0));
  const { native } = wrap((op, _off, len) => (op === 'pwritev2' ? len : undefined));
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'winline', C.O_RDWR);
    assert.deepEqual(await write(pfs, fh, 0, [Buffer.from('abc'), Buffer.from('def')]), { r: 6, inline: true });
    assert.equal(fs.readFileSync(path.join(dir, 'winline'), 'latin1'), 'abcdef');
    const ro = openFile(pfs, 'winline', C.O_RDONLY);
    const r = await write(pfs, ro, 0, [Buffer.from('x')]);
    assert.equal(r.r, -E.EBADF);
    assert.deepEqual(await read(pfs, 999, 0, pages(1)), { r: -E.EBADF, inline: true });
  } finally {
    pfs.close();
  }
});

test('--thread-pool-size=0: plain preadv2/pwritev2 on the event loop, no NOWAIT', async () => {
  fs.writeFileSync(path.join(dir, 'sync'), pattern(8192, 13));
  const { native, calls } = wrap();
  const pfs = mkfs(native, true);
  try {
    const fh = openFile(pfs, 'sync', C.O_RDWR);
    assert.deepEqual(await write(pfs, fh, 8192, [Buffer.from('tail')]), { r: 4, inline: true });
    const dst = pages(3);
    assert.deepEqual(await read(pfs, fh, 0, dst), { r: 8196, inline: true });
    assert.equal(Buffer.from(dst[2]!.subarray(0, 4)).toString(), 'tail');
    assert.deepEqual(calls.map((c) => [c.op, c.flags]), [['pwritev2', 0], ['preadv2', 0]]);
  } finally {
    pfs.close();
  }
});

/** Guest-like buffers: n pages at every other page of one window, as (offset, length) pairs. */
function windowPages(n: number): { win: Uint8Array; iov: Float64Array; data: () => Buffer } {
  const win = new Uint8Array(2 * n * 4096 + 4096);
  const iov = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) { iov[2 * i] = 4096 + 2 * i * 4096; iov[2 * i + 1] = 4096; }
  const data = (): Buffer => Buffer.concat(Array.from({ length: n }, (_, i) => win.subarray(iov[2 * i]!, iov[2 * i]! + 4096)));
  return { win, iov, data };
}

function readRanges(pfs: PassthroughFs, fh: number, offset: number, w: { win: Uint8Array; iov: Float64Array }, count: number): Promise<{ r: number; inline: boolean }> {
  return new Promise((resolve) => {
    let returned = false;
    pfs.readRanges(CTX, fh, offset, w.win, w.iov, count, (r) => resolve({ r, inline: !returned }));
    returned = true;
  });
}

function writeRanges(pfs: PassthroughFs, fh: number, offset: number, w: { win: Uint8Array; iov: Float64Array }, count: number): Promise<{ r: number; inline: boolean }> {
  return new Promise((resolve) => {
    let returned = false;
    pfs.writeRanges(CTX, fh, offset, w.win, w.iov, count, 0, (r) => resolve({ r, inline: !returned }));
    returned = true;
  });
}

test('readRanges (the session form): a cached READ is one inline call; a partial hit goes on inline, then in one pool call over the rest of the pairs', async () => {
  const data = pattern(256 * 1024, 21);
  fs.writeFileSync(path.join(dir, 'rr'), data);
  let partial = false;
  const { native, calls } = wrap((op) => (op === 'preadv2' && partial ? (calls.length === 0 ? 6000 : -E.EAGAIN) : undefined));
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'rr', C.O_RDONLY);
    const w = windowPages(8);
    assert.deepEqual(await readRanges(pfs, fh, 16384, w, 8), { r: 32768, inline: true });
    assert.deepEqual(w.data(), data.subarray(16384, 16384 + 32768));
    assert.deepEqual(calls.map((c) => [c.ranges, c.flags, c.r]), [[true, RWF_NOWAIT, 32768]]);

    calls.length = 0;
    partial = true;
    const w2 = windowPages(8);
    assert.deepEqual(await readRanges(pfs, fh, 65536, w2, 8), { r: 32768, inline: false });
    assert.deepEqual(w2.data(), data.subarray(65536, 65536 + 32768), 'the pool finished what NOWAIT left');
    assert.deepEqual(calls.map((c) => [c.ranges, c.offset, c.r]), [[true, 65536, 6000], [true, 71536, -E.EAGAIN]], 'the rest tried inline once more, then the pool');
    assert.equal(pfs.files.get(fh)!.busy, 0);
    // EOF inside the request: short, inline.
    calls.length = 0;
    partial = false;
    assert.deepEqual(await readRanges(pfs, fh, data.length - 5000, windowPages(2), 2), { r: 5000, inline: true });
  } finally {
    pfs.close();
  }
});

test('writeRanges: what the file system will not do with NOWAIT (ext4 buffered writes) is written inline without it, once tried', async () => {
  fs.writeFileSync(path.join(dir, 'wr'), Buffer.alloc(0));
  const { native, calls } = wrap((op) => (op === 'pwritev2' ? -E.EOPNOTSUPP : undefined));
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'wr', C.O_RDWR);
    const w = windowPages(3);
    for (let i = 0; i < 3; i++) w.win.set(pattern(4096, 30 + i), w.iov[2 * i]!);
    assert.deepEqual(await writeRanges(pfs, fh, 4096, w, 3), { r: 12288, inline: true });
    assert.deepEqual(await writeRanges(pfs, fh, 0, w, 1), { r: 4096, inline: true });
    assert.deepEqual(calls.filter((c) => c.flags & RWF_NOWAIT).length, 1, 'one NOWAIT try per handle');
    const got = fs.readFileSync(path.join(dir, 'wr'));
    assert.deepEqual(got, Buffer.concat([pattern(4096, 30), w.data()]));
    assert.equal(pfs.files.get(fh)!.busy, 0);
  } finally {
    pfs.close();
  }
});

test('an inline write that took long sends the next writes to the pool for a while', async () => {
  fs.writeFileSync(path.join(dir, 'wslow'), Buffer.alloc(0));
  const { native, calls } = wrap(() => -E.EOPNOTSUPP);
  const plain = native.pwritev2;
  let stallMs = 0;
  native.pwritev2 = (fd, bufs, offset, flags) => {
    if (flags === 0 && stallMs > 0) {
      const until = performance.now() + stallMs;
      while (performance.now() < until) { /* a write stuck in dirty-page throttling */ }
    }
    return plain(fd, bufs, offset, flags);
  };
  const pfs = mkfs(native);
  try {
    const fh = openFile(pfs, 'wslow', C.O_RDWR);
    assert.deepEqual(await write(pfs, fh, 0, [Buffer.from('a')]), { r: 1, inline: true }, 'fast: inline');
    stallMs = 15;
    assert.deepEqual(await write(pfs, fh, 1, [Buffer.from('b')]), { r: 1, inline: true }, 'slow, but already running inline');
    stallMs = 0;
    assert.deepEqual(await write(pfs, fh, 2, [Buffer.from('c')]), { r: 1, inline: false }, 'after a slow one: the pool');
    assert.equal(fs.readFileSync(path.join(dir, 'wslow'), 'utf8'), 'abc');
    assert.equal(calls.filter((c) => c.op === 'pwritev2' && c.flags === 0).length, 2, 'the third went through the pool, not the shim');
  } finally {
    pfs.close();
  }
});

test('readRanges/writeRanges with --thread-pool-size=0: flags 0, inline', async () => {
  fs.writeFileSync(path.join(dir, 'rsync'), Buffer.alloc(0));
  const { native, calls } = wrap();
  const pfs = mkfs(native, true);
  try {
    const fh = openFile(pfs, 'rsync', C.O_RDWR);
    const w = windowPages(2);
    w.win.fill(7);
    assert.deepEqual(await writeRanges(pfs, fh, 0, w, 2), { r: 8192, inline: true });
    const r = windowPages(2);
    assert.deepEqual(await readRanges(pfs, fh, 0, r, 2), { r: 8192, inline: true });
    assert.ok(r.data().every((b) => b === 7));
    assert.deepEqual(calls.map((c) => [c.op, c.ranges, c.flags]), [['pwritev2', true, 0], ['preadv2', true, 0]]);
    assert.deepEqual(await readRanges(pfs, 4242, 0, r, 2), { r: -E.EBADF, inline: true });
  } finally {
    pfs.close();
  }
});
