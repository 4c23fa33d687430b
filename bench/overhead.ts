// gpunix's embedded-mode overhead against bare Dawn, on the same device, in the same run.
//
// Each workload is written once, as a function of a `GPU` (navigator.gpu). The harness runs it on
// bare Dawn and on a gpunix process alternately — one warm-up of each, then `--reps` interleaved
// repetitions whose order flips every rep — and reports the medians and ratio = gpunix / bare
// (1.0 means no overhead; the target is >= 0.95).
//
// Output: one JSON object on stdout (machine-readable; `npm run bench > result.json`), and a
// human table plus progress on stderr. See docs/benchmarks.md.
//
//   node dist/bench/overhead.js [--reps N] [--scale X] [--only name[,name]]

import { parseArgs } from 'node:util';
import { create, globals } from 'webgpu';
import { collectGarbage, machine, machineBusySeconds } from './machine.js';
import { createKernel } from '../src/index.js';

Object.assign(globalThis, globals);

const MiB = 1024 * 1024;

/** What one timed run of a workload did: `units` of work in `seconds` of wall time. */
interface Sample {
  units: number;
  seconds: number;
}

interface Workload {
  name: string;
  /** What one unit is; throughput is units per second. */
  unit: 'dispatches' | 'bytes';
  describe: string;
  /** Sets up on a fresh device from `gpu`, times the work only, then destroys the device. */
  run(gpu: GPU, scale: number): Promise<Sample>;
}

/** WebGPU errors no scope caught during a workload: any one makes the benchmark fail. */
const uncaptured: string[] = [];

async function openDevice(gpu: GPU): Promise<GPUDevice> {
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
 * Many tiny compute dispatches: `submits` submits of `perSubmit` one-workgroup dispatches each
 * (every submit encodes afresh: encoder, pass, pipeline, bind group, dispatches, finish), then one
 * onSubmittedWorkDone. Checks the result, so every dispatch must really have run.
 */
function dispatchWorkload(name: string, submits: number, perSubmit: number, describe: string): Workload {
  return {
    name,
    unit: 'dispatches',
    describe,
    async run(gpu, scale) {
      const device = await openDevice(gpu);
      const n = Math.max(1, Math.round(submits * scale));
      const module = device.createShaderModule({ code: TINY_KERNEL });
      const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
      const counters = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      const readback = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const bindGroup = device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: counters } }],
      });
      await device.queue.onSubmittedWorkDone();

      const start = performance.now();
      for (let s = 0; s < n; s++) {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bindGroup);
        for (let d = 0; d < perSubmit; d++) pass.dispatchWorkgroups(1);
        pass.end();
        device.queue.submit([encoder.finish()]);
      }
      await device.queue.onSubmittedWorkDone();
      const seconds = (performance.now() - start) / 1000;

      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(counters, 0, readback, 0, 256);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const seen = new Uint32Array(readback.getMappedRange())[0];
      readback.unmap();
      device.destroy();
      if (seen !== n * perSubmit) throw new Error(`${name}: expected ${n * perSubmit} dispatches to run, counted ${seen}`);
      return { units: n * perSubmit, seconds };
    },
  };
}

/**
 * Host -> device -> host traffic: each round writes a `chunk`-byte buffer with queue.writeBuffer,
 * copies it into a MAP_READ buffer (copyBufferToBuffer), maps that and reads it. Units are the
 * payload bytes that made the round trip; checks the first and last word of every round.
 */
function bandwidthWorkload(name: string, rounds: number, chunk: number, describe: string): Workload {
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

      const start = performance.now();
      for (let r = 0; r < n; r++) {
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
        if (first !== r || last !== ~r >>> 0) throw new Error(`${name}: round ${r} read back ${first}/${last}`);
      }
      const seconds = (performance.now() - start) / 1000;
      device.destroy();
      return { units: n * chunk, seconds };
    },
  };
}

// Sized so that one sample takes roughly half a second on a 2-core lavapipe machine: long enough
// to average out scheduling noise, short enough for the defaults to finish in about two minutes.
const WORKLOADS: Workload[] = [
  dispatchWorkload('dispatch-single', 10000, 1, '10000 submits x 1 tiny dispatch (fresh encoder + pass each), then onSubmittedWorkDone'),
  dispatchWorkload('dispatch-batched', 400, 100, '400 submits x 100 tiny dispatches in one pass, then onSubmittedWorkDone'),
  bandwidthWorkload('bandwidth-4MiB', 1000, 4 * MiB, '1000 rounds: writeBuffer 4 MiB, copyBufferToBuffer, mapAsync(READ) + read, unmap'),
];

// ---- harness ------------------------------------------------------------------------------------

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}




function formatRate(value: number, unit: Workload['unit']): string {
  if (unit === 'bytes') return `${(value / MiB).toFixed(1)} MiB/s`;
  return `${value.toFixed(0)} disp/s`;
}

