// Copies of large writeBuffer data, in memory reused from one write to the next.
//
// A write larger than COPY_CHUNK_BYTES runs as scheduled pieces, after the call returns, so its
// bytes are copied at the call (WebGPU lets the program reuse its array at once). A fresh
// ArrayBuffer for that copy costs a page fault per 4 KiB page on first touch, and on a virtual
// machine those are dear: a 64 MiB copy into fresh memory took 200-270 ms here, into reused
// memory about 4 ms (docs/benchmarks.md). So the copies' buffers are kept for the next write of
// a like size, bounded in count and bytes, and let go after IDLE_MS without one.

/** Spare buffers, newest last. */
const spares: ArrayBuffer[] = [];
const MAX_SPARES = 4;
const MAX_SPARE_BYTES = 256 * 1024 * 1024;
/** Buffers are made in whole MiB, so writes of nearly the same size share them. */
const GRANULE = 1024 * 1024;

/** A copy of `bytes` in a reused (or new) buffer; hand it back with `releaseWriteCopy` once no piece needs it. */
export function takeWriteCopy(bytes: Uint8Array): Uint8Array {
  const wanted = Math.ceil(bytes.byteLength / GRANULE) * GRANULE;
  const i = spares.findIndex((b) => b.byteLength === wanted);
  const buffer = i >= 0 ? spares.splice(i, 1)[0] : new ArrayBuffer(wanted);
  const copy = new Uint8Array(buffer, 0, bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** Spares unused this long are let go (a process that stopped writing large buffers keeps nothing). */
const IDLE_MS = 2_000;
let idleTimer: NodeJS.Timeout | null = null;

/** Keeps `copy`'s buffer for a later write (nothing may use `copy` after). */
export function releaseWriteCopy(copy: Uint8Array): void {
  const buffer = copy.buffer as ArrayBuffer;
  if (buffer.byteLength > MAX_SPARE_BYTES || spares.includes(buffer)) return;
  spares.push(buffer);
  let total = spares.reduce((sum, b) => sum + b.byteLength, 0);
  while (spares.length > MAX_SPARES || total > MAX_SPARE_BYTES) total -= spares.shift()!.byteLength;
  if (idleTimer) idleTimer.refresh();
  else {
    idleTimer = setTimeout(() => {
      idleTimer = null;
      spares.length = 0;
    }, IDLE_MS);
    idleTimer.unref();
  }
}
