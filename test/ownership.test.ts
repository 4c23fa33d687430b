// Every object a process passes to its device, queue, encoder or pass must be its own device's.
// Process A (tenant ta) tries to use process B's (tenant tb) objects in every way WebGPU allows a
// program to name an object; each attempt must be what Dawn makes it for two devices — a
// GPUValidationError in A's scope, worded as Dawn words it — and B's data must stay exactly as B
// wrote it. Each scenario runs on two bare Dawn devices (the baseline), on two processes of an
// embedded kernel, and on two connect() clients of one gpunixd; the three must observe the same.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, createKernel, Kernel, RemoteProcess } from '../src/index.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { bareGpu } from './helpers.js';

const U = GPUBufferUsage;
const SECRET = [0xdeadbeef, 0xabadcafe, 0x12345678, 0x9abcdef0];
const SEVENS = [7, 7, 7, 7];
const TOKEN_A = 'ta-token-0123456789';
const TOKEN_B = 'tb-token-0123456789';

const WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { for (var i = 0u; i < 4u; i++) { d[i] = 7u; } }`;

/** The sentence Dawn gives for an object of device B used on device A. */
const foreign = (object: string): string => `GPUValidationError: ${object} is associated with [Device "B"], and cannot be used with [Device "A"].`;

interface Pair {
  A: GPUDevice;
  B: GPUDevice;
}

/** What a call raised in a validation scope: the error's class and first line, or 'no error'. */
async function scoped(device: GPUDevice, body: () => unknown): Promise<string> {
  device.pushErrorScope('validation');
  body();
  const error = await device.popErrorScope();
  return error ? `${error.constructor.name}: ${error.message.split('\n')[0]}` : 'no error';
}

/** The first four words of `buffer`, read back through its own device. */
async function words(device: GPUDevice, buffer: GPUBuffer): Promise<number[]> {
  const staging = device.createBuffer({ size: 16, usage: U.MAP_READ | U.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, 16);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = [...new Uint32Array(staging.getMappedRange())];
  staging.destroy();
  return out;
}

/** B's objects: a buffer holding its secret, and what a program makes around it. */
function bObjects(B: GPUDevice) {
  const secret = B.createBuffer({ label: 'b-secret', size: 16, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  B.queue.writeBuffer(secret, 0, new Uint32Array(SECRET));
  const module = B.createShaderModule({ label: 'b-module', code: WGSL });
  const layout = B.createBindGroupLayout({ label: 'b-layout', entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] });
  const pipelineLayout = B.createPipelineLayout({ label: 'b-pipeline-layout', bindGroupLayouts: [layout] });
  const pipeline = B.createComputePipeline({ label: 'b-pipeline', layout: pipelineLayout, compute: { module } });
  const bindGroup = B.createBindGroup({ label: 'b-group', layout, entries: [{ binding: 0, resource: { buffer: secret } }] });
  const querySet = B.createQuerySet({ label: 'b-queries', type: 'occlusion', count: 1 });
  return { secret, module, layout, pipelineLayout, pipeline, bindGroup, querySet };
}

/** A's own objects, the same shapes. */
function aObjects(A: GPUDevice) {
  const buffer = A.createBuffer({ label: 'a-buffer', size: 16, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST | U.QUERY_RESOLVE });
  const module = A.createShaderModule({ label: 'a-module', code: WGSL });
  const layout = A.createBindGroupLayout({ label: 'a-layout', entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] });
  const pipeline = A.createComputePipeline({ label: 'a-pipeline', layout: A.createPipelineLayout({ bindGroupLayouts: [layout] }), compute: { module } });
  const querySet = A.createQuerySet({ label: 'a-queries', type: 'occlusion', count: 1 });
  return { buffer, module, layout, pipeline, querySet };
}

/** Collects what B's device reports uncaptured: nothing A does may reach B. */
function uncapturedOf(device: GPUDevice): string[] {
  const seen: string[] = [];
  device.addEventListener('uncapturederror', (event) => seen.push((event as GPUUncapturedErrorEvent).error.message));
  return seen;
}

/** A scenario: what A observes (each entry a string), run on one pair of devices. */
type Scenario = (pair: Pair) => Promise<string[]>;

describe('a process can use only its own device\'s objects', () => {
  let kernel: Kernel;
  let daemon: Daemon;
  let dir: string;
  let remote: RemoteProcess[] = [];
  const pairs: Record<'bare' | 'embedded' | 'remote', Pair> = {} as never;
  const uncaptured: Record<string, string[]> = {};

  before(async () => {
    const [adapterA, adapterB] = await Promise.all([bareGpu().requestAdapter(), bareGpu().requestAdapter()]);
    pairs.bare = { A: await adapterA!.requestDevice({ label: 'A' }), B: await adapterB!.requestDevice({ label: 'B' }) };

    kernel = await createKernel({ tenants: { ta: {}, tb: {} } });
    const [pa, pb] = await Promise.all([kernel.spawn({ name: 'a', tenant: 'ta' }), kernel.spawn({ name: 'b', tenant: 'tb' })]);
    pairs.embedded = {
      A: (await (await pa.gpu.requestAdapter())!.requestDevice({ label: 'A' })) as GPUDevice,
      B: (await (await pb.gpu.requestAdapter())!.requestDevice({ label: 'B' })) as GPUDevice,
    };

    dir = mkdtempSync(join(tmpdir(), 'gpunix-ownership-'));
    const socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      stateFile: join(dir, 'tenants.json'),
      tenants: { ta: { tokenHash: hashToken(TOKEN_A) }, tb: { tokenHash: hashToken(TOKEN_B) } },
    });
    remote = await Promise.all([connect({ socket, token: TOKEN_A, name: 'a' }), connect({ socket, token: TOKEN_B, name: 'b' })]);
    assert.deepEqual(
      remote.map((p) => p.tenant),
      ['ta', 'tb'],
    );
    pairs.remote = {
      A: (await (await remote[0].gpu.requestAdapter())!.requestDevice({ label: 'A' })) as GPUDevice,
      B: (await (await remote[1].gpu.requestAdapter())!.requestDevice({ label: 'B' })) as GPUDevice,
    };
    for (const [name, pair] of Object.entries(pairs)) uncaptured[name] = uncapturedOf(pair.B);
  });

  after(async () => {
    for (const pair of Object.values(pairs)) {
      pair.A.destroy();
      pair.B.destroy();
    }
    await Promise.all(remote.map((p) => p.exit()));
    await daemon.close('immediate');
    await kernel.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `scenario` on all three pairs: the observations must be the same, and equal `expected`. */
  async function everywhere(scenario: Scenario, expected: string[]): Promise<void> {
    const bare = await scenario(pairs.bare);
    assert.deepEqual(bare, expected, 'bare Dawn no longer behaves as it was probed to');
    assert.deepEqual(await scenario(pairs.embedded), bare, 'embedded gpunix differs from bare Dawn');
    assert.deepEqual(await scenario(pairs.remote), bare, 'gpunix over the wire differs from bare Dawn');
    for (const [name, seen] of Object.entries(uncaptured)) assert.deepEqual(seen, [], `${name}: B's device saw nothing of A's attempts`);
  }

  it("a process cannot bind another process's buffer: validation error in its scope, the owner's data intact", async () => {
    await everywhere(
      async ({ A, B }) => {
        const b = bObjects(B);
        const a = aObjects(A);
        // The error goes to the innermost scope that takes validation errors, as at any call.
        A.pushErrorScope('validation');
        A.pushErrorScope('out-of-memory');
        const group = A.createBindGroup({ layout: a.layout, entries: [{ binding: 0, resource: { buffer: b.secret } }] });
        const inner = await A.popErrorScope();
        const outer = await A.popErrorScope();
        // The invalid bind group fails the encoder that sets it, and the submit of what it made.
        const encoder = A.createCommandEncoder({ label: 'a-encoder' });
        const pass = encoder.beginComputePass();
        pass.setPipeline(a.pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(1);
        pass.end();
        let commands!: GPUCommandBuffer;
        const atFinish = await scoped(A, () => (commands = encoder.finish()));
        const atSubmit = await scoped(A, () => A.queue.submit([commands]));
        return [String(inner), `${outer?.constructor.name}: ${outer?.message.split('\n')[0]}`, atFinish, atSubmit, (await words(B, b.secret)).join(',')];
      },
      [
        'null',
        foreign('[Buffer "b-secret"]'),
        'GPUValidationError: [Invalid BindGroup (unlabeled)] is invalid due to a previous error.',
        'GPUValidationError: [Invalid CommandBuffer from CommandEncoder "a-encoder"] is invalid due to a previous error.',
        SECRET.join(','),
      ],
    );
  });

  it("a process cannot write another process's buffer with writeBuffer", async () => {
    await everywhere(
      async ({ A, B }) => {
        const b = bObjects(B);
        const error = await scoped(A, () => A.queue.writeBuffer(b.secret, 0, new Uint32Array(SEVENS)));
        return [error, (await words(B, b.secret)).join(',')];
      },
      [foreign('[Buffer "b-secret"]'), SECRET.join(',')],
    );
  });

  it("a process cannot copy from, copy into, clear or resolve into another process's buffer: finish() fails and nothing runs", async () => {
    await everywhere(
      async ({ A, B }) => {
        const b = bObjects(B);
        const a = aObjects(A);
        const seen: string[] = [];
        const attempts: [string, (encoder: GPUCommandEncoder) => void][] = [
          ['copy from', (e) => e.copyBufferToBuffer(b.secret, 0, a.buffer, 0, 16)],
          ['copy from (short form)', (e) => e.copyBufferToBuffer(b.secret, a.buffer)],
          ['copy into', (e) => e.copyBufferToBuffer(a.buffer, 0, b.secret, 0, 16)],
          ['clear', (e) => e.clearBuffer(b.secret)],
          ['resolve into', (e) => e.resolveQuerySet(a.querySet, 0, 1, b.secret, 0)],
          ['resolve from', (e) => e.resolveQuerySet(b.querySet, 0, 1, a.buffer, 0)],
        ];
        for (const [what, attempt] of attempts) {
          const encoder = A.createCommandEncoder({ label: what });
          attempt(encoder);
          let commands!: GPUCommandBuffer;
          seen.push(`${what}: ${await scoped(A, () => (commands = encoder.finish()))}`);
          seen.push(`${what}, submitted: ${await scoped(A, () => A.queue.submit([commands]))}`);
        }
        seen.push((await words(A, a.buffer)).join(','), (await words(B, b.secret)).join(','));
        return seen;
      },
      [
        `copy from: ${foreign('[Buffer "b-secret"]')}`,
        'copy from, submitted: GPUValidationError: [Invalid CommandBuffer from CommandEncoder "copy from"] is invalid due to a previous error.',
        `copy from (short form): ${foreign('[Buffer "b-secret"]')}`,
        'copy from (short form), submitted: GPUValidationError: [Invalid CommandBuffer from CommandEncoder "copy from (short form)"] is invalid due to a previous error.',
        `copy into: ${foreign('[Buffer "b-secret"]')}`,
        'copy into, submitted: GPUValidationError: [Invalid CommandBuffer from CommandEncoder "copy into"] is invalid due to a previous error.',
        `clear: ${foreign('[Buffer "b-secret"]')}`,
        'clear, submitted: GPUValidationError: [Invalid CommandBuffer from CommandEncoder "clear"] is invalid due to a previous error.',
        `resolve into: ${foreign('[Buffer "b-secret"]')}`,
        'resolve into, submitted: GPUValidationError: [Invalid CommandBuffer from CommandEncoder "resolve into"] is invalid due to a previous error.',
        `resolve from: ${foreign('[QuerySet "b-queries"]')}`,
        'resolve from, submitted: GPUValidationError: [Invalid CommandBuffer from CommandEncoder "resolve from"] is invalid due to a previous error.',
        '0,0,0,0',
        SECRET.join(','),
      ],
    );
  });

  it("a process cannot set another process's pipeline or bind group in its pass, nor dispatch from its buffer; the owner's own work still runs", async () => {
    await everywhere(
      async ({ A, B }) => {
        const b = bObjects(B);
        const a = aObjects(A);
        const ownGroup = A.createBindGroup({ layout: a.layout, entries: [{ binding: 0, resource: { buffer: a.buffer } }] });
        const attempts: [string, (pass: GPUComputePassEncoder) => void][] = [
          ['setPipeline', (p) => p.setPipeline(b.pipeline)],
          ['setBindGroup', (p) => (p.setPipeline(a.pipeline), p.setBindGroup(0, b.bindGroup))],
          ['dispatchWorkgroupsIndirect', (p) => (p.setPipeline(a.pipeline), p.setBindGroup(0, ownGroup), p.dispatchWorkgroupsIndirect(b.secret, 0))],
        ];
        const seen: string[] = [];
        for (const [what, attempt] of attempts) {
          const encoder = A.createCommandEncoder();
          const pass = encoder.beginComputePass({ label: what });
          attempt(pass);
          pass.dispatchWorkgroups(1);
          pass.end();
          let commands!: GPUCommandBuffer;
          seen.push(`${what}: ${await scoped(A, () => (commands = encoder.finish()))}`);
          await scoped(A, () => A.queue.submit([commands]));
        }
        seen.push((await words(B, b.secret)).join(','));
        // B's objects serve B as before: its own dispatch with its own group writes its buffer.
        const encoder = B.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(b.pipeline);
        pass.setBindGroup(0, b.bindGroup);
        pass.dispatchWorkgroups(1);
        pass.end();
        seen.push(`B's own dispatch: ${await scoped(B, () => B.queue.submit([encoder.finish()]))}`);
        seen.push((await words(B, b.secret)).join(','));
        return seen;
      },
      [
        `setPipeline: ${foreign('[ComputePipeline "b-pipeline"]')}`,
        `setBindGroup: ${foreign('[BindGroup "b-group"]')}`,
        `dispatchWorkgroupsIndirect: ${foreign('[Buffer "b-secret"]')}`,
        SECRET.join(','),
        "B's own dispatch: no error",
        SEVENS.join(','),
      ],
    );
  });

  it("a process cannot make layouts, bind groups or pipelines from another process's layouts and modules", async () => {
    await everywhere(
      async ({ A, B }) => {
        const b = bObjects(B);
        const a = aObjects(A);
        const seen = [
          await scoped(A, () => A.createBindGroup({ layout: b.layout, entries: [{ binding: 0, resource: { buffer: a.buffer } }] })),
          await scoped(A, () => A.createPipelineLayout({ bindGroupLayouts: [b.layout] })),
          await scoped(A, () => A.createComputePipeline({ layout: 'auto', compute: { module: b.module } })),
          await scoped(A, () => A.createComputePipeline({ layout: b.pipelineLayout, compute: { module: a.module } })),
        ];
        try {
          await A.createComputePipelineAsync({ layout: 'auto', compute: { module: b.module } });
          seen.push('createComputePipelineAsync resolved');
        } catch (error) {
          seen.push(`${(error as GPUPipelineError).constructor.name}(${(error as GPUPipelineError).reason}): ${(error as Error).message.split('\n')[0]}`);
        }
        return seen;
      },
      [
        foreign('[BindGroupLayout "b-layout"]'),
        foreign('[BindGroupLayout "b-layout"]'),
        foreign('[ShaderModule "b-module"]'),
        foreign('[PipelineLayout "b-pipeline-layout"]'),
        `GPUPipelineError(validation): [ShaderModule "b-module"] is associated with [Device "B"], and cannot be used with [Device "A"].`,
      ],
    );
  });

  it("a process cannot submit another process's command buffer: refused, nothing runs, and (as in Dawn) the buffer is used up", async () => {
    await everywhere(
      async ({ A, B }) => {
        const b = bObjects(B);
        const encoder = B.createCommandEncoder({ label: 'b-encoder' });
        encoder.clearBuffer(b.secret);
        const commands = encoder.finish({ label: 'b-commands' });
        const own = A.createCommandEncoder().finish();
        const seen = [await scoped(A, () => A.queue.submit([own, commands]))];
        seen.push((await words(B, b.secret)).join(','));
        seen.push(`B submits it: ${await scoped(B, () => B.queue.submit([commands]))}`);
        seen.push((await words(B, b.secret)).join(','));
        return seen;
      },
      [
        foreign('[CommandBuffer "b-commands" from CommandEncoder "b-encoder"]'),
        SECRET.join(','),
        'B submits it: GPUValidationError: [CommandBuffer "b-commands" from CommandEncoder "b-encoder"] cannot be submitted more than once.',
        SECRET.join(','),
      ],
    );
  });

  it("another device of the same process is another device: its buffer is foreign too", async () => {
    const proc = await kernel.spawn({ name: 'two-devices', tenant: 'ta' });
    const first = (await (await proc.gpu.requestAdapter())!.requestDevice({ label: 'A' })) as GPUDevice;
    const second = (await (await proc.gpu.requestAdapter())!.requestDevice({ label: 'B' })) as GPUDevice;
    const b = bObjects(second);
    assert.equal(await scoped(first, () => first.queue.writeBuffer(b.secret, 0, new Uint32Array(SEVENS))), foreign('[Buffer "b-secret"]'));
    assert.deepEqual(await words(second, b.secret), SECRET);
    await proc.exit();
  });
});
