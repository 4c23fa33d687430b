// Installs what an unmodified WebGPU program expects to find: `navigator.gpu` and the WebGPU
// globals. Several processes can run in one Node process (the demo does), so `navigator.gpu` is
// resolved per asynchronous context: each program runs inside `runInProcess`, and whatever it
// starts (awaits, timers, callbacks) keeps seeing its own process's GPU.

import { AsyncLocalStorage } from 'node:async_hooks';
import type { ProcessHandle } from '../kernel/kernel.js';
import { VirtualAdapter } from './adapter.js';
import { VirtualBindGroup } from './bindGroup.js';
import { VirtualBuffer } from './buffer.js';
import { VirtualCommandBuffer } from './commandBuffer.js';
import { VirtualCommandEncoder, VirtualComputePassEncoder } from './commandEncoder.js';
import { VirtualComputePipeline } from './computePipeline.js';
import { VirtualDevice } from './device.js';
import { VirtualGPU } from './gpu.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import { VirtualQuerySet } from './querySet.js';
import { VirtualQueue } from './queue.js';
import { VirtualShaderModule } from './shaderModule.js';
import { dawnGlobal, PASS_THROUGH_GLOBALS } from './webgpuGlobals.js';

/** What `navigator.gpu` resolves to in an asynchronous context: a local process, or any GPU (a remote process's). */
const currentProcess = new AsyncLocalStorage<{ readonly gpu: GPU }>();

/** The classes a program can use with `instanceof`: gpunix's virtual ones. */
const VIRTUAL_CLASSES: Record<string, unknown> = {
  GPU: VirtualGPU,
  GPUAdapter: VirtualAdapter,
  GPUDevice: VirtualDevice,
  GPUQueue: VirtualQueue,
  GPUBuffer: VirtualBuffer,
  GPUShaderModule: VirtualShaderModule,
  GPUComputePipeline: VirtualComputePipeline,
  GPUBindGroupLayout: VirtualBindGroupLayout,
  GPUPipelineLayout: VirtualPipelineLayout,
  GPUBindGroup: VirtualBindGroup,
  GPUCommandEncoder: VirtualCommandEncoder,
  GPUComputePassEncoder: VirtualComputePassEncoder,
  GPUCommandBuffer: VirtualCommandBuffer,
  GPUQuerySet: VirtualQuerySet,
};

/** Runs `body` as the given process: `navigator.gpu` inside it (and in all it starts) is that process's. */
export function runInProcess<T>(handle: ProcessHandle, body: () => T): T {
  return currentProcess.run(handle, body);
}

/** Runs `body` with `navigator.gpu` bound to `gpu` (e.g. a gpunixd process's, over the wire), as runInProcess does. */
export function runWithGpu<T>(gpu: GPU, body: () => T): T {
  return currentProcess.run({ gpu }, body);
}

let installed = false;

/**
 * Defines `navigator.gpu` and the WebGPU globals on globalThis. Outside any `runInProcess`,
 * `navigator.gpu` is undefined, as on a machine without WebGPU.
 */
export function installGlobals(): void {
  if (installed) return;
  installed = true;
  const g = globalThis as Record<string, unknown>;
  for (const name of PASS_THROUGH_GLOBALS) g[name] = dawnGlobal(name);
  for (const [name, value] of Object.entries(VIRTUAL_CLASSES)) g[name] = value;
  const navigatorObject = (g.navigator as object | undefined) ?? {};
  Object.defineProperty(navigatorObject, 'gpu', {
    configurable: true,
    enumerable: true,
    get: () => currentProcess.getStore()?.gpu,
  });
  if (!g.navigator) Object.defineProperty(g, 'navigator', { value: navigatorObject, configurable: true, writable: true });
}
