// Earlier releases a running daemon may be today, built beside this one (same native addon and
// node_modules): what the upgrade tests start before replacing the code on disk.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO } from './daemon';

/** The last commits of sessions 1 and 2. */
export const PREVIOUS = [
  ['session 1', 'ef52a06cecc34d87baef4959d3b812a858462184'],
  ['session 2', '8a0ce545227439e7f4ccb706bf79ccbe3c24d22c'],
] as const;

/** Is this commit in the clone (a shallow one may lack it)? */
export function have(commit: string): boolean {
  return spawnSync('git', ['-C', REPO, 'cat-file', '-e', `${commit}^{commit}`]).status === 0;
}

/** A release's TypeScript, built in a temp dir; its bin/virtiofsd-ts runs it. */
export function buildPrevious(commit: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-prev-'));
  const archive = spawnSync('sh', ['-c', `git -C '${REPO}' archive ${commit} src bin tsconfig.json package.json | tar -x -C '${dir}'`]);
  assert.equal(archive.status, 0, String(archive.stderr));
  // The real directory: the worker's sandbox mounts what a link resolves to, one link deep.
  fs.symlinkSync(fs.realpathSync(path.join(REPO, 'node_modules')), path.join(dir, 'node_modules'));
  fs.mkdirSync(path.join(dir, 'native'));
  fs.symlinkSync(path.join(REPO, 'native', 'build'), path.join(dir, 'native', 'build'));
  const tsc = spawnSync(process.execPath, [path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(dir, 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
  return dir;
}

/** This release's code lands on disk over a previous one's (what an operator's upgrade does). */
export function installCurrent(prev: string): void {
  fs.cpSync(path.join(REPO, 'dist', 'src'), path.join(prev, 'dist', 'src'), { recursive: true, force: true });
}
