// Shared test helpers: a bare Dawn device (the baseline every gpunix result is compared with)
// and small utilities. Tests use the real device: lavapipe in CI.

import { create, globals } from 'webgpu';
import { BACKENDS_ENV, featureLevelOf, resolveBackends, type BackendName } from '../src/device/backends.js';
import { asFeatureLevelProgram } from '../src/kernel/capabilities.js';
import { VirtualGPU } from '../src/vgpu/gpu.js';

Object.assign(globalThis, globals);

// ---- the backend the suite runs on ---------------------------------------------------------------
// `GPUNIX_BACKENDS=opengles npm test`-style runs (scripts/test-backends.mjs): every kernel a test
// opens reads $GPUNIX_BACKENDS itself, and the baseline below opens bare Dawn on the same backend,
// so bare-vs-gpunix comparisons are like for like.

/** The backend the suite's devices stand on: the first of $GPUNIX_BACKENDS, else the platform's. */
export const suiteBackend: BackendName = resolveBackends(undefined)[0];
/** 'compatibility' on GL/GLES (WebGPU compatibility mode: lower limits, fewer features), else 'core'. */
export const suiteFeatureLevel = featureLevelOf(suiteBackend);
/** Whether $GPUNIX_BACKENDS chose the backend (else the platform default: the suite as it always ran). */
export const suiteBackendChosen = (process.env[BACKENDS_ENV] ?? '').trim() !== '';

/**
 * On a compatibility-mode backend the suite's programs are compatibility-mode programs: a
 * requestAdapter() that names no featureLevel asks for 'compatibility', as a portable program
 * written for such devices does (a 'core' request, WebGPU's default, gets no adapter there).
 * An explicit featureLevel is passed through unchanged.
 */
function asCompatibilityProgram(options?: GPURequestAdapterOptions): GPURequestAdapterOptions | undefined {
  if (suiteFeatureLevel !== 'compatibility') return options;
  if (options !== undefined && options !== null && (options as { featureLevel?: unknown }).featureLevel !== undefined) return options;
  return { ...(options ?? {}), featureLevel: 'compatibility' };
}

if (suiteFeatureLevel === 'compatibility') {
  // The gpunix side of the same rule (every process's navigator.gpu in this test file).
  const requestAdapter = VirtualGPU.prototype.requestAdapter;
  VirtualGPU.prototype.requestAdapter = function (this: VirtualGPU, options?: GPURequestAdapterOptions) {
    return requestAdapter.call(this, asCompatibilityProgram(options));
  };
}

/**
 * Skips `t` by name, with the backend and `reason`, when `supported` is false (the suite's device
 * lacks what the case needs); returns true when skipped. See also skipIfLacking.
 */
export function skipUnless(t: { skip(message?: string): void }, supported: boolean, reason: string): boolean {
  if (supported) return false;
  t.skip(`${suiteBackend} (${suiteFeatureLevel}): ${reason}`);
  return true;
}

let bare: GPU | null = null;

/** Dawn's own navigator.gpu, with no gpunix in between, on the suite's backend: the baseline. */
export function bareGpu(): GPU {
  if (bare) return bare;
  if (!suiteBackendChosen) {
    bare = create([]);
    return bare;
  }
  // Mesa's EGL reads EGL_PLATFORM when Dawn loads it (as the kernel sets it: src/device/backends.ts).
  if (suiteBackend === 'opengles' || suiteBackend === 'opengl') process.env.EGL_PLATFORM ??= 'surfaceless';
  // Held for the test process's life (by `bare`, itself or through its closures): dawn.node crashes
  // when a GPU object is collected while its devices live.
  bare = asFeatureLevelProgram(create([`backend=${suiteBackend}`]), suiteFeatureLevel);
  return bare;
}

/** The adapter of the suite's baseline backend (its features and limits say what a case may use). */
export async function bareAdapter(): Promise<GPUAdapter> {
  const adapter = await bareGpu().requestAdapter();
  if (!adapter) throw new Error(`no WebGPU adapter on the ${suiteBackend} backend: run scripts/setup.sh`);
  return adapter;
}

