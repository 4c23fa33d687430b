// Transfers at non-zero offsets, interleaved with compute: writeBuffer (with dataOffset and size),
// clearBuffer (range and to-end), copyBufferToBuffer between offsets, in queue order around a submit,
// and a readback through a mapping of part of a staging buffer.

import { concat, expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'copies-and-clears';

const SIZE = 512;

const SHADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> b: array<u32>;

@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i % 3u == 0u) { b[i] = b[i] ^ (a[i] * 3u + 0x5a5a0000u); }
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const pattern = new Uint32Array(SIZE / 4).map((_, i) => (i * 0x01010101 + 0x00c0ffee) >>> 0);

  const a = device.createBuffer({ size: SIZE, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(a, 0, pattern);
  const b = device.createBuffer({
    size: SIZE,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  new Uint8Array(b.getMappedRange()).fill(0xab);
  b.unmap();
  const c = device.createBuffer({ size: SIZE, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  // Before the submit in queue order: elements 2..5 of the array land at byte 40 of c.
  const words = new Uint32Array([0xdead0001, 0xdead0002, 0xdead0003, 0xdead0004, 0xdead0005, 0xdead0006]);
  device.queue.writeBuffer(c, 40, words, 2, 4);
  words.fill(0); // writeBuffer took its copy at the call

  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: a } },
      { binding: 1, resource: { buffer: b } },
    ],
  });

  const encoder = device.createCommandEncoder();
  encoder.clearBuffer(b, 64, 128);
  encoder.copyBufferToBuffer(a, 16, b, 256, 96);
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(SIZE / 4 / 32);
  pass.end();
  encoder.copyBufferToBuffer(b, 8, c, 64, 400);
  encoder.clearBuffer(c, 448);
  encoder.clearBuffer(a, 0, 4);
  device.queue.submit([encoder.finish()]);
  // After the submit in queue order: overwrites part of what the copy put there.
  device.queue.writeBuffer(c, 100, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer, 4, 4);

  const result = await readBack(device, [
    { buffer: a, offset: 0, size: 64 },
    { buffer: b, size: SIZE },
    { buffer: c, size: SIZE },
  ]);
  // A partial mapping: only bytes 256..767 of a staging buffer, read through an offset range.
  const partial = device.createBuffer({ size: 1024, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder2 = device.createCommandEncoder();
  encoder2.copyBufferToBuffer(c, 0, partial, 256, SIZE);
  device.queue.submit([encoder2.finish()]);
  await partial.mapAsync(GPUMapMode.READ, 256, SIZE);
  const mapped = new Uint8Array(partial.getMappedRange(256, SIZE).slice(0));
  partial.unmap();
  for (const buf of [a, b, c, partial]) buf.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return concat(result, mapped);
}
