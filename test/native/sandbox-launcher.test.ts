// The launcher (native/sandbox/vfsd-sandbox.c) on its own: what a program started through it
// sees and may do, how it ends, and that a part it cannot set up stops it with that part named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { LAUNCHER, roBinds } from '../../src/keeper/sandbox';
import { loadNative } from '../../src/native/binding';
import { REPO } from '../support/daemon';
import { innerWorker, sandboxView } from '../support/sandbox';

const root = process.getuid?.() === 0;
const WORKER = path.join(REPO, 'dist', 'src', 'worker', 'worker.js');

/** The launcher's arguments for namespace mode around `node -e script`, sharing share. */
function nsArgs(share: string, seccomp = 'kill', extra: string[] = []): string[] {
  const binds = roBinds(WORKER).flatMap(([src, dst]) => ['--ro', src, dst]);
  return ['--mode', 'namespace', '--seccomp', seccomp, ...binds, '--share', share, ...extra];
}

function run(args: string[], script: string, o: { stdio?: Array<'ignore' | 'pipe' | number>; wrap?: string[] } = {}): ReturnType<typeof spawnSync> {
  const cmd = [...(o.wrap ?? []), LAUNCHER, ...args, '--', process.execPath, '-e', script];
  return spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', stdio: o.stdio ?? ['ignore', 'pipe', 'pipe'], timeout: 60_000, env: { ...process.env, NODE_EXTRA_CA_CERTS: '' } });
}

function tmpShare(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-launcher-'));
  fs.writeFileSync(path.join(d, 'hello'), 'hello from the host');
  return d;
}

const INSIDE = `
const fs = require('fs');
const n = require(${JSON.stringify(path.join(REPO, 'dist', 'src', 'native', 'binding.js'))}).loadNative();
const share = process.argv[1];
const out = { pid: process.pid, outer: Number(process.env.VFSD_WORKER_PID), root: fs.readdirSync('/').sort(),
  hellos: fs.readdirSync('/proc/self/fd').filter((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f).endsWith('/hello'); } catch { return false; } }).map(Number),
  status: n.sandboxStatus(), hello: fs.readFileSync(share + '/hello', 'utf8') };
fs.writeFileSync(share + '/written', 'from inside');
try { fs.writeFileSync(${JSON.stringify(path.join(REPO, 'package.json'))}, 'x'); out.ro = 'writable'; } catch (e) { out.ro = e.code; }
try { fs.readFileSync('/proc/self/status'); out.procStatus = true; } catch (e) { out.procStatus = e.code; }
console.log(JSON.stringify(out));
`;

