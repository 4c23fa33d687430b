// createComputePipelineAsync, twice at once from one module (two entry points), with pipeline-
// overridable constants (one sizing the workgroup): Collatz step counts over a grid of 777 that
// does not divide evenly, and a second pass that folds them.

import { expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'async-pipeline-overrides';

const N = 777;
const WORKGROUP = 48;

const SHADER = /* wgsl */ `
override WG: u32 = 64;
override START: u32 = 1;
@group(0) @binding(0) var<storage, read_write> steps: array<u32>;

@compute @workgroup_size(WG)
fn collatz(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x >= arrayLength(&steps)) { return; }
  var n = gid.x + START;
  var count = 0u;
  while (n != 1u && count < 1000u) {
    if ((n & 1u) == 0u) { n = n / 2u; } else { n = 3u * n + 1u; }
    count++;
  }
  steps[gid.x] = count;
}

override FOLD: u32 = 2;
@compute @workgroup_size(WG)
fn fold(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x >= arrayLength(&steps)) { return; }
  steps[gid.x] = steps[gid.x] * FOLD + (gid.x & 7u);
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const device = await openDevice(gpu);
  const module = device.createShaderModule({ code: SHADER });
  const [collatz, fold] = await Promise.all([
    device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'collatz', constants: { WG: WORKGROUP, START: 27 } } }),
    device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'fold', constants: { WG: WORKGROUP, FOLD: 5 } } }),
  ]);
  const steps = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const groups = [collatz, fold].map((p) =>
    device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: steps } }] }),
  );

  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(collatz);
  pass.setBindGroup(0, groups[0]);
  pass.dispatchWorkgroups(Math.ceil(N / WORKGROUP));
  pass.setPipeline(fold);
  pass.setBindGroup(0, groups[1]);
  pass.dispatchWorkgroups(Math.ceil(N / WORKGROUP));
  pass.end();
  device.queue.submit([encoder.finish()]);

  const result = await readBack(device, [{ buffer: steps, size: N * 4 }]);
  steps.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return result;
}
