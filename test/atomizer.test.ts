// The atomizer scenarios: every corpus kernel, rewritten and run as atoms (random box splits,
// one-workgroup atoms, slabs along each dimension, shuffled order; each atom its own dispatch
// with its record), writes byte-for-byte what the original writes in one dispatch on bare Dawn;
// the rewrite compiles, keeps the program's bind group layouts, introduces no colliding names,
// leaves other entry points alone, and falls back (uniform, whole) where it must.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ATOM_RECORD_SIZE, atomize, atomParams, type AtomizedEntry } from '../src/wgsl/index.js';
import { identifierNames, parseWgsl } from '../src/wgsl/source.js';
import { bareDevice, bareGpu } from './helpers.js';

type Vec3 = [number, number, number];

interface BufferSpec {
  group?: number;
  binding: number;
  kind: 'storage' | 'read-only-storage';
  bytes: number;
  /** Initial contents as u32 words (default zeros). */
  init?: (i: number) => number;
}

interface Kernel {
  name: string;
  code: string;
  entryPoint?: string;
  grid: Vec3;
  buffers: BufferSpec[];
  constants?: Record<string, number>;
  /** The program's own immediate data (a kernel that uses var<immediate> itself). */
  userImmediates?: Uint32Array<ArrayBuffer>;
  expectMode: 'immediate' | 'uniform';
  expectVirtualized: string[];
  needsLinearIndexing?: boolean;
}

const LIMITS = { maxImmediateSize: 64, maxBindGroups: 4 };

