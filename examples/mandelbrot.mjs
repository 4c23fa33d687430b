// Iteration counts of the Mandelbrot set on a 2D grid that does not divide evenly: compute-bound.
// `gpunix run examples/mandelbrot.mjs [width] [height]`
const width = Number(process.argv[2] ?? 300);
const height = Number(process.argv[3] ?? 200);
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter.requestDevice();
const module = device.createShaderModule({
  code: /* wgsl */ `
    @group(0) @binding(0) var<storage, read_write> counts: array<u32>;
    @group(0) @binding(1) var<uniform> dims: vec2u;
    @compute @workgroup_size(8, 8)
    fn main(@builtin(global_invocation_id) g: vec3u) {
      if (g.x >= dims.x || g.y >= dims.y) { return; }
      let c = vec2f(f32(g.x) / f32(dims.x) * 3.0 - 2.0, f32(g.y) / f32(dims.y) * 2.0 - 1.0);
      var z = vec2f(0.0);
      var i = 0u;
      for (; i < 256u && dot(z, z) < 4.0; i++) { z = vec2f(z.x * z.x - z.y * z.y, 2.0 * z.x * z.y) + c; }
      counts[g.y * dims.x + g.x] = i;
    }`,
});
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
const bytes = width * height * 4;
const counts = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const dims = device.createBuffer({ size: 8, usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true });
new Uint32Array(dims.getMappedRange()).set([width, height]);
dims.unmap();
const group = device.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer: counts } }, { binding: 1, resource: { buffer: dims } }],
});
const encoder = device.createCommandEncoder();
const pass = encoder.beginComputePass();
pass.setPipeline(pipeline);
pass.setBindGroup(0, group);
pass.dispatchWorkgroups(Math.ceil(width / 8), Math.ceil(height / 8));
pass.end();
const readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
encoder.copyBufferToBuffer(counts, 0, readback, 0, bytes);
device.queue.submit([encoder.finish()]);
await readback.mapAsync(GPUMapMode.READ);
const result = new Uint32Array(readback.getMappedRange());
const inside = result.filter((n) => n === 256).length;
// The origin's column is inside the set; the far left corner escapes at once.
if (result[0] !== 1 || inside === 0) throw new Error(`mandelbrot: unexpected counts (corner ${result[0]}, inside ${inside})`);
readback.unmap();
console.log(`mandelbrot: ${width}x${height}, ${inside} points inside the set`);
device.destroy();
