// y = a*x + y over a million floats, repeated: a 1D, bandwidth-bound WebGPU program.
// Runs unmodified on bare WebGPU or as a gpunix process: `gpunix run examples/saxpy.mjs [iterations]`.
const n = 1 << 18;
const iterations = Number(process.argv[2] ?? 60);
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter.requestDevice();
const module = device.createShaderModule({
  code: /* wgsl */ `
    @group(0) @binding(0) var<storage, read> x: array<f32>;
    @group(0) @binding(1) var<storage, read_write> y: array<f32>;
    @group(0) @binding(2) var<uniform> a: f32;
    @compute @workgroup_size(64)
    fn main(@builtin(global_invocation_id) id: vec3u) {
      if (id.x < arrayLength(&y)) { y[id.x] = a * x[id.x] + y[id.x]; }
    }`,
});
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
const x = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
new Float32Array(x.getMappedRange()).forEach((_, i, arr) => (arr[i] = i % 7));
x.unmap();
const y = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
const a = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(a, 0, new Float32Array([2]));
const group = device.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer: x } }, { binding: 1, resource: { buffer: y } }, { binding: 2, resource: { buffer: a } }],
});
for (let i = 0; i < iterations; i++) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(n / 64));
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
}
const readback = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const encoder = device.createCommandEncoder();
encoder.copyBufferToBuffer(y, 0, readback, 0, n * 4);
device.queue.submit([encoder.finish()]);
await readback.mapAsync(GPUMapMode.READ);
const result = new Float32Array(readback.getMappedRange());
for (let i = 0; i < n; i += 997) {
  if (result[i] !== 2 * (i % 7) * iterations) throw new Error(`saxpy: y[${i}] = ${result[i]}, expected ${2 * (i % 7) * iterations}`);
}
readback.unmap();
console.log(`saxpy: ${iterations} iterations over ${n} floats verified`);
device.destroy();
