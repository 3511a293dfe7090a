// The keeper as a service (systemd.service(5) Type=notify): readiness and status lines
// (sd_notify(3)), the fds the service manager passes (sd_listen_fds(3): a socket unit's
// listening socket for --fd, or the fd store's after a keeper restart), and the fd park
// (fd-park.ts) when the service has an fd store.

import type { Config } from '../config';
import type { Logger } from '../log';
import type { NativeBinding } from '../native/binding';
import { FdPark, restore, type Restored } from './fd-park';
import type { HandoverV2 } from './reexec';
import { Notifier, takeListenFds, type ListenFd } from './systemd';

export class Service {
  readonly notifier: Notifier;
  /** What a keeper restarted by the service manager resumes from (null: a fresh start). */
  readonly restored: Restored | null;
  /** The fd park, once started (startPark). */
  park: FdPark | null = null;
  private readonly sockets: ListenFd[] = [];
  /** FileDescriptorStoreMax= as the service manager says it ($FDSTORE, systemd 254 and later). */
  private readonly limit: number | undefined;
  private readonly parkWanted: boolean;

  constructor(cfg: Config, private readonly native: NativeBinding, private readonly log: Logger, env: NodeJS.ProcessEnv = process.env) {
    this.notifier = new Notifier(native, env);
    const fdstore = env.FDSTORE !== undefined && /^[0-9]+$/.test(env.FDSTORE) ? Number(env.FDSTORE) : undefined;
    this.limit = fdstore;
    this.parkWanted = cfg.fdStore ?? (fdstore !== undefined && fdstore > 0);
    if (this.parkWanted && !this.notifier.enabled) throw new Error('--fd-store needs a service manager: $NOTIFY_SOCKET is not set');
    const passed = takeListenFds(native, env);
    this.restored = restore(native, log, passed, this.sockets);
    // A restarted keeper serves the connection it had; a socket unit's listener is not ours then.
    if (this.restored) this.closeSockets();
    else if (this.sockets.length > 0) log.info({ sockets: this.sockets }, 'sockets passed by the service manager');
  }

  /** Close the passed sockets except keep (the one --fd names). */
  closeSockets(keep = -1): void {
    for (const s of this.sockets.splice(0)) if (s.fd !== keep) this.native.close(s.fd);
  }

  /**
   * Start parking when the service has an fd store: from the record of the keeper before us
   * (restored), of the image before us (a re-exec's hand-over h with its parkFd), or afresh.
   */
  startPark(h: HandoverV2 | undefined): FdPark | null {
    if (!this.parkWanted && !this.restored) return null;
    const r = this.restored;
    if (r) {
      this.park = FdPark.adopt(this.native, this.log, this.notifier, this.limit, r.handover.parkFd!, r.handover.plane.fds, r.names);
    } else if (h?.parkFd !== undefined) {
      this.park = FdPark.adopt(this.native, this.log, this.notifier, this.limit, h.parkFd, h.plane.fds);
    } else {
      this.park = FdPark.create(this.native, this.log, this.notifier, this.limit);
    }
    this.log.info({ limit: this.limit ?? 'not told' }, 'parking the keeper\'s state in the service manager\'s fd store');
    return this.park;
  }

  /** A clean stop: nothing left in the fd store, and the service manager told so. */
  stopping(why: string): void {
    this.park?.clear();
    this.notifier.stopping(why);
  }
}
