// The few libc calls gpunix needs that Node does not offer: mmap/munmap and memfd_create/fcntl
// for shared memory (src/sharedMapping.ts), and getsockopt(SO_PEERCRED) to learn which user is
// on the other end of a Unix socket. They come through koffi, a foreign-function library whose
// npm package carries prebuilt binaries (nothing is compiled at install; docs/dependencies.md).
// Everything here is optional: on a platform koffi has no binary for, or off Linux,
// `memoryCalls()` is null and callers take their slower paths (pread/pwrite, no peer check).

import { createRequire } from 'node:module';

/** The libc calls, bound once per process. */
export interface MemoryCalls {
  mmap(address: null, length: number, protection: number, flags: number, fd: number, offset: number): unknown;
  munmap(address: unknown, length: number): number;
  memfdCreate(name: string, flags: number): number;
  fcntl(fd: number, command: number, argument: number): number;
  /** An ArrayBuffer over `length` bytes at `address` (no copy; valid while the mapping is). */
  view(address: unknown, length: number): ArrayBuffer;
  /** Whether mmap's result is MAP_FAILED ((void *) -1). */
  failed(address: unknown): boolean;
  /** The user id of the process at the other end of the connected Unix socket `fd`; null if unknown. */
  peerUid(fd: number): number | null;
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

let calls: MemoryCalls | null | undefined;

/** Binds the calls through koffi; null where that cannot be done (or GPUNIX_MMAP=0 asks not to). */
export function memoryCalls(): MemoryCalls | null {
  if (calls !== undefined) return calls;
  calls = null;
  if (process.platform !== 'linux' || process.env.GPUNIX_MMAP === '0') return calls;
  try {
    // koffi is CommonJS and loads a native binary: required lazily, so a platform without one still runs.
    const koffi = createRequire(import.meta.url)('koffi');
    const libc = koffi.load('libc.so.6');
    const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
    const munmap = libc.func('int munmap(void *addr, size_t length)');
    const memfdCreate = libc.func('int memfd_create(const char *name, unsigned int flags)');
    const fcntl = libc.func('int fcntl(int fd, int cmd, int arg)');
    const ucred = koffi.struct('gpunix_ucred', { pid: 'int32', uid: 'uint32', gid: 'uint32' });
    const getsockopt = libc.func('int getsockopt(int fd, int level, int name, _Out_ gpunix_ucred *value, _Inout_ uint32_t *length)');
    calls = {
      mmap: (address, length, protection, flags, fd, offset) => mmap(address, length, protection, flags, fd, offset),
      munmap: (address, length) => munmap(address, length),
      memfdCreate: (name, flags) => memfdCreate(name, flags),
      fcntl: (fd, command, argument) => fcntl(fd, command, argument),
      view: (address, length) => koffi.view(address, length),
      failed: (address) => address === null || koffi.address(address) === 0xffff_ffff_ffff_ffffn,
      peerUid: (fd) => {
        const value = { pid: 0, uid: 0, gid: 0 };
        const length = [koffi.sizeof(ucred)];
        return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length) === 0 ? value.uid : null;
      },
    };
  } catch {
    calls = null;
  }
  return calls;
}
