// The GPUAdapter a process sees: a view of one of the kernel's physical devices. Its features and
// limits are what the kernel's device offers; requestDevice grants a subset, as WebGPU does.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { WEBGPU_DEFAULT_LIMITS } from '../params.js';
import { VirtualDevice } from './device.js';
import { deviceDescriptor } from '../webidl.js';
import type { ProcessHost } from './host.js';
import { adapterInfo, isAlignmentLimit, isLimitName, LIMIT_NAMES, supportedFeatures, supportedLimits } from './supported.js';

/** The adapter info a process sees: the physical adapter's, as a GPUAdapterInfo of its own. */
export function adapterInfoOf(device: PhysicalDevice): GPUAdapterInfo {
  const a = device.adapter;
  return adapterInfo({
    vendor: a.vendor,
    architecture: a.architecture,
    device: a.device,
    description: a.description,
    subgroupMinSize: a.subgroupMinSize,
    subgroupMaxSize: a.subgroupMaxSize,
    isFallbackAdapter: a.isFallbackAdapter,
  });
}

/**
 * The limits a process's adapter offers on `device`: every limit WebGPU defines, at the best value
 * the kernel lets a process request there (today the physical adapter's own).
 */
function adapterLimitsOf(device: PhysicalDevice): Record<string, number> {
  const limits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const value = device.adapter.limits[name] ?? WEBGPU_DEFAULT_LIMITS[name];
    if (value !== undefined) limits[name] = value;
  }
  return limits;
}

/**
 * WebGPU's "Compatibility Mode Default" limits: what a device gets for each limit it does not ask
 * more of when its adapter defaults to the "compatibility" feature level and it does not ask for
 * 'core-features-and-limits'. The values Dawn (webgpu 0.6.2) gives a compatibility device.
 */
export const COMPAT_DEFAULT_LIMITS: Readonly<Record<string, number>> = {
  ...WEBGPU_DEFAULT_LIMITS,
  maxTextureDimension1D: 4096,
  maxTextureDimension2D: 4096,
  maxStorageBuffersInVertexStage: 0,
  maxStorageBuffersInFragmentStage: 4,
  maxStorageTexturesInVertexStage: 0,
  maxStorageTexturesInFragmentStage: 4,
  maxUniformBufferBindingSize: 16384,
  maxInterStageShaderVariables: 15,
  maxColorAttachments: 4,
  maxComputeInvocationsPerWorkgroup: 128,
  maxComputeWorkgroupSizeX: 128,
  maxComputeWorkgroupSizeY: 128,
};

/** Features that enable others on a device (WebGPU §3.6.1, "Feature Dependencies"). */
const FEATURE_DEPENDENCIES: Readonly<Record<string, readonly string[]>> = {
  'texture-formats-tier2': ['texture-formats-tier1'],
  'texture-formats-tier1': ['rg11b10ufloat-renderable'],
  'texture-compression-bc-sliced-3d': ['texture-compression-bc'],
  'texture-compression-astc-sliced-3d': ['texture-compression-astc'],
  'subgroup-size-control': ['subgroups'],
};

/** `value` is as good as or better than `than` for limit `name` (WebGPU §3.6.2: alignments are better smaller). */
function atLeastAsGood(name: string, value: number, than: number): boolean {
  return isAlignmentLimit(name) ? value <= than : value >= than;
}

export class VirtualAdapter {
  // Private fields behind prototype accessors: a GPUAdapter has no own properties (WebIDL).
  #features!: ReadonlySet<string>;
  #limits!: Readonly<Record<string, number>>;
  #info!: GPUAdapterInfo;
  #consumed = false;
  #host: ProcessHost;
  #physical: PhysicalDevice;
  #featureLevel: 'core' | 'compatibility';
  get features(): ReadonlySet<string> {
    return this.#features;
  }
  get limits(): Readonly<Record<string, number>> {
    return this.#limits;
  }
  get info(): GPUAdapterInfo {
    return this.#info;
  }

  /**
   * `featureLevel`: the adapter's default feature level, as requested ("compatibility" is kept
   * even on a core device: a device then defaults to compatibility mode's features and limits).
   */
  constructor(host: ProcessHost, physical: PhysicalDevice, featureLevel: 'core' | 'compatibility' = physical.adapter.featureLevel) {
    this.#host = host;
    this.#physical = physical;
    this.#featureLevel = physical.adapter.featureLevel === 'core' ? featureLevel : 'compatibility';
    this.#features = supportedFeatures(physical.adapter.features);
    this.#limits = supportedLimits(adapterLimitsOf(physical));
    this.#info = adapterInfoOf(physical);
  }

