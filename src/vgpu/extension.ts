// `device.gpunix`: the documented gpunix extension on the virtual device (docs/vgpu.md,
// "The gpunix extension"). A program that resumes from a checkpoint finds its buffers, shader
// modules and pipelines again by the labels it gave them.

import type { VirtualBuffer } from './buffer.js';
import type { VirtualComputePipeline } from './computePipeline.js';
import type { VirtualShaderModule } from './shaderModule.js';

export class GpunixDeviceExtension {
  constructor(
    /** Attaches the program to a shared segment (the device implements it; see attachShared). */
    private readonly attach: (name: string, size: number) => VirtualBuffer,
  ) {}

  /**
   * Attaches the named shared segment of this process's tenant, creating it with `size` bytes if
   * it does not exist yet. Returns a buffer (usage STORAGE | COPY_SRC | COPY_DST) that every
   * attached process of the tenant shares on the device; `destroy()` detaches. Another tenant's
   * segments are in another namespace: it can never attach them.
   */
  attachShared(name: string, size: number): GPUBuffer {
    return this.attach(name, size) as unknown as GPUBuffer;
  }

  /** True on a device that received a restored process image. */
  restored = false;
  private readonly buffers = new Map<string, VirtualBuffer>();
  private readonly pipelines = new Map<string, VirtualComputePipeline>();
  private readonly modules = new Map<string, VirtualShaderModule>();

  /** Records restored objects under their labels (the first of a label wins). */
  adopt(objects: { buffers: VirtualBuffer[]; pipelines: VirtualComputePipeline[]; modules: VirtualShaderModule[] }): void {
    this.restored = true;
    for (const b of objects.buffers) if (!this.buffers.has(b.label)) this.buffers.set(b.label, b);
    for (const p of objects.pipelines) if (!this.pipelines.has(p.label)) this.pipelines.set(p.label, p);
    for (const m of objects.modules) if (!this.modules.has(m.label)) this.modules.set(m.label, m);
  }

  /** The restored buffer with this label, or null. */
  findBuffer(label: string): GPUBuffer | null {
    return (this.buffers.get(label) as unknown as GPUBuffer) ?? null;
  }

  /** The restored compute pipeline with this label, or null. */
  findPipeline(label: string): GPUComputePipeline | null {
    return (this.pipelines.get(label) as unknown as GPUComputePipeline) ?? null;
  }

  /** The restored shader module with this label, or null. */
  findShaderModule(label: string): GPUShaderModule | null {
    return (this.modules.get(label) as unknown as GPUShaderModule) ?? null;
  }

  /** Labels of everything restored, for programs that look around. */
  labels(): { buffers: string[]; pipelines: string[]; shaderModules: string[] } {
    return { buffers: [...this.buffers.keys()], pipelines: [...this.pipelines.keys()], shaderModules: [...this.modules.keys()] };
  }
}
