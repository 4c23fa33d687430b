// A process's buffer: the kernel's record of size, usage, label and mapping, in front of its own
// real GPUBuffer (never shared with another process). Operations that WebGPU orders after earlier
// queue work (mapAsync, destroy) go through the dispatcher so they stay in the program's order.

import type { WorkItem } from '../kernel/dispatch.js';
import type { BufferResidency } from '../kernel/residency.js';
import type { VirtualDevice } from './device.js';
import { REAL, VirtualObject } from './object.js';
import { size32, size64 } from '../webidl.js';

// GPUBufferUsage.MAP_READ and MAP_WRITE.
const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;

interface QueuedMap {
  item: WorkItem;
  /**
   * Where it stands: waiting for the dispatcher; being mapped by Dawn (which rejects it itself, in
   * its own words, on unmap or when the real buffer is destroyed); or mapped by Dawn and waiting
   * for the watchdog's time check (only gpunix knows it is still pending then).
   */
  stage: 'queued' | 'mapping' | 'checking';
  aborted: boolean;
  reject: (reason: unknown) => void;
}

export class VirtualBuffer extends VirtualObject<GPUBuffer> {
  // Private fields behind prototype accessors: a GPUBuffer has no own properties (WebIDL).
  #size: number;
  #usage: number;
  #ledgerToken: object | null = null;
  #destroyed = false;
  /**
   * mapAsync calls whose promise has not settled: not reached by the dispatcher yet, being mapped
   * by Dawn, or mapped by Dawn and waiting for the watchdog's time check. The buffer reads as
   * 'pending' meanwhile, as WebGPU's does until the promise resolves, and unmap() or destroy()
   * aborts them.
   */
  #queuedMaps: QueuedMap[] = [];
  #device: VirtualDevice;
  #residency: BufferResidency;
  get size(): number {
    return this.#size;
  }
  get usage(): number {
    return this.#usage;
  }
  /** Ledger token while the kernel counts this buffer's memory; null once released. */
  get ledgerToken(): object | null {
    return this.#ledgerToken;
  }
  set ledgerToken(token: object | null) {
    this.#ledgerToken = token;
  }
  /** Where the contents live: the real buffer behind this one can be replaced (eviction). */
  get residency(): BufferResidency {
    return this.#residency;
  }

  constructor(device: VirtualDevice, residency: BufferResidency, descriptor: GPUBufferDescriptor) {
    super(descriptor.label, device);
    this.#device = device;
    this.#residency = residency;
    this.#size = residency.size;
    // The program's usage, not the real buffer's (the kernel may add COPY_SRC to read it back).
    this.#usage = Number(descriptor.usage);
    this.#mappable = (this.#usage & (MAP_READ | MAP_WRITE)) !== 0 || descriptor.mappedAtCreation === true;
  }

  #mappable: boolean;
  /**
   * False for a buffer that can never be mapped (no MAP_READ or MAP_WRITE usage, not mapped at
   * creation): its mapState is always 'unmapped', which a submit's check then need not ask Dawn.
   */
  get mappable(): boolean {
    return this.#mappable;
  }

  /** The real buffer now; brought back to the device first if it was evicted. */
  get [REAL](): GPUBuffer {
    return this.residency.touch();
  }

  private get real(): GPUBuffer {
    return this.residency.touch();
  }

  get isDestroyed(): boolean {
    return this.#destroyed;
  }

