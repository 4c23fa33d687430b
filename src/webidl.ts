// WebIDL conversions and checks that WebGPU makes synchronously, written once for both sides of
// gpunix that make them: the kernel's virtual objects (src/vgpu) and the remote client
// (src/client), which must not load the kernel. No dependencies.
//
// Every argument and dictionary member a program passes is converted here, as the WebIDL and
// WebGPU specifications say, before anything reaches Dawn: a DOMString through ToString (a Symbol
// is a TypeError; a throwing toString's exception goes to the caller unchanged), enums checked
// after that, sequences element by element, [EnforceRange] integers, required members, and
// dictionaries read once each, member by member in the spec's order (inherited dictionaries
// first, lexicographic within each). Descriptors come back as fresh plain objects of converted
// values, so Dawn never sees a program's object: dawn.node aborts the whole Node process (every
// gpunix process with it) on some values it cannot convert itself, such as a Symbol label.
// Interface-typed members (a GPUBuffer, a GPUBindGroupLayout...) are handed to an ObjectConverter,
// which each side implements: it checks the interface and, for an object of another device,
// returns what stands for it (ownership: docs/vgpu.md).

export function operationError(message: string): Error {
  return new DOMException(message, 'OperationError') as unknown as Error;
}

/** The TypeError a failed conversion throws, worded as Dawn's bindings word theirs. */
export function conversionError(method: string, reason: string, what: string): TypeError {
  return new TypeError(`no overload matched for ${method}:\n${reason}\nwhile converting ${what}`);
}

// ---- scalars ------------------------------------------------------------------------------------

/** ToNumber, as WebIDL's integer and double conversions start: TypeError for a Symbol or BigInt. */
function toNumber(value: unknown, method: string, what: string): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'symbol' || typeof value === 'bigint') throw conversionError(method, 'value is not a number', what);
  // Unary plus is ToNumber: valueOf/toString run (their exceptions propagate), and a Symbol or
  // BigInt they return throws V8's own TypeError.
  return +(value as number);
}

/** WebIDL's [EnforceRange] integer conversion: TypeError unless finite and, truncated, in [0, max]. */
export function enforceRange(value: unknown, max: number, method: string, what: string): number {
  // The plain valid input (an integer in range) is its own conversion; -0 becomes 0.
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max) return value === 0 ? 0 : value;
  const number = toNumber(value, method, what);
  if (!Number.isFinite(number)) throw conversionError(method, 'value is not a finite number', what);
  const integer = Math.trunc(number);
  if (integer < 0 || integer > max) throw conversionError(method, 'Values are out of the range of that integer.', what);
  return integer === 0 ? 0 : integer;
}

/** WebIDL's [Clamp] integer conversion: NaN is 0, the rest rounded half to even and clamped to [0, max]. */
export function clampInteger(value: unknown, max: number, method: string, what: string): number {
  const number = toNumber(value, method, what);
  if (Number.isNaN(number)) return 0;
  const clamped = Math.min(Math.max(number, 0), max);
  const floor = Math.floor(clamped);
  const fraction = clamped - floor;
  if (fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1)) return floor + 1;
  return floor;
}

/** WebIDL's plain `unsigned long` conversion (no [EnforceRange]): modulo 2^32, non-finite is 0. */
export function unsignedLong(value: unknown, method: string, what: string): number {
  const number = toNumber(value, method, what);
  if (!Number.isFinite(number)) return 0;
  const integer = Math.trunc(number) % 2 ** 32;
  return integer < 0 ? integer + 2 ** 32 : integer === 0 ? 0 : integer;
}

/** WebIDL's (restricted) `double`: TypeError for NaN and infinities. */
export function restrictedDouble(value: unknown, method: string, what: string): number {
  const number = toNumber(value, method, what);
  if (!Number.isFinite(number)) throw conversionError(method, 'value is not a finite number', what);
  return number;
}

/** WebIDL's `boolean`: ToBoolean, which never throws. */
export function toBoolean(value: unknown): boolean {
  return Boolean(value);
}

/** WebIDL's DOMString: ToString. A Symbol is a TypeError; an object's toString runs and its exception propagates. */
export function domString(value: unknown, method: string, what: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'symbol') throw conversionError(method, 'Cannot convert a Symbol value to a string', what);
  // A template literal is ToString (hint "string": toString before valueOf), unlike `'' + value`.
  return `${value as string}`;
}

/** WebIDL's USVString: DOMString, then lone surrogates replaced by U+FFFD. */
export function usvString(value: unknown, method: string, what: string): string {
  const string = domString(value, method, what) as string & { isWellFormed(): boolean; toWellFormed(): string };
  return string.isWellFormed() ? string : string.toWellFormed();
}

