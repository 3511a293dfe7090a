// virtiofsd-ts entry point: parse the command line, open the shared directory, wait for
// QEMU on the vhost-user socket, serve that one connection, exit when it closes (as both
// peer virtiofsds do).

import { parseArgs, ConfigError, CAPABILITIES, type Config } from './config';
import { createLogger, type Logger } from './log';
import { loadNative, toBinary, type NativeBinding } from './native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from './passthrough/passthrough-fs';
import { FuseSession } from './fuse/session';
import { VhostUserFsBackend } from './vhost/backend';
import { listenUnix, acceptOne } from './vhost/listener';

export async function serve(cfg: Config, native: NativeBinding, log: Logger): Promise<void> {
  // The guest's requests carry modes already masked by the guest; ours must not mask again.
  native.umask(0);
  const nofile = native.raiseNofile(cfg.rlimitNofile ?? 1_000_000);
  if (nofile < 0) log.warn({ errno: -nofile }, 'could not raise RLIMIT_NOFILE');
  if (cfg.sandbox !== 'none') log.warn({ sandbox: cfg.sandbox }, 'sandboxing is not implemented; running without a sandbox');

  const fs = new PassthroughFs(native, {
    ...DEFAULT_FS_OPTIONS,
    sharedDir: cfg.sharedDir, cache: cfg.cache, xattr: cfg.xattr, posixAcl: cfg.posixAcl,
    announceSubmounts: cfg.announceSubmounts, readonly: cfg.readonly, writeback: cfg.writeback,
    allowDirectIo: cfg.allowDirectIo, readdirplus: cfg.readdirplus, killprivV2: cfg.killprivV2,
    syncIo: cfg.threadPoolSize === 0,
  }, log);
  const session = new FuseSession(fs, log);

  let listenFd: number;
  if (cfg.fd !== undefined) {
    listenFd = cfg.fd;
    const r = native.setNonblocking(listenFd, true);
    if (r < 0) throw new Error(`--fd ${cfg.fd} is not usable: errno ${-r}`);
  } else {
    listenFd = listenUnix(native, toBinary(cfg.socketPath!));
  }
  log.info({ sharedDir: cfg.sharedDir, socket: cfg.socketPath ?? `fd ${cfg.fd}` }, 'Waiting for vhost-user socket connection...');
  const conn = await acceptOne(native, listenFd);
  native.close(listenFd);
  log.info('vhost-user connection established');

  const backend = new VhostUserFsBackend({
    native, log, numRequestQueues: cfg.numRequestQueues,
    makeHandler: (q) => (q === 0 ? session.handleHiprio : session.handleRequest),
    onRingStopping: () => fs.cancelWaits(),
  });
  await backend.serve(conn);
  log.info({ stats: session.stats }, 'client disconnected, shutting down');
  fs.close();
}

export function main(argv: string[]): void {
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
  const log = createLogger(cfg.logLevel);
  serve(cfg, loadNative(), log).then(
    () => process.exit(0),
    (e: unknown) => {
      log.fatal({ err: e }, 'fatal error');
      process.exit(1);
    },
  );
}

if (require.main === module) main(process.argv.slice(2));
