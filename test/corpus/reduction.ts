// Two-pass tree reduction (sum, min and max of 4000 u32) in workgroup memory with workgroupBarrier.
// The input arrives through a MAP_WRITE staging buffer (mapAsync(WRITE), fill, unmap, copy) that
// is destroyed as soon as the copy is submitted; the program waits with onSubmittedWorkDone.

import { type DeviceNeeds, expectNoErrors, openDevice, pseudoRandom, readBack } from './common.js';

export const name = 'reduction-workgroup-memory';

const N = 4000;
const WORKGROUP = 256;
const GROUPS = Math.ceil(N / WORKGROUP); // 16: the second pass reduces these in one workgroup

// 256-invocation workgroups: a core device's default limits; a compatibility-mode device's are 128.
export const needs: DeviceNeeds = { limits: { maxComputeWorkgroupSizeX: WORKGROUP, maxComputeInvocationsPerWorkgroup: WORKGROUP } };

const SHADER = /* wgsl */ `
struct Stat { sum: u32, lo: u32, hi: u32, count: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> partials: array<Stat>;
@group(0) @binding(2) var<uniform> n: u32;

var<workgroup> tile: array<Stat, ${WORKGROUP}>;

fn combine(a: Stat, b: Stat) -> Stat {
  return Stat(a.sum + b.sum, min(a.lo, b.lo), max(a.hi, b.hi), a.count + b.count);
}

fn reduceTile(lidx: u32) {
  for (var stride = ${WORKGROUP / 2}u; stride > 0u; stride = stride >> 1u) {
    if (lidx < stride) { tile[lidx] = combine(tile[lidx], tile[lidx + stride]); }
    workgroupBarrier();
  }
}

const EMPTY = Stat(0u, 0xffffffffu, 0u, 0u);

@compute @workgroup_size(${WORKGROUP})
fn firstPass(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_index) lidx: u32,
             @builtin(workgroup_id) wid: vec3u) {
  var s = EMPTY;
  if (gid.x < n) { let v = input[gid.x]; s = Stat(v & 0xffffu, v, v, 1u); }
  tile[lidx] = s;
  workgroupBarrier();
  reduceTile(lidx);
  if (lidx == 0u) { partials[wid.x] = tile[0]; }
}

@compute @workgroup_size(${WORKGROUP})
fn secondPass(@builtin(local_invocation_index) lidx: u32) {
  var s = EMPTY;
  if (lidx < ${GROUPS}u) { s = partials[lidx]; }
  tile[lidx] = s;
  workgroupBarrier();
  reduceTile(lidx);
  if (lidx == 0u) { partials[${GROUPS}u] = tile[0]; }
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const values = pseudoRandom(N, 12345);

  const staging = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC });
  await staging.mapAsync(GPUMapMode.WRITE);
  new Uint32Array(staging.getMappedRange()).set(values);
  staging.unmap();

  const input = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const partials = device.createBuffer({ size: (GROUPS + 1) * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const n = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(n, 0, new Uint32Array([N]));

  const module = device.createShaderModule({ code: SHADER });
  const first = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'firstPass' } });
  const second = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'secondPass' } });
  const firstGroup = device.createBindGroup({
    layout: first.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: input } },
      { binding: 1, resource: { buffer: partials } },
      { binding: 2, resource: { buffer: n } },
    ],
  });
  const secondGroup = device.createBindGroup({
    layout: second.getBindGroupLayout(0),
    entries: [{ binding: 1, resource: { buffer: partials } }],
  });

  // Two command buffers in one submit, finished in the opposite order: submit order is what counts.
  const upload = device.createCommandEncoder({ label: 'upload' });
  upload.copyBufferToBuffer(staging, 0, input, 0, N * 4);
  const encoder = device.createCommandEncoder({ label: 'reduce' });
  const pass1 = encoder.beginComputePass({ label: 'partials' });
  pass1.setPipeline(first);
  pass1.setBindGroup(0, firstGroup);
  pass1.dispatchWorkgroups(GROUPS);
  pass1.end();
  const pass2 = encoder.beginComputePass({ label: 'total' });
  pass2.setPipeline(second);
  pass2.setBindGroup(0, secondGroup);
  pass2.dispatchWorkgroups(1);
  pass2.end();
  const reduceCommands = encoder.finish();
  device.queue.submit([upload.finish(), reduceCommands]);
  // Destroyed right after the submit: WebGPU lets the submitted work finish first.
  staging.destroy();
  await device.queue.onSubmittedWorkDone();
  input.destroy();

  const result = await readBack(device, [{ buffer: partials, size: (GROUPS + 1) * 16 }]);
  for (const b of [partials, n]) b.destroy();
  await expectNoErrors(device, name);
  device.destroy();

  // The total must match the CPU's: a wrong reduction would otherwise still compare equal to itself.
  const total = new Uint32Array(result.buffer, GROUPS * 16, 4);
  let sum = 0;
  for (const v of values) sum += v & 0xffff;
  if (total[0] !== sum >>> 0 || total[1] !== Math.min(...values) || total[2] !== Math.max(...values) || total[3] !== N) {
    throw new Error(`corpus program ${name}: GPU total ${[...total]} does not match the CPU's`);
  }
  return result;
}
