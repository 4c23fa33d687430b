// One real GPUDevice that the kernel owns on one adapter, with the kernel's own memory count.
// Everything a process does on this device reaches Dawn through here or through real objects
// this device created; errors are captured per call so they reach only the process that caused them.

import { DeviceTimer } from './deviceTimer.js';
import type { LoopRates } from './loopRate.js';
import { startAsDoubles } from '../doubleFields.js';
import { HELD_SUBMITS_MAX } from '../params.js';

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** The Dawn backend whose instance opened the device (src/device/backends.ts): vulkan, opengles, opengl, metal, d3d12, d3d11. */
  backend: string;
  /** WebGPU's feature level of the device: 'core', or 'compatibility' (GL, GLES, D3D11: lower limits, fewer features). */
  featureLevel: 'core' | 'compatibility';
  /** True for a CPU implementation such as lavapipe or SwiftShader. */
  isFallbackAdapter: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  features: string[];
  limits: Record<string, number>;
}

/** The outcome of one real call made on behalf of a process: its value, and the errors it caused. */
export interface Captured<T> {
  value: T;
  /** Resolves to the WebGPU errors the call generated (validation, out-of-memory, internal), in order. */
  errors: Promise<GPUError[]>;
  /** True when the call is known, at return, to have raised no error (`errors` then resolves to []). */
  clean: boolean;
}

/** The outcome of every valid call: shared, never mutated. */
const NO_ERRORS: Promise<GPUError[]> = Promise.resolve(Object.freeze([]) as unknown as GPUError[]);

/** Calls `call`: capture() as captureWith(invoke, call), one body for both. */
function invoke<T>(call: () => T): T {
  return call();
}

/** A submit the dispatcher held (PhysicalDevice.holdSubmit). */
export interface HeldSubmit {
  /**
   * Its batch reached Dawn. `refused`: Dawn refused the batch, so nothing of it ran: the submit is
   * made again alone (afresh from its record), and its own errors, if any, go to its own scopes.
   */
  flushed(refused: boolean): void;
}

/** Tells `submit` how its batch went; what it throws (a kernel bug) is reported, not passed to whoever flushed. */
function tellFlushed(submit: HeldSubmit, refused: boolean): void {
  try {
    submit.flushed(refused);
  } catch (error) {
    process.stderr.write(`gpunix: a held submit failed after its flush: ${String(error)}\n`);
  }
}

/** The real submit of a batch of held command buffers (callCapturing's call: no closure per flush). */
const submitHeld = (queue: GPUQueue, buffers: GPUCommandBuffer[]): void => queue.submit(buffers);

export class PhysicalDevice {
  /** Memory the kernel has handed out on this device, by its own count (WebGPU reports none). */
  usedBytes = 0;
  /** Memory of buffers from this device that the kernel evicted to host memory. */
  evictedBytes = 0;
  /** Buffers evicted from this device to host memory so far, and restored onto it (monotonic, for metrics). */
  evictions = 0;
  restores = 0;
  /** Set once the real device is lost or destroyed; nothing more runs on it. */
  lostReason: string | null = null;
  /** How fast this device runs loop iterations (src/device/loopRate.ts): the watchdog's unit. */
  loopRates: LoopRates = { iterationsPerMs: 1e6, parallelInvocations: 1, waitWeight: 1 };

  // Owned by capture(): where errors raised now go, and how it catches them.
  /** True while capture() runs a call: errors raised now are that call's. */
  private inCapture = false;
  /** The errors of the call capture() is running now, made at its first error (a valid call allocates none). */
  private capturing: GPUError[] | null = null;
  /** True when Dawn raises uncaptured errors inside the call that caused them (see probeSyncErrors). */
  private readonly syncErrors: boolean;
  /** A probe error Dawn may still deliver late, to swallow rather than report as the kernel's. */
  private lateProbeErrors = 0;