const corpus: Kernel[] = [
  {
    name: '1D, builtins as parameters, a grid that overshoots the data (bounds check)',
    code: `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(workgroup_id) wid: vec3u) {
  if (gid.x >= arrayLength(&out)) { return; }
  out[gid.x] = gid.x * 7u + nwg.x * 100000u + wid.x * 1000u;
}
`,
    grid: [5, 1, 1],
    buffers: [{ binding: 0, kind: 'storage', bytes: 300 * 4 }],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id', 'num_workgroups', 'workgroup_id'],
  },
  {
    name: '2D, builtins inside a struct parameter',
    code: `struct Inputs {
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
}
@group(0) @binding(0) var<storage, read_write> out: array<vec4u>;
@compute @workgroup_size(4, 4)
fn main(inputs: Inputs) {
  let width = inputs.nwg.x * 4u;
  out[inputs.gid.y * width + inputs.gid.x] = vec4u(inputs.wid.xy, inputs.lid.xy + inputs.nwg.xy * 100u);
}
`,
    grid: [3, 5, 1],
    buffers: [{ binding: 0, kind: 'storage', bytes: 12 * 20 * 16 }],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id', 'workgroup_id', 'num_workgroups'],
  },
  {
    name: '3D grid and 3D workgroups with the linear-indexing builtins',
    code: `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read_write> ids: array<vec4u>;
@compute @workgroup_size(2, 3, 2)
fn main(@builtin(workgroup_index) wi: u32, @builtin(global_invocation_index) gi: u32,
        @builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3u) {
  out[gi] = wi * 1000u + li;
  ids[gi] = vec4u(wid, wi);
}
`,
    grid: [3, 2, 4],
    buffers: [
      { binding: 0, kind: 'storage', bytes: 24 * 12 * 4 },
      { binding: 1, kind: 'storage', bytes: 24 * 12 * 16 },
    ],
    expectMode: 'immediate',
    expectVirtualized: ['workgroup_index', 'global_invocation_index', 'workgroup_id'],
    needsLinearIndexing: true,
  },
  {
    name: 'atomics (order-independent sums and maxima)',
    code: `@group(0) @binding(0) var<storage, read_write> bins: array<atomic<u32>, 8>;
@group(0) @binding(1) var<storage, read_write> maxes: array<atomic<u32>, 8>;
@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u) {
  let total = n.x * 32u;
  if (gid.x >= total - 5u) { return; }
  atomicAdd(&bins[gid.x % 8u], gid.x);
  atomicMax(&maxes[(gid.x * 3u) % 8u], gid.x ^ 0x55u);
}
`,
    grid: [7, 1, 1],
    buffers: [
      { binding: 0, kind: 'storage', bytes: 32 },
      { binding: 1, kind: 'storage', bytes: 32 },
    ],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id', 'num_workgroups'],
  },
  {
    name: 'workgroup memory, barriers, workgroupUniformLoad and a barrier under a workgroup_id branch',
    code: `var<workgroup> tile: array<u32, 64>;
var<workgroup> flag: u32;
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> sums: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) n: vec3u) {
  let row = wid.y * n.x + wid.x;
  tile[li] = input[row * 64u + li];
  if (li == 0u) { flag = row % 3u; }
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s / 2u) {
    if (li < s) { tile[li] += tile[li + s]; }
    workgroupBarrier();
  }
  let f = workgroupUniformLoad(&flag);
  if (wid.x % 2u == 0u) { workgroupBarrier(); }
  if (li == 0u) { sums[row] = tile[0] * 10u + f; }
}
`,
    grid: [3, 2, 1],
    buffers: [
      { binding: 0, kind: 'read-only-storage', bytes: 6 * 64 * 4, init: (i) => (i * 2654435761) >>> 20 },
      { binding: 1, kind: 'storage', bytes: 6 * 4 },
    ],
    expectMode: 'immediate',
    expectVirtualized: ['workgroup_id', 'num_workgroups'],
  },
  {
    name: 'override-sized workgroups (pipeline constants)',
    code: `override WG_X: u32 = 4;
override WG_Y = 2u;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(WG_X * 2u, WG_Y)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u) {
  let w = n.x * WG_X * 2u;
  let h = n.y * WG_Y;
  if (gid.x < w && gid.y < h) { out[gid.y * w + gid.x] = gid.x * 3u + gid.y * 1000u; }
}
`,
    grid: [4, 3, 1],
    constants: { WG_X: 3 },
    buffers: [{ binding: 0, kind: 'storage', bytes: 160 * 4 }],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id', 'num_workgroups'],
  },
  {
    name: 'a kernel that already uses var<immediate> (composed with the record)',
    code: `struct Params { scale: u32, bias: u32 }
var<immediate> params: Params;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
fn scaled(x: u32) -> u32 { return x * params.scale + params.bias; }
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  out[gid.x] = scaled(gid.x); // the immediate is used only through the callee
}
`,
    grid: [6, 1, 1],
    userImmediates: new Uint32Array([3, 11]),
    buffers: [{ binding: 0, kind: 'storage', bytes: 48 * 4 }],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id'],
  },
  {
    name: 'the second entry point of a module with two (shared builtin struct)',
    code: `struct Ids { @builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
fn store(i: u32, v: u32) { out[i] = v; }
@compute @workgroup_size(4) fn first(ids: Ids) { store(ids.wid.x * 4u + ids.li, 1u + ids.wid.x); }
@compute @workgroup_size(4, 2) fn second(ids: Ids, @builtin(num_workgroups) n: vec3u) {
  store((ids.wid.y * n.x + ids.wid.x) * 8u + ids.li, 100u + ids.wid.x + ids.wid.y * 10u);
}
`,
    entryPoint: 'second',
    grid: [3, 4, 1],
    buffers: [{ binding: 0, kind: 'storage', bytes: 96 * 4 }],
    expectMode: 'immediate',
    expectVirtualized: ['workgroup_id', 'num_workgroups'],
  },
  {
    name: 'a program whose names look like the rewriter\'s own',
    code: `const gpunix_atom = 3u;
struct GpunixAtom { v: u32 }
fn gpunix_workgroup_size() -> u32 { return 1u; }
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(16)
fn main(@builtin(global_invocation_id) gpunix_raw_workgroup_id: vec3u,
        @builtin(workgroup_id) gpunix_workgroup_id: vec3u) {
  let gpunix_global_invocation_id = GpunixAtom(gpunix_atom);
  out[gpunix_raw_workgroup_id.x] = gpunix_workgroup_id.x * gpunix_global_invocation_id.v + gpunix_workgroup_size();
}
`,
    grid: [4, 1, 1],
    buffers: [{ binding: 0, kind: 'storage', bytes: 64 * 4 }],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id', 'workgroup_id'],
  },
  {
    name: '3D grid, 3D workgroups, global_invocation_id in a struct beside a local_invocation_id parameter',
    code: `struct G { @builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u }
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(2, 2, 2)
fn main(g: G, @builtin(local_invocation_id) lid: vec3u) {
  let dims = g.n * 2u;
  let i = g.gid.x + dims.x * (g.gid.y + dims.y * g.gid.z);
  out[i] = ((g.gid.x << 20u) | (g.gid.y << 10u) | g.gid.z) + lid.x * 0x1000000u;
}
`,
    grid: [3, 4, 2],
    buffers: [{ binding: 0, kind: 'storage', bytes: 6 * 8 * 4 * 4 }],
    expectMode: 'immediate',
    expectVirtualized: ['global_invocation_id', 'num_workgroups'],
  },
  {
    name: 'a kernel that uses no grid-dependent builtin (nothing to virtualize)',
    code: `@group(0) @binding(0) var<storage, read_write> out: array<atomic<u32>, 16>;
@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) li: u32, @builtin(local_invocation_id) lid: vec3u) {
  atomicAdd(&out[li], lid.x + 1u);
}
`,
    grid: [5, 1, 1],
    buffers: [{ binding: 0, kind: 'storage', bytes: 64 }],
    expectMode: 'immediate',
    expectVirtualized: [],
  },
];

