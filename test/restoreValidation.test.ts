// Restore refuses hostile-but-well-formed images: images whose checksums are right (rewritten
// with the image module's own writer) but whose objects cannot be made on the target device —
// WGSL that does not compile, a missing entry point, an impossible usage or size, a layout that
// does not fit the shader, memory beyond the restoring tenant's limit — are refused with
// GPUNIX_E_BAD_IMAGE naming the object, and nothing is left in the process table. The restoring
// caller's priority, weight and memory limit win over the image's. Checkpoint and restore path
// errors are coded, one line (GPUNIX_E_BAD_PATH), embedded and through gpunixd, and the daemon
// creates directories only inside its image directory.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect } from '../src/client/index.js';
import { Session } from '../src/client/session.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { createKernel, GpunixError, Kernel, readImage, writeImage } from '../src/index.js';
import type { ProcessImage } from '../src/kernel/image.js';
import { eventually } from './helpers.js';

const WGSL = `
struct Params { scale: u32, shift: u32 }
@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= arrayLength(&state)) { return; }
  state[g.x] = state[g.x] * params.scale + params.shift;
}`;

const ADMIN = 'admin-token-0123456789abcdef0123456789abcdef';
const ALICE = 'alice-token-0123456789abcdef0123456789abcdef';

/** Asserts that `promise` rejects with a GpunixError of `code` whose message matches every pattern; returns it. */
async function rejectsWith(promise: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<GpunixError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof GpunixError, `expected a GpunixError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.ok(!error.message.includes('\n'), `one line: ${error.message}`);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

describe('restore validates what it restores', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-restore-check-'));
  const good = join(dir, 'good.img');
  let image: ProcessImage;
  let kernel: Kernel;
  /** What reaches stderr meanwhile: a kernel-level WebGPU error would mean a check leaked one. */
  const stderr: string[] = [];
  const write = process.stderr.write.bind(process.stderr);

  before(async () => {
    // A real process: a pipeline, two buffers, and work queued while suspended (a bind group,
    // a write and a submit), checkpointed.
    const first = await createKernel();
    const proc = await first.spawn({ name: 'stepper', priority: 'batch', weight: 2, memoryLimit: '1M' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ label: 'stepper', code: WGSL }), entryPoint: 'main' } });
    const state = device.createBuffer({ label: 'state', size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const params = device.createBuffer({ label: 'params', size: 8, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    first.suspend(proc.pid);
    device.queue.writeBuffer(params, 0, new Uint32Array([3, 1]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: state } }, { binding: 1, resource: { buffer: params } }] }));
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await first.checkpoint(proc.pid, good);
    await first.kill(proc.pid);
    await first.shutdown();
    image = await readImage(good);
    assert.deepEqual(image.queued.map((q) => q.kind), ['writeBuffer', 'submit']);
    kernel = await createKernel();
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      stderr.push(String(chunk));
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
  });

  after(async () => {
    process.stderr.write = write;
    await kernel.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  let count = 0;
  /** `image`, changed by `change`, written with the image module's own writer: checksums right. */
  async function hostile(change: (copy: ProcessImage) => void): Promise<string> {
    const copy = structuredClone(image);
    change(copy);
    const path = join(dir, `hostile-${count++}.img`);
    await writeImage(path, copy);
    return path;
  }

  /** Restores `path` on `on` and expects a refusal naming the object; nothing is left behind. */
  async function refused(on: Kernel, path: string, ...patterns: RegExp[]): Promise<void> {
    await rejectsWith(on.restore(path), 'GPUNIX_E_BAD_IMAGE', /^bad process image .*: cannot restore /, ...patterns);
    assert.deepEqual(on.ps(), [], 'no process is left in the table');
    assert.equal(on.stats().liveObjects.total, 0, 'no object is left');
    assert.equal(on.stats().bytesAllocated, 0, 'no memory is held');
  }

  it('restores the unchanged image (the baseline of every case below)', async () => {
    const proc = await kernel.restore(good);
    assert.deepEqual([proc.record().priority, proc.record().weight], ['batch', 2], "the image's own priority and weight");
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const errors: string[] = [];
    device.addEventListener('uncapturederror', (e) => errors.push((e as GPUUncapturedErrorEvent).error.message));
    await device.queue.onSubmittedWorkDone();
    assert.deepEqual(errors, []);
    await proc.kill();
    await kernel.wait(proc.pid);
  });

  it('refuses WGSL that does not compile, naming the module', async () => {
    const path = await hostile((c) => (c.shaders[0].code = c.shaders[0].code.replace('state[g.x] * params.scale', 'state[g.x] * undefinedThing')));
    await refused(kernel, path, /shader module shaders\[0\] \(id \d+, label "stepper"\)/, /does not compile: \d+:\d+: .*undefinedThing/);
  });

  it('refuses a pipeline whose entry point is missing, naming the pipeline', async () => {
    const path = await hostile((c) => (c.pipelines[0].entryPoint = 'nosuch'));
    await refused(kernel, path, /pipeline pipelines\[0\] \(id \d+, label "step"\)/, /nosuch/);
  });

  it('refuses a pipeline whose explicit layout does not fit its shader, and a layout that is not a descriptor', async () => {
    const onlyBinding0 = { entries: [{ binding: 0, visibility: 4, buffer: { type: 'storage' } }] };
    await refused(kernel, await hostile((c) => (c.pipelines[0].layout = { bindGroupLayouts: [onlyBinding0] })), /pipeline pipelines\[0\] .*label "step"/, /Dawn cannot make it/);
    // An explicit null dictionary would abort dawn.node (and a daemon with it): refused before Dawn sees it.
    const nullDictionary = { entries: [{ binding: 0, visibility: 4, buffer: null }] };
    await refused(kernel, await hostile((c) => (c.pipelines[0].layout = { bindGroupLayouts: [nullDictionary] })), /pipeline pipelines\[0\]/);
  });

  it('refuses buffers with an impossible usage, naming the buffer', async () => {
    const params = image.buffers.findIndex((b) => b.label === 'params');
    await refused(kernel, await hostile((c) => (c.buffers[params].usage = 0xffffffff)), new RegExp(`buffer buffers\\[${params}\\] \\(id \\d+, label "params"\\)`), /usage 0xffffffff has flags WebGPU does not define/);
    await refused(kernel, await hostile((c) => (c.buffers[params].usage = 0)), /label "params"/, /usage 0 /);
    await refused(kernel, await hostile((c) => (c.buffers[params].usage = GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE)), /label "params"/, /MAP_READ/);
  });

  it('refuses a 300 MB buffer from the header alone, without reading its contents', async () => {
    // The image as a header that claims a 300 MB buffer (its checksum right), and a sparse file of
    // the length that header implies: the contents are never read (they would not match).
    const file = readFileSync(good);
    const length = file.readUInt32LE(16);
    const header = JSON.parse(file.subarray(56, 56 + length).toString('utf8'));
    const big = 300 * 1024 * 1024;
    header.buffers = [{ id: 1, label: 'huge', size: big, usage: GPUBufferUsage.STORAGE, offset: 0, sha256: '0'.repeat(64) }];
    header.bindGroups = [];
    header.queued = [];
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    const preamble = Buffer.from(file.subarray(0, 56));
    preamble.writeUInt32LE(json.length, 16);
    createHash('sha256').update(json).digest().copy(preamble, 24);
    const dataStart = Math.ceil((56 + json.length) / 8) * 8;
    const total = dataStart + big + 40;
    const path = join(dir, 'huge.img');
    const fd = openSync(path, 'w');
    try {
      writeSync(fd, Buffer.concat([preamble, json]), 0, 56 + json.length, 0);
      const trailer = Buffer.alloc(40);
      trailer.writeBigUInt64LE(BigInt(total), 32);
      writeSync(fd, trailer, 0, 40, total - 40); // the rest is a hole
    } finally {
      closeSync(fd);
    }
    await refused(kernel, path, /buffer buffers\[0\] \(id 1, label "huge"\)/, /its size 314572800 is more than the device's maxBufferSize \(268435456\)/);
  });

  it("refuses a buffer larger than the device's maxBufferSize or memory budget", async () => {
    const state = image.buffers.findIndex((b) => b.label === 'state');
    // The image's own limit (what its program was promised) is below the buffer.
    await refused(kernel, await hostile((c) => (c.limits.maxBufferSize = 128)), /label "state"/, /more than the device's maxBufferSize \(128\)/);
    const small = await createKernel({ memoryBudget: 4096 });
    try {
      const big = await hostile((c) => {
        c.buffers[state].size = 8192;
        c.buffers[state].contents = new Uint8Array(8192);
      });
      await refused(small, big, /label "state"/, /whole memory budget \(4096 bytes\)/);
      const odd = await hostile((c) => {
        c.buffers[state].size = 6;
        c.buffers[state].contents = new Uint8Array(6);
      });
      await refused(small, odd, /label "state"/, /size 6 is not a multiple of 4/);
    } finally {
      await small.shutdown();
    }
  });

  it("refuses an image over the restoring process's or tenant's memory limit, and says QUOTA when the tenant's other processes are in the way", async () => {
    await rejectsWith(kernel.restore(good, { memoryLimit: 100 }), 'GPUNIX_E_BAD_IMAGE', /label "state"/, /process's memory limit \(100 bytes\)/);
    const limited = await createKernel({ tenants: { small: { memoryLimit: 200 }, mid: { memoryLimit: 300 } } });
    try {
      await rejectsWith(limited.restore(good, { tenant: 'small' }), 'GPUNIX_E_BAD_IMAGE', /tenant "small"'s memory limit \(200 bytes\)/);
      const holder = await limited.spawn({ tenant: 'mid' });
      const device = await (await holder.gpu.requestAdapter())!.requestDevice();
      const held = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE });
      await rejectsWith(limited.restore(good, { tenant: 'mid' }), 'GPUNIX_E_QUOTA', /already holds 64 of its 300-byte memory limit/);
      assert.deepEqual(limited.ps().map((p) => p.pid), [holder.pid], 'only the holder is in the table');
      held.destroy();
      await holder.kill();
    } finally {
      await limited.shutdown();
    }
  });

  it("refuses a module over the kernel's shader limits", async () => {
    const strict = await createKernel({ shaderLimits: { maxModuleBytes: 64 } });
    try {
      await refused(strict, good, /shader module shaders\[0\] .*label "stepper"/, /GPUNIX_E_SHADER_LIMIT/);
    } finally {
      await strict.shutdown();
    }
  });

  it('refuses queued work that cannot run: a bind group of a missing group or that does not fit its layout, a write past the end', async () => {
    // Group 1 of the pipeline exists (empty: the shader uses group 0 only), and does not take these bindings.
    await refused(kernel, await hostile((c) => ('pipeline' in c.bindGroups[0].layout ? (c.bindGroups[0].layout.group = 1) : assert.fail())), /bind group bindGroups\[0\]/, /Dawn cannot make it: /);
    await refused(kernel, await hostile((c) => (c.bindGroups[0].entries[0].binding = 5)), /bind group bindGroups\[0\]/, /Dawn cannot make it: /);
    await refused(kernel, await hostile((c) => ('pipeline' in c.bindGroups[0].layout ? (c.bindGroups[0].layout.group = 6) : assert.fail())), /bind group bindGroups\[0\]/, /group 6 of pipeline id \d+, beyond the device's maxBindGroups \(4\)/);
    await refused(
      kernel,
      await hostile((c) => {
        const w = c.queued[0];
        if (w.kind === 'writeBuffer') w.bufferOffset = 1024;
      }),
      /queued\[0\] \(a write of 8 bytes\)/,
      /past the end of buffer id \d+ \(8 bytes\)/,
    );
  });

  it('leaks no WebGPU error of its checks to stderr', () => {
    assert.deepEqual(stderr.filter((line) => /kernel-level WebGPU error/.test(line)), []);
  });

  it("gives the restoring caller's priority, weight and memory limit precedence over the image's", async () => {
    const proc = await kernel.restore(good, { priority: 'realtime', weight: 5, memoryLimit: '64K' });
    assert.deepEqual([proc.record().priority, proc.record().weight, proc.record().memoryLimit], ['realtime', 5, 65536]);
    await proc.kill();
    const limited = await createKernel({ tenants: { norealtime: { priorities: ['normal', 'batch'] } } });
    try {
      await rejectsWith(limited.restore(good, { tenant: 'norealtime', priority: 'realtime' }), 'GPUNIX_E_QUOTA', /realtime/);
      assert.deepEqual(limited.ps(), []);
    } finally {
      await limited.shutdown();
    }
  });

  it('codes path errors: a missing image, a name over 255 bytes, a directory', async () => {
    await rejectsWith(kernel.restore(join(dir, 'absent.img')), 'GPUNIX_E_BAD_PATH', /no such image/);
    await rejectsWith(kernel.restore(join(dir, `${'x'.repeat(300)}.img`)), 'GPUNIX_E_BAD_PATH', /more than the 255 a file or directory name may have/);
    await rejectsWith(kernel.restore(dir), 'GPUNIX_E_BAD_PATH', /it is a directory/);
    await rejectsWith(kernel.restore(join(good, 'below')), 'GPUNIX_E_BAD_PATH', /not a directory/);
    assert.deepEqual(kernel.ps().filter((p) => p.state !== 'exited'), []);
  });

  it('`gpunix restore` of a missing image: one coded line, exit status 2', () => {
    const cli = spawnSync(process.execPath, [fileURLToPath(new URL('../../bin/gpunix.js', import.meta.url)), 'restore', join(dir, 'absent.img'), fileURLToPath(new URL('../../examples/saxpy.mjs', import.meta.url))], { encoding: 'utf8' });
    assert.equal(cli.status, 2, cli.stderr);
    const lines = cli.stderr.split('\n').filter((line) => line.startsWith('gpunix:') || /^\s+at /.test(line));
    assert.deepEqual(lines, [`gpunix: GPUNIX_E_BAD_PATH: cannot restore the process image ${JSON.stringify(join(dir, 'absent.img'))}: no such image`]);
  });
});

describe('restore and image paths through gpunixd', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;
  let images: string;
  const source = () => join(dir, 'source.img');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunixd-restore-check-'));
    socket = join(dir, 'gpunixd.sock');
    images = join(dir, 'images');
    daemon = await startDaemon({
      socket,
      log: { level: 'silent' as const },
      adminTokenHash: hashToken(ADMIN),
      stateFile: join(dir, 'tenants.json'),
      imageDir: images,
      tenants: { alice: { tokenHash: hashToken(ALICE) } },
    });
    // An image of a batch process of weight 2, taken by the daemon's own kernel.
    const proc = await daemon.kernel.spawn({ tenant: 'alice', name: 'source', priority: 'batch', weight: 2 });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    device.createShaderModule({ label: 'stepper', code: WGSL });
    device.createBuffer({ label: 'state', size: 256, usage: GPUBufferUsage.STORAGE });
    await daemon.kernel.checkpoint(proc.pid, source());
    await proc.kill();
    mkdirSync(join(images, 'alice'), { recursive: true });
    copyFileSync(source(), join(images, 'alice', 'job.img'));
    const hostile = await readImage(source());
    hostile.shaders[0].code = 'fn broken( {';
    await writeImage(join(images, 'alice', 'broken.img'), hostile);
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  const live = () => daemon.kernel.ps().filter((p) => p.state !== 'exited');

  it("restores with the client's priority and weight when it asks, the image's when it does not", async () => {
    const asked = await connect({ socket, token: ALICE, restoreImage: 'job.img', priority: 'realtime', weight: 3 });
    const plain = await connect({ socket, token: ALICE, restoreImage: 'job.img' });
    try {
      const record = (pid: number) => daemon.kernel.ps().find((p) => p.pid === pid)!;
      assert.deepEqual([record(asked.pid).priority, record(asked.pid).weight], ['realtime', 3], "the client's");
      assert.deepEqual([record(plain.pid).priority, record(plain.pid).weight], ['batch', 2], "the image's");
    } finally {
      asked.close();
      plain.close();
    }
    // A spawn with nothing asked still gets the defaults.
    const spawned = await connect({ socket, token: ALICE });
    try {
      const record = daemon.kernel.ps().find((p) => p.pid === spawned.pid)!;
      assert.deepEqual([record.priority, record.weight], ['normal', 1]);
    } finally {
      spawned.close();
    }
  });

  it('refuses a hostile image and a missing one with coded one-line errors, leaving nothing', async () => {
    await eventually('the earlier sessions have ended', () => live().length === 0);
    const before = 0;
    await rejectsWith(connect({ socket, token: ALICE, restoreImage: 'broken.img' }), 'GPUNIX_E_BAD_IMAGE', /shader module shaders\[0\] .*label "stepper"/, /does not compile/);
    await rejectsWith(connect({ socket, token: ALICE, restoreImage: 'absent.img' }), 'GPUNIX_E_BAD_PATH', /no such image/);
    await rejectsWith(connect({ socket, token: ALICE, restoreImage: `${'y'.repeat(300)}.img` }), 'GPUNIX_E_BAD_PATH', /255/);
    assert.equal(live().length, before, 'no process was made');
  });

  it('codes checkpoint path errors and creates directories only inside the image directory', async () => {
    const job = await daemon.kernel.spawn({ tenant: 'alice', name: 'job' });
    await job.gpu.requestAdapter().then((a) => a!.requestDevice());
    const alice = await Session.open({ socket, token: ALICE }, { role: 'control' });
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    try {
      await rejectsWith(alice.call('CheckpointProcess', { pid: job.pid, path: `${'z'.repeat(300)}.img`, options: null }), 'GPUNIX_E_BAD_PATH', /255/);
      await rejectsWith(alice.call('CheckpointProcess', { pid: job.pid, path: `${'w'.repeat(240)}.img`, options: null }), 'GPUNIX_E_BAD_PATH', /244 bytes, more than the 223/);
      await rejectsWith(alice.call('CheckpointProcess', { pid: job.pid, path: 'job.img/inside.img', options: null }), 'GPUNIX_E_BAD_PATH', /not a directory/);
      const nowhere = join(dir, 'nonexistent', 'dir', 'x.img');
      await rejectsWith(admin.call('CheckpointProcess', { pid: job.pid, path: nowhere, options: null }), 'GPUNIX_E_BAD_PATH', /no such directory/, /only inside its image directory/);
      const sneaky = `${images}/../sneaky/x.img`; // inside imageDir only by its text
      await rejectsWith(admin.call('CheckpointProcess', { pid: job.pid, path: sneaky, options: null }), 'GPUNIX_E_BAD_PATH', /no such directory/);
      assert.equal(existsSync(join(dir, 'nonexistent')) || existsSync(join(dir, 'sneaky')), false, 'the daemon created no directory outside its image directory');
      // Inside the image directory, missing directories are made as before.
      const written = (await alice.call('CheckpointProcess', { pid: job.pid, path: 'runs/deep/ok.img', options: null })) as { path: string };
      assert.equal(written.path, join(images, 'alice', 'runs', 'deep', 'ok.img'));
      const outside = (await admin.call('CheckpointProcess', { pid: job.pid, path: join(dir, 'admin.img'), options: null })) as { path: string };
      assert.equal(outside.path, join(dir, 'admin.img'), 'an admin path in an existing directory is fine');
    } finally {
      alice.close();
      admin.close();
      await job.kill();
    }
  });
});
