// WebIDL: every interface the WebGPU spec defines is a property of the global object (each
// `[Exposed=(Window, Worker)]` interface), whether or not gpunix implements what it stands for.
// The CTS's compute-pass tests reference render-pass classes too, and fail on a ReferenceError
// when they are missing.

import { conformance } from './harness.js';

/** What `call` raised, as "Name: message"; null when it returned. */
function raised(call: () => unknown): string | null {
  try {
    call();
    return null;
  } catch (error) {
    return `${(error as Error).name}: ${(error as Error).message}`;
  }
}

/** The globals that are interface objects (functions), by name; the namespaces (GPUBufferUsage...) are plain objects. */
const interfaceObjects = (globals: Record<string, unknown>): [string, new (...args: unknown[]) => unknown][] =>
  WEBGPU_INTERFACES.filter((name) => typeof globals[name] === 'function').map((name) => [name, globals[name] as new (...args: unknown[]) => unknown]);

/** The interfaces of the WebGPU spec (https://www.w3.org/TR/webgpu/, its IDL index), and WGSL's one. */
const WEBGPU_INTERFACES = [
  'GPU', 'GPUAdapter', 'GPUAdapterInfo', 'GPUBindGroup', 'GPUBindGroupLayout', 'GPUBuffer', 'GPUBufferUsage',
  'GPUCanvasContext', 'GPUColorWrite', 'GPUCommandBuffer', 'GPUCommandEncoder', 'GPUCompilationInfo',
  'GPUCompilationMessage', 'GPUComputePassEncoder', 'GPUComputePipeline', 'GPUDevice', 'GPUDeviceLostInfo',
  'GPUError', 'GPUExternalTexture', 'GPUInternalError', 'GPUMapMode', 'GPUOutOfMemoryError', 'GPUPipelineError',
  'GPUPipelineLayout', 'GPUQuerySet', 'GPUQueue', 'GPURenderBundle', 'GPURenderBundleEncoder',
  'GPURenderPassEncoder', 'GPURenderPipeline', 'GPUSampler', 'GPUShaderModule', 'GPUShaderStage',
  'GPUSupportedFeatures', 'GPUSupportedLimits', 'GPUTexture', 'GPUTextureUsage', 'GPUTextureView',
  'GPUUncapturedErrorEvent', 'GPUValidationError', 'WGSLLanguageFeatures',
];

conformance('globals', [
  {
    rule: 'every WebGPU interface exists as a global',
    source: 'WebIDL §3.7 (interface objects); CTS idl',
    async run(env) {
      return WEBGPU_INTERFACES.filter((name) => typeof env.globals[name] !== 'function' && typeof env.globals[name] !== 'object').sort();
    },
  },
  {
    rule: 'an interface without a constructor cannot be constructed: new GPUBuffer() is a TypeError (Illegal constructor)',
    source: 'WebIDL §3.7.1 (interface object [[Construct]]); CTS idl,constructable',
    async run(env) {
      return Object.fromEntries(interfaceObjects(env.globals).map(([name, C]) => [name, raised(() => new C())]));
    },
  },
  {
    rule: 'an interface object called without new is a TypeError',
    source: 'WebIDL §3.7.1 (interface object [[Call]])',
    async run(env) {
      return Object.fromEntries(interfaceObjects(env.globals).map(([name, C]) => [name, raised(() => (C as unknown as () => unknown)())?.split(':')[0] ?? null]));
    },
  },
  {
    rule: "an interface object is named after its interface, and its prototype's Symbol.toStringTag is that name",
    source: 'WebIDL §3.7.1, §3.7.3',
    async run(env) {
      return Object.fromEntries(
        interfaceObjects(env.globals).map(([name, C]) => [name, { name: C.name, tag: (C.prototype as Record<symbol, unknown>)[Symbol.toStringTag], length: C.length }]),
      );
    },
  },
]);
