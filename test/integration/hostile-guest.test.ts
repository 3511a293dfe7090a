// A hostile guest (and a hostile local user) against the daemon, through our vhost-user
// front-end: each attack of issue 8 is tried as an attacker would, and shown refused or
// contained; after each one the daemon still serves an ordinary request.
//  - device nodes and FIFOs the guest makes are never opened (OPEN, CREATE, GETLK, SETLK,
//    SETATTR size, SYNCFS, journal replay), with the C virtiofsd's errno (EBADF);
//  - the socket is 0700 (0770 with --socket-group), `<socket>.pid` is locked;
//  - what the guest may hold is budgeted (ENFILE past it, one log line an episode), and the
//    keeper survives a worker SIGKILL with the fd tables full;
//  - --readonly opens nothing for writing; workers inherit no stray fd; the state memfds are sealed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { loadNative } from '../../src/native/binding';
import {
  AT_FDCWD, F_RDLCK, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE, F_UNLCK, F_WRLCK, O_ACCMODE, O_CREAT, O_EXCL, O_PATH, O_RDONLY, O_RDWR,
  O_WRONLY, OFFSET_MAX as MAX, S_IFCHR, S_IFIFO,
} from '../../src/linux/constants';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { C_VIRTIOFSD, REPO, startDaemon, workerPids, type Daemon, type DaemonOptions } from '../support/daemon';
import { innerWorker } from '../support/sandbox';
import { startCrashDaemon } from '../support/crash-harness';

const native = loadNative();
const E = osConstants.errno;
const ROOT = process.getuid?.() === 0;
/** A FUSE (new_encode_dev) device number. */
const dev = (major: number, minor: number): number => (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
const NOBODY = 65534;


function logLines(stderr: string, msg: RegExp): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of stderr.split('\n')) {
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      if (typeof j.msg === 'string' && msg.test(j.msg)) out.push(j);
    } catch { /* not a log line */ }
  }
  return out;
}

/** An open fd: where it points, its open flags (fdinfo, octal) and the inode it is of. */
interface OpenFd { fd: number; target: string; flags: number; dev: bigint; ino: bigint }

/** The fds pid has open. */
function openFds(pid: number): OpenFd[] {
  const out: OpenFd[] = [];
  for (const e of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = fs.readlinkSync(`/proc/${pid}/fd/${e}`);
      const info = fs.readFileSync(`/proc/${pid}/fdinfo/${e}`, 'latin1');
      let dev = -1n, ino = -1n;
      try { ({ dev, ino } = fs.statSync(`/proc/${pid}/fd/${e}`, { bigint: true })); } catch { /* not statable (a socket of another ns) */ }
      out.push({ fd: Number(e), target, flags: parseInt(/flags:\s*([0-7]+)/.exec(info)![1]!, 8), dev, ino });
    } catch { /* closed meanwhile */ }
  }
  return out;
}


/** Fds of pid on the file at host path p, opened for I/O (an O_PATH fd, which every known inode has, opens nothing). */
function opened(pid: number, p: string): OpenFd[] {
  const st = fs.statSync(p, { bigint: true });
  return openFds(pid).filter((f) => f.dev === st.dev && f.ino === st.ino && (f.flags & O_PATH) === 0);
}

/** worker(): the serving worker's own process (below its sandbox launcher, which the keeper logs). */
interface Guest { d: Daemon; fe: VhostUserFrontend; c: FuseClient; worker(): number }

async function withGuest(args: string[], fn: (g: Guest) => Promise<void>, o: DaemonOptions = {}): Promise<void> {
  const d = await startDaemon('ts', { ...o, args: ['--log-level=info', ...args] });
  const fe = await VhostUserFrontend.connect(native, d.socket, { ramSize: 64 << 20 });
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 10_000));
    assert.equal((await c.init()).error, 0);
    await fn({ d, fe, c, worker: () => innerWorker(workerPids(d.stderr()).at(-1)!) });
  } finally {
    fe.close();
    await d.stop();
  }
}

