// The keeper <-> worker control channel: a SOCK_SEQPACKET socketpair carrying one JSON object
// per packet, with the packet's file descriptors (SCM_RIGHTS) attached to it. Packets keep
// their boundaries, so a message and its fds always arrive together and in order.
// Control traffic only: guest data never crosses this channel. What the messages are is
// worker-channel.ts's; each side's channel sends its own union and decodes the other's.

import { EventEmitter } from 'node:events';
import { watchFd, type NativeBinding, type PollHandle } from '../native/binding';
import type { Logger } from '../log';
import { E, MSG_CTRUNC } from '../linux/constants';

/** Largest packet (JSON text). Fd batches are split by the sender well below this. */
export const MAX_PACKET = 64 * 1024;
/** Most fds one packet carries (the kernel's SCM_MAX_FD is 253). */
export const MAX_FDS_PER_PACKET = 250;

/** Any message: an object whose `t` names it. */
export interface Message { readonly t: string }

/**
 * fdsLost: the packet came with fewer fds than were sent (MSG_CTRUNC: our fd table was full);
 * the kernel installs a packet's fds in order, so the ones in fds are the first ones sent.
 */
export type ChannelHandler<In> = (msg: In, fds: number[], fdsLost: boolean) => void;

/** A channel end that sends Out and receives In (decode refuses what is not an In: null). */
export class ControlChannel<In extends Message, Out extends Message> extends EventEmitter {
  private poll: PollHandle | null = null;
  private readonly buf = new Uint8Array(MAX_PACKET);
  private readonly fdBuf = new Int32Array(MAX_FDS_PER_PACKET + 3);
  private readonly flags = new Int32Array(1);
  private closed = false;

  constructor(private readonly native: NativeBinding, readonly fd: number, private readonly log: Logger,
    private readonly decode: (raw: unknown) => In | null) {
    super();
  }

  private handler: ChannelHandler<In> | null = null;

  /** Start delivering messages to handler (synchronously, in order). 'close' is emitted at EOF. */
  start(handler: ChannelHandler<In>): void {
    this.handler = handler;
    this.native.setNonblocking(this.fd, true);
    this.poll = watchFd(this.native, this.fd, 1, (status) => {
      if (status < 0) return this.shut('poll error');
      this.drain();
    });
  }

  /**
   * Deliver every packet already queued, now. The keeper calls it when the worker has died, so
   * that the worker's last fd registrations are taken in before a new worker is fed.
   */
  drain(): void {
    const handler = this.handler;
    if (!handler || this.closed) return;
    {
      for (;;) {
        const n = this.native.recvmsg(this.fd, this.buf, this.fdBuf, this.flags);
        if (n === -E.EAGAIN) return;
        if (n <= 0) return this.shut(n === 0 ? 'eof' : `recvmsg errno ${-n}`);
        const fds: number[] = [];
        for (const f of this.fdBuf) if (f >= 0) fds.push(f);
        const fdsLost = (this.flags[0]! & MSG_CTRUNC) !== 0;
        let raw: unknown;
        try {
          raw = JSON.parse(Buffer.from(this.buf.buffer, 0, n).toString('utf8'));
        } catch {
          raw = undefined;
        }
        const msg = this.decode(raw);
        if (msg === null) {
          const t = typeof raw === 'object' && raw !== null ? String((raw as { t?: unknown }).t).slice(0, 40) : undefined;
          this.log.error({ bytes: n, t, fds: fds.length }, 'control channel: a packet that is no message of this protocol; dropped');
          for (const f of fds) this.native.close(f);
          continue;
        }
        handler(msg, fds, fdsLost);
        if (this.closed) return;
      }
    }
  }

  /** Send one message with fds (the fds stay ours: the receiver gets duplicates). */
  send(msg: Out, fds: readonly number[] = []): boolean {
    if (this.closed) return false;
    const bytes = Buffer.from(JSON.stringify(msg), 'utf8');
    if (bytes.length > MAX_PACKET || fds.length > MAX_FDS_PER_PACKET) throw new Error(`control message ${msg.t} too large`);
    // The socket is nonblocking for receiving; a full send buffer is rare (small messages), so
    // wait it out rather than reorder messages.
    let r = this.native.sendmsg(this.fd, bytes, bytes.length, fds);
    if (r === -E.EAGAIN) {
      this.native.setNonblocking(this.fd, false);
      r = this.native.sendmsg(this.fd, bytes, bytes.length, fds);
      this.native.setNonblocking(this.fd, true);
    }
    if (r === bytes.length) return true;
    // The peer is gone (a worker the keeper just dropped, or the keeper): its end shows as EOF
    // on the next read, which is where the channel is closed; nothing to warn about.
    if (r === -E.EPIPE || r === -E.ECONNRESET) {
      this.log.debug({ t: msg.t, errno: -r }, 'control channel: peer gone');
      return false;
    }
    this.log.warn({ t: msg.t, errno: -r }, 'control channel: send failed');
    return false;
  }

  /**
   * Stop reading, after taking in every packet already queued, and leave the fd open (a keeper
   * about to re-execute hands it to its next image; what the peer sends from now on waits in the
   * socket for that image). start() resumes.
   */
  detach(): void {
    this.drain();
    if (this.poll) this.native.pollStop(this.poll);
    this.poll = null;
  }

  close(): void {
    this.shut('closed');
  }

  get isClosed(): boolean { return this.closed; }

  private shut(why: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll) this.native.pollStop(this.poll);
    this.poll = null;
    this.native.close(this.fd);
    this.emit('close', why);
  }
}
