// Fuzz target: the split-ring walk and what sits on it, as a hostile guest drives them.
//
// The input lays out guest RAM as 1-3 memory regions (contiguous or not in guest-physical space,
// mapped in small windows or whole), a ring of 1-256 descriptors, indirect tables (anywhere,
// unaligned, across region and window edges, nested, looping), avail entries and indexes, and
// then a sequence of device and guest actions. Two modes:
//   - queue: pop / popHead / chainAt / pushUsed / shouldNotify on a SplitQueue, each checked
//     against a reference walker written here from the virtio 1.2 spec's rules (2.7.4-2.7.10),
//     and ChainReader / ChainWriter cursors over every chain against a flat model of its bytes;
//   - runner: a QueueRunner (with or without an in-flight region) whose handler completes
//     chains now, later, twice or with a bad length; every head must reach the used ring at most
//     once per dispatch, never more than its writable length, and the in-flight region must say
//     exactly which requests are still with the handler.
// Any exception or error line of the runner (it would turn a handler's exception into one), any
// difference from the model, or a view outside guest RAM is a bug.

import * as assert from 'node:assert/strict';
import pino from 'pino';
import { FuzzInput } from '../lib/input';
import type { FuzzTarget } from '../lib/harness';
import { GuestMemory } from '../../../src/virtio/guest-memory';
import { SplitQueue, WalkedChain, MAX_INDIRECT_ENTRIES, type DescChain } from '../../../src/virtio/split-queue';
import { ChainReader, ChainWriter } from '../../../src/virtio/chain-io';
import { QueueRunner, type QueueRunnerNative } from '../../../src/virtio/queue-runner';
import { InflightRegion } from '../../../src/state/inflight';
import type { PollHandle } from '../../../src/native/binding';

const RAM = 0x10000;
const UA = 0x7f55_0000_0000;
const RING_AREA = 8192;           // [0, 8192): desc at 0, avail at 4096, used at 5120
const AVAIL_OFF = 4096, USED_OFF = 5120;
const NEXT = 1, WRITE = 2, INDIRECT = 4;
const MAX_CHAIN = 0xffffffff;

interface Region { gpa: number; size: number; bufOff: number }

const quiet = pino({ level: process.env.VFSD_FUZZ_TRACE ? 'trace' : 'silent' });
/** VFSD_FUZZ_TRACE=1: say what the scenario does (for reading a counterexample). */
const trace = (...a: unknown[]): void => { if (process.env.VFSD_FUZZ_TRACE) console.error('[split-ring]', ...a); };

/** Guest RAM and its regions, and the reference view of guest-physical addresses. */
class Layout {
  readonly buf = new ArrayBuffer(RAM);
  readonly u8 = new Uint8Array(this.buf);
  readonly dv = new DataView(this.buf);
  readonly regions: Region[] = [];
  readonly mem: GuestMemory;

  constructor(inp: FuzzInput) {
    const windowSize = inp.pick([4096, 8192, 2 ** 31]);
    this.mem = new GuestMemory(null, { windowSize });
    const n = inp.int(1, 3);
    const cuts = [0, inp.chance(64) ? RING_AREA : inp.int(RING_AREA, RAM - 64)];
    for (let i = 2; i < n; i++) cuts.push(inp.int(cuts[cuts.length - 1]! + 1, RAM - 1));
    cuts.push(RAM);
    const uniq = [...new Set(cuts)].sort((a, b) => a - b);
    let gpa = inp.pick([0, 0x1000, 2 ** 32 - 0x3000, 2 ** 40, 2 ** 53 - RAM - 0x4000]);
    for (let k = 0; k + 1 < uniq.length; k++) {
      const bufOff = uniq[k]!, size = uniq[k + 1]! - bufOff;
      this.regions.push({ gpa, size, bufOff });
      const rc = this.mem.addRegionBuffer({ gpa, size, uaddr: UA + bufOff, mmapOffset: bufOff }, this.buf);
      assert.equal(rc, 0, 'a valid region was refused');
      gpa += size + inp.pick([0, 0, 16, 4096]);
    }
  }

