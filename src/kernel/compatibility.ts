// Whether a device can hold a process: the one check that live migration (kernel.migrate) and
// restore (imageCheck.ts) make before anything moves. Devices differ by backend (Vulkan, OpenGL ES
// and OpenGL in WebGPU's compatibility mode) and vendor: fewer features, lower limits. A process
// moved onto a device that lacks what it uses would find its pipelines invalid there, silently,
// so the move is refused instead (GPUNIX_E_INCOMPATIBLE_DEVICE), naming what is missing.
//
// What a process uses: the features its device has (among them `core-features-and-limits`, which
// a core-defaulting adapter gives every device: a program that is to move to compatibility-mode
// devices asks for `requestAdapter({ featureLevel: 'compatibility' })`, which every device
// offers); the limits it asked for (a live process's requiredLimits, or, for an image, the limits
// it holds above its feature level's defaults, which only a request raises); and what its objects
// need whatever it asked for: each buffer's size, each bound range, each pipeline's workgroup size,
// workgroup storage, bind groups, bindings per stage and immediate data.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { WEBGPU_DEFAULT_LIMITS } from '../params.js';
import { COMPAT_DEFAULT_LIMITS } from '../vgpu/adapter.js';
import type { VirtualDevice } from '../vgpu/device.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from '../vgpu/layouts.js';
import { BindingSlots, factsOfLayout, layoutFacts, reflectEntry, type LayoutFacts } from '../vgpu/limits.js';
import { isAlignmentLimit } from '../vgpu/supported.js';
import { VirtualShaderModule } from '../vgpu/shaderModule.js';
import { VirtualBuffer } from '../vgpu/buffer.js';
import { bindGroupLayoutDescriptor } from '../webidl.js';
import type { ImageHeader } from './image.js';

/** The feature a core-defaulting adapter gives every device, which no compatibility-mode device has. */
const CORE_FEATURE = 'core-features-and-limits';

/** One pipeline, as far as the check needs it. */
export interface PipelineDemand {
  label: string;
  /** Its shader module (any object with the WGSL `code`: a live module is parsed once, cached by identity). */
  shader: { readonly code: string };
  entryPoint?: string;
  constants?: Record<string, number>;
  /** 'auto', or the explicit layout: each group's layout entries (null: an empty slot) and its immediate bytes. */
  layout: 'auto' | { groups: (readonly GPUBindGroupLayoutEntry[] | null)[]; immediateSize?: number };
}

/** What a process asks of the device it stands on. */
export interface DeviceDemands {
  /** Features it enabled. */
  features: readonly string[];
  /** Limits it asked for, by name, at its device's values. */
  limits: Readonly<Record<string, number>>;
  /** Where those figures come from, for the message ("requiredLimits", "the image's limits"). */
  limitsSource: string;
  pipelines: readonly PipelineDemand[];
  buffers: readonly { label: string; size: number }[];
  /** Buffer ranges its bind groups bind, and how. */
  bindings: readonly { label: string; kind: 'uniform' | 'storage'; size: number }[];
}

/** GPUShaderStage.COMPUTE's place in BindingSlots.counts (stages vertex, fragment, compute; kinds uniform, storage, …). */
const COMPUTE_UNIFORM = 2 * 5 + 0;
const COMPUTE_STORAGE = 2 * 5 + 1;

const quote = (label: string): string => JSON.stringify(label.length > 64 ? `${label.slice(0, 64)}...` : label);

/** `value` meets the demand `needed` for limit `name` (alignments are better smaller). */
function meets(name: string, value: number | undefined, needed: number): boolean {
  if (value === undefined) return false;
  return isAlignmentLimit(name) ? value <= needed : value >= needed;
}

/** The limits a device offers processes: its real device's (opened with the adapter's). */
function offered(device: PhysicalDevice): Record<string, number> {
  return device.device.limits as unknown as Record<string, number>;
}

/**
 * What of `demands` the device `target` lacks, one phrase each (`feature "shader-f16"`,
 * `maxBufferSize 3221225472 (requiredLimits; gpu1 has 2147483648)`); empty when it can hold the
 * process. When `source` is given (a live process's device now), a need that device does not meet
 * either is left out: the object needing it is invalid already, and stays invalid anywhere.
 */
