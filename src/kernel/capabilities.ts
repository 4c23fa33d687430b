// What the OS can promise on each device, measured rather than assumed: the preemption bound (a
// realtime client's submit-to-completion latency while a batch client saturates the device), the
// atomization overhead (batch throughput with and without atoms), the features the scheduler leans
// on (timestamp queries, immediate data), and the isolation guarantees (robust buffer access,
// zero-initialized memory, per-process buffers). `gpunix caps` reports it; bench/preemption.ts
// reuses the same clients and loops against bare Dawn.
//
// Every workload is a function of a `GPU` (a navigator.gpu), so the same code measures bare Dawn
// and a gpunix process, on any backend: the clients ask for a core adapter and, where the device
// is compatibility-mode only (OpenGL, OpenGL ES), for a compatibility one.

import { BACKEND_NAMES } from '../device/backends.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { BufferUsage, MapMode } from '../vgpu/webgpuGlobals.js';
import { createKernel, Kernel, KernelOptions } from './kernel.js';

// ---- the clients ---------------------------------------------------------------------------------

/**
 * An adapter from `gpu` as a portable program asks for one: core first (WebGPU's default), then
 * compatibility, which is all a GL or GLES device offers. The clients below need nothing that
 * compatibility mode lacks. Null when there is neither.
 */
export async function requestAnyAdapter(gpu: GPU): Promise<GPUAdapter | null> {
  return (await gpu.requestAdapter()) ?? (await gpu.requestAdapter({ featureLevel: 'compatibility' }));
}

/**
 * `gpu` as seen by a program written for `featureLevel` devices: with 'compatibility', a
 * requestAdapter() that names no featureLevel asks for 'compatibility' (a core request, WebGPU's
 * default, gets no adapter on a GL or GLES device). With 'core', `gpu` itself. Benchmarks use it to
 * run unchanged workloads on every backend.
 */
export function asFeatureLevelProgram(gpu: GPU, featureLevel: 'core' | 'compatibility'): GPU {
  if (featureLevel === 'core') return gpu;
  return {
    requestAdapter: (options?: GPURequestAdapterOptions) =>
      gpu.requestAdapter(options?.featureLevel === undefined ? { ...options, featureLevel: 'compatibility' } : options),
    getPreferredCanvasFormat: () => gpu.getPreferredCanvasFormat(),
    get wgslLanguageFeatures() {
      return gpu.wgslLanguageFeatures;
    },
  } as GPU;
}

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

/**
 * One client's kernel: `workgroups` workgroups of 64 invocations, `iterations` loop trips each,
 * repeated over `rows` (the grid's y; default 1: each row computes the same words as the first).
 */
export interface KernelShape {
  workgroups: number;
  iterations: number;
  rows?: number;
}

/**
 * The realtime client's kernel (one workgroup, ~40 µs of device time on lavapipe) and the batch
 * client's (1024 workgroups, ~20 ms on a 2-core lavapipe: about 500x longer).
 */
export const REALTIME_SHAPE: KernelShape = { workgroups: 1, iterations: 1000 };
export const BATCH_SHAPE: KernelShape = { workgroups: 1024, iterations: 1000 };

/** Device time the batch kernel should take at least (ms): long against any atom and any realtime kernel. */
export const BATCH_TARGET_MS = 20;
const MAX_WORKGROUPS = 65535;

