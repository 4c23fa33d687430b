// Live migration: a process moves to another device in the middle of an iterative computation
// while its program keeps running with the same handles; its final results are byte-identical
// to an unmigrated run. Two real devices on one adapter stand for two GPUs.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, GpunixError, Kernel, ProcessHandle } from '../src/index.js';
import './helpers.js';

const WGSL = `
struct Params { scale: u32, shift: u32 }
@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(1) @binding(0) var<storage, read_write> histogram: array<atomic<u32>, 16>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) n: vec3u) {
  let i = g.x + g.y * n.x * 64u;
  if (i >= arrayLength(&state)) { return; }
  let v = state[i] * params.scale + params.shift + i;
  state[i] = v ^ (v >> 7u);
  atomicAdd(&histogram[v & 15u], 1u);
}`;

const N = 64 * 200;

/** Runs `steps` steps; calls `between(step)` after each (where a migration may happen). Returns all result bytes. */
async function program(proc: ProcessHandle, steps: number, between: (step: number) => Promise<void>): Promise<Uint8Array> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const module = device.createShaderModule({ code: WGSL, label: 'stepper' });
  // An explicit layout for group 1, 'auto' for the rest: both kinds must survive the move.
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module }, label: 'step' });
  const state = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label: 'state' });
  new Uint32Array(state.getMappedRange()).forEach((_, i, a) => (a[i] = i * 2654435761));
  state.unmap();
  const params = device.createBuffer({ size: 8, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'params' });
  const histogram = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, label: 'histogram' });
  const group0 = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: state } }, { binding: 1, resource: { buffer: params } }] });
  const group1 = device.createBindGroup({ layout: pipeline.getBindGroupLayout(1), entries: [{ binding: 0, resource: { buffer: histogram } }] });
  for (let step = 0; step < steps; step++) {
    device.queue.writeBuffer(params, 0, new Uint32Array([step + 3, step * 7]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group0);
    pass.setBindGroup(1, group1);
    pass.dispatchWorkgroups(100, 2);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    await between(step);
  }
  const out = device.createBuffer({ size: N * 4 + 64, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(state, 0, out, 0, N * 4);
  encoder.copyBufferToBuffer(histogram, 0, out, N * 4, 64);
  device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  const bytes = new Uint8Array(out.getMappedRange().slice(0));
  device.destroy();
  return bytes;
}

describe('migration', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ devices: 2 });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('moves a process between devices mid-computation with byte-identical results', async () => {
    assert.equal(kernel.describeDevices().length, 2);
    const reference = await program(await kernel.spawn({ name: 'unmoved' }), 8, async () => {});
    const proc = await kernel.spawn({ name: 'mover' });
    const deviceOf = (): string => kernel.stats().devices.find((d) => d.usedBytes + d.evictedBytes > 0)!.id;
    let moves = 0;
    const moved = await program(proc, 8, async (step) => {
      if (step === 2 || step === 5) {
        const from = deviceOf();
        const to = from === 'gpu0' ? 'gpu1' : 'gpu0';
        await kernel.migrate(proc.pid, to);
        assert.equal(deviceOf(), to, `after the move the process's memory is on ${to}`);
        moves++;
      }
    });
    assert.equal(moves, 2);
    assert.equal(Buffer.compare(moved, reference), 0, 'results are byte-identical to the unmoved run');
    await proc.exit();
    const stats = kernel.stats();
    assert.equal(stats.bytesAllocated, 0);
    assert.equal(stats.liveObjects.total, 0);
  });

  it("a program's calls while its process moves are made on one device: the move raises no error of its own", async () => {
    const proc = await kernel.spawn({ name: 'busy mover' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const module = device.createShaderModule({ code: WGSL, label: 'stepper' });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module }, label: 'step' });
    const histogram = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, label: 'histogram' });
    const from = kernel.devicesOf(proc.pid)[0];
    const to = from === 'gpu0' ? 'gpu1' : 'gpu0';
    device.pushErrorScope('validation');
    // The program goes on making objects for a while after the move begins (a burst, as a program
    // makes the next steps' objects; then it waits, as for its results): from a pipeline made
    // before the move and from ones made during it, their layouts' bind groups, new buffers.
    let moving = true;
    const moved = kernel.migrate(proc.pid, to).finally(() => (moving = false));
    const groups: GPUBindGroup[] = [];
    let turns = 0;
    for (; moving && turns < 6; turns++) {
      const fresh = device.createComputePipeline({ layout: 'auto', compute: { module }, label: `made while moving ${turns}` });
      for (const source of [pipeline, fresh]) {
        groups.push(device.createBindGroup({ layout: source.getBindGroupLayout(1), entries: [{ binding: 0, resource: { buffer: histogram } }] }));
      }
      device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE, label: `made while moving ${turns}` });
      await new Promise((resolve) => setImmediate(resolve));
    }
    await moved;
    assert.deepEqual(kernel.devicesOf(proc.pid), [to]);
    assert.ok(turns > 1, `the program ran while the process moved (${turns} turns)`);
    const error = await device.popErrorScope();
    assert.equal(error, null, `no error from objects made during the move: ${error?.message}`);

    // What it made during the move works on the new device: each bind group counts one dispatch.
    const state = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE });
    const params = device.createBuffer({ size: 8, usage: GPUBufferUsage.UNIFORM });
    const group0 = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: state } }, { binding: 1, resource: { buffer: params } }] });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group0);
    for (const group of groups.filter((_, i) => i % 2 === 0)) {
      pass.setBindGroup(1, group);
      pass.dispatchWorkgroups(100, 2);
    }
    pass.end();
    const out = device.createBuffer({ size: 64, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(histogram, 0, out, 0, 64);
    device.queue.submit([encoder.finish()]);
    await out.mapAsync(GPUMapMode.READ);
    const counted = new Uint32Array(out.getMappedRange()).reduce((a, b) => a + b, 0);
    assert.equal(counted, (groups.length / 2) * N, 'one count per invocation of each dispatch');
    await proc.exit();
  });

  it('takes along a buffer the program destroyed while work it submitted before still waits to read it', async () => {
    // destroy() after submit() is valid: the submitted work reads the buffer first. In gpunix the
    // real buffer goes when the dispatcher reaches the destroy, behind that work; a move in between
    // once left it on the old device, and the work, re-encoded on the new one, named it there
    // (Dawn: "[Buffer] is associated with [Device "gpunix-gpu0"], and cannot be used with ...").
    const proc = await kernel.spawn({ name: 'destroyer' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const words = 64;
    const source = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label: 'source' });
    new Uint32Array(source.getMappedRange()).forEach((_, i, a) => (a[i] = i * 2654435761));
    source.unmap();
    const readback = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' });
    await device.queue.onSubmittedWorkDone();
    const uncaptured: string[] = [];
    device.onuncapturederror = (event) => uncaptured.push(event.error.message);
    const from = kernel.devicesOf(proc.pid)[0];
    const to = from === 'gpu0' ? 'gpu1' : 'gpu0';
    kernel.suspend(proc.pid);
    device.pushErrorScope('validation');
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(source, 0, readback, 0, words * 4);
    device.queue.submit([encoder.finish()]);
    source.destroy();
    const error = device.popErrorScope();
    await kernel.migrate(proc.pid, to);
    assert.deepEqual(kernel.devicesOf(proc.pid), [to]);
    kernel.resume(proc.pid);
    await readback.mapAsync(GPUMapMode.READ);
    const read = new Uint32Array(readback.getMappedRange().slice(0));
    readback.unmap();
    assert.equal((await error)?.message ?? null, null, 'the submit raised no error');
    assert.deepEqual(uncaptured, []);
    for (const i of [0, 1, 31, 63]) assert.equal(read[i], (i * 2654435761) >>> 0, `word ${i} is the destroyed buffer's`);
    await proc.exit();
    assert.equal(kernel.stats().bytesAllocated, 0, 'the destroyed buffer was freed on the new device');
  });

  it('refuses to move a process with a mapped buffer, and unknown devices, with coded errors', async () => {
    const proc = await kernel.spawn({ name: 'holder' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const mapped = device.createBuffer({ size: 64, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    const other = kernel.stats().devices.find((d) => d.usedBytes === 0)!.id;
    await assert.rejects(kernel.migrate(proc.pid, other), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BUSY' && /mapped/.test(e.message));
    await assert.rejects(kernel.migrate(proc.pid, 'gpu9'), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_OPTION');
    mapped.unmap();
    await kernel.migrate(proc.pid, other);
    await proc.exit();
  });
});