/** A WebIDL enum: converted as a DOMString, then a TypeError unless one of `values`. */
export function enumValue<T extends string>(value: unknown, values: ReadonlySet<string>, enumName: string, method: string, what: string): T {
  const string = domString(value, method, what);
  if (!values.has(string)) throw conversionError(method, `${string} is not a valid enum value of ${enumName}`, what);
  return string as T;
}

export const U32_MAX = 0xffffffff;
/** The largest [EnforceRange] unsigned long long: 2^53 - 1 (WebIDL). */
export const U64_MAX = Number.MAX_SAFE_INTEGER;

/** GPUSize64 / GPUBufferDynamicOffset-style integers, by the WebGPU IDL's typedefs. */
export const size64 = (value: unknown, method: string, what: string): number => enforceRange(value, U64_MAX, method, what);
export const size32 = (value: unknown, method: string, what: string): number => enforceRange(value, U32_MAX, method, what);

// ---- compound types -----------------------------------------------------------------------------

/**
 * A WebIDL sequence: `value` must be an object with a Symbol.iterator method; each element is
 * converted by `element` (given its index) in iteration order.
 */
export function sequence<T>(value: unknown, method: string, what: string, element: (item: unknown, index: number) => T): T[] {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) throw conversionError(method, 'value is not a sequence', what);
  const iteratorMethod = (value as { [Symbol.iterator]?: unknown })[Symbol.iterator];
  if (typeof iteratorMethod !== 'function') throw conversionError(method, 'value is not a sequence', what);
  if (iteratorMethod === ARRAY_ITERATOR && Array.isArray(value)) {
    // An array with the built-in iterator: iterating it reads length and elements in this order.
    if (value.length === 1) {
      // The common one-element sequence (queue.submit([cb])) in an array of its size; the length
      // is read again after the element, as iteration does (a conversion may have grown it).
      const first = element(value[0], 0);
      if (value.length <= 1) return [first];
      const rest: T[] = [first];
      for (let i = 1; i < value.length; i++) rest.push(element(value[i], i));
      return rest;
    }
    const out: T[] = [];
    for (let i = 0; i < value.length; i++) out.push(element(value[i], i));
    return out;
  }
  const out: T[] = [];
  const iterator = (iteratorMethod as () => Iterator<unknown>).call(value);
  for (let step = iterator.next(); !step.done; step = iterator.next()) out.push(element(step.value, out.length));
  return out;
}
const ARRAY_ITERATOR = Array.prototype[Symbol.iterator];

/**
 * A WebIDL record<DOMString, T>: each own enumerable property, in property order, its key
 * converted as a DOMString (a Symbol key is a TypeError) and its value by `convert`.
 */
export function record<T>(value: unknown, method: string, what: string, convert: (item: unknown, what: string) => T): Record<string, T> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' && typeof value !== 'function') throw conversionError(method, 'value is not an object', what);
  const out: Record<string, T> = {};
  for (const key of Reflect.ownKeys(value as object)) {
    const descriptor = Reflect.getOwnPropertyDescriptor(value as object, key);
    if (!descriptor?.enumerable) continue;
    const name = domString(key, method, `a key of ${what}`);
    out[name] = convert((value as Record<string | symbol, unknown>)[key], `${what}[${JSON.stringify(name)}]`);
  }
  return out;
}

/** A dictionary value: an object, or null for null and undefined (every member absent); TypeError otherwise. */
export function dictionary(value: unknown, method: string, what: string): Record<string, unknown> | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' && typeof value !== 'function') throw conversionError(method, `${what} is not an object`, what);
  return value as Record<string, unknown>;
}

/** Reads member `key` of a dictionary once (undefined when the dictionary is absent). */
function get(source: Record<string, unknown> | null, key: string): unknown {
  return source === null ? undefined : source[key];
}

function requiredMember(method: string, what: string, key: string, dictionaryName: string): TypeError {
  return new TypeError(`Failed to execute '${method}': required member ${key} is undefined.\nwhile converting ${what} (${dictionaryName})`);
}

/** Reads required member `key`: TypeError when it is undefined. */
function getRequired(source: Record<string, unknown> | null, key: string, method: string, what: string, dictionaryName: string): unknown {
  const value = get(source, key);
  if (value === undefined) throw requiredMember(method, what, key, dictionaryName);
  return value;
}

// ---- interfaces ---------------------------------------------------------------------------------

/** The WebGPU interfaces a descriptor or an argument of the compute subset can name. */
export type InterfaceName =
  | 'GPUBuffer'
  | 'GPUShaderModule'
  | 'GPUComputePipeline'
  | 'GPUBindGroupLayout'
  | 'GPUPipelineLayout'
  | 'GPUBindGroup'
  | 'GPUQuerySet'
  | 'GPUCommandBuffer';

