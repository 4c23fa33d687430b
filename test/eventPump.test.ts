// The kernel's pacing of Dawn's event polling (src/device/eventPump.ts), on the real device: a kernel
// takes Dawn's polls over while it runs and gives Node's setImmediate back when it shuts down;
// every other setImmediate passes through untouched; results are exact either way.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
import { promisify } from 'node:util';
import { bypassEventPump, createKernel, ErrorCodes, eventPumpStats, GpunixError, Kernel } from '../src/index.js';
import { BUSY_WGSL, BusyClient, expectedBusy } from '../src/kernel/capabilities.js';
import './helpers.js';

const nodeSetImmediate = globalThis.setImmediate;

/** Keeps a process's device busy (one submit in flight at a time) for `ms`, then checks its results. */
async function busyFor(kernel: Kernel, ms: number): Promise<{ elapsedMs: number; polls: number; sleptMs: number }> {
  const proc = await kernel.spawn({ name: 'busy' });
  const client = await BusyClient.open(proc.gpu, { workgroups: 16, iterations: 1000 }, 'busy');
  await client.timedSubmit(); // compiled and costed before the measured span
  const before = eventPumpStats();
  const start = performance.now();
  while (performance.now() - start < ms) await client.timedSubmit();
  const elapsedMs = performance.now() - start;
  const after = eventPumpStats();
  await client.verify();
  client.destroy();
  await proc.exit();
  return { elapsedMs, polls: after.polls - before.polls, sleptMs: after.sleptMs - before.sleptMs };
}

