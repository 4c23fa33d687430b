// What the GPU watchdog costs loop-heavy kernels: each kernel's device time on bare Dawn with the
// program's own code, on bare Dawn with the watchdog's bounded code (the rewrite's cost alone), and
// in a gpunix process (the rewrite plus the kernel's path), in one run on one device.
// Ratio = bare time / other time (1.0: free; the target is >= 0.95).
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

/** Seconds for `reps` dispatches of `code` (one submit each, awaited together) on `device`. */
async function timeKernel(device: GPUDevice, code: string, workgroups: number, reps: number): Promise<number> {
  const buffer = device.createBuffer({ size: workgroups * 64 * 4, usage: GPUBufferUsage.STORAGE });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const once = () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(workgroups);
    pass.end();
    device.queue.submit([encoder.finish()]);
  };
  once(); // warm-up: compilation and the cost model
  await device.queue.onSubmittedWorkDone();
  collectGarbage();
  const start = performance.now();
  for (let i = 0; i < reps; i++) once();
  await device.queue.onSubmittedWorkDone();
  const seconds = (performance.now() - start) / 1000;
  buffer.destroy();
  return seconds;
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
    // Interleaved samples, best of each: the machine's noise hits every side alike.
    let bareS = Infinity;
    let boundedS = Infinity;
    let gpunixS = Infinity;
    for (let round = 0; round < 3; round++) {
      bareS = Math.min(bareS, await timeKernel(bare, code, workgroups, reps));
      boundedS = Math.min(boundedS, await timeKernel(bare, bounded, workgroups, reps));
      gpunixS = Math.min(gpunixS, await timeKernel(virtualDevice, code, workgroups, reps));
    }
    results.push({ kernel: name, reps, bare_s: bareS, bounded_s: boundedS, gpunix_s: gpunixS, rewrite_ratio: bareS / boundedS, gpunix_ratio: bareS / gpunixS });
  }
  await proc.exit();
  await kernel.shutdown();
  bare.destroy();
  const info = adapter.info;
  console.log(JSON.stringify({ bench: 'watchdog', machine: { cpu: cpuModel(), adapter: `${info.vendor} ${info.architecture} ${info.description}`.trim() }, results }, null, 2));
  console.log('\nkernel          bare ms  bounded ms  gpunix ms  rewrite ratio  gpunix ratio');
  for (const r of results) {
    const ms = (s: unknown) => ((s as number) * 1000).toFixed(1).padStart(9);
    console.log(`${String(r.kernel).padEnd(14)} ${ms(r.bare_s)} ${ms(r.bounded_s)}  ${ms(r.gpunix_s)}  ${(r.rewrite_ratio as number).toFixed(3).padStart(12)}  ${(r.gpunix_ratio as number).toFixed(3).padStart(12)}`);
  }
  void gpu;
}

await main();
process.exit(0);
