// The memfds the keeper and workers share are sealed: none can be shrunk under a mapping (SIGBUS),
// a fixed-size one not grown, and no seal added later (F_SEAL_WRITE would freeze the maps).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { loadNative } from '../../../src/native/binding';
import { sealedMemfd } from '../../../src/state/memfd';
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE } from '../../../src/linux/constants';

const n = loadNative();
const E = os.constants.errno;

test('sealedMemfd: a growable region can grow but never shrink; a fixed one can do neither; no seal can be added to either', () => {
  const grow = sealedMemfd(n, 'test-growable');
  const fixed = sealedMemfd(n, 'test-fixed', 8192);
  assert.ok(grow >= 0 && fixed >= 0);
  try {
    assert.equal(n.getSeals(grow), F_SEAL_SHRINK | F_SEAL_SEAL);
    assert.equal(n.getSeals(fixed), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    assert.equal(n.ftruncate(grow, 8192), 0);
    assert.equal(n.ftruncate(grow, 4096), -E.EPERM);
    assert.equal(fs.fstatSync(fixed).size, 8192);
    assert.equal(n.ftruncate(fixed, 4096), -E.EPERM);
    assert.equal(n.ftruncate(fixed, 16384), -E.EPERM);
    assert.equal(n.addSeals(grow, F_SEAL_WRITE), -E.EPERM);
    // Through another open file description (as a worker holds it), the seals are the same.
    const other = fs.openSync(`/proc/self/fd/${grow}`, 'r+');
    assert.equal(n.ftruncate(other, 0), -E.EPERM);
    fs.closeSync(other);
  } finally {
    n.close(grow);
    n.close(fixed);
  }
});
