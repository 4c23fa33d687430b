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
import { compareSides, Comparison, OVERHEAD_WORKLOADS as WORKLOADS, printComparison, Sample, uncaptured, Workload } from './workloads.js';

Object.assign(globalThis, globals);

// ---- harness ------------------------------------------------------------------------------------

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
  let comparisons: Comparison[];
  try {
    comparisons = await compareSides(workloads, [
      { name: 'bare', run: onBare },
      { name: 'gpunix', run: onGpunix },
    ], reps);
  } finally {
    await kernel.shutdown();
  }

  const busyAfter = machineBusySeconds();
  const own = process.cpuUsage(ownBefore);
  const wallSeconds = (performance.now() - wallBefore) / 1000;
  const otherCpuSeconds =
    busyBefore === null || busyAfter === null ? null : Math.max(0, busyAfter - busyBefore - (own.user + own.system) / 1e6);
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
