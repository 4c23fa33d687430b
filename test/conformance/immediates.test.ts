// Immediate data (WebGPU §"Immediate data", WGSL `var<immediate>`): a program's own immediates and
// setImmediates must behave under gpunix exactly as on Dawn, although gpunix's atomizer carries its
// atom record in immediate data too. Each scenario writes what a dispatch read from its immediates
// into a storage buffer (the observation is those words), or reports the validation error a call
// produced. The same scenarios run again on a kernel that splits every dispatch into one-workgroup
// atoms, so that every atom must see the program's immediates (CTS:
// api,operation,command_buffer,programmable,immediate and api,validation,encoding,cmds,setImmediates).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, runInProcess, type Kernel as GpunixKernel } from '../../src/index.js';
import { conformance, thrown, validationOf, type Env, type Scenario } from './harness.js';

const OPERATION = 'CTS api,operation,command_buffer,programmable,immediate';
const VALIDATION = 'CTS api,validation,encoding,cmds,setImmediates';

interface Kernel {
  /** Module-scope declarations: the immediate variable and whatever else. */
  decl: string;
  /** The body of `main`: writes `out` (array<u32>) from `data`; `gid` and `nwg` are in scope. */
  body: string;
  immediateSize: number;
  /** Workgroups along x (each writes its own part of `out`). */
  grid?: number;
  /** A pipeline with layout 'auto' instead of the explicit one. */
  auto?: boolean;
}

/** A compute pipeline with an explicit layout: binding 0 is `out`, the layout's immediateSize as given. */
function pipelineFor(device: GPUDevice, k: Kernel, code?: string): GPUComputePipeline {
  const layout = device.createPipelineLayout({
    bindGroupLayouts: [device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }] })],
    immediateSize: k.immediateSize,
  } as GPUPipelineLayoutDescriptor);
  const module = device.createShaderModule({
    code:
      code ??
      `${k.decl}
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${k.body}
}`,
  });
  return device.createComputePipeline({ layout: k.auto ? 'auto' : layout, compute: { module, entryPoint: 'main' } });
}

/** Runs `encode` in one compute pass with `out` (words u32) bound, and returns `out`. */
async function runPass(device: GPUDevice, words: number, encode: (pass: GPUComputePassEncoder, bind: (p: GPUComputePipeline) => void) => void): Promise<number[]> {
  const out = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const staging = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  encode(pass, (p) => pass.setBindGroup(0, device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] })));
  pass.end();
  encoder.copyBufferToBuffer(out, 0, staging, 0, words * 4);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const result = [...new Uint32Array(staging.getMappedRange())];
  staging.unmap();
  return result;
}

/** One kernel run with immediates set by `set`, over `grid` workgroups; the words it wrote. */
async function dispatchWith(env: Env, k: Kernel, words: number, set: (pass: GPUComputePassEncoder) => void): Promise<number[]> {
  const device = await env.device();
  const pipeline = pipelineFor(device, k);
  const result = await runPass(device, words, (pass, bind) => {
    pass.setPipeline(pipeline);
    bind(pipeline);
    set(pass);
    pass.dispatchWorkgroups(k.grid ?? 1);
  });
  device.destroy();
  return result;
}