/** An ordinary request stream still works: make, write, read back, stat the root. */
async function servesNormally(c: FuseClient, tag: string): Promise<void> {
  assert.equal((await c.getattr(1)).error, 0, `${tag}: GETATTR of the root`);
  const name = `normal-${tag}-${Math.random().toString(36).slice(2)}`;
  const cr = await c.create(1, name, O_RDWR | O_CREAT | O_EXCL, 0o644);
  assert.equal(cr.error, 0, `${tag}: CREATE of a regular file`);
  assert.equal((await c.write(cr.entry!.nodeid, cr.fh!, 0, Buffer.from('hello'))).size, 5);
  assert.equal((await c.read(cr.entry!.nodeid, cr.fh!, 0, 5)).body.toString(), 'hello', `${tag}: READ back`);
  assert.equal((await c.release(cr.entry!.nodeid, cr.fh!)).error, 0);
  assert.equal((await c.unlink(1, name)).error, 0);
}

/** Run n requests, at most inFlight at a time. */
async function many<T>(n: number, f: (i: number) => Promise<T>, inFlight = 48): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await f(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
  return out;
}

async function killWorker(d: Daemon): Promise<void> {
  const before = workerPids(d.stderr());
  process.kill(before.at(-1)!, 'SIGKILL');
  for (let i = 0; i < 500 && workerPids(d.stderr()).length <= before.length; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(workerPids(d.stderr()).length > before.length, 'a new worker started');
}

/** What a device node or FIFO in the share answers to every op that would open it. */
async function specialFileAnswers(c: FuseClient, name: string, nodeid: bigint): Promise<Record<string, number>> {
  return {
    'OPEN O_RDONLY': (await c.open(nodeid, O_RDONLY)).error,
    'OPEN O_RDWR': (await c.open(nodeid, O_RDWR)).error,
    'CREATE without O_EXCL': (await c.create(1, name, O_RDWR | O_CREAT, 0o644)).error,
    'CREATE with O_EXCL': (await c.create(1, name, O_RDWR | O_CREAT | O_EXCL, 0o644)).error,
    'GETLK': (await c.getlk(nodeid, 0, 77n, 0n, MAX, F_WRLCK)).error,
    'SETLK': (await c.setlk(nodeid, 0, 78n, 0n, MAX, F_RDLCK)).error,
    'SETATTR size': (await c.setattr(nodeid, { size: 0 })).error,
    'SYNCFS': (await c.syncfs(nodeid)).error,
  };
}

const REFUSED = {
  'OPEN O_RDONLY': -E.EBADF, 'OPEN O_RDWR': -E.EBADF, 'CREATE without O_EXCL': -E.EBADF, 'CREATE with O_EXCL': -E.EEXIST,
  'GETLK': -E.EBADF, 'SETLK': -E.EBADF, 'SETATTR size': -E.EBADF, 'SYNCFS': -E.EBADF,
};

test('device nodes the guest makes (char 1:9 urandom, 1:11 kmsg) are never opened: every opening op answers EBADF', { skip: !ROOT && 'needs root (MKNOD of a device)' }, async () => {
  await withGuest([], async ({ d, c, worker }) => {
    for (const [name, rdev] of [['urandom', dev(1, 9)], ['kmsg', dev(1, 11)]] as const) {
      const mk = await c.mknod(1, name, S_IFCHR | 0o666, rdev);
      assert.equal(mk.error, 0, `MKNOD ${name}`);
      assert.ok(fs.statSync(path.join(d.dir, name)).isCharacterDevice());
      assert.deepEqual(await specialFileAnswers(c, name, mk.entry!.nodeid), REFUSED, name);
      for (const pid of [worker(), d.proc.pid!]) assert.deepEqual(opened(pid, path.join(d.dir, name)), [], `${name} is not open in pid ${pid}`);
      await servesNormally(c, name);
    }
  });
});

test('the C virtiofsd answers the same errno to the same device node', { skip: (!ROOT || !fs.existsSync(C_VIRTIOFSD)) && 'needs root and the C virtiofsd' }, async () => {
  const d = await startDaemon('c', { args: ['-o', 'posix_lock'] });
  const fe = await VhostUserFrontend.connect(native, d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 10_000));
    assert.equal((await c.init()).error, 0);
    const mk = await c.mknod(1, 'urandom', S_IFCHR | 0o666, dev(1, 9));
    assert.equal(mk.error, 0);
    assert.deepEqual(await specialFileAnswers(c, 'urandom', mk.entry!.nodeid), REFUSED);
  } finally {
    fe.close();
    await d.stop();
  }
});

