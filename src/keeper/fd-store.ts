// The keeper's store of the worker's fds (a systemd-style fd store): key -> our duplicate.
import type { NativeBinding } from '../native/binding';

export class FdStore {
  private readonly fds = new Map<string, number>();

  constructor(private readonly native: NativeBinding) {}

  get size(): number { return this.fds.size; }

  get(key: string): number | undefined { return this.fds.get(key); }

  put(key: string, fd: number): void {
    const old = this.fds.get(key);
    if (old !== undefined) this.native.close(old);
    this.fds.set(key, fd);
  }

  del(key: string): void {
    const fd = this.fds.get(key);
    if (fd === undefined) return;
    this.fds.delete(key);
    this.native.close(fd);
  }

  entries(): IterableIterator<[string, number]> {
    return this.fds.entries();
  }

  clear(): void {
    for (const fd of this.fds.values()) this.native.close(fd);
    this.fds.clear();
  }
}
