// The mapping options through the whole daemon (keeper, sandboxed worker, vhost-user): they reach
// every worker the keeper starts, so a worker killed mid-session is replaced by one that maps the
// same way. Needs root (files of other owners).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { withDaemon, liveWorker } from '../support/daemon';
import { loadNative } from '../../src/native/binding';
import { O_CREAT, O_RDWR } from '../../src/linux/constants';

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
