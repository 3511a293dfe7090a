// LOOKUP + GETATTR throughput with many inodes known (docs/performance.md, "Many inodes known").
// For each --handles mode and each --known count: a daemon (./bin/virtiofsd-ts --cache=never)
// over a fresh tree of that many files (1,000 per directory), the client LOOKUPs every one (the
// guest now holds them all), then for --duration seconds --lanes clients each LOOKUP a random
// known file and GETATTR its node; one op is the pair. With file handles an inode's fd comes from
// a cache of 1,024 (src/passthrough/inode-fds.ts): past that, most ops open the handle again.
// The client is the TypeScript one (test/support/fuse-client.ts over a vhost-user front-end): its
// own cost caps the numbers, so compare rows, not these with `npm run bench`. The trees are made
// under os.tmpdir(): TMPDIR=/dev/shm makes 100,000 files in seconds. Without file handles every
// known inode is an fd, so --known past RLIMIT_NOFILE (the daemon raises it to its hard limit)
// ends in ENFILE: that row is left out, with a line saying so.
//
// --direct measures the file system layer alone: the same pairs as calls into a PassthroughFs
// in this process (no transport, no client), one at a time: what the cache's misses cost.
//
//   node dist/scripts/bench-inodes.js [--known 1000,100000] [--handles mandatory,never] [--duration 5] [--lanes 16] [--direct]

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { loadNative, STAT_SLOTS } from '../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../src/passthrough/passthrough-fs';
import { silentLogger } from '../src/log';
import { startDaemon, workerPids } from '../test/support/daemon';
import { VhostUserFrontend } from '../test/support/frontend';
import { FuseClient } from '../test/support/fuse-client';
import { innerWorker } from '../test/support/sandbox';
import { UsageError, list, parseArgs, runMain } from './bench/common';

const PER_DIR = 1000;

async function cell(handles: string, known: number, seconds: number, lanes: number): Promise<string> {
  const d = await startDaemon('ts', { args: ['--cache=never', `--inode-file-handles=${handles}`] });
  const fe = await VhostUserFrontend.connect(loadNative(), d.socket, {});
  try {
    const c = new FuseClient((q, out, inLens) => fe.request(q, out, inLens, 60_000));
    if ((await c.init()).error !== 0) throw new Error('FUSE_INIT failed');
    const dirs: bigint[] = [];
    for (let k = 0; k * PER_DIR < known; k++) {
      const dir = path.join(d.dir, `d${k}`);
      fs.mkdirSync(dir);
      for (let i = k * PER_DIR; i < Math.min(known, (k + 1) * PER_DIR); i++) fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'w'));
      const e = await c.lookup(1, `d${k}`);
      if (e.error !== 0) throw new Error(`LOOKUP d${k}: ${e.error}`);
      dirs.push(e.entry!.nodeid);
    }
    const one = async (i: number): Promise<void> => {
      const e = await c.lookup(dirs[Math.floor(i / PER_DIR)]!, `f${i}`);
      if (e.error !== 0) throw new Error(`LOOKUP f${i}: ${e.error}`);
      const a = await c.getattr(e.entry!.nodeid);
      if (a.error !== 0) throw new Error(`GETATTR f${i}: ${a.error}`);
    };
    let next = 0;
    await Promise.all(Array.from({ length: lanes }, async () => { while (next < known) await one(next++); }));
    // The worker itself, below its sandbox launcher (the pid the keeper logs).
    const worker = innerWorker(workerPids(d.stderr()).at(-1)!);
    const fds = fs.readdirSync(`/proc/${worker}/fd`).length;
    let ops = 0;
    const end = performance.now() + seconds * 1000;
    await Promise.all(Array.from({ length: lanes }, async () => {
      while (performance.now() < end) {
        await one(Math.floor(Math.random() * known));
        ops++;
      }
    }));
    return `| ${handles} | ${known.toLocaleString('en-US')} | ${Math.round(ops / seconds).toLocaleString('en-US')} | ${fds} |`;
  } finally {
    fe.close();
    await d.stop();
  }
}