/** A box of the grid: one atom. */
interface Box {
  offset: Vec3;
  size: Vec3;
}

/** mulberry32: a small seeded generator, so every split is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random k-d splits of the grid into boxes. */
function randomBoxes(grid: Vec3, random: () => number): Box[] {
  const out: Box[] = [];
  const split = (box: Box) => {
    const dims = [0, 1, 2].filter((d) => box.size[d] > 1);
    if (dims.length === 0 || random() < 0.25) {
      out.push(box);
      return;
    }
    const d = dims[Math.floor(random() * dims.length)];
    const cut = 1 + Math.floor(random() * (box.size[d] - 1));
    const a: Box = { offset: [...box.offset], size: [...box.size] };
    const b: Box = { offset: [...box.offset], size: [...box.size] };
    a.size[d] = cut;
    b.offset[d] += cut;
    b.size[d] -= cut;
    split(a);
    split(b);
  };
  split({ offset: [0, 0, 0], size: [...grid] });
  return out;
}

/** Slabs of one workgroup along dimension `d`. */
function slabs(grid: Vec3, d: number): Box[] {
  const out: Box[] = [];
  for (let i = 0; i < grid[d]; i++) {
    const box: Box = { offset: [0, 0, 0], size: [...grid] };
    box.offset[d] = i;
    box.size[d] = 1;
    out.push(box);
  }
  return out;
}

/** Every workgroup its own atom. */
function unitBoxes(grid: Vec3): Box[] {
  const out: Box[] = [];
  for (let z = 0; z < grid[2]; z++) for (let y = 0; y < grid[1]; y++) for (let x = 0; x < grid[0]; x++) out.push({ offset: [x, y, z], size: [1, 1, 1] });
  return out;
}

function shuffle<T>(items: T[], random: () => number): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** The splits every kernel is run with: named, seeded, in shuffled atom order. */
function splitsFor(grid: Vec3, seed: number): { name: string; boxes: Box[] }[] {
  const random = rng(seed);
  const splits = [
    { name: 'one atom covering the grid', boxes: [{ offset: [0, 0, 0] as Vec3, size: [...grid] as Vec3 }] },
    { name: 'one-workgroup atoms', boxes: unitBoxes(grid) },
  ];
  for (const d of [0, 1, 2]) if (grid[d] > 1) splits.push({ name: `slabs along ${'xyz'[d]}`, boxes: slabs(grid, d) });
  for (let i = 0; i < 3; i++) splits.push({ name: `random split ${i}`, boxes: randomBoxes(grid, random) });
  return splits.map((s) => ({ name: s.name, boxes: shuffle(s.boxes, random) }));
}

