// The control and metrics API (--api-socket, src/keeper/api.ts) through the test front-end:
// the socket is 0600; GET /status and GET /metrics follow the requests served (Prometheus text
// parsed line by line); POST /upgrade brings a new worker and the counts run on across it;
// a path that holds anything but a dead socket is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../src/native/binding';
import { VhostUserFrontend } from '../support/frontend';
import { FuseClient } from '../support/fuse-client';
import { startDaemon } from '../support/daemon';
import { waitFor } from '../support/crash-harness';

function call(socketPath: string, method: string, url: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: url }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => { body += b.toString(); });
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Prometheus text exposition: `name{l="v",...} value` lines, keyed by name and sorted labels. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a metric line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => `${l[1]}=${l[2]}`).sort();
    out.set(labels.length ? `${m[1]}{${labels.join(',')}}` : m[1]!, Number(m[3]));
  }
  return out;
}

async function metrics(sock: string): Promise<Map<string, number>> {
  const r = await call(sock, 'GET', '/metrics');
  assert.equal(r.code, 200);
  return parseMetrics(r.body);
}

interface Status { worker: { pid: number | null; starts: number; restarts: number }; rings: Array<{ index: number; size: number }>; maps: { inodes: number; handles: number } | null; features: { virtio: string }; inFlight: number | null; version: string }

async function status(sock: string): Promise<Status> {
  const r = await call(sock, 'GET', '/status');
  assert.equal(r.code, 200);
  return JSON.parse(r.body) as Status;
}

test('control API: /status and /metrics follow the requests served, POST /upgrade brings a new worker, the socket is 0600', { timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-api-'));
  const api = path.join(dir, 'api.sock');
  const d = await startDaemon('ts', { args: ['--log-level=info', `--api-socket=${api}`] });
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 20_000));
    assert.equal((await c.init()).error, 0);
    await waitFor('the API socket', () => fs.existsSync(api), () => d.stderr());
    assert.equal(fs.statSync(api).mode & 0o777, 0o600, 'the API socket is 0600');
    await waitFor('a serving worker', () => /"msg":"worker serving"/.test(d.stderr()), () => d.stderr());

    const cr = await c.create(1, 'f', 0o102 /* O_RDWR|O_CREAT */);
    assert.equal(cr.error, 0);
    const node = cr.entry!.nodeid;
    for (let i = 0; i < 10; i++) assert.equal((await c.write(node, cr.fh!, i * 100, Buffer.alloc(100, 7))).error, 0);
    assert.equal((await c.read(node, cr.fh!, 0, 1000)).body.length, 1000);
    assert.notEqual((await c.lookup(1, 'missing')).error, 0);

    const s1 = await status(api);
    assert.equal(typeof s1.worker.pid, 'number');
    assert.equal(s1.worker.restarts, 0);
    assert.ok(s1.rings.length >= 1 && s1.rings.every((r) => r.size > 0), JSON.stringify(s1.rings));
    assert.notEqual(s1.features.virtio, '0x0');
    const m1 = await metrics(api);
    assert.equal(m1.get('vfsd_requests_total{op=WRITE}'), 10);
    assert.equal(m1.get('vfsd_written_bytes_total'), 1000);
    assert.equal(m1.get('vfsd_read_bytes_total'), 1000);
    assert.ok((m1.get('vfsd_request_errors_total{op=LOOKUP}') ?? 0) >= 1, 'the failed LOOKUP is counted');
    assert.equal(m1.get('vfsd_request_duration_seconds_count{op=WRITE}'), 10);
    assert.equal(m1.get('vfsd_request_duration_seconds_bucket{le=+Inf,op=WRITE}'), 10);
    assert.equal(m1.get('vfsd_worker_restarts'), 0);

    // The gauges (written about once a second by the worker) show the open file.
    let s2 = await status(api);
    for (const end = Date.now() + 10_000; Date.now() < end && !(s2.maps && s2.maps.handles >= 1 && s2.maps.inodes >= 2);) {
      await new Promise((r) => setTimeout(r, 100));
      s2 = await status(api);
    }
    assert.ok(s2.maps && s2.maps.inodes >= 2 && s2.maps.handles >= 1, JSON.stringify(s2.maps));

    const before = s2.worker.pid;
    const up = await call(api, 'POST', '/upgrade');
    assert.equal(up.code, 202);
    await waitFor('the upgrade', () => /"msg":"worker retired"/.test(d.stderr()), () => d.stderr(), 30_000);
    await waitFor('a new worker serving', () => [...d.stderr().matchAll(/"msg":"worker serving"/g)].length >= 2, () => d.stderr(), 30_000);
    for (let i = 0; i < 5; i++) assert.equal((await c.write(node, cr.fh!, 0, Buffer.alloc(10, 1))).error, 0);
    const s3 = await status(api);
    assert.notEqual(s3.worker.pid, before, 'another worker serves');
    assert.equal(s3.worker.restarts, 1);
    const m3 = await metrics(api);
    assert.equal(m3.get('vfsd_requests_total{op=WRITE}'), 15, 'the counts run on across workers');
    assert.equal(m3.get('vfsd_worker_stall_seconds_count{after=upgrade}'), 1);
    assert.equal(m3.get('vfsd_worker_restarts'), 1);
    assert.ok(m3.has('vfsd_keeper_process_open_fds'), 'the keeper\'s own process metrics');

    assert.equal((await call(api, 'GET', '/nope')).code, 404);
    assert.equal((await call(api, 'GET', '/upgrade')).code, 405);
  } finally {
    fe.close();
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('control API: a path holding a symlink or a regular file is refused', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-api-'));
  try {
    const target = path.join(dir, 'target');
    fs.writeFileSync(target, 'keep');
    const link = path.join(dir, 'link');
    fs.symlinkSync(target, link);
    for (const p of [link, target]) {
      // Refused at start, before the vhost-user socket listens.
      await assert.rejects(startDaemon('ts', { args: ['--log-level=info', `--api-socket=${p}`] }), /exists and is not a socket/);
    }
    assert.equal(fs.readFileSync(target, 'utf8'), 'keep', 'nothing was written through the link');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
