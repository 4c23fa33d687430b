// gpunix's own errors: a stable code a program can switch on, and a sentence a user can act on.
// WebGPU errors that a process causes are NOT these: they are WebGPU's own error types, delivered
// through WebGPU's channels (error scopes, rejected promises, exceptions). See docs/errors.md.

export const ErrorCodes = {
  /** No WebGPU adapter could be found or opened. */
  NO_DEVICE: 'GPUNIX_E_NO_DEVICE',
  /** An option passed to the kernel or the CLI is malformed or out of range. */
  BAD_OPTION: 'GPUNIX_E_BAD_OPTION',
  /** No process with that pid is in the process table. */
  NO_SUCH_PROCESS: 'GPUNIX_E_NO_SUCH_PROCESS',
  /** The call needs a live process, but the process has exited. */
  PROCESS_EXITED: 'GPUNIX_E_PROCESS_EXITED',
  /** A WebGPU method outside the compute subset gpunix implements (textures, render). */
  UNSUPPORTED: 'GPUNIX_E_UNSUPPORTED',
  /** A kernel-level allocation (e.g. a shared segment) does not fit in a budget or limit. */
  OUT_OF_MEMORY: 'GPUNIX_E_OUT_OF_MEMORY',
  /** The operation cannot happen in the process's present state (e.g. migrating with a mapped buffer). */
  BUSY: 'GPUNIX_E_BUSY',
  /** The kernel has shut down, or is shutting down. */
  SHUTDOWN: 'GPUNIX_E_SHUTDOWN',
  /** A program given to `gpunix run` could not be loaded. */
  PROGRAM_LOAD: 'GPUNIX_E_PROGRAM_LOAD',
  /** A requirements file given to `gpunix caps --require` is unreadable or malformed. */
  BAD_REQUIREMENTS: 'GPUNIX_E_BAD_REQUIREMENTS',
  /** A process image is corrupted, truncated, of an unknown version, or malformed (or an image to write is malformed). */
  BAD_IMAGE: 'GPUNIX_E_BAD_IMAGE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class GpunixError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GpunixError';
    this.code = code;
  }
}

/** The error thrown by every WebGPU method gpunix does not implement yet. */
export function unsupported(method: string): GpunixError {
  return new GpunixError(
    ErrorCodes.UNSUPPORTED,
    `${method} is not supported by gpunix yet: processes get the WebGPU compute subset (buffers, ` +
      `compute pipelines, bind groups, compute passes, copies, query sets); textures and render ` +
      `pipelines come later`,
  );
}
