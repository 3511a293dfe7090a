// The open-file map across a worker restart when the image lies (found by the state-recovery
// fuzz target): the keeper's fd for a handle must be of the node the record names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, ST, STAT_SLOTS } from '../../src/native/binding';
import { HandleTable } from '../../src/passthrough/handle-table';
import { MemfdBacking } from '../../src/state/slot-table';
import { fdKey, type FdRegistry } from '../../src/state/fd-registry';

const native = loadNative();
const O_RDONLY = 0, O_CLOEXEC = 0o2000000, AT_FDCWD = -100;
const KIND = 2;

function registry(): FdRegistry & { log: string[] } {
  const log: string[] = [];
  return { log, put: (k) => { log.push(`put ${k}`); }, putLazy: (k) => { log.push(`put ${k}`); }, del: (k) => { log.push(`del ${k}`); }, flush() {} };
}

function open(p: string): number {
  const fd = native.openat(AT_FDCWD, p, O_RDONLY | O_CLOEXEC, 0);
  assert.ok(fd >= 0);
  return fd;
}

function ino(fd: number): bigint {
  const st = new BigUint64Array(STAT_SLOTS);
  assert.equal(native.statFd(fd, st), 0);
  return st[ST.ino]!;
}

test('a recovered handle whose keeper fd is another file is opened again from the node its record names', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-handles-'));
  for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), n);
  const inoA = fs.statSync(path.join(dir, 'a'), { bigint: true }).ino;
  const first = new HandleTable(native, new MemfdBacking(native, 'test-files'), KIND, fdKey.file);
  const h = first.add(7, open(path.join(dir, 'a')), O_RDONLY); // node 7 is a
  const reg = registry();
  // The keeper's fd for this handle is of b (the record and the fd disagree).
  const recovered = new Map([[fdKey.file(h.fh), open(path.join(dir, 'b'))]]);
  const reopened: number[] = [];
  const t = new HandleTable(native, new MemfdBacking(native, 'test-files', native.dup(first.stateFd)), KIND, fdKey.file, reg, recovered,
    (nodeid) => { reopened.push(nodeid); return open(path.join(dir, 'a')); },
    (nodeid, fd) => nodeid === 7 && ino(fd) === inoA);
  assert.deepEqual(reopened, [7], 'node 7 opened again');
  assert.equal(ino(t.get(h.fh)!.fd), inoA, 'the handle is of a, as its record says');
  assert.deepEqual(reg.log, [`del ${fdKey.file(h.fh)}`, `put ${fdKey.file(h.fh)}`], 'the keeper swaps its fd');
  assert.equal(t.lost, 0);
  fs.rmSync(dir, { recursive: true });
});

test('a recovered handle whose node does not exist is dropped, with the keeper\'s fd', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-handles-'));
  fs.writeFileSync(path.join(dir, 'a'), 'a');
  const first = new HandleTable(native, new MemfdBacking(native, 'test-files'), KIND, fdKey.file);
  const h = first.add(9, open(path.join(dir, 'a')), O_RDONLY);
  const reg = registry();
  const recovered = new Map([[fdKey.file(h.fh), open(path.join(dir, 'a'))]]);
  const t = new HandleTable(native, new MemfdBacking(native, 'test-files', native.dup(first.stateFd)), KIND, fdKey.file, reg, recovered,
    () => -9, () => false);
  assert.equal(t.get(h.fh), undefined, 'its ops get EBADF');
  assert.equal(t.lost, 1);
  assert.deepEqual(reg.log, [`del ${fdKey.file(h.fh)}`]);
  fs.rmSync(dir, { recursive: true });
});
