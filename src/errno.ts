// errno values (positive, as the kernel numbers them). Ops return them negated.
import { constants } from 'node:os';

export const E = constants.errno as typeof constants.errno & Record<string, number>;

/** Name of a negative or positive errno, for logs. */
export function errnoName(e: number): string {
  const n = Math.abs(e);
  for (const [k, v] of Object.entries(constants.errno)) if (v === n) return k;
  return `E${n}`;
}
