// `virtiofsd-ts check-state --pid <keeper pid>`: validate the crash-consistent state a running
// keeper holds (src/tools/check-state.ts) and print what was found.
// Exit 0: state clean; 1: problems found; 2: usage error or the keeper's fds cannot be read.

import { checkState, formatReport } from './check-state';

const USAGE = 'usage: virtiofsd-ts check-state --pid <keeper pid> [--json]';

export function checkStateMain(argv: string[]): void {
  let pid: number | undefined;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--pid(?:=(.*))?$/.exec(a);
    if (m) pid = Number(m[1] ?? argv[++i]);
    else if (a === '--json') json = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else {
      process.stderr.write(`virtiofsd-ts check-state: unknown argument ${a}\n${USAGE}\n`);
      process.exit(2);
    }
  }
  if (pid === undefined || !Number.isInteger(pid) || pid <= 0) {
    process.stderr.write(`virtiofsd-ts check-state: --pid <keeper pid> is required\n${USAGE}\n`);
    process.exit(2);
  }
  let report;
  try {
    report = checkState(pid);
  } catch (e) {
    process.stderr.write(`virtiofsd-ts check-state: cannot read the state of pid ${pid}: ${(e as Error).message}\n`);
    process.exit(2);
  }
  process.stdout.write((json ? JSON.stringify(report) : formatReport(report)) + '\n');
  process.exit(report.clean ? 0 : 1);
}
