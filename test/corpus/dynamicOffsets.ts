// Dynamic offsets: an explicit bind group layout whose uniform and storage bindings both have
// hasDynamicOffset, an explicit pipeline layout, and four dispatches that each select another
// uniform slot and another output region by offset (both setBindGroup overloads).

import { expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'dynamic-uniform-offsets';

const SLOTS = 4;
const STRIDE = 256; // minUniformBufferOffsetAlignment and minStorageBufferOffsetAlignment
const ELEMENTS = 48; // u32 per output region (192 bytes, bound as 256)

const SHADER = /* wgsl */ `
struct Slot { scale: u32, bias: u32, id: u32, pad: u32 }
@group(0) @binding(0) var<uniform> slot: Slot;
@group(0) @binding(1) var<storage, read_write> region: array<u32, ${STRIDE / 4}>;

@compute @workgroup_size(16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x >= ${ELEMENTS}u) { return; }
  region[gid.x] = gid.x * slot.scale + slot.bias + (slot.id << 24u);
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const uniforms = device.createBuffer({ size: SLOTS * STRIDE, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const slotData = new Uint32Array((SLOTS * STRIDE) / 4);
  for (let s = 0; s < SLOTS; s++) slotData.set([3 + s * 2, 100 * (s + 1), s + 1, 0], (s * STRIDE) / 4);
  device.queue.writeBuffer(uniforms, 0, slotData);
  const out = device.createBuffer({ size: SLOTS * STRIDE, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });

  const layout = device.createBindGroupLayout({
    entries: [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: 16 } },
      { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage', hasDynamicOffset: true } },
    ],
  });
  const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [layout] });
  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: pipelineLayout, compute: { module, entryPoint: 'main' } });
  const group = device.createBindGroup({
    layout,
    entries: [
      { binding: 0, resource: { buffer: uniforms, offset: 0, size: 16 } },
      { binding: 1, resource: { buffer: out, offset: 0, size: STRIDE } },
    ],
  });

  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  // Slot s writes region (s + 1) % SLOTS, so offsets differ between the two bindings.
  const order = [2, 0, 3, 1];
  const offsets = new Uint32Array(2 * SLOTS);
  order.forEach((s, k) => offsets.set([s * STRIDE, ((s + 1) % SLOTS) * STRIDE], 2 * k));
  for (let k = 0; k < SLOTS; k++) {
    if (k % 2 === 0) pass.setBindGroup(0, group, [offsets[2 * k], offsets[2 * k + 1]]);
    else pass.setBindGroup(0, group, offsets, 2 * k, 2);
    pass.dispatchWorkgroups(Math.ceil(ELEMENTS / 16));
  }
  pass.end();
  // The program reuses its offsets array after encoding: what was encoded must not change.
  offsets.fill(0);
  device.queue.submit([encoder.finish()]);

  const result = await readBack(device, [{ buffer: out, size: SLOTS * STRIDE }]);
  uniforms.destroy();
  out.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return result;
}
