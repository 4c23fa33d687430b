// A process's limits and features, enforced at the process's values. Every process stands on the
// kernel's real device, opened with the adapter's full limits and every feature, so Dawn alone
// would accept what the process's own device must refuse (a workgroup_size(512) on a device whose
// maxComputeWorkgroupSizeX is 256). The checks here run where WebGPU validates each limit, before
// the call reaches Dawn, and word the error as Dawn words it for its own limits. They are cheap:
// a per-device table says which limits the process holds below the real device (only those are
// checked), a layout's binding counts are computed once per layout, and a module is parsed once.

import type { ExpressionElem, FnElem, GlobalDeclarationElem, GlobalVarElem, StructElem, TypeRefElem } from 'wesl';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import { attributeParams, declName, evalInteger, parseWgsl, referencedNames, skipTrivia, type ParsedModule } from '../wgsl/source.js';

// ---- binding slots (createBindGroupLayout, createPipelineLayout, 'auto' layouts) -----------------

type SlotKind = 'uniform' | 'storage' | 'sampler' | 'sampledTexture' | 'storageTexture';
const SLOT_KINDS: readonly SlotKind[] = ['uniform', 'storage', 'sampler', 'sampledTexture', 'storageTexture'];
/** The per-stage limit of each kind, and Dawn's words for it. */
const SLOT_LIMIT: Readonly<Record<SlotKind, [limit: string, words: string]>> = {
  uniform: ['maxUniformBuffersPerShaderStage', 'uniform buffers'],
  storage: ['maxStorageBuffersPerShaderStage', 'storage buffers'],
  sampler: ['maxSamplersPerShaderStage', 'samplers'],
  sampledTexture: ['maxSampledTexturesPerShaderStage', 'sampled textures'],
  storageTexture: ['maxStorageTexturesPerShaderStage', 'storage textures'],
};
const STAGES: ReadonlyArray<[bit: number, name: string]> = [
  [1, 'Vertex'],
  [2, 'Fragment'],
  [4, 'Compute'],
];

/** What a set of bind group layouts uses of the per-stage and per-layout binding limits. */
export class BindingSlots {
  /** counts[stage * 5 + kind]: bindings of that kind visible to that stage. */
  readonly counts = new Array<number>(STAGES.length * SLOT_KINDS.length).fill(0);
  dynamicUniform = 0;
  dynamicStorage = 0;

  add(kind: SlotKind, visibility: number, n = 1): void {
    for (let s = 0; s < STAGES.length; s++) if (visibility & STAGES[s][0]) this.counts[s * SLOT_KINDS.length + SLOT_KINDS.indexOf(kind)] += n;
  }
  plus(other: BindingSlots): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
    this.dynamicUniform += other.dynamicUniform;
    this.dynamicStorage += other.dynamicStorage;
  }
}

/** How a layout entry (or a shader's resource) binds a buffer, if it does. */
export type BufferBindingKind = 'uniform' | 'storage' | 'read-only-storage';

/** What the checks need of a bind group layout, computed once per layout. */
export interface LayoutFacts {
  slots: BindingSlots;
  /** binding number → how it binds a buffer (entries that bind no buffer are absent). */
  buffers: Map<number, BufferBindingKind>;
  /** The kinds of its dynamic buffer bindings, in binding order (the order of dynamic offsets). */
  dynamic: BufferBindingKind[];
}

