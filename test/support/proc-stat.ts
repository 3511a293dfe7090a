// CPU time of a process tree from /proc, for benchmarks (the C virtiofsd forks into a sandbox;
// our keeper runs workers).
import * as fs from 'node:fs';

/** pid and its descendants (children of any of its threads), at most 5 levels down. */
export function processTree(pid: number, depth = 0, out: number[] = []): number[] {
  out.push(pid);
  if (depth > 4) return out;
  let tids: string[] = [];
  try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const t of tids) {
    let kids = '';
    try { kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'latin1'); } catch { continue; }
    for (const k of kids.split(' ')) if (k.trim()) processTree(Number(k), depth + 1, out);
  }
  return out;
}

/** utime+stime (clock ticks, 10 ms) of pid and all its descendants; exited threads included. */
export function treeCpuTicks(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const s = fs.readFileSync(`/proc/${p}/stat`, 'latin1');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // fields 14, 15 of stat(5)
    } catch { /* gone */ }
  }
  return ticks;
}

/**
 * CPU time (ns) of pid and all its descendants: every live thread's on-CPU time from
 * /proc/<pid>/task/<tid>/schedstat. Nanosecond resolution, but threads that have exited are
 * not counted (fine for our daemons, whose threads live as long as they do).
 */
export function treeCpuNs(pid: number): number {
  let ns = 0;
  for (const p of processTree(pid)) {
    let tids: string[] = [];
    try { tids = fs.readdirSync(`/proc/${p}/task`); } catch { continue; }
    for (const t of tids) {
      try { ns += Number(fs.readFileSync(`/proc/${p}/task/${t}/schedstat`, 'latin1').split(' ')[0]); } catch { /* exited */ }
    }
  }
  return ns;
}