  get isFallbackAdapter(): boolean {
    return this.#physical.adapter.isFallbackAdapter;
  }

  /** The adapter's default feature level: 'core', or 'compatibility' (its devices lack 'core-features-and-limits' unless they ask for it). */
  get featureLevel(): 'core' | 'compatibility' {
    return this.#featureLevel;
  }

  async requestDevice(input?: GPUDeviceDescriptor): Promise<VirtualDevice> {
    // Converted first, as WebIDL does (a failure rejects): requiredFeatures element by element
    // with ToString (so [['timestamp-query']] is 'timestamp-query'), requiredLimits with [EnforceRange].
    const descriptor = deviceDescriptor(input, this.#features);
    // The checks in the spec's order: features (TypeError), then the adapter's state and the
    // limits (OperationError). A request that fails leaves the adapter usable.
    const features = new Set<string>();
    for (const feature of descriptor?.requiredFeatures ?? []) {
      if (!this.#features.has(feature)) {
        throw new TypeError(`Requested feature "${feature}" is not supported by this adapter`);
      }
      features.add(feature);
    }
    if (this.#consumed) {
      throw new DOMException('adapter is "consumed": it has already been used to create a device', 'OperationError');
    }
    const adapterLimits = this.#limits;
    const requested: Array<[string, number]> = [];
    for (const [name, value] of Object.entries(descriptor?.requiredLimits ?? {})) {
      if (value === undefined) continue;
      if (!isLimitName(name)) throw new DOMException(`Unknown limit "${name}"`, 'OperationError');
      if (!atLeastAsGood(name, adapterLimits[name], value)) {
        throw new DOMException(`Required limit ${name} (${value}) is better than the adapter supports (${adapterLimits[name]})`, 'OperationError');
      }
      if (isAlignmentLimit(name) && (value >= 2 ** 32 || !Number.isInteger(Math.log2(value)))) {
        throw new DOMException(`Required limit ${name} (${value}) is not a power of two below 2^32`, 'OperationError');
      }
      requested.push([name, value]);
    }
    this.#consumed = true;
    // "a new device": a core-defaulting adapter's default feature, then what each feature requires.
    if (this.#featureLevel === 'core') features.add('core-features-and-limits');
    for (const feature of features) for (const required of FEATURE_DEPENDENCIES[feature] ?? []) features.add(required);
    // The defaults (core's, or compatibility mode's for a device without 'core-features-and-limits'),
    // raised (for alignments lowered) to what was asked; a request worse than the default gets the default.
    const defaults = features.has('core-features-and-limits') ? WEBGPU_DEFAULT_LIMITS : COMPAT_DEFAULT_LIMITS;
    const limits: Record<string, number> = {};
    for (const name of LIMIT_NAMES) limits[name] = defaults[name] ?? adapterLimits[name];
    for (const [name, value] of requested) if (atLeastAsGood(name, value, limits[name])) limits[name] = value;
    limits.maxStorageBuffersPerShaderStage = Math.max(limits.maxStorageBuffersPerShaderStage, limits.maxStorageBuffersInVertexStage, limits.maxStorageBuffersInFragmentStage);
    limits.maxStorageTexturesPerShaderStage = Math.max(limits.maxStorageTexturesPerShaderStage, limits.maxStorageTexturesInVertexStage, limits.maxStorageTexturesInFragmentStage);
    if (features.has('core-features-and-limits')) {
      // A core device checks every stage against the per-stage limits: the in-stage ones equal them.
      limits.maxStorageBuffersInVertexStage = limits.maxStorageBuffersInFragmentStage = limits.maxStorageBuffersPerShaderStage;
      limits.maxStorageTexturesInVertexStage = limits.maxStorageTexturesInFragmentStage = limits.maxStorageTexturesPerShaderStage;
    }
    const device = new VirtualDevice(this.#host, this.#physical, supportedFeatures(features), supportedLimits(limits), adapterInfoOf(this.#physical), descriptor);
    if (!this.#host.proc.alive) {
      // A request that is valid but cannot be fulfilled resolves with a device lost already (WebGPU §4.4).
      device.lose('unknown', `process ${this.#host.proc.pid} has exited`);
      return device;
    }
    await this.#host.adopt(device);
    return device;
  }
}
