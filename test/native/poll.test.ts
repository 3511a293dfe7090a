// uv_poll_t watchers on Node's loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, watchFd, type PollHandle } from '../../src/native/binding';

const n = loadNative();
const E = os.constants.errno;
const READABLE = 1;
const WRITABLE = 2;
const bindingJs = path.resolve(__dirname, '..', '..', 'src', 'native', 'binding.js');

/** Run a script in a fresh node process (things that must crash or exit do not hit the runner). */
function runNode(script: string): { status: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr, stdout: r.stdout };
}

test('pollStart fires when an eventfd is written, with status 0 and READABLE', async () => {
  const efd = n.eventfd(0);
  let h: PollHandle | undefined;
  try {
    const got = await new Promise<[number, number, number]>((resolve) => {
      const r = n.pollStart(efd, READABLE, (status, events) => resolve([status, events, n.eventfdRead(efd)]));
      if (typeof r === 'number') assert.fail(`pollStart: ${r}`);
      h = r;
      assert.equal(n.eventfdWrite(efd, 2), 0);
    });
    assert.deepEqual(got, [0, READABLE, 2]);
  } finally {
    if (h) n.pollStop(h);
    n.close(efd);
  }
});

test('pollStart keeps firing while readable and stops after pollStop (idempotent)', async () => {
  const efd = n.eventfd(0);
  let calls = 0;
  const h = watchFd(n, efd, READABLE, () => {
    calls++;
    n.eventfdRead(efd);
  });
  try {
    for (let i = 1; i <= 3; i++) {
      n.eventfdWrite(efd, 1);
      // However loaded the machine: each write fires exactly one callback.
      for (let k = 0; k < 500 && calls < i; k++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(calls, i);
    }
    n.pollStop(h);
    n.pollStop(h);
    n.eventfdWrite(efd, 1);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(calls, 3, 'no callback after pollStop');
  } finally {
    n.pollStop(h);
    n.close(efd);
  }
});

test('pollStart with WRITABLE fires at once on a writable socket', async () => {
  const fds = new Int32Array(2);
  n.socketpair(fds);
  let h: PollHandle | undefined;
  try {
    const ev = await new Promise<number>((resolve) => {
      h = n.pollStart(fds[0], WRITABLE, (_s, events) => resolve(events)) as PollHandle;
    });
    assert.equal(ev & WRITABLE, WRITABLE);
  } finally {
    if (h) n.pollStop(h);
    n.close(fds[0]);
    n.close(fds[1]);
  }
});

test('pollStart rejects unknown event bits and bad fds with -errno; misuse throws TypeError', () => {
  const efd = n.eventfd(0);
  try {
    assert.equal(n.pollStart(efd, 0x100, () => {}), -E.EINVAL);
    assert.equal(n.pollStart(-1, READABLE, () => {}), -E.EINVAL);
    assert.equal(n.pollStart(987654, READABLE, () => {}), -E.EBADF);
    assert.throws(() => n.pollStart(efd, READABLE, 'cb' as unknown as () => void), TypeError);
    assert.throws(() => n.pollStop({} as PollHandle), TypeError);
    assert.throws(() => n.pollStop(undefined as unknown as PollHandle), TypeError);
  } finally {
    n.close(efd);
  }
});

test('an exception thrown by a poll callback surfaces as an uncaught exception', () => {
  const r = runNode(`
    const n = require(${JSON.stringify(bindingJs)}).loadNative();
    const efd = n.eventfd(0);
    n.pollStart(efd, 1, () => { throw new Error('thrown-from-poll-callback'); });
    n.eventfdWrite(efd, 1);
  `);
  assert.equal(r.signal, null);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /thrown-from-poll-callback/);

  const handled = runNode(`
    const n = require(${JSON.stringify(bindingJs)}).loadNative();
    const efd = n.eventfd(0);
    const h = n.pollStart(efd, 1, () => { n.pollStop(h); throw new Error('boom'); });
    process.on('uncaughtException', (e) => console.log('caught', e.message));
    n.eventfdWrite(efd, 1);
  `);
  assert.equal(handled.status, 0, handled.stderr);
  assert.match(handled.stdout, /caught boom/);
});

test('a watcher left running in a worker does not break worker teardown', () => {
  const r = runNode(`
    const { Worker } = require('node:worker_threads');
    const w = new Worker(\`
      const n = require(${JSON.stringify(bindingJs)}).loadNative();
      const efd = n.eventfd(0);
      globalThis.h = n.pollStart(efd, 1, () => {});
      const h2 = n.pollStart(n.eventfd(0), 1, () => {});
      n.pollStop(h2);
      require('node:worker_threads').parentPort.postMessage('ready');
    \`, { eval: true });
    w.on('message', () => w.terminate().then(() => console.log('terminated')));
  `);
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /terminated/);
});
