// What the GPU watchdog costs loop-heavy kernels: each kernel's device time on bare Dawn with the
// program's own code, on bare Dawn with the watchdog's bounded code (the rewrite's cost alone), on
// bare Dawn with the bounded code and its budget-spent flag bound (what the flag adds: a store in
// each cut branch, never taken, and one more bind group), and in a gpunix process (the rewrite,
// the flag and the kernel's path), in one run on one device. Ratio = bare time / other time (1.0:
// free; the target is >= 0.95). Also what making the kernel costs until its first dispatch has
// run (createShaderModule, createComputePipeline, the driver's compile at first use) on bare Dawn
// and in gpunix, which compiles a flagged module twice (with and without the flag).
//
//   node dist/bench/watchdog.js [--reps N]

import { create, globals } from 'webgpu';
import { createKernel } from '../src/index.js';
import { boundLoops } from '../src/wgsl/index.js';
import { collectGarbage, cpuModel } from './machine.js';

Object.assign(globalThis, globals);

const KERNELS: Record<string, { code: string; workgroups: number }> = {
  'lcg-loop': {
    workgroups: 64,
    code: `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var v = g.x; for (var i = 0u; i < 4000u; i++) { v = v * 1664525u + 1013904223u; } a[g.x] = v; }`,
  },
  'nested-helper': {
    workgroups: 64,
    code: `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
fn mix(x: u32, n: u32) -> u32 { var v = x; for (var i = 0u; i < n; i++) { v = (v ^ (v >> 3u)) * 2654435761u; } return v; }
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var acc = 0u; for (var j = 0u; j < 40u; j++) { acc += mix(g.x + j, 100u); } a[g.x] = acc; }`,
  },
  'collatz-while': {
    workgroups: 64,
    code: `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var total = 0u;
  for (var k = 1u; k < 60u; k++) { var n = g.x * 97u + k; var s = 0u; while (n > 1u && s < 400u) { if ((n & 1u) == 1u) { n = 3u * n + 1u; } else { n = n / 2u; } s++; } total += s; }
  a[g.x] = total; }`,
  },
  // A loop no analysis can bound (the Collatz steps of a number): the watchdog counts each iteration.
  'unbounded-while': {
    workgroups: 64,
    code: `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var total = 0u;
  for (var k = 1u; k < 60u; k++) { var n = g.x * 97u + k; while (n > 1u) { if ((n & 1u) == 1u) { n = 3u * n + 1u; } else { n = n / 2u; } total++; } }
  a[g.x] = total; }`,
  },
};

/**
 * `reps` dispatches of `code` (one submit each, awaited together) on `device`: their seconds, and
 * the seconds from createShaderModule to the first dispatch's completion. `flagGroup`: the bind
 * group index of the code's budget-spent flag, bound to a word of its own (bare Dawn running the
 * flagged rewrite).
 */
async function timeKernel(device: GPUDevice, code: string, workgroups: number, reps: number, flagGroup?: number): Promise<{ run: number; create: number }> {
  const buffer = device.createBuffer({ size: workgroups * 64 * 4, usage: GPUBufferUsage.STORAGE });
  const flagBuffer = flagGroup === undefined ? null : device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
  const createStart = performance.now();
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const flag = flagBuffer && device.createBindGroup({ layout: pipeline.getBindGroupLayout(flagGroup!), entries: [{ binding: 0, resource: { buffer: flagBuffer } }] });
  const once = () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    if (flag) pass.setBindGroup(flagGroup!, flag);
    pass.dispatchWorkgroups(workgroups);
    pass.end();
    device.queue.submit([encoder.finish()]);
  };
  once(); // warm-up: compilation and the cost model
  await device.queue.onSubmittedWorkDone();
  const create = (performance.now() - createStart) / 1000;
  collectGarbage();
  const start = performance.now();
  for (let i = 0; i < reps; i++) once();
  await device.queue.onSubmittedWorkDone();
  const seconds = (performance.now() - start) / 1000;
  buffer.destroy();
  flagBuffer?.destroy();
  return { run: seconds, create };
}

