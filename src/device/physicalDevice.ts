// One real GPUDevice that the kernel owns on one adapter, with the kernel's own memory count.
// Everything a process does on this device reaches Dawn through here or through real objects
// this device created; errors are captured per call so they reach only the process that caused them.

import { AtomTimer } from './atomTimer.js';
import type { LoopRates } from './loopRate.js';

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Dawn's backend: vulkan on Linux, metal on macOS, d3d12 on Windows, unless the kernel chose one. */
  backend: string;
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
  /** The error list of the call capture() is running now; null between calls. */
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
    device.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
    device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      if (this.capturing) {
        // Raised inside the call capture() is running: it belongs to that call's process.
        event.preventDefault();
        this.capturing.push(error);
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
    this.atomTimer = AtomTimer.for(this);
  }

  /** Times atoms with pass timestamps; null where the device has none (wall clock is used). */
  readonly atomTimer: AtomTimer | null;

  /**
   * Dawn (dawn.node) raises a call's uncaptured errors synchronously, inside the call. Checked
   * once per device with a call every implementation must reject; if it ever stops holding,
   * capture() falls back to error scopes around every call.
   */
  private probeSyncErrors(): boolean {
    const seen: GPUError[] = [];
    this.capturing = seen;
    try {
      // MAP_READ (0x1) with STORAGE (0x80) is invalid: always exactly one validation error.
      this.device.createBuffer({ size: 4, usage: 0x0001 | 0x0080, label: 'gpunix-error-probe' }).destroy();
    } finally {
      this.capturing = null;
    }
    if (seen.length === 0) this.lateProbeErrors++;
    return seen.length === 1;
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

  get queue(): GPUQueue {
    return this.device.queue;
  }

  /**
   * Runs one real call and collects the errors it raises, so they can be routed to their owner.
   * The errors arrive as uncaptured-error events during the call (no error scope is open on the
   * real device between kernel calls), which costs nothing when the call is valid; error scopes
   * pushed and popped around each call, as fallback, cost three native pops and a round through
   * Dawn's event loop per call (and keep only the first error of each kind, as a scope does).
   */
  capture<T>(call: () => T): Captured<T> {
    if (!this.syncErrors) return this.captureWithScopes(call);
    const outer = this.capturing;
    const errors: GPUError[] = [];
    this.capturing = errors;
    let value: T;
    try {
      value = call();
    } finally {
      this.capturing = outer;
    }
    const clean = errors.length === 0;
    return { value, errors: clean ? NO_ERRORS : Promise.resolve(errors), clean };
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
    this.device.destroy();
  }
}
