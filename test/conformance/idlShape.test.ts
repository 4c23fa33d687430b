// WebIDL: the shape of WebGPU objects as JavaScript sees them. An interface's attributes are
// accessors and its operations are methods of the interface's prototype (enumerable there, and
// replaceable: shims and debugging libraries patch them); a platform object has no own
// properties, so Object.keys, spreads and Object.getOwnPropertyNames give nothing; the
// prototype carries Symbol.toStringTag; and `obj.constructor` is the interface object. Bare
// Dawn puts a few attributes on its instances (GPU, GPUAdapter, GPUDevice, GPUAdapterInfo):
// those rules are recorded as rules Dawn breaks, and gpunix is held to the spec there.

import { Env, conformance, thrown } from './harness.js';

/** The members of each interface (WebGPU spec IDL), split into attributes and operations. */
const MEMBERS: Record<string, { attributes: string[]; operations: string[] }> = {
  GPU: { attributes: ['wgslLanguageFeatures'], operations: ['requestAdapter', 'getPreferredCanvasFormat'] },
  GPUAdapter: { attributes: ['features', 'limits', 'info'], operations: ['requestDevice'] },
  GPUDevice: {
    attributes: ['features', 'limits', 'adapterInfo', 'queue', 'lost', 'onuncapturederror', 'label'],
    operations: [
      'destroy', 'createBuffer', 'createTexture', 'createSampler', 'importExternalTexture', 'createBindGroupLayout',
      'createPipelineLayout', 'createBindGroup', 'createShaderModule', 'createComputePipeline', 'createRenderPipeline',
      'createComputePipelineAsync', 'createRenderPipelineAsync', 'createCommandEncoder', 'createRenderBundleEncoder',
      'createQuerySet', 'pushErrorScope', 'popErrorScope',
    ],
  },
  GPUQueue: { attributes: ['label'], operations: ['submit', 'onSubmittedWorkDone', 'writeBuffer', 'writeTexture', 'copyExternalImageToTexture'] },
  GPUBuffer: { attributes: ['size', 'usage', 'mapState', 'label'], operations: ['mapAsync', 'getMappedRange', 'unmap', 'destroy'] },
  GPUShaderModule: { attributes: ['label'], operations: ['getCompilationInfo'] },
  GPUComputePipeline: { attributes: ['label'], operations: ['getBindGroupLayout'] },
  GPUBindGroupLayout: { attributes: ['label'], operations: [] },
  GPUPipelineLayout: { attributes: ['label'], operations: [] },
  GPUBindGroup: { attributes: ['label'], operations: [] },
  GPUCommandEncoder: {
    attributes: ['label'],
    operations: [
      'beginRenderPass', 'beginComputePass', 'copyBufferToBuffer', 'copyBufferToTexture', 'copyTextureToBuffer',
      'copyTextureToTexture', 'clearBuffer', 'resolveQuerySet', 'finish', 'pushDebugGroup', 'popDebugGroup', 'insertDebugMarker',
    ],
  },
  GPUComputePassEncoder: {
    attributes: ['label'],
    operations: ['setPipeline', 'dispatchWorkgroups', 'dispatchWorkgroupsIndirect', 'end', 'setBindGroup', 'setImmediates', 'pushDebugGroup', 'popDebugGroup', 'insertDebugMarker'],
  },
  GPUCommandBuffer: { attributes: ['label'], operations: [] },
  GPUQuerySet: { attributes: ['type', 'count', 'label'], operations: ['destroy'] },
};

/** Interfaces whose instances Dawn gives own properties (attributes it puts on the instance). */
const DAWN_OWN_ATTRIBUTES = new Set(['GPU', 'GPUAdapter', 'GPUDevice']);

/** One object of every interface gpunix implements, made on the side's own device, by interface name. */
async function objectsOf(env: Env): Promise<Record<string, object>> {
  const adapter = (await env.gpu.requestAdapter())!;
  const device = await adapter.requestDevice();
  const module = device.createShaderModule({ code: '@compute @workgroup_size(1) fn main() {}' });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.end();
  return {
    GPU: env.gpu,
    GPUAdapter: adapter,
    GPUDevice: device,
    GPUQueue: device.queue,
    GPUBuffer: device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM }),
    GPUShaderModule: module,
    GPUComputePipeline: device.createComputePipeline({ layout: 'auto', compute: { module } }),
    GPUBindGroupLayout: device.createBindGroupLayout({ entries: [] }),
    GPUPipelineLayout: device.createPipelineLayout({ bindGroupLayouts: [] }),
    GPUBindGroup: device.createBindGroup({ layout: device.createBindGroupLayout({ entries: [] }), entries: [] }),
    GPUCommandEncoder: device.createCommandEncoder(),
    GPUComputePassEncoder: pass,
    GPUCommandBuffer: encoder.finish(),
    GPUQuerySet: device.createQuerySet({ type: 'occlusion', count: 2 }),
  };
}

