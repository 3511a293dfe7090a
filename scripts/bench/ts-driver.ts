// The TypeScript driver for `npm run bench -- --driver ts`: the project's own vhost-user front-end
// (test/support/frontend.ts) in the bench's process, one promise per request in flight. It tops
// out near 60,000-80,000 ops/s, so at depth it measures itself; the native driver (native/bench)
// is the default. Kept for comparison with older numbers in docs/performance.md.
import { loadNative, type NativeBinding } from '../../src/native/binding';
import { OP, SIZE } from '../../src/fuse/abi';
import { VhostUserFrontend } from '../../test/support/frontend';
import { FuseClient } from '../../test/support/fuse-client';
import { treeCpuNs } from '../../test/support/proc-stat';
import type { DriverCell, DriverSession } from './types';

export const TS_DRIVER_WORKLOADS = ['getattr', 'lookup', 'read4k', 'write4k', 'read1m'];

const FILE_SIZE = 64 * 1024 * 1024;
const PAGE = 4096;
const MIB = 1024 * 1024;
const QUEUE_SIZE = 256;
const RAM_SIZE = 96 * MIB; // 32 x 1 MiB in flight + tables + rings, with room to spare
const MAX_SAMPLES = 2_000_000;
const FORGET_EVERY = 1024;

/** xorshift32: deterministic offsets, no allocation. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
}

function inHeader(opcode: number, nodeid: bigint, bodyLen: number): Buffer {
  const h = Buffer.alloc(SIZE.in_header);
  h.writeUInt32LE(SIZE.in_header + bodyLen, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(nodeid, 16);
  h.writeUInt32LE(1, 32); // pid
  return h;
}

interface Target { nodeid: bigint; fh: bigint; wnodeid: bigint; wfh: bigint; name: string }

/** One in-flight slot's request: buffers are reused (the driver copies them into guest RAM). */
class Requester {
  private unique: bigint;
  private readonly hdr: Buffer;
  private readonly body: Buffer[];
  private readonly inLens: number[];
  private readonly next: () => number;
  private lookups = 0;

  constructor(private readonly fe: VhostUserFrontend, private readonly w: string, private readonly t: Target, slot: number) {
    this.unique = BigInt(slot + 1) << 40n;
    this.next = rng(0x9e3779b9 ^ (slot * 7919 + 1));
    switch (w) {
      case 'getattr':
        this.body = [Buffer.alloc(16)];
        this.hdr = inHeader(OP.FUSE_GETATTR, t.nodeid, 16);
        this.inLens = [SIZE.out_header, SIZE.attr_out];
        break;
      case 'lookup': {
        const name = Buffer.from(`${t.name}\0`);
        this.body = [name];
        this.hdr = inHeader(OP.FUSE_LOOKUP, 1n, name.length);
        this.inLens = [SIZE.out_header, SIZE.entry_out];
        break;
      }
      case 'read4k': case 'read1m': {
        const size = w === 'read4k' ? PAGE : MIB;
        const b = Buffer.alloc(40);
        b.writeBigUInt64LE(t.fh, 0);
        b.writeUInt32LE(size, 16);
        b.writeUInt32LE(0o2, 32); // flags: O_RDWR, as the file was opened
        this.body = [b];
        this.hdr = inHeader(OP.FUSE_READ, t.nodeid, 40);
        this.inLens = [SIZE.out_header, ...new Array<number>(size / PAGE).fill(PAGE)];
        break;
      }
      case 'write4k': {
        const b = Buffer.alloc(40);
        b.writeBigUInt64LE(t.wfh, 0);
        b.writeUInt32LE(PAGE, 16);
        b.writeUInt32LE(0o2, 32);
        this.body = [b, Buffer.alloc(PAGE, 0x5a + slot)];
        this.hdr = inHeader(OP.FUSE_WRITE, t.wnodeid, 40 + PAGE);
        this.inLens = [SIZE.out_header, SIZE.write_out];
        break;
      }
      default: throw new Error(`the ts driver has no workload ${w}`);
    }
  }

  /** Send one request and wait for it; returns false when the reply is not a success. */
  async once(): Promise<boolean> {
    this.hdr.writeBigUInt64LE(this.unique++, 8);
    if (this.w === 'read4k' || this.w === 'write4k' || this.w === 'read1m') {
      const unit = this.w === 'read1m' ? MIB : PAGE;
      this.body[0].writeBigUInt64LE(BigInt((this.next() % (FILE_SIZE / unit)) * unit), 8);
    }
    const r = await this.fe.request(1, [this.hdr, ...this.body], this.inLens, 30_000);
    const out = r.in[0];
    const err = out[4] | (out[5] << 8) | (out[6] << 16) | (out[7] << 24);
    if (err !== 0) return false;
    if (this.w === 'read4k' && r.len !== SIZE.out_header + PAGE) return false;
    if (this.w === 'read1m' && r.len !== SIZE.out_header + MIB) return false;
    if (this.w === 'lookup' && ++this.lookups >= FORGET_EVERY) await this.forget();
    return true;
  }

