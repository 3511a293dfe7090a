// npm run seccomp-profile: measure which syscalls the worker makes, and write the seccomp
// allowlist from that (native/sandbox/seccomp-allow.h, compiled into the launcher) and the
// measured profile (native/sandbox/seccomp-profile.txt: syscall, calls seen). docs/security.md
// says when to run it.
//
// How: the test files below run with VFSD_SECCOMP_PROFILE=DIR, which makes every keeper start
// its launchers under `strace -D -f` (Debian's strace package) with the filter in log mode, so a
// syscall missing from the current list is recorded instead of killing the worker. Counted are
// the syscalls each process makes once it is under the filter: after its own successful
// seccomp(SECCOMP_SET_MODE_FILTER) or, for a process or thread created after that, all of them.
// The launcher's own set-up before the filter (unshare, mount, pivot_root, ...) is not counted:
// the filter never sees it.
//
//   node dist/scripts/seccomp-profile.js [--merge] [--keep DIR] [test files ...]
//     default test files: dist/test/integration, dist/test/crash and dist/test/e2e (a real guest
//     with the e2e workloads, as scripts/test.sh runs them); --merge adds to the checked-in
//     profile instead of replacing it (a partial run); --keep leaves the traces in DIR.
//   node dist/scripts/seccomp-profile.js --analyze DIR...   (traces from an earlier run)
//   node dist/scripts/seccomp-profile.js --header   (the header again from the checked-in profile,
//     after a change to the lists below)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

const REPO = path.resolve(__dirname, '..', '..');
const HEADER = path.join(REPO, 'native', 'sandbox', 'seccomp-allow.h');
const PROFILE = path.join(REPO, 'native', 'sandbox', 'seccomp-profile.txt');

/**
 * Allowed although a run may not see them: ways out and signal paths every process can take,
 * and paths that depend on timing rather than on the request. Each with the reason.
 */
const POOL_IO = 'READ/WRITE on libuv\'s thread pool (uv_fs_read/uv_fs_write: one buffer or several), taken only when RWF_NOWAIT cannot be served (a page-cache miss, a slow write): timing, not the request, decides';
const BY_HAND: Record<string, string> = {
  pread64: POOL_IO,
  preadv: POOL_IO,
  pwrite64: POOL_IO,
  pwritev: POOL_IO,
  exit: 'a thread ending',
  exit_group: 'the process ending',
  rt_sigreturn: 'returning from a signal handler',
  restart_syscall: 'a syscall restarted after a signal',
  tgkill: 'abort() and Node\'s fatal-error path signal the process itself',
  getpid: 'abort()',
  gettid: 'abort()',
  kill: 'crash points (VFSD_CRASHPOINT) kill the worker with SIGKILL',
  rt_sigprocmask: 'abort() and signal set-up',
  rt_sigaction: 'signal set-up',
  sched_yield: 'spin-waits in V8 and glibc',
  nanosleep: 'sleeps in libuv and glibc',
  clock_nanosleep: 'sleeps in libuv and glibc',
  getcwd: 'process.cwd(), e.g. path.resolve() of a relative path (the worker\'s cwd is / or /proc/self/fd)',
  munmap: 'freeing memory',
  madvise: 'V8 returning memory',
  mremap: 'growing buffers',
};

/** Refused with ENOSYS instead of the filter's action: libraries probe them and fall back. */
const ENOSYS: Record<string, string> = {
  // io_uring submissions are not seen by seccomp; libuv falls back to its thread pool.
  io_uring_setup: 'libuv probes io_uring (its submissions would bypass the filter)',
};

interface Line { pid: number; idx: number; name: string | null; resumed: string | null; result: number | null; text: string }

const START = /^(\d+)\s+([a-z0-9_]+)\(/;
const RESUMED = /^(\d+)\s+<\.\.\. ([a-z0-9_]+) resumed>/;
const RESULT = /\)\s+=\s+(-?\d+)(?:\s|$)/;

/** The syscalls made under the filter in one strace -f output file, with counts. */
export function analyzeTrace(text: string, counts = new Map<string, number>()): Map<string, number> {
  const lines: Line[] = [];
  text.split('\n').forEach((t, idx) => {
    const s = START.exec(t);
    const r = RESUMED.exec(t);
    if (!s && !r) return;
    const res = RESULT.exec(t);
    lines.push({ pid: Number((s ?? r)![1]), idx, name: s ? s[2]! : null, resumed: r ? r[2]! : null, result: res ? Number(res[1]) : null, text: t });
  });
  // Where each process came under its own filter, and who created it when.
  const ownFilter = new Map<number, number>();
  const createdBy = new Map<number, { parent: number; idx: number }>();
  const pendingClone = new Map<number, number>();
  for (const l of lines) {
    const call = l.name ?? l.resumed!;
    if (l.name && /^(clone|clone3|fork|vfork)$/.test(l.name) && l.result === null) pendingClone.set(l.pid, l.idx);
    if (/^(clone|clone3|fork|vfork)$/.test(call) && l.result !== null && l.result > 0) {
      createdBy.set(l.result, { parent: l.pid, idx: l.name ? l.idx : pendingClone.get(l.pid) ?? l.idx });
    }
    if (call === 'seccomp' && l.result === 0 && !ownFilter.has(l.pid)) {
      const start = l.name ? l : lines.find((x) => x.pid === l.pid && x.name === 'seccomp' && x.idx < l.idx && x.text.includes('<unfinished'));
      if ((start ?? l).text.includes('SECCOMP_SET_MODE_FILTER')) ownFilter.set(l.pid, l.idx);
    }
  }
  const bornFiltered = new Map<number, boolean>();
  const filteredAtBirth = (pid: number, depth = 0): boolean => {
    const known = bornFiltered.get(pid);
    if (known !== undefined) return known;
    const c = createdBy.get(pid);
    let v = false;
    if (c && depth < 64) {
      const f = ownFilter.get(c.parent);
      v = filteredAtBirth(c.parent, depth + 1) || (f !== undefined && f < c.idx);
    }
    bornFiltered.set(pid, v);
    return v;
  };
  for (const l of lines) {
    if (!l.name) continue;
    const f = ownFilter.get(l.pid);
    if (filteredAtBirth(l.pid) || (f !== undefined && l.idx > f)) counts.set(l.name, (counts.get(l.name) ?? 0) + 1);
  }
  return counts;
}