/** Checks the boxes tile the grid exactly once (a test-harness invariant). */
function assertTiles(grid: Vec3, boxes: Box[]): void {
  const seen = new Uint8Array(grid[0] * grid[1] * grid[2]);
  for (const b of boxes) {
    for (let z = b.offset[2]; z < b.offset[2] + b.size[2]; z++) {
      for (let y = b.offset[1]; y < b.offset[1] + b.size[1]; y++) {
        for (let x = b.offset[0]; x < b.offset[0] + b.size[0]; x++) seen[x + grid[0] * (y + grid[1] * z)]++;
      }
    }
  }
  assert.ok(seen.every((c) => c === 1), 'the atoms tile the grid exactly once');
}

/** One compiled pipeline plus what running it needs. */
interface Compiled {
  pipeline: GPUComputePipeline;
  /** Layout of the program's groups: 'auto' pipelines answer getBindGroupLayout; explicit ones share these. */
  groupLayouts: Map<number, GPUBindGroupLayout>;
  atomGroupLayout?: GPUBindGroupLayout;
}

function groupsOf(kernel: Kernel): number[] {
  return [...new Set(kernel.buffers.map((b) => b.group ?? 0))].sort();
}

/** The explicit bind group layouts of a kernel's program groups, built from its buffer list. */
function explicitGroupLayouts(device: GPUDevice, kernel: Kernel): Map<number, GPUBindGroupLayout> {
  const layouts = new Map<number, GPUBindGroupLayout>();
  for (const g of groupsOf(kernel)) {
    layouts.set(
      g,
      device.createBindGroupLayout({
        entries: kernel.buffers
          .filter((b) => (b.group ?? 0) === g)
          .map((b) => ({ binding: b.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: b.kind } })),
      }),
    );
  }
  return layouts;
}

