// 1D grid that does not divide evenly (1000 elements, workgroups of 64): y = a*x + y + num_workgroups.x.
// Inputs are uploaded with mappedAtCreation; the tail past n keeps its sentinel, proving the bound check.

import { expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'saxpy-1d-uneven';

const N = 1000;
const CAPACITY = 1024;
const WORKGROUP = 64;

const SHADER = /* wgsl */ `
struct Params { a: f32, n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x;
  if (i >= params.n) { return; }
  y[i] = params.a * x[i] + y[i] + f32(nwg.x);
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);

  const params = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true });
  const paramView = params.getMappedRange();
  new Float32Array(paramView, 0, 1)[0] = 2.5;
  new Uint32Array(paramView, 4, 1)[0] = N;
  params.unmap();

  const x = device.createBuffer({ size: CAPACITY * 4, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
  const xs = new Float32Array(x.getMappedRange());
  for (let i = 0; i < CAPACITY; i++) xs[i] = i * 0.5 - 100;
  x.unmap();

  const y = device.createBuffer({ size: CAPACITY * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  const ys = new Float32Array(y.getMappedRange());
  for (let i = 0; i < CAPACITY; i++) ys[i] = i < N ? 1000 - i : -7; // -7: sentinel past n
  y.unmap();

  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: params } },
      { binding: 1, resource: { buffer: x } },
      { binding: 2, resource: { buffer: y } },
    ],
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(N / WORKGROUP));
  pass.end();
  device.queue.submit([encoder.finish()]);

  const result = await readBack(device, [{ buffer: y, size: CAPACITY * 4 }]);
  for (const b of [params, x, y]) b.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return result;
}