export function whatIsMissing(demands: DeviceDemands, target: PhysicalDevice, source?: PhysicalDevice): string[] {
  const missing: string[] = [];
  const features = new Set(target.adapter.features);
  for (const feature of demands.features) if (!features.has(feature)) missing.push(`feature "${feature}"`);

  // The strongest demand on each limit, and who makes it.
  const needs = new Map<string, { value: number; by: string }>();
  const need = (name: string, value: number, by: string): void => {
    if (source && !meets(name, offered(source)[name], value)) return;
    const known = needs.get(name);
    if (!known || !meets(name, known.value, value)) needs.set(name, { value, by });
  };
  for (const [name, value] of Object.entries(demands.limits)) need(name, value, demands.limitsSource);
  for (const b of demands.buffers) need('maxBufferSize', b.size, `buffer ${quote(b.label)}`);
  for (const b of demands.bindings) {
    need(b.kind === 'uniform' ? 'maxUniformBufferBindingSize' : 'maxStorageBufferBindingSize', b.size, `a binding of buffer ${quote(b.label)}`);
  }
  for (const p of demands.pipelines) pipelineNeeds(p, (name, value) => need(name, value, `pipeline ${quote(p.label)}`));

  // gpunix's own bound: a buffer larger than the device's whole memory budget could never be resident
  // there (a live process's; an image's is refused buffer by buffer, GPUNIX_E_BAD_IMAGE, imageCheck.ts).
  const largest = demands.buffers.reduce<{ label: string; size: number } | null>((a, b) => (!a || b.size > a.size ? b : a), null);
  if (source && largest && largest.size > target.budgetBytes) missing.push(`memory for a buffer of ${largest.size} bytes (buffer ${quote(largest.label)}; ${target.id}'s memory budget is ${target.budgetBytes} bytes)`);
  const limits = offered(target);
  for (const [name, { value, by }] of needs) {
    if (!meets(name, limits[name], value)) missing.push(`${name} ${value} (${by}; ${target.id} has ${limits[name] ?? 'none'})`);
  }
  return missing;
}

/** Calls `need` with each limit a pipeline's entry point and layout need; nothing when its WGSL cannot be read here. */
function pipelineNeeds(p: PipelineDemand, need: (name: string, value: number) => void): void {
  const entry = reflectEntry(p.shader, p.entryPoint, p.constants);
  if (!entry) return;
  if (entry.workgroupSize) {
    const [x, y, z] = entry.workgroupSize;
    need('maxComputeWorkgroupSizeX', x);
    need('maxComputeWorkgroupSizeY', y);
    need('maxComputeWorkgroupSizeZ', z);
    need('maxComputeInvocationsPerWorkgroup', x * y * z);
  }
  if (entry.workgroupBytes !== null && entry.workgroupBytes > 0) need('maxComputeWorkgroupStorageSize', entry.workgroupBytes);
  let groups: Array<[number, LayoutFacts]>;
  let maxBinding = -1;
  if (p.layout === 'auto') {
    groups = [...entry.groups.entries()];
    for (const [, facts] of groups) for (const binding of facts.buffers.keys()) maxBinding = Math.max(maxBinding, binding);
    if (groups.length > 0) need('maxBindGroups', Math.max(...groups.map(([g]) => g)) + 1);
  } else {
    groups = [];
    for (const [g, entries] of p.layout.groups.entries()) {
      if (!entries) continue;
      groups.push([g, layoutFacts(entries)]);
      for (const e of entries) maxBinding = Math.max(maxBinding, Number(e.binding));
    }
    if (p.layout.groups.length > 0) need('maxBindGroups', p.layout.groups.length);
    if (p.layout.immediateSize) need('maxImmediateSize', p.layout.immediateSize);
  }
  if (maxBinding >= 0) need('maxBindingsPerBindGroup', maxBinding + 1);
  const total = new BindingSlots();
  for (const [, facts] of groups) total.plus(facts.slots);
  if (total.counts[COMPUTE_STORAGE] > 0) need('maxStorageBuffersPerShaderStage', total.counts[COMPUTE_STORAGE]);
  if (total.counts[COMPUTE_UNIFORM] > 0) need('maxUniformBuffersPerShaderStage', total.counts[COMPUTE_UNIFORM]);
  if (total.dynamicStorage > 0) need('maxDynamicStorageBuffersPerPipelineLayout', total.dynamicStorage);
  if (total.dynamicUniform > 0) need('maxDynamicUniformBuffersPerPipelineLayout', total.dynamicUniform);
}

/** A device's name for a message: its id, backend and adapter. */
export function describeTarget(device: PhysicalDevice): string {
  return `${device.id} (${device.adapter.backend}, ${device.adapter.description})`;
}

/** The coded refusal: `what` (e.g. "cannot migrate process 3 to gpu1 (opengles, …)") and every missing thing. */
export function incompatible(what: string, missing: readonly string[]): GpunixError {
  const hint = missing.includes(`feature "${CORE_FEATURE}"`)
    ? ` (a program that is to run on compatibility-mode devices asks for requestAdapter({ featureLevel: 'compatibility' }))`
    : '';
  return new GpunixError(ErrorCodes.INCOMPATIBLE_DEVICE, `${what}: the device lacks what the process uses: ${missing.join('; ')}${hint}`);
}

