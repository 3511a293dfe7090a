// The keeper <-> worker protocol (src/protocol/worker-channel.ts): what every release sends is
// read by this one, and a keeper refuses a worker's packet that is not a message (the worker
// parses guest input; it is not trusted).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeToKeeper, decodeToWorker } from '../../../src/protocol/worker-channel';
import { DEFAULT_FS_OPTIONS } from '../../../src/passthrough/passthrough-fs';

const fs = { ...DEFAULT_FS_OPTIONS, sharedDir: '/srv' };

test('a keeper reads what workers of every release send', () => {
  const msgs: unknown[] = [
    { t: 'hello', pid: 7 },                                   // release 1 and 2
    { t: 'hello', pid: 7, pings: true },                      // release 3
    { t: 'hello', pid: 7, pings: true, maps: true },          // release 4
    { t: 'ready', pid: 7 },
    { t: 'ring-stopped', index: 1, seq: 4, base: 65535 },
    { t: 'fd-put', k: 'i12' }, { t: 'fd-del', k: 'i12' },     // release 1
    { t: 'fd-ops', ops: [['i1', 1], ['f2', 0]] },              // release 2
    { t: 'fuse-init', req: { major: 7, minor: 38, maxReadahead: 131072, flags: '18446744073709551615' } },
    { t: 'fuse-init', req: null },
    { t: 'pong', n: 3 }, { t: 'bye' },
  ];
  for (const m of msgs) assert.notEqual(decodeToKeeper(m), null, JSON.stringify(m));
  assert.deepEqual(decodeToKeeper({ t: 'hello', pid: 7 }), { t: 'hello', pid: 7, pings: false, maps: false }, 'no pings: not pinged; no maps: not fed a mapping');
});

test('a keeper refuses a worker\'s packet that is not a message, field by field', () => {
  const bad: unknown[] = [
    null, 'hello', [], { t: 42 }, { t: 'nonsense' },
    { t: 'hello', pid: 0 }, { t: 'hello', pid: '7' },
    { t: 'ring-stopped', index: 70000, seq: 1, base: 0 }, { t: 'ring-stopped', index: 0, seq: -1, base: 0 }, { t: 'ring-stopped', index: 0, seq: 1, base: 1.5 },
    { t: 'fd-ops', ops: 'i1' }, { t: 'fd-ops', ops: [['i1', 2]] }, { t: 'fd-ops', ops: [[1, 1]] },
    { t: 'fd-put' }, { t: 'fuse-init', req: { major: 7, minor: 38, maxReadahead: 0, flags: '0x10' } },
    { t: 'fuse-init', req: { major: -1, minor: 38, maxReadahead: 0, flags: '1' } }, { t: 'pong', n: 'x' },
  ];
  for (const m of bad) assert.equal(decodeToKeeper(m), null, JSON.stringify(m));
});

test('a worker reads what keepers of every release send, taking defaults for fields an older one did not have', () => {
  const older = { ...fs } as Record<string, unknown>;
  delete older.limits;
  delete older.inodeFileHandles;
  const init = decodeToWorker({ t: 'init', fs: older, logLevel: 'info', fuseInit: null });
  assert.ok(init && init.t === 'init');
  assert.deepEqual(init.fs.limits, DEFAULT_FS_OPTIONS.limits, 'no guest budget from the keeper: the defaults');
  assert.equal(init.fs.inodeFileHandles, 'never', 'a keeper from before file handles holds every inode by fd');
  assert.equal(init.fdOps, false, 'a keeper of release 1 takes fd-put / fd-del');
  assert.deepEqual(init.fs.idMap, DEFAULT_FS_OPTIONS.idMap, 'a keeper from before the mapping layers maps nothing');
  assert.equal(init.fs.xattrMap, null);
  const msgs: unknown[] = [
    { t: 'init', fs, logLevel: 'debug', fuseInit: { major: 7, minor: 38, maxReadahead: 0, flags: '5' }, fdOps: true },
    { t: 'fds', keys: ['i1', 'f3'] }, { t: 'go' }, { t: 'shutdown' }, { t: 'ping', n: 1 },
    { t: 'mem', regions: [{ gpa: 0, size: 4096, uaddr: 0x7f0000000000, mmapOffset: 0 }] },
    { t: 'ring-start', cfg: { index: 1, size: 128, descVa: 1, availVa: 2, usedVa: 3, base: 0, eventIdx: true, kickFd: 9, callFd: 10 }, recover: true, hasCall: true },
    { t: 'ring-start', cfg: { index: 1, size: 128, descVa: 1, availVa: 2, usedVa: 3, base: 0, eventIdx: true, stuckBefore: 123 }, recover: true, hasCall: false },
    { t: 'ring-stopping', index: 1 }, { t: 'ring-stop', index: 1, seq: 2 }, { t: 'call-fd', index: 0 },
  ];
  for (const m of msgs) assert.notEqual(decodeToWorker(m), null, JSON.stringify(m));
  const rs = decodeToWorker(msgs[7]);
  assert.ok(rs && rs.t === 'ring-start' && rs.cfg.stuckBefore === 123);
  assert.equal(decodeToWorker({ t: 'ring-start', cfg: { index: 1, size: 128 }, recover: true, hasCall: false }), null);
  assert.equal(decodeToWorker({ t: 'init', fs: { ...fs, cache: 'sometimes' }, logLevel: 'info', fuseInit: null }), null);
  assert.equal(decodeToWorker({ t: 'something-newer' }), null);
});

test('a worker takes the mapping options as its parsers read them, and refuses ones they refuse', () => {
  const idMap = { translateUid: ['map:0:1000:1'], translateGid: [], nsUid: [':0:1000:1:'], nsGid: [':0:1000:1:'] };
  const init = decodeToWorker({ t: 'init', fs: { ...fs, idMap, xattrMap: ':map::user.virtiofs.:' }, logLevel: 'info', fuseInit: null });
  assert.ok(init && init.t === 'init');
  assert.deepEqual(init.fs.idMap, idMap);
  assert.equal(init.fs.xattrMap, ':map::user.virtiofs.:');
  for (const bad of [
    { idMap: { ...idMap, translateUid: ['swap:0:1:1'] } },
    { idMap: { ...idMap, translateUid: ['map:0:1:2', 'guest:1:5:1'] } },
    { idMap: { ...idMap, nsGid: 'x' } },
    { idMap: { translateUid: [] } },
    { xattrMap: ':map:' },
    { xattrMap: 7 },
  ]) {
    assert.equal(decodeToWorker({ t: 'init', fs: { ...fs, ...bad }, logLevel: 'info', fuseInit: null }), null, JSON.stringify(bad));
  }
});
