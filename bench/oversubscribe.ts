// Oversubscription: how fast gpunix swaps buffers between device and host memory, against the
// physical limit for swapping on this device, and what a budget at half the working set costs a
// multi-process workload. One run measures, interleaved over `--reps` repetitions:
//
//   raw        bare Dawn copy bandwidth between device and host memory for buffers of the size the
//              workload uses, in each direction, by each way WebGPU offers (the physical limit)
//   idle-swap  kernel.swapOut + kernel.resume of one process holding `--copy-rounds` such buffers,
//              on an otherwise idle kernel: the swap path alone
//   bare       the workload on bare Dawn (one device per program): the baseline
//   full       the workload on a gpunix kernel whose budget holds everything (4 GiB)
//   half       the same workload on a gpunix kernel whose budget is half its working set
//
// The workload: `--procs` programs, each iterating a compute kernel over its own `--buffers`
// buffers of `--size` MiB for `--steps` steps, idle on the CPU for `--gap` ms between steps (the
// kernel may evict an idle program's buffers then). Every run reads every word of every buffer back
// and checks it against the expected value; every raw copy and every idle-swap buffer is checked
// byte for byte. A mismatch or an uncaptured WebGPU error fails the benchmark.
//
//   swap_bandwidth_ratio = (bytesOut / raw_d2h + bytesIn / raw_h2d) / ((nsOut + nsIn) / 1e9)
//
// per `half` run, from the deltas of kernel.stats().swap over the run; raw_d2h and raw_h2d are the
// fastest raw way in each direction (median over the reps). That is: the time the best raw copies
// on an idle device would take to move the same bytes in the same directions, over the time the
// kernel spent moving them (see SwapCounters in src/kernel/residency.ts for what that time
// includes). 1.0 means swapping moves bytes as fast as the device can copy them. The headline is
// the median over the `half` runs; idle_swap_bandwidth_ratio is the same for the idle-swap
// samples; throughput_ratio = median(half) / median(full) in process-steps/s.
//
// Output: one JSON object on stdout, a table and progress on stderr. See docs/benchmarks.md.
//
//   node dist/bench/oversubscribe.js [--reps N] [--procs N] [--buffers N] [--size MIB] [--steps N]
//        [--gap MS] [--copy-rounds N] [--copy-dst on|off]

import { parseArgs } from 'node:util';
import { create, globals } from 'webgpu';
import { collectGarbage, contentionLine, cpuModel, machine, measureContention, runBenchmark } from './machine.js';
import { createKernel, Kernel } from '../src/index.js';
import { failIfUncaptured, openDevice } from './workloads.js';

Object.assign(globalThis, globals);

const MiB = 1024 * 1024;
const TARGET = 0.8;

const usage = `usage: node dist/bench/oversubscribe.js [options]
  --reps N         interleaved repetitions of every measurement (default 7)
  --procs N        programs in the workload (default 4)
  --buffers N      buffers per program (default 2)
  --size MIB       size of each buffer in MiB (default 4)
  --steps N        compute steps per program (default 8)
  --gap MS         each program's idle time on the CPU between steps (default 20)
  --copy-rounds N  buffers per raw-copy and idle-swap sample (default 16)
  --copy-dst on|off  whether the workload's buffers have COPY_DST (default on: STORAGE|COPY_SRC|
                   COPY_DST; off: STORAGE|COPY_SRC, which the kernel restores by mapping at creation)
JSON goes to stdout, the table and progress to stderr.`;

// ---- the workload -------------------------------------------------------------------------------

