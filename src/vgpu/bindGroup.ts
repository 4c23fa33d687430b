// A process's bind group: which of its buffers it binds where, in front of the real bind group.

import { REAL, VirtualObject } from './object.js';

export class VirtualBindGroup extends VirtualObject<GPUBindGroup> {
  constructor(
    private readonly real: GPUBindGroup,
    /** The program's descriptor, with virtual objects: what a re-creation would bind. */
    readonly descriptor: GPUBindGroupDescriptor,
  ) {
    super(descriptor.label);
  }
  get [REAL](): GPUBindGroup {
    return this.real;
  }
}
