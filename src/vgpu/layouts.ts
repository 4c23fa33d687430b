// Bind group layouts and pipeline layouts of a process: descriptors kept, real objects behind.

import { REAL, VirtualObject } from './object.js';

export class VirtualBindGroupLayout extends VirtualObject<GPUBindGroupLayout> {
  constructor(
    private readonly real: GPUBindGroupLayout,
    label: string | undefined,
  ) {
    super(label);
  }
  get [REAL](): GPUBindGroupLayout {
    return this.real;
  }
}

export class VirtualPipelineLayout extends VirtualObject<GPUPipelineLayout> {
  constructor(
    private readonly real: GPUPipelineLayout,
    readonly bindGroupLayouts: ReadonlyArray<unknown>,
    label: string | undefined,
  ) {
    super(label);
  }
  get [REAL](): GPUPipelineLayout {
    return this.real;
  }
}
