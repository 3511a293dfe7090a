// The mapping options through the whole daemon (keeper, sandboxed worker, vhost-user): they reach
// every worker the keeper starts, so a worker killed mid-session is replaced by one that maps the
// same way; and libvirt's --uid-map/--gid-map for an unprivileged daemon give the guest the view
// of a user namespace. Needs root (files of other owners; switching to a user).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { withDaemon, liveWorker, startDaemon } from '../support/daemon';
import { PREVIOUS, buildPrevious, have, installCurrent } from '../support/previous';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { loadNative } from '../../src/native/binding';
import { E, O_CREAT, O_RDWR } from '../../src/linux/constants';

const root = process.geteuid?.() === 0;

test('owners and xattr names are mapped by the first worker and by its replacement after a SIGKILL', { skip: !root && 'needs root' }, async () => {
  const native = loadNative();
  await withDaemon(['--translate-uid=map:0:4000:1', '--translate-gid=map:0:4001:1', '--xattrmap=:map::user.vm.:'], async (d, c) => {
    // Guest root is host 4000 here: it may create only where 4000 may.
    fs.chmodSync(d.dir, 0o777);
    fs.writeFileSync(`${d.dir}/host`, 'h');
    fs.chownSync(`${d.dir}/host`, 4000, 4001);
    assert.equal(native.setxattr(`${d.dir}/host`, 'user.vm.user.a', Buffer.from('1'), 0, false), 0);
    const check = async (name: string): Promise<void> => {
      const e = await c.lookup(1, 'host');
      assert.deepEqual([e.entry!.attr.uid, e.entry!.attr.gid], [0, 0], `${name}: host 4000:4001 is guest 0:0`);
      assert.equal((await c.getxattr(e.entry!.nodeid, 'user.a', 8)).body.toString(), '1', `${name}: user.vm.user.a is user.a`);
      const f = await c.create(1, name, O_CREAT | O_RDWR);
      assert.equal(f.error, 0);
      assert.deepEqual([f.entry!.attr.uid, f.entry!.attr.gid], [0, 0]);
      const st = fs.statSync(`${d.dir}/${name}`);
      assert.deepEqual([st.uid, st.gid], [4000, 4001], `${name}: guest root makes host 4000:4001 files`);
    };
    await check('first');
    const pid = liveWorker(d.stderr());
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    await check('after-kill');
    assert.notEqual(liveWorker(d.stderr()), pid);
    assert.doesNotMatch(d.stderr(), /does not apply UID\/GID or xattr mapping/);
  });
});

test('unprivileged with libvirt\'s --uid-map=:0:UID:1: --gid-map=:0:GID:1:, the guest sees the user\'s files as root\'s and others as 65534', { skip: !root && 'needs root to switch users' }, async () => {
  if (spawnSync('setpriv', ['--version']).status !== 0) return;
  const user = 4242;
  const d = await startDaemon('ts', { user, args: ['--log-level=info', `--uid-map=:0:${user}:1:`, `--gid-map=:0:${user}:1:`] });
  const share = d.dir;
  try {
    fs.chownSync(share, user, user);
    fs.writeFileSync(path.join(share, 'mine'), 'm');
    fs.chownSync(path.join(share, 'mine'), user, user);
    fs.writeFileSync(path.join(share, 'roots'), 'r');
    const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
    try {
      const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
      assert.equal((await c.init()).error, 0);
      const attrs = async (name: string): Promise<[number, number]> => {
        const e = (await c.lookup(1, name)).entry!;
        return [e.attr.uid, e.attr.gid];
      };
      assert.deepEqual(await attrs('mine'), [0, 0], 'the user\'s file is root\'s');
      assert.deepEqual(await attrs('roots'), [65534, 65534], 'a file of an id outside the map is the overflow id\'s');
      assert.equal((await c.getattr(1)).attr!.uid, 0, 'the share root (the user\'s) is root\'s');
      const cr = await c.create(1, 'made', O_CREAT | O_RDWR);
      assert.equal(cr.error, 0);
      assert.deepEqual([cr.entry!.attr.uid, cr.entry!.attr.gid], [0, 0]);
      assert.deepEqual([fs.statSync(path.join(share, 'made')).uid, fs.statSync(path.join(share, 'made')).gid], [user, user], 'guest root makes the user\'s files');
      const mine = (await c.lookup(1, 'mine')).entry!;
      assert.equal((await c.setattr(mine.nodeid, { uid: 5 })).error, -E.EINVAL, 'an id outside the map cannot be given');
      c.uid = 1000; c.gid = 1000;
      assert.equal((await c.mkdir(1, 'by-1000')).error, -E.EINVAL, 'nor used to make a file');
      assert.equal(fs.existsSync(path.join(share, 'by-1000')), false);
    } finally {
      fe.close();
    }
  } finally {
    await d.stop();
  }
});

const [, SESSION_2] = PREVIOUS[1];

test('a running session-2 daemon given -o xattrmap (which it accepted and ignored) maps once re-executed into this code: its adopted workers are replaced', {
  skip: (!root && 'needs root') || (!have(SESSION_2) && 'the session 2 release is not in this clone'),
}, async () => {
  const prev = buildPrevious(SESSION_2);
  const d = await startDaemon('ts', { bin: path.join(prev, 'bin', 'virtiofsd-ts'), args: ['--log-level=info', '--xattr', '-o', 'xattrmap=:map::user.vm.:'] });
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
    assert.equal((await c.init()).error, 0);
    fs.writeFileSync(`${d.dir}/f`, 'f');
    assert.equal(loadNative().setxattr(`${d.dir}/f`, 'user.vm.user.a', Buffer.from('1'), 0, false), 0);
    const f = (await c.lookup(1, 'f')).entry!;
    assert.equal((await c.getxattr(f.nodeid, 'user.vm.user.a', 8)).body.toString(), '1', 'the old release serves the names unmapped');
    installCurrent(prev);
    process.kill(d.proc.pid!, 'SIGUSR2');
    let mapped = '';
    for (const end = Date.now() + 60_000; Date.now() < end && mapped !== '1';) {
      const r = await c.getxattr(f.nodeid, 'user.a', 8);
      mapped = r.error === 0 ? r.body.toString() : '';
      if (mapped !== '1') await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(mapped, '1', `user.vm.user.a is user.a after the re-exec:\n${d.stderr().slice(-3000)}`);
    assert.match(d.stderr(), /"msg":"keeper re-executed; serving on"/);
    assert.match(d.stderr(), /the adopted worker does not apply UID\/GID or xattr mapping/);
    // Every guest name is prefixed: this one asks for user.vm.user.vm.user.a.
    assert.equal((await c.getxattr(f.nodeid, 'user.vm.user.a', 8)).error, -E.ENODATA, 'the host\'s names are out of the guest\'s direct reach');
    assert.equal((await c.lookup(1, 'f')).entry?.nodeid, f.nodeid, 'the same node id across the replacement');
  } finally {
    fe.close();
    await d.stop();
    fs.rmSync(prev, { recursive: true, force: true });
  }
});