describe('Dawn event pump', () => {
  it('paces Dawn polls to the interval while a kernel runs, and puts setImmediate back at shutdown', async () => {
    const kernel = await createKernel({ dawnPollIntervalUs: 2000 });
    try {
      assert.notEqual(globalThis.setImmediate, nodeSetImmediate, 'the kernel installs its pacing');
      assert.deepEqual({ active: eventPumpStats().active, intervalUs: eventPumpStats().intervalUs }, { active: true, intervalUs: 2000 });
      const { elapsedMs, polls, sleptMs } = await busyFor(kernel, 300);
      assert.ok(polls > 0, 'Dawn polls went through the pump');
      // One poll per 2 ms at most (a poll that other work delayed runs at once: +slack for those).
      assert.ok(polls <= elapsedMs / 2 + 10, `${polls} polls in ${elapsedMs.toFixed(0)} ms at a 2 ms interval`);
      assert.ok(sleptMs > 0, 'the thread slept between polls instead of spinning');
      assert.equal(kernel.stats().eventPump.intervalUs, 2000);
    } finally {
      await kernel.shutdown();
    }
    assert.equal(globalThis.setImmediate, nodeSetImmediate, 'Node’s own setImmediate is back');
    assert.equal(eventPumpStats().active, false);
  });

  it('sleeps between polls with a timer slack of 1 µs, and gives the thread its own back when bypassed and at shutdown', async (t) => {
    // Linux ends a timed wait up to the thread's slack late (50 µs by default): each paced poll of
    // tens of microseconds came ~70 µs after its time. /proc/self/timerslack_ns is the main thread's.
    if (!existsSync('/proc/self/timerslack_ns')) return t.skip('no /proc/self/timerslack_ns (not Linux)');
    const slack = (): number => Number(readFileSync('/proc/self/timerslack_ns', 'utf8'));
    const own = slack();
    const kernel = await createKernel();
    try {
      assert.equal(slack(), Math.min(own, 1000), 'the pump sleeps with a slack of 1 µs');
      bypassEventPump(true);
      assert.equal(slack(), own, 'bypassed (bare Dawn measured beside the kernel), the thread has its own slack');
      bypassEventPump(false);
      assert.equal(slack(), Math.min(own, 1000));
      await busyFor(kernel, 50);
    } finally {
      await kernel.shutdown();
    }
    assert.equal(slack(), own, 'the thread has its own slack back');
  });

  it('passes every other setImmediate through, arguments and promisified forms included', async () => {
    const kernel = await createKernel();
    try {
      const sum = await new Promise<number>((resolve) => setImmediate((a: number, b: number) => resolve(a + b), 2, 3));
      assert.equal(sum, 5);
      assert.equal(await promisify(setImmediate)('value'), 'value');
      assert.equal(await setImmediatePromise('timers/promises'), 'timers/promises');
      const order: string[] = [];
      await new Promise<void>((resolve) => {
        setImmediate(() => order.push('first'));
        setImmediate(() => {
          order.push('second');
          resolve();
        });
      });
      assert.deepEqual(order, ['first', 'second']);
      // A promise's resolve is native and unnamed too: yielding to the event loop this way must not be paced.
      const polls = eventPumpStats().polls;
      for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(eventPumpStats().polls, polls, 'no yield was taken for a Dawn poll');
      const cleared = setImmediate(() => assert.fail('a cleared immediate ran'));
      clearImmediate(cleared);
      await new Promise((resolve) => setTimeout(resolve, 5));
    } finally {
      await kernel.shutdown();
    }
  });

  it('with dawnPollIntervalUs 0 leaves dawn.node polling by itself', async () => {
    const kernel = await createKernel({ dawnPollIntervalUs: 0 });
    try {
      assert.equal(globalThis.setImmediate, nodeSetImmediate);
      const { polls } = await busyFor(kernel, 100);
      assert.equal(polls, 0, 'no poll went through the pump');
      assert.equal(kernel.stats().eventPump.active, false);
    } finally {
      await kernel.shutdown();
    }
  });

  it('is bypassed on request (benchmarks measure bare Dawn as shipped this way), then paces again', async () => {
    const kernel = await createKernel({ dawnPollIntervalUs: 1000 });
    try {
      bypassEventPump(true);
      assert.equal(eventPumpStats().active, false);
      assert.equal((await busyFor(kernel, 100)).polls, 0);
      bypassEventPump(false);
      assert.ok((await busyFor(kernel, 100)).polls > 0);
    } finally {
      bypassEventPump(false);
      await kernel.shutdown();
    }
  });

  it('holds while any kernel holds it; the shortest interval wins', async () => {
    const slow = await createKernel({ dawnPollIntervalUs: 5000 });
    const fast = await createKernel({ dawnPollIntervalUs: 250 });
    assert.equal(eventPumpStats().intervalUs, 250);
    await fast.shutdown();
    assert.equal(eventPumpStats().intervalUs, 5000);
    assert.notEqual(globalThis.setImmediate, nodeSetImmediate);
    await slow.shutdown();
    assert.equal(globalThis.setImmediate, nodeSetImmediate);
  });

  it("an idle kernel does not make the pump spin for another kernel's work", async () => {
    const idle = await createKernel({ dawnPollIntervalUs: 2000 });
    const busy = await createKernel({ dawnPollIntervalUs: 2000 });
    try {
      const { elapsedMs, polls, sleptMs } = await busyFor(busy, 200);
      assert.ok(polls <= elapsedMs / 2 + 10, `${polls} polls in ${elapsedMs.toFixed(0)} ms at a 2 ms interval`);
      assert.ok(sleptMs > 0);
    } finally {
      await busy.shutdown();
      await idle.shutdown();
    }
  });

  it('does not pace a loop of small submits (several submits without a cost forecast on the device)', async () => {
    const kernel = await createKernel({ dawnPollIntervalUs: 5000 });
    try {
      const proc = await kernel.spawn({ name: 'small-submits' });
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      const pipeline = device.createComputePipeline({
        layout: 'auto',
        compute: { module: device.createShaderModule({ code: BUSY_WGSL }), constants: { ITER: 10 } },
      });
      const out = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
      const before = eventPumpStats();
      // 100 submits of 100 one-workgroup dispatches each, made up front (bench/overhead's dispatch-batched).
      for (let s = 0; s < 100; s++) {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        for (let d = 0; d < 100; d++) pass.dispatchWorkgroups(1);
        pass.end();
        device.queue.submit([encoder.finish()]);
      }
      await device.queue.onSubmittedWorkDone();
      const after = eventPumpStats();
      // Paced at 5 ms a poll, lavapipe advances such a queue only as it is polled: hundreds of ms
      // asleep (measured 230-640). Unpaced, the pump sleeps at most for a last single submit.
      assert.ok(after.polls > before.polls, 'Dawn was polled');
      assert.ok(after.sleptMs - before.sleptMs <= 25, `slept ${(after.sleptMs - before.sleptMs).toFixed(1)} ms`);
      const staging = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(out, 0, staging, 0, 256);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const words = new Uint32Array(staging.getMappedRange());
      for (const x of [0, 63]) assert.equal(words[x], expectedBusy(x, 10));
      await proc.exit();
    } finally {
      await kernel.shutdown();
    }
  });

  it('wraps a setImmediate someone else installed first, and gives theirs back', async () => {
    let theirs = 0;
    const wrapped = ((callback: (...args: unknown[]) => void, ...args: unknown[]) => {
      theirs++;
      return nodeSetImmediate(callback, ...args);
    }) as unknown as typeof setImmediate;
    globalThis.setImmediate = wrapped;
    try {
      const kernel = await createKernel();
      assert.notEqual(globalThis.setImmediate, wrapped);
      await new Promise((resolve) => setImmediate(resolve, 'through'));
      assert.ok(theirs > 0, 'calls reach the setImmediate the pump found');
      await kernel.shutdown();
      assert.equal(globalThis.setImmediate, wrapped);
    } finally {
      globalThis.setImmediate = nodeSetImmediate;
    }
  });

  it('refuses a bad interval with a coded error', async () => {
    for (const dawnPollIntervalUs of [-1, 20_000, Number.NaN, '100' as unknown as number]) {
      await assert.rejects(createKernel({ dawnPollIntervalUs }), (error: unknown) => error instanceof GpunixError && error.code === ErrorCodes.BAD_OPTION);
    }
    assert.equal(globalThis.setImmediate, nodeSetImmediate, 'a refused kernel holds nothing');
  });
});
