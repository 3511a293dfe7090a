// The vhost-user-fs back-end: the device state machine behind one front-end connection.
//
// It negotiates features, keeps the memory table and the ring configuration, and hands every
// ring that is started and enabled to its DataPlane (this process, or a supervised worker).
// It never parses guest data: what a chain means is the data plane's business.
//
// Ring lifecycle (spec "Ring states"): a ring is started by SET_VRING_KICK and stopped by
// GET_VRING_BASE; it is enabled by SET_VRING_ENABLE when VHOST_USER_F_PROTOCOL_FEATURES was
// negotiated, and enabled from the start otherwise. A ring is processed only while it is started
// AND enabled (a started-but-disabled ring is left alone, which is "without side effects").
// Every change goes through syncRing(), which makes the data plane's running rings match DeviceState.
//
// Errors: a malformed or unsupported message is logged and answered with a failure (a non-zero
// u64 for NEED_REPLY with REPLY_ACK; a zero-length reply for requests that always get a reply,
// which QEMU reports as a bad reply size), and the back-end goes on. Nothing a front-end sends
// crashes the process.

import { constants as osConstants } from 'node:os';
import type { Logger } from '../log';
import type { NativeBinding } from '../native/binding';
import { GuestMemory } from '../virtio/guest-memory';
import type { ChainHandler } from '../virtio/queue-runner';
import { LocalDataPlane, type DataPlane } from './data-plane';
import { VhostUserConnection, type VhostUserMessage } from './connection';
import {
  MemRegion,
  ProtocolFeature,
  REPLY_FLAGS,
  REQUESTS_WITH_REPLY,
  Req,
  VhostUserError,
  VirtioFeature,
  bits,
  checkRequestHeader,
  decodeEmpty,
  decodeMemTable,
  decodeSingleMemRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeU64,
  encodeVringState,
  hasBit,
  isSubset,
  needsReply,
  requestName,
} from './message';

const { EINVAL } = osConstants.errno;

/** Virtio features we offer (GET_FEATURES). No packed ring, no IOMMU, no dirty logging. */
export const OFFERED_FEATURES = bits(
  VirtioFeature.VIRTIO_F_VERSION_1,
  VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC,
  VirtioFeature.VIRTIO_RING_F_EVENT_IDX,
  VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES,
);

/**
 * Protocol features we offer. Not LOG_SHMFD (no dirty logging), not CONFIG (QEMU's vhost-user-fs
 * makes the config space itself), not INFLIGHT_SHMFD (QEMU's vhost-user-fs never sends
 * GET/SET_INFLIGHT_FD; inflight tracking is our own, see docs/crash-consistency.md).
 */
export const OFFERED_PROTOCOL_FEATURES = bits(
  ProtocolFeature.VHOST_USER_PROTOCOL_F_MQ,
  ProtocolFeature.VHOST_USER_PROTOCOL_F_REPLY_ACK,
  ProtocolFeature.VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  ProtocolFeature.VHOST_USER_PROTOCOL_F_RESET_DEVICE,
  ProtocolFeature.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  ProtocolFeature.VHOST_USER_PROTOCOL_F_STATUS,
);

/** GET_MAX_MEM_SLOTS reply, and the limit on regions added with ADD_MEM_REG. */
export const MAX_MEM_SLOTS = 32;
/** Largest split-ring size (virtio 1.x: Queue Size is at most 32768). */
export const MAX_QUEUE_SIZE = 32768;
/** Ring indexes travel in 8 bits (SET_VRING_KICK/CALL/ERR), so at most 256 queues. */
export const MAX_QUEUES = 256;

// ---- device state ----

/** One guest memory region (as the front-end described it) and the fd it is mapped from. */
export interface RegionState extends MemRegion {
  /** Owned by the back-end: closed when the region is removed or the table replaced. */
  fd: number;
}

/** Addresses from SET_VRING_ADDR. */
export interface RingAddrState {
  /** SET_VRING_ADDR flags (always 0: we do not log). */
  flags: number;
  /** Front-end virtual addresses (translated through RegionState.uaddr, not gpa). */
  descVa: number;
  usedVa: number;
  availVa: number;
  /** Guest-physical address of the used ring for dirty logging; kept, never used. */
  logGpa: number;
}