const STEP_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> step: u32;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&data)) { data[g.x] = data[g.x] * 3u + step + g.x; }
}`;

interface WorkloadConfig {
  procs: number;
  buffers: number;
  bytes: number;
  steps: number;
  gapMs: number;
  /** The data buffers' usage. */
  usage: number;
}

/** Bytes of buffers the workload holds while it runs: every data buffer and every step uniform. */
function workingSet(c: WorkloadConfig): number {
  return c.procs * (c.buffers * c.bytes + 4);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Word `i` of buffer `seed`'s initial contents. */
const initial = (seed: number, i: number): number => (seed * 0x9e3779b1 + i) >>> 0;

/**
 * One program: sets up its buffers (untimed), waits until every program is set up, runs its
 * steps, then, once every program has finished its steps (untimed), reads every word back and
 * compares it with the expected value. Resolves with the time its last step completed and the
 * number of wrong words.
 */
async function program(
  gpu: GPU,
  id: number,
  c: WorkloadConfig,
  barrier: { ready: () => void; start: Promise<void>; finished: () => void; verify: Promise<void> },
): Promise<{ endMs: number; wrong: number }> {
  const device = await openDevice(gpu);
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: STEP_WGSL }), entryPoint: 'main' } });
  const words = c.bytes / 4;
  const seeds = [...Array(c.buffers)].map((_, b) => id * c.buffers + b);
  const data = seeds.map((seed) => {
    const buffer = device.createBuffer({ size: c.bytes, usage: c.usage, mappedAtCreation: true });
    const view = new Uint32Array(buffer.getMappedRange());
    for (let i = 0; i < words; i++) view[i] = initial(seed, i);
    buffer.unmap();
    return buffer;
  });
  const stepBuffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const groups = data.map((buffer) =>
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer } },
        { binding: 1, resource: { buffer: stepBuffer } },
      ],
    }),
  );
  await device.queue.onSubmittedWorkDone();
  barrier.ready();
  await barrier.start;

  for (let s = 0; s < c.steps; s++) {
    device.queue.writeBuffer(stepBuffer, 0, new Uint32Array([s]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    for (const group of groups) {
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(Math.ceil(words / 64));
    }
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    if (s < c.steps - 1) await sleep(c.gapMs); // idle on the CPU: the kernel may evict this program's buffers
  }
  const endMs = performance.now();
  barrier.finished();
  await barrier.verify; // no program's check competes with another's steps

  let wrong = 0;
  for (const [b, buffer] of data.entries()) {
    const staging = device.createBuffer({ size: c.bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, c.bytes);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Uint32Array(staging.getMappedRange());
    for (let i = 0; i < words; i++) {
      let v = initial(seeds[b], i);
      for (let s = 0; s < c.steps; s++) v = (Math.imul(v, 3) + s + i) >>> 0;
      if (out[i] !== v) wrong++;
    }
    staging.unmap();
    staging.destroy();
  }
  device.destroy();
  return { endMs, wrong };
}

interface WorkloadSample {
  seconds: number;
  /** Process-steps completed per second of wall time, from the common start to the last step. */
  stepsPerSecond: number;
  wrong: number;
}

/** Runs the workload with one `GPU` per program; times from the moment every program is set up. */
async function runWorkload(gpus: GPU[], c: WorkloadConfig): Promise<WorkloadSample> {
  /** Resolves once `n` calls of the returned signal have been made. */
  const countdown = (n: number): { signal: () => void; all: Promise<void> } => {
    let left = n;
    let resolve!: () => void;
    const all = new Promise<void>((r) => (resolve = r));
    return { signal: () => void (--left === 0 && resolve()), all };
  };
  const ready = countdown(gpus.length);
  const finished = countdown(gpus.length);
  let go!: () => void;
  const start = new Promise<void>((resolve) => (go = resolve));
  let check!: () => void;
  const verify = new Promise<void>((resolve) => (check = resolve));
  const runs = gpus.map((gpu, id) => program(gpu, id, c, { ready: ready.signal, start, finished: finished.signal, verify }));
  const failed = Promise.all(runs).then(() => {
    throw new Error('a program ended before the barrier');
  });
  await Promise.race([ready.all, failed]);
  const startMs = performance.now();
  go();
  await Promise.race([finished.all, failed]);
  check();
  const results = await Promise.all(runs);
  const seconds = (Math.max(...results.map((r) => r.endMs)) - startMs) / 1000;
  return { seconds, stepsPerSecond: (c.procs * c.steps) / seconds, wrong: results.reduce((sum, r) => sum + r.wrong, 0) };
}

// ---- raw copy bandwidth (bare Dawn) -------------------------------------------------------------

/**
 * Timed passes per raw sample: each moves every buffer once. One untimed pass comes first, so that
 * staging buffers, destination buffers and host memory are in place (their pages faulted in):
 * the limit measured is the copy's, not allocation's. Before each pass the contents change
 * (untimed), so a stale copy cannot pass the check.
 */
const RAW_PASSES = 4;

/** A recognisable pattern per round, so that a stale or partial copy cannot pass the check. */
function pattern(bytes: number, round: number): Uint8Array<ArrayBuffer> {
  const words = new Uint32Array(bytes / 4);
  for (let i = 0; i < words.length; i++) words[i] = (round * 0x85ebca6b + i * 0x9e3779b1) >>> 0;
  return new Uint8Array(words.buffer);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

function checkAll(name: string, got: Uint8Array[], expected: Uint8Array[]): void {
  for (let r = 0; r < expected.length; r++) if (!sameBytes(got[r], expected[r])) throw new Error(`raw ${name}: buffer ${r} copied wrong bytes`);
}

/** Reads `buffers` back (untimed) and compares them with `expected`. */
async function checkOnDevice(device: GPUDevice, name: string, buffers: GPUBuffer[], expected: Uint8Array[]): Promise<void> {
  const got: Uint8Array[] = [];
  for (const buffer of buffers) {
    const staging = device.createBuffer({ size: buffer.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, buffer.size);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    got.push(new Uint8Array(staging.getMappedRange().slice(0)));
    staging.destroy();
  }
  checkAll(name, got, expected);
}

interface CopyWay {
  name: string;
  direction: 'd2h' | 'h2d';
  describe: string;
  /** Shown for reference, not a limit for swapping (it writes into device memory a restore cannot have). */
  reference?: boolean;
  /** Moves `rounds` buffers of `bytes`, RAW_PASSES times (timed) after one untimed pass, checking every byte; resolves with bytes/s. */
  run(device: GPUDevice, bytes: number, rounds: number): Promise<number>;
}

/** A device-to-host way: `copy` moves every `sources[r]` into `got[r]` (host memory); only `copy` is timed. */
function d2hWay(
  name: string,
  describe: string,
  stagings: number,
  copy: (device: GPUDevice, sources: GPUBuffer[], got: Uint8Array[], stagings: GPUBuffer[]) => Promise<Uint8Array[] | void>,
): CopyWay {
  return {
    name,
    direction: 'd2h',
    describe,
    async run(device, bytes, rounds) {
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const sources = [...Array(rounds)].map(() => device.createBuffer({ size: bytes, usage }));
      const reused = [...Array(stagings)].map(() => device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
      const got = [...Array(rounds)].map(() => new Uint8Array(bytes));
      let seconds = 0;
      for (let pass = 0; pass <= RAW_PASSES; pass++) {
        const expected = sources.map((_, r) => pattern(bytes, pass * rounds + r));
        sources.forEach((buffer, r) => device.queue.writeBuffer(buffer, 0, expected[r]));
        await device.queue.onSubmittedWorkDone();
        const t0 = performance.now();
        const fresh = await copy(device, sources, got, reused);
        if (pass > 0) seconds += (performance.now() - t0) / 1000;
        checkAll(name, fresh ?? got, expected);
      }
      for (const buffer of [...sources, ...reused]) buffer.destroy();
      return (bytes * rounds * RAW_PASSES) / seconds;
    },
  };
}

/**
 * Host-to-device the way a restore must: into new device buffers (the eviction gave the old
 * ones' memory back), each made by `upload` from host memory; timed until the device has them.
 */
async function h2dIntoNewBuffers(device: GPUDevice, bytes: number, rounds: number, name: string, upload: (host: Uint8Array<ArrayBuffer>) => GPUBuffer): Promise<number> {
  let seconds = 0;
  for (let pass = 0; pass <= RAW_PASSES; pass++) {
    const expected = [...Array(rounds)].map((_, r) => pattern(bytes, pass * rounds + r));
    const t0 = performance.now();
    const buffers = expected.map(upload);
    await device.queue.onSubmittedWorkDone();
    if (pass > 0) seconds += (performance.now() - t0) / 1000;
    await checkOnDevice(device, name, buffers, expected);
    for (const buffer of buffers) buffer.destroy();
  }
  return (bytes * rounds * RAW_PASSES) / seconds;
}

/** Copies `source` into `staging` and maps it; resolves once mapped. */
function copyAndMap(device: GPUDevice, source: GPUBuffer, staging: GPUBuffer): Promise<undefined> {
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(source, 0, staging, 0, source.size);
  device.queue.submit([encoder.finish()]);
  return staging.mapAsync(GPUMapMode.READ);
}

const COPY_WAYS: CopyWay[] = [
  d2hWay(
    'd2h-fresh-staging',
    'per buffer: a new MAP_READ staging buffer, copyBufferToBuffer, submit, mapAsync, getMappedRange().slice(0), destroy (gpunix before this work)',
    0,
    async (device, sources) => {
      const fresh: Uint8Array[] = [];
      for (const source of sources) {
        const staging = device.createBuffer({ size: source.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        await copyAndMap(device, source, staging);
        fresh.push(new Uint8Array(staging.getMappedRange().slice(0)));
        staging.destroy();
      }
      return fresh;
    },
  ),
  d2hWay('d2h-one-staging', 'per buffer: copyBufferToBuffer into one reused MAP_READ staging buffer, submit, mapAsync, copy into host memory, unmap', 1, async (device, sources, got, [staging]) => {
    for (const [r, source] of sources.entries()) {
      await copyAndMap(device, source, staging);
      got[r].set(new Uint8Array(staging.getMappedRange()));
      staging.unmap();
    }
  }),
  d2hWay(
    'd2h-two-stagings',
    'two reused MAP_READ staging buffers in turn: the device copies the next buffer into one while the other is mapped and copied into host memory',
    2,
    async (device, sources, got, stagings) => {
      const mapped = sources.slice(0, 2).map((source, r) => copyAndMap(device, source, stagings[r]));
      for (let r = 0; r < sources.length; r++) {
        await mapped[r % 2];
        const staging = stagings[r % 2];
        got[r].set(new Uint8Array(staging.getMappedRange()));
        staging.unmap();
        if (r + 2 < sources.length) mapped[r % 2] = copyAndMap(device, sources[r + 2], staging);
      }
    },
  ),
  {
    name: 'h2d-mapped-at-creation',
    direction: 'h2d',
    describe: 'per buffer: createBuffer mappedAtCreation (STORAGE|COPY_SRC), set from host memory, unmap; then onSubmittedWorkDone',
    async run(device, bytes, rounds) {
      return h2dIntoNewBuffers(device, bytes, rounds, this.name, (host) => {
        const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
        new Uint8Array(buffer.getMappedRange()).set(host);
        buffer.unmap();
        return buffer;
      });
    },
  },
  {
    name: 'h2d-write-buffer',
    direction: 'h2d',
    describe: 'per buffer: createBuffer (STORAGE|COPY_SRC|COPY_DST), queue.writeBuffer from host memory; then onSubmittedWorkDone',
    async run(device, bytes, rounds) {
      return h2dIntoNewBuffers(device, bytes, rounds, this.name, (host) => {
        const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(buffer, 0, host);
        return buffer;
      });
    },
  },
  {
    name: 'h2d-write-existing',
    direction: 'h2d',
    describe: 'reference, not a limit: queue.writeBuffer into existing, already written buffers (a restore always writes a new buffer); then onSubmittedWorkDone',
    reference: true,
    async run(device, bytes, rounds) {
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const buffers = [...Array(rounds)].map(() => device.createBuffer({ size: bytes, usage }));
      let seconds = 0;
      for (let pass = 0; pass <= RAW_PASSES; pass++) {
        const expected = buffers.map((_, r) => pattern(bytes, pass * rounds + r));
        const t0 = performance.now();
        for (const [r, buffer] of buffers.entries()) device.queue.writeBuffer(buffer, 0, expected[r]);
        await device.queue.onSubmittedWorkDone();
        if (pass > 0) seconds += (performance.now() - t0) / 1000;
        await checkOnDevice(device, this.name, buffers, expected);
      }
      for (const buffer of buffers) buffer.destroy();
      return (bytes * rounds * RAW_PASSES) / seconds;
    },
  },
];

// ---- harness ------------------------------------------------------------------------------------

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function spread(values: number[]): { min: number; median: number; max: number } {
  return { min: Math.min(...values), median: median(values), max: Math.max(...values) };
}




function usageName(usage: number): string {
  const names = Object.entries(GPUBufferUsage as unknown as Record<string, number>).filter(([, bit]) => usage & bit);
  return names.map(([name]) => name).join('|');
}

const mibps = (bytesPerSecond: number): string => `${(bytesPerSecond / MiB).toFixed(0)} MiB/s`;

function positive(name: string, raw: string, integer: boolean): number {
  const value = Number(raw);
  if (!(value > 0) || (integer && !Number.isInteger(value))) throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}\n${usage}`);
  return value;
}