/** The operation scenarios: what dispatches read from the program's immediates. */
function operationScenarios(): Scenario[] {
  return [
    {
      rule: 'a dispatch reads the immediates the program set (u32, vec4u, struct)',
      source: `${OPERATION}:basic_execution`,
      async run(env) {
        const scalar = await dispatchWith(env, { decl: 'var<immediate> data: u32;', body: 'out[0] = data;', immediateSize: 4 }, 1, (p) => p.setImmediates(0, new Uint32Array([0x10000000])));
        const vector = await dispatchWith(env, { decl: 'var<immediate> data: vec4u;', body: 'out[0] = data.x; out[1] = data.y; out[2] = data.z; out[3] = data.w;', immediateSize: 16 }, 4, (p) =>
          p.setImmediates(0, new Uint32Array([1, 2, 3, 4])),
        );
        const struct = await dispatchWith(env, { decl: 'struct S { a: u32, b: f32 }\nvar<immediate> data: S;', body: 'out[0] = data.a; out[1] = bitcast<u32>(data.b);', immediateSize: 8 }, 2, (p) =>
          p.setImmediates(0, new Uint32Array([0xdeadbeef, 0x3fc00000])),
        );
        return { scalar, vector, struct };
      },
    },
    {
      rule: 'every workgroup of a split dispatch sees the program immediates and its own grid position',
      source: `${OPERATION}:basic_execution (with grid builtins)`,
      async run(env) {
        // 6 workgroups: out[i] = data.x * 100 + i, out[6 + i] = num_workgroups.x + data.y.
        return dispatchWith(
          env,
          { decl: 'var<immediate> data: vec2u;', body: 'out[gid.x] = data.x * 100u + gid.x; out[6u + gid.x] = nwg.x + data.y;', immediateSize: 8, grid: 6 },
          12,
          (p) => p.setImmediates(0, new Uint32Array([7, 1000])),
        );
      },
    },
    {
      rule: 'later setImmediates calls update the immediates partially, between and before dispatches',
      source: `${OPERATION}:update_data, multiple_updates_before_draw_or_dispatch`,
      async run(env) {
        const device = await env.device();
        const k: Kernel = { decl: 'struct D { a: u32, b: u32, c: u32, d: u32, at: u32 }\nvar<immediate> data: D;', body: 'out[data.at] = data.a; out[data.at + 1] = data.b; out[data.at + 2] = data.c; out[data.at + 3] = data.d;', immediateSize: 20 };
        const pipeline = pipelineFor(device, k);
        const result = await runPass(device, 16, (pass, bind) => {
          pass.setPipeline(pipeline);
          bind(pipeline);
          pass.setImmediates(0, new Uint32Array([1, 2, 3, 4, 0]));
          pass.dispatchWorkgroups(1);
          pass.setImmediates(0, new Uint32Array([5, 6, 7, 8, 4]));
          pass.dispatchWorkgroups(1);
          pass.setImmediates(4, new Uint32Array([9, 10]));
          pass.setImmediates(16, new Uint32Array([8]));
          pass.dispatchWorkgroups(1);
          pass.setImmediates(12, new Uint32Array([11, 12]));
          pass.dispatchWorkgroups(1);
        });
        device.destroy();
        return result;
      },
    },
    {
      rule: 'immediates set before a pipeline switch, then set again, reach the second pipeline',
      source: `${OPERATION}:pipeline_switch`,
      async run(env) {
        const device = await env.device();
        const a = pipelineFor(device, { decl: 'var<immediate> data: vec4u;', body: 'out[0] = data.x; out[1] = data.y; out[2] = data.z; out[3] = data.w;', immediateSize: 16 });
        const b = pipelineFor(device, { decl: 'var<immediate> data: vec2u;', body: 'out[4] = data.x; out[5] = data.y;', immediateSize: 8 });
        const result = await runPass(device, 6, (pass, bind) => {
          pass.setPipeline(a);
          bind(a);
          pass.setImmediates(0, new Uint32Array([1, 2, 3, 4]));
          pass.dispatchWorkgroups(1);
          pass.setPipeline(b);
          bind(b);
          pass.setImmediates(0, new Uint32Array([5, 6]));
          pass.dispatchWorkgroups(1);
        });
        device.destroy();
        return result;
      },
    },
    {
      rule: 'immediates stay set across setPipeline: a second pipeline reads what was set for the first',
      source: `${OPERATION}:pipeline_switch; WebGPU §"Immediate data" (pass state)`,
      async run(env) {
        const device = await env.device();
        const k = (at: number): Kernel => ({ decl: 'var<immediate> data: vec4u;', body: `out[${at}u + gid.x] = data.x + data.w * 10u + nwg.x * 100u;`, immediateSize: 16 });
        const a = pipelineFor(device, k(0));
        const b = pipelineFor(device, k(2));
        const result = await runPass(device, 4, (pass, bind) => {
          pass.setPipeline(a);
          bind(a);
          pass.setImmediates(0, new Uint32Array([1, 2, 3, 4]));
          pass.dispatchWorkgroups(2);
          pass.setPipeline(b);
          pass.dispatchWorkgroups(2);
        });
        device.destroy();
        return result;
      },
    },
    {
      rule: 'the immediates are maxImmediateSize bytes, all readable',
      source: `${OPERATION}:use_max_immediate_size`,
      async run(env) {
        const device = await env.device();
        const max = device.limits.maxImmediateSize;
        device.destroy();
        const count = max / 4;
        const members = Array.from({ length: count }, (_, i) => `m${i}: u32`).join(', ');
        const data = new Uint32Array(count).map((_, i) => 0xa000 + i);
        const words = await dispatchWith(env, { decl: `struct Large { ${members} }\nvar<immediate> data: Large;`, body: `out[0] = data.m0; out[1] = data.m${count - 1}; out[2] = nwg.x;`, immediateSize: max, grid: 3 }, 3, (p) =>
          p.setImmediates(0, data),
        );
        return { max, words };
      },
    },
    {
      rule: "setImmediates' dataOffset and size count elements of a typed array, bytes of an ArrayBuffer",
      source: `${OPERATION}:typed_array_arguments`,
      async run(env) {
        const k: Kernel = { decl: 'struct Pair { a: u32, b: u32 }\nvar<immediate> data: Pair;', body: 'out[0] = data.a; out[1] = data.b;', immediateSize: 8 };
        const bytes = new Uint8Array(24).map((_, i) => i + 1);
        const out: Record<string, number[]> = {};
        for (const [name, make] of [
          ['Uint8Array', () => new Uint8Array(bytes.buffer)],
          ['Uint16Array', () => new Uint16Array(bytes.buffer)],
          ['Float64Array', () => new Float64Array(bytes.buffer)],
        ] as const) {
          const view = make();
          const per = view.BYTES_PER_ELEMENT;
          out[name] = await dispatchWith(env, k, 2, (p) => p.setImmediates(0, view, 8 / per, 8 / per));
        }
        out.ArrayBuffer = await dispatchWith(env, k, 2, (p) => p.setImmediates(0, bytes.buffer, 4, 8));
        return out;
      },
    },
  ];
}

