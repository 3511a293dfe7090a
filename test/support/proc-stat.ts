// CPU time of a process tree from /proc, for benchmarks (the C virtiofsd forks into a sandbox;
// our keeper runs workers).
import * as fs from 'node:fs';

/** utime+stime (clock ticks) of pid and all its descendants. */
export function treeCpuTicks(pid: number, depth = 0): number {
  let ticks = 0;
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]); // fields 14, 15 of stat(5)
  } catch { return 0; }
  if (depth > 4) return ticks;
  let tids: string[] = [];
  try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { /* gone */ }
  for (const t of tids) {
    let kids = '';
    try { kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'latin1'); } catch { continue; }
    for (const k of kids.split(' ')) if (k) ticks += treeCpuTicks(Number(k), depth + 1);
  }
  return ticks;
}
