// The cache of inode fds (src/passthrough/inode-fds.ts): least recently used goes first, an fd an
// op took stays open until its synchronous stretch ends, and the bound follows the fd budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InodeFds, inodeFdCacheLimit, INODE_FD_CACHE_MAX, INODE_FD_CACHE_MIN } from '../../../src/passthrough/inode-fds';
import type { NativeBinding } from '../../../src/native/binding';

function fakeNative(): { native: NativeBinding; closed: number[] } {
  const closed: number[] = [];
  return { closed, native: { close: (fd: number) => { closed.push(fd); return 0; } } as unknown as NativeBinding };
}

const stretchEnd = (): Promise<void> => new Promise((r) => setImmediate(r));

test('past its bound the cache closes the least recently used fd; get() makes one the most recent', async () => {
  const { native, closed } = fakeNative();
  const c = new InodeFds(native, 2);
  c.put(1, 101, false);
  c.put(2, 102, false);
  assert.equal(c.get(1, false), 101);
  c.put(3, 103, false);
  assert.deepEqual(closed, [102], 'node 2 was the least recently used');
  assert.equal(c.get(2), undefined);
  assert.equal(c.size, 2);
  c.drop(1);
  assert.deepEqual(closed, [102, 101]);
  c.close();
  assert.deepEqual(closed, [102, 101, 103]);
  await stretchEnd();
});

test('fds an op took stay open until its stretch ends, then the cache is trimmed to its bound', async () => {
  const { native, closed } = fakeNative();
  const c = new InodeFds(native, 1);
  c.put(1, 101, true); // a miss: the op uses it
  c.put(2, 102, true);
  assert.deepEqual(closed, [], 'both pinned: the cache is over its bound for now');
  assert.equal(c.size, 2);
  assert.equal(c.misses, 2);
  await stretchEnd();
  assert.deepEqual(closed, [101]);
  assert.equal(c.size, 1);
  // Unpinned entries (a LOOKUP's new node) go at once.
  c.put(3, 103, false);
  assert.deepEqual(closed, [101, 102]);
  c.close();
});

test('a node already cached keeps its fd (an op may be using it); the newer one is closed', async () => {
  const { native, closed } = fakeNative();
  const c = new InodeFds(native, 4);
  c.put(1, 101, true);
  c.put(1, 201, false);
  assert.deepEqual(closed, [201]);
  assert.equal(c.get(1), 101);
  c.close();
  await stretchEnd();
});

test('the bound is a quarter of the guest fd budget, between the minimum and the maximum', () => {
  assert.equal(inodeFdCacheLimit(162), 40, 'RLIMIT_NOFILE 1024 with a keeper: a guest budget of 162');
  assert.equal(inodeFdCacheLimit(10), INODE_FD_CACHE_MIN);
  assert.equal(inodeFdCacheLimit(Number.MAX_SAFE_INTEGER), INODE_FD_CACHE_MAX);
  assert.throws(() => new InodeFds(fakeNative().native, 0));
});
