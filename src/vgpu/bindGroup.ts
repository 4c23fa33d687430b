// A process's bind group: which of its buffers it binds where, in front of the real bind group.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { REAL, unwrap, VirtualObject } from './object.js';

export class VirtualBindGroup extends VirtualObject<GPUBindGroup> {
  constructor(
    private readonly real: GPUBindGroup,
    /** The program's descriptor, with virtual objects: what a re-creation would bind. */
    readonly descriptor: GPUBindGroupDescriptor,
  ) {
    super(descriptor.label);
  }
  get [REAL](): GPUBindGroup {
    return this.real;
  }

  private twins: WeakMap<GPUBindGroupLayout, GPUBindGroup> | null = null;

  /** The same resources bound for another (kernel-made) layout: an atomized twin's 'auto' layout. */
  twinFor(physical: PhysicalDevice, layout: GPUBindGroupLayout): GPUBindGroup {
    this.twins ??= new WeakMap();
    let twin = this.twins.get(layout);
    if (!twin) {
      const entries = [...this.descriptor.entries].map((entry) => {
        const resource = entry.resource as unknown;
        if (resource && typeof resource === 'object' && 'buffer' in resource) {
          return { ...entry, resource: { ...(resource as GPUBufferBinding), buffer: unwrap((resource as GPUBufferBinding).buffer) } };
        }
        return { ...entry, resource: unwrap(resource) as GPUBindingResource };
      });
      twin = physical.capture(() => physical.device.createBindGroup({ layout, entries })).value;
      this.twins.set(layout, twin);
    }
    return twin;
  }
}
