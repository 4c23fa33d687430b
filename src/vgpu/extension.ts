// `device.gpunix`: the documented gpunix extension on the virtual device (docs/vgpu.md,
// "The gpunix extension"). A program that resumes from a checkpoint finds its buffers, shader
// modules and pipelines again by the labels it gave them.

import type { VirtualBuffer } from './buffer.js';
import type { VirtualComputePipeline } from './computePipeline.js';
import type { VirtualShaderModule } from './shaderModule.js';
import { RestoredIndex } from '../restoredIndex.js';

export class GpunixDeviceExtension extends RestoredIndex<VirtualBuffer, VirtualComputePipeline, VirtualShaderModule> {
  constructor(
    /** Attaches the program to a shared segment (the device implements it; see attachShared). */
    private readonly attach: (name: string, size: number) => VirtualBuffer,
  ) {
    super();
  }

  /**
   * Attaches the named shared segment of this process's tenant, creating it with `size` bytes if
   * it does not exist yet. Returns a buffer (usage STORAGE | COPY_SRC | COPY_DST) that every
   * attached process of the tenant shares on the device; `destroy()` detaches. Another tenant's
   * segments are in another namespace: it can never attach them.
   */
  attachShared(name: string, size: number): GPUBuffer {
    return this.attach(name, size) as unknown as GPUBuffer;
  }

  /** Records restored objects under their labels (the first of a label wins). */
  adopt(objects: { buffers: VirtualBuffer[]; pipelines: VirtualComputePipeline[]; modules: VirtualShaderModule[] }): void {
    this.index(objects.buffers, objects.pipelines, objects.modules);
  }
}
