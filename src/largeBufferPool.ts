// Large buffers kept for reuse. A fresh multi-megabyte allocation is memory the kernel must fault
// in page by page: measured on the 2-vCPU VM of docs/benchmarks.md, allocating and filling 4 MiB
// took 17 ms, filling a buffer already used 0.4 ms (a 64 MiB copy into fresh memory 200-270 ms,
// into reused memory about 4 ms). Used by the wire for large frames (src/protocol/codec.ts) and by
// the queue for the copies of large writes (src/vgpu/writeStaging.ts).

/**
 * Buffers kept once their user is done with them, for the next of a like size. Holds at most
 * `maxBytes`, and empties itself after IDLE_MS without use (so an idle process keeps nothing). A
 * buffer may serve one user after another: users read only what they wrote afresh into it.
 */
export class LargeBufferPool {
  static readonly IDLE_MS = 2000;
  private free: Buffer[] = [];
  private bytes = 0;
  private trimTimer: NodeJS.Timeout | null = null;

  constructor(private readonly maxBytes: number) {}

  /** A buffer of at least `size` bytes: the smallest kept one that fits (and wastes at most half), or a new one. */
  take(size: number): Buffer {
    const best = this.fitting(size);
    if (best < 0) return Buffer.allocUnsafeSlow(Math.ceil(size / 65536) * 65536);
    const [buffer] = this.free.splice(best, 1);
    this.bytes -= buffer.byteLength;
    return buffer;
  }

  /** Whether take(size) would reuse a kept buffer (no fresh memory). */
  has(size: number): boolean {
    return this.fitting(size) >= 0;
  }

  /** The index of the smallest kept buffer of `size` bytes or more wasting at most half of it; -1: none. */
  private fitting(size: number): number {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const length = this.free[i].byteLength;
      if (length >= size && length <= size * 2 && (best < 0 || length < this.free[best].byteLength)) best = i;
    }
    return best;
  }

  /** Returns a buffer from take() once nothing reads it any more. */
  give(buffer: Buffer): void {
    if (this.bytes + buffer.byteLength > this.maxBytes) return;
    this.free.push(buffer);
    this.bytes += buffer.byteLength;
    if (this.trimTimer) this.trimTimer.refresh();
    else {
      this.trimTimer = setTimeout(() => {
        this.trimTimer = null;
        this.free = [];
        this.bytes = 0;
      }, LargeBufferPool.IDLE_MS);
      this.trimTimer.unref();
    }
  }
}
