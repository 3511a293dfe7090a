// Fuzz target: the vhost-user control plane (message framing, payload decoding, the device state
// machine) as a hostile front-end drives it (QEMU docs/interop/vhost-user.rst).
//
// The input is a stream of messages: request codes (known and unknown), flags (version, REPLY,
// NEED_REPLY), payloads shaped for the request (memory tables, ring addresses inside or outside
// the regions, ring sizes and indexes, feature masks) or not, sizes that lie, and fds attached
// (as many as the request wants, or not). The stream reaches a VhostUserFsBackend through a
// scripted socket in pieces of an input-chosen size, then the front-end hangs up.
// Checked: no handler error other than a refusal (VhostUserError), at most one reply per
// message and exactly one for requests that always get one; every fd received is closed exactly
// once by the end and the device state never names a closed fd; every mapping is unmapped once;
// the data plane is asked to start only rings that are configured, inside mapped memory and not
// already running, and to stop only running ones.

import * as assert from 'node:assert/strict';
import { constants as osConstants } from 'node:os';
import pino from 'pino';
import { FuzzInput } from '../lib/input';
import type { FuzzTarget } from '../lib/harness';
import type { NativeBinding, PollHandle } from '../../../src/native/binding';
import { VhostUserFsBackend, deviceStateFds, OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, type DeviceState } from '../../../src/vhost/backend';
import type { DataPlane, RingConfig, MemoryTable } from '../../../src/vhost/data-plane';
import { SplitQueue } from '../../../src/virtio/split-queue';
import { Req, REQUESTS_WITH_REPLY, REPLY_FLAGS, HEADER_SIZE, MAX_FDS, encodeHeader } from '../../../src/vhost/message';

const { EAGAIN, ENOMEM, EINVAL } = osConstants.errno;
const CONN_FD = 3;
const MAX_MAP = 1 << 24;

interface Sent { request: number; flags: number; size: number }

/** The front-end's socket and the kernel around it: fds, mappings, reads in pieces. */
class World {
  segs: Array<{ bytes: Uint8Array; fds: number[]; off: number }> = [];
  eof = false;
  maxRead = Infinity;
  cb: ((s: number, e: number) => void) | null = null;
  readonly open = new Set<number>();
  readonly everOpened = new Set<number>();
  private nextFd = 100;
  readonly maps = new Set<ArrayBuffer>();
  readonly replies: Sent[] = [];
  problems: string[] = [];
  /** How the socket misbehaves: short sends, EAGAIN / EINTR once in a while, a failed read. */
  quirks = { shortSend: false, again: 0, recvError: -1 };
  private partial: number[] = [];
  recvFailed = false;
  private nonblocking = true;

  /** The socket is gone: fds still queued in it are freed by the kernel. */
  dropUnread(): void {
    for (const seg of this.segs) if (seg.off === 0) for (const fd of seg.fds) this.open.delete(fd);
    this.segs = [];
  }

  newFd(): number {
    const fd = this.nextFd++;
    this.open.add(fd);
    this.everOpened.add(fd);
    return fd;
  }

  native(): NativeBinding {
    const n: Partial<NativeBinding> = {
      setNonblocking: (_fd: number, on: boolean) => { this.nonblocking = on; return 0; },
      pollStart: ((_fd: number, _ev: number, cb: (s: number, e: number) => void) => { this.cb = cb; return {} as PollHandle; }) as NativeBinding['pollStart'],
      pollStop: () => { this.cb = null; },
      recvmsg: (_fd: number, buf: Uint8Array, fds: Int32Array) => {
        fds.fill(-1);
        if (this.quirks.again > 0 && this.quirks.again-- % 3 === 0) return -osConstants.errno.EINTR;
        if (this.quirks.recvError === 0) { this.quirks.recvError = -1; this.recvFailed = true; return -osConstants.errno.ECONNRESET; }
        if (this.quirks.recvError > 0) this.quirks.recvError--;
        const s = this.segs[0];
        if (!s) return this.eof ? 0 : -EAGAIN;
        if (s.off === 0) s.fds.slice(0, MAX_FDS).forEach((f, i) => { fds[i] = f; });
        const k = Math.min(buf.length, s.bytes.length - s.off, this.maxRead);
        buf.set(s.bytes.subarray(s.off, s.off + k));
        s.off += k;
        if (s.off === s.bytes.length) this.segs.shift();
        return k;
      },
      sendmsg: (_fd: number, buf: Uint8Array, len: number) => {
        // EAGAIN only in nonblocking mode: the sender then blocks, and a blocking send waits.
        if (this.nonblocking && this.quirks.again > 0 && this.quirks.again-- % 2 === 0) return -EAGAIN;
        // A short send: the rest comes in the next call.
        const n = this.quirks.shortSend && len > 1 ? Math.ceil(len / 2) : len;
        this.partial.push(...buf.subarray(0, n));
        if (this.partial.length < HEADER_SIZE) return n;
        const dv = new DataView(Uint8Array.from(this.partial).buffer);
        const size = dv.getUint32(8, true);
        if (this.partial.length < HEADER_SIZE + size) return n;
        if (this.partial.length !== HEADER_SIZE + size) this.problems.push('a reply was sent with a size that does not match its header');
        this.replies.push({ request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size });
        this.partial = [];
        return n;
      },
      close: (fd: number) => {
        if (fd === CONN_FD) return 0;
        if (!this.open.has(fd)) this.problems.push(`close(${fd}): ${this.everOpened.has(fd) ? 'closed twice' : 'never received'}`);
        this.open.delete(fd);
        return 0;
      },
      mmap: (fd: number, offset: number, length: number) => {
        if (!this.open.has(fd)) { this.problems.push(`mmap of fd ${fd}, which is not open`); return -EINVAL; }
        if (offset % 4096 !== 0 || !(length > 0)) return -EINVAL;
        if (length > MAX_MAP) return -ENOMEM;
        const b = new ArrayBuffer(length);
        this.maps.add(b);
        return b;
      },
      munmap: (b: ArrayBuffer) => {
        if (!this.maps.delete(b)) this.problems.push('munmap of a buffer not mapped (twice?)');
        return 0;
      },
    };
    return n as NativeBinding;
  }
}

