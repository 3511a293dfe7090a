// What a restarted worker gets back, and from where: inodes by file handle (or, with
// --inode-file-handles=never, from the keeper's O_PATH fds), open files and dirs from the
// keeper's duplicates or by opening their inode again, unlinked-but-open files, and nodes whose
// file is gone from the host (reserved until the guest forgets them, EBADF meanwhile).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { REPO, isLive, startDaemon, workerPids, withDaemon, type Daemon } from '../support/daemon';
import { checkState, formatReport } from '../../src/tools/check-state';
import { DEFAULT_WORKER_CAPS } from '../../src/config';
import { waitInnerWorker } from '../support/sandbox';

const O_RDWR = 0o2, O_CREAT = 0o100, O_TRUNC = 0o1000;
const EBADF = 9, ENOENT = 2;


/** Path fds the keeper holds (files and directories, not memfds, sockets or /dev). */
function keeperPathFds(pid: number): number {
  let n = 0;
  for (const e of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const l = fs.readlinkSync(`/proc/${pid}/fd/${e}`);
      if (l.startsWith('/') && !l.startsWith('/dev/') && !l.startsWith('/memfd:') && Number(e) > 2) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

/** SIGKILL the current worker and wait until its successor has logged that it started. */
async function killWorker(d: Daemon, during?: () => void): Promise<void> {
  const before = workerPids(d.stderr());
  const keeper = d.proc.pid!;
  if (during) process.kill(keeper, 'SIGSTOP');
  process.kill(before.at(-1)!, 'SIGKILL');
  if (during) {
    // The keeper cannot start a successor while stopped: what `during` does happens between.
    await new Promise((r) => setTimeout(r, 50));
    during();
    process.kill(keeper, 'SIGCONT');
  }
  for (let i = 0; i < 400 && workerPids(d.stderr()).length <= before.length; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(workerPids(d.stderr()).length > before.length, 'a new worker started');
}

for (const handles of ['prefer', 'never'] as const) {
  test(`--inode-file-handles=${handles}: node ids, open files, an unlinked-but-open file and an open dir survive a SIGKILL right after they were made`, async () => {
    await withDaemon([`--inode-file-handles=${handles}`], async (d, c) => {
      const names = Array.from({ length: 40 }, (_, i) => `f${i}`);
      for (const n of names) fs.writeFileSync(`${d.dir}/${n}`, `content of ${n}`);
      fs.mkdirSync(`${d.dir}/sub`);
      for (const n of ['x', 'y', 'z']) fs.writeFileSync(`${d.dir}/sub/${n}`, n);
      const ids = new Map<string, bigint>();
      for (const n of names) {
        const r = await c.lookup(1, n);
        assert.equal(r.error, 0);
        ids.set(n, r.entry!.nodeid);
      }
      // Made just before the kill: their fds may still be queued for the keeper.
      const held = await c.create(1, 'held', O_RDWR | O_CREAT | O_TRUNC);
      assert.equal(held.error, 0);
      assert.equal((await c.write(held.entry!.nodeid, held.fh!, 0, Buffer.from('held data'))).error, 0);
      const unl = await c.create(1, 'unlinked', O_RDWR | O_CREAT);
      assert.equal(unl.error, 0);
      assert.equal((await c.write(unl.entry!.nodeid, unl.fh!, 0, Buffer.from('still here'))).error, 0);
      assert.equal((await c.unlink(1, 'unlinked')).error, 0);
      const sub = await c.lookup(1, 'sub');
      const dh = await c.opendir(sub.entry!.nodeid);
      assert.equal(dh.error, 0);
      // A listing half done ("." and ".." fit in 64 bytes): the worker keeps the rest of what it
      // read, and its successor has to seek to the guest's cookie instead.
      const dh2 = await c.opendir(sub.entry!.nodeid);
      const firstPage = await c.readdir(sub.entry!.nodeid, dh2.fh!, 0, 64);
      assert.equal(firstPage.error, 0);
      assert.equal(firstPage.entries!.length, 2);
      const opened = await c.open(ids.get('f3')!, O_RDWR);
      assert.equal(opened.error, 0);

      await killWorker(d);

      for (const n of names) assert.equal((await c.lookup(1, n)).entry?.nodeid, ids.get(n), `node id of ${n}`);
      const rd = await c.read(held.entry!.nodeid, held.fh!, 0, 100);
      assert.equal(rd.error, 0);
      assert.equal(rd.body.toString(), 'held data');
      assert.equal((await c.read(ids.get('f3')!, opened.fh!, 0, 100)).body.toString(), 'content of f3');
      const ru = await c.read(unl.entry!.nodeid, unl.fh!, 0, 100);
      assert.equal(ru.error, 0, 'the unlinked-but-open file reads');
      assert.equal(ru.body.toString(), 'still here');
      const ga = await c.getattr(unl.entry!.nodeid, unl.fh!);
      assert.equal(ga.error, 0);
      assert.equal(ga.attr!.nlink, 0);
      const ents = (await c.readdirAll(sub.entry!.nodeid, dh.fh!)).map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort();
      assert.deepEqual(ents, ['x', 'y', 'z']);
      const rest = await c.readdirAll(sub.entry!.nodeid, dh2.fh!, 4096, false, firstPage.entries![1]!.off);
      assert.deepEqual([...firstPage.entries!, ...rest].map((e) => e.name).sort(), ['.', '..', 'x', 'y', 'z'], 'a listing continued across the worker crash: every name once');
      // The handle that was opened O_TRUNC is not truncated again when it is opened anew.
      assert.equal(fs.readFileSync(`${d.dir}/held`, 'utf8'), 'held data');

      const log = d.stderr();
      const rec = /"msg":"state recovered"/.exec(log) ? JSON.parse(log.split('\n').find((l) => l.includes('"state recovered"'))!) : null;
      assert.ok(rec, `a "state recovered" line:\n${log}`);
      assert.deepEqual(rec.lost, { inodes: 0, files: 0, dirs: 0 });
      if (handles === 'prefer') assert.ok(rec.byHandle >= names.length, `inodes by handle: ${rec.byHandle}`);
      else assert.equal(rec.byHandle, 0);

      const r = checkState(d.proc.pid!);
      assert.ok(r.clean, formatReport(r));
      for (const h of [held, unl]) assert.equal((await c.release(h.entry!.nodeid, h.fh!)).error, 0);
    });
  });
}

test('with file handles the keeper holds no fd per inode; with --inode-file-handles=never it holds one each', async () => {
  const counts: Record<string, number> = {};
  for (const handles of ['prefer', 'never'] as const) {
    await withDaemon([`--inode-file-handles=${handles}`], async (d, c) => {
      for (let i = 0; i < 100; i++) fs.writeFileSync(`${d.dir}/n${i}`, '');
      for (let i = 0; i < 100; i++) assert.equal((await c.lookup(1, `n${i}`)).error, 0);
      // Give queued dels (none expected) and the keeper's event loop time to settle.
      await new Promise((r) => setTimeout(r, 100));
      counts[handles] = keeperPathFds(d.proc.pid!);
    });
  }
  assert.ok(counts.prefer! < 10, `keeper path fds with file handles: ${counts.prefer}`);
  assert.ok(counts.never! >= 100, `keeper path fds with O_PATH fds: ${counts.never}`);
});

test('a node whose file was deleted on the host while no worker ran answers EBADF and keeps its id until FORGET', async () => {
  await withDaemon([], async (d, c) => {
    fs.writeFileSync(`${d.dir}/victim`, 'v');
    fs.writeFileSync(`${d.dir}/other`, 'o');
    fs.mkdirSync(`${d.dir}/opendir`);
    const v = await c.lookup(1, 'victim');
    const o = await c.lookup(1, 'other');
    const od = await c.lookup(1, 'opendir');
    const odh = await c.opendir(od.entry!.nodeid);
    assert.equal(v.error, 0);
    assert.equal(odh.error, 0);
    await new Promise((r) => setTimeout(r, 100)); // the open dir's fd reaches the keeper
    await killWorker(d, () => {
      fs.unlinkSync(`${d.dir}/victim`);
      fs.rmdirSync(`${d.dir}/opendir`);
    });

    assert.equal((await c.getattr(v.entry!.nodeid)).error, -EBADF);
    assert.equal((await c.lookup(1, 'victim')).error, -ENOENT);
    assert.equal((await c.getattr(o.entry!.nodeid)).error, 0, 'the other node came back');
    // A directory removed on the host while the guest has it open: no handle opens it, but the
    // open dir the keeper holds does.
    const ga = await c.getattr(od.entry!.nodeid);
    assert.equal(ga.error, 0, 'the removed but open directory answers GETATTR');
    assert.equal(ga.attr!.nlink, 0);
    assert.equal((await c.readdir(od.entry!.nodeid, odh.fh!, 0, 4096)).error, -ENOENT, 'as getdents answers for a removed directory');
    assert.match(d.stderr(), /"lost":\{"inodes":1,"files":0,"dirs":0\}.*"msg":"state recovered"/);
    // Its id is not handed out again while the guest may still use it.
    const seen = new Set<bigint>();
    for (let i = 0; i < 20; i++) {
      const n = await c.create(1, `new${i}`, O_RDWR | O_CREAT);
      assert.equal(n.error, 0);
      seen.add(n.entry!.nodeid);
      assert.equal((await c.release(n.entry!.nodeid, n.fh!)).error, 0);
    }
    assert.ok(!seen.has(v.entry!.nodeid), 'the lost node id is still reserved');
    await c.forget(v.entry!.nodeid, 1);
    const r = checkState(d.proc.pid!);
    assert.ok(r.clean, formatReport(r));
    assert.equal(r.tables[0]!.valid, 1 + 1 + 1 + 20, formatReport(r));
  });
});

test('a loaded spare worker takes over after a SIGKILL; an upgrade replaces the spare; --no-spare-worker keeps none', async () => {
  const spares = (log: string): number[] => [...log.matchAll(/"pid":(\d+),"msg":"spare worker loading"/g)].map((m) => Number(m[1]));
  const waitFor = async (cond: () => boolean, what: string): Promise<void> => {
    for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(cond(), what);
  };
  await withDaemon([], async (d, c) => {
    await waitFor(() => spares(d.stderr()).length === 1, 'a spare is loaded');
    const spare = spares(d.stderr())[0]!;
    await killWorker(d);
    assert.equal((await c.getattr(1)).error, 0);
    assert.match(d.stderr(), new RegExp(`"spare":true,"pid":${spare},"start":\\d+,"msg":"worker started"`), 'the spare is the new worker');
    assert.equal(workerPids(d.stderr()).at(-1), spare);
    await waitFor(() => spares(d.stderr()).length === 2, 'the next spare is loaded');
    const second = spares(d.stderr())[1]!;
    process.kill(d.proc.pid!, 'SIGHUP');
    await waitFor(() => spares(d.stderr()).length === 3, 'a spare from the code on disk after the upgrade');
    assert.equal((await c.getattr(1)).error, 0);
    await waitFor(() => !isLive(second), 'the spare with the old code is gone');
  });
  await withDaemon(['--no-spare-worker'], async (d, c) => {
    await new Promise((r) => setTimeout(r, 1500));
    await killWorker(d);
    assert.equal((await c.getattr(1)).error, 0);
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(spares(d.stderr()), []);
  });
});

test('submounts: inodes on a tmpfs under the share come back by handle through its mount fd; on a mount without handles (proc) by the keeper\'s fds', async (t) => {
  // Mounted before the daemon starts: the sandboxed worker sees the share's mounts as they were
  // then (its share tree is a copy of them; docs/security.md).
  const share = fs.mkdtempSync('/tmp/vfsd-submounts-');
  const tmp = `${share}/tmpfs`, proc = `${share}/proc`;
  fs.mkdirSync(tmp);
  fs.mkdirSync(proc);
  const mounted: string[] = [];
  try {
    for (const [type, at] of [['tmpfs', tmp], ['proc', proc]] as const) {
      const r = spawnSync('mount', ['-t', type, 'none', at]);
      if (r.status !== 0) return t.skip(`cannot mount ${type} here: ${String(r.stderr).trim()}`);
      mounted.push(at);
    }
    await withDaemon([], async (d, c) => {
      for (let i = 0; i < 20; i++) fs.writeFileSync(`${tmp}/f${i}`, `tmpfs ${i}`);
      const tm = await c.lookup(1, 'tmpfs');
      const pm = await c.lookup(1, 'proc');
      assert.equal(tm.error, 0);
      const ids: bigint[] = [];
      for (let i = 0; i < 20; i++) ids.push((await c.lookup(tm.entry!.nodeid, `f${i}`)).entry!.nodeid);
      const pv = await c.lookup(pm.entry!.nodeid, 'version');
      assert.equal(pv.error, 0);
      const fdsBefore = keeperPathFds(d.proc.pid!);

      await killWorker(d);

      for (let i = 0; i < 20; i++) assert.equal((await c.lookup(tm.entry!.nodeid, `f${i}`)).entry?.nodeid, ids[i], `node id of tmpfs/f${i}`);
      const o = await c.open(ids[7]!, 0);
      assert.equal(o.error, 0);
      assert.equal((await c.read(ids[7]!, o.fh!, 0, 64)).body.toString(), 'tmpfs 7');
      assert.equal((await c.getattr(pv.entry!.nodeid)).error, 0, 'the proc inode came back from the keeper\'s fd');
      const rec = JSON.parse(d.stderr().split('\n').find((l) => l.includes('"state recovered"'))!);
      assert.deepEqual(rec.lost, { inodes: 0, files: 0, dirs: 0 });
      assert.ok(rec.byHandle >= 21, `tmpfs and its files by handle: ${rec.byHandle}`);
      // The keeper holds the tmpfs mount's fd and the proc inodes' fds, not one per tmpfs file.
      assert.ok(fdsBefore < 10, `keeper path fds: ${fdsBefore}`);
      const r = checkState(d.proc.pid!);
      assert.ok(r.clean, formatReport(r));
      assert.equal(r.tables[0]!.handlesOpened, r.tables[0]!.byHandle, `every handle opens through its mount's fd:\n${formatReport(r)}`);
      assert.equal((await c.release(ids[7]!, o.fh!)).error, 0);
    }, share);
  } finally {
    for (const at of mounted.reverse()) spawnSync('umount', ['-l', at]);
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('a keeper re-exec (SIGUSR2) leaves the worker serving; the new image adopts it, upgrades it, and reaps it', async () => {
  await withDaemon([], async (d, c) => {
    const before = workerPids(d.stderr()).at(-1)!;
    process.kill(d.proc.pid!, 'SIGUSR2');
    const retired = new RegExp(`"pid":${before},.*"msg":"worker retired"`);
    for (let i = 0; i < 1000 && !retired.test(d.stderr()); i++) {
      assert.equal((await c.getattr(1)).error, 0);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.match(d.stderr(), new RegExp(`"pid":${before},.*"msg":"worker adopted"`));
    assert.match(d.stderr(), retired, 'then replaced by a worker from the code on disk, as a planned upgrade');
    assert.notEqual(workerPids(d.stderr()).at(-1), before);
    assert.doesNotMatch(d.stderr(), /"level":(40|50)/, 'no warning: the adopted worker was retired, not lost');
    const state = (): string => { try { return fs.readFileSync(`/proc/${before}/stat`, 'latin1').split(') ')[1]!.split(' ')[0]!; } catch { return 'gone'; } };
    for (let i = 0; i < 200 && state() !== 'gone'; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(state(), 'gone', 'the adopted worker was reaped, not left a zombie');
    await killWorker(d);
    assert.equal((await c.getattr(1)).error, 0);
    const r = checkState(d.proc.pid!);
    assert.ok(r.clean, formatReport(r));
  });
});

test('a SIGHUP that arrives while the keeper is still loading is held and acted on, not fatal', async () => {
  // The launcher (bin/virtiofsd-ts) listens from its first line; before that only Node's own
  // start-up is exposed (about 100 ms here), which no JavaScript can cover (Node resets signal
  // dispositions and masks at start-up).
  const dir = fs.mkdtempSync('/tmp/vfsd-early-');
  const sock = `${dir}/s`;
  const p = spawn(process.execPath, [`${REPO}/bin/virtiofsd-ts`, `--socket-path=${sock}`, `--shared-dir=${dir}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  try {
    const caught = (): boolean => {
      try { return (BigInt(`0x${/SigCgt:\s*([0-9a-f]+)/.exec(fs.readFileSync(`/proc/${p.pid}/status`, 'latin1'))![1]}`) & 1n) !== 0n; } catch { return false; }
    };
    for (let i = 0; i < 2000 && !caught(); i++) await new Promise((r) => setTimeout(r, 1));
    assert.ok(caught(), 'SIGHUP is caught');
    const early = !err.includes('Waiting for vhost-user socket connection');
    process.kill(p.pid!, 'SIGHUP');
    for (let i = 0; i < 500 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(fs.existsSync(sock), `the keeper got to listening:\n${err}`);
    assert.equal(p.exitCode, null);
    assert.equal(p.signalCode, null);
    // Held until the keeper listens (once QEMU is connected), then acted on.
    const fe = await VhostUserFrontend.connect(loadNative(), sock, {});
    try {
      for (let i = 0; i < 300 && early && !/SIGHUP: restarting the worker/.test(err); i++) await new Promise((r) => setTimeout(r, 10));
      if (early) assert.match(err, /SIGHUP: restarting the worker/, 'the held SIGHUP was acted on');
    } finally {
      fe.close();
    }
  } finally {
    p.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the worker runs with the reduced capability set (SYS_ADMIN dropped: trusted.* xattrs get EPERM) unless --modcaps adds to it', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
  const bits = (names: string[]): bigint => names.reduce((m, n) => m | (1n << BigInt(CAP_BITS[n]!)), 0n);
  for (const [args, want] of [[[], DEFAULT_WORKER_CAPS], [['--modcaps=+sys_admin'], [...DEFAULT_WORKER_CAPS, 'sys_admin']]] as const) {
    await withDaemon(['--xattr', ...args], async (d, c) => {
      const w = await waitInnerWorker(workerPids(d.stderr()).at(-1)!);
      const status = fs.readFileSync(`/proc/${w}/status`, 'latin1');
      const bnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(status)![1]}`);
      const eff = BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(status)![1]}`);
      const keeperBnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(fs.readFileSync(`/proc/${d.proc.pid}/status`, 'latin1'))![1]}`);
      assert.equal(bnd, bits([...want]) & keeperBnd, `worker bounding set 0x${bnd.toString(16)}`);
      assert.equal(eff, bnd);
      const cr = await c.create(1, 'x', O_RDWR | O_CREAT);
      assert.equal((await c.setxattr(cr.entry!.nodeid, 'user.k', Buffer.from('v'))).error, 0);
      assert.equal((await c.setxattr(cr.entry!.nodeid, 'trusted.k', Buffer.from('v'))).error, want.includes('sys_admin') ? 0 : -1 /* EPERM */);
      // The spare starts the same way.
      await killWorker(d);
      const w2 = await waitInnerWorker(workerPids(d.stderr()).at(-1)!);
      assert.equal(BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(fs.readFileSync(`/proc/${w2}/status`, 'latin1'))![1]}`), bnd);
    });
  }
});

/** Bit numbers of the capabilities (linux/capability.h) the test names. */
const CAP_BITS: Record<string, number> = {
  chown: 0, dac_override: 1, dac_read_search: 2, fowner: 3, fsetid: 4, setgid: 6, setuid: 7, sys_admin: 21, mknod: 27, setfcap: 31,
};
