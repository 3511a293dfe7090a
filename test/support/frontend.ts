// A vhost-user FRONT-END for tests: plays QEMU 7.2's vhost-user-fs-pci over a unix socket.
//
// connect() runs the realize sequence and the first start sequence exactly as traced from QEMU 7.2
// (shared/research/qemu-vhost-user-fs.md §1.4 A and B, Appendix A1/A2); stop() and start() replay
// the rmmod/insmod sequence (§1.4 D, Appendix A3). Guest RAM is a memfd (GuestRam) shared with the
// back-end as one region at guest-physical 0; ring addresses are sent as front-end virtual
// addresses uaddr = gpa + UADDR_OFFSET, a deliberately odd base so that a back-end that confuses
// guest-physical and front-end virtual addresses fails at once.
//
// It works against this daemon's back-end and against the C virtiofsd (libvhost-user).
// Raw access for hostile tests: sendRaw() and readReply().

import { constants as osConstants } from 'node:os';
import type { Logger } from '../../src/log';
import { silentLogger } from '../../src/log';
import { watchFd, type NativeBinding, type PollHandle } from '../../src/native/binding';
import { VhostUserConnection, type VhostUserMessage } from '../../src/vhost/connection';
import {
  ProtocolFeature,
  REPLY_FLAGS,
  REQUESTS_WITH_REPLY,
  Req,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_VERSION,
  VirtioFeature,
  bit,
  bits,
  decodeU64,
  decodeVringState,
  encodeMemTable,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  hasBit,
  maskAnd,
  maskClear,
  maskOr,
  requestName,
  type MemRegion,
  type MessageHeader,
} from '../../src/vhost/message';
import { GuestRam, VirtqDriver } from './virtq-driver';

/** Front-end virtual address of guest-physical 0 (uaddr = gpa + UADDR_OFFSET). */
export const UADDR_OFFSET = 0x7f0000000000;

