// Objects that keep the call path's object shapes alive between processes.
//
// V8 holds a class's object shape (hidden class) only while an instance of it lives: an instance
// gets its shape by adding its fields one by one, and V8 keeps those steps weakly. A full
// collection that finds no instance frees the shape and throws away every optimized function that
// checks it ("weak objects" in `--trace-deopt`). A process's device, pipelines, bind groups,
// buffers and encoders all die with it, so a process that starts after the last one ended (a
// daemon between jobs; each sample of bench/overhead) ran the call path in the interpreter again
// while TurboFan's background threads recompiled it, on a CPU device taking cores the device
// needs (docs/benchmarks.md, "The call path, issue 17 eighth pass").
//
// So one object of each kind the call path checks is made here, at the first real encoder, by the
// class's own constructor with harmless arguments, and kept for the life of the Node process: it
// takes the very shape a program's object takes. The keepers' process and device are their own
// and registered nowhere (no kernel table, tenant, dispatcher or ledger knows them), hold no
// memory, and are never handed to a program. test/shapeKeepers.test.ts checks the shapes are the
// same. (A finished Submission is kept apart, in submission.ts: its shape comes from a real submit.)
//
// They are made again whenever a process ends (refreshCallPathShapes): a field that took a value of
// another representation in that process (an integer that became a fraction) moved every object
// of the class to a new shape and left the keepers on the old one, which keeps nothing. Made
// anew, they follow the shapes V8 has now. Dawn's own command encoder, pass encoder and command
// buffer objects (one per encode, each dead by the next) are kept too, made once on a real
// device: V8 drops their shapes just the same.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { offDeviceItem, type WorkItem } from '../kernel/dispatch.js';
import type { LiveCounts, ResourceLedger } from '../kernel/ledger.js';
import { Proc } from '../kernel/proc.js';
import { BufferResidency, type SwapCounters } from '../kernel/residency.js';
import type { TenantAccount } from '../kernel/tenant.js';
import { PRIORITY_CLASSES } from '../params.js';
import type { Budget } from '../wgsl/index.js';
import { VirtualBindGroup } from './bindGroup.js';
import { MapRequest, VirtualBuffer } from './buffer.js';
import { VirtualCommandBuffer, type PassCommand, type RecordedCommand } from './commandBuffer.js';
import { VirtualCommandEncoder, VirtualComputePassEncoder } from './commandEncoder.js';
import { VirtualComputePipeline } from './computePipeline.js';
import { VirtualDevice } from './device.js';
import type { HeldTarget } from './errorScopes.js';
import type { ProcessHost } from './host.js';
import { VirtualBindGroupLayout } from './layouts.js';
import { ProcessLimits } from './limits.js';
import { BufferWrite } from './queue.js';
import { VirtualShaderModule } from './shaderModule.js';

/** The kept objects by what they stand for (null until the first real encoder). */
export interface ShapeKeepers {
  proc: Proc;
  device: VirtualDevice;
  encoder: VirtualCommandEncoder;
  pass: VirtualComputePassEncoder;
  commandBuffer: VirtualCommandBuffer;
  module: VirtualShaderModule;
  pipeline: VirtualComputePipeline;
  residency: BufferResidency;
  buffer: VirtualBuffer;
  bindGroup: VirtualBindGroup;
  /** The records a pass keeps of setPipeline and setBindGroup (shared per pipeline and group). */
  records: readonly PassCommand[];
  limits: ProcessLimits;
  derivedLayout: VirtualBindGroupLayout;
  /** A mapAsync call's and a whole writeBuffer's work items (one per call, each gone by the next collection). */
  mapRequest: MapRequest;
  bufferWrite: BufferWrite;
  /**
   * The work items other calls make as object literals, one per shape: the off-device items
   * (onSubmittedWorkDone, destroy...: offDeviceItem makes them all) and a large writeBuffer's.
   */
  items: readonly WorkItem[];
  /** Dawn's objects of one encode, finished (made once; null where no real device was at hand). */
  real: { encoder: GPUCommandEncoder; pass: GPUComputePassEncoder; commandBuffer: GPUCommandBuffer } | null;
}

let keepers: ShapeKeepers | null = null;
/** True while the keepers are being made (the keeper device's encoder must not start it again). */
let making = false;

/** The kept objects, for the test that compares their shapes with a program's. */
export function shapeKeepers(): ShapeKeepers | null {
  return keepers;
}

/**
 * Makes the keepers once: VirtualCommandEncoder's constructor calls it (the keepers' own encoder
 * included, hence `making`) with the device the program encodes for.
 */
export function keepCallPathShapes(physical: PhysicalDevice): void {
  if (keepers !== null || making) return;
  make(madeOnce(physical));
}

