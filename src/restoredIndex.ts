// The find-by-label half of `device.gpunix` (docs/vgpu.md), shared by the embedded virtual device
// (src/vgpu/extension.ts) and the remote one (src/client/extension.ts): a restored image's buffers,
// compute pipelines and shader modules by the labels the program gave them. No dependencies.

interface Labelled {
  readonly label: string;
}

export class RestoredIndex<Buffer extends Labelled, Pipeline extends Labelled, Module extends Labelled> {
  /** True on a device that received a restored process image. */
  restored = false;
  private readonly buffers = new Map<string, Buffer>();
  private readonly pipelines = new Map<string, Pipeline>();
  private readonly modules = new Map<string, Module>();

  /** Records restored objects under their labels (the first of a label wins). */
  protected index(buffers: Buffer[], pipelines: Pipeline[], modules: Module[]): void {
    this.restored = true;
    for (const b of buffers) if (!this.buffers.has(b.label)) this.buffers.set(b.label, b);
    for (const p of pipelines) if (!this.pipelines.has(p.label)) this.pipelines.set(p.label, p);
    for (const m of modules) if (!this.modules.has(m.label)) this.modules.set(m.label, m);
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
