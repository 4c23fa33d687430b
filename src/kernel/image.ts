// The process image: what `kernel.checkpoint` writes and `kernel.restore` reads. A versioned
// binary format with checksums (docs/image-format.md says it byte by byte), written atomically
// and read all-or-nothing. No GPU here: the kernel turns a process into a ProcessImage and back.
//
//   writeImage(path, image, { onProgress? }) -> { bytes, sha256 }
//       Validates the image, writes it to a temporary file beside `path`, fsyncs it, renames it
//       over `path` and fsyncs the directory. On any failure the temporary file is removed and
//       whatever was at `path` before is untouched. A malformed image is refused with
//       GPUNIX_E_BAD_IMAGE naming the field; I/O errors are Node's own.
//   readImage(path) -> ProcessImage
//       Checks every checksum, length and field before returning anything; a damaged,
//       truncated, foreign or newer image is refused with GPUNIX_E_BAD_IMAGE and a sentence
//       saying what is wrong and where.

import { createHash, randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrorCodes, GpunixError } from '../errors.js';
import { PRIORITY_CLASSES, type PriorityClass } from '../params.js';

/** A buffer of the process, with its contents (exactly `size` bytes) taken when the image was. */
export interface ImageBuffer {
  id: number;
  label: string;
  size: number;
  /** GPUBufferUsage flags. */
  usage: number;
  contents: Uint8Array;
}

/** A shader module: its WGSL as the program gave it (before any rewriting by gpunix). */
export interface ImageShader {
  id: number;
  label: string;
  code: string;
}

/** A compute pipeline, described the way it was created; `shader` is an ImageShader id. */
export interface ImagePipeline {
  id: number;
  label: string;
  shader: number;
  entryPoint?: string;
  constants?: Record<string, number>;
  /** 'auto', or explicit layouts as opaque JSON records. */
  layout: 'auto' | { bindGroupLayouts: unknown[] };
}

export interface ProcessImage {
  version: typeof IMAGE_FORMAT_VERSION;
  /** When the image was taken (ISO 8601). */
  createdAt: string;
  process: { name: string; priority: PriorityClass; weight: number; tenant: string; memoryLimit: number | null };
  /** The device the image was taken on. */
  device: { description: string; vendor: string; backend: string };
  /** The process's view of the device: what its program was promised. */
  limits: Record<string, number>;
  features: string[];
  shaders: ImageShader[];
  pipelines: ImagePipeline[];
  buffers: ImageBuffer[];
  /** Queued but unfinished work, as opaque JSON records (JSON values only: no undefined, NaN, cycles). */
  queued: unknown[];
}

export interface WriteImageOptions {
  /** Called after each piece reaches the file; throwing from it abandons the write (cleanly). */
  onProgress?: (bytesWritten: number, totalBytes: number) => void;
}

export interface WrittenImage {
  /** Size of the image file. */
  bytes: number;
  /** The whole-image checksum stored in the trailer (hex). */
  sha256: string;
}

/** The only format version this gpunix writes and reads. */
export const IMAGE_FORMAT_VERSION = 1;
/** The first ten bytes of every image. */
export const IMAGE_MAGIC: Uint8Array = Uint8Array.from(Buffer.from('GPUNIXIMG\0', 'latin1'));

// Layout (docs/image-format.md): preamble | header JSON | zero padding to 8 | data | trailer.
const PREAMBLE_BYTES = 56;
const TRAILER_BYTES = 40;
const OFF_RESERVED_A = 10; // u16, zero
const OFF_VERSION = 12; // u32
const OFF_HEADER_LENGTH = 16; // u32
const OFF_RESERVED_B = 20; // u32, zero
const OFF_HEADER_SHA = 24; // 32 bytes
const ALIGN = 8;
/** Headers larger than this are refused (V8 cannot make strings much larger anyway). */
const MAX_HEADER_BYTES = 256 * 1024 * 1024;
/** I/O and hashing move at most this many bytes at a time; no image is ever built in one Buffer. */
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Opaque JSON records (queued work, layouts) may nest this deep; deeper is refused (and cycles with it). */
const MAX_JSON_DEPTH = 64;

const SHA256_HEX = /^[0-9a-f]{64}$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

const align8 = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

// ---------------------------------------------------------------------------------------------
// Field-by-field validation, shared by the writer (a ProcessImage) and the reader (its header).

