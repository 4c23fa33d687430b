// Control operations on one process at once: concurrent checkpoints, migrations, suspends,
// resumes and kills all end, in the order they arrived, leaving the state a user expects; a
// checkpoint that cannot stop its process at a piece boundary gives up with GPUNIX_E_TIMEOUT and
// leaves it as it was; a kill during a checkpoint fails it and leaves no file behind. On the
// embedded kernel and through the daemon (progress messages, the CLI's --timeout and --json).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createKernel, GpunixError, Kernel, ProcessHandle, readImage } from '../src/index.js';
import { BUSY_WGSL, expectedBusy } from '../src/kernel/capabilities.js';
import { Session } from '../src/client/session.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { dispatchOnce, eventually } from './helpers.js';

/** Workgroups per atom: small, so that a dispatch is many pieces and a process is easy to stop partway. */
const ATOM = 4;
const ITER = 1000;
/** The starved batch process's dispatch: BATCH_WORKGROUPS / ATOM pieces. */
const BATCH_WORKGROUPS = 4096;

interface Busy {
  device: GPUDevice;
  /** Submits one dispatch of `workgroups` workgroups (at most the program's maximum). */
  submit(workgroups: number): void;
  /** out[i] for each i given. */
  read(indices: number[]): Promise<number[]>;
}

