// A Transport that hands chains straight to a FuseSession, without rings: the fastest way to
// exercise the FUSE layer and the passthrough file system with real request bytes.
import type { FuseSession } from '../../src/fuse/session';
import type { DescChain } from '../../src/virtio/split-queue';
import type { Transport } from './fuse-client';

export function directTransport(session: FuseSession): Transport {
  let head = 0;
  return (queue, out, inLens) => new Promise((resolve) => {
    const readable = out.map((b) => new Uint8Array(b)); // copies: the session may keep views
    const writable = inLens.map((n) => new Uint8Array(n));
    const chain: DescChain = {
      head: head++ & 0xffff, readable, writable,
      readableLen: readable.reduce((n, b) => n + b.length, 0),
      writableLen: writable.reduce((n, b) => n + b.length, 0),
    };
    const complete = (len: number): void => resolve({ len, in: writable });
    if (queue === 0) session.handleHiprio(chain, complete);
    else session.handleRequest(chain, complete);
  });
}
