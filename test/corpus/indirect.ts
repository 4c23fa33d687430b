// Indirect dispatch: a planner pass computes dispatch arguments into a STORAGE|INDIRECT buffer that a
// later pass dispatches from, and a second dispatch reads its arguments, written by writeBuffer, at a
// non-zero offset. Each invocation stamps what it saw of the grid.

import { expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'indirect-dispatch';

const ITEMS = 300; // the planner turns this into ceil(300 / 32) = 10 workgroups
const WORKGROUP = 32;
const OUT_WORDS = 1024;

const SHADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> args: array<u32>;
@group(0) @binding(1) var<uniform> items: u32;

@compute @workgroup_size(1)
fn plan() {
  args[0] = (items + ${WORKGROUP - 1}u) / ${WORKGROUP}u;
  args[1] = 1u;
  args[2] = 1u;
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<uniform> base: u32;

@compute @workgroup_size(${WORKGROUP})
fn work(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(workgroup_id) wid: vec3u) {
  let width = nwg.x * ${WORKGROUP}u;
  let i = base + (gid.z * nwg.y + gid.y) * width + gid.x;
  if (i >= arrayLength(&out)) { return; }
  out[i] = 0x10000000u | (nwg.x << 16u) | (nwg.y << 12u) | (nwg.z << 8u) | (wid.y << 4u) | wid.x;
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const module = device.createShaderModule({ code: SHADER });
  const plan = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'plan' } });
  const work = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'work' } });

  const planned = device.createBuffer({ size: 12, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.INDIRECT | GPUBufferUsage.COPY_SRC });
  const written = device.createBuffer({ size: 32, usage: GPUBufferUsage.INDIRECT | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  device.queue.writeBuffer(written, 16, new Uint32Array([2, 3, 1]));
  const out = device.createBuffer({ size: OUT_WORDS * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const uniforms = device.createBuffer({ size: 512, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(uniforms, 0, new Uint32Array([ITEMS]));
  device.queue.writeBuffer(uniforms, 256, new Uint32Array([640])); // second dispatch's base index

  const planGroup = device.createBindGroup({
    layout: plan.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: planned } },
      { binding: 1, resource: { buffer: uniforms, offset: 0, size: 4 } },
    ],
  });
  const firstGroup = device.createBindGroup({
    layout: work.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: out } },
      { binding: 1, resource: { buffer: uniforms, offset: 0, size: 4 } }, // base 300: after the planned items
    ],
  });
  const secondGroup = device.createBindGroup({
    layout: work.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: out } },
      { binding: 1, resource: { buffer: uniforms, offset: 256, size: 4 } },
    ],
  });

  const encoder = device.createCommandEncoder();
  const planning = encoder.beginComputePass({ label: 'plan' });
  planning.setPipeline(plan);
  planning.setBindGroup(0, planGroup);
  planning.dispatchWorkgroups(1);
  planning.end();
  const working = encoder.beginComputePass({ label: 'work' });
  working.setPipeline(work);
  working.setBindGroup(0, firstGroup);
  working.dispatchWorkgroupsIndirect(planned, 0);
  working.setBindGroup(0, secondGroup);
  working.dispatchWorkgroupsIndirect(written, 16);
  working.end();
  device.queue.submit([encoder.finish()]);

  const result = await readBack(device, [
    { buffer: out, size: OUT_WORDS * 4 },
    { buffer: planned, size: 12 },
    { buffer: written, offset: 16, size: 12 },
  ]);
  for (const b of [planned, written, out, uniforms]) b.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return result;
}
