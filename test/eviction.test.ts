// Oversubscription: with the device budget below the working set, the kernel evicts idle
// processes' buffers to host memory and brings them back before they are used; programs see
// nothing but time. Mapped and in-flight buffers stay; a swapped-out process comes back intact.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel, ProcessHandle } from '../src/index.js';
import { eventually } from './helpers.js';
import { expectedStep, iterate } from './stepProgram.js';

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));


describe('oversubscription', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ memoryBudget: 8 * MiB });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('with the budget at half the working set, four processes all finish with exact results', async () => {
    const procs = await Promise.all([0, 1, 2, 3].map((i) => kernel.spawn({ name: `p${i}` })));
    // 4 processes x 2 buffers x 2 MiB = 16 MiB of buffers against an 8 MiB budget. Each idles 40 ms
    // between steps, longer than the memory manager's longest look-again wait (16 ms), so an idle
    // process is found even on a loaded machine (with 5 ms, CI once saw none idle when it looked).
    const results = await Promise.all(procs.map((p, i) => iterate(p, i * 1000, 2, 2 * MiB, 6, 40)));
    assert.deepEqual(results, [true, true, true, true]);
    const records = procs.map((p) => p.record());
    const evictions = records.reduce((sum, r) => sum + r.accounting.evictions, 0);
    const restores = records.reduce((sum, r) => sum + r.accounting.restores, 0);
    assert.ok(evictions > 0, 'buffers were evicted');
    assert.ok(restores > 0, 'evicted buffers came back');
    for (const p of procs) await p.exit();
    const stats = kernel.stats();
    assert.equal(stats.bytesAllocated, 0);
    assert.equal(stats.devices[0].evictedBytes, 0);
    assert.equal(stats.liveObjects.total, 0);
  });

  it('never evicts a mapped buffer, and a buffer larger than the whole budget is out of memory', async () => {
    const holder = await kernel.spawn({ name: 'holder' });
    const device = await (await holder.gpu.requestAdapter())!.requestDevice();
    const mapped = device.createBuffer({ size: 4 * MiB, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    const view = new Uint32Array(mapped.getMappedRange());
    view.fill(7);
    const other = await kernel.spawn({ name: 'other' });
    const od = await (await other.gpu.requestAdapter())!.requestDevice();
    od.pushErrorScope('out-of-memory');
    const big = od.createBuffer({ size: 6 * MiB, usage: GPUBufferUsage.STORAGE });
    assert.equal(await od.popErrorScope(), null, 'allocations beyond the budget are admitted: idle buffers make room');
    // The eviction is asynchronous: wait for it (a loaded machine takes longer than a fixed pause).
    await eventually("the idle process's buffer went to host memory", () => other.record().accounting.evictions === 1);
    assert.equal(holder.record().accounting.evictions, 0, 'the mapped buffer stayed on the device');
    assert.ok(kernel.stats().devices[0].usedBytes <= 8 * MiB);
    od.pushErrorScope('out-of-memory');
    od.createBuffer({ size: 9 * MiB, usage: GPUBufferUsage.STORAGE });
    assert.equal((await od.popErrorScope())?.constructor.name, 'GPUOutOfMemoryError', 'a buffer larger than the budget');
    assert.ok(view.every((v) => v === 7));
    mapped.unmap();
    big.destroy();
    await holder.exit();
    await other.exit();
  });

  it("never evicts buffers in use by a process's in-flight work", async () => {
    const busy = await kernel.spawn({ name: 'busy' });
    const device = await (await busy.gpu.requestAdapter())!.requestDevice();
    const code = `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
      @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
        var acc = g.x;
        for (var i = 0u; i < 4000u; i++) { acc = acc * 1664525u + 1013904223u; }
        out[g.x] = acc;
      }`;
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
    const out = device.createBuffer({ size: 5 * MiB, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(1024);
    pass.end();
    device.queue.submit([encoder.finish()]);
    const done = device.queue.onSubmittedWorkDone();
    assert.notEqual(busy.record().state, 'waiting', 'its work is queued or on the device');
    // Another process pushes the device over budget while the work is in flight.
    const other = await kernel.spawn({ name: 'pusher' });
    const od = await (await other.gpu.requestAdapter())!.requestDevice();
    const big = od.createBuffer({ size: 5 * MiB, usage: GPUBufferUsage.STORAGE });
    await sleep(20);
    assert.notEqual(busy.record().state, 'waiting', 'the busy process still has work on the device (about 90 ms of it)');
    assert.equal(busy.record().accounting.evictions, 0, 'nothing of the busy process was evicted');
    await done;
    const staging = device.createBuffer({ size: 1024 * 64 * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const copy = device.createCommandEncoder();
    copy.copyBufferToBuffer(out, 0, staging, 0, 1024 * 64 * 4);
    device.queue.submit([copy.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const result = new Uint32Array(staging.getMappedRange());
    for (const x of [0, 1000, 1024 * 64 - 1]) {
      let acc = x;
      for (let i = 0; i < 4000; i++) acc = (Math.imul(acc, 1664525) + 1013904223) >>> 0;
      assert.equal(result[x], acc);
    }
    staging.unmap();
    big.destroy();
    await busy.exit();
    await other.exit();
  });

  it('a swapped-out process frees its device memory and comes back intact', async () => {
    const proc = await kernel.spawn({ name: 'sleeper' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const buffer = device.createBuffer({ size: 3 * MiB, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Uint32Array(buffer.getMappedRange()).forEach((_, i, a) => (a[i] = i ^ 0x5a5a));
    buffer.unmap();
    const readable = device.createBuffer({ size: 1 * MiB, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(readable, 0, new Uint32Array(MiB / 4).fill(42));
    await device.queue.onSubmittedWorkDone();
    const usedBefore = kernel.stats().devices[0].usedBytes;
    const record = await kernel.swapOut(proc.pid);
    assert.equal(record.state, 'suspended');
    assert.equal(record.accounting.residentBytes, 0);
    assert.equal(record.accounting.evictedBytes, 4 * MiB);
    assert.equal(kernel.stats().devices[0].usedBytes, usedBefore - 4 * MiB);
    assert.equal(kernel.stats().devices[0].evictedBytes, 4 * MiB);
    // Work submitted while swapped out waits, and runs on the restored buffers after resume.
    const staging = device.createBuffer({ size: 3 * MiB, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, 3 * MiB);
    device.queue.submit([encoder.finish()]);
    kernel.resume(proc.pid);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Uint32Array(staging.getMappedRange());
    assert.ok(out.every((v, i) => v === (i ^ 0x5a5a)), 'contents came back intact');
    staging.unmap();
    await readable.mapAsync(GPUMapMode.READ);
    assert.ok(new Uint32Array(readable.getMappedRange()).every((v) => v === 42), 'a MAP_READ buffer came back intact');
    readable.unmap();
    assert.ok(proc.record().accounting.restores >= 2);
    await proc.exit();
    assert.equal(kernel.stats().bytesAllocated, 0);
  });

  it("keeps WebGPU's usage rules: copying from a buffer without COPY_SRC is still a validation error", async () => {
    const proc = await kernel.spawn({ name: 'rules' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const storageOnly = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE });
    const target = device.createBuffer({ size: 64, usage: GPUBufferUsage.COPY_DST });
    assert.equal(storageOnly.usage, GPUBufferUsage.STORAGE, 'the program sees its own usage');
    device.pushErrorScope('validation');
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(storageOnly, 0, target, 0, 64);
    encoder.finish();
    assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError');
    await proc.exit();
  });
});
