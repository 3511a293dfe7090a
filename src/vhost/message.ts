// vhost-user wire vocabulary: request codes, feature bits, the message header and the payload codecs.
// Pure: no I/O, no state. Spec: QEMU docs/interop/vhost-user.rst ("Message Specification",
// "Front-end message types"). All fields are in the machine's native byte order.
//
// u64 fields are decoded without BigInt, as two u32 halves, and rejected when >= 2^53 so that every
// value handed to the rest of the daemon is an exact JS number (numbers, not bigint, on the hot path).

import * as os from 'node:os';

const LE = os.endianness() === 'LE';

/** Front-end → back-end request codes, with the spec's names so that a grep against the spec works. */
export const Req = {
  VHOST_USER_GET_FEATURES: 1,
  VHOST_USER_SET_FEATURES: 2,
  VHOST_USER_SET_OWNER: 3,
  VHOST_USER_RESET_OWNER: 4,
  VHOST_USER_SET_MEM_TABLE: 5,
  VHOST_USER_SET_LOG_BASE: 6,
  VHOST_USER_SET_LOG_FD: 7,
  VHOST_USER_SET_VRING_NUM: 8,
  VHOST_USER_SET_VRING_ADDR: 9,
  VHOST_USER_SET_VRING_BASE: 10,
  VHOST_USER_GET_VRING_BASE: 11,
  VHOST_USER_SET_VRING_KICK: 12,
  VHOST_USER_SET_VRING_CALL: 13,
  VHOST_USER_SET_VRING_ERR: 14,
  VHOST_USER_GET_PROTOCOL_FEATURES: 15,
  VHOST_USER_SET_PROTOCOL_FEATURES: 16,
  VHOST_USER_GET_QUEUE_NUM: 17,
  VHOST_USER_SET_VRING_ENABLE: 18,
  VHOST_USER_SEND_RARP: 19,
  VHOST_USER_NET_SET_MTU: 20,
  /** Called SET_SLAVE_REQ_FD before QEMU 8.1. */
  VHOST_USER_SET_BACKEND_REQ_FD: 21,
  VHOST_USER_IOTLB_MSG: 22,
  VHOST_USER_SET_VRING_ENDIAN: 23,
  VHOST_USER_GET_CONFIG: 24,
  VHOST_USER_SET_CONFIG: 25,
  VHOST_USER_CREATE_CRYPTO_SESSION: 26,
  VHOST_USER_CLOSE_CRYPTO_SESSION: 27,
  VHOST_USER_POSTCOPY_ADVISE: 28,
  VHOST_USER_POSTCOPY_LISTEN: 29,
  VHOST_USER_POSTCOPY_END: 30,
  VHOST_USER_GET_INFLIGHT_FD: 31,
  VHOST_USER_SET_INFLIGHT_FD: 32,
  VHOST_USER_GPU_SET_SOCKET: 33,
  VHOST_USER_RESET_DEVICE: 34,
  VHOST_USER_VRING_KICK: 35,
  VHOST_USER_GET_MAX_MEM_SLOTS: 36,
  VHOST_USER_ADD_MEM_REG: 37,
  VHOST_USER_REM_MEM_REG: 38,
  VHOST_USER_SET_STATUS: 39,
  VHOST_USER_GET_STATUS: 40,
  VHOST_USER_GET_SHARED_OBJECT: 41,
  VHOST_USER_SET_DEVICE_STATE_FD: 42,
  VHOST_USER_CHECK_DEVICE_STATE: 43,
} as const;
export type RequestCode = (typeof Req)[keyof typeof Req];

/** Back-end → front-end request codes (sent on the SET_BACKEND_REQ_FD channel; unused so far). */
export const BackendReq = {
  VHOST_USER_BACKEND_IOTLB_MSG: 1,
  VHOST_USER_BACKEND_CONFIG_CHANGE_MSG: 2,
  VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG: 3,
  VHOST_USER_BACKEND_VRING_CALL: 4,
  VHOST_USER_BACKEND_VRING_ERR: 5,
  VHOST_USER_BACKEND_SHARED_OBJECT_ADD: 6,
  VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE: 7,
  VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP: 8,
} as const;

const REQUEST_NAMES = new Map<number, string>(Object.entries(Req).map(([name, code]) => [code, name]));