  gpaOf(bufOff: number): number {
    for (const r of this.regions) if (bufOff >= r.bufOff && bufOff < r.bufOff + r.size) return r.gpa + (bufOff - r.bufOff);
    return -1;
  }

  /** Buffer pieces of [gpa, gpa+len), or null if a byte is unmapped (the reference rule). */
  pieces(gpa: number, len: number): Array<[number, number]> | null {
    const out: Array<[number, number]> = [];
    while (len > 0) {
      const r = this.regions.find((x) => gpa >= x.gpa && gpa < x.gpa + x.size);
      if (!r) return null;
      const take = Math.min(len, r.gpa + r.size - gpa);
      out.push([r.bufOff + (gpa - r.gpa), take]);
      gpa += take;
      len -= take;
    }
    return out;
  }

  /** A guest-physical address the input chooses: mostly inside a region, near its edges. */
  addr(inp: FuzzInput, tables: number[]): number {
    switch (inp.int(0, 9)) {
      case 0: { const [lo, hi] = inp.u64e(); return hi * 2 ** 32 + lo; }
      case 1: case 2:
        if (tables.length > 0) return inp.pick(tables);
        return this.regions[0]!.gpa;
      default: {
        const r = inp.pick(this.regions);
        const off = inp.pick([0, r.size - inp.int(0, 64), inp.int(0, r.size), (inp.int(1, 15) * 4096) - inp.int(0, 32)]);
        return r.gpa + Math.max(0, off);
      }
    }
  }
}

/** One descriptor as the input chooses it. */
function writeDesc(L: Layout, inp: FuzzInput, at: number, n: number, tables: number[]): void {
  const addr = L.addr(inp, tables);
  const len = inp.pick([inp.int(0, 64), inp.int(0, 4096), 16 * inp.int(0, 24), inp.u32e(), inp.int(0, RAM)]);
  let flags = inp.pick([0, NEXT, WRITE, NEXT | WRITE, INDIRECT, INDIRECT | WRITE, INDIRECT | NEXT, inp.u16()]);
  if (inp.chance(16)) flags |= inp.u16() & 0xfff8;
  const next = inp.chance(230) ? inp.int(0, Math.max(0, n - 1)) : inp.u16();
  if (at < 0 || at + 16 > RAM) return;
  L.dv.setUint32(at, addr % 2 ** 32, true);
  L.dv.setUint32(at + 4, Math.floor(addr / 2 ** 32) >>> 0, true);
  L.dv.setUint32(at + 8, len >>> 0, true);
  L.dv.setUint16(at + 12, flags, true);
  L.dv.setUint16(at + 14, next, true);
}

type Walk = { ok: true; r: Array<[number, number]>; w: Array<[number, number]>; rlen: number; wlen: number } | { ok: false };

/** The reference walk (VIRTIO 1.2 2.7.5, 2.7.5.3), over buffer offsets. */
function refWalk(L: Layout, q: number, head: number): Walk {
  const maxIndirect = Math.max(q, MAX_INDIRECT_ENTRIES);
  let table: Uint8Array = L.u8.subarray(0, 16 * q);
  let n = q, visited = 0, inIndirect = false, sawWrite = false, rlen = 0, wlen = 0, i = head;
  const r: Array<[number, number]> = [], w: Array<[number, number]> = [];
  const bad: Walk = { ok: false };
  for (;;) {
    if (++visited > n) return bad;
    if (i >= n) return bad;
    const d = new DataView(table.buffer, table.byteOffset + 16 * i, 16);
    const lo = d.getUint32(0, true), hi = d.getUint32(4, true), len = d.getUint32(8, true);
    const flags = d.getUint16(12, true), next = d.getUint16(14, true);
    if (hi >= 0x200000) return bad;
    const addr = hi * 2 ** 32 + lo;
    if (flags & INDIRECT) {
      if (inIndirect || (flags & NEXT) || len === 0 || len % 16 !== 0 || len / 16 > maxIndirect) return bad;
      const p = L.pieces(addr, len);
      if (!p) return bad;
      const copy = new Uint8Array(len);
      let at = 0;
      for (const [o, l] of p) { copy.set(L.u8.subarray(o, o + l), at); at += l; }
      table = copy; n = len / 16; visited = 0; inIndirect = true; i = 0;
      continue;
    }
    if (flags & WRITE) sawWrite = true;
    else if (sawWrite) return bad;
    if (len > 0) {
      if (flags & WRITE) wlen += len; else rlen += len;
      if (rlen + wlen > MAX_CHAIN) return bad;
      const p = L.pieces(addr, len);
      if (!p) return bad;
      (flags & WRITE ? w : r).push(...p);
    }
    if (!(flags & NEXT)) break;
    i = next;
  }
  return { ok: true, r: merge(r), w: merge(w), rlen, wlen };
}

