// The worker's sandbox, as the keeper describes it: which paths the worker sees (read-only: the
// node binary, its libraries and our package; read-write: the share), which capabilities it
// keeps and which seccomp action guards its syscalls. The launcher (native/sandbox/vfsd-sandbox.c)
// carries that out before Node starts and then execve()s the worker; nothing here runs in the
// worker. Layout, choices and the comparison with the C and Rust virtiofsd: docs/security.md.
//
// Fail closed: WorkerSandbox.setUp() opens the share (a tree of its mounts in namespace mode)
// and runs the whole thing once (a probe worker that loads every module in its sandbox and
// reports what it got) before the keeper accepts QEMU's connection; if any part cannot be set
// up, it throws a SandboxError naming it.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { toBinary, type NativeBinding } from '../native/binding';
import type { Logger } from '../log';
import * as K from '../linux/constants';
import { E } from '../linux/constants';
import { CAP_BY_NUMBER, type SandboxMode, type SeccompMode } from '../config';

/** The launcher, built by node-gyp beside the addon (native/binding.gyp). */
export const LAUNCHER = path.resolve(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'vfsd-sandbox');

/** The fd a sandboxed worker finds the share on (its channel is fd 3): the share tree in
 *  namespace mode, the shared directory itself in chroot mode. */
export const SHARE_FD = 4;

/** Profiling (scripts/seccomp-profile.ts): run each launcher under strace, writing traces here. */
const PROFILE_ENV = 'VFSD_SECCOMP_PROFILE';
const STRACE = '/usr/bin/strace';

/** How long the probe worker may take to load (a loaded machine starts Node slowly). */
const PROBE_TIMEOUT_MS = 60_000;

export class SandboxError extends Error {
  constructor(readonly part: string, detail: string) {
    super(`sandbox: ${part}: ${detail}`);
  }

  /** From the launcher's own JSON line (its msg already says "sandbox: <part>: <error>"). */
  static fromLauncher(line: { part?: string; msg?: string }, fallback: string): SandboxError {
    const e = new SandboxError(line.part ?? fallback, line.msg ?? 'failed');
    if (line.msg) e.message = line.msg;
    return e;
  }
}

/** The launcher's JSON failure line in a stderr text, if there is one. */
function launcherFailure(stderr: string): { part?: string; msg?: string } | undefined {
  for (const l of stderr.split('\n')) {
    try {
      const j = JSON.parse(l) as { role?: string; part?: string; msg?: string };
      if (j.role === 'sandbox' && j.part) return j;
    } catch { /* not JSON */ }
  }
  return undefined;
}

/** How to start one worker: the launcher's command line, the worker's environment, and the fds
 *  (beyond the channel at fd 3) it gets, in order from fd 4. */
export interface WorkerCommand { file: string; args: string[]; env: NodeJS.ProcessEnv; fds: number[] }

export interface SandboxOptions {
  mode: SandboxMode;
  seccomp: SeccompMode;
  sharedDir: string;
  /** Capabilities the worker keeps (names without CAP_); undefined when not root (nothing to drop). */
  caps?: string[];
  /** The share fd an earlier keeper image made (re-exec); none: make one. */
  shareFd?: number;
}

/** What the probe worker reports (src/worker/sandbox.ts, probeReport()). */
export interface ProbeReport { noNewPrivs: number; seccomp: number; root: string[] | null; share: boolean; proc: boolean }

export class WorkerSandbox {
  private binds: Array<[string, string]> | null = null;
  private readonly profileDir = process.env[PROFILE_ENV];
  private traces = 0;

  /** shareFd: the share as workers get it at fd 4 (-1: none, --sandbox=none). */
  private constructor(readonly o: SandboxOptions, readonly shareFd: number) {}

