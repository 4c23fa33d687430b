// Shared test helpers: a bare Dawn device (the baseline every gpunix result is compared with)
// and small utilities. Tests use the real device: lavapipe in CI.

import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);

let bare: GPU | null = null;

/** Dawn's own navigator.gpu, with no gpunix in between: the baseline. */
export function bareGpu(): GPU {
  bare ??= create([]);
  return bare;
}

/** A fresh bare Dawn device (each needs its own adapter). */
export async function bareDevice(): Promise<GPUDevice> {
  const adapter = await bareGpu().requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  return adapter.requestDevice();
}

import assert from 'node:assert/strict';
import type { CorpusProgram } from './corpus/common.js';

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