/** `observe` applied to each object whose interface is (or, with `dawnOwn` false, is not) one Dawn gives own attributes. */
async function each(env: Env, dawnOwn: boolean, observe: (object: object, name: string) => unknown): Promise<Record<string, unknown>> {
  const objects = await objectsOf(env);
  const seen: Record<string, unknown> = {};
  for (const [name, object] of Object.entries(objects)) if (DAWN_OWN_ATTRIBUTES.has(name) === dawnOwn) seen[name] = observe(object, name);
  (objects.GPUDevice as GPUDevice).destroy();
  return seen;
}

/** The same observation for every interface Dawn gives own attributes to: what the spec expects of each. */
const specForDawnOwn = (value: (name: string) => unknown): Record<string, unknown> =>
  Object.fromEntries([...DAWN_OWN_ATTRIBUTES].map((name) => [name, value(name)]));

/** How `member` is found on `object`: 'own' (on the instance), 'accessor' or 'method' of `object.constructor.prototype`, or 'missing'. */
function memberKind(object: object, member: string): string {
  if (Object.getOwnPropertyDescriptor(object, member)) return 'own';
  const proto = (object.constructor as { prototype: object }).prototype;
  const descriptor = Object.getOwnPropertyDescriptor(proto, member);
  if (!descriptor) return member in object ? 'inherited' : 'missing';
  if (descriptor.get) return descriptor.enumerable ? 'accessor' : 'accessor (not enumerable)';
  if (typeof descriptor.value === 'function') {
    if ((object as Record<string, unknown>)[member] !== descriptor.value) return 'method (shadowed)';
    return descriptor.enumerable ? 'method' : 'method (not enumerable)';
  }
  return 'data';
}

/** Every member of interface `name`, with how it is found on `object`. */
const memberKinds = (object: object, name: string): string[] => {
  const { attributes, operations } = MEMBERS[name];
  return [...attributes, ...operations].map((member) => `${member}: ${memberKind(object, member)}`);
};

/** What the spec expects memberKinds to give for interface `name`. */
const specMemberKinds = (name: string): string[] => {
  const { attributes, operations } = MEMBERS[name];
  return [...attributes.map((m) => `${m}: accessor`), ...operations.map((m) => `${m}: method`)];
};

/**
 * The own properties a program can come across: every string-named one, and the enumerable
 * symbol-keyed ones (a spread copies those). gpunix's GPUDevice is a Node EventTarget, which keeps
 * its listeners in symbol-keyed slots of the instance (made non-enumerable): those are left out,
 * a difference docs/vgpu.md records.
 */
const ownKeys = (object: object): string[] => [
  ...Object.getOwnPropertyNames(object),
  ...Object.getOwnPropertySymbols(object).filter((key) => Object.getOwnPropertyDescriptor(object, key)!.enumerable).map(String),
];