/** The facts of a bind group layout descriptor's entries (already converted). */
export function layoutFacts(entries: Iterable<GPUBindGroupLayoutEntry>): LayoutFacts {
  const slots = new BindingSlots();
  const buffers = new Map<number, BufferBindingKind>();
  const dynamic: Array<[number, BufferBindingKind]> = [];
  for (const entry of entries) {
    const visibility = Number(entry.visibility);
    if (entry.buffer) {
      const kind = (entry.buffer.type ?? 'uniform') as BufferBindingKind;
      slots.add(kind === 'uniform' ? 'uniform' : 'storage', visibility);
      buffers.set(Number(entry.binding), kind);
      if (entry.buffer.hasDynamicOffset) {
        if (kind === 'uniform') slots.dynamicUniform++;
        else slots.dynamicStorage++;
        dynamic.push([Number(entry.binding), kind]);
      }
    }
    if (entry.sampler) slots.add('sampler', visibility);
    if (entry.texture) slots.add('sampledTexture', visibility);
    if (entry.storageTexture) slots.add('storageTexture', visibility);
    if ((entry as { externalTexture?: unknown }).externalTexture) {
      // WebGPU: an external texture takes 4 sampled textures, 1 sampler and 1 uniform buffer.
      slots.add('sampledTexture', visibility, 4);
      slots.add('sampler', visibility);
      slots.add('uniform', visibility);
    }
  }
  dynamic.sort((a, b) => a[0] - b[0]);
  return { slots, buffers, dynamic: dynamic.map(([, kind]) => kind) };
}

// ---- the device's table --------------------------------------------------------------------------

/** Dawn's sentence about a higher adapter limit, when the adapter has one. */
function higher(adapter: Readonly<Record<string, number>>, name: string, value: number): string {
  const offered = adapter[name];
  return offered !== undefined && offered > value
    ? ` This adapter supports a higher ${name} of ${offered}, which can be specified in requiredLimits when calling requestDevice(). Limits differ by hardware, so always check the adapter limits prior to requesting a higher limit.`
    : '';
}

/**
 * A process device's limits next to its real device's: which checks Dawn already makes at the
 * process's value (skipped here) and which gpunix must make. Made once per device.
 */
export class ProcessLimits {
  /** Per-stage/per-layout binding limits lower than the real device's: slot counts must be checked. */
  private readonly slotsBelow: boolean;
  /** Workgroup size, invocations or storage limits lower than the real device's. */
  readonly workgroupBelow: boolean;
  readonly alignmentBelow: boolean;
  readonly bindingSizeBelow: boolean;
  /** maxComputeWorkgroupsPerDimension of the process and of the real device, when the process's is lower; else null. */
  readonly workgroupsPerDimension: { limit: number; realLimit: number } | null;
  /** The real device's offset alignments (what Dawn checks). */
  readonly realUniformAlignment: number;
  readonly realStorageAlignment: number;

