// Command and compute-pass encoders of a process. Each call is recorded for the kernel and, in
// the same step, replayed into a real encoder so that Dawn checks it: finish() then reports
// exactly the validation errors bare WebGPU would, in the scope that was current at finish().
// Arguments are converted as WebIDL says (src/webidl.ts) and object arguments taken through the
// device's ownership check (src/vgpu/foreign.ts) before either: another device's object makes
// the real encoder invalid exactly as Dawn's own check would, so finish() fails.

import { refuseUnsupported } from '../errors.js';
import {
  computePassDescriptor,
  copyBufferToBufferArgs,
  dataBytes,
  labelDescriptor,
  setBindGroupArgs,
  size32,
  size64,
  usvString,
  workgroupCounts,
} from '../webidl.js';
import { PassCommand, PassOp, RecordedCommand, EncoderOp, VirtualCommandBuffer, realPassDescriptor } from './commandBuffer.js';
import { VirtualBuffer } from './buffer.js';
import type { VirtualDevice } from './device.js';
import type { DeviceObjects } from './foreign.js';
import { BufferUsage } from './webgpuGlobals.js';
import { unwrap } from './object.js';

export class VirtualComputePassEncoder {
  #label: string;
  constructor(
    private readonly encoder: VirtualCommandEncoder,
    private readonly real: GPUComputePassEncoder,
    private readonly record: PassCommand[],
    label: string | undefined,
  ) {
    this.#label = label ?? '';
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  /** Replays converted arguments into the real pass and records them (they are fresh: no copy needed). */
  private forward(op: PassOp, args: unknown[]): void {
    this.encoder.forwardTo(this.real, op, args);
    this.record.push({ op, args });
    if (op === 'dispatchWorkgroups') this.encoder.dispatches++;
    if (op === 'dispatchWorkgroupsIndirect') this.encoder.indirectDispatches++;
  }

  setPipeline(pipeline: GPUComputePipeline): void {
    this.forward('setPipeline', [this.encoder.objects.object('GPUComputePipeline', pipeline, 'setPipeline', 'pipeline')]);
  }
  setBindGroup(...args: unknown[]): void {
    this.forward('setBindGroup', setBindGroupArgs(args, this.encoder.objects));
  }
  dispatchWorkgroups(x: number, y?: number, z?: number): void {
    this.forward('dispatchWorkgroups', workgroupCounts(x, y, z));
  }
  dispatchWorkgroupsIndirect(buffer: GPUBuffer, offset: number): void {
    const m = 'dispatchWorkgroupsIndirect';
    this.forward(m, [this.encoder.objects.object('GPUBuffer', buffer, m, 'indirectBuffer'), size64(offset, m, 'indirectOffset')]);
  }
  setImmediates(rangeOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    const m = 'setImmediates';
    const offset = size32(rangeOffset, m, 'rangeOffset');
    // The bytes the program means, copied now: later edits of its array must not leak in.
    this.forward(m, [offset, dataBytes(m, data, dataOffset, size, false).slice()]);
  }
  pushDebugGroup(groupLabel: string): void {
    this.forward('pushDebugGroup', [usvString(groupLabel, 'pushDebugGroup', 'groupLabel')]);
  }
  popDebugGroup(): void {
    this.forward('popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.forward('insertDebugMarker', [usvString(markerLabel, 'insertDebugMarker', 'markerLabel')]);
  }
  end(): void {
    this.encoder.forwardTo(this.real, 'end', []);
  }
}

export class VirtualCommandEncoder {
  #label: string;
  dispatches = 0;
  indirectDispatches = 0;
  /** The device's object arguments check (ownership). */
  readonly objects: DeviceObjects;
  private readonly record: RecordedCommand[] = [];
  private finished = false;

  constructor(
    private readonly device: VirtualDevice,
    private readonly real: GPUCommandEncoder,
    descriptor: { label: string } | undefined,
  ) {
    this.#label = descriptor?.label ?? '';
    this.objects = device.objects;
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  /**
   * Replays one call into a real encoder. Before finish() Dawn keeps encoding errors inside the
   * encoder (reported at finish); after it, Dawn reports them on the device, so they are captured.
   */
  forwardTo(target: object, op: string, args: unknown[]): void {
    const call = (): void => (target as Record<string, (...a: unknown[]) => void>)[op](...args.map(unwrap));
    if (this.finished) this.device.call(call);
    else call();
  }

  private forward(op: EncoderOp, args: unknown[]): void {
    this.forwardTo(this.real, op, args);
    this.record.push({ op, args });
  }

  beginComputePass(descriptor?: GPUComputePassDescriptor): VirtualComputePassEncoder {
    const converted = computePassDescriptor(descriptor, this.objects);
    const begin = (): GPUComputePassEncoder => this.real.beginComputePass(realPassDescriptor(converted));
    const realPass = this.finished ? this.device.call(begin) : begin();
    const commands: PassCommand[] = [];
    this.record.push({ op: 'computePass', descriptor: converted, commands });
    return new VirtualComputePassEncoder(this, realPass, commands, converted?.label);
  }

  copyBufferToBuffer(...args: unknown[]): void {
    const converted = copyBufferToBufferArgs(args, this.objects);
    const source = converted[0];
    if (source instanceof VirtualBuffer && !(source.usage & BufferUsage.COPY_SRC)) {
      // The real buffer may have COPY_SRC (the kernel's own), the program's has not: Dawn must
      // see a source it refuses. The record keeps the program's arguments.
      this.forwardTo(this.real, 'copyBufferToBuffer', [this.device.physical.invalidCopySource, ...converted.slice(1)]);
      this.record.push({ op: 'copyBufferToBuffer', args: converted });
      return;
    }
    this.forward('copyBufferToBuffer', converted);
  }
  clearBuffer(buffer: GPUBuffer, offset?: number, size?: number): void {
    const m = 'clearBuffer';
    const args = [this.objects.object('GPUBuffer', buffer, m, 'buffer'), offset === undefined ? 0 : size64(offset, m, 'offset')];
    if (size !== undefined) args.push(size64(size, m, 'size'));
    this.forward(m, args);
  }
  resolveQuerySet(querySet: GPUQuerySet, firstQuery: number, queryCount: number, destination: GPUBuffer, destinationOffset: number): void {
    const m = 'resolveQuerySet';
    this.forward(m, [
      this.objects.object('GPUQuerySet', querySet, m, 'querySet'),
      size32(firstQuery, m, 'firstQuery'),
      size32(queryCount, m, 'queryCount'),
      this.objects.object('GPUBuffer', destination, m, 'destination'),
      size64(destinationOffset, m, 'destinationOffset'),
    ]);
  }
  pushDebugGroup(groupLabel: string): void {
    this.forward('pushDebugGroup', [usvString(groupLabel, 'pushDebugGroup', 'groupLabel')]);
  }
  popDebugGroup(): void {
    this.forward('popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.forward('insertDebugMarker', [usvString(markerLabel, 'insertDebugMarker', 'markerLabel')]);
  }
  writeTimestamp(querySet: GPUQuerySet, index: number): void {
    // Removed from WebGPU; Dawn throws its own error, which the program should see unchanged.
    const m = 'writeTimestamp';
    const real = unwrap(this.objects.object('GPUQuerySet', querySet, m, 'querySet'));
    (this.real as unknown as { writeTimestamp(q: unknown, i: number): void }).writeTimestamp(real, size32(index, m, 'queryIndex'));
  }

  finish(descriptor?: GPUCommandBufferDescriptor): VirtualCommandBuffer {
    const converted = labelDescriptor(descriptor, 'finish');
    this.finished = true;
    const { value, valid, clean } = this.device.callChecked(() => this.real.finish(converted));
    return new VirtualCommandBuffer(
      value,
      this.record,
      converted?.label || this.label,
      valid,
      clean,
      this.dispatches,
      this.indirectDispatches,
      this.device.proc.backingEpoch,
      this.device,
      this.label,
      Boolean(converted?.label),
    );
  }
}

refuseUnsupported(VirtualCommandEncoder, 'GPUCommandEncoder');
