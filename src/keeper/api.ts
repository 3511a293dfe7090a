// The control and metrics API (--api-socket): HTTP on a unix socket of mode 0600, served by the
// keeper. GET /status (JSON), GET /metrics (Prometheus text, prom-client), POST /upgrade (the
// planned worker upgrade, as SIGHUP). The keeper parses no guest data here either: request
// counts come from the counters region the workers write (state/counters.ts), read as untrusted
// numbers, never from a round trip to a worker, so a busy or wedged worker cannot stall a scrape.

import * as http from 'node:http';
import * as nodefs from 'node:fs';
import * as net from 'node:net';
import * as nodepath from 'node:path';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { Logger } from '../log';
import { OP_NAMES } from '../fuse/abi';
import { LATENCY_BUCKETS, OPCODE_SLOTS, type CountersSnapshot } from '../state/counters';

/** What the API reads of the keeper, at the moment it is asked. */
export interface KeeperView {
  /** The worker serving now, worker processes started so far (spares too), and times a worker
   *  began serving (the first one included). */
  worker(): { pid: number | undefined; starts: number; serves: number };
  device(): { features: number; protocolFeatures: number; rings: Array<{ index: number; size: number }> };
  fuseInitFlags(): string | null;
  counters(): CountersSnapshot | null;
  /** Fds the keeper holds for the workers, and fds parked in the service manager's store (null: none). */
  fds(): { registered: number; parked: number | null };
  /** Start a planned worker upgrade (as SIGHUP). */
  upgrade(): void;
}

const VERSION = readVersion();
const MAX_REQUEST_BODY = 4096;

