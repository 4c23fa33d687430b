// Bind group layouts and pipeline layouts of a process: descriptors kept, real objects behind.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { REAL, Rebuildable, unwrap, VirtualObject } from './object.js';

/** Where a bind group layout came from: the program's descriptor, or a pipeline's 'auto' layout. */
export type LayoutSource = { descriptor: GPUBindGroupLayoutDescriptor } | { pipeline: VirtualObject<GPUComputePipeline>; index: number };

export class VirtualBindGroupLayout extends VirtualObject<GPUBindGroupLayout> implements Rebuildable {
  constructor(
    private real: GPUBindGroupLayout,
    label: string | undefined,
    readonly source: LayoutSource,
    /** The device that made it; a pipeline's derived layout belongs to the pipeline's device. */
    owner?: object,
  ) {
    super(label, owner ?? ('pipeline' in source ? source.pipeline.owner : null));
  }
  get [REAL](): GPUBindGroupLayout {
    return this.real;
  }
  rebuild(physical: PhysicalDevice): void {
    const source = this.source;
    this.real = physical.capture(() =>
      'descriptor' in source ? physical.device.createBindGroupLayout(source.descriptor) : source.pipeline[REAL].getBindGroupLayout(source.index),
    ).value;
  }
}

export class VirtualPipelineLayout extends VirtualObject<GPUPipelineLayout> implements Rebuildable {
  constructor(
    private real: GPUPipelineLayout,
    readonly bindGroupLayouts: ReadonlyArray<unknown>,
    label: string | undefined,
    private readonly immediateSize: number | undefined,
    owner: object,
  ) {
    super(label, owner);
  }
  get [REAL](): GPUPipelineLayout {
    return this.real;
  }
  rebuild(physical: PhysicalDevice): void {
    const descriptor = { label: this.label, bindGroupLayouts: this.bindGroupLayouts.map((l) => unwrap(l)), immediateSize: this.immediateSize };
    this.real = physical.capture(() => physical.device.createPipelineLayout(descriptor as GPUPipelineLayoutDescriptor)).value;
  }
}
