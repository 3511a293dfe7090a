// Every opcode over real virtqueues: our vhost-user frontend (playing QEMU 7.2) drives our
// daemon as a separate process, and the same suite drives the C virtiofsd so the two can be
// compared (the suite notes where the C peer differs).
import { loadNative } from '../../src/native/binding';
import { FuseClient } from '../support/fuse-client';
import { VhostUserFrontend } from '../support/frontend';
import { defineOpSuite } from '../support/op-suite';
import { startDaemon, type Peer } from '../support/daemon';

function suite(peer: Peer, name: string, args: string[], xattr: boolean): void {
  defineOpSuite(name, {
    peer, xattr,
    async setup() {
      const d = await startDaemon(peer, { args });
      const fe = await VhostUserFrontend.connect(loadNative(), d.socket, { ramSize: 64 << 20 });
      return {
        client: new FuseClient((q, out, inLens) => fe.request(q, out, inLens)),
        dir: d.dir,
        async stopRings() {
          await fe.stop();
          await fe.start();
        },
        async teardown() {
          fe.close();
          await d.stop();
        },
      };
    },
  });
}

suite('ts', 'FUSE ops over vhost-user against virtiofsd-ts (--xattr)', ['--xattr', '--log-level=warn'], true);
suite('ts', 'FUSE ops over vhost-user against virtiofsd-ts (--cache=never, --thread-pool-size=0)', ['--cache=never', '--thread-pool-size=0', '--log-level=warn'], false);
// chroot mode reaches the share tree as its root and /proc/self/fd only through a saved fd.
suite('ts', 'FUSE ops over vhost-user against virtiofsd-ts (--sandbox=chroot, --xattr)', ['--sandbox=chroot', '--xattr', '--log-level=warn'], true);
suite('c', 'FUSE ops over vhost-user against the C virtiofsd (-o xattr)', ['-o', 'xattr', '-o', 'cache=auto'], true);