/**
 * How a side of gpunix takes an interface-typed argument: `object` returns what to use for
 * `value` on this device (the object itself; for another device's object, a stand-in that makes
 * the use a validation error, as WebGPU requires) or throws the TypeError WebIDL gives for a
 * value that is not a `name` at all.
 */
export interface ObjectConverter {
  object(name: InterfaceName, value: unknown, method: string, what: string): unknown;
  /** Whether `value` is an object of interface `name` (of any device): unions need to know. */
  implements(name: InterfaceName, value: unknown): boolean;
}

/** The TypeError for a value that is not an object of the expected interface, worded as Dawn's. */
export function notOfInterface(method: string, what: string): TypeError {
  return conversionError(method, 'object is not of the correct interface type', what);
}

// ---- enums --------------------------------------------------------------------------------------

export const ERROR_FILTERS: ReadonlySet<string> = new Set(['validation', 'out-of-memory', 'internal']);
export const QUERY_TYPES: ReadonlySet<string> = new Set(['occlusion', 'timestamp']);
export const POWER_PREFERENCES: ReadonlySet<string> = new Set(['low-power', 'high-performance']);
const BUFFER_BINDING_TYPES: ReadonlySet<string> = new Set(['uniform', 'storage', 'read-only-storage']);
const SAMPLER_BINDING_TYPES: ReadonlySet<string> = new Set(['filtering', 'non-filtering', 'comparison']);
const TEXTURE_SAMPLE_TYPES: ReadonlySet<string> = new Set(['float', 'unfilterable-float', 'depth', 'sint', 'uint']);
const TEXTURE_VIEW_DIMENSIONS: ReadonlySet<string> = new Set(['1d', '2d', '2d-array', 'cube', 'cube-array', '3d']);
const STORAGE_TEXTURE_ACCESS: ReadonlySet<string> = new Set(['write-only', 'read-only', 'read-write']);

/** GPUFeatureName as the WebGPU IDL lists it (an adapter's own feature names are accepted too). */
export const FEATURE_NAMES: ReadonlySet<string> = new Set([
  'core-features-and-limits', 'depth-clip-control', 'depth32float-stencil8', 'texture-compression-bc',
  'texture-compression-bc-sliced-3d', 'texture-compression-etc2', 'texture-compression-astc',
  'texture-compression-astc-sliced-3d', 'timestamp-query', 'indirect-first-instance', 'shader-f16',
  'rg11b10ufloat-renderable', 'bgra8unorm-storage', 'float32-filterable', 'float32-blendable', 'clip-distances',
  'dual-source-blending', 'subgroups', 'texture-formats-tier1', 'texture-formats-tier2', 'primitive-index',
  'texture-component-swizzle', 'subgroup-size-control', 'texture-compression-unaligned', 'atomic-vec2u-min-max',
]);

const TEXTURE_FORMATS: ReadonlySet<string> = new Set([
  'r8unorm', 'r8snorm', 'r8uint', 'r8sint', 'r16unorm', 'r16snorm', 'r16uint', 'r16sint', 'r16float', 'rg8unorm',
  'rg8snorm', 'rg8uint', 'rg8sint', 'r32uint', 'r32sint', 'r32float', 'rg16unorm', 'rg16snorm', 'rg16uint', 'rg16sint',
  'rg16float', 'rgba8unorm', 'rgba8unorm-srgb', 'rgba8snorm', 'rgba8uint', 'rgba8sint', 'bgra8unorm', 'bgra8unorm-srgb',
  'rgb9e5ufloat', 'rgb10a2uint', 'rgb10a2unorm', 'rg11b10ufloat', 'rg32uint', 'rg32sint', 'rg32float', 'rgba16unorm',
  'rgba16snorm', 'rgba16uint', 'rgba16sint', 'rgba16float', 'rgba32uint', 'rgba32sint', 'rgba32float', 'stencil8',
  'depth16unorm', 'depth24plus', 'depth24plus-stencil8', 'depth32float', 'depth32float-stencil8', 'bc1-rgba-unorm',
  'bc1-rgba-unorm-srgb', 'bc2-rgba-unorm', 'bc2-rgba-unorm-srgb', 'bc3-rgba-unorm', 'bc3-rgba-unorm-srgb', 'bc4-r-unorm',
  'bc4-r-snorm', 'bc5-rg-unorm', 'bc5-rg-snorm', 'bc6h-rgb-ufloat', 'bc6h-rgb-float', 'bc7-rgba-unorm',
  'bc7-rgba-unorm-srgb', 'etc2-rgb8unorm', 'etc2-rgb8unorm-srgb', 'etc2-rgb8a1unorm', 'etc2-rgb8a1unorm-srgb',
  'etc2-rgba8unorm', 'etc2-rgba8unorm-srgb', 'eac-r11unorm', 'eac-r11snorm', 'eac-rg11unorm', 'eac-rg11snorm',
  ...['4x4', '5x4', '5x5', '6x5', '6x6', '8x5', '8x6', '8x8', '10x5', '10x6', '10x8', '10x10', '12x10', '12x12'].flatMap((b) => [
    `astc-${b}-unorm`,
    `astc-${b}-unorm-srgb`,
  ]),
]);