/** A data plane that checks what it is asked to do. */
class CheckingPlane implements DataPlane {
  readonly running = new Map<number, RingConfig>();
  constructor(private readonly w: World, private readonly inp: FuzzInput) {}
  startRing(cfg: RingConfig, table: MemoryTable): void {
    const w = this.w;
    if (this.running.has(cfg.index)) w.problems.push(`ring ${cfg.index} started while running`);
    if (!w.open.has(cfg.kickFd)) w.problems.push(`ring ${cfg.index} started with kick fd ${cfg.kickFd}, which is not open`);
    if (cfg.callFd >= 0 && !w.open.has(cfg.callFd)) w.problems.push(`ring ${cfg.index} started with a closed call fd`);
    if (!(cfg.base >= 0 && cfg.base <= 0xffff)) w.problems.push(`ring ${cfg.index} base ${cfg.base}`);
    for (const r of table.regions) if (!w.open.has(r.fd)) w.problems.push(`memory table names closed fd ${r.fd}`);
    try {
      // What the worker does with it: this must not fail for a ring the back-end accepted.
      new SplitQueue(table.mem, { size: cfg.size, descVa: cfg.descVa, availVa: cfg.availVa, usedVa: cfg.usedVa, lastAvail: cfg.base, eventIdx: cfg.eventIdx });
    } catch (e) {
      w.problems.push(`ring ${cfg.index} started with a configuration a queue refuses: ${(e as Error).message}`);
    }
    if (this.inp.chance(8)) throw new Error('the data plane cannot start this ring'); // allowed by the contract
    this.running.set(cfg.index, cfg);
  }
  async stopRing(index: number): Promise<number> {
    const cfg = this.running.get(index);
    if (!cfg) { this.w.problems.push(`stopRing(${index}) of a ring not running`); return 0; }
    this.running.delete(index);
    if (this.inp.bool()) await new Promise((r) => setImmediate(r));
    return this.inp.chance(200) ? cfg.base : this.inp.u16();
  }
  setCallFd(index: number, fd: number): void {
    if (!this.running.has(index)) this.w.problems.push(`setCallFd on ring ${index}, not running`);
    if (fd >= 0 && !this.w.open.has(fd)) this.w.problems.push(`setCallFd(${index}, ${fd}): fd not open`);
  }
}

const CODES = Object.values(Req) as number[];

