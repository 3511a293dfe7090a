// Our back-end (in process: listener + VhostUserFsBackend) against the test front-end that plays
// QEMU 7.2: handshake, requests on both queue kinds, GET_VRING_BASE, stop/start cycles, and hostile
// control messages that must be refused without breaking the device.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { loadNative, type NativeBinding } from '../../src/native/binding';
import type { DescChain } from '../../src/virtio/split-queue';
import type { ChainHandler } from '../../src/virtio/queue-runner';
import { MAX_MEM_SLOTS, OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, VhostUserFsBackend } from '../../src/vhost/backend';
import { acceptOne, listenUnix } from '../../src/vhost/listener';
import {
  ProtocolFeature,
  REPLY_FLAGS,
  Req,
  VirtioFeature,
  bit,
  decodeU64,
  decodeVringState,
  encodeHeader,
  encodeMemTable,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  hasBit,
  maskClear,
} from '../../src/vhost/message';
import { UADDR_OFFSET, VhostUserFrontend, type FrontendOptions, type RawReply } from '../support/frontend';

const native: NativeBinding = loadNative();
const PREFIX = new TextEncoder().encode('ECHO:');

interface LogLine { level: number; msg: string; [k: string]: unknown }

/** Echo handler for request queues: writes PREFIX + everything readable. Hiprio: no reply, len 0. */
function echoHandler(q: number): ChainHandler {
  return (chain: DescChain, complete: (n: number) => void) => {
    if (q === 0) {
      complete(0);
      return;
    }
    complete(writeAll(chain, concat([PREFIX, ...chain.readable])));
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function writeAll(chain: DescChain, data: Uint8Array): number {
  let off = 0;
  for (const w of chain.writable) {
    const n = Math.min(w.length, data.length - off);
    w.set(data.subarray(off, off + n));
    off += n;
  }
  return off;
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

interface Pair {
  fe: VhostUserFrontend;
  backend: VhostUserFsBackend;
  lines: LogLine[];
  served: Promise<void>;
  disconnected: () => boolean;
  cleanup(): Promise<void>;
}

async function startPair(o: FrontendOptions & { handler?: (q: number) => ChainHandler; connect?: 'full' | 'raw' } = {}): Promise<Pair> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-hs-'));
  const sock = path.join(dir, 'vfs.sock');
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  let gone = false;
  const backend = new VhostUserFsBackend({
    native, log, numRequestQueues: o.numRequestQueues ?? 1,
    makeHandler: o.handler ?? echoHandler,
    onDisconnect: () => { gone = true; },
  });
  const listenFd = listenUnix(native, sock);
  const served = acceptOne(native, listenFd).then((fd) => {
    native.close(listenFd);
    return backend.serve(fd);
  });
  const fe = o.connect === 'raw' ? await VhostUserFrontend.connectRaw(native, sock, o) : await VhostUserFrontend.connect(native, sock, o);
  return {
    fe, backend, lines, served, disconnected: () => gone,
    async cleanup() {
      fe.close();
      await served;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function echo(fe: VhostUserFrontend, q: number, text: string): Promise<string> {
  const r = await fe.request(q, [enc.encode(text)], [64]);
  return dec.decode(r.in[0].subarray(0, r.len));
}

function ackValue(r: RawReply): number {
  assert.equal(r.header.flags, REPLY_FLAGS);
  return decodeU64(r.payload);
}

test('handshake: QEMU 7.2 realize + start sequence against our back-end', async () => {
  const fdsBefore = openFds();
  const p = await startPair({ numRequestQueues: 2 });
  const { fe, backend } = p;
  assert.equal(fe.features, OFFERED_FEATURES);
  assert.equal(fe.protocolFeatures, OFFERED_PROTOCOL_FEATURES);
  assert.equal(fe.ackedProtocolFeatures, OFFERED_PROTOCOL_FEATURES);
  assert.equal(fe.queueNum, 3);
  assert.equal(fe.maxMemSlots, MAX_MEM_SLOTS);
  assert.ok(fe.backendReqFd >= 0);

  await fe.sync();
  const s = backend.state;
  assert.equal(s.features, OFFERED_FEATURES); // the guest acks all three transport bits + bit 30
  assert.equal(s.owner, true);
  assert.equal(s.status, 8);
  assert.equal(s.regions.length, 1);
  assert.equal(s.regions[0].gpa, 0);
  assert.equal(s.regions[0].uaddr, UADDR_OFFSET);
  assert.ok(s.backendReqFd >= 0);
  for (const r of s.rings) {
    assert.equal(r.num, 128);
    assert.equal(r.started, true);
    assert.equal(r.enabled, true);
    assert.ok(r.kickFd >= 0 && r.callFd >= 0 && r.errFd >= 0);
    assert.equal(r.addr!.descVa >= UADDR_OFFSET, true);
  }
  const snap = backend.snapshot();
  assert.deepEqual(JSON.parse(JSON.stringify(snap.state)), snap.state);
  assert.equal(snap.fds.length, 1 + 3 * 3 + 1);
  assert.ok(snap.fds.some((f) => f.path === 'rings[2].callFd'));

  assert.equal(await echo(fe, 1, 'hello'), 'ECHO:hello');
  assert.equal(await echo(fe, 2, 'second queue'), 'ECHO:second queue');

  await p.cleanup();
  assert.equal(p.disconnected(), true);
  assert.equal(backend.state.regions.length, 0);
  assert.equal(openFds(), fdsBefore, 'every fd was closed');
});

test('requests: queue 1 replies, hiprio gets used len 0, many in flight', async () => {
  const p = await startPair();
  const { fe } = p;
  assert.equal(await echo(fe, 1, 'x'), 'ECHO:x');
  // hiprio: one 48-byte device-readable buffer (FORGET), no writable part, still put on the used ring.
  const forget = await fe.request(0, [new Uint8Array(48)], []);
  assert.equal(forget.len, 0);
  assert.deepEqual(forget.in, []);
  // Several at once, multi-buffer both ways (indirect tables, as Linux posts them).
  const many = await Promise.all(Array.from({ length: 40 }, (_, i) =>
    fe.request(1, [enc.encode(`req-${i}-`), enc.encode('tail')], [3, 100])));
  many.forEach((r, i) => {
    const all = dec.decode(concat(r.in).subarray(0, r.len));
    assert.equal(all, `ECHO:req-${i}-tail`);
  });
  assert.deepEqual(fe.unclaimed, []);
  await p.cleanup();
});

test('GET_VRING_BASE reports the next avail index after N requests', async () => {
  const p = await startPair({ indirect: false });
  const { fe } = p;
  for (let i = 0; i < 5; i++) await echo(fe, 1, `n${i}`);
  await fe.request(0, [new Uint8Array(48)], []);
  await fe.request(0, [new Uint8Array(48)], []);
  const bases = await fe.stop();
  assert.deepEqual(bases, [2, 5]);
  for (const r of p.backend.state.rings) {
    assert.equal(r.started, false);
    assert.equal(r.enabled, false);
    assert.equal(r.kickFd, -1);
  }
  await p.cleanup();
});

test('GET_VRING_BASE waits for in-flight requests to complete', async () => {
  let seen!: () => void;
  const popped = new Promise<void>((r) => (seen = r));
  const order: string[] = [];
  const slow = (q: number): ChainHandler => (chain, complete) => {
    if (q === 0) return complete(0);
    seen();
    setTimeout(() => {
      order.push('completed');
      complete(writeAll(chain, enc.encode('late')));
    }, 150);
  };
  const p = await startPair({ handler: slow });
  const req = p.fe.request(1, [enc.encode('slow')], [16]);
  await popped;
  const bases = await p.fe.stop();
  order.push('stopped');
  assert.deepEqual(order, ['completed', 'stopped']);
  assert.deepEqual(bases, [0, 1]);
  const r = await req;
  assert.equal(dec.decode(r.in[0].subarray(0, r.len)), 'late');
  await p.cleanup();
});

test('stop/start: rmmod+insmod (new rings, no memory re-sent) and pause/cont both keep serving', async () => {
  const p = await startPair();
  const { fe, backend } = p;
  for (let i = 0; i < 3; i++) await echo(fe, 1, 'a');
  assert.deepEqual(await fe.stop(), [0, 3]);

  // insmod after rmmod: the guest reset the device; fresh rings, base 0; ADD_MEM_REG not re-sent.
  await fe.start({ resetRings: true });
  await fe.sync();
  assert.equal(backend.state.regions.length, 1);
  assert.equal(await echo(fe, 1, 'after reset'), 'ECHO:after reset');
  await fe.request(0, [new Uint8Array(48)], []);
  assert.deepEqual(await fe.stop(), [1, 1]);

  // VM pause/cont: same rings, continue from the returned bases.
  await fe.start();
  assert.equal(await echo(fe, 1, 'after cont'), 'ECHO:after cont');
  assert.deepEqual(await fe.stop(), [1, 2]);
  await fe.start();
  assert.equal(await echo(fe, 1, 'again'), 'ECHO:again');
  await p.cleanup();
});

test('SET_MEM_TABLE path (no CONFIGURE_MEM_SLOTS) and a front-end without PROTOCOL_FEATURES', async () => {
  // A front-end that acks only MQ|REPLY_ACK (trace A2) sends SET_MEM_TABLE.
  const p = await startPair({ connect: 'raw' });
  const { fe, backend } = p;
  fe.features = await fe.getU64(Req.VHOST_USER_GET_FEATURES);
  fe.protocolFeatures = await fe.getU64(Req.VHOST_USER_GET_PROTOCOL_FEATURES);
  fe.ackedProtocolFeatures = bit(ProtocolFeature.VHOST_USER_PROTOCOL_F_MQ) + bit(ProtocolFeature.VHOST_USER_PROTOCOL_F_REPLY_ACK);
  await fe.rpc(Req.VHOST_USER_SET_PROTOCOL_FEATURES, encodeU64(fe.ackedProtocolFeatures));
  await fe.rpc(Req.VHOST_USER_SET_OWNER);
  await fe.start();
  await fe.sync();
  assert.equal(backend.state.regions.length, 1);
  assert.equal(await echo(fe, 1, 'table'), 'ECHO:table');
  // Replacing the table while rings run: they are stopped, remapped and restarted.
  const region = { gpa: 0, size: fe.ram.size, uaddr: UADDR_OFFSET, mmapOffset: 0 };
  await fe.rpcAck(Req.VHOST_USER_SET_MEM_TABLE, encodeMemTable([region]), [fe.ram.fd]);
  assert.equal(await echo(fe, 1, 'remapped'), 'ECHO:remapped');
  await p.cleanup();

  // No PROTOCOL_FEATURES at all: rings are enabled as soon as they start.
  const q = await startPair({ connect: 'raw' });
  q.fe.features = maskClear(OFFERED_FEATURES, bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
  await q.fe.rpc(Req.VHOST_USER_SET_OWNER);
  await q.fe.start();
  await q.fe.sync();
  assert.equal(hasBit(q.backend.state.features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES), false);
  assert.equal(q.backend.state.rings[1].enabled, true);
  assert.equal(await echo(q.fe, 1, 'legacy'), 'ECHO:legacy');
  assert.deepEqual(await q.fe.stop(), [0, 1]);
  await q.cleanup();
});

test('hostile control messages are refused and the device keeps working', async () => {
  const fdsBefore = openFds();
  const p = await startPair();
  const { fe, lines } = p;
  const warned = (re: RegExp): boolean => lines.some((l) => l.level >= 40 && re.test(l.msg));

  // 1. Size field beyond 4096: the payload is skipped by its announced size, NEED_REPLY gets non-zero.
  const big = new Uint8Array(12 + 5000);
  encodeHeader({ request: Req.VHOST_USER_SET_VRING_NUM, flags: 0x9, size: 5000 }, big);
  fe.sendBytes(big);
  assert.notEqual(ackValue(await fe.readReply()), 0);
  assert.ok(warned(/oversized|too large/));
  assert.equal(await fe.getU64(Req.VHOST_USER_GET_FEATURES), OFFERED_FEATURES);

  // 2. Wrong payload sizes: NEED_REPLY ack is non-zero; a GET_* gets an empty (bad-size) reply.
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_NUM, needReply: true }, new Uint8Array(4));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  fe.sendRaw({ request: Req.VHOST_USER_GET_FEATURES }, new Uint8Array(8));
  const empty = await fe.readReply();
  assert.equal(empty.header.request, Req.VHOST_USER_GET_FEATURES);
  assert.equal(empty.header.flags, REPLY_FLAGS);
  assert.equal(empty.payload.length, 0);
  assert.ok(warned(/payload must be/));

  // 3. Unknown request code with NEED_REPLY.
  fe.sendRaw({ request: 99, needReply: true });
  assert.notEqual(ackValue(await fe.readReply()), 0);
  assert.ok(warned(/UNKNOWN\(99\)/));
  //    ... and known-but-unsupported ones: GET_INFLIGHT_FD always gets a reply (empty), SET_LOG_BASE an ack.
  fe.sendRaw({ request: Req.VHOST_USER_GET_INFLIGHT_FD }, new Uint8Array(24));
  assert.equal((await fe.readReply()).payload.length, 0);
  const logFd = native.eventfd(0);
  fe.sendRaw({ request: Req.VHOST_USER_SET_LOG_BASE, needReply: true }, new Uint8Array(16), [logFd]);
  native.close(logFd);
  assert.notEqual(ackValue(await fe.readReply()), 0);

  // 4. SET_VRING_ADDR pointing outside guest memory (while ring 1 runs): refused, ring unchanged.
  const d = fe.drivers[1];
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_ADDR, needReply: true }, encodeVringAddr({
    index: 1, flags: 0, descVa: UADDR_OFFSET + fe.ram.size, usedVa: d.usedGpa + UADDR_OFFSET, availVa: d.availGpa + UADDR_OFFSET, logGpa: 0,
  }));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  assert.ok(warned(/outside guest memory/));
  //    A guest-physical address where a front-end virtual one belongs is outside too.
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_ADDR, needReply: true }, encodeVringAddr({
    index: 1, flags: 0, descVa: d.descGpa, usedVa: d.usedGpa, availVa: d.availGpa, logGpa: 0,
  }));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  assert.equal(await echo(fe, 1, 'still here'), 'ECHO:still here');

  // 5. Ring index out of range.
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_NUM, needReply: true }, encodeVringState({ index: 7, num: 128 }));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  fe.sendRaw({ request: Req.VHOST_USER_GET_VRING_BASE }, encodeVringState({ index: 9, num: 0 }));
  assert.equal((await fe.readReply()).payload.length, 0);
  const stray = native.eventfd(0);
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_CALL, needReply: true }, encodeVringFile({ index: 5, noFd: false }), [stray]);
  native.close(stray);
  assert.notEqual(ackValue(await fe.readReply()), 0);
  assert.ok(warned(/out of range/));

  // 6. Bad values: queue size not a power of two, fd count mismatch, features never offered, big status.
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_NUM, needReply: true }, encodeVringState({ index: 1, num: 100 }));
  assert.notEqual(ackValue(await fe.readReply()), 0); // also: ring 1 is running
  fe.sendRaw({ request: Req.VHOST_USER_SET_MEM_TABLE, needReply: true },
    encodeMemTable([{ gpa: 0, size: 4096, uaddr: 0x1000, mmapOffset: 0 }]), []);
  assert.notEqual(ackValue(await fe.readReply()), 0);
  fe.sendRaw({ request: Req.VHOST_USER_SET_FEATURES, needReply: true }, encodeU64(bit(34)));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  fe.sendRaw({ request: Req.VHOST_USER_SET_STATUS, needReply: true }, encodeU64(0x100));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  fe.sendRaw({ request: Req.VHOST_USER_SET_VRING_KICK, needReply: true }, encodeVringFile({ index: 1, noFd: true }));
  assert.notEqual(ackValue(await fe.readReply()), 0);
  //    A request flagged as a reply.
  fe.sendRaw({ request: Req.VHOST_USER_SET_OWNER, flags: REPLY_FLAGS, needReply: true });
  assert.notEqual(ackValue(await fe.readReply()), 0);

  // Still fully working: requests, then a clean stop with the right bases.
  assert.equal(await echo(fe, 1, 'survived'), 'ECHO:survived');
  assert.deepEqual(await fe.stop(), [0, 2]);
  assert.equal(fe.inboxEmpty, true);
  assert.equal(p.lines.some((l) => l.level >= 50), false, 'no error-level line (nothing unexpected)');
  await p.cleanup();
  assert.equal(openFds(), fdsBefore, 'no fd leaked by refused messages');
});

