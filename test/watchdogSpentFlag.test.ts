// The budget-spent flag: a loop the watchdog cuts short marks a word of device memory, so a
// process whose loops were cut is ended even when the piece ran within its limit, which happens
// when the loop-rate calibration read the device slower than it runs (a loaded VM: one CI run read
// 127 k iterations/ms where the same machine reads 265-277 k). The calibration is made slow here
// on purpose (a tenth of the measured rate), so that every runaway's budget runs out well within
// the limit and only the flag can tell.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel } from '../src/index.js';
import { boundLoops } from '../src/wgsl/index.js';
import { deviceOf } from './helpers.js';

const U = () => GPUBufferUsage;

/** One workgroup that loops until d[0] == 7: nothing ever writes 7. */
const RUNAWAY_WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { loop { if (d[0] == 7u) { break; } d[1] = d[1] + 1u; } }`;

/** A short loop (64 iterations per invocation) that must run whole and exact beside the flag. */
const SHORT_LOOP_WGSL = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var s = 0u; var i = 0u;
  loop { if (i >= 64u + (a[g.x] & 0u)) { break; } s += i * g.x; i++; }
  a[g.x] = s;
}`;

/** Runs `code` once on `device` (explicit layout or 'auto'); resolves with d[1] read back, or rejects with the map's error. */
async function runOnce(device: GPUDevice, code: string, explicit: boolean, words: number, workgroups: number): Promise<Uint32Array> {
  const buffer = device.createBuffer({ size: words * 4, usage: U().STORAGE | U().COPY_SRC });
  const readback = device.createBuffer({ size: words * 4, usage: U().MAP_READ | U().COPY_DST });
  const module = device.createShaderModule({ code });
  const groupLayout = explicit ? device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] }) : null;
  const pipeline = device.createComputePipeline({
    label: 'flagged',
    layout: groupLayout ? device.createPipelineLayout({ bindGroupLayouts: [groupLayout] }) : 'auto',
    compute: { module },
  });
  const group = device.createBindGroup({ layout: groupLayout ?? pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(workgroups);
  pass.end();
  encoder.copyBufferToBuffer(buffer, 0, readback, 0, words * 4);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  return out;
}

describe('the budget-spent flag', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ memoryBudget: '256M', maxDispatchMs: 300 });
    // As if the calibration had read the device ten times slower than it runs: budgets a tenth of
    // what they should be, so a runaway's loops run out after about 60 ms of its 300.
    const device = kernel.devices[0];
    device.loopRates = { ...device.loopRates, iterationsPerMs: device.loopRates.iterationsPerMs / 10 };
  });
  after(async () => {
    await kernel.shutdown();
  });

  for (const explicit of [false, true]) {
    it(`ends a runaway whose budget ran out within the limit (${explicit ? 'explicit' : "'auto'"} layout): its map is rejected, its exit says why`, async () => {
      const proc = await kernel.spawn({ name: 'runaway' });
      const device = await deviceOf(proc);
      const endedBefore = kernel.stats().watchdog;
      const outcome = await runOnce(device, RUNAWAY_WGSL, explicit, 4, 1).then(
        (words) => `resolved with ${words[1]} iterations of cut loops`,
        (error: unknown) => (error instanceof DOMException ? error.name : String(error)),
      );
      assert.equal(outcome, 'AbortError', 'the map of a process whose loops were cut is rejected');
      const info = await device.lost;
      assert.match(info.message, /watchdog: 'flagged' ran \d+ ms on gpu0 and its loops ran out of their iteration budget/);
      assert.equal(kernel.ps().find((p) => p.pid === proc.pid)!.exit?.reason, 'watchdog');
      const watchdog = kernel.stats().watchdog;
      assert.equal(watchdog.processesEnded, endedBefore.processesEnded + 1);
      assert.equal(watchdog.endedBySpentFlag, endedBefore.endedBySpentFlag + 1);
      assert.ok(watchdog.spentFlagReads > endedBefore.spentFlagReads);
    });
  }

  it('leaves a process whose loops ran to their end alone, and its results exact (both layouts)', async () => {
    const proc = await kernel.spawn({ name: 'short-loops' });
    const device = await deviceOf(proc);
    const expected = Uint32Array.from({ length: 256 }, (_, x) => (((63 * 64) / 2) * x) >>> 0);
    for (const explicit of [false, true]) assert.deepEqual(await runOnce(device, SHORT_LOOP_WGSL, explicit, 256, 4), expected);
    assert.equal(kernel.ps().find((p) => p.pid === proc.pid)!.state !== 'exited', true);
    await proc.exit();
  });

  it("sets the flag's group after the program's own bind group at that index", async () => {
    // A program may set a bind group at an index its pipeline does not use; the flag's index is one.
    const proc = await kernel.spawn({ name: 'group-at-flag-index' });
    const device = await deviceOf(proc);
    const buffer = device.createBuffer({ size: 256 * 4, usage: U().STORAGE | U().COPY_SRC });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: SHORT_LOOP_WGSL }) } });
    // Dawn gives an empty layout at an index the shader does not use, and so must gpunix at the flag's.
    const empty = device.createBindGroup({ layout: pipeline.getBindGroupLayout(device.limits.maxBindGroups - 1), entries: [] });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
    device.pushErrorScope('validation');
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.setBindGroup(device.limits.maxBindGroups - 1, empty);
    pass.dispatchWorkgroups(4);
    pass.end();
    const readback = device.createBuffer({ size: 256 * 4, usage: U().MAP_READ | U().COPY_DST });
    encoder.copyBufferToBuffer(buffer, 0, readback, 0, 256 * 4);
    device.queue.submit([encoder.finish()]);
    assert.equal(await device.popErrorScope(), null);
    await readback.mapAsync(GPUMapMode.READ);
    assert.deepEqual(new Uint32Array(readback.getMappedRange()), Uint32Array.from({ length: 256 }, (_, x) => ((63 * 64) / 2) * x));
    await proc.exit();
  });
});

