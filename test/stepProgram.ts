// An iterative program for the memory tests: `buffers` buffers of `bytes` each, advanced `steps`
// times by STEP_WGSL with the program idle (on the CPU) between steps, so the kernel may evict
// (and spill) its buffers meanwhile; then every word is checked against a CPU oracle.

import type { ProcessHandle } from '../src/index.js';
import './helpers.js';

export const STEP_WGSL = `
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> step: u32;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&data)) { data[g.x] = data[g.x] * 3u + step + g.x; }
}`;

/** What STEP_WGSL leaves in element `i` after `steps` steps from `seed + i`. */
export function expectedStep(seed: number, i: number, steps: number): number {
  let v = (seed + i) >>> 0;
  for (let s = 0; s < steps; s++) v = (Math.imul(v, 3) + s + i) >>> 0;
  return v;
}

/** Reads a whole buffer back through a staging copy. */
export async function readBack(device: GPUDevice, buffer: GPUBuffer, bytes: number): Promise<Uint32Array> {
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the program as `proc`, idling `idleMs` between steps; true when every checked word is exact. */
export async function iterate(proc: ProcessHandle, seed: number, buffers: number, bytes: number, steps: number, idleMs = 5): Promise<boolean> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: STEP_WGSL }) } });
  const words = bytes / 4;
  const data = [...Array(buffers)].map((_, b) => {
    const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Uint32Array(buffer.getMappedRange()).forEach((_, i, a) => (a[i] = seed + b + i));
    buffer.unmap();
    return buffer;
  });
  const stepBuffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const groups = data.map((buffer) =>
    device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }, { binding: 1, resource: { buffer: stepBuffer } }] }),
  );
  for (let s = 0; s < steps; s++) {
    device.queue.writeBuffer(stepBuffer, 0, new Uint32Array([s]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    for (const group of groups) {
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(Math.ceil(words / 64));
    }
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    await sleep(idleMs);
  }
  let exact = true;
  for (const [b, buffer] of data.entries()) {
    const out = await readBack(device, buffer, bytes);
    for (let i = 0; i < words; i++) if (out[i] !== expectedStep(seed + b, i, steps)) exact = false;
  }
  device.destroy();
  return exact;
}
