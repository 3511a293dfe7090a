// A restarted worker rebuilds its maps from shared memory a previous worker wrote. Whatever those
// records say, it opens no special file: an open-file record naming a FIFO's node is reopened
// through the same check as OPEN (EBADF, never a blocking open), and an inode's type is taken
// from the inode, not from its record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, STAT_SLOTS } from '../../src/native/binding';
import { PassthroughFs, DEFAULT_FS_OPTIONS } from '../../src/passthrough/passthrough-fs';
import { silentLogger } from '../../src/log';
import { INODE_RECORD } from '../../src/passthrough/inode-table';
import { HANDLE_RECORD } from '../../src/passthrough/handle-table';
import type { FdRegistry } from '../../src/state/fd-registry';
import { AT_FDCWD, O_NONBLOCK, O_RDONLY, O_RDWR, S_IFIFO, S_IFREG } from '../../src/linux/constants';

const native = loadNative();
const E = os.constants.errno;
const CTX = { uid: 0, gid: 0, pid: 1 };
/** SlotTable header; record fields (inode-table.ts, handle-table.ts). */
const HEADER = 64, INODE_MODE = 44, HANDLE_NODEID = 4;

/** The keeper's fd store: a duplicate of every fd put. */
function keeper(): FdRegistry & { fds: Map<string, number> } {
  const fds = new Map<string, number>();
  const put = (k: string, fd: number): void => { fds.set(k, native.dup(fd)); };
  return { fds, put, putLazy: put, del: (k) => { const fd = fds.get(k); if (fd !== undefined) native.close(fd); fds.delete(k); }, flush() {} };
}

function mapped(fd: number): DataView {
  const buf = native.mmap(fd, 0, fs.fstatSync(fd).size);
  assert.ok(typeof buf !== 'number');
  return new DataView(buf);
}

test('recovery opens no special file, whatever the records say', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-recovery-special-'));
  try {
    assert.equal(native.mknodat(AT_FDCWD, path.join(dir, 'fifo'), S_IFIFO | 0o600, 0), 0);
    // Held open at both ends, so that a regression fails this test rather than hanging it in openat.
    const holder = native.openat(AT_FDCWD, path.join(dir, 'fifo'), O_RDWR | O_NONBLOCK, 0);
    assert.ok(holder >= 0);
    fs.writeFileSync(path.join(dir, 'reg'), 'data');
    const opts = { ...DEFAULT_FS_OPTIONS, sharedDir: dir, inodeFileHandles: 'never' as const };
    const st = new BigUint64Array(STAT_SLOTS);
    const k = keeper();
    const first = new PassthroughFs(native, opts, silentLogger, { registry: k });
    const fifo = first.lookup(CTX, 1, 'fifo', st);
    const reg = first.lookup(CTX, 1, 'reg', st);
    assert.ok(typeof fifo !== 'number' && typeof reg !== 'number');
    const open = first.open(CTX, reg.nodeid, O_RDONLY);
    assert.ok(typeof open !== 'number');
    assert.equal(first.open(CTX, fifo.nodeid, O_RDONLY), -E.EBADF);

    // The first worker dies; its records are then what a buggy or hostile worker could leave:
    // the open file names the FIFO's node, and the FIFO's record says it is a regular file.
    const stateFds = first.stateFds;
    const files = mapped(stateFds.files), inodes = mapped(stateFds.inodes);
    files.setUint32(HEADER + open.fh * HANDLE_RECORD + HANDLE_NODEID, fifo.nodeid, true);
    inodes.setUint32(HEADER + fifo.nodeid * INODE_RECORD + INODE_MODE, S_IFREG | 0o644, true);
    // The keeper has every inode's fd; not the open file's, so that it is opened again.
    const recovered = new Map([...k.fds].filter(([key]) => !key.startsWith('f')).map(([key, fd]) => [key, native.dup(fd)] as [string, number]));

    const second = new PassthroughFs(native, opts, silentLogger, {
      registry: keeper(), recovered,
      fds: { inodes: native.dup(stateFds.inodes), files: native.dup(stateFds.files), dirs: native.dup(stateFds.dirs) },
    });
    assert.equal(second.files.lost, 1, 'the open file naming the FIFO is lost, not opened');
    assert.equal(second.files.get(open.fh), undefined);
    assert.equal(second.open(CTX, fifo.nodeid, O_RDONLY), -E.EBADF, 'the FIFO is known by its real type');
    assert.equal(second.getlk(CTX, fifo.nodeid, 0, 5n, { start: 0n, end: 0n, type: 0, pid: 0 }), -E.EBADF);
    const again = second.open(CTX, reg.nodeid, O_RDONLY);
    assert.ok(typeof again !== 'number', 'the regular file opens');
    second.close();
    native.close(holder);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