/** The error a pass with `encode` gives at finish() (null when valid). */
async function passError(env: Env, k: Kernel, encode: (pass: GPUComputePassEncoder, pipeline: GPUComputePipeline, device: GPUDevice) => void): Promise<string | null> {
  const device = await env.device();
  const pipeline = pipelineFor(device, k);
  const result = await validationOf(device, () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    encode(pass, pipeline, device);
    pass.end();
    encoder.finish();
  });
  device.destroy();
  return result;
}

const VEC4: Kernel = { decl: 'var<immediate> data: vec4u;', body: 'out[0] = data.x + data.w;', immediateSize: 16 };

const validationScenarios: Scenario[] = [
  {
    rule: 'setImmediates needs rangeOffset and the byte size multiples of 4, within maxImmediateSize',
    source: `${VALIDATION}:alignment, overflow`,
    async run(env) {
      const out: Record<string, string | null> = {};
      const cases: Array<[string, number, () => ArrayBufferView | ArrayBuffer]> = [
        ['offset 0, 16 bytes', 0, () => new Uint32Array(4)],
        ['offset 2', 2, () => new Uint32Array(1)],
        ['offset 48, 16 bytes (to the limit)', 48, () => new Uint32Array(4)],
        ['offset 52, 16 bytes (past the limit)', 52, () => new Uint32Array(4)],
        ['offset 64, 0 bytes', 64, () => new Uint32Array(0)],
        ['offset 68, 0 bytes', 68, () => new Uint32Array(0)],
        ['68 bytes', 0, () => new Uint32Array(17)],
      ];
      for (const [name, offset, data] of cases) out[name] = await passError(env, VEC4, (pass) => pass.setImmediates(offset, data() as GPUAllowSharedBufferSource));
      return out;
    },
  },
  {
    rule: 'setImmediates throws RangeError for content outside the data or not a multiple of 4 bytes, and the encoder stays valid',
    source: `${VALIDATION}:alignment, overflow, out_of_bounds`,
    async run(env) {
      const device = await env.device();
      const max = device.limits.maxImmediateSize;
      const out: Record<string, unknown> = {};
      const cases: Array<[string, (pass: GPUComputePassEncoder) => void]> = [
        ['5 bytes', (pass) => pass.setImmediates(4, new Uint8Array(5), 0, 5)],
        ['offset + size past 2^53', (pass) => pass.setImmediates(8, new Uint8Array(max), 0, Number.MAX_SAFE_INTEGER - 7)],
        ['size past the data', (pass) => pass.setImmediates(max - 8, new Uint8Array(4), 0, 8)],
        ['dataOffset + size past the data', (pass) => pass.setImmediates(max - 8, new Uint8Array(32), 28, 8)],
        ['range to the limit (control)', (pass) => pass.setImmediates(max - 4, new Uint8Array(32), 0, 4)],
        ['range past the limit', (pass) => pass.setImmediates(max, new Uint8Array(32), 0, 4)],
        ['offset 2, size 2 of 4 elements', (pass) => pass.setImmediates(0, new Uint32Array(4), 2, 2)],
        ['offset 4 of 4 elements, no size', (pass) => pass.setImmediates(0, new Uint32Array(4), 4)],
        ['offset 5 of 4 elements, no size', (pass) => pass.setImmediates(0, new Uint32Array(4), 5)],
        ['offset 3, size 2 of 4 elements', (pass) => pass.setImmediates(0, new Uint32Array(4), 3, 2)],
      ];
      for (const [name, call] of cases) {
        let threw: string | null = null;
        const error = await validationOf(device, () => {
          const encoder = device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          threw = thrown(() => call(pass));
          pass.end();
          encoder.finish();
        });
        out[name] = { threw, error };
      }
      device.destroy();
      return out;
    },
    dawnBreaks: {
      why: 'Dawn throws OperationError for a range outside the data, and makes the encoder invalid (no exception) for a size not a multiple of 4',
      expected: {
        '5 bytes': { threw: 'RangeError', error: null },
        'offset + size past 2^53': { threw: 'RangeError', error: null },
        'size past the data': { threw: 'RangeError', error: null },
        'dataOffset + size past the data': { threw: 'RangeError', error: null },
        'range to the limit (control)': { threw: null, error: null },
        'range past the limit': { threw: null, error: 'GPUValidationError' },
        'offset 2, size 2 of 4 elements': { threw: null, error: null },
        'offset 4 of 4 elements, no size': { threw: null, error: null },
        'offset 5 of 4 elements, no size': { threw: 'RangeError', error: null },
        'offset 3, size 2 of 4 elements': { threw: 'RangeError', error: null },
      },
    },
  },
  {
    rule: "setImmediates' dataOffset and size are elements of the typed array, for every typed array type",
    source: `${VALIDATION}:interpretation`,
    async run(env) {
      const device = await env.device();
      const max = device.limits.maxImmediateSize;
      const out: Record<string, unknown> = {};
      const types = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array];
      for (const Type of types) {
        const per = Type.BYTES_PER_ELEMENT;
        for (const inElements of [true, false]) {
          // In elements: an aligned range that fits; taken as bytes instead it would not (for per > 1).
          const size = inElements ? Math.floor((max - 4) / per) : max - 4;
          const offset = inElements ? Math.ceil(4 / per) : 4;
          let threw: string | null = null;
          const error = await validationOf(device, () => {
            const encoder = device.createCommandEncoder();
            const pass = encoder.beginComputePass();
            threw = thrown(() => pass.setImmediates(0, new Type(max) as unknown as GPUAllowSharedBufferSource, offset, size));
            pass.end();
            encoder.finish();
          });
          out[`${Type.name} ${inElements ? 'fits' : 'too large'}`] = { threw, error };
        }
      }
      device.destroy();
      return out;
    },
  },
  {
    rule: "a dispatch needs every byte of the pipeline layout's immediates set since setPipeline",
    source: `${VALIDATION}; WebGPU §"Immediate data" (dispatch validation)`,
    async run(env) {
      const out: Record<string, string | null> = {};
      const bind = (pass: GPUComputePassEncoder, p: GPUComputePipeline, device: GPUDevice) =>
        pass.setBindGroup(0, device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE }) } }] }));
      out['none set'] = await passError(env, VEC4, (pass, p, d) => {
        pass.setPipeline(p);
        bind(pass, p, d);
        pass.dispatchWorkgroups(1);
      });
      out['all set'] = await passError(env, VEC4, (pass, p, d) => {
        pass.setPipeline(p);
        bind(pass, p, d);
        pass.setImmediates(0, new Uint32Array(4));
        pass.dispatchWorkgroups(1);
      });
      out['first 8 bytes set'] = await passError(env, VEC4, (pass, p, d) => {
        pass.setPipeline(p);
        bind(pass, p, d);
        pass.setImmediates(0, new Uint32Array(2));
        pass.dispatchWorkgroups(1);
      });
      out['set before setPipeline'] = await passError(env, VEC4, (pass, p, d) => {
        pass.setImmediates(0, new Uint32Array(4));
        pass.setPipeline(p);
        bind(pass, p, d);
        pass.dispatchWorkgroups(1);
      });
      return out;
    },
  },
  {
    rule: 'a pipeline layout with immediateSize above maxImmediateSize, or a shader whose immediates exceed the layout, is an error',
    source: 'WebGPU createPipelineLayout / createComputePipeline validation (immediateSize)',
    async run(env) {
      const device = await env.device();
      const max = device.limits.maxImmediateSize;
      const overLimit = await validationOf(device, () =>
        device.createPipelineLayout({ bindGroupLayouts: [], immediateSize: max + 4 } as GPUPipelineLayoutDescriptor),
      );
      const tooSmall = await validationOf(device, () => pipelineFor(device, { ...VEC4, immediateSize: 8 }));
      const fits = await validationOf(device, () => pipelineFor(device, VEC4));
      device.destroy();
      return { max, overLimit, tooSmall, fits };
    },
  },
];