// ---- WebGPU dictionaries (the compute subset, and labels everywhere) ----------------------------

/** GPUObjectDescriptorBase's member: `USVString label = ""`. */
function label(source: Record<string, unknown> | null, method: string, what: string): string {
  const value = get(source, 'label');
  return value === undefined ? '' : usvString(value, method, `${what}.label`);
}

/**
 * A descriptor whose only member is a label (GPUCommandEncoderDescriptor,
 * GPUCommandBufferDescriptor, GPUQueueDescriptor): undefined when the program gave none, so the
 * hot path allocates nothing.
 */
export function labelDescriptor(value: unknown, method: string, what = 'descriptor'): { label: string } | undefined {
  if (value === undefined || value === null) return undefined;
  return { label: label(dictionary(value, method, what), method, what) };
}

export function bufferDescriptor(value: unknown, method = 'createBuffer'): GPUBufferDescriptor {
  const d = dictionary(value, method, 'descriptor');
  const name = 'GPUBufferDescriptor';
  return {
    label: label(d, method, 'descriptor'),
    mappedAtCreation: toBoolean(get(d, 'mappedAtCreation')),
    size: size64(getRequired(d, 'size', method, 'descriptor', name), method, "member 'size'"),
    usage: size32(getRequired(d, 'usage', method, 'descriptor', name), method, "member 'usage'"),
  };
}

export function shaderModuleDescriptor(value: unknown, objects: ObjectConverter, method = 'createShaderModule'): GPUShaderModuleDescriptor {
  const d = dictionary(value, method, 'descriptor');
  const out = { label: label(d, method, 'descriptor') } as GPUShaderModuleDescriptor;
  const code = usvString(getRequired(d, 'code', method, 'descriptor', 'GPUShaderModuleDescriptor'), method, "member 'code'");
  const hints = get(d, 'compilationHints');
  // compilationHints are converted (WebIDL) and checked, then dropped: hints change no result.
  if (hints !== undefined) {
    sequence(hints, method, "member 'compilationHints'", (hint, index) => {
      const what = `compilationHints[${index}]`;
      const h = dictionary(hint, method, what);
      usvString(getRequired(h, 'entryPoint', method, what, 'GPUShaderModuleCompilationHint'), method, `${what}.entryPoint`);
      const layout = get(h, 'layout');
      if (layout !== undefined) layoutOrAuto(layout, objects, method, `${what}.layout`);
      return null;
    });
  }
  out.code = code;
  return out;
}

/**
 * (GPUPipelineLayout or GPUAutoLayoutMode): the layout object, or anything else converted to
 * the enum ('auto'), as WebIDL converts a union of an interface and a string-like type.
 */
function layoutOrAuto(value: unknown, objects: ObjectConverter, method: string, what: string): unknown {
  if (objects.implements('GPUPipelineLayout', value)) return objects.object('GPUPipelineLayout', value, method, what);
  return enumValue(value, AUTO, 'GPUAutoLayoutMode', method, what);
}
const AUTO: ReadonlySet<string> = new Set(['auto']);

export function computePipelineDescriptor(value: unknown, objects: ObjectConverter, method = 'createComputePipeline'): GPUComputePipelineDescriptor {
  const d = dictionary(value, method, 'descriptor');
  const name = 'GPUComputePipelineDescriptor';
  const outLabel = label(d, method, 'descriptor');
  const layout = layoutOrAuto(getRequired(d, 'layout', method, 'descriptor', name), objects, method, "member 'layout'");
  const compute = programmableStage(getRequired(d, 'compute', method, 'descriptor', name), objects, method, "member 'compute'");
  return { label: outLabel, layout, compute } as GPUComputePipelineDescriptor;
}

