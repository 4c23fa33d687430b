// A 256-bin histogram of pseudo-random bytes with atomics, in rounds.
// `gpunix run examples/histogram.mjs [rounds]`
const rounds = Number(process.argv[2] ?? 24);
const count = 1 << 18;
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter.requestDevice();
const module = device.createShaderModule({
  code: /* wgsl */ `
    @group(0) @binding(0) var<storage, read> data: array<u32>;
    @group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>, 256>;
    @compute @workgroup_size(128)
    fn main(@builtin(global_invocation_id) id: vec3u) {
      if (id.x < arrayLength(&data)) { atomicAdd(&bins[data[id.x] & 255u], 1u); }
    }`,
});
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
const values = new Uint32Array(count);
let seed = 12345;
for (let i = 0; i < count; i++) values[i] = seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
const expected = new Uint32Array(256);
for (const v of values) expected[v & 255] += rounds;
const data = device.createBuffer({ size: count * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(data, 0, values);
const bins = device.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
const group = device.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer: data } }, { binding: 1, resource: { buffer: bins } }],
});
for (let r = 0; r < rounds; r++) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(count / 128);
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
}
const readback = device.createBuffer({ size: 1024, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const encoder = device.createCommandEncoder();
encoder.copyBufferToBuffer(bins, 0, readback, 0, 1024);
device.queue.submit([encoder.finish()]);
await readback.mapAsync(GPUMapMode.READ);
const result = new Uint32Array(readback.getMappedRange());
for (let i = 0; i < 256; i++) {
  if (result[i] !== expected[i]) throw new Error(`histogram: bin ${i} = ${result[i]}, expected ${expected[i]}`);
}
readback.unmap();
console.log(`histogram: ${rounds} rounds of ${count} values verified`);
device.destroy();