function readVersion(): string {
  try {
    const pkg = JSON.parse(nodefs.readFileSync(nodepath.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

const opName = (opcode: number): string => (opcode === OPCODE_SLOTS - 1 ? 'other' : OP_NAMES[opcode] ?? `op${opcode}`);

export class ControlApi {
  private readonly registry = new Registry();
  private readonly stall: Histogram<'after'>;
  private readonly started = Date.now();

  private constructor(private readonly server: http.Server, readonly path: string, private readonly view: KeeperView, private readonly log: Logger) {
    const reg = this.registry;
    collectDefaultMetrics({ register: reg, prefix: 'vfsd_keeper_' });
    const snap = (): CountersSnapshot | null => view.counters();
    new Counter({
      name: 'vfsd_requests_total', help: 'FUSE requests answered, by opcode (across worker restarts)', labelNames: ['op'], registers: [reg],
      collect() { this.reset(); for (const o of snap()?.ops ?? []) this.inc({ op: opName(o.opcode) }, o.requests); },
    });
    new Counter({
      name: 'vfsd_request_errors_total', help: 'FUSE requests answered with an error, by opcode', labelNames: ['op'], registers: [reg],
      collect() { this.reset(); for (const o of snap()?.ops ?? []) if (o.errors > 0) this.inc({ op: opName(o.opcode) }, o.errors); },
    });
    reg.registerMetric(latencyHistogram(snap));
    const bytes = (name: string, help: string, pick: (s: CountersSnapshot) => number): void => {
      new Counter({ name, help, registers: [reg], collect() { this.reset(); const s = snap(); if (s) this.inc(pick(s)); } });
    };
    bytes('vfsd_read_bytes_total', 'Bytes READ by the guest', (s) => s.bytesRead);
    bytes('vfsd_written_bytes_total', 'Bytes WRITTEN by the guest', (s) => s.bytesWritten);
    const gauge = (name: string, help: string, value: () => number | null): void => {
      new Gauge({ name, help, registers: [reg], collect() { const v = value(); if (v !== null) this.set(v); } });
    };
    gauge('vfsd_inodes', 'Inodes the guest holds (the worker\'s inode map)', () => snap()?.inodes ?? null);
    gauge('vfsd_handles', 'Open files and directories of the guest', () => snap()?.handles ?? null);
    gauge('vfsd_requests_in_flight', 'Requests the serving worker has popped and not answered', () => snap()?.inflight ?? null);
    gauge('vfsd_worker_starts', 'Worker processes started so far (spares and the first one included)', () => view.worker().starts);
    gauge('vfsd_worker_restarts', 'Times a worker took over the rings from another (crash or upgrade)', () => Math.max(0, view.worker().serves - 1));
    gauge('vfsd_registered_fds', 'Fds the keeper holds for the workers (open files, lock owners, inodes without a file handle)', () => view.fds().registered);
    gauge('vfsd_fd_store_fds', 'Fds parked in the service manager\'s fd store', () => view.fds().parked);
    this.stall = new Histogram({
      name: 'vfsd_worker_stall_seconds', help: 'From a worker gone (crash, or an upgrade\'s hand-over) to its successor serving',
      labelNames: ['after'], buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [reg],
    });
  }

  /**
   * Listen on path: a socket of mode 0600 made by bind(2), which never follows a symlink at the
   * path and fails where anything exists; a socket left there by a process gone (nobody
   * answers a connect) is replaced, anything else refused.
   */
  static async start(path: string, view: KeeperView, log: Logger): Promise<ControlApi> {
    await clearStaleSocket(path);
    const server = http.createServer();
    const api = new ControlApi(server, path, view, log);
    server.on('request', (req, res) => api.handle(req, res));
    server.on('clientError', (_e, sock) => sock.destroy());
    // The keeper runs with umask 0 (startup.ts): the socket is made 0600 by the umask in force at
    // bind(2), which listen() does before it returns; the umask is ours again right after, before
    // anything else (a worker's spawn) can run.
    const listening = new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.once('listening', () => { server.off('error', reject); resolve(); });
    });
    const old = process.umask(0o177);
    try {
      server.listen({ path, exclusive: true });
    } finally {
      process.umask(old);
    }
    await listening;
    const st = nodefs.lstatSync(path);
    if (!st.isSocket() || (st.mode & 0o777) !== 0o600 || st.uid !== process.getuid?.()) {
      server.close();
      throw new Error(`--api-socket ${path}: not a socket of mode 0600 of ours after bind (mode 0${(st.mode & 0o777).toString(8)})`);
    }
    server.unref();
    log.info({ path }, 'control API listening');
    return api;
  }

  /** A worker serves again (Supervisor onResumed). */
  resumed(ms: number, after: 'crash' | 'upgrade'): void {
    this.stall.observe({ after }, ms / 1000);
  }

  status(): Record<string, unknown> {
    const v = this.view;
    const w = v.worker();
    const d = v.device();
    const c = v.counters();
    return {
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      keeperPid: process.pid,
      worker: { pid: w.pid ?? null, starts: w.starts, restarts: Math.max(0, w.serves - 1) },
      features: { virtio: '0x' + d.features.toString(16), vhostUserProtocol: '0x' + d.protocolFeatures.toString(16), fuseInit: v.fuseInitFlags() },
      rings: d.rings,
      maps: c ? { inodes: c.inodes, handles: c.handles } : null,
      inFlight: c ? c.inflight : null,
      fds: v.fds(),
    };
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    let size = 0;
    // A body is never needed; one too large ends the connection.
    req.on('data', (b: Buffer) => { size += b.length; if (size > MAX_REQUEST_BODY) req.destroy(); });
    req.on('end', () => {
      const route = `${req.method ?? ''} ${(req.url ?? '').split('?')[0]}`;
      switch (route) {
        case 'GET /status':
          return send(res, 200, 'application/json', JSON.stringify(this.status()) + '\n');
        case 'GET /metrics':
          this.registry.metrics().then(
            (text) => send(res, 200, this.registry.contentType, text),
            (e: unknown) => { this.log.error({ err: e }, 'control API: metrics failed'); send(res, 500, 'text/plain', 'metrics failed\n'); },
          );
          return;
        case 'POST /upgrade':
          this.log.info('control API: upgrade requested');
          this.view.upgrade();
          return send(res, 202, 'application/json', JSON.stringify({ upgrade: 'started', worker: this.view.worker() }) + '\n');
        default: {
          const known = ['/status', '/metrics', '/upgrade'].includes((req.url ?? '').split('?')[0]!);
          return send(res, known ? 405 : 404, 'text/plain', known ? 'method not allowed\n' : 'not found\n');
        }
      }
    });
  }

  close(): void {
    this.server.close();
    try { nodefs.unlinkSync(this.path); } catch { /* gone already */ }
  }
}

function send(res: http.ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** A socket at path nobody listens on is removed; anything else that exists there is refused. */
async function clearStaleSocket(path: string): Promise<void> {
  let st: nodefs.Stats;
  try {
    st = nodefs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new Error(`--api-socket ${path}: exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`--api-socket ${path}: another process listens there`);
  nodefs.unlinkSync(path);
}

/** The latency histogram from the counters region (its buckets are the workers', not observed here). */
function latencyHistogram(snap: () => CountersSnapshot | null): Metric {
  const name = 'vfsd_request_duration_seconds';
  const help = 'Time from a request\'s pop to its answer, by opcode';
  const m = {
    name, help, type: 'histogram', aggregator: 'sum',
    get: async () => {
      const values: Array<{ value: number; labels: Record<string, string | number>; metricName: string }> = [];
      for (const o of snap()?.ops ?? []) {
        const op = opName(o.opcode);
        LATENCY_BUCKETS.forEach((le, i) => values.push({ value: o.buckets[i]!, labels: { le, op }, metricName: `${name}_bucket` }));
        values.push({ value: o.requests, labels: { le: '+Inf', op }, metricName: `${name}_bucket` });
        values.push({ value: o.latencySum, labels: { op }, metricName: `${name}_sum` });
        values.push({ value: o.requests, labels: { op }, metricName: `${name}_count` });
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
    reset: () => undefined,
  };
  return m as unknown as Metric;
}
