// Does queue.submit on Dawn's OpenGL ES backend return before a long compute pass is done?
// Bare Dawn (npm `webgpu`), no gpunix. On llvmpipe it does not: the submit runs the kernel
// (docs/daemon.md, "What never waits for the device").
//
//   EGL_PLATFORM=surfaceless node scripts/probe-gl-submit.mjs [iterations]

import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
process.env.EGL_PLATFORM ??= 'surfaceless';
const iterations = Number(process.argv[2] ?? 1 << 27);

// Kept referenced while its device lives: dawn.node crashes when the GPU object is collected.
const gpu = create(['backend=opengles']);
const adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' });
if (!adapter) throw new Error('no OpenGL ES adapter (Mesa EGL with EGL_PLATFORM=surfaceless is needed)');
const device = await adapter.requestDevice();
const SPIN = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { var x = d[1]; for (var i = 0u; i < d[0]; i++) { x = x * 1664525u + 1013904223u; } d[1] = x; }`;
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: SPIN }) } });
const buffer = device.createBuffer({ size: 8, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
const readback = device.createBuffer({ size: 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
// dawn.node does not keep Node's event loop alive for a pending onSubmittedWorkDone.
const keepalive = setInterval(() => {}, 1000);

for (const copyAfter of [false, true]) {
  device.queue.writeBuffer(buffer, 0, new Uint32Array([iterations, 1]));
  await device.queue.onSubmittedWorkDone();
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(1);
  pass.end();
  if (copyAfter) encoder.copyBufferToBuffer(buffer, 0, readback, 0, 8);
  const commandBuffer = encoder.finish();
  const start = performance.now();
  device.queue.submit([commandBuffer]);
  const returned = performance.now() - start;
  await device.queue.onSubmittedWorkDone();
  const done = performance.now() - start;
  console.log(`${copyAfter ? 'a pass and a copy' : 'a pass'}: submit returned after ${returned.toFixed(0)} ms, the work was done after ${done.toFixed(0)} ms`);
}
clearInterval(keepalive);
device.destroy();
