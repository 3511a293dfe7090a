// The guest's budget: a request that needs one more of something past its limit is refused with
// ENFILE, and the operator hears of it once per episode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { GuestBudget, type BudgetUse } from '../../../src/passthrough/budget';
import type { Logger } from '../../../src/log';

const ENFILE = constants.errno.ENFILE;

function recordingLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const rec = (o: unknown, msg?: string): void => { lines.push({ ...(o as object), msg }); };
  const log = { warn: rec, info: rec, error: rec, debug: () => {}, trace: () => {}, fatal: rec, child: () => log } as unknown as Logger;
  return { log, lines };
}

test('past a kind\'s limit fits() is false and refuse() answers -ENFILE; other kinds still fit', () => {
  const used: BudgetUse = { inodes: 0, inodeFds: 0, handles: 3, lockOwners: 0 };
  const { log } = recordingLog();
  const b = new GuestBudget({ inodes: 10, handles: 3, lockOwners: 5, fds: 100, workerNofile: 0 }, log, () => used);
  assert.equal(b.fits(['handles']), false);
  assert.equal(b.fits(['inodes', 'handles']), false);
  assert.equal(b.refuse(['handles']), -ENFILE);
  assert.equal(b.fits(['inodes']), true);
  assert.equal(b.fits(['lockOwners']), true);
  used.handles = 2;
  assert.equal(b.fits(['handles']), true);
});

test('the fd budget bounds all kinds together, and counts each kind a request needs', () => {
  const used: BudgetUse = { inodes: 4, inodeFds: 4, handles: 4, lockOwners: 1 };
  const { log, lines } = recordingLog();
  const b = new GuestBudget({ inodes: 100, handles: 100, lockOwners: 100, fds: 10, workerNofile: 0 }, log, () => used);
  assert.equal(b.fits(['inodes']), true, '9 + 1 <= 10');
  assert.equal(b.fits(['inodes', 'handles']), false, '9 + 2 > 10');
  b.refuse(['inodes', 'handles']);
  assert.equal(lines[0]!.flag, '--rlimit-nofile', 'the fd budget, not a kind, ran out');
});

test('inodes held by file handle cost the fd budget only their fds (the cache bound), not one each', () => {
  const used: BudgetUse = { inodes: 50_000, inodeFds: 4, handles: 4, lockOwners: 1 };
  const { log } = recordingLog();
  const b = new GuestBudget({ inodes: 100_000, handles: 100, lockOwners: 100, fds: 10, workerNofile: 0 }, log, () => used);
  assert.equal(b.fits(['inodes']), true, 'the fd total is 9 + 1 <= 10 however many inodes');
  used.inodeFds = 5;
  assert.equal(b.fits(['inodes']), false, '10 + 1 > 10');
});

test('one log line per episode: the first refusal logs, later ones do not, until use falls to 90% of the limit', () => {
  const used: BudgetUse = { inodes: 0, inodeFds: 0, handles: 100, lockOwners: 0 };
  const { log, lines } = recordingLog();
  const b = new GuestBudget({ inodes: 1000, handles: 100, lockOwners: 10, fds: 10_000, workerNofile: 0 }, log, () => used);
  for (let i = 0; i < 1000; i++) if (!b.fits(['handles'])) b.refuse(['handles']);
  assert.equal(lines.length, 1);
  assert.deepEqual([lines[0]!.flag, lines[0]!.limit, lines[0]!.inUse], ['--max-open-files', 100, 100]);
  // A little room (one released, one taken again) does not end the episode.
  used.handles = 99;
  assert.equal(b.fits(['handles']), true);
  used.handles = 100;
  b.refuse(['handles']);
  assert.equal(lines.length, 1);
  // Back to 90%: the episode is over; the next refusal starts another.
  used.handles = 90;
  assert.equal(b.fits(['handles']), true);
  used.handles = 100;
  b.refuse(['handles']);
  assert.equal(lines.length, 2);
  assert.equal(b.refused, 1000 + 2);
});
