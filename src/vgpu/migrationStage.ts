// What a migration makes on its target while the process still stands on its old device: every
// compute pipeline (Dawn makes them asynchronously, which takes a while) with the shader modules
// and layouts it is made from. Nothing is installed until the process switches devices, in one
// synchronous step (VirtualDevice.migrateTo): the program keeps calling while pipelines are made,
// and each of its calls must find every object it names on one device — all on the old one
// before the switch, all on the new one after.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { realComputePipelineDescriptor, VirtualComputePipeline } from './computePipeline.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import { unwrap } from './object.js';
import { CompiledModule, VirtualShaderModule } from './shaderModule.js';

/** A pipeline made on the target, and whether Dawn made it valid (an invalid one gets no atomized twin). */
export interface StagedPipeline {
  real: GPUComputePipeline;
  valid: boolean;
}

type Staged = CompiledModule | GPUBindGroupLayout | GPUPipelineLayout | StagedPipeline;

export class MigrationStage {
  readonly target: PhysicalDevice;
  /** Each object staged, by the virtual object it stands for: made once, whoever asks first. */
  #made = new Map<object, Promise<Staged>>();
  /** The same, once made: what the switch installs without waiting. */
  #ready = new Map<object, Staged>();

  constructor(target: PhysicalDevice) {
    this.target = target;
  }

  /** Whether `object` is (being) made on the target. */
  holds(object: object): boolean {
    return this.#made.has(object);
  }

  /** Makes `pipeline` on the target, with what it is made from; resolves when Dawn has made it. */
  pipeline(pipeline: VirtualComputePipeline): Promise<StagedPipeline> {
    return this.#once(pipeline, () => this.#makePipeline(pipeline)) as Promise<StagedPipeline>;
  }

  /** Whether every object asked for so far is made (the switch may install them). */
  get complete(): boolean {
    return this.#ready.size === this.#made.size;
  }

  /**
   * Puts every staged object's real behind its virtual object, synchronously: the switch must let
   * no program call in between. Only when `complete`. Returns the pipelines Dawn made valid.
   */
  install(): VirtualComputePipeline[] {
    if (!this.complete) throw new Error('MigrationStage.install: objects are still being made');
    const pipelines: VirtualComputePipeline[] = [];
    for (const [object, staged] of this.#ready) {
      if (object instanceof VirtualShaderModule) object.install(staged as CompiledModule);
      else if (object instanceof VirtualBindGroupLayout) object.install(staged as GPUBindGroupLayout);
      else if (object instanceof VirtualPipelineLayout) object.install(staged as GPUPipelineLayout);
      else if (object instanceof VirtualComputePipeline) {
        object.install((staged as StagedPipeline).real);
        if ((staged as StagedPipeline).valid) pipelines.push(object);
      }
    }
    return pipelines;
  }

  #once(object: object, make: () => Promise<Staged>): Promise<Staged> {
    let made = this.#made.get(object);
    if (!made) {
      this.#made.set(object, (made = make()));
      made.then((staged) => this.#ready.set(object, staged), () => {});
    }
    return made;
  }

  /** The target's real object for `object`, a dependency of a pipeline: staged when gpunix makes it, else as it is. */
  async #realOf(object: unknown): Promise<unknown> {
    if (object instanceof VirtualShaderModule) return ((await this.#once(object, async () => object.compiledOn(this.target))) as CompiledModule).real;
    if (object instanceof VirtualBindGroupLayout) return this.#once(object, () => this.#makeBindGroupLayout(object));
    if (object instanceof VirtualPipelineLayout) return this.#once(object, () => this.#makePipelineLayout(object));
    if (object instanceof VirtualComputePipeline) return (await this.pipeline(object)).real;
    return unwrap(object);
  }

  async #makeBindGroupLayout(layout: VirtualBindGroupLayout): Promise<GPUBindGroupLayout> {
    const source = layout.source;
    // A pipeline's 'auto' layout: that pipeline's, as made on the target.
    const pipeline = 'pipeline' in source && !layout.refused ? ((await this.#realOf(source.pipeline)) as GPUComputePipeline) : null;
    return layout.madeOn(this.target, pipeline);
  }

  async #makePipelineLayout(layout: VirtualPipelineLayout): Promise<GPUPipelineLayout> {
    const groups = layout.refused ? [] : await Promise.all(layout.bindGroupLayouts.map((l) => (l ? this.#realOf(l) : l)));
    return layout.madeOn(this.target, groups);
  }

  /** With the modules and layouts it names as made on the target. */
  async #makePipeline(pipeline: VirtualComputePipeline): Promise<StagedPipeline> {
    const descriptor = pipeline.descriptor;
    const real = realComputePipelineDescriptor(descriptor);
    if (!pipeline.refused) {
      if (descriptor.layout !== 'auto') real.layout = (await this.#realOf(descriptor.layout)) as GPUPipelineLayout;
      if (descriptor.compute && real.compute) real.compute.module = (await this.#realOf(descriptor.compute.module)) as GPUShaderModule;
    }
    return pipeline.madeOn(this.target, real);
  }
}