  get mapState(): GPUBufferMapState {
    if (this.#queuedMaps.length > 0) return 'pending';
    // An evicted buffer is unmapped (mapped buffers are never evicted).
    return this.residency.peek()?.mapState ?? 'unmapped';
  }

  mapAsync(mode: GPUMapModeFlags, offset?: number, size?: number): Promise<undefined> {
    // WebIDL: a promise-returning operation rejects (rather than throws) when its arguments do not convert.
    try {
      mode = size32(mode, 'mapAsync', 'mode');
      offset = offset === undefined ? 0 : size64(offset, 'mapAsync', 'offset');
      if (size !== undefined) size = size64(size, 'mapAsync', 'size');
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#device.isLost) {
      // Dawn rejects a map on a lost device with AbortError.
      return Promise.reject(new DOMException('mapAsync: the device is lost', 'AbortError'));
    }
    const target = this.#device.errorTarget();
    return new Promise<undefined>((resolve, reject) => {
      const entry: QueuedMap = { item: null as unknown as WorkItem, stage: 'queued', aborted: false, reject };
      entry.item = {
        owner: this.#device.proc,
        usesDevice: false,
        enqueuedAtNs: NaN,
        run: () => {
          if (entry.aborted) {
            this.settled(entry);
            return target.release();
          }
          let mapping: Promise<undefined>;
          try {
            mapping = this.#device.callRouted(target, () => this.real.mapAsync(mode, offset, size));
          } catch (thrown) {
            this.settled(entry);
            reject(thrown);
            return;
          }
          entry.stage = 'mapping';
          // The program waits on this map: its dispatcher has Dawn polled eagerly until it settles.
          const dispatcher = this.#device.dispatcher;
          dispatcher.mapMade(this, mapping);
          // The work it reads back may have run loops the watchdog cuts: the result waits for its
          // time check, and a process that check ended gets no result of cut loops.
          const checked = dispatcher.timeChecked();
          const proc = this.#device.proc;
          mapping.then(
            (value) => {
              dispatcher.mapSettled();
              entry.stage = 'checking';
              const hand = (): void => {
                this.settled(entry);
                // An unmap() or destroy() while the check ran has rejected it already.
                if (entry.aborted) return;
                if (proc.alive) resolve(value);
                else reject(new DOMException('the process ended before the buffer was mapped', 'AbortError'));
              };
              if (checked === null) hand();
              else void checked.then(hand);
            },
            (error: unknown) => {
              dispatcher.mapSettled();
              this.settled(entry);
              reject(error);
            },
          );
        },
        cancel: () => {
          target.release();
          this.settled(entry);
          if (!entry.aborted) reject(new DOMException('the process ended before the buffer was mapped', 'AbortError'));
        },
      };
      this.#queuedMaps.push(entry);
      this.#device.dispatcher.enqueue(entry.item);
    });
  }

  getMappedRange(offset?: number, size?: number): ArrayBuffer {
    offset = offset === undefined ? 0 : size64(offset, 'getMappedRange', 'offset');
    if (size !== undefined) size = size64(size, 'getMappedRange', 'size');
    if (this.#queuedMaps.length > 0 || this.#destroyed) {
      throw new DOMException('getMappedRange called on a buffer that is not mapped', 'OperationError');
    }
    const real = this.residency.peek();
    if (!real) throw new DOMException('getMappedRange called on a buffer that is not mapped', 'OperationError');
    return real.getMappedRange(offset, size);
  }

  unmap(): void {
    this.abortQueuedMaps('unmap');
    this.residency.peek()?.unmap();
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.abortQueuedMaps('destroy');
    const token = this.ledgerToken;
    this.ledgerToken = null;
    const proc = this.#device.proc;
    // Work the program submitted before destroy() may not have reached the device yet: the real
    // buffer goes when the dispatcher gets here, in the program's order.
    this.#device.dispatcher.enqueue({
      owner: proc,
      usesDevice: false,
      enqueuedAtNs: NaN,
      run: () => this.destroyReal(token),
      cancel: () => this.destroyReal(token),
    });
  }

  #realDestroyed = false;
  /**
   * True once the real buffer is gone. Until then a destroyed buffer may still be used by work the
   * program submitted before destroy(), waiting in the kernel's queue: a migration moves it too.
   */
  get realDestroyed(): boolean {
    return this.#realDestroyed;
  }

  private destroyReal(token: object | null): void {
    this.#realDestroyed = true;
    if (token) this.#device.proc.ledger.release(token, true);
    else this.residency.destroy();
  }

  /** Takes a map that has settled (or will not run) off the pending list. */
  private settled(entry: QueuedMap): void {
    const at = this.#queuedMaps.indexOf(entry);
    if (at !== -1) this.#queuedMaps.splice(at, 1);
  }

  /**
   * unmap() and destroy(): every pending map is over for the program now (mapState reads the real
   * buffer's again). Dawn rejects one it is mapping itself, in its own words; the others are
   * rejected here, and their work items see `aborted` when they run or settle.
   */
  private abortQueuedMaps(by: string): void {
    const entries = this.#queuedMaps;
    if (entries.length === 0) return;
    this.#queuedMaps = [];
    for (const entry of entries) {
      if (entry.aborted || entry.stage === 'mapping') continue;
      entry.aborted = true;
      entry.reject(new DOMException(`mapAsync aborted by ${by}() before it completed`, 'AbortError'));
    }
  }
}
