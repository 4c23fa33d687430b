// Socket buffers for TCP and TLS connections that carry bulk data (docs/daemon.md, "Bulk data").
//
// Linux starts a TCP connection with a 16 KiB send buffer and grows it as it goes (autotuning).
// Until it has grown, a large frame crosses loopback in lock step: the sender's kernel takes 16-64
// KiB, the receiver reads a TLS record, the sender's process wakes to write the next piece — two
// process wake-ups per piece, 60-110 µs each on a loaded 2-core machine instead of 10 µs. A 4 MiB
// frame then took 18-46 ms one way instead of 3-5 ms, in about one round of three (measured:
// docs/benchmarks.md, issue 13). Buffers as large as a large frame from the start let the sender
// hand the whole frame to its kernel at once and the receiver read it at its own pace.
//
// Setting a size turns the kernel's autotuning off for that buffer, and the kernel caps what is
// set at net.core.wmem_max / rmem_max (208 KiB on a stock Debian kernel) while autotuning may grow
// it to tcp_wmem's maximum (4 MiB): so the buffers are set only where the caps allow the full
// size, and left to autotuning elsewhere (docs/daemon.md says how to raise the caps).

import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { memoryCalls } from './libc.js';

/** SO_SNDBUF and SO_RCVBUF asked for (the kernel doubles them; capped by net.core.wmem_max and rmem_max). */
export const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

let capsAllow: boolean | undefined;

/** Whether net.core.wmem_max and rmem_max both allow SOCKET_BUFFER_BYTES (read once). */
export function kernelAllowsSocketBuffers(): boolean {
  if (capsAllow === undefined) {
    try {
      const cap = (name: string) => Number(readFileSync(`/proc/sys/net/core/${name}`, 'utf8').trim());
      capsAllow = cap('wmem_max') >= SOCKET_BUFFER_BYTES && cap('rmem_max') >= SOCKET_BUFFER_BYTES;
    } catch {
      capsAllow = false;
    }
  }
  return capsAllow;
}

/**
 * Widens a connected TCP socket's send and receive buffers to SOCKET_BUFFER_BYTES; whether it
 * did. Nothing happens where the kernel's caps are lower (autotuning does better there), the libc
 * calls are not available (GPUNIX_MMAP=0, no koffi binary) or the socket has no descriptor: the
 * connection works as before, with the kernel's own sizes.
 */
export function widenSocketBuffers(socket: Socket): boolean {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0 || !kernelAllowsSocketBuffers()) return false;
  const libc = memoryCalls();
  return libc !== null && libc.socketBuffers(fd, SOCKET_BUFFER_BYTES);
}
