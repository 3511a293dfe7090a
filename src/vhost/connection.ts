// Framing of vhost-user messages over a connected unix stream socket, with the fds that travel
// beside them (SCM_RIGHTS). No policy: the owner decides what a message means and what to reply.
//
// Reading: each recvmsg asks for at most the bytes that are still missing from the current
// header or payload, never more, so one read never spans two messages and every fd received
// belongs to the message whose bytes came with it (the front-end sends a message and its fds in
// one sendmsg; Linux delivers the fds with that message's first byte).
//
// Delivery: messages go to the handler one at a time, in order. The handler may be async and is
// awaited before the next message is delivered (GET_VRING_BASE waits for its ring to drain; the
// messages behind it must see the ring stopped). Reading continues meanwhile; messages queue up.

import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';
import type { Logger } from '../log';
import { watchFd, type NativeBinding, type PollHandle } from '../native/binding';
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD, MessageHeader, decodeHeader, encodeMessage, requestName } from './message';
import { MSG_CTRUNC } from '../linux/constants';

const { EAGAIN, EINTR } = osConstants.errno;
const POLL_READABLE = 1;

export interface VhostUserMessage {
  header: MessageHeader;
  /** Exactly header.size bytes; empty when oversized. */
  payload: Uint8Array;
  /** Fds received with this message's bytes. The handler owns them (close or keep each one). */
  fds: number[];
  /** header.size exceeded MAX_PAYLOAD: the payload was read and discarded (and its fds closed). */
  oversized: boolean;
  /** Fds sent with it did not arrive (MSG_CTRUNC: our fd table was full, or more than MAX_FDS). */
  fdsLost?: boolean;
}

export type MessageHandler = (msg: VhostUserMessage) => void | Promise<void>;

/**
 * Events: 'close' (once, after EOF or close(), when every queued message has been handled).
 */
export class VhostUserConnection extends EventEmitter {
  readonly fd: number;
  private readonly native: NativeBinding;
  private readonly log: Logger;
  private handler: MessageHandler | null = null;
  private poll: PollHandle | null = null;

  // Read state of the message being assembled.
  private readonly headerBuf = new Uint8Array(HEADER_SIZE);
  private readonly fdBuf = new Int32Array(MAX_FDS);
  private readonly discardBuf = new Uint8Array(MAX_PAYLOAD);
  private header: MessageHeader | null = null;
  private payload: Uint8Array = new Uint8Array(0);
  private got = 0;
  private fds: number[] = [];
  private fdsLost = false;
  private readonly msgFlags = new Int32Array(1);

  private readonly queue: VhostUserMessage[] = [];
  private pumping = false;
  private eof = false;
  private closed = false;
  private closeEmitted = false;

  /** Takes ownership of fd (a connected unix stream socket); it is made nonblocking. */
  constructor(native: NativeBinding, fd: number, log: Logger) {
    super();
    this.native = native;
    this.fd = fd;
    this.log = log;
  }

  /** Start reading; every complete message is handed to handler. */
  start(handler: MessageHandler): void {
    if (this.handler) throw new Error('connection already started');
    this.handler = handler;
    const rc = this.native.setNonblocking(this.fd, true);
    if (rc < 0) this.log.warn({ fd: this.fd, errno: -rc }, 'vhost-user: cannot make the socket nonblocking');
    this.poll = watchFd(this.native, this.fd, POLL_READABLE, (status) => {
      if (status < 0) {
        this.log.error({ fd: this.fd, status }, 'vhost-user: poll error on the socket');
        this.onEof();
        return;
      }
      this.readAvailable();
    });
  }

  /**
   * Send one message (header + payload, with fds as SCM_RIGHTS). Returns 0 or -errno.
   * Sends all of it: a partial or would-block send is finished in blocking mode (replies are tiny
   * and the front-end is waiting for them, so this does not stall).
   */
  send(request: number, flags: number, payload?: Uint8Array, fds: readonly number[] = []): number {
    if (this.closed) return -osConstants.errno.EPIPE;
    const buf = encodeMessage(request, flags, payload);
    let off = 0;
    let blocking = false;
    let rc = 0;
    while (off < buf.length) {
      const n = this.native.sendmsg(this.fd, off === 0 ? buf : buf.subarray(off), buf.length - off, off === 0 ? fds : []);
      if (n === -EINTR) continue;
      if (n === -EAGAIN && !blocking) {
        blocking = true;
        this.native.setNonblocking(this.fd, false);
        continue;
      }
      if (n < 0) {
        rc = n;
        break;
      }
      off += n;
    }
    if (blocking) this.native.setNonblocking(this.fd, true);
    if (rc < 0) this.log.warn({ request: requestName(request), errno: -rc }, 'vhost-user: send failed');
    return rc;
  }

