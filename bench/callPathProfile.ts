// Where the call path's CPU goes: dispatch-loop's calls (encoder, pass, setPipeline,
// setBindGroup, dispatchWorkgroups(1), end, finish, submit) on bare Dawn and in a gpunix process,
// each timed by its main thread's CPU (bench/machine.ts) and sampled by V8's CPU profiler, in one
// run. The numbers to read first are the two sides' CPU per iteration; the profile then says where
// the difference is: self time by category (gpunix's JavaScript, the native WebGPU calls, the
// garbage collector, ...) and by function. The profiler's own sampling costs both sides alike, so
// its figures are larger than the untimed CPU bench/overhead reports. docs/benchmarks.md ("The
// call path, issue 17 fourth pass") has figures and the reading.
//
//   node dist/bench/callPathProfile.js [--iterations N] [--reps N] [--top N] [--per-submit N]
//
// JSON on stdout, tables on stderr.

import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { create, globals } from 'webgpu';
import { bypassEventPump, createKernel } from '../src/index.js';
import { collectGarbage, mainThreadCpuSeconds, runBenchmark } from './machine.js';
import { countingDispatchLoop, median, openDevice } from './workloads.js';

Object.assign(globalThis, globals);

const usage = `usage: node dist/bench/callPathProfile.js [--iterations N] [--reps N] [--top N] [--per-submit N]
  --iterations N  calls-loop iterations per sample (default 20000)
  --reps N        profiled samples per side, interleaved (default 4; one untimed warm-up each first)
  --top N         gpunix functions listed by self time (default 15)
  --per-submit N  dispatches in each iteration's one pass (default 1: dispatch-loop; 100: dispatch-batched's shape)`;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a sample's time belongs: gpunix's code, the benchmark's own loop, the webgpu package's JS, or V8's pseudo-frames. */
function categoryOf(url: string, functionName: string): string {
  if (url.includes('/dist/src/')) return 'gpunix';
  if (url.includes('/dist/bench/')) return 'benchmark loop';
  if (url.includes('/node_modules/webgpu/')) return 'webgpu package';
  if (url === '') return functionName.startsWith('(') ? functionName : 'native (WebGPU calls, mostly)';
  return 'other';
}

