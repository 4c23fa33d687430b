// The GPUAdapter a process sees: a view of one of the kernel's physical devices. Its features and
// limits are what the kernel's device offers; requestDevice grants a subset, as WebGPU does.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { WEBGPU_DEFAULT_LIMITS } from '../params.js';
import { VirtualDevice } from './device.js';
import { deviceDescriptor } from '../webidl.js';
import type { ProcessHost } from './host.js';

/** The adapter info a process sees: the physical adapter's, as plain data. */
function adapterInfoOf(device: PhysicalDevice): GPUAdapterInfo {
  const a = device.adapter;
  return Object.freeze({
    vendor: a.vendor,
    architecture: a.architecture,
    device: a.device,
    description: a.description,
    subgroupMinSize: a.subgroupMinSize,
    subgroupMaxSize: a.subgroupMaxSize,
    isFallbackAdapter: a.isFallbackAdapter,
  }) as unknown as GPUAdapterInfo;
}

export class VirtualAdapter {
  readonly features: ReadonlySet<string>;
  readonly limits: Readonly<Record<string, number>>;
  readonly info: GPUAdapterInfo;
  private consumed = false;

  constructor(
    private readonly host: ProcessHost,
    private readonly physical: PhysicalDevice,
  ) {
    this.features = new Set(physical.adapter.features);
    this.limits = Object.freeze({ ...physical.adapter.limits });
    this.info = adapterInfoOf(physical);
  }

  get isFallbackAdapter(): boolean {
    return this.physical.adapter.isFallbackAdapter;
  }

  async requestDevice(input?: GPUDeviceDescriptor): Promise<VirtualDevice> {
    // Converted first, as WebIDL does (a failure rejects): requiredFeatures element by element
    // with ToString (so [['timestamp-query']] is 'timestamp-query'), requiredLimits with [EnforceRange].
    const descriptor = deviceDescriptor(input, this.features);
    if (this.consumed) {
      throw new DOMException('adapter is "consumed": it has already been used to create a device', 'OperationError');
    }
    const features = new Set<string>();
    for (const feature of descriptor?.requiredFeatures ?? []) {
      if (!this.features.has(feature)) {
        throw new TypeError(`Requested feature "${feature}" is not supported by this adapter`);
      }
      features.add(feature);
    }
    if (this.features.has('core-features-and-limits')) features.add('core-features-and-limits');
    const limits: Record<string, number> = { ...WEBGPU_DEFAULT_LIMITS };
    for (const [name, value] of Object.entries(descriptor?.requiredLimits ?? {})) {
      if (value === undefined) continue;
      if (!(name in this.limits)) throw new DOMException(`Unknown limit "${name}"`, 'OperationError');
      const better = name.startsWith('min') ? value >= this.limits[name] : value <= this.limits[name];
      if (!better) {
        throw new DOMException(`Requested limit ${name} (${value}) is beyond what the adapter supports (${this.limits[name]})`, 'OperationError');
      }
      // A request below the default (or above it for alignments) still gets the default.
      limits[name] = name.startsWith('min') ? Math.min(limits[name] ?? value, value) : Math.max(limits[name] ?? value, value);
    }
    this.consumed = true;
    if (!this.host.proc.alive) {
      throw new DOMException(`process ${this.host.proc.pid} has exited`, 'OperationError');
    }
    const device = new VirtualDevice(this.host, this.physical, features, Object.freeze(limits), this.info, descriptor);
    await this.host.adopt(device);
    return device;
  }
}
