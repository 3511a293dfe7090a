// The mapping options on the command line (src/config.ts declares them; src/passthrough/id-map.ts
// and xattr-map.ts parse them): the Rust virtiofsd's spellings, the C virtiofsd's -o xattrmap,
// the startup errors, and --security-label refused rather than ignored. These run as root here
// or not: the --uid-map cases pass the daemon's own ids whatever they are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs, ConfigError } from '../../src/config';

const BASE = ['--socket-path=/run/s', '--shared-dir=/srv'];

test('--translate-uid/--translate-gid repeat, keep their order, and reach the file system options', () => {
  const c = parseArgs([...BASE, '--translate-uid=squash-guest:0:1001:4294967295', '--translate-uid', 'host:1001:1000:1', '--translate-gid=map:0:100:1']);
  assert.deepEqual(c.idMap, { translateUid: ['squash-guest:0:1001:4294967295', 'host:1001:1000:1'], translateGid: ['map:0:100:1'], nsUid: [], nsGid: [] });
  assert.deepEqual(parseArgs(BASE).idMap, { translateUid: [], translateGid: [], nsUid: [], nsGid: [] });
});

test('a bad or overlapping --translate-uid, or one with --posix-acl, stops the start with the reason', () => {
  assert.throws(() => parseArgs([...BASE, '--translate-uid=swap:0:1:1']), (e: Error) => e instanceof ConfigError && /type 'swap'/.test(e.message));
  assert.throws(() => parseArgs([...BASE, '--translate-uid=map:0:1:5', '--translate-uid=guest:4:9:1']), (e: Error) => e instanceof ConfigError && /overlaps/.test(e.message));
  assert.throws(() => parseArgs([...BASE, '--translate-gid=map:0:1:5', '--posix-acl']), /posix-acl/);
  assert.throws(() => parseArgs([...BASE, '--translate-gid=map:0:1:5', '-o', 'posix_acl']), /posix-acl/);
});

test('--uid-map/--gid-map take the daemon\'s own id unprivileged, and are refused as root', () => {
  const uid = process.geteuid!(), gid = process.getegid!();
  const args = [...BASE, `--uid-map=:0:${uid}:1:`, `--gid-map=:0:${gid}:1:`];
  if (uid === 0) {
    assert.throws(() => parseArgs(args), /unprivileged/);
  } else {
    assert.deepEqual(parseArgs(args).idMap, { translateUid: [], translateGid: [], nsUid: [`:0:${uid}:1:`], nsGid: [`:0:${gid}:1:`] });
  }
  assert.throws(() => parseArgs([...BASE, '--uid-map=0:1:1']), ConfigError);
});

test('--xattrmap and -o xattrmap= set the mapping and turn xattrs on; a bad mapping stops the start', () => {
  const c = parseArgs([...BASE, '--xattrmap=:map::user.virtiofs.:']);
  assert.equal(c.xattrMap, ':map::user.virtiofs.:');
  assert.equal(c.xattr, true);
  const o = parseArgs(['--socket-path=/run/s', '-o', 'source=/srv,xattrmap=/prefix/all/trusted./user.virtiofs./ /ok/all///']);
  assert.equal(o.xattrMap, '/prefix/all/trusted./user.virtiofs./ /ok/all///');
  assert.equal(o.xattr, true);
  assert.equal(parseArgs(BASE).xattrMap, null);
  assert.throws(() => parseArgs([...BASE, '--xattrmap=:map::x.::ok:all:::']), (e: Error) => e instanceof ConfigError && /last rule/.test(e.message));
});

test('--security-label and -o security_label are refused, not accepted and ignored', () => {
  assert.throws(() => parseArgs([...BASE, '--security-label']), /FUSE_SECURITY_CTX/);
  assert.throws(() => parseArgs([...BASE, '-o', 'security_label']), /FUSE_SECURITY_CTX/);
  assert.equal(parseArgs([...BASE, '-o', 'no_security_label']).xattrMap, null);
});