/** A program whose dispatches write a known value per invocation (BUSY_WGSL; ITER loop steps each). */
async function busyProgram(proc: ProcessHandle, maxWorkgroups: number): Promise<Busy> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ label: 'busy', layout: 'auto', compute: { module: device.createShaderModule({ code: BUSY_WGSL }), constants: { ITER } } });
  const size = maxWorkgroups * 64 * 4;
  const out = device.createBuffer({ label: 'out', size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
  return {
    device,
    submit(workgroups) {
      dispatchOnce(device, pipeline, group, workgroups);
    },
    async read(indices) {
      const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(out, 0, staging, 0, size);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const data = new Uint32Array(staging.getMappedRange().slice(0));
      staging.destroy();
      return indices.map((i) => data[i]);
    },
  };
}

/** Asserts the program's first `workgroups` workgroups wrote what BUSY_WGSL computes. */
async function assertComputed(p: Busy, workgroups: number): Promise<void> {
  const indices = [0, 1, workgroups * 32, workgroups * 64 - 1];
  assert.deepEqual(await p.read(indices), indices.map((i) => expectedBusy(i, ITER)));
}

/** Resolves with the labels of `entries` in the order they settle (fulfilled or rejected). */
function settleOrder(entries: Record<string, Promise<unknown>>): Promise<string[]> {
  const order: string[] = [];
  return Promise.all(Object.entries(entries).map(([name, p]) => p.then(() => order.push(name), () => order.push(name)))).then(() => order);
}

const rejectsWith = (promise: Promise<unknown>, code: string) =>
  assert.rejects(promise, (e: unknown) => e instanceof GpunixError && e.code === code && !e.message.includes('\n'));

/**
 * A batch process starved partway through a dispatch: a normal-class process keeps the device
 * busy (strict priority), so the batch process's started dispatch cannot reach its end and the
 * batch process cannot reach a boundary a checkpoint may record. `release()` kills the hog.
 */
async function starvedBatch(kernel: Kernel, workgroups: number): Promise<{ batch: ProcessHandle; b: Busy; release(): Promise<void> }> {
  const batch = await kernel.spawn({ name: 'starved', priority: 'batch' });
  const hog = await kernel.spawn({ name: 'hog', priority: 'normal' });
  const [b, h] = [await busyProgram(batch, workgroups), await busyProgram(hog, workgroups)];
  const [device] = kernel.devicesOf(batch.pid);
  if (kernel.devicesOf(hog.pid)[0] !== device) await kernel.migrate(hog.pid, device); // to compete, they share a device
  b.submit(workgroups);
  await eventually('the batch dispatch has started', () => batch.record().accounting.atomsRun > 0);
  kernel.suspend(batch.pid); // stopped partway: its dispatch is partly issued
  for (let i = 0; i < 32; i++) h.submit(workgroups); // 32 times the batch dispatch: longer than the test needs
  await eventually('the hog runs', () => hog.record().accounting.atomsRun > 0);
  kernel.resume(batch.pid); // runnable again, but behind the hog
  assert.notEqual(batch.state, 'suspended');
  return { batch, b, release: async () => void (await kernel.kill(hog.pid)) };
}

describe('concurrent control operations on one process', () => {
  let kernel: Kernel;
  let dir: string;
  before(async () => {
    kernel = await createKernel({ devices: 2, atomSize: ATOM });
    dir = mkdtempSync(join(tmpdir(), 'gpunix-concurrency-'));
  });
  after(async () => {
    await kernel.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('concurrent checkpoints of a running process all complete, in order, and it is running after', async () => {
    const proc = await kernel.spawn({ name: 'busy' });
    const p = await busyProgram(proc, 256);
    for (let i = 0; i < 4; i++) p.submit(256);
    const images = [0, 1, 2, 3].map((i) => join(dir, `concurrent-${i}.img`));
    const order = await settleOrder(Object.fromEntries(images.map((path, i) => [String(i), kernel.checkpoint(proc.pid, path)])));
    assert.deepEqual(order, ['0', '1', '2', '3']);
    for (const path of images) assert.equal((await readImage(path)).process.name, 'busy');
    assert.notEqual(proc.state, 'suspended');
    p.submit(256);
    await p.device.queue.onSubmittedWorkDone();
    await assertComputed(p, 256);
    await proc.exit();
  });

  it('checkpoints, a migration and a swap-out at once end in arrival order; suspend and resume act at once', async () => {
    const proc = await kernel.spawn({ name: 'mixed' });
    const p = await busyProgram(proc, 256);
    for (let i = 0; i < 4; i++) p.submit(256);
    const [here] = kernel.devicesOf(proc.pid);
    const there = here === 'gpu0' ? 'gpu1' : 'gpu0';
    const operations = {
      checkpoint1: kernel.checkpoint(proc.pid, join(dir, 'mixed-1.img')),
      migrate: kernel.migrate(proc.pid, there),
      swap: kernel.swapOut(proc.pid),
      checkpoint2: kernel.checkpoint(proc.pid, join(dir, 'mixed-2.img')),
    };
    assert.equal(proc.state, 'suspended', 'the swap-out suspends at once');
    assert.equal(kernel.resume(proc.pid).state === 'suspended', false, 'a resume acts at once, even behind a checkpoint');
    assert.deepEqual(await settleOrder(operations), ['checkpoint1', 'migrate', 'swap', 'checkpoint2']);
    assert.deepEqual(kernel.devicesOf(proc.pid), [there]);
    assert.notEqual(proc.state, 'suspended', 'the resume came after the swap-out: it is running');
    assert.equal(proc.record().accounting.evictedBytes, 0, 'nothing stays swapped out after a resume');
    await p.device.queue.onSubmittedWorkDone();
    await assertComputed(p, 256);
    await proc.exit();
  });

  it('a suspend during a checkpoint stays after it; a resume during one leaves the process running', async () => {
    const proc = await kernel.spawn({ name: 'toggled' });
    const p = await busyProgram(proc, 256);
    p.submit(256);
    let suspended = false;
    await kernel.checkpoint(proc.pid, join(dir, 'suspend-during.img'), {
      onProgress: () => {
        if (!suspended) kernel.suspend(proc.pid);
        suspended = true;
      },
    });
    assert.equal(suspended, true, 'progress was reported');
    assert.equal(proc.state, 'suspended');
    p.submit(256);
    let resumed = false;
    await kernel.checkpoint(proc.pid, join(dir, 'resume-during.img'), {
      onProgress: () => {
        if (!resumed) kernel.resume(proc.pid);
        resumed = true;
      },
    });
    assert.notEqual(proc.state, 'suspended');
    await p.device.queue.onSubmittedWorkDone();
    await assertComputed(p, 256);
    await proc.exit();
  });

  it('a checkpoint that cannot reach a piece boundary times out with GPUNIX_E_TIMEOUT and the process keeps running', async () => {
    const { batch, b, release } = await starvedBatch(kernel, BATCH_WORKGROUPS);
    const path = join(dir, 'starved.img');
    await rejectsWith(kernel.checkpoint(batch.pid, path, { timeoutMs: 200 }), 'GPUNIX_E_TIMEOUT');
    assert.notEqual(batch.state, 'suspended', 'as it was: runnable');
    assert.equal(batch.record().accounting.atomsRun < BATCH_WORKGROUPS / ATOM, true, 'still starved partway');
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('starved')), [], 'no image, no temporary file');
    // A migration behind a checkpoint that is still waiting: its own bound covers that wait too.
    const patient = kernel.checkpoint(batch.pid, path, { timeoutMs: 60_000 });
    const other = kernel.devicesOf(batch.pid)[0] === 'gpu0' ? 'gpu1' : 'gpu0';
    await rejectsWith(kernel.migrate(batch.pid, other, { timeoutMs: 100 }), 'GPUNIX_E_TIMEOUT');
    await rejectsWith(kernel.checkpoint(batch.pid, path, { timeoutMs: 0 }), 'GPUNIX_E_BAD_OPTION');
    await release();
    await patient;
    assert.equal((await readImage(path)).process.name, 'starved');
    assert.notEqual(batch.state, 'suspended');
    await b.device.queue.onSubmittedWorkDone();
    await assertComputed(b, BATCH_WORKGROUPS);
    await batch.exit();
  });

  it('a kill during a checkpoint fails it with GPUNIX_E_PROCESS_EXITED and leaves no file', async () => {
    const { batch, release } = await starvedBatch(kernel, BATCH_WORKGROUPS);
    const waiting = rejectsWith(kernel.checkpoint(batch.pid, join(dir, 'killed-waiting.img')), 'GPUNIX_E_PROCESS_EXITED');
    const behind = rejectsWith(kernel.checkpoint(batch.pid, join(dir, 'killed-behind.img')), 'GPUNIX_E_PROCESS_EXITED');
    await kernel.kill(batch.pid);
    await Promise.all([waiting, behind]);
    await release();

    const proc = await kernel.spawn({ name: 'killed-writing' });
    const p = await busyProgram(proc, 256);
    p.submit(256);
    await p.device.queue.onSubmittedWorkDone();
    const writing = kernel.checkpoint(proc.pid, join(dir, 'killed-writing.img'), { onProgress: () => void kernel.kill(proc.pid) });
    await rejectsWith(writing, 'GPUNIX_E_PROCESS_EXITED');
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('killed')), [], 'no image, no temporary file');
  });
});

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN = 'concurrency-admin-token-0123456789abcdef012345';

