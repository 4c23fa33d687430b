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
import { dawnGlobal, PASS_THROUGH_GLOBALS, UNSUPPORTED_INTERFACE_GLOBALS, webgpuInterface } from './webgpuGlobals.js';

/** What `navigator.gpu` resolves to in an asynchronous context: a local process, or any GPU (a remote process's). */
const currentProcess = new AsyncLocalStorage<{ readonly gpu: GPU }>();

/**
 * The interfaces gpunix implements, as programs see them: interface objects (webgpuInterface)
 * over the virtual classes, for `instanceof` and the WebIDL shape. The attributes listed are ones
 * Dawn puts on its instances (against WebIDL); gpunix has them on the prototype.
 */
const VIRTUAL_CLASSES: Record<string, unknown> = {
  GPU: webgpuInterface(VirtualGPU, 'GPU', ['wgslLanguageFeatures']),
  GPUAdapter: webgpuInterface(VirtualAdapter, 'GPUAdapter', ['features', 'limits', 'info']),
  GPUDevice: webgpuInterface(VirtualDevice, 'GPUDevice', ['features', 'limits', 'adapterInfo', 'queue', 'lost']),
  GPUQueue: webgpuInterface(VirtualQueue, 'GPUQueue'),
  GPUBuffer: webgpuInterface(VirtualBuffer, 'GPUBuffer'),
  GPUShaderModule: webgpuInterface(VirtualShaderModule, 'GPUShaderModule'),
  GPUComputePipeline: webgpuInterface(VirtualComputePipeline, 'GPUComputePipeline'),
  GPUBindGroupLayout: webgpuInterface(VirtualBindGroupLayout, 'GPUBindGroupLayout'),
  GPUPipelineLayout: webgpuInterface(VirtualPipelineLayout, 'GPUPipelineLayout'),
  GPUBindGroup: webgpuInterface(VirtualBindGroup, 'GPUBindGroup'),
  GPUCommandEncoder: webgpuInterface(VirtualCommandEncoder, 'GPUCommandEncoder'),
  GPUComputePassEncoder: webgpuInterface(VirtualComputePassEncoder, 'GPUComputePassEncoder'),
  GPUCommandBuffer: webgpuInterface(VirtualCommandBuffer, 'GPUCommandBuffer'),
  GPUQuerySet: webgpuInterface(VirtualQuerySet, 'GPUQuerySet'),
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

/** Every WebGPU global gpunix gives a program (what installGlobals puts on globalThis), by name. */
export function gpunixGlobals(): Record<string, unknown> {
  const all: Record<string, unknown> = {};
  for (const name of [...PASS_THROUGH_GLOBALS, ...UNSUPPORTED_INTERFACE_GLOBALS]) all[name] = dawnGlobal(name);
  return Object.assign(all, VIRTUAL_CLASSES);
}

/**
 * Defines `navigator.gpu` and the WebGPU globals on globalThis. Outside any `runInProcess`,
 * `navigator.gpu` is undefined, as on a machine without WebGPU.
 */
export function installGlobals(): void {
  if (installed) return;
  installed = true;
  const g = globalThis as Record<string, unknown>;
  // As WebIDL defines an interface object on the global: writable, configurable, not enumerable.
  for (const [name, value] of Object.entries(gpunixGlobals())) {
    Object.defineProperty(g, name, { value, writable: true, enumerable: false, configurable: true });
  }
  const navigatorObject = (g.navigator as object | undefined) ?? {};
  Object.defineProperty(navigatorObject, 'gpu', {
    configurable: true,
    enumerable: true,
    get: () => currentProcess.getStore()?.gpu,
  });
  if (!g.navigator) Object.defineProperty(g, 'navigator', { value: navigatorObject, configurable: true, writable: true });
}
