// The workloads the overhead and wire benchmarks share, each written once as a function of a
// `GPU` (navigator.gpu), so the same code runs on bare Dawn, an embedded gpunix process and a
// process of the daemon over the wire.

import { parseArgs } from 'node:util';
import { collectGarbage, mainThreadCpuSeconds } from './machine.js';

export const MiB = 1024 * 1024;

/** What one timed run of a workload did: `units` of work in `seconds` of wall time. */
export interface Sample {
  units: number;
  seconds: number;
  /** Each operation's own time (ms), for workloads that time operations one by one (round-trip). */
  latenciesMs?: number[];
  /**
   * For workloads whose timed part begins with a synchronous loop of calls (dispatch-*): the main
   * thread's CPU seconds over that loop alone (no waiting in it) and its iterations, i.e. the
   * call path's own cost (see mainThreadCpuSeconds). Absent where /proc is not there.
   */
  callLoop?: { cpuSeconds: number; iterations: number };
}

/** Main-thread CPU over `loop(iterations)`, for Sample.callLoop (undefined off Linux). */
export function timeCallLoop(iterations: number, loop: (iterations: number) => void): Sample['callLoop'] {
  const before = mainThreadCpuSeconds();
  loop(iterations);
  const after = mainThreadCpuSeconds();
  return before === null || after === null ? undefined : { cpuSeconds: after - before, iterations };
}

/**
 * Untimed iterations each sample runs first, as a fraction of its timed ones (`--warm-up`; 0 by
 * default): after the full GC every sample starts with, V8 has dropped optimized code whose object
 * shapes died with the previous sample's device, so a JavaScript call path (gpunix's) re-warms
 * for the first thousand calls or so, which bare Dawn's native one does not
 * (docs/benchmarks.md, "The call path, issue 17 seventh pass"). Both sides run the same warm-up.
 */
let warmUpFraction = 0;
export function setWarmUp(fraction: number): void {
  warmUpFraction = fraction;
}
/** The untimed iterations before `timed` timed ones (see setWarmUp). */
function warmUpOf(timed: number): number {
  return Math.round(timed * warmUpFraction);
}

export interface Workload {
  name: string;
  /** What one unit is; throughput is units per second. */
  unit: 'dispatches' | 'bytes' | 'ops' | 'steps';
  describe: string;
  /** Sets up on a fresh device from `gpu`, times the work only, then destroys the device. */
  run(gpu: GPU, scale: number): Promise<Sample>;
}

/** WebGPU errors no scope caught during a workload: any one makes the benchmark fail. */
export const uncaptured: string[] = [];

/** A fresh device from `gpu` whose uncaptured errors are collected in `uncaptured`. */
export async function openDevice(gpu: GPU): Promise<GPUDevice> {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const device = await adapter.requestDevice();
  device.addEventListener('uncapturederror', (event) => {
    uncaptured.push((event as GPUUncapturedErrorEvent).error.message);
  });
  return device;
}

const TINY_KERNEL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counters: array<atomic<u32>, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32) {
  atomicAdd(&counters[i], 1u);
}`;

/**
 * TINY_KERNEL with a loop that nothing in its code bounds (a data-dependent `while`, as a kernel
 * that walks a list or iterates to convergence has): the watchdog's rewrite counts it, so a gpunix
 * process runs it checked (loop budget, device timestamps around each submit of it, time check).
 * Every invocation still adds 1 to its counter.
 */
export const LOOPED_KERNEL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counters: array<atomic<u32>, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32) {
  var n = i + 2u;
  var steps = 0u;
  while (n > 1u) {
    n = n / 2u;
    steps += 1u;
  }
  if (steps > 0u) {
    atomicAdd(&counters[i], 1u);
  }
}`;

