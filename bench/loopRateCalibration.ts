// How a busy machine moves the watchdog's loop-rate calibration (src/device/loopRate.ts), the
// figure every loop budget is made from. For each of `--reps` rounds, interleaved: the rate timed
// by the wall clock and timed as the kernel times a CPU device (the CPU time of the thread that ran
// it), each on an
// idle machine and with `--busy` processes per core spinning beside it. A budget made on a busy
// machine stands, once the machine is idle again, for maxDispatchMs x slack x (busy rate / idle
// rate): below maxDispatchMs, a runaway is cut before the time check can see it (its process
// goes on with the cut loops' results). Reported: each rate's median, and that fraction.
//
//   node dist/bench/loopRateCalibration.js [--reps N] [--busy K]

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { create } from 'webgpu';
import { describeAdapter, runsOnHostCpu } from '../src/device/adapters.js';
import { platformBackend } from '../src/device/backends.js';
import { measureLoopRates } from '../src/device/loopRate.js';
import { WATCHDOG_BUDGET_SLACK } from '../src/params.js';
import { cpuModel, startBusyProcesses, stopProcesses } from './machine.js';
import { median } from './workloads.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '5' }, busy: { type: 'string', default: '3' } } });
const reps = Number(values.reps);
const perCore = Number(values.busy);
if (!(Number.isInteger(reps) && reps > 0) || !(Number.isInteger(perCore) && perCore > 0)) {
  console.error('usage: loopRateCalibration [--reps N (>= 1)] [--busy K (processes per core, >= 1)]');
  process.exit(2);
}

const gpu = create([]);
const adapter = (await gpu.requestAdapter())!;
const description = describeAdapter(adapter, platformBackend());
const device = await adapter.requestDevice();
const cpuDevice = runsOnHostCpu(description);
console.log(`# ${cpuModel()}, ${availableParallelism()} cores; ${description.description || description.device}; CPU device: ${cpuDevice}`);
if (!cpuDevice) console.log('# not a CPU device: the kernel times it by the wall clock, so both columns measure the same thing');

type Mode = 'wall' | 'kernel';
const rates: Record<`${Mode} ${'idle' | 'busy'}`, number[]> = { 'wall idle': [], 'wall busy': [], 'kernel idle': [], 'kernel busy': [] };
let key = 0;
const measure = async (mode: Mode): Promise<number> => (await measureLoopRates(device, `bench-${key++}`, mode === 'kernel' && cpuDevice)).iterationsPerMs;

for (let rep = 0; rep < reps; rep++) {
  const order: Mode[] = rep % 2 === 0 ? ['wall', 'kernel'] : ['kernel', 'wall'];
  for (const mode of order) rates[`${mode} idle`].push(await measure(mode));
  const children = startBusyProcesses(perCore * availableParallelism());
  await new Promise((resolve) => setTimeout(resolve, 200)); // they are running before the measurement starts
  try {
    for (const mode of order) rates[`${mode} busy`].push(await measure(mode));
  } finally {
    await stopProcesses(children);
  }
  process.stderr.write('.');
}
process.stderr.write('\n');

console.log(`| timing | idle (iterations/ms) | ${perCore} busy per core | busy / idle | a busy calibration's runaway, on an idle machine, is cut after (x maxDispatchMs) |`);
console.log('| --- | --- | --- | --- | --- |');
const summary: Record<string, unknown> = {};
for (const mode of ['wall', 'kernel'] as const) {
  const idle = median(rates[`${mode} idle`]);
  const busy = median(rates[`${mode} busy`]);
  const cutAt = (WATCHDOG_BUDGET_SLACK * busy) / idle;
  summary[mode] = { idle, busy, ratio: busy / idle, cutAtLimits: cutAt };
  console.log(`| ${mode === 'wall' ? 'wall clock' : 'the kernel\'s (CPU time on a CPU device)'} | ${idle.toFixed(0)} | ${busy.toFixed(0)} | ${(busy / idle).toFixed(2)} | ${cutAt.toFixed(2)}${cutAt < 1 ? ' (before the limit: unseen)' : ''} |`);
}
console.log(JSON.stringify({ reps, busyPerCore: perCore, slack: WATCHDOG_BUDGET_SLACK, rates, summary }));
device.destroy();