function programmableStage(value: unknown, objects: ObjectConverter, method: string, what: string): GPUProgrammableStage {
  const s = dictionary(value, method, what);
  const constants = record(get(s, 'constants'), method, `${what}.constants`, (v, w) => restrictedDouble(v, method, w));
  const entryPointValue = get(s, 'entryPoint');
  const entryPoint = entryPointValue === undefined ? undefined : usvString(entryPointValue, method, `${what}.entryPoint`);
  const module = objects.object('GPUShaderModule', getRequired(s, 'module', method, what, 'GPUProgrammableStage'), method, `${what}.module`);
  const out = { module, constants } as GPUProgrammableStage;
  if (entryPoint !== undefined) out.entryPoint = entryPoint;
  return out;
}

export function bindGroupLayoutDescriptor(value: unknown, method = 'createBindGroupLayout'): GPUBindGroupLayoutDescriptor & { entries: GPUBindGroupLayoutEntry[] } {
  const d = dictionary(value, method, 'descriptor');
  const outLabel = label(d, method, 'descriptor');
  const entries = sequence(getRequired(d, 'entries', method, 'descriptor', 'GPUBindGroupLayoutDescriptor'), method, "member 'entries'", (entry, index) =>
    bindGroupLayoutEntry(entry, method, `entries[${index}]`),
  );
  return { label: outLabel, entries };
}

function bindGroupLayoutEntry(value: unknown, method: string, what: string): GPUBindGroupLayoutEntry {
  const e = dictionary(value, method, what);
  const name = 'GPUBindGroupLayoutEntry';
  const binding = size32(getRequired(e, 'binding', method, what, name), method, `${what}.binding`);
  const out = { binding } as GPUBindGroupLayoutEntry & Record<string, unknown>;
  const buffer = get(e, 'buffer');
  if (buffer !== undefined) {
    const b = dictionary(buffer, method, `${what}.buffer`);
    const hasDynamicOffset = toBoolean(get(b, 'hasDynamicOffset'));
    const minBindingSizeValue = get(b, 'minBindingSize');
    const minBindingSize = minBindingSizeValue === undefined ? 0 : size64(minBindingSizeValue, method, `${what}.buffer.minBindingSize`);
    const typeValue = get(b, 'type');
    const type = typeValue === undefined ? 'uniform' : enumValue(typeValue, BUFFER_BINDING_TYPES, 'GPUBufferBindingType', method, `${what}.buffer.type`);
    out.buffer = { hasDynamicOffset, minBindingSize, type } as GPUBufferBindingLayout;
  }
  const externalTexture = get(e, 'externalTexture');
  if (externalTexture !== undefined) {
    dictionary(externalTexture, method, `${what}.externalTexture`);
    out.externalTexture = {};
  }
  const sampler = get(e, 'sampler');
  if (sampler !== undefined) {
    const s = dictionary(sampler, method, `${what}.sampler`);
    const typeValue = get(s, 'type');
    out.sampler = { type: typeValue === undefined ? 'filtering' : enumValue(typeValue, SAMPLER_BINDING_TYPES, 'GPUSamplerBindingType', method, `${what}.sampler.type`) } as GPUSamplerBindingLayout;
  }
  const storageTexture = get(e, 'storageTexture');
  if (storageTexture !== undefined) {
    const w = `${what}.storageTexture`;
    const s = dictionary(storageTexture, method, w);
    const accessValue = get(s, 'access');
    const access = accessValue === undefined ? 'write-only' : enumValue(accessValue, STORAGE_TEXTURE_ACCESS, 'GPUStorageTextureAccess', method, `${w}.access`);
    const format = enumValue(getRequired(s, 'format', method, w, 'GPUStorageTextureBindingLayout'), TEXTURE_FORMATS, 'GPUTextureFormat', method, `${w}.format`);
    const dimension = get(s, 'viewDimension');
    const viewDimension = dimension === undefined ? '2d' : enumValue(dimension, TEXTURE_VIEW_DIMENSIONS, 'GPUTextureViewDimension', method, `${w}.viewDimension`);
    out.storageTexture = { access, format, viewDimension } as GPUStorageTextureBindingLayout;
  }
  const texture = get(e, 'texture');
  if (texture !== undefined) {
    const w = `${what}.texture`;
    const t = dictionary(texture, method, w);
    const multisampled = toBoolean(get(t, 'multisampled'));
    const sample = get(t, 'sampleType');
    const sampleType = sample === undefined ? 'float' : enumValue(sample, TEXTURE_SAMPLE_TYPES, 'GPUTextureSampleType', method, `${w}.sampleType`);
    const dimension = get(t, 'viewDimension');
    const viewDimension = dimension === undefined ? '2d' : enumValue(dimension, TEXTURE_VIEW_DIMENSIONS, 'GPUTextureViewDimension', method, `${w}.viewDimension`);
    out.texture = { multisampled, sampleType, viewDimension } as GPUTextureBindingLayout;
  }
  out.visibility = size32(getRequired(e, 'visibility', method, what, name), method, `${what}.visibility`);
  return out;
}

