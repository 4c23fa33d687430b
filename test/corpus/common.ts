// What every corpus program shares: the program shape, device opening with error scopes, and a
// readback through one MAP_READ staging buffer. Programs stay plain WebGPU: nothing here is gpunix.

/** One corpus program: runs on whatever `navigator.gpu` it is given and returns all its result bytes. */
export interface CorpusProgram {
  readonly name: string;
  /** What the program needs beyond a default device's (skipped by name on devices without it, e.g. compatibility mode). */
  readonly needs?: DeviceNeeds;
  run(gpu: GPU): Promise<Uint8Array>;
}

/** Limits (minimums, of the device a program gets with no requiredLimits) and features a program needs. */
export interface DeviceNeeds {
  limits?: Partial<Record<keyof GPUSupportedLimits, number>>;
  features?: GPUFeatureName[];
}

/** Requests an adapter and a device from `gpu`, and opens validation and out-of-memory scopes on it. */
export async function openDevice(gpu: GPU, descriptor?: GPUDeviceDescriptor): Promise<GPUDevice> {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('corpus: no WebGPU adapter');
  const device = await adapter.requestDevice(descriptor);
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  return device;
}

/** Pops the scopes openDevice pushed and throws if the program caused any WebGPU error. */
export async function expectNoErrors(device: GPUDevice, program: string): Promise<void> {
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  const error = validation ?? oom;
  if (error) throw new Error(`corpus program ${program}: ${error.constructor.name}: ${error.message}`);
}

export interface Region {
  buffer: GPUBuffer;
  offset?: number;
  size: number;
}

/**
 * Copies each region, in order, into one MAP_READ staging buffer, maps it and returns the bytes
 * concatenated. Sizes and offsets must be multiples of 4. The staging buffer is destroyed.
 */
export async function readBack(device: GPUDevice, regions: Region[]): Promise<Uint8Array> {
  const total = regions.reduce((sum, r) => sum + r.size, 0);
  const staging = device.createBuffer({ label: 'readback', size: total, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder({ label: 'readback' });
  let at = 0;
  for (const r of regions) {
    encoder.copyBufferToBuffer(r.buffer, r.offset ?? 0, staging, at, r.size);
    at += r.size;
  }
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const bytes = new Uint8Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  return bytes;
}

/** Concatenates byte arrays (a program's results from several sources). */
export function concat(...parts: ArrayBufferView[]): Uint8Array {
  const total = parts.reduce((sum, p) => sum + p.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), at);
    at += p.byteLength;
  }
  return out;
}

/** A deterministic pseudo-random u32 sequence (xorshift32), so inputs are the same on every run. */
export function pseudoRandom(count: number, seed = 0x9e3779b9): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(count);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x;
  }
  return out;
}