/** "VHOST_USER_SET_MEM_TABLE", or "UNKNOWN(99)" for a code the spec does not define. */
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `UNKNOWN(${code})`;
}

/**
 * Requests whose reply is part of the request itself (spec "Communication" plus the later GET_*),
 * i.e. the front-end waits for a reply whether or not NEED_REPLY is set.
 * SET_LOG_BASE only replies with LOG_SHMFD, which we never offer, so it is not listed.
 */
export const REQUESTS_WITH_REPLY: ReadonlySet<number> = new Set<number>([
  Req.VHOST_USER_GET_FEATURES,
  Req.VHOST_USER_GET_PROTOCOL_FEATURES,
  Req.VHOST_USER_GET_VRING_BASE,
  Req.VHOST_USER_GET_QUEUE_NUM,
  Req.VHOST_USER_IOTLB_MSG,
  Req.VHOST_USER_GET_CONFIG,
  Req.VHOST_USER_CREATE_CRYPTO_SESSION,
  Req.VHOST_USER_POSTCOPY_ADVISE,
  Req.VHOST_USER_POSTCOPY_END,
  Req.VHOST_USER_GET_INFLIGHT_FD,
  Req.VHOST_USER_GET_MAX_MEM_SLOTS,
  Req.VHOST_USER_GET_STATUS,
  Req.VHOST_USER_GET_SHARED_OBJECT,
  Req.VHOST_USER_SET_DEVICE_STATE_FD,
  Req.VHOST_USER_CHECK_DEVICE_STATE,
]);

// ---- feature bits ----

/** Virtio device feature bit numbers (GET_FEATURES / SET_FEATURES). */
export const VirtioFeature = {
  VIRTIO_F_NOTIFY_ON_EMPTY: 24,
  VIRTIO_RING_F_INDIRECT_DESC: 28,
  VIRTIO_RING_F_EVENT_IDX: 29,
  /** Reused by vhost-user: "the back-end supports GET/SET_PROTOCOL_FEATURES". */
  VHOST_USER_F_PROTOCOL_FEATURES: 30,
  VIRTIO_F_VERSION_1: 32,
  VIRTIO_F_IOMMU_PLATFORM: 33,
  VIRTIO_F_RING_PACKED: 34,
  VIRTIO_F_RING_RESET: 40,
  /** Dirty logging for migration (vhost's own bit). */
  VHOST_F_LOG_ALL: 26,
} as const;

/** Protocol feature bit numbers (GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  VHOST_USER_PROTOCOL_F_MQ: 0,
  VHOST_USER_PROTOCOL_F_LOG_SHMFD: 1,
  VHOST_USER_PROTOCOL_F_RARP: 2,
  VHOST_USER_PROTOCOL_F_REPLY_ACK: 3,
  VHOST_USER_PROTOCOL_F_NET_MTU: 4,
  /** Called SLAVE_REQ before QEMU 8.1. */
  VHOST_USER_PROTOCOL_F_BACKEND_REQ: 5,
  VHOST_USER_PROTOCOL_F_CROSS_ENDIAN: 6,
  VHOST_USER_PROTOCOL_F_CRYPTO_SESSION: 7,
  VHOST_USER_PROTOCOL_F_PAGEFAULT: 8,
  VHOST_USER_PROTOCOL_F_CONFIG: 9,
  /** Called SLAVE_SEND_FD before QEMU 8.1. */
  VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD: 10,
  VHOST_USER_PROTOCOL_F_HOST_NOTIFIER: 11,
  VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: 12,
  VHOST_USER_PROTOCOL_F_RESET_DEVICE: 13,
  VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS: 14,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS: 15,
  VHOST_USER_PROTOCOL_F_STATUS: 16,
  VHOST_USER_PROTOCOL_F_XEN_MMAP: 17,
  VHOST_USER_PROTOCOL_F_SHARED_OBJECT: 18,
  VHOST_USER_PROTOCOL_F_DEVICE_STATE: 19,
} as const;

// Feature masks are plain numbers. Every bit we offer is below 53, and a u64 with a higher bit is
// rejected when decoded, so a mask always fits; bitwise operators (32-bit in JS) are not usable on
// them, hence these helpers over the two 32-bit halves.
const TWO32 = 2 ** 32;

