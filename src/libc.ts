// The few libc calls gpunix needs that Node does not offer: mmap/munmap and memfd_create/fcntl
// for shared memory (src/sharedMapping.ts), and sendmsg/recvmsg with SCM_RIGHTS to hand a
// memory file's descriptor to a client (src/daemon/regionHandoff.ts), and setsockopt for the
// socket buffers of TCP connections (src/socketBuffers.ts). They come through koffi, a
// foreign-function library whose npm package carries prebuilt binaries (nothing is compiled at
// install; docs/dependencies.md). Everything here is optional: on a platform koffi has no binary
// for, or off Linux, `memoryCalls()` is null and callers take their slower paths (tmpfs files
// opened by name, pread/pwrite). And prctl for the timer slack of the thread that paces Dawn's
// polls (src/device/eventPump.ts), bound on its own: it is about timing, not memory.

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
  /** Sends one byte carrying `descriptor` (SCM_RIGHTS) on the connected Unix socket `socketFd`; whether it went. */
  sendDescriptor(socketFd: number, descriptor: number): boolean;
  /**
   * Receives a descriptor sent with sendDescriptor on `socketFd` without blocking: the descriptor,
   * 'again' when nothing has arrived yet, or null when the peer closed or sent none.
   */
  receiveDescriptor(socketFd: number): number | 'again' | null;
  /** A Unix stream socket connected to `path`, non-blocking; null if it cannot connect. */
  connectUnix(path: string): number | null;
  /** write(2) of all of `bytes` on a fresh socket (small writes: they go at once); whether they did. */
  writeAll(fd: number, bytes: Uint8Array): boolean;
  /** Sets the socket's send and receive buffers (SO_SNDBUF, SO_RCVBUF) to `bytes` each (the kernel doubles them); whether both took. */
  socketBuffers(fd: number, bytes: number): boolean;
  close(fd: number): void;
}

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
/** sizeof(struct sockaddr_un) on Linux. */
const SOCKADDR_UN_BYTES = 110;
/** struct msghdr and struct iovec on 64-bit Linux, and a control message holding one int (CMSG_SPACE(4)). */
const MSGHDR_BYTES = 56;
const IOVEC_BYTES = 16;
const CONTROL_BYTES = 24;

