// Runs an unmodified WebGPU program (an ES module) as a gpunix process in this Node process: the
// program finds navigator.gpu and the WebGPU globals installed, bound to its own process.

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { ProcessHandle } from '../kernel/kernel.js';
import type { RemoteProcess } from '../client/index.js';
import * as remote from '../client/remote.js';
import { installGlobals, runInProcess, runWithGpu } from '../vgpu/globals.js';

let instance = 0;

/** Loads and runs `path` as `handle`'s program; resolves when its top level has finished. */
export async function runProgram(handle: ProcessHandle, path: string): Promise<void> {
  const file = resolve(path);
  if (!existsSync(file)) {
    throw new GpunixError(ErrorCodes.PROGRAM_LOAD, `program not found: ${path}`);
  }
  installGlobals();
  // A query string gives each process its own instance of the module (imports are cached by URL).
  const url = `${pathToFileURL(file).href}?gpunix-pid=${handle.pid}&n=${instance++}`;
  await runInProcess(handle, () => import(url));
}

/** The classes a remote program can use with `instanceof`: the client's remote ones. */
const REMOTE_CLASSES: Record<string, unknown> = {
  GPU: remote.RemoteGPU,
  GPUAdapter: remote.RemoteAdapter,
  GPUDevice: remote.RemoteDevice,
  GPUQueue: remote.RemoteQueue,
  GPUBuffer: remote.RemoteBuffer,
  GPUShaderModule: remote.RemoteShaderModule,
  GPUComputePipeline: remote.RemoteComputePipeline,
  GPUBindGroupLayout: remote.RemoteBindGroupLayout,
  GPUPipelineLayout: remote.RemotePipelineLayout,
  GPUBindGroup: remote.RemoteBindGroup,
  GPUCommandEncoder: remote.RemoteCommandEncoder,
  GPUComputePassEncoder: remote.RemoteComputePassEncoder,
  GPUCommandBuffer: remote.RemoteCommandBuffer,
  GPUQuerySet: remote.RemoteQuerySet,
};

/**
 * Loads and runs `path` with navigator.gpu bound to `process`'s remote GPU (a gpunixd process,
 * over the wire) and the WebGPU globals installed (Dawn's enums and error classes, the client's
 * object classes); resolves when the program's top level has finished. `args` become its
 * process.argv after the script path. Ending the process is the caller's (exit() or close()).
 */
export async function runProgramRemote(process: RemoteProcess, path: string, args: string[] = []): Promise<void> {
  const file = resolve(path);
  if (!existsSync(file)) {
    throw new GpunixError(ErrorCodes.PROGRAM_LOAD, `program not found: ${path}`);
  }
  installGlobals();
  Object.assign(globalThis, REMOTE_CLASSES);
  globalThis.process.argv = [globalThis.process.argv[0], file, ...args];
  const url = `${pathToFileURL(file).href}?gpunix-pid=${process.pid}&n=${instance++}`;
  await runWithGpu(process.gpu, () => import(url));
}
