// A process's buffer: the kernel's record of size, usage, label and mapping, in front of its own
// real GPUBuffer (never shared with another process). Operations that WebGPU orders after earlier
// queue work (mapAsync, destroy) go through the dispatcher so they stay in the program's order.

import { offDeviceItem, type WorkItem } from '../kernel/dispatch.js';
import type { Proc } from '../kernel/proc.js';
import type { BufferResidency } from '../kernel/residency.js';
import type { VirtualDevice } from './device.js';
import type { HeldTarget } from './errorScopes.js';
import { REAL, VirtualObject } from './object.js';
import { size32, size64 } from '../webidl.js';

// GPUBufferUsage.MAP_READ and MAP_WRITE.
const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;

/**
 * One mapAsync call, as the dispatcher's work item. Where it stands: waiting for the dispatcher
 * ('queued'); being mapped by Dawn ('mapping': Dawn rejects it itself, in its own words, on unmap
 * or when the real buffer is destroyed); or mapped by Dawn and waiting for the watchdog's time
 * check ('checking': only gpunix knows it is still pending then).
 *
 * A class rather than a literal of closures: V8 keeps a closure's optimized code only while some
 * closure of its kind lives, and a readback loop's maps are all gone by a full collection, so each
 * collection sent the map path back to the interpreter. Methods live as long as the class.
 */
export class MapRequest implements WorkItem {
  readonly usesDevice = false;
  enqueuedAtNs = NaN;
  stage: 'queued' | 'mapping' | 'checking' = 'queued';
  /** Set by unmap() or destroy(), which rejected the program's promise already. */
  aborted = false;
  /** The watchdog's time check on the work the map reads back (null: none pending). */
  private checked: Promise<void> | null = null;

  constructor(
    readonly owner: Proc,
    private readonly buffer: VirtualBuffer,
    private readonly device: VirtualDevice,
    private readonly target: HeldTarget,
    private readonly mode: number,
    private readonly offset: number,
    private readonly size: number | undefined,
    private readonly resolve: (value: undefined) => void,
    readonly reject: (reason: unknown) => void,
  ) {}

  run(): void {
    if (this.aborted) {
      this.buffer.mapSettled(this);
      return this.target.release();
    }
    let mapping: Promise<undefined>;
    try {
      mapping = this.device.callRoutedWith(this.target, MapRequest.mapReal, this);
    } catch (thrown) {
      this.buffer.mapSettled(this);
      this.reject(thrown);
      return;
    }
    this.stage = 'mapping';
    // The program waits on this map: its dispatcher has Dawn polled eagerly until it settles.
    const dispatcher = this.device.dispatcher;
    dispatcher.mapMade(this.buffer, mapping);
    // The work it reads back may have run loops the watchdog cuts: the result waits for its
    // time check, and a process that check ended gets no result of cut loops.
    this.checked = dispatcher.timeChecked();
    // Methods bound to the request, not closures: see mapAsync's executor below.
    mapping.then(this.mapped.bind(this), this.failed.bind(this));
  }

  /** The real map (for callRoutedWith: no closure per map). */
  private static mapReal(request: MapRequest): Promise<undefined> {
    return request.buffer[REAL].mapAsync(request.mode, request.offset, request.size);
  }

  cancel(): void {
    this.target.release();
    this.buffer.mapSettled(this);
    if (!this.aborted) this.reject(new DOMException('the process ended before the buffer was mapped', 'AbortError'));
  }

  private mapped(value: undefined): void {
    this.device.dispatcher.mapSettled();
    this.stage = 'checking';
    // A bound method, not a closure, as for mapped and failed themselves (see captureSettlers).
    if (this.checked === null) this.hand(value);
    else void this.checked.then(this.hand.bind(this, value));
  }

  private failed(error: unknown): void {
    this.device.dispatcher.mapSettled();
    this.buffer.mapSettled(this);
    this.reject(error);
  }

  /** The map is over: the program's promise settles (an unmap() or destroy() while the check ran has rejected it already). */
  private hand(value: undefined): void {
    this.buffer.mapSettled(this);
    if (this.aborted) return;
    if (this.owner.alive) this.resolve(value);
    else this.reject(new DOMException('the process ended before the buffer was mapped', 'AbortError'));
  }
}

/**
 * mapAsync's promise executor: one function for every call, which hands the promise's resolve and
 * reject over in these two variables (taken at once). A closure per call would do, but V8 keeps a
 * closure's optimized code only while some closure of its kind lives, and a readback loop's are
 * all gone by a full collection (between two processes; every sample of bench/overhead): each new
 * process then ran the map path's entry in the interpreter while TurboFan compiled it anew.
 */
let capturedResolve: ((value: undefined) => void) | null = null;
let capturedReject: ((reason: unknown) => void) | null = null;
function captureSettlers(resolve: (value: undefined) => void, reject: (reason: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
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
  #queuedMaps: MapRequest[] = [];
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
    const promise = new Promise<undefined>(captureSettlers);
    const request = new MapRequest(this.#device.proc, this, this.#device, target, mode, offset, size, capturedResolve!, capturedReject!);
    capturedResolve = capturedReject = null;
    this.#queuedMaps.push(request);
    try {
      this.#device.dispatcher.enqueue(request);
    } catch (error) {
      // As a throw inside a promise's executor would: the promise rejects.
      request.reject(error);
    }
    return promise;
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
    this.#device.dispatcher.enqueue(
      offDeviceItem(
        proc,
        () => {
          this.destroyReal(token);
        },
        () => this.destroyReal(token),
      ),
    );
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

  /** Takes a map that has settled (or will not run) off the pending list (its MapRequest's call). */
  mapSettled(entry: MapRequest): void {
    const maps = this.#queuedMaps;
    const at = maps.indexOf(entry);
    // The common one is the last (a loop's only map): pop, as splice makes an array of what it removes.
    if (at === -1) return;
    if (at === maps.length - 1) maps.pop();
    else maps.splice(at, 1);
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
