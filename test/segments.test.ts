// Shared segments: two processes of one tenant exchange data on the device through a named
// segment, counted once; another tenant can never reach it; the last detach frees it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, GpunixError, Kernel, ProcessHandle } from '../src/index.js';
import './helpers.js';

interface Gpunix {
  attachShared(name: string, size: number): GPUBuffer;
}
const SIZE = 64 * 16 * 4;

async function deviceOf(proc: ProcessHandle): Promise<GPUDevice & { gpunix: Gpunix }> {
  return (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice & { gpunix: Gpunix };
}

/** Runs `code` (binding 0: the segment, binding 1: a private buffer) over SIZE/4 invocations; returns the private buffer. */
async function run(device: GPUDevice, segment: GPUBuffer, code: string): Promise<Uint32Array> {
  const own = device.createBuffer({ size: SIZE, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: segment } }, { binding: 1, resource: { buffer: own } }] });
  const staging = device.createBuffer({ size: SIZE, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(SIZE / 4 / 64);
  pass.end();
  encoder.copyBufferToBuffer(own, 0, staging, 0, SIZE);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  own.destroy();
  return out;
}

const PRODUCE = `@group(0) @binding(0) var<storage, read_write> seg: array<u32>;
@group(0) @binding(1) var<storage, read_write> own: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { seg[g.x] = g.x * 7u + 1u; own[g.x] = 0u; }`;
const CONSUME = `@group(0) @binding(0) var<storage, read_write> seg: array<u32>;
@group(0) @binding(1) var<storage, read_write> own: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { own[g.x] = seg[g.x]; }`;

describe('shared segments', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ tenants: { team: {}, rival: {} } });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('lets two processes of one tenant exchange data on the device, counted once', async () => {
    const producer = await kernel.spawn({ name: 'producer', tenant: 'team' });
    const consumer = await kernel.spawn({ name: 'consumer', tenant: 'team' });
    const [dp, dc] = [await deviceOf(producer), await deviceOf(consumer)];
    const before = kernel.stats().bytesAllocated;
    const p = dp.gpunix.attachShared('frames', SIZE);
    await run(dp, p, PRODUCE);
    await dp.queue.onSubmittedWorkDone(); // the producer's writes are complete
    const c = dc.gpunix.attachShared('frames', SIZE);
    const seen = await run(dc, c, CONSUME);
    assert.ok(seen.every((v, i) => v === i * 7 + 1), 'the consumer reads what the producer wrote');
    assert.equal(kernel.stats().bytesAllocated - before, SIZE, 'the segment counts once');
    assert.equal(kernel.stats().tenants.find((t) => t.name === 'team')!.bytes, SIZE);
    assert.deepEqual(kernel.sharedSegments().map((s) => [s.name, s.tenant, s.attached.length]), [['frames', 'team', 2]]);

    // Another tenant's "frames" is another segment: it never sees the team's data.
    const rival = await kernel.spawn({ name: 'rival', tenant: 'rival' });
    const dr = await deviceOf(rival);
    const r = dr.gpunix.attachShared('frames', SIZE);
    assert.ok((await run(dr, r, CONSUME)).every((v) => v === 0), "the rival tenant's segment is its own, zeroed");
    await rival.exit();
    assert.ok((await run(dc, c, CONSUME)).every((v, i) => v === i * 7 + 1), "the team's data is untouched");

    p.destroy();
    await dp.queue.onSubmittedWorkDone();
    assert.equal(kernel.sharedSegments()[0].attached.length, 1, 'detached, still alive for the consumer');
    await consumer.exit();
    assert.deepEqual(kernel.sharedSegments(), [], 'the last detach freed it');
    await producer.exit();
    assert.equal(kernel.stats().bytesAllocated, before);
    assert.equal(kernel.stats().liveObjects.total, 0);
  });

  it('refuses malformed requests and pins attached processes to their device', async () => {
    const proc = await kernel.spawn({ name: 'odd', tenant: 'team' });
    const device = await deviceOf(proc);
    const bad = (e: unknown): boolean => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_OPTION';
    assert.throws(() => device.gpunix.attachShared('x', 6), bad);
    assert.throws(() => device.gpunix.attachShared('', 64), bad);
    device.gpunix.attachShared('pinned', 64);
    assert.throws(() => device.gpunix.attachShared('pinned', 128), bad);
    await assert.rejects(kernel.checkpoint(proc.pid, '/tmp/never.gpunix'), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BUSY');
    await proc.exit();
    assert.deepEqual(kernel.sharedSegments(), []);
  });
});