const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;

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
    const socket = libc.func('int socket(int domain, int type, int protocol)');
    const connect = libc.func('int connect(int fd, const void *address, uint32_t length)');
    const sendmsg = libc.func('intptr_t sendmsg(int fd, void *message, int flags)');
    const recvmsg = libc.func('intptr_t recvmsg(int fd, void *message, int flags)');
    const write = libc.func('intptr_t write(int fd, const void *bytes, size_t length)');
    const close = libc.func('int close(int fd)');
    const setsockopt = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t length)');
    // One message of one byte and room for one descriptor, in native memory (the kernel reads and
    // writes it through the pointers inside, which must not move as a JavaScript buffer may).
    const message = (): { header: unknown; byte: Buffer; control: Buffer; free(): void } => {
      const blocks = [MSGHDR_BYTES, IOVEC_BYTES, 1, CONTROL_BYTES].map((bytes) => koffi.alloc('uint8_t', bytes));
      const [header, iovec, byte, control] = blocks.map((block, i) => Buffer.from(koffi.view(block, [MSGHDR_BYTES, IOVEC_BYTES, 1, CONTROL_BYTES][i])));
      const address = (i: number) => BigInt(koffi.address(blocks[i]));
      header.fill(0);
      iovec.writeBigUInt64LE(address(2), 0);
      iovec.writeBigUInt64LE(1n, 8);
      header.writeBigUInt64LE(address(1), 16); // msg_iov
      header.writeBigUInt64LE(1n, 24); // msg_iovlen
      header.writeBigUInt64LE(address(3), 32); // msg_control
      header.writeBigUInt64LE(BigInt(CONTROL_BYTES), 40); // msg_controllen
      control.fill(0);
      return { header: blocks[0], byte, control, free: () => blocks.forEach((block) => koffi.free(block)) };
    };
    calls = {
      mmap: (address, length, protection, flags, fd, offset) => mmap(address, length, protection, flags, fd, offset),
      munmap: (address, length) => munmap(address, length),
      memfdCreate: (name, flags) => memfdCreate(name, flags),
      fcntl: (fd, command, argument) => fcntl(fd, command, argument),
      view: (address, length) => koffi.view(address, length),
      failed: (address) => address === null || koffi.address(address) === 0xffff_ffff_ffff_ffffn,
      sendDescriptor: (socketFd, descriptor) => {
        const m = message();
        try {
          m.byte[0] = 0x46; // 'F'
          m.control.writeBigUInt64LE(20n, 0); // cmsg_len = CMSG_LEN(sizeof(int))
          m.control.writeInt32LE(SOL_SOCKET, 8);
          m.control.writeInt32LE(SCM_RIGHTS, 12);
          m.control.writeInt32LE(descriptor, 16);
          return Number(sendmsg(socketFd, m.header, MSG_NOSIGNAL)) === 1;
        } finally {
          m.free();
        }
      },
      receiveDescriptor: (socketFd) => {
        const m = message();
        try {
          const n = Number(recvmsg(socketFd, m.header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
          if (n < 0) return koffi.errno() === 11 /* EAGAIN */ ? 'again' : null;
          if (n === 0) return null;
          const level = m.control.readInt32LE(8);
          const type = m.control.readInt32LE(12);
          return m.control.readBigUInt64LE(0) >= 20n && level === SOL_SOCKET && type === SCM_RIGHTS ? m.control.readInt32LE(16) : null;
        } finally {
          m.free();
        }
      },
      connectUnix: (path) => {
        const address = Buffer.alloc(SOCKADDR_UN_BYTES);
        address.writeUInt16LE(AF_UNIX, 0);
        if (Buffer.byteLength(path) >= SOCKADDR_UN_BYTES - 2) return null;
        address.write(path, 2);
        const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return null;
        // A Unix socket connects at once, or fails at once (EAGAIN: the listener's backlog is full).
        if (connect(fd, address, SOCKADDR_UN_BYTES) !== 0) {
          close(fd);
          return null;
        }
        return fd;
      },
      writeAll: (fd, bytes) => Number(write(fd, bytes, bytes.byteLength)) === bytes.byteLength,
      socketBuffers: (fd, bytes) => {
        const value = Buffer.alloc(4);
        value.writeInt32LE(bytes);
        return setsockopt(fd, SOL_SOCKET, SO_SNDBUF, value, 4) === 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, value, 4) === 0;
      },
      close: (fd) => void close(fd),
    };
  } catch {
    calls = null;
  }
  return calls;
}

const PR_SET_TIMERSLACK = 29;
const PR_GET_TIMERSLACK = 30;
let prctl: ((option: number, value: number) => number) | null | undefined;

/** prctl(2) with one argument, bound once; null off Linux or where koffi cannot load libc. */
function prctlCall(): ((option: number, value: number) => number) | null {
  if (prctl !== undefined) return prctl;
  prctl = null;
  if (process.platform !== 'linux') return prctl;
  try {
    const koffi = createRequire(import.meta.url)('koffi');
    const call = koffi.load('libc.so.6').func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)');
    prctl = (option, value) => Number(call(option, value, 0, 0, 0));
  } catch {
    prctl = null;
  }
  return prctl;
}

/**
 * The calling thread's timer slack (ns): how much later than asked Linux may end its timed waits,
 * to group wake-ups (50 µs by default); null where it cannot be read.
 */
export function timerSlackNs(): number | null {
  const call = prctlCall();
  if (call === null) return null;
  const ns = call(PR_GET_TIMERSLACK, 0);
  return ns > 0 ? ns : null;
}

/** Sets the calling thread's timer slack to `ns` (at least 1); whether it took. */
export function setTimerSlackNs(ns: number): boolean {
  const call = prctlCall();
  return call !== null && call(PR_SET_TIMERSLACK, Math.max(1, Math.round(ns))) === 0;
}
