// A stand-in for systemd running the keeper as a Type=notify service with an fd store and
// Restart=on-failure, doing what the man pages document and no more:
//   - $NOTIFY_SOCKET: a unix datagram socket we bind; each datagram is newline-separated
//     VAR=VALUE assignments with fds as SCM_RIGHTS (sd_notify(3)). READY=1, STATUS=, STOPPING=1
//     are recorded. FDSTORE=1 stores the fds under FDNAME= ("stored" when none; an invalid name
//     drops the message's fds) up to FileDescriptorStoreMax=, and an fd whose open file
//     description is already stored is not stored again (sd_pid_notify_with_fds(3),
//     systemd.service(5)); FDSTOREREMOVE=1 closes every fd stored under FDNAME=. Fds sent
//     without FDSTORE=1 are closed. $FDSTORE carries FileDescriptorStoreMax= (systemd 254 on).
//   - When the main process dies other than by a clean stop, the datagrams it sent first are read
//     (systemd handles its notify socket before SIGCHLD), what is left of its process group is
//     killed and waited for (KillMode=control-group), and after RestartSec= it is started again
//     with the store passed from fd 3 on: LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID set to the
//     new process's own pid by a shell `exec` step (sd_listen_fds(3)).
//   - A clean exit (code 0) after STOPPING=1 empties the store, as a stopped unit does.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, type NativeBinding, type PollHandle } from '../../src/native/binding';
import { E } from '../../src/linux/constants';

export interface Notification { pid: number | undefined; fields: Map<string, string>; fds: number }

export interface ServiceOptions {
  /** The service's command line (the keeper's). */
  argv: string[];
  env?: NodeJS.ProcessEnv;
  /** FileDescriptorStoreMax= (default 4096). */
  fdStoreMax?: number;
  /** RestartSec= in ms (default 100, systemd's default). */
  restartMs?: number;
}

interface Stored { name: string; fd: number }

const FDNAME_OK = /^[\x20-\x39\x3b-\x7e]{1,255}$/;

