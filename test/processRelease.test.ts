// A long-running kernel (gpunix daemon, an embedded kernel running job after job) must not keep
// the processes that ran on it once they have ended and been reaped: the dispatcher keeps a
// process's per-device bookkeeping (runs in flight, its last run) while it lives, without
// deleting it after every run (a Map's delete allocates), and must drop it when the process ends.
// Nor may a live process's kernel keep what the program let go of: the kernel reuses a repeated
// pass's record (src/vgpu/commandEncoder.ts), and must not hold the last pass's pipeline and bind
// group (and the buffers they charge to the tenant) once its command buffers are gone.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createKernel, Kernel } from '../src/index.js';
import { dispatchOnce, writeCopyReadBack } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const COUNTER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: atomic<u32>;
@compute @workgroup_size(1) fn main() { atomicAdd(&counter, 1u); }`;

/** COUNTER's pipeline on `device`, and a bind group over a counter of its own. */
function counterKernel(device: GPUDevice): { pipeline: GPUComputePipeline; group: GPUBindGroup } {
  const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: COUNTER }) } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: counter } }] });
  return { pipeline, group };
}

/** Runs a process that does what a readback loop and a dispatch loop do, lets it exit, and returns a weak reference to its process. */
async function runAndExit(kernel: Kernel, name: string): Promise<WeakRef<object>> {
  const handle = await kernel.spawn({ name });
  const device = await (await handle.gpu.requestAdapter())!.requestDevice();
  const src = device.createBuffer({ size: 256, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  const readback = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const { pipeline, group } = counterKernel(device);
  for (let round = 0; round < 5; round++) {
    dispatchOnce(device, pipeline, group);
    const read = await writeCopyReadBack(device, src, readback, new Uint8Array(256).fill(round + 1));
    assert.equal(read[255], round + 1);
  }
  const proc = (handle as unknown as { proc: object }).proc;
  await handle.exit();
  return new WeakRef(proc);
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Whether `ref`'s object is collected within a few full collections. Each collection runs in a job
 * of its own, after the one that last called deref(): a WeakRef keeps what deref() returned alive
 * until the end of that job.
 */
async function collected(ref: WeakRef<object>): Promise<boolean> {
  for (let i = 0; i < 5; i++) {
    await tick();
    gc();
    await tick();
    if (ref.deref() === undefined) return true;
  }
  return false;
}

/** Dispatches a few times with a pipeline and bind group of its own, waits for the work, and returns weak references to both. */
async function dispatchAndLetGo(device: GPUDevice): Promise<WeakRef<object>[]> {
  const { pipeline, group } = counterKernel(device);
  for (let i = 0; i < 3; i++) dispatchOnce(device, pipeline, group);
  await device.queue.onSubmittedWorkDone();
  return [new WeakRef(pipeline), new WeakRef(group)];
}

describe('what the kernel lets go of', () => {
  let kernel: Kernel;
  before(async () => {
    // Exited processes are reaped at once: nothing of the kernel's own is meant to keep them.
    kernel = await createKernel({ exitedRetentionMs: 0 });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('an ended process once reaped, after readback rounds and dispatches', async () => {
    const first = await runAndExit(kernel, 'first');
    // A second process after it: whatever the kernel keeps of "the last process" moves on to it.
    const second = await runAndExit(kernel, 'second');
    // A third keeps the kernel busy with a live process meanwhile (its entries stay, the others' go).
    const third = await kernel.spawn({ name: 'third' });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(
      kernel.ps().map((p) => p.name),
      ['third'],
      'the exited processes are reaped',
    );
    assert.ok(await collected(first), 'the first process is still referenced after it ended and was reaped');
    assert.ok(await collected(second), 'the second process is still referenced after it ended and was reaped');
    await third.exit();
  });

  it("a live process's pipeline and bind group of its last pass, once the program has let go of them and the work is done", async () => {
    const handle = await kernel.spawn({ name: 'live' });
    const device = await (await handle.gpu.requestAdapter())!.requestDevice();
    const [pipeline, group] = await dispatchAndLetGo(device);
    assert.ok(await collected(group), 'the bind group of the last pass is still referenced');
    assert.ok(await collected(pipeline), 'the pipeline of the last pass is still referenced');
    await handle.exit();
  });
});
