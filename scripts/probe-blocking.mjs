// Which Dawn calls block the calling thread while a long kernel runs on the same device?
// Bare Dawn (npm `webgpu`), no gpunix: one single-workgroup kernel loops for a few seconds (its
// loop count is read from a buffer), and every call below is timed while it is on the device.
// A call "blocks" when it returns only after (or near) the kernel's end. The table is in
// docs/daemon.md ("What never waits for the device").
//
//   node scripts/probe-blocking.mjs [iterations]    (default: calibrated to a few seconds)

import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
const device = await adapter.requestDevice();
const other = await (await gpu.requestAdapter()).requestDevice();
const S = GPUBufferUsage;

const SPIN = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() {
  var x = d[1];
  for (var i = 0u; i < d[0]; i++) { x = x * 1664525u + 1013904223u; }
  d[1] = x;
}`;
const SMALL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { d[g.x] = d[g.x] * 2u + 1u; }`;

const spinModule = device.createShaderModule({ code: SPIN });
const spin = device.createComputePipeline({ layout: 'auto', compute: { module: spinModule } });
const spinBuffer = device.createBuffer({ size: 8, usage: S.STORAGE | S.COPY_DST });
const spinGroup = device.createBindGroup({ layout: spin.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: spinBuffer } }] });

function runSpin(iterations) {
  device.queue.writeBuffer(spinBuffer, 0, new Uint32Array([iterations, 1]));
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(spin);
  pass.setBindGroup(0, spinGroup);
  pass.dispatchWorkgroups(1);
  pass.end();
  device.queue.submit([encoder.finish()]);
  const start = performance.now();
  return device.queue.onSubmittedWorkDone().then(() => performance.now() - start);
}

let iterations = Number(process.argv[2] ?? 0);
if (!iterations) {
  const probe = 1 << 24;
  const ms = await runSpin(probe);
  iterations = Math.min(0xffffffff, Math.round((probe * 3000) / ms));
}

// Objects prepared before the kernel starts, for the calls that need them.
const smallModule = device.createShaderModule({ code: SMALL });
const idle = device.createBuffer({ size: 256, usage: S.STORAGE | S.COPY_DST | S.COPY_SRC });
const readback = device.createBuffer({ size: 256, usage: S.MAP_READ | S.COPY_DST });
const untouched = device.createBuffer({ size: 256, usage: S.MAP_READ });
const mapped = device.createBuffer({ size: 256, usage: S.MAP_READ | S.COPY_DST });
await mapped.mapAsync(GPUMapMode.READ);
const toDestroy = device.createBuffer({ size: 256, usage: S.STORAGE });
const qs = device.createQuerySet({ type: 'occlusion', count: 4 });
const layout = device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] });
const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [layout] });

const rows = [];
const time = (name, call) => {
  const start = performance.now();
  let note = '';
  const t0 = tStart;
  try {
    const value = call();
    if (value && typeof value.then === 'function') {
      value.then(
        () => (row.settledMs = performance.now() - t0),
        (e) => (row.settledMs = performance.now() - t0, row.rejected = e?.constructor?.name ?? String(e)),
      );
    }
  } catch (e) {
    note = `threw ${e?.constructor?.name}`;
  }
  const row = { name, returnMs: performance.now() - start, note };
  rows.push(row);
};

// Event-loop lag while the kernel runs (a timer every 5 ms).
let lag = 0;
let last = performance.now();
const ticker = setInterval(() => {
  const now = performance.now();
  lag = Math.max(lag, now - last - 5);
  last = now;
}, 5);

let tStart = performance.now();
const done = runSpin(iterations);
await new Promise((r) => setTimeout(r, 200)); // the kernel is on the device now

