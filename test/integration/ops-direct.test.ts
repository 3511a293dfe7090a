// Every opcode, straight into a FuseSession over a PassthroughFs on a temp directory.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { FuseSession } from '../../src/fuse/session';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { FuseClient } from '../support/fuse-client';
import { directTransport } from '../support/direct-transport';
import { defineOpSuite } from '../support/op-suite';

for (const syncIo of [false, true]) {
  defineOpSuite(`FUSE ops straight into the session (xattr on, ${syncIo ? 'sync' : 'thread-pool'} I/O)`, {
    peer: 'ts',
    xattr: true,
    async setup() {
      const native = loadNative();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-ops-'));
      const pfs = new PassthroughFs(native, { ...DEFAULT_FS_OPTIONS, sharedDir: dir, xattr: true, syncIo }, silentLogger);
      const session = new FuseSession(pfs, silentLogger, { probes: pfs, rangeIo: pfs });
      return {
        client: new FuseClient(directTransport(session)),
        dir,
        async teardown() {
          pfs.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  });
}
