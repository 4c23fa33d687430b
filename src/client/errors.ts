// The exceptions and WebGPU errors a remote program sees, made to be the ones bare WebGPU gives:
// a Failure from the daemon becomes the WebGPU error class or DOMException it names, an error
// scope's or uncaptured error's {type, message} a GPUValidationError / GPUOutOfMemoryError /
// GPUInternalError (Dawn's own classes, so `instanceof` against the globals holds), and the
// argument checks WebGPU makes synchronously are made here, before anything is sent.

import { globals } from 'webgpu';
import { GpunixError } from '../errors.js';
import { RemoteFailure } from './session.js';

export { enforceRange, operationError, U32_MAX, U64_MAX } from '../webidl.js';

const dawn = globals as Record<string, unknown>;
const ValidationError = dawn.GPUValidationError as new (message: string) => GPUError;
const OutOfMemoryError = dawn.GPUOutOfMemoryError as new (message: string) => GPUError;
const InternalError = dawn.GPUInternalError as new (message: string) => GPUError;
const PipelineError = dawn.GPUPipelineError as new (message: string, init: { reason: string }) => Error;
export const UncapturedErrorEvent = dawn.GPUUncapturedErrorEvent as new (type: string, init: { error: GPUError }) => Event;

/** A GPUError of the wire's `type` (validation, out-of-memory, internal). */
export function gpuError(type: string, message: string): GPUError {
  if (type === 'out-of-memory') return new OutOfMemoryError(message);
  if (type === 'internal') return new InternalError(message);
  return new ValidationError(message);
}

/**
 * The exception a rejected request gives the program: gpunix errors stay GpunixErrors; WebGPU
 * failures become their class (TypeError, RangeError, GPUPipelineError) or a DOMException of their
 * name (OperationError, AbortError...). A GPUPipelineError's reason does not travel: 'validation'.
 */
export function programError(error: unknown): Error {
  if (!(error instanceof RemoteFailure)) return error as Error;
  switch (error.name) {
    case 'TypeError':
      return new TypeError(error.message);
    case 'RangeError':
      return new RangeError(error.message);
    case 'GPUPipelineError':
      return new PipelineError(error.message, { reason: 'validation' });
    case 'Error':
      return new Error(error.message);
    default:
      return new DOMException(error.message, error.name) as unknown as Error;
  }
}

export function notOfInterface(method: string, what: string): TypeError {
  return new TypeError(`no overload matched for ${method}:\nobject is not of the correct interface type\nwhile converting ${what}`);
}

export { GpunixError };