test('a FIFO in the share never wedges the device: every opening op answers EBADF at once, and the rings stop', async () => {
  await withGuest([], async ({ d, fe, c, worker }) => {
    const mk = await c.mknod(1, 'fifo', S_IFIFO | 0o666);
    assert.equal(mk.error, 0);
    // One the host made (no reader or writer will ever come).
    assert.equal(native.mknodat(AT_FDCWD, path.join(d.dir, 'hostfifo'), S_IFIFO | 0o600, 0), 0);
    const host = await c.lookup(1, 'hostfifo');
    for (const [name, nodeid] of [['fifo', mk.entry!.nodeid], ['hostfifo', host.entry!.nodeid]] as const) {
      assert.deepEqual(await specialFileAnswers(c, name, nodeid), REFUSED, name);
      assert.deepEqual(opened(worker(), path.join(d.dir, name)), []);
    }
    await servesNormally(c, 'fifo');
    // GET_VRING_BASE (QEMU's guest reset or shutdown) is answered: nothing is stuck in openat.
    await fe.stop();
    await fe.start();
    await servesNormally(c, 'fifo-after-restart');
  });
});

test('a replayed CREATE (worker killed after its journal intent) does not open a device node either', { skip: !ROOT && 'needs root (mknod)' }, async () => {
  const d = await startCrashDaemon({ args: ['--log-level=info'], crashpoint: 'after-journal-intent' });
  const fe = await VhostUserFrontend.connect(native, d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 10_000));
    assert.equal((await c.init()).error, 0);
    assert.equal(native.mknodat(AT_FDCWD, path.join(d.dir, 'kmsg'), S_IFCHR | 0o600, dev(1, 11)), 0);
    const r = await c.create(1, 'kmsg', O_WRONLY | O_CREAT, 0o600);
    assert.ok(await d.waitWorkers(2), 'the first worker crashed at its crash point and another took over');
    assert.equal(r.error, -E.EBADF);
    for (const pid of [d.workerPids().at(-1)!, d.pid]) assert.deepEqual(opened(pid, path.join(d.dir, 'kmsg')), []);
    await servesNormally(c, 'replay');
  } finally {
    fe.close();
    await d.stop();
  }
});

/** Wait until the daemon says it listens (the socket file exists from bind(2) on; its group and
 *  mode are set just after). */
async function listening(d: Daemon): Promise<void> {
  for (let i = 0; i < 500 && !d.stderr().includes('Waiting for vhost-user socket connection'); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(d.stderr().includes('Waiting for vhost-user socket connection'), d.stderr());
}

/** Try to connect to a unix socket as uid/gid (a child process): 'connected' or the error code. */
function connectAs(socket: string, uid: number, gid: number): string {
  const script = `const s = require('net').connect(${JSON.stringify(socket)});
    s.on('connect', () => { process.stdout.write('connected'); s.destroy(); });
    s.on('error', (e) => process.stdout.write(e.code));`;
  const r = spawnSync(process.execPath, ['-e', script], { uid, gid, encoding: 'utf8', timeout: 10_000 });
  return r.stdout;
}

test('the socket is 0700 and its pid file locked: a local user (uid 65534) cannot connect before QEMU', { skip: !ROOT && 'needs root (setuid)' }, async () => {
  const d = await startDaemon('ts', { args: ['--log-level=info'] });
  try {
    await listening(d);
    // The socket's directory is open to everyone, so only the socket's own mode decides.
    fs.chmodSync(path.dirname(d.socket), 0o755);
    const st = fs.statSync(d.socket);
    assert.equal(st.mode & 0o777, 0o700);
    assert.equal(connectAs(d.socket, NOBODY, NOBODY), 'EACCES');
    const pidFile = `${d.socket}.pid`;
    assert.equal(fs.statSync(pidFile).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(d.proc.pid));
    // QEMU (root) still gets in.
    const fe = await VhostUserFrontend.connect(native, d.socket, {});
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 10_000));
    assert.equal((await c.init()).error, 0);
    await servesNormally(c, 'socket');
    fe.close();
  } finally {
    await d.stop();
  }
});

