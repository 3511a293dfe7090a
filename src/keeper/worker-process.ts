// One worker process as the keeper sees it: its pid, its control channel, where it is in its
// life (Phase), and when it is gone. The supervisor (supervisor.ts) decides what each worker is
// for; this file only knows how a process is started, adopted, heard from and buried.
//
// A worker is gone only when BOTH its control channel has closed and its process has been
// reaped. The channel end is held by the worker alone, and a process's files are closed after
// its memory is released (do_exit: exit_mm before exit_files), so a closed channel means no
// thread of it can touch the rings or guest memory any more; the reap collects the process
// (which may be a launcher in front of the worker, as with a sandbox).

import { spawn } from 'node:child_process';
import type { NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import { ControlChannel, type ChannelHandler } from '../protocol/channel';
import { decodeToKeeper, type ToKeeper, type ToWorker } from '../protocol/worker-channel';

/** The keeper's end of a worker's channel. */
export type WorkerChannel = ControlChannel<ToKeeper, ToWorker>;

/**
 * Where a worker is in its life:
 *   loading     started; Node is loading our code (it has not said hello)
 *   idle        loaded and waiting: a spare, or the incoming worker of an upgrade
 *   recovering  fed the maps and rings; building its tables, re-running in-flight requests
 *   serving     serving the rings
 *   retiring    asked to finish what it popped and exit (planned upgrade)
 *   dead        channel closed and process reaped
 */
export type Phase = 'loading' | 'idle' | 'recovering' | 'serving' | 'retiring' | 'dead';

export interface Exit { code: number | null; signal: string | null }

/** How long a process may live on after its worker's channel closed before it is killed. */
const EXIT_GRACE_MS = 2000;
/** How often an adopted worker is looked for with waitpid once its channel has closed. */
const REAP_POLL_MS = 5;

export class WorkerProcess {
  private phaseNow: Phase = 'loading';
  /** performance.now() when the current phase began. */
  phaseSince = performance.now();
  /** performance.now() of the last packet from the worker (or of its start). */
  lastHeard = performance.now();
  /** When it was sent SIGKILL (performance.now()), if it was. */
  killedAt: number | null = null;
  /** The keeper killed it on purpose (a deadline, a dropped spare): its end was not its own. */
  killed = false;
  /** Killed as stuck (watchdog, ring stop not answered): what it popped before this time
   *  (wallMs32()) its successor answers with an error instead of re-running it. */
  stuckBefore: number | null = null;
  /** The code generation it runs (see Supervisor). */
  gen = 0;
  /** It answers 'ping' (it said so in its hello): the watchdog may judge it by its pongs. */
  answersPings = false;
  /** It applies the mapping layers (hello.maps, protocol version 4). */
  appliesMaps = false;
  /** The phase it was in when it was found gone. */
  diedIn: Phase = 'loading';
  /** Its exit status, once reaped (null, null: not known, e.g. an adopted worker). */
  exit: Exit | null = null;
  readonly gone: Promise<Exit>;
  private closed = false;
  private reaped: Exit | null = null;
  private settle!: (e: Exit) => void;
  private handler: ChannelHandler<ToKeeper> | null = null;

  private constructor(
    readonly pid: number,
    readonly channel: WorkerChannel,
    private readonly signal: (sig: NodeJS.Signals) => void,
  ) {
    this.gone = new Promise((resolve) => { this.settle = resolve; });
    channel.once('close', () => {
      this.closed = true;
      // Its launcher exits right after it (in a sandbox the process we reap is the launcher); a
      // process that closed its channel but lives on is of no use: make sure it goes.
      if (!this.reaped) setTimeout(() => { if (!this.reaped) this.sigkill(); }, EXIT_GRACE_MS).unref();
      this.maybeGone();
    });
  }

  get phase(): Phase { return this.phaseNow; }

  set phase(p: Phase) {
    if (this.phaseNow === 'dead') return;
    this.phaseNow = p;
    this.phaseSince = performance.now();
  }

  /**
   * Start c with the worker's end of a new channel as fd 3 (and c.fds from fd 4 on). Null: it
   * could not start.
   */
  static spawn(native: NativeBinding, log: Logger, c: { file: string; args: string[]; fds: readonly number[] }, env: NodeJS.ProcessEnv): WorkerProcess | null {
    const pair = new Int32Array(2);
    const r = native.socketpair(pair, true);
    if (r < 0) {
      log.error({ errno: -r }, 'cannot start a worker: socketpair failed');
      return null;
    }
    const [mine, theirs] = [pair[0]!, pair[1]!];
    let child;
    try {
      child = spawn(c.file, c.args, { stdio: ['ignore', 'inherit', 'inherit', theirs, ...c.fds], env });
    } catch (e) {
      native.close(mine);
      native.close(theirs);
      log.error({ err: e }, 'cannot start a worker: spawn failed');
      return null;
    }
    native.close(theirs);
    if (child.pid === undefined) {
      // spawn reports EMFILE, EAGAIN, ENOENT... through 'error', with no pid.
      child.once('error', (e) => log.error({ err: e }, 'cannot start a worker: spawn failed'));
      native.close(mine);
      return null;
    }
    const w = new WorkerProcess(child.pid, new ControlChannel(native, mine, log, decodeToKeeper), (sig) => { child.kill(sig); });
    child.once('exit', (code, signal) => w.onReaped({ code, signal }));
    return w;
  }

  /**
   * A worker an earlier image of this keeper started (a re-exec keeps the pid, so it is still
   * our child): libuv reaps only the children it spawned, so it is reaped with waitpid once its
   * channel has closed.
   */
  static adopt(native: NativeBinding, log: Logger, pid: number, channelFd: number, phase: Phase): WorkerProcess {
    const w = new WorkerProcess(pid, new ControlChannel(native, channelFd, log, decodeToKeeper), (sig) => {
      try { process.kill(pid, sig); } catch { /* already gone */ }
    });
    w.phase = phase;
    w.channel.once('close', () => {
      const poll = (): void => {
        const r = native.reap(pid);
        if (r === 0) setTimeout(poll, REAP_POLL_MS);
        else w.onReaped({ code: null, signal: null });
      };
      poll();
    });
    return w;
  }

  /** Deliver its packets to handler; every packet also counts as a sign of life. */
  listen(handler: ChannelHandler<ToKeeper>): void {
    this.handler = handler;
    this.relisten();
  }

  /** Read the channel again after ControlChannel.detach() (a re-exec that did not happen). */
  relisten(): void {
    const handler = this.handler;
    if (!handler || this.channel.isClosed) return;
    this.lastHeard = performance.now();
    this.channel.start((m, fds, fdsLost) => {
      this.lastHeard = performance.now();
      handler(m, fds, fdsLost);
    });
  }

  send(m: ToWorker, fds: readonly number[] = []): boolean {
    return this.channel.send(m, fds);
  }

  kill(): void {
    this.killed = true;
    this.sigkill();
  }

  private sigkill(): void {
    if (this.killedAt === null) this.killedAt = performance.now();
    if (!this.reaped) this.signal('SIGKILL');
  }

  /** Treat it as gone although it has not died (it is stuck in the kernel): see Supervisor. */
  abandon(): void {
    this.closed = true;
    if (!this.reaped) this.reaped = { code: null, signal: null };
    this.channel.close();
    this.maybeGone();
  }

  private onReaped(e: Exit): void {
    if (this.reaped) return;
    this.reaped = e;
    this.maybeGone();
  }

  private maybeGone(): void {
    if (!this.closed || !this.reaped || this.phaseNow === 'dead') return;
    this.exit = this.reaped;
    this.diedIn = this.phaseNow;
    this.phaseNow = 'dead';
    this.settle(this.reaped);
  }
}