/** What a live process's virtual device uses (src/vgpu/device.ts keeps the record). */
export function demandsOfDevice(device: VirtualDevice): DeviceDemands {
  const used = device.inUse();
  const limits: Record<string, number> = {};
  // The device's value for each limit asked for: a request below the default got the default.
  for (const name of Object.keys(used.requiredLimits)) if (used.limits[name] !== undefined) limits[name] = used.limits[name];
  const pipelines: PipelineDemand[] = [];
  for (const pipeline of used.pipelines) {
    if (pipeline.refused) continue;
    const compute = pipeline.descriptor.compute;
    if (!(compute?.module instanceof VirtualShaderModule) || compute.module.refusal !== null) continue;
    const layout = pipeline.descriptor.layout;
    let demand: PipelineDemand['layout'] = 'auto';
    if (layout instanceof VirtualPipelineLayout) {
      demand = {
        groups: layout.bindGroupLayouts.map((l) => (l instanceof VirtualBindGroupLayout && 'descriptor' in l.source ? [...l.source.descriptor.entries] : null)),
        immediateSize: layout.immediateSize,
      };
    }
    pipelines.push({
      label: pipeline.label,
      shader: compute.module,
      entryPoint: compute.entryPoint,
      constants: compute.constants as Record<string, number> | undefined,
      layout: demand,
    });
  }
  const bindings: DeviceDemands['bindings'][number][] = [];
  for (const group of used.bindGroups) {
    if (group.refused) continue;
    const layout = group.descriptor.layout as unknown;
    const facts = layout instanceof VirtualBindGroupLayout ? factsOfLayout(layout) : null;
    if (!facts) continue;
    for (const entry of group.descriptor.entries) {
      const kind = facts.buffers.get(Number(entry.binding));
      const resource = entry.resource as unknown;
      const binding = (resource instanceof VirtualBuffer ? { buffer: resource } : resource) as GPUBufferBinding | undefined;
      if (!kind || !binding || !(binding.buffer instanceof VirtualBuffer)) continue;
      const size = binding.size === undefined ? binding.buffer.size - Number(binding.offset ?? 0) : Number(binding.size);
      bindings.push({ label: binding.buffer.label, kind: kind === 'uniform' ? 'uniform' : 'storage', size });
    }
  }
  return {
    features: used.features,
    limits,
    limitsSource: 'requiredLimits',
    pipelines,
    buffers: used.buffers.map((b) => ({ label: b.label, size: b.size })),
    bindings,
  };
}

/**
 * What the process of an image uses. The image records the device's limits and features as the
 * process saw them, not what it asked for: a limit better than its feature level's default was
 * asked for (only a request raises one).
 */
export function demandsOfImage(image: ImageHeader): DeviceDemands {
  const defaults = image.features.includes(CORE_FEATURE) ? WEBGPU_DEFAULT_LIMITS : COMPAT_DEFAULT_LIMITS;
  const limits: Record<string, number> = {};
  for (const [name, value] of Object.entries(image.limits)) {
    const standard = defaults[name];
    if (standard !== undefined && typeof value === 'number' && value !== standard && meets(name, value, standard)) limits[name] = value;
  }
  const shaders = new Map(image.shaders.map((s) => [s.id, { code: s.code }] as const));
  const pipelines: PipelineDemand[] = image.pipelines.map((p) => ({
    label: p.label,
    shader: shaders.get(p.shader) ?? { code: '' },
    entryPoint: p.entryPoint,
    constants: p.constants,
    layout: p.layout === 'auto' ? 'auto' : { groups: p.layout.bindGroupLayouts.map(layoutEntries) },
  }));
  const buffers = new Map(image.buffers.map((b) => [b.id, b] as const));
  const bindings: DeviceDemands['bindings'][number][] = [];
  for (const g of image.bindGroups) {
    let facts: LayoutFacts | null = null;
    if ('pipeline' in g.layout) {
      const p = pipelines[image.pipelines.findIndex((q) => q.id === (g.layout as { pipeline: number }).pipeline)];
      if (p && p.layout !== 'auto') {
        const entries = p.layout.groups[g.layout.group];
        facts = entries ? layoutFacts(entries) : null;
      } else if (p) {
        facts = reflectEntry(p.shader, p.entryPoint, p.constants)?.groups.get(g.layout.group) ?? null;
      }
    } else {
      const entries = layoutEntries(g.layout.descriptor);
      facts = entries ? layoutFacts(entries) : null;
    }
    if (!facts) continue;
    for (const e of g.entries) {
      const kind = facts.buffers.get(e.binding);
      const buffer = buffers.get(e.buffer);
      if (!kind || !buffer) continue;
      bindings.push({ label: buffer.label, kind: kind === 'uniform' ? 'uniform' : 'storage', size: e.size ?? buffer.size - (e.offset ?? 0) });
    }
  }
  return {
    features: image.features,
    limits,
    limitsSource: "the image's limits",
    pipelines,
    buffers: image.buffers.map((b) => ({ label: b.label, size: b.size })),
    bindings,
  };
}

/** An image's bind group layout (opaque JSON) as entries; null when it is not one (imageCheck.ts refuses it then). */
function layoutEntries(raw: unknown): GPUBindGroupLayoutEntry[] | null {
  if (raw === null) return null;
  try {
    return [...bindGroupLayoutDescriptor(raw).entries];
  } catch {
    return null;
  }
}
