// The cache of inode fds (src/passthrough/inode-fds.ts): the clock picks what goes, the last
// fds ops took stay open past the bound, and the bound follows the fd budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InodeFds, inodeFdCacheLimit, INODE_FD_CACHE_MAX, INODE_FD_CACHE_MIN, INODE_FD_PINS } from '../../../src/passthrough/inode-fds';
import type { NativeBinding } from '../../../src/native/binding';

function fakeNative(): { native: NativeBinding; closed: number[] } {
  const closed: number[] = [];
  return { closed, native: { close: (fd: number) => { closed.push(fd); return 0; } } as unknown as NativeBinding };
}

test('past its bound the cache closes an fd not used since the clock last passed it; get() marks one used', () => {
  const { native, closed } = fakeNative();
  const c = new InodeFds(native, 2);
  c.put(1, 101, false);
  c.put(2, 102, false);
  assert.equal(c.get(1, false), 101);
  c.put(3, 103, false);
  assert.deepEqual(closed, [102], 'node 2 was not used since it was put');
  assert.equal(c.get(2), undefined);
  assert.equal(c.size, 2);
  c.drop(1);
  assert.deepEqual(closed, [102, 101]);
  c.close();
  assert.deepEqual(closed, [102, 101, 103]);
});

test('the last fds ops took stay open past the bound, and no more than that: a batch of misses holds at most bound + pins', () => {
  const { native, closed } = fakeNative();
  const c = new InodeFds(native, 1);
  c.put(1, 101, true); // a miss: the op uses it
  c.put(2, 102, true);
  assert.deepEqual(closed, [], 'both pinned: the cache is over its bound for now');
  assert.equal(c.size, 2);
  assert.equal(c.misses, 2);
  // Unpinned entries (a LOOKUP's new node) go at once.
  c.put(3, 103, false);
  assert.deepEqual(closed, [103]);
  // A batch of requests served in one pass, each taking an fd by handle.
  for (let n = 10; n < 1000; n++) {
    c.put(n, 1000 + n, true);
    assert.ok(c.size <= 1 + INODE_FD_PINS, `${c.size} fds cached`);
  }
  assert.equal(c.get(999, false), 1999, 'the newest are there');
  assert.equal(c.get(1, false), undefined, 'the oldest went once newer pins replaced its own');
  c.close();
});

test('a node already cached keeps its fd (an op may be using it); the newer one is closed', () => {
  const { native, closed } = fakeNative();
  const c = new InodeFds(native, 4);
  c.put(1, 101, true);
  c.put(1, 201, false);
  assert.deepEqual(closed, [201]);
  assert.equal(c.get(1), 101);
  c.close();
});

test('the bound is a quarter of the guest fd budget, between the minimum and the maximum', () => {
  assert.equal(inodeFdCacheLimit(162), 40, 'RLIMIT_NOFILE 1024 with a keeper: a guest budget of 162');
  assert.equal(inodeFdCacheLimit(10), INODE_FD_CACHE_MIN);
  assert.equal(inodeFdCacheLimit(Number.MAX_SAFE_INTEGER), INODE_FD_CACHE_MAX);
  assert.throws(() => new InodeFds(fakeNative().native, 0));
});
