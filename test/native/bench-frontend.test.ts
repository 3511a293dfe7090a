// The native bench front-end (native/bench, `npm run bench`) against its null back-end, our daemon
// and the C virtiofsd: every workload completes its requests with replies the front-end checked
// (unique, error, lengths, node ids, directory entries, READ data), so the bench cannot silently
// measure failures.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { startDaemon, C_VIRTIOFSD, type Daemon } from '../support/daemon';
import { NATIVE_WORKLOADS, NativeFrontend, prepareShare, startNullBackend, type NativeCell, type NativeWorkload } from '../support/native-frontend';

const DIR_ENTRIES = 100;
const OPS = 300;
const FILES = { file: 'data.bin', wfile: 'wdata.bin', dir: 'dir' };

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function assertClean(c: NativeCell, what: string): void {
  assert.equal(c.errors, 0, `${what}: ${c.firstError}`);
  assert.equal(c.firstError, '', what);
  assert.equal(c.ops, OPS, `${what}: ops`);
  assert.ok(c.requests >= c.ops, `${what}: ${c.requests} requests for ${c.ops} ops`);
  assert.ok(c.p50us > 0 && c.p99us >= c.p50us, `${what}: latency ${c.p50us} / ${c.p99us}`);
  assert.ok(c.kicks <= c.posted, `${what}: ${c.kicks} kicks for ${c.posted} requests`);
}

async function everyWorkload(fe: NativeFrontend, name: string, verify: boolean): Promise<Map<NativeWorkload, NativeCell>> {
  const out = new Map<NativeWorkload, NativeCell>();
  for (const w of NATIVE_WORKLOADS) {
    const c = await fe.run(w, 32, { maxOps: OPS, verify });
    assertClean(c, `${name} ${w}`);
    out.set(w, c);
  }
  for (const depth of [1, 128]) assertClean(await fe.run('getattr', depth, { maxOps: OPS }), `${name} getattr depth ${depth}`);
  // A call after every used entry, as Linux's virtio_fs asks, instead of after 3/4 of the depth.
  assertClean(await fe.run('lookup', 32, { maxOps: OPS, calls: 'each' }), `${name} lookup calls=each`);
  return out;
}

test('against the null back-end, every workload gets well-formed canned replies', async () => {
  const nb = await startNullBackend(DIR_ENTRIES);
  cleanups.push(() => nb.stop());
  const fe = await NativeFrontend.start({ socket: nb.socket, pid: nb.proc.pid, ...FILES });
  cleanups.push(() => fe.close());
  assert.equal(fe.ready?.eventIdx, true);
  const cells = await everyWorkload(fe, 'null', false);
  for (const w of ['readdirplus', 'readdir'] as const) {
    assert.equal(cells.get(w)!.entriesPerScan, DIR_ENTRIES, w);
    assert.ok(cells.get(w)!.entries >= DIR_ENTRIES, w);
  }
  assert.ok(cells.get('create')!.requests >= 4 * OPS, 'create is CREATE + WRITE + RELEASE + UNLINK');
  await fe.close();
  await nb.stop();
});

async function againstDaemon(peer: 'ts' | 'c', args: string[]): Promise<{ d: Daemon; cells: Map<NativeWorkload, NativeCell> }> {
  const d = await startDaemon(peer, { args });
  cleanups.push(() => d.stop());
  prepareShare(d.dir, DIR_ENTRIES, FILES.dir);
  const fe = await NativeFrontend.start({ socket: d.socket, pid: d.proc.pid, ...FILES });
  cleanups.push(() => fe.close());
  const cells = await everyWorkload(fe, peer, true);
  for (const w of ['readdirplus', 'readdir'] as const) assert.equal(cells.get(w)!.entriesPerScan, DIR_ENTRIES, `${w}: a scan sees every file of the directory`);
  assert.deepEqual(fs.readdirSync(d.dir).filter((n) => n.startsWith('bench-create-')), [], 'every created file was unlinked');
  assert.ok(cells.get('getattr')!.daemonCpuNs > 0, 'the daemon tree\'s CPU time is read');

  // READ data is compared with the file: change the file under the daemon and the check fails.
  fs.writeFileSync(`${d.dir}/${FILES.file}`, Buffer.alloc(64 * 1024 * 1024, 0xee));
  const bad = await fe.run('read1m', 4, { maxOps: 20, verify: true });
  assert.ok(bad.errors > 0 && bad.firstError.includes('wrong data'), `verify noticed: ${bad.firstError}`);
  await fe.close();
  return { d, cells };
}

test('against our daemon (--cache=never), every workload completes with checked replies', async () => {
  const { d, cells } = await againstDaemon('ts', ['--cache=never']);
  assert.ok(cells.get('getattr')!.daemonProcs >= 2, 'keeper and worker are both counted');
  await d.stop();
});

test('against the C virtiofsd (-o cache=none), every workload completes with checked replies', { skip: !fs.existsSync(C_VIRTIOFSD) && `${C_VIRTIOFSD} not installed` }, async () => {
  const { d } = await againstDaemon('c', ['-o', 'cache=none']);
  await d.stop();
});
