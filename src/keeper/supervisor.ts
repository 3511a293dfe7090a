// Worker supervision: which worker serves the rings, which one is loading to take over, and what
// happens when any of them dies, hangs or never reports. Every worker the keeper starts is
// watched from the instant it is spawned until it is gone (worker-process.ts), in three roles:
//
//   current   the worker that owns the rings (recovering, serving, or retiring in an upgrade)
//   incoming  the worker a planned upgrade (SIGHUP) loads from the code now on disk
//   spare     a loaded, idle worker that takes over at once after a crash
//
// Deadlines (--worker-timeout): a worker that does not load, does not finish recovering, does
// not finish retiring, or stops answering pings while serving (the watchdog) is killed and
// handled like any other death. One that does not die even then (stuck in the kernel) is given
// up after another timeout, so the guest is never left waiting on it.
//
// What happens at a death, by role:
//   current   a crash: a loaded worker takes over (the incoming one, else the spare, even one
//             of the code before an upgrade), else one that is loading, else a new one
//   incoming  the upgrade starts another (UPGRADE_ATTEMPTS in all); when the current worker was
//             already asked to retire one must come; else, after the last attempt, the upgrade
//             is abandoned and the current worker serves on
//   spare     another is loaded later (backing off while spares keep dying)
// During an upgrade the old code's spare stays until the incoming worker has loaded, so that a
// crash meanwhile never waits for a Node start-up; the upgrade goes on after it.
// Each decision is logged with the pids involved.

import type { Logger } from '../log';
import type { NativeBinding } from '../native/binding';
import type { ToKeeper } from '../protocol/worker-channel';
import { WorkerProcess, type Exit, type Phase } from './worker-process';
import { wallMs32 } from '../state/inflight';

/** What a worker is started as (it decides the log line and which test holds apply). */
export type Role = 'worker' | 'incoming' | 'spare';

export interface SupervisorHooks {
  /** Start a worker process for role (it loads and then waits, idle). Null: it could not. */
  spawn(role: Role): WorkerProcess | null;
  /** Make w the worker that serves the rings: hand it the maps, the fds and the rings
   *  (stuckBefore: its predecessor was killed as stuck, see WorkerProcess.stuckBefore). */
  feed(w: WorkerProcess, recover: boolean, stuckBefore?: number): void;
  /** A packet from a worker that is not about its life (fd registrations, ring-stopped, ...);
   *  fdsLost: fds sent with it did not arrive (MSG_CTRUNC). */
  message(w: WorkerProcess, m: ToKeeper, fds: number[], fdsLost: boolean): void;
}

/** A worker an earlier image of this keeper left running: its pid, our end of its channel, and
 *  what its hello said: pings, maps (absent: an image before them). */
export interface Adoptable { pid: number; channelFd: number; pings?: boolean; maps?: boolean }

export interface SupervisorOptions {
  native: NativeBinding;
  log: Logger;
  /** Keep a spare worker loaded (default true). */
  spare: boolean;
  /** The deadline of every phase that must end by itself, and of the watchdog (ms). */
  timeoutMs: number;
  /** The share is served with UID/GID or xattr mapping: a worker must say it applies them (hello.maps). */
  needsMaps?: boolean;
}

/** After a spare was used, wait this long before loading the next (not to slow the recovery). */
const SPARE_DELAY_MS = 200;
/** Longest wait before another spare after spares kept dying. */
const SPARE_BACKOFF_MAX_MS = 30_000;
/** Incoming workers a planned upgrade starts before it gives up and keeps the current one. */
export const UPGRADE_ATTEMPTS = 3;
/** When a worker cannot be started at all (EMFILE, EAGAIN): wait before trying again. */
const RESPAWN_DELAY_MS = 500;
/**
 * Workers that may die one after another before serving (while recovering) and be replaced at
 * once; after that the next one waits, from CRASH_LOOP_FIRST_MS doubling to CRASH_LOOP_MAX_MS. A
 * worker that dies on what it adopts (a bug, a request that kills it every time) would otherwise
 * be replaced in a tight loop, each start costing a Node start-up of CPU.
 */
const CRASH_LOOP_FREE = 3;
const CRASH_LOOP_FIRST_MS = 100;
const CRASH_LOOP_MAX_MS = 5_000;

