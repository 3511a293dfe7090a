import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../../src/native/binding';
import { ListenerError, acceptOne, listenUnix } from '../../../src/vhost/listener';

const native = loadNative();

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-listen-'));
}

test('listenUnix replaces a stale socket file; acceptOne resolves when a client connects', async () => {
  const dir = tmp();
  const sock = path.join(dir, 's');
  const first = listenUnix(native, sock);
  native.close(first); // the socket file stays behind, as after a crash
  assert.ok(fs.lstatSync(sock).isSocket());
  const fd = listenUnix(native, sock);
  const accepted = acceptOne(native, fd);
  await new Promise((r) => setTimeout(r, 10)); // accept is pending on poll now
  const client = native.unixConnect(sock);
  assert.ok(client >= 0);
  const conn = await accepted;
  assert.ok(conn >= 0);
  for (const f of [client, conn, fd]) native.close(f);
  fs.rmSync(dir, { recursive: true });
});

test('listenUnix refuses to delete a file that is not a socket', () => {
  const dir = tmp();
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, 'keep me');
  assert.throws(() => listenUnix(native, file), ListenerError);
  assert.equal(fs.readFileSync(file, 'utf8'), 'keep me');
  fs.rmSync(dir, { recursive: true });
});

test('acceptOne can be aborted', async () => {
  const dir = tmp();
  const fd = listenUnix(native, path.join(dir, 's'));
  const ac = new AbortController();
  const p = acceptOne(native, fd, ac.signal);
  ac.abort();
  await assert.rejects(p, ListenerError);
  native.close(fd);
  fs.rmSync(dir, { recursive: true });
});
