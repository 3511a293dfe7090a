// Crash-test support: a daemon with a crash point armed, a transport that checks every reply
// belongs to its request, a tracker of the node ids the guest holds, and a digest of a host tree.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { VhostUserFrontend } from './frontend';
import { FuseClient, type Transport } from './fuse-client';
import { REPO, assertNoSeccompKill } from './daemon';

export interface CrashDaemon {
  proc: ChildProcess;
  /** The keeper's pid (the process we spawned). */
  pid: number;
  socket: string;
  dir: string;
  stderr(): string;
  /** Pids of the workers the keeper logged as started, in order. */
  workerPids(): number[];
  /** Wait until at least n workers were logged as started (false on timeout). */
  waitWorkers(n: number, timeoutMs?: number): Promise<boolean>;
  stop(): Promise<void>;
}

/** Start ./bin/virtiofsd-ts (keeper mode) with VFSD_CRASHPOINT=crashpoint when given. */
export async function startCrashDaemon(o: { args?: string[]; crashpoint?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CrashDaemon> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-crash-'));
  const dir = path.join(work, 'share');
  fs.mkdirSync(dir);
  const socket = path.join(work, 'vhost.sock');
  const env: NodeJS.ProcessEnv = { ...process.env, ...o.env };
  delete env.VFSD_CRASHPOINT;
  if (o.crashpoint !== undefined) env.VFSD_CRASHPOINT = o.crashpoint;
  const proc = spawn(process.execPath, [path.join(REPO, 'bin', 'virtiofsd-ts'), `--socket-path=${socket}`, `--shared-dir=${dir}`, ...(o.args ?? [])],
    { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  const changed: Array<() => void> = [];
  proc.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
    for (const f of changed.splice(0)) f();
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  // Start-up includes a probe worker in the sandbox (a second Node start): slow on a busy machine.
  for (let i = 0; i < 1500 && !fs.existsSync(socket); i++) {
    if (proc.exitCode !== null) throw new Error(`daemon exited early: ${err}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  if (!fs.existsSync(socket)) {
    // Not left running (it would keep the test process alive).
    proc.kill('SIGKILL');
    throw new Error(`daemon did not create its socket: ${err}`);
  }
  const workerPids = (): number[] => {
    const pids: number[] = [];
    for (const line of err.split('\n')) {
      if (!line.includes('"worker started"')) continue;
      try {
        const j = JSON.parse(line) as { msg?: string; pid?: number };
        if (j.msg === 'worker started' && typeof j.pid === 'number') pids.push(j.pid);
      } catch { /* a partial line */ }
    }
    return pids;
  };
  return {
    proc, pid: proc.pid!, socket, dir,
    stderr: () => err,
    workerPids,
    async waitWorkers(n, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (workerPids().length < n) {
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.min(left, 50));
          changed.push(() => { clearTimeout(t); r(); });
        });
      }
      return true;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      fs.rmSync(work, { recursive: true, force: true });
      assertNoSeccompKill(err);
    },
  };
}

/** True while a process (or its zombie) exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A transport over fe that checks each reply carries its request's unique (so a used entry pushed
 * twice, landing on a reused head, cannot pass for the next request's reply) and counts the
 * requests posted on each queue (to compare with used.idx: one used entry per request).
 */
export function checkedTransport(fe: VhostUserFrontend, problems: string[], timeoutMs = 4000): { send: Transport; posted: number[] } {
  const posted = new Array<number>(fe.numQueues).fill(0);
  const send: Transport = async (queue, out, inLens) => {
    posted[queue]++;
    const h = Buffer.from(out[0]!.buffer, out[0]!.byteOffset, out[0]!.byteLength);
    const unique = h.readBigUInt64LE(8);
    const r = await fe.request(queue, out, inLens, timeoutMs);
    if (inLens.length > 0 && r.len >= 16) {
      const first = r.in[0]!;
      const got = Buffer.from(first.buffer, first.byteOffset, first.byteLength).readBigUInt64LE(8);
      if (got !== unique) problems.push(`request unique ${unique} (opcode ${h.readUInt32LE(4)}) answered with unique ${got}`);
    }
    return r;
  };
  return { send, posted };
}

/** Exactly one used entry per request: none unclaimed, used.idx = requests posted, per queue. */
export function usedEntryProblems(fe: VhostUserFrontend, posted: number[]): string[] {
  const out: string[] = [];
  for (const u of fe.unclaimed) out.push(`queue ${u.queue}: used entry for head ${u.head} (len ${u.len}) that no request waited for`);
  for (let q = 0; q < posted.length; q++) {
    const used = fe.drivers[q]!.usedIdx;
    if (used !== (posted[q]! & 0xffff)) out.push(`queue ${q}: used.idx ${used} after ${posted[q]} requests`);
  }
  return out;
}

/** Wait until cond() holds, polling; after ms, fail with what and the tail of log(). */
export async function waitFor(what: string, cond: () => boolean, log: () => string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${log().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Non-idempotent requests streamed through fe until stop(): O_APPEND WRITEs of `line N` to
 * `stream` in the share root, each followed by a GETATTR, over a checkedTransport (problems
 * collects wrong uniques and failed requests). After stop(), the file must hold expected(), and
 * usedEntryProblems(fe, posted) must be empty.
 */
export class AppendStream {
  /** Lines written so far. */
  n = 0;
  private stopping = false;
  private loop: Promise<void> | null = null;

  private constructor(readonly client: FuseClient, readonly posted: number[]) {}

  /** FUSE_INIT, the file's CREATE, then the stream, in the background. */
  static async start(fe: VhostUserFrontend, problems: string[], timeoutMs: number): Promise<AppendStream> {
    const { send, posted } = checkedTransport(fe, problems, timeoutMs);
    const s = new AppendStream(new FuseClient(send), posted);
    const init = await s.client.init();
    if (init.error !== 0) throw new Error(`FUSE_INIT: error ${init.error}`);
    const cr = await s.client.create(1, 'stream', 0o102 | 0o2000 /* O_RDWR|O_CREAT|O_APPEND */);
    if (cr.error !== 0) throw new Error(`CREATE: error ${cr.error}`);
    const node = cr.entry!.nodeid;
    s.loop = (async () => {
      while (!s.stopping) {
        const w = await s.client.write(node, cr.fh!, 0, Buffer.from(`line ${s.n}\n`));
        if (w.error !== 0) problems.push(`write ${s.n}: error ${w.error}`);
        s.n++;
        const g = await s.client.getattr(node);
        if (g.error !== 0) problems.push(`getattr: error ${g.error}`);
      }
    })();
    return s;
  }

  /** Stop after the request in hand (rejects if a request failed outright). */
  async stop(): Promise<void> {
    this.stopping = true;
    const l = this.loop;
    this.loop = null;
    if (l) await l;
  }

  /** What the file must hold: every append once, in order. */
  expected(): string[] {
    return Array.from({ length: this.n }, (_, k) => `line ${k}`);
  }
}

/**
 * The node ids the guest holds, as the guest counts them (each entry reply +1, FORGET -n): a node
 * id the guest holds must keep meaning the same host file (generation and st_ino), and one host
 * file must not have two held node ids (one host inode, one node id: docs/crash-consistency.md). Holds across the crash too, which is the point.
 */
export class NodeTracker {
  readonly problems: string[] = [];
  private readonly held = new Map<bigint, { gen: bigint; ino: bigint; count: number; name: string }>();
  private readonly byIno = new Map<bigint, bigint>();

  constructor(rootIno?: bigint) {
    if (rootIno !== undefined) this.entry(1n, 0n, rootIno, '/');
  }

  entry(nodeid: bigint, gen: bigint, ino: bigint, name: string): void {
    const h = this.held.get(nodeid);
    if (h && h.count > 0) {
      if (h.gen !== gen || h.ino !== ino) {
        this.problems.push(`${name}: node ${nodeid} (held, was gen ${h.gen} ino ${h.ino} for ${h.name}) now gen ${gen} ino ${ino}`);
      }
      h.count++;
      return;
    }
    const other = this.byIno.get(ino);
    if (other !== undefined && other !== nodeid && (this.held.get(other)?.count ?? 0) > 0) {
      this.problems.push(`${name}: host inode ${ino} answered as node ${nodeid} while node ${other} (${this.held.get(other)!.name}) holds it`);
    }
    this.held.set(nodeid, { gen, ino, count: 1, name });
    this.byIno.set(ino, nodeid);
  }

  /** GETATTR/SETATTR: the node must still be the file it was. */
  attr(nodeid: bigint, ino: bigint, what: string): void {
    const h = this.held.get(nodeid);
    if (!h || h.count <= 0) this.problems.push(`${what}: attributes for node ${nodeid}, which the guest does not hold`);
    else if (h.ino !== ino) this.problems.push(`${what}: node ${nodeid} (${h.name}, ino ${h.ino}) now answers for ino ${ino}`);
  }

  forget(nodeid: bigint, n: number): void {
    const h = this.held.get(nodeid);
    if (h) h.count -= n;
  }

  count(nodeid: bigint): number {
    return this.held.get(nodeid)?.count ?? 0;
  }
}

/** A digest of a host tree: one line per entry (path, type, permissions, size, nlink, contents or
 *  link target), in path order. Times and inode numbers are left out. */
export function treeDigest(root: string): string[] {
  const lines: string[] = [];
  const walk = (rel: string): void => {
    const p = path.join(root, rel);
    const st = fs.lstatSync(p);
    const perm = (st.mode & 0o7777).toString(8);
    let line: string;
    if (st.isDirectory()) line = `${rel || '.'} dir ${perm} nlink=${st.nlink}`;
    else if (st.isSymbolicLink()) line = `${rel} symlink -> ${fs.readlinkSync(p)}`;
    else if (st.isFile()) {
      const sha = createHash('sha256').update(fs.readFileSync(p)).digest('hex').slice(0, 16);
      line = `${rel} file ${perm} size=${st.size} nlink=${st.nlink} sha=${sha}`;
    } else line = `${rel} other mode=${st.mode.toString(8)}`;
    lines.push(line);
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) walk(rel ? path.join(rel, n) : n);
  };
  walk('');
  return lines;
}
