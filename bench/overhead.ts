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

import { globals } from 'webgpu';
import { benchBackend, collectGarbage, contentionLine, machine, measureContention, runBenchmark, takeBackendFlag } from './machine.js';
import { bypassEventPump, createKernel } from '../src/index.js';
import {
  bandwidthWorkload,
  compareSides,
  Comparison,
  countingDispatchLoop,
  dispatchWorkload,
  failIfUncaptured,
  LOOPED_KERNEL,
  openDevice,
  OVERHEAD_WORKLOADS,
  parseComparisonArgs,
  printComparison,
  processSide,
  Sample,
  setWarmUp,
  stepWorkload,
  timeCallLoop,
  Workload,
} from './workloads.js';

Object.assign(globalThis, globals);

/**
 * The call path alone: `iterations` x (createCommandEncoder, beginComputePass, setPipeline,
 * setBindGroup, dispatchWorkgroups(1), end, finish, queue.submit), timed from the first call to
 * the last one's return, with the WebIDL conversions and ownership checks a gpunix process makes
 * on every argument in place. What the device then takes to run the dispatches is left out (it
 * hides the calls' cost on a slow device: see dispatch-single); the drain that follows is untimed
 * but checked (every dispatch must have run), so deferring work cannot pass for speed unnoticed.
 */
function dispatchLoopWorkload(name: string, iterations: number): Workload {
  return {
    name,
    unit: 'dispatches',
    describe: `${iterations} x (encoder, pass, setPipeline, setBindGroup, dispatchWorkgroups(1), end, finish, submit): the calls only, the drain untimed`,
    async run(gpu, scale) {
      const device = await openDevice(gpu);
      const n = Math.max(1, Math.round(iterations * scale));
      const { counter, loop } = countingDispatchLoop(device);
      const readback = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      // Untimed warm-up, both sides: the forced full GC before each sample (bench/machine.ts) lets
      // V8 drop the optimized code of a JavaScript call path (gpunix's, not bare Dawn's native one)
      // whose object shapes no live object kept; the sample measures the loop at steady state.
      loop(WARM_UP_ITERATIONS);
      await device.queue.onSubmittedWorkDone();

      const start = performance.now();
      const callLoop = timeCallLoop(n, loop);
      const seconds = (performance.now() - start) / 1000;

      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(counter, 0, readback, 0, 4);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const seen = new Uint32Array(readback.getMappedRange())[0];
      readback.unmap();
      device.destroy();
      if (seen !== n + WARM_UP_ITERATIONS) throw new Error(`${name}: expected ${n + WARM_UP_ITERATIONS} dispatches to run, counted ${seen}`);
      return { units: n, seconds, callLoop };
    },
  };
}

/** Iterations of dispatch-loop run untimed before each sample (see its run()). */
const WARM_UP_ITERATIONS = 4000;

/**
 * Beside issue 17's three: the call path alone (dispatch-loop), and the round trip of a program
 * that reads a small result back every step (an inference loop's logits), where the device's and
 * the copies' time no longer hides gpunix's own per call (docs/benchmarks.md, "Where a readback
 * round's time goes").
 */
const WORKLOADS: Workload[] = [
  ...OVERHEAD_WORKLOADS,
  dispatchLoopWorkload('dispatch-loop', 4000),
  dispatchWorkload(
    'dispatch-single-looped',
    10000,
    1,
    '10000 submits x 1 tiny dispatch of a kernel with a data-dependent loop (the watchdog checks it), then onSubmittedWorkDone',
    LOOPED_KERNEL,
  ),
  stepWorkload('step', 2000, '2000 steps: 1 tiny dispatch + copy of its result, submit, mapAsync(READ) + read, unmap'),
  stepWorkload('step-looped', 2000, 'step, with a kernel whose data-dependent loop the watchdog checks', LOOPED_KERNEL),
  bandwidthWorkload('bandwidth-256B', 5000, 256, '5000 rounds: writeBuffer 256 B, copyBufferToBuffer, mapAsync(READ) + read, unmap'),
];

