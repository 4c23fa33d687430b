// A process's compute pipeline: its descriptor (module, entry point, constants, layout) kept so
// the kernel can rebuild or rewrite it, in front of Dawn's pipeline.

import type { VirtualDevice } from './device.js';
import { VirtualBindGroupLayout } from './layouts.js';
import { REAL, VirtualObject } from './object.js';

export class VirtualComputePipeline extends VirtualObject<GPUComputePipeline> {
  constructor(
    private readonly device: VirtualDevice,
    private readonly real: GPUComputePipeline,
    readonly descriptor: GPUComputePipelineDescriptor,
  ) {
    super(descriptor.label);
  }
  get [REAL](): GPUComputePipeline {
    return this.real;
  }
  getBindGroupLayout(index: number): VirtualBindGroupLayout {
    const real = this.device.call(() => this.real.getBindGroupLayout(index));
    return new VirtualBindGroupLayout(real, undefined);
  }
}
