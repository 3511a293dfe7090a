// The memfds the keeper and the worker share (the maps, the per-ring in-flight regions and
// journals, the device state), sealed so that no process can shrink one another maps: a mapping
// past the end of its file raises SIGBUS in whoever touches it (fcntl(2), "File Sealing";
// memfd_create(2)). A region whose size is fixed is sealed against growing too, and every one
// against further seals (F_SEAL_SEAL), so none can later be frozen (F_SEAL_WRITE) either.

import type { NativeBinding } from '../native/binding';
import { MFD_ALLOW_SEALING, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK } from '../linux/constants';

/**
 * A new sealed memfd named name (fd or -errno): of fixedSize bytes and sealed at that size, or
 * (fixedSize undefined) empty, growable, never shrinkable.
 */
export function sealedMemfd(native: NativeBinding, name: string, fixedSize?: number): number {
  const fd = native.memfdCreate(name, MFD_ALLOW_SEALING);
  if (fd < 0) return fd;
  let r = fixedSize === undefined ? 0 : native.ftruncate(fd, fixedSize);
  if (r === 0) r = native.addSeals(fd, F_SEAL_SHRINK | F_SEAL_SEAL | (fixedSize === undefined ? 0 : F_SEAL_GROW));
  if (r < 0) {
    native.close(fd);
    return r;
  }
  return fd;
}
