// What a worker's sandbox looks like from outside, through /proc (the worker itself sees only
// /proc/self/fd). The pid the keeper logs ("worker started") is its launcher's; in namespace
// mode the worker is that process's grandchild (launcher -> pid 1 of the namespace -> worker).
import * as fs from 'node:fs';
import assert from 'node:assert/strict';

function children(pid: number): number[] {
  const out: number[] = [];
  let tids: string[] = [];
  try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const t of tids) {
    try {
      for (const k of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'latin1').split(' ')) if (k.trim()) out.push(Number(k));
    } catch { /* gone */ }
  }
  return out;
}

function comm(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/comm`, 'latin1').trim(); } catch { return ''; }
}

/** The worker process itself under the pid the keeper logged: below any launcher processes. */
export function innerWorker(pid: number): number {
  let p = pid;
  for (let depth = 0; depth < 4 && comm(p) === 'vfsd-sandbox'; depth++) {
    const kids = children(p);
    if (kids.length !== 1) return p;
    p = kids[0]!;
  }
  return p;
}

/** Wait (up to ms) until the worker under pid has exec'd node and started its threads; its pid. */
export async function waitInnerWorker(pid: number, ms = 10_000): Promise<number> {
  const threads = (p: number): number => { try { return fs.readdirSync(`/proc/${p}/task`).length; } catch { return 0; } };
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) {
    const w = innerWorker(pid);
    if (comm(w) !== 'vfsd-sandbox' && comm(w) !== '' && threads(w) > 1) return w;
  }
  throw new Error(`no worker below pid ${pid}`);
}

export interface SandboxView {
  pid: number;
  /** NoNewPrivs and Seccomp of every thread. */
  threads: Array<{ tid: string; noNewPrivs: number; seccomp: number }>;
  mountNs: string;
  pidNs: string;
  netNs: string;
  /** What / holds, seen from outside (/proc/<pid>/root). */
  root: string[];
  capBnd: bigint;
  capEff: bigint;
}

function field(status: string, name: string): string {
  const m = new RegExp(`^${name}:\\s*(\\S+)`, 'm').exec(status);
  if (!m) throw new Error(`no ${name} in status`);
  return m[1]!;
}

export function sandboxView(pid: number): SandboxView {
  const threads = fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const s = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'latin1');
    return { tid, noNewPrivs: Number(field(s, 'NoNewPrivs')), seccomp: Number(field(s, 'Seccomp')) };
  });
  const s = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  return {
    pid, threads,
    mountNs: fs.readlinkSync(`/proc/${pid}/ns/mnt`),
    pidNs: fs.readlinkSync(`/proc/${pid}/ns/pid`),
    netNs: fs.readlinkSync(`/proc/${pid}/ns/net`),
    root: fs.readdirSync(`/proc/${pid}/root`),
    capBnd: BigInt(`0x${field(s, 'CapBnd')}`),
    capEff: BigInt(`0x${field(s, 'CapEff')}`),
  };
}

/**
 * The default sandbox, checked from outside: every thread has no_new_privs and a seccomp filter,
 * the worker is in a mount namespace of its own, and its root shows the share and not the host's
 * /etc. Returns what it saw.
 */
export function assertSandboxed(loggedPid: number, shareDir: string): SandboxView {
  const v = sandboxView(innerWorker(loggedPid));
  assert.ok(v.threads.length > 1, `the worker's threads (${v.threads.length})`);
  for (const t of v.threads) {
    assert.equal(t.noNewPrivs, 1, `NoNewPrivs of thread ${t.tid}`);
    assert.equal(t.seccomp, 2, `Seccomp of thread ${t.tid}`);
  }
  assert.notEqual(v.mountNs, fs.readlinkSync('/proc/self/ns/mnt'), 'a mount namespace of its own');
  assert.notEqual(v.pidNs, fs.readlinkSync('/proc/self/ns/pid'), 'a pid namespace of its own');
  assert.notEqual(v.netNs, fs.readlinkSync('/proc/self/ns/net'), 'a network namespace of its own');
  assert.ok(!v.root.includes('etc'), `no /etc in the worker's root: ${v.root.join(' ')}`);
  const real = fs.realpathSync(shareDir);
  const inside = fs.statSync(`/proc/${v.pid}/root${real}`);
  const host = fs.statSync(real);
  assert.deepEqual([inside.dev, inside.ino], [host.dev, host.ino], 'the share, at its path');
  return v;
}

/** assertSandboxed, as a message instead of a throw (for checks in the middle of a run); null: sandboxed. */
export function sandboxProblem(loggedPid: number, shareDir: string): string | null {
  try {
    assertSandboxed(loggedPid, shareDir);
    return null;
  } catch (e) {
    return `worker ${loggedPid}: ${(e as Error).message}`;
  }
}

/**
 * Check every worker a daemon's log names ("worker started", "spare worker loading") once it is up,
 * while a run goes on: stop() returns how many were checked and what was wrong.
 */
export function watchWorkerSandboxes(logFile: string, shareDir: string): { stop(): { checked: number[]; problems: string[] } } {
  const checked: number[] = [];
  const problems: string[] = [];
  const seen = new Set<number>();
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      let text = '';
      try { text = fs.readFileSync(logFile, 'utf8'); } catch { return; }
      for (const l of text.split('\n')) {
        if (!l.includes('"msg":"worker started"') && !l.includes('"msg":"spare worker loading"')) continue;
        let pid: number;
        try { pid = (JSON.parse(l) as { pid: number }).pid; } catch { continue; }
        if (seen.has(pid)) continue;
        seen.add(pid);
        let inner: number;
        try { inner = await waitInnerWorker(pid, 20_000); } catch { continue; /* gone before it was up */ }
        const p = fs.existsSync(`/proc/${inner}`) ? sandboxProblem(pid, shareDir) : null;
        if (p && fs.existsSync(`/proc/${inner}`)) problems.push(p);
        else if (!p) checked.push(pid);
      }
    })().finally(() => { busy = false; });
  }, 200);
  return { stop: () => { clearInterval(timer); return { checked, problems }; } };
}
