// virtiofsd-ts entry point: the command line, then the keeper (src/keeper/keeper.ts: the
// default, a worker process serves the rings and may crash or be upgraded under a running guest)
// or one process (--no-keeper, src/keeper/standalone.ts), or the state checker (check-state).

import { parseArgs, ConfigError, CAPABILITIES, type Config } from './config';
import { createLogger } from './log';
import { loadNative } from './native/binding';
import { checkStateMain } from './tools/check-state-cli';
import { SandboxError } from './keeper/sandbox';
import { serveKeeper, type HeldSignals } from './keeper/keeper';
import { serveStandalone } from './keeper/standalone';

export type { HeldSignals } from './keeper/keeper';

export function main(argv: string[], early?: HeldSignals): void {
  if (argv[0] === 'check-state') {
    return checkStateMain(argv.slice(1));
  }
  let cfg: Config;
  try {
    cfg = parseArgs(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`virtiofsd-ts: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (cfg.printCapabilities) {
    process.stdout.write(JSON.stringify(CAPABILITIES) + '\n');
    return;
  }
  // Must be set before the first thread-pool job: libuv sizes its pool once.
  if (cfg.threadPoolSize > 0) process.env.UV_THREADPOOL_SIZE = String(cfg.threadPoolSize);
  const log = cfg.keeper ? createLogger(cfg.logLevel, { role: 'keeper' }) : createLogger(cfg.logLevel);
  const native = loadNative();
  (cfg.keeper ? serveKeeper(cfg, native, log, early) : serveStandalone(cfg, native, log)).then(
    () => process.exit(0),
    (e: unknown) => {
      // A sandbox that cannot be set up: one line naming the part (fail closed).
      if (e instanceof SandboxError) log.fatal({ part: e.part }, e.message);
      else log.fatal({ err: e }, 'fatal error');
      process.exit(1);
    },
  );
}

if (require.main === module) main(process.argv.slice(2));
