// eventfd, memfd and shared mappings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { loadNative } from '../../src/native/binding';

const n = loadNative();
const E = os.constants.errno;
const PAGE = 4096;

function memfd(size: number): number {
  const fd = n.memfdCreate('vfsd-test', 0);
  assert.ok(fd >= 0, `memfdCreate: ${fd}`);
  assert.equal(n.ftruncate(fd, size), 0);
  return fd;
}

function mapped(name: string): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name}`)).length;
}

test('eventfd counts writes; eventfdRead returns the sum and then -EAGAIN', () => {
  const fd = n.eventfd(3);
  try {
    assert.ok(fd >= 0);
    assert.equal(n.eventfdWrite(fd, 4), 0);
    assert.equal(n.eventfdRead(fd), 7);
    assert.equal(n.eventfdRead(fd), -E.EAGAIN);
    assert.equal(n.eventfdWrite(fd, 2 ** 40), 0);
    assert.equal(n.eventfdRead(fd), 2 ** 40);
    assert.equal(n.eventfdWrite(fd, -1), -E.EINVAL);
    assert.equal(n.eventfdWrite(fd, NaN), -E.EINVAL);
    assert.throws(() => n.eventfdWrite(fd, 1n as unknown as number), TypeError);
  } finally {
    n.close(fd);
  }
});

test('mmap of a memfd is shared between two mappings and with pread/pwrite', () => {
  const fd = memfd(2 * PAGE);
  const a = n.mmap(fd, 0, 2 * PAGE);
  const b = n.mmap(fd, PAGE, PAGE);
  try {
    assert.ok(a instanceof ArrayBuffer && b instanceof ArrayBuffer);
    assert.equal(a.byteLength, 2 * PAGE);
    assert.equal(b.byteLength, PAGE);
    const va = new Uint8Array(a);
    const vb = new Uint8Array(b);
    va[PAGE + 10] = 0xab;
    assert.equal(vb[10], 0xab, 'write through one mapping is seen through the other');
    vb[11] = 0xcd;
    assert.equal(va[PAGE + 11], 0xcd);
    const r = new Uint8Array(2);
    assert.equal(n.pread(fd, r, PAGE + 10), 2);
    assert.deepEqual([...r], [0xab, 0xcd]);
    assert.equal(n.pwrite(fd, Uint8Array.of(0x11), 5), 1);
    assert.equal(va[5], 0x11, 'file writes are visible in the mapping');
  } finally {
    if (a instanceof ArrayBuffer) n.munmap(a);
    if (b instanceof ArrayBuffer) n.munmap(b);
    n.close(fd);
  }
});

test('munmap detaches the buffer and unmaps now; a second munmap is -EINVAL', () => {
  const fd = n.memfdCreate('vfsd-munmap', 0);
  n.ftruncate(fd, PAGE);
  try {
    const buf = n.mmap(fd, 0, PAGE);
    assert.ok(buf instanceof ArrayBuffer);
    const view = new Uint8Array(buf);
    view[0] = 1;
    assert.equal(mapped('vfsd-munmap'), 1);
    assert.equal(n.munmap(buf), 0);
    assert.equal(buf.byteLength, 0, 'ArrayBuffer is detached');
    assert.equal(view.length, 0, 'views see the detached buffer');
    assert.equal(view[0], undefined);
    assert.equal(mapped('vfsd-munmap'), 0, 'mapping is gone from /proc/self/maps');
    assert.equal(n.munmap(buf), -E.EINVAL);
  } finally {
    n.close(fd);
  }
});

test('munmap refuses an ArrayBuffer it did not map (-EINVAL) and non-ArrayBuffers (TypeError)', () => {
  assert.equal(n.munmap(new ArrayBuffer(PAGE)), -E.EINVAL);
  assert.throws(() => n.munmap(new Uint8Array(4) as unknown as ArrayBuffer), TypeError);
});

test('mmap accepts a 4 GiB length and rejects more, misaligned offsets and bad fds with -errno', () => {
  const fd = memfd(2 ** 32 + PAGE); // sparse: nothing is allocated
  try {
    const big = n.mmap(fd, 0, 2 ** 32);
    assert.ok(big instanceof ArrayBuffer, `mmap 4 GiB: ${String(big)}`);
    assert.equal(big.byteLength, 2 ** 32);
    const v = new Uint8Array(big);
    v[2 ** 32 - 1] = 9;
    const r = new Uint8Array(1);
    assert.equal(n.pread(fd, r, 2 ** 32 - 1), 1);
    assert.equal(r[0], 9, 'offsets above 2^31 address the right byte');
    assert.equal(n.munmap(big), 0);
    assert.equal(n.mmap(fd, 0, 2 ** 32 + 1), -E.EINVAL);
    assert.equal(n.mmap(fd, 0, 0), -E.EINVAL);
    assert.equal(n.mmap(fd, 100, PAGE), -E.EINVAL);
    assert.equal(n.mmap(fd, -PAGE, PAGE), -E.EINVAL);
    assert.equal(n.mmap(-1, 0, PAGE), -E.EBADF);
    const hi = n.mmap(fd, 2 ** 32, PAGE);
    assert.ok(hi instanceof ArrayBuffer, 'offset above 2^32');
    assert.equal(new Uint8Array(hi)[0], 0);
    n.munmap(hi);
  } finally {
    n.close(fd);
  }
});

test('mappings that are collected without munmap are unmapped by the finalizer', async () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const fd = n.memfdCreate('vfsd-gc', 0);
  n.ftruncate(fd, PAGE);
  try {
    (() => {
      for (let i = 0; i < 8; i++) n.mmap(fd, 0, PAGE);
    })();
    for (let i = 0; i < 5 && mapped('vfsd-gc') > 0; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(mapped('vfsd-gc'), 0);
  } finally {
    n.close(fd);
  }
});

test('memfdCreate takes extra flags and always sets close-on-exec; a NUL in the name is -EINVAL', () => {
  const MFD_ALLOW_SEALING = 2;
  const fd = n.memfdCreate('vfsd-seal', MFD_ALLOW_SEALING);
  try {
    assert.ok(fd >= 0);
    const flags = parseInt(/flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1], 8);
    assert.ok(flags & 0o2000000);
    assert.equal(n.memfdCreate('bad\0name', 0), -E.EINVAL);
  } finally {
    n.close(fd);
  }
});
