// Without --posix-acl the guest does not see POSIX ACL xattrs (src/passthrough/xattr.ts): a
// LISTXATTR result is rewritten in place without them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withoutAclNames } from '../../../src/passthrough/xattr';

function list(...names: string[]): Uint8Array {
  return Buffer.from(names.map((n) => `${n}\0`).join(''), 'latin1');
}

function names(buf: Uint8Array, len: number): string[] {
  return Buffer.from(buf.subarray(0, len)).toString('latin1').split('\0').filter(Boolean);
}

test('the ACL names go, every other name stays, in order', () => {
  const buf = new Uint8Array(256);
  const src = list('user.a', 'system.posix_acl_access', 'security.selinux', 'system.posix_acl_default', 'user.b');
  buf.set(src);
  const len = withoutAclNames(buf, src.length);
  assert.deepEqual(names(buf, len), ['user.a', 'security.selinux', 'user.b']);
  assert.equal(len, list('user.a', 'security.selinux', 'user.b').length, 'NUL-terminated names, nothing more');
});

test('a list of only ACL names becomes empty; one without any is unchanged', () => {
  const buf = new Uint8Array(128);
  const acl = list('system.posix_acl_access', 'system.posix_acl_default');
  buf.set(acl);
  assert.equal(withoutAclNames(buf, acl.length), 0);
  const plain = list('user.x', 'trusted.y');
  buf.set(plain);
  const len = withoutAclNames(buf, plain.length);
  assert.deepEqual(Buffer.from(buf.subarray(0, len)), Buffer.from(plain));
});

test('a size probe (no buffer) is answered with the full size: an upper bound is enough', () => {
  assert.equal(withoutAclNames(new Uint8Array(0), 57), 57);
});

test('a name that only starts like an ACL name is not one', () => {
  const buf = new Uint8Array(128);
  const src = list('system.posix_acl', 'user.system.posix_acl_access');
  buf.set(src);
  assert.deepEqual(names(buf, withoutAclNames(buf, src.length)), ['system.posix_acl', 'user.system.posix_acl_access']);
});