  /** Stop reading, close the socket and every fd of undelivered messages. Emits 'close' once idle. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.eof = true;
    if (this.poll) this.native.pollStop(this.poll);
    this.poll = null;
    this.native.close(this.fd);
    this.closeFds(this.fds);
    this.fds = [];
    for (const m of this.queue.splice(0)) this.closeFds(m.fds);
    this.maybeEmitClose();
  }

  get isClosed(): boolean {
    return this.closed || this.eof;
  }

  private pausing: (() => void) | null = null;

  /**
   * Stop reading at the next message boundary, once every message read so far is handled
   * (the keeper re-executing itself hands the socket over between two messages; whatever QEMU
   * sends meanwhile waits in the socket for the new image).
   */
  quiesce(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.pausing = resolve;
      this.checkPaused();
    });
  }

  /** Read again after quiesce() (the hand-over did not happen). */
  resume(): void {
    if (this.poll || this.eof || this.closed || !this.handler) return;
    const handler = this.handler;
    this.handler = null;
    this.start(handler);
  }

  private checkPaused(): void {
    if (!this.pausing || this.header || this.got > 0 || this.pumping || this.queue.length > 0) return;
    if (this.poll) this.native.pollStop(this.poll);
    this.poll = null;
    const done = this.pausing;
    this.pausing = null;
    done();
  }

  private readAvailable(): void {
    while (!this.eof) {
      // Quiescing: read no further than the end of the current message.
      if (this.pausing && !this.header && this.got === 0) return;
      const target = this.readTarget();
      const n = this.native.recvmsg(this.fd, target, this.fdBuf, this.msgFlags);
      for (const f of this.fdBuf) if (f >= 0) this.fds.push(f);
      if (n > 0 && (this.msgFlags[0]! & MSG_CTRUNC) !== 0) this.fdsLost = true;
      if (n === -EAGAIN) return;
      if (n === -EINTR) continue;
      if (n < 0) {
        this.log.error({ errno: -n }, 'vhost-user: recvmsg failed');
        this.onEof();
        return;
      }
      if (n === 0) {
        if (this.header || this.got > 0) this.log.warn({ got: this.got }, 'vhost-user: EOF inside a message');
        this.onEof();
        return;
      }
      this.got += n;
      this.advance();
    }
  }

  /** The part of a buffer the next read may fill: never beyond the current message's end. */
  private readTarget(): Uint8Array {
    if (!this.header) return this.headerBuf.subarray(this.got);
    if (this.header.size > MAX_PAYLOAD) return this.discardBuf.subarray(0, Math.min(MAX_PAYLOAD, this.header.size - this.got));
    return this.payload.subarray(this.got);
  }

  private advance(): void {
    if (!this.header) {
      if (this.got < HEADER_SIZE) return;
      this.header = decodeHeader(this.headerBuf);
      this.got = 0;
      this.payload = this.header.size <= MAX_PAYLOAD ? new Uint8Array(this.header.size) : new Uint8Array(0);
    }
    if (this.got < this.header.size) return;
    const oversized = this.header.size > MAX_PAYLOAD;
    let fds = this.fds;
    if (oversized) {
      this.log.warn({ request: requestName(this.header.request), size: this.header.size, fds: fds.length },
        'vhost-user: oversized message discarded');
      this.closeFds(fds);
      fds = [];
    }
    this.queue.push({ header: this.header, payload: this.payload, fds, oversized, ...(this.fdsLost ? { fdsLost: true } : {}) });
    this.header = null;
    this.payload = new Uint8Array(0);
    this.got = 0;
    this.fds = [];
    this.fdsLost = false;
    void this.pump();
  }

  private onEof(): void {
    if (this.eof) return;
    this.eof = true;
    if (this.poll) this.native.pollStop(this.poll);
    this.poll = null;
    this.closeFds(this.fds);
    this.fds = [];
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (let m = this.queue.shift(); m; m = this.queue.shift()) {
        try {
          await this.handler!(m);
        } catch (e) {
          this.log.error({ err: e, request: requestName(m.header.request) }, 'vhost-user: message handler threw');
        }
      }
    } finally {
      this.pumping = false;
    }
    this.maybeEmitClose();
    this.checkPaused();
  }

  private maybeEmitClose(): void {
    if (!this.eof || this.pumping || this.queue.length > 0 || this.closeEmitted) return;
    this.closeEmitted = true;
    if (!this.closed) {
      this.closed = true;
      this.native.close(this.fd);
    }
    this.emit('close');
  }

  private closeFds(fds: number[]): void {
    for (const f of fds) if (f >= 0) this.native.close(f);
  }
}
