// The objects src/vgpu/shapeKeepers.ts keeps must have the very shapes (V8 hidden classes) a
// program's objects have: a keeper of another shape keeps nothing alive, and the call path's
// optimized code would again be thrown away whenever the last process ends. A constructor that
// gains a field set in another order, or a value of another representation, breaks that silently;
// this compares them with V8's own %HaveSameMap.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { createKernel, Kernel } from '../src/index.js';
import { unwrap } from '../src/vgpu/object.js';
import { shapeKeepers } from '../src/vgpu/shapeKeepers.js';
import { keptRecordShapes } from '../src/vgpu/commandEncoder.js';
import { KEPT_STAMP, type DeviceStamp } from '../src/device/deviceTimer.js';
import { dispatchOnce } from './helpers.js';

setFlagsFromString('--allow-natives-syntax');
// Parsed after the flag is set: V8's runtime function, not JavaScript syntax.
const sameShape = new Function('a', 'b', 'return %HaveSameMap(a, b);') as (a: object, b: object) => boolean;

const COUNTER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: atomic<u32>;
@compute @workgroup_size(1) fn main() { atomicAdd(&counter, 1u); }`;

describe('the call path shape keepers', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel();
  });
  after(async () => {
    await kernel.shutdown();
  });

  it("have the shapes of a program's process, device, device table, encoder, pass, command buffer, module, pipeline, buffer, residency, bind group, pass records, limit checks, derived layout and Dawn's encode objects", async () => {
    const proc = await kernel.spawn({ name: 'shapes' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const module = device.createShaderModule({ code: COUNTER });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
    const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const derivedLayout = pipeline.getBindGroupLayout(0);
    const group = device.createBindGroup({ layout: derivedLayout, entries: [{ binding: 0, resource: { buffer: counter } }] });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(1);
    pass.end();
    const commandBuffer = encoder.finish();
    device.queue.submit([commandBuffer]);
    await device.queue.onSubmittedWorkDone();

    const keepers = shapeKeepers();
    assert.ok(keepers, 'the keepers are made at the first encoder');
    // The pass records are the program's objects' own (shared per pipeline and per group and index).
    const internals = (object: object, name: string): object => (object as unknown as Record<string, object>)[name];
    const pairs: Array<[string, object, object]> = [
      ['process', internals(device, 'proc'), keepers.proc],
      ['device', device, keepers.device],
      ['process host', internals(device, 'host'), internals(keepers.device, 'host')],
      ['device object table', internals(device, 'objects'), internals(keepers.device, 'objects')],
      ['command encoder', encoder, keepers.encoder],
      ['compute pass encoder', pass, keepers.pass],
      ['command buffer', commandBuffer, keepers.commandBuffer],
      ['shader module', module, keepers.module],
      ['compute pipeline', pipeline, keepers.pipeline],
      ['buffer', counter, keepers.buffer],
      ['buffer residency', internals(counter, 'residency'), keepers.residency],
      ['bind group', group, keepers.bindGroup],
      ['setPipeline record', internals(pipeline, 'passRecord'), keepers.records[0]],
      ['setBindGroup record', (group as unknown as { passRecord(index: number): object }).passRecord(0), keepers.records[1]],
      ['limit checks', internals(device, 'limitChecks'), keepers.limits],
      ['derived bind group layout', derivedLayout, keepers.derivedLayout],
      // Dawn's own objects of an encode, as the kernel's device makes them for the program.
      ['real command encoder', internals(encoder, 'real'), keepers.real!.encoder],
      ['real compute pass encoder', internals(pass, 'real'), keepers.real!.pass],
      ['real command buffer', unwrap(commandBuffer) as object, keepers.real!.commandBuffer],
    ];
    // An encoder of one pass alone: its record is a frozen list of one frozen entry, whose commands
    // are a frozen list too (commandEncoder.ts keeps one of each).
    const record = (commandBuffer as unknown as { commands: ReadonlyArray<{ commands: object }> }).commands;
    const keptRecords = keptRecordShapes();
    pairs.push(
      ['lone pass record', record, keptRecords.record],
      ['lone pass record entry', record[0], keptRecords.record[0]],
      ["pass's command list", record[0].commands, keptRecords.commands],
    );
    for (const [what, programs, kept] of pairs) assert.ok(sameShape(programs, kept), `the kept ${what} has the shape of the program's`);
    // The comparison can fail: objects of two classes never share a shape.
    assert.equal(sameShape(pipeline, keepers.bindGroup), false);
    await proc.exit();
  });

  it("keep a checked submit's device stamp and a looped pipeline's shapes", async (t) => {
    const physical = (kernel as unknown as { devices: Array<{ deviceTimer: object | null }> }).devices[0];
    if (physical.deviceTimer === null) return t.skip('the device has no timestamp-query: no stamps');
    const proc = await kernel.spawn({ name: 'shapes-looped' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    // A data-dependent loop: the watchdog checks it, so each submit is bracketed by device stamps.
    const module = device.createShaderModule({
      code: /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: atomic<u32>;
@compute @workgroup_size(1) fn main() { var n = atomicLoad(&counter) + 2u; while (n > 1u) { n = n / 2u; } atomicAdd(&counter, 1u); }`,
    });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
    const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: counter } }] });
    // The stamp the timer hands the dispatcher, caught on its way out.
    const timer = Object.getPrototypeOf(physical.deviceTimer) as { bracket(...args: unknown[]): DeviceStamp | null };
    const bracket = timer.bracket;
    const stamps: DeviceStamp[] = [];
    timer.bracket = function (this: unknown, ...args: unknown[]) {
      const stamp = bracket.apply(this, args);
      if (stamp) stamps.push(stamp);
      return stamp;
    };
    try {
      dispatchOnce(device, pipeline, group);
      await device.queue.onSubmittedWorkDone();
    } finally {
      timer.bracket = bracket;
    }
    assert.equal(stamps.length, 1, 'the checked submit was bracketed');
    assert.ok(sameShape(stamps[0], KEPT_STAMP), "the kept device stamp has the shape of a checked submit's");
    const keepers = shapeKeepers()!;
    assert.ok(sameShape(pipeline, keepers.pipeline), 'the kept pipeline has the shape of a looped one');
    assert.ok(sameShape(module, keepers.module), 'the kept module has the shape of a looped one');
    await proc.exit();
  });

  it("are made again when a process ends, with the shapes the next process's objects take", async () => {
    const first = await kernel.spawn({ name: 'shapes-before' });
    const firstDevice = await (await first.gpu.requestAdapter())!.requestDevice();
    firstDevice.createCommandEncoder();
    const before = shapeKeepers();
    assert.ok(before);
    await first.exit();
    const after = shapeKeepers();
    assert.ok(after);
    assert.notEqual(after.proc, before.proc, 'the keepers were made again at the end');
    assert.equal(after.real, before.real, "Dawn's objects are made once");

    const next = await kernel.spawn({ name: 'shapes-after' });
    const device = await (await next.gpu.requestAdapter())!.requestDevice();
    const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
    const encoder = device.createCommandEncoder();
    const internals = (object: object, name: string): object => (object as unknown as Record<string, object>)[name];
    assert.ok(sameShape(internals(device, 'proc'), after.proc), 'the process');
    assert.ok(sameShape(device, after.device), 'the device');
    assert.ok(sameShape(counter, after.buffer), 'the buffer');
    assert.ok(sameShape(internals(counter, 'residency'), after.residency), 'the residency');
    assert.ok(sameShape(encoder, after.encoder), 'the encoder');
    await next.exit();
  });
});
