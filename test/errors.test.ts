// Error behaviour under gpunix matches bare Dawn: the same error class reaches the program through
// the same channel (error scope, thrown exception, rejected promise, uncapturederror event). Each
// case is one function run on a bare Dawn device and on a gpunix process's device; the two
// observations (class names and channels, never message text) must be equal, and equal to what
// bare Dawn was probed to do.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, GpunixError, Kernel } from '../src/index.js';
import { bareDevice } from './helpers.js';

/** What a case saw, in order: `channel:what:Class` strings. */
type Observation = string[];

/** An error's class as a program would tell it apart: DOMExceptions by name, GPUPipelineErrors by reason. */
function classOf(error: unknown): string {
  if (error === null) return 'null';
  if (typeof error !== 'object') return typeof error;
  const name = (error as object).constructor?.name ?? 'Object';
  if (name === 'DOMException') return `DOMException(${(error as DOMException).name})`;
  if (name === 'GPUPipelineError') return `GPUPipelineError(${(error as GPUPipelineError).reason})`;
  return name;
}

/** Collects a case's observations; every device it is given records its uncaptured errors too. */
class Recorder {
  readonly seen: Observation = [];
  private readonly uncaptured: string[] = [];

  constructor(readonly device: GPUDevice) {
    device.addEventListener('uncapturederror', (event) => {
      const e = event as GPUUncapturedErrorEvent;
      this.uncaptured.push(`uncaptured:${classOf(e)}:${classOf(e.error)}`);
    });
  }

  note(entry: string): void {
    this.seen.push(entry);
  }

  /** A synchronous call: records a thrown exception, or nothing. */
  call<T>(what: string, body: () => T): T | undefined {
    try {
      return body();
    } catch (error) {
      this.seen.push(`thrown:${what}:${classOf(error)}`);
      return undefined;
    }
  }

  /** A promise: records how it settled. */
  async settle(what: string, promise: Promise<unknown>): Promise<void> {
    try {
      await promise;
      this.seen.push(`resolved:${what}`);
    } catch (error) {
      this.seen.push(`rejected:${what}:${classOf(error)}`);
    }
  }

  /** Runs `body` inside a validation and an out-of-memory scope and records what each caught. */
  async scoped(what: string, body: () => unknown): Promise<void> {
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    try {
      await body();
    } finally {
      const validation = await this.device.popErrorScope();
      const oom = await this.device.popErrorScope();
      if (validation) this.seen.push(`scope:${what}:${classOf(validation)}`);
      if (oom) this.seen.push(`scope:${what}:${classOf(oom)}`);
    }
  }

  /** Lets errors still on their way arrive, then returns everything seen. */
  async finish(): Promise<Observation> {
    await this.device.queue.onSubmittedWorkDone();
    await new Promise((resolve) => setTimeout(resolve, 20));
    return [...this.seen, ...this.uncaptured.sort()];
  }
}

const BAD_WGSL = `@compute @workgroup_size(1)
fn main() {
  let x: u32 = undefined_thing;
}`;

