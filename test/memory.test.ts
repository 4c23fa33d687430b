// Memory accounting and limits: a process's and a tenant's limits reach only the process that
// allocates beyond them, as a WebGPU out-of-memory error in its own scope; accounting is exact.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, GpunixError, Kernel, ProcessHandle } from '../src/index.js';
import './helpers.js';

const KiB = 1024;

async function deviceOf(proc: ProcessHandle): Promise<GPUDevice> {
  return (await (await proc.gpu.requestAdapter())!.requestDevice());
}

/** Allocates a storage buffer inside an out-of-memory scope; returns the buffer and what the scope caught. */
async function allocate(device: GPUDevice, size: number): Promise<{ buffer: GPUBuffer; error: string | null }> {
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  const buffer = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE });
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  assert.equal(validation, null);
  return { buffer, error: oom ? oom.constructor.name : null };
}

describe('memory limits', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ tenants: { team: { memoryLimit: '1M' } } });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it("a process's memory limit gives out-of-memory errors to that process alone", async () => {
    const limited = await kernel.spawn({ name: 'limited', memoryLimit: 1024 * KiB });
    const other = await kernel.spawn({ name: 'other' });
    const [dl, dother] = [await deviceOf(limited), await deviceOf(other)];
    const first = await allocate(dl, 512 * KiB);
    assert.equal(first.error, null);
    const second = await allocate(dl, 768 * KiB);
    assert.equal(second.error, 'GPUOutOfMemoryError');
    assert.equal((await allocate(dother, 768 * KiB)).error, null, 'another process is not limited');
    assert.equal(limited.record().accounting.bytesAllocated, 512 * KiB);
    assert.equal(limited.record().memoryLimit, 1024 * KiB);
    first.buffer.destroy();
    await dl.queue.onSubmittedWorkDone();
    assert.equal((await allocate(dl, 768 * KiB)).error, null, 'freed memory can be allocated again');
    await limited.exit();
    await other.exit();
    assert.equal(kernel.stats().bytesAllocated, 0);
  });

  it("a tenant's memory limit counts all its processes together and spares other tenants", async () => {
    const a = await kernel.spawn({ name: 'team-a', tenant: 'team' });
    const b = await kernel.spawn({ name: 'team-b', tenant: 'team' });
    const outsider = await kernel.spawn({ name: 'outsider' });
    const [da, db, dout] = [await deviceOf(a), await deviceOf(b), await deviceOf(outsider)];
    assert.equal((await allocate(da, 600 * KiB)).error, null);
    assert.equal((await allocate(db, 600 * KiB)).error, 'GPUOutOfMemoryError');
    assert.equal((await allocate(dout, 600 * KiB)).error, null);
    const team = kernel.stats().tenants.find((t) => t.name === 'team')!;
    const unlimited = { weight: 1, maxProcesses: null, priorities: ['realtime', 'normal', 'batch'], maxDispatchMs: null };
    assert.deepEqual(team, { name: 'team', memoryLimit: 1024 * KiB, ...unlimited, bytes: 600 * KiB, processes: 2 });
    assert.equal(a.record().tenant, 'team');
    await a.exit();
    await b.exit();
    await outsider.exit();
    assert.deepEqual(kernel.stats().tenants.find((t) => t.name === 'team'), { name: 'team', memoryLimit: 1024 * KiB, ...unlimited, bytes: 0, processes: 0 });
  });

  it('refuses malformed limits and unknown tenants with coded errors', async () => {
    const bad = (e: unknown): boolean => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_OPTION';
    await assert.rejects(kernel.spawn({ memoryLimit: '12Q' }), bad);
    await assert.rejects(kernel.spawn({ memoryLimit: -5 }), bad);
    await assert.rejects(kernel.spawn({ tenant: 'nobody' }), bad);
    await assert.rejects(createKernel({ tenants: { 'bad name!': {} } }), bad);
    await assert.rejects(createKernel({ tenants: { t: { memoryLimit: 'lots' } } }), bad);
  });
});