conformance('IDL shape', [
  {
    rule: 'a WebGPU object has no own properties: Object.keys, spread and Object.getOwnPropertyNames give nothing',
    source: 'WebIDL §3.7 (platform objects); CTS idl,javascript obj,Object_keys, obj,spread, obj,getOwnPropertyDescriptors',
    run: (env) => each(env, false, (object) => ({ keys: Object.keys(object), spread: Object.keys({ ...object }), own: ownKeys(object) })),
  },
  {
    rule: 'GPU, GPUAdapter and GPUDevice objects have no own properties either (their attributes are on the prototype)',
    source: 'WebIDL §3.7; CTS idl,javascript obj,Object_keys:type="adapter"|"device"',
    run: (env) => each(env, true, (object) => ({ keys: Object.keys(object), spread: Object.keys({ ...object }), own: ownKeys(object) })),
    dawnBreaks: {
      expected: specForDawnOwn(() => ({ keys: [], spread: [], own: [] })),
      why: 'Dawn makes features, limits, info, adapterInfo, queue, lost and wgslLanguageFeatures own properties',
    },
  },
  {
    rule: "an interface's attributes are enumerable accessors and its operations enumerable methods of obj.constructor.prototype",
    source: 'WebIDL §3.7.6, §3.7.7; CTS idl,javascript getter_replacement, method_replacement, obj,for_in',
    run: (env) => each(env, false, memberKinds),
  },
  {
    rule: "GPU, GPUAdapter and GPUDevice attributes are accessors of the prototype too",
    source: 'WebIDL §3.7.6; CTS idl,javascript getter_replacement:type="adapter"|"device"',
    run: (env) => each(env, true, memberKinds),
    dawnBreaks: { expected: specForDawnOwn(specMemberKinds), why: 'Dawn makes those attributes own data properties of the instance' },
  },
  {
    rule: 'limits and adapter info have no own properties (their members are prototype getters)',
    source: 'WebIDL §3.7; CTS idl,javascript obj,Object_keys:type="adapter.limits"|"device.limits"',
    async run(env) {
      const adapter = (await env.gpu.requestAdapter())!;
      const device = await adapter.requestDevice();
      const seen = {
        adapterLimits: { keys: Object.keys(adapter.limits), spread: Object.keys({ ...adapter.limits }) },
        deviceLimits: { keys: Object.keys(device.limits), spread: Object.keys({ ...device.limits }) },
        adapterInfo: { keys: Object.keys(adapter.info), spread: Object.keys({ ...adapter.info }) },
      };
      device.destroy();
      return seen;
    },
    dawnBreaks: {
      expected: {
        adapterLimits: { keys: [], spread: [] },
        deviceLimits: { keys: [], spread: [] },
        adapterInfo: { keys: [], spread: [] },
      },
      why: 'Dawn gives adapter.info an own subgroupMatrixConfigs property',
    },
  },
  {
    rule: 'Object.prototype.toString names the interface ([object GPUBuffer]): Symbol.toStringTag on the prototype',
    source: 'WebIDL §3.7.3 (@@toStringTag)',
    run: (env) =>
      each(env, false, (object) => Object.prototype.toString.call(object)).then(async (rest) => ({ ...rest, ...(await each(env, true, (object) => Object.prototype.toString.call(object))) })),
  },
  {
    rule: 'obj.constructor is the global interface object of its interface, named after it',
    source: 'WebIDL §3.7.1 (interface object), §3.7.3 (constructor property)',
    async run(env) {
      const all = { ...(await each(env, false, (o) => o)), ...(await each(env, true, (o) => o)) } as Record<string, object>;
      return Object.fromEntries(
        Object.entries(all).map(([name, object]) => [name, { name: object.constructor.name, isGlobal: object.constructor === env.globals[name], instanceOf: object instanceof (env.globals[name] as new () => object) }]),
      );
    },
  },
  {
    rule: 'for...of over a WebGPU object throws TypeError (it is not iterable)',
    source: 'CTS idl,javascript obj,for_of',
    run: (env) =>
      each(env, false, (object) =>
        thrown(() => {
          for (const _ of object as unknown as unknown[]) void _;
        }),
      ),
  },
  {
    rule: 'a shim can replace an attribute getter or an operation on the prototype, and restore it',
    source: 'WebIDL §3.7.6, §3.7.7; CTS idl,javascript getter_replacement, method_replacement',
    async run(env) {
      const adapter = (await env.gpu.requestAdapter())!;
      const device = await adapter.requestDevice();
      const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM, label: 'b' });
      const proto = buffer.constructor.prototype as object;
      const seen: unknown[] = [];
      for (const member of ['size', 'label']) {
        const original = Object.getOwnPropertyDescriptor(proto, member)!;
        Object.defineProperty(proto, member, { get: () => 'replaced', configurable: true });
        seen.push((buffer as unknown as Record<string, unknown>)[member]);
        Object.defineProperty(proto, member, original);
        seen.push((buffer as unknown as Record<string, unknown>)[member]);
      }
      // Replaced and restored in one synchronous step: the prototype is every process's.
      const methods = proto as Record<string, unknown>;
      const unmap = methods.unmap;
      methods.unmap = () => 'replaced';
      seen.push(buffer.unmap() as unknown, buffer.unmap === methods.unmap);
      methods.unmap = unmap;
      seen.push(buffer.unmap === unmap);
      device.destroy();
      return seen;
    },
  },
]);
