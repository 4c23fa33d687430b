// Migration and process images across Dawn backends: one kernel with a device on each of Vulkan
// (lavapipe), OpenGL ES and OpenGL (Mesa, in WebGPU's compatibility mode). A program computing a
// running state moves live Vulkan → OpenGL ES → OpenGL → Vulkan — once in the middle of a split
// dispatch, once held back (suspended with steps queued) — and ends with exactly the bytes bare
// Dawn computes; every corpus program, moved round the backends while it runs, gives bare Dawn's
// bytes; a pipeline Dawn is still making when the move comes is made on the new device; images
// written on one backend restore on another with exact results; a process using a feature or a
// limit the target lacks is refused with GPUNIX_E_INCOMPATIBLE_DEVICE naming it, and goes on where
// it was — also through gpunixd and `gpunix migrate`.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { createKernel, GpunixError, Kernel, ProcessHandle, readImage, writeImage } from '../src/index.js';
import { corpus } from './corpus/index.js';
import { assertSameBytes, bareGpu, bareResult } from './helpers.js';

const WGSL = `
struct Params { scale: u32, shift: u32 }
@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(1) @binding(0) var<storage, read_write> histogram: array<atomic<u32>, 16>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) n: vec3u) {
  let i = g.x + g.y * n.x * 64u;
  if (i >= arrayLength(&state)) { return; }
  var v = state[i];
  for (var k = 0u; k < 1u + params.scale % 4u; k++) { v = v * params.scale + params.shift + i + k; }
  state[i] = v ^ (v >> 7u);
  atomicAdd(&histogram[v & 15u], 1u);
}`;
const GRID: [number, number] = [32, 4];
const N = 64 * GRID[0] * GRID[1];
const STEPS = 8;

interface Session {
  device: GPUDevice;
  pipeline: GPUComputePipeline;
  state: GPUBuffer;
  params: GPUBuffer;
  histogram: GPUBuffer;
}

/**
 * The program's objects, made afresh on `gpu` (bare Dawn or a gpunix process). A program that is
 * to move between backends asks for a compatibility-mode device, which every backend can hold;
 * `featureLevel: 'core'` gives it a core device (Vulkan only here).
 */
async function open(gpu: GPU, descriptor?: GPUDeviceDescriptor, featureLevel = 'compatibility'): Promise<Session> {
  const device = await (await gpu.requestAdapter({ featureLevel }))!.requestDevice(descriptor);
  const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL, label: 'stepper' }) } });
  return withBuffers(device, pipeline);
}

