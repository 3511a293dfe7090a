// The fd plan: how RLIMIT_NOFILE is shared out. The keeper has its limit; each worker lowers its
// own (soft and hard) to the keeper's less a headroom before it reads any guest request; the
// guest's fd budget (passthrough/budget.ts) is the worker's limit less what the worker needs for
// itself. The keeper holds at most one duplicate per fd of its worker, so it can never run out
// of fds before the worker does, whatever the guest makes the worker hold.

import { MAX_MEM_SLOTS } from '../vhost/backend';
import { MAX_FDS_PER_PACKET } from '../protocol/channel';

/** Node's own fds, one-off ones (a SYNCFS, a truncate, a GETLK question), the maps, mount fds. */
const OWN_FDS = 256;
/** Per queue: kick, call and err eventfds, the in-flight region and the journal. */
const FDS_PER_QUEUE = 5;
/** What the keeper has besides: the connection, the device region, the pid file, the spare's and
 *  an upgrade's channels. */
const KEEPER_EXTRA_FDS = 16;
/** A guest fd budget below this is a configuration error. */
export const MIN_GUEST_FDS = 128;

/** Fds a worker keeps for itself: its own, the guest memory regions, every queue's. */
export function workerReserve(queues: number): number {
  return OWN_FDS + MAX_MEM_SLOTS + FDS_PER_QUEUE * queues;
}

/**
 * What the keeper keeps beyond its worker's limit: as much as the worker keeps for itself, its
 * own extras, and one control packet's fds, received before that packet's dels are applied.
 */
export function keeperHeadroom(queues: number): number {
  return workerReserve(queues) + KEEPER_EXTRA_FDS + MAX_FDS_PER_PACKET;
}

/**
 * RLIMIT_NOFILE of the worker and the guest's fd budget, for a keeper (or a --no-keeper daemon)
 * whose own limit is nofile, with `queues` queues (hiprio and request queues); a string says why
 * nofile is too small.
 */
export function planFds(nofile: number, keeper: boolean, queues: number): { worker: number; guestFds: number } | string {
  const worker = keeper ? nofile - keeperHeadroom(queues) : nofile;
  const guestFds = worker - workerReserve(queues);
  if (guestFds < MIN_GUEST_FDS) {
    const need = MIN_GUEST_FDS + workerReserve(queues) + (keeper ? keeperHeadroom(queues) : 0);
    return `RLIMIT_NOFILE ${nofile} is too small: the daemon needs at least ${need} (see --rlimit-nofile)`;
  }
  return { worker, guestFds };
}
