// Every argument a program passes is converted as WebIDL and WebGPU say, in one place
// (src/webidl.ts), before anything reaches Dawn, on the embedded device and on the remote client
// alike. Values dawn.node cannot convert itself (a Symbol, an object whose toString throws, given
// where a string goes) used to abort the whole Node process, every gpunix process with it
// ("FATAL ERROR napi", exit 134): each is now a TypeError (or the toString's own exception) for
// the caller, and the kernel goes on serving everyone else. Bare Dawn is never given a Symbol
// here: it would abort this test.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, createKernel, Kernel, RemoteProcess } from '../src/index.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { corpus } from './corpus/index.js';
import { assertSameBytes, bareGpu, bareResult } from './helpers.js';

const U = GPUBufferUsage;
const TOKEN = 'webidl-token-0123456789';
const WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
override scale: u32 = 1u;
@compute @workgroup_size(1) fn main() { d[0] = 7u * scale; }`;

/** A call that takes one value where WebGPU converts a string (or a number, for `constants`). */
type Variant = [what: string, call: (device: GPUDevice, gpu: GPU, bad: unknown) => unknown];

const asAny = (value: unknown): never => value as never;

/** Every string member and argument that once reached dawn.node unconverted, and a few more. */
const VARIANTS: Variant[] = [
  ['createShaderModule: code', (d, _g, bad) => d.createShaderModule({ code: asAny(bad) })],
  ['createShaderModule: label', (d, _g, bad) => d.createShaderModule({ label: asAny(bad), code: WGSL })],
  ['createBuffer: label', (d, _g, bad) => d.createBuffer({ label: asAny(bad), size: 16, usage: U.STORAGE })],
  ['createComputePipeline: label', (d, _g, bad) => d.createComputePipeline({ label: asAny(bad), layout: 'auto', compute: { module: d.createShaderModule({ code: WGSL }) } })],
  ['createComputePipeline: entryPoint', (d, _g, bad) => d.createComputePipeline({ layout: 'auto', compute: { module: d.createShaderModule({ code: WGSL }), entryPoint: asAny(bad) } })],
  ['createComputePipeline: a constant', (d, _g, bad) => d.createComputePipeline({ layout: 'auto', compute: { module: d.createShaderModule({ code: WGSL }), constants: { scale: asAny(bad) } } })],
  ['createComputePipeline: layout', (d, _g, bad) => d.createComputePipeline({ layout: asAny(bad), compute: { module: d.createShaderModule({ code: WGSL }) } })],
  ['createComputePipelineAsync: entryPoint', (d, _g, bad) => d.createComputePipelineAsync({ layout: 'auto', compute: { module: d.createShaderModule({ code: WGSL }), entryPoint: asAny(bad) } })],
  ['createBindGroupLayout: label', (d, _g, bad) => d.createBindGroupLayout({ label: asAny(bad), entries: [] })],
  ['createBindGroupLayout: buffer.type', (d, _g, bad) => d.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, buffer: { type: asAny(bad) } }] })],
  ['createBindGroupLayout: sampler.type', (d, _g, bad) => d.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, sampler: { type: asAny(bad) } }] })],
  ['createBindGroupLayout: texture.sampleType', (d, _g, bad) => d.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, texture: { sampleType: asAny(bad) } }] })],
  ['createBindGroupLayout: texture.viewDimension', (d, _g, bad) => d.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, texture: { viewDimension: asAny(bad) } }] })],
  ['createBindGroupLayout: storageTexture.access', (d, _g, bad) => d.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, storageTexture: { access: asAny(bad), format: 'r32float' } }] })],
  ['createBindGroupLayout: storageTexture.format', (d, _g, bad) => d.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, storageTexture: { format: asAny(bad) } }] })],
  ['createPipelineLayout: label', (d, _g, bad) => d.createPipelineLayout({ label: asAny(bad), bindGroupLayouts: [] })],
  ['createBindGroup: label', (d, _g, bad) => d.createBindGroup({ label: asAny(bad), layout: d.createBindGroupLayout({ entries: [] }), entries: [] })],
  ['createQuerySet: type', (d, _g, bad) => d.createQuerySet({ type: asAny(bad), count: 1 })],
  ['createQuerySet: label', (d, _g, bad) => d.createQuerySet({ label: asAny(bad), type: 'occlusion', count: 1 })],
  ['createCommandEncoder: label', (d, _g, bad) => d.createCommandEncoder({ label: asAny(bad) })],
  ['beginComputePass: label', (d, _g, bad) => d.createCommandEncoder().beginComputePass({ label: asAny(bad) })],
  ['finish: label', (d, _g, bad) => d.createCommandEncoder().finish({ label: asAny(bad) })],
  ['encoder.pushDebugGroup', (d, _g, bad) => d.createCommandEncoder().pushDebugGroup(asAny(bad))],
  ['encoder.insertDebugMarker', (d, _g, bad) => d.createCommandEncoder().insertDebugMarker(asAny(bad))],
  ['pass.pushDebugGroup', (d, _g, bad) => d.createCommandEncoder().beginComputePass().pushDebugGroup(asAny(bad))],
  ['pass.insertDebugMarker', (d, _g, bad) => d.createCommandEncoder().beginComputePass().insertDebugMarker(asAny(bad))],
  ['pushErrorScope: filter', (d, _g, bad) => d.pushErrorScope(asAny(bad))],
  ['buffer.label = ...', (d, _g, bad) => (d.createBuffer({ size: 16, usage: U.STORAGE }).label = asAny(bad))],
  ['encoder.label = ...', (d, _g, bad) => (d.createCommandEncoder().label = asAny(bad))],
  ['device.label = ...', (d, _g, bad) => (d.label = asAny(bad))],
  ['requestDevice: label', async (_d, g, bad) => (await g.requestAdapter())!.requestDevice({ label: asAny(bad) })],
  ['requestDevice: defaultQueue.label', async (_d, g, bad) => (await g.requestAdapter())!.requestDevice({ defaultQueue: { label: asAny(bad) } })],
  ['requestDevice: a required feature', async (_d, g, bad) => (await g.requestAdapter())!.requestDevice({ requiredFeatures: [asAny(bad)] })],
  ['requestAdapter: powerPreference', (_d, g, bad) => g.requestAdapter({ powerPreference: asAny(bad) })],
];

/**
 * What a variant gave the caller for `bad`: 'TypeError', 'its own exception' (the very object
 * the toString threw), 'no exception', or another class.
 */
async function outcome(variant: Variant, device: GPUDevice, gpu: GPU, bad: unknown, thrown: unknown): Promise<string> {
  try {
    await variant[1](device, gpu, bad);
    return 'no exception';
  } catch (error) {
    if (error === thrown) return 'its own exception';
    return (error as object).constructor.name;
  }
}

describe('arguments are converted as WebIDL says, before anything reaches Dawn', () => {
  let kernel: Kernel;
  let daemon: Daemon;
  let dir: string;
  let socket: string;

  before(async () => {
    kernel = await createKernel();
    dir = mkdtempSync(join(tmpdir(), 'gpunix-webidl-'));
    socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({ socket, log: { level: 'silent' }, stateFile: join(dir, 'tenants.json'), tenants: { t: { tokenHash: hashToken(TOKEN) } } });
  });

  after(async () => {
    await daemon.close('immediate');
    await kernel.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs every variant with a Symbol and with a throwing toString on one process's device. */
  async function everyVariant(gpu: GPU): Promise<string[]> {
    const device = (await (await gpu.requestAdapter())!.requestDevice()) as GPUDevice;
    const seen: string[] = [];
    for (const variant of VARIANTS) {
      const symbol = await outcome(variant, device, gpu, Symbol('not a string'), null);
      const error = new Error(`toString of ${variant[0]}`);
      const throwing = await outcome(variant, device, gpu, { toString: () => { throw error; } }, error);
      seen.push(`${variant[0]}: Symbol → ${symbol}, throwing toString → ${throwing}`);
    }
    device.destroy();
    return seen;
  }

  const expected = VARIANTS.map(([what]) => `${what}: Symbol → TypeError, throwing toString → its own exception`);

  it('every argument that once aborted dawn.node is a TypeError for the caller, and the kernel serves the next process exactly', async () => {
    const proc = await kernel.spawn({ name: 'hostile' });
    assert.deepEqual(await everyVariant(proc.gpu as unknown as GPU), expected);
    assert.deepEqual(await proc.exit(), { code: 0, reason: 'normal' });
    // Still the same Node process and the same kernel: another program computes exact results.
    const next = await kernel.spawn({ name: 'next' });
    assertSameBytes(await corpus[0].run(next.gpu as unknown as GPU), await bareResult(corpus[0]), corpus[0].name);
    await next.exit();
  });

  it('the remote client converts with the same module: the same exceptions, and gpunixd keeps serving', async () => {
    const proc: RemoteProcess = await connect({ socket, token: TOKEN, name: 'hostile' });
    assert.deepEqual(await everyVariant(proc.gpu), expected);
    await proc.exit();
    const next = await connect({ socket, token: TOKEN, name: 'next' });
    assertSameBytes(await corpus[0].run(next.gpu), await bareResult(corpus[0]), corpus[0].name);
    await next.exit();
  });

  /** The gpus to compare: bare Dawn first, then an embedded and a remote process. */
  async function gpus(): Promise<{ name: string; gpu: GPU; done: () => Promise<unknown> }[]> {
    const proc = await kernel.spawn({ name: 'conversions' });
    const remote = await connect({ socket, token: TOKEN, name: 'conversions' });
    return [
      { name: 'bare', gpu: bareGpu(), done: async () => {} },
      { name: 'embedded', gpu: proc.gpu as unknown as GPU, done: () => proc.exit() },
      { name: 'remote', gpu: remote.gpu, done: () => remote.exit() },
    ];
  }

  it('writeBuffer at offset 2**60 is a TypeError ([EnforceRange] GPUSize64), as on bare Dawn, not a write silently dropped', async () => {
    for (const { name, gpu, done } of await gpus()) {
      const device = (await (await gpu.requestAdapter())!.requestDevice()) as GPUDevice;
      const buffer = device.createBuffer({ size: 16, usage: U.COPY_DST | U.COPY_SRC });
      for (const offset of [2 ** 60, 2 ** 53, -4, Number.NaN, Infinity]) {
        assert.throws(() => device.queue.writeBuffer(buffer, offset, new Uint32Array(1)), TypeError, `${name}: writeBuffer at ${offset}`);
      }
      device.pushErrorScope('validation');
      device.queue.writeBuffer(buffer, 2 ** 53 - 8, new Uint32Array(1));
      assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', `${name}: an offset in range but past the end is Dawn's validation error`);
      device.destroy();
      await done();
    }
  });

  it("a required feature given as a one-element array is converted with ToString: [['timestamp-query']] asks for timestamp-query", async (t) => {
    const adapter = await bareGpu().requestAdapter();
    if (!adapter!.features.has('timestamp-query')) return t.skip('the adapter has no timestamp-query');
    for (const { name, gpu, done } of await gpus()) {
      const device = (await (await gpu.requestAdapter())!.requestDevice({ requiredFeatures: [asAny(['timestamp-query'])] })) as GPUDevice;
      assert.ok(device.features.has('timestamp-query'), `${name}: the device has timestamp-query`);
      assert.equal(device.createQuerySet({ type: 'timestamp', count: 2 }).type, 'timestamp', name);
      device.destroy();
      await done();
    }
  });

  it('numbers, enums and required members are converted as on bare Dawn where Dawn follows WebIDL', async () => {
    const outcomes: string[][] = [];
    for (const { gpu, done } of await gpus()) {
      const device = (await (await gpu.requestAdapter())!.requestDevice()) as GPUDevice;
      const seen: string[] = [];
      const note = (what: string, call: () => unknown): void => {
        try {
          seen.push(`${what}: ${String(call())}`);
        } catch (error) {
          seen.push(`${what}: ${(error as object).constructor.name}`);
        }
      };
      const pass = () => device.createCommandEncoder().beginComputePass();
      note('size 16.7 truncates', () => device.createBuffer({ size: 16.7, usage: U.STORAGE }).size);
      note('size 2**53', () => device.createBuffer({ size: 2 ** 53, usage: U.STORAGE }).size);
      note('size NaN', () => device.createBuffer({ size: Number.NaN, usage: U.STORAGE }).size);
      note('size a BigInt', () => device.createBuffer({ size: asAny(16n), usage: U.STORAGE }).size);
      note('size missing', () => device.createBuffer(asAny({ usage: U.STORAGE })).size);
      note('usage 2**32', () => device.createBuffer({ size: 16, usage: 2 ** 32 }).size);
      note('label a number', () => device.createBuffer({ label: asAny(12), size: 16, usage: U.STORAGE }).label);
      note('label null', () => device.createBuffer({ label: asAny(null), size: 16, usage: U.STORAGE }).label);
      note('label set to a number', () => {
        const buffer = device.createBuffer({ size: 16, usage: U.STORAGE });
        buffer.label = asAny(42);
        return buffer.label;
      });
      note('query type not an enum value', () => device.createQuerySet({ type: asAny('bogus'), count: 1 }).type);
      note('query type as a one-element array', () => device.createQuerySet({ type: asAny(['occlusion']), count: 1 }).type);
      note('error filter not an enum value', () => device.pushErrorScope(asAny('bogus')));
      note('dispatchWorkgroups(2**32)', () => pass().dispatchWorkgroups(2 ** 32));
      note('dispatchWorkgroups(-1)', () => pass().dispatchWorkgroups(-1));
      note('setBindGroup offsets out of the array', () => pass().setBindGroup(0, null, new Uint32Array(1), 0, 2));
      note('getBindGroupLayout(2**32) is group 0 (unsigned long, no [EnforceRange])', () => {
        const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL }) } });
        return pipeline.getBindGroupLayout(2 ** 32).constructor.name.replace(/^Remote|^Virtual/, 'GPU');
      });
      outcomes.push(seen);
      device.destroy();
      await done();
    }
    const [bare, embedded, remote] = outcomes;
    assert.deepEqual(bare, [
      'size 16.7 truncates: 16',
      'size 2**53: TypeError',
      'size NaN: TypeError',
      'size a BigInt: TypeError',
      'size missing: TypeError',
      'usage 2**32: TypeError',
      'label a number: 12',
      'label null: null',
      'label set to a number: 42',
      'query type not an enum value: TypeError',
      'query type as a one-element array: occlusion',
      'error filter not an enum value: TypeError',
      'dispatchWorkgroups(2**32): TypeError',
      'dispatchWorkgroups(-1): TypeError',
      'setBindGroup offsets out of the array: RangeError',
      'getBindGroupLayout(2**32) is group 0 (unsigned long, no [EnforceRange]): GPUBindGroupLayout',
    ]);
    assert.deepEqual(embedded, bare, 'embedded');
    assert.deepEqual(remote, bare, 'remote');
  });

  it("dictionary members are read once each, in the spec's order (inherited first, lexicographic within)", async () => {
    const orders: string[][] = [];
    for (const { name, gpu, done } of (await gpus()).slice(1)) {
      const device = (await (await gpu.requestAdapter())!.requestDevice()) as GPUDevice;
      const reads: string[] = [];
      /** `value` behind a proxy that records each member read as `path.member`. */
      const watched = <T extends object>(path: string, value: T): T =>
        new Proxy(value, {
          get(target, key, receiver) {
            if (typeof key === 'string') reads.push(`${path}.${key}`);
            return Reflect.get(target, key, receiver);
          },
        });
      device.createBuffer(watched('buffer', { usage: U.STORAGE, size: 16, mappedAtCreation: false, label: 'b' }));
      const module = device.createShaderModule(watched('module', { code: WGSL, label: 'm' }));
      const pipeline = device.createComputePipeline(
        watched('pipeline', { compute: watched('compute', { module, entryPoint: 'main', constants: { scale: 2 } }), layout: 'auto', label: 'p' }),
      );
      const buffer = device.createBuffer({ size: 16, usage: U.STORAGE });
      device.createBindGroup(
        watched('group', {
          layout: pipeline.getBindGroupLayout(0),
          label: 'g',
          entries: [watched('entry', { resource: watched('resource', { size: 16, offset: 0, buffer }), binding: 0 })],
        }),
      );
      device.createCommandEncoder().beginComputePass(watched('pass', { timestampWrites: undefined, label: 'pass' }));
      orders.push(reads);
      assert.deepEqual(
        reads,
        [
          'buffer.label', 'buffer.mappedAtCreation', 'buffer.size', 'buffer.usage',
          'module.label', 'module.code', 'module.compilationHints',
          'pipeline.label', 'pipeline.layout', 'pipeline.compute', 'compute.constants', 'compute.entryPoint', 'compute.module',
          'group.label', 'group.entries', 'entry.binding', 'entry.resource', 'resource.buffer', 'resource.offset', 'resource.size', 'group.layout',
          'pass.label', 'pass.timestampWrites',
        ],
        name,
      );
      device.destroy();
      await done();
    }
  });
});