export function pipelineLayoutDescriptor(value: unknown, objects: ObjectConverter, method = 'createPipelineLayout'): GPUPipelineLayoutDescriptor & { immediateSize?: number } {
  const d = dictionary(value, method, 'descriptor');
  const outLabel = label(d, method, 'descriptor');
  const bindGroupLayouts = sequence(getRequired(d, 'bindGroupLayouts', method, 'descriptor', 'GPUPipelineLayoutDescriptor'), method, "member 'bindGroupLayouts'", (layout, index) =>
    layout === null || layout === undefined ? null : objects.object('GPUBindGroupLayout', layout, method, `bindGroupLayouts[${index}]`),
  );
  const out = { label: outLabel, bindGroupLayouts } as GPUPipelineLayoutDescriptor & { immediateSize?: number };
  const immediateSize = get(d, 'immediateSize');
  if (immediateSize !== undefined) out.immediateSize = size32(immediateSize, method, "member 'immediateSize'");
  return out;
}

export function bindGroupDescriptor(value: unknown, objects: ObjectConverter, method = 'createBindGroup'): GPUBindGroupDescriptor & { entries: GPUBindGroupEntry[] } {
  const d = dictionary(value, method, 'descriptor');
  const name = 'GPUBindGroupDescriptor';
  const outLabel = label(d, method, 'descriptor');
  const entries = sequence(getRequired(d, 'entries', method, 'descriptor', name), method, "member 'entries'", (entry, index) => {
    const what = `entries[${index}]`;
    const e = dictionary(entry, method, what);
    const binding = size32(getRequired(e, 'binding', method, what, 'GPUBindGroupEntry'), method, `${what}.binding`);
    const resource = bindingResource(getRequired(e, 'resource', method, what, 'GPUBindGroupEntry'), objects, method, `${what}.resource`);
    return { binding, resource } as GPUBindGroupEntry;
  });
  const layout = objects.object('GPUBindGroupLayout', getRequired(d, 'layout', method, 'descriptor', name), method, "member 'layout'");
  return { label: outLabel, entries, layout } as GPUBindGroupDescriptor & { entries: GPUBindGroupEntry[] };
}

/**
 * GPUBindingResource in the compute subset: a GPUBuffer itself, or a GPUBufferBinding dictionary
 * (samplers, textures and texture views do not exist in gpunix).
 */
function bindingResource(value: unknown, objects: ObjectConverter, method: string, what: string): GPUBindingResource {
  // Of the union's interfaces only GPUBuffer exists here; any other object is a GPUBufferBinding.
  if (objects.implements('GPUBuffer', value)) return objects.object('GPUBuffer', value, method, what) as GPUBuffer;
  const b = dictionary(value, method, what);
  const buffer = objects.object('GPUBuffer', getRequired(b, 'buffer', method, what, 'GPUBufferBinding'), method, `${what}.buffer`);
  const offsetValue = get(b, 'offset');
  const offset = offsetValue === undefined ? 0 : size64(offsetValue, method, `${what}.offset`);
  const sizeValue = get(b, 'size');
  const out = { buffer, offset } as GPUBufferBinding;
  if (sizeValue !== undefined) out.size = size64(sizeValue, method, `${what}.size`);
  return out;
}

export function querySetDescriptor(value: unknown, method = 'createQuerySet'): GPUQuerySetDescriptor {
  const d = dictionary(value, method, 'descriptor');
  const name = 'GPUQuerySetDescriptor';
  const outLabel = label(d, method, 'descriptor');
  const count = size32(getRequired(d, 'count', method, 'descriptor', name), method, "member 'count'");
  const type = enumValue<GPUQueryType>(getRequired(d, 'type', method, 'descriptor', name), QUERY_TYPES, 'GPUQueryType', method, "member 'type'");
  return { label: outLabel, count, type };
}

