// The keeper's watchdog: a worker wedged inside a request (VFSD_CRASHPOINT=...:hang blocks it
// there, as a request stuck in the kernel would) stops answering pings; the keeper kills it
// after --worker-timeout (3 s here: a loaded machine must not trip it before the wedge), and its successor answers the request it was stuck in with EIO
// instead of running it into the same wall. A ring stop (QEMU's GET_VRING_BASE, synchronous)
// asked meanwhile is answered too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { loadNative } from '../../src/native/binding';
import { checkState, formatReport } from '../../src/tools/check-state';
import { E } from '../../src/linux/constants';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { startDaemon } from '../support/daemon';
import { checkedTransport, usedEntryProblems } from '../support/crash-harness';

const O_APPEND_CREATE = 0o102 | 0o2000; // O_RDWR|O_CREAT|O_APPEND
/** Journaled requests before the one that wedges: the CREATE, then WRITEs of lines 0..3. */
const WEDGE_AT = 6;
const WEDGED_LINE = WEDGE_AT - 2;

test('a request that wedges the worker is answered EIO by its successor, not run again; every other request once', { timeout: 60_000 }, async () => {
  const d = await startDaemon('ts', { args: ['--log-level=info', '--worker-timeout=3'], env: { VFSD_CRASHPOINT: `after-journal-intent:${WEDGE_AT}:hang` } });
  const problems: string[] = [];
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const { send, posted } = checkedTransport(fe, problems, 30_000);
    const c = new FuseClient(send);
    assert.equal((await c.init()).error, 0);
    const cr = await c.create(1, 'log', O_APPEND_CREATE);
    assert.equal(cr.error, 0);
    const errors: number[] = [];
    for (let i = 0; i < 20; i++) errors.push((await c.write(cr.entry!.nodeid, cr.fh!, 0, Buffer.from(`line ${i}\n`))).error);
    assert.deepEqual(errors.map((e, i) => [i, e]).filter(([, e]) => e !== 0), [[WEDGED_LINE, -E.EIO]], 'only the wedged WRITE failed, with EIO');
    const lines = fs.readFileSync(`${d.dir}/log`, 'utf8').split('\n').filter(Boolean);
    assert.deepEqual(lines, Array.from({ length: 20 }, (_, i) => `line ${i}`).filter((_, i) => i !== WEDGED_LINE), 'the wedged WRITE was not run again');
    assert.match(d.stderr(), /"msg":"worker stopped answering \(watchdog\); killing it"/);
    assert.match(d.stderr(), /"op":"WRITE".*"msg":"request the previous worker was stuck in: answered EIO, not run again"/);
    problems.push(...usedEntryProblems(fe, posted));
    assert.deepEqual(problems, []);
    const r = checkState(d.proc.pid!);
    assert.ok(r.clean, formatReport(r));
  } finally {
    fe.close();
    await d.stop();
  }
});

test('a ring stop asked while the worker is wedged is answered: the front-end is never left waiting', { timeout: 60_000 }, async () => {
  const d = await startDaemon('ts', { args: ['--log-level=info', '--worker-timeout=3'], env: { VFSD_CRASHPOINT: 'after-journal-intent:2:hang' } });
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 30_000));
    assert.equal((await c.init()).error, 0);
    const wedged = c.mkdir(1, 'a', 0o755); // journaled request 1
    const wedged2 = c.mkdir(1, 'b', 0o755); // request 2: the worker hangs in it
    for (let i = 0; i < 500 && !d.stderr().includes('hanging at a crash point'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.match(d.stderr(), /hanging at a crash point/);
    const bases = await fe.stop();
    assert.equal(bases.length, fe.numQueues);
    assert.equal((await wedged).error, 0);
    assert.equal((await wedged2).error, -E.EIO);
    assert.ok(!fs.existsSync(`${d.dir}/b`), 'the wedged MKDIR was not run again');
  } finally {
    fe.close();
    await d.stop();
  }
});