interface SwapDelta {
  bytesOut: number;
  nsOut: number;
  bytesIn: number;
  nsIn: number;
  /** Time transfers waited in the queue behind work already there (not in nsOut/nsIn). */
  nsWait: number;
}

interface GpunixSample extends WorkloadSample {
  swap: SwapDelta;
  evictions: number;
  restores: number;
}

/** The workload on `kernel`, one process per program; the swap counters' deltas over the run. */
async function onKernel(kernel: Kernel, c: WorkloadConfig, tag: string): Promise<GpunixSample> {
  const procs = await Promise.all([...Array(c.procs)].map((_, i) => kernel.spawn({ name: `${tag}-p${i}` })));
  const before = kernel.stats().swap;
  collectGarbage();
  let sample: WorkloadSample;
  let after: ReturnType<Kernel['stats']>['swap'];
  let records;
  try {
    sample = await runWorkload(
      procs.map((p) => p.gpu),
      c,
    );
    records = procs.map((p) => p.record());
  } finally {
    for (const p of procs) await p.exit();
  }
  // Swap time is added when a burst of transfers ends: let the last ones finish first.
  await sleep(SETTLE_MS);
  after = kernel.stats().swap;
  const leftover = kernel.stats();
  if (leftover.bytesAllocated !== 0) throw new Error(`${tag}: ${leftover.bytesAllocated} bytes still counted after every process exited`);
  return {
    ...sample,
    swap: {
      bytesOut: after.bytesOut - before.bytesOut,
      nsOut: after.nsOut - before.nsOut,
      bytesIn: after.bytesIn - before.bytesIn,
      nsIn: after.nsIn - before.nsIn,
      nsWait: after.nsWaitOut - before.nsWaitOut + after.nsWaitIn - before.nsWaitIn,
    },
    evictions: records.reduce((sum, r) => sum + r.accounting.evictions, 0),
    restores: records.reduce((sum, r) => sum + r.accounting.restores, 0),
  };
}

