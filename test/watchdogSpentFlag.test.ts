// The budget-spent flag: a loop the watchdog cuts short marks a word of device memory, so a
// process whose loops were cut is ended even when the piece ran within its limit, which happens
// when the loop-rate calibration read the device slower than it runs (a loaded VM: one CI run read
// 127 k iterations/ms where the same machine reads 265-277 k). The calibration is made slow here
// on purpose (a sixth of the measured rate), so that every runaway's budget runs out well within
// the limit and only the flag can tell.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel } from '../src/index.js';
import { boundLoops } from '../src/wgsl/index.js';
import { deviceOf, encodeDispatchPass } from './helpers.js';

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

/**
 * Ends `encoder` with a copy of `words` words of `buffer`, submits it, checks that the validation
 * scope the caller pushed before encoding caught nothing, and returns the words.
 */
async function submitAndRead(device: GPUDevice, encoder: GPUCommandEncoder, buffer: GPUBuffer, words: number): Promise<Uint32Array> {
  const readback = device.createBuffer({ size: words * 4, usage: U().MAP_READ | U().COPY_DST });
  encoder.copyBufferToBuffer(buffer, 0, readback, 0, words * 4);
  device.queue.submit([encoder.finish()]);
  assert.equal(await device.popErrorScope(), null);
  await readback.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  return out;
}

/** How a runaway's read-back ended: the map's error name ('AbortError' when its process was ended), or what it resolved with. */
function runawayOutcome(read: Promise<Uint32Array>): Promise<string> {
  return read.then(
    (words) => `resolved with ${words[1]} iterations of cut loops`,
    (error: unknown) => (error instanceof DOMException ? error.name : String(error)),
  );
}