test('--socket-group=G makes the socket 0770 and group G, whose members can connect', { skip: (!ROOT || native.getgrnam('nogroup') < 0) && 'needs root and group nogroup' }, async () => {
  const gid = native.getgrnam('nogroup');
  const d = await startDaemon('ts', { args: ['--log-level=info', '--socket-group=nogroup'] });
  try {
    await listening(d);
    fs.chmodSync(path.dirname(d.socket), 0o755);
    const st = fs.statSync(d.socket);
    assert.equal(st.mode & 0o777, 0o770);
    assert.equal(st.gid, gid);
    assert.equal(connectAs(d.socket, NOBODY, gid), 'connected', 'a member of the group gets in');
  } finally {
    await d.stop();
  }
});

test('a second daemon on the same socket path is refused with a clear error and a non-zero exit; the first serves on', async () => {
  const d = await startDaemon('ts', { args: ['--log-level=info'] });
  try {
    await listening(d);
    const other = fs.mkdtempSync(path.join(path.dirname(d.socket), 'other-'));
    const second = spawn(process.execPath, [path.join(REPO, 'bin', 'virtiofsd-ts'), `--socket-path=${d.socket}`, `--shared-dir=${other}`],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    second.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    const code = await new Promise<number | null>((r) => second.once('exit', (c) => r(c)));
    assert.notEqual(code, 0);
    assert.match(err, new RegExp(`another daemon \\(pid ${d.proc.pid}\\) is serving`));
    assert.ok(fs.statSync(d.socket).isSocket(), 'the socket is left alone');
    const fe = await VhostUserFrontend.connect(native, d.socket, {});
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 10_000));
    assert.equal((await c.init()).error, 0, 'the first daemon still owns the socket');
    await servesNormally(c, 'second-daemon');
    fe.close();
  } finally {
    await d.stop();
  }
});

/** A keeper RLIMIT_NOFILE that leaves the guest about 1200 fds (see src/keeper/fd-plan.ts). */
const NOFILE = 2048;