/** Per-ring configuration and protocol state. */
export interface RingState {
  /** Queue size from SET_VRING_NUM (power of two); 0 until set. */
  num: number;
  /** Ring addresses from SET_VRING_ADDR; null until set. */
  addr: RingAddrState | null;
  /**
   * Next available-ring index to process. Set by SET_VRING_BASE; updated to the runner's
   * lastAvail whenever the ring stops running; reported by GET_VRING_BASE.
   */
  base: number;
  /** Kick eventfd (SET_VRING_KICK), -1 when none. Closed when replaced and at GET_VRING_BASE. */
  kickFd: number;
  /** Call eventfd (SET_VRING_CALL), -1 when none (no notifications). Closed when replaced. */
  callFd: number;
  /** Error eventfd (SET_VRING_ERR), -1 when none. Kept, not written yet. Closed when replaced. */
  errFd: number;
  /** Protocol state: true from SET_VRING_KICK until GET_VRING_BASE (or RESET_DEVICE). */
  started: boolean;
  /** SET_VRING_ENABLE state; true at start when PROTOCOL_FEATURES is not negotiated. */
  enabled: boolean;
}

/**
 * Everything the control plane knows about the device, in one plain object. It is JSON-serializable;
 * the only non-portable parts are the fd numbers, which deviceStateFds() lists so that a holder can
 * pass them over SCM_RIGHTS and renumber them on the other side.
 */
export interface DeviceState {
  /** Layout version of this object. */
  version: 1;
  /** 1 hiprio queue + N request queues; what GET_QUEUE_NUM reports. Fixed per back-end. */
  numQueues: number;
  /** SET_OWNER seen (informational; the spec gives it no other effect). */
  owner: boolean;
  /** Virtio features acked with SET_FEATURES (a subset of OFFERED_FEATURES); 0 before. */
  features: number;
  /** Protocol features acked with SET_PROTOCOL_FEATURES (subset of OFFERED_PROTOCOL_FEATURES); 0 before. */
  protocolFeatures: number;
  /** Device status byte from SET_STATUS (virtio status bits); 0 initially. */
  status: number;
  /** Guest memory regions, from SET_MEM_TABLE or ADD_MEM_REG/REM_MEM_REG, in arrival order. */
  regions: RegionState[];
  /** One entry per queue: index 0 is hiprio, 1..numQueues-1 are request queues. */
  rings: RingState[];
  /** Back-end request channel (SET_BACKEND_REQ_FD), -1 when none. Nothing is sent on it yet. */
  backendReqFd: number;
}

/** Where an fd sits in a DeviceState ("regions[0].fd", "rings[1].kickFd", "backendReqFd"). */
export interface DeviceStateFd {
  path: string;
  fd: number;
}

export function initialRingState(): RingState {
  return { num: 0, addr: null, base: 0, kickFd: -1, callFd: -1, errFd: -1, started: false, enabled: false };
}

export function initialDeviceState(numQueues: number): DeviceState {
  return {
    version: 1,
    numQueues,
    owner: false,
    features: 0,
    protocolFeatures: 0,
    status: 0,
    regions: [],
    rings: Array.from({ length: numQueues }, initialRingState),
    backendReqFd: -1,
  };
}

/** Every open fd the state holds, with its place. */
export function deviceStateFds(s: DeviceState): DeviceStateFd[] {
  const out: DeviceStateFd[] = [];
  s.regions.forEach((r, i) => out.push({ path: `regions[${i}].fd`, fd: r.fd }));
  s.rings.forEach((r, i) => {
    if (r.kickFd >= 0) out.push({ path: `rings[${i}].kickFd`, fd: r.kickFd });
    if (r.callFd >= 0) out.push({ path: `rings[${i}].callFd`, fd: r.callFd });
    if (r.errFd >= 0) out.push({ path: `rings[${i}].errFd`, fd: r.errFd });
  });
  if (s.backendReqFd >= 0) out.push({ path: 'backendReqFd', fd: s.backendReqFd });
  return out;
}

/**
 * A copy of s with every fd number (those deviceStateFds lists) replaced by f(fd): for a keeper
 * that got the fds back under other numbers (a service manager's fd store, keeper/fd-park.ts).
 */
export function mapDeviceStateFds(s: DeviceState, f: (fd: number) => number): DeviceState {
  const m = (fd: number): number => (fd >= 0 ? f(fd) : fd);
  return {
    ...s,
    regions: s.regions.map((r) => ({ ...r, fd: m(r.fd) })),
    rings: s.rings.map((r) => ({ ...r, kickFd: m(r.kickFd), callFd: m(r.callFd), errFd: m(r.errFd) })),
    backendReqFd: m(s.backendReqFd),
  };
}

