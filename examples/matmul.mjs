// C = A x B with 16x16 tiles in workgroup memory: a 2D grid with barriers.
// `gpunix run examples/matmul.mjs [size] [repeats]`
const size = Number(process.argv[2] ?? 128);
const repeats = Number(process.argv[3] ?? 12);
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter.requestDevice();
const module = device.createShaderModule({
  code: /* wgsl */ `
    const T = 16u;
    @group(0) @binding(0) var<storage, read> a: array<f32>;
    @group(0) @binding(1) var<storage, read> b: array<f32>;
    @group(0) @binding(2) var<storage, read_write> c: array<f32>;
    @group(0) @binding(3) var<uniform> n: u32;
    var<workgroup> ta: array<f32, 256>;
    var<workgroup> tb: array<f32, 256>;
    @compute @workgroup_size(16, 16)
    fn main(@builtin(global_invocation_id) g: vec3u, @builtin(local_invocation_id) l: vec3u) {
      var sum = 0.0;
      for (var k = 0u; k < n; k += T) {
        ta[l.y * T + l.x] = select(0.0, a[g.y * n + k + l.x], g.y < n && k + l.x < n);
        tb[l.y * T + l.x] = select(0.0, b[(k + l.y) * n + g.x], g.x < n && k + l.y < n);
        workgroupBarrier();
        for (var i = 0u; i < T; i++) { sum += ta[l.y * T + i] * tb[i * T + l.x]; }
        workgroupBarrier();
      }
      if (g.x < n && g.y < n) { c[g.y * n + g.x] = sum; }
    }`,
});
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
const bytes = size * size * 4;
const A = new Float32Array(size * size).map((_, i) => (i % 5) - 2);
const B = new Float32Array(size * size).map((_, i) => (i % 3) - 1);
const storage = (data) => {
  const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buffer, 0, data);
  return buffer;
};
const a = storage(A);
const b = storage(B);
const c = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const n = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(n, 0, new Uint32Array([size]));
const group = device.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [a, b, c, n].map((buffer, binding) => ({ binding, resource: { buffer } })),
});
for (let r = 0; r < repeats; r++) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(size / 16), Math.ceil(size / 16));
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
}
const readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const encoder = device.createCommandEncoder();
encoder.copyBufferToBuffer(c, 0, readback, 0, bytes);
device.queue.submit([encoder.finish()]);
await readback.mapAsync(GPUMapMode.READ);
const C = new Float32Array(readback.getMappedRange());
for (const [row, col] of [[0, 0], [size - 1, size - 1], [7, size - 3]]) {
  let expected = 0;
  for (let k = 0; k < size; k++) expected += A[row * size + k] * B[k * size + col];
  if (C[row * size + col] !== expected) throw new Error(`matmul: C[${row},${col}] = ${C[row * size + col]}, expected ${expected}`);
}
readback.unmap();
console.log(`matmul: ${size}x${size} product verified (${repeats} runs)`);
device.destroy();