/** The program's buffers, in their first state, beside `pipeline`. */
function withBuffers(device: GPUDevice, pipeline: GPUComputePipeline): Session {
  const state = device.createBuffer({ label: 'state', size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  new Uint32Array(state.getMappedRange()).forEach((_, i, a) => (a[i] = Math.imul(i, 2654435761) >>> 0));
  state.unmap();
  const params = device.createBuffer({ label: 'params', size: 8, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const histogram = device.createBuffer({ label: 'histogram', size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  return { device, pipeline, state, params, histogram };
}

/** What a restored program does: its objects, found again by label. */
async function resumed(proc: ProcessHandle, descriptor?: GPUDeviceDescriptor): Promise<Session> {
  const device = await (await proc.gpu.requestAdapter({ featureLevel: 'compatibility' }))!.requestDevice(descriptor);
  const ext = (device as unknown as { gpunix: { restored: boolean; findBuffer(l: string): GPUBuffer | null; findPipeline(l: string): GPUComputePipeline | null } }).gpunix;
  assert.equal(ext.restored, true);
  return { device, pipeline: ext.findPipeline('step')!, state: ext.findBuffer('state')!, params: ext.findBuffer('params')!, histogram: ext.findBuffer('histogram')! };
}

/**
 * `gpu` as a program meant to move between backends uses it: compatibility-mode adapters (which
 * every device offers), asking for the compute limits the corpus needs beyond that mode's defaults.
 */
function portable(gpu: GPU): GPU {
  const requestAdapter = async (options?: GPURequestAdapterOptions) => {
    const adapter = await gpu.requestAdapter({ ...options, featureLevel: 'compatibility' });
    if (!adapter) return null;
    const requestDevice = (d?: GPUDeviceDescriptor) =>
      adapter.requestDevice({ ...d, requiredLimits: { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256, ...d?.requiredLimits } });
    return new Proxy(adapter, {
      get: (target, key) => {
        if (key === 'requestDevice') return requestDevice;
        const value = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  return { requestAdapter } as unknown as GPU;
}

/** Queues steps [from, to) without waiting: a parameter write and a submit each. */
function queueSteps(s: Session, from: number, to: number): void {
  const layout = (i: number) => s.pipeline.getBindGroupLayout(i);
  const group0 = s.device.createBindGroup({ layout: layout(0), entries: [{ binding: 0, resource: { buffer: s.state } }, { binding: 1, resource: { buffer: s.params } }] });
  const group1 = s.device.createBindGroup({ layout: layout(1), entries: [{ binding: 0, resource: { buffer: s.histogram } }] });
  for (let step = from; step < to; step++) {
    s.device.queue.writeBuffer(s.params, 0, new Uint32Array([step + 3, step * 7]));
    const encoder = s.device.createCommandEncoder({ label: `step ${step}` });
    const pass = encoder.beginComputePass();
    pass.setPipeline(s.pipeline);
    pass.setBindGroup(0, group0);
    pass.setBindGroup(1, group1);
    pass.dispatchWorkgroups(...GRID);
    pass.end();
    s.device.queue.submit([encoder.finish()]);
  }
}

/** The running state and the histogram, read back. */
async function read(s: Session): Promise<Uint8Array> {
  const out = s.device.createBuffer({ size: N * 4 + 64, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = s.device.createCommandEncoder();
  encoder.copyBufferToBuffer(s.state, 0, out, 0, N * 4);
  encoder.copyBufferToBuffer(s.histogram, 0, out, N * 4, 64);
  s.device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  const bytes = new Uint8Array(out.getMappedRange().slice(0));
  out.destroy();
  return bytes;
}

const isIncompatible = (pattern: RegExp) => (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_INCOMPATIBLE_DEVICE' && pattern.test(e.message);

describe('migration and images across backends', () => {
  let kernel: Kernel;
  /** Device ids by backend. */
  let vk: string, gles: string, gl: string;
  /** STEPS steps on bare Dawn (Vulkan): what every run must end with. */
  let expected: Uint8Array;
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-xbackend-'));

  before(async () => {
    const bare = await open(bareGpu());
    queueSteps(bare, 0, STEPS);
    expected = await read(bare);
    bare.device.destroy();
    // Atoms of two workgroups: every dispatch is split, so a move can fall in the middle of one.
    // The watchdog is not under test: a pipeline's first dispatch on a device includes the driver's
    // first-use work (0.1-0.4 s here, seconds on a loaded machine), which every move makes again, and
    // which its time check would take for a runaway loop (docs/kernel.md).
    kernel = await createKernel({ backends: ['vulkan', 'opengles', 'opengl'], atomSize: 2, maxDispatchMs: 60_000 });
    const id = (backend: string) => kernel.describeDevices().find((d) => d.backend === backend)!.id;
    [vk, gles, gl] = [id('vulkan'), id('opengles'), id('opengl')];
  });
  after(async () => {
    await kernel?.shutdown();
  });

  it('a held-back program migrates live Vulkan → OpenGL ES → OpenGL → Vulkan and ends with the bytes bare Dawn computes', async () => {
    const proc = await kernel.spawn({ name: 'wanderer' });
    const s = await open(proc.gpu);
    if (kernel.devicesOf(proc.pid)[0] !== vk) await kernel.migrate(proc.pid, vk);
    const atomsRun = () => kernel.ps().find((p) => p.pid === proc.pid)!.accounting.atomsRun;

    // To OpenGL ES in the middle of a split dispatch: its atoms so far ran on Vulkan, the rest run there.
    let before = atomsRun();
    queueSteps(s, 0, 2);
    while (atomsRun() === before) await new Promise((resolve) => setImmediate(resolve));
    await kernel.migrate(proc.pid, gles);
    assert.deepEqual(kernel.devicesOf(proc.pid), [gles]);
    await s.device.queue.onSubmittedWorkDone();

    // To OpenGL held back: suspended with two steps queued, which move with it and run there.
    kernel.suspend(proc.pid);
    queueSteps(s, 2, 4);
    await kernel.migrate(proc.pid, gl);
    assert.deepEqual(kernel.devicesOf(proc.pid), [gl]);
    assert.equal(kernel.ps().find((p) => p.pid === proc.pid)!.state, 'suspended', 'the move leaves it suspended');
    kernel.resume(proc.pid);
    await s.device.queue.onSubmittedWorkDone();

    // Back to Vulkan, again in the middle of a dispatch; then it finishes there.
    before = atomsRun();
    queueSteps(s, 4, 6);
    while (atomsRun() === before) await new Promise((resolve) => setImmediate(resolve));
    await kernel.migrate(proc.pid, vk);
    assert.deepEqual(kernel.devicesOf(proc.pid), [vk]);
    queueSteps(s, 6, STEPS);
    assertSameBytes(await read(s), expected, 'after three moves across backends');

    // Some dispatch ran its first atoms on one backend and its last on another.
    const trace = kernel.trace().traceEvents;
    const deviceName = new Map(trace.filter((e) => e.name === 'process_name').map((e) => [e.pid, String((e.args as { name: string }).name).replace('device ', '')]));
    const atoms = trace.filter((e) => e.ph === 'X' && e.tid === proc.pid && (e.args as { offset?: number }).offset !== undefined);
    let split = 0;
    let first: unknown = null;
    for (const atom of atoms) {
      if ((atom.args as { offset: number }).offset === 0) first = atom.pid;
      else if (atom.pid !== first) split++;
    }
    assert.ok(split > 0, `a dispatch moved between devices part-way (atoms on ${[...new Set(atoms.map((a) => deviceName.get(a.pid)))].join(', ')})`);
    await proc.exit();
  });

  it("every corpus program, moved round the backends while it runs, gives bare Dawn's bytes", async () => {
    const ids = [vk, gles, gl];
    let moves = 0;
    for (const program of corpus) {
      // Started on Vulkan, as the baseline: a program may take another path where a feature is missing (timestamps).
      const proc = await kernel.spawn({ name: program.name, device: vk });
      let done = false;
      const run = program.run(portable(proc.gpu)).finally(() => (done = true));
      // Moves it on as soon as the last move ended, whatever the program is doing.
      const mover = (async () => {
        for (let i = 0; !done; ) {
          await new Promise((resolve) => setImmediate(resolve));
          if (kernel.devicesOf(proc.pid).length === 0) continue;
          try {
            await kernel.migrate(proc.pid, ids[++i % ids.length]);
            moves++;
          } catch (error) {
            // A mapped buffer, the end of the program, or a feature it enabled that GL lacks: the next turn.
            if (!(error instanceof GpunixError) || !['GPUNIX_E_BUSY', 'GPUNIX_E_PROCESS_EXITED', 'GPUNIX_E_INCOMPATIBLE_DEVICE'].includes(error.code)) throw error;
          }
        }
      })();
      const bytes = await run.catch((error: unknown) => {
        throw new Error(`${program.name}: ${(error as Error).message} (the process: ${JSON.stringify(kernel.ps().find((p) => p.pid === proc.pid)?.exit ?? 'alive')})`);
      });
      assertSameBytes(bytes, await bareResult(program), program.name);
      await mover;
      await proc.exit();
    }
    assert.ok(moves > 0);
  });

  it('a pipeline Dawn is still making when the process moves is made on the new device', async () => {
    const proc = await kernel.spawn({ name: 'async' });
    const device = await (await proc.gpu.requestAdapter({ featureLevel: 'compatibility' }))!.requestDevice();
    if (kernel.devicesOf(proc.pid)[0] !== vk) await kernel.migrate(proc.pid, vk);
    device.pushErrorScope('validation');
    // Nothing else to move: the move is over before Dawn has made the pipeline on the old device.
    const pending = device.createComputePipelineAsync({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ code: WGSL }) } });
    await kernel.migrate(proc.pid, gl);
    const s = withBuffers(device, await pending);
    queueSteps(s, 0, STEPS);
    assertSameBytes(await read(s), expected, 'with the pipeline made across the move');
    assert.equal(await s.device.popErrorScope(), null);
    await proc.exit();
  });

  it('an image written on OpenGL restores on Vulkan, and one written on Vulkan restores on OpenGL ES, with exact results', async () => {
    for (const [from, to, backend] of [
      [gl, vk, 'opengl'],
      [vk, gles, 'vulkan'],
    ] as const) {
      const proc = await kernel.spawn({ name: `from-${backend}` });
      const s = await open(proc.gpu);
      if (kernel.devicesOf(proc.pid)[0] !== from) await kernel.migrate(proc.pid, from);
      queueSteps(s, 0, 3);
      await s.device.queue.onSubmittedWorkDone();
      // Two more steps held back: queued work goes into the image and runs first after the restore.
      kernel.suspend(proc.pid);
      queueSteps(s, 3, 5);
      const image = join(dir, `${backend}.gpunix`);
      await kernel.checkpoint(proc.pid, image);
      await kernel.kill(proc.pid);
      const header = await readImage(image);
      assert.equal(header.device.backend, backend, 'the image records the backend it was taken on');
      assert.equal(header.queued.filter((q) => q.kind === 'submit').length, 2);

      const restored = await kernel.restore(image, { device: to });
      const r = await resumed(restored);
      assert.deepEqual(kernel.devicesOf(restored.pid), [to]);
      queueSteps(r, 5, STEPS);
      assertSameBytes(await read(r), expected, `an image from ${backend} restored on ${to}`);
      await restored.exit();
    }
  });

  it('a process using a feature or a limit the target lacks is refused, named, and goes on where it was', async () => {
    const proc = await kernel.spawn({ name: 'demanding' });
    // A core device (core-features-and-limits), shader-f16 and timestamp-query: Vulkan has them, the
    // compatibility-mode GL backends do not; maxBufferSize 3 GiB: Vulkan offers 4 GiB, GL 2 GiB.
    const required: GPUDeviceDescriptor = { requiredFeatures: ['shader-f16', 'timestamp-query'], requiredLimits: { maxBufferSize: 3 * 2 ** 30 } };
    const s = await open(proc.gpu, required, 'core');
    if (kernel.devicesOf(proc.pid)[0] !== vk) await kernel.migrate(proc.pid, vk);
    const half = s.device.createShaderModule({ code: 'enable f16;\n@group(0) @binding(0) var<storage, read_write> d: array<f32>;\n@compute @workgroup_size(1) fn main() { d[0] = f32(f16(d[0]) * 2h); }' });
    const twice = s.device.createComputePipeline({ layout: 'auto', compute: { module: half } });
    queueSteps(s, 0, 2);
    for (const to of [gles, gl]) {
      const error = await kernel.migrate(proc.pid, to).then(
        () => assert.fail('migrated'),
        (e: unknown) => e as GpunixError,
      );
      assert.equal(error.code, 'GPUNIX_E_INCOMPATIBLE_DEVICE');
      assert.match(error.message, new RegExp(`^cannot migrate process ${proc.pid} to ${to} \\(open`));
      for (const what of ['feature "shader-f16"', 'feature "timestamp-query"', 'feature "core-features-and-limits"', `maxBufferSize 3221225472 (requiredLimits; ${to} has 2147483648)`, "featureLevel: 'compatibility'"]) {
        assert.ok(error.message.includes(what), `the refusal names ${what}: ${error.message}`);
      }
      assert.ok(!error.message.includes('\n'), 'one line');
      assert.deepEqual(kernel.devicesOf(proc.pid), [vk], 'nothing moved');
    }
    // It runs on where it was: its steps and its f16 pipeline.
    queueSteps(s, 2, STEPS);
    assertSameBytes(await read(s), expected, 'the refused process on Vulkan');
    const data = s.device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Float32Array(data.getMappedRange()).set([1.5]);
    data.unmap();
    const encoder = s.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(twice);
    pass.setBindGroup(0, s.device.createBindGroup({ layout: twice.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: data } }] }));
    pass.dispatchWorkgroups(1);
    pass.end();
    const out = s.device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(data, 0, out, 0, 4);
    s.device.queue.submit([encoder.finish()]);
    await out.mapAsync(GPUMapMode.READ);
    assert.equal(new Float32Array(out.getMappedRange())[0], 3);
    out.unmap();

    // Its image: refused on a GL device with the same code and words; placed on Vulkan when no device is named.
    const image = join(dir, 'demanding.gpunix');
    await kernel.checkpoint(proc.pid, image);
    await assert.rejects(kernel.restore(image, { device: gl }), isIncompatible(/^cannot restore .* on gpu\d \(opengl, .*feature "shader-f16".*maxBufferSize 3221225472 \(the image's limits; gpu\d has 2147483648\)/));
    const restored = await kernel.restore(image);
    await resumed(restored, required);
    assert.deepEqual(kernel.devicesOf(restored.pid), [vk]);
    await restored.kill();
    await proc.exit();
  });

  it("what an image's pipelines need counts too: a workgroup larger than the device runs is refused, named", async () => {
    const proc = await kernel.spawn({ name: 'wide' });
    await open(proc.gpu);
    const image = join(dir, 'wide.gpunix');
    await kernel.checkpoint(proc.pid, image);
    await proc.exit();
    // The same image, its shader asking for workgroups wider than any device here runs.
    const wide = await readImage(image);
    const max = Math.max(...kernel.describeDevices().map((d) => d.limits.maxComputeInvocationsPerWorkgroup));
    wide.shaders[0].code = wide.shaders[0].code.replace('@workgroup_size(64)', `@workgroup_size(${2 * max})`);
    const widePath = join(dir, 'wider.gpunix');
    await writeImage(widePath, { ...wide, version: 2 });
    await assert.rejects(
      kernel.restore(widePath, { device: gles }),
      isIncompatible(new RegExp(`maxComputeWorkgroupSizeX ${2 * max} \\(pipeline "step"; ${gles} has \\d+\\); maxComputeInvocationsPerWorkgroup ${2 * max} \\(pipeline "step"`)),
    );
    assert.equal(kernel.ps().filter((p) => p.name === 'wide' && p.state !== 'exited').length, 0, 'no process was made');
  });
});

describe('gpunix migrate across backends, through gpunixd', () => {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
  const ADMIN = 'xbackend-admin-token-0123456789abcdef0123456789';
  let dir: string;
  let daemon: Daemon;
  /** Runs `gpunix migrate` as an operator would, in a child process (the daemon answers from this one). */
  const migrate = (pid: number, device: string): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((done) => {
      const args = [join(root, 'bin/gpunix.js'), 'migrate', String(pid), device, '--socket', join(dir, 'gpunixd.sock'), '--token', ADMIN];
      execFile(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 30_000, env: { ...process.env, GPUNIX_TOKEN: '' } }, (error, stdout, stderr) =>
        done({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-xbackend-cli-'));
    daemon = await startDaemon({ socket: join(dir, 'gpunixd.sock'), log: { level: 'silent' }, adminTokenHash: hashToken(ADMIN), kernel: { backends: ['vulkan', 'opengl'] } });
  });
  after(async () => {
    await daemon?.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('moves a portable process to the OpenGL device and refuses a core one, coded and named, in one line', async () => {
    const kernel = daemon.kernel;
    const gl = kernel.describeDevices().find((d) => d.backend === 'opengl')!.id;
    const portable = await kernel.spawn({ name: 'portable' });
    const s = await open(portable.gpu);
    queueSteps(s, 0, 2);
    const moved = await migrate(portable.pid, gl);
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stdout, new RegExp(`moved to ${gl}`));
    queueSteps(s, 2, STEPS);
    const bare = await open(bareGpu());
    queueSteps(bare, 0, STEPS);
    assertSameBytes(await read(s), await read(bare), 'moved to OpenGL through the daemon');
    bare.device.destroy();

    const core = await kernel.spawn({ name: 'core' });
    await open(core.gpu, { requiredFeatures: ['shader-f16'] }, 'core');
    const refused = await migrate(core.pid, gl);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, new RegExp(`^gpunix: GPUNIX_E_INCOMPATIBLE_DEVICE: cannot migrate process ${core.pid} to ${gl} \\(opengl, .*feature "shader-f16".*\\n$`));
    assert.equal(refused.stderr.split('\n').length, 2, 'one line');
    assert.notDeepEqual(kernel.devicesOf(core.pid), [gl]);
    await portable.exit();
    await core.exit();
  });
});
