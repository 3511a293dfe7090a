// Framing tests against a scripted socket: arbitrary read boundaries, fds attached to the right
// message, oversized messages, in-order async delivery, EOF.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { constants as osConstants } from 'node:os';
import { silentLogger } from '../../../src/log';
import type { NativeBinding, PollHandle } from '../../../src/native/binding';
import { VhostUserConnection, type VhostUserMessage } from '../../../src/vhost/connection';
import { decodeHeader, encodeMessage, encodeU64, MAX_PAYLOAD } from '../../../src/vhost/message';

const { EAGAIN } = osConstants.errno;

/** A socket that delivers scripted segments; fds come with a segment's first byte, as on Linux. */
class ScriptedSocket {
  segments: Array<{ bytes: Uint8Array; fds: number[]; off: number }> = [];
  eof = false;
  closed: number[] = [];
  sent: Array<{ bytes: Uint8Array; fds: number[] }> = [];
  cb: ((status: number, events: number) => void) | null = null;
  maxRead = Infinity;

  push(bytes: Uint8Array, fds: number[] = []): void {
    this.segments.push({ bytes, fds, off: 0 });
  }

  fire(): void {
    this.cb?.(0, 1);
  }

  native(): NativeBinding {
    const n = {
      setNonblocking: () => 0,
      pollStart: (_fd: number, _ev: number, cb: (s: number, e: number) => void) => {
        this.cb = cb;
        return {} as PollHandle;
      },
      pollStop: () => {
        this.cb = null;
      },
      recvmsg: (_fd: number, buf: Uint8Array, fds: Int32Array) => {
        fds.fill(-1);
        const s = this.segments[0];
        if (!s) return this.eof ? 0 : -EAGAIN;
        if (s.off === 0) s.fds.forEach((f, i) => (fds[i] = f));
        const n = Math.min(buf.length, s.bytes.length - s.off, this.maxRead);
        buf.set(s.bytes.subarray(s.off, s.off + n));
        s.off += n;
        if (s.off === s.bytes.length) this.segments.shift();
        return n;
      },
      sendmsg: (_fd: number, buf: Uint8Array, len: number, fds: ArrayLike<number>) => {
        this.sent.push({ bytes: buf.slice(0, len), fds: Array.from(fds) });
        return len;
      },
      close: (fd: number) => {
        this.closed.push(fd);
        return 0;
      },
    };
    return n as unknown as NativeBinding;
  }
}

