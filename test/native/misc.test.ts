// Credentials and limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { O_CLOEXEC } from '../../src/linux/constants';

const n = loadNative();
const E = os.constants.errno;
const C = fs.constants;
const AT_FDCWD = -100;

function fsuid(): number {
  const m = /^Uid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(fs.readFileSync('/proc/thread-self/status', 'utf8'));
  return Number(m![1]);
}

test('setfsuid returns the previous id and new files are owned by the fs ids', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-misc-'));
  fs.chmodSync(dir, 0o777);
  const uid0 = process.getuid!();
  const gid0 = process.getgid!();
  try {
    assert.equal(n.setfsuid(4321), uid0);
    assert.equal(fsuid(), 4321);
    assert.equal(n.setfsgid(8765), gid0);
    const fd = n.openat(AT_FDCWD, path.join(dir, 'owned'), C.O_CREAT | C.O_WRONLY, 0o600);
    assert.ok(fd >= 0, `create as fsuid 4321: ${fd}`);
    n.close(fd);
    const st = fs.statSync(path.join(dir, 'owned'));
    assert.deepEqual([st.uid, st.gid], [4321, 8765]);
    assert.equal(n.setfsuid(-1), 4321, '-1 queries without changing');
  } finally {
    assert.equal(n.setfsuid(uid0), 4321);
    assert.equal(n.setfsgid(gid0), 8765);
    assert.equal(fsuid(), uid0);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('raiseNofile raises the soft limit up to the hard limit and never lowers it', () => {
  const cur = n.raiseNofile(0);
  assert.ok(cur > 0, `raiseNofile(0): ${cur}`);
  const lim = /^Max open files\s+(\d+)\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))!;
  assert.equal(Number(lim[1]), cur, 'want below the soft limit leaves it unchanged');
  const hard = lim[2] === 'unlimited' ? Infinity : Number(lim[2]);
  const got = n.raiseNofile(2 ** 40);
  const nrOpen = Number(fs.readFileSync('/proc/sys/fs/nr_open', 'utf8'));
  if (hard <= nrOpen) assert.equal(got, hard, 'capped at the hard limit');
  else assert.equal(got, -E.EPERM, 'above fs.nr_open the kernel refuses');
  assert.equal(n.raiseNofile(-1), -E.EINVAL);
  assert.throws(() => n.raiseNofile('1' as unknown as number), TypeError);
});

test('umask returns the previous mask', () => {
  const old = n.umask(0o027);
  try {
    assert.equal(n.umask(0o022), 0o027);
  } finally {
    n.umask(old);
  }
});

test('setNofile sets RLIMIT_NOFILE exactly, lower or back up (hard limit kept unless asked)', () => {
  const soft = n.raiseNofile(0);
  const limits = (): string => /Max open files\s+(\d+)\s+(\d+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'))!.slice(1, 3).join(' ');
  const hard = limits().split(' ')[1];
  try {
    assert.equal(n.setNofile(soft - 10, false), soft - 10);
    assert.equal(limits(), `${soft - 10} ${hard}`);
    assert.equal(n.setNofile(soft, false), soft);
    assert.equal(limits(), `${soft} ${hard}`);
  } finally {
    n.setNofile(soft, false);
  }
});

test('getgrnam gives a group\'s gid, -ENOENT for no such group', () => {
  assert.equal(n.getgrnam('root'), 0);
  assert.equal(n.getgrnam('no-such-group-vfsd'), -E.ENOENT);
});

test('cloexecFrom marks every fd from lowfd on close-on-exec, and none below it', () => {
  const flagsOf = (fd: number): number => parseInt(/flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))![1]!, 8);
  const lo = n.openat(AT_FDCWD, '/dev/null', C.O_RDONLY, 0);
  const hi = n.openat(AT_FDCWD, '/dev/null', C.O_RDONLY, 0);
  try {
    assert.ok(lo < hi);
    assert.equal(flagsOf(lo) & O_CLOEXEC, 0);
    assert.equal(n.cloexecFrom(hi), 0);
    assert.equal(flagsOf(lo) & O_CLOEXEC, 0);
    assert.equal(flagsOf(hi) & O_CLOEXEC, O_CLOEXEC);
  } finally {
    n.close(lo);
    n.close(hi);
  }
});