/** A field that is not what version 1 says; turned into a GpunixError by whoever validated. */
class FieldError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (typeof value === 'bigint' || typeof value === 'function' || typeof value === 'symbol') return `a ${typeof value}`;
  if (value instanceof Uint8Array) return `a ${value.constructor.name} of ${value.length} bytes`;
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function fail(field: string, expected: string, got: unknown): never {
  throw new FieldError(field, `expected ${expected}, got ${show(got)}`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * A plain object with these keys: `required` must be present; with `strict`, no others may be.
 * The reader is strict (an image has exactly the fields of its version); the writer is not
 * (it writes only the fields it knows, so extra properties of the caller's objects are ignored).
 */
function object(value: unknown, field: string, required: string[], optional: string[], strict: boolean): Record<string, unknown> {
  if (!isPlainObject(value)) fail(field || '(top level)', 'an object', value);
  const o = value as Record<string, unknown>;
  for (const key of required) if (!Object.hasOwn(o, key) || o[key] === undefined) fail(join2(field, key), 'a value', undefined);
  if (strict) {
    for (const key of Object.keys(o)) {
      if (!required.includes(key) && !optional.includes(key)) throw new FieldError(join2(field, key), 'not a field of image format version 1');
    }
  }
  return o;
}

const join2 = (field: string, key: string): string => (field ? `${field}.${key}` : key);

function string(value: unknown, field: string, nonEmpty = false): string {
  if (typeof value !== 'string' || (nonEmpty && value.length === 0)) fail(field, nonEmpty ? 'a non-empty string' : 'a string', value);
  return value as string;
}

function integer(value: unknown, field: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    fail(field, `an integer from 0 to ${max}`, value);
  }
  return value as number;
}

function finite(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(field, 'a finite number', value);
  return value as number;
}

function array(value: unknown, field: string): unknown[] {
  if (!Array.isArray(value)) fail(field, 'an array', value);
  return value as unknown[];
}

function numberRecord(value: unknown, field: string): Record<string, number> {
  const o = object(value, field, [], [], false);
  // fromEntries: a key such as "__proto__" stays an own property, never a prototype.
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, finite(v, `${field}.${k}`)]));
}

/** Refuses anything JSON would not bring back equal: undefined, NaN, functions, class instances, cycles. */
function jsonValue(value: unknown, field: string, depth = 0): unknown {
  if (depth > MAX_JSON_DEPTH) throw new FieldError(field, `nested deeper than ${MAX_JSON_DEPTH} levels (or a cycle)`);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return finite(value, field);
  if (Array.isArray(value)) {
    value.forEach((v, i) => jsonValue(v, `${field}[${i}]`, depth + 1));
    return value;
  }
  if (isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) jsonValue(v, `${field}.${k}`, depth + 1);
    return value;
  }
  return fail(field, 'a JSON value', value);
}

function uniqueIds(items: { id: number }[], field: string): void {
  const seen = new Set<number>();
  items.forEach((item, i) => {
    if (seen.has(item.id)) throw new FieldError(`${field}[${i}].id`, `duplicate id ${item.id}`);
    seen.add(item.id);
  });
}

/** Everything of a ProcessImage except buffers, version-1-checked and copied (only known fields). */
type ImageMetadata = Omit<ProcessImage, 'version' | 'buffers'>;

