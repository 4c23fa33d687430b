// A process's burst of whole submits reaches Dawn as one real submit (src/device/physicalDevice.ts
// holdSubmit): given to Dawn when the burst ends, before anything else reaches the queue, and every
// HELD_SUBMITS_MAX command buffers; the first submit after a pause is not held. What a program must not be able to tell, checked here: every
// submit runs, once, in its order with the writes and maps around it; a submit Dawn refuses where
// gpunix's checks at the call did not foresee it (its buffer destroyed behind the kernel's back)
// takes nothing else of its burst with it, and its error lands in its own scope. Where a submit
// runs its work before it returns (GL over llvmpipe) nothing is held.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel, ProcessHandle } from '../src/index.js';
import { HELD_SUBMITS_MAX } from '../src/params.js';
import { countRealQueueCalls, dispatchOnce, readWord, suiteBackend } from './helpers.js';

const COUNTER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: atomic<u32>;
@compute @workgroup_size(1) fn main() { atomicAdd(&counter, 1u); }`;

interface Physical {
  readonly id: string;
  readonly holdsSubmits: boolean;
  readonly heldCount: number;
  readonly queue: GPUQueue;
}

/** The kernel's device behind a process's virtual device. */
function physicalOf(device: GPUDevice): Physical {
  return (device as unknown as { physical: Physical }).physical;
}

/** Counts the real submits Dawn is given on the queue behind `device`, until `restore()`. */
function countRealSubmits(device: GPUDevice): { count(): number; restore(): void } {
  return countRealQueueCalls(device, 'submit');
}

/** The kernel's count of submits held and given to Dawn in batches on `device`'s real device (kernel.stats). */
function heldOn(kernel: Kernel, device: GPUDevice): { batches: number; submits: number } {
  return kernel.stats().devices.find((d) => d.id === physicalOf(device).id)!.heldSubmits;
}

interface Rig {
  device: GPUDevice;
  pipeline: GPUComputePipeline;
  counter: GPUBuffer;
  group: GPUBindGroup;
}

async function rig(kernel: Kernel, name: string): Promise<Rig> {
  return (await rigWithProcess(kernel, name)).rig;
}

async function rigWithProcess(kernel: Kernel, name: string): Promise<{ rig: Rig; proc: ProcessHandle }> {
  const proc = await kernel.spawn({ name });
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: COUNTER }) } });
  const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: counter } }] });
  return { rig: { device, pipeline, counter, group }, proc };
}

/** The counter's value. */
function read({ device, counter }: Rig): Promise<number> {
  return readWord(device, counter);
}

/** `count` submits of one single-workgroup dispatch each: the counter grows by `count`. */
function addBySubmits({ device, pipeline, group }: Rig, count: number): void {
  for (let i = 0; i < count; i++) dispatchOnce(device, pipeline, group);
}

describe('held submits', () => {
  let kernel: Kernel;
  let unheld: Kernel;
  let millisecond: Kernel;
  before(async () => {
    // Every submit within a second of the one before counts as part of a burst: a loaded machine's
    // pauses (a collection, another program) must not decide what this test sees. The default
    // window (250 µs) is the same rule.
    kernel = await createKernel({ coalesceSubmitsWithinUs: 1e6 });
    unheld = await createKernel({ coalesceSubmitsWithinUs: 0 });
    millisecond = await createKernel({ coalesceSubmitsWithinUs: 1000 });
  });
  after(async () => {
    await kernel.shutdown();
    await unheld.shutdown();
    await millisecond.shutdown();
  });

  it('gives a burst of submits to Dawn as a few real submits, and every dispatch runs once', async (t) => {
    const r = await rig(kernel, 'burst');
    if (!physicalOf(r.device).holdsSubmits) {
      // GL's submits run their work before they return: held, that work would move to the flush.
      assert.ok(suiteBackend === 'opengles' || suiteBackend === 'opengl', `submits are held on every backend but GL's (${suiteBackend})`);
      t.skip(`submits are not held on ${suiteBackend}`);
      return;
    }
    const submits = 40;
    const held = (): { batches: number; submits: number } => heldOn(kernel, r.device);
    const before = held();
    const counted = countRealSubmits(r.device);
    try {
      addBySubmits(r, submits);
      await r.device.queue.onSubmittedWorkDone();
    } finally {
      counted.restore();
    }
    assert.ok(counted.count() <= Math.ceil(submits / HELD_SUBMITS_MAX) + 1, `${submits} submits reached Dawn as ${counted.count()} real submits`);
    assert.equal(physicalOf(r.device).heldCount, 0, 'nothing is left held once the burst is over');
    // The first of a burst goes at once (nothing came right before it): the rest are held.
    assert.equal(held().submits - before.submits, submits - 1, 'every submit of the burst but its first was held (kernel.stats)');
    assert.ok(held().batches - before.batches <= counted.count(), 'each batch is one real submit');
    assert.equal(await read(r), submits);
  });

  it('refuses a coalesceSubmitsWithinUs that is not a number of µs from 0 to 1000000, with a coded error', async () => {
    for (const bad of [-1, 2e6, Number.NaN, '250' as unknown as number]) {
      await assert.rejects(createKernel({ coalesceSubmitsWithinUs: bad }), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'GPUNIX_E_BAD_OPTION');
        assert.match(error.message, /coalesceSubmitsWithinUs must be a number of µs from 0 to 1000000/);
        return true;
      });
    }
  });

  it('gives each submit to Dawn alone with coalesceSubmitsWithinUs: 0', async () => {
    const r = await rig(unheld, 'unheld');
    assert.equal(physicalOf(r.device).holdsSubmits, false);
    const counted = countRealSubmits(r.device);
    try {
      addBySubmits(r, 20);
      await r.device.queue.onSubmittedWorkDone();
    } finally {
      counted.restore();
    }
    assert.equal(counted.count(), 20);
    assert.equal(await read(r), 20);
  });

  it('gives a submit that follows a pause to Dawn at once, so the device runs it while the program computes', async (t) => {
    const r = await rig(millisecond, 'pauses');
    if (!physicalOf(r.device).holdsSubmits) {
      t.skip(`submits are not held on ${suiteBackend}`);
      return;
    }
    const counted = countRealSubmits(r.device);
    const seen: number[] = [];
    try {
      // One synchronous stretch: each submit is followed by 5 ms of the program's own work.
      for (let i = 0; i < 3; i++) {
        dispatchOnce(r.device, r.pipeline, r.group);
        seen.push(counted.count());
        const until = performance.now() + 5;
        while (performance.now() < until);
      }
      await r.device.queue.onSubmittedWorkDone();
    } finally {
      counted.restore();
    }
    assert.deepEqual(seen, [1, 2, 3], 'each submit reached Dawn within its call');
    assert.equal(await read(r), 3);
  });

  it('keeps the program order of submits, writes and a map made in one burst', async () => {
    const r = await rig(kernel, 'order');
    const readback = r.device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const before = heldOn(kernel, r.device).submits;
    // One synchronous burst: a write, five adds, a write, three adds, a copy out, a map.
    r.device.queue.writeBuffer(r.counter, 0, new Uint32Array([7]));
    addBySubmits(r, 5);
    r.device.queue.writeBuffer(r.counter, 0, new Uint32Array([100]));
    addBySubmits(r, 3);
    const encoder = r.device.createCommandEncoder();
    encoder.copyBufferToBuffer(r.counter, 0, readback, 0, 4);
    r.device.queue.submit([encoder.finish()]);
    const mapped = readback.mapAsync(GPUMapMode.READ);
    addBySubmits(r, 2);
    await mapped;
    assert.equal(new Uint32Array(readback.getMappedRange())[0], 103, 'the copy saw the second write and the three adds after it, not the two after the map');
    readback.unmap();
    assert.equal(await read(r), 105);
    if (physicalOf(r.device).holdsSubmits) assert.ok(heldOn(kernel, r.device).submits - before >= 5, 'the adds between the writes were held');
  });

  it("gives Dawn the submits held before device.destroy() in the same burst, before the device's buffers go", async (t) => {
    const { rig: r, proc } = await rigWithProcess(kernel, 'destroyed');
    if (!physicalOf(r.device).holdsSubmits) {
      t.skip(`submits are not held on ${suiteBackend}`);
      return;
    }
    const before = heldOn(kernel, r.device).submits;
    addBySubmits(r, 6);
    r.device.destroy();
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Held past the destroy, they would have reached Dawn naming destroyed buffers: refused, and
    // taken back out of the process's count.
    assert.equal(heldOn(kernel, r.device).submits - before, 5, 'the five after the first were held, and went through');
    assert.equal(proc.record().accounting.dispatches, 6);
  });

  it('retries alone the submits of a batch Dawn refused: only the refused one is lost, its error in its own scope', async (t) => {
    const r = await rig(kernel, 'refused');
    if (!physicalOf(r.device).holdsSubmits) {
      t.skip(`submits are not held on ${suiteBackend}`);
      return;
    }
    const victim = r.device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
    const victimGroup = r.device.createBindGroup({ layout: r.pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: victim } }] });
    // Destroyed behind the kernel's back: gpunix's checks at the call find the buffer alive and
    // hold the submit with the others; Dawn refuses the batch that carries it.
    (victim as unknown as { residency: { peek(): GPUBuffer | null } }).residency.peek()!.destroy();
    const counted = countRealSubmits(r.device);
    let reachedDawnInBurst: number;
    let innerError: GPUError | null;
    let outer: Promise<GPUError | null>;
    try {
      r.device.pushErrorScope('validation');
      addBySubmits(r, 3);
      r.device.pushErrorScope('validation');
      dispatchOnce(r.device, r.pipeline, victimGroup);
      const inner = r.device.popErrorScope();
      addBySubmits(r, 4);
      outer = r.device.popErrorScope();
      reachedDawnInBurst = counted.count();
      innerError = await inner;
    } finally {
      counted.restore();
    }
    // Only the first of the eight went at once: the refused one was held with six others.
    assert.equal(reachedDawnInBurst, 1, 'the submits after the first were held');
    assert.ok(innerError instanceof GPUValidationError, 'the refused submit errs in the scope current at its call');
    assert.match(innerError.message, /destroyed/i);
    assert.equal(await outer, null, 'the submits around it raised nothing');
    assert.equal(await read(r), 7, 'the seven submits around the refused one all ran');
  });
});