/** GPUComputePassDescriptor; undefined when the program gave none (the hot path). */
export function computePassDescriptor(value: unknown, objects: ObjectConverter, method = 'beginComputePass'): GPUComputePassDescriptor | undefined {
  if (value === undefined || value === null) return undefined;
  const d = dictionary(value, method, 'descriptor');
  const out: GPUComputePassDescriptor = { label: label(d, method, 'descriptor') };
  const writes = get(d, 'timestampWrites');
  if (writes !== undefined) {
    const what = "member 'timestampWrites'";
    const t = dictionary(writes, method, what);
    const beginning = get(t, 'beginningOfPassWriteIndex');
    const end = get(t, 'endOfPassWriteIndex');
    const timestampWrites = {} as GPUComputePassTimestampWrites;
    if (beginning !== undefined) timestampWrites.beginningOfPassWriteIndex = size32(beginning, method, `${what}.beginningOfPassWriteIndex`);
    if (end !== undefined) timestampWrites.endOfPassWriteIndex = size32(end, method, `${what}.endOfPassWriteIndex`);
    timestampWrites.querySet = objects.object('GPUQuerySet', getRequired(t, 'querySet', method, what, 'GPUComputePassTimestampWrites'), method, `${what}.querySet`) as GPUQuerySet;
    out.timestampWrites = timestampWrites;
  }
  return out;
}

/**
 * GPUDeviceDescriptor. `features` are the adapter's: a feature name it offers is a valid enum
 * value even where the IDL list above lags Dawn's. Elements of requiredFeatures that are not
 * strings are converted with ToString, as browsers and Dawn do ([['timestamp-query']] works).
 */
export function deviceDescriptor(value: unknown, features: ReadonlySet<string>, method = 'requestDevice'): GPUDeviceDescriptor {
  const d = dictionary(value, method, 'descriptor');
  const outLabel = label(d, method, 'descriptor');
  const queue = get(d, 'defaultQueue');
  const defaultQueue = { label: label(dictionary(queue, method, "member 'defaultQueue'"), method, "member 'defaultQueue'") };
  const featuresValue = get(d, 'requiredFeatures');
  const requiredFeatures =
    featuresValue === undefined
      ? []
      : sequence(featuresValue, method, "member 'requiredFeatures'", (feature, index) => {
          const what = `requiredFeatures[${index}]`;
          const name = domString(feature, method, what);
          if (!FEATURE_NAMES.has(name) && !features.has(name)) throw conversionError(method, `${name} is not a valid enum value of GPUFeatureName`, what);
          return name as GPUFeatureName;
        });
  const requiredLimits = record(get(d, 'requiredLimits'), method, "member 'requiredLimits'", (limit, what) =>
    limit === undefined ? undefined : size64(limit, method, what),
  );
  return { label: outLabel, defaultQueue, requiredFeatures, requiredLimits } as GPUDeviceDescriptor;
}

export function requestAdapterOptions(value: unknown, method = 'requestAdapter'): GPURequestAdapterOptions {
  const d = dictionary(value, method, 'options');
  const featureLevelValue = get(d, 'featureLevel');
  const featureLevel = featureLevelValue === undefined ? 'core' : domString(featureLevelValue, method, "member 'featureLevel'");
  const forceFallbackAdapter = toBoolean(get(d, 'forceFallbackAdapter'));
  const preference = get(d, 'powerPreference');
  const out = { featureLevel, forceFallbackAdapter } as GPURequestAdapterOptions & Record<string, unknown>;
  if (preference !== undefined) out.powerPreference = enumValue<GPUPowerPreference>(preference, POWER_PREFERENCES, 'GPUPowerPreference', method, "member 'powerPreference'");
  out.xrCompatible = toBoolean(get(d, 'xrCompatible'));
  return out;
}

// ---- method arguments shared by both sides --------------------------------------------------------

/**
 * copyBufferToBuffer's two overloads, chosen by argument count as WebIDL's overload resolution
 * does: (source, destination, size?) with 2 or 3 arguments, (source, sourceOffset, destination,
 * destinationOffset, size?) with 4 or 5. Returns [source, sourceOffset, destination,
 * destinationOffset, size] for the long form, [source, destination, size] for the short one
 * (size left out when absent), objects converted by `objects`.
 */
export function copyBufferToBufferArgs(args: readonly unknown[], objects: ObjectConverter, method = 'copyBufferToBuffer'): unknown[] {
  if (args.length < 2) throw new TypeError(`Failed to execute '${method}': 2 arguments required, but only ${args.length} present.`);
  // Each result is one literal of its final length, converted in argument order: a push onto a
  // literal would allocate room for sixteen more, on a call a readback loop makes every round.
  const source = objects.object('GPUBuffer', args[0], method, 'source');
  if (args.length <= 3) {
    const destination = objects.object('GPUBuffer', args[1], method, 'destination');
    return args[2] === undefined ? [source, destination] : [source, destination, size64(args[2], method, 'size')];
  }
  const sourceOffset = size64(args[1], method, 'sourceOffset');
  const destination = objects.object('GPUBuffer', args[2], method, 'destination');
  const destinationOffset = size64(args[3], method, 'destinationOffset');
  return args[4] === undefined
    ? [source, sourceOffset, destination, destinationOffset]
    : [source, sourceOffset, destination, destinationOffset, size64(args[4], method, 'size')];
}

