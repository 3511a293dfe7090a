// The op table (src/fuse/ops.ts): one entry per served opcode, named as fuse.h names it, with
// the reply room its fixed-size reply needs, no reply for the ops the kernel expects none for,
// and a replay rule exactly for the non-idempotent ops (docs/crash-consistency.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OP, OP_NAMES, SIZE } from '../../../src/fuse/abi';
import { OPS, JOURNALED_OPS } from '../../../src/fuse/ops';

/** What the Rust and C virtiofsd serve (and lock ops, which we always serve): we serve at least that. */
const REQUIRED = ['INIT', 'DESTROY', 'LOOKUP', 'FORGET', 'BATCH_FORGET', 'GETATTR', 'SETATTR', 'READLINK', 'SYMLINK', 'MKNOD',
  'MKDIR', 'UNLINK', 'RMDIR', 'RENAME', 'RENAME2', 'LINK', 'OPEN', 'READ', 'WRITE', 'STATFS', 'RELEASE', 'FSYNC', 'SETXATTR',
  'GETXATTR', 'LISTXATTR', 'REMOVEXATTR', 'FLUSH', 'OPENDIR', 'READDIR', 'READDIRPLUS', 'RELEASEDIR', 'FSYNCDIR', 'GETLK',
  'SETLK', 'SETLKW', 'ACCESS', 'CREATE', 'INTERRUPT', 'FALLOCATE', 'LSEEK', 'COPY_FILE_RANGE', 'SYNCFS', 'TMPFILE', 'IOCTL'];

test('every entry is under its fuse.h name and opcode, and every op the peers serve has one', () => {
  OPS.forEach((op, code) => { if (op) assert.equal(op.name, OP_NAMES[code], `opcode ${code}`); });
  const served = new Set(OPS.filter((op) => op !== undefined).map((op) => op!.name));
  assert.deepEqual(REQUIRED.filter((n) => !served.has(n)), []);
  for (const n of REQUIRED) assert.ok(`FUSE_${n}` in OP, n);
});

test('fixed-size replies are checked for room before the op runs', () => {
  const want: Record<string, number> = {
    LOOKUP: SIZE.entry_out, GETATTR: SIZE.attr_out, SETATTR: SIZE.attr_out, SYMLINK: SIZE.entry_out,
    MKNOD: SIZE.entry_out, MKDIR: SIZE.entry_out, LINK: SIZE.entry_out, OPEN: SIZE.open_out, OPENDIR: SIZE.open_out,
    CREATE: SIZE.entry_out + SIZE.open_out, TMPFILE: SIZE.entry_out + SIZE.open_out, WRITE: SIZE.write_out,
    STATFS: SIZE.kstatfs, INIT: SIZE.init_out, GETLK: SIZE.lk_out, LSEEK: SIZE.lseek_out, COPY_FILE_RANGE: SIZE.write_out,
  };
  for (const op of OPS) {
    if (op) assert.equal(op.minReply ?? 0, want[op.name] ?? 0, op.name);
  }
});

test('FORGET, BATCH_FORGET and INTERRUPT get no reply; every other op does', () => {
  const none = OPS.filter((op) => op?.noReply).map((op) => op!.name).sort();
  assert.deepEqual(none, ['BATCH_FORGET', 'FORGET', 'INTERRUPT']);
});

test('exactly the non-idempotent ops are answered through the journal', () => {
  assert.deepEqual([...JOURNALED_OPS].sort(), [
    'COPY_FILE_RANGE', 'CREATE', 'FALLOCATE', 'FORGET', 'LINK', 'MKDIR', 'MKNOD', 'REMOVEXATTR', 'RENAME', 'RENAME2',
    'RMDIR', 'SETATTR', 'SETXATTR', 'SYMLINK', 'TMPFILE', 'UNLINK', 'WRITE',
  ]);
});
