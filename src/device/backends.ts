// Which Dawn backends the kernel opens devices on, and one Dawn instance per backend. Each backend
// (Vulkan, OpenGL ES, OpenGL, Metal, D3D12, D3D11) is its own driver path with its own shader
// translation, so every backend found is a device of its own.

import { create } from 'webgpu';
import { ErrorCodes, GpunixError } from '../errors.js';
import { KERNEL_DAWN_OPTIONS } from '../params.js';

/** The Dawn backends a kernel may open, by the name Dawn's `backend=` option takes. */
export const BACKEND_NAMES = ['vulkan', 'opengles', 'opengl', 'metal', 'd3d12', 'd3d11'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** WebGPU's feature levels: `core`, or `compatibility` (older APIs: GL, GLES, D3D11). */
export type FeatureLevel = 'core' | 'compatibility';

/** The environment variable listing backends (comma-separated) when `createKernel` is given none. */
export const BACKENDS_ENV = 'GPUNIX_BACKENDS';

/** Backends Dawn offers only in compatibility mode: their adapters are asked for with featureLevel 'compatibility'. */
const COMPATIBILITY_BACKENDS: ReadonlySet<string> = new Set(['opengles', 'opengl', 'd3d11']);

/** Backends reached through EGL (Dawn loads EGL when their instance looks for adapters). */
const EGL_BACKENDS: ReadonlySet<string> = new Set(['opengles', 'opengl']);

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

/** The feature level of devices opened on `backend`. */
export function featureLevelOf(backend: BackendName): FeatureLevel {
  return COMPATIBILITY_BACKENDS.has(backend) ? 'compatibility' : 'core';
}

/** The platform's own backend: the one opened when neither the option nor $GPUNIX_BACKENDS names any. */
export function platformBackend(): BackendName {
  if (process.platform === 'darwin') return 'metal';
  if (process.platform === 'win32') return 'd3d12';
  return 'vulkan';
}

/**
 * The backends to open, in order: `option` if given, else $GPUNIX_BACKENDS if set, else the
 * platform's own backend only (one real GPU is not opened twice by default). Unknown, repeated or
 * no names: GPUNIX_E_BAD_OPTION.
 */
export function resolveBackends(option: unknown, env: string | undefined = process.env[BACKENDS_ENV]): BackendName[] {
  let names: unknown[];
  let source: string;
  if (option !== undefined) {
    if (!Array.isArray(option)) throw new GpunixError(ErrorCodes.BAD_OPTION, `backends must be a list of backend names (${BACKEND_NAMES.join(', ')}), got ${String(option)}`);
    names = option;
    source = 'backends';
  } else if (env !== undefined && env.trim() !== '') {
    names = env.split(',').map((s) => s.trim()).filter((s) => s !== '');
    source = `$${BACKENDS_ENV}`;
  } else {
    return [platformBackend()];
  }
  if (names.length === 0) throw new GpunixError(ErrorCodes.BAD_OPTION, `${source} names no backend: give one or more of ${BACKEND_NAMES.join(', ')}`);
  const out: BackendName[] = [];
  for (const name of names) {
    if (typeof name !== 'string' || !isBackendName(name)) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `${source}: unknown backend ${JSON.stringify(name)} (known: ${BACKEND_NAMES.join(', ')})`);
    }
    if (out.includes(name)) throw new GpunixError(ErrorCodes.BAD_OPTION, `${source}: backend ${name} is listed twice (use the devices option for more devices per backend)`);
    out.push(name);
  }
  return out;
}

/** Parses a comma-separated backend list (CLI flags, config files): the same checks as resolveBackends. */
export function parseBackendList(text: string): BackendName[] {
  return resolveBackends(text.split(',').map((s) => s.trim()).filter((s) => s !== ''), undefined);
}

// One Dawn instance per backend, for the life of the Node process: dawn.node crashes when a GPU
// object is collected while adapters or devices made from it live, so none is ever dropped.
const instances = new Map<BackendName, GPU>();

/** The Dawn instance for `backend`, created once with the kernel's toggles. */
export function dawnInstanceFor(backend: BackendName): GPU {
  let gpu = instances.get(backend);
  if (!gpu) {
    // Mesa's EGL reads EGL_PLATFORM when Dawn loads it: without a display server only the
    // surfaceless platform offers a context. A value the user set is kept.
    if (EGL_BACKENDS.has(backend)) process.env.EGL_PLATFORM ??= 'surfaceless';
    gpu = create([`backend=${backend}`, ...KERNEL_DAWN_OPTIONS]);
    instances.set(backend, gpu);
  }
  return gpu;
}

/** The adapter query for `backend` (compatibility-only backends answer only a compatibility request). */
export function adapterQueryFor(backend: BackendName, query: GPURequestAdapterOptions): GPURequestAdapterOptions {
  return featureLevelOf(backend) === 'compatibility' ? { ...query, featureLevel: 'compatibility' } : query;
}

/** What to tell a user whose backend opened no adapter. */
export function noAdapterHint(backend: BackendName): string {
  if (EGL_BACKENDS.has(backend)) {
    return "install Mesa's EGL and GL libraries (scripts/setup.sh: libegl1, libegl-mesa0, libgles2, libgl1-mesa-dri); without a display, EGL_PLATFORM=surfaceless (gpunix sets it when unset)";
  }
  if (backend === 'vulkan') return 'install a Vulkan driver (on a machine without a GPU, run scripts/setup.sh to install lavapipe)';
  return `Dawn found no ${backend} adapter on this platform (${process.platform})`;
}
