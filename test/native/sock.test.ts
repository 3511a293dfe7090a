// Unix sockets and SCM_RIGHTS fd passing through the native shim.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { AT_FDCWD, MSG_CTRUNC } from '../../src/linux/constants';

const n = loadNative();
const E = os.constants.errno;
const O_NONBLOCK = fs.constants.O_NONBLOCK;
const FD_CLOEXEC_CHECK = '/proc/self/fd';

function pair(): [number, number] {
  const out = new Int32Array(2);
  assert.equal(n.socketpair(out), 0);
  return [out[0], out[1]];
}

function sameFile(a: number, b: number): boolean {
  const sa = fs.fstatSync(a, { bigint: true });
  const sb = fs.fstatSync(b, { bigint: true });
  return sa.ino === sb.ino && sa.dev === sb.dev;
}

test('socketpair writes two connected fds; data written on one is read on the other', () => {
  const [a, b] = pair();
  try {
    const msg = Buffer.from('hello');
    assert.equal(n.sendmsg(a, msg, msg.length, []), 5);
    const buf = new Uint8Array(16);
    const fds = new Int32Array(2).fill(7);
    assert.equal(n.recvmsg(b, buf, fds), 5);
    assert.equal(Buffer.from(buf.subarray(0, 5)).toString(), 'hello');
    assert.deepEqual([...fds], [-1, -1], 'unused fd slots are set to -1');
  } finally {
    n.close(a);
    n.close(b);
  }
});

