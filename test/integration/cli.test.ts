// The daemon as Kata, libvirt and operators launch it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { REPO } from '../support/daemon';

const BIN = path.join(REPO, 'bin', 'virtiofsd-ts');

test('--print-capabilities prints the vhost-user JSON and exits 0', () => {
  const out = execFileSync(process.execPath, [BIN, '--print-capabilities']).toString();
  assert.deepEqual(JSON.parse(out), { type: 'fs', features: ['separate-options'] });
});

test('bad command lines exit 2 with a message', () => {
  try {
    execFileSync(process.execPath, [BIN, '--socket-path=/tmp/x.sock'], { stdio: 'pipe' });
    assert.fail('should exit non-zero');
  } catch (e) {
    const err = e as { status: number; stderr: Buffer };
    assert.equal(err.status, 2);
    assert.match(err.stderr.toString(), /shared-dir/);
  }
});

test('--fd serves an inherited listening socket, announces readiness, exits when the frontend leaves', async () => {
  const native = loadNative();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const sock = path.join(work, 's.sock');
  fs.mkdirSync(path.join(work, 'share'));
  fs.writeFileSync(path.join(work, 'share', 'f'), 'kata');
  const lfd = native.unixListen(sock, 1);
  assert.ok(lfd >= 0);
  // The C virtiofsd's -o form for the directory, the Rust one's --fd for the socket.
  const child = spawn(process.execPath, [BIN, '--fd=3', '-o', `source=${path.join(work, 'share')},cache=always`],
    { stdio: ['ignore', 'ignore', 'pipe', lfd] });
  native.close(lfd);
  let err = '';
  child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  for (let i = 0; i < 200 && !err.includes('Waiting for vhost-user socket connection...'); i++) await new Promise((r) => setTimeout(r, 25));
  assert.match(err, /Waiting for vhost-user socket connection\.\.\./);
  const line = err.split('\n').find((l) => l.includes('Waiting for vhost-user'))!;
  assert.equal(JSON.parse(line).level, 30, 'a pino JSON line');

  const fe = await VhostUserFrontend.connect(native, sock, {});
  const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens));
  assert.equal((await c.init()).error, 0);
  const e = await c.lookup(1, 'f');
  assert.equal(e.error, 0);
  assert.equal(e.entry!.attrValid, 86400n, 'cache=always');
  fe.close();
  assert.equal(await exited, 0);
  fs.rmSync(work, { recursive: true, force: true });
});