export class Supervisor {
  current: WorkerProcess | null = null;
  private incoming: WorkerProcess | null = null;
  private spare: WorkerProcess | null = null;
  /** Workers that were killed or are retiring and must still be seen gone. */
  private readonly all = new Set<WorkerProcess>();
  /**
   * A planned upgrade under way: how many incoming workers it started, and whether it was asked
   * for again meanwhile.
   */
  private upgrade: { attempts: number; again: boolean } | null = null;
  /**
   * The code generation: each upgrade starts a new one, and a worker runs the code of the
   * generation it was started in. The spare of an older generation stays, as the fallback for a
   * crash, until the incoming worker has loaded.
   */
  private gen = 0;
  /** 'handover': the keeper is about to re-execute itself; 'closing': going away. */
  private mode: 'running' | 'handover' | 'closing' = 'running';
  /** The workers left running for the next keeper image (re-exec), while mode is 'handover'. */
  private leaving: WorkerProcess | null = null;
  private leavingSpare: WorkerProcess | null = null;
  private spareTimer: NodeJS.Timeout | null = null;
  private spareFailures = 0;
  private respawnTimer: NodeJS.Timeout | null = null;
  /** Current workers in a row that died before they served (reset when one serves). */
  private diedRecovering = 0;
  private readonly tick: NodeJS.Timeout;
  private pingSeq = 0;
  /** Worker starts so far (1 = the first). */
  starts = 0;

  constructor(private readonly o: SupervisorOptions, private readonly hooks: SupervisorHooks) {
    // One timer for every deadline and the watchdog's pings.
    this.tick = setInterval(() => this.onTick(), Math.max(50, Math.min(1000, o.timeoutMs / 4)));
    this.tick.unref();
  }

  /**
   * Start serving: adopt the workers an earlier image of this keeper left running (re-exec), or
   * start one. True when any was adopted (they run the code of that image).
   */
  start(recover: boolean, adopt: { worker?: Adoptable; spare?: Adoptable } = {}): boolean {
    if (adopt.spare) {
      const s = this.adopt(adopt.spare, 'idle');
      this.spare = s;
      this.o.log.info({ pid: s.pid }, 'spare worker adopted');
    }
    if (adopt.worker) {
      this.current = this.adopt(adopt.worker, 'serving');
      this.o.log.info({ pid: this.current.pid }, 'worker adopted');
    } else {
      this.takeOver(null, recover);
    }
    this.scheduleSpare();
    return adopt.worker !== undefined || adopt.spare !== undefined;
  }

  private adopt(a: Adoptable, phase: Phase): WorkerProcess {
    const w = WorkerProcess.adopt(this.o.native, this.o.log, a.pid, a.channelFd, phase);
    w.answersPings = a.pings === true;
    w.appliesMaps = a.maps === true;
    this.watch(w);
    // An image before the mapping layers could not have been asked for them: its workers serve
    // unmapped. Replaced as after a crash (the guest sees nothing but the wait).
    if (this.o.needsMaps && !w.appliesMaps) {
      this.o.log.error({ pid: w.pid }, 'the adopted worker does not apply UID/GID or xattr mapping (from a keeper image before them); replacing it');
      w.kill();
    }
    return w;
  }

  /** Planned upgrade: load a worker from the code now on disk; it takes over once loaded. */
  startUpgrade(): void {
    if (this.mode !== 'running') return;
    if (!this.current) {
      this.o.log.info('upgrade: no worker is serving; the next one runs the code now on disk');
      this.dropSpare();
      return;
    }
    if (this.upgrade) {
      // One more after this one (the code on disk may have changed again).
      this.upgrade.again = true;
      return;
    }
    this.upgrade = { attempts: 0, again: false };
    this.gen++;
    // A pending spare would load the new code: start the incoming worker first.
    this.cancelSpareTimer();
    this.startIncoming();
  }

  /**
   * Get ready for the keeper's re-exec: leave the serving worker and a loaded spare running for
   * the next keeper image (their channels are no longer read here: what they send from now on
   * waits in the socket for that image), and stop every other worker. A current worker already
   * retiring in an upgrade finishes and exits first. True when the serving worker is left.
   */
  async handover(): Promise<boolean> {
    this.mode = 'handover';
    this.upgrade = null;
    this.cancelSpareTimer();
    const w = this.current;
    const keep = w !== null && w.phase !== 'retiring' && w.phase !== 'dead' && !w.channel.isClosed ? w : null;
    const spare = this.spare && this.spare.phase === 'idle' ? this.spare : null;
    if (!spare) this.dropSpare();
    const inc = this.incoming;
    this.incoming = null;
    if (inc) { inc.channel.close(); inc.kill(); }
    await Promise.all([...this.all].filter((x) => x !== keep && x !== spare).map((x) => x.gone));
    if (this.current?.phase === 'dead') this.current = null;
    const alive = (x: WorkerProcess | null): x is WorkerProcess => x !== null && (x.phase as Phase) !== 'dead' && !x.channel.isClosed;
    this.leaving = alive(keep) ? keep : null;
    this.leavingSpare = alive(spare) ? spare : null;
    this.leaving?.channel.detach();
    this.leavingSpare?.channel.detach();
    return this.leaving !== null;
  }

