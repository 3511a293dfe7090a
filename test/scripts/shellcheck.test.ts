// Every shell script in the repository passes shellcheck (installed by scripts/guest/setup.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { REPO } from '../support/daemon';

test('every shell script in the repository passes shellcheck', () => {
  const files = spawnSync('git', ['-C', REPO, 'ls-files', '*.sh'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  assert.ok(files.length >= 10, `found only ${files.length} shell scripts`);
  const r = spawnSync('shellcheck', ['-x', ...files], { cwd: REPO, encoding: 'utf8' });
  assert.ok(!r.error, `shellcheck could not run (scripts/guest/setup.sh installs it): ${r.error?.message}`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