function gpunix(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [join(root, 'bin/gpunix.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000, env: { ...process.env, GPUNIX_TOKEN: ADMIN } }, (error, stdout, stderr) => {
      done({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('checkpoint through the daemon: progress and timeouts', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-concurrency-daemon-'));
    socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({ socket, log: { level: 'silent' }, adminTokenHash: hashToken(ADMIN), stateFile: join(dir, 'state.json'), imageDir: join(dir, 'images') });
  });
  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('a control session gets Progress messages up to the whole file (or every buffer swapped out), then the reply', async () => {
    const proc = await daemon.kernel.spawn({ name: 'progress' });
    const p = await busyProgram(proc, 256);
    p.submit(256);
    const session = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    try {
      const seen: { what: string; done: number; total: number }[] = [];
      const written = (await session.call('CheckpointProcess', { pid: proc.pid, path: 'progress.img', options: { timeoutMs: 60_000 } }, (e) => seen.push(e))) as { bytes: number };
      assert.ok(seen.length >= 2, `${seen.length} progress messages`);
      assert.ok(seen.every((e) => e.what === 'bytes written' && e.total === written.bytes));
      assert.equal(seen.at(-1)!.done, written.bytes);
      assert.ok(seen.every((e, i) => i === 0 || e.done >= seen[i - 1].done));
      await assert.rejects(session.call('CheckpointProcess', { pid: proc.pid, path: 'bad.img', options: { timeoutMs: -1 } }), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_OPTION');
      const swapped: { what: string; done: number; total: number }[] = [];
      const record = (await session.call('SuspendProcess', { pid: proc.pid, swap: true }, (e) => swapped.push(e))) as { state: string; accounting: { evictedBytes: number } };
      assert.equal(record.state, 'suspended');
      assert.ok(swapped.length >= 2 && swapped.every((e) => e.what === 'bytes swapped out'));
      assert.deepEqual([swapped.at(-1)!.done, swapped.at(-1)!.total], [record.accounting.evictedBytes, record.accounting.evictedBytes]);
    } finally {
      session.close();
    }
    await proc.exit();
  });

  it('two operators checkpointing one process at once both get their image, and it goes on running', async () => {
    const proc = await daemon.kernel.spawn({ name: 'twice' });
    const p = await busyProgram(proc, 256);
    for (let i = 0; i < 4; i++) p.submit(256);
    const sessions = await Promise.all([0, 1].map(() => Session.open({ socket, token: ADMIN }, { role: 'control' })));
    try {
      const written = (await Promise.all(sessions.map((session, i) => session.call('CheckpointProcess', { pid: proc.pid, path: `twice-${i}.img` })))) as { path: string }[];
      for (const { path } of written) assert.equal((await readImage(path)).process.name, 'twice');
    } finally {
      for (const session of sessions) session.close();
    }
    assert.notEqual(proc.state, 'suspended');
    await p.device.queue.onSubmittedWorkDone();
    await assertComputed(p, 256);
    await proc.exit();
  });

  it('gpunix checkpoint --timeout: one coded line and a non-zero exit; --json: progress events on stderr, the result on stdout', async () => {
    // The daemon's atoms are sized by the cost model (about 4 ms while uncontended): a larger dispatch.
    const { batch, release } = await starvedBatch(daemon.kernel, 32768);
    const timedOut = await gpunix(['checkpoint', String(batch.pid), 'starved.img', '--timeout', '0.2', '--socket', socket]);
    assert.notEqual(timedOut.code, 0);
    assert.match(timedOut.stderr, /^gpunix: GPUNIX_E_TIMEOUT: .+\n$/);
    assert.notEqual(batch.state, 'suspended');
    await release();
    const done = await gpunix(['checkpoint', String(batch.pid), 'done.img', '--json', '--socket', socket]);
    assert.equal(done.code, 0, done.stderr);
    const result = JSON.parse(done.stdout) as { path: string; bytes: number };
    const events = done.stderr.trim().split('\n').map((line) => JSON.parse(line) as { event: string; done: number; total: number });
    assert.ok(events.length >= 1 && events.every((e) => e.event === 'progress' && e.total === result.bytes));
    assert.equal(events.at(-1)!.done, result.bytes);
    await batch.exit();
  });
});
