// The fd plan: the worker's RLIMIT_NOFILE is the keeper's less a headroom that covers everything
// the keeper holds besides the worker's duplicates, and the guest's fd budget is the worker's
// less what the worker needs for itself; a limit too small for that is an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keeperHeadroom, planFds, workerReserve, MIN_GUEST_FDS } from '../../../src/keeper/fd-plan';
import { MAX_MEM_SLOTS } from '../../../src/vhost/backend';
import { MAX_FDS_PER_PACKET } from '../../../src/protocol/channel';

test('the keeper\'s headroom covers the worker\'s own fds, one control packet of fds, and more', () => {
  for (const queues of [2, 65]) {
    assert.ok(workerReserve(queues) >= MAX_MEM_SLOTS + 5 * queues, 'memory regions and five fds a queue');
    assert.ok(keeperHeadroom(queues) >= workerReserve(queues) + MAX_FDS_PER_PACKET);
  }
  assert.ok(workerReserve(65) > workerReserve(2), 'more queues, more fds');
});

test('planFds: worker = keeper less headroom, guest = worker less reserve; too small a limit is an error', () => {
  const q = 2;
  assert.deepEqual(planFds(20_000, true, q), { worker: 20_000 - keeperHeadroom(q), guestFds: 20_000 - keeperHeadroom(q) - workerReserve(q) });
  assert.deepEqual(planFds(20_000, false, q), { worker: 20_000, guestFds: 20_000 - workerReserve(q) });
  const least = MIN_GUEST_FDS + workerReserve(q) + keeperHeadroom(q);
  assert.ok(least <= 1024, `a keeper runs under the common soft limit of 1024 (needs ${least})`);
  assert.equal(typeof planFds(least, true, q), 'object');
  assert.match(planFds(least - 1, true, q) as string, new RegExp(`RLIMIT_NOFILE ${least - 1} is too small: the daemon needs at least ${least}`));
});