  constructor(
    readonly id: string,
    readonly adapter: AdapterDescription,
    readonly device: GPUDevice,
    readonly budgetBytes: number,
  ) {
    startAsDoubles<PhysicalDevice>(this, ['usedBytes', 'evictedBytes']);
    device.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
    device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      if (this.inCapture) {
        // Raised inside the call capture() is running: it belongs to that call's process.
        event.preventDefault();
        (this.capturing ??= []).push(error);
        return;
      }
      if (this.lateProbeErrors > 0 && error.constructor.name === 'GPUValidationError') {
        this.lateProbeErrors--;
        return;
      }
      // Every call made for a process is captured, so anything reaching here was caused by the
      // kernel itself; say so rather than blame a process.
      process.stderr.write(`gpunix: ${id}: kernel-level WebGPU error: ${error.message}\n`);
    });
    this.syncErrors = this.probeSyncErrors();
    this.deviceTimer = DeviceTimer.for(this);
  }

  /** Times atoms with pass timestamps; null where the device has none (wall clock is used). */
  readonly deviceTimer: DeviceTimer | null;

  /**
   * Dawn (dawn.node) raises a call's uncaptured errors synchronously, inside the call. Checked
   * once per device with a call every implementation must reject; if it ever stops holding,
   * capture() falls back to error scopes around every call.
   */
  private probeSyncErrors(): boolean {
    let seen: GPUError[] | null = null;
    this.inCapture = true;
    try {
      // MAP_READ (0x1) with STORAGE (0x80) is invalid: always exactly one validation error.
      this.device.createBuffer({ size: 4, usage: 0x0001 | 0x0080, label: 'gpunix-error-probe' }).destroy();
    } finally {
      seen = this.capturing as GPUError[] | null;
      this.inCapture = false;
      this.capturing = null;
    }
    if (seen === null) this.lateProbeErrors++;
    return seen !== null && seen.length === 1;
  }

  private noCopySource: GPUBuffer | null = null;

  /**
   * A buffer that is not a valid copy source. Real buffers carry COPY_SRC for the kernel's own
   * reads even when the program's usage lacks it; the program's copy from such a buffer is
   * replayed with this one instead, so that Dawn refuses it as it would have.
   */
  get invalidCopySource(): GPUBuffer {
    this.noCopySource ??= this.device.createBuffer({ size: 4, usage: 0x0001 /* MAP_READ */, label: 'gpunix: source lacks COPY_SRC' });
    return this.noCopySource;
  }

  /**
   * The real queue, for any call but a held submit's: whatever is put on it must come after the
   * submits held so far, which are given to Dawn first (holdSubmit).
   */
  get queue(): GPUQueue {
    if (this.heldBuffers.length > 0) this.flushHeldSubmits();
    return this.device.queue;
  }

  /**
   * Whether the dispatcher may hold whole submits and give a burst of them to Dawn as one
   * (holdSubmit): set by the kernel (its `coalesceSubmitsWithinUs` option) where a submit only queues the
   * work and errors are seen inside the call that raised them (a failed batch is then retried
   * submit by submit, each one's errors to its own scopes).
   */
  get holdsSubmits(): boolean {
    return this.holdWithinNs > 0;
  }
  /** A whole submit is held only when its program called it less than this long (ns) after its previous one (0: none is). */
  holdWithinNs = 0;
  /** Lets the dispatcher hold submits called within `withinNs` of the previous one (the kernel's choice; 0: none), where errors are seen in their call. */
  allowHeldSubmits(withinNs: number): void {
    this.holdWithinNs = this.syncErrors ? withinNs : 0;
  }
  /** The real command buffers of the held submits, in the program's order (one real submit at the flush). */
  private heldBuffers: GPUCommandBuffer[] = [];
  /** The held submits, each told how its batch went (HeldSubmit.flushed). */
  private heldSubmits: HeldSubmit[] = [];
  /** Real submits made of held ones, and the programs' submits they carried (kernel.stats().devices[i].heldSubmits). */
  batchedSubmits = 0;
  submitsBatched = 0;

  /**
   * Holds a whole submit that gpunix found valid and submittable at the program's call, instead of
   * giving it to Dawn now: Dawn's submit has a cost of its own (a driver submit, a fence; more than
   * half of bare Dawn's time in a loop of one-dispatch submits on lavapipe), and a burst of them is
   * worth one. The dispatcher gives the held ones to Dawn when the program's synchronous burst
   * ends (as a browser's WebGPU flushes its command stream at the end of a task), before anything
   * else reaches the queue (the `queue` getter, the dispatcher's other work and fences), and once
   * HELD_SUBMITS_MAX command buffers are held.
   */
  holdSubmit(buffers: readonly GPUCommandBuffer[], by: HeldSubmit): void {
    const held = this.heldBuffers;
    for (let i = 0; i < buffers.length; i++) held.push(buffers[i]);
    this.heldSubmits.push(by);
    if (held.length >= HELD_SUBMITS_MAX) this.flushHeldSubmits();
  }

  /** Gives the held submits to Dawn, in one real submit; each is told whether it went through. */
  flushHeldSubmits(): void {
    const buffers = this.heldBuffers;
    if (buffers.length === 0) return;
    const submits = this.heldSubmits;
    // Fresh lists before anything is told: a retry submits through this device again.
    this.heldBuffers = [];
    this.heldSubmits = [];
    // Dawn refuses a submit whole: when one held submit was refused (gpunix's checks at the call
    // did not foresee it), none of them ran, and each is retried alone (HeldSubmit.flushed). A
    // submit that threw (a kernel bug) is taken as refused: every held one is still told, so that
    // none leaves its program's error scopes waiting.
    let refused = true;
    try {
      this.callCapturing(submitHeld, this.device.queue, buffers);
      refused = this.lastFailed !== null;
    } finally {
      if (!refused) {
        this.batchedSubmits++;
        this.submitsBatched += submits.length;
      }
      for (let i = 0; i < submits.length; i++) tellFlushed(submits[i], refused);
    }
  }

  /** How many command buffers are held now (for tests). */
  get heldCount(): number {
    return this.heldBuffers.length;
  }

  /**
   * Runs one real call and collects the errors it raises, so they can be routed to their owner.
   * The errors arrive as uncaptured-error events during the call (no error scope is open on the
   * real device between kernel calls), which costs nothing when the call is valid; error scopes
   * pushed and popped around each call, as fallback, cost three native pops and a round through
   * Dawn's event loop per call (and keep only the first error of each kind, as a scope does).
   */
  capture<T>(call: () => T): Captured<T> {
    return this.captureWith(invoke, call, undefined);
  }

  /**
   * capture(() => call(a, b)) without making that closure: for the calls a program makes in a
   * loop (an encoder's finish, a submit), where a closure per call is garbage per call.
   */
  captureWith<A, B, T>(call: (a: A, b: B) => T, a: A, b: B): Captured<T> {
    const value = this.callCapturing(call, a, b);
    return (this.lastFailed as Captured<T> | null) ?? { value, errors: NO_ERRORS, clean: true };
  }

  /**
   * The errors of the last callCapturing(): null when it raised none (through error scopes, the
   * whole Captured, errors to come). Read it right after the call, before any other capture.
   */
  lastFailed: Captured<unknown> | null = null;

  /**
   * captureWith(call, a, b) for the calls a program makes in a loop (createCommandEncoder, finish,
   * submit), without a result object per valid call: returns the value, and leaves the call's
   * Captured in `lastFailed` when it raised errors (null when it is clean).
   */
  callCapturing<A, B, T>(call: (a: A, b: B) => T, a: A, b: B): T {
    if (!this.syncErrors) {
      const captured = this.captureWithScopes(() => call(a, b));
      this.lastFailed = captured;
      return captured.value;
    }
    const outerIn = this.inCapture;
    const outer = this.capturing;
    this.inCapture = true;
    this.capturing = null;
    let value: T;
    let errors: GPUError[] | null;
    try {
      value = call(a, b);
    } finally {
      errors = this.capturing as GPUError[] | null;
      this.inCapture = outerIn;
      this.capturing = outer;
    }
    this.lastFailed = errors === null ? null : { value, errors: Promise.resolve(errors), clean: false };
    return value;
  }

  /** capture() through error scopes of its own around the call. */
  private captureWithScopes<T>(call: () => T): Captured<T> {
    const device = this.device;
    device.pushErrorScope('internal');
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let value: T;
    try {
      value = call();
    } catch (thrown) {
      // Pop even when the call threw, so scopes never leak from one process's call into another's.
      this.popCaptureScopes();
      throw thrown;
    }
    return { value, errors: this.popCaptureScopes(), clean: false };
  }

  private popCaptureScopes(): Promise<GPUError[]> {
    const validation = this.device.popErrorScope();
    const oom = this.device.popErrorScope();
    const internal = this.device.popErrorScope();
    return Promise.all([validation, oom, internal]).then((list) => list.filter((e): e is GPUError => e !== null));
  }

  destroy(): void {
    this.flushHeldSubmits();
    this.device.destroy();
  }
}