  /** Give back the lookups this slot took (FORGET on hiprio; no reply, only a used entry). */
  async forget(): Promise<void> {
    if (this.lookups === 0) return;
    const h = inHeader(OP.FUSE_FORGET, this.t.nodeid, 8);
    h.writeBigUInt64LE(this.unique++, 8);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(this.lookups));
    this.lookups = 0;
    await this.fe.request(0, [h, b], [], 30_000);
  }
}

class TsSession implements DriverSession {
  constructor(private readonly fe: VhostUserFrontend, private readonly client: FuseClient, private readonly t: Target, private readonly pid: number) {}

  async run(w: string, depth: number, o: { warmup: number; duration: number }): Promise<DriverCell> {
    const slots = Array.from({ length: depth }, (_, i) => new Requester(this.fe, w, this.t, i));
    const lat = new Float64Array(MAX_SAMPLES);
    let n = 0;
    let errors = 0;
    let measuring = false;
    let stopAt = 0;
    const worker = async (r: Requester): Promise<void> => {
      while (performance.now() < stopAt && n < MAX_SAMPLES) {
        const t0 = performance.now();
        if (!(await r.once())) errors++;
        if (measuring && n < MAX_SAMPLES) lat[n++] = performance.now() - t0;
      }
    };
    if (o.warmup > 0) {
      stopAt = performance.now() + o.warmup * 1000;
      await Promise.all(slots.map(worker));
    }
    const errorsBefore = errors;
    measuring = true;
    const cpu0 = treeCpuNs(this.pid);
    const fe0 = process.cpuUsage();
    const t0 = performance.now();
    stopAt = t0 + o.duration * 1000;
    await Promise.all(slots.map(worker));
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = treeCpuNs(this.pid);
    const fe1 = process.cpuUsage(fe0);
    if (w === 'lookup') for (const s of slots) await s.forget();
    const sorted = lat.subarray(0, n).sort();
    const pct = (p: number): number => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(p * n))] * 1000);
    return {
      ops: n, requests: n, entries: 0, seconds, p50us: pct(0.5), p99us: pct(0.99),
      daemonCpuNs: cpu1 - cpu0, frontendCpuUs: fe1.user + fe1.system, kicks: NaN, posted: n,
      errors: errors - errorsBefore, firstError: errors > errorsBefore ? 'a reply was not a success' : '',
    };
  }

  async close(): Promise<void> {
    try {
      if (!this.fe.isDisconnected) {
        await this.client.release(this.t.nodeid, this.t.fh);
        await this.client.forget(this.t.nodeid, 1);
        await this.client.release(this.t.wnodeid, this.t.wfh);
        await this.client.forget(this.t.wnodeid, 1);
      }
    } catch { /* closing anyway */ }
    this.fe.close();
  }
}

let native: NativeBinding | undefined;

/** Connect to a daemon whose share holds data.bin and wdata.bin, INIT, LOOKUP and OPEN both. */
export async function openTsSession(socket: string, pid: number): Promise<DriverSession> {
  native ??= loadNative();
  const fe = await VhostUserFrontend.connect(native, socket, { ramSize: RAM_SIZE, queueSize: QUEUE_SIZE, connectTimeoutMs: 10_000, replyTimeoutMs: 30_000 });
  try {
    const client = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 30_000));
    const init = await client.init();
    if (init.error !== 0) throw new Error(`FUSE_INIT: ${init.error}`);
    const open = async (name: string): Promise<[bigint, bigint]> => {
      const lk = await client.lookup(1, name);
      if (!lk.entry) throw new Error(`LOOKUP ${name}: ${lk.error}`);
      const op = await client.open(lk.entry.nodeid, 0o2);
      if (op.fh === undefined) throw new Error(`OPEN ${name}: ${op.error}`);
      return [lk.entry.nodeid, op.fh];
    };
    const [nodeid, fh] = await open('data.bin');
    const [wnodeid, wfh] = await open('wdata.bin');
    return new TsSession(fe, client, { nodeid, fh, wnodeid, wfh, name: 'data.bin' }, pid);
  } catch (e) {
    fe.close();
    throw e;
  }
}