describe("the rewrite's budget-spent flag", () => {
  it('goes at the highest bind group index the module leaves free, stored where a loop is cut', () => {
    const bounded = boundLoops(RUNAWAY_WGSL, 1000, 'shared', { spentFlagBelow: 4 });
    assert.equal(bounded.spentFlagGroup, 3);
    assert.match(bounded.code, /@group\(3\) @binding\(0\) var<storage, read_write> gpunix_loop_spent: atomic<u32>;/);
    assert.match(bounded.code, /\{ gpunix_loop_budget = 0u; atomicStore\(&gpunix_loop_spent, 1u\); break; \}/);
    const top = RUNAWAY_WGSL.replace('@group(0)', '@group(3)');
    assert.equal(boundLoops(top, 1000, 'shared', { spentFlagBelow: 4 }).spentFlagGroup, 2);
  });

  it('is left out where a module cannot have it: a vertex entry point, no checked loop, every index used', () => {
    const vertex = `@vertex fn vs() -> @builtin(position) vec4f { var i = 0u; loop { if (i > 9u) { break; } i++; } return vec4f(f32(i)); }
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { loop { if (d[0] == 7u) { break; } } }`;
    assert.equal(boundLoops(vertex, 1000, 'shared', { spentFlagBelow: 4 }).spentFlagGroup, undefined);
    const constant = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { for (var i = 0u; i < 8u; i++) { d[i] = i; } }`;
    const unchecked = boundLoops(constant, 1000, 'shared', { spentFlagBelow: 4 });
    assert.equal(unchecked.spentFlagGroup, undefined);
    assert.doesNotMatch(unchecked.code, /gpunix_loop_spent/);
    const full = [0, 1, 2, 3].map((g) => `@group(${g}) @binding(0) var<storage, read_write> d${g}: array<u32>;`).join('\n') + '\n@compute @workgroup_size(1) fn main() { loop { if (d0[0] == 7u) { break; } } }';
    assert.equal(boundLoops(full, 1000, 'shared', { spentFlagBelow: 4 }).spentFlagGroup, undefined);
  });
});
