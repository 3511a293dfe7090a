// JSON-lines logging on stderr (pino), as operators and Kata expect from a virtiofsd.
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string = process.env.VFSD_LOG_LEVEL ?? 'info', bindings: Record<string, unknown> = {}): Logger {
  // pino.destination(2) writes synchronously, so a crash loses no line.
  return pino({ level: level === 'off' ? 'silent' : level, base: { pid: process.pid, ...bindings } }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything: for unit tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
