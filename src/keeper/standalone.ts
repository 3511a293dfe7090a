// --no-keeper: serve in this one process (no crash survival, no worker sandbox; for comparison
// and for hosts that want one process). The keeper's start-up, then the FUSE session over the
// passthrough right here.

import type { Config } from '../config';
import type { Logger } from '../log';
import type { NativeBinding } from '../native/binding';
import { PassthroughFs } from '../passthrough/passthrough-fs';
import { FuseSession } from '../fuse/session';
import { VhostUserFsBackend } from '../vhost/backend';
import { acceptFrontend, prepare } from './startup';

export async function serveStandalone(cfg: Config, native: NativeBinding, log: Logger): Promise<void> {
  // Both are the keeper's (keeper/service.ts, keeper/api.ts): refused rather than ignored.
  if (cfg.fdStore || cfg.apiSocket !== undefined) throw new Error('--fd-store and --api-socket need the keeper (they do not go with --no-keeper)');
  const fsOpts = prepare(cfg, native, log);
  log.warn('--no-keeper: one process, no sandbox and no seccomp filter (the sandbox is the worker\'s)');
  const fs = new PassthroughFs(native, fsOpts, log);
  const session = new FuseSession(fs, log, { probes: fs, rangeIo: fs });
  const backend = new VhostUserFsBackend({
    native, log, numRequestQueues: cfg.numRequestQueues,
    makeHandler: (q) => session.handlerFor(q, null),
    onRingStopping: () => fs.cancelWaits(),
  });
  await backend.serve((await acceptFrontend(cfg, native, log)).conn);
  log.info({ stats: session.stats }, 'client disconnected, shutting down');
  fs.close();
}
