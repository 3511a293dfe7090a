// The test front-end against the C virtiofsd shipped with QEMU 7.2 (libvhost-user): proves that the
// front-end speaks vhost-user the way a real back-end expects, so our back-end's tests mean something.
// A hand-built FUSE_INIT goes on request queue 1 and must come back as a 7.x INIT reply.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { ProtocolFeature, VirtioFeature, hasBit } from '../../src/vhost/message';
import { VhostUserFrontend } from '../support/frontend';

const C_VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const FUSE_INIT = 26;

/** fuse_in_header (40 bytes) + fuse_init_in (64 bytes) as Linux 6.1 sends it. */
function fuseInit(unique: number): Uint8Array[] {
  const hdr = new Uint8Array(40);
  const h = new DataView(hdr.buffer);
  h.setUint32(0, 40 + 64, true); // len
  h.setUint32(4, FUSE_INIT, true); // opcode
  h.setBigUint64(8, BigInt(unique), true);
  h.setBigUint64(16, 0n, true); // nodeid
  h.setUint32(24, 0, true); // uid
  h.setUint32(28, 0, true); // gid
  h.setUint32(32, process.pid, true);
  h.setUint16(36, 0, true); // total_extlen
  const init = new Uint8Array(64);
  const v = new DataView(init.buffer);
  v.setUint32(0, 7, true); // major
  v.setUint32(4, 38, true); // minor
  v.setUint32(8, 131072, true); // max_readahead
  v.setUint32(12, 0x7bfffffb, true); // flags (trace A1)
  v.setUint32(16, 0xb, true); // flags2
  return [hdr, init];
}

test('the test front-end drives the C virtiofsd through FUSE_INIT', { skip: !fs.existsSync(C_VIRTIOFSD) && `${C_VIRTIOFSD} not installed` }, async () => {
  const native = loadNative();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-c-'));
  const share = path.join(dir, 'share');
  fs.mkdirSync(share);
  const sock = path.join(dir, 'vfs.sock');
  const child = spawn(C_VIRTIOFSD, [`--socket-path=${sock}`, '-o', `source=${share}`, '-o', 'cache=none'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let fe: VhostUserFrontend | undefined;
  try {
    fe = await VhostUserFrontend.connect(native, sock, { connectTimeoutMs: 10000 });
    // libvhost-user offers PROTOCOL_FEATURES and, among others, REPLY_ACK and CONFIGURE_MEM_SLOTS,
    // so this run covers the ADD_MEM_REG + NEED_REPLY path the trace shows.
    assert.ok(hasBit(fe.features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
    assert.ok(hasBit(fe.features, VirtioFeature.VIRTIO_F_VERSION_1));
    assert.ok(hasBit(fe.ackedProtocolFeatures, ProtocolFeature.VHOST_USER_PROTOCOL_F_REPLY_ACK));

    const r = await fe.request(1, fuseInit(1), [16, 64], 10000);
    const out = new DataView(r.in[0].buffer, r.in[0].byteOffset, 16);
    const initOut = new DataView(r.in[1].buffer, r.in[1].byteOffset, 64);
    assert.equal(out.getInt32(4, true), 0, `FUSE_INIT error ${out.getInt32(4, true)}`);
    assert.equal(out.getUint32(0, true), 16 + 64, 'out_header.len');
    assert.equal(out.getBigUint64(8, true), 1n, 'unique echoed');
    assert.equal(r.len, 16 + 64, 'used length');
    assert.equal(initOut.getUint32(0, true), 7, 'major');

    // QEMU's stop: the back-end reports one request consumed on queue 1.
    const bases = await fe.stop();
    assert.deepEqual(bases, [0, 1]);
  } catch (e) {
    (e as Error).message += `\nvirtiofsd stderr:\n${stderr}`;
    throw e;
  } finally {
    fe?.close();
    // It serves one connection, then exits.
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 5000)))]);
    clearTimeout(timer);
    if (code === 'timeout') child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
