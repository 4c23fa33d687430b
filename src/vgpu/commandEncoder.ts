// Command and compute-pass encoders of a process. Each call is recorded for the kernel and, in
// the same step, replayed into a real encoder so that Dawn checks it: finish() then reports
// exactly the validation errors bare WebGPU would, in the scope that was current at finish().

import { refuseUnsupported } from '../errors.js';
import { PassCommand, PassOp, RecordedCommand, EncoderOp, VirtualCommandBuffer, realPassDescriptor } from './commandBuffer.js';
import { VirtualBuffer } from './buffer.js';
import type { VirtualDevice } from './device.js';
import { BufferUsage } from './webgpuGlobals.js';
import { unwrap } from './object.js';

/** Copies typed-array arguments (dynamic offsets, immediates) so later edits by the program don't leak in. */
function snapshot(args: unknown[]): unknown[] {
  return args.map((arg) => (ArrayBuffer.isView(arg) ? (arg as Uint8Array).slice() : arg));
}

export class VirtualComputePassEncoder {
  label: string;
  constructor(
    private readonly encoder: VirtualCommandEncoder,
    private readonly real: GPUComputePassEncoder,
    private readonly record: PassCommand[],
    label: string | undefined,
  ) {
    this.label = label ?? '';
  }

  private forward(op: PassOp, args: unknown[]): void {
    this.encoder.forwardTo(this.real, op, args);
    this.record.push({ op, args: snapshot(args) });
    if (op === 'dispatchWorkgroups') this.encoder.dispatches++;
    if (op === 'dispatchWorkgroupsIndirect') this.encoder.indirectDispatches++;
  }

  setPipeline(pipeline: GPUComputePipeline): void {
    this.forward('setPipeline', [pipeline]);
  }
  setBindGroup(index: number, group: GPUBindGroup | null, ...offsets: unknown[]): void {
    this.forward('setBindGroup', [index, group, ...offsets]);
  }
  dispatchWorkgroups(x: number, y?: number, z?: number): void {
    this.forward('dispatchWorkgroups', y === undefined ? [x] : z === undefined ? [x, y] : [x, y, z]);
  }
  dispatchWorkgroupsIndirect(buffer: GPUBuffer, offset: number): void {
    this.forward('dispatchWorkgroupsIndirect', [buffer, offset]);
  }
  setImmediates(...args: unknown[]): void {
    this.forward('setImmediates', args);
  }
  pushDebugGroup(label: string): void {
    this.forward('pushDebugGroup', [label]);
  }
  popDebugGroup(): void {
    this.forward('popDebugGroup', []);
  }
  insertDebugMarker(label: string): void {
    this.forward('insertDebugMarker', [label]);
  }
  end(): void {
    this.encoder.forwardTo(this.real, 'end', []);
  }
}

export class VirtualCommandEncoder {
  label: string;
  dispatches = 0;
  indirectDispatches = 0;
  private readonly record: RecordedCommand[] = [];
  private finished = false;

  constructor(
    private readonly device: VirtualDevice,
    private readonly real: GPUCommandEncoder,
    descriptor: GPUCommandEncoderDescriptor | undefined,
  ) {
    this.label = descriptor?.label ?? '';
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
    this.record.push({ op, args: snapshot(args) });
  }

  beginComputePass(descriptor?: GPUComputePassDescriptor): VirtualComputePassEncoder {
    const begin = (): GPUComputePassEncoder => this.real.beginComputePass(realPassDescriptor(descriptor));
    const realPass = this.finished ? this.device.call(begin) : begin();
    const commands: PassCommand[] = [];
    this.record.push({ op: 'computePass', descriptor, commands });
    return new VirtualComputePassEncoder(this, realPass, commands, descriptor?.label);
  }

  copyBufferToBuffer(...args: unknown[]): void {
    const source = args[0];
    if (source instanceof VirtualBuffer && !(source.usage & BufferUsage.COPY_SRC)) {
      // The real buffer may have COPY_SRC (the kernel's own), the program's has not: Dawn must
      // see a source it refuses. The record keeps the program's arguments.
      this.forwardTo(this.real, 'copyBufferToBuffer', [this.device.physical.invalidCopySource, ...args.slice(1)]);
      this.record.push({ op: 'copyBufferToBuffer', args: snapshot(args) });
      return;
    }
    this.forward('copyBufferToBuffer', args);
  }
  clearBuffer(buffer: GPUBuffer, offset?: number, size?: number): void {
    this.forward('clearBuffer', size === undefined ? (offset === undefined ? [buffer] : [buffer, offset]) : [buffer, offset, size]);
  }
  resolveQuerySet(querySet: GPUQuerySet, firstQuery: number, queryCount: number, destination: GPUBuffer, destinationOffset: number): void {
    this.forward('resolveQuerySet', [querySet, firstQuery, queryCount, destination, destinationOffset]);
  }
  pushDebugGroup(label: string): void {
    this.forward('pushDebugGroup', [label]);
  }
  popDebugGroup(): void {
    this.forward('popDebugGroup', []);
  }
  insertDebugMarker(label: string): void {
    this.forward('insertDebugMarker', [label]);
  }
  writeTimestamp(querySet: GPUQuerySet, index: number): void {
    // Removed from WebGPU; Dawn throws its own error, which the program should see unchanged.
    (this.real as unknown as { writeTimestamp(q: unknown, i: number): void }).writeTimestamp(unwrap(querySet), index);
  }

  finish(descriptor?: GPUCommandBufferDescriptor): VirtualCommandBuffer {
    this.finished = true;
    const { value, valid, clean } = this.device.callChecked(() => this.real.finish(descriptor));
    return new VirtualCommandBuffer(
      value,
      this.record,
      descriptor?.label ?? this.label,
      valid,
      clean,
      this.dispatches,
      this.indirectDispatches,
      this.device.proc.backingEpoch,
    );
  }
}

refuseUnsupported(VirtualCommandEncoder, 'GPUCommandEncoder');
