// Another node's host memory as a tier for this node's evicted buffer contents (kernel/spill.ts
// calls it through RemoteTier): below this node's host memory (`kernel.hostMemoryLimit`), above its
// spill files. The node that lends it keeps the bytes (src/daemon/lentHostMemory.ts); the
// connection to it lives on a worker thread (remoteTierWorker.ts) so that a restore, which the
// kernel does synchronously (it needs the buffer at once, as it reads a spill file at once), can
// wait for the bytes without the daemon's own event loop. `maxBytes` bounds what this node keeps
// there; the lender may refuse sooner (its own lendHostMemory), and the contents go to a file then.

import { Worker } from 'node:worker_threads';
import type { SessionOptions } from '../client/session.js';
import type { RemoteTier } from '../kernel/spill.js';

/** How long the tier is not tried after the lender refused a store. */
const REFUSAL_BACKOFF_MS = 5_000;

/** How long a restore waits for its bytes from the lending node before it fails. */
const FETCH_TIMEOUT_MS = 30_000;

export class RemoteHostTier implements RemoteTier {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: { key?: string; data?: Uint8Array }) => void; reject: (error: Error) => void }>();
  /** Bytes kept there under each key, and in all. */
  private readonly sizes = new Map<string, number>();
  private used = 0;

  constructor(
    /** How to reach the lending node (its admin token). */
    options: SessionOptions,
    private readonly maxBytes: number,
    readonly node: string,
  ) {
    this.worker = new Worker(new URL('./remoteTierWorker.js', import.meta.url), { workerData: { options } });
    this.worker.unref();
    this.worker.on('message', (reply: { id: number; key?: string; data?: Uint8Array; error?: string }) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (!waiter) return;
      if (reply.error !== undefined) waiter.reject(new Error(`node ${this.node}: ${reply.error}`));
      else waiter.resolve(reply);
    });
    this.worker.on('error', (error) => {
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    });
  }

  /** Bytes of this node's evicted contents kept on the lending node now. */
  get bytes(): number {
    return this.used;
  }

  hasRoom(bytes: number): boolean {
    return this.used + bytes <= this.maxBytes && Date.now() >= this.refusedUntil;
  }

  /** After the lender refused (no room there, or unreachable), files take the contents for a while. */
  private refusedUntil = 0;

  async store(data: Uint8Array): Promise<string> {
    this.used += data.byteLength;
    try {
      const copy = data.slice();
      const { key } = await this.call({ op: 'store', data: copy.buffer }, [copy.buffer]);
      this.sizes.set(key!, data.byteLength);
      return key!;
    } catch (error) {
      this.used -= data.byteLength;
      this.refusedUntil = Date.now() + REFUSAL_BACKOFF_MS;
      throw error;
    }
  }

  fetchSync(key: string, into: Uint8Array): void {
    const shared = new SharedArrayBuffer(into.byteLength);
    const state = new SharedArrayBuffer(4);
    this.worker.postMessage({ op: 'fetch', key, shared, state });
    const flag = new Int32Array(state);
    const waited = Atomics.wait(flag, 0, 0, FETCH_TIMEOUT_MS);
    if (waited === 'timed-out') throw new Error(`node ${this.node} did not send the contents back within ${FETCH_TIMEOUT_MS} ms`);
    if (Atomics.load(flag, 0) !== 1) throw new Error(`node ${this.node} could not send the contents back (its daemon restarted, or the link is down)`);
    into.set(new Uint8Array(shared));
  }

  async fetch(key: string): Promise<Uint8Array> {
    const { data } = await this.call({ op: 'fetch', key });
    return data!;
  }

  drop(key: string): void {
    const size = this.sizes.get(key);
    if (size === undefined) return;
    this.sizes.delete(key);
    this.used -= size;
    this.worker.postMessage({ op: 'drop', keys: [key] });
  }

  /** Ends the worker (the daemon is closing; the lender frees what this node kept when its session closes). */
  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private call(request: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<{ key?: string; data?: Uint8Array }> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id }, transfer);
    });
  }
}