export function analyzeDirs(dirs: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const dir of dirs) {
    for (const f of fs.readdirSync(dir)) if (f.startsWith('trace.')) analyzeTrace(fs.readFileSync(path.join(dir, f), 'latin1'), counts);
  }
  return counts;
}

function readProfile(): Map<string, number> {
  const m = new Map<string, number>();
  if (!fs.existsSync(PROFILE)) return m;
  for (const line of fs.readFileSync(PROFILE, 'utf8').split('\n')) {
    const p = /^([a-z0-9_]+)\s+(\d+)$/.exec(line.trim());
    if (p) m.set(p[1]!, Number(p[2]));
  }
  return m;
}

function writeOutputs(measured: Map<string, number>, how: string | null): void {
  const names = [...measured.keys()].sort();
  if (how !== null) fs.writeFileSync(PROFILE, [
    '# The worker\'s measured syscall profile: syscall, calls seen under the filter. Written by',
    `# scripts/seccomp-profile.ts (${how}); native/sandbox/seccomp-allow.h is built from it.`,
    ...names.map((n) => `${n} ${measured.get(n)}`), '',
  ].join('\n'));
  const allow = [...new Set([...names, ...Object.keys(BY_HAND)])].filter((n) => !(n in ENOSYS)).sort();
  const entry = (macro: string, n: string, why?: string): string =>
    `#ifdef __NR_${n}\n${macro}(__NR_${n})${why ? ` /* ${why} */` : ''}\n#endif`;
  fs.writeFileSync(HEADER, [
    '// The worker\'s seccomp allowlist (native/sandbox/vfsd-sandbox.c). Generated by',
    '// scripts/seccomp-profile.ts from the measured profile (seccomp-profile.txt) plus a few',
    '// syscalls allowed by hand (with their reason); do not edit, regenerate (docs/security.md).',
    ...allow.map((n) => entry('ALLOW', n, measured.has(n) ? undefined : `by hand: ${BY_HAND[n]}`)),
    ...Object.entries(ENOSYS).map(([n, why]) => entry('FAIL_ENOSYS', n, why)), '',
  ].join('\n'));
  console.log(`seccomp-profile: ${names.length} syscalls measured, ${allow.length} allowed; wrote ${how === null ? '' : `${path.relative(REPO, PROFILE)} and `}${path.relative(REPO, HEADER)}`);
}

function main(argv: string[]): void {
  if (argv[0] === '--header') {
    writeOutputs(readProfile(), null);
    return;
  }
  if (argv[0] === '--analyze') {
    writeOutputs(analyzeDirs(argv.slice(1)), `from ${argv.slice(1).join(' ')}`);
    return;
  }
  let merge = false;
  let keep: string | undefined;
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--merge') merge = true;
    else if (argv[i] === '--keep') keep = argv[++i];
    else files.push(argv[i]!);
  }
  if (files.length === 0) files.push(...['integration', 'crash', 'e2e'].map((l) => path.join(REPO, 'dist', 'test', l)));
  const dir = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-seccomp-'));
  fs.mkdirSync(dir, { recursive: true });
  console.log(`seccomp-profile: running ${files.map((f) => path.relative(REPO, f)).join(' ')} with VFSD_SECCOMP_PROFILE=${dir}`);
  const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], {
    stdio: 'inherit', env: { ...process.env, VFSD_SECCOMP_PROFILE: dir }, cwd: REPO,
  });
  const measured = analyzeDirs([dir]);
  if (merge) for (const [n, c] of readProfile()) measured.set(n, (measured.get(n) ?? 0) + c);
  writeOutputs(measured, `${merge ? 'merged with the previous profile; ' : ''}tests: ${files.map((f) => path.relative(REPO, f)).join(' ')}`);
  if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  if (run.status !== 0) {
    console.error(`seccomp-profile: the tests failed (exit ${run.status}): the profile may be incomplete`);
    process.exit(1);
  }
}

if (require.main === module) main(process.argv.slice(2));