time('createShaderModule', () => device.createShaderModule({ code: SMALL }));
time('getCompilationInfo (call)', () => smallModule.getCompilationInfo());
time('createBindGroupLayout', () => device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] }));
time('createPipelineLayout', () => device.createPipelineLayout({ bindGroupLayouts: [layout] }));
time('createBindGroup', () => device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer: idle } }] }));
time('createQuerySet', () => device.createQuerySet({ type: 'occlusion', count: 4 }));
time('querySet.destroy', () => qs.destroy());
time('createBuffer', () => device.createBuffer({ size: 1 << 20, usage: S.STORAGE }));
time('createBuffer mappedAtCreation + getMappedRange + unmap', () => {
  const b = device.createBuffer({ size: 1 << 20, usage: S.STORAGE, mappedAtCreation: true });
  new Uint8Array(b.getMappedRange()).fill(7);
  b.unmap();
});
time('buffer.destroy (idle buffer)', () => toDestroy.destroy());
time('buffer.destroy (the running kernel\'s buffer)', () => spinBuffer.destroy());
time('getMappedRange + unmap (buffer mapped before)', () => {
  new Uint8Array(mapped.getMappedRange()).at(0);
  mapped.unmap();
});
time('queue.writeBuffer 1 MiB', () => device.queue.writeBuffer(device.createBuffer({ size: 1 << 20, usage: S.COPY_DST }), 0, new Uint8Array(1 << 20)));
time('command encoding + finish', () => {
  const e = device.createCommandEncoder();
  e.copyBufferToBuffer(idle, 0, readback, 0, 256);
  e.finish();
});
time('queue.submit (copy)', () => {
  const e = device.createCommandEncoder();
  e.copyBufferToBuffer(idle, 0, readback, 0, 256);
  device.queue.submit([e.finish()]);
});
time('mapAsync (call; settles when the queue reaches it)', () => readback.mapAsync(GPUMapMode.READ));
time('mapAsync of a buffer no submit uses (call)', () => untouched.mapAsync(GPUMapMode.READ));
time('onSubmittedWorkDone (call)', () => device.queue.onSubmittedWorkDone());
time('pushErrorScope + popErrorScope (call)', () => {
  device.pushErrorScope('validation');
  return device.popErrorScope();
});
time('getBindGroupLayout (of a made pipeline)', () => spin.getBindGroupLayout(0));
time('createComputePipelineAsync (call)', () => device.createComputePipelineAsync({ layout: 'auto', compute: { module: smallModule } }));
time('createComputePipelineAsync, bad entry point (call)', () => device.createComputePipelineAsync({ layout: 'auto', compute: { module: smallModule, entryPoint: 'nope' } }));
time('createComputePipeline, bad entry point', () => device.createComputePipeline({ layout: pipelineLayout, compute: { module: smallModule, entryPoint: 'gpunix invalid' } }));
time('createComputePipeline, other device', () => other.createComputePipeline({ layout: 'auto', compute: { module: other.createShaderModule({ code: SMALL }) } }));

const kernelMs = await done;
await new Promise((r) => setTimeout(r, 300));
const lagWithout = lag;

// Second run: the call that blocks (measured apart, so it does not delay the settlements above).
const fresh = device.createBuffer({ size: 8, usage: S.STORAGE | S.COPY_DST });
const freshGroup = device.createBindGroup({ layout: spin.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: fresh } }] });
tStart = performance.now();
const again = (() => {
  device.queue.writeBuffer(fresh, 0, new Uint32Array([iterations, 1]));
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(spin);
  pass.setBindGroup(0, freshGroup);
  pass.dispatchWorkgroups(1);
  pass.end();
  device.queue.submit([encoder.finish()]);
  return device.queue.onSubmittedWorkDone();
})();
await new Promise((r) => setTimeout(r, 200));
time('createComputePipeline (valid, same device)', () => device.createComputePipeline({ layout: 'auto', compute: { module: smallModule } }));
time('createComputePipeline again (same descriptor: cached)', () => device.createComputePipeline({ layout: 'auto', compute: { module: smallModule } }));
await again;

// Third run: destroying the device the kernel runs on (Dawn waits for its queue to drain).
tStart = performance.now();
const third = device.createBuffer({ size: 8, usage: S.STORAGE | S.COPY_DST });
const thirdGroup = device.createBindGroup({ layout: spin.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: third } }] });
device.queue.writeBuffer(third, 0, new Uint32Array([iterations, 1]));
{
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(spin);
  pass.setBindGroup(0, thirdGroup);
  pass.dispatchWorkgroups(1);
  pass.end();
  device.queue.submit([encoder.finish()]);
}
await new Promise((r) => setTimeout(r, 200));
time('device.destroy (the busy device)', () => device.destroy());
clearInterval(ticker);
console.log(`kernel: ${iterations} iterations, ${kernelMs.toFixed(0)} ms from submit to onSubmittedWorkDone; event-loop lag max ${lagWithout.toFixed(0)} ms (${lag.toFixed(0)} ms with the blocking call)`);
console.log('| call | returned after (ms) | settled at (ms since submit) | blocks |');
console.log('| --- | --- | --- | --- |');
for (const r of rows) {
  const blocks = r.returnMs > 100 ? 'yes' : 'no';
  const settled = r.settledMs === undefined ? '' : `${r.settledMs.toFixed(0)}${r.rejected ? ` (rejects: ${r.rejected})` : ''}`;
  console.log(`| ${r.name}${r.note ? ` (${r.note})` : ''} | ${r.returnMs.toFixed(1)} | ${settled} | ${blocks} |`);
}
other.destroy();
process.exit(0);
