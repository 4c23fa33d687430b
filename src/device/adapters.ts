// Finding and opening the machine's WebGPU adapters through Dawn (npm `webgpu`), on each backend
// the kernel was asked for. Dawn's `create()` is called only in backends.ts, with the kernel's own options.

import { measureLoopRates } from './loopRate.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { adapterQueryFor, BackendName, dawnInstanceFor, featureLevelOf, noAdapterHint, platformBackend } from './backends.js';
import { AdapterDescription, PhysicalDevice } from './physicalDevice.js';

/** How each distinct adapter is asked for again: an adapter is consumed by one requestDevice. */
const ADAPTER_QUERIES: GPURequestAdapterOptions[] = [
  { powerPreference: 'high-performance' },
  { powerPreference: 'low-power' },
  { forceFallbackAdapter: true },
];

export interface FoundAdapter {
  description: AdapterDescription;
  query: GPURequestAdapterOptions;
}

/** Adapters behind the kernel's devices: held, because Dawn may hang if one is collected while its device is busy. */
const heldAdapters: GPUAdapter[] = [];

/** The platform backend's Dawn instance (WGSL language features, probes), created once with the kernel's toggles. */
export function dawnInstance(): GPU {
  return dawnInstanceFor(platformBackend());
}

/** What the kernel records of an adapter; `backend` is the backend whose instance returned it. */
export function describeAdapter(adapter: GPUAdapter, backend: BackendName): AdapterDescription {
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) limits[key] = (adapter.limits as unknown as Record<string, number>)[key];
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean; subgroupMinSize?: number; subgroupMaxSize?: number };
  const features = [...adapter.features].sort();
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    backend,
    // A compatibility request on a backend that can do core still gets a core-capable adapter.
    featureLevel: features.includes('core-features-and-limits') ? 'core' : featureLevelOf(backend),
    isFallbackAdapter: Boolean(info.isFallbackAdapter),
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
    features,
    limits,
  };
}

/** Every distinct adapter `backend`'s Dawn instance offers on this machine, each once. */
export async function findAdapters(backend: BackendName = platformBackend()): Promise<FoundAdapter[]> {
  const gpu = dawnInstanceFor(backend);
  const found: FoundAdapter[] = [];
  const seen = new Set<string>();
  for (const base of ADAPTER_QUERIES) {
    const query = adapterQueryFor(backend, base);
    const adapter = await gpu.requestAdapter(query);
    if (!adapter) continue;
    const description = describeAdapter(adapter, backend);
    const key = `${description.vendor}|${description.architecture}|${description.device}|${description.description}`;
    if (seen.has(key)) continue;
    seen.add(key);
    found.push({ description, query });
  }
  return found;
}

/**
 * Whether the adapter is a CPU implementation whose work runs on this process's threads (Mesa's
 * lavapipe and llvmpipe, SwiftShader, WARP): its loop rate is then timed by CPU time
 * (src/device/loopRate.ts). Vulkan marks lavapipe a fallback adapter; Mesa's GL drivers say so only
 * in their names.
 */
export function runsOnHostCpu(description: AdapterDescription): boolean {
  return description.isFallbackAdapter || /llvmpipe|lavapipe|softpipe|swiftshader|\bwarp\b/i.test(`${description.device} ${description.description} ${description.architecture}`);
}

/**
 * Opens real devices on each backend in order: `count` per backend (default: one per adapter the
 * backend offers), cycling over its adapters, so that tests can stand two devices on one adapter
 * for two GPUs. Ids run gpu0, gpu1, ... across backends. Each device gets the adapter's full
 * limits and features: the kernel, not the program, decides what the hardware may do. A backend
 * that offers no adapter: GPUNIX_E_NO_DEVICE naming it.
 */
export async function openDevices(options: { backends?: BackendName[]; count?: number; budgetBytes: number }): Promise<PhysicalDevice[]> {
  const backends = options.backends ?? [platformBackend()];
  const devices: PhysicalDevice[] = [];
  try {
    await openEach(backends, options, devices);
  } catch (error) {
    // A later backend failed: the devices opened so far are no one's, close them.
    for (const device of devices) device.destroy();
    throw error;
  }
  return devices;
}

/** openDevices' loop: opens into `devices` as it goes, so that a failure leaves what to close. */
async function openEach(backends: BackendName[], options: { count?: number; budgetBytes: number }, devices: PhysicalDevice[]): Promise<void> {
  for (const backend of backends) {
    const adapters = await findAdapters(backend);
    if (adapters.length === 0) {
      throw new GpunixError(ErrorCodes.NO_DEVICE, `no WebGPU adapter found on the ${backend} backend: ${noAdapterHint(backend)}`);
    }
    const count = options.count ?? adapters.length;
    for (let i = 0; i < count; i++) {
      const { query } = adapters[i % adapters.length];
      const adapter = await dawnInstanceFor(backend).requestAdapter(query);
      if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, `${backend} adapter ${i % adapters.length} disappeared while opening devices`);
      heldAdapters.push(adapter);
      const description = describeAdapter(adapter, backend);
      const requiredLimits: Record<string, number> = {};
      for (const [key, value] of Object.entries(description.limits)) requiredLimits[key] = value;
      const id = `gpu${devices.length}`;
      const device = await adapter.requestDevice({
        label: `gpunix-${id}`,
        requiredFeatures: description.features as GPUFeatureName[],
        requiredLimits,
      });
      const physical = new PhysicalDevice(id, description, device, options.budgetBytes);
      // The watchdog's unit: how many loop iterations an invocation runs per millisecond here.
      physical.loopRates = await measureLoopRates(device, JSON.stringify([description.backend, description.vendor, description.device, description.description]), runsOnHostCpu(description));
      devices.push(physical);
    }
  }
}
