// LOOKUP + GETATTR throughput with many inodes known (docs/performance.md, "Many inodes known").
// For each --handles mode and each --known count: a daemon (./bin/virtiofsd-ts --cache=never)
// over a fresh tree of that many files (1,000 per directory), the client LOOKUPs every one (the
// guest now holds them all), then for --duration seconds --lanes clients each LOOKUP a random
// known file and GETATTR its node; one op is the pair. With file handles an inode's fd comes from
// a cache of 1,024 (src/passthrough/inode-fds.ts): past that, most ops open the handle again.
// The client is the TypeScript one (test/support/fuse-client.ts over a vhost-user front-end): its
// own cost caps the numbers, so compare rows, not these with `npm run bench`.
//
//   node dist/scripts/bench-inodes.js [--known 1000,100000] [--handles mandatory,never] [--duration 5] [--lanes 16]

import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../src/native/binding';
import { startDaemon, workerPids } from '../test/support/daemon';
import { VhostUserFrontend } from '../test/support/frontend';
import { FuseClient } from '../test/support/fuse-client';
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
    const worker = workerPids(d.stderr()).at(-1)!;
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

runMain('bench-inodes', async () => {
  let known = [1000, 100_000], handles = ['mandatory', 'never'], seconds = 5, lanes = 16;
  parseArgs(process.argv.slice(2), (name, value) => {
    switch (name) {
      case '--known': known = list(value()).map(Number); break;
      case '--handles': handles = list(value()); break;
      case '--duration': seconds = Number(value()); break;
      case '--lanes': lanes = Number(value()); break;
      case '--help': process.stdout.write('node dist/scripts/bench-inodes.js [--known 1000,100000] [--handles mandatory,never] [--duration 5] [--lanes 16]\n'); return true;
      default: return false;
    }
    return true;
  });
  if (known.some((k) => !(k >= 1)) || !(seconds > 0) || !(lanes >= 1)) throw new UsageError('bad --known, --duration or --lanes');
  process.stdout.write('| --inode-file-handles | inodes known | LOOKUP+GETATTR pairs/s | worker fds |\n|---|---:|---:|---:|\n');
  for (const h of handles) for (const k of known) process.stdout.write(`${await cell(h, k, seconds, lanes)}\n`);
});
