// The keeper as a systemd service (Type=notify, FileDescriptorStoreMax=), under a stand-in for
// systemd (test/support/service-manager.ts): it says READY=1 once it listens, parks QEMU's
// connection and its state in the fd store, and when it is SIGKILLed the service manager
// restarts it with the stored fds and it resumes: the front-end's connection never closes,
// a stream of O_APPEND writes and GETATTRs goes on with every request answered exactly once,
// and check-state is clean. A clean stop leaves nothing in the store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { F_WRLCK } from '../../src/linux/constants';
import { checkState, formatReport } from '../../src/tools/check-state';
import { VhostUserFrontend } from '../support/frontend';
import { REPO, isLive } from '../support/daemon';
import { AppendStream, usedEntryProblems, waitFor } from '../support/crash-harness';
import { ServiceManager } from '../support/service-manager';

function until(what: string, sm: ServiceManager, cond: () => boolean): Promise<void> {
  return waitFor(what, cond, () => sm.stderr(), 30_000);
}

/** Pids of workers the keeper logged as serving. */
function serving(sm: ServiceManager): number[] {
  return [...sm.stderr().matchAll(/"pid":(\d+),"msg":"worker serving"/g)].map((m) => Number(m[1]));
}

test('service manager: a SIGKILLed keeper (also after a re-exec) is restarted with its fd store and resumes; every request answered once, QEMU\'s connection never closes', { timeout: 120_000 }, async (t) => {
  const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-sm-share-'));
  const sock = path.join(share + '.sock');
  const sm = new ServiceManager({
    argv: [process.execPath, path.join(REPO, 'bin', 'virtiofsd-ts'), `--socket-path=${sock}`, `--shared-dir=${share}`, '--log-level=info'],
  });
  const problems: string[] = [];
  let fe: VhostUserFrontend | null = null;
  let stream: AppendStream | null = null;
  try {
    sm.start();
    await until('READY=1', sm, () => sm.seen('READY').length === 1);
    assert.ok(fs.existsSync(sock), 'READY=1 comes once the socket listens');
    fe = await VhostUserFrontend.connect(loadNative(), sock, {});
    let closed = false;
    (fe as unknown as { conn: NodeJS.EventEmitter }).conn.on('close', () => { closed = true; });
    stream = await AppendStream.start(fe, problems, 60_000);
    const st = stream;
    await until('a worker serving', sm, () => serving(sm).length === 1);
    // A POSIX lock: its owner's open file description lives in the worker and the keeper only,
    // and moves to a new registry key once the lock names its pid (the fd store's duplicate rule).
    const c = st.client;
    const lf = await c.create(1, 'locked', 0o102 /* O_RDWR|O_CREAT */);
    assert.equal(lf.error, 0);
    assert.equal((await c.setlk(lf.entry!.nodeid, lf.fh!, 7n, 0n, 99n, F_WRLCK)).error, 0);
    await until('the stream under way', sm, () => st.n >= 20);
    const names = sm.store.map((s) => s.name);
    assert.ok(names.includes('vfsd-keeper'), `the keeper record is in the store: ${names.join(' ')}`);
    assert.ok(names.length >= 8, `QEMU's connection, the regions, eventfds and memory are in the store: ${names.join(' ')}`);
    assert.ok(sm.store.some((s) => s.name.startsWith('r.f')), `the open file's fd is in the store: ${names.join(' ')}`);

    for (let kill = 1; kill <= 2; kill++) {
      if (kill === 2) {
        // A keeper re-exec (SIGUSR2) in between: the new image goes on parking with the record.
        process.kill(sm.main.pid!, 'SIGUSR2');
        await until('the re-exec', sm, () => sm.stderr().includes('"msg":"keeper re-executed; serving on"'));
        const mark = st.n;
        await until('the stream going on after the re-exec', sm, () => st.n >= mark + 30);
      }
      const keeper = sm.main.pid!;
      const mark = st.n;
      const killedAt = performance.now();
      process.kill(keeper, 'SIGKILL');
      // The stall, for the record (no assertion: this machine's speed varies): from the kill
      // until the stream's next request completed.
      void waitFor('a request after the kill', () => st.n > mark + 1, () => '', 60_000)
        .then(() => t.diagnostic(`keeper kill ${kill}: next request answered ${(performance.now() - killedAt).toFixed(0)} ms after the SIGKILL`), () => undefined);
      await until(`restart ${kill}`, sm, () => sm.starts.length === kill + 1 && sm.main.pid !== undefined);
      await until(`resume ${kill}`, sm, () => sm.stderr().split('keeper restarted by the service manager; resuming from the fd store').length === kill + 1);
      await until(`READY=1 after restart ${kill}`, sm, () => sm.seen('READY').length === kill + 1);
      await until(`the stream going on after restart ${kill}`, sm, () => st.n >= mark + 30);
      assert.ok(!isLive(keeper), 'the old keeper is gone');
    }
    await st.stop();
    const gl = await c.getlk(lf.entry!.nodeid, lf.fh!, 8n, 0n, 99n, F_WRLCK);
    assert.deepEqual(gl.lock, { start: 0n, end: 99n, type: F_WRLCK, pid: c.pid }, 'the lock survived the keeper\'s deaths, with its owner\'s pid');
    assert.equal(closed, false, 'the vhost-user connection never closed');
    const onDisk = fs.readFileSync(path.join(share, 'stream'), 'utf8').split('\n').filter(Boolean);
    assert.deepEqual(onDisk, st.expected(), 'every append landed exactly once, in order');
    problems.push(...usedEntryProblems(fe, st.posted));
    assert.deepEqual(problems, [], problems.join('\n'));
    const r = checkState(sm.main.pid!);
    assert.ok(r.clean, formatReport(r));
    assert.match(formatReport(r), /vfsd-keeper \(fd \d+\): keeper record, \d+ fds named/, 'check-state read the fd store record');
    assert.equal(sm.refused, 0, 'the store refused no fd (no duplicate description, no bad name)');
    assert.ok(!/"level":(50|60)/.test(sm.stderr()), `no error lines:\n${sm.stderr().split('\n').filter((l) => /"level":(50|60)/.test(l)).join('\n')}`);
  } finally {
    await stream?.stop().catch(() => undefined);
    await sm.stop();
    fe?.close();
    fs.rmSync(share, { recursive: true, force: true });
    fs.rmSync(sock, { force: true });
    fs.rmSync(`${sock}.pid`, { force: true });
  }
  assert.deepEqual(sm.leftAtStop, [], 'a clean stop (SIGTERM) leaves nothing in the fd store');
  assert.ok(sm.seen('STOPPING').length >= 1, 'STOPPING=1 on a clean stop');
});
