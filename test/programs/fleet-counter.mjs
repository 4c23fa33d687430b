// A long iterative WebGPU program for the fleet's tests: `steps` steps of a running state (1024
// u32s), one dispatch a step, paced by `stepMs` of sleep between steps (so it runs about
// steps × stepMs on any machine while using little CPU). Each dispatch also writes the number of
// steps done into the GPU buffer "progress", in the same dispatch as the state, so any checkpoint
// image has a state and a step count that agree. Restored from an image (device.gpunix.restored),
// it finds "state" and "progress" by label and resumes where the image left off. Prints
// `started at step N`, then `checksum N` when done (both also appended to `outFile` when given; the
// expected value is expectedChecksum(steps), computed on the CPU).
// Usage: fleet-counter.mjs <steps> <stepMs> [outFile]
import { appendFileSync } from 'node:fs';

const WORDS = 1024;
const WGSL = `@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<storage, read_write> progress: array<u32>;
@group(0) @binding(2) var<uniform> step: u32;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  state[g.x] = (state[g.x] ^ (step * 2654435761u)) * 69069u + g.x;
  if (g.x == 0u) { progress[0] = step + 1u; }
}`;

/** The checksum after `steps` steps, computed on the CPU with the shader's u32 arithmetic. */
export function expectedChecksum(steps) {
  const state = new Uint32Array(WORDS);
  for (let s = 0; s < steps; s++) {
    const mix = Math.imul(s, 2654435761) >>> 0;
    for (let x = 0; x < WORDS; x++) state[x] = (Math.imul((state[x] ^ mix) >>> 0, 69069) + x) >>> 0;
  }
  return fold(state);
}

function fold(words) {
  let sum = 0;
  for (const v of words) sum = (Math.imul(sum, 31) + v) >>> 0;
  return sum;
}

async function read(device, buffer, size) {
  const out = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, out, 0, size);
  device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  const words = new Uint32Array(out.getMappedRange().slice(0));
  out.destroy();
  return words;
}

async function main() {
  const steps = Number(process.argv[2]);
  const stepMs = Number(process.argv[3] ?? 0);
  const outFile = process.argv[4];
  if (!Number.isInteger(steps) || steps < 0) throw new Error('usage: fleet-counter.mjs <steps> <stepMs> [outFile]');
  const device = await (await navigator.gpu.requestAdapter()).requestDevice();
  const restored = device.gpunix?.restored === true;
  const state = restored ? device.gpunix.findBuffer('state') : device.createBuffer({ label: 'state', size: WORDS * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const progress = restored ? device.gpunix.findBuffer('progress') : device.createBuffer({ label: 'progress', size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  if (!state || !progress) throw new Error(`restored image lacks its buffers: ${JSON.stringify(device.gpunix.labels())}`);
  const from = restored ? (await read(device, progress, 4))[0] : 0;
  const started = `started at step ${from}${restored ? ' (restored)' : ''}`;
  console.log(started);
  if (outFile) appendFileSync(outFile, `${started}\n`);
  const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL }) } });
  const stepBuffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: state } }, { binding: 1, resource: { buffer: progress } }, { binding: 2, resource: { buffer: stepBuffer } }],
  });
  for (let s = from; s < steps; s++) {
    device.queue.writeBuffer(stepBuffer, 0, new Uint32Array([s]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(WORDS / 64);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    if (stepMs > 0) await new Promise((r) => setTimeout(r, stepMs));
  }
  const line = `checksum ${fold(await read(device, state, WORDS * 4))}`;
  console.log(line);
  if (outFile) appendFileSync(outFile, `${line}\n`);
}

// Run as a program (gpunix run); imported (for expectedChecksum) it does nothing.
if (process.argv[2] !== undefined && globalThis.navigator?.gpu) await main();