const usage = `usage: node dist/bench/overhead.js [--reps N] [--scale X] [--only name[,name]]
  --reps N     timed repetitions per side, interleaved (default 11; one warm-up each comes first)
  --scale X    multiplies every workload's iteration count (default 1)
  --only LIST  comma-separated workload names (${WORKLOADS.map((w) => w.name).join(', ')})
JSON goes to stdout, the table and progress to stderr.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '11' },
      scale: { type: 'string', default: '1' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stderr.write(`${usage}\n`);
    return;
  }
  const reps = Number(values.reps);
  const scale = Number(values.scale);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer\n${usage}`);
  if (!(scale > 0)) throw new Error(`--scale must be a positive number\n${usage}`);
  const only = values.only?.split(',').map((s) => s.trim());
  const workloads = only ? WORKLOADS.filter((w) => only.includes(w.name)) : WORKLOADS;
  if (only && workloads.length !== only.length) throw new Error(`unknown workload in --only ${values.only}\n${usage}`);

  const bare = create([]);
  const bareAdapter = await bare.requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const kernel = await createKernel();
  const runs = { bare: 0, gpunix: 0 };

  const checked = (w: Workload, sample: Sample): Sample => {
    if (uncaptured.length > 0) throw new Error(`${w.name} raised WebGPU errors: ${uncaptured.join('; ')}`);
    return sample;
  };
  const onBare = async (w: Workload): Promise<Sample> => {
    collectGarbage();
    return checked(w, await w.run(bare, scale));
  };
  const onGpunix = async (w: Workload): Promise<Sample> => {
    const proc = await kernel.spawn({ name: `bench-${w.name}-${++runs.gpunix}` });
    collectGarbage();
    try {
      return checked(w, await w.run(proc.gpu, scale));
    } finally {
      await proc.exit();
    }
  };

  // Other programs on the machine make both sides noisy: measure how much CPU they took meanwhile.
  const busyBefore = machineBusySeconds();
  const ownBefore = process.cpuUsage();
  const wallBefore = performance.now();
  const results = [];
  try {
    for (const w of workloads) {
      process.stderr.write(`${w.name}: warm-up`);
      await onBare(w);
      await onGpunix(w);
      const samples = { bare: [] as number[], gpunix: [] as number[] };
      for (let rep = 0; rep < reps; rep++) {
        // Alternate which side goes first, so drift (thermal, caches, GC) hits both alike.
        const order = rep % 2 === 0 ? (['bare', 'gpunix'] as const) : (['gpunix', 'bare'] as const);
        for (const side of order) {
          const s = await (side === 'bare' ? onBare(w) : onGpunix(w));
          samples[side].push(s.units / s.seconds);
        }
        process.stderr.write('.');
      }
      process.stderr.write('\n');
      const bareRate = median(samples.bare);
      const gpunixRate = median(samples.gpunix);
      // Each rep's two samples ran back to back: their ratios show how much the headline moves.
      const paired = samples.gpunix.map((g, i) => g / samples.bare[i]);
      results.push({
        name: w.name,
        describe: w.describe,
        unit: `${w.unit}/s`,
        bare: bareRate,
        gpunix: gpunixRate,
        ratio: gpunixRate / bareRate,
        pairedRatios: { min: Math.min(...paired), median: median(paired), max: Math.max(...paired) },
        samples,
      });
    }
  } finally {
    await kernel.shutdown();
  }

  const busyAfter = machineBusySeconds();
  const own = process.cpuUsage(ownBefore);
  const wallSeconds = (performance.now() - wallBefore) / 1000;
  const otherCpuSeconds =
    busyBefore === null || busyAfter === null ? null : Math.max(0, busyAfter - busyBefore - (own.user + own.system) / 1e6);
  const info = bareAdapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const report = {
    benchmark: 'gpunix-overhead',
    ...machine(bareAdapter),
    reps,
    scale,
    target: 0.95,
    /** CPU time other programs used during the run (null where unknown): above a few seconds, rerun. */
    contention: { wallSeconds, otherCpuSeconds },
    workloads: results,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const unitOf = (name: string): Workload['unit'] => WORKLOADS.find((w) => w.name === name)!.unit;
  const rows = [
    ['workload', 'bare (median)', 'gpunix (median)', 'ratio', 'per-rep ratios (min/median/max)'],
    ...results.map((r) => [
      r.name,
      formatRate(r.bare, unitOf(r.name)),
      formatRate(r.gpunix, unitOf(r.name)),
      r.ratio.toFixed(3),
      `${r.pairedRatios.min.toFixed(2)} / ${r.pairedRatios.median.toFixed(2)} / ${r.pairedRatios.max.toFixed(2)}`,
    ]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  process.stderr.write(`\n${info.description || info.device} (${info.vendor}), node ${process.version}, ${reps} reps, scale ${scale}\n`);
  for (const row of rows) process.stderr.write(`${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')}\n`);
  if (otherCpuSeconds !== null) {
    const share = otherCpuSeconds / wallSeconds;
    process.stderr.write(`other programs used ${otherCpuSeconds.toFixed(1)} CPU s during the ${wallSeconds.toFixed(0)} s run${share > 0.05 ? ' — the figures are noisy; rerun on a quiet machine' : ''}\n`);
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`\nbench: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    process.exit(1);
  },
);