  /**
   * Everything set up and tried once: the share fd (a tree of its mounts in namespace mode) and
   * a probe worker in the sandbox. Throws SandboxError naming the part that failed.
   */
  static async setUp(o: SandboxOptions, native: NativeBinding, log: Logger, script: string, { probe = true } = {}): Promise<WorkerSandbox> {
    if (!fs.existsSync(LAUNCHER)) throw new SandboxError('launcher', `${LAUNCHER} not found (npm ci builds it with the addon)`);
    const share = o.mode === 'none' ? -1 : o.shareFd ?? (o.mode === 'namespace' ? makeShareTree(native, o.sharedDir) : openShareDir(native, o.sharedDir));
    const sb = new WorkerSandbox(o, share);
    // Computed now, not on the first worker's start (after a re-exec, that is an upgrade's).
    if (o.mode === 'namespace') sb.binds = roBinds(script);
    if (sb.profileDir) log.info({ dir: sb.profileDir }, `${PROFILE_ENV}: workers run under strace, their filter (if any) in log mode`);
    if (probe) {
      const report = await sb.probe(script);
      log.info({ sandbox: o.mode, seccomp: o.seccomp, probe: report }, 'worker sandbox probed');
    }
    return sb;
  }

  /** The command that starts a worker running script in this sandbox. */
  command(script: string): WorkerCommand {
    const o = this.o;
    const seccomp = this.profileDir && o.seccomp !== 'none' ? 'log' : o.seccomp;
    const args = ['--mode', o.mode, '--seccomp', seccomp];
    const caps = o.mode === 'chroot' && o.caps ? [...o.caps, 'sys_chroot'] : o.caps;
    if (caps) args.push('--caps', [...new Set(caps)].join(','));
    if (o.mode === 'namespace') {
      this.binds ??= roBinds(script);
      for (const [src, dst] of this.binds) args.push('--ro', src, dst);
      args.push('--share', fs.realpathSync(o.sharedDir));
    }
    const fds = this.shareFd >= 0 ? [this.shareFd] : [];
    args.push('--fd', '3', ...fds.flatMap((_, i) => ['--fd', String(SHARE_FD + i)]));
    args.push('--', process.execPath, script);
    const env: NodeJS.ProcessEnv = { VFSD_SANDBOX: o.mode, VFSD_SECCOMP: seccomp, UV_USE_IO_URING: '0' };
    if (this.shareFd >= 0) env.VFSD_SHARE_FD = String(SHARE_FD);
    if (this.profileDir) {
      // -D: strace runs as a detached grandchild, so the pid the keeper knows (and kills) is the
      // launcher's, as without it.
      const out = path.join(this.profileDir, `trace.${process.pid}.${Date.now()}.${this.traces++}`);
      return { file: STRACE, args: ['-D', '-f', '-qq', '-o', out, '--', LAUNCHER, ...args], env, fds };
    }
    return { file: LAUNCHER, args, env, fds };
  }

  /** Start a probe worker in the sandbox; its report, or a SandboxError naming what failed. */
  private async probe(script: string): Promise<ProbeReport> {
    const c = this.command(script);
    const env = workerEnv({ ...process.env, ...c.env, VFSD_SANDBOX_PROBE: '1' });
    // A test's hold or crash point is meant for a worker of some role; the probe is none of them.
    delete env.VFSD_HOLD;
    delete env.VFSD_CRASHPOINT;
    const child = spawn(c.file, c.args, { stdio: ['ignore', 'pipe', 'pipe', 'ignore', ...c.fds], env });
    let out = '';
    let err = '';
    child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
      child.once('error', (e) => { err += String(e); resolve([null, null]); });
      child.once('close', (c2, s) => resolve([c2, s]));
    });
    clearTimeout(timer);
    // The launcher names the part it could not set up in a JSON line of its own.
    const line = launcherFailure(err);
    if (line) throw SandboxError.fromLauncher(line, 'launcher');
    let report: ProbeReport | null = null;
    try { report = JSON.parse(out.trim().split('\n').at(-1) ?? '') as ProbeReport; } catch { /* below */ }
    if (code !== 0 || !report) {
      const why = signal ? `killed by ${signal}${signal === 'SIGSYS' ? ' (a syscall outside the seccomp allowlist)' : ''}` : `exit ${code}`;
      throw new SandboxError('worker start-up', `the probe worker failed (${why}): ${err.trim().split('\n').slice(-5).join(' | ') || 'no output'}`);
    }
    if (report.noNewPrivs !== 1) throw new SandboxError('no_new_privs', 'the worker does not have it');
    if (this.o.seccomp !== 'none' && report.seccomp !== 2) throw new SandboxError('seccomp', `the worker is in seccomp mode ${report.seccomp}, not 2 (filter)`);
    if (this.shareFd >= 0 && !report.share) throw new SandboxError('share', 'the worker cannot open the share through its fd');
    if (!report.proc) throw new SandboxError('/proc/self/fd', 'the worker cannot open it');
    if (this.o.mode === 'namespace' && (!report.root || report.root.includes('etc'))) throw new SandboxError('new root', `the worker's root holds ${JSON.stringify(report.root)}`);
    return report;
  }
}