/** Protocol features QEMU 7.2 knows (bits 0..16, VHOST_USER_PROTOCOL_FEATURE_MASK). */
const QEMU72_PROTOCOL_MASK = 2 ** 17 - 1;
/** Virtio features a Linux 6.1 guest acks on virtio-fs (transport bits only). */
const GUEST_ACKED = bits(VirtioFeature.VIRTIO_F_VERSION_1, VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC, VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
const VIRTIO_CONFIG_S_FEATURES_OK = 8;

export interface FrontendOptions {
  /** Guest RAM size in bytes (default 16 MiB). */
  ramSize?: number;
  /** Queue size of every queue (default 128, QEMU's default). */
  queueSize?: number;
  /** Request queues besides hiprio (default 1, QEMU's default). */
  numRequestQueues?: number;
  /** Post multi-buffer chains through an indirect table, as Linux does (default true). */
  indirect?: boolean;
  /** Keep retrying the connect for this long while the socket is missing or refusing (default 5000). */
  connectTimeoutMs?: number;
  /** Default reply timeout (default 5000 ms). */
  replyTimeoutMs?: number;
  log?: Logger;
}

export interface RawReply {
  header: MessageHeader;
  payload: Uint8Array;
  fds: number[];
}

export interface UsedResult {
  /** Used length the device reported. */
  len: number;
  /** Copies of the chain's device-writable buffers. */
  in: Uint8Array[];
}

interface Pending {
  resolve(r: UsedResult): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

interface QueueFds {
  kick: number;
  call: number;
  err: number;
  /** QEMU's "masked notifier": the call fd used while the guest has interrupts masked. */
  masked: number;
}

export class VhostUserFrontend {
  readonly native: NativeBinding;
  readonly ram: GuestRam;
  readonly queueSize: number;
  readonly numQueues: number;
  readonly indirect: boolean;
  /** GET_FEATURES reply. */
  features = 0;
  /** GET_PROTOCOL_FEATURES reply (0 when PROTOCOL_FEATURES is not offered). */
  protocolFeatures = 0;
  /** What SET_PROTOCOL_FEATURES / SET_FEATURES sent. */
  ackedProtocolFeatures = 0;
  ackedFeatures = 0;
  /** GET_QUEUE_NUM / GET_MAX_MEM_SLOTS replies, when asked. */
  queueNum: number | undefined;
  maxMemSlots: number | undefined;
  /** One driver per queue (replaced by start({ resetRings: true })). */
  drivers: VirtqDriver[] = [];
  /** The ring bases sent by the next SET_VRING_BASE (QEMU keeps what GET_VRING_BASE returned). */
  bases: number[];
  /** Our end of the back-end request channel, -1 when not offered. */
  backendReqFd = -1;
  /** Used entries whose head no request() was waiting for. */
  readonly unclaimed: Array<{ queue: number; head: number; len: number }> = [];

  private readonly conn: VhostUserConnection;
  private readonly log: Logger;
  private readonly replyTimeoutMs: number;
  private readonly inbox: VhostUserMessage[] = [];
  private readonly waiters: Array<{ resolve(m: VhostUserMessage): void; reject(e: Error): void }> = [];
  private readonly qfds: QueueFds[] = [];
  private readonly polls: Array<PollHandle | null>;
  private readonly pending: Array<Map<number, Pending>>;
  private memSent = false;
  private closed = false;
  private disconnected = false;

  private constructor(native: NativeBinding, fd: number, o: FrontendOptions) {
    this.native = native;
    this.log = o.log ?? silentLogger;
    this.queueSize = o.queueSize ?? 128;
    this.numQueues = 1 + (o.numRequestQueues ?? 1);
    this.indirect = o.indirect ?? true;
    this.replyTimeoutMs = o.replyTimeoutMs ?? 5000;
    this.ram = new GuestRam(native, o.ramSize ?? 16 * 1024 * 1024);
    this.bases = new Array<number>(this.numQueues).fill(0);
    this.polls = new Array<PollHandle | null>(this.numQueues).fill(null);
    this.pending = Array.from({ length: this.numQueues }, () => new Map<number, Pending>());
    for (let q = 0; q < this.numQueues; q++) {
      const mk = (): number => {
        const e = native.eventfd(0);
        if (e < 0) throw new Error(`eventfd: errno ${-e}`);
        return e;
      };
      this.qfds.push({ kick: mk(), call: mk(), err: mk(), masked: mk() });
    }
    this.conn = new VhostUserConnection(native, fd, this.log);
    this.conn.on('close', () => {
      this.disconnected = true;
      for (const w of this.waiters.splice(0)) w.reject(new Error('vhost-user connection closed'));
    });
    this.conn.start((m) => {
      const w = this.waiters.shift();
      if (w) w.resolve(m);
      else this.inbox.push(m);
    });
  }

  /** Connect to socketPath, then run QEMU 7.2's realize sequence and its first start sequence. */
  static async connect(native: NativeBinding, socketPath: string, o: FrontendOptions = {}): Promise<VhostUserFrontend> {
    const fd = await connectWithRetry(native, socketPath, o.connectTimeoutMs ?? 5000);
    const fe = new VhostUserFrontend(native, fd, o);
    try {
      await fe.realize();
      await fe.start();
    } catch (e) {
      fe.close();
      throw e;
    }
    return fe;
  }

  /** Connect only (no messages sent): for tests that drive the sequence themselves. */
  static async connectRaw(native: NativeBinding, socketPath: string, o: FrontendOptions = {}): Promise<VhostUserFrontend> {
    const fd = await connectWithRetry(native, socketPath, o.connectTimeoutMs ?? 5000);
    return new VhostUserFrontend(native, fd, o);
  }

  get hasProtocolFeatures(): boolean {
    return hasBit(this.features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
  }

  private proto(n: number): boolean {
    return hasBit(this.ackedProtocolFeatures, n);
  }

  private get replyAck(): boolean {
    return this.proto(ProtocolFeature.VHOST_USER_PROTOCOL_F_REPLY_ACK);
  }

  /** vhost_dev_init + vhost_user_backend_init (QEMU 7.2), §1.4 A. */
  async realize(): Promise<void> {
    this.features = await this.getU64(Req.VHOST_USER_GET_FEATURES);
    if (this.hasProtocolFeatures) {
      this.protocolFeatures = await this.getU64(Req.VHOST_USER_GET_PROTOCOL_FEATURES);
      // QEMU acks every bit it knows except CONFIG, which vhost-user-fs cannot use.
      this.ackedProtocolFeatures = maskClear(maskAnd(this.protocolFeatures, QEMU72_PROTOCOL_MASK), bit(ProtocolFeature.VHOST_USER_PROTOCOL_F_CONFIG));
      await this.rpc(Req.VHOST_USER_SET_PROTOCOL_FEATURES, encodeU64(this.ackedProtocolFeatures));
      if (this.proto(ProtocolFeature.VHOST_USER_PROTOCOL_F_MQ)) {
        this.queueNum = await this.getU64(Req.VHOST_USER_GET_QUEUE_NUM);
        if (this.queueNum < this.numQueues) throw new Error(`back-end supports ${this.queueNum} queues, ${this.numQueues} wanted`);
      }
      if (this.proto(ProtocolFeature.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
        this.maxMemSlots = await this.getU64(Req.VHOST_USER_GET_MAX_MEM_SLOTS);
      }
      if (this.proto(ProtocolFeature.VHOST_USER_PROTOCOL_F_BACKEND_REQ)) {
        const pair = new Int32Array(2);
        const rc = this.native.socketpair(pair);
        if (rc < 0) throw new Error(`socketpair: errno ${-rc}`);
        this.backendReqFd = pair[0];
        try {
          await this.rpcAck(Req.VHOST_USER_SET_BACKEND_REQ_FD, new Uint8Array(0), [pair[1]]);
        } finally {
          this.native.close(pair[1]);
        }
      }
    }
    await this.rpc(Req.VHOST_USER_SET_OWNER);
    this.features = await this.getU64(Req.VHOST_USER_GET_FEATURES);
    for (let q = 0; q < this.numQueues; q++) {
      await this.rpc(Req.VHOST_USER_SET_VRING_CALL, encodeVringFile({ index: q, noFd: false }), [this.qfds[q].masked]);
      await this.rpc(Req.VHOST_USER_SET_VRING_ERR, encodeVringFile({ index: q, noFd: false }), [this.qfds[q].err]);
    }
  }

  /**
   * vuf_start (QEMU 7.2), §1.4 B. The memory table goes only with the first start (QEMU's shadow
   * table: later starts re-send everything except ADD_MEM_REG). resetRings: the guest reset the
   * device (rmmod/insmod): new rings in fresh memory, base 0. Otherwise the rings continue from
   * the bases the last stop() returned (VM pause/cont).
   */
  async start(o: { resetRings?: boolean } = {}): Promise<void> {
    for (let q = 0; q < this.numQueues; q++) {
      await this.rpc(Req.VHOST_USER_SET_VRING_CALL, encodeVringFile({ index: q, noFd: false }), [this.qfds[q].call]);
    }
    this.ackedFeatures = maskAnd(this.features, GUEST_ACKED);
    if (this.hasProtocolFeatures) this.ackedFeatures = maskOr(this.ackedFeatures, bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
    await this.rpc(Req.VHOST_USER_SET_FEATURES, encodeU64(this.ackedFeatures));
    if (this.proto(ProtocolFeature.VHOST_USER_PROTOCOL_F_STATUS)) {
      const st = await this.getU64(Req.VHOST_USER_GET_STATUS);
      await this.rpc(Req.VHOST_USER_SET_STATUS, encodeU64(st | VIRTIO_CONFIG_S_FEATURES_OK));
    }
    if (!this.memSent) {
      const region: MemRegion = { gpa: 0, size: this.ram.size, uaddr: UADDR_OFFSET, mmapOffset: 0 };
      if (this.proto(ProtocolFeature.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
        await this.rpcAck(Req.VHOST_USER_ADD_MEM_REG, encodeSingleMemRegion(region), [this.ram.fd]);
      } else {
        await this.rpcAck(Req.VHOST_USER_SET_MEM_TABLE, encodeMemTable([region]), [this.ram.fd]);
      }
      this.memSent = true;
    }
    const eventIdx = hasBit(this.ackedFeatures, VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    if (this.drivers.length === 0 || o.resetRings) {
      this.drivers = Array.from({ length: this.numQueues }, () => new VirtqDriver(this.ram, this.queueSize, { eventIdx, indirect: this.indirect }));
      this.bases.fill(0);
    }
    for (let q = 0; q < this.numQueues; q++) {
      const d = this.drivers[q];
      await this.rpc(Req.VHOST_USER_SET_VRING_NUM, encodeVringState({ index: q, num: this.queueSize }));
      await this.rpc(Req.VHOST_USER_SET_VRING_BASE, encodeVringState({ index: q, num: this.bases[q] }));
      await this.rpc(Req.VHOST_USER_SET_VRING_ADDR, encodeVringAddr({
        index: q, flags: 0,
        descVa: d.descGpa + UADDR_OFFSET, usedVa: d.usedGpa + UADDR_OFFSET, availVa: d.availGpa + UADDR_OFFSET,
        logGpa: d.usedGpa,
      }));
      await this.rpc(Req.VHOST_USER_SET_VRING_KICK, encodeVringFile({ index: q, noFd: false }), [this.qfds[q].kick]);
    }
    if (this.hasProtocolFeatures) {
      for (let q = 0; q < this.numQueues; q++) await this.rpc(Req.VHOST_USER_SET_VRING_ENABLE, encodeVringState({ index: q, num: 1 }));
    }
    for (let q = 0; q < this.numQueues; q++) {
      await this.rpc(Req.VHOST_USER_SET_VRING_CALL, encodeVringFile({ index: q, noFd: false }), [this.qfds[q].call]);
    }
  }

  /** vhost_dev_stop (QEMU 7.2), §1.4 D: disable, GET_VRING_BASE, mask. Returns the bases. */
  async stop(): Promise<number[]> {
    if (this.hasProtocolFeatures) {
      for (let q = 0; q < this.numQueues; q++) await this.rpc(Req.VHOST_USER_SET_VRING_ENABLE, encodeVringState({ index: q, num: 0 }));
    }
    for (let q = 0; q < this.numQueues; q++) {
      const r = await this.rpc(Req.VHOST_USER_GET_VRING_BASE, encodeVringState({ index: q, num: 0 }));
      const st = decodeVringState(r!.payload);
      if (st.index !== q) throw new Error(`GET_VRING_BASE(${q}) answered for ring ${st.index}`);
      this.bases[q] = st.num;
    }
    for (let q = 0; q < this.numQueues; q++) {
      await this.rpc(Req.VHOST_USER_SET_VRING_CALL, encodeVringFile({ index: q, noFd: false }), [this.qfds[q].masked]);
    }
    return [...this.bases];
  }

  /**
   * Post one chain on queue (device-readable out buffers, then device-writable buffers of inLens
   * bytes), kick when the device asks for it, and wait for its used entry (signalled on the call
   * eventfd).
   */
  request(queue: number, out: Uint8Array[], inLens: number[], timeoutMs = this.replyTimeoutMs): Promise<UsedResult> {
    const d = this.drivers[queue];
    if (!d) return Promise.reject(new Error(`no queue ${queue}`));
    const head = d.add(out, inLens);
    const p = new Promise<UsedResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending[queue].delete(head);
        this.updatePoll(queue);
        reject(new Error(`queue ${queue}: no used entry for head ${head} within ${timeoutMs} ms (usedIdx ${d.usedIdx}, availIdx ${d.availIndex})`));
      }, timeoutMs);
      this.pending[queue].set(head, { resolve, reject, timer });
    });
    this.updatePoll(queue);
    if (d.needsKick()) this.kick(queue);
    return p;
  }

  /**
   * Barrier: a GET_FEATURES round trip, so every message sent before has been handled (the
   * back-end answers in order). QEMU >= 8.2 does the same after SET_VRING_ENABLE.
   */
  async sync(): Promise<void> {
    await this.getU64(Req.VHOST_USER_GET_FEATURES);
  }

  /** Signal queue's kick eventfd. */
  kick(queue: number): void {
    const rc = this.native.eventfdWrite(this.qfds[queue].kick, 1);
    if (rc < 0) throw new Error(`kick write: errno ${-rc}`);
  }

  /** Our copies of queue's eventfds. */
  fdsOf(queue: number): Readonly<QueueFds> {
    return this.qfds[queue];
  }

  /** Send any message as is. flags default to version 1 (| NEED_REPLY when needReply). */
  sendRaw(h: { request: number; flags?: number; needReply?: boolean }, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): number {
    const flags = (h.flags ?? VHOST_USER_VERSION) | (h.needReply ? VHOST_USER_NEED_REPLY_MASK : 0);
    return this.conn.send(h.request, flags, payload, fds);
  }

  /** Send raw header bytes + payload bytes without any framing help (e.g. a lying size field). */
  sendBytes(bytes: Uint8Array, fds: number[] = []): number {
    return this.native.sendmsg(this.conn.fd, bytes, bytes.length, fds);
  }

  /** Next message from the back-end; rejects after timeoutMs or when the connection closes. */
  readReply(timeoutMs = this.replyTimeoutMs): Promise<RawReply> {
    const m = this.inbox.shift();
    if (m) return Promise.resolve(m);
    if (this.disconnected) return Promise.reject(new Error('vhost-user connection closed'));
    return new Promise<RawReply>((resolve, reject) => {
      const w = {
        resolve: (msg: VhostUserMessage) => {
          clearTimeout(timer);
          resolve(msg);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** True when no message from the back-end is waiting. */
  get inboxEmpty(): boolean {
    return this.inbox.length === 0;
  }

  get isDisconnected(): boolean {
    return this.disconnected;
  }

  /**
   * Send a request as QEMU does and read its reply when it has one: requests that always get a
   * reply, and NEED_REPLY ones. The reply header is checked as QEMU checks it.
   */
  async rpc(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], needReply = false): Promise<RawReply | null> {
    const rc = this.sendRaw({ request, needReply }, payload, fds);
    if (rc < 0) throw new Error(`${requestName(request)}: send failed, errno ${-rc}`);
    if (!REQUESTS_WITH_REPLY.has(request) && !needReply) return null;
    const r = await this.readReply();
    if (r.header.request !== request) throw new Error(`${requestName(request)}: reply is for ${requestName(r.header.request)}`);
    if (r.header.flags !== REPLY_FLAGS) throw new Error(`${requestName(request)}: reply flags 0x${r.header.flags.toString(16)}`);
    for (const f of r.fds) this.native.close(f);
    return r;
  }

  /** Send with NEED_REPLY when REPLY_ACK was negotiated and require a zero ack. */
  async rpcAck(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Promise<void> {
    const r = await this.rpc(request, payload, fds, this.replyAck);
    if (r) {
      const v = decodeU64(r.payload, `${requestName(request)} ack`);
      if (v !== 0) throw new Error(`${requestName(request)} failed: back-end answered ${v}`);
    }
  }

  async getU64(request: number): Promise<number> {
    const r = await this.rpc(request);
    return decodeU64(r!.payload, `${requestName(request)} reply`);
  }

  /** Close the connection and every fd and mapping of this front-end. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let q = 0; q < this.numQueues; q++) {
      for (const [, p] of this.pending[q]) {
        clearTimeout(p.timer);
        p.reject(new Error('front-end closed'));
      }
      this.pending[q].clear();
      this.updatePoll(q);
    }
    this.conn.close();
    for (const m of this.inbox.splice(0)) for (const f of m.fds) this.native.close(f);
    for (const f of this.qfds) for (const fd of [f.kick, f.call, f.err, f.masked]) this.native.close(fd);
    if (this.backendReqFd >= 0) this.native.close(this.backendReqFd);
    this.backendReqFd = -1;
    this.ram.close();
  }

  // ---- completions ----

  /** Watch queue's call eventfd while requests are pending on it. */
  private updatePoll(queue: number): void {
    const want = this.pending[queue].size > 0 && !this.closed;
    const h = this.polls[queue];
    if (want && !h) {
      this.polls[queue] = watchFd(this.native, this.qfds[queue].call, 1, (status) => {
        if (status < 0) return;
        this.native.eventfdRead(this.qfds[queue].call);
        this.collect(queue);
      });
    } else if (!want && h) {
      this.native.pollStop(h);
      this.polls[queue] = null;
    }
  }

  private collect(queue: number): void {
    // takeUsed() publishes used_event only after reading used.idx: an entry the device pushed in
    // between saw the old used_event and sent no call. Re-read until a pass finds nothing, as
    // Linux's virtqueue_enable_cb_prepare + virtqueue_poll do (seen with 32 requests in flight).
    for (;;) {
      const used = this.drivers[queue].takeUsed();
      if (used.length === 0) break;
      for (const u of used) {
        const p = this.pending[queue].get(u.head);
        if (!p) {
          this.unclaimed.push({ queue, head: u.head, len: u.len });
          continue;
        }
        this.pending[queue].delete(u.head);
        clearTimeout(p.timer);
        p.resolve({ len: u.len, in: u.in });
      }
    }
    this.updatePoll(queue);
  }
}

const { ENOENT, ECONNREFUSED, EAGAIN } = osConstants.errno;

async function connectWithRetry(native: NativeBinding, path: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fd = native.unixConnect(path);
    if (fd >= 0) return fd;
    if ((fd !== -ENOENT && fd !== -ECONNREFUSED && fd !== -EAGAIN) || Date.now() > deadline) {
      throw new Error(`connect ${path}: errno ${-fd}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
