// What the OS can promise on each device, measured rather than assumed: the preemption bound (a
// realtime client's submit-to-completion latency while a batch client saturates the device), the
// atomization overhead (batch throughput with and without atoms), the features the scheduler leans
// on (timestamp queries, immediate data), and the isolation guarantees (robust buffer access,
// zero-initialized memory, per-process buffers). `gpunix caps` reports it; bench/preemption.ts
// reuses the same clients and loops against bare Dawn.
//
// Every workload is a function of a `GPU` (a navigator.gpu), so the same code measures bare Dawn
// and a gpunix process.

import { ErrorCodes, GpunixError } from '../errors.js';
import { createKernel, Kernel, KernelOptions } from './kernel.js';

// ---- the clients ---------------------------------------------------------------------------------

/** A loop-heavy kernel: device time grows with ITER and the workgroup count, nothing else. */
export const BUSY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
override ITER: u32 = 1000u;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  var acc = g.x;
  for (var i = 0u; i < ITER; i++) { acc = acc * 1664525u + 1013904223u; }
  out[g.x] = acc;
}`;

/** The value BUSY_WGSL leaves at invocation `x`. */
export function expectedBusy(x: number, iterations: number): number {
  let acc = x >>> 0;
  for (let i = 0; i < iterations; i++) acc = (Math.imul(acc, 1664525) + 1013904223) >>> 0;
  return acc;
}

/** One client's kernel: `workgroups` workgroups of 64 invocations, `iterations` loop trips each. */
export interface KernelShape {
  workgroups: number;
  iterations: number;
}

/**
 * The realtime client's kernel (one workgroup, ~40 µs of device time on lavapipe) and the batch
 * client's (1024 workgroups, ~20 ms on a 2-core lavapipe: about 500x longer).
 */
export const REALTIME_SHAPE: KernelShape = { workgroups: 1, iterations: 1000 };
export const BATCH_SHAPE: KernelShape = { workgroups: 1024, iterations: 1000 };

/** A program that submits one BUSY_WGSL dispatch per submit on its own buffer. */
export class BusyClient {
  private constructor(
    readonly device: GPUDevice,
    readonly shape: KernelShape,
    private readonly pipeline: GPUComputePipeline,
    private readonly group: GPUBindGroup,
    private readonly out: GPUBuffer,
    private readonly ownsDevice: boolean,
  ) {}

  /** Opens its own adapter and device on `gpu`. */
  static async open(gpu: GPU, shape: KernelShape, label: string): Promise<BusyClient> {
    const adapter = await gpu.requestAdapter();
    if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, 'no WebGPU adapter: run scripts/setup.sh');
    const device = await adapter.requestDevice({ label });
    return BusyClient.on(device, shape, label, true);
  }

  /** A client on a device someone else opened (two clients sharing one device). */
  static on(device: GPUDevice, shape: KernelShape, label: string, ownsDevice = false): BusyClient {
    const pipeline = device.createComputePipeline({
      label,
      layout: 'auto',
      compute: { module: device.createShaderModule({ code: BUSY_WGSL }), constants: { ITER: shape.iterations } },
    });
    const out = device.createBuffer({ label, size: shape.workgroups * 64 * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
    return new BusyClient(device, shape, pipeline, group, out, ownsDevice);
  }

  submit(): void {
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(this.pipeline);
    pass.setBindGroup(0, this.group);
    pass.dispatchWorkgroups(this.shape.workgroups);
    pass.end();
    this.device.queue.submit([encoder.finish()]);
  }

  /** One submit, timed from the call to the queue's completion signal (ms). */
  async timedSubmit(): Promise<number> {
    const start = performance.now();
    this.submit();
    await this.device.queue.onSubmittedWorkDone();
    return performance.now() - start;
  }

  /** Reads the output back and checks the first, a middle and the last invocation's word. */
  async verify(): Promise<void> {
    const size = this.out.size;
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.out, 0, staging, 0, size);
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const words = new Uint32Array(staging.getMappedRange().slice(0));
    staging.destroy();
    for (const x of [0, words.length >> 1, words.length - 1]) {
      const want = expectedBusy(x, this.shape.iterations);
      if (words[x] !== want) throw new Error(`${this.pipeline.label}: invocation ${x} computed ${words[x]}, expected ${want}`);
    }
  }

  destroy(): void {
    this.out.destroy();
    if (this.ownsDevice) this.device.destroy();
  }
}

// ---- the measurement loops -----------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Submit-to-completion latencies (ms) of one submit every `intervalMs` (after the last completed), for `durationMs`. */
export async function realtimeLatencies(client: BusyClient, durationMs: number, intervalMs: number): Promise<number[]> {
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  while (performance.now() < end) {
    latencies.push(await client.timedSubmit());
    await sleep(intervalMs);
  }
  return latencies;
}

/** Dispatches completed over a span of wall time. */
export interface Throughput {
  dispatches: number;
  seconds: number;
}

export const rate = (t: Throughput): number => (t.seconds > 0 ? t.dispatches / t.seconds : 0);

/** Sums throughput samples: total dispatches over total time. */
export function pooled(samples: Throughput[]): Throughput {
  return samples.reduce((sum, t) => ({ dispatches: sum.dispatches + t.dispatches, seconds: sum.seconds + t.seconds }), { dispatches: 0, seconds: 0 });
}

/**
 * Keeps `depth` submits of `client` in flight until `stop()` says so, then waits for the last to
 * complete. The span runs from the first submit to the last completion.
 */
export async function saturate(client: BusyClient, depth: number, stop: () => boolean): Promise<Throughput> {
  const start = performance.now();
  const pending: Promise<unknown>[] = [];
  let dispatches = 0;
  while (!stop()) {
    client.submit();
    pending.push(client.device.queue.onSubmittedWorkDone().then(() => dispatches++));
    if (pending.length >= depth) await pending.shift();
  }
  await Promise.all(pending);
  return { dispatches, seconds: (performance.now() - start) / 1000 };
}

/** The batch client alone for `durationMs`. */
export function batchAlone(client: BusyClient, depth: number, durationMs: number): Promise<Throughput> {
  const end = performance.now() + durationMs;
  return saturate(client, depth, () => performance.now() >= end);
}

export interface ContentionOptions {
  /** How long the realtime client measures while the batch client saturates (ms). */
  durationMs: number;
  /** Pause between one realtime completion and the next submit (ms). */
  intervalMs: number;
  /** Batch submits kept in flight. */
  depth: number;
  /** Head start of the batch client before the realtime client starts (ms), so the queue is full. */
  leadMs?: number;
}

export interface ContentionResult {
  latenciesMs: number[];
  batch: Throughput;
}

/** The realtime client submitting at intervals while the batch client keeps the device saturated. */
export async function contention(realtime: BusyClient, batch: BusyClient, options: ContentionOptions): Promise<ContentionResult> {
  let stop = false;
  const saturating = saturate(batch, options.depth, () => stop);
  try {
    await sleep(options.leadMs ?? 50);
    const latenciesMs = await realtimeLatencies(realtime, options.durationMs, options.intervalMs);
    stop = true;
    return { latenciesMs, batch: await saturating };
  } finally {
    stop = true;
    await saturating.catch(() => {});
  }
}

/** The nearest-rank percentile `p` (0..1) of `values`; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

export interface LatencySummary {
  count: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
}

export function summarize(latenciesMs: readonly number[]): LatencySummary {
  return {
    count: latenciesMs.length,
    p50_ms: percentile(latenciesMs, 0.5),
    p90_ms: percentile(latenciesMs, 0.9),
    p99_ms: percentile(latenciesMs, 0.99),
    max_ms: latenciesMs.length ? Math.max(...latenciesMs) : NaN,
  };
}

// ---- isolation checks ----------------------------------------------------------------------------

const OUT_OF_BOUNDS_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  // Every invocation writes 64 words: 1 MiB of writes through a 256-byte binding.
  for (var k = 0u; k < 64u; k++) { a[g.x * 64u + k] = 0xdeadbeefu; }
}`;

