// Copies of large writeBuffer data, in memory reused from one write to the next.
//
// A write larger than COPY_CHUNK_BYTES runs as scheduled pieces, after the call returns, so what
// is not issued by then is copied at the call (WebGPU lets the program reuse its array at once).
// A fresh buffer for that copy costs a page fault per 4 KiB page on first touch, which on a
// virtual machine is most of the write (src/largeBufferPool.ts), so the copies' buffers are kept
// for the next large write.

import { LargeBufferPool } from '../largeBufferPool.js';

/** The process's kept write copies: at most 256 MiB, let go after LargeBufferPool.IDLE_MS without a large write. */
const writeCopies = new LargeBufferPool(256 * 1024 * 1024);

/** A copy of `bytes` in a reused (or new) buffer; hand it back with `releaseWriteCopy` once no piece needs it. */
export function takeWriteCopy(bytes: Uint8Array): Uint8Array {
  const copy = writeCopies.take(bytes.byteLength).subarray(0, bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** Keeps `copy`'s buffer for a later write (nothing may use `copy` after, and it is handed back once). */
export function releaseWriteCopy(copy: Uint8Array): void {
  writeCopies.give(Buffer.from(copy.buffer, 0, copy.buffer.byteLength));
}
