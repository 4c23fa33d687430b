// A program for the shared-segment tests across nodes (test/segmentsAcrossNodes.test.ts). Usage:
//   node segment-peer.mjs ROLE SOCKET TOKEN SEGMENT ROUNDS DIR
// ROLE producer: for k = 1..ROUNDS, a kernel writes k*1000000+i into every 7th word i of the
//   segment (256 KiB), awaits onSubmittedWorkDone (the release), then creates DIR/wrote.k and
//   waits for DIR/read.k before the next round.
// ROLE consumer: for k = 1..ROUNDS, waits for DIR/wrote.k, copies the segment out (a submit: the
//   acquire) and checks every word; creates DIR/read.k. Prints "consumer exact" or the mismatch.
// ROLE peek: copies the segment out once; prints "zeros" or "data", and any uncaptured error.
import { existsSync, writeFileSync } from 'node:fs';
import { connect } from './gpunix-client.mjs';

const [role, socket, token, name, roundsArg, dir] = process.argv.slice(2);
const proc = await connect({ socket, token, name: role });
const device = await (await proc.gpu.requestAdapter()).requestDevice();
const words = 64 * 1024; // 256 KiB: 4 blocks
device.addEventListener('uncapturederror', (event) => console.log(`uncaptured: ${event.error.message}`));
const seg = device.gpunix.attachShared(name, words * 4);
const rounds = Number(roundsArg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
if (role === 'producer') {
  const code = `@group(0) @binding(0) var<storage, read_write> s: array<u32>; @group(0) @binding(1) var<uniform> k: u32;
  @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { if (g.x < arrayLength(&s) && (g.x % 7u == 0u)) { s[g.x] = k * 1000000u + g.x; } }`;
  const p = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
  const kb = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const bg = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: seg } }, { binding: 1, resource: { buffer: kb } }] });
  for (let k = 1; k <= rounds; k++) {
    while (k > 1 && !existsSync(`${dir}/read.${k - 1}`)) await sleep(10);
    device.queue.writeBuffer(kb, 0, new Uint32Array([k]));
    const e = device.createCommandEncoder(); const pass = e.beginComputePass(); pass.setPipeline(p); pass.setBindGroup(0, bg); pass.dispatchWorkgroups(words / 64); pass.end();
    device.queue.submit([e.finish()]);
    await device.queue.onSubmittedWorkDone();
    writeFileSync(`${dir}/wrote.${k}`, '');
  }
  console.log('producer done');
} else if (role === 'peek') {
  const staging = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const e = device.createCommandEncoder(); e.copyBufferToBuffer(seg, 0, staging, 0, words * 4); device.queue.submit([e.finish()]);
  await staging.mapAsync(GPUMapMode.READ); const v = new Uint32Array(staging.getMappedRange().slice(0)); staging.unmap();
  console.log(v.every((x) => x === 0) ? 'zeros' : 'data');
} else {
  const staging = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let ok = true;
  for (let k = 1; k <= rounds; k++) {
    while (!existsSync(`${dir}/wrote.${k}`)) await sleep(10);
    const e = device.createCommandEncoder(); e.copyBufferToBuffer(seg, 0, staging, 0, words * 4); device.queue.submit([e.finish()]);
    await staging.mapAsync(GPUMapMode.READ); const v = new Uint32Array(staging.getMappedRange().slice(0)); staging.unmap();
    for (let i = 0; i < words; i++) { const want = i % 7 === 0 ? k * 1000000 + i : 0; if (v[i] !== want) { console.log(`round ${k} word ${i}: got ${v[i]} want ${want}`); ok = false; break; } }
    writeFileSync(`${dir}/read.${k}`, '');
  }
  console.log(ok ? 'consumer exact' : 'consumer mismatch');
}
await proc.exit(0);