function merge(p: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [o, l] of p) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === o) last[1] += l; else out.push([o, l]);
  }
  return out;
}

/** A chain's segments as merged buffer runs; every view must lie in guest RAM. */
function runsOf(L: Layout, segs: Uint8Array[]): Array<[number, number]> {
  return merge(segs.map((s) => {
    assert.equal(s.buffer, L.buf, 'a segment is not a view of guest RAM');
    assert.ok(s.byteOffset + s.length <= RAM);
    return [s.byteOffset, s.length] as [number, number];
  }).filter(([, l]) => l > 0));
}

function checkChain(L: Layout, c: DescChain, want: Walk, what: string): void {
  assert.ok(want.ok, `${what}: the device accepted a chain the rules refuse (head ${c.head})`);
  assert.deepEqual(runsOf(L, c.readable), want.r, `${what}: readable segments of head ${c.head}`);
  assert.deepEqual(runsOf(L, c.writable), want.w, `${what}: writable segments of head ${c.head}`);
  assert.equal(c.readableLen, want.rlen);
  assert.equal(c.writableLen, want.wlen);
}

/** Cursor operations on a chain, against the chain's bytes read flat. */
function exerciseCursors(inp: FuzzInput, c: DescChain): void {
  const flat = (segs: Uint8Array[]): Uint8Array => Buffer.concat(segs.map((s) => Buffer.from(s.buffer, s.byteOffset, s.length)));
  const reader = new ChainReader();
  const writer = new ChainWriter();
  if (c instanceof WalkedChain && inp.bool()) {
    reader.resetRanges(c.segs, 0, c.nReadable);
    writer.resetRanges(c.segs, c.nReadable, c.segs.length / 3);
  } else {
    reader.reset(c.readable);
    writer.reset(c.writable);
  }
  let rp = 0, wp = 0;
  const rTotal = c.readableLen, wTotal = c.writableLen;
  let reserved: [number, number] | null = null;
  const iov = new Float64Array(2 * inp.int(1, 8));
  const steps = inp.int(0, 12);
  for (let s = 0; s < steps; s++) {
    const n = inp.pick([0, 1, inp.int(0, 64), inp.int(0, 4096), rTotal - rp, wTotal - wp, -1, 1.5, inp.u32e()]);
    const fits = Number.isInteger(n) && n >= 0;
    const R = flat(c.readable);
    switch (inp.int(0, 8)) {
      case 0: {
        const b = reader.bytes(n);
        if (!fits || n > rTotal - rp) { assert.equal(b, null); break; }
        assert.deepEqual(Buffer.from(b!), Buffer.from(R.subarray(rp, rp + n)));
        rp += n;
        break;
      }
      case 1: {
        const at = inp.int(0, 8), dst = new Uint8Array(inp.int(0, 128));
        const ok = reader.copyTo(dst, at, n);
        const should = fits && n <= rTotal - rp && at + n <= dst.length;
        assert.equal(ok, should, 'copyTo');
        if (ok) { assert.deepEqual(Buffer.from(dst.subarray(at, at + n)), Buffer.from(R.subarray(rp, rp + n))); rp += n; }
        break;
      }
      case 2: {
        const v = reader.views(n);
        if (!fits || n > rTotal - rp) { assert.equal(v, null); break; }
        assert.deepEqual(flat(v!), Buffer.from(R.subarray(rp, rp + n)));
        rp += n;
        break;
      }
      case 3: {
        const cnt = reader.ranges(n, iov);
        if (cnt < 0) { assert.equal(reader.remaining, rTotal - rp, 'ranges() refused but moved'); break; }
        assert.ok(fits && n <= rTotal - rp);
        const parts: Uint8Array[] = [];
        for (let k = 0; k < cnt; k++) parts.push(reader.rangeWin.subarray(iov[2 * k]!, iov[2 * k]! + iov[2 * k + 1]!));
        assert.deepEqual(flat(parts), Buffer.from(R.subarray(rp, rp + n)));
        rp += n;
        break;
      }
      case 4: {
        const ok = reader.skip(n);
        assert.equal(ok, fits && n <= rTotal - rp);
        if (ok) rp += n;
        break;
      }
      case 5: {
        const src = inp.bytes(Math.min(Math.max(0, n | 0), 256));
        const before = wp;
        const ok = writer.write(src);
        assert.equal(ok, src.length <= wTotal - wp, 'write');
        if (ok) {
          wp += src.length;
          assert.deepEqual(Buffer.from(flat(c.writable).subarray(before, wp)), Buffer.from(src));
        }
        break;
      }
      case 6: {
        const ok = writer.reserve(n);
        assert.equal(ok, fits && n <= wTotal - wp);
        if (ok) { reserved = [wp, n]; wp += n; }
        break;
      }
      case 7: {
        const src = inp.bytes(inp.int(0, 80));
        const ok = writer.fillReserved(src);
        assert.equal(ok, reserved !== null && src.length >= reserved[1], 'fillReserved');
        if (ok && reserved) assert.deepEqual(Buffer.from(flat(c.writable).subarray(reserved[0], reserved[0] + reserved[1])), Buffer.from(src.subarray(0, reserved[1])));
        break;
      }
      default: {
        const cnt = writer.ranges(n, iov);
        if (cnt >= 0) wp += n;
        break;
      }
    }
    assert.equal(reader.remaining, rTotal - rp, 'reader position');
    assert.equal(writer.remaining, wTotal - wp, 'writer position');
    assert.equal(writer.written, wp, 'writer.written');
  }
}