const COUNTING_KERNEL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: atomic<u32>;
@compute @workgroup_size(1)
fn main() {
  atomicAdd(&counter, 1u);
}`;

/**
 * The call path in a loop, on `device`: `loop(count)` makes `count` x (createCommandEncoder,
 * beginComputePass, setPipeline, setBindGroup, dispatchWorkgroups(1), end, finish, queue.submit)
 * of a one-invocation kernel that adds 1 to `counter` (a STORAGE | COPY_SRC buffer of 4 bytes), so
 * a reader can check that every dispatch ran.
 */
export function countingDispatchLoop(device: GPUDevice, perSubmit = 1): { counter: GPUBuffer; loop(count: number): void } {
  const module = device.createShaderModule({ code: COUNTING_KERNEL });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: counter } }] });
  return { counter, loop: submitDispatches.bind(null, device, pipeline, bindGroup, perSubmit) };
}

// The harness's own loops keep their optimized code from one sample to the next, on both sides.
// A full collection precedes every sample (collectGarbage), and V8 then drops a closure's
// optimized code when no closure of its kind lives, and any optimized code that checks an object
// shape no live object has. Made per sample, the loops were compiled anew in every sample (the
// step workload's run: 15-29 ms of TurboFan time a sample on a helper thread, which on a 2-vCPU
// machine competes with lavapipe; docs/benchmarks.md, issue 17 fourteenth pass). So the loops are
// module functions, bound per sample, and the one object literal a sample's loop reads
// (countersKernel's) keeps its shape through KEPT_KERNEL_SHAPE, which holds nothing.

/** `count` submits of `perSubmit` one-workgroup dispatches of `pipeline` each, every submit encoded afresh. */
function submitDispatches(device: GPUDevice, pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, perSubmit: number, count: number): void {
  for (let s = 0; s < count; s++) {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let d = 0; d < perSubmit; d++) pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
  }
}

/**
 * `kernel` (TINY_KERNEL or LOOPED_KERNEL) ready to dispatch on `device`: its pipeline, the 64
 * counters it adds to, a MAP_READ buffer to read them back, and the bind group.
 */
function countersKernel(device: GPUDevice, kernel: string): { pipeline: GPUComputePipeline; counters: GPUBuffer; readback: GPUBuffer; bindGroup: GPUBindGroup } {
  const module = device.createShaderModule({ code: kernel });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const counters = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const readback = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: counters } }] });
  return { pipeline, counters, readback, bindGroup };
}
/**
 * An object of countersKernel's shape, kept (see submitDispatches above); its fields hold nothing.
 * Exported so that it lives: a module's own top-level binding that no function reads is not kept.
 */
export const KEPT_KERNEL_SHAPE: Readonly<Record<string, null>> = { pipeline: null, counters: null, readback: null, bindGroup: null };

/**
 * Many tiny compute dispatches: `submits` submits of `perSubmit` one-workgroup dispatches each
 * (every submit encodes afresh: encoder, pass, pipeline, bind group, dispatches, finish), then one
 * onSubmittedWorkDone. Checks the result, so every dispatch must really have run.
 */
export function dispatchWorkload(name: string, submits: number, perSubmit: number, describe: string, kernel = TINY_KERNEL): Workload {
  return {
    name,
    unit: 'dispatches',
    describe,
    async run(gpu, scale) {
      const device = await openDevice(gpu);
      const n = Math.max(1, Math.round(submits * scale));
      const { pipeline, counters, readback, bindGroup } = countersKernel(device, kernel);
      const submitAll = submitDispatches.bind(null, device, pipeline, bindGroup, perSubmit);
      const warm = warmUpOf(n);
      submitAll(warm);
      await device.queue.onSubmittedWorkDone();

      const start = performance.now();
      const callLoop = timeCallLoop(n, submitAll);
      await device.queue.onSubmittedWorkDone();
      const seconds = (performance.now() - start) / 1000;

      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(counters, 0, readback, 0, 256);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const seen = new Uint32Array(readback.getMappedRange())[0];
      readback.unmap();
      device.destroy();
      if (seen !== (n + warm) * perSubmit) throw new Error(`${name}: expected ${(n + warm) * perSubmit} dispatches to run, counted ${seen}`);
      return { units: n * perSubmit, seconds, callLoop };
    },
  };
}

/**
 * A program that waits for each step's result (an inference loop reading its logits): `steps` x
 * (one dispatch of `kernel`, a copy of its 256-byte result to a MAP_READ buffer, one submit,
 * mapAsync + read, unmap). Checks every step's count, so every dispatch must have run.
 */
export function stepWorkload(name: string, steps: number, describe: string, kernel = TINY_KERNEL): Workload {
  return {
    name,
    unit: 'steps',
    describe,
    async run(gpu, scale) {
      const device = await openDevice(gpu);
      const n = Math.max(1, Math.round(steps * scale));
      const { pipeline, counters, readback, bindGroup } = countersKernel(device, kernel);
      await device.queue.onSubmittedWorkDone();

      const warm = warmUpOf(n);
      let start = performance.now();
      for (let s = 1; s <= warm + n; s++) {
        if (s === warm + 1) start = performance.now();
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(1);
        pass.end();
        encoder.copyBufferToBuffer(counters, 0, readback, 0, 256);
        device.queue.submit([encoder.finish()]);
        await readback.mapAsync(GPUMapMode.READ);
        const seen = new Uint32Array(readback.getMappedRange())[0];
        readback.unmap();
        if (seen !== s) throw new Error(`${name}: step ${s} read back ${seen}`);
      }
      const seconds = (performance.now() - start) / 1000;
      device.destroy();
      return { units: n, seconds };
    },
  };
}

/**
 * Host -> device -> host traffic: each round writes a `chunk`-byte buffer with queue.writeBuffer,
 * copies it into a MAP_READ buffer (copyBufferToBuffer), maps that and reads it. Units are the
 * payload bytes that made the round trip; checks the first and last word of every round.
 */
export function bandwidthWorkload(name: string, rounds: number, chunk: number, describe: string, warmRounds = 0): Workload {
  return {
    name,
    unit: 'bytes',
    describe,
    async run(gpu, scale) {
      const device = await openDevice(gpu);
      const n = Math.max(1, Math.round(rounds * scale));
      const src = device.createBuffer({ size: chunk, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
      const readback = device.createBuffer({ size: chunk, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const data = new Uint32Array(chunk / 4);
      for (let i = 0; i < data.length; i++) data[i] = i * 2654435761;
      await device.queue.onSubmittedWorkDone();

      // Untimed rounds first, when asked: memory touched for the first time (staging, shared
      // regions, reused range buffers) costs a page fault a page, which a warm figure leaves out.
      let start = performance.now();
      for (let r = -(warmRounds + warmUpOf(n)); r < n; r++) {
        if (r === 0) start = performance.now();
        data[0] = r;
        data[data.length - 1] = ~r >>> 0;
        device.queue.writeBuffer(src, 0, data);
        const encoder = device.createCommandEncoder();
        encoder.copyBufferToBuffer(src, 0, readback, 0, chunk);
        device.queue.submit([encoder.finish()]);
        await readback.mapAsync(GPUMapMode.READ);
        const words = new Uint32Array(readback.getMappedRange());
        const first = words[0];
        const last = words[words.length - 1];
        readback.unmap();
        if (first !== r >>> 0 || last !== ~r >>> 0) throw new Error(`${name}: round ${r} read back ${first}/${last}`);
      }
      const seconds = (performance.now() - start) / 1000;
      device.destroy();
      return { units: n * chunk, seconds };
    },
  };
}

/**
 * Small-operation round trips: `ops` times pushErrorScope + await popErrorScope, the smallest
 * call a program waits on (over the wire, one request and one reply each). Each one's latency is
 * kept (latenciesMs) for its distribution.
 */
export function roundTripWorkload(name: string, ops: number, describe: string): Workload {
  return {
    name,
    unit: 'ops',
    describe,
    async run(gpu, scale) {
      const device = await openDevice(gpu);
      const n = Math.max(1, Math.round(ops * scale));
      await device.queue.onSubmittedWorkDone();
      const latenciesMs = new Array<number>(n);
      const start = performance.now();
      let before = start;
      for (let i = 0; i < n; i++) {
        device.pushErrorScope('validation');
        const error = await device.popErrorScope();
        if (error) throw new Error(`${name}: unexpected ${error.message}`);
        const after = performance.now();
        latenciesMs[i] = after - before;
        before = after;
      }
      const seconds = (performance.now() - start) / 1000;
      device.destroy();
      return { units: n, seconds, latenciesMs };
    },
  };
}

// Sized so that one sample takes roughly half a second on a 2-core lavapipe machine: long enough
// to average out scheduling noise, short enough for the defaults to finish in about two minutes.
export const OVERHEAD_WORKLOADS: Workload[] = [
  dispatchWorkload('dispatch-single', 10000, 1, '10000 submits x 1 tiny dispatch (fresh encoder + pass each), then onSubmittedWorkDone'),
  dispatchWorkload('dispatch-batched', 400, 100, '400 submits x 100 tiny dispatches in one pass, then onSubmittedWorkDone'),
  bandwidthWorkload('bandwidth-4MiB', 1000, 4 * MiB, '1000 rounds: writeBuffer 4 MiB, copyBufferToBuffer, mapAsync(READ) + read, unmap'),
];

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function formatRate(value: number, unit: Workload['unit']): string {
  if (unit === 'bytes') return `${(value / MiB).toFixed(1)} MiB/s`;
  if (unit === 'ops') return `${value.toFixed(0)} ops/s`;
  if (unit === 'steps') return `${value.toFixed(0)} steps/s`;
  return `${value.toFixed(0)} disp/s`;
}

/** One side of a comparison: a name (a key of the JSON) and how it runs one sample of a workload. */
export interface Side {
  name: string;
  run(workload: Workload): Promise<Sample>;
}

export interface Comparison {
  name: string;
  describe: string;
  unit: string;
  /** Median rate of each side, by side name. */
  rates: Record<string, number>;
  /**
   * Median main-thread CPU per iteration of the workload's call loop (µs), by side name, where the
   * workload has one and /proc told (Sample.callLoop); the call path's cost apart from the device's.
   */
  callLoopCpuUs?: Record<string, number>;
  /** Second side's median rate over the first's. */
  ratio: number;
  /**
   * The per-rep ratios (each rep's two samples ran back to back): min, median, max, and a
   * distribution-free 95 % confidence interval of their median (null below 6 reps): a target
   * inside the interval is neither shown nor refuted by the run.
   */
  pairedRatios: { min: number; median: number; max: number; medianCi95: [number, number] | null };
  samples: Record<string, number[]>;
}

/**
 * A distribution-free confidence interval of the median of `values` (order statistics: the
 * median lies below the k-th smallest value with a binomial(n, 1/2) probability), covering at
 * least `confidence`; null when there are too few values for one (fewer than 6 at 95 %).
 */
export function medianInterval(values: number[], confidence = 0.95): [number, number] | null {
  const n = values.length;
  const sorted = [...values].sort((a, b) => a - b);
  // P(Binomial(n, 1/2) <= j), accumulated: the largest k with P(B <= k - 1) <= (1 - confidence) / 2.
  let below = 0;
  let term = 0.5 ** n;
  let k = 0;
  for (let j = 0; j < n; j++) {
    below += term;
    if (below > (1 - confidence) / 2) break;
    k = j + 1;
    term = (term * (n - j)) / (j + 1);
  }
  if (k === 0) return null;
  return [sorted[k - 1], sorted[n - k]];
}

/**
 * Each workload's last sample, kept: a sample's object is a literal the workload's run makes as it
 * returns, and were none alive at the collection before the next sample, V8 would drop its shape
 * and with it the run's optimized code (see submitDispatches).
 */
const lastSampleOf = new Map<string, Sample>();

/**
 * Runs each workload on both sides: one warm-up each, then `reps` interleaved repetitions whose
 * order flips every rep, so drift (thermal, caches, GC) hits both alike. Progress on stderr.
 */
export async function compareSides(workloads: Workload[], [first, second]: [Side, Side], reps: number): Promise<Comparison[]> {
  const results: Comparison[] = [];
  for (const w of workloads) {
    process.stderr.write(`${w.name}: warm-up`);
    await first.run(w);
    await second.run(w);
    const samples: Record<string, number[]> = { [first.name]: [], [second.name]: [] };
    const loopCpuUs: Record<string, number[]> = { [first.name]: [], [second.name]: [] };
    for (let rep = 0; rep < reps; rep++) {
      for (const side of rep % 2 === 0 ? [first, second] : [second, first]) {
        const s = await side.run(w);
        lastSampleOf.set(w.name, s);
        samples[side.name].push(s.units / s.seconds);
        if (s.callLoop) loopCpuUs[side.name].push((s.callLoop.cpuSeconds * 1e6) / s.callLoop.iterations);
      }
      process.stderr.write('.');
    }
    process.stderr.write('\n');
    const rates = { [first.name]: median(samples[first.name]), [second.name]: median(samples[second.name]) };
    // Each rep's two samples ran back to back: their ratios show how much the headline moves.
    const paired = samples[second.name].map((v, i) => v / samples[first.name][i]);
    results.push({
      name: w.name,
      describe: w.describe,
      unit: `${w.unit}/s`,
      rates,
      ratio: rates[second.name] / rates[first.name],
      pairedRatios: { min: Math.min(...paired), median: median(paired), max: Math.max(...paired), medianCi95: medianInterval(paired) },
      ...(loopCpuUs[first.name].length === reps && loopCpuUs[second.name].length === reps
        ? { callLoopCpuUs: { [first.name]: median(loopCpuUs[first.name]), [second.name]: median(loopCpuUs[second.name]) } }
        : {}),
      samples,
    });
  }
  return results;
}

/**
 * Prints the comparison table on stderr, under a one-line heading; a column of the call loops'
 * main-thread CPU per iteration (first / second side) when some workload measured it.
 */
export function printComparison(heading: string, results: Comparison[], workloads: Workload[], [first, second]: [string, string]): void {
  const withCpu = results.some((r) => r.callLoopCpuUs);
  const cpuCell = (r: Comparison): string[] =>
    !withCpu ? [] : [r.callLoopCpuUs ? `${r.callLoopCpuUs[first].toFixed(1)} / ${r.callLoopCpuUs[second].toFixed(1)}` : '-'];
  const rows = [
    [
      'workload',
      `${first} (median)`,
      `${second} (median)`,
      'ratio',
      'per-rep ratios (min/median/max)',
      'their median, 95 % CI',
      ...(withCpu ? ['call loop CPU µs/iter'] : []),
    ],
    ...results.map((r) => {
      const unit = workloads.find((w) => w.name === r.name)!.unit;
      return [
        r.name,
        formatRate(r.rates[first], unit),
        formatRate(r.rates[second], unit),
        r.ratio.toFixed(3),
        `${r.pairedRatios.min.toFixed(2)} / ${r.pairedRatios.median.toFixed(2)} / ${r.pairedRatios.max.toFixed(2)}`,
        r.pairedRatios.medianCi95 ? `${r.pairedRatios.medianCi95[0].toFixed(2)} - ${r.pairedRatios.medianCi95[1].toFixed(2)}` : '-',
        ...cpuCell(r),
      ];
    }),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  process.stderr.write(`\n${heading}\n`);
  for (const row of rows) process.stderr.write(`${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')}\n`);
}

