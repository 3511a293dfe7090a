// sd_listen_fds(3) and sd_notify(3) as the keeper reads and speaks them (src/keeper/systemd.ts),
// and the fd store's names for registry keys (src/keeper/fd-park.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../../src/native/binding';
import { Notifier, takeListenFds, validFdName } from '../../../src/keeper/systemd';
import { registryFdName, registryKeyOf } from '../../../src/keeper/fd-park';
import { fdKey } from '../../../src/state/fd-registry';

const n = loadNative();

test('takeListenFds takes fds meant for our pid, with their names, and drops the variables', () => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: String(process.pid), LISTEN_FDS: '2', LISTEN_FDNAMES: 'vfsd-keeper:' };
  const got = takeListenFds(n, env);
  assert.deepEqual(got, [{ fd: 3, name: 'vfsd-keeper' }, { fd: 4, name: 'unknown' }]);
  assert.deepEqual(env, {}, 'unset, so that no child takes them');
});

test('takeListenFds ignores fds meant for another process, and refuses malformed variables', () => {
  const other: NodeJS.ProcessEnv = { LISTEN_PID: String(process.pid + 1), LISTEN_FDS: '1' };
  assert.deepEqual(takeListenFds(n, other), []);
  assert.deepEqual(other, {});
  assert.throws(() => takeListenFds(n, { LISTEN_PID: String(process.pid), LISTEN_FDS: 'x' }), /not a number/);
  assert.throws(() => takeListenFds(n, { LISTEN_PID: String(process.pid), LISTEN_FDS: '2', LISTEN_FDNAMES: 'a' }), /1 names for 2 fds/);
  assert.deepEqual(takeListenFds(n, {}), []);
});

test('Notifier sends newline-separated assignments to $NOTIFY_SOCKET and refuses a value with a newline', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-notify-'));
  const sockPath = path.join(dir, 'notify');
  const s = n.unixDgramBind(sockPath);
  try {
    const no = new Notifier(n, {});
    assert.equal(no.enabled, false);
    assert.ok(no.ready('x') < 0, 'nothing to send to');
    const nt = new Notifier(n, { NOTIFY_SOCKET: sockPath });
    assert.equal(nt.ready('waiting\nfor QEMU'), 0);
    assert.equal(nt.send([['STATUS', 'a\nb']]), -os.constants.errno.EINVAL);
    const buf = new Uint8Array(256);
    const len = n.recvmsg(s, buf, new Int32Array(1));
    assert.equal(Buffer.from(buf.subarray(0, len)).toString(), 'READY=1\nSTATUS=waiting for QEMU');
    assert.equal(n.recvmsg(s, buf, new Int32Array(1)), -os.constants.errno.EAGAIN, 'the refused message was not sent');
  } finally {
    n.close(s);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('every registry key maps to a valid FDNAME and back', () => {
  for (const key of [fdKey.inode(1), fdKey.file(12), fdKey.dir(0), fdKey.mount(18446744073709551615n), fdKey.lock(7, 18446744073709551615n, 4294967295)]) {
    const name = registryFdName(key);
    assert.ok(validFdName(name), name);
    assert.equal(registryKeyOf(name), key);
  }
  assert.equal(registryKeyOf('c.1'), null);
  assert.equal(validFdName('a:b'), false);
  assert.equal(validFdName('x'.repeat(256)), false);
});