  /** The re-exec failed: serve again, with the workers we still have or a new one. */
  resume(): void {
    this.mode = 'running';
    const w = this.leaving;
    // Detached for the hand-over: read them again (a death meanwhile shows as EOF, then gone).
    this.leavingSpare?.relisten();
    this.leaving = null;
    this.leavingSpare = null;
    if (w) w.relisten();
    else this.takeOver(null, true);
    this.scheduleSpare();
  }

  /** The workers the next keeper image is to adopt (after handover()). */
  get handedOver(): { worker: WorkerProcess | null; spare: WorkerProcess | null } {
    return { worker: this.leaving, spare: this.leavingSpare };
  }

  /** Stop everything for good (the connection to QEMU is gone). */
  async close(): Promise<void> {
    this.mode = 'closing';
    clearInterval(this.tick);
    if (this.spareTimer) clearTimeout(this.spareTimer);
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    const all = [...this.all];
    for (const w of all) { w.channel.close(); w.kill(); }
    await Promise.all(all.map((w) => w.gone));
  }

  // ------------------------------------------------------------------ lifecycle

  private spawn(role: Role): WorkerProcess | null {
    const w = this.hooks.spawn(role);
    if (!w) return null;
    w.gen = this.gen;
    this.starts++;
    // A spare logs 'worker started' when it takes over (operators and tests follow the worker
    // that serves, or is about to).
    if (role === 'spare') this.o.log.info({ pid: w.pid }, 'spare worker loading');
    else this.o.log.info({ ...(role === 'incoming' ? { upgrade: true } : {}), pid: w.pid, start: this.starts }, 'worker started');
    this.watch(w);
    return w;
  }

  private watch(w: WorkerProcess): void {
    this.all.add(w);
    w.listen((m, fds, fdsLost) => this.onMessage(w, m, fds, fdsLost));
    void w.gone.then((exit) => {
      this.all.delete(w);
      this.onGone(w, exit);
    });
  }

  private onMessage(w: WorkerProcess, m: ToKeeper, fds: number[], fdsLost: boolean): void {
    switch (m.t) {
      case 'hello':
        // A worker fed before it loaded (no loaded one was at hand) starts recovering only now:
        // its recovery gets the whole deadline, its Node start-up had one of its own.
        if (w.phase === 'recovering') w.phaseSince = performance.now();
        // Workers before the watchdog do not answer pings: they are not pinged.
        w.answersPings = m.pings === true;
        w.appliesMaps = m.maps === true;
        if (this.o.needsMaps && !w.appliesMaps) {
          // A release before the mapping layers (older code on disk) would serve the share
          // unmapped. Its hello comes before it reads anything it was fed (worker.ts), so it
          // goes before it serves, but for what its first event-loop turns may answer.
          this.o.log.error({ pid: w.pid }, 'the worker does not apply UID/GID or xattr mapping (an older release on disk?); killing it');
          w.kill();
          break;
        }
        if (w.phase === 'loading') w.phase = 'idle';
        if (w === this.spare) this.spareFailures = 0;
        if (w === this.incoming) {
          // The new code loads: the spare of the old code is no longer the best fallback.
          if (this.spare && this.spare.gen !== this.gen) this.dropSpare();
          this.scheduleSpare();
          this.maybeSwap();
        }
        break;
      case 'ready':
        if (w.phase === 'recovering') this.serving(w);
        break;
      case 'pong':
      case 'bye':
        break;
      default:
        this.hooks.message(w, m, fds, fdsLost);
        return;
    }
    for (const fd of fds) this.o.native.close(fd);
  }

  private serving(w: WorkerProcess): void {
    w.phase = 'serving';
    if (w === this.current) this.diedRecovering = 0;
    this.o.log.info({ pid: w.pid }, 'worker serving');
    // An upgrade asked for while this worker was recovering goes on now.
    this.maybeSwap();
  }

  /** The incoming worker has loaded and the current one serves: ask the current one to go. */
  private maybeSwap(): void {
    const inc = this.incoming;
    const cur = this.current;
    if (!inc || inc.phase !== 'idle' || this.mode !== 'running') return;
    if (!cur) {
      this.takeOver(null, true);
      return;
    }
    if (cur.phase === 'serving') this.retireCurrent();
  }

