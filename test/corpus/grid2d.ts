// 2D grid of 37x23 cells in 8x4 workgroups (uneven in both dimensions): every cell records its
// workgroup_id, local_invocation_index and num_workgroups; invocations off the grid count themselves
// with an atomic, an order-independent total (5*8 * 6*4 - 37*23 = 109).

import { expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'grid-2d-builtins';

const W = 37;
const H = 23;
const WG_X = 8;
const WG_Y = 4;

const SHADER = /* wgsl */ `
struct Cell { wid: u32, lidx: u32, nwg: u32, coord: u32 }
@group(0) @binding(0) var<storage, read_write> cells: array<Cell>;
@group(0) @binding(1) var<storage, read_write> idle: atomic<u32>;

@compute @workgroup_size(${WG_X}, ${WG_Y})
fn main(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(local_invocation_index) lidx: u32,
  @builtin(num_workgroups) nwg: vec3u,
) {
  if (gid.x >= ${W}u || gid.y >= ${H}u) {
    atomicAdd(&idle, 1u);
    return;
  }
  let i = gid.y * ${W}u + gid.x;
  cells[i] = Cell(wid.y * nwg.x + wid.x, lidx, (nwg.x << 16u) | (nwg.y << 8u) | nwg.z, (gid.x << 16u) | gid.y);
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const cellBytes = W * H * 16;
  const cells = device.createBuffer({ size: cellBytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const idle = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: cells } },
      { binding: 1, resource: { buffer: idle } },
    ],
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(W / WG_X), Math.ceil(H / WG_Y));
  pass.end();
  device.queue.submit([encoder.finish()]);

  const result = await readBack(device, [
    { buffer: cells, size: cellBytes },
    { buffer: idle, size: 4 },
  ]);
  cells.destroy();
  idle.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return result;
}