test('recvmsg returns fds sent by sendmsg (as new close-on-exec fds for the same files)', () => {
  const [a, b] = pair();
  const e1 = n.eventfd(0);
  const e2 = n.eventfd(0);
  try {
    const msg = new Uint8Array([1, 2, 3, 4]);
    assert.equal(n.sendmsg(a, msg, 4, [e1, e2]), 4);
    const fds = new Int32Array(3);
    const buf = new Uint8Array(4);
    assert.equal(n.recvmsg(b, buf, fds), 4);
    assert.ok(fds[0] >= 0 && fds[1] >= 0);
    assert.equal(fds[2], -1);
    assert.ok(fds[0] !== e1 && fds[1] !== e2, 'received fds are new descriptors');
    assert.ok(sameFile(fds[0], e1) && sameFile(fds[1], e2));
    // Received fds carry FD_CLOEXEC (MSG_CMSG_CLOEXEC): visible as "flags" in fdinfo (octal 02000000).
    const flags = parseInt(/flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fds[0]}`, 'utf8'))![1], 8);
    assert.ok(flags & 0o2000000, 'O_CLOEXEC set on received fd');
    // A counter written through the received fd is read through the original.
    assert.equal(n.eventfdWrite(fds[0], 5), 0);
    assert.equal(n.eventfdRead(e1), 5);
    n.close(fds[0]);
    n.close(fds[1]);
  } finally {
    for (const fd of [a, b, e1, e2]) n.close(fd);
  }
});

test('sendmsg accepts fds as an Int32Array and sends only buf[0..len)', () => {
  const [a, b] = pair();
  const e = n.eventfd(0);
  try {
    assert.equal(n.sendmsg(a, Buffer.from('abcdef'), 2, Int32Array.of(e)), 2);
    const fds = new Int32Array(1);
    const buf = new Uint8Array(8);
    assert.equal(n.recvmsg(b, buf, fds), 2);
    assert.equal(Buffer.from(buf.subarray(0, 2)).toString(), 'ab');
    assert.ok(sameFile(fds[0], e));
    n.close(fds[0]);
  } finally {
    for (const fd of [a, b, e]) n.close(fd);
  }
});

test('recvmsg closes fds beyond fds.length instead of leaking them', () => {
  const [a, b] = pair();
  const evs = [n.eventfd(0), n.eventfd(0), n.eventfd(0)];
  try {
    const before = fs.readdirSync(FD_CLOEXEC_CHECK).length;
    assert.equal(n.sendmsg(a, Buffer.from('x'), 1, evs), 1);
    const fds = new Int32Array(1);
    assert.equal(n.recvmsg(b, new Uint8Array(1), fds), 1);
    assert.ok(sameFile(fds[0], evs[0]));
    // Only the one kept fd is new (readdir itself opens and closes a dir fd).
    assert.equal(fs.readdirSync(FD_CLOEXEC_CHECK).length, before + 1);
    n.close(fds[0]);
  } finally {
    for (const fd of [a, b, ...evs]) n.close(fd);
  }
});

test('recvmsg returns 0 at EOF and -EAGAIN on an empty non-blocking socket', () => {
  const [a, b] = pair();
  try {
    assert.equal(n.setNonblocking(b, true), 0);
    assert.ok(n.getfl(b) & O_NONBLOCK);
    assert.equal(n.recvmsg(b, new Uint8Array(4), new Int32Array(0)), -E.EAGAIN);
    n.close(a);
    assert.equal(n.recvmsg(b, new Uint8Array(4), new Int32Array(0)), 0);
    assert.equal(n.setNonblocking(b, false), 0);
    assert.equal(n.getfl(b) & O_NONBLOCK, 0);
  } finally {
    n.close(b);
  }
});

test('sendmsg to a closed peer returns -EPIPE (no SIGPIPE)', () => {
  const [a, b] = pair();
  n.close(b);
  try {
    assert.equal(n.sendmsg(a, Buffer.from('x'), 1, []), -E.EPIPE);
  } finally {
    n.close(a);
  }
});

test('sendmsg rejects len beyond the buffer and bad fd values with -EINVAL; wrong types throw TypeError', () => {
  const [a, b] = pair();
  try {
    assert.equal(n.sendmsg(a, new Uint8Array(2), 3, []), -E.EINVAL);
    assert.equal(n.sendmsg(a, new Uint8Array(2), 1, [-1]), -E.EINVAL);
    assert.equal(n.sendmsg(a, new Uint8Array(2), 1, [1.5]), -E.EINVAL);
    assert.throws(() => n.sendmsg(a, new Uint8Array(2), 1, ['3'] as unknown as number[]), TypeError);
    assert.throws(() => n.sendmsg(a, [1, 2] as unknown as Uint8Array, 1, []), TypeError);
    assert.throws(() => n.recvmsg(a, new Uint8Array(2), [] as unknown as Int32Array), TypeError);
    assert.throws(() => n.socketpair(new Int32Array(1)), TypeError);
  } finally {
    n.close(a);
    n.close(b);
  }
});

test('unixListen + unixConnect + accept: accept gives a blocking fd, -EAGAIN when none is pending', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-native-sock-'));
  const sock = path.join(dir, 'vhost.sock');
  const l = n.unixListen(sock, 4);
  try {
    assert.ok(l >= 0, `unixListen: ${l}`);
    assert.ok(n.getfl(l) & O_NONBLOCK, 'listener is non-blocking');
    assert.ok(fs.statSync(sock).isSocket());
    assert.equal(n.accept(l), -E.EAGAIN);
    const c = n.unixConnect(sock);
    assert.ok(c >= 0, `unixConnect: ${c}`);
    const s = n.accept(l);
    assert.ok(s >= 0, `accept: ${s}`);
    assert.equal(n.getfl(s) & O_NONBLOCK, 0, 'accepted fd is blocking');
    assert.equal(n.getfl(c) & O_NONBLOCK, 0, 'connected fd is blocking');
    assert.equal(n.sendmsg(c, Buffer.from('ping'), 4, []), 4);
    const buf = new Uint8Array(4);
    assert.equal(n.recvmsg(s, buf, new Int32Array(0)), 4);
    assert.equal(Buffer.from(buf).toString(), 'ping');
    n.close(c);
    n.close(s);
    assert.equal(n.unixListen(sock, 1), -E.EADDRINUSE);
    assert.equal(n.unixConnect(path.join(dir, 'nope.sock')), -E.ENOENT);
    assert.equal(n.unixListen('/' + 'x'.repeat(200), 1), -E.ENAMETOOLONG);
  } finally {
    n.close(l);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('recvmsg reports MSG_CTRUNC when fds are lost: more than the caller has slots for, or more than RLIMIT_NOFILE lets in', () => {
  const [a, b] = pair();
  const sent = Array.from({ length: 8 }, () => n.eventfd(0));
  const flags = new Int32Array(1);
  const soft = n.raiseNofile(0);
  const fillers: number[] = [];
  try {
    assert.equal(n.sendmsg(a, Buffer.from('x'), 1, sent), 1);
    const two = new Int32Array(2);
    assert.equal(n.recvmsg(b, new Uint8Array(4), two, flags), 1);
    assert.equal(flags[0]! & MSG_CTRUNC, MSG_CTRUNC, 'six had no slot');
    for (const f of two) n.close(f);

    assert.equal(n.sendmsg(a, Buffer.from('y'), 1, sent), 1);
    assert.equal(n.recvmsg(b, new Uint8Array(4), new Int32Array(16), flags), 1);
    assert.equal(flags[0]! & MSG_CTRUNC, 0, 'all eight came');
    for (const f of fs.readdirSync('/proc/self/fd').map(Number)) if (!sent.includes(f) && f > Math.max(a, b)) n.close(f);

    // Leave room for exactly three new fds: fill every hole below the highest fd, then limit.
    const top = Math.max(...fs.readdirSync('/proc/self/fd').map(Number));
    for (let f = -1; f <= top;) {
      f = n.openat(AT_FDCWD, '/dev/null', 0, 0);
      assert.ok(f >= 0, `open /dev/null: ${f}`);
      fillers.push(f);
    }
    const limit = fillers.at(-1)! + 1 + 3;
    assert.equal(n.setNofile(limit, false), limit);
    assert.equal(n.sendmsg(a, Buffer.from('z'), 1, sent), 1);
    const got = new Int32Array(16);
    const r = n.recvmsg(b, new Uint8Array(4), got, flags);
    assert.equal(n.setNofile(soft, false), soft);
    assert.equal(r, 1);
    assert.equal(flags[0]! & MSG_CTRUNC, MSG_CTRUNC);
    assert.equal([...got].filter((f) => f >= 0).length, 3, 'the first three, installed in order');
    for (const f of got) if (f >= 0) n.close(f);
  } finally {
    n.setNofile(soft, false);
    for (const f of [a, b, ...sent, ...fillers]) n.close(f);
  }
});

test('unixDgramSend delivers one datagram with its fds to a bound datagram socket (path and abstract name)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-dgram-'));
  const abstract = `@vfsd-test-${process.pid}`;
  for (const addr of [path.join(dir, 'notify'), abstract]) {
    const s = n.unixDgramBind(addr);
    assert.ok(s >= 0, `bind ${addr}: ${s}`);
    const [a, b] = pair();
    try {
      const msg = Buffer.from('READY=1\nSTATUS=up');
      assert.equal(n.unixDgramSend(addr, msg, msg.length, [a]), 0 + msg.length);
      const buf = new Uint8Array(64);
      const fds = new Int32Array(4);
      assert.equal(n.recvmsg(s, buf, fds), msg.length);
      assert.equal(Buffer.from(buf.subarray(0, msg.length)).toString(), 'READY=1\nSTATUS=up');
      assert.ok(fds[0]! >= 0 && fds[1] === -1, 'one fd came');
      assert.equal(n.kcmpFile(fds[0]!, a), 0, 'the same open file description');
      n.close(fds[0]!);
      assert.equal(n.recvmsg(s, buf, fds), -E.EAGAIN, 'nonblocking, nothing more');
    } finally {
      n.close(a);
      n.close(b);
      n.close(s);
    }
  }
  assert.equal(n.unixDgramSend(path.join(dir, 'none'), Buffer.from('x'), 1, []), -E.ENOENT);
  assert.equal(n.unixDgramSend('@', Buffer.from('x'), 1, []), -E.EINVAL, 'an empty abstract name');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('kcmpFile tells a duplicate (same open file description) from another open of the same file', () => {
  const a = n.openat(AT_FDCWD, '/proc/self/stat', fs.constants.O_RDONLY, 0);
  const b = n.dup(a);
  const c = n.openat(AT_FDCWD, '/proc/self/stat', fs.constants.O_RDONLY, 0);
  try {
    assert.equal(n.kcmpFile(a, b), 0);
    assert.ok(n.kcmpFile(a, c) > 0);
    assert.equal(n.kcmpFile(a, 999_999), -E.EBADF);
  } finally {
    n.close(a); n.close(b); n.close(c);
  }
});
