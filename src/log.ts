// JSON-lines logging on stderr (pino), as operators and Kata expect from a virtiofsd.
import pino from 'pino';

export type Logger = pino.Logger;

/**
 * A logger writing JSON lines to stderr. `base` fields go on every line; by default that is the
 * process id, but the keeper leaves it out so that its "worker started" line can carry the
 * worker's pid as `pid`.
 */
export function createLogger(level: string = process.env.VFSD_LOG_LEVEL ?? 'info', base: Record<string, unknown> = { pid: process.pid }): Logger {
  // pino.destination(2) writes synchronously, so a crash loses no line.
  return pino({ level: level === 'off' ? 'silent' : level, base }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything: for unit tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
