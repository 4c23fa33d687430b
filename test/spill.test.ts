// Spilling: with a limit on host memory for evicted buffers (hostMemoryLimit), the oldest evicted
// contents go to files in the spill directory and come back from them, byte-exact. Files exist
// only while their contents are evicted and are all gone when the processes end and the kernel
// shuts down; a spill that cannot be written loses nothing; a bad spillDirectory is refused.

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createKernel, GpunixError, Kernel, ProcessHandle } from '../src/index.js';
import './helpers.js';
import { expectedStep, iterate, readBack } from './stepProgram.js';

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));


/** Polls until `condition` holds (or fails after `ms`). */
async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const files = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);

describe('spilling evicted contents to files', () => {
  let kernel: Kernel;
  let root: string;
  let spillDir: string;
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'gpunix-spill-test-'));
    spillDir = join(root, 'spill'); // made by the kernel on first need
    kernel = await createKernel({ memoryBudget: 3 * MiB, hostMemoryLimit: '1M', spillDirectory: spillDir });
  });
  after(async () => {
    await kernel.shutdown();
    rmSync(root, { recursive: true, force: true });
  });

  it('a swapped-out process beyond the host limit goes to files (0600 in a 0700 directory) and comes back exact', async () => {
    const proc = await kernel.spawn({ name: 'sleeper' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const buffers = [0, 1, 2].map((b) => {
      const buffer = device.createBuffer({ size: 1 * MiB, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
      new Uint32Array(buffer.getMappedRange()).forEach((_, i, a) => (a[i] = (i * 2654435761 + b) >>> 0));
      buffer.unmap();
      return buffer;
    });
    assert.equal(files(spillDir).length, 0, 'nothing spilled before anything is evicted');
    const record = await kernel.swapOut(proc.pid);
    assert.equal(record.accounting.evictedBytes, 3 * MiB);
    // 3 MiB evicted against a 1 MiB host limit: the two oldest go to files.
    await until(() => kernel.stats().swap.spillFiles === 2, 'two spill files');
    const swap = kernel.stats().swap;
    assert.equal(swap.spilledBytes, 2 * MiB);
    assert.equal(swap.hostBytes, 1 * MiB);
    assert.ok(swap.bytesSpilled >= 2 * MiB);
    assert.equal(proc.record().accounting.spilledBytes, 2 * MiB);
    assert.ok(proc.record().accounting.bytesSpilled >= 2 * MiB);
    assert.equal(proc.record().accounting.evictedBytes, 3 * MiB, 'evicted bytes keep their meaning: on disk or not');
    assert.equal(kernel.stats().devices[0].evictedBytes, 3 * MiB);
    const names = files(spillDir);
    assert.equal(names.length, 2);
    assert.equal(statSync(spillDir).mode & 0o777, 0o700);
    for (const name of names) {
      const info = statSync(join(spillDir, name));
      assert.equal(info.mode & 0o777, 0o600);
      assert.equal(info.size, 1 * MiB);
    }
    kernel.resume(proc.pid);
    for (const [b, buffer] of buffers.entries()) {
      const out = await readBack(device, buffer, 1 * MiB);
      assert.ok(out.every((v, i) => v === ((i * 2654435761 + b) >>> 0)), `buffer ${b} came back byte-exact`);
    }
    await until(() => files(spillDir).length === 0, 'restored buffers to leave no files');
    assert.equal(kernel.stats().swap.spillFiles, 0);
    assert.equal(kernel.stats().swap.spilledBytes, 0);
    assert.equal(proc.record().accounting.spilledBytes, 0);
    await proc.exit();
    assert.equal(kernel.stats().bytesAllocated, 0);
    assert.equal(kernel.stats().swap.hostBytes, 0);
  });

  it('with the budget at half the working set, several processes finish byte-exact through spill files', async (t) => {
    const spilledBefore = kernel.stats().swap.bytesSpilled;
    const procs = await Promise.all([0, 1, 2].map((i) => kernel.spawn({ name: `p${i}` })));
    let mostFiles = 0;
    const watching = setInterval(() => {
      mostFiles = Math.max(mostFiles, files(spillDir).length);
    }, 2);
    // 3 processes x 2 buffers x 1 MiB = 6 MiB against a 3 MiB budget and 1 MiB of host memory.
    // A spill counts once its file is written; one taken back sooner (the program's next step) is
    // not: 40 ms between steps leaves the writes time to finish (at 15 ms, some runs spilled none).
    const results = await Promise.all(procs.map((p, i) => iterate(p, i * 1000, 2, 1 * MiB, 5, 40)));
    clearInterval(watching);
    const swap = kernel.stats().swap;
    t.diagnostic(`swapped out ${swap.bytesOut} B, in ${swap.bytesIn} B, spilled ${swap.bytesSpilled - spilledBefore} B; at most ${mostFiles} files at once`);
    assert.deepEqual(results, [true, true, true]);
    const records = procs.map((p) => p.record());
    assert.ok(records.reduce((sum, r) => sum + r.accounting.evictions, 0) > 0, 'buffers were evicted');
    assert.ok(kernel.stats().swap.bytesSpilled > spilledBefore, 'evicted contents went to spill files');
    // A spill lasts only until its restore, too briefly to sample; the running totals say it happened.
    const spilledByProcs = records.reduce((sum, r) => sum + r.accounting.bytesSpilled, 0);
    assert.equal(spilledByProcs, kernel.stats().swap.bytesSpilled - spilledBefore, 'the processes account for every byte spilled');
    for (const p of procs) await p.exit();
    await until(() => files(spillDir).length === 0, 'every spill file to go when the processes end');
    const stats = kernel.stats();
    assert.equal(stats.bytesAllocated, 0);
    assert.equal(stats.devices[0].evictedBytes, 0);
    assert.equal(stats.liveObjects.total, 0);
    assert.equal(stats.swap.spillFiles, 0);
    assert.equal(stats.swap.spilledBytes, 0);
    assert.equal(stats.swap.hostBytes, 0);
  });

  it('shutdown removes the spill directory it made', async () => {
    const proc = await kernel.spawn({ name: 'left' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    // Held until the end: a buffer the collector reclaimed first would not be swapped out at all.
    const buffers = Array.from({ length: 3 }, () => device.createBuffer({ size: 1 * MiB, usage: GPUBufferUsage.STORAGE }));
    await kernel.swapOut(proc.pid);
    await until(() => kernel.stats().swap.spillFiles === 2, 'spill files of a process left running');
    assert.equal(buffers.length, 3);
    await kernel.shutdown();
    assert.equal(existsSync(spillDir), false, 'no directory, no files left behind');
  });
});

describe('spill failures and options', () => {
  it('a spill that cannot be written keeps the contents in host memory, counted', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gpunix-spill-test-'));
    const spillDir = join(root, 'spill');
    const kernel = await createKernel({ memoryBudget: 4 * MiB, hostMemoryLimit: 0, spillDirectory: spillDir });
    const warn = console.warn;
    console.warn = () => {};
    try {
      writeFileSync(spillDir, 'in the way'); // the directory cannot be made now
      const proc = await kernel.spawn({ name: 'stuck' });
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      const buffer = device.createBuffer({ size: 1 * MiB, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
      new Uint32Array(buffer.getMappedRange()).forEach((_, i, a) => (a[i] = i ^ 0xa5a5a5a5));
      buffer.unmap();
      await kernel.swapOut(proc.pid);
      await until(() => kernel.stats().swap.spillFailures > 0, 'the failed spill to be counted');
      const swap = kernel.stats().swap;
      assert.equal(swap.spillFiles, 0);
      assert.equal(swap.hostBytes, 1 * MiB, 'the contents stayed in host memory');
      kernel.resume(proc.pid);
      const out = await readBack(device, buffer, 1 * MiB);
      assert.ok(out.every((v, i) => v === ((i ^ 0xa5a5a5a5) >>> 0)), 'nothing was lost');
      await proc.exit();
      assert.equal(kernel.stats().swap.hostBytes, 0);
    } finally {
      console.warn = warn;
      await kernel.shutdown();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('a bad spillDirectory or hostMemoryLimit is GPUNIX_E_BAD_OPTION at createKernel', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gpunix-spill-test-'));
    try {
      const file = join(root, 'file');
      writeFileSync(file, '');
      const refused = (e: unknown): boolean => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_OPTION';
      await assert.rejects(createKernel({ spillDirectory: file }), refused);
      await assert.rejects(createKernel({ spillDirectory: join(file, 'below') }), refused);
      await assert.rejects(createKernel({ spillDirectory: '' }), refused);
      await assert.rejects(createKernel({ hostMemoryLimit: 'lots' }), refused);
      await assert.rejects(createKernel({ hostMemoryLimit: -1 }), refused);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
