// The worker sandbox of a running daemon, seen from outside through /proc: on by default
// (namespaces, a root with the share and without the host's /etc, no_new_privs and a seccomp
// filter on every thread), kept by every worker that follows a SIGKILL, an upgrade or a keeper
// re-exec; the chroot and none modes; a daemon started as a user; and fail closed: a daemon
// that cannot set up its sandbox exits before it listens, naming the part.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { REPO, assertNoSeccompKill, startDaemon, withDaemon as withServingDaemon, type Daemon } from '../support/daemon';
import { assertSandboxed, innerWorker, sandboxView, waitInnerWorker } from '../support/sandbox';

const root = process.getuid?.() === 0;

/** The launcher pids of every "worker started" line (spares that took over included). */
function workerPids(stderr: string): number[] {
  return stderr.split('\n').filter((l) => l.includes('"msg":"worker started"')).map((l) => (JSON.parse(l) as { pid: number }).pid);
}

/** The pid of the serving worker's launcher, from the last "worker started" line. */
function servingPid(stderr: string): number {
  return workerPids(stderr).at(-1)!;
}

/** Our daemon with --xattr (someOps sets one). */
function withDaemon(args: string[], fn: (d: Daemon, c: FuseClient) => Promise<void>): Promise<void> {
  return withServingDaemon(['--xattr', ...args], fn);
}

async function waitFor(what: string, cond: () => boolean, c: FuseClient): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) {
    assert.equal((await c.getattr(1)).error, 0);
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(cond(), what);
}

/** A round of ops that touches the share: create, write, read back, a hard link, an xattr. */
async function someOps(c: FuseClient, d: Daemon, name: string): Promise<void> {
  const cr = await c.create(1, name, 0o102 /* O_RDWR|O_CREAT */);
  assert.equal(cr.error, 0, `create ${name}`);
  assert.equal((await c.write(cr.entry!.nodeid, cr.fh!, 0, Buffer.from(`data of ${name}`))).error, 0);
  assert.equal((await c.read(cr.entry!.nodeid, cr.fh!, 0, 64)).body.toString(), `data of ${name}`);
  assert.equal((await c.link(cr.entry!.nodeid, 1, `${name}.link`)).error, 0, 'LINK (through /proc/self/fd)');
  assert.equal((await c.setxattr(cr.entry!.nodeid, 'user.k', Buffer.from('v'))).error, 0, 'SETXATTR (through /proc/self/fd)');
  assert.equal((await c.release(cr.entry!.nodeid, cr.fh!)).error, 0);
  assert.equal(fs.readFileSync(path.join(d.dir, `${name}.link`), 'utf8'), `data of ${name}`);
}

test('by default the worker and the spare run sandboxed: own namespaces, a root with the share and no /etc, no_new_privs and seccomp on every thread; so does every successor (SIGKILL, SIGHUP, SIGUSR2)', { skip: !root && 'needs root' }, async () => {
  await withDaemon([], async (d, c) => {
    const keeper = fs.readFileSync(`/proc/${d.proc.pid}/status`, 'latin1');
    assert.match(keeper, /^NoNewPrivs:\s*1$/m, 'the keeper has no_new_privs');
    assert.match(keeper, /^Seccomp:\s*0$/m, 'the keeper has no filter (the launcher it starts needs mount and unshare)');
    assert.doesNotMatch(d.stderr(), /"level":(40|50|60)/, 'no warning with default flags');
    await someOps(c, d, 'first');
    const first = servingPid(d.stderr());
    const v = assertSandboxed(first, d.dir);
    // Inside, the pid namespace makes the worker pid 2 (pid 1 waits for it); logs carry the pid
    // the keeper knows.
    assert.match(d.stderr(), new RegExp(`"role":"worker","pid":${first},"nsPid":2`));
    // Only /proc/self/fd of /proc.
    assert.deepEqual(fs.readdirSync(`/proc/${v.pid}/root/proc`), ['self']);
    assert.deepEqual(fs.readdirSync(`/proc/${v.pid}/root/proc/self`), ['fd']);
    // The spare is sandboxed too.
    await waitFor('a spare loaded', () => /"msg":"spare worker loading"/.test(d.stderr()), c);
    const spare = Number(/"pid":(\d+),"msg":"spare worker loading"/.exec(d.stderr())![1]);
    await waitInnerWorker(spare);
    assertSandboxed(spare, d.dir);

    // SIGKILL of the pid the keeper logged takes the worker inside with it.
    process.kill(first, 'SIGKILL');
    await waitFor('the next worker serves', () => servingPid(d.stderr()) !== first, c);
    for (let i = 0; i < 200 && fs.existsSync(`/proc/${v.pid}`) && innerWorker(first) === v.pid; i++) await new Promise((r) => setTimeout(r, 5));
    assert.throws(() => fs.statSync(`/proc/${first}/status`), /ENOENT/, 'the launcher is gone');
    await someOps(c, d, 'after-kill');
    assertSandboxed(await waitInnerWorker(servingPid(d.stderr())), d.dir);

    const before = workerPids(d.stderr()).length;
    process.kill(d.proc.pid!, 'SIGHUP');
    await waitFor('the upgraded worker serves', () => /"msg":"worker retired"/.test(d.stderr()) && workerPids(d.stderr()).length > before, c);
    await someOps(c, d, 'after-hup');
    assertSandboxed(await waitInnerWorker(servingPid(d.stderr())), d.dir);

    const retired = (d.stderr().match(/"msg":"worker retired"/g) ?? []).length;
    process.kill(d.proc.pid!, 'SIGUSR2');
    await waitFor('the re-executed keeper upgraded the adopted worker', () => (d.stderr().match(/"msg":"worker retired"/g) ?? []).length > retired, c);
    await someOps(c, d, 'after-usr2');
    assertSandboxed(await waitInnerWorker(servingPid(d.stderr())), d.dir);
    assert.match(fs.readFileSync(`/proc/${d.proc.pid}/status`, 'latin1'), /^NoNewPrivs:\s*1$/m, 'the re-executed keeper too');
    assert.doesNotMatch(d.stderr(), /"level":(50|60)/);
  });
});