export class ServiceManager {
  readonly dir: string;
  readonly notifySocket: string;
  readonly notifications: Notification[] = [];
  /** The fd store, in the order fds were stored. */
  readonly store: Stored[] = [];
  /** Every start of the service: its process and when it started. */
  readonly starts: ChildProcess[] = [];
  /** FDSTORE=1 fds refused (a duplicate, the store full, a bad name). */
  refused = 0;
  /** The names left in the store when the service stopped cleanly (before the store is emptied). */
  leftAtStop: string[] | undefined;
  private err = '';
  private readonly native: NativeBinding;
  private readonly sock: number;
  private readonly poll: PollHandle;
  private readonly buf = Buffer.alloc(64 * 1024);
  private stopping = false;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: ServiceOptions) {
    this.native = loadNative();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-sm-'));
    this.notifySocket = path.join(this.dir, 'notify');
    const s = this.native.unixDgramBind(this.notifySocket);
    if (s < 0) throw new Error(`bind ${this.notifySocket}: errno ${-s}`);
    this.sock = s;
    const h = this.native.pollStart(s, 1, () => this.drain());
    if (typeof h === 'number') throw new Error(`poll: errno ${-h}`);
    this.poll = h;
  }

  /** Everything every start of the service wrote on stderr. */
  stderr(): string { return this.err; }

  get main(): ChildProcess { return this.starts[this.starts.length - 1]!; }

  /** Assignments seen with VAR set, oldest first. */
  seen(name: string): string[] {
    return this.notifications.flatMap((n) => (n.fields.has(name) ? [n.fields.get(name)!] : []));
  }

  start(): ChildProcess {
    const fds = this.store.map((s) => s.fd);
    const env: NodeJS.ProcessEnv = {
      ...process.env, ...this.o.env,
      NOTIFY_SOCKET: this.notifySocket, FDSTORE: String(this.o.fdStoreMax ?? 4096),
    };
    delete env.LISTEN_PID; delete env.LISTEN_FDS; delete env.LISTEN_FDNAMES;
    if (fds.length > 0) {
      env.LISTEN_FDS = String(fds.length);
      env.LISTEN_FDNAMES = this.store.map((s) => s.name).join(':');
    }
    // LISTEN_PID must be the pid of the process that reads it: the shell's, which exec keeps.
    const child = spawn('/bin/sh', ['-c', '[ -n "$LISTEN_FDS" ] && export LISTEN_PID=$$; exec "$@"', 'sh', ...this.o.argv], {
      stdio: ['ignore', 'ignore', 'pipe', ...fds], env, detached: true,
    });
    child.stderr!.on('data', (b: Buffer) => { this.err += b.toString(); });
    child.once('exit', (code, signal) => this.onExit(child, code, signal));
    this.starts.push(child);
    return child;
  }

  private onExit(child: ChildProcess, code: number | null, signal: string | null): void {
    if (child !== this.main || this.stopped) return;
    this.drain();
    const clean = code === 0 && this.seen('STOPPING').length > 0;
    this.err += `\n[service-manager] main process ${child.pid} exited: code ${code} signal ${signal}${clean ? ' (stopped)' : '; restarting'}\n`;
    if (clean || this.stopping) {
      if (clean) this.leftAtStop = this.store.map((x) => x.name);
      this.clearStore();
      this.stopped = true;
      return;
    }
    void this.killGroup(child.pid!).then(() => {
      if (this.stopping) return;
      this.restartTimer = setTimeout(() => { this.restartTimer = null; this.start(); }, this.o.restartMs ?? 100);
    });
  }

  /** What is left of the process group: killed, then waited for until none is alive. */
  private async killGroup(pgid: number): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      const left = groupMembers(pgid);
      if (left.length === 0) return;
      for (const pid of left) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`process group ${pgid} does not die`);
  }

  private drain(): void {
    for (;;) {
      const fds = new Int32Array(256);
      const n = this.native.recvmsg(this.sock, this.buf, fds);
      if (n === -E.EAGAIN || n === -E.EINTR) return;
      if (n < 0) throw new Error(`recvmsg on the notify socket: errno ${-n}`);
      const got = [...fds].filter((fd) => fd >= 0);
      const fields = new Map<string, string>();
      for (const line of this.buf.subarray(0, n).toString('utf8').split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
      }
      this.notifications.push({ pid: undefined, fields, fds: got.length });
      this.apply(fields, got);
    }
  }

  private apply(f: Map<string, string>, fds: number[]): void {
    if (f.get('FDSTOREREMOVE') === '1') {
      const name = f.get('FDNAME');
      for (let i = this.store.length - 1; i >= 0; i--) {
        if (this.store[i]!.name === name) { this.native.close(this.store[i]!.fd); this.store.splice(i, 1); }
      }
    }
    const storing = f.get('FDSTORE') === '1';
    const name = f.get('FDNAME') ?? 'stored';
    for (const fd of fds) {
      const dup = this.store.some((s) => this.native.kcmpFile(s.fd, fd) === 0);
      if (!storing || !FDNAME_OK.test(name) || dup || this.store.length >= (this.o.fdStoreMax ?? 4096)) {
        if (storing) this.refused++;
        this.native.close(fd);
        continue;
      }
      this.store.push({ name, fd });
    }
  }

  private clearStore(): void {
    for (const s of this.store.splice(0)) this.native.close(s.fd);
  }

  /** Stop the service (SIGTERM, as systemctl stop) and everything of ours. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const m = this.main;
    if (m && m.exitCode === null && m.signalCode === null) {
      const exited = new Promise((r) => m.once('exit', r));
      m.kill('SIGTERM');
      await exited;
    }
    if (m?.pid) await this.killGroup(m.pid);
    this.drain();
    this.native.pollStop(this.poll);
    this.native.close(this.sock);
    this.clearStore();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Live (not zombie) processes of process group pgid, from /proc/<pid>/stat (proc(5): field 5). */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const ent of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    let stat: string;
    try { stat = fs.readFileSync(`/proc/${ent}/stat`, 'latin1'); } catch { continue; }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] !== 'Z' && Number(rest[2]) === pgid) out.push(Number(ent));
  }
  return out;
}