  /** Ask the current worker to finish what it popped and exit; its successor takes over then. */
  private retireCurrent(): void {
    const cur = this.current!;
    cur.phase = 'retiring';
    if (!cur.send({ t: 'shutdown' })) cur.kill();
  }

  /**
   * Give the upgrade an incoming worker: the spare when it is loaded (a spare started during an
   * upgrade runs the new code), else a new one.
   */
  private startIncoming(): void {
    const up = this.upgrade!;
    up.attempts++;
    if (this.spare && this.spare.gen === this.gen && this.spare.phase === 'idle') {
      this.incoming = this.spare;
      this.spare = null;
      this.o.log.info({ pid: this.incoming.pid }, 'the spare (new code) becomes the incoming worker');
      this.scheduleSpare();
      this.maybeSwap();
      return;
    }
    this.incoming = this.spawn('incoming');
    if (!this.incoming) this.incomingLost(null, 'could not be started');
  }

  /** The incoming worker of an upgrade died or was killed before it took over. */
  private incomingLost(w: WorkerProcess | null, why: string): void {
    const up = this.upgrade;
    this.incoming = null;
    if (!up || this.mode !== 'running') return;
    const cur = this.current;
    // Asked to retire already (or gone): a successor must come, whatever the attempts.
    const mustReplace = !cur || cur.phase === 'retiring';
    if (!mustReplace && up.attempts >= UPGRADE_ATTEMPTS) {
      this.o.log.error({ pid: w?.pid, why, attempts: up.attempts, serving: cur.pid },
        'upgrade abandoned: the incoming worker was lost every time; the serving worker serves on with the code it has');
      this.upgrade = null;
      this.scheduleSpare();
      return;
    }
    this.o.log.warn({ pid: w?.pid, why, attempt: up.attempts, ...(mustReplace ? {} : { serving: cur.pid }) },
      mustReplace ? 'incoming worker lost after the serving one was asked to retire; starting another'
        : 'incoming worker lost during the upgrade; starting another (the serving worker serves meanwhile)');
    if (!cur) this.takeOver(null, true);
    else if (this.respawnTimer === null) this.startIncoming();
  }

  /**
   * Pick the next current worker and feed it: of the incoming worker and the spare, one that has
   * loaded (the incoming one first), else whichever is loading, else a new one: the guest waits
   * for a Node start-up only when no loaded worker is at hand, whatever code it runs. `was`:
   * the worker that died (null at start).
   */
  private takeOver(was: WorkerProcess | null, recover: boolean): void {
    if (this.mode !== 'running' || this.current) return;
    const inc = this.incoming;
    const spare = this.spare;
    let next: WorkerProcess | null;
    if (inc && inc.phase === 'idle') next = inc;
    else if (spare && spare.phase === 'idle') next = spare;
    else next = inc ?? spare ?? this.spawn('worker');
    if (next && next === inc) {
      this.incoming = null;
    } else if (next && next === spare) {
      this.spare = null;
      this.o.log.info({ spare: true, pid: next.pid, start: this.starts }, 'worker started');
      // A spare of the new code ends the upgrade; the incoming worker stays on as the spare.
      if (inc && spare.gen === this.gen) { this.incoming = null; this.spare = inc; }
    }
    if (next && this.upgrade && next.gen === this.gen) {
      // The upgrade is done: the worker that serves now runs the new code. (When an older
      // spare took over, the incoming worker swaps in once it has loaded and that one serves.)
      const again = this.upgrade.again;
      this.upgrade = null;
      if (again) queueMicrotask(() => this.startUpgrade());
    }
    if (!next) {
      this.respawnLater(RESPAWN_DELAY_MS, was);
      return;
    }
    this.current = next;
    next.phase = 'recovering';
    this.hooks.feed(next, recover || was !== null, was?.stuckBefore ?? undefined);
    this.scheduleSpare();
  }

