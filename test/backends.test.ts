// Every Dawn backend on the machine as a gpunix device (issue 14): a kernel opened on Vulkan,
// OpenGL ES and OpenGL lists each device with its backend and feature level; a corpus program run
// as a process on each gives the bytes bare Dawn gives on that backend; a process on a
// compatibility-mode device (GL, GLES) sees compatibility mode's adapter, limits and features; an
// unknown backend is a coded error. Every request names its featureLevel, so that a suite run with
// $GPUNIX_BACKENDS (which turns plain requests into compatibility ones) sees the same.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { create } from 'webgpu';
import { createKernel, GpunixError, Kernel } from '../src/index.js';
import { resolveBackends } from '../src/device/backends.js';
import * as histogram from './corpus/histogram.js';
import { assertSameBytes } from './helpers.js';

const BACKENDS = ['vulkan', 'opengles', 'opengl'] as const;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

// Bare Dawn per backend, held for the test process's life: dawn.node crashes when a GPU object is
// collected while its devices live.
const bareInstances = new Map<string, GPU>();

/** `gpu` as a program written for compatibility mode sees it: every adapter request asks for 'compatibility'. */
function compatibilityProgram(gpu: GPU): GPU {
  return { requestAdapter: (options?: GPURequestAdapterOptions) => gpu.requestAdapter({ ...options, featureLevel: 'compatibility' }) } as GPU;
}

/** Dawn's own navigator.gpu on `backend`, for a compatibility-mode program (the baseline). */
function bareOn(backend: string): GPU {
  let gpu = bareInstances.get(backend);
  if (!gpu) {
    process.env.EGL_PLATFORM ??= 'surfaceless';
    gpu = create([`backend=${backend}`]);
    bareInstances.set(backend, gpu);
  }
  return compatibilityProgram(gpu);
}

/** Whether creating a compute pipeline of `workgroupSize` on `device` raises a validation error. */
async function workgroupRefused(device: GPUDevice, workgroupSize: number): Promise<boolean> {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: `@compute @workgroup_size(${workgroupSize}) fn main() {}` });
  device.createComputePipeline({ layout: 'auto', compute: { module } });
  return (await device.popErrorScope()) !== null;
}