export interface ComparisonArgs {
  reps: number;
  scale: number;
  /** The workloads --only chose (all by default). */
  workloads: Workload[];
  /** Every flag's value, the `extra` ones included. */
  flags: Record<string, string | boolean | undefined>;
}

/** A benchmark's own flags beside the common ones (node:util parseArgs options). */
export type ExtraFlags = Record<string, { type: 'string' | 'boolean'; default?: string | boolean; short?: string }>;

/**
 * The flags every two-sided benchmark takes: --reps, --scale, --only, --help. Returns null after
 * printing `usage` for --help; throws with `usage` on a bad value.
 */
export function parseComparisonArgs(usage: string, all: Workload[], defaultReps: number, extra: ExtraFlags = {}): ComparisonArgs | null {
  const { values } = parseArgs({
    options: {
      ...extra,
      reps: { type: 'string', default: String(defaultReps) },
      scale: { type: 'string', default: '1' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stderr.write(`${usage}\n`);
    return null;
  }
  const reps = Number(values.reps);
  const scale = Number(values.scale);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer\n${usage}`);
  if (!(scale > 0)) throw new Error(`--scale must be a positive number\n${usage}`);
  const only = values.only?.split(',').map((s) => s.trim());
  const workloads = only ? all.filter((w) => only.includes(w.name)) : all;
  if (only && workloads.length !== only.length) throw new Error(`unknown workload in --only ${values.only}\n${usage}`);
  return { reps, scale, workloads, flags: values as Record<string, string | boolean | undefined> };
}

/** Throws if any WebGPU error went uncaught so far: a benchmark's results are void then. */
export function failIfUncaptured(what: string): void {
  if (uncaptured.length > 0) throw new Error(`${what} raised WebGPU errors: ${uncaptured.join('; ')}`);
}

/** Something that runs a program's GPU work as one process: an embedded one or one of the daemon. */
export interface BenchProcess {
  readonly gpu: GPU;
  exit(): Promise<unknown>;
}

/**
 * A side whose every sample runs in a fresh process from `spawn` (called with a process name),
 * with a full GC first; the process exits after the sample, whatever happened.
 */
export function processSide(name: string, scale: number, spawn: (processName: string) => Promise<BenchProcess>): Side {
  let runs = 0;
  return {
    name,
    run: (w) => sampleInProcess(spawn, `bench-${w.name}-${++runs}`, w, scale),
  };
}

/** One sample of `w` in a fresh process named `processName` (full GC first); the process exits after it, whatever happened. */
export async function sampleInProcess(spawn: (processName: string) => Promise<BenchProcess>, processName: string, w: Workload, scale: number): Promise<Sample> {
  const proc = await spawn(processName);
  collectGarbage();
  try {
    const sample = await w.run(proc.gpu, scale);
    failIfUncaptured(w.name);
    return sample;
  } finally {
    await proc.exit();
  }
}