/** Runs `code` once on `device` (explicit layout or 'auto'); resolves with the buffer's words read back, or rejects with the map's error. */
async function runOnce(device: GPUDevice, code: string, explicit: boolean, words: number, workgroups: number): Promise<Uint32Array> {
  const buffer = device.createBuffer({ size: words * 4, usage: U().STORAGE | U().COPY_SRC });
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const groupLayout = explicit ? device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] }) : null;
  const pipeline = device.createComputePipeline({
    label: 'flagged',
    layout: groupLayout ? device.createPipelineLayout({ bindGroupLayouts: [groupLayout] }) : 'auto',
    compute: { module },
  });
  const group = device.createBindGroup({ layout: groupLayout ?? pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const encoder = device.createCommandEncoder();
  encodeDispatchPass(encoder, pipeline, group, workgroups);
  return submitAndRead(device, encoder, buffer, words);
}

for (const [variant, options] of [
  ['dispatches run whole', {}],
  ['one-workgroup atoms', { atomSize: 1 }],
] as const) describe(`the budget-spent flag (${variant})`, () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ memoryBudget: '256M', maxDispatchMs: 1000, ...options });
    // As if the calibration had read the device six times slower than it runs: budgets a sixth of
    // what they should be, so a runaway's loops run out after about 330 ms of its 1000, within the
    // limit (which leaves room for the pipeline's first-use compile, done inside the dispatch on
    // lavapipe: 250 ms on a loaded machine) and over the eighth of it that has the flag read, even
    // when this process's own calibration read the device 2x slow besides (ten times slow, with a
    // calibration that had itself read slow, the loops ran out in under 125 ms: no read, by design).
    const device = kernel.devices[0];
    device.loopRates = { ...device.loopRates, iterationsPerMs: device.loopRates.iterationsPerMs / 6 };

  });
  after(async () => {
    await kernel.shutdown();
  });

  for (const explicit of [false, true]) {
    it(`ends a runaway whose budget ran out within the limit (${explicit ? 'explicit' : "'auto'"} layout): its map is rejected, its exit says why`, async () => {
      const proc = await kernel.spawn({ name: 'runaway' });
      const device = await deviceOf(proc);
      const endedBefore = kernel.stats().watchdog;
      const outcome = await runawayOutcome(runOnce(device, RUNAWAY_WGSL, explicit, 4, 1));
      assert.equal(outcome, 'AbortError', `the map of a process whose loops were cut is rejected (loop rates: ${JSON.stringify(kernel.stats().devices[0].loopRates)})`);
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
    if ('atomSize' in options) assert.ok(proc.record().accounting.atomsRun >= 8, 'the dispatches ran as atoms (the twins bind the flag too)');
    await proc.exit();
  });

  it("gives the program's own group back at the flag's index to a later pipeline that reads it there", async () => {
    // Bind groups outlive setPipeline: after a flagged pipeline, one whose shader reads group 3
    // (the flag's index for the first) must see the program's group there, not the flag's. The
    // second pass has the same two pipelines in a pass the program times (encoded again from the
    // record when the submit is split), and the third a dispatch the kernel splits.
    const proc = await kernel.spawn({ name: 'pipeline-switch' });
    const adapter = (await proc.gpu.requestAdapter())!;
    const timed = adapter.features.has('timestamp-query');
    const device = (await adapter.requestDevice(timed ? { requiredFeatures: ['timestamp-query'] } : {})) as GPUDevice;
    const storage = () => device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] });
    const looped = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: SHORT_LOOP_WGSL }) } });
    const atThree = device.createComputePipeline({
      layout: device.createPipelineLayout({ bindGroupLayouts: [null, null, null, storage()] }),
      compute: { module: device.createShaderModule({ code: `@group(3) @binding(0) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(1) fn main() { b[1] = b[0] + 1u; }` }) },
    });
    const a = device.createBuffer({ size: 256 * 4, usage: U().STORAGE | U().COPY_SRC });
    const b = device.createBuffer({ size: 8, usage: U().STORAGE | U().COPY_SRC, mappedAtCreation: true });
    new Uint32Array(b.getMappedRange()).set([42, 0]);
    b.unmap();
    const groupA = device.createBindGroup({ layout: looped.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: a } }] });
    const groupB = device.createBindGroup({ layout: atThree.getBindGroupLayout(3), entries: [{ binding: 0, resource: { buffer: b } }] });
    const querySet = timed ? device.createQuerySet({ type: 'timestamp', count: 2 }) : null;
    device.pushErrorScope('validation');
    const encoder = device.createCommandEncoder();
    for (const timestamps of querySet ? [false, true] : [false]) {
      const pass = encoder.beginComputePass(timestamps ? { timestampWrites: { querySet: querySet!, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : undefined);
      pass.setBindGroup(0, groupA);
      pass.setBindGroup(3, groupB);
      pass.setPipeline(looped);
      pass.dispatchWorkgroups(1);
      pass.setPipeline(atThree);
      pass.dispatchWorkgroups(1);
      pass.end();
    }
    const split = encoder.beginComputePass();
    split.setPipeline(looped);
    split.setBindGroup(0, groupA);
    split.dispatchWorkgroups(4);
    split.end();
    assert.deepEqual([...(await submitAndRead(device, encoder, b, 2))], [42, 43]);
    assert.notEqual(kernel.ps().find((p) => p.pid === proc.pid)!.state, 'exited');
    await proc.exit();
  });

  it('still splits a dispatch whose atom record needs the group the flag would take', async () => {
    // Groups 0-2 are the program's and its immediates leave the atom record no room: the record
    // needs a bind group, and the only one left is the flag's. Splitting wins: the twin is made
    // from the module without the flag (its atoms keep the time check alone).
    const proc = await kernel.spawn({ name: 'record-group' });
    const device = await deviceOf(proc);
    const code = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(1) @binding(0) var<storage, read> b: array<u32>;
@group(2) @binding(0) var<storage, read> c: array<u32>;
struct Params { k: vec4u, l: vec4u, m: vec4u }
var<immediate> params: Params;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var s = 0u; var i = 0u;
  loop { if (i >= params.k.x + b[0] + c[0]) { break; } s += i; i++; }
  a[g.x] = s + g.x;
}`;
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
    const a = device.createBuffer({ size: 256 * 4, usage: U().STORAGE | U().COPY_SRC });
    const zero = (group: number) => {
      const buffer = device.createBuffer({ size: 16, usage: U().STORAGE });
      return device.createBindGroup({ layout: pipeline.getBindGroupLayout(group), entries: [{ binding: 0, resource: { buffer } }] });
    };
    device.pushErrorScope('validation');
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: a } }] }));
    pass.setBindGroup(1, zero(1));
    pass.setBindGroup(2, zero(2));
    pass.setImmediates(0, new Uint32Array([10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    pass.dispatchWorkgroups(4);
    pass.end();
    assert.deepEqual(await submitAndRead(device, encoder, a, 256), Uint32Array.from({ length: 256 }, (_, x) => 45 + x));
    if ('atomSize' in options) assert.ok(proc.record().accounting.atomsRun >= 4, 'the dispatch ran as atoms');
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
    assert.deepEqual(await submitAndRead(device, encoder, buffer, 256), Uint32Array.from({ length: 256 }, (_, x) => ((63 * 64) / 2) * x));
    await proc.exit();
  });
});

describe('the budget-spent flag after a migration', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ memoryBudget: '256M', maxDispatchMs: 1000, devices: 2 });
    // Both devices calibrated six times slow, as above.
    for (const device of kernel.devices) device.loopRates = { ...device.loopRates, iterationsPerMs: device.loopRates.iterationsPerMs / 6 };
  });
  after(async () => {
    await kernel.shutdown();
  });

  it("binds the flag on the new device to pipelines made before the move ('auto' and explicit layouts)", async () => {
    for (const explicit of [false, true]) {
      const proc = await kernel.spawn({ name: 'moved-runaway' });
      const device = await deviceOf(proc);
      const buffer = device.createBuffer({ size: 16, usage: U().STORAGE | U().COPY_SRC });
      const groupLayout = explicit ? device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] }) : null;
      const pipeline = device.createComputePipeline({
        label: 'flagged',
        layout: groupLayout ? device.createPipelineLayout({ bindGroupLayouts: [groupLayout] }) : 'auto',
        compute: { module: device.createShaderModule({ code: RUNAWAY_WGSL }) },
      });
      const group = device.createBindGroup({ layout: groupLayout ?? pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
      const from = kernel.devicesOf(proc.pid)[0];
      const to = from === 'gpu0' ? 'gpu1' : 'gpu0';
      await kernel.migrate(proc.pid, to);
      assert.deepEqual(kernel.devicesOf(proc.pid), [to]);
      device.pushErrorScope('validation');
      const encoder = device.createCommandEncoder();
      encodeDispatchPass(encoder, pipeline, group, 1);
      const outcome = await runawayOutcome(submitAndRead(device, encoder, buffer, 4));
      assert.equal(outcome, 'AbortError', `${explicit ? 'explicit' : "'auto'"} layout: the map is rejected (loop rates: ${JSON.stringify(kernel.stats().devices.map((d) => d.loopRates))})`);
      assert.match((await device.lost).message, new RegExp(`watchdog: 'flagged' ran \\d+ ms on ${to} and its loops ran out of their iteration budget`));
    }
  });
});

describe("the rewrite's budget-spent flag", () => {
  it('goes at the highest bind group index the module leaves free, stored at each end of an invocation that spent its budget', () => {
    const early = RUNAWAY_WGSL.replace('fn main() { loop', 'fn main() { if (d[2] == 1u) { return; } loop');
    const bounded = boundLoops(early, 1000, 'shared', { spentFlagBelow: 4 });
    assert.equal(bounded.spentFlagGroup, 3);
    assert.doesNotMatch(bounded.code, /gpunix_loop_spent/, 'the plain form has no flag');
    const flagged = bounded.flaggedCode!;
    assert.match(flagged, /@group\(3\) @binding\(0\) var<storage, read_write> gpunix_loop_spent: atomic<u32>;/);
    const store = 'if (gpunix_loop_budget == 0u) { atomicStore(&gpunix_loop_spent, 1u); }';
    assert.ok(flagged.includes(`${store} return; }`), 'before the early return');
    assert.ok(flagged.includes(`${store} }\n`), "at the entry point's end");
    assert.ok(!flagged.includes('= 0u; atomicStore'), 'not in the loop');
    assert.equal(flagged.replaceAll(`${store} `, '').replace(/\n@group\(3\)[^\n]*\n$/, '\n'), bounded.code.endsWith('\n') ? bounded.code : `${bounded.code}\n`, 'the same bounds otherwise');
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
    assert.equal(unchecked.flaggedCode, undefined);
    const full = [0, 1, 2, 3].map((g) => `@group(${g}) @binding(0) var<storage, read_write> d${g}: array<u32>;`).join('\n') + '\n@compute @workgroup_size(1) fn main() { loop { if (d0[0] == 7u) { break; } } }';
    assert.equal(boundLoops(full, 1000, 'shared', { spentFlagBelow: 4 }).spentFlagGroup, undefined);
  });
});
