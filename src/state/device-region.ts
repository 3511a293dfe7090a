// The vhost-user device state (features, memory regions, ring sizes, addresses, bases, enabled
// flags, the fd numbers holding them) in a memfd the keeper keeps up to date after every
// vhost-user message: what a re-executed keeper resumes from, and what check-state shows.
//
// Layout: a 64-byte header, then two slots of SLOT_BYTES holding the state as JSON. Double
// buffered: a new state is written into the slot not in use, its length after it, and only
// then the header's `active` word is switched (publish last), so a crash at any instruction
// leaves the old state or the new one readable, never a mix.

import * as fs from 'node:fs';
import type { NativeBinding } from '../native/binding';
import { sealedMemfd } from './memfd';

export const DEVICE_MAGIC = 0x56444556; // "VEDV"
export const DEVICE_VERSION = 1;
export const DEVICE_HEADER = 64;
/** Room for one JSON copy: 256 queues and 64 regions take well under this. */
export const DEVICE_SLOT_BYTES = 128 * 1024;
/** Header words (u32 index): magic, version, active slot, sequence, slot size, length of each slot. */
export const DH = { magic: 0, version: 1, active: 2, seq: 3, slotBytes: 4, len0: 5, len1: 6 } as const;

export class DeviceRegion {
  private readonly words: Uint32Array;
  private readonly bytes: Uint8Array;
  private last = '';

  /**
   * A new region (fd < 0) or one an earlier image of the keeper left (fd, checked). name: the
   * memfd's name; the keeper's own hand-over for a service manager's fd store (keeper/fd-park.ts)
   * is a second region of this layout.
   */
  constructor(private readonly native: NativeBinding, fd = -1, name = 'vfsd-device') {
    const size = DEVICE_HEADER + 2 * DEVICE_SLOT_BYTES;
    if (fd < 0) {
      fd = sealedMemfd(native, name, size);
      if (fd < 0) throw new Error(`memfd_create(${name}): errno ${-fd}`);
    } else if (fs.fstatSync(fd).size < size) {
      throw new Error(`${name}: region too small`);
    }
    this.fd = fd;
    const m = native.mmap(fd, 0, size);
    if (typeof m === 'number') throw new Error(`mmap of ${name} failed: errno ${-m}`);
    this.words = new Uint32Array(m, 0, DEVICE_HEADER / 4);
    this.bytes = new Uint8Array(m);
    if (this.words[DH.magic] === 0) {
      this.words[DH.version] = DEVICE_VERSION;
      this.words[DH.slotBytes] = DEVICE_SLOT_BYTES;
      Atomics.store(this.words, DH.magic, DEVICE_MAGIC);
    } else if (this.words[DH.magic] !== DEVICE_MAGIC || this.words[DH.version] !== DEVICE_VERSION) {
      throw new Error(`${name}: not a state region of this version`);
    }
  }

  readonly fd: number;

  /** Publish a state (a JSON-safe object); false if it does not fit (the old one stays). */
  write(state: unknown): boolean {
    const json = JSON.stringify(state);
    if (json === this.last) return true;
    const enc = Buffer.from(json, 'utf8');
    if (enc.length > DEVICE_SLOT_BYTES) return false;
    const w = this.words;
    const next = 1 - (Atomics.load(w, DH.active) & 1);
    this.bytes.set(enc, DEVICE_HEADER + next * DEVICE_SLOT_BYTES);
    w[next === 0 ? DH.len0 : DH.len1] = enc.length;
    // ORDER: the slot and its length first, then the switch.
    Atomics.store(w, DH.active, next);
    w[DH.seq] = (w[DH.seq]! + 1) >>> 0;
    this.last = json;
    return true;
  }

  /** The published state, or null if none was written yet. */
  read(): unknown {
    return readDeviceState(Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength));
  }
}

/**
 * The published state in a region's bytes (also used by check-state on a copy it read through
 * /proc); null when nothing was published yet. Throws on a malformed region.
 */
export function readDeviceState(b: Buffer): unknown {
  if (b.length < DEVICE_HEADER) throw new Error(`${b.length} bytes, shorter than the header`);
  const word = (i: number): number => b.readUInt32LE(i * 4);
  if (word(DH.magic) !== DEVICE_MAGIC) throw new Error(`magic 0x${word(DH.magic).toString(16)}`);
  if (word(DH.version) !== DEVICE_VERSION) throw new Error(`version ${word(DH.version)}`);
  const slot = word(DH.active), slotBytes = word(DH.slotBytes);
  if (slot > 1) throw new Error(`active slot ${slot}`);
  if (b.length < DEVICE_HEADER + 2 * slotBytes) throw new Error(`slots of ${slotBytes} bytes do not fit in ${b.length}`);
  const len = word(slot === 0 ? DH.len0 : DH.len1);
  if (len === 0) return null;
  if (len > slotBytes) throw new Error(`slot ${slot} length ${len} exceeds the slot size ${slotBytes}`);
  const at = DEVICE_HEADER + slot * slotBytes;
  return JSON.parse(b.subarray(at, at + len).toString('utf8'));
}