/** A fresh bare Dawn device (each needs its own adapter). */
export async function bareDevice(): Promise<GPUDevice> {
  return (await bareAdapter()).requestDevice();
}

import assert from 'node:assert/strict';
import type { CorpusProgram, DeviceNeeds } from './corpus/common.js';

let defaultDevice: Promise<{ limits: Record<string, number>; features: Set<string> }> | null = null;

/**
 * What of `needs` a default device on the suite's backend (no requiredLimits or features asked
 * for: what a program gets) lacks, as text, or null when it has everything.
 */
export async function suiteLacks(needs: DeviceNeeds | undefined): Promise<string | null> {
  if (!needs) return null;
  defaultDevice ??= (async () => {
    const adapter = await bareAdapter();
    const device = await adapter.requestDevice();
    const limits: Record<string, number> = {};
    for (const key in device.limits) limits[key] = (device.limits as unknown as Record<string, number>)[key];
    device.destroy();
    return { limits, features: new Set<string>(adapter.features) };
  })();
  const { limits, features } = await defaultDevice;
  const missing: string[] = [];
  for (const [key, want] of Object.entries(needs.limits ?? {})) {
    if (!((limits[key] ?? 0) >= (want as number))) missing.push(`${key} ${want} (the device's default: ${limits[key] ?? 'none'})`);
  }
  for (const feature of needs.features ?? []) if (!features.has(feature)) missing.push(`feature '${feature}'`);
  return missing.length ? `needs ${missing.join(', ')}` : null;
}

/** Skips `t` by name with the reason when the suite's device lacks `needs`; true when skipped. */
export async function skipIfLacking(t: { skip(message?: string): void }, needs: DeviceNeeds | undefined): Promise<boolean> {
  const lacking = await suiteLacks(needs);
  return lacking !== null && skipUnless(t, false, lacking);
}

/** The programs of `programs` the suite's device can run (the others are skipped by name where they run alone). */
export async function runnableOnSuiteDevice<P extends CorpusProgram>(programs: readonly P[]): Promise<P[]> {
  const lacking = await Promise.all(programs.map((p) => suiteLacks(p.needs)));
  return programs.filter((_, i) => lacking[i] === null);
}

const bareResults = new Map<string, Promise<Uint8Array>>();

/** A corpus program's result on bare Dawn: the baseline, run once per test file and shared. */
export function bareResult(program: CorpusProgram): Promise<Uint8Array> {
  let result = bareResults.get(program.name);
  if (!result) {
    result = program.run(bareGpu());
    bareResults.set(program.name, result);
  }
  return result;
}

/** Asserts two results are the same bytes, naming the first difference. */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.byteLength, expected.byteLength, `${what}: result length`);
  const firstDifference = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(Buffer.compare(actual, expected), 0, `${what}: results differ first at byte ${firstDifference}`);
}