/** The ring as the guest writes it. */
class Ring {
  constructor(readonly L: Layout, readonly q: number, readonly eventIdx: boolean) {}
  get availIdx(): number { return this.L.dv.getUint16(AVAIL_OFF + 2, true); }
  set availIdx(v: number) { this.L.dv.setUint16(AVAIL_OFF + 2, v & 0xffff, true); }
  availEntry(i: number): number { return this.L.dv.getUint16(AVAIL_OFF + 4 + 2 * (i & (this.q - 1)), true); }
  setAvailEntry(i: number, h: number): void { this.L.dv.setUint16(AVAIL_OFF + 4 + 2 * (i & (this.q - 1)), h, true); }
  get availFlags(): number { return this.L.dv.getUint16(AVAIL_OFF, true); }
  get usedEvent(): number { return this.L.dv.getUint16(AVAIL_OFF + 4 + 2 * this.q, true); }
  get usedIdx(): number { return this.L.dv.getUint16(USED_OFF + 2, true); }
  usedElem(i: number): [number, number] {
    const o = USED_OFF + 4 + 8 * (i & (this.q - 1));
    return [this.L.dv.getUint32(o, true), this.L.dv.getUint32(o + 4, true)];
  }
  get availEvent(): number { return this.L.dv.getUint16(USED_OFF + 4 + 8 * this.q, true); }
}