const NEIGHBOUR_WORDS = 1024;
const NEIGHBOUR_PATTERN = 0x5a5a5a5a;

async function openDevice(gpu: GPU): Promise<GPUDevice> {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, 'no WebGPU adapter: run scripts/setup.sh');
  return adapter.requestDevice();
}

async function readWords(device: GPUDevice, buffer: GPUBuffer): Promise<Uint32Array> {
  const staging = device.createBuffer({ size: buffer.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, buffer.size);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const words = new Uint32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return words;
}

function patterned(device: GPUDevice): GPUBuffer {
  const buffer = device.createBuffer({ size: NEIGHBOUR_WORDS * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  new Uint32Array(buffer.getMappedRange()).fill(NEIGHBOUR_PATTERN);
  buffer.unmap();
  return buffer;
}

/**
 * Robust buffer access: a kernel of `writer` writes 1 MiB through a 256-byte binding; the buffers
 * created around it, by the same process and by `neighbour` (another process), keep every word.
 * True only when the in-bounds words were written (the kernel ran) and no neighbour changed.
 */
export async function checkRobustAccess(writer: GPU, neighbour: GPU): Promise<boolean> {
  const [own, other] = [await openDevice(writer), await openDevice(neighbour)];
  try {
    const around = [patterned(own), patterned(other)];
    const target = own.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    around.push(patterned(own), patterned(other));
    const pipeline = own.createComputePipeline({ layout: 'auto', compute: { module: own.createShaderModule({ code: OUT_OF_BOUNDS_WGSL }) } });
    const group = own.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: target } }] });
    const encoder = own.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(64);
    pass.end();
    own.queue.submit([encoder.finish()]);
    const written = await readWords(own, target);
    if (!written.every((w) => w === 0xdeadbeef)) return false;
    for (const [i, buffer] of around.entries()) {
      const words = await readWords(i % 2 === 0 ? own : other, buffer);
      if (!words.every((w) => w === NEIGHBOUR_PATTERN)) return false;
    }
    return true;
  } finally {
    own.destroy();
    other.destroy();
  }
}

