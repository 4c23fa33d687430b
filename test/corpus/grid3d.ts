// 3D grid of 10x5x3 cells in 4x2x2 workgroups (uneven in every dimension), with the builtins declared
// inside a struct parameter next to a plain builtin parameter, as programs written for other APIs do.

import { expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'grid-3d-struct-builtins';

const DIMS = [10, 5, 3] as const;
const WG = [4, 2, 2] as const;

const SHADER = /* wgsl */ `
struct Ids {
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lidx: u32,
  @builtin(local_invocation_id) lid: vec3u,
}
@group(0) @binding(0) var<storage, read_write> out: array<vec4u>;

const DIMS = vec3u(${DIMS.join('u, ')}u);

@compute @workgroup_size(${WG.join(', ')})
fn main(ids: Ids, @builtin(workgroup_id) wid: vec3u) {
  if (any(ids.gid >= DIMS)) { return; }
  let i = (ids.gid.z * DIMS.y + ids.gid.y) * DIMS.x + ids.gid.x;
  let flatWorkgroup = (wid.z * ids.nwg.y + wid.y) * ids.nwg.x + wid.x;
  out[i] = vec4u(
    flatWorkgroup,
    ids.lidx | (ids.lid.x << 8u) | (ids.lid.y << 16u) | (ids.lid.z << 24u),
    ids.nwg.x | (ids.nwg.y << 8u) | (ids.nwg.z << 16u),
    i * 7u + 1u,
  );
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const count = DIMS[0] * DIMS[1] * DIMS[2];
  const out = device.createBuffer({ size: count * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(DIMS[0] / WG[0]), Math.ceil(DIMS[1] / WG[1]), Math.ceil(DIMS[2] / WG[2]));
  pass.end();
  device.queue.submit([encoder.finish()]);
  const result = await readBack(device, [{ buffer: out, size: count * 16 }]);
  out.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return result;
}