/** The mask with exactly `bit` set. */
export function bit(n: number): number {
  return 2 ** n;
}
/** Mask with all the given bits set. */
export function bits(...ns: number[]): number {
  return ns.reduce((m, n) => maskOr(m, bit(n)), 0);
}
export function hasBit(mask: number, n: number): boolean {
  return Math.floor(mask / 2 ** n) % 2 === 1;
}
export function maskAnd(a: number, b: number): number {
  return ((Math.floor(a / TWO32) & Math.floor(b / TWO32)) >>> 0) * TWO32 + (((a % TWO32) & (b % TWO32)) >>> 0);
}
export function maskOr(a: number, b: number): number {
  return ((Math.floor(a / TWO32) | Math.floor(b / TWO32)) >>> 0) * TWO32 + (((a % TWO32) | (b % TWO32)) >>> 0);
}
/** a without the bits of b. */
export function maskClear(a: number, b: number): number {
  return ((Math.floor(a / TWO32) & ~Math.floor(b / TWO32)) >>> 0) * TWO32 + (((a % TWO32) & ~(b % TWO32)) >>> 0);
}
/** True when every bit of a is also in b. */
export function isSubset(a: number, b: number): boolean {
  return maskClear(a, b) === 0;
}

// ---- header ----

export const HEADER_SIZE = 12;
/** Largest payload we accept. QEMU's largest (VhostUserConfig) is 268 bytes. */
export const MAX_PAYLOAD = 4096;
/** Most fds one message may carry (SET_MEM_TABLE: one per region, at most 8). */
export const MAX_FDS = 8;

export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_REPLY_MASK = 0x1 << 2;
export const VHOST_USER_NEED_REPLY_MASK = 0x1 << 3;
/** Flags of every back-end reply; QEMU rejects any other value. */
export const REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;

/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 are the ring index, bit 8 says "no fd attached". */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD_MASK = 0x1 << 8;

/** SET_VRING_ADDR flags: log used-ring writes (dirty logging). */
export const VHOST_VRING_F_LOG = 0x1;

/** Payload sizes (bytes) of the fixed-size payload kinds. */
export const PayloadSize = {
  u64: 8,
  vringState: 8,
  vringAddr: 40,
  memRegion: 32,
  /** Memory table header: u32 nregions + u32 padding, followed by nregions × 32. */
  memTableHeader: 8,
  /** ADD_MEM_REG / REM_MEM_REG: u64 padding + one region. */
  singleMemRegion: 40,
  log: 16,
} as const;

/** At most this many regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MEM_TABLE_MAX_REGIONS = 8;

export interface MessageHeader {
  request: number;
  flags: number;
  /** Payload size in bytes as sent (not validated here). */
  size: number;
}

export type VhostUserErrorKind =
  /** Payload size does not match the request's payload kind. */
  | 'bad-size'
  /** A field is out of range (index, alignment, u64 >= 2^53, ...). */
  | 'bad-value'
  /** The header itself is malformed (version, REPLY bit, oversized payload). */
  | 'bad-header'
  /** Valid request that this back-end does not implement or did not negotiate. */
  | 'unsupported'
  /** Valid request at the wrong time (ring running, memory missing, ...). */
  | 'bad-state'
  /** A syscall failed. */
  | 'io';