test('20,000 GETLKs under distinct lock owners hold no fd; 20,000 SETLK owners past --max-lock-owners get ENFILE, logged once; a worker SIGKILL is survived', async () => {
  await withGuest([`--rlimit-nofile=${NOFILE}`, '--max-lock-owners=100'], async ({ d, c, worker }) => {
    fs.writeFileSync(path.join(d.dir, 'locked'), 'x'.repeat(100));
    const node = (await c.lookup(1, 'locked')).entry!.nodeid;
    const op = await c.open(node, O_RDWR);
    assert.equal(op.error, 0);
    assert.equal((await c.setlk(node, op.fh!, 1n, 0n, 9n, F_WRLCK)).error, 0, 'owner 1 holds a lock');
    const fdsBefore = openFds(worker()).length;
    const keeperBefore = openFds(d.proc.pid!).length;
    // Half through the guest's open file, half with none (the daemon opens one for the question).
    const got = await many(20_000, async (i) => (await c.getlk(node, i % 2 ? op.fh! : 0, 1000n + BigInt(i), 0n, MAX, F_RDLCK)));
    assert.ok(got.every((g) => g.error === 0 && g.lock!.type === F_WRLCK), 'every GETLK sees owner 1 lock');
    assert.ok(openFds(worker()).length <= fdsBefore + 4, `worker fds ${fdsBefore} -> ${openFds(worker()).length}`);
    assert.ok(openFds(d.proc.pid!).length <= keeperBefore + 4, `keeper fds ${keeperBefore} -> ${openFds(d.proc.pid!).length}`);

    const set = await many(20_000, async (i) => (await c.setlk(node, op.fh!, 100_000n + BigInt(i), 20n, 30n, F_RDLCK)).error);
    const ok = set.filter((e) => e === 0).length;
    assert.equal(ok, 100 - 1, 'owners up to --max-lock-owners (owner 1 is one of them)');
    assert.ok(set.every((e) => e === 0 || e === -E.ENFILE), `only ENFILE: ${[...new Set(set)]}`);
    const warned = logLines(d.stderr(), /^guest budget/);
    assert.equal(warned.length, 1, 'one log line for the whole episode');
    assert.equal(warned[0]!.flag, '--max-lock-owners');
    await servesNormally(c, 'lock-owners');
    // An owner that closes its file (FLUSH) makes room.
    assert.equal((await c.flush(node, op.fh!, 100_000n)).error, 0);
    assert.equal((await c.setlk(node, op.fh!, 999_999n, 20n, 30n, F_RDLCK)).error, 0);

    const keeper = d.proc.pid!;
    await killWorker(d);
    assert.equal(d.proc.exitCode, null, 'the keeper lives');
    assert.equal(process.kill(keeper, 0), true);
    assert.equal((await c.getlk(node, op.fh!, 5n, 0n, 9n, F_RDLCK)).lock?.type, F_WRLCK, 'owner 1 lock survived the restart');
    await servesNormally(c, 'lock-owners-after-kill');
    assert.deepEqual(logLines(d.stderr(), /do not match|did not arrive|cannot start a worker/), []);
  });
});

test('20,000 OPENs without RELEASE get ENFILE past the fd budget (RLIMIT_NOFILE), logged once; the keeper keeps headroom and survives a worker SIGKILL', async () => {
  await withGuest([`--rlimit-nofile=${NOFILE}`], async ({ d, c, worker }) => {
    fs.writeFileSync(path.join(d.dir, 'opened'), 'some data');
    const node = (await c.lookup(1, 'opened')).entry!.nodeid;
    const r = await many(20_000, async () => c.open(node, O_RDONLY));
    const fhs = r.filter((o) => o.error === 0).map((o) => o.fh!);
    assert.ok(fhs.length > 100 && fhs.length < NOFILE, `opened ${fhs.length}`);
    assert.ok(r.every((o) => o.error === 0 || o.error === -E.ENFILE), `only ENFILE: ${[...new Set(r.map((o) => o.error))]}`);
    const warned = logLines(d.stderr(), /^guest budget/);
    assert.equal(warned.length, 1, 'one log line for the whole episode');
    assert.equal(warned[0]!.flag, '--rlimit-nofile');
    // Every handle the guest got is real, and the keeper has a duplicate of each (lazily).
    assert.equal((await c.read(node, fhs.at(-1)!, 0, 4)).body.toString(), 'some');
    await new Promise((res) => setTimeout(res, 100));
    const keeper = d.proc.pid!;
    const dupes = opened(keeper, path.join(d.dir, 'opened')).length;
    assert.equal(dupes, fhs.length, 'the keeper holds one duplicate per open file');
    assert.ok(opened(worker(), path.join(d.dir, 'opened')).length === fhs.length);
    // With the budget spent, what needs nothing new is served.
    assert.equal((await c.getattr(node)).error, 0);
    assert.equal((await c.lookup(1, 'opened')).error, 0);

    await killWorker(d);
    assert.equal(d.proc.exitCode, null, 'the keeper lives');
    assert.equal((await c.read(node, fhs[0]!, 0, 4)).body.toString(), 'some', 'an open file from before the kill');
    assert.equal((await c.open(node, O_RDONLY)).error, -E.ENFILE, 'the budget holds for the new worker');
    for (const fh of fhs.slice(0, 200)) assert.equal((await c.release(node, fh)).error, 0);
    assert.equal((await c.open(node, O_RDONLY)).error, 0, 'RELEASE makes room');
    await servesNormally(c, 'opens-after-kill');
    assert.deepEqual(logLines(d.stderr(), /do not match|did not arrive|cannot start a worker/), []);
  });
});

