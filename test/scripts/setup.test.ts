// scripts/guest/setup.sh on a machine that lacks its packages, taken even on one that has them:
// stand-ins for dpkg-query and apt-get first on PATH report what a fresh Debian 12 machine would
// (nothing installed; dpkg-query exits 1) and record every call. The script must install what is
// missing, say what and why, and name the reason whenever it cannot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO } from '../support/daemon';

const SETUP = path.join(REPO, 'scripts', 'guest', 'setup.sh');
/** Every package setup.sh installs: the names of its PKG_WHY list ("name:why" entries). */
const PKGS = [...fs.readFileSync(SETUP, 'utf8').matchAll(/^  "([a-z0-9.+-]+):[^"]+"$/gm)].map((m) => m[1]!);

type AptMode = 'ok' | 'fail-update' | 'fail-install' | 'lie';

interface Run { status: number | null; stderr: string; calls: string[]; installed: string[] }

/** Run setup.sh --packages-only with the stand-ins; `installed` is what dpkg knows at the start. */
function runSetup(o: { installed?: string[]; apt?: AptMode; uid?: number }): Run {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-setup-'));
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const state = path.join(dir, 'installed');
  const calls = path.join(dir, 'calls');
  fs.writeFileSync(state, (o.installed ?? []).map((p) => `${p}\n`).join(''));
  fs.writeFileSync(calls, '');
  const stub = (name: string, body: string): void => {
    fs.writeFileSync(path.join(bin, name), `#!/bin/sh\necho "${name} $*" >> "$STUB_CALLS"\n${body}\n`, { mode: 0o755 });
  };
  // dpkg-query -W -f=FORMAT PKG...: known packages as "<name> install ok installed", exit 1 if any is unknown.
  stub('dpkg-query', `rc=0
for a in "$@"; do
  case "$a" in -*) continue ;; esac
  if grep -qx "$a" "$STUB_STATE"; then echo "$a install ok installed"; else echo "dpkg-query: no packages found matching $a" >&2; rc=1; fi
done
exit $rc`);
  stub('apt-get', `case "$STUB_APT:$1" in
  fail-update:update) echo "E: The repository cannot be reached" >&2; exit 100 ;;
  *:update) exit 0 ;;
  fail-install:install) echo "E: Unable to locate package" >&2; exit 100 ;;
  lie:install) exit 0 ;;
  *:install) for a in "$@"; do case "$a" in -*|install) ;; *) echo "$a" >> "$STUB_STATE" ;; esac; done; exit 0 ;;
esac
echo "unexpected apt-get call" >&2; exit 99`);
  if (o.uid !== undefined) stub('id', `echo ${o.uid}`);
  const r = spawnSync('bash', [SETUP, '--packages-only'], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, STUB_STATE: state, STUB_CALLS: calls, STUB_APT: o.apt ?? 'ok', VFSD_GUEST_CACHE: path.join(dir, 'cache') },
  });
  const out: Run = {
    status: r.status, stderr: r.stderr,
    calls: fs.readFileSync(calls, 'utf8').split('\n').filter(Boolean),
    installed: fs.readFileSync(state, 'utf8').split('\n').filter(Boolean),
  };
  fs.rmSync(dir, { recursive: true, force: true });
  return out;
}

const skip = process.getuid?.() !== 0 ? 'runs setup.sh as root (it checks id -u)' : false;

test('setup.sh on a machine with none of its packages installs them all and says what each is for', { skip }, () => {
  assert.ok(PKGS.length >= 14 && PKGS.includes('qemu-system-x86') && PKGS.includes('shellcheck'), `PKG_WHY read from setup.sh: ${PKGS.join(' ')}`);
  const r = runSetup({});
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.calls.filter((c) => c.startsWith('apt-get')).map((c) => c.split(' ')[1]), ['update', 'install']);
  const install = r.calls.find((c) => c.startsWith('apt-get install'))!;
  for (const p of PKGS) {
    assert.ok(install.split(' ').includes(p), `apt-get install names ${p}: ${install}`);
    assert.match(r.stderr, new RegExp(`\\[guest-setup\\]   ${p}: \\S`), `the reason for ${p} is printed`);
  }
  assert.match(r.stderr, /installed: /);
});

test('setup.sh installs only what is missing, and calls no apt-get when nothing is', { skip }, () => {
  const some = runSetup({ installed: PKGS.filter((p) => p !== 'fio' && p !== 'shellcheck') });
  assert.equal(some.status, 0, some.stderr);
  const install = some.calls.find((c) => c.startsWith('apt-get install'))!;
  assert.deepEqual(install.split(' ').filter((w) => !w.startsWith('-') && w !== 'apt-get' && w !== 'install'), ['fio', 'shellcheck']);
  const none = runSetup({ installed: PKGS });
  assert.equal(none.status, 0, none.stderr);
  assert.deepEqual(none.calls.filter((c) => c.startsWith('apt-get')), []);
});

for (const [mode, reason] of [
  ['fail-update', /FAILED: apt-get update failed \(exit 100\)/],
  ['fail-install', /FAILED: apt-get install .*fio.* failed \(exit 100\)/],
  ['lie', /FAILED: apt-get reported success, but qemu-system-x86 is still not installed/],
] as const) {
  test(`setup.sh fails loudly, with the reason, when apt-get ${mode === 'lie' ? 'claims success but installs nothing' : mode.replace('fail-', '') + ' fails'}`, { skip }, () => {
    const r = runSetup({ apt: mode });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, reason);
  });
}

test('setup.sh run by a user who cannot install says so and names the packages', { skip }, () => {
  const r = runSetup({ uid: 1000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /FAILED: installing them needs root; run as root, or install them: apt-get install qemu-system-x86 /);
  assert.deepEqual(r.calls.filter((c) => c.startsWith('apt-get')), []);
});
