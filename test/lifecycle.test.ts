// Process lifetimes: a process killed in the middle of its work leaves nothing behind, its pending
// operations settle, its device turns lost; exit() is graceful; the kernel refuses work once shut down.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, GpunixError, Kernel } from '../src/index.js';
import { deviceOf } from './helpers.js';

const WGSL = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) g: vec3u) { a[g.x] = a[g.x] * 2u + g.x; }`;

const className = (e: unknown): string => {
  if (e === null) return 'null';
  const name = (e as object)?.constructor?.name ?? typeof e;
  return name === 'DOMException' ? `DOMException(${(e as DOMException).name})` : name;
};

/** A tiny program's work: buffers, a dispatch, a copy and a map, none of it awaited. */
function startWork(d: GPUDevice, seed: number): { map: Promise<string>; done: Promise<undefined>; readback: GPUBuffer } {
  const storage = d.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const readback = d.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  d.createBuffer({ size: 64, usage: GPUBufferUsage.UNIFORM });
  const pipeline = d.createComputePipeline({ layout: 'auto', compute: { module: d.createShaderModule({ code: WGSL }) } });
  const group = d.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage } }] });
  d.queue.writeBuffer(storage, 0, new Uint32Array([seed, seed + 1, seed + 2, seed + 3]));
  const encoder = d.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(1);
  pass.end();
  encoder.copyBufferToBuffer(storage, 0, readback, 0, 16);
  d.queue.submit([encoder.finish()]);
  const map = readback.mapAsync(GPUMapMode.READ).then(
    () => 'resolved',
    (e) => `rejected ${className(e)}`,
  );
  return { map, done: d.queue.onSubmittedWorkDone(), readback };
}

const CONFIGS: Array<{ title: string; options: Parameters<typeof createKernel>[0] }> = [
  { title: 'default kernel', options: {} },
  // One fence at a time: more of each victim's work is still queued in the dispatcher when it dies.
  { title: 'one fence in flight, command buffers re-encoded', options: { maxInFlight: 1, reencodeCommandBuffers: true } },
];

for (const config of CONFIGS) describe(`process lifecycle (${config.title})`, () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel(config.options);
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('100 processes killed mid-work leave the kernel exactly as it was', async () => {
    const before = kernel.stats();
    const pids: number[] = [];
    let pendingAtKill = 0;
    for (let cycle = 0; cycle < 100; cycle++) {
      const proc = await kernel.spawn({ name: `victim${cycle}`, priority: cycle % 2 ? 'batch' : 'normal' });
      const d = await deviceOf(proc);
      d.pushErrorScope('validation');
      const { map, readback } = startWork(d, cycle);
      const pop = d.popErrorScope();
      // Kill at different points: with everything still queued, or after the work reached the device.
      if (cycle % 3 === 1) await new Promise((resolve) => setImmediate(resolve));
      if (cycle % 3 === 2) await new Promise((resolve) => setTimeout(resolve, 1));
      const mapStateAtKill = readback.mapState;
      if (cycle % 3 === 0) assert.equal(mapStateAtKill, 'pending');
      if (mapStateAtKill === 'pending') pendingAtKill++;
      const status = await kernel.kill(proc.pid);
      assert.equal(status.reason, 'killed');
      assert.deepEqual(await proc.wait(), status);
      assert.equal(proc.state, 'exited');
      // A map still pending when its process dies is rejected; one that completed before stays resolved.
      assert.match(
        await map,
        mapStateAtKill === 'pending' ? /^rejected DOMException\((AbortError|OperationError)\)$/ : /^resolved$/,
        `cycle ${cycle}: the map, ${mapStateAtKill} at the kill`,
      );
      assert.equal((await d.lost).reason, 'unknown');
      assert.equal(await pop, null, `cycle ${cycle}: the scope open at death resolves`);
      pids.push(proc.pid);
    }
    assert.ok(pendingAtKill >= 34, `most processes died with their map pending (${pendingAtKill})`);
    const stats = kernel.stats();
    assert.equal(stats.liveObjects.total, before.liveObjects.total);
    assert.deepEqual(stats.liveObjects.byKind, before.liveObjects.byKind);
    assert.equal(stats.bytesAllocated, before.bytesAllocated);
    assert.deepEqual(
      stats.devices.map((d) => d.usedBytes),
      before.devices.map((d) => d.usedBytes),
    );
    const rows = kernel.ps();
    assert.deepEqual(rows.filter((row) => row.state !== 'exited'), [], 'no live process');
    for (const row of rows.filter((r) => pids.includes(r.pid))) {
      assert.equal(row.exit?.reason, 'killed');
      assert.equal(row.liveObjects, 0);
      assert.equal(row.accounting.bytesAllocated, 0);
    }
    assert.equal(stats.processes.byState.ready + stats.processes.byState.running + stats.processes.byState.waiting, 0);
  });

  it('20 processes killed at once, their work interleaved, leave a survivor exact and nothing behind', async () => {
    const before = kernel.stats();
    const survivor = await kernel.spawn({ name: 'survivor' });
    const ds = await deviceOf(survivor);
    const victims = await Promise.all(Array.from({ length: 20 }, (_, i) => kernel.spawn({ name: `crowd${i}` })));
    const devices = await Promise.all(victims.map(deviceOf));
    const works = devices.map((d, i) => {
      d.pushErrorScope('validation');
      const work = startWork(d, i);
      // An invalid call too, so that dying processes have errors in flight.
      d.queue.writeBuffer(work.readback, 2, new Uint32Array(1));
      return { ...work, pop: d.popErrorScope() };
    });
    const mine = startWork(ds, 100);
    // Half through the kernel, half through their handles, all at once.
    const statuses = await Promise.all(victims.map((v, i) => (i % 2 ? kernel.kill(v.pid) : v.kill())));
    assert.ok(statuses.every((s) => s.reason === 'killed'));
    assert.equal(await mine.map, 'resolved');
    assert.deepEqual([...new Uint32Array(mine.readback.getMappedRange())], [200, 203, 206, 209]);
    for (const work of works) {
      assert.match(await work.map, /^(resolved|rejected DOMException\((AbortError|OperationError)\))$/);
      assert.match(className(await work.pop), /^(null|GPUValidationError)$/);
    }
    for (const d of devices) assert.equal((await d.lost).reason, 'unknown');
    assert.deepEqual(await survivor.exit(), { code: 0, reason: 'normal' });
    const stats = kernel.stats();
    assert.equal(stats.liveObjects.total, before.liveObjects.total);
    assert.equal(stats.bytesAllocated, before.bytesAllocated);
    assert.deepEqual(kernel.ps().filter((row) => row.state !== 'exited'), []);
  });

  it('kill of an unknown pid rejects with GPUNIX_E_NO_SUCH_PROCESS', async () => {
    await assert.rejects(kernel.kill(987654), (error: unknown) => {
      assert.ok(error instanceof GpunixError);
      assert.equal(error.code, 'GPUNIX_E_NO_SUCH_PROCESS');
      return true;
    });
  });

  it('killing a process twice returns the first exit status', async () => {
    const proc = await kernel.spawn({ name: 'twice' });
    const first = await kernel.kill(proc.pid);
    assert.deepEqual(await kernel.kill(proc.pid), first);
    assert.equal(first.reason, 'killed');
  });

  it("requestDevice on an exited process's adapter resolves with a device lost already (reason unknown)", async () => {
    const proc = await kernel.spawn({ name: 'late-device' });
    const adapter = await proc.gpu.requestAdapter();
    assert.ok(adapter);
    await proc.kill();
    const device = await adapter.requestDevice();
    const lost = await device.lost;
    assert.equal(lost.reason, 'unknown');
    assert.match(lost.message, /has exited/);
  });

  it('exit() is graceful: the work queued before it completes', async () => {
    const before = kernel.stats();
    const proc = await kernel.spawn({ name: 'graceful' });
    const d = await deviceOf(proc);
    const works = [startWork(d, 10), startWork(d, 20), startWork(d, 30)];
    const done = d.queue.onSubmittedWorkDone();
    const status = await proc.exit();
    assert.deepEqual(status, { code: 0, reason: 'normal' });
    await done;
    const row = kernel.ps().find((r) => r.pid === proc.pid)!;
    assert.equal(row.accounting.submits, 3, 'every queued submit reached the device');
    assert.equal(row.accounting.dispatches, 3);
    assert.equal(row.accounting.bufferWrites, 3, 'every queued write reached the device');
    assert.ok(row.accounting.gpuTimeNs > 0);
    // Every map reached the device: none was cancelled as queued work is on a kill.
    for (const work of works) assert.match(await work.map, /^(resolved|rejected DOMException\(AbortError\))$/);
    assert.equal((await d.lost).reason, 'unknown');
    assert.equal(kernel.stats().liveObjects.total, before.liveObjects.total);
    assert.equal(kernel.stats().bytesAllocated, before.bytesAllocated);
  });

  it('a process that awaits its work before exit() reads exact results', async () => {
    const proc = await kernel.spawn({ name: 'reader' });
    const d = await deviceOf(proc);
    const { map, readback } = startWork(d, 5);
    assert.equal(await map, 'resolved');
    assert.deepEqual([...new Uint32Array(readback.getMappedRange())], [10, 13, 16, 19]);
    readback.unmap();
    assert.deepEqual(await proc.exit(), { code: 0, reason: 'normal' });
  });

  it('after shutdown, spawn rejects with GPUNIX_E_SHUTDOWN', async () => {
    const own = await createKernel(config.options);
    const proc = await own.spawn({ name: 'survivor' });
    const d = await deviceOf(proc);
    const { map } = startWork(d, 1);
    await own.shutdown();
    assert.equal((await proc.wait()).reason, 'kernel-shutdown');
    assert.match(await map, /^(resolved|rejected DOMException\((AbortError|OperationError)\))$/);
    assert.equal((await d.lost).reason, 'unknown');
    await assert.rejects(own.spawn({ name: 'late' }), (error: unknown) => {
      assert.ok(error instanceof GpunixError);
      assert.equal(error.code, 'GPUNIX_E_SHUTDOWN');
      return true;
    });
    await own.shutdown();
  });
});