/** The worker's environment: ours, less what Node would read from files the sandbox lacks. */
export function workerEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  // Node loads these certificates at start-up (a warning line on stderr when they are missing);
  // the worker makes no TLS connections.
  delete out.NODE_EXTRA_CA_CERTS;
  // The service manager's socket and fd-store size are the keeper's (systemd.exec(5)): a worker
  // must not speak for the service.
  delete out.NOTIFY_SOCKET;
  delete out.FDSTORE;
  return out;
}

/**
 * The share as a detached mount tree (the launcher's --make-share-tree, received over a socket):
 * every worker reaches the share through it, so they all see the same mounts with the same
 * mount ids (inode identity in the shared maps includes the mount id), and ".." at its root goes
 * nowhere.
 */
function makeShareTree(native: NativeBinding, sharedDir: string): number {
  const pair = new Int32Array(2);
  const r = native.socketpair(pair, false);
  if (r < 0) throw new SandboxError('share tree', `socketpair: errno ${-r}`);
  const [mine, theirs] = [pair[0]!, pair[1]!];
  try {
    const res = spawnSync(LAUNCHER, ['--make-share-tree', fs.realpathSync(sharedDir), '--send-fd', '3'], {
      stdio: ['ignore', 'ignore', 'pipe', theirs], encoding: 'utf8',
    });
    if (res.status !== 0) {
      const line = launcherFailure(res.stderr);
      if (line) throw SandboxError.fromLauncher(line, 'share tree');
      throw new SandboxError('share tree', `launcher exit ${res.status ?? res.signal}: ${res.stderr.trim()}`);
    }
    const fds = new Int32Array(1);
    const n = native.recvmsg(mine, new Uint8Array(1), fds);
    if (n !== 1 || fds[0]! < 0) throw new SandboxError('share tree', `no fd received (${n})`);
    return fds[0]!;
  } finally {
    native.close(mine);
    native.close(theirs);
  }
}

/**
 * chroot mode: the share itself (host mounts, no namespace): the worker chroots into it, which
 * stops ".." at its root, and its mount ids are the host's, the same for every worker. Making a
 * tree would need CAP_SYS_ADMIN, which hosts that need chroot mode tend not to give.
 */
export function openShareDir(native: NativeBinding, sharedDir: string): number {
  const fd = native.openat(K.AT_FDCWD, toBinary(sharedDir), K.O_PATH | K.O_DIRECTORY | K.O_CLOEXEC, 0);
  if (fd < 0) throw new SandboxError('share', `cannot open ${sharedDir}: errno ${-fd}`);
  return fd;
}

/** The mapped files of this process (node, its libraries, our addon): what a worker maps too. */
function mappedFiles(): string[] {
  const out = new Set<string>();
  for (const line of fs.readFileSync('/proc/self/maps', 'latin1').split('\n')) {
    const m = /^\S+ \S+ \S+ \S+ \d+\s+(\/.*)$/.exec(line);
    if (!m || m[1]!.endsWith(' (deleted)') || /^\/(dev|proc|sys|memfd:)/.test(m[1]!)) continue;
    out.add(m[1]!);
  }
  return [...out];
}

/** PT_INTERP of an ELF64 little-endian executable (the dynamic loader's path), or null. */
export function elfInterpreter(file: string): string | null {
  // The program headers are near the start; node is a large file.
  const b = Buffer.alloc(64 * 1024);
  const fd = fs.openSync(file, 'r');
  try { fs.readSync(fd, b, 0, b.length, 0); } finally { fs.closeSync(fd); }
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return null;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    if (p + 40 > b.length) return null;
    if (b.readUInt32LE(p) !== 3 /* PT_INTERP */) continue;
    const off = Number(b.readBigUInt64LE(p + 8));
    const size = Number(b.readBigUInt64LE(p + 32));
    return b.subarray(off, off + size).toString('latin1').replace(/\0.*$/s, '');
  }
  return null;
}

