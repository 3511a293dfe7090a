// A guest that knows far more inodes than RLIMIT_NOFILE allows fds: with file handles neither the
// worker nor the keeper holds an fd per inode (src/passthrough/inode-fds.ts), so 20,000 LOOKUPs
// and GETATTRs succeed under --rlimit-nofile=1024, the fd counts do not grow with the inodes,
// and a SIGKILLed worker's successor gives every name the same node id and inode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { withDaemon, workerPids, liveWorker, type Daemon } from '../support/daemon';
import { innerWorker } from '../support/sandbox';
import type { FuseClient } from '../support/fuse-client';
import { checkState, formatReport } from '../../src/tools/check-state';

const N = 20_000;

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Names "dir/file", and the node ids of the dirs. */
interface Tree { names: string[]; dirs: Map<string, bigint> }

/** LOOKUP and GETATTR names[from, to), a few requests in flight at a time; node id and st_ino of each. */
async function lookupAll(c: FuseClient, t: Tree, from: number, to: number, out: Map<string, [bigint, bigint]>): Promise<void> {
  let next = from;
  const lane = async (): Promise<void> => {
    while (next < to) {
      const name = t.names[next++]!;
      const [dir, base] = name.split('/') as [string, string];
      const e = await c.lookup(t.dirs.get(dir)!, base);
      assert.equal(e.error, 0, `LOOKUP ${name}`);
      const a = await c.getattr(e.entry!.nodeid);
      assert.equal(a.error, 0, `GETATTR ${name}`);
      assert.equal(a.attr!.ino, e.entry!.attr.ino);
      out.set(name, [e.entry!.nodeid, a.attr!.ino]);
    }
  };
  await Promise.all([lane(), lane(), lane(), lane()]);
}

async function killWorker(d: Daemon): Promise<void> {
  const before = workerPids(d.stderr());
  process.kill(before.at(-1)!, 'SIGKILL');
  for (let i = 0; i < 1000 && workerPids(d.stderr()).length <= before.length; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(workerPids(d.stderr()).length > before.length, 'a new worker started');
}

/** The tree goes on tmpfs when there is one (it gives file handles too): 20,000 creates on a
 *  busy ext4 take tens of seconds, on tmpfs well under one. */
function shareDir(): string | undefined {
  return fs.existsSync('/dev/shm') ? path.join(fs.mkdtempSync('/dev/shm/vfsd-inode-fds-'), 'share') : undefined;
}

test(`with file handles ${N} known inodes under --rlimit-nofile=1024 cost neither worker nor keeper an fd each, and keep their node ids across a worker SIGKILL`, async (t) => {
  const dir = shareDir();
  try {
  await withDaemon(['--inode-file-handles=mandatory', '--rlimit-nofile=1024'], async (d, c) => {
    const names = Array.from({ length: N }, (_, i) => `d${Math.floor(i / 1000)}/f${i}`);
    for (let i = 0; i < N / 1000; i++) fs.mkdirSync(path.join(d.dir, `d${i}`));
    for (const n of names) fs.writeFileSync(path.join(d.dir, n), '');
    // Names in subdirectories, as a guest walks them.
    const dirs = new Map<string, bigint>();
    for (let i = 0; i < N / 1000; i++) {
      const e = await c.lookup(1, `d${i}`);
      assert.equal(e.error, 0);
      dirs.set(`d${i}`, e.entry!.nodeid);
    }
    const walk: Tree = { names, dirs };
    const seen = new Map<string, [bigint, bigint]>();
    await lookupAll(c, walk, 0, 1000, seen);
    // The worker itself, below its sandbox launcher (the pid the keeper logs).
    const worker = innerWorker(liveWorker(d.stderr())!);
    const keeper = d.proc.pid!;
    const at1k = { worker: fdCount(worker), keeper: fdCount(keeper) };
    await lookupAll(c, walk, 1000, N, seen);
    const atN = { worker: fdCount(worker), keeper: fdCount(keeper) };
    t.diagnostic(`fds with 1,000 inodes known: ${JSON.stringify(at1k)}; with ${N}: ${JSON.stringify(atN)}`);
    // The cache's bound is a quarter of the guest's fd budget (some 40 here): the counts may move
    // by that much, not by the 19,000 inodes added.
    assert.ok(atN.worker - at1k.worker < 100, `worker fds: ${at1k.worker} with 1,000 inodes, ${atN.worker} with ${N}`);
    assert.ok(atN.keeper - at1k.keeper < 10, `keeper fds: ${at1k.keeper} with 1,000 inodes, ${atN.keeper} with ${N}`);
    assert.ok(atN.worker < 1024 && atN.keeper < 1024);
    assert.ok(at1k.worker > 40, `the worker's own fds (memfds, eventfds, the cache): ${at1k.worker}; not its launcher's`);
    const r = checkState(keeper);
    assert.ok(r.clean, formatReport(r));
    assert.equal(r.tables.find((t) => t.name === 'vfsd-inodes')!.byHandle, N + N / 1000);

    await killWorker(d);
    const again = new Map<string, [bigint, bigint]>();
    await lookupAll(c, walk, 0, N, again);
    for (const n of names) assert.deepEqual(again.get(n), seen.get(n), `${n}: node id and st_ino`);
    const w2 = innerWorker(liveWorker(d.stderr())!);
    assert.ok(fdCount(w2) - at1k.worker < 100, `the new worker's fds: ${fdCount(w2)}`);
    const log = d.stderr().split('\n').find((l) => l.includes('"state recovered"'));
    assert.ok(log && JSON.parse(log).byHandle >= N, log);
  }, dir);
  } finally {
    if (dir) fs.rmSync(path.dirname(dir), { recursive: true, force: true });
  }
});