  constructor(
    readonly limits: Readonly<Record<string, number>>,
    private readonly real: Readonly<Record<string, number>>,
    private readonly adapter: Readonly<Record<string, number>>,
  ) {
    const below = (name: string) => limits[name] !== undefined && real[name] !== undefined && limits[name] < real[name];
    const above = (name: string) => limits[name] !== undefined && real[name] !== undefined && limits[name] > real[name];
    this.slotsBelow = [
      ...SLOT_KINDS.map((k) => SLOT_LIMIT[k][0]),
      'maxDynamicUniformBuffersPerPipelineLayout',
      'maxDynamicStorageBuffersPerPipelineLayout',
      'maxStorageBuffersInVertexStage',
      'maxStorageBuffersInFragmentStage',
      'maxStorageTexturesInVertexStage',
      'maxStorageTexturesInFragmentStage',
      'maxBindGroups',
      'maxBindingsPerBindGroup',
    ].some(below);
    this.workgroupBelow = ['maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupSizeZ', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupStorageSize'].some(below);
    this.alignmentBelow = above('minUniformBufferOffsetAlignment') || above('minStorageBufferOffsetAlignment');
    this.bindingSizeBelow = below('maxUniformBufferBindingSize') || below('maxStorageBufferBindingSize');
    this.workgroupsPerDimension = below('maxComputeWorkgroupsPerDimension')
      ? { limit: limits.maxComputeWorkgroupsPerDimension, realLimit: real.maxComputeWorkgroupsPerDimension }
      : null;
    this.realUniformAlignment = real.minUniformBufferOffsetAlignment;
    this.realStorageAlignment = real.minStorageBufferOffsetAlignment;
  }

  static of(limits: Readonly<Record<string, number>>, physical: PhysicalDevice): ProcessLimits {
    return new ProcessLimits(limits, physical.device.limits as unknown as Record<string, number>, physical.adapter.limits as unknown as Record<string, number>);
  }

  /** Dawn's error for binding slots over a limit (one layout's, or a pipeline layout's sum); null if within. */
  slotRefusal(slots: BindingSlots): string | null {
    if (!this.slotsBelow) return null;
    const l = this.limits;
    for (let s = 0; s < STAGES.length; s++) {
      for (let k = 0; k < SLOT_KINDS.length; k++) {
        const n = slots.counts[s * SLOT_KINDS.length + k];
        const [name, words] = SLOT_LIMIT[SLOT_KINDS[k]];
        if (l[name] !== undefined && n > l[name]) {
          return `The number of ${words} (${n}) in the ${STAGES[s][1]} stage exceeds the maximum per-stage limit (${l[name]}).${higher(this.adapter, name, l[name])}`;
        }
        // The vertex and fragment stages have limits of their own for storage resources.
        const stageName = SLOT_KINDS[k] === 'storage' ? 'StorageBuffers' : SLOT_KINDS[k] === 'storageTexture' ? 'StorageTextures' : null;
        if (stageName && s < 2) {
          const own = `max${stageName}In${STAGES[s][1]}Stage`;
          if (l[own] !== undefined && n > l[own]) {
            return `The number of ${words} (${n}) in the ${STAGES[s][1]} stage exceeds the maximum ${STAGES[s][1].toLowerCase()} stage limit (${l[own]}).${higher(this.adapter, own, l[own])}`;
          }
        }
      }
    }
    for (const [n, name, words] of [
      [slots.dynamicUniform, 'maxDynamicUniformBuffersPerPipelineLayout', 'dynamic uniform buffers'],
      [slots.dynamicStorage, 'maxDynamicStorageBuffersPerPipelineLayout', 'dynamic storage buffers'],
    ] as const) {
      if (l[name] !== undefined && n > l[name]) {
        return `The number of ${words} (${n}) exceeds the maximum per-pipeline-layout limit (${l[name]}).${higher(this.adapter, name, l[name])}`;
      }
    }
    return null;
  }

  /** createBindGroupLayout: binding numbers and slot counts, at the process's limits. */
  bindGroupLayoutRefusal(entries: readonly GPUBindGroupLayoutEntry[], facts: LayoutFacts): string | null {
    if (!this.slotsBelow) return null;
    const max = this.limits.maxBindingsPerBindGroup;
    for (const entry of entries) {
      if (max !== undefined && Number(entry.binding) >= max) {
        return `Binding number (${Number(entry.binding)}) exceeds the maxBindingsPerBindGroup limit (${max}).`;
      }
    }
    return this.slotRefusal(facts.slots);
  }

  /** createPipelineLayout: the number of groups and the summed slot counts. */
  pipelineLayoutRefusal(count: number, slots: BindingSlots): string | null {
    if (!this.slotsBelow) return null;
    const max = this.limits.maxBindGroups;
    if (max !== undefined && count > max) {
      return `bindGroupLayoutCount (${count}) is larger than the maximum allowed (${max}).${higher(this.adapter, 'maxBindGroups', max)}`;
    }
    return this.slotRefusal(slots);
  }

  /** createBindGroup: one buffer binding's offset alignment and size, for a binding of `kind`. */
  bufferBindingRefusal(kind: BufferBindingKind, offset: number, bufferSize: number, size: number | undefined, bufferLabel: string): string | null {
    const uniform = kind === 'uniform';
    if (this.alignmentBelow) {
      const alignment = this.limits[uniform ? 'minUniformBufferOffsetAlignment' : 'minStorageBufferOffsetAlignment'];
      if (alignment && offset % alignment !== 0) {
        return `Offset (${offset}) of ${describeBuffer(bufferLabel)} does not satisfy the minimum BufferBindingType::${uniform ? 'Uniform' : kind === 'storage' ? 'Storage' : 'ReadOnlyStorage'} alignment (${alignment}).`;
      }
    }
    if (this.bindingSizeBelow) {
      const max = this.limits[uniform ? 'maxUniformBufferBindingSize' : 'maxStorageBufferBindingSize'];
      const bound = size ?? bufferSize - offset;
      if (max !== undefined && bound > max && bound >= 0) {
        return `Binding size (${bound}) of ${describeBuffer(bufferLabel)} is larger than the maximum ${uniform ? 'uniform' : 'storage'} buffer binding size (${max}).${higher(this.adapter, uniform ? 'maxUniformBufferBindingSize' : 'maxStorageBufferBindingSize', max)}`;
      }
    }
    return null;
  }

  /** setBindGroup: the dynamic offsets' alignment, for a layout whose dynamic bindings are `kinds`. */
  dynamicOffsetRefusal(kinds: readonly BufferBindingKind[], offsets: ArrayLike<number>): { index: number; message: string } | null {
    if (!this.alignmentBelow || offsets.length !== kinds.length) return null;
    for (let i = 0; i < kinds.length; i++) {
      const alignment = this.limits[kinds[i] === 'uniform' ? 'minUniformBufferOffsetAlignment' : 'minStorageBufferOffsetAlignment'];
      if (alignment && offsets[i] % alignment !== 0) return { index: i, message: `Dynamic Offset[${i}] (${offsets[i]}) is not ${alignment} byte aligned.` };
    }
    return null;
  }

  /**
   * createComputePipeline[Async]: the entry point's workgroup size (per dimension and product),
   * its workgroup storage and, for an 'auto' layout, the bindings it uses. Null when within, or
   * when the shader cannot be read here (Dawn's own verdict then stands).
   */
  pipelineRefusal(shader: { readonly code: string }, entryPoint: string | undefined, constants: Record<string, number> | undefined, auto: boolean): string | null {
    if (!this.workgroupBelow && !(auto && this.slotsBelow)) return null;
    const entry = reflectEntry(shader, entryPoint, constants);
    if (!entry) return null;
    const l = this.limits;
    if (this.workgroupBelow && entry.workgroupSize) {
      const [x, y, z] = entry.workgroupSize;
      const [mx, my, mz] = [l.maxComputeWorkgroupSizeX, l.maxComputeWorkgroupSizeY, l.maxComputeWorkgroupSizeZ];
      if (x > mx || y > my || z > mz) {
        const offers = (['X', 'Y', 'Z'] as const).filter((d) => (this.adapter[`maxComputeWorkgroupSize${d}`] ?? 0) > l[`maxComputeWorkgroupSize${d}`]);
        const sentence =
          offers.length === 0
            ? ''
            : ` This adapter supports higher ${offers.map((d, i) => `${i > 0 && i === offers.length - 1 ? 'and ' : ''}maxComputeWorkgroupSize${d} of ${this.adapter[`maxComputeWorkgroupSize${d}`]}`).join(offers.length > 2 ? ', ' : ' ')}, which can be specified in requiredLimits when calling requestDevice(). Limits differ by hardware, so always check the adapter limits prior to requesting a higher limit.`;
        return `Entry-point uses workgroup_size(${x}, ${y}, ${z}) that exceeds the maximum allowed (${mx}, ${my}, ${mz}).${sentence}`;
      }
      const invocations = x * y * z;
      const max = l.maxComputeInvocationsPerWorkgroup;
      if (invocations > max) {
        return `The total number of workgroup invocations (${invocations}) exceeds the maximum allowed (${max}).${higher(this.adapter, 'maxComputeInvocationsPerWorkgroup', max)}`;
      }
    }
    if (this.workgroupBelow && entry.workgroupBytes !== null) {
      const max = l.maxComputeWorkgroupStorageSize;
      if (entry.workgroupBytes > max) {
        return `The total use of workgroup storage (${entry.workgroupBytes} bytes) is larger than the maximum allowed (${max} bytes).${higher(this.adapter, 'maxComputeWorkgroupStorageSize', max)}`;
      }
    }
    if (auto && this.slotsBelow) {
      const total = new BindingSlots();
      for (const group of entry.groups.values()) {
        const refusal = this.slotRefusal(group.slots);
        if (refusal) return refusal;
        total.plus(group.slots);
      }
      return this.slotRefusal(total);
    }
    return null;
  }
}

function describeBuffer(label: string): string {
  return label ? `[Buffer "${label}"]` : '[Buffer (unlabeled)]';
}

// ---- WGSL: enable directives -----------------------------------------------------------------------

/** The WebGPU feature each WGSL extension needs (extensions not listed are left to Dawn). */
const EXTENSION_FEATURES: Readonly<Record<string, string>> = {
  f16: 'shader-f16',
  subgroups: 'subgroups',
  clip_distances: 'clip-distances',
  dual_source_blending: 'dual-source-blending',
  primitive_index: 'primitive-index',
};

/**
 * Dawn's compilation error for the first `enable` of an extension whose feature the device lacks
 * (Dawn's real device has every feature); null when every enabled extension is allowed. Reads only
 * the directives, which WGSL puts before every declaration.
 */
export function enableRefusal(code: string, features: ReadonlySet<string>): { message: string; line: number; column: number; excerpt: string } | null {
  let i = skipTrivia(code, 0);
  for (let directives = 0; directives < 64; directives++) {
    const word = /^[A-Za-z_][A-Za-z0-9_]*/.exec(code.slice(i, i + 16))?.[0];
    if (word !== 'enable' && word !== 'requires' && word !== 'diagnostic') return null;
    const end = code.indexOf(';', i);
    if (end < 0) return null;
    if (word === 'enable') {
      let at = i + word.length;
      for (const part of code.slice(at, end).split(',')) {
        const name = part.trim();
        const offset = at + part.indexOf(name);
        at += part.length + 1;
        const feature = EXTENSION_FEATURES[name];
        if (feature && !features.has(feature)) {
          const [line, column] = lineColumn(code, offset);
          // Dawn quotes the line and underlines the name.
          const text = code.split(/\r?\n/)[line - 1] ?? '';
          const excerpt = `${text}\n${' '.repeat(column - 1)}${'^'.repeat(name.length)}`;
          return { message: `extension '${name}' is not allowed in the current environment`, line, column, excerpt };
        }
      }
    }
    i = skipTrivia(code, end + 1);
  }
  return null;
}

function lineColumn(code: string, offset: number): [number, number] {
  let line = 1;
  let start = 0;
  for (let i = 0; i < offset; i++) if (code[i] === '\n') (line++, (start = i + 1));
  return [line, offset - start + 1];
}

// ---- WGSL: what an entry point uses ---------------------------------------------------------------

interface EntryFacts {
  workgroupSize: [number, number, number] | null;
  /** The workgroup storage of the program's own variables the entry uses; null when unknown. */
  workgroupBytes: number | null;
  /** The bind groups an 'auto' layout derives: group → its facts. */
  groups: Map<number, LayoutFacts>;
}

const parsedModules = new WeakMap<object, ParsedModule>();

/** A shader module's code, parsed once per module (as long as the module lives). */
function parsed(module: { readonly code: string }): ParsedModule {
  let found = parsedModules.get(module);
  if (!found) parsedModules.set(module, (found = parseWgsl(module.code)));
  return found;
}

/** What the entry point of `shader` uses, with `constants` applied to overrides; null when unreadable here. */
export function reflectEntry(shader: { readonly code: string }, entryPoint: string | undefined, constants: Record<string, number> | undefined): EntryFacts | null {
  const module = parsed(shader);
  if (!module.ok) return null;
  const decls = module.decls;
  const computeFns = decls.filter((d): d is FnElem => d.kind === 'fn' && attributeParams(d, 'compute') !== undefined);
  const entry = entryPoint === undefined ? (computeFns.length === 1 ? computeFns[0] : undefined) : computeFns.find((f) => f.name.ident.originalName === entryPoint);
  if (!entry) return null;
  const value = (e: ExpressionElem) => evalInteger(e, decls, constants ?? {});

  let workgroupSize: [number, number, number] | null = null;
  const params = attributeParams(entry, 'workgroup_size');
  if (params && params.length >= 1 && params.length <= 3) {
    const dims = params.map((p) => value(p.expression));
    if (dims.every((d) => d !== undefined)) workgroupSize = [dims[0]!, dims[1] ?? 1, dims[2] ?? 1];
  }

  const used = usedNames(entry, decls);
  let workgroupBytes: number | null = 0;
  const groups = new Map<number, LayoutFacts>();
  for (const d of decls) {
    if (d.kind !== 'gvar' || !used.has(d.name.decl.ident.originalName)) continue;
    const space = d.template?.[0]?.name;
    if (space === 'workgroup') {
      const size: number | undefined = workgroupBytes === null ? undefined : layoutOf(d.name.typeRef, decls, value, 0)?.size;
      workgroupBytes = size === undefined ? null : workgroupBytes! + roundUp(16, size);
      continue;
    }
    const group = attributeParams(d, 'group')?.[0];
    const binding = attributeParams(d, 'binding')?.[0];
    if (!group || !binding) continue;
    const g = value(group.expression);
    const b = value(binding.expression);
    if (g === undefined || b === undefined) continue;
    let facts = groups.get(g);
    if (!facts) groups.set(g, (facts = { slots: new BindingSlots(), buffers: new Map(), dynamic: [] }));
    const kind = resourceKind(d, decls);
    if (!kind) continue;
    facts.slots.add(kind === 'read-only-storage' ? 'storage' : kind, 4);
    if (kind === 'uniform' || kind === 'storage' || kind === 'read-only-storage') facts.buffers.set(b, kind);
  }
  return { workgroupSize, workgroupBytes, groups };
}

/** The binding a resource variable takes in an 'auto' layout. */
function resourceKind(d: GlobalVarElem, decls: GlobalDeclarationElem[]): BufferBindingKind | 'sampler' | 'sampledTexture' | 'storageTexture' | undefined {
  const space = d.template?.[0]?.name;
  if (space === 'uniform') return 'uniform';
  if (space === 'storage') return d.template?.[1]?.name === 'read_write' ? 'storage' : 'read-only-storage';
  const type = resolveAlias(d.name.typeRef, decls)?.name.originalName ?? '';
  if (type.startsWith('sampler')) return 'sampler';
  if (type.startsWith('texture_storage')) return 'storageTexture';
  if (type.startsWith('texture_')) return 'sampledTexture';
  return undefined;
}

/** The parameters of a declaration's `@name(...)` attribute; undefined when it has none. */

/** Module-scope names the entry may reach: its references and, transitively, its callees'. */
function usedNames(entry: FnElem, decls: GlobalDeclarationElem[]): Set<string> {
  const fns = new Map(decls.filter((d): d is FnElem => d.kind === 'fn').map((f) => [f.name.ident.originalName, f]));
  const seen = new Set<string>();
  const out = new Set<string>();
  const visit = (fn: FnElem) => {
    if (seen.has(fn.name.ident.originalName)) return;
    seen.add(fn.name.ident.originalName);
    for (const n of referencedNames(fn.name.ident.dependentScope)) {
      out.add(n);
      const callee = fns.get(n);
      if (callee) visit(callee);
    }
  };
  visit(entry);
  return out;
}


function roundUp(k: number, n: number): number {
  return Math.ceil(n / k) * k;
}

/** The type an alias names (through aliases), or the reference itself. */
function resolveAlias(ref: TypeRefElem | undefined, decls: GlobalDeclarationElem[]): TypeRefElem | undefined {
  for (let hops = 0; ref && !ref.templateParams && hops < 16; hops++) {
    const target = ref.name.originalName;
    const alias = decls.find((d) => d.kind === 'alias' && declName(d) === target);
    if (alias?.kind !== 'alias') return ref;
    ref = alias.typeRef;
  }
  return ref;
}

const SCALARS: Readonly<Record<string, number>> = { f32: 4, i32: 4, u32: 4, bool: 4, f16: 2 };
const SUFFIX: Readonly<Record<string, string>> = { f: 'f32', i: 'i32', u: 'u32', h: 'f16' };

/** WGSL's size and alignment of a type (memory layout rules); undefined when not computable here. */
function layoutOf(
  ref: TypeRefElem | undefined,
  decls: GlobalDeclarationElem[],
  value: (e: ExpressionElem) => number | undefined,
  depth: number,
): { size: number; align: number } | undefined {
  if (!ref || depth > 16) return undefined;
  ref = resolveAlias(ref, decls);
  if (!ref) return undefined;
  const name = ref.name.originalName;
  const params = ref.templateParams ?? [];
  // A template argument that names a type plainly (`f32`, `S`) is parsed as a reference, not a type.
  const typeParam = (i: number): TypeRefElem | undefined => {
    const p = params[i] as unknown as TypeRefElem | ExpressionElem | undefined;
    if (p?.kind === 'type') return p;
    if (p?.kind === 'ref') return { kind: 'type', name: p.ident, start: p.start, end: p.end } as unknown as TypeRefElem;
    return undefined;
  };
  const scalarOf = (i: number) => {
    const t = typeParam(i);
    return t ? SCALARS[t.name.originalName] : undefined;
  };
  if (name in SCALARS) return { size: SCALARS[name], align: SCALARS[name] };
  if (name === 'atomic') return { size: 4, align: 4 };
  let m = /^vec([234])([fiuh]?)$/.exec(name);
  if (m) {
    const s = m[2] ? SCALARS[SUFFIX[m[2]]] : scalarOf(0);
    if (s === undefined) return undefined;
    const n = Number(m[1]);
    return { size: n * s, align: (n === 2 ? 2 : 4) * s };
  }
  m = /^mat([234])x([234])([fh]?)$/.exec(name);
  if (m) {
    const s = m[3] ? SCALARS[SUFFIX[m[3]]] : scalarOf(0);
    if (s === undefined) return undefined;
    const [c, r] = [Number(m[1]), Number(m[2])];
    const align = (r === 2 ? 2 : 4) * s;
    return { size: c * roundUp(align, r * s), align };
  }
  if (name === 'array') {
    const element = layoutOf(typeParam(0), decls, value, depth + 1);
    const count = params[1] ? value(params[1]) : undefined;
    if (!element || count === undefined) return undefined;
    return { size: count * roundUp(element.align, element.size), align: element.align };
  }
  const struct = decls.find((d): d is StructElem => d.kind === 'struct' && declName(d) === name);
  if (!struct || params.length > 0) return undefined;
  let offset = 0;
  let align = 1;
  for (const member of struct.members) {
    const own = layoutOf(member.typeRef, decls, value, depth + 1);
    if (!own) return undefined;
    const alignAttr = attributeParams(member, 'align')?.[0];
    const sizeAttr = attributeParams(member, 'size')?.[0];
    const a = alignAttr ? value(alignAttr.expression) : own.align;
    const s = sizeAttr ? value(sizeAttr.expression) : own.size;
    if (a === undefined || s === undefined) return undefined;
    offset = roundUp(a, offset) + s;
    align = Math.max(align, a);
  }
  return { size: roundUp(align, offset), align };
}

// ---- invalid real objects -------------------------------------------------------------------------

const VISIBILITY_COMPUTE = 4;

/** Invalid real objects of each kind, labelled as the program's, made with their errors dropped. */
export const invalidReal = {
  bindGroupLayout(physical: PhysicalDevice, label: string | undefined): GPUBindGroupLayout {
    // Two entries with one binding number: refused by every implementation.
    const entries = [
      { binding: 0, visibility: VISIBILITY_COMPUTE, buffer: {} },
      { binding: 0, visibility: VISIBILITY_COMPUTE, buffer: {} },
    ];
    return physical.capture(() => physical.device.createBindGroupLayout({ label, entries })).value;
  },
  pipelineLayout(physical: PhysicalDevice, label: string | undefined): GPUPipelineLayout {
    const layout = invalidReal.bindGroupLayout(physical, undefined);
    return physical.capture(() => physical.device.createPipelineLayout({ label, bindGroupLayouts: [layout] })).value;
  },
  bindGroup(physical: PhysicalDevice, label: string | undefined): GPUBindGroup {
    const layout = invalidReal.bindGroupLayout(physical, undefined);
    return physical.capture(() => physical.device.createBindGroup({ label, layout, entries: [] })).value;
  },
  computePipeline(physical: PhysicalDevice, label: string | undefined): GPUComputePipeline {
    // An entry point no WGSL identifier can name, in a module that is well-formed whatever the program gave.
    return physical.capture(() =>
      physical.device.createComputePipeline({ label, layout: 'auto', compute: { module: physical.device.createShaderModule({ code: '' }), entryPoint: 'gpunix: refused' } }),
    ).value;
  },
};

// ---- facts of the program's objects, once each --------------------------------------------------------

const layoutFactsCache = new WeakMap<object, LayoutFacts | null>();

/** Remembers the facts of a layout made from a descriptor (computed at its creation). */
export function rememberLayoutFacts(layout: object, facts: LayoutFacts): void {
  layoutFactsCache.set(layout, facts);
}

/**
 * The facts of a bind group layout: from its descriptor, or, for a pipeline's 'auto' layout, from
 * what the pipeline's entry point uses of that group; null when unknown (no check is made then).
 */
export function factsOfLayout(layout: { source: { descriptor: GPUBindGroupLayoutDescriptor } | { pipeline: object; index: number } }): LayoutFacts | null {
  let facts = layoutFactsCache.get(layout);
  if (facts !== undefined) return facts;
  const source = layout.source;
  if ('descriptor' in source) {
    facts = layoutFacts(source.descriptor.entries);
  } else {
    const descriptor = (source.pipeline as { descriptor?: GPUComputePipelineDescriptor }).descriptor;
    // A pipeline with an explicit layout hands out that layout's own bind group layouts.
    const explicit = (descriptor?.layout as { bindGroupLayouts?: readonly unknown[] } | undefined)?.bindGroupLayouts?.[source.index];
    if (explicit && typeof explicit === 'object' && 'source' in explicit) return factsOfLayout(explicit as Parameters<typeof factsOfLayout>[0]);
    const compute = descriptor?.compute;
    const module = compute?.module as { code?: unknown } | undefined;
    const entry = typeof module?.code === 'string' ? reflectEntry(module as { code: string }, compute!.entryPoint, compute!.constants as Record<string, number> | undefined) : null;
    facts = entry ? (entry.groups.get(source.index) ?? { slots: new BindingSlots(), buffers: new Map(), dynamic: [] }) : null;
  }
  layoutFactsCache.set(layout, facts);
  return facts;
}