// ---- the back-end ----

export interface VhostUserFsBackendOptions {
  native: NativeBinding;
  log: Logger;
  /** Number of request queues (besides hiprio). Default 1; at most 255. */
  numRequestQueues?: number;
  /** Where rings are served. Default: a LocalDataPlane over makeHandler. */
  dataPlane?: DataPlane;
  /** The chain handler for a queue (LocalDataPlane only); called each time that queue's runner is (re)created. */
  makeHandler?(queueIndex: number): ChainHandler;
  /** Called after the front-end disconnected and all device resources were released. */
  onDisconnect?(): void;
  /** Called when ring q is about to stop; requests that could wait forever (SETLKW) must finish now (LocalDataPlane only). */
  onRingStopping?(queueIndex: number): void;
  /** Called with the device state after every message (and after adopt): the keeper publishes it. */
  onState?(state: Readonly<DeviceState>): void;
}

/** What a request handler returns: the reply body for requests that always get one. */
type ReplyBody = Uint8Array | undefined;

export class VhostUserFsBackend {
  readonly numQueues: number;
  private readonly native: NativeBinding;
  private readonly log: Logger;
  private readonly opts: VhostUserFsBackendOptions;
  private readonly mem: GuestMemory;
  private readonly plane: DataPlane;
  /** Rings the data plane is serving now. */
  private readonly running: boolean[];
  private s: DeviceState;
  private conn: VhostUserConnection | null = null;
  private closing: Promise<void> | null = null;
  private served: Promise<void> | null = null;

  constructor(o: VhostUserFsBackendOptions) {
    const nrq = o.numRequestQueues ?? 1;
    if (!Number.isInteger(nrq) || nrq < 1 || nrq > MAX_QUEUES - 1) {
      throw new RangeError(`numRequestQueues must be 1..${MAX_QUEUES - 1}, got ${nrq}`);
    }
    this.opts = o;
    this.native = o.native;
    this.log = o.log;
    this.numQueues = 1 + nrq;
    this.mem = new GuestMemory(o.native);
    this.running = new Array<boolean>(this.numQueues).fill(false);
    if (o.dataPlane) this.plane = o.dataPlane;
    else if (o.makeHandler) this.plane = new LocalDataPlane({ native: o.native, log: o.log, makeHandler: o.makeHandler, onRingStopping: o.onRingStopping });
    else throw new Error('VhostUserFsBackend needs a dataPlane or makeHandler');
    this.s = initialDeviceState(this.numQueues);
  }

  /** The live device state (read-only view; do not keep it across messages). */
  get state(): Readonly<DeviceState> {
    return this.s;
  }

  /** A JSON-safe deep copy of the device state plus the list of fds in it. */
  snapshot(): { state: DeviceState; fds: DeviceStateFd[] } {
    return { state: JSON.parse(JSON.stringify(this.s)) as DeviceState, fds: deviceStateFds(this.s) };
  }

  /**
   * Serve one front-end connection on a connected unix socket fd (ownership passes to the back-end).
   * Resolves once the connection has closed and every device resource was released.
   */
  serve(fd: number): Promise<void> {
    if (this.conn) throw new Error('VhostUserFsBackend already serves a connection');
    const conn = new VhostUserConnection(this.native, fd, this.log);
    this.conn = conn;
    // 'close' comes after the message being handled (if any) has finished, so the teardown never
    // races a handler (e.g. GET_VRING_BASE waiting for its ring to drain).
    this.served = new Promise<void>((resolve) => {
      conn.once('close', () => {
        void this.teardown().then(() => {
          this.log.info('vhost-user: front-end disconnected');
          this.served = null;
          this.opts.onDisconnect?.();
          resolve();
        });
      });
    });
    conn.start((m) => this.onMessage(m));
    return this.served;
  }

  /**
   * Take over a device another image of this process was serving (keeper re-exec): its state,
   * whose fds are ours now. Rings that were running are marked so (the data plane resumes them).
   * Call before serve() on the same connection fd.
   */
  adopt(state: DeviceState): void {
    this.s = state;
    for (const r of state.regions) {
      const rc = this.mem.addRegion({ ...r });
      if (rc < 0) throw new Error(`cannot map adopted region at gpa 0x${r.gpa.toString(16)}: errno ${-rc}`);
    }
    for (let q = 0; q < this.numQueues; q++) {
      const r = state.rings[q];
      this.running[q] = !!(r && r.started && r.enabled && r.addr && r.num > 0 && r.kickFd >= 0);
    }
    this.opts.onState?.(this.s);
  }

