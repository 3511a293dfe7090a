// The worker's counters, in a memfd the keeper keeps across workers (and parks with the rest of
// its state): requests, errors and a latency histogram per FUSE opcode, bytes read and written,
// and gauges of what the worker holds. The serving worker writes it; the keeper's API reads it
// (keeper/api.ts) without a round trip, so a busy or wedged worker never slows a scrape, and
// the counts run on across worker restarts and upgrades.
//
// Layout: Float64 words (exact integers up to 2^53), little-endian as the host:
//   [0, HEADER)                       magic, version, opcode slots, buckets
//   [GLOBAL, GLOBAL + 8)              G: bytes read, bytes written, then gauges set about once
//                                     a second: inodes, handles, requests in flight
//   [OPS + slot * STRIDE, ...)        per opcode slot: requests, errors, latency sum (s),
//                                     then one count per LATENCY_BUCKETS bound (not cumulative)
// Opcodes past OPCODE_SLOTS - 1 share the last slot. The worker is not trusted: the keeper
// takes any word that is not a finite number >= 0 as 0, and a region of another magic or
// version as empty. Two workers may write at once for a moment (an upgrade's hand-over), so a
// count may then miss an increment: these are statistics, never decisions.

import type { NativeBinding } from '../native/binding';
import { sealedMemfd } from './memfd';

export const COUNTERS_MAGIC = 0x434e5452; // "CNTR"
export const COUNTERS_VERSION = 1;
/** Upper bounds of the latency buckets, seconds (the +Inf bucket is the request count). */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5] as const;
export const OPCODE_SLOTS = 64;
const HEADER = 8;
const GLOBAL = HEADER;
export const G = { bytesRead: 0, bytesWritten: 1, inodes: 2, handles: 3, inflight: 4 } as const;
const OPS = GLOBAL + 8;
const STRIDE = 3 + LATENCY_BUCKETS.length;
/** Per-slot word offsets. */
const S = { requests: 0, errors: 1, latencySum: 2, buckets: 3 } as const;
export const COUNTERS_BYTES = (OPS + OPCODE_SLOTS * STRIDE) * 8;

/** A fresh region for the keeper to keep (fd or -errno), sealed at its size. */
export function countersMemfd(native: NativeBinding): number {
  return sealedMemfd(native, 'vfsd-counters', COUNTERS_BYTES);
}

function map(native: NativeBinding, fd: number): Float64Array {
  const m = native.mmap(fd, 0, COUNTERS_BYTES);
  if (typeof m === 'number') throw new Error(`mmap of vfsd-counters failed: errno ${-m}`);
  return new Float64Array(m, 0, COUNTERS_BYTES / 8);
}

/** The worker's side: counts as requests finish. */
export class CounterWriter {
  private readonly w: Float64Array;

  constructor(native: NativeBinding, fd: number) {
    this.w = map(native, fd);
    const w = this.w;
    if (w[0] !== COUNTERS_MAGIC || w[1] !== COUNTERS_VERSION) {
      w.fill(0);
      w[1] = COUNTERS_VERSION;
      w[2] = OPCODE_SLOTS;
      w[3] = LATENCY_BUCKETS.length;
      w[0] = COUNTERS_MAGIC;
    }
  }

  /** A request of opcode finished after seconds; error: it was answered with an errno. */
  request(opcode: number, seconds: number, error: boolean): void {
    const w = this.w;
    const base = OPS + Math.min(opcode >>> 0, OPCODE_SLOTS - 1) * STRIDE;
    w[base + S.requests]!++;
    if (error) w[base + S.errors]!++;
    w[base + S.latencySum]! += seconds;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= LATENCY_BUCKETS[i]!) {
        w[base + S.buckets + i]!++;
        return;
      }
    }
  }

  add(which: 'bytesRead' | 'bytesWritten', n: number): void {
    this.w[GLOBAL + G[which]]! += n;
  }

  gauges(g: { inodes: number; handles: number; inflight: number }): void {
    const w = this.w;
    w[GLOBAL + G.inodes] = g.inodes;
    w[GLOBAL + G.handles] = g.handles;
    w[GLOBAL + G.inflight] = g.inflight;
  }
}

export interface OpCounts {
  opcode: number;
  requests: number;
  errors: number;
  latencySum: number;
  /** Cumulative counts per LATENCY_BUCKETS bound (Prometheus histogram buckets). */
  buckets: number[];
}

export interface CountersSnapshot {
  bytesRead: number; bytesWritten: number;
  inodes: number; handles: number; inflight: number;
  /** Opcodes that have seen a request; the last slot stands for every opcode past it. */
  ops: OpCounts[];
}

/** The keeper's side: reads what the worker wrote, trusting none of it. */
export class CounterReader {
  private readonly w: Float64Array;

  constructor(native: NativeBinding, fd: number) {
    this.w = map(native, fd);
  }

  read(): CountersSnapshot | null {
    return readCounters(this.w);
  }
}

/** What a counters region's words say (also check-state's reader, on a copy), trusting none of it. */
export function readCounters(w: Float64Array): CountersSnapshot | null {
  if (w.length < COUNTERS_BYTES / 8 || w[0] !== COUNTERS_MAGIC || w[1] !== COUNTERS_VERSION) return null;
  const v = (i: number): number => {
    const x = w[i]!;
    return Number.isFinite(x) && x >= 0 ? x : 0;
  };
  const ops: OpCounts[] = [];
  for (let slot = 0; slot < OPCODE_SLOTS; slot++) {
    const base = OPS + slot * STRIDE;
    const requests = v(base + S.requests);
    if (requests === 0) continue;
    let sum = 0;
    const buckets = LATENCY_BUCKETS.map((_, i) => (sum += v(base + S.buckets + i)));
    ops.push({ opcode: slot, requests, errors: v(base + S.errors), latencySum: v(base + S.latencySum), buckets });
  }
  const g = (k: keyof typeof G): number => v(GLOBAL + G[k]);
  return {
    bytesRead: g('bytesRead'), bytesWritten: g('bytesWritten'),
    inodes: g('inodes'), handles: g('handles'), inflight: g('inflight'), ops,
  };
}
