// An iterative WebGPU program for the checkpoint CLI test. `full`: 6 steps, prints a checksum.
// `first <image>`: 3 steps, prints "ready", waits until <image> exists (a checkpoint), exits.
import { existsSync } from 'node:fs';
export const WGSL = `@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<uniform> step: u32;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  state[g.x] = (state[g.x] ^ (step * 2654435761u)) * 69069u + g.x;
}`;
export async function advance(device, pipeline, state, from, to) {
  const stepBuffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: state } }, { binding: 1, resource: { buffer: stepBuffer } }] });
  for (let s = from; s < to; s++) {
    device.queue.writeBuffer(stepBuffer, 0, new Uint32Array([s]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(16);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  }
}
export async function checksum(device, state) {
  const out = device.createBuffer({ size: 4096, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(state, 0, out, 0, 4096);
  device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  let sum = 0;
  for (const v of new Uint32Array(out.getMappedRange())) sum = (Math.imul(sum, 31) + v) >>> 0;
  return sum;
}
if (process.argv[2]) {
  const device = await (await navigator.gpu.requestAdapter()).requestDevice();
  const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL }) } });
  const state = device.createBuffer({ label: 'state', size: 4096, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  if (process.argv[2] === 'full') {
    await advance(device, pipeline, state, 0, 6);
    console.log(`checksum ${await checksum(device, state)}`);
  } else {
    await advance(device, pipeline, state, 0, 3);
    console.log('ready');
    while (!existsSync(process.argv[3])) await new Promise((r) => setTimeout(r, 20));
  }
}