/** A program that submits one BUSY_WGSL dispatch per submit on its own buffer. */
export class BusyClient {
  private adapter: GPUAdapter | null = null;
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
    const adapter = await requestAnyAdapter(gpu);
    if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, 'no WebGPU adapter: run scripts/setup.sh');
    const device = await adapter.requestDevice({ label });
    const client = BusyClient.on(device, shape, label, true);
    // Held for the device's life: with bare Dawn, a collected GPUAdapter whose device is busy
    // intermittently hung or crashed the process (dawn.node, webgpu 0.6.2).
    client.adapter = adapter;
    return client;
  }

  /** A client on a device someone else opened (two clients sharing one device). */
  static on(device: GPUDevice, shape: KernelShape, label: string, ownsDevice = false): BusyClient {
    const pipeline = device.createComputePipeline({
      label,
      layout: 'auto',
      compute: { module: device.createShaderModule({ code: BUSY_WGSL }), constants: { ITER: shape.iterations } },
    });
    const out = device.createBuffer({ label, size: shape.workgroups * 64 * 4, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
    return new BusyClient(device, shape, pipeline, group, out, ownsDevice);
  }

  submit(): void {
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(this.pipeline);
    pass.setBindGroup(0, this.group);
    pass.dispatchWorkgroups(this.shape.workgroups, this.shape.rows ?? 1);
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
    const staging = this.device.createBuffer({ size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.out, 0, staging, 0, size);
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(MapMode.READ);
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

/**
 * Scales `shape` (workgroups first, up to 65535, then rows, then iterations) until one dispatch
 * alone takes about `targetMs` on `gpu`'s device (0.8 of it is enough), so that the batch kernel
 * saturates a fast GPU as it does lavapipe; returns `shape` itself when it is long enough already.
 * Rows before iterations: a workgroup stays as short as on lavapipe (1000 trips), as a real
 * kernel's are, so that on a GPU an atom, which cannot split a workgroup, can be short too.
 */
export async function calibrateBatchShape(gpu: GPU, shape: KernelShape, targetMs = BATCH_TARGET_MS): Promise<KernelShape> {
  let current = shape;
  for (let step = 0; step < 6; step++) {
    const client = await BusyClient.open(gpu, current, 'gpunix-calibration');
    let ms: number;
    try {
      await client.timedSubmit(); // the first one compiles
      ms = percentile([await client.timedSubmit(), await client.timedSubmit(), await client.timedSubmit()], 0.5);
    } finally {
      client.destroy();
    }
    if (ms >= targetMs * 0.8) break;
    const factor = Math.min(64, targetMs / Math.max(ms, 0.01));
    const workgroups = Math.min(MAX_WORKGROUPS, Math.ceil(current.workgroups * factor));
    const rowsBefore = current.rows ?? 1;
    const rows = Math.min(MAX_WORKGROUPS, Math.ceil((rowsBefore * factor * current.workgroups) / workgroups));
    const remaining = (factor * current.workgroups * rowsBefore) / (workgroups * rows);
    current = { workgroups, iterations: Math.ceil(current.iterations * Math.max(1, remaining)), ...(rows > 1 ? { rows } : {}) };
  }
  return current;
}

// ---- the measurement loops -----------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One realtime submit: when it was made (performance.now(), ms), how long until it completed (ms),
 * and how late the program got to make it (ms): from the end of its pause as asked to its call.
 * Where the thread that runs the program also runs the device's work (Dawn's GL backends over
 * llvmpipe, whose submit runs the kernel), a program waits for the thread before it can submit at
 * all, and submit-to-completion leaves that wait out; `lateMs + latencyMs` keeps it (it also holds
 * Node's timer granularity, as the solo runs show).
 */
export interface LatencySample {
  startMs: number;
  latencyMs: number;
  lateMs: number;
}

/** One submit every `intervalMs` (after the last completed) for `durationMs`: each one's submit-to-completion time, and its lateness. */
export async function realtimeSamples(client: BusyClient, durationMs: number, intervalMs: number): Promise<LatencySample[]> {
  const samples: LatencySample[] = [];
  const end = performance.now() + durationMs;
  let dueMs = performance.now();
  while (performance.now() < end) {
    const startMs = performance.now();
    const lateMs = Math.max(0, startMs - dueMs);
    samples.push({ startMs, latencyMs: await client.timedSubmit(), lateMs });
    dueMs = performance.now() + intervalMs;
    await sleep(intervalMs);
  }
  return samples;
}

/** Each sample's latency from when its program was due to submit: its lateness and its submit-to-completion time (ms). */
export const fromDueMs = (samples: readonly LatencySample[]): number[] => samples.map((s) => s.lateMs + s.latencyMs);

/** realtimeSamples' latencies alone (ms). */
export async function realtimeLatencies(client: BusyClient, durationMs: number, intervalMs: number): Promise<number[]> {
  return (await realtimeSamples(client, durationMs, intervalMs)).map((s) => s.latencyMs);
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
  samples: LatencySample[];
  batch: Throughput;
}

/** The realtime client submitting at intervals while the batch client keeps the device saturated. */
export async function contention(realtime: BusyClient, batch: BusyClient, options: ContentionOptions): Promise<ContentionResult> {
  let stop = false;
  const saturating = saturate(batch, options.depth, () => stop);
  try {
    await sleep(options.leadMs ?? 50);
    const samples = await realtimeSamples(realtime, options.durationMs, options.intervalMs);
    stop = true;
    return { latenciesMs: samples.map((s) => s.latencyMs), samples, batch: await saturating };
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

/** Adapters of the devices the checks open, held until the device is destroyed (see BusyClient.open). */
const heldAdapters = new Map<GPUDevice, GPUAdapter>();

async function openDevice(gpu: GPU): Promise<GPUDevice> {
  const adapter = await requestAnyAdapter(gpu);
  if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, 'no WebGPU adapter: run scripts/setup.sh');
  const device = await adapter.requestDevice();
  heldAdapters.set(device, adapter);
  device.lost.then(() => heldAdapters.delete(device));
  return device;
}

async function readWords(device: GPUDevice, buffer: GPUBuffer): Promise<Uint32Array> {
  const staging = device.createBuffer({ size: buffer.size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, buffer.size);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(MapMode.READ);
  const words = new Uint32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return words;
}

function patterned(device: GPUDevice): GPUBuffer {
  const buffer = device.createBuffer({ size: NEIGHBOUR_WORDS * 4, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC, mappedAtCreation: true });
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
    const target = own.createBuffer({ size: 256, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC });
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
    const buffer = dirty.createBuffer({ size, usage: BufferUsage.STORAGE | BufferUsage.COPY_DST });
    dirty.queue.writeBuffer(buffer, 0, new Uint8Array(size).fill(0xab));
    await dirty.queue.onSubmittedWorkDone();
    buffer.destroy();
  }
  dirty.destroy();
  const fresh = await openDevice(next);
  try {
    for (const size of sizes) {
      const storage = fresh.createBuffer({ size, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC });
      if (!(await readWords(fresh, storage)).every((w) => w === 0)) return false;
      const mappable = fresh.createBuffer({ size, usage: BufferUsage.MAP_READ });
      await mappable.mapAsync(MapMode.READ);
      if (!new Uint32Array(mappable.getMappedRange()).every((w) => w === 0)) return false;
      mappable.unmap();
      const atCreation = fresh.createBuffer({ size, usage: BufferUsage.COPY_SRC, mappedAtCreation: true });
      if (!new Uint32Array(atCreation.getMappedRange()).every((w) => w === 0)) return false;
      atCreation.unmap();
    }
    return true;
  } finally {
    fresh.destroy();
  }
}

// ---- gpunix caps ---------------------------------------------------------------------------------

export interface CapsOptions {
  /** The realtime client's window against the saturating batch client (ms; default 3000). */
  durationMs?: number;
  /** Total time of the batch-alone windows, atomized and whole, alternating (ms; default 2000). */
  overheadMs?: number;
  /** Pause between the realtime client's submits (ms; default 5). */
  intervalMs?: number;
  /** Batch submits kept in flight (default 3). */
  depth?: number;
  /** Options of the kernel measured (targetSliceMs, maxInFlight, memoryBudget). */
  kernel?: KernelOptions;
  /** Measure only the device with this id (as `gpunix devices` lists it). */
  device?: string;
  /** Progress, one line at a time. */
  log?: (line: string) => void;
}

/** What one device offers, as `gpunix caps --json` prints it; requirement names are these keys. */
export interface DeviceCapabilities {
  device: string;
  description: string;
  vendor: string;
  /** The Dawn backend the device was opened on (vulkan, opengles, opengl, ...). */
  backend: string;
  /** WebGPU feature level: 'core', or 'compatibility' (GL, GLES: lower limits, fewer features). */
  feature_level: 'core' | 'compatibility';
  fallback: boolean;
  /**
   * p99 latency of a realtime client against a saturating batch client (ms), from when it was due
   * to submit to completion (LatencySample.lateMs: on GL over llvmpipe it waits for the thread first).
   */
  preemption_bound_ms: number;
  realtime_p50_ms: number;
  /** p99 latency of the same realtime client alone on the device (ms). */
  solo_p99_ms: number;
  /** Batch throughput lost to atomization: (1 - atomized / whole) x 100; negative is noise. */
  atomization_overhead_pct: number;
  /** The device has 'timestamp-query': the cost model learns from pass timestamps. */
  timestamps: boolean;
  /** The device has immediate data (maxImmediateSize > 0): atoms are placed without a bind group. */
  immediates: boolean;
  immediate_bytes: number;
  /** A kernel writing out of bounds of its binding changed no neighbouring buffer. */
  robust_access: boolean;
  /** Fresh buffers read back as zeros, including after another process freed its memory. */
  zero_init: boolean;
  /**
   * True by construction, not measured: every buffer a process creates has its own real GPUBuffer
   * (gpunix never suballocates), so out-of-bounds access stays within the process's own buffer;
   * only a shared segment is shared, and only between processes of one tenant that attach it by name.
   */
  per_process_buffers: boolean;
  measured: {
    realtime_samples: number;
    solo_samples: number;
    realtime_max_ms: number;
    batch_atomized_dispatches_per_s: number;
    batch_whole_dispatches_per_s: number;
    atoms: number;
    preemptions: number;
    target_slice_ms: number;
    max_in_flight: number;
    realtime_shape: KernelShape;
    batch_shape: KernelShape;
  };
}

/**
 * Measures every device the kernel opens (or only `options.device`): one per adapter on each
 * backend of `options.kernel.backends`, else of $GPUNIX_BACKENDS, else the platform's own.
 */
export async function measureCapabilities(options: CapsOptions = {}): Promise<DeviceCapabilities[]> {
  const base = await createKernel({ ...options.kernel, atomize: true, traceEvents: 0 });
  try {
    const devices = base.devices.filter((d) => options.device === undefined || d.id === options.device);
    if (devices.length === 0) {
      throw new GpunixError(
        ErrorCodes.BAD_OPTION,
        `no device ${JSON.stringify(options.device)}: the devices are ${base.devices.map((d) => d.id).join(', ')} (see gpunix devices)`,
      );
    }
    const results: DeviceCapabilities[] = [];
    // One kernel per device and setting, over the base kernel's devices: its processes can only
    // stand on that device. The base kernel closes the devices at the end.
    for (const device of devices) {
      const atomized = new Kernel([device], { ...base.options, atomize: true });
      const whole = new Kernel([device], { ...base.options, atomize: false });
      results.push(await measureDevice(atomized, whole, options));
    }
    return results;
  } finally {
    await base.shutdown();
  }
}

async function measureDevice(atomized: Kernel, whole: Kernel, options: CapsOptions): Promise<DeviceCapabilities> {
  const log = options.log ?? (() => {});
  const durationMs = options.durationMs ?? 3000;
  const overheadMs = options.overheadMs ?? 2000;
  const intervalMs = options.intervalMs ?? 5;
  const depth = options.depth ?? 3;
  const physical = atomized.devices[0];
  const description = atomized.describeDevices()[0];
  log(`${physical.id}: ${description.description} (${description.backend}, ${description.featureLevel})`);

  const realtimeProc = await atomized.spawn({ name: 'caps-realtime', priority: 'realtime' });
  const batchProc = await atomized.spawn({ name: 'caps-batch', priority: 'batch' });
  const wholeProc = await whole.spawn({ name: 'caps-batch-whole', priority: 'batch' });
  const batchShape = await calibrateBatchShape(wholeProc.gpu, BATCH_SHAPE);
  const realtime = await BusyClient.open(realtimeProc.gpu, REALTIME_SHAPE, 'caps-realtime');
  const batch = await BusyClient.open(batchProc.gpu, batchShape, 'caps-batch');
  const wholeBatch = await BusyClient.open(wholeProc.gpu, batchShape, 'caps-batch-whole');

  // Warm-up: pipelines compiled, the cost model has learned the batch kernel.
  await realtimeLatencies(realtime, 50, 1);
  await batchAlone(batch, depth, 200);
  await batchAlone(wholeBatch, depth, 100);

  log(`${physical.id}: atomization overhead (batch alone, atomized vs whole, ${overheadMs} ms)`);
  const samples = { atomized: [] as Throughput[], whole: [] as Throughput[] };
  const window = Math.max(50, overheadMs / 4);
  for (let round = 0; round < 2; round++) {
    // The order flips each round so drift hits both alike.
    const order = round % 2 === 0 ? (['whole', 'atomized'] as const) : (['atomized', 'whole'] as const);
    for (const side of order) samples[side].push(await batchAlone(side === 'whole' ? wholeBatch : batch, depth, window));
  }
  const atomizedRate = rate(pooled(samples.atomized));
  const wholeRate = rate(pooled(samples.whole));

  log(`${physical.id}: realtime latency alone, then against the saturating batch client (${durationMs} ms)`);
  // Measured from when the client was due to submit: where the device's work runs on the program's
  // own thread (GL over llvmpipe), the wait for the thread is part of what a realtime process waits.
  const solo = fromDueMs(await realtimeSamples(realtime, Math.max(200, durationMs / 3), intervalMs));
  const before = batchProc.record().accounting;
  const contended = await contention(realtime, batch, { durationMs, intervalMs, depth });
  const after = batchProc.record().accounting;
  await realtime.verify();
  await batch.verify();
  await wholeBatch.verify();
  for (const client of [realtime, batch, wholeBatch]) client.destroy();
  await Promise.all([realtimeProc.exit(), batchProc.exit(), wholeProc.exit()]);

  log(`${physical.id}: isolation`);
  const pair = async <T>(check: (a: GPU, b: GPU) => Promise<T>): Promise<T> => {
    const [a, b] = [await atomized.spawn({ name: 'caps-isolation-a' }), await atomized.spawn({ name: 'caps-isolation-b' })];
    try {
      return await check(a.gpu, b.gpu);
    } finally {
      await Promise.all([a.exit(), b.exit()]);
    }
  };
  const robust = await pair(checkRobustAccess);
  const zeroed = await pair(checkZeroInit);

  const latency = summarize(fromDueMs(contended.samples));
  const immediateBytes = description.limits.maxImmediateSize ?? 0;
  return {
    device: physical.id,
    description: description.description,
    vendor: description.vendor,
    backend: description.backend,
    feature_level: description.featureLevel,
    fallback: description.isFallbackAdapter,
    preemption_bound_ms: latency.p99_ms,
    realtime_p50_ms: latency.p50_ms,
    solo_p99_ms: percentile(solo, 0.99),
    atomization_overhead_pct: wholeRate > 0 ? (1 - atomizedRate / wholeRate) * 100 : NaN,
    timestamps: description.features.includes('timestamp-query'),
    immediates: immediateBytes > 0,
    immediate_bytes: immediateBytes,
    robust_access: robust,
    zero_init: zeroed,
    per_process_buffers: true,
    measured: {
      realtime_samples: latency.count,
      solo_samples: solo.length,
      realtime_max_ms: latency.max_ms,
      batch_atomized_dispatches_per_s: atomizedRate,
      batch_whole_dispatches_per_s: wholeRate,
      atoms: after.atomsRun - before.atomsRun,
      preemptions: after.preemptions - before.preemptions,
      target_slice_ms: atomized.options.scheduler.targetSliceNs / 1e6,
      max_in_flight: atomized.options.scheduler.maxInFlight,
      realtime_shape: REALTIME_SHAPE,
      batch_shape: batchShape,
    },
  };
}

// ---- requirements --------------------------------------------------------------------------------

/** Capabilities a requirements file may bound with `min`/`max`. */
export const NUMERIC_CAPABILITIES = ['preemption_bound_ms', 'realtime_p50_ms', 'solo_p99_ms', 'atomization_overhead_pct', 'immediate_bytes'] as const;
/** Capabilities a requirements file may require to be `true` (or `false`). */
export const BOOLEAN_CAPABILITIES = ['timestamps', 'immediates', 'robust_access', 'zero_init', 'per_process_buffers'] as const;
/** Capabilities a requirements file may require to be one value, or one of a list, with the values each may take. */
export const NAMED_CAPABILITIES: Readonly<Record<'backend' | 'feature_level', readonly string[]>> = {
  backend: BACKEND_NAMES,
  feature_level: ['core', 'compatibility'],
};

type NumericCapability = (typeof NUMERIC_CAPABILITIES)[number];
type BooleanCapability = (typeof BOOLEAN_CAPABILITIES)[number];
type NamedCapability = keyof typeof NAMED_CAPABILITIES;

export type Requirement =
  | { name: NumericCapability; min?: number; max?: number }
  | { name: BooleanCapability; equals: boolean }
  | { name: NamedCapability; oneOf: string[] };

/**
 * Parses a requirements file: one JSON object whose keys are capability names, each bounded by
 * `{ "max": n }`, `{ "min": n }` or both (numeric ones), set to `true`/`false` (boolean ones), or
 * to a value or a list of values (`backend`, `feature_level`).
 * Example: `{ "preemption_bound_ms": { "max": 2 }, "atomization_overhead_pct": { "max": 10 }, "timestamps": true, "backend": ["vulkan", "opengles"] }`.
 * Throws GPUNIX_E_BAD_REQUIREMENTS naming the first problem.
 */
export function parseRequirements(text: string, source = 'requirements'): Requirement[] {
  const bad = (why: string): GpunixError => new GpunixError(ErrorCodes.BAD_REQUIREMENTS, `${source}: ${why}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw bad(`not valid JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw bad('must be one JSON object mapping capability names to requirements, e.g. {"preemption_bound_ms": {"max": 2}}');
  }
  const entries = Object.entries(parsed as Record<string, unknown>);
  if (entries.length === 0) throw bad('names no requirement');
  const known = [...NUMERIC_CAPABILITIES, ...BOOLEAN_CAPABILITIES, ...Object.keys(NAMED_CAPABILITIES)].join(', ');
  return entries.map(([name, value]): Requirement => {
    if (Object.hasOwn(NAMED_CAPABILITIES, name)) {
      // "backend": "vulkan" or "backend": ["vulkan", "opengles"]: the device's must be one of them.
      const allowed = NAMED_CAPABILITIES[name as NamedCapability];
      const values = Array.isArray(value) ? value : [value];
      const example = `e.g. ${JSON.stringify(allowed[0])} or ${JSON.stringify(allowed.slice(0, 2))}`;
      if (values.length === 0) throw bad(`"${name}" lists no value (${example})`);
      for (const v of values) {
        if (typeof v !== 'string' || !allowed.includes(v)) {
          throw bad(`"${name}" must be one of ${allowed.join(', ')} or a list of them (${example}); got ${JSON.stringify(v)}`);
        }
      }
      return { name: name as NamedCapability, oneOf: [...new Set(values as string[])] };
    }
    if ((BOOLEAN_CAPABILITIES as readonly string[]).includes(name)) {
      if (typeof value !== 'boolean') throw bad(`"${name}" must be true or false, got ${JSON.stringify(value)}`);
      return { name: name as BooleanCapability, equals: value };
    }
    if (!(NUMERIC_CAPABILITIES as readonly string[]).includes(name)) throw bad(`unknown capability "${name}" (known: ${known})`);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw bad(`"${name}" must be an object with "min" and/or "max", e.g. {"max": 2}; got ${JSON.stringify(value)}`);
    }
    const bounds = value as Record<string, unknown>;
    const extra = Object.keys(bounds).filter((k) => k !== 'min' && k !== 'max');
    if (extra.length > 0) throw bad(`"${name}" has unknown key "${extra[0]}" (use "min" and/or "max")`);
    if (!('min' in bounds) && !('max' in bounds)) throw bad(`"${name}" needs "min" and/or "max"`);
    for (const key of ['min', 'max'] as const) {
      if (key in bounds && (typeof bounds[key] !== 'number' || !Number.isFinite(bounds[key]))) {
        throw bad(`"${name}".${key} must be a finite number, got ${JSON.stringify(bounds[key])}`);
      }
    }
    return { name: name as NumericCapability, min: bounds.min as number | undefined, max: bounds.max as number | undefined };
  });
}

/** One requirement checked on one device. */
export interface RequirementCheck {
  device: string;
  /** The requirement as text, e.g. `preemption_bound_ms <= 2`, `backend = vulkan`, `backend in [vulkan, opengles]`. */
  requirement: string;
  measured: number | boolean | string;
  met: boolean;
}

export function describeRequirement(r: Requirement): string {
  if ('equals' in r) return `${r.name} = ${r.equals}`;
  if ('oneOf' in r) return r.oneOf.length === 1 ? `${r.name} = ${r.oneOf[0]}` : `${r.name} in [${r.oneOf.join(', ')}]`;
  if (r.min !== undefined && r.max !== undefined) return `${r.min} <= ${r.name} <= ${r.max}`;
  return r.max !== undefined ? `${r.name} <= ${r.max}` : `${r.name} >= ${r.min}`;
}

/** Every requirement on every device; a NaN measurement meets no bound. */
export function checkRequirements(devices: readonly DeviceCapabilities[], requirements: readonly Requirement[]): RequirementCheck[] {
  const checks: RequirementCheck[] = [];
  for (const caps of devices) {
    for (const r of requirements) {
      const measured = caps[r.name];
      const met =
        'equals' in r
          ? measured === r.equals
          : 'oneOf' in r
            ? r.oneOf.includes(measured as string)
            : (r.min === undefined || (measured as number) >= r.min) && (r.max === undefined || (measured as number) <= r.max);
      checks.push({ device: caps.device, requirement: describeRequirement(r), measured, met });
    }
  }
  return checks;
}
