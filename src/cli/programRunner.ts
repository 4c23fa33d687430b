// Runs an unmodified WebGPU program (an ES module) as a gpunix process in this Node process: the
// program finds navigator.gpu and the WebGPU globals installed, bound to its own process.

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { ProcessHandle } from '../kernel/kernel.js';
import { installGlobals, runInProcess } from '../vgpu/globals.js';

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