/** Makes the keepers again from the shapes V8 has now (see the top of this file): when a process ends. */
export function refreshCallPathShapes(): void {
  if (keepers === null || making) return;
  make(keepers.real);
}

function make(real: ShapeKeepers['real']): void {
  making = true;
  try {
    keepers = makeKeepers(real);
  } finally {
    making = false;
  }
}

/** Dawn's objects of one finished encode on `physical`'s device (null if Dawn refused one). */
function madeOnce(physical: PhysicalDevice): ShapeKeepers['real'] {
  const made = physical.capture(() => {
    const encoder = physical.device.createCommandEncoder({ label: 'gpunix shape keeper' });
    const pass = encoder.beginComputePass();
    pass.end();
    return { encoder, pass, commandBuffer: encoder.finish() };
  });
  return made.clean ? made.value : null;
}

function makeKeepers(real: ShapeKeepers['real']): ShapeKeepers {
  // A tenant account, live counts, host, physical device, ledger and swap counters that nothing
  // here calls, but for the host's dispatcherFor (a device keeps its dispatcher).
  const account = { processes: 0, members: new Set() } as unknown as TenantAccount;
  const proc = new Proc(0, '', account, PRIORITY_CLASSES[0], 1, null, {} as LiveCounts);
  // The same fields in the same order as the kernel's hostFor (src/kernel/kernel.ts), which gives
  // a process's host its shape: a submit reads it (reencodeCommandBuffers, atomize), and the one
  // process host of a daemon between jobs, or of bench/overhead between samples, dies with it.
  const nothing = (): undefined => {};
  const host = {
    proc,
    reencodeCommandBuffers: false,
    memory: {},
    segments: {},
    atomize: true,
    atomSize: null,
    maxDispatchMs: () => 0,
    shaderLimits: {},
    chooseDevice: () => null,
    dispatcherFor: () => null,
    adopt: nothing,
  } as unknown as ProcessHost;
  const physical = {} as PhysicalDevice;
  const device = new VirtualDevice(host, physical, new Set(), {}, {} as GPUAdapterInfo, undefined);
  const module = new VirtualShaderModule(
    { real: {} as GPUShaderModule, deviceCode: '', watchdog: { mode: 'none', loops: 0, checkedLoops: 0, budget: 0 } },
    { code: '' },
    () => ({}) as Budget,
  );
  const pipeline = new VirtualComputePipeline(device, null, { layout: 'auto', compute: { module: module as unknown as GPUShaderModule } });
  const residency = new BufferResidency(physical, null, 0, 0, '', proc, {} as ResourceLedger, {} as SwapCounters);
  const buffer = new VirtualBuffer(device, residency, { size: 0, usage: 0 });
  const bindGroup = new VirtualBindGroup(
    physical,
    {} as GPUBindGroup,
    { layout: {} as GPUBindGroupLayout, entries: [{ binding: 0, resource: { buffer: buffer as unknown as GPUBuffer } }] },
    device,
  );
  const records = Object.freeze([pipeline.passRecord, bindGroup.passRecord(0)]);
  // A process device's limit checks, with the two limits its dispatches read (integers, as Dawn's are).
  const someLimits = { maxComputeWorkgroupsPerDimension: 65535, minUniformBufferOffsetAlignment: 256, minStorageBufferOffsetAlignment: 256 };
  const limits = new ProcessLimits(someLimits, someLimits, someLimits);
  const derivedLayout = new VirtualBindGroupLayout({} as GPUBindGroupLayout, undefined, { pipeline, index: 0 });
  const mapRequest = new MapRequest(proc, buffer, device, {} as HeldTarget, 1, 0, undefined, () => {}, () => {});
  const bufferWrite = new BufferWrite(proc, device, {} as HeldTarget, buffer as unknown as GPUBuffer, 0, new Uint8Array(4));
  const write = () => ({ buffer, offset: 0, bytes: new Uint8Array(0) });
  const items: readonly WorkItem[] = Object.freeze([
    offDeviceItem(proc, nothing, nothing),
    // The same fields in the same order as queue.ts's large writeBuffer, which gives it its shape.
    { owner: proc, usesDevice: true, enqueuedAtNs: NaN, nextPiece: () => null, cancel: nothing, write },
  ]);
  const encoder = new VirtualCommandEncoder(device, {} as GPUCommandEncoder, undefined);
  const pass = new VirtualComputePassEncoder(encoder, {} as GPUComputePassEncoder, { commands: [] }, undefined);
  const commands: readonly RecordedCommand[] = Object.freeze([]);
  const commandBuffer = new VirtualCommandBuffer({} as GPUCommandBuffer, commands, '', Promise.resolve(true), true, 0, 0, 0, device, '', false);
  return Object.freeze({ proc, device, encoder, pass, commandBuffer, module, pipeline, residency, buffer, bindGroup, records, limits, derivedLayout, mapRequest, bufferWrite, items, real });
}