/**
 * Zero-initialized memory: `previous` fills buffers with a pattern and destroys them; `next`
 * then creates buffers of the same sizes (storage read back by a copy, MAP_READ mapped directly,
 * and mappedAtCreation) and every byte it sees is zero.
 */
export async function checkZeroInit(previous: GPU, next: GPU): Promise<boolean> {
  const sizes = [256, 64 * 1024, 1024 * 1024];
  const dirty = await openDevice(previous);
  for (const size of sizes) {
    const buffer = dirty.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    dirty.queue.writeBuffer(buffer, 0, new Uint8Array(size).fill(0xab));
    await dirty.queue.onSubmittedWorkDone();
    buffer.destroy();
  }
  dirty.destroy();
  const fresh = await openDevice(next);
  try {
    for (const size of sizes) {
      const storage = fresh.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      if (!(await readWords(fresh, storage)).every((w) => w === 0)) return false;
      const mappable = fresh.createBuffer({ size, usage: GPUBufferUsage.MAP_READ });
      await mappable.mapAsync(GPUMapMode.READ);
      if (!new Uint32Array(mappable.getMappedRange()).every((w) => w === 0)) return false;
      mappable.unmap();
      const atCreation = fresh.createBuffer({ size, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
      if (!new Uint32Array(atCreation.getMappedRange()).every((w) => w === 0)) return false;
      atCreation.unmap();
    }
    return true;
  } finally {
    fresh.destroy();
  }
}
