// The process path over the wire: the client library (connect, the remote WebGPU facade) against
// ProcessSession, through a minimal in-test server (a kernel behind a Unix socket; the real daemon
// is tested in daemonE2e.test.ts). Every corpus program gives bare Dawn's bytes; WebGPU errors
// reach the same channels with the same types; a protocol violation ends only its own session;
// a client that vanishes mid-work leaves nothing held.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, it } from 'node:test';
import { globals } from 'webgpu';
import { connect, createKernel, ErrorCodes, GpunixError, Kernel, ProcessHandle, RemoteProcess } from '../src/index.js';
import { runProgramRemote } from '../src/cli/programRunner.js';
import { Session } from '../src/client/session.js';
import { ProcessSession } from '../src/daemon/processSession.js';
import { ProtocolError } from '../src/protocol/codec.js';
import { joinId, Message, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { Wire } from '../src/protocol/wire.js';
import { corpus } from './corpus/index.js';
import { assertSameBytes, bareDevice, bareGpu, bareResult, eventually } from './helpers.js';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;



/** A minimal server: one kernel process and one ProcessSession per connection. */
class Harness {
  readonly server: Server;
  readonly handles: ProcessHandle[] = [];
  private nextSession = 1;

  constructor(readonly kernel: Kernel) {
    this.server = createServer((socket) => this.accept(socket));
  }

  private accept(socket: import('node:net').Socket): void {
    let handle: ProcessHandle | null = null;
    let session: ProcessSession | null = null;
    let saidGoodbye = false;
    let ended = false;
    const waiting: Message[] = [];
    const end = (): void => {
      if (ended) return;
      ended = true;
      session?.close();
      wire.close();
      if (handle && handle.state !== 'exited') void this.kernel.kill(handle.pid).catch(() => {});
    };
    const route = (message: Message): void => {
      try {
        if (message.name === 'Goodbye') saidGoodbye = true;
        session!.handle(message);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        wire.send('ProtocolError', { code: error.code, message: error.message });
        end();
      }
    };
    const wire: Wire = new Wire(socket, {
      message: (message) => {
        if (ended) return;
        if (session) return route(message);
        if (message.name !== 'Hello' || handle) {
          waiting.push(message);
          return;
        }
        const hello = message.payload;
        const options = (hello.options ?? {}) as { memoryLimit?: number | string };
        void this.kernel.spawn({ name: hello.name || undefined, weight: hello.weight || undefined, memoryLimit: options.memoryLimit }).then((spawned) => {
          handle = spawned;
          this.handles.push(spawned);
          if (ended) return void this.kernel.kill(spawned.pid).catch(() => {});
          session = new ProcessSession({ handle: spawned, wire });
          wire.send('Welcome', { version: PROTOCOL_VERSION, session: this.nextSession++, pid: spawned.pid, tenant: 'default', admin: false });
          void spawned.wait().then((status) => {
            if (ended || saidGoodbye) return;
            wire.send('ProcessEnded', { code: status.code, reason: status.reason, message: status.message ?? '' });
            end();
          });
          for (const queued of waiting.splice(0)) if (!ended) route(queued);
        });
      },
      protocolError: (error) => {
        wire.send('ProtocolError', { code: error.code, message: error.message });
        end();
      },
      closed: () => end(),
    });
  }
}

describe('WebGPU over the wire (client library and ProcessSession)', () => {
  let kernel: Kernel;
  let harness: Harness;
  let dir: string;
  let socket: string;

  const nothingHeld = () => {
    const stats = kernel.stats();
    return stats.liveObjects.total === 0 && stats.bytesAllocated === 0;
  };

  before(async () => {
    kernel = await createKernel();
    harness = new Harness(kernel);
    dir = mkdtempSync(join(tmpdir(), 'gpunix-remote-'));
    socket = join(dir, 'gpunixd.sock');
    await new Promise<void>((resolve) => harness.server.listen(socket, resolve));
  });

  after(async () => {
    await new Promise((resolve) => harness.server.close(resolve));
    await kernel.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const program of corpus) {
    it(`runs ${program.name} byte-identically to bare Dawn`, async () => {
      const expected = await bareResult(program);
      const proc = await connect({ socket, name: program.name });
      assert.ok(proc.pid > 0);
      assert.equal(proc.tenant, 'default');
      const actual = await program.run(proc.gpu);
      assertSameBytes(actual, expected, program.name);
      assert.deepEqual(await proc.exit(), { code: 0, reason: 'normal' });
      assert.deepEqual(await proc.ended, { code: 0, reason: 'normal' });
      await eventually('the process released everything', nothingHeld);
    });
  }

  it('runs every corpus program at once from separate clients', async () => {
    const expected = await Promise.all(corpus.map((program) => bareResult(program)));
    const procs = await Promise.all(corpus.map((program) => connect({ socket, name: `${program.name}-concurrent` })));
    const results = await Promise.all(corpus.map((program, i) => program.run(procs[i].gpu)));
    results.forEach((result, i) => assertSameBytes(result, expected[i], corpus[i].name));
    await Promise.all(procs.map((p) => p.exit()));
    await eventually('everything is released', nothingHeld);
  });

  it('delivers WebGPU errors through the same channels, with the same types, as bare Dawn', async () => {
    const proc = await connect({ socket, name: 'errors' });
    const remote = await (await proc.gpu.requestAdapter())!.requestDevice();
    const local = await bareDevice();
    for (const device of [local, remote]) {
      const which = device === local ? 'bare' : 'remote';
      // An invalid usage combination: a validation error in the scope.
      device.pushErrorScope('validation');
      device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
      const error = await device.popErrorScope();
      assert.ok(error instanceof ((globals as Record<string, unknown>).GPUValidationError as typeof Error), `${which}: ${error?.constructor.name}`);
      // An out-of-memory scope does not take a validation error; the validation scope outside does.
      device.pushErrorScope('validation');
      device.pushErrorScope('out-of-memory');
      device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
      assert.equal(await device.popErrorScope(), null, which);
      assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', which);
      await assert.rejects(device.popErrorScope(), (e: Error) => e.name === 'OperationError', `${which}: popping with no scope`);
      // Synchronous exceptions at the call.
      assert.throws(() => device.createBuffer({ size: 6, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true }), RangeError, which);
      assert.throws(() => device.createBuffer({ size: -1, usage: GPUBufferUsage.STORAGE }), TypeError, which);
      assert.throws(() => device.pushErrorScope('bogus' as GPUErrorFilter), TypeError, which);
      const buffer = device.createBuffer({ size: 64, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
      assert.equal(buffer.mapState, 'mapped', which);
      assert.equal(buffer.getMappedRange(8, 8).byteLength, 8, which);
      assert.throws(() => buffer.getMappedRange(8, 8), (e: Error) => e.name === 'OperationError', `${which}: overlapping range`);
      assert.throws(() => buffer.getMappedRange(4), (e: Error) => e.name === 'OperationError', `${which}: misaligned offset`);
      buffer.unmap();
      assert.equal(buffer.mapState, 'unmapped', which);
      assert.throws(() => buffer.getMappedRange(), (e: Error) => e.name === 'OperationError', `${which}: not mapped`);
      assert.throws(() => device.queue.writeBuffer(buffer, 0, new Uint8Array(3)), (e: Error) => e.name === 'OperationError', which);
      // A rejected map: mapAsync on a buffer without MAP_READ.
      const plain = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
      device.pushErrorScope('validation');
      await assert.rejects(plain.mapAsync(GPUMapMode.READ), (e: Error) => e.name === 'OperationError', which);
      assert.equal(plain.mapState, 'unmapped', which);
      assert.ok(await device.popErrorScope(), `${which}: mapAsync's validation error`);
      // A map aborted by unmap().
      const staging = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const map = staging.mapAsync(GPUMapMode.READ);
      assert.equal(staging.mapState, 'pending', which);
      staging.unmap();
      await assert.rejects(map, (e: Error) => e.name === 'AbortError', which);
      // An encoder used while its pass is open fails at finish(); a finished encoder's buffer is invalid to submit.
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      encoder.clearBuffer(staging);
      pass.end();
      device.pushErrorScope('validation');
      const commands = encoder.finish();
      assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', `${which}: encoder locked by its pass`);
      device.pushErrorScope('validation');
      device.queue.submit([commands]);
      assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', `${which}: submitting an invalid command buffer`);
      // A pipeline that fails asynchronously.
      device.pushErrorScope('validation');
      const bad = device.createShaderModule({ code: 'not wgsl' });
      const info = await bad.getCompilationInfo();
      assert.ok(info.messages.some((m) => m.type === 'error'), `${which}: compilation messages`);
      await assert.rejects(device.createComputePipelineAsync({ layout: 'auto', compute: { module: bad } }), (e: Error) => e.name === 'GPUPipelineError', which);
      await device.popErrorScope();
      // With no scope: the uncapturederror event, through a listener and onuncapturederror.
      const seen: string[] = [];
      const listener = (event: Event) => seen.push(`listener:${(event as GPUUncapturedErrorEvent).error.constructor.name}`);
      device.addEventListener('uncapturederror', listener);
      device.onuncapturederror = (event) => seen.push(`handler:${event.error.constructor.name}`);
      device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
      await device.queue.onSubmittedWorkDone();
      await eventually(`${which}: the uncaptured error arrives`, () => seen.length >= 2, 5000);
      assert.deepEqual(seen.sort(), ['handler:GPUValidationError', 'listener:GPUValidationError'], which);
      device.removeEventListener('uncapturederror', listener);
      device.onuncapturederror = null;
      device.destroy();
      const lost = await device.lost;
      assert.equal(lost.reason, 'destroyed', which);
    }
    await proc.exit();
    await eventually('everything is released', nothingHeld);
  });

  it('gives the remote program what requestAdapter/requestDevice and the uncapturederror event give on bare Dawn', async () => {
    const proc = await connect({ socket, name: 'capabilities' });
    const g = globals as Record<string, new () => unknown>;
    for (const gpu of [proc.gpu, bareGpu()]) {
      const which = gpu === proc.gpu ? 'remote' : 'bare';
      assert.equal(await gpu.requestAdapter({ featureLevel: 'garbage' } as GPURequestAdapterOptions), null, which);
      const adapter = (await gpu.requestAdapter())!;
      const device = await adapter.requestDevice();
      assert.ok(adapter.limits instanceof g.GPUSupportedLimits && device.limits instanceof g.GPUSupportedLimits, `${which}: limits`);
      assert.ok(adapter.features instanceof g.GPUSupportedFeatures && device.features instanceof g.GPUSupportedFeatures, `${which}: features`);
      assert.ok(adapter.info instanceof g.GPUAdapterInfo && device.adapterInfo instanceof g.GPUAdapterInfo, `${which}: info`);
      assert.ok(adapter.info === adapter.info && device.adapterInfo !== adapter.info && device.adapterInfo.vendor === adapter.info.vendor, `${which}: info identity`);
      assert.equal(typeof device.limits.maxStorageBuffersInFragmentStage, 'number', which);
      assert.throws(() => device.createQuerySet({ type: 'timestamp', count: 2 }), TypeError, which);
      // The handler runs where it was first set among the listeners; set again after null, last.
      const order: string[] = [];
      device.addEventListener('uncapturederror', () => order.push('a'));
      device.onuncapturederror = () => order.push('c');
      device.addEventListener('uncapturederror', () => order.push('b'));
      device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
      await eventually(`${which}: the first error arrives`, () => order.length >= 3, 5000);
      device.onuncapturederror = null;
      device.onuncapturederror = () => order.push('e');
      device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
      await eventually(`${which}: the second error arrives`, () => order.length >= 6, 5000);
      assert.deepEqual(order, ['a', 'c', 'b', 'a', 'b', 'e'], which);
      device.destroy();
      assert.ok((await device.lost) instanceof g.GPUDeviceLostInfo, `${which}: lost info`);
    }
    await proc.exit();
    await eventually('everything is released', nothingHeld);
  });

  it('sends a large writeBuffer in pieces and it arrives whole', async () => {
    const proc = await connect({ socket, name: 'big-write' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice({ requiredLimits: { maxBufferSize: 64 * 1024 * 1024 } });
    const size = 8 * 1024 * 1024 + 4096 + 16;
    const data = new Uint8Array(size).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
    const target = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    device.queue.writeBuffer(target, 0, data);
    const staging = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(target, 0, staging, 0, size);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    assertSameBytes(new Uint8Array(staging.getMappedRange()), data, 'the large write');
    staging.unmap();
    await proc.exit();
  });

  it('releases the objects the program dropped, and reuses their slots with new generations', async () => {
    const proc = await connect({ socket, name: 'garbage' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const keep = device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    const record = () => kernel.ps().find((p) => p.pid === proc.pid)!;
    (() => {
      for (let i = 0; i < 200; i++) device.createShaderModule({ code: `@compute @workgroup_size(1) fn main${i}() {}` });
    })();
    await device.queue.onSubmittedWorkDone();
    const before = record().liveObjects;
    assert.ok(before >= 200, `${before} live objects`);
    for (let round = 0; round < 5 && record().liveObjects >= before; round++) {
      collectGarbage();
      await new Promise((r) => setTimeout(r, 50));
      await device.queue.onSubmittedWorkDone();
      collectGarbage();
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(record().liveObjects < before, `the daemon let go of the dropped modules (${record().liveObjects} of ${before} live)`);
    // Slots come back (with another generation) and the session still works.
    for (let i = 0; i < 50; i++) device.createShaderModule({ code: `@compute @workgroup_size(1) fn again${i}() {}` });
    device.queue.writeBuffer(keep, 0, new Uint32Array([1, 2, 3, 4]));
    await keep.mapAsync(GPUMapMode.READ);
    assert.deepEqual([...new Uint32Array(keep.getMappedRange())], [1, 2, 3, 4]);
    keep.unmap();
    await proc.exit();
  });

  it('ends a session that names an object it does not hold with BAD_OBJECT, and only that session', async () => {
    const good = await connect({ socket, name: 'good' });
    const raw = await Session.open({ socket }, { role: 'process', name: 'bad' });
    raw.post('CreateBuffer', { device: joinId(77, 3), id: joinId(1, 0), descriptor: { size: 4, usage: 4 } });
    const why = await raw.closed;
    assert.ok(why instanceof GpunixError, String(why));
    assert.equal(why.code, ErrorCodes.BAD_OBJECT);
    // A malformed command list is a protocol error too.
    const raw2 = await Session.open({ socket }, { role: 'process', name: 'bad2' });
    const adapter = joinId(1, 0);
    assert.notEqual(await raw2.call('RequestAdapter', { adapter, options: {} }), null);
    await raw2.call('RequestDevice', { adapter, device: joinId(2, 0), queue: joinId(3, 0), descriptor: {} });
    raw2.post('FinishCommandEncoder', { device: joinId(2, 0), id: joinId(4, 0), descriptor: {}, commands: [['nonsense']], finishDescriptor: {} });
    assert.equal(((await raw2.closed) as GpunixError).code, ErrorCodes.PROTOCOL_MALFORMED);
    // The other session was untouched.
    assertSameBytes(await corpus[0].run(good.gpu), await bareResult(corpus[0]), 'the other session');
    assert.equal((await good.exit()).reason, 'normal');
    await eventually('everything is released', nothingHeld);
  });

  it('kills the process of a client that disconnects mid-work and releases everything', async () => {
    const proc: RemoteProcess = await connect({ socket, name: 'vanishing' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const module = device.createShaderModule({
      code: /* wgsl */ `
        @group(0) @binding(0) var<storage, read_write> data: array<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
          var x = data[gid.x];
          for (var k = 0u; k < 2000u; k++) { x = x * 1664525u + 1013904223u; }
          data[gid.x] = x;
        }`,
    });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
    const data = device.createBuffer({ size: 64 * 64 * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: data } }] });
    for (let i = 0; i < 8; i++) {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(64);
      pass.end();
      device.queue.submit([encoder.finish()]);
    }
    const pending = device.queue.onSubmittedWorkDone();
    await eventually('the process holds memory', () => (kernel.ps().find((p) => p.pid === proc.pid)?.accounting.bytesAllocated ?? 0) > 0, 5000);
    proc.close();
    await assert.rejects(pending, (e: GpunixError) => e.code === ErrorCodes.DISCONNECTED);
    assert.equal(await proc.ended, null);
    assert.equal((await device.lost).reason, 'unknown');
    await eventually('the process is killed', () => kernel.ps().find((p) => p.pid === proc.pid)?.state === 'exited');
    assert.equal(kernel.ps().find((p) => p.pid === proc.pid)?.exit?.reason, 'killed');
    await eventually('everything is released', nothingHeld);
  });

  it('runs a program file with navigator.gpu bound to the remote process (gpunix run --connect)', async () => {
    const file = join(dir, 'remote-program.mjs');
    writeFileSync(
      file,
      `const adapter = await navigator.gpu.requestAdapter();
const device = await adapter.requestDevice();
const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(buffer, 0, new Uint32Array([Number(process.argv[2]), 2, 3, 4]));
await buffer.mapAsync(GPUMapMode.READ);
globalThis.remoteProgramResult = {
  words: [...new Uint32Array(buffer.getMappedRange())],
  classes: device instanceof GPUDevice && buffer instanceof GPUBuffer && navigator.gpu instanceof GPU,
};
`,
    );
    const proc = await connect({ socket, name: 'file' });
    const argv = process.argv;
    try {
      await runProgramRemote(proc, file, ['41']);
    } finally {
      process.argv = argv;
    }
    const result = (globalThis as { remoteProgramResult?: { words: number[]; classes: boolean } }).remoteProgramResult;
    assert.deepEqual(result, { words: [41, 2, 3, 4], classes: true });
    assert.equal((await proc.exit()).reason, 'normal');
    await eventually('everything is released', nothingHeld);
  });
});
