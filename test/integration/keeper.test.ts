// The keeper keeps QEMU's connection while its worker dies, is upgraded (SIGHUP), or the keeper
// itself re-executes (SIGUSR2): a request stream sees no error and every WRITE lands once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { liveWorker, startDaemon, workerPids } from '../support/daemon';


for (const [name, events] of [
  ['worker SIGKILLs', ['kill', 'kill', 'kill', 'kill', 'kill']],
  ['planned worker upgrades (SIGHUP)', ['hup', 'hup', 'hup']],
  ['keeper re-exec (SIGUSR2) mixed with kills and upgrades', ['usr2', 'kill', 'hup', 'usr2', 'kill']],
] as const) {
  test(`a WRITE/GETATTR/LOOKUP stream survives ${name} with no error and exactly-once writes`, async () => {
    const d = await startDaemon('ts', { args: ['--log-level=info'] });
    const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
    try {
      const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
      assert.equal((await c.init()).error, 0);
      const cr = await c.create(1, 'stream', 0o102 | 0o2000 /* O_RDWR|O_CREAT|O_APPEND */);
      assert.equal(cr.error, 0);
      const node = cr.entry!.nodeid;
      const keeperPid = d.proc.pid!;
      let i = 0;
      let next = 0;
      let deadline = Date.now() + 150;
      let written = 0;
      while (next < events.length || Date.now() < deadline) {
        if (Date.now() >= deadline && next < events.length) {
          const ev = events[next++];
          if (ev === 'kill') process.kill(liveWorker(d.stderr())!, 'SIGKILL');
          else process.kill(keeperPid, ev === 'hup' ? 'SIGHUP' : 'SIGUSR2');
          deadline = Date.now() + 250;
        }
        const line = Buffer.from(`line ${i}\n`);
        const w = await c.write(node, cr.fh!, 0, line);
        assert.equal(w.error, 0, `write ${i}`);
        written += line.length;
        assert.equal((await c.getattr(node)).error, 0);
        assert.equal((await c.lookup(1, 'stream')).entry?.nodeid, node, 'the node id stays');
        i++;
      }
      const lines = fs.readFileSync(`${d.dir}/stream`, 'utf8').split('\n').filter(Boolean);
      assert.equal(lines.length, i, 'every append landed exactly once');
      assert.deepEqual(lines.slice(0, 3), ['line 0', 'line 1', 'line 2']);
      assert.equal(fs.statSync(`${d.dir}/stream`).size, written);
      assert.equal(d.proc.exitCode, null, 'the keeper (same pid) is still serving');
      // Every kill starts a worker; SIGHUPs that arrive during an upgrade are coalesced into one
      // more upgrade; a re-executed keeper adopts the worker that served across its re-exec
      // (or, re-executed during an upgrade, starts one).
      const count = (e: string): number => events.filter((x) => x === e).length;
      const want = 1 + count('kill') + (count('hup') > 0 ? 1 : 0);
      const restarts = workerPids(d.stderr()).length;
      assert.ok(restarts >= want, `workers started: ${restarts}, want at least ${want}`);
      const adopted = (d.stderr().match(/"msg":"worker adopted"/g) ?? []).length;
      const reexecs = (d.stderr().match(/"msg":"keeper re-executed; serving on"/g) ?? []).length;
      assert.equal(reexecs, count('usr2'));
      if (count('usr2') > 0) assert.ok(adopted >= 1, `a worker adopted across a re-exec:\n${d.stderr().slice(-3000)}`);
    } finally {
      fe.close();
      await d.stop();
    }
  });
}
