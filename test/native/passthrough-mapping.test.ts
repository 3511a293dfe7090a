// UID/GID and xattr name mapping through the real session (request bytes in, reply bytes out)
// over a real host directory: what the host stores (owners, xattr names) and what the guest sees
// (ENTRY, ATTR, READDIRPLUS owners; GETXATTR/LISTXATTR names) are each other's mapping.
// Runs as root (files are given other owners); skipped otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { FuseSession } from '../../src/fuse/session';
import { PassthroughFs, DEFAULT_FS_OPTIONS, type FsOptions } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { FuseClient } from '../support/fuse-client';
import { directTransport } from '../support/direct-transport';
import { O_CREAT, O_RDWR } from '../../src/linux/constants';
import { E } from '../../src/linux/constants';

const native = loadNative();
const root = process.geteuid?.() === 0;

async function session(dir: string, opts: Partial<FsOptions>, who: { uid: number; gid: number }): Promise<{ c: FuseClient; pfs: PassthroughFs }> {
  const pfs = new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, memfdState: false, ...opts }, silentLogger);
  const c = new FuseClient(directTransport(new FuseSession(pfs, silentLogger, { probes: pfs, rangeIo: pfs })), who);
  assert.equal((await c.init()).error, 0);
  return { c, pfs };
}

test('--translate-uid/-gid: guest 1000:1000 makes files owned 5000:6000 on the host and sees them as its own', { skip: !root && 'needs root' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-idmap-'));
  fs.chmodSync(dir, 0o777);
  fs.writeFileSync(path.join(dir, 'theirs'), 'x');
  fs.chownSync(path.join(dir, 'theirs'), 7000, 7000);
  const { c, pfs } = await session(dir, {
    idMap: { translateUid: ['map:1000:5000:1', 'forbid-guest:0:1'], translateGid: ['map:1000:6000:1'], nsUid: [], nsGid: [] },
  }, { uid: 1000, gid: 1000 });
  try {
    const d = await c.mkdir(1, 'd');
    assert.equal(d.error, 0);
    assert.deepEqual([d.entry!.attr.uid, d.entry!.attr.gid], [1000, 1000], 'MKDIR reply');
    const f = await c.create(d.entry!.nodeid, 'f', O_CREAT | O_RDWR);
    assert.equal(f.error, 0);
    assert.deepEqual([f.entry!.attr.uid, f.entry!.attr.gid], [1000, 1000], 'CREATE reply');
    const st = fs.statSync(path.join(dir, 'd', 'f'));
    assert.deepEqual([st.uid, st.gid], [5000, 6000], 'the host owner is the mapped one');
    assert.deepEqual([fs.statSync(path.join(dir, 'd')).uid, fs.statSync(path.join(dir, 'd')).gid], [5000, 6000]);

    const theirs = await c.lookup(1, 'theirs');
    assert.deepEqual([theirs.entry!.attr.uid, theirs.entry!.attr.gid], [7000, 7000], 'an id no rule covers is itself');
    const ga = await c.getattr(d.entry!.nodeid);
    assert.equal(ga.attr!.uid, 1000, 'GETATTR reply');
    const dh = await c.opendir(1);
    const plus = (await c.readdirAll(1, dh.fh!, 4096, true)).filter((e) => e.entry && e.entry.nodeid !== 0n);
    assert.deepEqual(plus.map((e) => [e.name, e.entry!.attr.uid]).sort(), [['d', 1000], ['theirs', 7000]], 'READDIRPLUS replies');

    // SETATTR: the guest's uid maps to the host's.
    c.uid = 0; c.gid = 0;
    const sa = await c.setattr(theirs.entry!.nodeid, { uid: 1000, gid: 1000 });
    assert.equal(sa.error, 0);
    assert.deepEqual([sa.attr!.uid, sa.attr!.gid], [1000, 1000]);
    assert.deepEqual([fs.statSync(path.join(dir, 'theirs')).uid, fs.statSync(path.join(dir, 'theirs')).gid], [5000, 6000]);
    // forbid-guest: guest root may not make files or give them away as 0.
    assert.equal((await c.mkdir(1, 'as-root')).error, -E.EPERM);
    assert.equal(fs.existsSync(path.join(dir, 'as-root')), false);
    assert.equal((await c.setattr(theirs.entry!.nodeid, { uid: 0 })).error, -E.EPERM);
  } finally {
    pfs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--xattrmap: the host stores mapped names, the guest lists and reads its own, and cannot reach the target directly', { skip: !root && 'needs root' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-xmap-'));
  fs.writeFileSync(path.join(dir, 'f'), 'x');
  // Set on the host: one under the prefix (the guest sees it stripped), one outside it (hidden).
  assert.equal(native.setxattr(path.join(dir, 'f'), 'user.virtiofs.user.host', Buffer.from('h'), 0, false), 0);
  assert.equal(native.setxattr(path.join(dir, 'f'), 'user.plain', Buffer.from('p'), 0, false), 0);
  const { c, pfs } = await session(dir, { xattr: true, xattrMap: ':map::user.virtiofs.:' }, { uid: 0, gid: 0 });
  try {
    const f = (await c.lookup(1, 'f')).entry!;
    assert.equal((await c.setxattr(f.nodeid, 'trusted.guest', Buffer.from('t'))).error, 0);
    assert.equal((await c.setxattr(f.nodeid, 'user.g', Buffer.from('g'))).error, 0);
    const hostNames = Buffer.alloc(1024);
    const n = native.listxattr(path.join(dir, 'f'), hostNames, false);
    assert.deepEqual(hostNames.subarray(0, n).toString('latin1').split('\0').filter(Boolean).sort(),
      ['user.plain', 'user.virtiofs.trusted.guest', 'user.virtiofs.user.g', 'user.virtiofs.user.host']);

    const probe = await c.listxattr(f.nodeid, 0);
    const size = probe.body.readUInt32LE(0);
    const list = await c.listxattr(f.nodeid, size);
    assert.equal(list.error, 0);
    assert.deepEqual(list.body.toString('latin1').split('\0').filter(Boolean).sort(), ['trusted.guest', 'user.g', 'user.host']);
    assert.equal(size, 'trusted.guest\0user.g\0user.host\0'.length, 'the size probe answers the mapped size');
    assert.equal((await c.getxattr(f.nodeid, 'user.host', 16)).body.toString(), 'h');
    assert.equal((await c.getxattr(f.nodeid, 'user.plain', 16)).error, -E.ENODATA, 'user.plain is stored as user.virtiofs.user.plain, which does not exist');
    assert.equal((await c.removexattr(f.nodeid, 'user.g')).error, 0);
    assert.equal(native.getxattr(path.join(dir, 'f'), 'user.virtiofs.user.g', Buffer.alloc(8), false), -E.ENODATA);
  } finally {
    pfs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
