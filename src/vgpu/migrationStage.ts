// What a migration makes on its target while the process still stands on its old device: every
// compute pipeline (Dawn makes them asynchronously, which takes a while) with the shader modules
// and layouts it is made from. Nothing is installed until the process switches devices, in one
// synchronous step (VirtualDevice.migrateTo): the program keeps calling while pipelines are made,
// and each of its calls must find every object it names on one device — all on the old one
// before the switch, all on the new one after.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { flagBindingOn, flaggedDescriptorOn, realComputePipelineDescriptor, VirtualComputePipeline, type SpentFlagBinding } from './computePipeline.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import { LoopFlag } from './loopFlag.js';
import { unwrap } from './object.js';
import { CompiledModule, VirtualShaderModule } from './shaderModule.js';

/**
 * A pipeline made on the target, whether Dawn made it valid (an invalid one gets no atomized
 * twin), and where it binds the process's budget-spent flag there (made flagged, as
 * VirtualDevice makes pipelines; null: made plain).
 */
export interface StagedPipeline {
  real: GPUComputePipeline;
  valid: boolean;
  flag?: SpentFlagBinding | null;
}

type Staged = CompiledModule | GPUBindGroupLayout | GPUPipelineLayout | StagedPipeline;

export class MigrationStage {
  readonly target: PhysicalDevice;
  /** Each object staged, by the virtual object it stands for: made once, whoever asks first. */
  #made = new Map<object, Promise<Staged>>();
  /** The same, once made: what the switch installs without waiting. */
  #ready = new Map<object, Staged>();

  /** The process's budget-spent flag on the target, made at the first flagged pipeline; the device adopts it at the switch. */
  #loopFlag: LoopFlag | null = null;

  constructor(
    target: PhysicalDevice,
    private readonly label: string,
  ) {
    this.target = target;
  }

  /** The flag the staged pipelines bind, for the device to adopt at the switch (null: none made). */
  takeLoopFlag(): LoopFlag | null {
    const flag = this.#loopFlag;
    this.#loopFlag = null;
    return flag;
  }

  /** The migration gave up: what only it holds on the target goes (the staged objects are collected). */
  discard(): void {
    this.#loopFlag?.destroy();
    this.#loopFlag = null;
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
        object.install((staged as StagedPipeline).real, (staged as StagedPipeline).flag ?? null);
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

  /** With the modules and layouts it names as made on the target; with the budget-spent flag where it can have one. */
  async #makePipeline(pipeline: VirtualComputePipeline): Promise<StagedPipeline> {
    const descriptor = pipeline.descriptor;
    const real = realComputePipelineDescriptor(descriptor);
    if (!pipeline.refused) {
      if (descriptor.layout !== 'auto') real.layout = (await this.#realOf(descriptor.layout)) as GPUPipelineLayout;
      if (descriptor.compute && real.compute) real.compute.module = (await this.#realOf(descriptor.compute.module)) as GPUShaderModule;
      const flagged = await this.#makeFlagged(pipeline, real);
      if (flagged !== null) return flagged;
    }
    return pipeline.madeOn(this.target, real);
  }

  /**
   * `pipeline` made flagged on the target (`real`: its descriptor there), as VirtualDevice makes
   * it on its device (flaggedPipelineDescriptor): null where it cannot be (its module has no flagged
   * form, its layout reaches the flag's index) or Dawn refuses it, and it is made plain.
   */
  async #makeFlagged(pipeline: VirtualComputePipeline, real: GPUComputePipelineDescriptor): Promise<StagedPipeline | null> {
    const { compute, layout } = pipeline.descriptor;
    const module = compute?.module;
    if (!(module instanceof VirtualShaderModule) || module.refusal !== null) return null;
    const compiled = (await this.#once(module, async () => module.compiledOn(this.target))) as CompiledModule;
    if (!compiled.flagged || !(layout === 'auto' || layout instanceof VirtualPipelineLayout)) return null;
    if (layout !== 'auto' && layout.bindGroupLayouts.length > compiled.flagged.group) return null;
    const groups = layout === 'auto' ? 'auto' : ((await Promise.all(layout.bindGroupLayouts.map((l) => (l ? this.#realOf(l) : null)))) as Array<GPUBindGroupLayout | null>);
    const flag = (this.#loopFlag ??= new LoopFlag(this.target, this.label));
    const flagged = flaggedDescriptorOn(flag, compiled.flagged, real, groups, layout === 'auto' ? 0 : (layout.immediateSize ?? 0));
    if (flagged === null) return null;
    let made: GPUComputePipeline;
    try {
      made = await this.target.capture(() => this.target.device.createComputePipelineAsync(flagged.real)).value;
    } catch {
      return null;
    }
    const binding = flagBindingOn(flag, made, flagged.index, flagged.explicit);
    return binding === null ? null : { real: made, valid: true, flag: binding };
  }
}
