// Upgrading a running daemon from an earlier release (the session-1 and session-2 builds) to this code, the
// way an operator does it: replace the files on disk, then SIGHUP (new worker under the old
// keeper), SIGKILL (a worker from disk, still under the old keeper) and SIGUSR2 (the old keeper
// re-executes into the new code). The request stream sees no error and every append lands once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { liveWorker, startDaemon, workerPids } from '../support/daemon';
import { PREVIOUS, buildPrevious, have, installCurrent } from '../support/previous';
import { checkState, formatReport } from '../../src/tools/check-state';

for (const [release, commit] of PREVIOUS) {
test(`a running ${release} daemon is upgraded in place (SIGHUP, SIGKILL, SIGUSR2) with no error and exactly-once appends`,
  { skip: !have(commit) && `commit ${commit.slice(0, 7)} (the ${release} release) is not in this clone` }, async () => {
    const prev = buildPrevious(commit);
    const d = await startDaemon('ts', { bin: path.join(prev, 'bin', 'virtiofsd-ts'), args: ['--log-level=info'] });
    const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
    try {
      const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
      assert.equal((await c.init()).error, 0);
      const cr = await c.create(1, 'log', 0o102 | 0o2000 /* O_RDWR|O_CREAT|O_APPEND */);
      assert.equal(cr.error, 0);
      const node = cr.entry!.nodeid;
      let i = 0;
      const some = async (n: number): Promise<void> => {
        for (const end = i + n; i < end; i++) {
          assert.equal((await c.write(node, cr.fh!, 0, Buffer.from(`line ${i}\n`))).error, 0, `write ${i}`);
          assert.equal((await c.lookup(1, 'log')).entry?.nodeid, node);
        }
      };
      const waitLog = async (what: RegExp, count: number): Promise<void> => {
        // Requests keep flowing while we wait (a keeper image loads in seconds on a busy machine).
        for (const end = Date.now() + 30_000; Date.now() < end && (d.stderr().match(new RegExp(what, 'g')) ?? []).length < count;) await some(1);
        assert.ok((d.stderr().match(new RegExp(what, 'g')) ?? []).length >= count, `${what} (${count}) in:\n${d.stderr().slice(-3000)}`);
      };
      await some(20);
      // The new release lands on disk.
      installCurrent(prev);
      process.kill(d.proc.pid!, 'SIGHUP');
      await waitLog(/"msg":"worker retired"/, 1);
      await some(20);
      // A file the new worker opens under the old keeper: its fd must reach that keeper in the
      // old keeper's protocol, or the next worker reopens it (and the keeper logs a stranger).
      const held = await c.create(1, 'held', 0o102 /* O_RDWR|O_CREAT */);
      assert.equal(held.error, 0);
      assert.equal((await c.write(held.entry!.nodeid, held.fh!, 0, Buffer.from('held'))).error, 0);
      await new Promise((r) => setTimeout(r, 100));
      process.kill(liveWorker(d.stderr())!, 'SIGKILL');
      await some(20);
      assert.equal((await c.read(held.entry!.nodeid, held.fh!, 0, 10)).body.toString(), 'held');
      process.kill(d.proc.pid!, 'SIGUSR2');
      await waitLog(/"msg":"keeper re-executed; serving on"/, 1);
      await some(20);
      const before = workerPids(d.stderr()).length;
      process.kill(liveWorker(d.stderr())!, 'SIGKILL');
      await waitLog(/"msg":"worker started"/, before + 1);
      await some(20);

      const lines = fs.readFileSync(path.join(d.dir, 'log'), 'utf8').split('\n').filter(Boolean);
      assert.deepEqual(lines, Array.from({ length: i }, (_, k) => `line ${k}`), 'every append once, in order');
      assert.equal(d.proc.exitCode, null, 'the keeper (same pid) still serves');
      assert.doesNotMatch(d.stderr(), /"level":50|unknown message from worker|fds and puts do not match|could not be opened again/);
      const r = checkState(d.proc.pid!);
      assert.ok(r.clean, formatReport(r));
      assert.ok(r.device && !r.device.empty, 'the new keeper publishes the device state');
    } finally {
      fe.close();
      await d.stop();
      fs.rmSync(prev, { recursive: true, force: true });
    }
  });
}
