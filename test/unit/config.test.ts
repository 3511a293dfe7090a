import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs, ConfigError, DEFAULT_WORKER_CAPS } from '../../src/config';

test('Rust virtiofsd long options are understood', () => {
  const c = parseArgs(['--socket-path=/run/s', '--shared-dir=/srv', '--cache=never', '--xattr', '--no-announce-submounts', '--thread-pool-size=0', '--readonly']);
  assert.equal(c.socketPath, '/run/s');
  assert.equal(c.sharedDir, '/srv');
  assert.equal(c.cache, 'never');
  assert.equal(c.xattr, true);
  assert.equal(c.announceSubmounts, false);
  assert.equal(c.threadPoolSize, 0);
  assert.equal(c.readonly, true);
});

test('the C virtiofsd -o form is understood, alone and comma-joined', () => {
  const c = parseArgs(['--socket-path=/run/s', '-o', 'source=/srv,cache=none', '-o', 'xattr', '-o', 'posix_acl,log_level=debug']);
  assert.equal(c.sharedDir, '/srv');
  assert.equal(c.cache, 'never');
  assert.equal(c.xattr, true);
  assert.equal(c.posixAcl, true);
  assert.equal(c.logLevel, 'debug');
});

test('--fd replaces --socket-path, and the two exclude each other', () => {
  assert.equal(parseArgs(['--fd=3', '--shared-dir=/srv']).fd, 3);
  assert.throws(() => parseArgs(['--fd=3', '--socket-path=/s', '--shared-dir=/srv']), ConfigError);
});

test('missing or invalid settings are errors, not silent defaults', () => {
  assert.throws(() => parseArgs(['--socket-path=/s']), ConfigError);
  assert.throws(() => parseArgs(['--socket-path=/s', '--shared-dir=/srv', '--cache=sometimes']), ConfigError);
  assert.throws(() => parseArgs(['--socket-path=/s', '-o', 'source=/srv,bogus']), ConfigError);
  assert.throws(() => parseArgs(['--socket-path=/s', '--shared-dir=/srv', '--no-such-flag']), ConfigError);
});

test('--print-capabilities needs nothing else', () => {
  assert.equal(parseArgs(['--print-capabilities']).printCapabilities, true);
});

test('--modcaps and -o modcaps change the capabilities the worker keeps; unknown names are errors', () => {
  const base = ['--socket-path=/tmp/s', '--shared-dir=/tmp'];
  assert.deepEqual(parseArgs(base).workerCaps.sort(), [...DEFAULT_WORKER_CAPS].sort());
  assert.ok(!DEFAULT_WORKER_CAPS.includes('sys_admin'), 'the default drops SYS_ADMIN');
  const more = parseArgs([...base, '--modcaps=+sys_admin:-mknod:+CAP_LEASE']).workerCaps;
  assert.ok(more.includes('sys_admin') && more.includes('lease') && !more.includes('mknod'));
  assert.ok(parseArgs(['--socket-path=/tmp/s', '-o', 'source=/tmp,modcaps=+sys_admin']).workerCaps.includes('sys_admin'));
  for (const bad of ['+nonsense', 'sys_admin', '+sys admin']) {
    assert.throws(() => parseArgs([...base, `--modcaps=${bad}`]), ConfigError, bad);
  }
});

test('the guest budget flags default to 1000000 inodes, 65536 open files, 4096 lock owners; bad values are errors', () => {
  const base = ['--socket-path=/tmp/s', '--shared-dir=/tmp'];
  const l = parseArgs(base).limits;
  assert.deepEqual([l.inodes, l.handles, l.lockOwners], [1_000_000, 65_536, 4_096]);
  const c = parseArgs([...base, '--max-inodes=10', '--max-open-files=20', '--max-lock-owners=30', '--rlimit-nofile=4096']);
  assert.deepEqual([c.limits.inodes, c.limits.handles, c.limits.lockOwners, c.rlimitNofile], [10, 20, 30, 4096]);
  for (const bad of ['--max-inodes=0', '--max-open-files=-1', '--max-lock-owners=1.5', '--max-inodes=lots', '--rlimit-nofile=-2']) {
    assert.throws(() => parseArgs([...base, bad]), ConfigError, bad);
  }
});