test('a keeper out of fds when its worker dies does not die: it tries again until fds are free, then serves', async () => {
  await withGuest(['--no-spare-worker'], async ({ d, c }) => {
    const keeper = d.proc.pid!;
    const limits = (): string[] => /Max open files\s+(\d+)\s+(\d+)/.exec(fs.readFileSync(`/proc/${keeper}/limits`, 'utf8'))!.slice(1, 3);
    const [soft, hard] = limits();
    // No new fd at all (those open stay usable): the next worker's socketpair gets EMFILE.
    assert.equal(spawnSync('prlimit', [`--pid=${keeper}`, `--nofile=3:${hard}`]).status, 0);
    const before = workerPids(d.stderr());
    process.kill(before.at(-1)!, 'SIGKILL');
    for (let i = 0; i < 500 && logLines(d.stderr(), /cannot start a worker/).length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(logLines(d.stderr(), /cannot start a worker/).length >= 2, 'it tried, and tried again');
    assert.equal(d.proc.exitCode, null, 'the keeper lives');
    // A request meanwhile waits (the guest sees a stall), and is answered once a worker runs.
    const waiting = c.getattr(1);
    assert.equal(spawnSync('prlimit', [`--pid=${keeper}`, `--nofile=${soft}:${hard}`]).status, 0);
    assert.equal((await waiting).error, 0);
    assert.ok(workerPids(d.stderr()).length > before.length, 'a new worker started');
    await servesNormally(c, 'after-emfile');
  });
});

test('inodes past --max-inodes get ENFILE (nothing is made on the host), logged once; FORGET makes room', async () => {
  await withGuest(['--max-inodes=20'], async ({ d, c }) => {
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(d.dir, `f${i}`), '');
    const r = [];
    for (let i = 0; i < 40; i++) r.push(await c.lookup(1, `f${i}`));
    const ok = r.filter((x) => x.error === 0);
    assert.equal(ok.length, 20 - 1, 'the root is one of them');
    assert.ok(r.slice(ok.length).every((x) => x.error === -E.ENFILE));
    assert.equal((await c.lookup(1, 'f0')).error, 0, 'a node the guest holds is looked up again');
    assert.equal((await c.mkdir(1, 'newdir')).error, -E.ENFILE);
    assert.equal(fs.existsSync(path.join(d.dir, 'newdir')), false, 'refused before anything was made');
    assert.equal(logLines(d.stderr(), /^guest budget/).length, 1);
    await c.forget(ok[0]!.entry!.nodeid, 2);
    await c.forget(ok[1]!.entry!.nodeid, 1);
    assert.equal((await c.lookup(1, 'f39')).error, 0, 'FORGET made room');
    assert.equal((await c.getattr(1)).error, 0);
  });
});