/** The directory holding package.json, at or above file's. */
function packageRoot(file: string): string {
  for (let d = path.dirname(file); ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (d === path.dirname(d)) return path.dirname(file);
  }
}

/** Is p at or below dir? */
function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * What the worker sees read-only, as [source, destination] pairs: node and every file this
 * process maps (libraries), also under the names that link to them (sonames), the ELF
 * interpreter at its own path, and the package the worker script belongs to (a directory: the
 * worker of a planned upgrade sees what is on disk now), with its node_modules and native build
 * where those are links to elsewhere.
 */
export function roBinds(script: string): Array<[string, string]> {
  const dirs: string[] = [];
  const root = packageRoot(fs.realpathSync(script));
  dirs.push(root);
  for (const sub of ['node_modules', path.join('native', 'build')]) {
    try {
      const real = fs.realpathSync(path.join(root, sub));
      if (!dirs.some((d) => under(real, d))) dirs.push(real);
    } catch { /* absent */ }
  }
  const files = new Map<string, string>();
  const mapped = [fs.realpathSync(process.execPath), ...mappedFiles()].filter((f) => !dirs.some((d) => under(f, d)));
  for (const f of mapped) files.set(f, f);
  // Libraries are found by their sonames, which are links to the mapped files beside them
  // (libstdc++.so.6 -> libstdc++.so.6.0.30): look at the links named like a mapped file.
  const targets = new Set(mapped);
  const libs = mapped.filter((f) => /\.so(\.|$)/.test(path.basename(f)));
  for (const dir of new Set(libs.map((f) => path.dirname(f)))) {
    const stems = libs.filter((f) => path.dirname(f) === dir).map((f) => path.basename(f).replace(/\.so(\..*)?$/, '.so'));
    let ents: fs.Dirent[] = [];
    try { ents = fs.readdirSync(dir, { withFileTypes: true }); } catch { continue; }
    for (const e of ents) {
      if (!e.isSymbolicLink() || !stems.some((st) => e.name.startsWith(st))) continue;
      const link = path.join(dir, e.name);
      try {
        const real = fs.realpathSync(link);
        if (targets.has(real)) files.set(link, real);
      } catch { /* dangling */ }
    }
  }
  const interp = elfInterpreter(fs.realpathSync(process.execPath));
  if (interp) files.set(interp, fs.realpathSync(interp));
  return [...dirs.map((d): [string, string] => [d, d]), ...[...files].map(([dst, src]): [string, string] => [src, dst])];
}

/**
 * The keeper's own restrictions, on its main thread (which spawns the launchers and re-executes
 * the keeper, so whatever it starts inherits them): no_new_privs, and a bounding set of only what
 * the keeper, the launcher and the worker use. Returns the capabilities dropped.
 */
export function restrictKeeper(native: NativeBinding, workerCaps: readonly string[], log: Logger): string[] {
  const r = native.noNewPrivs();
  if (r < 0) throw new SandboxError('keeper no_new_privs', `errno ${-r}`);
  if (process.getuid?.() !== 0) return [];
  const keep = new Set([
    ...workerCaps,
    // The launcher: namespaces, mounts, pivot_root, chroot, its own bounding set.
    'sys_admin', 'sys_chroot', 'setpcap',
    // The keeper: RLIMIT_NOFILE above the hard limit, at every image's start.
    'sys_resource',
  ]);
  // strace (profiling) attaches to the launcher.
  if (process.env[PROFILE_ENV]) keep.add('sys_ptrace');
  const dropped: string[] = [];
  for (let cap = 0; cap < 64; cap++) {
    const name = CAP_BY_NUMBER[cap] ?? `cap_${cap}`;
    if (keep.has(name)) continue;
    const d = native.capbsetDrop(cap);
    if (d === -E.EINVAL) break; // past the kernel's last capability
    if (d < 0) log.warn({ cap: name, errno: -d }, 'keeper: could not drop a capability from the bounding set');
    else dropped.push(name);
  }
  return dropped;
}