function metadata(root: Record<string, unknown>, strict: boolean): ImageMetadata {
  const createdAt = string(root.createdAt, 'createdAt');
  if (!ISO_TIME.test(createdAt) || Number.isNaN(Date.parse(createdAt))) fail('createdAt', 'an ISO 8601 time', createdAt);

  const p = object(root.process, 'process', ['name', 'priority', 'weight', 'tenant', 'memoryLimit'], [], strict);
  const priority = string(p.priority, 'process.priority');
  if (!(PRIORITY_CLASSES as readonly string[]).includes(priority)) fail('process.priority', `one of ${PRIORITY_CLASSES.join(', ')}`, priority);
  const weight = finite(p.weight, 'process.weight');
  if (weight <= 0) fail('process.weight', 'a positive number', weight);
  const process = {
    name: string(p.name, 'process.name'),
    priority: priority as PriorityClass,
    weight,
    tenant: string(p.tenant, 'process.tenant', true),
    memoryLimit: p.memoryLimit === null ? null : integer(p.memoryLimit, 'process.memoryLimit'),
  };

  const d = object(root.device, 'device', ['description', 'vendor', 'backend'], [], strict);
  const device = {
    description: string(d.description, 'device.description'),
    vendor: string(d.vendor, 'device.vendor'),
    backend: string(d.backend, 'device.backend'),
  };

  const limits = numberRecord(root.limits, 'limits');
  const features = array(root.features, 'features').map((f, i) => string(f, `features[${i}]`));

  const shaders = array(root.shaders, 'shaders').map((s, i): ImageShader => {
    const f = `shaders[${i}]`;
    const o = object(s, f, ['id', 'label', 'code'], [], strict);
    return { id: integer(o.id, `${f}.id`), label: string(o.label, `${f}.label`), code: string(o.code, `${f}.code`) };
  });
  uniqueIds(shaders, 'shaders');
  const shaderIds = new Set(shaders.map((s) => s.id));

  const pipelines = array(root.pipelines, 'pipelines').map((s, i): ImagePipeline => {
    const f = `pipelines[${i}]`;
    const o = object(s, f, ['id', 'label', 'shader', 'layout'], ['entryPoint', 'constants'], strict);
    const shader = integer(o.shader, `${f}.shader`);
    if (!shaderIds.has(shader)) throw new FieldError(`${f}.shader`, `refers to shader id ${shader}, which is not in the image`);
    let layout: ImagePipeline['layout'];
    if (o.layout === 'auto') layout = 'auto';
    else {
      const l = object(o.layout, `${f}.layout`, ['bindGroupLayouts'], [], strict);
      const groups = array(l.bindGroupLayouts, `${f}.layout.bindGroupLayouts`);
      groups.forEach((g, j) => jsonValue(g, `${f}.layout.bindGroupLayouts[${j}]`));
      layout = { bindGroupLayouts: groups };
    }
    return {
      id: integer(o.id, `${f}.id`),
      label: string(o.label, `${f}.label`),
      shader,
      ...(o.entryPoint === undefined ? {} : { entryPoint: string(o.entryPoint, `${f}.entryPoint`) }),
      ...(o.constants === undefined ? {} : { constants: numberRecord(o.constants, `${f}.constants`) }),
      layout,
    };
  });
  uniqueIds(pipelines, 'pipelines');

  const queued = array(root.queued, 'queued');
  queued.forEach((q, i) => jsonValue(q, `queued[${i}]`));

  return { createdAt, process, device, limits, features, shaders, pipelines, queued };
}

const TOP_LEVEL = ['createdAt', 'process', 'device', 'limits', 'features', 'shaders', 'pipelines', 'buffers', 'queued'];
const BUFFER_FIELDS = ['id', 'label', 'size', 'usage'];

/** A buffer as the header records it: where its contents lie in the data section, and their hash. */
interface BufferRecord {
  id: number;
  label: string;
  size: number;
  usage: number;
  offset: number;
  sha256: string;
}

/** Checks a parsed header; buffers must lie back to back in the data section, each 8-aligned. */
function validateHeader(root: unknown): { meta: ImageMetadata; buffers: BufferRecord[]; dataBytes: number } {
  const o = object(root, '', TOP_LEVEL, [], true);
  const meta = metadata(o, true);
  let dataBytes = 0;
  const buffers = array(o.buffers, 'buffers').map((b, i): BufferRecord => {
    const f = `buffers[${i}]`;
    const r = object(b, f, [...BUFFER_FIELDS, 'offset', 'sha256'], [], true);
    const record: BufferRecord = {
      id: integer(r.id, `${f}.id`),
      label: string(r.label, `${f}.label`),
      size: integer(r.size, `${f}.size`),
      usage: integer(r.usage, `${f}.usage`, 0xffffffff),
      offset: integer(r.offset, `${f}.offset`),
      sha256: string(r.sha256, `${f}.sha256`),
    };
    if (record.offset !== dataBytes) fail(`${f}.offset`, `${dataBytes} (buffers lie back to back, each padded to 8 bytes)`, record.offset);
    if (!SHA256_HEX.test(record.sha256)) fail(`${f}.sha256`, '64 lowercase hex digits', record.sha256);
    dataBytes += align8(record.size);
    if (dataBytes > Number.MAX_SAFE_INTEGER / 2) throw new FieldError(`${f}.size`, 'makes the image too large');
    return record;
  });
  uniqueIds(buffers, 'buffers');
  return { meta, buffers, dataBytes };
}