test('--sandbox=chroot: no namespaces; the worker\'s root is the share, with no_new_privs and seccomp; ops and a SIGKILL work', { skip: !root && 'needs root' }, async () => {
  await withDaemon(['--sandbox=chroot'], async (d, c) => {
    await someOps(c, d, 'one');
    const w = await waitInnerWorker(servingPid(d.stderr()));
    const v = sandboxView(w);
    for (const t of v.threads) assert.deepEqual([t.noNewPrivs, t.seccomp], [1, 2], `thread ${t.tid}`);
    assert.equal(v.mountNs, fs.readlinkSync('/proc/self/ns/mnt'), 'the host\'s mount namespace');
    assert.deepEqual(v.root.sort(), fs.readdirSync(d.dir).sort(), 'its root is the share');
    assert.equal(v.capBnd & (1n << 18n), 1n << 18n, 'CAP_SYS_CHROOT in the bounding set (it chroots itself)');
    process.kill(w, 'SIGKILL');
    await waitFor('the next worker serves', () => servingPid(d.stderr()) !== w, c);
    await someOps(c, d, 'two');
  });
});

test('--sandbox=none warns; the worker keeps seccomp unless --seccomp=none', { skip: !root && 'needs root' }, async () => {
  await withDaemon(['--sandbox=none'], async (d, c) => {
    assert.match(d.stderr(), /"level":40,.*--sandbox=none: the worker runs in the host's namespaces/);
    await someOps(c, d, 'one');
    const v = sandboxView(await waitInnerWorker(servingPid(d.stderr())));
    assert.equal(v.mountNs, fs.readlinkSync('/proc/self/ns/mnt'));
    assert.ok(v.root.includes('etc'), 'the host\'s root');
    for (const t of v.threads) assert.deepEqual([t.noNewPrivs, t.seccomp], [1, 2], `thread ${t.tid}`);
  });
  await withDaemon(['--sandbox=none', '--seccomp=none'], async (d, c) => {
    await someOps(c, d, 'one');
    const v = sandboxView(await waitInnerWorker(servingPid(d.stderr())));
    for (const t of v.threads) assert.deepEqual([t.noNewPrivs, t.seccomp], [1, 0], `thread ${t.tid}`);
  });
});

for (const mode of ['log', 'trap'] as const) {
  test(`--seccomp=${mode}: the filter is installed with that action and the worker serves`, { skip: !root && 'needs root' }, async () => {
    await withDaemon([`--seccomp=${mode}`], async (d, c) => {
      await someOps(c, d, 'one');
      assertSandboxed(servingPid(d.stderr()), d.dir);
    });
  });
}

/** Run the daemon to its first exit (or until it listens): status, stderr, whether it listened. */
function runToFailure(args: string[], wrap: string[] = []): { status: number | null; stderr: string; listened: boolean } {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-sbfail-'));
  try {
    const sock = path.join(work, 's');
    fs.mkdirSync(path.join(work, 'share'));
    const cmd = [...wrap, process.execPath, path.join(REPO, 'bin', 'virtiofsd-ts'), `--socket-path=${sock}`, `--shared-dir=${path.join(work, 'share')}`, ...args];
    const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stderr: r.stderr, listened: /Waiting for vhost-user socket connection/.test(r.stderr) };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

test('fail closed: an unknown --sandbox or --seccomp mode is refused, naming the flag', () => {
  for (const [arg, flag] of [['--seccomp=strict', '--seccomp'], ['--sandbox=jail', '--sandbox'], ['-o sandbox=jail', '-o sandbox']] as const) {
    const r = runToFailure(arg.split(' '));
    assert.equal(r.status, 2, arg);
    assert.match(r.stderr, new RegExp(`invalid ${flag} '(strict|jail)'`), arg);
  }
});

test('fail closed: a keeper without CAP_SYS_ADMIN cannot make namespaces: it exits before listening, naming the part; chroot mode still starts; --sandbox=none says so', { skip: !root && 'needs root' }, async () => {
  // A container without CAP_SYS_ADMIN, as setpriv(1) makes one.
  const noAdmin = ['setpriv', '--bounding-set', '-sys_admin', '--inh-caps', '-all', '--'];
  if (spawnSync('setpriv', ['--version']).status !== 0) return;
  const r = runToFailure([], noAdmin);
  assert.equal(r.status, 1);
  assert.equal(r.listened, false, 'it never listened');
  const fatal = r.stderr.split('\n').find((l) => l.includes('"level":60'));
  assert.ok(fatal, r.stderr);
  const line = JSON.parse(fatal!) as { part: string; msg: string };
  assert.match(line.part, /^(share tree|unshare)/, line.msg);
  assert.match(line.msg, /Operation not permitted/);

  for (const mode of ['chroot', 'none']) {
    const d = await startDaemon('ts', { args: [`--sandbox=${mode}`], wrap: noAdmin });
    try {
      assert.match(d.stderr(), /"msg":"worker sandbox probed"/, mode);
      if (mode === 'none') assert.match(d.stderr(), /--sandbox=none/);
    } finally {
      await d.stop();
    }
  }
});

test('started as a user, the daemon serves with its worker in a user namespace (no_new_privs, seccomp); file handles fall back to the keeper\'s fds, and a SIGKILL keeps node ids', { skip: !root && 'needs root to switch to nobody' }, async () => {
  if (spawnSync('setpriv', ['--version']).status !== 0) return;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-user-'));
  fs.chmodSync(work, 0o777);
  const share = path.join(work, 'share');
  fs.mkdirSync(share);
  fs.chmodSync(share, 0o777);
  const sock = path.join(work, 's');
  const p = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', process.execPath, path.join(REPO, 'bin', 'virtiofsd-ts'),
    `--socket-path=${sock}`, `--shared-dir=${share}`, '--log-level=info'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  try {
    for (let i = 0; i < 600 && !fs.existsSync(sock) && p.exitCode === null; i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(fs.existsSync(sock), err);
    const fe = await VhostUserFrontend.connect(loadNative(), sock, {});
    try {
      const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
      assert.equal((await c.init()).error, 0);
      const cr = await c.create(1, 'mine', 0o102 /* O_RDWR|O_CREAT */);
      assert.equal(cr.error, 0);
      assert.equal(fs.statSync(path.join(share, 'mine')).uid, 65534, 'made as the user');
      const first = servingPid(err);
      const w = await waitInnerWorker(first);
      assert.notEqual(fs.readlinkSync(`/proc/${w}/ns/user`), fs.readlinkSync('/proc/self/ns/user'), 'a user namespace');
      const v = sandboxView(w);
      for (const t of v.threads) assert.deepEqual([t.noNewPrivs, t.seccomp], [1, 2], `thread ${t.tid}`);
      assert.ok(!v.root.includes('etc'));
      assert.match(err, /file handles do not work on the shared directory \(errno 1: needs CAP_DAC_READ_SEARCH\); the keeper holds an O_PATH fd per inode instead/);
      process.kill(first, 'SIGKILL');
      await waitFor('the next worker serves', () => servingPid(err) !== first, c);
      assert.equal((await c.lookup(1, 'mine')).entry?.nodeid, cr.entry!.nodeid, 'the same node id after the restart');
    } finally {
      fe.close();
    }
    assertNoSeccompKill(err);
  } finally {
    p.kill('SIGTERM');
    await exited;
    fs.rmSync(work, { recursive: true, force: true });
  }
});
