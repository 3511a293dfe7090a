// The layering of src/: no import cycle between its folders (a file directly in src/ counts
// as its own node), so each folder can be read, tested and changed from the bottom up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO } from '../support/daemon';

const SRC = path.join(REPO, 'src');

/** folder (or root file) -> folders it imports from, with one importing file as the witness. */
function graph(): Map<string, Map<string, string>> {
  const g = new Map<string, Map<string, string>>();
  const nodeOf = (file: string): string => {
    const rel = path.relative(SRC, file).split(path.sep);
    return rel.length > 1 ? rel[0]! : rel[0]!.replace(/\.ts$/, '.ts');
  };
  const walk = (dir: string): void => {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (ent.isDirectory()) { walk(p); continue; }
      if (!ent.name.endsWith('.ts')) continue;
      const from = nodeOf(p);
      const text = fs.readFileSync(p, 'utf8');
      for (const m of text.matchAll(/(?:from\s+|require\()\s*['"](\.[^'"]+)['"]/g)) {
        const target = path.resolve(path.dirname(p), m[1]!);
        const to = nodeOf(fs.existsSync(`${target}.ts`) ? `${target}.ts` : target);
        if (to === from) continue;
        if (!g.has(from)) g.set(from, new Map());
        if (!g.get(from)!.has(to)) g.get(from)!.set(to, path.relative(REPO, p));
      }
    }
  };
  walk(SRC);
  return g;
}

test('no import cycle between the folders of src/', () => {
  const g = graph();
  const cycles: string[] = [];
  // A cycle through a -> b exists when b reaches a.
  const reaches = (from: string, to: string, seen = new Set<string>()): boolean => {
    for (const n of g.get(from)?.keys() ?? []) {
      if (n === to) return true;
      if (!seen.has(n)) { seen.add(n); if (reaches(n, to, seen)) return true; }
    }
    return false;
  };
  for (const [a, outs] of g) for (const [b, witness] of outs) if (reaches(b, a)) cycles.push(`${a} -> ${b} (${witness})`);
  assert.deepEqual(cycles, []);
});