/** Checks a ProcessImage before anything is written; copies its metadata (known fields only). */
function validateImage(image: unknown): { meta: ImageMetadata; buffers: ImageBuffer[] } {
  const o = object(image, '', ['version', ...TOP_LEVEL], [], false);
  if (o.version !== IMAGE_FORMAT_VERSION) fail('version', String(IMAGE_FORMAT_VERSION), o.version);
  const meta = metadata(o, false);
  const buffers = array(o.buffers, 'buffers').map((b, i): ImageBuffer => {
    const f = `buffers[${i}]`;
    const r = object(b, f, [...BUFFER_FIELDS, 'contents'], [], false);
    const size = integer(r.size, `${f}.size`);
    if (!(r.contents instanceof Uint8Array) || r.contents.length !== size) fail(`${f}.contents`, `a Uint8Array of ${size} bytes (the size)`, r.contents);
    return {
      id: integer(r.id, `${f}.id`),
      label: string(r.label, `${f}.label`),
      size,
      usage: integer(r.usage, `${f}.usage`, 0xffffffff),
      contents: r.contents as Uint8Array,
    };
  });
  uniqueIds(buffers, 'buffers');
  return { meta, buffers };
}

// ---------------------------------------------------------------------------------------------
// Writing.

function sha256Hex(bytes: Uint8Array): string {
  const hash = createHash('sha256');
  for (let at = 0; at < bytes.length; at += CHUNK_BYTES) hash.update(bytes.subarray(at, at + CHUNK_BYTES));
  return hash.digest('hex');
}

/**
 * Writes pieces at increasing positions. Each piece is first copied into a private staging
 * buffer, and that copy is both hashed and written, so the checksums describe exactly the bytes
 * in the file even if the caller's arrays change meanwhile.
 */
class ImageWriter {
  position = 0;
  readonly whole = createHash('sha256');
  private readonly staging: Buffer;

  constructor(
    private readonly file: FileHandle,
    private readonly total: number,
    private readonly onProgress?: (written: number, total: number) => void,
  ) {
    this.staging = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, total));
  }

  /** Writes `bytes`; feeds every byte written to `also` as well, when given. */
  async write(bytes: Uint8Array, also?: ReturnType<typeof createHash>): Promise<void> {
    for (let at = 0; at < bytes.length; at += CHUNK_BYTES) {
      const length = Math.min(CHUNK_BYTES, bytes.length - at);
      this.staging.set(bytes.subarray(at, at + length));
      const piece = this.staging.subarray(0, length);
      this.whole.update(piece);
      also?.update(piece);
      for (let done = 0; done < length; ) {
        const { bytesWritten } = await this.file.write(piece, done, length - done, this.position + done);
        done += bytesWritten;
      }
      this.position += length;
      this.onProgress?.(this.position, this.total);
    }
  }
}