test('ADD_MEM_REG / REM_MEM_REG while rings run; RESET_DEVICE; GET/SET_STATUS', async () => {
  const p = await startPair();
  const { fe, backend } = p;
  // A second RAM region added and removed again (memory hot-plug); rings keep serving.
  const extra = native.memfdCreate('extra', 0);
  fs.ftruncateSync(extra, 1 << 20);
  const reg = { gpa: 1 << 30, size: 1 << 20, uaddr: UADDR_OFFSET + (1 << 30), mmapOffset: 0 };
  await fe.rpcAck(Req.VHOST_USER_ADD_MEM_REG, encodeSingleMemRegion(reg), [extra]);
  assert.equal(backend.state.regions.length, 2);
  assert.equal(await echo(fe, 1, 'two regions'), 'ECHO:two regions');
  // Overlapping region refused.
  fe.sendRaw({ request: Req.VHOST_USER_ADD_MEM_REG, needReply: true },
    encodeSingleMemRegion({ ...reg, gpa: (1 << 30) + 4096 }), [extra]);
  assert.notEqual(ackValue(await fe.readReply()), 0);
  await fe.rpcAck(Req.VHOST_USER_REM_MEM_REG, encodeSingleMemRegion(reg));
  native.close(extra);
  assert.equal(backend.state.regions.length, 1);
  assert.equal(await echo(fe, 1, 'one region'), 'ECHO:one region');

  // RESET_DEVICE: rings stopped and forgotten, memory kept; a new start serves again.
  await fe.rpcAck(Req.VHOST_USER_RESET_DEVICE);
  await fe.sync();
  assert.equal(backend.state.rings[1].started, false);
  assert.equal(backend.state.rings[1].kickFd, -1);
  assert.equal(backend.state.features, 0);
  await fe.start({ resetRings: true });
  assert.equal(await echo(fe, 1, 'after reset'), 'ECHO:after reset');

  // GET_STATUS reflects SET_STATUS.
  await fe.rpc(Req.VHOST_USER_SET_STATUS, encodeU64(0xf));
  assert.equal(await fe.getU64(Req.VHOST_USER_GET_STATUS), 0xf);

  await p.cleanup();
  assert.equal(p.disconnected(), true);
  assert.equal(backend.state.rings.every((r) => r.kickFd === -1 && r.callFd === -1), true);
});