describe('every backend as a gpunix device', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ backends: [...BACKENDS] });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('lists one device per backend, in the order given, with its backend and feature level', () => {
    const devices = kernel.describeDevices();
    assert.deepEqual(
      devices.map((d) => [d.id, d.backend, d.featureLevel]),
      [
        ['gpu0', 'vulkan', 'core'],
        ['gpu1', 'opengles', 'compatibility'],
        ['gpu2', 'opengl', 'compatibility'],
      ],
    );
    assert.ok(devices[0].features.includes('core-features-and-limits'));
    for (const d of devices.slice(1)) assert.ok(!d.features.includes('core-features-and-limits'), `${d.backend} is compatibility-only`);
    assert.deepEqual(
      kernel.stats().devices.map((d) => [d.backend, d.featureLevel]),
      devices.map((d) => [d.backend, d.featureLevel]),
    );
  });

  for (const [index, backend] of BACKENDS.entries()) {
    it(`runs a program on ${backend} with the bytes bare Dawn gives on ${backend}`, async () => {
      const expected = await histogram.run(bareOn(backend));
      const busyBefore = kernel.stats().devices.map((d) => d.busyNs);
      const proc = await kernel.spawn({ name: `histogram-${backend}`, device: index });
      let actual: Uint8Array;
      try {
        actual = await histogram.run(compatibilityProgram(proc.gpu));
      } finally {
        assert.deepEqual(await proc.exit(), { code: 0, reason: 'normal' });
      }
      // It ran on its device, and on no other.
      const busyAfter = kernel.stats().devices.map((d) => d.busyNs);
      assert.deepEqual(busyAfter.map((ns, i) => ns > busyBefore[i]), BACKENDS.map((_, i) => i === index));
      assert.ok(expected.some((b) => b !== 0), 'the baseline computed something');
      assertSameBytes(actual, expected, `${histogram.name} on ${backend}`);
    });
  }

  it("gives a process on a GL device compatibility mode's adapter, limits and features", async () => {
    const proc = await kernel.spawn({ device: 'gpu1' });
    try {
      // WebGPU's default feature level is "core": a compatibility-only device answers no such request.
      assert.equal(await proc.gpu.requestAdapter({ featureLevel: 'core' }), null);
      const adapter = (await proc.gpu.requestAdapter({ featureLevel: 'compatibility' }))!;
      assert.equal((adapter as GPUAdapter & { featureLevel: string }).featureLevel, 'compatibility');
      assert.equal(adapter.features.has('core-features-and-limits'), false);
      assert.equal(adapter.features.has('timestamp-query'), false);
      await assert.rejects(adapter.requestDevice({ requiredFeatures: ['core-features-and-limits'] }), TypeError);
      const device = await adapter.requestDevice();
      assert.equal(device.features.has('core-features-and-limits'), false);
      assert.deepEqual(
        [device.limits.maxComputeWorkgroupSizeX, device.limits.maxComputeInvocationsPerWorkgroup, device.limits.maxStorageBuffersInVertexStage, device.limits.maxUniformBufferBindingSize],
        [128, 128, 0, 16384],
      );
      // The process's limits hold although the real device allows more; asked for, more is granted.
      assert.equal(await workgroupRefused(device, 256), true);
      device.destroy();
      const more = await (await proc.gpu.requestAdapter({ featureLevel: 'compatibility' }))!.requestDevice({
        requiredLimits: { maxComputeWorkgroupSizeX: 256, maxComputeInvocationsPerWorkgroup: 256 },
      });
      assert.equal(await workgroupRefused(more, 256), false);
      more.destroy();
    } finally {
      await proc.exit();
    }
  });

  it('places a core request on a core device, and gives a compatibility request a compatibility-defaulting adapter there too', async () => {
    const proc = await kernel.spawn({});
    try {
      const core = (await proc.gpu.requestAdapter({ featureLevel: 'core' }))!;
      assert.equal((core as GPUAdapter & { featureLevel: string }).featureLevel, 'core');
      const coreDevice = await core.requestDevice();
      assert.deepEqual(kernel.devicesOf(proc.pid), ['gpu0']);
      assert.equal(coreDevice.features.has('core-features-and-limits'), true);
      coreDevice.destroy();
      const onVulkan = await kernel.spawn({ device: 'gpu0' });
      try {
        const compat = (await onVulkan.gpu.requestAdapter({ featureLevel: 'compatibility' }))!;
        assert.equal((compat as GPUAdapter & { featureLevel: string }).featureLevel, 'compatibility');
        // A core-capable adapter lists the feature; its devices have it only when they ask.
        assert.equal(compat.features.has('core-features-and-limits'), true);
        const device = await compat.requestDevice();
        assert.equal(device.features.has('core-features-and-limits'), false);
        assert.equal(device.limits.maxComputeWorkgroupSizeX, 128);
        device.destroy();
      } finally {
        await onVulkan.exit();
      }
    } finally {
      await proc.exit();
    }
  });
});

describe('choosing backends', () => {
  it('refuses an unknown or repeated backend with a coded error, from the option or $GPUNIX_BACKENDS', async () => {
    await assert.rejects(createKernel({ backends: ['vulkan', 'glide'] }), (error: unknown) => {
      assert.ok(error instanceof GpunixError);
      assert.equal(error.code, 'GPUNIX_E_BAD_OPTION');
      assert.match(error.message, /unknown backend "glide"/);
      return true;
    });
    assert.throws(() => resolveBackends(undefined, 'vulkan, nope'), /GPUNIX_BACKENDS: unknown backend "nope"/);
    assert.throws(() => resolveBackends(['opengl', 'opengl']), /listed twice/);
    assert.throws(() => resolveBackends([]), /names no backend/);
    assert.deepEqual(resolveBackends(undefined, ' opengles , vulkan '), ['opengles', 'vulkan']);
    assert.deepEqual(resolveBackends(undefined, undefined), [process.platform === 'darwin' ? 'metal' : process.platform === 'win32' ? 'd3d12' : 'vulkan']);
  });

  it('names a backend that opens no adapter in a coded error', { skip: process.platform !== 'linux' && 'Linux has no Metal' }, async () => {
    await assert.rejects(createKernel({ backends: ['metal'] }), (error: unknown) => {
      assert.ok(error instanceof GpunixError);
      assert.equal(error.code, 'GPUNIX_E_NO_DEVICE');
      assert.match(error.message, /metal backend/);
      return true;
    });
  });

  it('gpunix devices --json --backends lists the chosen backends', () => {
    const result = spawnSync(process.execPath, [resolve(root, 'bin/gpunix.js'), 'devices', '--json', '--backends', 'opengles'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    const devices = JSON.parse(result.stdout) as Array<{ id: string; backend: string; featureLevel: string }>;
    assert.deepEqual(
      devices.map((d) => [d.id, d.backend, d.featureLevel]),
      [['gpu0', 'opengles', 'compatibility']],
    );
    const bad = spawnSync(process.execPath, [resolve(root, 'bin/gpunix.js'), 'devices', '--backends', 'vulkan,glide'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /unknown backend "glide"/);
  });
});
