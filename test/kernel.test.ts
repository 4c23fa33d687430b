import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel } from '../src/index.js';
import './helpers.js';

describe('the embedded kernel', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel();
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('lists its devices with their adapter description, limits and budget', () => {
    const devices = kernel.describeDevices();
    assert.ok(devices.length >= 1);
    assert.equal(devices[0].id, 'gpu0');
    assert.ok(devices[0].limits.maxBufferSize > 0);
    assert.equal(devices[0].budgetBytes, 4 * 1024 ** 3);
  });

  it('spawns a process that runs a kernel and releases everything when it exits', async () => {
    const proc = await kernel.spawn({ name: 'doubler', priority: 'batch' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const module = device.createShaderModule({
      code: `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { a[g.x] = g.x * 2u; }`,
    });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
    const storage = device.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size: 1024, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage } }] });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(4);
    pass.end();
    encoder.copyBufferToBuffer(storage, 0, readback, 0, 1024);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const out = new Uint32Array(readback.getMappedRange().slice(0));
    readback.unmap();
    assert.deepEqual([out[0], out[1], out[255]], [0, 2, 510]);

    const [row] = kernel.ps().filter((p) => p.pid === proc.pid);
    assert.equal(row.name, 'doubler');
    assert.equal(row.priority, 'batch');
    assert.equal(row.accounting.dispatches, 1);
    assert.equal(row.accounting.bytesAllocated, 2048);
    assert.ok(row.accounting.gpuTimeNs > 0, 'GPU time is measured');
    assert.equal(kernel.stats().liveObjects.byKind.buffer, 2);

    const status = await proc.exit();
    assert.deepEqual(status, { code: 0, reason: 'normal' });
    const stats = kernel.stats();
    assert.equal(stats.liveObjects.total, 0);
    assert.equal(stats.bytesAllocated, 0);
    assert.equal((await device.lost).reason, 'unknown');
  });
});
