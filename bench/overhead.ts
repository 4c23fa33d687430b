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

import { create, globals } from 'webgpu';
import { collectGarbage, contentionLine, machine, measureContention, runBenchmark } from './machine.js';
import { createKernel } from '../src/index.js';
import { compareSides, Comparison, failIfUncaptured, OVERHEAD_WORKLOADS as WORKLOADS, parseComparisonArgs, printComparison, processSide, Sample, Workload } from './workloads.js';

Object.assign(globalThis, globals);

// ---- harness ------------------------------------------------------------------------------------

const usage = `usage: node dist/bench/overhead.js [--reps N] [--scale X] [--only name[,name]]
  --reps N     timed repetitions per side, interleaved (default 11; one warm-up each comes first)
  --scale X    multiplies every workload's iteration count (default 1)
  --only LIST  comma-separated workload names (${WORKLOADS.map((w) => w.name).join(', ')})
JSON goes to stdout, the table and progress to stderr.`;

async function main(): Promise<void> {
  const args = parseComparisonArgs(usage, WORKLOADS, 11);
  if (!args) return;
  const { reps, scale, workloads } = args;

  const bare = create([]);
  const bareAdapter = await bare.requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const kernel = await createKernel();
  const onBare = async (w: Workload): Promise<Sample> => {
    collectGarbage();
    const sample = await w.run(bare, scale);
    failIfUncaptured(w.name);
    return sample;
  };

  // Other programs on the machine make both sides noisy: measure how much CPU they took meanwhile.
  const stopContention = measureContention();
  let comparisons: Comparison[];
  try {
    comparisons = await compareSides(workloads, [
      { name: 'bare', run: onBare },
      processSide('gpunix', scale, (name) => kernel.spawn({ name })),
    ], reps);
  } finally {
    await kernel.shutdown();
  }

  const { wallSeconds, otherCpuSeconds } = stopContention();
  const info = bareAdapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const results = comparisons.map(({ rates, ...r }) => ({ ...r, bare: rates.bare, gpunix: rates.gpunix }));
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

  printComparison(`${info.description || info.device} (${info.vendor}), node ${process.version}, ${reps} reps, scale ${scale}`, comparisons, WORKLOADS, ['bare', 'gpunix']);
  process.stderr.write(contentionLine({ wallSeconds, otherCpuSeconds }));
}

runBenchmark(main);