  /** The vhost-user connection's fd (-1 when not serving). */
  get connectionFd(): number {
    return this.conn && !this.conn.isClosed ? this.conn.fd : -1;
  }

  /** Rings the data plane serves now. */
  runningRings(): number[] {
    return this.running.flatMap((on, q) => (on ? [q] : []));
  }

  /** Finish the message in hand and stop reading (see VhostUserConnection.quiesce). */
  async quiesce(): Promise<void> {
    if (this.conn) await this.conn.quiesce();
  }

  /** Undo quiesce(). */
  resume(): void {
    this.conn?.resume();
  }

  /** Drop the connection from our side; resolves when the teardown is complete. */
  async close(): Promise<void> {
    const served = this.served;
    if (this.conn) this.conn.close();
    if (served) await served;
    else await this.teardown();
  }

  // ---- dispatch ----

  private async onMessage(msg: VhostUserMessage): Promise<void> {
    const { request, flags, size } = msg.header;
    const name = requestName(request);
    this.log.debug({ req: name, flags, size, fds: msg.fds.length }, 'vhost-user: request');
    try {
      if (msg.oversized) throw new VhostUserError('bad-header', `payload of ${size} bytes is too large`);
      if (msg.fdsLost) throw new VhostUserError('bad-value', `fds sent with it did not arrive (MSG_CTRUNC; ${msg.fds.length} did)`);
      checkRequestHeader(msg.header);
      const body = await this.handle(request, msg);
      if (REQUESTS_WITH_REPLY.has(request)) this.reply(request, body ?? new Uint8Array(0));
      else if (needsReply(flags) && this.replyAck) this.reply(request, encodeU64(0));
    } catch (e) {
      const known = e instanceof VhostUserError;
      if (known) this.log.warn({ req: name, kind: e.kind, err: e.message }, `vhost-user: ${name} rejected: ${e.message}`);
      else this.log.error({ req: name, err: e }, `vhost-user: ${name} failed unexpectedly`);
      // A request that always gets a reply gets an empty one: the front-end sees a bad size.
      if (REQUESTS_WITH_REPLY.has(request)) this.reply(request, new Uint8Array(0));
      else if (needsReply(flags) && this.replyAck) this.reply(request, encodeU64(known ? e.errno : EINVAL));
    } finally {
      for (const fd of msg.fds) if (fd >= 0) this.native.close(fd);
      this.opts.onState?.(this.s);
    }
  }

  private reply(request: number, body: Uint8Array): void {
    this.conn?.send(request, REPLY_FLAGS, body);
  }

  private get replyAck(): boolean {
    return hasBit(this.s.protocolFeatures, ProtocolFeature.VHOST_USER_PROTOCOL_F_REPLY_ACK);
  }