test('--socket-group is taken with --socket-path, and refused with --fd (whoever made that socket chose its mode)', () => {
  assert.equal(parseArgs(['--socket-path=/tmp/s', '--shared-dir=/tmp', '--socket-group=kvm']).socketGroup, 'kvm');
  assert.throws(() => parseArgs(['--fd=3', '--shared-dir=/tmp', '--socket-group=kvm']), ConfigError);
  assert.throws(() => parseArgs(['--socket-path=/tmp/s', '--shared-dir=/tmp', '--socket-group=']), ConfigError);
});

test('--sandbox and --seccomp: the Rust virtiofsd\'s modes and defaults (namespace, kill); anything else is an error', () => {
  const base = ['--socket-path=/s', '--shared-dir=/srv'];
  const d = parseArgs(base);
  assert.deepEqual([d.sandbox, d.seccomp], ['namespace', 'kill']);
  for (const m of ['namespace', 'chroot', 'none'] as const) assert.equal(parseArgs([...base, `--sandbox=${m}`]).sandbox, m);
  for (const m of ['kill', 'log', 'trap', 'none'] as const) assert.equal(parseArgs([...base, `--seccomp=${m}`]).seccomp, m);
  assert.equal(parseArgs(['--socket-path=/s', '-o', 'source=/srv,sandbox=chroot']).sandbox, 'chroot');
  for (const bad of ['--sandbox=jail', '--seccomp=strict', '--sandbox=']) assert.throws(() => parseArgs([...base, bad]), ConfigError, bad);
  assert.throws(() => parseArgs(['--socket-path=/s', '-o', 'source=/srv,sandbox=jail']), ConfigError);
});

test('--no-keeper runs without a sandbox or filter, and refuses to be asked for one', () => {
  const base = ['--socket-path=/s', '--shared-dir=/srv', '--no-keeper'];
  const c = parseArgs(base);
  assert.deepEqual([c.sandbox, c.seccomp], ['none', 'none']);
  assert.deepEqual([parseArgs([...base, '--sandbox=none', '--seccomp=none']).sandbox], ['none']);
  assert.throws(() => parseArgs([...base, '--sandbox=namespace']), ConfigError);
  assert.throws(() => parseArgs([...base, '--seccomp=kill']), ConfigError);
});

test('READDIRPLUS: on by default, off with cache=never unless asked for (C -o readdirplus|no_readdirplus, Rust --no-readdirplus)', () => {
  const base = ['--socket-path=/tmp/s', '--shared-dir=/tmp'];
  const rdp = (...args: string[]): boolean => parseArgs([...base, ...args]).readdirplus;
  assert.equal(rdp(), true, 'cache=auto');
  assert.equal(rdp('--cache=always'), true);
  assert.equal(rdp('--cache=metadata'), true);
  assert.equal(rdp('--cache=never'), false, 'the attributes would be discarded');
  assert.equal(rdp('-o', 'cache=none'), false, 'the C spelling of never');
  assert.equal(rdp('--cache=never', '--readdirplus'), true, 'asked for');
  assert.equal(rdp('-o', 'cache=none,readdirplus'), true, 'asked for, C style');
  assert.equal(rdp('--no-readdirplus'), false, 'the Rust virtiofsd flag');
  assert.equal(rdp('-o', 'no_readdirplus'), false, 'the C virtiofsd option');
  assert.equal(rdp('-o', 'cache=always,no_readdirplus'), false);
  assert.equal(rdp('--no-readdirplus', '-o', 'readdirplus'), true, '-o comes last, as for every other option');
});