/** Self time (µs) by category, and by gpunix function, from one profile. */
function summarize(profile: CpuProfile): { byCategory: Map<string, number>; byFunction: Map<string, number> } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const frame = byId.get(profile.samples[i])!.callFrame;
    const us = profile.timeDeltas[i] ?? 0;
    const category = categoryOf(frame.url, frame.functionName);
    byCategory.set(category, (byCategory.get(category) ?? 0) + us);
    // Only gpunix's own functions: dawn.node's native functions reach the profile under names
    // that are not theirs (most as GPURenderBundle or anonymous), so they are counted as one.
    if (category !== 'gpunix') continue;
    const key = `${frame.functionName || '(anonymous)'} ${frame.url.split('/dist/src/')[1]}:${frame.lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  return { byCategory, byFunction };
}

interface SideResult {
  /** Medians over the reps, per iteration (µs). */
  cpuUs: number;
  wallUs: number;
  /** Self time per iteration (µs), pooled over the reps' profiles. */
  selfUsByCategory: Record<string, number>;
  topGpunixFunctions: Array<{ name: string; selfUs: number }>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string', default: '20000' },
      reps: { type: 'string', default: '4' },
      top: { type: 'string', default: '15' },
      'per-submit': { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return void process.stderr.write(`${usage}\n`);
  const iterations = Number(values.iterations);
  const reps = Number(values.reps);
  const top = Number(values.top);
  const perSubmit = Number(values['per-submit']);
  if (![iterations, reps, top, perSubmit].every((n) => Number.isInteger(n) && n > 0)) throw new Error(`--iterations, --reps, --top and --per-submit take positive integers\n${usage}`);
  if (mainThreadCpuSeconds() === null) throw new Error('this benchmark reads the main thread\'s CPU time from /proc (Linux only)');

  const bare = create([]);
  const kernel = await createKernel();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 50 });

  /** A fresh device for each sample (as in bench/overhead) and its calls loop. */
  const open = async (gpu: GPU) => {
    const device = await openDevice(gpu);
    return { device, loop: countingDispatchLoop(device, perSubmit).loop };
  };

  const sides = ['bare', 'gpunix'] as const;
  const cpu: Record<string, number[]> = { bare: [], gpunix: [] };
  const wall: Record<string, number[]> = { bare: [], gpunix: [] };
  const profiles: Record<string, CpuProfile[]> = { bare: [], gpunix: [] };
  try {
    for (let rep = -1; rep < reps; rep++) {
      for (const side of rep % 2 === 0 ? sides : [...sides].reverse()) {
        const proc = side === 'gpunix' ? await kernel.spawn({ name: `call-path-${rep}` }) : null;
        bypassEventPump(side === 'bare');
        try {
          const { device, loop } = await open(proc ? proc.gpu : bare);
          loop(iterations); // untimed: V8 optimizes the call path first
          await device.queue.onSubmittedWorkDone();
          collectGarbage();
          if (rep >= 0) await session.post('Profiler.start');
          const cpuBefore = mainThreadCpuSeconds()!;
          const wallBefore = performance.now();
          loop(iterations);
          const wallMs = performance.now() - wallBefore;
          const cpuSeconds = mainThreadCpuSeconds()! - cpuBefore;
          if (rep >= 0) {
            const { profile } = await session.post('Profiler.stop');
            profiles[side].push(profile as unknown as CpuProfile);
            cpu[side].push((cpuSeconds * 1e6) / iterations);
            wall[side].push((wallMs * 1e3) / iterations);
          }
          await device.queue.onSubmittedWorkDone();
          device.destroy();
        } finally {
          bypassEventPump(false);
          await proc?.exit();
        }
      }
      process.stderr.write(rep < 0 ? 'warm-up' : '.');
    }
    process.stderr.write('\n');
  } finally {
    session.disconnect();
    await kernel.shutdown();
  }

  const results: Record<string, SideResult> = {};
  for (const side of sides) {
    const byCategory = new Map<string, number>();
    const byFunction = new Map<string, number>();
    for (const profile of profiles[side]) {
      const summary = summarize(profile);
      for (const [k, v] of summary.byCategory) byCategory.set(k, (byCategory.get(k) ?? 0) + v);
      for (const [k, v] of summary.byFunction) byFunction.set(k, (byFunction.get(k) ?? 0) + v);
    }
    const perIteration = (us: number): number => us / (reps * iterations);
    results[side] = {
      cpuUs: median(cpu[side]),
      wallUs: median(wall[side]),
      selfUsByCategory: Object.fromEntries([...byCategory].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, perIteration(v)])),
      topGpunixFunctions: [...byFunction]
        .sort((a, b) => b[1] - a[1])
        .slice(0, top)
        .map(([name, v]) => ({ name, selfUs: perIteration(v) })),
    };
  }

  const adapter = await bare.requestAdapter();
  const report = { benchmark: 'gpunix-call-path-profile', adapter: adapter?.info.description || adapter?.info.device, node: process.version, iterations, reps, perSubmit, sides: results };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const line = (label: string, b: string, g: string): string => `${label.padEnd(46)}${b.padStart(10)}${g.padStart(10)}\n`;
  const us = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(2));
  process.stderr.write(`\n${report.adapter}, node ${process.version}, ${reps} reps x ${iterations} iterations of ${perSubmit} dispatch(es) (µs per iteration)\n`);
  process.stderr.write(line('', 'bare', 'gpunix'));
  process.stderr.write(line('main-thread CPU (median)', us(results.bare.cpuUs), us(results.gpunix.cpuUs)));
  process.stderr.write(line('wall (median)', us(results.bare.wallUs), us(results.gpunix.wallUs)));
  const categories = [...new Set([...Object.keys(results.bare.selfUsByCategory), ...Object.keys(results.gpunix.selfUsByCategory)])];
  for (const c of categories) process.stderr.write(line(`  self time: ${c}`, us(results.bare.selfUsByCategory[c]), us(results.gpunix.selfUsByCategory[c])));
  process.stderr.write('\ngpunix functions by self time:\n');
  for (const f of results.gpunix.topGpunixFunctions) process.stderr.write(`${f.selfUs.toFixed(2).padStart(8)}  ${f.name}\n`);
}

runBenchmark(main);
