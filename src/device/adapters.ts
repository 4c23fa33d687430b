// Finding and opening the machine's WebGPU adapters through Dawn (npm `webgpu`). This file is
// the only place that calls Dawn's `create()`, and it passes only the kernel's own options.

import { measureLoopRates } from './loopRate.js';
import { create } from 'webgpu';
import { ErrorCodes, GpunixError } from '../errors.js';
import { KERNEL_DAWN_OPTIONS } from '../params.js';
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

let dawn: GPU | null = null;
/** Adapters behind the kernel's devices: held, because Dawn may hang if one is collected while its device is busy. */
const heldAdapters: GPUAdapter[] = [];

/** The process-wide Dawn instance, created once with the kernel's toggles. */
export function dawnInstance(): GPU {
  dawn ??= create([...KERNEL_DAWN_OPTIONS]);
  return dawn;
}

function defaultBackend(): string {
  if (process.platform === 'darwin') return 'metal';
  if (process.platform === 'win32') return 'd3d12';
  return 'vulkan';
}

export function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) limits[key] = (adapter.limits as unknown as Record<string, number>)[key];
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean; subgroupMinSize?: number; subgroupMaxSize?: number };
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    backend: process.env.DAWNNODE_BACKEND ?? defaultBackend(),
    isFallbackAdapter: Boolean(info.isFallbackAdapter),
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
    features: [...adapter.features].sort(),
    limits,
  };
}

/** Every distinct adapter Dawn offers on this machine, each once. */
export async function findAdapters(): Promise<FoundAdapter[]> {
  const gpu = dawnInstance();
  const found: FoundAdapter[] = [];
  const seen = new Set<string>();
  for (const query of ADAPTER_QUERIES) {
    const adapter = await gpu.requestAdapter(query);
    if (!adapter) continue;
    const description = describeAdapter(adapter);
    const key = `${description.vendor}|${description.architecture}|${description.device}|${description.description}`;
    if (seen.has(key)) continue;
    seen.add(key);
    found.push({ description, query });
  }
  return found;
}

/**
 * Opens `count` real devices (default: one per adapter), cycling over the adapters, so that
 * tests can stand two devices on one adapter for two GPUs. Each device gets the adapter's full
 * limits and features: the kernel, not the program, decides what the hardware may do.
 */
export async function openDevices(options: { count?: number; budgetBytes: number }): Promise<PhysicalDevice[]> {
  const adapters = await findAdapters();
  if (adapters.length === 0) {
    throw new GpunixError(
      ErrorCodes.NO_DEVICE,
      'no WebGPU adapter found: install a Vulkan driver (on a machine without a GPU, run scripts/setup.sh to install lavapipe)',
    );
  }
  const count = options.count ?? adapters.length;
  const devices: PhysicalDevice[] = [];
  for (let i = 0; i < count; i++) {
    const { query } = adapters[i % adapters.length];
    const adapter = await dawnInstance().requestAdapter(query);
    if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, `adapter ${i % adapters.length} disappeared while opening devices`);
    heldAdapters.push(adapter);
    const description = describeAdapter(adapter);
    const requiredLimits: Record<string, number> = {};
    for (const [key, value] of Object.entries(description.limits)) requiredLimits[key] = value;
    const device = await adapter.requestDevice({
      label: `gpunix-gpu${i}`,
      requiredFeatures: description.features as GPUFeatureName[],
      requiredLimits,
    });
    const physical = new PhysicalDevice(`gpu${i}`, description, device, options.budgetBytes);
    // The watchdog's unit: how many loop iterations an invocation runs per millisecond here.
    physical.loopRates = await measureLoopRates(device, JSON.stringify([description.backend, description.vendor, description.device, description.description]));
    devices.push(physical);
  }
  return devices;
}
