// Does Dawn's event polling block the calling thread while a long kernel runs, when it frees
// objects the program let go of? Bare Dawn (npm `webgpu`), no gpunix; run with --expose-gc.
//
// A pipeline, its bind group and buffer are used in one submit and awaited; then the objects named
// by RELEASE are dropped and collected (dawn.node releases them, and Dawn frees them once the
// queue passes the next submit). With `before`, a tiny submit goes ahead of a long single-workgroup
// kernel, so Dawn learns of the tiny one's completion, and frees the objects, while the kernel
// runs; with `none`, the kernel is that next submit, and they are freed after it. The largest
// event-loop gap while the kernel runs says whether the thread was stopped (docs/daemon.md, "What
// never waits for the device").
//
//   node --expose-gc scripts/probe-release-blocking.mjs [RELEASE] [before|none] [rounds]
//   RELEASE: comma-separated of pipeline, group, buffer, querySet (default pipeline,group)

import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
if (typeof globalThis.gc !== 'function') throw new Error('run with node --expose-gc');
const release = (process.argv[2] ?? 'pipeline,group').split(',');
const order = process.argv[3] ?? 'before';
const rounds = Number(process.argv[4] ?? 3);

const gpu = create([]);
const device = await (await gpu.requestAdapter()).requestDevice({ requiredFeatures: ['timestamp-query'] });
const S = GPUBufferUsage;
const SPIN = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { var x = d[1]; for (var i = 0u; i < d[0]; i++) { x = x * 1664525u + 1013904223u; } d[1] = x; }`;
const spin = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: SPIN }) } });
const spinBuffer = device.createBuffer({ size: 8, usage: S.STORAGE | S.COPY_DST });
const spinGroup = device.createBindGroup({ layout: spin.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: spinBuffer } }] });
// dawn.node does not keep Node's event loop alive for a pending onSubmittedWorkDone.
const keepalive = setInterval(() => {}, 1000);

function submitSpin(iterations) {
  device.queue.writeBuffer(spinBuffer, 0, new Uint32Array([iterations, 1]));
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(spin);
  pass.setBindGroup(0, spinGroup);
  pass.dispatchWorkgroups(1);
  pass.end();
  device.queue.submit([encoder.finish()]);
}

const probe = 1 << 22;
const calibration = performance.now();
submitSpin(probe);
await device.queue.onSubmittedWorkDone();
const iterations = Math.round((probe * 1500) / (performance.now() - calibration));

const SMALL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { d[0] = d[0] + 1u; }`;

for (let round = 0; round < rounds; round++) {
  // A fresh module each round: Dawn's caches would otherwise keep the pipeline alive.
  const objects = {};
  objects.pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: `${SMALL}// ${round} ${Math.random()}` }) } });
  objects.buffer = device.createBuffer({ size: 16, usage: S.STORAGE });
  objects.group = device.createBindGroup({ layout: objects.pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: objects.buffer } }] });
  objects.querySet = device.createQuerySet({ type: 'timestamp', count: 2 });
  {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass({ timestampWrites: { querySet: objects.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(objects.pipeline);
    pass.setBindGroup(0, objects.group);
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
  }
  await device.queue.onSubmittedWorkDone();
  for (const name of release) objects[name] = null;
  for (let i = 0; i < 2; i++) {
    globalThis.gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (order === 'before') device.queue.submit([device.createCommandEncoder().finish()]);
  let last = performance.now();
  let gap = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
  }, 5);
  const start = performance.now();
  submitSpin(iterations);
  await device.queue.onSubmittedWorkDone();
  const kernelMs = performance.now() - start;
  clearInterval(ticker);
  const verdict = gap > kernelMs / 2 ? 'stopped for the kernel' : 'kept running';
  console.log(`released ${release.join('+')}, ${order === 'before' ? 'a tiny submit ahead' : 'nothing ahead'}: kernel ${kernelMs.toFixed(0)} ms, largest event-loop gap ${gap.toFixed(0)} ms: the thread ${verdict}`);
  void objects;
}
clearInterval(keepalive);
device.destroy();