/** Polls `check` until it returns true, failing with `what` after `timeoutMs`. */
export async function eventually(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A device of a process (embedded or remote) from its `navigator.gpu`, as a program gets one. */
export async function deviceOf(proc: { readonly gpu: GPU }): Promise<GPUDevice> {
  const adapter = await proc.gpu.requestAdapter();
  assert.ok(adapter, 'the process has an adapter');
  return (await adapter.requestDevice()) as GPUDevice;
}

/** Encodes into `encoder` one pass that runs `pipeline` over `workgroups` workgroups with `group` at index 0, ended; returns the pass. */
export function encodeDispatchPass(encoder: GPUCommandEncoder, pipeline: GPUComputePipeline, group: GPUBindGroup, workgroups: number): GPUComputePassEncoder {
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(workgroups);
  pass.end();
  return pass;
}

/** An encoder holding one ended pass that runs `pipeline` over `workgroups` workgroups with `group` at index 0. */
function encodeDispatch(device: GPUDevice, pipeline: GPUComputePipeline, group: GPUBindGroup, workgroups: number): GPUCommandEncoder {
  const encoder = device.createCommandEncoder();
  encodeDispatchPass(encoder, pipeline, group, workgroups);
  return encoder;
}

/**
 * Counts the completion signals (`onSubmittedWorkDone`) the kernel asks of Dawn on the real queue
 * behind `device` (a process's virtual device), until `restore()`: what a fence or a time check costs.
 */
export function countFences(device: GPUDevice): { count(): number; restore(): void } {
  return countRealQueueCalls(device, 'onSubmittedWorkDone');
}

/** Counts the kernel's calls of `method` on the real queue behind `device` (a process's virtual device), until `restore()`. */
export function countRealQueueCalls(device: GPUDevice, method: 'submit' | 'onSubmittedWorkDone'): { count(): number; restore(): void } {
  const queue = Object.getPrototypeOf((device as unknown as { physical: { queue: GPUQueue } }).physical.queue) as Record<string, (...args: unknown[]) => unknown>;
  const real = queue[method];
  let calls = 0;
  queue[method] = function (this: GPUQueue, ...args: unknown[]) {
    calls++;
    return real.apply(this, args);
  };
  return { count: () => calls, restore: () => void (queue[method] = real) };
}

/** The first word of `buffer` (a COPY_SRC buffer of `device`), read back through a MAP_READ buffer. */
export async function readWord(device: GPUDevice, buffer: GPUBuffer): Promise<number> {
  const readback = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, readback, 0, 4);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const value = new Uint32Array(readback.getMappedRange())[0];
  readback.unmap();
  readback.destroy();
  return value;
}

/** Submits one pass that runs `pipeline` over `workgroups` workgroups with `group` at index 0. */
export function dispatchOnce(device: GPUDevice, pipeline: GPUComputePipeline, group: GPUBindGroup, workgroups = 1): void {
  device.queue.submit([encodeDispatch(device, pipeline, group, workgroups).finish()]);
}

/**
 * Submits, in one command buffer, a pass that runs `pipeline` over `workgroups` workgroups with
 * `buffer` bound at group 0, binding 0, then a copy of `size` bytes of `buffer` into `readback`.
 */
export function dispatchThenCopy(device: GPUDevice, pipeline: GPUComputePipeline, buffer: GPUBuffer, workgroups: number, readback: GPUBuffer, size: number): void {
  device.queue.submit([encodeDispatchThenCopy(device, pipeline, buffer, workgroups, readback, size)]);
}

/** dispatchThenCopy's command buffer, not submitted. */
export function encodeDispatchThenCopy(device: GPUDevice, pipeline: GPUComputePipeline, buffer: GPUBuffer, workgroups: number, readback: GPUBuffer, size: number): GPUCommandBuffer {
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const encoder = encodeDispatch(device, pipeline, group, workgroups);
  encoder.copyBufferToBuffer(buffer, 0, readback, 0, size);
  return encoder.finish();
}

/**
 * One bandwidth round on `device`: writeBuffer `data` into `src`, copy it into the MAP_READ
 * buffer `readback`, map that and return a copy of the bytes read back (buffers of at least
 * `data.byteLength` bytes, reused by callers that check no round sees an earlier one's bytes).
 */
export async function writeCopyReadBack(device: GPUDevice, src: GPUBuffer, readback: GPUBuffer, data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  device.queue.writeBuffer(src, 0, data);
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(src, 0, readback, 0, data.byteLength);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const out = new Uint8Array(readback.getMappedRange()).slice();
  readback.unmap();
  return out;
}

/**
 * The source of a program (for `gpunix run`) that moves 4 MiB to the device and back in a loop
 * forever, printing "pumping" once `roundsFirst` rounds are done (0: before the first): tests kill
 * it in the middle of its transfers.
 */
export function bulkPumpProgram(roundsFirst: number): string {
  return `const device = await (await navigator.gpu.requestAdapter()).requestDevice();
const data = new Uint8Array(4 << 20);
const src = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
const readback = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
for (let round = 0; ; round++) {
  if (round === ${roundsFirst}) console.log('pumping');
  device.queue.writeBuffer(src, 0, data);
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(src, 0, readback, 0, data.byteLength);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  readback.getMappedRange();
  readback.unmap();
}
`;
}