/** One message from the input. Returns its bytes, fds and header as sent. */
function message(inp: FuzzInput, w: World, st: { regions: Array<{ gpa: number; size: number; uaddr: number }> }): { bytes: Uint8Array; fds: number[]; sent: Sent } {
  const request = inp.chance(240) ? inp.pick(CODES) : inp.u32e();
  let flags = inp.pick([1, 1, 1, 1 | 8, 1 | 8, 0, 2, 1 | 4, inp.u32()]);
  if (inp.chance(8)) flags = inp.u32();
  const p = new DataView(new ArrayBuffer(512));
  let size = 0;
  let nfds = 0;
  const u64 = (off: number, v: number): void => { p.setUint32(off, v % 2 ** 32, true); p.setUint32(off + 4, Math.floor(v / 2 ** 32), true); };
  const raw64 = (off: number): void => { const [lo, hi] = inp.u64e(); p.setUint32(off, lo, true); p.setUint32(off + 4, hi, true); };
  const ringIdx = (): number => (inp.chance(230) ? inp.int(0, 2) : inp.u32e());
  const va = (len: number): number => {
    const r = st.regions.length > 0 && inp.chance(230) ? inp.pick(st.regions) : null;
    if (!r) return inp.u32e();
    const off = inp.pick([0, 16 * inp.int(0, 64), r.size - len, inp.int(0, r.size), r.size]);
    return r.uaddr + Math.max(0, off) + (inp.chance(16) ? inp.int(1, 15) : 0);
  };
  const region = (off: number): void => {
    const gpa = inp.pick([0, 0x100000, 0x200000, 2 ** 32, inp.u32e() * 4096]);
    const rsize = inp.pick([0x10000, 0x4000, 0x100000, 4096, 0, inp.u32e(), MAX_MAP + 4096]);
    const uaddr = inp.pick([0x7f0000000000, 0x7f0000000000 + gpa, inp.u32e() * 4096]);
    const mo = inp.pick([0, 0, 4096, inp.u32e()]);
    u64(off, gpa); u64(off + 8, rsize); u64(off + 16, uaddr); u64(off + 24, mo);
    if (inp.chance(16)) raw64(off + 8 * inp.int(0, 3));
  };
  switch (request) {
    case Req.VHOST_USER_SET_FEATURES: u64(0, inp.chance(200) ? OFFERED_FEATURES - (inp.bool() ? 2 ** 29 : 0) - (inp.bool() ? 2 ** 30 : 0) : inp.u32e()); size = 8; break;
    case Req.VHOST_USER_SET_PROTOCOL_FEATURES: u64(0, inp.chance(200) ? OFFERED_PROTOCOL_FEATURES : inp.u32e()); size = 8; break;
    case Req.VHOST_USER_SET_STATUS: u64(0, inp.u32e()); size = 8; break;
    case Req.VHOST_USER_SET_VRING_NUM: case Req.VHOST_USER_SET_VRING_BASE: case Req.VHOST_USER_GET_VRING_BASE:
    case Req.VHOST_USER_SET_VRING_ENABLE:
      p.setUint32(0, ringIdx(), true);
      p.setUint32(4, inp.pick([2 ** inp.int(0, 15), inp.int(0, 2), inp.u32e(), 65536]), true);
      size = 8;
      break;
    case Req.VHOST_USER_SET_VRING_KICK: case Req.VHOST_USER_SET_VRING_CALL: case Req.VHOST_USER_SET_VRING_ERR: {
      const noFd = inp.chance(48);
      u64(0, inp.chance(240) ? ringIdx() % 256 | (noFd ? 0x100 : 0) : inp.u32e());
      size = 8;
      nfds = noFd ? 0 : 1;
      break;
    }
    case Req.VHOST_USER_SET_VRING_ADDR: {
      p.setUint32(0, ringIdx(), true);
      p.setUint32(4, inp.chance(240) ? 0 : inp.u32e(), true);
      u64(8, va(16 * 256)); u64(16, va(6 + 8 * 256)); u64(24, va(6 + 2 * 256)); u64(32, inp.u32e());
      if (inp.chance(16)) raw64(8 * inp.int(1, 4));
      size = 40;
      break;
    }
    case Req.VHOST_USER_SET_MEM_TABLE: {
      const n = inp.chance(240) ? inp.int(0, 4) : inp.u32e();
      p.setUint32(0, n, true);
      for (let i = 0; i < Math.min(n, 8); i++) region(8 + 32 * i);
      size = 8 + 32 * Math.min(n, 8);
      nfds = Math.min(n, 8);
      break;
    }
    case Req.VHOST_USER_ADD_MEM_REG: region(8); size = 40; nfds = 1; break;
    case Req.VHOST_USER_REM_MEM_REG:
      if (st.regions.length > 0 && inp.bool()) {
        const r = inp.pick(st.regions);
        u64(8, r.gpa); u64(16, r.size); u64(24, r.uaddr); u64(32, 0);
      } else region(8);
      size = 40;
      break;
    case Req.VHOST_USER_SET_BACKEND_REQ_FD: nfds = 1; break;
    default:
      size = inp.chance(128) ? 0 : inp.int(0, 64);
      for (let i = 0; i < size; i++) p.setUint8(i, inp.u8());
  }
  if (inp.chance(12)) size = inp.pick([size + 1, Math.max(0, size - 1), inp.int(0, 300)]);
  if (inp.chance(12)) nfds = inp.int(0, 10);
  const declared = inp.chance(6) ? inp.pick([4097, 0xffffffff, 8192, size + 8]) : size;
  const sendBytes = declared > 4096 ? Math.min(declared, 9000) : declared;
  const bytes = new Uint8Array(HEADER_SIZE + sendBytes);
  encodeHeader({ request, flags, size: declared }, bytes);
  bytes.set(new Uint8Array(p.buffer, 0, Math.min(size, sendBytes)), HEADER_SIZE);
  const fds = Array.from({ length: nfds }, () => w.newFd());
  return { bytes, fds, sent: { request, flags, size: declared } };
}