test('namespace mode: the program runs as pid 2 in a root holding only the binds, the share (writable) and /proc/self/fd, with no_new_privs, seccomp and only the fds it was given', { skip: !root && 'needs root' }, () => {
  const share = tmpShare();
  const extra = fs.openSync(path.join(share, 'hello'), 'r');
  try {
    // The same file at fd 3 (named with --fd) and fd 9 (not named).
    const r = run([...nsArgs(share), '--fd', '3'], `${INSIDE.replace('process.argv[1]', JSON.stringify(share))}`,
      { stdio: ['ignore', 'pipe', 'pipe', extra, 'ignore', 'ignore', 'ignore', 'ignore', 'ignore', extra] });
    assert.equal(r.status, 0, String(r.stderr));
    const out = JSON.parse(String(r.stdout));
    assert.equal(out.pid, 2, 'pid 2 of a pid namespace of its own (pid 1 waits for it)');
    assert.ok(out.outer > 2, 'the launcher\'s pid in VFSD_WORKER_PID');
    assert.ok(!out.root.includes('etc') && !out.root.includes('home') && !out.root.includes('root'), out.root.join(' '));
    assert.equal(out.hello, 'hello from the host');
    assert.equal(fs.readFileSync(path.join(share, 'written'), 'utf8'), 'from inside', 'the share is writable');
    assert.equal(out.ro, 'EROFS', 'the package is read-only');
    assert.equal(out.procStatus, 'ENOENT', 'nothing of /proc but /proc/self/fd');
    assert.deepEqual(out.status, { noNewPrivs: 1, seccomp: 2 });
    assert.deepEqual(out.hellos, [3], 'fd 3 (--fd 3) kept, fd 9 (not named) closed');
  } finally {
    fs.closeSync(extra);
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('seccomp: a syscall outside the allowlist kills the program (kill), sends it SIGSYS (trap), or is allowed and logged (log)', { skip: !root && 'needs root' }, () => {
  const share = tmpShare();
  try {
    // os.networkInterfaces() opens a netlink socket: nothing the worker does.
    const script = 'require("os").networkInterfaces(); console.log("survived")';
    for (const [mode, signal, out] of [['kill', 'SIGSYS', ''], ['trap', 'SIGSYS', ''], ['log', null, 'survived'], ['none', null, 'survived']] as const) {
      const r = run(nsArgs(share, mode), script);
      assert.equal(r.signal, signal, `${mode}: ${String(r.stderr)}`);
      assert.equal(String(r.stdout).trim(), out, mode);
    }
  } finally {
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('the launcher leaves as the program did: its exit code, or its signal', { skip: !root && 'needs root' }, () => {
  const share = tmpShare();
  try {
    assert.equal(run(nsArgs(share), 'process.exit(7)').status, 7);
    assert.equal(run(nsArgs(share), 'process.kill(process.pid, "SIGTERM")').signal, 'SIGTERM');
    assert.equal(run(['--mode', 'none', '--seccomp', 'kill'], 'process.exit(9)').status, 9);
  } finally {
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('SIGKILL of the launcher kills the program in its namespace too (no worker outlives the pid the keeper knows)', { skip: !root && 'needs root' }, async () => {
  const share = tmpShare();
  const p = spawn(LAUNCHER, [...nsArgs(share), '--', process.execPath, '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  try {
    let inner = p.pid!;
    for (let i = 0; i < 500 && (inner === p.pid || !fs.existsSync(`/proc/${inner}`)); i++) {
      await new Promise((r) => setTimeout(r, 10));
      inner = innerWorker(p.pid!);
    }
    assert.notEqual(inner, p.pid, 'the program started');
    p.kill('SIGKILL');
    const gone = (): boolean => { try { return fs.readFileSync(`/proc/${inner}/stat`, 'latin1').split(') ')[1]!.startsWith('Z') ; } catch { return true; } };
    for (let i = 0; i < 200 && !gone(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(gone(), `pid ${inner} is gone`);
  } finally {
    p.kill('SIGKILL');
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('--make-share-tree sends a detached tree of the share: it opens the share, and ".." at its root is its root', { skip: !root && 'needs root' }, () => {
  const n = loadNative();
  const share = tmpShare();
  const pair = new Int32Array(2);
  assert.equal(n.socketpair(pair, false), 0);
  try {
    const r = spawnSync(LAUNCHER, ['--make-share-tree', share, '--send-fd', '3'], { stdio: ['ignore', 'ignore', 'pipe', pair[1]!], encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const fds = new Int32Array(1);
    assert.equal(n.recvmsg(pair[0]!, new Uint8Array(1), fds), 1);
    const tree = fds[0]!;
    assert.equal(fs.readFileSync(`/proc/self/fd/${tree}/hello`, 'utf8'), 'hello from the host');
    const st = new BigUint64Array(17);
    const st2 = new BigUint64Array(17);
    assert.equal(n.stat(tree, '', 0x1000 /* AT_EMPTY_PATH */, st), 0);
    assert.equal(n.stat(tree, '..', 0, st2), 0);
    assert.equal(st2[1], st[1], '".." of the tree\'s root is the root (its inode), not the share\'s parent');
    assert.notEqual(st2[1], BigInt(fs.statSync(path.dirname(share)).ino));
    n.close(tree);
  } finally {
    n.close(pair[0]!);
    n.close(pair[1]!);
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('fail closed: a part that cannot be set up stops the launcher with exit 125 and a JSON line naming it', { skip: !root && 'needs root' }, () => {
  const share = tmpShare();
  try {
    for (const [args, part] of [
      [[...nsArgs(share), '--ro', '/nonexistent/lib', '/lib/x'], /^bind \/nonexistent\/lib: open$/],
      [['--mode', 'namespace', '--seccomp', 'strict'], /^seccomp: unknown mode 'strict'/],
      [['--mode', 'jail'], /^command line: --mode takes/],
      [['--mode', 'none', '--caps', 'chown,sys_everything'], /^capabilities: unknown capability/],
      // node itself left out of the new root.
      [['--mode', 'namespace', ...roBinds(WORKER).filter(([, dst]) => dst !== fs.realpathSync(process.execPath)).flatMap(([src, dst]) => ['--ro', src, dst])], /^execve /],
    ] as const) {
      const r = run([...args], 'process.exit(0)');
      assert.equal(r.status, 125, `${args.join(' ')}: ${String(r.stderr)}`);
      const line = JSON.parse(String(r.stderr).trim().split('\n').at(-1)!) as { level: number; role: string; part: string };
      assert.equal(line.level, 50);
      assert.equal(line.role, 'sandbox');
      assert.match(line.part, part);
    }
  } finally {
    fs.rmSync(share, { recursive: true, force: true });
  }
});

test('not root: namespace mode adds a user namespace (the user\'s own uid mapped), with no_new_privs and seccomp', { skip: !root && 'needs root to switch to nobody' }, async () => {
  // As nobody, from a share nobody may write to.
  const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-launcher-user-'));
  fs.chmodSync(share, 0o777);
  fs.writeFileSync(path.join(share, 'hello'), 'hello');
  fs.chmodSync(path.join(share, 'hello'), 0o644);
  const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'];
  if (spawnSync('setpriv', ['--version']).status !== 0) return;
  const script = `const fs = require('fs'); fs.writeFileSync(${JSON.stringify(share)} + '/mine', 'x');
    console.log(JSON.stringify({ uid: process.getuid(), root: fs.readdirSync('/') }));`;
  try {
    const binds = roBinds(WORKER).flatMap(([src, dst]) => ['--ro', src, dst]);
    const p = spawn(asNobody[0]!, [...asNobody.slice(1), LAUNCHER, '--mode', 'namespace', '--seccomp', 'kill', ...binds, '--share', share, '--',
      process.execPath, '-e', `${script}; setTimeout(() => {}, 2000)`], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_EXTRA_CA_CERTS: '' } });
    let out = '';
    let err = '';
    p.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    for (let i = 0; i < 1000 && !out.includes('\n') && p.exitCode === null; i++) await new Promise((r) => setTimeout(r, 10));
    const seen = JSON.parse(out) as { uid: number; root: string[] };
    assert.equal(seen.uid, 65534, 'its own uid, mapped to itself');
    assert.ok(!seen.root.includes('etc'));
    const inner = innerWorker(p.pid!);
    const v = sandboxView(inner);
    assert.notEqual(fs.readlinkSync(`/proc/${inner}/ns/user`), fs.readlinkSync('/proc/self/ns/user'), 'a user namespace');
    for (const t of v.threads) assert.deepEqual([t.noNewPrivs, t.seccomp], [1, 2], `thread ${t.tid}`);
    assert.equal(fs.statSync(path.join(share, 'mine')).uid, 65534, 'files it makes are the user\'s');
    await new Promise((r) => p.once('exit', r));
    assert.equal(p.exitCode, 0, err);
  } finally {
    fs.rmSync(share, { recursive: true, force: true });
  }
});