/** How long to wait after a run for the kernel's last swap transfers to finish and be counted. */
const SETTLE_MS = 50;

interface IdleSwapSample {
  swap: SwapDelta;
  outBytesPerSecond: number;
  inBytesPerSecond: number;
}

/** swapOut + resume cycles per idle-swap sample: one untimed (it warms the kernel's staging and host memory), then these. */
const IDLE_SWAP_CYCLES = 3;

/**
 * The swap path alone, on an otherwise idle kernel: one process holds `rounds` buffers of `bytes`
 * (the workload's usage); `kernel.swapOut` moves them all to host memory and `kernel.resume`
 * brings them all back, once untimed and then IDLE_SWAP_CYCLES times; then every byte is read back
 * and checked. Rates from kernel.stats().swap over the timed cycles.
 */
async function idleSwap(kernel: Kernel, c: WorkloadConfig, rounds: number, tag: string): Promise<IdleSwapSample> {
  const proc = await kernel.spawn({ name: tag });
  try {
    const device = await openDevice(proc.gpu);
    const expected = [...Array(rounds)].map((_, r) => pattern(c.bytes, r + 1000));
    const buffers = expected.map((bytes) => {
      const buffer = device.createBuffer({ size: c.bytes, usage: c.usage, mappedAtCreation: true });
      new Uint8Array(buffer.getMappedRange()).set(bytes);
      buffer.unmap();
      return buffer;
    });
    await device.queue.onSubmittedWorkDone();
    const cycle = async (): Promise<void> => {
      const record = await kernel.swapOut(proc.pid);
      if (record.accounting.residentBytes > 0) throw new Error(`${tag}: swapOut left ${record.accounting.residentBytes} bytes on the device`);
      kernel.resume(proc.pid);
      await device.queue.onSubmittedWorkDone();
      await sleep(SETTLE_MS);
    };
    await cycle();
    collectGarbage();
    const before = kernel.stats().swap;
    for (let i = 0; i < IDLE_SWAP_CYCLES; i++) await cycle();
    const after = kernel.stats().swap;
    await checkOnDevice(device, tag, buffers, expected);
    failIfUncaptured(tag);
    const swap = {
      bytesOut: after.bytesOut - before.bytesOut,
      nsOut: after.nsOut - before.nsOut,
      bytesIn: after.bytesIn - before.bytesIn,
      nsIn: after.nsIn - before.nsIn,
      nsWait: after.nsWaitOut - before.nsWaitOut + after.nsWaitIn - before.nsWaitIn,
    };
    const moved = IDLE_SWAP_CYCLES * rounds * c.bytes;
    if (swap.bytesOut !== moved || swap.bytesIn !== moved) {
      throw new Error(`${tag}: expected ${moved} bytes out and in, the kernel counted ${swap.bytesOut} out, ${swap.bytesIn} in`);
    }
    return { swap, outBytesPerSecond: swap.bytesOut / (swap.nsOut / 1e9), inBytesPerSecond: swap.bytesIn / (swap.nsIn / 1e9) };
  } finally {
    await proc.exit();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '7' },
      procs: { type: 'string', default: '4' },
      buffers: { type: 'string', default: '2' },
      size: { type: 'string', default: '4' },
      steps: { type: 'string', default: '8' },
      gap: { type: 'string', default: '20' },
      'copy-rounds': { type: 'string', default: '16' },
      'copy-dst': { type: 'string', default: 'on' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stderr.write(`${usage}\n`);
    return;
  }
  const reps = positive('reps', values.reps, true);
  const config: WorkloadConfig = {
    procs: positive('procs', values.procs, true),
    buffers: positive('buffers', values.buffers, true),
    bytes: Math.round(positive('size', values.size, false) * MiB),
    steps: positive('steps', values.steps, true),
    gapMs: Number(values.gap),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | (values['copy-dst'] === 'on' ? GPUBufferUsage.COPY_DST : 0),
  };
  if (values['copy-dst'] !== 'on' && values['copy-dst'] !== 'off') throw new Error(`--copy-dst must be on or off\n${usage}`);
  if (!(config.gapMs >= 0)) throw new Error(`--gap must be a number of ms, 0 or more\n${usage}`);
  if (config.bytes % 256 !== 0) throw new Error(`--size must be a whole number of 256-byte blocks\n${usage}`);
  const copyRounds = positive('copy-rounds', values['copy-rounds'], true);
  const budget = Math.floor(workingSet(config) / 2);

  const bare = create([]);
  const bareAdapter = await bare.requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const full = await createKernel({ memoryBudget: '4G' });
  const half = await createKernel({ memoryBudget: budget });

  const failIfErrors = failIfUncaptured;
  const checkExact = (what: string, s: WorkloadSample): void => {
    if (s.wrong !== 0) throw new Error(`${what}: ${s.wrong} words differ from the expected results`);
  };

  const raw: Record<string, number[]> = Object.fromEntries(COPY_WAYS.map((w) => [w.name, []]));
  const samples = { bare: [] as WorkloadSample[], full: [] as GpunixSample[], half: [] as GpunixSample[] };
  const idle: IdleSwapSample[] = [];
  const sides = ['bare', 'full', 'half'] as const;
  const runSide = async (side: (typeof sides)[number], rep: number): Promise<void> => {
    if (side === 'bare') {
      collectGarbage();
      const s = await runWorkload(
        [...Array(config.procs)].map(() => bare),
        config,
      );
      failIfErrors('bare workload');
      checkExact('bare workload', s);
      samples.bare.push(s);
    } else {
      const s = await onKernel(side === 'full' ? full : half, config, `${side}${rep}`);
      failIfErrors(`gpunix ${side} workload`);
      checkExact(`gpunix ${side} workload`, s);
      samples[side].push(s);
    }
  };

  const stopContention = measureContention();
  try {
    process.stderr.write('warm-up');
    const copyDevice = await openDevice(bare);
    for (const way of COPY_WAYS) await way.run(copyDevice, config.bytes, 2);
    await idleSwap(full, config, 2, 'idle-swap-warm-up');
    for (const side of sides) {
      const keep = samples[side].length;
      await runSide(side, 0);
      samples[side].length = keep; // warm-up samples are not reported
    }
    process.stderr.write('\n');
    for (let rep = 0; rep < reps; rep++) {
      process.stderr.write(`rep ${rep + 1}/${reps}: raw`);
      for (const way of COPY_WAYS) {
        collectGarbage();
        raw[way.name].push(await way.run(copyDevice, config.bytes, copyRounds));
        failIfErrors(`raw ${way.name}`);
      }
      process.stderr.write(' idle-swap');
      idle.push(await idleSwap(full, config, copyRounds, `idle-swap${rep + 1}`));
      // Rotate the order every rep, so drift (thermal, caches, GC) hits every side alike.
      for (let k = 0; k < sides.length; k++) {
        const side = sides[(k + rep) % sides.length];
        process.stderr.write(` ${side}`);
        await runSide(side, rep + 1);
      }
      process.stderr.write('\n');
    }
    copyDevice.destroy();
  } finally {
    await full.shutdown();
    await half.shutdown();
  }
  const { wallSeconds, otherCpuSeconds } = stopContention();

  // The physical limit per direction: the fastest raw way (median over reps).
  const rawMedians = Object.fromEntries(COPY_WAYS.map((w) => [w.name, median(raw[w.name])]));
  const best = (direction: CopyWay['direction']): { way: string; bytesPerSecond: number } => {
    const ways = COPY_WAYS.filter((w) => w.direction === direction && !w.reference);
    const top = ways.reduce((a, b) => (rawMedians[b.name] > rawMedians[a.name] ? b : a));
    return { way: top.name, bytesPerSecond: rawMedians[top.name] };
  };
  const rawD2h = best('d2h');
  const rawH2d = best('h2d');

  /** One run's swap figures against the raw limits: the ratio is the headline's definition. */
  const swapFigures = (swap: SwapDelta) => {
    const { bytesOut, nsOut, bytesIn, nsIn } = swap;
    const rawSeconds = bytesOut / rawD2h.bytesPerSecond + bytesIn / rawH2d.bytesPerSecond;
    const swapSeconds = (nsOut + nsIn) / 1e9;
    return {
      ratio: swapSeconds > 0 ? rawSeconds / swapSeconds : NaN,
      outRate: nsOut > 0 ? bytesOut / (nsOut / 1e9) : NaN,
      inRate: nsIn > 0 ? bytesIn / (nsIn / 1e9) : NaN,
      rate: swapSeconds > 0 ? (bytesOut + bytesIn) / swapSeconds : NaN,
    };
  };
  const perRun = samples.half.map((s) => swapFigures(s.swap));
  if (perRun.some((r) => Number.isNaN(r.ratio))) throw new Error('a half-budget run moved no swap traffic: the workload does not oversubscribe the budget');
  const perIdle = idle.map((s) => swapFigures(s.swap));
  const summary = (runs: ReturnType<typeof swapFigures>[], moved: SwapDelta[]) => ({
    /** Medians over runs of each run's figure. */
    ratio: median(runs.map((r) => r.ratio)),
    bytesPerSecond: median(runs.map((r) => r.rate)),
    outBytesPerSecond: median(runs.map((r) => r.outRate)),
    inBytesPerSecond: median(runs.map((r) => r.inRate)),
    outRatio: median(runs.map((r) => r.outRate)) / rawD2h.bytesPerSecond,
    inRatio: median(runs.map((r) => r.inRate)) / rawH2d.bytesPerSecond,
    bytesOutPerRun: median(moved.map((m) => m.bytesOut)),
    bytesInPerRun: median(moved.map((m) => m.bytesIn)),
    /** Of the time swap transfers were in progress, the share when all were queued behind others' work (not counted in the ratio). */
    queueWaitShare: median(moved.map((m) => m.nsWait / (m.nsWait + m.nsOut + m.nsIn || 1))),
    /** The ratio with that queued time counted in: end-to-end, from starting transfers to their arrival. */
    endToEndRatio: median(runs.map((r, i) => r.ratio * (moved[i].nsOut + moved[i].nsIn) / (moved[i].nsOut + moved[i].nsIn + moved[i].nsWait || 1))),
    perRunRatios: spread(runs.map((r) => r.ratio)),
  });
  const underLoad = summary(perRun, samples.half.map((s) => s.swap));
  const alone = summary(perIdle, idle.map((s) => s.swap));
  const rate = (xs: WorkloadSample[]): number => median(xs.map((s) => s.stepsPerSecond));
  const bareRate = rate(samples.bare);
  const fullRate = rate(samples.full);
  const halfRate = rate(samples.half);
  const swapBandwidthRatio = underLoad.ratio;
  const throughputRatio = halfRate / fullRate;
  const pairedThroughput = samples.half.map((s, i) => s.stepsPerSecond / samples.full[i].stepsPerSecond);

  const info = bareAdapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const report = {
    benchmark: 'gpunix-oversubscribe',
    ...machine(bareAdapter),
    reps,
    target: TARGET,
    swap_bandwidth_ratio: swapBandwidthRatio,
    throughput_ratio: throughputRatio,
    idle_swap_bandwidth_ratio: alone.ratio,
    swap_end_to_end_ratio: underLoad.endToEndRatio,
    definitions: {
      swap_bandwidth_ratio:
        'per half-budget run: (bytesOut / raw_d2h + bytesIn / raw_h2d) / ((nsOut + nsIn) / 1e9), from the deltas of kernel.stats().swap over the run (spawn to exit, plus a 50 ms settle); raw_d2h, raw_h2d = the fastest raw way in that direction (median over reps); headline = median over runs',
      swap_end_to_end_ratio:
        'swap_bandwidth_ratio with the time transfers spent queued behind other processes\' work counted in (nsWaitOut + nsWaitIn added to the denominator): how long swapped bytes took to arrive, not how fast they moved',
      idle_swap_bandwidth_ratio: `the same formula for ${IDLE_SWAP_CYCLES} cycles of kernel.swapOut + kernel.resume of one process holding copy-rounds buffers, on an otherwise idle kernel, after one untimed cycle`,
      throughput_ratio: 'median(half-budget process-steps/s) / median(unconstrained process-steps/s)',
      swap_time:
        "kernel.stats().swap nsOut/nsIn: per direction, the union of the transfers' moving spans: from the kernel starting a transfer until it is queued on the device (host-side work), and from when the work queued ahead of it completed (a fence) until its bytes arrived (host memory; device with the upload executed). nsWaitOut/nsWaitIn: the time transfers were in progress but all still queued behind earlier work",
    },
    workload: {
      procs: config.procs,
      buffers: config.buffers,
      bytes: config.bytes,
      steps: config.steps,
      gapMs: config.gapMs,
      usage: usageName(config.usage),
      describe: `${config.procs} programs x ${config.buffers} buffers x ${config.bytes / MiB} MiB (${usageName(config.usage)}), ${config.steps} compute steps each, ${config.gapMs} ms idle between steps`,
      workingSetBytes: workingSet(config),
      halfBudgetBytes: budget,
    },
    raw: {
      bytesPerBuffer: config.bytes,
      buffersPerSample: copyRounds,
      d2h: rawD2h,
      h2d: rawH2d,
      ways: COPY_WAYS.map((w) => ({
        name: w.name,
        direction: w.direction,
        describe: w.describe,
        limit: !w.reference,
        bytesPerSecond: rawMedians[w.name],
        samples: raw[w.name],
      })),
    },
    swap: { underLoad, alone },
    throughput: {
      unit: 'process-steps/s',
      bare: bareRate,
      full: fullRate,
      half: halfRate,
      fullToBare: fullRate / bareRate,
      pairedHalfToFull: spread(pairedThroughput),
    },
    runs: { bare: samples.bare, full: samples.full, half: samples.half, idleSwap: idle },
    contention: { wallSeconds, otherCpuSeconds },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const table = (rows: string[][]): void => {
    const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
    for (const row of rows) process.stderr.write(`${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')}\n`);
  };
  const mib = (bytes: number): string => (bytes / MiB).toFixed(0);
  process.stderr.write(`\n${info.description || info.device} (${info.vendor}), ${cpuModel()}, node ${process.version}, ${reps} reps\n`);
  process.stderr.write(`workload: ${report.workload.describe}; working set ${(workingSet(config) / MiB).toFixed(1)} MiB, half budget ${(budget / MiB).toFixed(1)} MiB\n\n`);
  table([
    ['raw copy (bare Dawn)', 'direction', 'median', 'min / max'],
    ...COPY_WAYS.map((w) => [
      `${w.name}${w.reference ? ' (reference)' : ''}`,
      w.direction,
      mibps(rawMedians[w.name]),
      `${mibps(Math.min(...raw[w.name]))} / ${mibps(Math.max(...raw[w.name]))}`,
    ]),
  ]);
  process.stderr.write('\n');
  const swapRows = (name: string, figures: typeof underLoad): string[][] => [
    [`${name}: out`, mib(figures.bytesOutPerRun), mibps(figures.outBytesPerSecond), `${mibps(rawD2h.bytesPerSecond)} (${rawD2h.way})`, figures.outRatio.toFixed(2)],
    [`${name}: in`, mib(figures.bytesInPerRun), mibps(figures.inBytesPerSecond), `${mibps(rawH2d.bytesPerSecond)} (${rawH2d.way})`, figures.inRatio.toFixed(2)],
    [`${name}: both`, '', mibps(figures.bytesPerSecond), '', `${figures.ratio.toFixed(2)}  (${figures.perRunRatios.min.toFixed(2)}-${figures.perRunRatios.max.toFixed(2)})`],
  ];
  table([
    ['swap (kernel.stats().swap)', 'MiB/run', 'rate (median)', 'raw limit', 'ratio (runs min-max)'],
    ...swapRows('half-budget workload', underLoad),
    ...swapRows('swapOut+resume, idle', alone),
  ]);
  process.stderr.write(`swap_bandwidth_ratio ${swapBandwidthRatio.toFixed(2)} (target ${TARGET}); idle_swap_bandwidth_ratio ${alone.ratio.toFixed(2)}; under load ${(underLoad.queueWaitShare * 100).toFixed(0)}% of swap time was queued behind other processes' work (end to end, counting it: ${underLoad.endToEndRatio.toFixed(2)})\n\n`);
  const steps = (xs: WorkloadSample[]): string =>
    `${Math.min(...xs.map((s) => s.stepsPerSecond)).toFixed(1)} / ${Math.max(...xs.map((s) => s.stepsPerSecond)).toFixed(1)}`;
  table([
    ['workload', 'process-steps/s (median)', 'min / max', 'evictions/run', 'restores/run'],
    ['bare Dawn', bareRate.toFixed(1), steps(samples.bare), '-', '-'],
    ...(['full', 'half'] as const).map((side) => [
      side === 'full' ? 'gpunix, budget 4 GiB' : `gpunix, budget ${(budget / MiB).toFixed(1)} MiB`,
      rate(samples[side]).toFixed(1),
      steps(samples[side]),
      median(samples[side].map((s) => s.evictions)).toFixed(0),
      median(samples[side].map((s) => s.restores)).toFixed(0),
    ]),
  ]);
  process.stderr.write(`throughput_ratio (half / full) ${throughputRatio.toFixed(2)}; full / bare ${(fullRate / bareRate).toFixed(2)}; every run exact\n`);
  process.stderr.write(contentionLine({ wallSeconds, otherCpuSeconds }));
}

runBenchmark(main);
