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
const F_GET_SEALS = 1034;
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

/** Whether `fd` is a memory file that cannot shrink (what the daemon may map safely). */
export function cannotShrink(fd: number): boolean {
  const libc = memoryCalls();
  if (!libc) return false;
  const seals = libc.fcntl(fd, F_GET_SEALS, 0);
  return seals >= 0 && (seals & F_SEAL_SHRINK) !== 0;
}

/**
 * A file's first `size` bytes mapped shared into this process (MAP_SHARED: what either side
 * writes, the other sees). It may be remapped larger when the file grows; the smaller mappings
 * stay until close(), so a view taken before a remap never points at unmapped memory.
 * The caller keeps every access inside [0, size) and inside the file, and drops its views before close().
 */
export class SharedMapping {
  /** The newest mapping's bytes. */
  bytes: Uint8Array;
  private readonly mappings: { address: unknown; length: number }[] = [];

  private constructor(
    private readonly libc: NonNullable<ReturnType<typeof memoryCalls>>,
    private readonly fd: number,
    size: number,
  ) {
    this.bytes = new Uint8Array(0);
    this.remap(size);
  }

  /** Maps `fd`'s first `size` bytes; null when mmap is not available here or fails. */
  static map(fd: number, size: number): SharedMapping | null {
    const libc = memoryCalls();
    if (!libc) return null;
    try {
      return new SharedMapping(libc, fd, size);
    } catch {
      return null;
    }
  }

  get size(): number {
    return this.bytes.byteLength;
  }

  /** Maps the first `size` bytes anew (the file has grown to at least that); throws if mmap fails. */
  remap(size: number): void {
    if (size <= this.bytes.byteLength) return;
    const address = this.libc.mmap(null, size, PROT_READ_WRITE, MAP_SHARED, this.fd, 0);
    if (this.libc.failed(address)) throw new Error(`mmap of ${size} bytes failed`);
    this.mappings.push({ address, length: size });
    this.bytes = new Uint8Array(this.libc.view(address, size));
  }

  /** Unmaps everything; no view of it may be used after. */
  close(): void {
    this.bytes = new Uint8Array(0);
    for (const { address, length } of this.mappings.splice(0)) this.libc.munmap(address, length);
  }
}
