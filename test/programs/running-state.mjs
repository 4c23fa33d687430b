// A program for the live-migration tests (test/nodeMigration.test.ts): connects to gpunixd with
// connect(), fills `--buffers` buffers of `--mib` MiB, and advances them by a running-state kernel
// (each step depends on the last), awaiting every step, until `--stop-file` exists (then `--after`
// more steps) or `--steps` steps are done. Then it reads every buffer back and checks it against a
// CPU oracle (closed form, so a long run costs no more to check). Prints, one per line:
//   pid N            at start, once the first steps are done (the tests wait for it)
//   moved A B pid N  on each move between nodes
//   steps N          how many steps ran
//   exact | mismatch buffer B word I: got X, want Y
//   final pid N
// Usage: node running-state.mjs --socket S --token T [--name N] [--buffers 3] [--mib 1] [--steps N | --stop-file F] [--after 5]
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { connect } from './gpunix-client.mjs';

const { values: flags } = parseArgs({
  options: {
    socket: { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
    name: { type: 'string', default: 'running-state' },
    buffers: { type: 'string', default: '3' },
    mib: { type: 'string', default: '1' },
    steps: { type: 'string' },
    'stop-file': { type: 'string' },
    after: { type: 'string', default: '5' },
    seed: { type: 'string', default: '7' },
  },
});

const STEP_WGSL = `
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> step: u32;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) n: vec3u) {
  let i = g.x + g.y * n.x * 64u;
  if (i < arrayLength(&data)) { data[i] = data[i] * 3u + step + i; }
}`;
/** Workgroups (x, y) covering `words` (the x count stays within the device's 65535 per dimension). */
function grid(words) {
  const groups = Math.ceil(words / 64);
  const x = Math.min(groups, 32768);
  return [x, Math.ceil(groups / x)];
}

/**
 * What STEP_WGSL leaves in word i after n steps from v0, in closed form (mod 2^32):
 * v_n = 3^n v0 + i (3^n - 1)/2 + sum_{s<n} 3^(n-1-s) s, i.e. A v0 + B i + C with A, B, C found by
 * running the recurrence on (A, B, C) once.
 */
function oracle(n) {
  let a = 1, b = 0, c = 0;
  for (let s = 0; s < n; s++) {
    a = Math.imul(a, 3) >>> 0;
    b = (Math.imul(b, 3) + 1) >>> 0;
    c = (Math.imul(c, 3) + s) >>> 0;
  }
  return (v0, i) => (Math.imul(a, v0) + Math.imul(b, i) + c) >>> 0;
}

const proc = await connect({ socket: flags.socket, url: flags.url, token: flags.token, name: flags.name });
proc.on('moved', (moved) => console.log(`moved ${moved.from} ${moved.to} pid ${moved.pid}`));
const seed = Number(flags.seed);
const count = Number(flags.buffers);
const bytes = Number(flags.mib) * 1024 * 1024;
const words = bytes / 4;
const device = await (await proc.gpu.requestAdapter()).requestDevice();
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: STEP_WGSL }) } });
const data = [];
for (let b = 0; b < count; b++) {
  const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const init = new Uint32Array(words);
  for (let i = 0; i < words; i++) init[i] = (seed + b + i) >>> 0;
  // Large writes: through the shared-memory region on a Unix socket (then, after a move, the new node's).
  device.queue.writeBuffer(buffer, 0, init);
  data.push(buffer);
}
const stepBuffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
const groups = data.map((buffer) =>
  device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }, { binding: 1, resource: { buffer: stepBuffer } }] }),
);

function step(s) {
  device.queue.writeBuffer(stepBuffer, 0, new Uint32Array([s]));
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  for (const group of groups) {
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...grid(words));
  }
  pass.end();
  device.queue.submit([encoder.finish()]);
  return device.queue.onSubmittedWorkDone();
}

const stopFile = flags['stop-file'];
const limit = flags.steps !== undefined ? Number(flags.steps) : Infinity;
let steps = 0;
for (; steps < 3 && steps < limit; steps++) await step(steps);
console.log(`pid ${proc.pid}`);
let until = limit;
while (steps < until) {
  await step(steps++);
  if (stopFile && until === Infinity && existsSync(stopFile)) until = steps + Number(flags.after);
  // Yields to timers between steps: the program computes while the daemon copies its buffers.
  await new Promise((r) => setImmediate(r));
}
console.log(`steps ${steps}`);

const want = oracle(steps);
let mismatch = null;
for (const [b, buffer] of data.entries()) {
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(staging.getMappedRange());
  for (let i = 0; i < words && !mismatch; i++) {
    const expected = want((seed + b + i) >>> 0, i);
    if (out[i] !== expected) mismatch = `mismatch buffer ${b} word ${i}: got ${out[i]}, want ${expected}`;
  }
  staging.unmap();
  staging.destroy();
}
console.log(mismatch ?? 'exact');
console.log(`final pid ${proc.pid}`);
await proc.exit(mismatch ? 1 : 0);
process.exit(mismatch ? 1 : 0);
