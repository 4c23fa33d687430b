// A process's shader module: the WGSL source (kept for checkpoints and for rewriting pipelines)
// in front of Dawn's compiled module, which is also the judge of the program's WGSL.

import { REAL, VirtualObject } from './object.js';

export class VirtualShaderModule extends VirtualObject<GPUShaderModule> {
  readonly code: string;
  constructor(
    private readonly real: GPUShaderModule,
    descriptor: GPUShaderModuleDescriptor,
  ) {
    super(descriptor.label);
    this.code = descriptor.code;
  }
  get [REAL](): GPUShaderModule {
    return this.real;
  }
  getCompilationInfo(): Promise<GPUCompilationInfo> {
    return this.real.getCompilationInfo();
  }
}
