// What scripts/bench.ts and scripts/bench-guest.ts share: argument walking, medians, ratios, exit.

export class UsageError extends Error {}

/**
 * Walk `--name value` and `--name=value` arguments. handle() gets the name and a function that
 * takes its value (only options that have one call it) and returns false for a name it does not know.
 */
export function parseArgs(argv: string[], handle: (name: string, value: () => string) => boolean): void {
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const value = (): string => {
      if (v !== undefined) return v;
      const n = argv[++i];
      if (n === undefined) throw new UsageError(`${a} needs a value`);
      return n;
    };
    if (!handle(a, value)) throw new UsageError(`unknown argument ${a}`);
  }
}

/** "a, b,c" -> ['a', 'b', 'c'] */
export function list(s: string): string[] {
  return s.split(',').map((x) => x.trim()).filter(Boolean);
}

export function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** "1.23×", or "–" when either side is missing. */
export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–';
}

/** Run main, exit 0 when it resolves; a UsageError prints its message, anything else its stack. */
export function runMain(name: string, main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      if (e instanceof UsageError) process.stderr.write(`${name}: ${e.message} (--help for usage)\n`);
      else process.stderr.write(`${name} failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