/**
 * setBindGroup's two overloads: (index, bindGroup, dynamicOffsets = []) with up to 3 arguments,
 * (index, bindGroup, Uint32Array data, start, length) with 5; returns [index, bindGroup] or
 * [index, bindGroup, offsets] (the offsets a fresh array of the program's values).
 */
export function setBindGroupArgs(args: readonly unknown[], objects: ObjectConverter, method = 'setBindGroup'): unknown[] {
  if (args.length < 2) throw new TypeError(`Failed to execute '${method}': 2 arguments required, but only ${args.length} present.`);
  const index = size32(args[0], method, 'index');
  const group = args[1] === null || args[1] === undefined ? null : objects.object('GPUBindGroup', args[1], method, 'bindGroup');
  if (args.length <= 3) {
    if (args[2] === undefined) return [index, group];
    return [index, group, sequence(args[2], method, 'dynamicOffsets', (v) => size32(v, method, 'dynamicOffsets'))];
  }
  if (args.length === 4) throw new TypeError(`Failed to execute '${method}': no overload takes 4 arguments.`);
  const data = args[2];
  if (!(data instanceof Uint32Array)) throw conversionError(method, 'value is not a Uint32Array', 'dynamicOffsetsData');
  const start = size64(args[3], method, 'dynamicOffsetsDataStart');
  const length = size32(args[4], method, 'dynamicOffsetsDataLength');
  if (start + length > data.length) throw new RangeError('dynamicOffsetsDataLength + dynamicOffsetsDataStart is out of bound of dynamicOffsetData');
  return [index, group, Array.from(data.subarray(start, start + length))];
}

/** setBindGroupArgs for exactly two arguments (index, bindGroup): [index, bindGroup]. */
export function setBindGroupArgs2(index: unknown, bindGroup: unknown, objects: ObjectConverter, method = 'setBindGroup'): unknown[] {
  const converted = size32(index, method, 'index');
  return [converted, bindGroup === null || bindGroup === undefined ? null : objects.object('GPUBindGroup', bindGroup, method, 'bindGroup')];
}

/** dispatchWorkgroups(x, y = 1, z = 1): always three numbers. */
export function workgroupCounts(x: unknown, y: unknown, z: unknown, method = 'dispatchWorkgroups'): [number, number, number] {
  return [
    size32(x, method, 'workgroupCountX'),
    y === undefined ? 1 : size32(y, method, 'workgroupCountY'),
    z === undefined ? 1 : size32(z, method, 'workgroupCountZ'),
  ];
}

/**
 * The bytes of a data argument (writeBuffer's, setImmediates'), checked as WebGPU does:
 * dataOffset and size count elements of a typed array, bytes otherwise; OperationError for a
 * range outside the data or (with multipleOf4) a size that is not a multiple of 4 bytes.
 */
export function dataBytes(method: string, data: unknown, dataOffset: unknown = 0, size?: unknown, multipleOf4 = true): Uint8Array {
  let bytes: Uint8Array;
  let elementSize = 1;
  // A detached buffer (an unmapped range, a transferred one) holds no bytes, as WebIDL says; V8
  // refuses to view one, so its (zero) length is checked first.
  if (data instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && data instanceof SharedArrayBuffer)) {
    bytes = data.byteLength === 0 ? new Uint8Array(0) : new Uint8Array(data);
  } else if (ArrayBuffer.isView(data)) {
    bytes = data.byteLength === 0 ? new Uint8Array(0) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    elementSize = (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
  } else {
    throw new TypeError(`no overload matched for ${method}: data is not an ArrayBuffer or ArrayBufferView`);
  }
  const offset = dataOffset === undefined ? 0 : enforceRange(dataOffset, U64_MAX, method, 'dataOffset');
  const count0 = size === undefined ? undefined : enforceRange(size, U64_MAX, method, 'size');
  const elements = bytes.byteLength / elementSize;
  if (offset > elements) throw operationError("dataOffset is larger than data's size.");
  const count = count0 === undefined ? elements - offset : count0;
  if (offset + count > elements) throw operationError("size + dataOffset is larger than data's size.");
  if (multipleOf4 && (count * elementSize) % 4 !== 0) throw operationError('size is not a multiple of 4 bytes.');
  const range = bytes.subarray(offset * elementSize, (offset + count) * elementSize);
  // Shared memory is copied out (WebGPU takes a copy of the bytes at the call anyway): dawn.node
  // crashes the whole Node process, every gpunix process with it, on a view of a SharedArrayBuffer.
  return range.buffer instanceof ArrayBuffer ? range : range.slice();
}
