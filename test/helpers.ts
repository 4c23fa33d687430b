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
