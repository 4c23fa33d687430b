// A 64-bin histogram of 6000 values with atomicAdd, first into a workgroup-shared histogram, then
// into the global one; also atomicMax and atomicOr over all values. All results are order-independent.

import { expectNoErrors, openDevice, pseudoRandom, readBack } from './common.js';

export const name = 'histogram-atomics';

const N = 6000;
const BINS = 64;
const WORKGROUP = 128;

const SHADER = /* wgsl */ `
struct Totals { maxValue: atomic<u32>, orBits: atomic<u32>, seen: atomic<u32> }
@group(0) @binding(0) var<storage, read> values: array<u32>;
@group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>, ${BINS}>;
@group(0) @binding(2) var<storage, read_write> totals: Totals;

var<workgroup> local: array<atomic<u32>, ${BINS}>;

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_index) lidx: u32) {
  if (lidx < ${BINS}u) { atomicStore(&local[lidx], 0u); }
  workgroupBarrier();
  if (gid.x < arrayLength(&values)) {
    let v = values[gid.x];
    atomicAdd(&local[v % ${BINS}u], 1u);
    atomicMax(&totals.maxValue, v >> 4u);
    atomicOr(&totals.orBits, 1u << (v % 32u));
    atomicAdd(&totals.seen, 1u);
  }
  workgroupBarrier();
  if (lidx < ${BINS}u) {
    let c = atomicLoad(&local[lidx]);
    if (c > 0u) { atomicAdd(&bins[lidx], c); }
  }
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const data = pseudoRandom(N, 777);
  const values = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(values, 0, data);
  const bins = device.createBuffer({ size: BINS * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const totals = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });

  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: values } },
      { binding: 1, resource: { buffer: bins } },
      { binding: 2, resource: { buffer: totals } },
    ],
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(N / WORKGROUP));
  // A second dispatch of the same grid doubles every count: atomics across dispatches.
  pass.dispatchWorkgroups(Math.ceil(N / WORKGROUP));
  pass.end();
  device.queue.submit([encoder.finish()]);

  const result = await readBack(device, [
    { buffer: bins, size: BINS * 4 },
    { buffer: totals, size: 12 },
  ]);
  for (const b of [values, bins, totals]) b.destroy();
  await expectNoErrors(device, name);
  device.destroy();

  const counts = new Uint32Array(result.buffer, 0, BINS);
  const expected = new Uint32Array(BINS);
  for (const v of data) expected[v % BINS] += 2;
  if (counts.some((c, i) => c !== expected[i])) throw new Error(`corpus program ${name}: histogram does not match the CPU's`);
  return result;
}