const GOOD_WGSL = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) g: vec3u) { a[g.x] = g.x + 1u; }`;

interface Case {
  name: string;
  run(r: Recorder): Promise<void>;
  /** What bare Dawn was probed to do: gpunix must match it, and bare Dawn must still do it. */
  expect: Observation;
}

const U = () => GPUBufferUsage;
const V = 'GPUValidationError';

const cases: Case[] = [
  {
    name: 'invalid WGSL: validation error in scope, compilation info with a line number, pipeline from it invalid',
    expect: [`scope:module:${V}`, 'compilationInfo:error-with-line', `scope:pipeline:${V}`],
    async run(r) {
      const d = r.device;
      let module!: GPUShaderModule;
      await r.scoped('module', () => {
        module = d.createShaderModule({ code: BAD_WGSL });
      });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === 'error');
      r.note(
        errors.length > 0 && errors.every((m) => m.lineNum > 0 && m.message.length > 0)
          ? 'compilationInfo:error-with-line'
          : `compilationInfo:${JSON.stringify(info.messages.map((m) => [m.type, m.lineNum]))}`,
      );
      await r.scoped('pipeline', () => d.createComputePipeline({ layout: 'auto', compute: { module } }));
    },
  },
  {
    name: 'buffer with MAP_READ | STORAGE usage: validation error in scope',
    expect: [`scope:createBuffer:${V}`],
    async run(r) {
      await r.scoped('createBuffer', () => r.device.createBuffer({ size: 16, usage: U().MAP_READ | U().STORAGE }));
    },
  },
  {
    name: 'writeBuffer to a destroyed buffer: validation error in scope',
    expect: [`scope:writeBuffer:${V}`],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().COPY_DST });
      buffer.destroy();
      await r.scoped('writeBuffer', () => r.device.queue.writeBuffer(buffer, 0, new Uint32Array(4)));
    },
  },
  {
    name: 'writeBuffer at offset 2: validation error in scope',
    expect: [`scope:writeBuffer:${V}`],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().COPY_DST });
      await r.scoped('writeBuffer', () => r.device.queue.writeBuffer(buffer, 2, new Uint32Array(2)));
    },
  },
  {
    name: 'writeBuffer of 3 bytes: thrown OperationError, nothing in scope',
    expect: ['thrown:writeBuffer:DOMException(OperationError)'],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().COPY_DST });
      await r.scoped('writeBuffer', () => r.call('writeBuffer', () => r.device.queue.writeBuffer(buffer, 0, new Uint8Array(3))));
    },
  },
  {
    name: 'buffer larger than maxBufferSize: validation error in scope',
    expect: [`scope:createBuffer:${V}`],
    async run(r) {
      const size = r.device.limits.maxBufferSize + 4;
      await r.scoped('createBuffer', () => r.device.createBuffer({ size, usage: U().STORAGE }));
    },
  },
  {
    name: 'buffer of 2**40 bytes mapped at creation: thrown RangeError',
    expect: ['thrown:createBuffer:RangeError'],
    async run(r) {
      await r.scoped('createBuffer', () =>
        r.call('createBuffer', () => r.device.createBuffer({ size: 2 ** 40, usage: U().MAP_WRITE, mappedAtCreation: true })),
      );
    },
  },
  {
    name: 'mapAsync twice: the second rejects with OperationError, the first resolves',
    expect: ['rejected:second:DOMException(OperationError)', 'resolved:first'],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().MAP_READ });
      await r.scoped('mapAsync', async () => {
        const first = buffer.mapAsync(GPUMapMode.READ);
        const second = buffer.mapAsync(GPUMapMode.READ);
        await r.settle('second', second);
        await r.settle('first', first);
      });
    },
  },
  {
    name: 'mapAsync with the wrong mode: rejects with OperationError and a validation error in scope',
    expect: ['rejected:mapAsync:DOMException(OperationError)', `scope:mapAsync:${V}`],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().MAP_READ });
      await r.scoped('mapAsync', () => r.settle('mapAsync', buffer.mapAsync(GPUMapMode.WRITE)));
    },
  },
  {
    name: 'getMappedRange on an unmapped buffer: thrown OperationError',
    expect: ['thrown:getMappedRange:DOMException(OperationError)'],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().MAP_READ });
      await r.scoped('getMappedRange', () => r.call('getMappedRange', () => buffer.getMappedRange()));
    },
  },
  {
    name: 'unmap while a map is pending: the map rejects with AbortError',
    expect: ['rejected:mapAsync:DOMException(AbortError)'],
    async run(r) {
      const buffer = r.device.createBuffer({ size: 16, usage: U().MAP_READ });
      await r.scoped('unmap', async () => {
        const mapping = buffer.mapAsync(GPUMapMode.READ);
        buffer.unmap();
        await r.settle('mapAsync', mapping);
      });
    },
  },
  {
    name: 'popErrorScope on an empty stack: rejects with OperationError',
    expect: ['rejected:popErrorScope:DOMException(OperationError)'],
    async run(r) {
      await r.settle('popErrorScope', r.device.popErrorScope());
    },
  },
  {
    name: "pushErrorScope('bogus'): thrown TypeError",
    expect: ['thrown:pushErrorScope:TypeError', 'rejected:popErrorScope:DOMException(OperationError)'],
    async run(r) {
      r.call('pushErrorScope', () => r.device.pushErrorScope('bogus' as GPUErrorFilter));
      // Nothing was pushed.
      await r.settle('popErrorScope', r.device.popErrorScope());
    },
  },
  {
    name: 'submitting a command buffer twice: validation error in scope at the second submit',
    expect: [`scope:second:${V}`],
    async run(r) {
      const d = r.device;
      const buffer = d.createBuffer({ size: 16, usage: U().COPY_DST });
      const encoder = d.createCommandEncoder();
      encoder.clearBuffer(buffer);
      const commands = encoder.finish();
      await r.scoped('first', () => d.queue.submit([commands]));
      await r.scoped('second', () => d.queue.submit([commands]));
    },
  },
  {
    name: 'one command buffer twice in one submit: validation error in scope, nothing runs',
    expect: [`scope:submit:${V}`, 'result:0'],
    async run(r) {
      const d = r.device;
      const counter = d.createBuffer({ size: 4, usage: U().COPY_DST | U().COPY_SRC });
      const readback = d.createBuffer({ size: 4, usage: U().COPY_DST | U().MAP_READ });
      const source = d.createBuffer({ size: 4, usage: U().COPY_SRC, mappedAtCreation: true });
      new Uint32Array(source.getMappedRange()).set([7]);
      source.unmap();
      const encoder = d.createCommandEncoder();
      encoder.copyBufferToBuffer(source, 0, counter, 0, 4);
      const commands = encoder.finish();
      await r.scoped('submit', () => d.queue.submit([commands, commands]));
      const copy = d.createCommandEncoder();
      copy.copyBufferToBuffer(counter, 0, readback, 0, 4);
      d.queue.submit([copy.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      r.note(`result:${new Uint32Array(readback.getMappedRange())[0]}`);
    },
  },
  {
    name: 'submitting after destroying a buffer the commands use: validation error in scope',
    expect: [`scope:submit:${V}`],
    async run(r) {
      const d = r.device;
      const buffer = d.createBuffer({ size: 16, usage: U().COPY_DST });
      const encoder = d.createCommandEncoder();
      encoder.clearBuffer(buffer);
      const commands = encoder.finish();
      buffer.destroy();
      await r.scoped('submit', () => d.queue.submit([commands]));
    },
  },
  {
    name: 'dispatch without a pipeline: validation error at finish, then at submit',
    expect: [`scope:finish:${V}`, `scope:submit:${V}`],
    async run(r) {
      const d = r.device;
      let encoder!: GPUCommandEncoder;
      // Encoding errors wait for finish(): nothing reaches the scope around the pass.
      await r.scoped('encode', () => {
        encoder = d.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.dispatchWorkgroups(1);
        pass.end();
      });
      let commands!: GPUCommandBuffer;
      await r.scoped('finish', () => {
        commands = encoder.finish();
      });
      await r.scoped('submit', () => d.queue.submit([commands]));
    },
  },
  {
    name: 'a compute pass not ended: validation error at finish',
    expect: [`scope:finish:${V}`],
    async run(r) {
      const encoder = r.device.createCommandEncoder();
      encoder.beginComputePass();
      await r.scoped('finish', () => encoder.finish());
    },
  },
  {
    name: 'an error with no scope open reaches the uncapturederror listener',
    expect: [`uncaptured:GPUUncapturedErrorEvent:${V}`],
    async run(r) {
      r.device.createBuffer({ size: 16, usage: U().MAP_READ | U().STORAGE });
    },
  },
  {
    name: 'queue errors with no scope open reach the uncapturederror listener',
    expect: [`uncaptured:GPUUncapturedErrorEvent:${V}`, `uncaptured:GPUUncapturedErrorEvent:${V}`],
    async run(r) {
      const d = r.device;
      const buffer = d.createBuffer({ size: 16, usage: U().COPY_DST });
      d.queue.writeBuffer(buffer, 2, new Uint32Array(2));
      const encoder = d.createCommandEncoder();
      encoder.clearBuffer(buffer);
      const commands = encoder.finish();
      d.queue.submit([commands]);
      d.queue.submit([commands]);
    },
  },
  {
    name: 'an error outside a matching scope skips it and reaches the listener',
    expect: [`uncaptured:GPUUncapturedErrorEvent:${V}`],
    async run(r) {
      r.device.pushErrorScope('out-of-memory');
      r.device.createBuffer({ size: 16, usage: U().MAP_READ | U().STORAGE });
      const oom = await r.device.popErrorScope();
      if (oom) r.note(`scope:oom:${classOf(oom)}`);
    },
  },
  {
    name: 'createComputePipelineAsync with a bad module rejects with GPUPipelineError',
    expect: [`scope:module:${V}`, 'rejected:createComputePipelineAsync:GPUPipelineError(validation)'],
    async run(r) {
      let module!: GPUShaderModule;
      await r.scoped('module', () => {
        module = r.device.createShaderModule({ code: BAD_WGSL });
      });
      await r.scoped('pipeline', () =>
        r.settle('createComputePipelineAsync', r.device.createComputePipelineAsync({ layout: 'auto', compute: { module } })),
      );
    },
  },
  {
    name: 'a destroyed device reports no errors, rejects maps and resolves its lost promise',
    expect: ['rejected:mapAsync:DOMException(AbortError)', 'resolved:popErrorScope', 'resolved:onSubmittedWorkDone', 'lost:destroyed'],
    async run(r) {
      const d = r.device;
      const readable = d.createBuffer({ size: 16, usage: U().MAP_READ });
      d.destroy();
      await r.scoped('after destroy', async () => {
        d.createBuffer({ size: 16, usage: U().MAP_READ | U().STORAGE });
        d.createShaderModule({ code: BAD_WGSL });
        d.queue.writeBuffer(readable, 2, new Uint32Array(2));
        await r.settle('mapAsync', readable.mapAsync(GPUMapMode.READ));
      });
      await r.settle('popErrorScope', d.popErrorScope());
      await r.settle('onSubmittedWorkDone', d.queue.onSubmittedWorkDone());
      r.note(`lost:${(await d.lost).reason}`);
    },
  },
  {
    name: 'a correct computation raises nothing anywhere',
    expect: ['result:1,2,3,4,5,6,7,8'],
    async run(r) {
      const d = r.device;
      await r.scoped('compute', async () => {
        const module = d.createShaderModule({ code: GOOD_WGSL });
        const pipeline = d.createComputePipeline({ layout: 'auto', compute: { module } });
        const storage = d.createBuffer({ size: 32, usage: U().STORAGE | U().COPY_SRC });
        const readback = d.createBuffer({ size: 32, usage: U().MAP_READ | U().COPY_DST });
        const group = d.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage } }] });
        const encoder = d.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(2);
        pass.end();
        encoder.copyBufferToBuffer(storage, 0, readback, 0, 32);
        d.queue.submit([encoder.finish()]);
        await readback.mapAsync(GPUMapMode.READ);
        r.note(`result:${[...new Uint32Array(readback.getMappedRange())].join(',')}`);
        readback.unmap();
      });
    },
  },
];

/**
 * A process that keeps the shared device's dispatcher busy, so that another process's calls wait
 * in the dispatcher and run later, on its behalf: the path where errors must still reach the
 * scope that was current at the call.
 */
async function keepBusy(kernel: Kernel): Promise<() => Promise<void>> {
  const proc = await kernel.spawn({ name: 'busy', priority: 'batch' });
  const d = (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
  const module = d.createShaderModule({
    code: `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
      @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
        var x = g.x;
        for (var i = 0u; i < 2000u; i++) { x = x * 1664525u + 1013904223u; }
        a[g.x] = x;
      }`,
  });
  const pipeline = d.createComputePipeline({ layout: 'auto', compute: { module } });
  const storage = d.createBuffer({ size: 64 * 4 * 8, usage: GPUBufferUsage.STORAGE });
  const group = d.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage } }] });
  const submitOne = (): void => {
    const encoder = d.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(8);
    pass.end();
    d.queue.submit([encoder.finish()]);
  };
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      submitOne();
      submitOne();
      await d.queue.onSubmittedWorkDone();
    }
  })();
  return async () => {
    stop = true;
    await loop;
    const status = await proc.exit();
    assert.equal(status.reason, 'normal');
  };
}

describe('errors under gpunix match bare Dawn', () => {
  let kernel: Kernel;
  /** A second kernel whose device runs one fence at a time and is kept busy by another process. */
  let busyKernel: Kernel;
  let stopBusy: () => Promise<void>;
  /** A third kernel that encodes every command buffer afresh at execution. */
  let reencodeKernel: Kernel;
  before(async () => {
    kernel = await createKernel();
    busyKernel = await createKernel({ maxInFlight: 1 });
    stopBusy = await keepBusy(busyKernel);
    reencodeKernel = await createKernel({ reencodeCommandBuffers: true });
  });
  after(async () => {
    await stopBusy();
    await kernel.shutdown();
    await busyKernel.shutdown();
    await reencodeKernel.shutdown();
  });

  async function onBare(c: Case): Promise<Observation> {
    const device = await bareDevice();
    try {
      const r = new Recorder(device);
      await c.run(r);
      return await r.finish();
    } finally {
      device.destroy();
    }
  }

  async function onGpunix(k: Kernel, c: Case): Promise<Observation> {
    const proc = await k.spawn({ name: 'errors' });
    try {
      const device = (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
      const r = new Recorder(device);
      await c.run(r);
      return await r.finish();
    } finally {
      await proc.exit();
    }
  }

  for (const c of cases) {
    it(c.name, async () => {
      const bare = await onBare(c);
      assert.deepEqual(bare, c.expect, 'bare Dawn no longer behaves as it was probed to');
      assert.deepEqual(await onGpunix(kernel, c), bare, 'gpunix differs from bare Dawn');
      assert.deepEqual(await onGpunix(busyKernel, c), bare, 'gpunix differs from bare Dawn when its calls wait for a busy device');
      assert.deepEqual(await onGpunix(reencodeKernel, c), bare, 'gpunix differs from bare Dawn when it re-encodes command buffers');
    });
  }

  it('the error cases leave no object or byte behind once their processes exited', () => {
    for (const k of [kernel, reencodeKernel]) {
      const stats = k.stats();
      assert.equal(stats.liveObjects.total, 0);
      assert.equal(stats.bytesAllocated, 0);
    }
    const [busy] = busyKernel.ps().filter((p) => p.name === 'busy');
    const busyStats = busyKernel.stats();
    assert.equal(busyStats.liveObjects.total, busy.liveObjects, 'only the busy process holds objects');
    assert.equal(busyStats.bytesAllocated, busy.accounting.bytesAllocated);
  });
  it('an allocation beyond the memory budget is a GPUOutOfMemoryError to that process alone', async () => {
    const small = await createKernel({ memoryBudget: '1M' });
    try {
      const p = await small.spawn({ name: 'hungry' });
      const q = await small.spawn({ name: 'modest' });
      const dp = (await (await p.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
      const dq = (await (await q.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
      const rp = new Recorder(dp);
      const rq = new Recorder(dq);
      let refused!: GPUBuffer;
      // Held until after the count below: a buffer the program drops may be released at any collection.
      let modest!: GPUBuffer;
      await rq.scoped('modest', () => {
        modest = dq.createBuffer({ size: 512 * 1024, usage: GPUBufferUsage.STORAGE });
      });
      await rp.scoped('createBuffer', () => {
        refused = dp.createBuffer({ size: 2 * 1024 * 1024, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      });
      // The refused buffer is invalid, as an out-of-memory buffer is in WebGPU.
      await rp.scoped('writeBuffer', () => dp.queue.writeBuffer(refused, 0, new Uint32Array(4)));
      // No scope open: the listener gets it.
      dp.createBuffer({ size: 2 * 1024 * 1024, usage: GPUBufferUsage.STORAGE });
      assert.deepEqual(await rp.finish(), [
        'scope:createBuffer:GPUOutOfMemoryError',
        `scope:writeBuffer:${V}`,
        'uncaptured:GPUUncapturedErrorEvent:GPUOutOfMemoryError',
      ]);
      assert.deepEqual(await rq.finish(), []);
      assert.equal(small.stats().bytesAllocated, 512 * 1024);
      modest.destroy();
      await p.exit();
      await q.exit();
      assert.equal(small.stats().bytesAllocated, 0);
    } finally {
      await small.shutdown();
    }
  });

  it('methods outside the compute subset throw GPUNIX_E_UNSUPPORTED naming the method', async () => {
    const proc = await kernel.spawn({ name: 'unsupported' });
    const device = (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
    const expectUnsupported = (method: string, call: () => unknown): void => {
      assert.throws(call, (error: unknown) => {
        assert.ok(error instanceof GpunixError, `${method} threw ${classOf(error)}`);
        assert.equal(error.code, 'GPUNIX_E_UNSUPPORTED');
        assert.ok(error.message.includes(method), `message names ${method}: ${error.message}`);
        return true;
      });
    };
    expectUnsupported('createTexture', () =>
      device.createTexture({ size: [4, 4], format: 'rgba8unorm', usage: GPUTextureUsage.TEXTURE_BINDING }),
    );
    expectUnsupported('createRenderPipeline', () =>
      device.createRenderPipeline({ layout: 'auto', vertex: { module: device.createShaderModule({ code: GOOD_WGSL }) } }),
    );
    expectUnsupported('beginRenderPass', () => device.createCommandEncoder().beginRenderPass({ colorAttachments: [] }));
    await proc.exit();
  });

  it('descriptors that abort bare dawn.node (null, missing compute or resource) are a TypeError to the caller alone', async () => {
    // On bare Dawn each of these ends the whole Node process (napi fatal error), so there is no
    // baseline run: WebIDL says TypeError, and every other process must keep running.
    const proc = await kernel.spawn({ name: 'null-descriptors' });
    const device = (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
    const layout = device.createBindGroupLayout({ entries: [] });
    const asAny = (v: unknown) => v as never;
    const calls: [string, () => unknown][] = [
      ['createBuffer(null)', () => device.createBuffer(asAny(null))],
      ['createShaderModule(null)', () => device.createShaderModule(asAny(null))],
      ['createComputePipeline without compute', () => device.createComputePipeline(asAny({ layout: 'auto' }))],
      ['createComputePipeline with compute null', () => device.createComputePipeline(asAny({ layout: 'auto', compute: null }))],
      ['createBindGroupLayout with a null entry', () => device.createBindGroupLayout(asAny({ entries: [null] }))],
      ['createBindGroup without resource', () => device.createBindGroup(asAny({ layout, entries: [{ binding: 0 }] }))],
      ['createBindGroup with resource null', () => device.createBindGroup(asAny({ layout, entries: [{ binding: 0, resource: null }] }))],
      ['createQuerySet(null)', () => device.createQuerySet(asAny(null))],
    ];
    for (const [what, call] of calls) assert.throws(call, TypeError, what);
    await assert.rejects(device.createComputePipelineAsync(asAny({ layout: 'auto' })), TypeError);
    const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    assert.equal(buffer.size, 16, 'the device keeps working');
    await proc.exit();
  });
});