/** Build RAM, ring, tables and avail state from the input. */
function build(inp: FuzzInput): { L: Layout; ring: Ring; q: number; eventIdx: boolean; lastAvail: number } {
  const L = new Layout(inp);
  const q = 2 ** inp.int(0, 8);
  const eventIdx = inp.bool();
  // Indirect tables somewhere in the data area (or over the ring itself).
  const tables: number[] = [];
  const nt = inp.int(0, 4);
  const tableAt: number[] = [];
  for (let t = 0; t < nt; t++) {
    const off = inp.pick([inp.int(RING_AREA, RAM - 16) & ~15, inp.int(RING_AREA, RAM - 16), ...L.regions.map((r) => r.bufOff - 16 * inp.int(0, 3))]);
    const g = L.gpaOf(Math.max(0, off));
    if (g >= 0) { tables.push(g); tableAt.push(Math.max(0, off)); }
  }
  for (let i = 0; i < q; i++) writeDesc(L, inp, 16 * i, q, tables);
  for (const at of tableAt) {
    const entries = inp.int(1, 24);
    for (let e = 0; e < entries; e++) writeDesc(L, inp, at + 16 * e, entries, tables);
  }
  const lastAvail = inp.chance(200) ? 0 : inp.u16();
  const ring = new Ring(L, q, eventIdx);
  L.dv.setUint16(AVAIL_OFF, inp.chance(200) ? 0 : inp.u16(), true);
  for (let i = 0; i < q; i++) ring.setAvailEntry(i, inp.chance(240) ? inp.int(0, q - 1) : inp.u16());
  ring.availIdx = lastAvail + inp.pick([0, 1, inp.int(0, q), inp.u16()]);
  L.dv.setUint16(AVAIL_OFF + 4 + 2 * q, inp.u16(), true); // used_event
  L.dv.setUint16(USED_OFF + 2, inp.chance(200) ? 0 : inp.u16(), true); // used.idx the device resumes from
  return { L, ring, q, eventIdx, lastAvail };
}

function makeQueue(L: Layout, q: number, eventIdx: boolean, lastAvail: number): SplitQueue {
  return new SplitQueue(L.mem, {
    size: q, descVa: UA, availVa: UA + AVAIL_OFF, usedVa: UA + USED_OFF, lastAvail, eventIdx, log: quiet,
  });
}

/** The guest changes its side of the ring between device actions. */
function guestAct(inp: FuzzInput, s: { L: Layout; ring: Ring; q: number }): void {
  switch (inp.int(0, 3)) {
    case 0: s.ring.availIdx = s.ring.availIdx + inp.int(0, s.q + 1); break;
    case 1: s.ring.setAvailEntry(inp.u16(), inp.chance(230) ? inp.int(0, s.q - 1) : inp.u16()); break;
    case 2: writeDesc(s.L, inp, 16 * inp.int(0, s.q - 1), s.q, []); break;
    default: s.ring.availIdx = inp.u16(); break;
  }
}

