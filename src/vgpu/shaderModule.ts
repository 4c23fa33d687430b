// A process's shader module: the WGSL source (kept for checkpoints and for rewriting pipelines)
// in front of Dawn's compiled module, which is also the judge of the program's WGSL.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { REAL, Rebuildable, VirtualObject } from './object.js';

export class VirtualShaderModule extends VirtualObject<GPUShaderModule> implements Rebuildable {
  readonly code: string;
  constructor(
    private real: GPUShaderModule,
    descriptor: GPUShaderModuleDescriptor,
  ) {
    super(descriptor.label);
    this.code = descriptor.code;
  }
  get [REAL](): GPUShaderModule {
    return this.real;
  }
  rebuild(physical: PhysicalDevice): void {
    this.real = physical.capture(() => physical.device.createShaderModule({ code: this.code, label: this.label })).value;
  }
  getCompilationInfo(): Promise<GPUCompilationInfo> {
    return this.real.getCompilationInfo();
  }
}