async function main(): Promise<void> {
  const repsArg = process.argv.indexOf('--reps');
  const reps = repsArg > 0 ? Number(process.argv[repsArg + 1]) : 20;
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no adapter');
  const bare = await adapter.requestDevice();
  const kernel = await createKernel({ memoryBudget: '1G' });
  const proc = await kernel.spawn({ name: 'bench-watchdog' });
  const virtualDevice = (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
  const results: Array<Record<string, unknown>> = [];
  for (const [name, { code, workgroups }] of Object.entries(KERNELS)) {
    const bounded = boundLoops(code, 0xf000_0000).code;
    const flagged = boundLoops(code, 0xf000_0000, 'shared', { spentFlagBelow: bare.limits.maxBindGroups });
    // A kernel whose loops all end by themselves (constant, guarded) has no check to cut, so no flag.
    const hasFlag = flagged.spentFlagGroup !== undefined;
    // Interleaved samples, best of each: the machine's noise hits every side alike. Each sample's
    // code is new (a comment of its own), so that no cache of Dawn's or the driver's makes it.
    let [bareS, boundedS, flaggedS, gpunixS, bareCreateS, gpunixCreateS] = [Infinity, Infinity, Infinity, Infinity, Infinity, Infinity];
    for (let round = 0; round < 3; round++) {
      const fresh = `\n// sample ${round}`;
      const b = await timeKernel(bare, code + fresh, workgroups, reps);
      bareS = Math.min(bareS, b.run);
      bareCreateS = Math.min(bareCreateS, b.create);
      boundedS = Math.min(boundedS, (await timeKernel(bare, bounded + fresh, workgroups, reps)).run);
      if (hasFlag) flaggedS = Math.min(flaggedS, (await timeKernel(bare, flagged.flaggedCode + fresh, workgroups, reps, flagged.spentFlagGroup)).run);
      const g = await timeKernel(virtualDevice, code + fresh, workgroups, reps);
      gpunixS = Math.min(gpunixS, g.run);
      gpunixCreateS = Math.min(gpunixCreateS, g.create);
    }
    results.push({
      kernel: name,
      reps,
      bare_s: bareS,
      bounded_s: boundedS,
      flagged_s: hasFlag ? flaggedS : null,
      gpunix_s: gpunixS,
      rewrite_ratio: bareS / boundedS,
      flag_ratio: hasFlag ? bareS / flaggedS : null,
      gpunix_ratio: bareS / gpunixS,
      bare_create_s: bareCreateS,
      gpunix_create_s: gpunixCreateS,
      create_ratio: bareCreateS / gpunixCreateS,
    });
  }
  await proc.exit();
  await kernel.shutdown();
  bare.destroy();
  const info = adapter.info;
  console.log(JSON.stringify({ bench: 'watchdog', machine: { cpu: cpuModel(), adapter: `${info.vendor} ${info.architecture} ${info.description}`.trim() }, results }, null, 2));
  console.log('\nkernel          bare ms  bounded ms  +flag ms  gpunix ms  rewrite  +flag  gpunix   create ms bare/gpunix  ratio');
  for (const r of results) {
    const ms = (s: unknown) => (s === null ? '-' : ((s as number) * 1000).toFixed(1)).padStart(9);
    const ratio = (x: unknown) => (x === null ? '-' : (x as number).toFixed(3)).padStart(6);
    console.log(
      `${String(r.kernel).padEnd(14)} ${ms(r.bare_s)} ${ms(r.bounded_s)} ${ms(r.flagged_s)} ${ms(r.gpunix_s)}  ${ratio(r.rewrite_ratio)} ${ratio(r.flag_ratio)} ${ratio(r.gpunix_ratio)}  ${ms(r.bare_create_s)} ${ms(r.gpunix_create_s)}  ${ratio(r.create_ratio)}`,
    );
  }
  void gpu;
}

await main();
process.exit(0);
