// Memory shared between two processes as plain memory (docs/daemon.md, "Bulk data"): a file
// mapped into this process with mmap(MAP_SHARED) and seen from JavaScript as an ArrayBuffer, and
// the sealed memory files (memfd) the daemon makes its regions from. Node has neither mmap nor
// memfd_create, so both come from libc (src/libc.ts). Where those cannot be had (a platform
// koffi has no binary for, or not Linux) `memoryCalls()` is null and callers fall back to
// positional reads and writes on the descriptor (pread/pwrite), which cost about five times as
// much per byte on tmpfs: measured in docs/benchmarks.md.
//
// Why sealed memory files: a process that touches a page of a mapping beyond the end of its file
// is killed by SIGBUS, and a client holding the file writable could truncate it under the daemon.
// A memfd sealed with F_SEAL_SHRINK can only grow, whoever holds it, so the daemon maps only such
// files; a region it cannot seal it reads and writes with pread/pwrite, which merely fail.

import { memoryCalls } from './libc.js';

const PROT_READ_WRITE = 0x1 | 0x2;
const MAP_SHARED = 0x01;
const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const F_ADD_SEALS = 1033;
const F_SEAL_SEAL = 0x1;
const F_SEAL_SHRINK = 0x2;

/**
 * A memory file (memfd) of `size` bytes that can never shrink (sealed F_SEAL_SHRINK, and
 * F_SEAL_SEAL so nobody adds a seal that stops it growing); its descriptor, or null when memory
 * files or seals are not available here. Others open it as /proc/<pid>/fd/<fd>.
 */
export function createSealedMemoryFile(name: string, size: number, ftruncate: (fd: number, size: number) => void, close: (fd: number) => void): number | null {
  const libc = memoryCalls();
  if (!libc) return null;
  const fd = libc.memfdCreate(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return null;
  try {
    ftruncate(fd, size);
    if (libc.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) !== 0) throw new Error('F_ADD_SEALS failed');
  } catch {
    close(fd);
    return null;
  }
  return fd;
}

/**
 * A file's first `size` bytes mapped shared into this process (MAP_SHARED: what either side
 * writes, the other sees). The mapping reserves address space for `reserve` bytes at once, so the
 * file can grow into it (remap then only widens the view): a new mapping would take a page fault
 * on every page touched again, and a first touch costs about 19 µs a page on this machine
 * (docs/benchmarks.md). Growing past the reserve maps anew; the older mappings stay until close(),
 * so a view taken before never points at unmapped memory. `bytes` covers the file's size only
 * (past the end of the file a touch is SIGBUS); the caller drops its views before close().
 */
export class SharedMapping {
  /** The newest mapping's bytes. */
  bytes: Uint8Array;
  private readonly mappings: { address: unknown; length: number }[] = [];

  private constructor(
    private readonly libc: NonNullable<ReturnType<typeof memoryCalls>>,
    private readonly fd: number,
    size: number,
    reserve: number,
  ) {
    this.bytes = new Uint8Array(0);
    this.mapNew(Math.max(size, reserve));
    try {
      this.remap(size);
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Maps `fd`'s first `size` bytes, with room for it to grow to `reserve`; null when mmap is not available here or fails. */
  static map(fd: number, size: number, reserve = size): SharedMapping | null {
    const libc = memoryCalls();
    if (!libc) return null;
    try {
      return new SharedMapping(libc, fd, size, reserve);
    } catch {
      return null;
    }
  }

  get size(): number {
    return this.bytes.byteLength;
  }

  /** Widens `bytes` to the first `size` bytes (the file has grown to at least that); throws if a new mapping is needed and mmap fails. */
  remap(size: number): void {
    if (size <= this.bytes.byteLength) return;
    const newest = this.mappings[this.mappings.length - 1];
    if (size > newest.length) this.mapNew(size);
    const { address } = this.mappings[this.mappings.length - 1];
    this.bytes = new Uint8Array(this.libc.view(address, size));
  }

  private mapNew(length: number): void {
    const address = this.libc.mmap(null, length, PROT_READ_WRITE, MAP_SHARED, this.fd, 0);
    if (this.libc.failed(address)) throw new Error(`mmap of ${length} bytes failed`);
    this.mappings.push({ address, length });
  }

  /** Unmaps everything; no view of it may be used after. */
  close(): void {
    this.bytes = new Uint8Array(0);
    for (const { address, length } of this.mappings.splice(0)) this.libc.munmap(address, length);
  }
}