function checkState(w: World, s: Readonly<DeviceState>): void {
  for (const { path, fd } of deviceStateFds(s as DeviceState)) {
    if (!w.open.has(fd)) w.problems.push(`device state ${path} names fd ${fd}, which is closed`);
  }
  JSON.stringify(s); // the keeper publishes it
  for (const r of s.rings) if (r.num !== 0 && (r.num & (r.num - 1)) !== 0) w.problems.push(`ring size ${r.num}`);
}

export const vhostUserTarget: FuzzTarget = {
  name: 'vhost-user',
  about: 'vhost-user framing (short reads, fds, oversized payloads), payload decoders and the device state machine',
  maxLength: 4096,
  files: ['src/vhost/message.ts', 'src/vhost/connection.ts', 'src/vhost/backend.ts', 'src/virtio/guest-memory.ts'],
  async run(data) {
    const inp = new FuzzInput(data);
    const w = new World();
    const lines: Array<{ level: number; msg: string }> = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => { lines.push(JSON.parse(s) as { level: number; msg: string }); } });
    const plane = new CheckingPlane(w, inp);
    const backend = new VhostUserFsBackend({
      native: w.native(), log, numRequestQueues: inp.int(1, 2), dataPlane: plane,
      onState: (s) => checkState(w, s),
    });
    w.maxRead = inp.chance(160) ? Infinity : inp.int(1, 64);
    if (inp.chance(40)) w.quirks = { shortSend: inp.bool(), again: inp.int(0, 20), recvError: inp.chance(64) ? inp.int(0, 30) : -1 };
    const hangUp = inp.chance(40); // close from our side instead of the front-end's EOF
    const served = backend.serve(CONN_FD);
    const sent: Sent[] = [];
    const st = { regions: [] as Array<{ gpa: number; size: number; uaddr: number }> };
    const n = inp.int(1, 40);
    for (let i = 0; i < n && !inp.done; i++) {
      const m = message(inp, w, st);
      sent.push(m.sent);
      // More fds than a message can carry: the kernel drops the rest (MSG_CTRUNC).
      for (const fd of m.fds.slice(MAX_FDS)) w.open.delete(fd);
      w.segs.push({ bytes: m.bytes, fds: m.fds, off: 0 });
      // A payload longer than what follows swallows the rest of the stream.
      if (m.sent.size > 4096 && m.bytes.length < HEADER_SIZE + m.sent.size) { sent.pop(); break; }
      if (inp.chance(100)) {
        w.cb?.(0, 1);
        await new Promise((r) => setImmediate(r));
        st.regions = backend.state.regions.map((r) => ({ gpa: r.gpa, size: r.size, uaddr: r.uaddr }));
      }
      if (inp.chance(8)) {
        // A keeper re-exec that did not happen: stop reading at a message boundary, then go on.
        const q = backend.quiesce();
        w.cb?.(0, 1);
        await q;
        backend.resume();
      }
    }
    if (hangUp) {
      w.cb?.(0, 1);
      await backend.close();
      w.dropUnread();
    } else {
      w.eof = true;
      w.cb?.(0, 1);
    }
    await served;
    if (w.recvFailed) w.dropUnread();
    // The connection may have ended early (a read error, our hang-up): then the messages after
    // some point were never read, nor answered.
    const strict = !w.recvFailed && !hangUp;
    if (process.env.VFSD_FUZZ_TRACE) console.error('[vhost-user] sent', sent, 'replies', w.replies, lines.map((l) => l.msg));
    // Replies: in order, one at most per message, one always for requests that always get one.
    let k = 0;
    for (const s of sent) {
      const r = w.replies[k];
      const always = REQUESTS_WITH_REPLY.has(s.request);
      if (r && r.request === s.request && (always || (s.flags & 8) !== 0)) {
        assert.equal(r.flags, REPLY_FLAGS, 'reply flags');
        k++;
      } else if (always) {
        if (strict) assert.fail(`request ${s.request} got no reply`);
        break;
      }
    }
    assert.equal(k, w.replies.length, 'replies that answer no request');
    const unexpected = lines.filter((l) => l.level >= 50 && /unexpectedly|threw/.test(l.msg));
    assert.deepEqual(unexpected.map((l) => l.msg), [], 'a handler failed with something other than a refusal');
    assert.deepEqual(w.problems, []);
    assert.deepEqual([...w.open], [], 'fds left open after the front-end hung up');
    assert.equal(w.maps.size, 0, 'mappings left after the front-end hung up');
    assert.equal(plane.running.size, 0, 'rings left running after the front-end hung up');
  },
};
