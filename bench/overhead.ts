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
import { formatRate, median, OVERHEAD_WORKLOADS as WORKLOADS, Sample, uncaptured, Workload } from './workloads.js';

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
