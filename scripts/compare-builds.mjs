// Two builds of gpunix against each other: the call path's main-thread CPU, process by process.
//
// On a 2-vCPU VM, bench/overhead's wall-clock ratios move ±20 % from one run to the next (bare
// Dawn's own rate included), so a change worth 0.1 µs a dispatch cannot be seen by running the
// benchmark before and after it. Here the figure is the main thread's CPU time per iteration
// (what the call path costs the program's thread, not what the device takes), and the two builds
// take turns, a fresh Node process each, so that the machine's drift falls on both alike; the
// per-turn ratio B/A cancels it. Each build runs in processes of its own: with both builds in one
// process (tried first), which build V8 happened to optimize better moved the ratio by ±25 % from
// run to run, and the "effects" seen were that.
//
//   node scripts/compare-builds.mjs --other PATH [--per-submit N] [--iterations N] [--turns N]
//
// PATH: another checkout of gpunix with its dist built (e.g. `git worktree add /tmp/base HEAD~1`,
// then `ln -s $PWD/node_modules /tmp/base/node_modules && (cd /tmp/base && npx tsc -p .)`). A is
// that build, B this one. The loop is bench/overhead's call loop (bench/workloads.ts
// countingDispatchLoop): per iteration an encoder, a pass with --per-submit one-workgroup
// dispatches, finish and submit. A turn is one process per build; a process runs five samples
// (each a fresh gpunix process and device, after an untimed run of the loop and a full
// collection) and gives their median. Prints each build's median over the turns and the median of
// the per-turn ratios B/A with its 95 % interval; JSON on stdout, the table on stderr.
// Issue 17's seventeenth pass (docs/benchmarks.md) measured its change with it.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const SAMPLES_PER_PROCESS = 5;
const here = resolve(fileURLToPath(new URL('..', import.meta.url)));

/** A child: one build's median CPU per iteration (µs), printed as a number. */
async function child(root, perSubmit, iterations) {
  const { globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const { createKernel } = await import(pathToFileURL(`${root}/dist/src/index.js`).href);
  const { countingDispatchLoop, openDevice, median } = await import(pathToFileURL(`${here}/dist/bench/workloads.js`).href);
  const { mainThreadCpuSeconds, collectGarbage } = await import(pathToFileURL(`${here}/dist/bench/machine.js`).href);
  const kernel = await createKernel();
  const samples = [];
  try {
    for (let s = 0; s < SAMPLES_PER_PROCESS; s++) {
      const proc = await kernel.spawn({ name: `compare-${s}` });
      try {
        const device = await openDevice(proc.gpu);
        const { loop } = countingDispatchLoop(device, perSubmit);
        loop(iterations); // untimed: V8 optimizes the call path first
        await device.queue.onSubmittedWorkDone();
        collectGarbage();
        const before = mainThreadCpuSeconds();
        loop(iterations);
        samples.push(((mainThreadCpuSeconds() - before) * 1e6) / iterations);
        await device.queue.onSubmittedWorkDone();
        device.destroy();
      } finally {
        await proc.exit();
      }
    }
  } finally {
    await kernel.shutdown();
  }
  process.stdout.write(`${median(samples)}\n`);
}

const usage = `usage: node scripts/compare-builds.mjs --other PATH [--per-submit N] [--iterations N] [--turns N]
  --other PATH      a gpunix checkout with dist/ built: build A (this checkout is build B)
  --per-submit N    one-workgroup dispatches in each iteration's pass (default 100: dispatch-batched's shape; 1: dispatch-loop's)
  --iterations N    iterations per sample (default 1000)
  --turns N         processes per build, alternated (default 8)`;

async function main() {
  if (process.argv[2] === '--child') return child(process.argv[3], Number(process.argv[4]), Number(process.argv[5]));
  const { values } = parseArgs({
    options: {
      other: { type: 'string' },
      'per-submit': { type: 'string', default: '100' },
      iterations: { type: 'string', default: '1000' },
      turns: { type: 'string', default: '8' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return void process.stderr.write(`${usage}\n`);
  const perSubmit = Number(values['per-submit']);
  const iterations = Number(values.iterations);
  const turns = Number(values.turns);
  if (![perSubmit, iterations, turns].every((n) => Number.isInteger(n) && n > 0)) throw new Error(`--per-submit, --iterations and --turns take positive integers\n${usage}`);
  if (!values.other) throw new Error(`--other is required\n${usage}`);
  const other = resolve(values.other);
  for (const root of [here, other]) {
    if (!existsSync(`${root}/dist/src/index.js`)) throw new Error(`${root}/dist/src/index.js is missing: build that checkout first (npx tsc -p .)`);
  }
  const { median, medianInterval } = await import(pathToFileURL(`${here}/dist/bench/workloads.js`).href);

  /** One process of `root`'s build: its median CPU per iteration (µs). */
  const run = (root) => {
    const result = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', root, String(perSubmit), String(iterations)], { encoding: 'utf8' });
    const value = Number(result.stdout.trim());
    if (result.status !== 0 || !Number.isFinite(value)) throw new Error(`the ${root} build's process failed (status ${result.status}):\n${result.stderr}`);
    return value;
  };
  const cpuUs = { A: [], B: [] };
  for (let turn = 0; turn < turns; turn++) {
    // Each build goes first in half the turns.
    for (const side of turn % 2 === 0 ? ['A', 'B'] : ['B', 'A']) cpuUs[side].push(run(side === 'A' ? other : here));
    process.stderr.write('.');
  }
  process.stderr.write('\n');

  const ratios = cpuUs.B.map((b, i) => b / cpuUs.A[i]);
  const interval = medianInterval(ratios);
  const report = {
    script: 'compare-builds',
    a: other,
    b: here,
    perSubmit,
    iterations,
    turns,
    cpuUsPerIteration: { A: { median: median(cpuUs.A), turns: cpuUs.A }, B: { median: median(cpuUs.B), turns: cpuUs.B } },
    ratioBA: { median: median(ratios), interval95: interval, turns: ratios },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.stderr.write(`main-thread CPU per iteration of ${perSubmit} dispatch(es), median of ${turns} processes each (µs): A ${median(cpuUs.A).toFixed(2)}   B ${median(cpuUs.B).toFixed(2)}\n`);
  process.stderr.write(`B / A per turn: median ${median(ratios).toFixed(3)}, 95 % interval ${interval ? interval.map((x) => x.toFixed(3)).join(' - ') : 'n/a (too few turns)'}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