test('front-end disconnects with a request in flight: teardown waits for it, then releases everything', async () => {
  const fdsBefore = openFds();
  let seen!: () => void;
  const popped = new Promise<void>((r) => (seen = r));
  let completedLate = false;
  const slow = (q: number): ChainHandler => (chain, complete) => {
    if (q === 0) return complete(0);
    seen();
    setTimeout(() => {
      completedLate = true;
      complete(writeAll(chain, enc.encode('late')));
    }, 100);
  };
  const p = await startPair({ handler: slow });
  const req = p.fe.request(1, [enc.encode('slow')], [16]).catch((e: Error) => e);
  await popped;
  await p.cleanup();
  assert.equal(completedLate, true);
  assert.equal(p.disconnected(), true);
  assert.ok((await req) instanceof Error);
  assert.equal(openFds(), fdsBefore);
});

test('GET_VRING_BASE reply carries the index asked for', async () => {
  const p = await startPair({ numRequestQueues: 3 });
  await echo(p.fe, 3, 'q3');
  p.fe.sendRaw({ request: Req.VHOST_USER_GET_VRING_BASE }, encodeVringState({ index: 3, num: 0 }));
  const r = await p.fe.readReply();
  assert.deepEqual(decodeVringState(r.payload), { index: 3, num: 1 });
  await p.cleanup();
});

test('backend.close() from our side: the front-end sees the connection close; everything is released', async () => {
  const fdsBefore = openFds();
  const p = await startPair();
  assert.equal(await echo(p.fe, 1, 'bye'), 'ECHO:bye');
  await p.backend.close();
  await p.served;
  assert.equal(p.disconnected(), true);
  await assert.rejects(p.fe.readReply(1000), /closed/);
  await p.cleanup();
  assert.equal(openFds(), fdsBefore);
});