test('--readonly: a lock owner is opened read-only, and nothing in the worker or the keeper is open for writing', async () => {
  await withGuest(['--readonly'], async ({ d, c, worker }) => {
    fs.writeFileSync(path.join(d.dir, 'ro'), 'data');
    const node = (await c.lookup(1, 'ro')).entry!.nodeid;
    const op = await c.open(node, O_RDONLY);
    assert.equal(op.error, 0);
    assert.equal((await c.open(node, O_RDWR)).error, -E.EROFS);
    assert.equal((await c.setlk(node, op.fh!, 7n, 0n, 9n, F_RDLCK)).error, 0);
    assert.equal((await c.setlk(node, op.fh!, 8n, 0n, 9n, F_WRLCK)).error, -E.EBADF, 'a write lock needs a file open for writing');
    assert.equal((await c.getlk(node, op.fh!, 9n, 0n, 9n, F_WRLCK)).lock?.type, F_RDLCK);
    await new Promise((res) => setTimeout(res, 100)); // the keeper gets its duplicates
    for (const pid of [worker(), d.proc.pid!]) {
      const fds = opened(pid, path.join(d.dir, 'ro'));
      assert.ok(fds.length >= 2, `pid ${pid}: the open file and the lock owner`);
      for (const f of fds) assert.equal(f.flags & O_ACCMODE, O_RDONLY, `pid ${pid} fd ${f.fd} flags 0${f.flags.toString(8)}`);
    }
    assert.equal((await c.getattr(1)).error, 0);
  });
});

test('a worker inherits no fd the keeper did not mean to pass it', async () => {
  const marker = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'vfsd-marker-'));
  // A launcher that leaves an fd open for the keeper (no close-on-exec), as careless ones do. Fd 50:
  // Node marks its first few fds close-on-exec itself at start-up, not those above.
  const launcher = ['/bin/bash', '-c', 'exec 50>>"$0" && exec "$@"', path.join(marker, 'inherited')];
  try {
    await withGuest([], async ({ d, c, worker }) => {
      assert.ok(openFds(d.proc.pid!).some((f) => f.target.startsWith(marker)), 'the keeper got it');
      const inherited = fs.statSync(path.join(marker, 'inherited'), { bigint: true });
      for (const round of ['first worker', 'after a SIGKILL']) {
        await servesNormally(c, round);
        const leaked = openFds(worker()).filter((f) => f.target.startsWith(marker) || (f.dev === inherited.dev && f.ino === inherited.ino));
        assert.deepEqual(leaked, [], `${round}: the worker does not hold the fd its keeper inherited`);
        if (round === 'first worker') await killWorker(d);
      }
    }, { wrap: launcher });
  } finally {
    fs.rmSync(marker, { recursive: true, force: true });
  }
});

test('the state memfds are sealed: no process can shrink a region another maps (nor grow a fixed one)', async () => {
  await withGuest([], async ({ d, c, worker }) => {
    await servesNormally(c, 'seals');
    const check = (pid: number): string[] => {
      const seen: string[] = [];
      for (const f of openFds(pid)) {
        const m = /^\/memfd:(vfsd-[a-z0-9-]+)/.exec(f.target);
        if (!m || m[1] === 'vfsd-handover') continue;
        const name = m[1]!;
        const fixed = !/^vfsd-(inodes|files|dirs)$/.test(name);
        const fd = fs.openSync(`/proc/${pid}/fd/${f.fd}`, 'r+');
        try {
          const seals = native.getSeals(fd);
          assert.equal(seals & (F_SEAL_SHRINK | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_SEAL, `${name} seals ${seals}`);
          const size = fs.fstatSync(fd).size;
          assert.equal(native.ftruncate(fd, Math.max(0, size - 4096)), -E.EPERM, `${name} cannot shrink`);
          if (fixed) assert.equal(native.ftruncate(fd, size + 4096), -E.EPERM, `${name} cannot grow`);
          assert.equal(native.addSeals(fd, F_SEAL_WRITE), -E.EPERM, `${name}: no seal can be added (F_SEAL_SEAL), so none can freeze it`);
        } finally {
          fs.closeSync(fd);
        }
        seen.push(name);
      }
      return seen;
    };
    const inWorker = check(worker());
    for (const n of ['vfsd-inodes', 'vfsd-files', 'vfsd-dirs', 'vfsd-inflight-1', 'vfsd-journal-1']) assert.ok(inWorker.includes(n), `worker maps ${n}: ${inWorker}`);
    assert.ok(check(d.proc.pid!).includes('vfsd-device'));
    await servesNormally(c, 'seals-after');
  });
});
