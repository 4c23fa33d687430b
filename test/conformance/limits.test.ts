// WebGPU: a device enforces its own limits and features, not the adapter's. A gpunix process's
// device stands on the kernel's real device, opened with the adapter's full limits and every
// feature, so each rule is observed at the process device's value: at the limit a call is valid,
// one over it is a GPUValidationError (or a rejected GPUPipelineError) exactly as on a bare Dawn
// device with the same limits. lavapipe's adapter offers more than WebGPU's defaults for every
// limit below, which is what makes the difference visible.

import { conformance, settled, validationOf, type Env } from './harness.js';

const STORAGE = 0x0080;
const UNIFORM = 0x0040;
const COMPUTE = 4;

/** A compute pipeline from `code` ('auto' layout, entry `main`), as the error type it raised. */
function pipelineError(device: GPUDevice, code: string, constants?: Record<string, number>): Promise<string | null> {
  const module = device.createShaderModule({ code });
  return validationOf(device, () => device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main', constants } }));
}

const emptyEntry = (x: number, y = 1, z = 1) => `@compute @workgroup_size(${x}, ${y}, ${z}) fn main() {}`;

function storageEntries(count: number, dynamic = 0, type: GPUBufferBindingType = 'storage'): GPUBindGroupLayoutEntry[] {
  return Array.from({ length: count }, (_, i) => ({ binding: i, visibility: COMPUTE, buffer: { type, hasDynamicOffset: i < dynamic } }));
}

async function defaultDevice(env: Env, descriptor?: GPUDeviceDescriptor): Promise<GPUDevice> {
  return env.device(descriptor);
}

conformance('limits', [
  {
    rule: 'a device without requiredLimits reports the default compute limits',
    source: 'WebGPU §3.6.2 (limits: default values)',
    async run(env) {
      const device = await defaultDevice(env);
      const names = [
        'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupSizeZ', 'maxComputeInvocationsPerWorkgroup',
        'maxComputeWorkgroupStorageSize', 'maxStorageBuffersPerShaderStage', 'maxDynamicStorageBuffersPerPipelineLayout',
        'maxDynamicUniformBuffersPerPipelineLayout', 'minStorageBufferOffsetAlignment', 'minUniformBufferOffsetAlignment',
      ] as const;
      const out = Object.fromEntries(names.map((n) => [n, device.limits[n]]));
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createComputePipeline: workgroup_size per dimension at most maxComputeWorkgroupSize{X,Y,Z}',
    source: 'WebGPU createComputePipeline validation; CTS limits,maxComputeWorkgroupSize{X,Y,Z}',
    async run(env) {
      const device = await defaultDevice(env);
      const out = {
        x256: await pipelineError(device, emptyEntry(256)),
        x257: await pipelineError(device, emptyEntry(257)),
        y257: await pipelineError(device, emptyEntry(1, 257)),
        z64: await pipelineError(device, emptyEntry(1, 1, 64)),
        z65: await pipelineError(device, emptyEntry(1, 1, 65)),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createComputePipeline: workgroup invocations at most maxComputeInvocationsPerWorkgroup',
    source: 'WebGPU createComputePipeline validation; CTS limits,maxComputeInvocationsPerWorkgroup',
    async run(env) {
      const device = await defaultDevice(env);
      const out = { at: await pipelineError(device, emptyEntry(16, 16, 1)), over: await pipelineError(device, emptyEntry(16, 16, 2)) };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createComputePipeline: an override-sized workgroup is checked with the pipeline constants',
    source: 'WebGPU createComputePipeline validation (after override values are applied)',
    async run(env) {
      const device = await defaultDevice(env);
      const code = 'override W: u32 = 1; @compute @workgroup_size(W) fn main() {}';
      const byId = '@id(7) override H: u32 = 1; @compute @workgroup_size(2, H) fn main() {}';
      const sized = 'override N = 1; var<workgroup> a: array<f32, N>; @compute @workgroup_size(1) fn main() { _ = a[0]; }';
      const out = {
        at: await pipelineError(device, code, { W: 256 }),
        over: await pipelineError(device, code, { W: 257 }),
        byIdOver: await pipelineError(device, byId, { 7: 129 }),
        storageAt: await pipelineError(device, sized, { N: 4096 }),
        storageOver: await pipelineError(device, sized, { N: 4097 }),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createComputePipeline: workgroup storage the entry point uses at most maxComputeWorkgroupStorageSize',
    source: 'WebGPU createComputePipeline validation; CTS limits,maxComputeWorkgroupStorageSize',
    async run(env) {
      const device = await defaultDevice(env);
      const code = (n: number, extra: string) => `
        struct S { a: f32, b: vec4f, c: u32 }
        var<workgroup> big: array<vec4f, ${n}>;
        var<workgroup> more: ${extra};
        var<workgroup> unused: array<vec4f, 4096>;
        fn touch() { _ = more; }
        @compute @workgroup_size(1) fn main() { _ = big; touch(); }`;
      const out = {
        // 1023 * 16 + 16 (an f32 rounds up to 16 bytes) = 16384: at the limit.
        at: await pipelineError(device, code(1023, 'f32')),
        // 1021 * 16 + 48 (S: 48 bytes) = 16384.
        atStruct: await pipelineError(device, code(1021, 'S')),
        over: await pipelineError(device, code(1023, 'array<f32, 5>')),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'requiredLimits raise the workgroup limits to the value asked for, and no further',
    source: 'WebGPU requestDevice (requiredLimits); CTS limits,*,at_over (betweenDefaultAndMaximum)',
    async run(env) {
      const device = await defaultDevice(env, { requiredLimits: { maxComputeWorkgroupSizeX: 512, maxComputeInvocationsPerWorkgroup: 512 } });
      const out = { at: await pipelineError(device, emptyEntry(512)), over: await pipelineError(device, emptyEntry(513)) };
      device.destroy();
      return out;
    },
  },
  {
    rule: "requiredLimits at the adapter's maximum: workgroup storage up to it is valid, one variable more is not",
    source: 'WebGPU requestDevice (requiredLimits); CTS limits,maxComputeWorkgroupStorageSize,createComputePipeline,at_over (atMaximum)',
    async run(env) {
      const adapter = (await env.gpu.requestAdapter())!;
      const maximum = adapter.limits.maxComputeWorkgroupStorageSize;
      const device = await adapter.requestDevice({ requiredLimits: { maxComputeWorkgroupStorageSize: maximum } });
      const code = (bytes: number) => `var<workgroup> a: array<vec4u, ${bytes / 16}>;\n@compute @workgroup_size(1) fn main() { _ = a[0]; }`;
      const out = { maximum, at: await pipelineError(device, code(maximum)), over: await pipelineError(device, code(maximum + 16)) };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createComputePipelineAsync rejects a pipeline over the device limits with a validation GPUPipelineError',
    source: 'WebGPU createComputePipelineAsync; CTS limits,*,createComputePipeline,at_over (async)',
    async run(env) {
      const device = await defaultDevice(env);
      const module = device.createShaderModule({ code: emptyEntry(257) });
      let reason: string | null = null;
      const outcome = await settled(
        device.createComputePipelineAsync({ layout: 'auto', compute: { module } }).catch((error: GPUPipelineError) => {
          reason = error.reason;
          throw error;
        }),
      );
      const at = await settled(device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: emptyEntry(256) }) } }));
      device.destroy();
      return { over: outcome, reason, at };
    },
  },
  {
    rule: 'createBindGroupLayout: storage buffers per stage at most maxStorageBuffersPerShaderStage',
    source: 'WebGPU createBindGroupLayout (binding slot limits); CTS limits,maxStorageBuffersPerShaderStage',
    async run(env) {
      const device = await defaultDevice(env);
      const out = {
        at: await validationOf(device, () => device.createBindGroupLayout({ entries: storageEntries(8) })),
        over: await validationOf(device, () => device.createBindGroupLayout({ entries: storageEntries(9) })),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createBindGroupLayout: dynamic storage and uniform buffers at most maxDynamic{Storage,Uniform}BuffersPerPipelineLayout',
    source: 'WebGPU createBindGroupLayout; CTS limits,maxDynamic{Storage,Uniform}BuffersPerPipelineLayout',
    async run(env) {
      const device = await defaultDevice(env);
      const out = {
        storageAt: await validationOf(device, () => device.createBindGroupLayout({ entries: storageEntries(4, 4) })),
        storageOver: await validationOf(device, () => device.createBindGroupLayout({ entries: storageEntries(5, 5) })),
        uniformAt: await validationOf(device, () => device.createBindGroupLayout({ entries: storageEntries(8, 8, 'uniform') })),
        uniformOver: await validationOf(device, () => device.createBindGroupLayout({ entries: storageEntries(9, 9, 'uniform') })),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createPipelineLayout: binding slots summed over its bind group layouts stay within the limits',
    source: 'WebGPU createPipelineLayout; CTS limits,maxStorageBuffersPerShaderStage, maxDynamicStorageBuffersPerPipelineLayout',
    async run(env) {
      const device = await defaultDevice(env);
      const four = device.createBindGroupLayout({ entries: storageEntries(4) });
      const five = device.createBindGroupLayout({ entries: storageEntries(5) });
      const twoDynamic = device.createBindGroupLayout({ entries: storageEntries(2, 2) });
      const threeDynamic = device.createBindGroupLayout({ entries: storageEntries(3, 3) });
      const out = {
        at: await validationOf(device, () => device.createPipelineLayout({ bindGroupLayouts: [four, four] })),
        over: await validationOf(device, () => device.createPipelineLayout({ bindGroupLayouts: [four, five] })),
        dynamicOver: await validationOf(device, () => device.createPipelineLayout({ bindGroupLayouts: [twoDynamic, threeDynamic] })),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: "createComputePipeline with layout 'auto': the bindings the shader uses stay within the per-stage limits",
    source: "WebGPU default pipeline layout; CTS limits,maxStorageBuffersPerShaderStage (layout 'auto')",
    async run(env) {
      const device = await defaultDevice(env);
      const shader = (n: number) =>
        Array.from({ length: n }, (_, i) => `@group(0) @binding(${i}) var<storage, read_write> b${i}: u32;`).join('\n') +
        `\n@compute @workgroup_size(1) fn main() { ${Array.from({ length: n }, (_, i) => `b${i} = 0u;`).join(' ')} }`;
      const out = { at: await pipelineError(device, shader(8)), over: await pipelineError(device, shader(9)) };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'an object refused at the device limits is invalid: using it is a validation error',
    source: 'WebGPU §3.4 (invalid objects)',
    async run(env) {
      const device = await defaultDevice(env);
      device.pushErrorScope('validation');
      const refused = device.createBindGroupLayout({ entries: storageEntries(9) });
      await device.popErrorScope();
      const out = { pipelineLayout: await validationOf(device, () => device.createPipelineLayout({ bindGroupLayouts: [refused] })) };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createBindGroup: buffer binding offsets are multiples of min{Storage,Uniform}BufferOffsetAlignment',
    source: 'WebGPU createBindGroup; CTS limits,min{Storage,Uniform}BufferOffsetAlignment',
    async run(env) {
      const device = await defaultDevice(env);
      const buffer = device.createBuffer({ size: 1024, usage: STORAGE | UNIFORM });
      const storage = device.createBindGroupLayout({ entries: storageEntries(1) });
      const uniform = device.createBindGroupLayout({ entries: storageEntries(1, 0, 'uniform') });
      const bind = (layout: GPUBindGroupLayout, offset: number) =>
        validationOf(device, () => device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer, offset, size: 16 } }] }));
      const out = {
        storage256: await bind(storage, 256),
        storage16: await bind(storage, 16),
        uniform256: await bind(uniform, 256),
        uniform32: await bind(uniform, 32),
      };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'createBindGroup for an auto layout: offsets aligned as the binding the shader declares needs',
    source: "WebGPU createBindGroup (layout from getBindGroupLayout of a 'auto' pipeline)",
    async run(env) {
      const device = await defaultDevice(env);
      const module = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> b: array<u32>;\n@compute @workgroup_size(1) fn main() { b[0] = 1u; }' });
      const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
      const layout = pipeline.getBindGroupLayout(0);
      const buffer = device.createBuffer({ size: 1024, usage: STORAGE });
      const bind = (offset: number) => validationOf(device, () => device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer, offset, size: 16 } }] }));
      const out = { at: await bind(512), off: await bind(48) };
      device.destroy();
      return out;
    },
  },
  {
    rule: 'setBindGroup: dynamic offsets are multiples of min{Storage,Uniform}BufferOffsetAlignment (error at finish)',
    source: 'WebGPU GPUBindingCommandsMixin.setBindGroup; CTS limits,min{Storage,Uniform}BufferOffsetAlignment',
    async run(env) {
      const device = await defaultDevice(env);
      const buffer = device.createBuffer({ size: 1024, usage: STORAGE | UNIFORM });
      const layout = device.createBindGroupLayout({ entries: [...storageEntries(1, 1), { binding: 1, visibility: COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true } }] });
      const group = device.createBindGroup({
        layout,
        entries: [
          { binding: 0, resource: { buffer, size: 16 } },
          { binding: 1, resource: { buffer, size: 16 } },
        ],
      });
      const encode = (offsets: number[]) =>
        validationOf(device, () => {
          const encoder = device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          pass.setBindGroup(0, group, offsets);
          pass.end();
          return encoder.finish();
        });
      const out = { aligned: await encode([256, 512]), storage16: await encode([16, 0]), uniform32: await encode([0, 32]) };
      device.destroy();
      return out;
    },
  },
  {
    rule: "a WGSL 'enable' for a feature the device was not created with is a shader compilation error",
    source: 'WGSL §4.1.1 (enable extensions); WebGPU createShaderModule',
    async run(env) {
      const plain = await defaultDevice(env);
      const code = 'enable f16;\n@compute @workgroup_size(1) fn main() { let h: f16 = 1.0h; _ = h; }';
      let module: GPUShaderModule | undefined;
      const without = await validationOf(plain, () => (module = plain.createShaderModule({ code })));
      const info = await module!.getCompilationInfo();
      const pipeline = await validationOf(plain, () => plain.createComputePipeline({ layout: 'auto', compute: { module: module! } }));
      plain.destroy();
      const withFeature = await defaultDevice(env, { requiredFeatures: ['shader-f16'] });
      const granted = await validationOf(withFeature, () => withFeature.createShaderModule({ code }));
      // Several extensions in one directive, after a comment: the one whose feature is missing is refused.
      const subgroups = await validationOf(withFeature, () =>
        withFeature.createShaderModule({ code: '/* two */ enable f16, subgroups;\n@compute @workgroup_size(1) fn main() {}' }),
      );
      withFeature.destroy();
      return { without, messageTypes: info.messages.map((m) => m.type), pipeline, granted, subgroups };
    },
  },
]);