/** queue mode: SplitQueue against the reference, step by step. */
function runQueue(inp: FuzzInput): void {
  const { L, ring, q, eventIdx, lastAvail } = build(inp);
  const queue = makeQueue(L, q, eventIdx, lastAvail);
  // Reference state (pop()'s avail-index rules, 2.7.6; used ring, 2.7.8; notification, 2.7.10).
  let last = lastAvail, shadow = lastAvail, used = ring.usedIdx, signalled = used, signalledValid = false;
  if (eventIdx) assert.equal(ring.availEvent, last, 'avail_event at start');
  const refNextHead = (): number => {
    for (;;) {
      if (last === shadow) {
        const idx = ring.availIdx, pending = (idx - last) & 0xffff;
        if (pending === 0 || pending > q) return -1;
        shadow = idx;
      }
      const head = ring.availEntry(last);
      last = (last + 1) & 0xffff;
      if (head < q) return head;
    }
  };
  const push = (head: number, len: number): void => {
    queue.pushUsed(head, len);
    assert.deepEqual(ring.usedElem(used), [head, len], 'used element');
    used = (used + 1) & 0xffff;
    assert.equal(ring.usedIdx, used, 'used.idx');
  };
  const popped: DescChain[] = [];
  const steps = inp.int(1, 40);
  trace('queue size', q, 'eventIdx', eventIdx, 'lastAvail', lastAvail, 'avail.idx', ring.availIdx, 'used.idx', used);
  for (let s = 0; s < steps && !inp.done; s++) {
    const op = inp.int(0, 7);
    trace('step', s, 'op', op, 'avail.idx', ring.availIdx, 'last', last, 'used', used);
    switch (op) {
      case 0: case 1: {
        // pop(): invalid chains are pushed with len 0 and skipped.
        let want: DescChain | null = null;
        const c = queue.pop();
        // Invalid chains pop() pushed (len 0): a hostile driver may post more than the ring holds,
        // so only the last q of them are still in the used ring to compare.
        const dropped: number[] = [];
        const checkDropped = (): void => {
          const from = Math.max(0, dropped.length - q);
          for (let k = from; k < dropped.length; k++) {
            assert.deepEqual(ring.usedElem(used + k), [dropped[k], 0], 'an invalid chain is returned with len 0');
          }
          used = (used + dropped.length) & 0xffff;
        };
        for (;;) {
          const head = refNextHead();
          if (head < 0) { checkDropped(); assert.equal(c, null, 'pop() returned a chain the driver did not make available'); break; }
          const w = refWalk(L, q, head);
          trace('pop: reference takes head', head, w.ok ? 'valid' : 'invalid', 'device returned', c?.head);
          if (!w.ok) {
            dropped.push(head);
            continue;
          }
          checkDropped();
          assert.ok(c !== null, `pop() dropped valid head ${head}`);
          assert.equal(c.head, head);
          checkChain(L, c, w, 'pop');
          want = c;
          break;
        }
        assert.equal(queue.lastAvail, last, 'lastAvail');
        assert.equal(queue.usedIndex, used, 'used index after pop');
        assert.equal(ring.usedIdx, used);
        if (eventIdx) assert.equal(ring.availEvent, last, 'avail_event follows lastAvail');
        if (want) { popped.push(want); exerciseCursors(inp, want); }
        break;
      }
      case 2: {
        const h = queue.popHead();
        assert.equal(h, refNextHead(), 'popHead');
        assert.equal(queue.lastAvail, last);
        if (h >= 0) {
          const w = refWalk(L, q, h);
          const c = queue.chainAt(h);
          if (c === null) assert.ok(!w.ok, `chainAt refused valid head ${h}`);
          else { checkChain(L, c, w, 'chainAt'); popped.push(c); exerciseCursors(inp, c); }
        }
        break;
      }
      case 3: {
        const h = inp.chance(200) ? inp.int(0, q - 1) : inp.pick([q, -1, 1.5, 65535, NaN]);
        const c = queue.chainAt(h);
        if (!(Number.isInteger(h) && h >= 0 && h < q)) { assert.equal(c, null); break; }
        const w = refWalk(L, q, h);
        if (c === null) assert.ok(!w.ok, `chainAt refused valid head ${h}`);
        else checkChain(L, c, w, 'chainAt');
        break;
      }
      case 4: {
        const c = popped.shift();
        if (c) push(c.head, inp.int(0, Math.min(c.writableLen, 0xffffffff)));
        break;
      }
      case 5: {
        const got = queue.shouldNotify();
        let want = false;
        const newIdx = used, old = signalled;
        if (newIdx !== old) {
          const valid: boolean = signalledValid;
          signalled = newIdx; signalledValid = true;
          if (!eventIdx) want = (ring.availFlags & 1) === 0;
          else want = !valid || ((newIdx - ring.usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
        }
        assert.equal(got, want, 'shouldNotify');
        break;
      }
      default:
        guestAct(inp, { L, ring, q });
    }
  }
}

class FakeNative implements QueueRunnerNative {
  cb: ((status: number, events: number) => void) | null = null;
  calls = 0;
  pollStart(_fd: number, _ev: number, cb: (status: number, events: number) => void): PollHandle { this.cb = cb; return {} as PollHandle; }
  pollStop(): void { this.cb = null; }
  eventfdRead(): number { return 1; }
  eventfdWrite(): number { this.calls++; return 0; }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** runner mode: QueueRunner with a handler the input steers. */
async function runRunner(inp: FuzzInput): Promise<void> {
  const { L, ring, q, eventIdx, lastAvail } = build(inp);
  const queue = makeQueue(L, q, eventIdx, lastAvail);
  const native = new FakeNative();
  const withInflight = inp.bool();
  const inflight = withInflight ? new InflightRegion(new ArrayBuffer(InflightRegion.sizeFor(q))) : undefined;
  inflight?.format(q, queue.usedIndex);
  const pending: Array<{ head: number; wlen: number; complete: (n: number) => void }> = [];
  const withHandler = new Set<number>();
  let dispatched = 0;
  let pushedByHandler = 0;
  // The runner turns an exception on its path (a handler's, the checks above included, or the
  // walk's) into an error line and goes on: those lines are the failures here.
  const failures: Array<{ msg: string; err?: { message?: string } }> = [];
  const log = pino({ level: 'error' }, { write: (line: string) => { failures.push(JSON.parse(line) as { msg: string }); } });
  const noFailures = (): void => {
    const bad = failures.filter((f) => /threw|unusable/.test(f.msg));
    if (bad.length > 0) throw new Error(`${bad[0]!.msg}: ${bad[0]!.err?.message ?? ''}`);
  };
  const runner = new QueueRunner({
    native, mem: L.mem, index: 1, queue, kickFd: 10, callFd: inp.bool() ? 11 : -1, log,
    batch: inp.int(1, 2 * q), ...(inflight ? { inflight } : {}),
    handler: (chain, complete) => {
      assert.ok(!withHandler.has(chain.head), `head ${chain.head} handed out twice at once`);
      const w = refWalk(L, q, chain.head);
      checkChain(L, chain, w, 'runner');
      withHandler.add(chain.head);
      dispatched++;
      const how = inp.int(1, 5);
      const len = inp.pick([0, chain.writableLen, inp.int(0, chain.writableLen), chain.writableLen + 1, -1, NaN, 2 ** 32]);
      const done = (n: number): void => {
        if (withHandler.delete(chain.head)) pushedByHandler++;
        complete(n);
      };
      if (how <= 2) done(len);
      else pending.push({ head: chain.head, wlen: chain.writableLen, complete: done });
      if (how === 2) done(len); // a second completion must be ignored
    },
  });
  runner.start();
  const steps = inp.int(1, 24);
  for (let s = 0; s < steps && !inp.done; s++) {
    switch (inp.int(0, 4)) {
      case 0: native.cb?.(0, 1); break;
      case 1: {
        const p = pending.splice(inp.int(0, Math.max(0, pending.length - 1)), 1)[0];
        p?.complete(inp.pick([0, p.wlen, inp.int(0, p.wlen), p.wlen + 7]));
        break;
      }
      case 2: await tick(); break;
      case 3: runner.kick(); break;
      default: guestAct(inp, { L, ring, q });
    }
    assert.equal(runner.inFlight, withHandler.size, 'the runner and the handler disagree on what is outstanding');
    noFailures();
  }
  const stopped = runner.stop();
  for (const p of pending.splice(0)) p.complete(p.wlen);
  const base = await stopped;
  noFailures();
  assert.equal(base, queue.lastAvail);
  assert.equal(runner.inFlight, 0, 'stop() resolved with requests outstanding');
  assert.equal(withHandler.size, 0);
  assert.ok(pushedByHandler <= dispatched);
  if (inflight) {
    // Everything completed: nothing is left to re-run, and the region agrees with the ring.
    const rec = inflight.recover(ring.usedIdx);
    assert.deepEqual(rec.resubmit, [], 'in-flight region lists completed requests');
    assert.equal(rec.usedGap, 0, 'in-flight used_idx out of step with the ring');
  }
}

export const splitRingTarget: FuzzTarget = {
  name: 'split-ring',
  about: 'split virtqueue walk (indirect, EVENT_IDX, wrap-around, region/window edges), chain cursors, queue runner with in-flight tracking',
  maxLength: 4096,
  files: ['src/virtio/split-queue.ts', 'src/virtio/queue-runner.ts', 'src/virtio/chain-io.ts', 'src/virtio/guest-memory.ts', 'src/state/inflight.ts'],
  async run(data) {
    const inp = new FuzzInput(data);
    if (inp.u8() < 160) runQueue(inp);
    else await runRunner(inp);
  },
};
