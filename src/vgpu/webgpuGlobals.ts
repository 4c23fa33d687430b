// Dawn's WebGPU globals that gpunix hands to programs unchanged: the flag enums, the error
// classes and the interfaces gpunix does not implement. Errors that Dawn raises reach programs as
// Dawn's own objects, so the classes a program tests with `instanceof` must be Dawn's too. Also
// webgpuInterface, which gives gpunix's own classes the WebIDL shape of their interfaces.

import { globals } from 'webgpu';

type ErrorClass<T> = new (message: string) => T;

const dawnGlobals = globals as Record<string, unknown>;

export const GPUValidationErrorClass = dawnGlobals.GPUValidationError as ErrorClass<GPUValidationError>;
export const GPUOutOfMemoryErrorClass = dawnGlobals.GPUOutOfMemoryError as ErrorClass<GPUOutOfMemoryError>;
export const GPUInternalErrorClass = dawnGlobals.GPUInternalError as ErrorClass<GPUInternalError>;
export const GPUPipelineErrorClass = dawnGlobals.GPUPipelineError as new (message: string, options: { reason: GPUPipelineErrorReason }) => GPUPipelineError;
export const GPUUncapturedErrorEventClass = dawnGlobals.GPUUncapturedErrorEvent as new (
  type: string,
  init: { error: GPUError },
) => GPUUncapturedErrorEvent;

export const BufferUsage = dawnGlobals.GPUBufferUsage as typeof GPUBufferUsage;
export const MapMode = dawnGlobals.GPUMapMode as typeof GPUMapMode;

/** The globals that stay Dawn's: enums, error and event classes, info and limits classes. */
export const PASS_THROUGH_GLOBALS = [
  'GPUBufferUsage',
  'GPUMapMode',
  'GPUShaderStage',
  'GPUTextureUsage',
  'GPUColorWrite',
  'GPUError',
  'GPUValidationError',
  'GPUOutOfMemoryError',
  'GPUInternalError',
  'GPUPipelineError',
  'GPUUncapturedErrorEvent',
  'GPUCompilationInfo',
  'GPUCompilationMessage',
  'GPUDeviceLostInfo',
  'GPUAdapterInfo',
  'GPUSupportedFeatures',
  'GPUSupportedLimits',
  'WGSLLanguageFeatures',
] as const;

export function dawnGlobal(name: string): unknown {
  return dawnGlobals[name];
}

/**
 * The WebGPU interfaces gpunix never hands a program an object of (textures, samplers, render
 * pipelines and passes, canvases): their globals are Dawn's own classes, which cannot be
 * constructed (TypeError "Illegal constructor") and which no gpunix object is an instance of.
 */
export const UNSUPPORTED_INTERFACE_GLOBALS = [
  'GPUCanvasContext',
  'GPUExternalTexture',
  'GPURenderBundle',
  'GPURenderBundleEncoder',
  'GPURenderPassEncoder',
  'GPURenderPipeline',
  'GPUSampler',
  'GPUTexture',
  'GPUTextureView',
] as const;

/** The descriptor of member `name` found first on `proto`'s chain (below Object.prototype). */
function memberOf(proto: object, name: string): PropertyDescriptor | undefined {
  for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    const descriptor = Object.getOwnPropertyDescriptor(p, name);
    if (descriptor) return descriptor;
  }
  return undefined;
}

/**
 * Gives a virtual class the WebIDL shape of interface `name` and returns its interface object
 * (what the global `name` is). Run once per class, at load; nothing here runs per call.
 * - The interface object cannot be constructed or called (TypeError, as Dawn's and browsers');
 *   its `prototype` is the class's, so `instanceof`, `constructor.name` and
 *   `obj.constructor.prototype` behave as for an interface.
 * - The prototype gets Symbol.toStringTag `name` (`[object GPUBuffer]`).
 * - Every member Dawn's interface has, and every attribute in `attributes` (ones Dawn wrongly
 *   puts on instances), becomes an enumerable own member of the prototype when the class has
 *   it (inherited ones, like `label` from VirtualObject, are copied down): WebIDL's operations
 *   and attributes are enumerable prototype properties, replaceable by shims. Members the kernel
 *   uses that WebGPU does not define stay non-enumerable.
 */
export function webgpuInterface(cls: { prototype: object }, name: string, attributes: readonly string[] = []): Function {
  const proto = cls.prototype;
  const iface = function (this: unknown): never {
    if (!new.target) throw new TypeError(`Class constructors cannot be invoked without 'new'`);
    throw new TypeError(`Failed to construct '${name}': Illegal constructor`);
  };
  Object.defineProperty(iface, 'name', { value: name });
  // An interface object inherits its parent interface's (WebIDL §3.7.1): GPUDevice's is EventTarget,
  // whose static marker Node's addEventListener looks up through `this.constructor`.
  if (cls.prototype instanceof EventTarget) Object.setPrototypeOf(iface, EventTarget);
  Object.defineProperty(iface, 'prototype', { value: proto, writable: false, enumerable: false, configurable: false });
  Object.defineProperty(proto, 'constructor', { value: iface, writable: true, enumerable: false, configurable: true });
  Object.defineProperty(proto, Symbol.toStringTag, { value: name, writable: false, enumerable: false, configurable: true });
  const dawnProto = (dawnGlobals[name] as { prototype?: object } | undefined)?.prototype;
  const members = new Set([...(dawnProto ? Object.getOwnPropertyNames(dawnProto) : []), ...attributes]);
  members.delete('constructor');
  for (const member of members) {
    const descriptor = memberOf(proto, member);
    if (descriptor) Object.defineProperty(proto, member, { ...descriptor, enumerable: true });
  }
  return iface;
}

export function validationError(message: string): GPUValidationError {
  return new GPUValidationErrorClass(message);
}

export function outOfMemoryError(message: string): GPUOutOfMemoryError {
  return new GPUOutOfMemoryErrorClass(message);
}
