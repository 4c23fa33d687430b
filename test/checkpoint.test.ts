// Checkpoint and restore: a process runs k steps, is checkpointed, killed, and restored in a
// fresh kernel, where a resuming program finds its buffers and pipeline by label and finishes;
// the results are byte-identical to an uninterrupted run. Bad images are refused whole.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createKernel, GpunixError, ProcessHandle } from '../src/index.js';
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
}

async function fresh(proc: ProcessHandle): Promise<Session> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL, label: 'stepper' }) } });
  const state = device.createBuffer({ label: 'state', size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  new Uint32Array(state.getMappedRange()).forEach((_, i, a) => (a[i] = i * 40503));
  state.unmap();
  const params = device.createBuffer({ label: 'params', size: 8, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  return { device, pipeline, state, params };
}

/** What a resuming program does: the same objects, found again by their labels. */
async function resumed(proc: ProcessHandle): Promise<Session> {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const ext = (device as unknown as { gpunix: { restored: boolean; findBuffer(l: string): GPUBuffer | null; findPipeline(l: string): GPUComputePipeline | null } }).gpunix;
  assert.equal(ext.restored, true);
  return { device, pipeline: ext.findPipeline('step')!, state: ext.findBuffer('state')!, params: ext.findBuffer('params')! };
}

async function steps(s: Session, from: number, to: number): Promise<void> {
  const group = s.device.createBindGroup({ layout: s.pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: s.state } }, { binding: 1, resource: { buffer: s.params } }] });
  for (let step = from; step < to; step++) {
    s.device.queue.writeBuffer(s.params, 0, new Uint32Array([step + 5, step * 11]));
    const encoder = s.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(s.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(N / 64);
    pass.end();
    s.device.queue.submit([encoder.finish()]);
  }
  await s.device.queue.onSubmittedWorkDone();
}

async function read(s: Session): Promise<Uint8Array> {
  const out = s.device.createBuffer({ size: N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = s.device.createCommandEncoder();
  encoder.copyBufferToBuffer(s.state, 0, out, 0, N * 4);
  s.device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  return new Uint8Array(out.getMappedRange().slice(0));
}

describe('checkpoint and restore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-ckpt-'));
  const image = join(dir, 'proc.gpunix');

  it('a checkpoint at step k, a kill, and a restore in a fresh kernel give the uninterrupted result', async () => {
    const first = await createKernel();
    const reference = await (async () => {
      const proc = await first.spawn({ name: 'straight' });
      const s = await fresh(proc);
      await steps(s, 0, STEPS);
      const bytes = await read(s);
      await proc.exit();
      return bytes;
    })();

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
    assert.equal(Buffer.compare(await read(r), reference), 0, 'byte-identical to the uninterrupted run');
    await restored.exit();
    assert.equal(second.stats().bytesAllocated, 0);
    await second.shutdown();
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