// ---- harness ------------------------------------------------------------------------------------

const usage = `usage: node dist/bench/overhead.js [--reps N] [--scale X] [--only name[,name]]
  --reps N     timed repetitions per side, interleaved (default 11; one warm-up each comes first)
  --scale X    multiplies every workload's iteration count (default 1)
  --only LIST  comma-separated workload names (${WORKLOADS.map((w) => w.name).join(', ')})
  --warm-up F  untimed iterations each sample runs first, as a fraction of its timed ones (default 0), both sides
  --backend B  Dawn backend for both sides: bare Dawn on B, gpunix with backends [B] (vulkan, opengles, opengl, ...; default: the platform's)
  --coalesce-within US  the kernel's coalesceSubmitsWithinUs: submits called within US µs of the previous one are held and given to Dawn together (default: the kernel's, 250; 0: off; docs/kernel.md)
JSON goes to stdout, the table and progress to stderr.`;

async function main(): Promise<void> {
  const target = benchBackend(takeBackendFlag());
  const args = parseComparisonArgs(usage, WORKLOADS, 11, { 'warm-up': { type: 'string', default: '0' }, 'coalesce-within': { type: 'string' } });
  if (!args) return;
  const { reps, scale, workloads } = args;
  const warmUp = Number(args.flags['warm-up']);
  if (!(warmUp >= 0)) throw new Error(`--warm-up must be a fraction >= 0\n${usage}`);
  setWarmUp(warmUp);
  const coalesceWithin = args.flags['coalesce-within'] === undefined ? undefined : Number(args.flags['coalesce-within']);
  if (coalesceWithin !== undefined && !(coalesceWithin >= 0)) throw new Error(`--coalesce-within must be a number of µs >= 0\n${usage}`);

  const bare = target.bare;
  const bareAdapter = await bare.requestAdapter();
  if (!bareAdapter) throw new Error(`no WebGPU adapter${target.name ? ` on the ${target.name} backend` : ''}: run scripts/setup.sh`);
  const kernel = await createKernel({ ...target.kernel, coalesceSubmitsWithinUs: coalesceWithin });
  const onBare = async (w: Workload): Promise<Sample> => {
    collectGarbage();
    // Bare Dawn as shipped: its polls must not be paced by the kernel's event pump, which holds
    // every Dawn instance in the process while the kernel lives (src/device/eventPump.ts).
    bypassEventPump(true);
    try {
      const sample = await w.run(bare, scale);
      failIfUncaptured(w.name);
      return sample;
    } finally {
      bypassEventPump(false);
    }
  };

  // Other programs on the machine make both sides noisy: measure how much CPU they took meanwhile.
  const stopContention = measureContention();
  let comparisons: Comparison[];
  try {
    comparisons = await compareSides(workloads, [
      { name: 'bare', run: onBare },
      processSide('gpunix', scale, async (name) => target.process(await kernel.spawn({ name }))),
    ], reps);
  } finally {
    await kernel.shutdown();
  }

  const { wallSeconds, otherCpuSeconds } = stopContention();
  const info = bareAdapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const results = comparisons.map(({ rates, ...r }) => ({ ...r, bare: rates.bare, gpunix: rates.gpunix }));
  const report = {
    benchmark: 'gpunix-overhead',
    ...machine(bareAdapter, target),
    reps,
    scale,
    warmUp,
    coalesceSubmitsWithinUs: coalesceWithin ?? null,
    target: 0.95,
    /** CPU time other programs used during the run (null where unknown): above a few seconds, rerun. */
    contention: { wallSeconds, otherCpuSeconds },
    workloads: results,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  printComparison(`${info.description || info.device} (${[info.vendor, target.name].filter(Boolean).join(', ')}), node ${process.version}, ${reps} reps, scale ${scale}${warmUp > 0 ? `, warm-up ${warmUp}` : ''}`, comparisons, WORKLOADS, ['bare', 'gpunix']);
  process.stderr.write(contentionLine({ wallSeconds, otherCpuSeconds }));
}

runBenchmark(main);