conformance('immediates', [...operationScenarios(), ...validationScenarios]);
conformance('immediates (every dispatch split into one-workgroup atoms)', operationScenarios(), { atomSize: 1 });

// Not a comparison with Dawn but the point of the composition: a dispatch whose entry reads the
// program's immediates and grid builtins really runs as atoms (it used to run whole), with the
// record in the immediates after the program's data, or in a uniform when there is no room.
describe('immediates: the program data and the atom record share the immediates', () => {
  let kernel: GpunixKernel;
  before(async () => {
    kernel = await createKernel({ atomSize: 1 });
  });
  after(async () => {
    await kernel.shutdown();
  });

  /** Runs `k` in a fresh process; its words and how many atoms and dispatches the process ran. */
  async function inProcess(k: Kernel, words: number, data: Uint32Array<ArrayBuffer>): Promise<{ words: number[]; atoms: number; dispatches: number }> {
    const proc = await kernel.spawn({ name: 'immediates' });
    try {
      const env = { side: 'gpunix', gpu: proc.gpu, globals: {}, device: async () => (await proc.gpu.requestAdapter())!.requestDevice() } as Env;
      const result = await runInProcess(proc, () => dispatchWith(env, k, words, (p) => p.setImmediates(0, data)));
      const record = kernel.ps().find((r) => r.pid === proc.pid)!;
      return { words: result, atoms: record.accounting.atomsRun, dispatches: record.accounting.dispatches };
    } finally {
      await proc.kill();
    }
  }

  it('splits a dispatch that reads program immediates and grid builtins into atoms', async () => {
    const k: Kernel = { decl: 'var<immediate> data: vec2u;', body: 'out[gid.x] = data.x * 100u + gid.x + nwg.x * 1000u + data.y;', immediateSize: 8, grid: 6 };
    const run = await inProcess(k, 6, new Uint32Array([7, 5]));
    assert.deepEqual(run.words, [6705, 6706, 6707, 6708, 6709, 6710]);
    assert.equal(run.atoms, 6, `${run.atoms} atoms for ${run.dispatches} dispatch`);
  });

  it('splits with the record in a uniform when the program immediates leave it no room', async () => {
    const members = Array.from({ length: 12 }, (_, i) => `m${i}: u32`).join(', ');
    const k: Kernel = { decl: `struct Big { ${members} }\nvar<immediate> data: Big;`, body: 'out[gid.x] = data.m0 + data.m11 + nwg.x * 1000u + gid.x;', immediateSize: 48, grid: 3 };
    const run = await inProcess(k, 3, new Uint32Array(12).map((_, i) => i * 10));
    assert.deepEqual(run.words, [3110, 3111, 3112]);
    assert.equal(run.atoms, 3);
    const auto = await inProcess({ ...k, auto: true }, 3, new Uint32Array(12).map((_, i) => i * 10));
    assert.deepEqual(auto, run, "the same with layout 'auto'");
  });

  it("composes the program's immediates with the record under layout 'auto' too", async () => {
    const k: Kernel = { decl: 'var<immediate> data: vec2u;', body: 'out[gid.x] = data.x * 100u + gid.x + nwg.x * 1000u + data.y;', immediateSize: 8, grid: 4, auto: true };
    const run = await inProcess(k, 4, new Uint32Array([7, 5]));
    assert.deepEqual(run.words, [4705, 4706, 4707, 4708]);
    assert.equal(run.atoms, 4);
  });
});
