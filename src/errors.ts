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
  /** A checkpoint or restore path cannot be used: no such image or directory, a name too long, not a directory, permission denied. */
  BAD_PATH: 'GPUNIX_E_BAD_PATH',
  /** A wire frame is malformed: truncated fields, bad UTF-8 or JSON, a wrong field type, trailing bytes. */
  PROTOCOL_MALFORMED: 'GPUNIX_E_PROTOCOL_MALFORMED',
  /** A wire frame is larger than the connection's frame size limit. */
  PROTOCOL_TOO_LARGE: 'GPUNIX_E_PROTOCOL_TOO_LARGE',
  /** A wire frame carries a message code the protocol does not define, or one sent the wrong way. */
  PROTOCOL_UNKNOWN_MESSAGE: 'GPUNIX_E_PROTOCOL_UNKNOWN_MESSAGE',
  /** A message arrived when the session cannot take it (before the handshake, a second Hello, a control message on a process session). */
  PROTOCOL_OUT_OF_ORDER: 'GPUNIX_E_PROTOCOL_OUT_OF_ORDER',
  /** Client and daemon speak different protocol versions. */
  PROTOCOL_VERSION: 'GPUNIX_E_PROTOCOL_VERSION',
  /** A session began a frame and did not finish it in time, or a control session stayed idle past its timeout. */
  PROTOCOL_TIMEOUT: 'GPUNIX_E_PROTOCOL_TIMEOUT',
  /** A message names an object id the session does not hold (never created, released, stale generation, wrong kind). */
  BAD_OBJECT: 'GPUNIX_E_BAD_OBJECT',
  /** A token is missing or wrong. */
  AUTH: 'GPUNIX_E_AUTH',
  /** The caller may not do this: another tenant's process, or an admin-only operation. */
  FORBIDDEN: 'GPUNIX_E_FORBIDDEN',
  /** A tenant quota refuses the request (process count, priority class, weight, memory). */
  QUOTA: 'GPUNIX_E_QUOTA',
  /** A checkpoint or migration could not stop its process at a piece boundary within its timeout; the process goes on as it was. */
  TIMEOUT: 'GPUNIX_E_TIMEOUT',
  /** The daemon could not be reached, or the connection to it ended. */
  DISCONNECTED: 'GPUNIX_E_DISCONNECTED',
  /** The daemon's configuration file is unreadable or invalid (the message names the field). */
  BAD_CONFIG: 'GPUNIX_E_BAD_CONFIG',
  /** A shader module exceeds a kernel `shaderLimits` limit; it reaches programs as a GPUValidationError whose message starts with the code. */
  SHADER_LIMIT: 'GPUNIX_E_SHADER_LIMIT',
  UNBOUNDED_LOOPS: 'GPUNIX_E_UNBOUNDED_LOOPS',
  /** Moving a process to another node failed before it was committed there (the node unreachable or refusing, the link lost); the process goes on where it was. */
  MIGRATION_FAILED: 'GPUNIX_E_MIGRATION_FAILED',
  /** A migration or restore target lacks a feature or limit the process uses (the message names each); nothing moved. */
  INCOMPATIBLE_DEVICE: 'GPUNIX_E_INCOMPATIBLE_DEVICE',
  /** The fleet's store (etcd) cannot be reached, refused the credentials, or lost the quorum. */
  FLEET_UNAVAILABLE: 'GPUNIX_E_FLEET_UNAVAILABLE',
  /** A job spec or queue spec is malformed (the message names the field). */
  BAD_JOB: 'GPUNIX_E_BAD_JOB',
  /** No job with that id is in the fleet (or it belongs to another tenant). */
  NO_SUCH_JOB: 'GPUNIX_E_NO_SUCH_JOB',
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

/**
 * The WebGPU methods outside the compute subset, by interface. The embedded virtual objects
 * (src/vgpu) and the remote ones (src/client) refuse them alike: one list for both.
 */
export const UNSUPPORTED_METHODS = {
  GPUDevice: ['createTexture', 'createSampler', 'importExternalTexture', 'createRenderPipeline', 'createRenderPipelineAsync', 'createRenderBundleEncoder'],
  GPUQueue: ['writeTexture', 'copyExternalImageToTexture'],
  GPUCommandEncoder: ['beginRenderPass', 'copyBufferToTexture', 'copyTextureToBuffer', 'copyTextureToTexture'],
} as const;

/** Gives `target`'s prototype the unsupported methods of `iface`: each throws (an *Async one rejects) GPUNIX_E_UNSUPPORTED. */
export function refuseUnsupported(target: { prototype: object }, iface: keyof typeof UNSUPPORTED_METHODS): void {
  for (const name of UNSUPPORTED_METHODS[iface]) {
    const method = `${iface}.${name}`;
    const value = name.endsWith('Async')
      ? () => Promise.reject(unsupported(method))
      : () => {
          throw unsupported(method);
        };
    Object.defineProperty(target.prototype, name, { value, writable: true, configurable: true });
  }
}
