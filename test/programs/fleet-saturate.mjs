// A program that keeps its device busy for `durationMs` (wall time): compute dispatches of a few
// milliseconds each, always six queued, so that its share of the device's time is what the
// node's scheduler gives it (for the fleet's fraction test: two of these with shares 0.25 and
// 0.75 on one device). Prints "saturating" once work runs and "done <dispatches>" at the end.
// Usage: fleet-saturate.mjs <durationMs>
const durationMs = Number(process.argv[2] ?? 5000);
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
const module = device.createShaderModule({
  code: `@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var x = data[g.x];
  for (var i = 0u; i < 1024u; i++) { x = x * 1664525u + 1013904223u; }
  data[g.x] = x;
}`,
});
const pipeline = device.createComputePipeline({ label: 'saturate', layout: 'auto', compute: { module } });
const buffer = device.createBuffer({ label: 'data', size: 64 * 1024, usage: GPUBufferUsage.STORAGE });
const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
const end = Date.now() + durationMs;
let dispatches = 0;
const inFlight = [];
while (Date.now() < end) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(256);
  pass.end();
  device.queue.submit([encoder.finish()]);
  dispatches++;
  inFlight.push(device.queue.onSubmittedWorkDone());
  // Six queued at all times (tens of ms of work, more than a round trip to the daemon on a loaded
  // machine): the device never waits for this program, so its share is the scheduler's doing.
  if (inFlight.length >= 6) await inFlight.shift();
  if (dispatches === 3) console.log('saturating');
}
await Promise.all(inFlight);
console.log(`done ${dispatches}`);
