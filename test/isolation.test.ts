// One process's errors and death never disturb another's results. Three processes share one real
// device: A computes, B floods invalid calls, C is killed in the middle of its work. A's results
// are exact and its scopes and listener catch nothing; B's errors reach B alone, exactly as they
// reach a bare Dawn device running B's calls by itself.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel } from '../src/index.js';
import { bareDevice, deviceOf } from './helpers.js';

const N = 1024;

const A_WGSL = `@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&x)) { y[g.x] = x[g.x] * 3u + 7u; }
}`;

const SLOW_WGSL = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var v = a[g.x];
  for (var i = 0u; i < 4000u; i++) { v = v * 1664525u + 1013904223u; }
  a[g.x] = v;
}`;

const className = (e: unknown): string => {
  if (e === null) return 'null';
  const name = (e as object).constructor?.name ?? typeof e;
  return name === 'DOMException' ? `DOMException(${(e as DOMException).name})` : name;
};

/** Collects a device's uncaptured errors by class. */
function listen(device: GPUDevice): string[] {
  const seen: string[] = [];
  device.addEventListener('uncapturederror', (event) => seen.push(className((event as GPUUncapturedErrorEvent).error)));
  return seen;
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** What B saw: its uncaptured errors and, in order, what its own scopes and promises reported. */
interface FloodOutcome {
  uncaptured: string[];
  scoped: string[];
}

/**
 * B's program: rounds of invalid calls, every other round with no error scope open, yielding
 * between calls so that they interleave with the other processes' work.
 */
async function flood(d: GPUDevice, rounds: number, otherDevice?: GPUDevice): Promise<FloodOutcome> {
  const uncaptured = listen(d);
  const scoped: string[] = [];
  const U = GPUBufferUsage;
  for (let round = 0; round < rounds; round++) {
    const withScope = round % 2 === 1;
    if (withScope) d.pushErrorScope('validation');
    // 1. Invalid usage.
    d.createBuffer({ size: 16, usage: U.MAP_READ | U.STORAGE });
    // 2. Invalid WGSL, and a pipeline from it.
    const module = d.createShaderModule({ code: 'fn broken( {' });
    d.createComputePipeline({ layout: 'auto', compute: { module } });
    await tick();
    // 3. Misaligned write.
    const target = d.createBuffer({ size: 16, usage: U.COPY_DST | U.STORAGE });
    d.queue.writeBuffer(target, 2, new Uint32Array(2));
    // 4. Dispatch without a pipeline (error at finish, and again at submit).
    const encoder = d.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.dispatchWorkgroups(1);
    pass.end();
    d.queue.submit([encoder.finish()]);
    await tick();
    // 5. A command buffer submitted twice.
    const clear = d.createCommandEncoder();
    clear.clearBuffer(target);
    const commands = clear.finish();
    d.queue.submit([commands]);
    d.queue.submit([commands]);
    // 6. A map in the wrong mode: a rejection and a validation error.
    const readable = d.createBuffer({ size: 16, usage: U.MAP_READ });
    await readable.mapAsync(GPUMapMode.WRITE).then(
      () => scoped.push(`round ${round}: mapAsync resolved`),
      (e) => scoped.push(`round ${round}: mapAsync rejected ${className(e)}`),
    );
    // 7. Writing a destroyed buffer.
    target.destroy();
    d.queue.writeBuffer(target, 0, new Uint32Array(4));
    if (withScope) scoped.push(`round ${round}: scope ${className(await d.popErrorScope())}`);
    // 8. Popping a scope that is not there.
    await d.popErrorScope().then(
      () => scoped.push(`round ${round}: empty pop resolved`),
      (e) => scoped.push(`round ${round}: empty pop rejected ${className(e)}`),
    );
    if (round === 2 && otherDevice) otherDevice.destroy();
    await tick();
  }
  await d.queue.onSubmittedWorkDone();
  await new Promise((resolve) => setTimeout(resolve, 20));
  return { uncaptured, scoped };
}

const CONFIGS: Array<{ title: string; options: Parameters<typeof createKernel>[0] }> = [
  { title: 'default kernel', options: { devices: 1 } },
  // One fence at a time: calls wait in the dispatcher and run later, interleaved across processes.
  { title: 'one fence in flight, command buffers re-encoded', options: { devices: 1, maxInFlight: 1, reencodeCommandBuffers: true } },
];

for (const config of CONFIGS) describe(`process isolation on one shared device (${config.title})`, () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel(config.options);
  });
  after(async () => {
    await kernel.shutdown();
  });

  it("A's results are exact and its scopes empty while B floods invalid calls and C is killed mid-work", async () => {
    const ROUNDS_B = 6;
    // What B's calls do on a bare Dawn device of their own: what B must see under gpunix too.
    const bare = await bareDevice();
    const expected = await flood(bare, ROUNDS_B);
    bare.destroy();
    assert.ok(expected.uncaptured.length >= 3 * 8, `bare Dawn reported B's unscoped errors: ${expected.uncaptured.length}`);

    const a = await kernel.spawn({ name: 'A' });
    const b = await kernel.spawn({ name: 'B' });
    const c = await kernel.spawn({ name: 'C' });
    const [da, db, dbSecond, dc] = [await deviceOf(a), await deviceOf(b), await deviceOf(b), await deviceOf(c)];
    const aUncaptured = listen(da);
    assert.equal(kernel.stats().devices.length, 1, 'all three processes stand on one real device');

    // ---- C: queues slow work, writes, a map and a scoped invalid write, then is killed.
    const cStorage = dc.createBuffer({ size: 64 * 4 * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    const cRead = dc.createBuffer({ size: 64 * 4 * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const cPipeline = dc.createComputePipeline({ layout: 'auto', compute: { module: dc.createShaderModule({ code: SLOW_WGSL }) } });
    const cGroup = dc.createBindGroup({ layout: cPipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: cStorage } }] });
    const cWork = async (): Promise<{ map: Promise<string>; pop: Promise<string> }> => {
      for (let i = 0; i < 12; i++) {
        const encoder = dc.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(cPipeline);
        pass.setBindGroup(0, cGroup);
        pass.dispatchWorkgroups(16);
        pass.end();
        encoder.copyBufferToBuffer(cStorage, 0, cRead, 0, cRead.size);
        dc.queue.submit([encoder.finish()]);
        dc.queue.writeBuffer(cStorage, 0, new Uint32Array(64).fill(i));
        if (i === 3) await tick();
      }
      dc.pushErrorScope('validation');
      dc.queue.writeBuffer(cStorage, 2, new Uint32Array(2));
      const map = cRead.mapAsync(GPUMapMode.READ).then(
        () => 'resolved',
        (e) => `rejected ${className(e)}`,
      );
      const pop = dc.popErrorScope().then(
        (e) => `resolved ${className(e)}`,
        (e) => `rejected ${className(e)}`,
      );
      return { map, pop };
    };

    // ---- A: rounds of a computation whose every result is known, inside scopes that must stay empty.
    const aPipeline = da.createComputePipeline({ layout: 'auto', compute: { module: da.createShaderModule({ code: A_WGSL }) } });
    const x = da.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    const y = da.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const readback = da.createBuffer({ size: N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const aGroup = da.createBindGroup({
      layout: aPipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: x } },
        { binding: 1, resource: { buffer: y } },
      ],
    });
    const ROUNDS_A = 16;
    let killed: Promise<unknown> | null = null;
    let cOutcome: { map: Promise<string>; pop: Promise<string> } | null = null;
    const aScopeErrors: string[] = [];
    const aRun = async (): Promise<void> => {
      for (let round = 0; round < ROUNDS_A; round++) {
        da.pushErrorScope('internal');
        da.pushErrorScope('out-of-memory');
        da.pushErrorScope('validation');
        const input = new Uint32Array(N).map((_, i) => i * 31 + round * 1000);
        da.queue.writeBuffer(x, 0, input);
        const encoder = da.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(aPipeline);
        pass.setBindGroup(0, aGroup);
        pass.dispatchWorkgroups(N / 64);
        pass.end();
        encoder.copyBufferToBuffer(y, 0, readback, 0, N * 4);
        da.queue.submit([encoder.finish()]);
        if (round === 4) {
          // C is now mid-work (its submits queued and on the device): kill it.
          cOutcome = await cWork();
          const cRow = kernel.ps().find((p) => p.pid === c.pid)!;
          assert.ok(cRow.state === 'ready' || cRow.state === 'running', `C is mid-work when killed (state ${cRow.state})`);
          // Whether some of C's submits already reached the device depends on the machine's load:
          // queued or running, C is mid-work either way (the state above says which).
          killed = kernel.kill(c.pid);
        }
        await readback.mapAsync(GPUMapMode.READ);
        const out = new Uint32Array(readback.getMappedRange().slice(0));
        readback.unmap();
        for (let i = 0; i < N; i++) {
          if (out[i] !== input[i] * 3 + 7) assert.fail(`A round ${round}: y[${i}] = ${out[i]}, expected ${input[i] * 3 + 7}`);
        }
        for (const filter of ['validation', 'out-of-memory', 'internal']) {
          const error = await da.popErrorScope();
          if (error) aScopeErrors.push(`round ${round} ${filter}: ${className(error)} ${error.message}`);
        }
      }
    };

    const [, floodOutcome] = await Promise.all([aRun(), flood(db, ROUNDS_B, dbSecond)]);
    await new Promise((resolve) => setTimeout(resolve, 20));

    // A: exact results (checked above), nothing in its scopes, nothing uncaptured.
    assert.deepEqual(aScopeErrors, []);
    assert.deepEqual(aUncaptured, []);

    // B: exactly what bare Dawn reported to B's own scopes, promises and listener.
    assert.deepEqual(floodOutcome.scoped, expected.scoped);
    assert.deepEqual(floodOutcome.uncaptured, expected.uncaptured);
    assert.equal((await dbSecond.lost).reason, 'destroyed');

    // C: killed, its pending map aborted, its open scope resolved, its device lost.
    assert.ok(killed && cOutcome, 'C was killed during A');
    const cStatus = (await killed) as { reason: string };
    assert.equal(cStatus.reason, 'killed');
    const { map, pop } = cOutcome as { map: Promise<string>; pop: Promise<string> };
    assert.match(await map, /^rejected DOMException\((AbortError|OperationError)\)$/);
    // The scope resolves (never hangs): with the write's error if it ran before the kill, else null.
    assert.match(await pop, /^resolved (null|GPUValidationError)$/);
    assert.equal((await dc.lost).reason, 'unknown');

    // A and B are still alive and well; C holds nothing.
    const rows = new Map(kernel.ps().map((p) => [p.name, p]));
    assert.equal(rows.get('A')!.state === 'exited', false);
    assert.equal(rows.get('B')!.state === 'exited', false);
    assert.equal(rows.get('C')!.state, 'exited');
    assert.equal(rows.get('C')!.liveObjects, 0);
    assert.equal(rows.get('C')!.accounting.bytesAllocated, 0);
    assert.equal(rows.get('A')!.accounting.dispatches, ROUNDS_A);

    assert.deepEqual(await a.exit(), { code: 0, reason: 'normal' });
    assert.deepEqual(await b.exit(), { code: 0, reason: 'normal' });
    const stats = kernel.stats();
    assert.equal(stats.liveObjects.total, 0);
    assert.equal(stats.bytesAllocated, 0);
  });

  it("a process killed with calls waiting in the dispatcher never delivers errors to another's scopes", async () => {
    const before = kernel.stats();
    const a = await kernel.spawn({ name: 'A2' });
    const c = await kernel.spawn({ name: 'C2' });
    const [da, dc] = [await deviceOf(a), await deviceOf(c)];
    const aUncaptured = listen(da);
    const cUncaptured = listen(dc);
    const storage = dc.createBuffer({ size: 64 * 4 * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    const pipeline = dc.createComputePipeline({ layout: 'auto', compute: { module: dc.createShaderModule({ code: SLOW_WGSL }) } });
    const group = dc.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage } }] });
    for (let i = 0; i < 10; i++) {
      const encoder = dc.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(16);
      pass.end();
      dc.queue.submit([encoder.finish()]);
      // Invalid, unscoped, and waiting behind C's own work when C dies.
      dc.queue.writeBuffer(storage, 2, new Uint32Array(2));
    }
    da.pushErrorScope('validation');
    const aBuffer = da.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    da.queue.writeBuffer(aBuffer, 0, new Uint32Array([1, 2, 3, 4]));
    const aMap = aBuffer.mapAsync(GPUMapMode.READ);
    const status = await kernel.kill(c.pid);
    assert.equal(status.reason, 'killed');
    await aMap;
    assert.deepEqual([...new Uint32Array(aBuffer.getMappedRange())], [1, 2, 3, 4]);
    aBuffer.unmap();
    assert.equal(await da.popErrorScope(), null);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(aUncaptured, []);
    // Whatever of C's errors were raised before it died went to C; a lost device reports nothing.
    assert.ok(cUncaptured.every((name) => name === 'GPUValidationError'));
    assert.ok(cUncaptured.length <= 10);
    await a.exit();
    assert.equal(kernel.stats().liveObjects.total, before.liveObjects.total);
    assert.equal(kernel.stats().bytesAllocated, before.bytesAllocated);
  });
});
