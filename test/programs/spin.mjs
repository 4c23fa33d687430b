// A program that never finishes on its own: allocates a few buffers and keeps submitting compute
// work, printing "spinning" once it has run some. For tests that kill clients mid-work.
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
const module = device.createShaderModule({
  code: `@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var x = data[g.x];
  for (var i = 0u; i < 64u; i++) { x = x * 1664525u + 1013904223u; }
  data[g.x] = x;
}`,
});
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
const buffers = [1, 2, 3].map((k) => device.createBuffer({ label: `data${k}`, size: 64 * 1024, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST }));
const groups = buffers.map((buffer) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
for (let round = 0; ; round++) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  for (const group of groups) {
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(256);
  }
  pass.end();
  device.queue.submit([encoder.finish()]);
  // Keep two rounds queued so that a kill always finds work in flight.
  if (round % 2 === 1) await device.queue.onSubmittedWorkDone();
  if (round === 3) console.log('spinning');
}