  private async handle(request: number, m: VhostUserMessage): Promise<ReplyBody> {
    const p = m.payload;
    switch (request) {
      case Req.VHOST_USER_GET_FEATURES:
        decodeEmpty(p);
        return encodeU64(OFFERED_FEATURES);
      case Req.VHOST_USER_SET_FEATURES:
        return this.setFeatures(decodeU64(p, 'features'));
      case Req.VHOST_USER_GET_PROTOCOL_FEATURES:
        decodeEmpty(p);
        return encodeU64(OFFERED_PROTOCOL_FEATURES);
      case Req.VHOST_USER_SET_PROTOCOL_FEATURES: {
        const f = decodeU64(p, 'protocol features');
        if (!isSubset(f, OFFERED_PROTOCOL_FEATURES)) {
          throw new VhostUserError('bad-value', `protocol features 0x${f.toString(16)} not a subset of 0x${OFFERED_PROTOCOL_FEATURES.toString(16)}`);
        }
        this.s.protocolFeatures = f;
        return undefined;
      }
      case Req.VHOST_USER_SET_OWNER:
        decodeEmpty(p);
        this.s.owner = true;
        return undefined;
      case Req.VHOST_USER_RESET_OWNER:
        // Deprecated; the spec recommends ignoring it or disabling all rings. We disable them.
        decodeEmpty(p);
        this.log.warn('vhost-user: RESET_OWNER (deprecated): disabling all rings');
        for (const r of this.s.rings) r.enabled = false;
        await this.syncAllRings();
        return undefined;
      case Req.VHOST_USER_RESET_DEVICE:
        decodeEmpty(p);
        await this.resetDevice();
        return undefined;
      case Req.VHOST_USER_GET_QUEUE_NUM:
        decodeEmpty(p);
        return encodeU64(this.numQueues);
      case Req.VHOST_USER_GET_MAX_MEM_SLOTS:
        decodeEmpty(p);
        return encodeU64(MAX_MEM_SLOTS);
      case Req.VHOST_USER_SET_MEM_TABLE:
        await this.setMemTable(decodeMemTable(p), m);
        return undefined;
      case Req.VHOST_USER_ADD_MEM_REG:
        await this.addMemReg(decodeSingleMemRegion(p), m);
        return undefined;
      case Req.VHOST_USER_REM_MEM_REG:
        await this.remMemReg(decodeSingleMemRegion(p), m);
        return undefined;
      case Req.VHOST_USER_SET_VRING_NUM:
        this.setVringNum(decodeVringState(p));
        return undefined;
      case Req.VHOST_USER_SET_VRING_ADDR:
        await this.setVringAddr(p);
        return undefined;
      case Req.VHOST_USER_SET_VRING_BASE:
        this.setVringBase(decodeVringState(p));
        return undefined;
      case Req.VHOST_USER_GET_VRING_BASE:
        return this.getVringBase(decodeVringState(p).index);
      case Req.VHOST_USER_SET_VRING_KICK:
        await this.setVringKick(p, m);
        return undefined;
      case Req.VHOST_USER_SET_VRING_CALL:
        this.setVringCall(p, m);
        return undefined;
      case Req.VHOST_USER_SET_VRING_ERR:
        this.setVringErr(p, m);
        return undefined;
      case Req.VHOST_USER_SET_VRING_ENABLE:
        await this.setVringEnable(decodeVringState(p));
        return undefined;
      case Req.VHOST_USER_SET_BACKEND_REQ_FD: {
        decodeEmpty(p);
        const fd = this.takeOneFd(m, 'SET_BACKEND_REQ_FD');
        const old = this.s.backendReqFd;
        this.s.backendReqFd = fd;
        if (old >= 0) this.native.close(old);
        return undefined;
      }
      case Req.VHOST_USER_GET_STATUS:
        decodeEmpty(p);
        return encodeU64(this.s.status);
      case Req.VHOST_USER_SET_STATUS: {
        const st = decodeU64(p, 'status');
        if (st > 0xff) throw new VhostUserError('bad-value', `status 0x${st.toString(16)} does not fit in a byte`);
        this.s.status = st;
        return undefined;
      }
      case Req.VHOST_USER_SET_LOG_BASE:
      case Req.VHOST_USER_SET_LOG_FD:
        throw new VhostUserError('unsupported', 'dirty logging is not offered (no VHOST_F_LOG_ALL, no LOG_SHMFD)');
      default:
        throw new VhostUserError('unsupported', `${requestName(request)} is not supported`);
    }
  }

  // ---- features ----

