// Dawn's WebGPU globals that gpunix hands to programs unchanged: the flag enums and the error
// classes. Errors that Dawn raises reach programs as Dawn's own objects, so the classes a program
// tests with `instanceof` must be Dawn's too.

import { globals } from 'webgpu';

type ErrorClass<T> = new (message: string) => T;

const dawnGlobals = globals as Record<string, unknown>;

export const GPUValidationErrorClass = dawnGlobals.GPUValidationError as ErrorClass<GPUValidationError>;
export const GPUOutOfMemoryErrorClass = dawnGlobals.GPUOutOfMemoryError as ErrorClass<GPUOutOfMemoryError>;
export const GPUInternalErrorClass = dawnGlobals.GPUInternalError as ErrorClass<GPUInternalError>;
export const GPUPipelineErrorClass = dawnGlobals.GPUPipelineError as new (message: string, options: { reason: GPUPipelineErrorReason }) => GPUPipelineError;
export const GPUUncapturedErrorEventClass = dawnGlobals.GPUUncapturedErrorEvent as new (
  type: string,
  init: { error: GPUError },
) => GPUUncapturedErrorEvent;

export const BufferUsage = dawnGlobals.GPUBufferUsage as typeof GPUBufferUsage;
export const MapMode = dawnGlobals.GPUMapMode as typeof GPUMapMode;

/** The globals that stay Dawn's: enums, error and event classes, info and limits classes. */
export const PASS_THROUGH_GLOBALS = [
  'GPUBufferUsage',
  'GPUMapMode',
  'GPUShaderStage',
  'GPUTextureUsage',
  'GPUColorWrite',
  'GPUError',
  'GPUValidationError',
  'GPUOutOfMemoryError',
  'GPUInternalError',
  'GPUPipelineError',
  'GPUUncapturedErrorEvent',
  'GPUCompilationInfo',
  'GPUCompilationMessage',
  'GPUDeviceLostInfo',
  'GPUAdapterInfo',
  'GPUSupportedFeatures',
  'GPUSupportedLimits',
  'WGSLLanguageFeatures',
] as const;

export function dawnGlobal(name: string): unknown {
  return dawnGlobals[name];
}

export function validationError(message: string): GPUValidationError {
  return new GPUValidationErrorClass(message);
}

export function outOfMemoryError(message: string): GPUOutOfMemoryError {
  return new GPUOutOfMemoryErrorClass(message);
}
