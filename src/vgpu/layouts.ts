// Bind group layouts and pipeline layouts of a process: descriptors kept, real objects behind.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { invalidReal } from './limits.js';
import { REAL, Rebuildable, unwrap, VirtualObject } from './object.js';

/** Where a bind group layout came from: the program's descriptor, or a pipeline's 'auto' layout. */
export type LayoutSource = { descriptor: GPUBindGroupLayoutDescriptor } | { pipeline: VirtualObject<GPUComputePipeline>; index: number };

export class VirtualBindGroupLayout extends VirtualObject<GPUBindGroupLayout> implements Rebuildable {
  // Private fields behind prototype accessors: a GPUBindGroupLayout has no own properties (WebIDL).
  #real: GPUBindGroupLayout;
  #source: LayoutSource;
  #refused = false;
  /** Refused at the process's limits (limits.ts): invalid, and made invalid again when made afresh. */
  get refused(): boolean {
    return this.#refused;
  }
  set refused(value: boolean) {
    this.#refused = value;
  }
  private get real(): GPUBindGroupLayout {
    return this.#real;
  }
  private set real(real: GPUBindGroupLayout) {
    this.#real = real;
  }
  get source(): LayoutSource {
    return this.#source;
  }
  constructor(
    real: GPUBindGroupLayout,
    label: string | undefined,
    source: LayoutSource,
    /** The device that made it; a pipeline's derived layout belongs to the pipeline's device. */
    owner?: object,
  ) {
    super(label, owner ?? ('pipeline' in source ? source.pipeline.owner : null));
    this.#real = real;
    this.#source = source;
  }
  get [REAL](): GPUBindGroupLayout {
    return this.real;
  }
  /** Puts a real layout made on the device the process is moving to in place (a migration's switch). */
  install(real: GPUBindGroupLayout): void {
    this.real = real;
  }
  rebuild(physical: PhysicalDevice): void {
    const source = this.source;
    this.real = this.madeOn(physical, 'pipeline' in source ? source.pipeline[REAL] : null);
  }
  /**
   * The layout made afresh on `physical` (not put in place); `pipeline`: the real pipeline on
   * `physical` that a derived layout comes from (null for a layout made from a descriptor).
   */
  madeOn(physical: PhysicalDevice, pipeline: GPUComputePipeline | null): GPUBindGroupLayout {
    const source = this.source;
    if (this.refused) return invalidReal.bindGroupLayout(physical, this.label);
    return physical.capture(() =>
      'descriptor' in source ? physical.device.createBindGroupLayout(source.descriptor) : pipeline!.getBindGroupLayout(source.index),
    ).value;
  }
}

export class VirtualPipelineLayout extends VirtualObject<GPUPipelineLayout> implements Rebuildable {
  // Private fields behind prototype accessors: a GPUPipelineLayout has no own properties (WebIDL).
  #real: GPUPipelineLayout;
  #bindGroupLayouts: ReadonlyArray<unknown>;
  #immediateSize: number | undefined;
  #refused = false;
  /** Refused at the process's limits (limits.ts): invalid, and made invalid again when made afresh. */
  get refused(): boolean {
    return this.#refused;
  }
  set refused(value: boolean) {
    this.#refused = value;
  }
  private get real(): GPUPipelineLayout {
    return this.#real;
  }
  private set real(real: GPUPipelineLayout) {
    this.#real = real;
  }
  get bindGroupLayouts(): ReadonlyArray<unknown> {
    return this.#bindGroupLayouts;
  }
  get immediateSize(): number | undefined {
    return this.#immediateSize;
  }
  constructor(real: GPUPipelineLayout, bindGroupLayouts: ReadonlyArray<unknown>, label: string | undefined, immediateSize: number | undefined, owner: object) {
    super(label, owner);
    this.#real = real;
    this.#bindGroupLayouts = bindGroupLayouts;
    this.#immediateSize = immediateSize;
  }
  get [REAL](): GPUPipelineLayout {
    return this.real;
  }
  /** Puts a real layout made on the device the process is moving to in place (a migration's switch). */
  install(real: GPUPipelineLayout): void {
    this.real = real;
  }
  rebuild(physical: PhysicalDevice): void {
    this.real = this.madeOn(physical, this.bindGroupLayouts.map((l) => unwrap(l)));
  }
  /** The layout made afresh on `physical` from `bindGroupLayouts`, its groups' real layouts there (not put in place). */
  madeOn(physical: PhysicalDevice, bindGroupLayouts: readonly unknown[]): GPUPipelineLayout {
    if (this.refused) return invalidReal.pipelineLayout(physical, this.label);
    const descriptor = { label: this.label, bindGroupLayouts, immediateSize: this.immediateSize };
    return physical.capture(() => physical.device.createPipelineLayout(descriptor as GPUPipelineLayoutDescriptor)).value;
  }
}
