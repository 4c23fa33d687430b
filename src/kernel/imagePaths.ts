// Filesystem errors on checkpoint and restore paths, as one coded line (GPUNIX_E_BAD_PATH) rather
// than Node's uncoded error with its stack: what an operator or tenant can act on.

import { ErrorCodes, GpunixError } from '../errors.js';

/** The longest name of one path component most filesystems take (bytes). */
export const MAX_PATH_COMPONENT_BYTES = 255;
/** The longest whole path Linux takes (PATH_MAX less its NUL). */
export const MAX_PATH_BYTES = 4095;
/** The longest file name of an image to write: writeImage's temporary file adds `.tmp-<pid>-<12 hex>` (at most 32 bytes). */
export const MAX_IMAGE_NAME_BYTES = MAX_PATH_COMPONENT_BYTES - 32;

const REASONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a component of the path is not a directory',
  EISDIR: 'it is a directory',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENAMETOOLONG: `a name in the path is too long (at most ${MAX_PATH_COMPONENT_BYTES} bytes a name, ${MAX_PATH_BYTES} the whole path)`,
  ELOOP: 'too many levels of symbolic links',
  EROFS: 'the filesystem is read-only',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exhausted',
  EEXIST: 'a file of that name is in the way',
};

/** A short quoted form of a path for messages (a hostile path can be very long). */
export function quotePath(path: string): string {
  return JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}...` : path);
}

/** True when `error` is a Node filesystem error (it has an errno code such as ENOENT). */
export function isFsError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string' && /^E[A-Z]+$/.test((error as NodeJS.ErrnoException).code!);
}

/** `error` (a filesystem error) as GPUNIX_E_BAD_PATH: `cannot <doing> <path>: <reason>`; other errors unchanged. */
export function pathError(error: unknown, doing: string, path: string): unknown {
  if (!isFsError(error)) return error;
  const reason = REASONS[error.code!] ?? `${error.code}`;
  return new GpunixError(ErrorCodes.BAD_PATH, `cannot ${doing} ${quotePath(path)}: ${reason}`, { cause: error });
}

/** Refuses (GPUNIX_E_BAD_PATH) a path with a name over 255 bytes or over 4095 bytes in all, before the filesystem sees it. */
export function checkPathLength(path: string, doing: string): void {
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) {
    throw new GpunixError(ErrorCodes.BAD_PATH, `cannot ${doing} ${quotePath(path)}: the path is ${Buffer.byteLength(path, 'utf8')} bytes, more than the ${MAX_PATH_BYTES} a path may have`);
  }
  const long = path.split(/[\\/]/).find((part) => Buffer.byteLength(part, 'utf8') > MAX_PATH_COMPONENT_BYTES);
  if (long !== undefined) {
    throw new GpunixError(
      ErrorCodes.BAD_PATH,
      `cannot ${doing} ${quotePath(path)}: the name ${quotePath(long)} is ${Buffer.byteLength(long, 'utf8')} bytes, more than the ${MAX_PATH_COMPONENT_BYTES} a file or directory name may have`,
    );
  }
}
