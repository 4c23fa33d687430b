// Runs an unmodified WebGPU program (an ES module) as a gpunix process in this Node process: the
// program finds navigator.gpu and the WebGPU globals installed, bound to its own process.

import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { ProcessHandle } from '../kernel/kernel.js';
import type { RemoteProcess } from '../client/index.js';
import * as remote from '../client/remote.js';
import { installGlobals, runInProcess, runWithGpu } from '../vgpu/globals.js';

let instance = 0;

/** The program's absolute path, or PROGRAM_LOAD when it is missing or not a file (a directory). */
export function checkProgram(path: string): string {
  const file = resolve(path);
  const stat = statSync(file, { throwIfNoEntry: false });
  if (!stat) throw new GpunixError(ErrorCodes.PROGRAM_LOAD, `program not found: ${path}`);
  if (!stat.isFile()) throw new GpunixError(ErrorCodes.PROGRAM_LOAD, `${path} is ${stat.isDirectory() ? 'a directory' : 'not a regular file'}, not a program (an .mjs or .js file)`);
  return file;
}

/**
 * Imports the program; a syntax error in it (or in a module it imports) becomes PROGRAM_LOAD, after
 * node's own picture of it (file:line, the line, a caret) on stderr. A SyntaxError the program
 * throws while running (JSON.parse, say) stays the program's own error.
 */
async function importProgram(file: string, url: string, load: (url: string) => Promise<unknown>): Promise<void> {
  try {
    await load(url);
  } catch (error) {
    if (!(error instanceof SyntaxError) || !isLoadError(error)) throw error;
    // node --check prints the location and the caret of the main file's syntax error.
    const check = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' });
    if (check.status !== 0 && check.stderr) {
      const picture = check.stderr.split('\n');
      const end = picture.findIndex((line) => /^\w*Error: /.test(line));
      process.stderr.write(`${picture.slice(0, end >= 0 ? end : picture.length).join('\n').trimEnd()}\n\n`);
    }
    throw new GpunixError(ErrorCodes.PROGRAM_LOAD, `cannot load ${file}: ${error.name}: ${error.message}`);
  }
}

/** A SyntaxError raised while compiling a module (only node's own frames), not by running code. */
function isLoadError(error: SyntaxError): boolean {
  const frames = (error.stack ?? '').split('\n').filter((line) => line.trimStart().startsWith('at '));
  return frames.every((line) => line.includes('node:internal'));
}

/** Loads and runs `path` as `handle`'s program; resolves when its top level has finished. */
export async function runProgram(handle: ProcessHandle, path: string): Promise<void> {
  const file = checkProgram(path);
  installGlobals();
  // A query string gives each process its own instance of the module (imports are cached by URL).
  const url = `${pathToFileURL(file).href}?gpunix-pid=${handle.pid}&n=${instance++}`;
  await runInProcess(handle, () => importProgram(file, url, (u) => import(u)));
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
  const file = checkProgram(path);
  installGlobals();
  Object.assign(globalThis, REMOTE_CLASSES);
  globalThis.process.argv = [globalThis.process.argv[0], file, ...args];
  const url = `${pathToFileURL(file).href}?gpunix-pid=${process.pid}&n=${instance++}`;
  await runWithGpu(process.gpu, () => importProgram(file, url, (u) => import(u)));
}
