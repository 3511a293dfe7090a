// The layers of the passthrough (src/passthrough/layer.ts, read-only.ts) over a recording file
// system: ForwardingFs passes every op down unchanged; ReadOnlyFs refuses every change with EROFS
// without reaching the host, and passes everything else down. Every op of the stack is named in
// one of the lists below, so a new op cannot reach --readonly unclassified.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ForwardingFs, type FsLayer } from '../../../src/passthrough/layer';
import { ReadOnlyFs, writes } from '../../../src/passthrough/read-only';
import { JOURNALED_OPS } from '../../../src/fuse/ops';
import { E } from '../../../src/linux/constants';
import {
  O_APPEND, O_DIRECT, O_DIRECTORY, O_NONBLOCK, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, R_OK, W_OK, X_OK,
} from '../../../src/linux/constants';

/** Ops that finish through a callback (their last argument). */
const CALLBACK_OPS = new Set(['read', 'readRanges', 'write', 'writeRanges', 'fsync', 'setlk']);
/** --readonly answers these EROFS, whatever their arguments. */
const CHANGES = ['setattr', 'symlink', 'mknod', 'mkdir', 'unlink', 'rmdir', 'rename', 'link', 'create', 'tmpfile',
  'write', 'writeRanges', 'fallocate', 'copyFileRange', 'setxattr', 'removexattr'];
/** --readonly decides these by their arguments (tested below). */
const DEPENDS = ['open', 'access'];
/** --readonly passes these down unchanged. */
const READS = ['init', 'destroy', 'lookup', 'forget', 'getattr', 'readlink', 'read', 'readRanges', 'statfs', 'release',
  'flush', 'fsync', 'getxattr', 'listxattr', 'opendir', 'readdir', 'releasedir', 'fsyncdir', 'getlk', 'setlk',
  'lseek', 'syncfs', 'nameIno', 'hasXattr', 'lookupCount', 'appendSize'];

/** Every op a layer serves: the methods of the base every layer extends. */
function ops(): string[] {
  return Object.getOwnPropertyNames(ForwardingFs.prototype).filter((n) => {
    const d = Object.getOwnPropertyDescriptor(ForwardingFs.prototype, n)!;
    return n !== 'constructor' && typeof d.value === 'function';
  });
}

interface Call { op: string; args: unknown[] }

/** A file system that records each call and answers with a token of its own. */
function recorder(): { fs: FsLayer; calls: Call[]; token: (op: string) => string } {
  const calls: Call[] = [];
  const token = (op: string): string => `answer of ${op}`;
  const fs = new Proxy({}, {
    get(_t, op: string) {
      if (op === 'entryTimeout') return 11;
      if (op === 'attrTimeout') return 12;
      return (...args: unknown[]) => {
        calls.push({ op, args });
        if (CALLBACK_OPS.has(op)) (args[args.length - 1] as (r: unknown) => void)(token(op));
        return token(op);
      };
    },
  }) as FsLayer;
  return { fs, calls, token };
}

/** Distinct arguments for op (a callback last where it takes one), and what it answered. */
function call(layer: FsLayer, op: string): { args: unknown[]; ret: unknown; cbGot: unknown[] } {
  const fn = (layer as unknown as Record<string, (...a: unknown[]) => unknown>)[op]!;
  const arity = (ForwardingFs.prototype as unknown as Record<string, (...a: unknown[]) => unknown>)[op]!.length;
  const cbGot: unknown[] = [];
  const args: unknown[] = Array.from({ length: arity }, (_, i) => ({ arg: i, of: op }));
  if (CALLBACK_OPS.has(op)) args[arity - 1] = (r: unknown) => { cbGot.push(r); };
  return { args, ret: fn.apply(layer, args), cbGot };
}

test('every op of the stack is classified for --readonly, once', () => {
  const all = [...CHANGES, ...DEPENDS, ...READS];
  assert.equal(new Set(all).size, all.length, 'no op in two lists');
  assert.deepEqual([...ops()].sort(), [...all].sort());
});