/** A tree of `known` files in directories of PER_DIR under dir. */
function makeTree(dir: string, known: number): void {
  for (let k = 0; k * PER_DIR < known; k++) {
    fs.mkdirSync(path.join(dir, `d${k}`));
    for (let i = k * PER_DIR; i < Math.min(known, (k + 1) * PER_DIR); i++) fs.closeSync(fs.openSync(path.join(dir, `d${k}`, `f${i}`), 'w'));
  }
}

/** --direct: the pairs as calls into a PassthroughFs, as a worker with a keeper makes it. */
function directCell(handles: string, known: number, seconds: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-bench-inodes-'));
  const native = loadNative();
  const registry = { put() {}, putLazy() {}, del() {}, flush() {} };
  // --max-inodes as the tree needs (its default is 1,000,000: the files and directories of a
  // 1,000,000-file tree are past it).
  const limits = { ...DEFAULT_FS_OPTIONS.limits, inodes: Math.max(DEFAULT_FS_OPTIONS.limits.inodes, known + known / PER_DIR + 16) };
  const opts = { ...DEFAULT_FS_OPTIONS, sharedDir: dir, cache: 'never' as const, inodeFileHandles: handles as 'never' | 'mandatory', limits };
  let p: PassthroughFs | undefined;
  try {
    makeTree(dir, known);
    p = new PassthroughFs(native, opts, silentLogger, { registry });
    const ctx = { uid: 0, gid: 0, pid: 1 };
    const st = new BigUint64Array(STAT_SLOTS);
    const dirs: number[] = [];
    for (let k = 0; k * PER_DIR < known; k++) {
      const e = p.lookup(ctx, 1, `d${k}`, st);
      if (typeof e === 'number') throw new Error(`LOOKUP d${k}: ${e}`);
      dirs.push(e.nodeid);
    }
    const one = (i: number): void => {
      const e = p!.lookup(ctx, dirs[Math.floor(i / PER_DIR)]!, `f${i}`, st);
      if (typeof e === 'number') throw new Error(`LOOKUP f${i}: ${e}`);
      const r = p!.getattr(ctx, e.nodeid, null, st);
      if (r !== 0) throw new Error(`GETATTR f${i}: ${r}`);
    };
    for (let i = 0; i < known; i++) one(i);
    let ops = 0;
    const t0 = performance.now(), end = t0 + seconds * 1000;
    while (performance.now() < end) {
      for (let j = 0; j < 256; j++) one(Math.floor(Math.random() * known));
      ops += 256;
    }
    const rate = ops / ((performance.now() - t0) / 1000);
    return `| ${handles} | ${known.toLocaleString('en-US')} | ${Math.round(rate).toLocaleString('en-US')} | ${fs.readdirSync('/proc/self/fd').length} |`;
  } finally {
    p?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain('bench-inodes', async () => {
  let direct = false;
  let known = [1000, 100_000], handles = ['mandatory', 'never'], seconds = 5, lanes = 16;
  parseArgs(process.argv.slice(2), (name, value) => {
    switch (name) {
      case '--known': known = list(value()).map(Number); break;
      case '--handles': handles = list(value()); break;
      case '--duration': seconds = Number(value()); break;
      case '--lanes': lanes = Number(value()); break;
      case '--direct': direct = true; break;
      case '--help': process.stdout.write('node dist/scripts/bench-inodes.js [--known 1000,100000] [--handles mandatory,never] [--duration 5] [--lanes 16] [--direct]\n'); return true;
      default: return false;
    }
    return true;
  });
  if (known.some((k) => !(k >= 1)) || !(seconds > 0) || !(lanes >= 1)) throw new UsageError('bad --known, --duration or --lanes');
  process.stdout.write(`| --inode-file-handles | inodes known | LOOKUP+GETATTR pairs/s | ${direct ? 'fds of this process' : 'worker fds'} |\n|---|---:|---:|---:|\n`);
  for (const h of handles) {
    for (const k of known) {
      try {
        process.stdout.write(`${direct ? directCell(h, k, seconds) : await cell(h, k, seconds, lanes)}\n`);
      } catch (e) {
        process.stdout.write(`| ${h} | ${k.toLocaleString('en-US')} | (${(e as Error).message}) | |\n`);
      }
    }
  }
});