  /** No worker could be started, or workers keep dying: try again later (never in a tight loop). */
  private respawnLater(inMs: number, was: WorkerProcess | null): void {
    if (this.respawnTimer || this.mode !== 'running') return;
    if (inMs === RESPAWN_DELAY_MS) this.o.log.error({ inMs }, 'no worker could be started; trying again');
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = null;
      if (!this.current) this.takeOver(was, true);
      else if (this.upgrade && !this.incoming) this.startIncoming();
    }, RESPAWN_DELAY_MS);
  }

  private onGone(w: WorkerProcess, exit: Exit): void {
    // Going away: every worker is being stopped on purpose.
    if (this.mode === 'closing') return;
    if (w === this.leavingSpare) return;
    if (w === this.spare) {
      this.spare = null;
      this.spareFailures++;
      this.o.log.warn({ pid: w.pid, ...exit }, 'spare worker exited');
      this.scheduleSpare();
      return;
    }
    if (w === this.incoming) {
      this.incomingLost(w, exit.signal ? `killed by ${exit.signal}` : `exit ${exit.code}`);
      return;
    }
    // The next keeper image owns it now; it will see it gone and start a worker.
    if (w === this.leaving || w === this.leavingSpare) return;
    if (w !== this.current) return; // dropped earlier (an old spare, an incoming at a re-exec)
    this.current = null;
    const planned = w.diedIn === 'retiring' && !w.killed && (exit.code === 0 || (exit.code === null && exit.signal === null));
    if (planned) this.o.log.info({ pid: w.pid }, 'worker retired');
    else this.o.log.warn({ pid: w.pid, ...exit, was: w.diedIn }, 'worker exited; starting a new one');
    if (w.diedIn === 'recovering' && ++this.diedRecovering > CRASH_LOOP_FREE) {
      const inMs = Math.min(CRASH_LOOP_MAX_MS, CRASH_LOOP_FIRST_MS * 2 ** (this.diedRecovering - CRASH_LOOP_FREE - 1));
      this.o.log.error({ inRow: this.diedRecovering, inMs }, 'workers keep dying before they serve; waiting before the next');
      this.respawnLater(inMs, w);
      return;
    }
    this.takeOver(w, true);
  }

  // ------------------------------------------------------------------ spares

  private scheduleSpare(): void {
    if (!this.o.spare || this.spare || this.spareTimer || this.mode !== 'running') return;
    const delay = Math.min(SPARE_BACKOFF_MAX_MS, SPARE_DELAY_MS * 2 ** Math.min(this.spareFailures, 8));
    this.spareTimer = setTimeout(() => {
      this.spareTimer = null;
      if (this.spare || this.mode !== 'running') return;
      this.spare = this.spawn('spare');
    }, delay);
  }

  private cancelSpareTimer(): void {
    if (this.spareTimer) clearTimeout(this.spareTimer);
    this.spareTimer = null;
  }

  private dropSpare(): void {
    this.cancelSpareTimer();
    const s = this.spare;
    this.spare = null;
    if (s) { s.channel.close(); s.kill(); }
  }


  // ------------------------------------------------------------------ deadlines and the watchdog

  /**
   * Kill w as stuck (it stopped answering, or a ring stop waited too long): its successor answers
   * what it popped more than a timeout ago with an error instead of running it again.
   */
  killStuck(w: WorkerProcess | null = this.current): void {
    if (!w || w.phase === 'dead' || w.killedAt !== null) return;
    w.stuckBefore = (wallMs32() - this.o.timeoutMs) >>> 0;
    w.kill();
  }

  get timeoutMs(): number { return this.o.timeoutMs; }

  private onTick(): void {
    const now = performance.now();
    const t = this.o.timeoutMs;
    for (const w of this.all) {
      if (w.phase === 'dead') continue;
      if (w.killedAt !== null) {
        if (now - w.killedAt > t) {
          this.o.log.error({ pid: w.pid, phase: w.phase }, 'worker does not die (stuck in the kernel?); going on without it');
          w.abandon();
        }
        continue;
      }
      if (w === this.leaving || w === this.leavingSpare) continue;
      const late = (what: string): void => {
        this.o.log.warn({ pid: w.pid, phase: w.phase, timeoutMs: t }, `worker ${what}; killing it`);
        w.kill();
      };
      const wedged = (): void => {
        this.o.log.warn({ pid: w.pid, timeoutMs: t }, 'worker stopped answering (watchdog); killing it');
        this.killStuck(w);
      };
      switch (w.phase as Phase) {
        case 'loading': if (now - w.phaseSince > t) late('did not load in time'); break;
        case 'recovering': if (now - w.phaseSince > t) late('did not finish recovering in time'); break;
        case 'retiring': if (now - w.phaseSince > t) late('did not finish retiring in time'); break;
        case 'idle':
        case 'serving':
          if (!w.answersPings) break;
          if (now - w.lastHeard > t) wedged();
          else w.send({ t: 'ping', n: ++this.pingSeq });
          break;
        default: break;
      }
    }
  }
}