function setup(): { sock: ScriptedSocket; conn: VhostUserConnection; got: VhostUserMessage[] } {
  const sock = new ScriptedSocket();
  const conn = new VhostUserConnection(sock.native(), 3, silentLogger);
  const got: VhostUserMessage[] = [];
  conn.start((m) => {
    got.push(m);
  });
  return { sock, conn, got };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('several messages in one segment are split at their boundaries', async () => {
  const { sock, got } = setup();
  const a = encodeMessage(1, 1);
  const b = encodeMessage(2, 1, encodeU64(0x170000000));
  const c = encodeMessage(3, 1);
  const all = new Uint8Array(a.length + b.length + c.length);
  all.set(a);
  all.set(b, a.length);
  all.set(c, a.length + b.length);
  sock.push(all);
  sock.fire();
  await tick();
  assert.deepEqual(got.map((m) => m.header.request), [1, 2, 3]);
  assert.equal(got[1].payload.length, 8);
  assert.deepEqual([...got[1].payload], [...encodeU64(0x170000000)]);
});

test('one byte per read: short reads accumulate', async () => {
  const { sock, got } = setup();
  sock.maxRead = 1;
  sock.push(encodeMessage(13, 1, encodeU64(1)), [42]);
  sock.push(encodeMessage(8, 9, new Uint8Array(8)));
  sock.fire();
  await tick();
  assert.equal(got.length, 2);
  assert.deepEqual(got[0].fds, [42]);
  assert.deepEqual(got[1].fds, []);
  assert.equal(got[1].header.flags, 9);
});

test('fds belong to the message whose bytes they came with', async () => {
  const { sock, got } = setup();
  sock.push(encodeMessage(3, 1));
  sock.push(encodeMessage(12, 1, encodeU64(0)), [7]);
  sock.push(encodeMessage(13, 1, encodeU64(0)), [8]);
  sock.push(encodeMessage(5, 1, new Uint8Array(8 + 64)), [9, 10]);
  sock.fire();
  await tick();
  assert.deepEqual(got.map((m) => m.fds), [[], [7], [8], [9, 10]]);
});

test('a message arriving over several wakeups', async () => {
  const { sock, got } = setup();
  const m = encodeMessage(9, 1, new Uint8Array(40).fill(0xab));
  sock.push(m.subarray(0, 5));
  sock.fire();
  sock.push(m.subarray(5, 20));
  sock.fire();
  assert.equal(got.length, 0);
  sock.push(m.subarray(20));
  sock.fire();
  await tick();
  assert.equal(got.length, 1);
  assert.equal(got[0].payload.length, 40);
  assert.equal(got[0].payload[39], 0xab);
});

test('oversized message: payload discarded, its fds closed, the next message intact', async () => {
  const { sock, got } = setup();
  const big = MAX_PAYLOAD * 2 + 100;
  sock.push(encodeMessage(5, 9, new Uint8Array(big)), [77]);
  sock.push(encodeMessage(1, 1));
  sock.fire();
  await tick();
  assert.equal(got.length, 2);
  assert.equal(got[0].oversized, true);
  assert.equal(got[0].header.size, big);
  assert.equal(got[0].payload.length, 0);
  assert.deepEqual(got[0].fds, []);
  assert.ok(sock.closed.includes(77));
  assert.equal(got[1].header.request, 1);
  assert.equal(got[1].oversized, false);
});

test('async handler: next message delivered only after the previous one settled', async () => {
  const sock = new ScriptedSocket();
  const conn = new VhostUserConnection(sock.native(), 3, silentLogger);
  const order: string[] = [];
  let release!: () => void;
  conn.start(async (m) => {
    order.push(`start ${m.header.request}`);
    if (m.header.request === 11) await new Promise<void>((r) => (release = r));
    order.push(`end ${m.header.request}`);
  });
  sock.push(encodeMessage(11, 1, new Uint8Array(8)));
  sock.push(encodeMessage(13, 1, encodeU64(0)));
  sock.fire();
  await tick();
  assert.deepEqual(order, ['start 11']);
  release();
  await tick();
  assert.deepEqual(order, ['start 11', 'end 11', 'start 13', 'end 13']);
});

test('a throwing handler does not stop delivery', async () => {
  const sock = new ScriptedSocket();
  const conn = new VhostUserConnection(sock.native(), 3, silentLogger);
  const seen: number[] = [];
  conn.start((m) => {
    seen.push(m.header.request);
    if (m.header.request === 1) throw new Error('boom');
  });
  sock.push(encodeMessage(1, 1));
  sock.push(encodeMessage(2, 1, encodeU64(0)));
  sock.fire();
  await tick();
  assert.deepEqual(seen, [1, 2]);
});

test('EOF: queued messages are handled first, then close is emitted and the socket closed', async () => {
  const sock = new ScriptedSocket();
  const conn = new VhostUserConnection(sock.native(), 3, silentLogger);
  const events: string[] = [];
  conn.on('close', () => events.push('close'));
  conn.start(async (m) => {
    await tick();
    events.push(`msg ${m.header.request}`);
  });
  sock.push(encodeMessage(18, 1, new Uint8Array(8)));
  sock.push(encodeMessage(11, 1, new Uint8Array(8)));
  sock.eof = true;
  sock.fire();
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(events, ['msg 18', 'msg 11', 'close']);
  assert.ok(sock.closed.includes(3));
});

test('EOF in the middle of a message closes the fds that came with it', async () => {
  const { sock, conn } = setup();
  let closed = false;
  conn.on('close', () => (closed = true));
  sock.push(encodeMessage(12, 1, encodeU64(0)).subarray(0, 15), [55]);
  sock.eof = true;
  sock.fire();
  await tick();
  assert.equal(closed, true);
  assert.ok(sock.closed.includes(55));
});

test('send: header + payload + fds in one sendmsg', () => {
  const { sock, conn } = setup();
  assert.equal(conn.send(11, 5, new Uint8Array([1, 0, 0, 0, 4, 0, 0, 0]), [9]), 0);
  assert.equal(sock.sent.length, 1);
  assert.deepEqual(decodeHeader(sock.sent[0].bytes), { request: 11, flags: 5, size: 8 });
  assert.deepEqual(sock.sent[0].fds, [9]);
});
