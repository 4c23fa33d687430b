// Checkpoint and restore: a process runs k steps, is checkpointed, killed, and restored in a
// fresh kernel, where a resuming program finds its buffers and pipeline by label and finishes;
// the results are byte-identical to an uninterrupted run. Work queued but unfinished at the
// checkpoint (a suspended process's steps) is in the image and runs first after a restore. Bad
// images are refused whole; version 1 images still restore.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { createKernel, GpunixError, ProcessHandle, readImage } from '../src/index.js';
import './helpers.js';

const WGSL = `
struct Params { scale: u32, shift: u32 }
@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let i = g.x;
  if (i >= arrayLength(&state)) { return; }
  let v = state[i] * params.scale + params.shift + i;
  state[i] = v ^ (v >> 9u);
}`;
const N = 64 * 150;
const STEPS = 8;

interface Session {
  device: GPUDevice;
  pipeline: GPUComputePipeline;
  state: GPUBuffer;
  params: GPUBuffer;
  /** Indirect dispatch arguments (odd steps dispatch indirectly). */
  indirect: GPUBuffer;
  /** Each step copies part of the state here and clears another part. */
  history: GPUBuffer;
}

async function fresh(proc: ProcessHandle): Promise<Session> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL, label: 'stepper' }) } });
  const state = device.createBuffer({ label: 'state', size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  new Uint32Array(state.getMappedRange()).forEach((_, i, a) => (a[i] = i * 40503));
  state.unmap();
  const params = device.createBuffer({ label: 'params', size: 8, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const indirect = device.createBuffer({ label: 'indirect', size: 12, usage: GPUBufferUsage.INDIRECT | GPUBufferUsage.COPY_DST });
  const history = device.createBuffer({ label: 'history', size: 1024, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  return { device, pipeline, state, params, indirect, history };
}

/** What a resuming program does: the same objects, found again by their labels. */
async function resumed(proc: ProcessHandle): Promise<Session> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const ext = (device as unknown as { gpunix: { restored: boolean; findBuffer(l: string): GPUBuffer | null; findPipeline(l: string): GPUComputePipeline | null } }).gpunix;
  assert.equal(ext.restored, true);
  const find = (label: string): GPUBuffer => ext.findBuffer(label)!;
  return { device, pipeline: ext.findPipeline('step')!, state: find('state'), params: find('params'), indirect: find('indirect'), history: find('history') };
}

/** Queues steps [from, to): writes, then a submit of a pass (direct or indirect), a copy and a clear. */
function submitSteps(s: Session, from: number, to: number): void {
  const group = s.device.createBindGroup({ layout: s.pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: s.state } }, { binding: 1, resource: { buffer: s.params } }] });
  for (let step = from; step < to; step++) {
    s.device.queue.writeBuffer(s.params, 0, new Uint32Array([step + 5, step * 11]));
    if (step % 2 === 1) s.device.queue.writeBuffer(s.indirect, 0, new Uint32Array([N / 64 - (step % 3), 1, 1]));
    const encoder = s.device.createCommandEncoder({ label: `step ${step}` });
    const pass = encoder.beginComputePass();
    pass.setPipeline(s.pipeline);
    pass.setBindGroup(0, group);
    if (step % 2 === 1) pass.dispatchWorkgroupsIndirect(s.indirect, 0);
    else pass.dispatchWorkgroups(N / 64);
    pass.end();
    encoder.copyBufferToBuffer(s.state, step * 64, s.history, (step % 4) * 256, 256);
    encoder.clearBuffer(s.history, ((step + 2) % 4) * 256, 128);
    s.device.queue.submit([encoder.finish()]);
  }
}

async function steps(s: Session, from: number, to: number): Promise<void> {
  submitSteps(s, from, to);
  await s.device.queue.onSubmittedWorkDone();
}

/** The program's results: the state, then the history. */
async function read(s: Session): Promise<Uint8Array> {
  const out = s.device.createBuffer({ size: N * 4 + 1024, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = s.device.createCommandEncoder();
  encoder.copyBufferToBuffer(s.state, 0, out, 0, N * 4);
  encoder.copyBufferToBuffer(s.history, 0, out, N * 4, 1024);
  s.device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  return new Uint8Array(out.getMappedRange().slice(0));
}

/** The same image in format version 1 (which has no work section), as an older gpunix wrote it. */
function asVersion1(file: Buffer): Buffer {
  const length = file.readUInt32LE(16);
  const header = JSON.parse(file.subarray(56, 56 + length).toString('utf8'));
  assert.deepEqual([header.bindGroups, header.querySets, header.queued], [[], [], []], 'an image with no queued work');
  delete header.bindGroups;
  delete header.querySets;
  const data = file.subarray(Math.ceil((56 + length) / 8) * 8, file.length - 40);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const preamble = Buffer.from(file.subarray(0, 56));
  preamble.writeUInt32LE(1, 12);
  preamble.writeUInt32LE(json.length, 16);
  createHash('sha256').update(json).digest().copy(preamble, 24);
  const body = Buffer.concat([preamble, json, Buffer.alloc((8 - ((56 + json.length) % 8)) % 8), data]);
  const trailer = Buffer.alloc(40);
  createHash('sha256').update(body).digest().copy(trailer, 0);
  trailer.writeBigUInt64LE(BigInt(body.length + 40), 32);
  return Buffer.concat([body, trailer]);
}

let referenceBytes: Promise<Uint8Array> | null = null;
/** The uninterrupted run, once: STEPS steps in one process. */
function reference(): Promise<Uint8Array> {
  referenceBytes ??= (async () => {
    const kernel = await createKernel();
    const proc = await kernel.spawn({ name: 'straight' });
    const s = await fresh(proc);
    await steps(s, 0, STEPS);
    const bytes = await read(s);
    await proc.exit();
    await kernel.shutdown();
    return bytes;
  })();
  return referenceBytes;
}

/** Restores `image` in a fresh kernel, runs steps [from, STEPS) there, and returns the results. */
async function restoreAndFinish(image: string, from: number): Promise<Uint8Array> {
  const kernel = await createKernel();
  const restored = await kernel.restore(image);
  const r = await resumed(restored);
  await steps(r, from, STEPS);
  const bytes = await read(r);
  await restored.exit();
  assert.equal(kernel.stats().bytesAllocated, 0);
  await kernel.shutdown();
  return bytes;
}

describe('checkpoint and restore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-ckpt-'));
  const image = join(dir, 'proc.gpunix');

  it('a checkpoint at step k, a kill, and a restore in a fresh kernel give the uninterrupted result', async () => {
    const expected = await reference();
    const first = await createKernel();
    const proc = await first.spawn({ name: 'checkpointed', priority: 'batch', weight: 2 });
    const s = await fresh(proc);
    await steps(s, 0, 3);
    const written = await first.checkpoint(proc.pid, image);
    assert.ok(written.bytes > N * 4);
    assert.equal((await first.kill(proc.pid)).reason, 'killed');
    await first.shutdown();

    const second = await createKernel();
    const restored = await second.restore(image);
    const record = restored.record();
    assert.deepEqual([record.name, record.priority, record.weight], ['checkpointed', 'batch', 2]);
    const r = await resumed(restored);
    await steps(r, 3, STEPS);
    assert.equal(Buffer.compare(await read(r), expected), 0, 'byte-identical to the uninterrupted run');
    await restored.exit();
    assert.equal(second.stats().bytesAllocated, 0);
    await second.shutdown();
  });

  const queuedImage = join(dir, 'queued.gpunix');

  it('work queued while suspended is in the image and runs first after a restore: byte-identical', async () => {
    const expected = await reference();
    const kernel = await createKernel();
    const proc = await kernel.spawn({ name: 'queued' });
    const s = await fresh(proc);
    await steps(s, 0, 3);
    kernel.suspend(proc.pid);
    submitSteps(s, 3, 6); // they queue: the process is suspended
    const waited = s.device.queue.onSubmittedWorkDone(); // queued too; it changes no buffer and is not recorded
    await kernel.checkpoint(proc.pid, queuedImage);
    assert.equal(kernel.ps().find((p) => p.pid === proc.pid)!.state, 'suspended', 'still suspended after the checkpoint');

    const image = await readImage(queuedImage);
    assert.equal(image.version, 2);
    assert.deepEqual(
      image.queued.map((q) => q.kind),
      ['writeBuffer', 'writeBuffer', 'submit', 'writeBuffer', 'submit', 'writeBuffer', 'writeBuffer', 'submit'],
      'steps 3, 4 and 5 in order (odd steps write the indirect arguments too)',
    );
    const id = (label: string): number => image.buffers.find((b) => b.label === label)!.id;
    const first = image.queued[0];
    assert.ok(first.kind === 'writeBuffer' && first.buffer === id('params') && Buffer.from(first.data).equals(Buffer.from(new Uint32Array([8, 33]).buffer)));
    const submit = image.queued[2];
    assert.ok(submit.kind === 'submit');
    assert.equal(submit.commandBuffers[0].label, 'step 3');
    const [pass, copy, clear] = submit.commandBuffers[0].commands;
    assert.ok(pass.op === 'computePass');
    assert.deepEqual(pass.commands.map((c) => c.op), ['setPipeline', 'setBindGroup', 'dispatchWorkgroupsIndirect']);
    assert.deepEqual(pass.commands[2], { op: 'dispatchWorkgroupsIndirect', buffer: id('indirect'), offset: 0 });
    assert.deepEqual(copy, { op: 'copyBufferToBuffer', source: id('state'), sourceOffset: 192, destination: id('history'), destinationOffset: 768, size: 256 });
    assert.deepEqual(clear, { op: 'clearBuffer', buffer: id('history'), offset: 256, size: 128 });
    assert.deepEqual(image.bindGroups.map((g) => g.layout), [{ pipeline: image.pipelines[0].id, group: 0 }]);

    // Killed with its work still queued; restored in a fresh kernel, the queued steps run before the
    // resuming program's own.
    assert.equal((await kernel.kill(proc.pid)).reason, 'killed');
    await waited;
    await kernel.shutdown();
    assert.equal(Buffer.compare(await restoreAndFinish(queuedImage, 6), expected), 0, 'byte-identical to the uninterrupted run');
  });

  it('a checkpoint during a split dispatch lets its begun atoms finish, records the rest, and disturbs nothing', async () => {
    const expected = await reference();
    const image = join(dir, 'split.gpunix');
    const kernel = await createKernel({ atomSize: 8 });
    const proc = await kernel.spawn({ name: 'split' });
    const s = await fresh(proc);
    await steps(s, 0, 2);
    submitSteps(s, 2, 5); // step 2's dispatch starts at once, as atoms of 8 workgroups
    kernel.suspend(proc.pid); // stops at the next atom boundary, in the middle of it
    await kernel.checkpoint(proc.pid, image);
    assert.ok(proc.record().accounting.atomsRun > 0, 'the dispatch ran as atoms');
    const kinds = (await readImage(image)).queued.map((q) => q.kind);
    assert.deepEqual(kinds, ['writeBuffer', 'writeBuffer', 'submit', 'writeBuffer', 'submit'], 'step 2 finished before the capture; steps 3 and 4 are recorded');
    // The process itself goes on as if nothing happened.
    kernel.resume(proc.pid);
    await steps(s, 5, STEPS);
    assert.equal(Buffer.compare(await read(s), expected), 0, 'the checkpointed process is undisturbed');
    await proc.exit();
    await kernel.shutdown();
    assert.equal(Buffer.compare(await restoreAndFinish(image, 5), expected), 0, 'the restored one finishes identically');
  });

  it('a running process is checkpointed with its queue as it stands, and goes on running', async () => {
    const expected = await reference();
    const image = join(dir, 'running.gpunix');
    const kernel = await createKernel();
    const proc = await kernel.spawn({ name: 'running' });
    const s = await fresh(proc);
    await steps(s, 0, 2);
    submitSteps(s, 2, 6);
    await kernel.checkpoint(proc.pid, image);
    assert.equal(proc.record().state === 'suspended', false);
    await s.device.queue.onSubmittedWorkDone();
    await steps(s, 6, STEPS);
    assert.equal(Buffer.compare(await read(s), expected), 0);
    await proc.exit();
    await kernel.shutdown();
    assert.equal(Buffer.compare(await restoreAndFinish(image, 6), expected), 0);
  });

  it('a buffer destroyed after queued work that uses it is in the image, and goes once that work has run', async () => {
    const image = join(dir, 'destroyed.gpunix');
    const pattern = Uint32Array.from({ length: 64 }, (_, i) => i * 2654435761);
    const kernel = await createKernel();
    const proc = await kernel.spawn({ name: 'destroyer' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const src = device.createBuffer({ label: 'src', size: 256, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Uint32Array(src.getMappedRange()).set(pattern);
    src.unmap();
    const dst = device.createBuffer({ label: 'dst', size: 256, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    kernel.suspend(proc.pid);
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(src, 0, dst, 0, 256);
    device.queue.submit([encoder.finish()]);
    src.destroy();
    const late = device.createCommandEncoder();
    late.copyBufferToBuffer(src, 0, dst, 0, 4); // after destroy(): Dawn refuses it, so it is not recorded
    device.queue.submit([late.finish()]);
    await kernel.checkpoint(proc.pid, image);
    const taken = await readImage(image);
    assert.deepEqual(taken.buffers.map((b) => b.label), ['dst', 'src']);
    assert.deepEqual(taken.queued.map((q) => q.kind), ['submit', 'destroyBuffer']);
    await kernel.kill(proc.pid);
    await kernel.shutdown();

    const second = await createKernel();
    const restored = await second.restore(image);
    const r = await (await restored.gpu.requestAdapter())!.requestDevice();
    const ext = (r as unknown as { gpunix: { findBuffer(l: string): GPUBuffer | null; labels(): { buffers: string[] } } }).gpunix;
    assert.deepEqual(ext.labels().buffers, ['dst'], 'a destroyed buffer is not found by label');
    const out = r.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const copy = r.createCommandEncoder();
    copy.copyBufferToBuffer(ext.findBuffer('dst')!, 0, out, 0, 256);
    r.queue.submit([copy.finish()]);
    await out.mapAsync(GPUMapMode.READ);
    assert.deepEqual(new Uint32Array(out.getMappedRange().slice(0)), pattern, 'the queued copy ran before the destroy');
    await restored.exit();
    assert.equal(second.stats().bytesAllocated, 0, 'the destroyed buffer is freed');
    await second.shutdown();
  });

  it('refuses a damaged work section, and still restores a version 1 image', async () => {
    const expected = await reference();
    const kernel = await createKernel();
    const good = readFileSync(queuedImage);
    const headerLength = good.readUInt32LE(16);
    const header = JSON.parse(good.subarray(56, 56 + headerLength).toString('utf8'));
    const write = header.queued.find((q: { kind: string }) => q.kind === 'writeBuffer');
    // One bit of a queued write's bytes.
    const flipped = Buffer.from(good);
    flipped[Math.ceil((56 + headerLength) / 8) * 8 + write.offset + 2] ^= 1;
    const bad = join(dir, 'bad-write.gpunix');
    writeFileSync(bad, flipped);
    await assert.rejects(
      kernel.restore(bad),
      (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_IMAGE' && /checksum mismatch in section data, queued\[0\] \(a write of 8 bytes/.test(e.message),
    );
    // One bit of the work section's records (the header).
    const at = good.indexOf('"dispatchWorkgroupsIndirect"', 56);
    const renamed = Buffer.from(good);
    renamed[at + 1] ^= 0x20;
    const badHeader = join(dir, 'bad-header.gpunix');
    writeFileSync(badHeader, renamed);
    await assert.rejects(kernel.restore(badHeader), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_IMAGE' && /checksum mismatch in section header/.test(e.message));
    assert.equal(kernel.ps().length, 0, 'nothing was created');
    await kernel.shutdown();

    // The image of the first test (no queued work), as gpunix wrote it before version 2.
    const v1 = join(dir, 'v1.gpunix');
    writeFileSync(v1, asVersion1(readFileSync(image)));
    assert.equal((await readImage(v1)).version, 1);
    assert.equal(Buffer.compare(await restoreAndFinish(v1, 3), expected), 0, 'a version 1 image restores');
  });

  it('refuses corrupted and truncated images with GPUNIX_E_BAD_IMAGE, creating nothing', async () => {
    const kernel = await createKernel();
    const good = readFileSync(image);
    const corrupt = Buffer.from(good);
    corrupt[Math.floor(good.length / 2)] ^= 0x40;
    const bad = join(dir, 'corrupt.gpunix');
    writeFileSync(bad, corrupt);
    const cut = join(dir, 'cut.gpunix');
    writeFileSync(cut, good.subarray(0, good.length - 100));
    for (const path of [bad, cut]) {
      await assert.rejects(kernel.restore(path), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_IMAGE');
    }
    assert.equal(kernel.ps().length, 0, 'no process was created');
    await kernel.shutdown();
  });
});