test('ForwardingFs passes every op down with the same arguments, and its answer back', () => {
  const { fs, calls, token } = recorder();
  const layer = new ForwardingFs(fs);
  for (const op of ops()) {
    calls.length = 0;
    const { args, ret, cbGot } = call(layer, op);
    assert.equal(calls.length, 1, `${op}: one call down`);
    assert.equal(calls[0]!.op, op, `${op}: the same op`);
    assert.deepEqual(calls[0]!.args.length, args.length, `${op}: every argument`);
    calls[0]!.args.forEach((a, i) => assert.equal(a, args[i], `${op}: argument ${i} passed as is`));
    if (CALLBACK_OPS.has(op)) assert.deepEqual(cbGot, [token(op)], `${op}: the callback gets the answer`);
    else if (op !== 'forget' && op !== 'destroy') assert.equal(ret, token(op), `${op}: the answer comes back`);
  }
  assert.equal(layer.entryTimeout, 11);
  assert.equal(layer.attrTimeout, 12);
});

test('ReadOnlyFs answers every change EROFS and never reaches the host', () => {
  const { fs, calls } = recorder();
  const ro = new ReadOnlyFs(fs);
  for (const op of CHANGES) {
    const { ret, cbGot } = call(ro, op);
    if (CALLBACK_OPS.has(op)) assert.deepEqual(cbGot, [-E.EROFS], op);
    else assert.equal(ret, -E.EROFS, op);
  }
  assert.deepEqual(calls.map((c) => c.op), []);
});

test('ReadOnlyFs passes reads, listings, locks and syncs down unchanged', () => {
  const { fs, calls, token } = recorder();
  const ro = new ReadOnlyFs(fs);
  for (const op of READS) {
    calls.length = 0;
    const { ret, cbGot } = call(ro, op);
    assert.deepEqual(calls.map((c) => c.op), [op]);
    if (CALLBACK_OPS.has(op)) assert.deepEqual(cbGot, [token(op)], op);
    else if (op !== 'forget' && op !== 'destroy') assert.equal(ret, token(op), op);
  }
  assert.equal(ro.entryTimeout, 11);
});

test('ReadOnlyFs: OPEN for reading goes down; write access or O_TRUNC is EROFS', () => {
  const { fs, calls } = recorder();
  const ro = new ReadOnlyFs(fs);
  const ctx = { uid: 1, gid: 1, pid: 1 };
  for (const flags of [O_RDONLY, O_RDONLY | O_APPEND, O_RDONLY | O_NONBLOCK | O_DIRECT, O_RDONLY | O_DIRECTORY]) {
    calls.length = 0;
    ro.open(ctx, 5, flags);
    assert.deepEqual(calls, [{ op: 'open', args: [ctx, 5, flags] }], `0${flags.toString(8)}`);
    assert.equal(writes(flags), false);
  }
  calls.length = 0;
  for (const flags of [O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND, O_RDWR | O_TRUNC]) {
    assert.equal(ro.open(ctx, 5, flags), -E.EROFS, `0${flags.toString(8)}`);
    assert.equal(writes(flags), true);
  }
  assert.equal(calls.length, 0);
});

test('ReadOnlyFs: ACCESS asking for write permission is EROFS (access(2)); other modes go down', () => {
  const { fs, calls } = recorder();
  const ro = new ReadOnlyFs(fs);
  const ctx = { uid: 1, gid: 1, pid: 1 };
  assert.equal(ro.access(ctx, 5, W_OK), -E.EROFS);
  assert.equal(ro.access(ctx, 5, R_OK | W_OK), -E.EROFS);
  assert.equal(calls.length, 0);
  for (const mask of [0, R_OK, X_OK, R_OK | X_OK]) ro.access(ctx, 5, mask);
  assert.deepEqual(calls.map((c) => c.args[2]), [0, R_OK, X_OK, R_OK | X_OK]);
});

test('every op the journal treats as a change (all journaled ops but FORGET) is refused by --readonly', () => {
  // Journaled op name -> the FileSystem method(s) it runs.
  const method: Record<string, string[]> = {
    SETATTR: ['setattr'], SYMLINK: ['symlink'], MKNOD: ['mknod'], MKDIR: ['mkdir'], UNLINK: ['unlink'], RMDIR: ['rmdir'],
    RENAME: ['rename'], RENAME2: ['rename'], LINK: ['link'], CREATE: ['create'], TMPFILE: ['tmpfile'],
    WRITE: ['write', 'writeRanges'], FALLOCATE: ['fallocate'], COPY_FILE_RANGE: ['copyFileRange'],
    SETXATTR: ['setxattr'], REMOVEXATTR: ['removexattr'],
  };
  for (const name of JOURNALED_OPS) {
    if (name === 'FORGET') continue; // the guest's lookup count, not the share
    assert.ok(method[name], `${name} is journaled: decide what --readonly does with it`);
    for (const m of method[name]!) assert.ok(CHANGES.includes(m), `${name} (${m}) is refused`);
  }
});