async function compile(
  device: GPUDevice,
  kernel: Kernel,
  code: string,
  entryPoint: string | undefined,
  layout: 'auto' | Map<number, GPUBindGroupLayout>,
  atom?: AtomizedEntry,
): Promise<Compiled> {
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  assert.deepEqual(errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`), [], `${kernel.name}: compiles`);
  const compute: GPUProgrammableStage = { module, ...(entryPoint ? { entryPoint } : {}), ...(kernel.constants ? { constants: kernel.constants } : {}) };
  if (layout === 'auto') {
    const pipeline = device.createComputePipeline({ layout: 'auto', compute });
    const groupLayouts = new Map(groupsOf(kernel).map((g) => [g, pipeline.getBindGroupLayout(g)]));
    const atomGroupLayout = atom?.mode === 'uniform' ? pipeline.getBindGroupLayout(atom.uniformBinding!.group) : undefined;
    return { pipeline, groupLayouts, atomGroupLayout };
  }
  const bindGroupLayouts: GPUBindGroupLayout[] = [];
  let atomGroupLayout: GPUBindGroupLayout | undefined;
  const maxGroup = Math.max(...groupsOf(kernel), atom?.mode === 'uniform' ? atom.uniformBinding!.group : -1);
  for (let g = 0; g <= maxGroup; g++) {
    if (atom?.mode === 'uniform' && g === atom.uniformBinding!.group) {
      atomGroupLayout = device.createBindGroupLayout({
        entries: [{ binding: atom.uniformBinding!.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', minBindingSize: ATOM_RECORD_SIZE } }],
      });
      bindGroupLayouts.push(atomGroupLayout);
    } else bindGroupLayouts.push(layout.get(g) ?? device.createBindGroupLayout({ entries: [] }));
  }
  const immediateSize = Math.max(atom?.mode === 'immediate' ? atom.immediateSize! : 0, kernel.userImmediates?.byteLength ?? 0);
  const pipeline = device.createComputePipeline({ layout: device.createPipelineLayout({ bindGroupLayouts, immediateSize }), compute });
  return { pipeline, groupLayouts: layout, atomGroupLayout };
}

/**
 * Runs a compiled kernel on fresh buffers, either as the original's one dispatch (`boxes`
 * undefined) or as one dispatch per atom, and returns the bytes of every writable buffer.
 */
async function run(
  device: GPUDevice,
  kernel: Kernel,
  compiled: Compiled,
  boxes?: Box[],
  atom?: AtomizedEntry,
  recordOf: (box: Box) => Uint32Array<ArrayBuffer> = (box) => atomParams(box.offset, kernel.grid),
): Promise<Uint8Array> {
  device.pushErrorScope('validation');
  const buffers = kernel.buffers.map((spec) => {
    const buffer = device.createBuffer({ size: spec.bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    if (spec.init) device.queue.writeBuffer(buffer, 0, new Uint32Array(spec.bytes / 4).map((_, i) => spec.init!(i)));
    return buffer;
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(compiled.pipeline);
  for (const [g, layout] of compiled.groupLayouts) {
    const entries = kernel.buffers.flatMap((spec, i) => ((spec.group ?? 0) === g ? [{ binding: spec.binding, resource: { buffer: buffers[i] } }] : []));
    pass.setBindGroup(g, device.createBindGroup({ layout, entries }));
  }
  // Composed immediates: every byte of the twin's immediates must be set, the program's own first.
  if (boxes && atom?.mode === 'immediate' && (atom.recordOffset ?? 0) > 0) pass.setImmediates(0, new Uint8Array(atom.recordOffset!));
  if (kernel.userImmediates) pass.setImmediates(0, kernel.userImmediates);
  if (!boxes) {
    pass.dispatchWorkgroups(...kernel.grid);
  } else {
    for (const box of boxes) {
      const record = recordOf(box);
      if (atom?.mode === 'immediate' && atom.immediateSize! > 0) pass.setImmediates(atom.recordOffset ?? 0, record);
      if (atom?.mode === 'uniform') {
        const uniform = device.createBuffer({ size: ATOM_RECORD_SIZE, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(uniform, 0, record);
        const { group, binding } = atom.uniformBinding!;
        pass.setBindGroup(group, device.createBindGroup({ layout: compiled.atomGroupLayout!, entries: [{ binding, resource: { buffer: uniform } }] }));
      }
      pass.dispatchWorkgroups(...box.size);
    }
  }
  pass.end();
  const writable = kernel.buffers.flatMap((spec, i) => (spec.kind === 'storage' ? [buffers[i]] : []));
  const total = writable.reduce((n, b) => n + b.size, 0);
  const readback = device.createBuffer({ size: total, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let at = 0;
  for (const b of writable) {
    encoder.copyBufferToBuffer(b, 0, readback, at, b.size);
    at += b.size;
  }
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const bytes = new Uint8Array(readback.getMappedRange().slice(0));
  readback.unmap();
  for (const b of [...buffers, readback]) b.destroy();
  const error = await device.popErrorScope();
  assert.equal(error, null, `${kernel.name}: no validation error (${error?.message})`);
  return bytes;
}

function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.byteLength, expected.byteLength, `${what}: result length`);
  const firstDifference = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(firstDifference, -1, `${what}: results differ first at byte ${firstDifference}`);
}

describe('the atomizer', () => {
  let device: GPUDevice;
  const linearIndexing = bareGpu().wgslLanguageFeatures.has('linear_indexing');
  before(async () => {
    device = await bareDevice();
  });
  after(() => {
    device.destroy();
  });

  for (const [k, kernel] of corpus.entries()) {
    const skip = kernel.needsLinearIndexing && !linearIndexing ? 'Dawn lacks the linear_indexing language feature' : false;

    it(`rewrites ${kernel.name} as ${kernel.expectMode}`, () => {
      const atom = atomize(kernel.code, kernel.entryPoint, LIMITS);
      assert.equal(atom.mode, kernel.expectMode, atom.reason);
      assert.equal(atom.entryPoint, kernel.entryPoint ?? 'main');
      assert.deepEqual([...(atom.virtualized ?? [])].sort(), [...kernel.expectVirtualized].sort());
      if (kernel.expectVirtualized.length === 0) {
        assert.equal(atom.code, kernel.code, 'nothing to virtualize: the code is unchanged');
        assert.equal(atom.immediateSize, 0);
        return;
      }
      // Every name the rewrite introduced is new to the program and carries the gpunix prefix.
      const before = parseWgsl(kernel.code);
      const afterParse = parseWgsl(atom.code);
      assert.ok(before.ok && afterParse.ok);
      const predeclared = new Set(['vec3u', 'u32']); // spelled by the rewrite, declared by WGSL
      const introduced = [...identifierNames(afterParse.ast)].filter((n) => !identifierNames(before.ast).has(n) && !predeclared.has(n));
      assert.ok(introduced.length > 0);
      for (const n of introduced) assert.ok(n.startsWith('gpunix_') || n.startsWith('GpunixAtom'), `introduced name ${n} is prefixed`);
      // A program's own immediates come first: the record then takes the last 32 bytes of the limit.
      if (atom.mode === 'immediate') assert.equal(atom.immediateSize, kernel.userImmediates ? LIMITS.maxImmediateSize : ATOM_RECORD_SIZE);
      else assert.deepEqual(atom.uniformBinding, { group: 1, binding: 0 });
    });

    it(`runs ${kernel.name} as atoms, byte-identical to one dispatch`, { skip }, async () => {
      const atom = atomize(kernel.code, kernel.entryPoint, LIMITS);
      // Explicit layouts: the rewritten pipeline is built on the original's own bind group
      // layouts (from getBindGroupLayout), so its bind groups serve both pipelines.
      const programLayouts = explicitGroupLayouts(device, kernel);
      const original = await compile(device, kernel, kernel.code, kernel.entryPoint, programLayouts);
      const shared = new Map([...programLayouts.keys()].map((g) => [g, original.pipeline.getBindGroupLayout(g)]));
      const rewritten = await compile(device, kernel, atom.code, atom.entryPoint, shared, atom);
      const expected = await run(device, kernel, original);
      assert.ok(expected.some((b) => b !== 0), `${kernel.name}: the original writes something`);
      for (const [s, split] of splitsFor(kernel.grid, 1000 + k).entries()) {
        assertTiles(kernel.grid, split.boxes);
        const actual = await run(device, kernel, rewritten, split.boxes, atom);
        assertSameBytes(actual, expected, `${kernel.name}, ${split.name} (#${s}, ${split.boxes.length} atoms)`);
      }
      // 'auto' layouts: Dawn derives the immediate size (and the reserved group) itself.
      const autoOriginal = await compile(device, kernel, kernel.code, kernel.entryPoint, 'auto');
      const autoRewritten = await compile(device, kernel, atom.code, atom.entryPoint, 'auto', atom);
      assertSameBytes(await run(device, kernel, autoOriginal), expected, `${kernel.name}, auto layout, original`);
      const boxes = shuffle(randomBoxes(kernel.grid, rng(7 + k)), rng(8 + k));
      assertSameBytes(await run(device, kernel, autoRewritten, boxes, atom), expected, `${kernel.name}, auto layout, atoms`);
    });
  }

  it('notices when atoms get a wrong record (the comparison has teeth)', async () => {
    for (const kernel of [corpus[0], corpus[9]]) {
      const atom = atomize(kernel.code, kernel.entryPoint, LIMITS);
      const layouts = explicitGroupLayouts(device, kernel);
      const expected = await run(device, kernel, await compile(device, kernel, kernel.code, kernel.entryPoint, layouts));
      const rewritten = await compile(device, kernel, atom.code, atom.entryPoint, layouts, atom);
      const boxes = unitBoxes(kernel.grid);
      const noOffset = await run(device, kernel, rewritten, boxes, atom, () => atomParams([0, 0, 0], kernel.grid));
      assert.notDeepEqual(noOffset, expected, `${kernel.name}: every atom at offset 0`);
      const wrongGrid = await run(device, kernel, rewritten, boxes, atom, (b) => atomParams(b.offset, [kernel.grid[0] + 1, kernel.grid[1], kernel.grid[2]]));
      assert.notDeepEqual(wrongGrid, expected, `${kernel.name}: a wrong grid`);
    }
  });

  it('leaves the other entry point of the module untouched and working', async () => {
    const kernel = corpus.find((c) => c.entryPoint === 'second')!;
    const atom = atomize(kernel.code, 'second', LIMITS);
    const firstFn = '@compute @workgroup_size(4) fn first(ids: Ids) { store(ids.wid.x * 4u + ids.li, 1u + ids.wid.x); }';
    assert.ok(atom.code.includes(firstFn), 'the other entry point is byte-for-byte the same');
    assert.ok(atom.code.includes('struct Ids { @builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32 }'));
    const first: Kernel = { ...kernel, entryPoint: 'first', grid: [5, 1, 1] };
    const layouts = explicitGroupLayouts(device, first);
    const expected = await run(device, first, await compile(device, first, kernel.code, 'first', layouts));
    const actual = await run(device, first, await compile(device, first, atom.code, 'first', layouts));
    assertSameBytes(actual, expected, 'entry point first of the rewritten module');
  });

  it('produces a minimal, readable rewrite (before/after of the 1D kernel)', () => {
    const atom = atomize(corpus[0].code, undefined, LIMITS);
    const expected = `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) gpunix_raw_workgroup_id: vec3u, @builtin(local_invocation_id) gpunix_raw_local_invocation_id: vec3u) {
  // gpunix atom prologue: virtual grid builtins
  let gpunix_workgroup_id = gpunix_raw_workgroup_id + gpunix_atom.offset;
  let gpunix_global_invocation_id = gpunix_workgroup_id * gpunix_workgroup_size() + gpunix_raw_local_invocation_id;
  let gid = gpunix_global_invocation_id;
  let nwg = gpunix_atom.grid;
  let wid = gpunix_workgroup_id;

  if (gid.x >= arrayLength(&out)) { return; }
  out[gid.x] = gid.x * 7u + nwg.x * 100000u + wid.x * 1000u;
}

// gpunix atom record for entry point 'main': the atom's offset and the whole grid, in workgroups.
struct GpunixAtom { offset: vec3u, grid: vec3u }
var<immediate> gpunix_atom: GpunixAtom;
fn gpunix_workgroup_size() -> vec3u { return vec3u(u32(64), 1u, 1u); }
`;
    assert.equal(atom.code, expected);
  });

  it('reuses override expressions for the workgroup size instead of evaluating them', () => {
    const atom = atomize(corpus[5].code, undefined, LIMITS);
    assert.ok(atom.code.includes('return vec3u(u32(WG_X * 2u), u32(WG_Y), 1u);'), atom.code);
  });

  it('suffixes every name that would collide with the program\'s', () => {
    const atom = atomize(corpus.find((c) => c.name.includes('look like'))!.code, undefined, LIMITS);
    for (const n of ['GpunixAtom_1', 'gpunix_atom_1', 'gpunix_workgroup_size_1', 'gpunix_raw_workgroup_id_1', 'gpunix_workgroup_id_1', 'gpunix_global_invocation_id_1']) {
      assert.ok(atom.code.includes(n), `${n} in the rewrite`);
    }
  });

  it('falls back to a uniform record when the record does not fit the immediates', () => {
    const atom = atomize(corpus[0].code, undefined, { maxImmediateSize: 16, maxBindGroups: 4 });
    assert.equal(atom.mode, 'uniform');
    assert.deepEqual(atom.uniformBinding, { group: 1, binding: 0 });
    assert.match(atom.reason!, /maxImmediateSize/);
    assert.ok(atom.code.includes('@group(1) @binding(0) var<uniform> gpunix_atom: GpunixAtom;'));
  });

  it("composes the program's immediate variable with the record: its data first, the record after", () => {
    const code = `var<immediate> p: vec2u;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
fn scaled(x: u32) -> u32 { return x * p.x + p.y; }
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { a[w.x] = scaled(w.x) + p.x; }`;
    const atom = atomize(code, 'main', LIMITS);
    assert.equal(atom.mode, 'immediate', atom.reason);
    assert.equal(atom.recordOffset, 32, 'the program keeps bytes [0, 32)');
    assert.equal(atom.immediateSize, 64);
    assert.ok(atom.code.includes('struct GpunixAtomImmediates { @size(32) program: vec2u, atom: GpunixAtom }'));
    assert.ok(atom.code.includes('return x * gpunix_immediates.program.x + gpunix_immediates.program.y;'), 'uses in callees are rewritten too');
    assert.ok(!/[^_.]\bp\.x/.test(atom.code.replace('var<immediate> p: vec2u;', '')), 'no use of the program variable is left');
  });

  it('falls back to the uniform record when the program immediates leave no room, or a local shares their name', () => {
    const big = `struct Big { a: vec4u, b: vec4u, c: u32 }
var<immediate> p: Big;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { a[w.x] = p.c; }`;
    const tooBig = atomize(big, 'main', LIMITS);
    assert.equal(tooBig.mode, 'uniform');
    assert.deepEqual(tooBig.uniformBinding, { group: 1, binding: 0 });
    const shadow = `var<immediate> p: u32;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
fn f() -> u32 { let p = 3u; return p; }
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { a[w.x] = p + f(); }`;
    assert.equal(atomize(shadow, 'main', LIMITS).mode, 'uniform');
  });

  it('picks a group no resource uses, evaluating const group indices', () => {
    const code = `const G = 1;
var<immediate> p: u32;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(G + 2) @binding(0) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { a[w.x] = p; b[0] = 1u; }`;
    // Immediates too small for the program's variable and the record together: the uniform fallback.
    const atom = atomize(code, 'main', { ...LIMITS, maxImmediateSize: 16 });
    assert.equal(atom.mode, 'uniform');
    assert.deepEqual(atom.uniformBinding, { group: 1, binding: 0 }, 'group 3 is taken, so the lowest free one');
  });

  it('runs whole when the uniform fallback finds no free bind group', () => {
    const code = `var<immediate> p: u32;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(1) @binding(0) var<storage, read_write> b: array<u32>;
@group(2) @binding(0) var<storage, read_write> c: array<u32>;
@group(3) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { a[w.x] = p + b[0] + c[0] + d[0]; }`;
    const atom = atomize(code, 'main', { ...LIMITS, maxImmediateSize: 16 });
    assert.equal(atom.mode, 'whole');
    assert.equal(atom.cause, 'no-free-bind-group');
    assert.equal(atom.code, code);
  });

  it('uses immediates when another entry point, not this one, uses a var<immediate>', () => {
    const code = `var<immediate> p: u32;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(1) fn other() { a[0] = p; }
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { a[w.x] = 1u; }`;
    assert.equal(atomize(code, 'main', LIMITS).mode, 'immediate');
    assert.equal(atomize(code, 'other', LIMITS).mode, 'immediate', 'other needs no record');
  });

  it('answers malformed WGSL with whole and the parser\'s message, never a throw', () => {
    const code = '@compute @workgroup_size(1)\nfn main( {\n}';
    const atom = atomize(code, 'main', LIMITS);
    assert.equal(atom.mode, 'whole');
    assert.equal(atom.cause, 'parse-error');
    assert.equal(atom.code, code, 'the original goes to Dawn, which reports the error to the program');
    assert.match(atom.reason!, /^2:\d+: /);
    assert.equal(atomize('import foo::bar;\n@compute @workgroup_size(1) fn main() {}', 'main', LIMITS).cause, 'parse-error');
  });

  it('answers a missing or ambiguous entry point with whole', () => {
    const two = corpus.find((c) => c.entryPoint === 'second')!.code;
    assert.equal(atomize(two, undefined, LIMITS).cause, 'no-entry-point');
    assert.equal(atomize(two, 'third', LIMITS).cause, 'no-entry-point');
    assert.equal(atomize(two, 'store', LIMITS).cause, 'no-entry-point', 'a plain function is not an entry point');
  });

  it('encodes the atom record as offset and grid in WGSL layout', () => {
    assert.deepEqual([...atomParams([1, 2, 3], [4, 5, 6])], [1, 2, 3, 0, 4, 5, 6, 0]);
    assert.equal(atomParams([0, 0, 0], [1, 1, 1]).byteLength, ATOM_RECORD_SIZE);
    assert.throws(() => atomParams([4, 0, 0], [4, 1, 1]), { code: 'GPUNIX_E_BAD_OPTION' });
    assert.throws(() => atomParams([-1, 0, 0], [4, 1, 1]), { code: 'GPUNIX_E_BAD_OPTION' });
  });
});