/** The one error type of the vhost-user control plane. `errno` is what a NEED_REPLY ack carries. */
export class VhostUserError extends Error {
  readonly kind: VhostUserErrorKind;
  readonly errno: number;
  constructor(kind: VhostUserErrorKind, message: string, errno: number = os.constants.errno.EINVAL) {
    super(message);
    this.name = 'VhostUserError';
    this.kind = kind;
    this.errno = errno;
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function decodeHeader(b: Uint8Array): MessageHeader {
  if (b.length < HEADER_SIZE) throw new VhostUserError('bad-header', `header needs ${HEADER_SIZE} bytes, got ${b.length}`);
  const v = view(b);
  return { request: v.getUint32(0, LE), flags: v.getUint32(4, LE), size: v.getUint32(8, LE) };
}

export function encodeHeader(h: MessageHeader, out: Uint8Array = new Uint8Array(HEADER_SIZE)): Uint8Array {
  const v = view(out);
  v.setUint32(0, h.request, LE);
  v.setUint32(4, h.flags, LE);
  v.setUint32(8, h.size, LE);
  return out;
}

/** Header + payload in one buffer, as it goes on the wire. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  encodeHeader({ request, flags, size: payload.length }, out);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** Syntax of a request header from the front-end: version 1, no REPLY bit, payload within bounds. */
export function checkRequestHeader(h: MessageHeader): void {
  if ((h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    throw new VhostUserError('bad-header', `unsupported protocol version ${h.flags & VHOST_USER_VERSION_MASK}`);
  }
  if (h.flags & VHOST_USER_REPLY_MASK) throw new VhostUserError('bad-header', 'REPLY flag set on a request');
  if (h.size > MAX_PAYLOAD) throw new VhostUserError('bad-header', `payload of ${h.size} bytes exceeds ${MAX_PAYLOAD}`);
}

export function needsReply(flags: number): boolean {
  return (flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
}

// ---- payload codecs ----

function expectSize(p: Uint8Array, size: number, what: string): DataView {
  if (p.length !== size) throw new VhostUserError('bad-size', `${what} payload must be ${size} bytes, got ${p.length}`);
  return view(p);
}

/** u64 at off as an exact number; rejects values >= 2^53. */
function readU64(v: DataView, off: number, what: string): number {
  const lo = LE ? v.getUint32(off, true) : v.getUint32(off + 4, false);
  const hi = LE ? v.getUint32(off + 4, true) : v.getUint32(off, false);
  if (hi >= 2 ** 21) throw new VhostUserError('bad-value', `${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is >= 2^53`);
  return hi * TWO32 + lo;
}

function writeU64(v: DataView, off: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`u64 field out of range: ${value}`);
  const lo = value % TWO32;
  const hi = Math.floor(value / TWO32);
  if (LE) {
    v.setUint32(off, lo, true);
    v.setUint32(off + 4, hi, true);
  } else {
    v.setUint32(off, hi, false);
    v.setUint32(off + 4, lo, false);
  }
}

/** A payload with nothing in it (GET_* requests, SET_OWNER, ...). */
export function decodeEmpty(p: Uint8Array, what = 'request'): void {
  expectSize(p, 0, what);
}

export function decodeU64(p: Uint8Array, what = 'u64'): number {
  return readU64(expectSize(p, PayloadSize.u64, what), 0, what);
}

export function encodeU64(value: number): Uint8Array {
  const out = new Uint8Array(PayloadSize.u64);
  writeU64(view(out), 0, value);
  return out;
}

export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(p: Uint8Array): VringState {
  const v = expectSize(p, PayloadSize.vringState, 'vring state');
  return { index: v.getUint32(0, LE), num: v.getUint32(4, LE) };
}

export function encodeVringState(s: VringState): Uint8Array {
  const out = new Uint8Array(PayloadSize.vringState);
  const v = view(out);
  v.setUint32(0, s.index, LE);
  v.setUint32(4, s.num, LE);
  return out;
}

/** struct vhost_vring_addr. Note the wire order: desc, used, avail, log. */
export interface VringAddr {
  index: number;
  flags: number;
  /** Front-end (QEMU) virtual addresses of the three ring parts, not guest-physical. */
  descVa: number;
  usedVa: number;
  availVa: number;
  /** Guest-physical address of the used ring, for dirty logging only. */
  logGpa: number;
}

export function decodeVringAddr(p: Uint8Array): VringAddr {
  const v = expectSize(p, PayloadSize.vringAddr, 'vring address');
  return {
    index: v.getUint32(0, LE),
    flags: v.getUint32(4, LE),
    descVa: readU64(v, 8, 'descriptor table address'),
    usedVa: readU64(v, 16, 'used ring address'),
    availVa: readU64(v, 24, 'available ring address'),
    logGpa: readU64(v, 32, 'log address'),
  };
}

export function encodeVringAddr(a: VringAddr): Uint8Array {
  const out = new Uint8Array(PayloadSize.vringAddr);
  const v = view(out);
  v.setUint32(0, a.index, LE);
  v.setUint32(4, a.flags, LE);
  writeU64(v, 8, a.descVa);
  writeU64(v, 16, a.usedVa);
  writeU64(v, 24, a.availVa);
  writeU64(v, 32, a.logGpa);
  return out;
}

/** One memory region as the front-end describes it (no fd: fds travel beside the payload). */
export interface MemRegion {
  /** Guest-physical address of the region's first byte. */
  gpa: number;
  size: number;
  /** Front-end virtual address of the region's first byte (what SET_VRING_ADDR uses). */
  uaddr: number;
  /** Where the region starts inside the mapped fd. */
  mmapOffset: number;
}

function readRegion(v: DataView, off: number, what: string): MemRegion {
  const r = {
    gpa: readU64(v, off, `${what} guest address`),
    size: readU64(v, off + 8, `${what} size`),
    uaddr: readU64(v, off + 16, `${what} user address`),
    mmapOffset: readU64(v, off + 24, `${what} mmap offset`),
  };
  if (r.size === 0) throw new VhostUserError('bad-value', `${what} has size 0`);
  for (const [name, base] of [['guest', r.gpa], ['user', r.uaddr], ['mmap offset', r.mmapOffset]] as const) {
    if (!Number.isSafeInteger(base + r.size)) throw new VhostUserError('bad-value', `${what} ${name} range ends beyond 2^53`);
  }
  return r;
}

function writeRegion(v: DataView, off: number, r: MemRegion): void {
  writeU64(v, off, r.gpa);
  writeU64(v, off + 8, r.size);
  writeU64(v, off + 16, r.uaddr);
  writeU64(v, off + 24, r.mmapOffset);
}

/** SET_MEM_TABLE: {u32 nregions, u32 padding, region[nregions]}; the size must match nregions exactly. */
export function decodeMemTable(p: Uint8Array): MemRegion[] {
  if (p.length < PayloadSize.memTableHeader) {
    throw new VhostUserError('bad-size', `memory table payload of ${p.length} bytes is shorter than its header`);
  }
  const v = view(p);
  const n = v.getUint32(0, LE);
  if (n > MEM_TABLE_MAX_REGIONS) throw new VhostUserError('bad-value', `memory table has ${n} regions, at most ${MEM_TABLE_MAX_REGIONS}`);
  const want = PayloadSize.memTableHeader + n * PayloadSize.memRegion;
  if (p.length !== want) throw new VhostUserError('bad-size', `memory table with ${n} regions must be ${want} bytes, got ${p.length}`);
  const regions: MemRegion[] = [];
  for (let i = 0; i < n; i++) regions.push(readRegion(v, PayloadSize.memTableHeader + i * PayloadSize.memRegion, `region ${i}`));
  return regions;
}

export function encodeMemTable(regions: readonly MemRegion[]): Uint8Array {
  const out = new Uint8Array(PayloadSize.memTableHeader + regions.length * PayloadSize.memRegion);
  const v = view(out);
  v.setUint32(0, regions.length, LE);
  regions.forEach((r, i) => writeRegion(v, PayloadSize.memTableHeader + i * PayloadSize.memRegion, r));
  return out;
}

/** ADD_MEM_REG / REM_MEM_REG: {u64 padding, region}. */
export function decodeSingleMemRegion(p: Uint8Array): MemRegion {
  return readRegion(expectSize(p, PayloadSize.singleMemRegion, 'single memory region'), 8, 'region');
}

export function encodeSingleMemRegion(r: MemRegion): Uint8Array {
  const out = new Uint8Array(PayloadSize.singleMemRegion);
  writeRegion(view(out), 8, r);
  return out;
}

/** SET_VRING_KICK / CALL / ERR u64. */
export interface VringFile {
  index: number;
  /** True when no fd is attached (bit 8): polling mode for kick, no notifications for call. */
  noFd: boolean;
}

export function decodeVringFile(p: Uint8Array): VringFile {
  const u = decodeU64(p, 'vring file');
  if (u > (VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
    throw new VhostUserError('bad-value', `vring file value 0x${u.toString(16)} has bits above bit 8`);
  }
  return { index: u & VHOST_USER_VRING_IDX_MASK, noFd: (u & VHOST_USER_VRING_NOFD_MASK) !== 0 };
}

export function encodeVringFile(f: VringFile): Uint8Array {
  return encodeU64((f.index & VHOST_USER_VRING_IDX_MASK) | (f.noFd ? VHOST_USER_VRING_NOFD_MASK : 0));
}

/** SET_LOG_BASE: {u64 mmap_size, u64 mmap_offset}. Decoded only to validate and log; we never log. */
export interface LogArea {
  mmapSize: number;
  mmapOffset: number;
}

export function decodeLog(p: Uint8Array): LogArea {
  const v = expectSize(p, PayloadSize.log, 'log description');
  return { mmapSize: readU64(v, 0, 'log size'), mmapOffset: readU64(v, 8, 'log offset') };
}
