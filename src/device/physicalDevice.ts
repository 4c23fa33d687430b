// One real GPUDevice that the kernel owns on one adapter, with the kernel's own memory count.
// Everything a process does on this device reaches Dawn through here or through real objects
// this device created; errors are captured per call so they reach only the process that caused them.

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
}

export class PhysicalDevice {
  /** Memory the kernel has handed out on this device, by its own count (WebGPU reports none). */
  usedBytes = 0;
  /** Set once the real device is lost or destroyed; nothing more runs on it. */
  lostReason: string | null = null;

  constructor(
    readonly id: string,
    readonly adapter: AdapterDescription,
    readonly device: GPUDevice,
    readonly budgetBytes: number,
  ) {
    device.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
    // Every call made for a process is wrapped in error scopes, so anything reaching this handler
    // was caused by the kernel itself; say so rather than blame a process.
    device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      process.stderr.write(`gpunix: ${id}: kernel-level WebGPU error: ${error.message}\n`);
    });
  }

  get queue(): GPUQueue {
    return this.device.queue;
  }

  /** Runs one real call inside error scopes of its own, so its errors can be routed to their owner. */
  capture<T>(call: () => T): Captured<T> {
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
    return { value, errors: this.popCaptureScopes() };
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