/** Writes `image` to `path` atomically: the old file at `path` stays whole until the new one is. */
export async function writeImage(path: string, image: ProcessImage, options: WriteImageOptions = {}): Promise<WrittenImage> {
  const refuse = (problem: string, cause?: unknown): GpunixError =>
    new GpunixError(ErrorCodes.BAD_IMAGE, `cannot write process image ${path}: ${problem}`, { cause });

  let checked: ReturnType<typeof validateImage>;
  try {
    checked = validateImage(image);
  } catch (error) {
    if (error instanceof FieldError) throw refuse(`malformed field ${error.field}: ${error.problem}`);
    throw error;
  }
  const { meta, buffers } = checked;

  // The header, in a fixed key order: the same image always gives the same bytes.
  let offset = 0;
  const records: BufferRecord[] = buffers.map((b) => {
    const record = { id: b.id, label: b.label, size: b.size, usage: b.usage, offset, sha256: sha256Hex(b.contents) };
    offset += align8(b.size);
    return record;
  });
  const dataBytes = offset;
  const header = Buffer.from(
    JSON.stringify({
      createdAt: meta.createdAt,
      process: meta.process,
      device: meta.device,
      limits: meta.limits,
      features: meta.features,
      shaders: meta.shaders,
      pipelines: meta.pipelines,
      buffers: records,
      queued: meta.queued,
    }),
    'utf8',
  );
  if (header.length > MAX_HEADER_BYTES) throw refuse(`its metadata is ${header.length} bytes, more than the ${MAX_HEADER_BYTES} an image may hold`);

  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  preamble.set(IMAGE_MAGIC, 0);
  preamble.writeUInt32LE(IMAGE_FORMAT_VERSION, OFF_VERSION);
  preamble.writeUInt32LE(header.length, OFF_HEADER_LENGTH);
  createHash('sha256').update(header).digest().copy(preamble, OFF_HEADER_SHA);
  const dataStart = align8(PREAMBLE_BYTES + header.length);
  const total = dataStart + dataBytes + TRAILER_BYTES;
  const zeros = new Uint8Array(ALIGN);

  const temp = join(dirname(path), `${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  // 'wx': never follow or reuse an existing file; 0o600: an image holds a tenant's data.
  let file: FileHandle | undefined = await open(temp, 'wx', 0o600);
  let written: WrittenImage;
  try {
    const out = new ImageWriter(file, total, options.onProgress);
    await out.write(preamble);
    await out.write(header);
    await out.write(zeros.subarray(0, dataStart - out.position));
    for (const [i, b] of buffers.entries()) {
      const again = createHash('sha256');
      await out.write(b.contents, again);
      // Contents that changed after the header was hashed would make an image that never reads back.
      if (again.digest('hex') !== records[i].sha256) {
        throw refuse(`the contents of buffers[${i}] (id ${b.id}) changed while the image was being written`);
      }
      await out.write(zeros.subarray(0, align8(b.size) - b.size));
    }
    const sha256 = out.whole.copy().digest('hex');
    const trailer = Buffer.alloc(TRAILER_BYTES);
    Buffer.from(sha256, 'hex').copy(trailer, 0);
    trailer.writeBigUInt64LE(BigInt(total), 32);
    await out.write(trailer);
    await file.sync();
    await file.close();
    file = undefined;
    await rename(temp, path);
    written = { bytes: total, sha256 };
  } catch (error) {
    await file?.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw error;
  }
  // The rename is durable once the directory is; a filesystem that cannot fsync a directory
  // (some network and FUSE ones) still has the complete image in place.
  await syncDirectory(dirname(path));
  return written;
}

async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EPERM' && code !== 'EISDIR' && code !== 'EBADF') throw error;
  } finally {
    await handle?.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Reading.

/** Reads exactly `length` bytes at `position` into `into`; a file that ends first is truncated. */
async function readFully(file: FileHandle, into: Uint8Array, position: number, truncated: (at: number) => Error): Promise<void> {
  for (let done = 0; done < into.length; ) {
    const length = Math.min(CHUNK_BYTES, into.length - done);
    const { bytesRead } = await file.read(into, done, length, position + done);
    if (bytesRead === 0) throw truncated(position + done);
    done += bytesRead;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Reads and checks a whole image; returns it only if every byte of it is as it was written. */
export async function readImage(path: string): Promise<ProcessImage> {
  const bad = (problem: string, cause?: unknown): GpunixError =>
    new GpunixError(ErrorCodes.BAD_IMAGE, `bad process image ${path}: ${problem}`, { cause });
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const truncatedAt = (at: number, complete?: number): GpunixError =>
      bad(`truncated at byte ${at}` + (complete === undefined ? '' : ` (the complete image is ${complete} bytes)`) + '; the write that made it did not finish, or the file was cut');

    // Preamble: magic first, so that a foreign file is called foreign, not short.
    const preamble = Buffer.alloc(Math.min(size, PREAMBLE_BYTES));
    await readFully(file, preamble, 0, truncatedAt);
    const magicSeen = preamble.subarray(0, IMAGE_MAGIC.length);
    if (!sameBytes(magicSeen, IMAGE_MAGIC.subarray(0, magicSeen.length))) {
      throw bad('bad magic: it does not begin with "GPUNIXIMG\\0", so it is not a gpunix process image (or its first bytes are damaged)');
    }
    // A newer image is called newer even when short: its layout past the version is unknown.
    if (preamble.length >= OFF_VERSION + 4) {
      const version = preamble.readUInt32LE(OFF_VERSION);
      if (version !== IMAGE_FORMAT_VERSION) throw bad(`unsupported format version ${version} (this gpunix reads version ${IMAGE_FORMAT_VERSION})`);
    }
    if (size < PREAMBLE_BYTES + TRAILER_BYTES) throw truncatedAt(size);
    if (preamble.readUInt16LE(OFF_RESERVED_A) !== 0 || preamble.readUInt32LE(OFF_RESERVED_B) !== 0) {
      throw bad('malformed preamble: its reserved bytes (10-11, 20-23) are not zero');
    }

    // A trailer whose length field matches the file says the file is whole, so a header length
    // that overruns it is damage, not truncation.
    const trailer = Buffer.alloc(TRAILER_BYTES);
    await readFully(file, trailer, size - TRAILER_BYTES, truncatedAt);
    const trailerLength = trailer.readBigUInt64LE(32);
    const headerLength = preamble.readUInt32LE(OFF_HEADER_LENGTH);
    if (headerLength > MAX_HEADER_BYTES) throw bad(`malformed preamble: header length ${headerLength} is more than the ${MAX_HEADER_BYTES} an image may hold`);
    if (PREAMBLE_BYTES + headerLength + TRAILER_BYTES > size && trailerLength === BigInt(size)) {
      throw bad(`malformed preamble: header length ${headerLength} is more than the file holds`);
    }
    if (PREAMBLE_BYTES + headerLength > size) throw truncatedAt(size);

    const headerBytes = Buffer.alloc(headerLength);
    await readFully(file, headerBytes, PREAMBLE_BYTES, truncatedAt);
    const whole = createHash('sha256').update(preamble).update(headerBytes);
    if (!sameBytes(createHash('sha256').update(headerBytes).digest(), preamble.subarray(OFF_HEADER_SHA, OFF_HEADER_SHA + 32))) {
      throw bad(`checksum mismatch in section header (bytes ${PREAMBLE_BYTES}-${PREAMBLE_BYTES + headerLength - 1}, by the length in bytes 16-19)`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
    } catch (error) {
      throw bad(`malformed header: not UTF-8 JSON (${(error as Error).message})`, error);
    }
    let checked: ReturnType<typeof validateHeader>;
    try {
      checked = validateHeader(parsed);
    } catch (error) {
      if (error instanceof FieldError) throw bad(`malformed metadata field ${error.field}: ${error.problem}`);
      throw error;
    }
    const { meta, buffers: records, dataBytes } = checked;

    const dataStart = align8(PREAMBLE_BYTES + headerLength);
    const complete = dataStart + dataBytes + TRAILER_BYTES;
    if (size < complete) throw truncatedAt(size, complete);
    if (size > complete) throw bad(`${size - complete} unexpected bytes after the end of the image at byte ${complete}`);
    if (trailerLength !== BigInt(complete)) throw bad(`malformed trailer: it records a length of ${trailerLength} bytes, the image is ${complete} bytes`);

    const padding = Buffer.alloc(ALIGN);
    const checkPadding = async (at: number, length: number, after: string): Promise<void> => {
      const pad = padding.subarray(0, length);
      await readFully(file, pad, at, truncatedAt);
      whole.update(pad);
      if (pad.some((byte) => byte !== 0)) throw bad(`malformed image: the padding after ${after} (bytes ${at}-${at + length - 1}) is not zero`);
    };
    await checkPadding(PREAMBLE_BYTES + headerLength, dataStart - PREAMBLE_BYTES - headerLength, 'the header');

    const buffers: ImageBuffer[] = [];
    for (const [i, r] of records.entries()) {
      const contents = new Uint8Array(r.size);
      const at = dataStart + r.offset;
      await readFully(file, contents, at, truncatedAt);
      const own = createHash('sha256');
      for (let c = 0; c < contents.length; c += CHUNK_BYTES) {
        const piece = contents.subarray(c, c + CHUNK_BYTES);
        own.update(piece);
        whole.update(piece);
      }
      if (own.digest('hex') !== r.sha256) {
        throw bad(`checksum mismatch in section data, buffers[${i}] (id ${r.id}, label ${JSON.stringify(r.label)}, bytes ${at}-${at + r.size - 1})`);
      }
      await checkPadding(at + r.size, align8(r.size) - r.size, `buffers[${i}]`);
      buffers.push({ id: r.id, label: r.label, size: r.size, usage: r.usage, contents });
    }

    if (!sameBytes(whole.digest(), trailer.subarray(0, 32))) {
      throw bad(`checksum mismatch in section trailer: the whole-image checksum (bytes ${complete - TRAILER_BYTES}-${complete - 9}) does not match bytes 0-${complete - TRAILER_BYTES - 1}`);
    }
    return {
      version: IMAGE_FORMAT_VERSION,
      createdAt: meta.createdAt,
      process: meta.process,
      device: meta.device,
      limits: meta.limits,
      features: meta.features,
      shaders: meta.shaders,
      pipelines: meta.pipelines,
      buffers,
      queued: meta.queued,
    };
  } finally {
    await file.close();
  }
}