  private async setFeatures(f: number): Promise<ReplyBody> {
    if (!isSubset(f, OFFERED_FEATURES)) {
      throw new VhostUserError('bad-value', `features 0x${f.toString(16)} not a subset of 0x${OFFERED_FEATURES.toString(16)}`);
    }
    const eventIdxChanged = hasBit(f, VirtioFeature.VIRTIO_RING_F_EVENT_IDX) !== this.eventIdx;
    this.s.features = f;
    // Without PROTOCOL_FEATURES there is no SET_VRING_ENABLE: every ring is enabled.
    if (!hasBit(f, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) for (const r of this.s.rings) r.enabled = true;
    if (eventIdxChanged) await this.restartRunningRings();
    else await this.syncAllRings();
    return undefined;
  }

  private get eventIdx(): boolean {
    return hasBit(this.s.features, VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
  }

  private async resetDevice(): Promise<void> {
    for (let q = 0; q < this.numQueues; q++) await this.stopRunner(q);
    for (const r of this.s.rings) for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd >= 0) this.native.close(fd);
    this.s.rings = Array.from({ length: this.numQueues }, initialRingState);
    this.s.features = 0;
    this.s.status = 0;
    this.log.info('vhost-user: device reset');
  }

  // ---- memory ----

  private async setMemTable(regions: MemRegion[], m: VhostUserMessage): Promise<void> {
    if (m.fds.length !== regions.length) {
      throw new VhostUserError('bad-value', `memory table has ${regions.length} regions but ${m.fds.length} fds`);
    }
    checkNoOverlap(regions);
    await this.withRingsStopped(() => {
      this.dropAllRegions();
      const added: RegionState[] = [];
      for (let i = 0; i < regions.length; i++) {
        const r: RegionState = { ...regions[i], fd: m.fds[i] };
        m.fds[i] = -1;
        const rc = this.mem.addRegion({ ...r });
        if (rc < 0) {
          this.native.close(r.fd);
          for (const a of added) this.native.close(a.fd);
          this.mem.clear();
          throw new VhostUserError('io', `cannot map region ${i} (gpa 0x${r.gpa.toString(16)}, size 0x${r.size.toString(16)}): errno ${-rc}`, -rc);
        }
        added.push(r);
      }
      this.s.regions = added;
      this.log.info({ regions: added.map(describeRegion) }, 'vhost-user: memory table set');
    });
  }

  private async addMemReg(region: MemRegion, m: VhostUserMessage): Promise<void> {
    const fd = this.takeOneFd(m, 'ADD_MEM_REG');
    try {
      if (this.s.regions.length >= MAX_MEM_SLOTS) throw new VhostUserError('bad-state', `all ${MAX_MEM_SLOTS} memory slots are in use`);
      checkNoOverlap([...this.s.regions, region]);
    } catch (e) {
      this.native.close(fd);
      throw e;
    }
    await this.withRingsStopped(() => {
      const r: RegionState = { ...region, fd };
      const rc = this.mem.addRegion({ ...r });
      if (rc < 0) {
        this.native.close(fd);
        throw new VhostUserError('io', `cannot map region (gpa 0x${r.gpa.toString(16)}, size 0x${r.size.toString(16)}): errno ${-rc}`, -rc);
      }
      this.s.regions.push(r);
      this.log.info({ region: describeRegion(r) }, 'vhost-user: memory region added');
    });
  }

  private async remMemReg(region: MemRegion, m: VhostUserMessage): Promise<void> {
    // Spec: no fd SHOULD come with it, but one MAY, and then must be closed unused (the generic path does).
    if (m.fds.length > 1) throw new VhostUserError('bad-value', `REM_MEM_REG carries ${m.fds.length} fds`);
    const i = this.s.regions.findIndex((r) => r.gpa === region.gpa && r.size === region.size && r.uaddr === region.uaddr);
    if (i < 0) throw new VhostUserError('bad-value', `no region at gpa 0x${region.gpa.toString(16)} size 0x${region.size.toString(16)} uaddr 0x${region.uaddr.toString(16)}`);
    await this.withRingsStopped(() => {
      const [r] = this.s.regions.splice(i, 1);
      this.mem.removeRegion(r.gpa, r.size, r.uaddr);
      this.native.close(r.fd);
      this.log.info({ region: describeRegion(r) }, 'vhost-user: memory region removed');
    });
  }

  private dropAllRegions(): void {
    this.mem.clear();
    for (const r of this.s.regions) this.native.close(r.fd);
    this.s.regions = [];
  }

  // ---- rings ----

  private ring(index: number): RingState {
    const r = this.s.rings[index];
    if (!r) throw new VhostUserError('bad-value', `ring index ${index} out of range (${this.numQueues} queues)`);
    return r;
  }

  private setVringNum(st: { index: number; num: number }): void {
    const r = this.ring(st.index);
    if (this.running[st.index]) throw new VhostUserError('bad-state', `ring ${st.index} is running; its size cannot change`);
    const n = st.num;
    if (n < 1 || n > MAX_QUEUE_SIZE || (n & (n - 1)) !== 0) {
      throw new VhostUserError('bad-value', `ring ${st.index} size ${n} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
    r.num = n;
  }

  private async setVringAddr(p: Uint8Array): Promise<void> {
    const a = decodeVringAddr(p);
    const r = this.ring(a.index);
    if (a.flags !== 0) throw new VhostUserError('unsupported', `ring ${a.index} address flags 0x${a.flags.toString(16)}: dirty logging is not offered`);
    const addr: RingAddrState = { flags: a.flags, descVa: a.descVa, usedVa: a.usedVa, availVa: a.availVa, logGpa: a.logGpa };
    this.checkRingAddr(a.index, addr, r.num);
    r.addr = addr;
    if (this.running[a.index]) await this.restartRing(a.index);
  }

  /** The three ring parts must be aligned (virtio 2.7) and lie inside mapped memory. */
  private checkRingAddr(q: number, a: RingAddrState, num: number): void {
    if (a.descVa % 16 || a.availVa % 2 || a.usedVa % 4) {
      throw new VhostUserError('bad-value', `ring ${q} addresses misaligned (desc 0x${a.descVa.toString(16)}, avail 0x${a.availVa.toString(16)}, used 0x${a.usedVa.toString(16)})`);
    }
    if (this.s.regions.length === 0) throw new VhostUserError('bad-state', `ring ${q} address set before any memory region`);
    const n = num || 1;
    const parts: Array<[string, number, number]> = [
      ['descriptor table', a.descVa, 16 * n],
      ['available ring', a.availVa, 6 + 2 * n],
      ['used ring', a.usedVa, 6 + 8 * n],
    ];
    for (const [what, va, len] of parts) {
      if (!this.mem.vaView(va, len)) {
        throw new VhostUserError('bad-value', `ring ${q} ${what} at 0x${va.toString(16)} (+${len}) is outside guest memory`);
      }
    }
  }

  private setVringBase(st: { index: number; num: number }): void {
    const r = this.ring(st.index);
    if (this.running[st.index]) throw new VhostUserError('bad-state', `ring ${st.index} is running; its base cannot change`);
    if (st.num > 0xffff) throw new VhostUserError('bad-value', `ring ${st.index} base ${st.num} is not a 16-bit index`);
    r.base = st.num;
  }

  private async getVringBase(index: number): Promise<Uint8Array> {
    const r = this.ring(index);
    await this.stopRunner(index);
    r.started = false;
    if (r.kickFd >= 0) this.native.close(r.kickFd);
    r.kickFd = -1;
    this.log.info({ queue: index, base: r.base }, 'vhost-user: ring stopped');
    return encodeVringState({ index, num: r.base });
  }

  private async setVringKick(p: Uint8Array, m: VhostUserMessage): Promise<void> {
    const f = decodeVringFile(p);
    const r = this.ring(f.index);
    if (f.noFd) {
      throw new VhostUserError('unsupported', `ring ${f.index}: polling mode (SET_VRING_KICK without fd) is not supported`);
    }
    const fd = this.takeOneFd(m, 'SET_VRING_KICK');
    await this.stopRunner(f.index);
    if (r.kickFd >= 0) this.native.close(r.kickFd);
    r.kickFd = fd;
    r.started = true;
    if (!hasBit(this.s.features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) r.enabled = true;
    await this.syncRing(f.index);
  }

  private setVringCall(p: Uint8Array, m: VhostUserMessage): void {
    const f = decodeVringFile(p);
    const r = this.ring(f.index);
    const fd = f.noFd ? this.takeNoFd(m, 'SET_VRING_CALL') : this.takeOneFd(m, 'SET_VRING_CALL');
    // The runner switches first, so it never signals a closed (possibly reused) fd number.
    if (this.running[f.index]) this.plane.setCallFd(f.index, fd);
    const old = r.callFd;
    r.callFd = fd;
    if (old >= 0) this.native.close(old);
  }

  private setVringErr(p: Uint8Array, m: VhostUserMessage): void {
    const f = decodeVringFile(p);
    const r = this.ring(f.index);
    const fd = f.noFd ? this.takeNoFd(m, 'SET_VRING_ERR') : this.takeOneFd(m, 'SET_VRING_ERR');
    const old = r.errFd;
    r.errFd = fd;
    if (old >= 0) this.native.close(old);
  }

  private async setVringEnable(st: { index: number; num: number }): Promise<void> {
    const r = this.ring(st.index);
    if (st.num > 1) throw new VhostUserError('bad-value', `ring ${st.index} enable value ${st.num} is not 0 or 1`);
    r.enabled = st.num === 1;
    await this.syncRing(st.index);
  }

  // ---- runners ----

  /** Make ring q's runner match its state: running iff started and enabled (and well configured). */
  private async syncRing(q: number): Promise<void> {
    const r = this.s.rings[q];
    const want = r.started && r.enabled;
    if (!want) await this.stopRunner(q);
    else if (!this.running[q]) this.startRunner(q);
  }

  private async syncAllRings(): Promise<void> {
    for (let q = 0; q < this.numQueues; q++) await this.syncRing(q);
  }

  private async restartRing(q: number): Promise<void> {
    await this.stopRunner(q);
    await this.syncRing(q);
  }

  private async restartRunningRings(): Promise<void> {
    await this.withRingsStopped(() => undefined);
  }

  /** Stop every runner, run fn (which may change memory), then start whatever should run. */
  private async withRingsStopped(fn: () => void): Promise<void> {
    for (let q = 0; q < this.numQueues; q++) await this.stopRunner(q);
    try {
      fn();
    } finally {
      await this.syncAllRings();
    }
  }

  private startRunner(q: number): void {
    const r = this.s.rings[q];
    const missing = [
      r.num === 0 && 'size',
      !r.addr && 'addresses',
      r.kickFd < 0 && 'kick fd',
      this.s.regions.length === 0 && 'memory',
    ].filter(Boolean);
    if (missing.length > 0 || !r.addr) {
      this.log.warn({ queue: q, missing }, 'vhost-user: ring started and enabled but not configured; not processing it');
      return;
    }
    try {
      this.checkRingAddr(q, r.addr, r.num);
      this.plane.startRing({
        index: q, size: r.num, descVa: r.addr.descVa, availVa: r.addr.availVa, usedVa: r.addr.usedVa,
        base: r.base, eventIdx: this.eventIdx, kickFd: r.kickFd, callFd: r.callFd,
      }, { regions: this.s.regions, mem: this.mem });
      this.running[q] = true;
      this.log.info({ queue: q, size: r.num, base: r.base, eventIdx: this.eventIdx }, 'vhost-user: ring running');
    } catch (e) {
      this.log.error({ queue: q, err: e }, 'vhost-user: cannot start ring');
    }
  }

  /** Stop ring q's runner if any; its lastAvail becomes the ring's base. */
  private async stopRunner(q: number): Promise<void> {
    if (!this.running[q]) return;
    this.running[q] = false;
    this.plane.ringStopping?.(q);
    const last = await this.plane.stopRing(q);
    this.s.rings[q].base = last;
    this.log.info({ queue: q, base: last }, 'vhost-user: ring paused');
  }

  // ---- fds ----

  /** Exactly one fd must come with the message; it now belongs to the caller. */
  private takeOneFd(m: VhostUserMessage, what: string): number {
    if (m.fds.length !== 1) throw new VhostUserError('bad-value', `${what} needs exactly one fd, got ${m.fds.length}`);
    const fd = m.fds[0];
    m.fds[0] = -1;
    return fd;
  }

  /** The NOFD flag was set: no fd may come with the message. Returns -1. */
  private takeNoFd(m: VhostUserMessage, what: string): number {
    if (m.fds.length !== 0) throw new VhostUserError('bad-value', `${what} with the no-fd flag carries ${m.fds.length} fds`);
    return -1;
  }

  // ---- teardown ----

  private teardown(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        for (let q = 0; q < this.numQueues; q++) {
          try {
            await this.stopRunner(q);
          } catch (e) {
            this.log.error({ queue: q, err: e }, 'vhost-user: stopping a ring failed');
          }
        }
        for (const { fd } of deviceStateFds(this.s)) this.native.close(fd);
        this.mem.clear();
        this.s = initialDeviceState(this.numQueues);
        this.conn = null;
      })().finally(() => {
        this.closing = null;
      });
    }
    return this.closing;
  }
}

function checkNoOverlap(regions: readonly MemRegion[]): void {
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const a = regions[i];
      const b = regions[j];
      if (a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size) {
        throw new VhostUserError('bad-value', `regions overlap in guest-physical space (0x${a.gpa.toString(16)} and 0x${b.gpa.toString(16)})`);
      }
      if (a.uaddr < b.uaddr + b.size && b.uaddr < a.uaddr + a.size) {
        throw new VhostUserError('bad-value', `regions overlap in front-end address space (0x${a.uaddr.toString(16)} and 0x${b.uaddr.toString(16)})`);
      }
    }
  }
}

function describeRegion(r: MemRegion): Record<string, string> {
  return { gpa: `0x${r.gpa.toString(16)}`, size: `0x${r.size.toString(16)}`, uaddr: `0x${r.uaddr.toString(16)}`, mmapOffset: `0x${r.mmapOffset.toString(16)}` };
}
