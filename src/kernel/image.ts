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

/**
 * A bind group that queued work sets (version 2). Its layout is a pipeline's 'auto' layout
 * (`pipeline.getBindGroupLayout(group)`) or an explicit layout, as the program's descriptor.
 */
export interface ImageBindGroup {
  id: number;
  label: string;
  layout: { pipeline: number; group: number } | { descriptor: unknown };
  /** Buffer bindings; `buffer` is an ImageBuffer id; `offset`/`size` as the program gave them. */
  entries: { binding: number; buffer: number; offset?: number; size?: number }[];
}

/** A query set that queued work uses (version 2): made afresh on restore; its results are not carried. */
export interface ImageQuerySet {
  id: number;
  label: string;
  type: 'timestamp' | 'occlusion';
  count: number;
}

/** A compute pass command of queued work; objects are named by their image ids. */
export type ImagePassCommand =
  | { op: 'setPipeline'; pipeline: number }
  | { op: 'setBindGroup'; index: number; bindGroup: number | null; dynamicOffsets?: number[] }
  | { op: 'dispatchWorkgroups'; workgroups: [number, number, number] }
  | { op: 'dispatchWorkgroupsIndirect'; buffer: number; offset: number }
  /** `data`: the bytes, as lowercase hex. */
  | { op: 'setImmediates'; offset: number; data: string }
  | { op: 'pushDebugGroup'; label: string }
  | { op: 'popDebugGroup' }
  | { op: 'insertDebugMarker'; label: string };

/** A command of a queued command buffer: the kernel's record of what the program encoded. */
export type ImageCommand =
  | {
      op: 'computePass';
      label?: string;
      timestampWrites?: { querySet: number; beginningOfPassWriteIndex?: number; endOfPassWriteIndex?: number };
      commands: ImagePassCommand[];
    }
  | { op: 'copyBufferToBuffer'; source: number; sourceOffset: number; destination: number; destinationOffset: number; size: number }
  | { op: 'clearBuffer'; buffer: number; offset: number; size?: number }
  | { op: 'resolveQuerySet'; querySet: number; firstQuery: number; queryCount: number; destination: number; destinationOffset: number }
  | { op: 'pushDebugGroup'; label: string }
  | { op: 'popDebugGroup' }
  | { op: 'insertDebugMarker'; label: string };

export interface ImageCommandBuffer {
  label: string;
  commands: ImageCommand[];
}

/** One queued but unfinished item of a process's queue (version 2), in the program's order. */
export type QueuedWork =
  | { kind: 'submit'; commandBuffers: ImageCommandBuffer[] }
  | { kind: 'writeBuffer'; buffer: number; bufferOffset: number; data: Uint8Array }
  /** The program destroyed it after the work before this item: it goes once that work has run. */
  | { kind: 'destroyBuffer'; buffer: number }
  | { kind: 'destroyQuerySet'; querySet: number };

export interface ProcessImage {
  /** The format version of the file (readImage) or to write (writeImage: only the current one). */
  version: ImageFormatVersion;
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
  /** The bind groups queued work sets (empty in a version 1 image). */
  bindGroups: ImageBindGroup[];
  /** The query sets queued work uses (empty in a version 1 image). */
  querySets: ImageQuerySet[];
  /** Queued but unfinished work, in order (empty in a version 1 image). */
  queued: QueuedWork[];
}

export interface WriteImageOptions {
  /** Called after each piece reaches the file; throwing from it abandons the write (cleanly). */
  onProgress?: (bytesWritten: number, totalBytes: number) => void;
}

/**
 * An image as its header describes it, before the data section is read: buffers without their
 * contents, queued writes with their byte count (`size`) instead of their bytes.
 */
export interface ImageHeader extends Omit<ProcessImage, 'buffers' | 'queued'> {
  buffers: Omit<ImageBuffer, 'contents'>[];
  queued: (Exclude<QueuedWork, { kind: 'writeBuffer' }> | { kind: 'writeBuffer'; buffer: number; bufferOffset: number; size: number })[];
}

export interface ReadImageOptions {
  /**
   * Called once the header is checked, before the data section is read: what it throws refuses
   * the image (a restore checks that the image can be made, so that a refused one costs no read
   * of its data).
   */
  checkHeader?: (header: ImageHeader) => void | Promise<void>;
}

export interface WrittenImage {
  /** Size of the image file. */
  bytes: number;
  /** The whole-image checksum stored in the trailer (hex). */
  sha256: string;
}

export type ImageFormatVersion = 1 | 2;
/** The format version this gpunix writes. */
export const IMAGE_FORMAT_VERSION = 2;
/** The format versions this gpunix reads. */
export const IMAGE_FORMAT_VERSIONS_READ: readonly ImageFormatVersion[] = [1, 2];
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

/** A field that is not what the format says; turned into a GpunixError by whoever validated. */
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
 * How strictly to check: the reader is strict (an image has exactly the fields of its version,
 * named here); the writer is not (`false`: it writes only the fields it knows, so extra properties
 * of the caller's objects are ignored).
 */
type Strictness = ImageFormatVersion | false;

/** A plain object with these keys: `required` must be present; when strict, no others may be. */
function object(value: unknown, field: string, required: string[], optional: string[], strict: Strictness): Record<string, unknown> {
  if (!isPlainObject(value)) fail(field || '(top level)', 'an object', value);
  const o = value as Record<string, unknown>;
  for (const key of required) if (!Object.hasOwn(o, key) || o[key] === undefined) fail(join2(field, key), 'a value', undefined);
  if (strict) {
    for (const key of Object.keys(o)) {
      if (!required.includes(key) && !optional.includes(key)) throw new FieldError(join2(field, key), `not a field of image format version ${strict}`);
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

/** Everything of a ProcessImage up to its pipelines, checked and copied (only known fields). */
type ImageMetadata = Pick<ProcessImage, 'createdAt' | 'process' | 'device' | 'limits' | 'features' | 'shaders' | 'pipelines'>;

function metadata(root: Record<string, unknown>, strict: Strictness): ImageMetadata {
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

  return { createdAt, process, device, limits, features, shaders, pipelines };
}

// ---- version 2: the work section (bind groups, query sets, queued work) ----------------------

const U32 = 0xffffffff;
const HEX = /^(?:[0-9a-f]{2})*$/;

/** The ids the work section may name, per kind. */
interface ImageIds {
  buffers: Set<number>;
  pipelines: Set<number>;
  bindGroups: Set<number>;
  querySets: Set<number>;
}

function ref(value: unknown, field: string, ids: Set<number>, kind: string): number {
  const id = integer(value, field);
  if (!ids.has(id)) throw new FieldError(field, `refers to ${kind} id ${id}, which is not in the image`);
  return id;
}

/** Copies only the optional keys that are present (an absent key stays absent). */
function optional<T>(o: Record<string, unknown>, key: string, check: (v: unknown, field: string) => T, field: string): Record<string, T> {
  return o[key] === undefined ? {} : { [key]: check(o[key], `${field}.${key}`) };
}

function bindGroups(value: unknown, strict: Strictness, ids: ImageIds): ImageBindGroup[] {
  const groups = array(value, 'bindGroups').map((g, i): ImageBindGroup => {
    const f = `bindGroups[${i}]`;
    const o = object(g, f, ['id', 'label', 'layout', 'entries'], [], strict);
    let layout: ImageBindGroup['layout'];
    const l = object(o.layout, `${f}.layout`, [], ['pipeline', 'group', 'descriptor'], strict);
    if (l.descriptor !== undefined) {
      object(l, `${f}.layout`, ['descriptor'], [], strict);
      jsonValue(l.descriptor, `${f}.layout.descriptor`);
      layout = { descriptor: l.descriptor };
    } else {
      object(l, `${f}.layout`, ['pipeline', 'group'], [], strict);
      layout = { pipeline: ref(l.pipeline, `${f}.layout.pipeline`, ids.pipelines, 'pipeline'), group: integer(l.group, `${f}.layout.group`, U32) };
    }
    const entries = array(o.entries, `${f}.entries`).map((e, j) => {
      const ef = `${f}.entries[${j}]`;
      const eo = object(e, ef, ['binding', 'buffer'], ['offset', 'size'], strict);
      return {
        binding: integer(eo.binding, `${ef}.binding`, U32),
        buffer: ref(eo.buffer, `${ef}.buffer`, ids.buffers, 'buffer'),
        ...optional(eo, 'offset', integer, ef),
        ...optional(eo, 'size', integer, ef),
      };
    });
    return { id: integer(o.id, `${f}.id`), label: string(o.label, `${f}.label`), layout, entries };
  });
  uniqueIds(groups, 'bindGroups');
  return groups;
}

function querySets(value: unknown, strict: Strictness): ImageQuerySet[] {
  const sets = array(value, 'querySets').map((q, i): ImageQuerySet => {
    const f = `querySets[${i}]`;
    const o = object(q, f, ['id', 'label', 'type', 'count'], [], strict);
    if (o.type !== 'timestamp' && o.type !== 'occlusion') fail(`${f}.type`, '"timestamp" or "occlusion"', o.type);
    return { id: integer(o.id, `${f}.id`), label: string(o.label, `${f}.label`), type: o.type as ImageQuerySet['type'], count: integer(o.count, `${f}.count`, 4096) };
  });
  uniqueIds(sets, 'querySets');
  return sets;
}

function debugCommand(o: Record<string, unknown>, f: string, strict: Strictness): ImagePassCommand | null {
  switch (o.op) {
    case 'pushDebugGroup':
    case 'insertDebugMarker':
      object(o, f, ['op', 'label'], [], strict);
      return { op: o.op, label: string(o.label, `${f}.label`) };
    case 'popDebugGroup':
      object(o, f, ['op'], [], strict);
      return { op: 'popDebugGroup' };
    default:
      return null;
  }
}

function passCommand(value: unknown, f: string, strict: Strictness, ids: ImageIds): ImagePassCommand {
  const o = object(value, f, ['op'], ['pipeline', 'index', 'bindGroup', 'dynamicOffsets', 'workgroups', 'buffer', 'offset', 'data', 'label'], strict);
  const keys = (required: string[], optionalKeys: string[] = []): void => void object(o, f, required, optionalKeys, strict);
  switch (o.op) {
    case 'setPipeline':
      keys(['op', 'pipeline']);
      return { op: 'setPipeline', pipeline: ref(o.pipeline, `${f}.pipeline`, ids.pipelines, 'pipeline') };
    case 'setBindGroup': {
      keys(['op', 'index', 'bindGroup'], ['dynamicOffsets']);
      const bindGroup = o.bindGroup === null ? null : ref(o.bindGroup, `${f}.bindGroup`, ids.bindGroups, 'bind group');
      return {
        op: 'setBindGroup',
        index: integer(o.index, `${f}.index`, U32),
        bindGroup,
        ...(o.dynamicOffsets === undefined
          ? {}
          : { dynamicOffsets: array(o.dynamicOffsets, `${f}.dynamicOffsets`).map((n, i) => integer(n, `${f}.dynamicOffsets[${i}]`, U32)) }),
      };
    }
    case 'dispatchWorkgroups': {
      keys(['op', 'workgroups']);
      const w = array(o.workgroups, `${f}.workgroups`);
      if (w.length !== 3) fail(`${f}.workgroups`, 'three counts [x, y, z]', w);
      return { op: 'dispatchWorkgroups', workgroups: w.map((n, i) => integer(n, `${f}.workgroups[${i}]`, U32)) as [number, number, number] };
    }
    case 'dispatchWorkgroupsIndirect':
      keys(['op', 'buffer', 'offset']);
      return { op: 'dispatchWorkgroupsIndirect', buffer: ref(o.buffer, `${f}.buffer`, ids.buffers, 'buffer'), offset: integer(o.offset, `${f}.offset`) };
    case 'setImmediates': {
      keys(['op', 'offset', 'data']);
      const data = string(o.data, `${f}.data`);
      if (!HEX.test(data)) fail(`${f}.data`, 'bytes as lowercase hex digits', data);
      return { op: 'setImmediates', offset: integer(o.offset, `${f}.offset`, U32), data };
    }
    default: {
      const debug = debugCommand(o, f, strict);
      if (debug) return debug;
      return fail(`${f}.op`, 'a compute pass command (setPipeline, setBindGroup, dispatchWorkgroups, dispatchWorkgroupsIndirect, setImmediates, or a debug marker)', o.op);
    }
  }
}

function command(value: unknown, f: string, strict: Strictness, ids: ImageIds): ImageCommand {
  const o = object(value, f, ['op'], [], false);
  const keys = (required: string[], optionalKeys: string[] = []): void => void object(o, f, required, optionalKeys, strict);
  switch (o.op) {
    case 'computePass': {
      keys(['op', 'commands'], ['label', 'timestampWrites']);
      let timestampWrites: Extract<ImageCommand, { op: 'computePass' }>['timestampWrites'];
      if (o.timestampWrites !== undefined) {
        const tf = `${f}.timestampWrites`;
        const t = object(o.timestampWrites, tf, ['querySet'], ['beginningOfPassWriteIndex', 'endOfPassWriteIndex'], strict);
        timestampWrites = {
          querySet: ref(t.querySet, `${tf}.querySet`, ids.querySets, 'query set'),
          ...optional(t, 'beginningOfPassWriteIndex', (v, ff) => integer(v, ff, U32), tf),
          ...optional(t, 'endOfPassWriteIndex', (v, ff) => integer(v, ff, U32), tf),
        };
      }
      return {
        op: 'computePass',
        ...optional(o, 'label', (v, ff) => string(v, ff), f),
        ...(timestampWrites ? { timestampWrites } : {}),
        commands: array(o.commands, `${f}.commands`).map((c, i) => passCommand(c, `${f}.commands[${i}]`, strict, ids)),
      };
    }
    case 'copyBufferToBuffer':
      keys(['op', 'source', 'sourceOffset', 'destination', 'destinationOffset', 'size']);
      return {
        op: 'copyBufferToBuffer',
        source: ref(o.source, `${f}.source`, ids.buffers, 'buffer'),
        sourceOffset: integer(o.sourceOffset, `${f}.sourceOffset`),
        destination: ref(o.destination, `${f}.destination`, ids.buffers, 'buffer'),
        destinationOffset: integer(o.destinationOffset, `${f}.destinationOffset`),
        size: integer(o.size, `${f}.size`),
      };
    case 'clearBuffer':
      keys(['op', 'buffer', 'offset'], ['size']);
      return {
        op: 'clearBuffer',
        buffer: ref(o.buffer, `${f}.buffer`, ids.buffers, 'buffer'),
        offset: integer(o.offset, `${f}.offset`),
        ...optional(o, 'size', integer, f),
      };
    case 'resolveQuerySet':
      keys(['op', 'querySet', 'firstQuery', 'queryCount', 'destination', 'destinationOffset']);
      return {
        op: 'resolveQuerySet',
        querySet: ref(o.querySet, `${f}.querySet`, ids.querySets, 'query set'),
        firstQuery: integer(o.firstQuery, `${f}.firstQuery`, U32),
        queryCount: integer(o.queryCount, `${f}.queryCount`, U32),
        destination: ref(o.destination, `${f}.destination`, ids.buffers, 'buffer'),
        destinationOffset: integer(o.destinationOffset, `${f}.destinationOffset`),
      };
    default: {
      const debug = debugCommand(o, f, strict);
      if (debug) return debug as ImageCommand;
      return fail(`${f}.op`, 'a command (computePass, copyBufferToBuffer, clearBuffer, resolveQuerySet, or a debug marker)', o.op);
    }
  }
}

/**
 * A queued write as the header records it: its bytes lie in the data section after the buffers'
 * contents, at `offset`, with their hash.
 */
interface WriteRecord {
  kind: 'writeBuffer';
  buffer: number;
  bufferOffset: number;
  size: number;
  offset: number;
  sha256: string;
}

type HeaderQueued = Exclude<QueuedWork, { kind: 'writeBuffer' }> | WriteRecord;

/**
 * Checks queued work. `writes` says how a write's bytes are given: in the header, by `size`,
 * `offset` and `sha256` (the reader); in the image, as `data` (the writer).
 */
function queuedWork<W extends 'header' | 'image'>(value: unknown, strict: Strictness, ids: ImageIds, writes: W): W extends 'header' ? HeaderQueued[] : QueuedWork[] {
  const items = array(value, 'queued').map((q, i): HeaderQueued | QueuedWork => {
    const f = `queued[${i}]`;
    const o = object(q, f, ['kind'], [], false);
    const keys = (required: string[]): void => void object(o, f, required, [], strict);
    switch (o.kind) {
      case 'submit':
        keys(['kind', 'commandBuffers']);
        return {
          kind: 'submit',
          commandBuffers: array(o.commandBuffers, `${f}.commandBuffers`).map((cb, j) => {
            const cf = `${f}.commandBuffers[${j}]`;
            const c = object(cb, cf, ['label', 'commands'], [], strict);
            return { label: string(c.label, `${cf}.label`), commands: array(c.commands, `${cf}.commands`).map((x, k) => command(x, `${cf}.commands[${k}]`, strict, ids)) };
          }),
        };
      case 'writeBuffer': {
        const buffer = ref(o.buffer, `${f}.buffer`, ids.buffers, 'buffer');
        const bufferOffset = integer(o.bufferOffset, `${f}.bufferOffset`);
        if (writes === 'image') {
          keys(['kind', 'buffer', 'bufferOffset', 'data']);
          if (!(o.data instanceof Uint8Array)) fail(`${f}.data`, 'a Uint8Array', o.data);
          return { kind: 'writeBuffer', buffer, bufferOffset, data: o.data as Uint8Array };
        }
        keys(['kind', 'buffer', 'bufferOffset', 'size', 'offset', 'sha256']);
        const sha256 = string(o.sha256, `${f}.sha256`);
        if (!SHA256_HEX.test(sha256)) fail(`${f}.sha256`, '64 lowercase hex digits', sha256);
        return { kind: 'writeBuffer', buffer, bufferOffset, size: integer(o.size, `${f}.size`), offset: integer(o.offset, `${f}.offset`), sha256 };
      }
      case 'destroyBuffer':
        keys(['kind', 'buffer']);
        return { kind: 'destroyBuffer', buffer: ref(o.buffer, `${f}.buffer`, ids.buffers, 'buffer') };
      case 'destroyQuerySet':
        keys(['kind', 'querySet']);
        return { kind: 'destroyQuerySet', querySet: ref(o.querySet, `${f}.querySet`, ids.querySets, 'query set') };
      default:
        return fail(`${f}.kind`, 'one of submit, writeBuffer, destroyBuffer, destroyQuerySet', o.kind);
    }
  });
  return items as W extends 'header' ? HeaderQueued[] : QueuedWork[];
}

/** The work section of a version 2 image (bind groups, query sets, queued work), after the buffers. */
function work<W extends 'header' | 'image'>(
  root: Record<string, unknown>,
  strict: Strictness,
  meta: ImageMetadata,
  bufferIds: number[],
  writes: W,
): { bindGroups: ImageBindGroup[]; querySets: ImageQuerySet[]; queued: W extends 'header' ? HeaderQueued[] : QueuedWork[] } {
  const ids: ImageIds = { buffers: new Set(bufferIds), pipelines: new Set(meta.pipelines.map((p) => p.id)), bindGroups: new Set(), querySets: new Set() };
  const groups = bindGroups(root.bindGroups, strict, ids);
  ids.bindGroups = new Set(groups.map((g) => g.id));
  const sets = querySets(root.querySets, strict);
  ids.querySets = new Set(sets.map((s) => s.id));
  return { bindGroups: groups, querySets: sets, queued: queuedWork(root.queued, strict, ids, writes) };
}

const TOP_LEVEL_V1 = ['createdAt', 'process', 'device', 'limits', 'features', 'shaders', 'pipelines', 'buffers', 'queued'];
const TOP_LEVEL = ['createdAt', 'process', 'device', 'limits', 'features', 'shaders', 'pipelines', 'buffers', 'bindGroups', 'querySets', 'queued'];
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

interface CheckedHeader {
  meta: ImageMetadata;
  buffers: BufferRecord[];
  bindGroups: ImageBindGroup[];
  querySets: ImageQuerySet[];
  queued: HeaderQueued[];
  dataBytes: number;
}

/**
 * Checks a parsed header of format `version`. The data section holds the buffers' contents, then
 * (version 2) the bytes of queued writes, back to back, each 8-aligned.
 */
function validateHeader(root: unknown, version: ImageFormatVersion): CheckedHeader {
  const o = object(root, '', version === 1 ? TOP_LEVEL_V1 : TOP_LEVEL, [], version);
  const meta = metadata(o, version);
  let dataBytes = 0;
  const place = (size: number, offset: number, f: string, what: string): void => {
    if (offset !== dataBytes) fail(`${f}.offset`, `${dataBytes} (${what} lie back to back, each padded to 8 bytes)`, offset);
    dataBytes += align8(size);
    if (dataBytes > Number.MAX_SAFE_INTEGER / 2) throw new FieldError(`${f}.size`, 'makes the image too large');
  };
  const buffers = array(o.buffers, 'buffers').map((b, i): BufferRecord => {
    const f = `buffers[${i}]`;
    const r = object(b, f, [...BUFFER_FIELDS, 'offset', 'sha256'], [], version);
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
    place(record.size, record.offset, f, 'buffers');
    return record;
  });
  uniqueIds(buffers, 'buffers');
  if (version === 1) {
    // Version 1 kept queued work as opaque JSON, and gpunix always wrote none: records it cannot
    // interpret would be lost work, so an image that has any is refused rather than half-restored.
    const queued = array(o.queued, 'queued');
    queued.forEach((q, i) => jsonValue(q, `queued[${i}]`));
    if (queued.length > 0) fail('queued', '[] in a version 1 image (its queued records are opaque and cannot be replayed)', queued);
    return { meta, buffers, bindGroups: [], querySets: [], queued: [], dataBytes };
  }
  const section = work(o, version, meta, buffers.map((b) => b.id), 'header');
  section.queued.forEach((q, i) => {
    if (q.kind === 'writeBuffer') place(q.size, q.offset, `queued[${i}]`, 'buffers and then queued writes');
  });
  return { meta, buffers, ...section, dataBytes };
}

/** Checks a ProcessImage before anything is written; copies its fields (known ones only). */
function validateImage(image: unknown): { meta: ImageMetadata; buffers: ImageBuffer[]; work: ReturnType<typeof work<'image'>> } {
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
  return { meta, buffers, work: work(o, false, meta, buffers.map((b) => b.id), 'image') };
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
  const { meta, buffers, work: section } = checked;

  // The header, in a fixed key order: the same image always gives the same bytes. The data
  // section holds the buffers' contents, then the bytes of queued writes.
  const blobs: { contents: Uint8Array; sha256: string; what: string }[] = [];
  let offset = 0;
  const place = (contents: Uint8Array, what: string): { offset: number; sha256: string } => {
    const placed = { offset, sha256: sha256Hex(contents) };
    blobs.push({ contents, sha256: placed.sha256, what });
    offset += align8(contents.length);
    return placed;
  };
  const records: BufferRecord[] = buffers.map((b, i) => ({ id: b.id, label: b.label, size: b.size, usage: b.usage, ...place(b.contents, `buffers[${i}] (id ${b.id})`) }));
  const queued: HeaderQueued[] = section.queued.map((q, i) =>
    q.kind === 'writeBuffer'
      ? { kind: 'writeBuffer', buffer: q.buffer, bufferOffset: q.bufferOffset, size: q.data.length, ...place(q.data, `queued[${i}] (a write)`) }
      : q,
  );
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
      bindGroups: section.bindGroups,
      querySets: section.querySets,
      queued,
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
    for (const blob of blobs) {
      const again = createHash('sha256');
      await out.write(blob.contents, again);
      // Contents that changed after the header was hashed would make an image that never reads back.
      if (again.digest('hex') !== blob.sha256) {
        throw refuse(`the contents of ${blob.what} changed while the image was being written`);
      }
      await out.write(zeros.subarray(0, align8(blob.contents.length) - blob.contents.length));
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

/**
 * Reads and checks a whole image; returns it only if every byte of it is as it was written.
 * `options.checkHeader` sees the checked header before the data section is read.
 */
export async function readImage(path: string, options: ReadImageOptions = {}): Promise<ProcessImage> {
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
      if (!(IMAGE_FORMAT_VERSIONS_READ as readonly number[]).includes(version)) {
        throw bad(`unsupported format version ${version} (this gpunix reads versions ${IMAGE_FORMAT_VERSIONS_READ.join(' and ')})`);
      }
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
      checked = validateHeader(parsed, preamble.readUInt32LE(OFF_VERSION) as ImageFormatVersion);
    } catch (error) {
      if (error instanceof FieldError) throw bad(`malformed metadata field ${error.field}: ${error.problem}`);
      throw error;
    }
    const { meta, buffers: records, dataBytes, bindGroups, querySets } = checked;

    const dataStart = align8(PREAMBLE_BYTES + headerLength);
    const complete = dataStart + dataBytes + TRAILER_BYTES;
    if (size < complete) throw truncatedAt(size, complete);
    if (size > complete) throw bad(`${size - complete} unexpected bytes after the end of the image at byte ${complete}`);
    if (trailerLength !== BigInt(complete)) throw bad(`malformed trailer: it records a length of ${trailerLength} bytes, the image is ${complete} bytes`);
    // What the header describes, shared by the restore check (before the contents are read) and the result.
    const described = {
      version: preamble.readUInt32LE(OFF_VERSION) as ImageFormatVersion,
      createdAt: meta.createdAt,
      process: meta.process,
      device: meta.device,
      limits: meta.limits,
      features: meta.features,
      shaders: meta.shaders,
      pipelines: meta.pipelines,
      bindGroups,
      querySets,
    };
    await options.checkHeader?.({
      ...described,
      buffers: records.map((r) => ({ id: r.id, label: r.label, size: r.size, usage: r.usage })),
      queued: checked.queued.map((q) => (q.kind === 'writeBuffer' ? { kind: 'writeBuffer', buffer: q.buffer, bufferOffset: q.bufferOffset, size: q.size } : q)),
    });

    const padding = Buffer.alloc(ALIGN);
    const checkPadding = async (at: number, length: number, after: string): Promise<void> => {
      const pad = padding.subarray(0, length);
      await readFully(file, pad, at, truncatedAt);
      whole.update(pad);
      if (pad.some((byte) => byte !== 0)) throw bad(`malformed image: the padding after ${after} (bytes ${at}-${at + length - 1}) is not zero`);
    };
    await checkPadding(PREAMBLE_BYTES + headerLength, dataStart - PREAMBLE_BYTES - headerLength, 'the header');

    /** Reads one piece of the data section and checks it against its own hash; `what` names it (an open parenthesis). */
    const readBlob = async (offset: number, size: number, sha256: string, what: string, field: string): Promise<Uint8Array> => {
      const contents = new Uint8Array(size);
      const at = dataStart + offset;
      await readFully(file, contents, at, truncatedAt);
      const own = createHash('sha256');
      for (let c = 0; c < contents.length; c += CHUNK_BYTES) {
        const piece = contents.subarray(c, c + CHUNK_BYTES);
        own.update(piece);
        whole.update(piece);
      }
      if (own.digest('hex') !== sha256) throw bad(`checksum mismatch in section data, ${what}, bytes ${at}-${at + size - 1})`);
      await checkPadding(at + size, align8(size) - size, field);
      return contents;
    };
    const buffers: ImageBuffer[] = [];
    for (const [i, r] of records.entries()) {
      const contents = await readBlob(r.offset, r.size, r.sha256, `buffers[${i}] (id ${r.id}, label ${JSON.stringify(r.label)}`, `buffers[${i}]`);
      buffers.push({ id: r.id, label: r.label, size: r.size, usage: r.usage, contents });
    }
    const queued: QueuedWork[] = [];
    for (const [i, q] of checked.queued.entries()) {
      if (q.kind !== 'writeBuffer') {
        queued.push(q);
        continue;
      }
      const data = await readBlob(q.offset, q.size, q.sha256, `queued[${i}] (a write of ${q.size} bytes to buffer id ${q.buffer}`, `queued[${i}]`);
      queued.push({ kind: 'writeBuffer', buffer: q.buffer, bufferOffset: q.bufferOffset, data });
    }

    if (!sameBytes(whole.digest(), trailer.subarray(0, 32))) {
      throw bad(`checksum mismatch in section trailer: the whole-image checksum (bytes ${complete - TRAILER_BYTES}-${complete - 9}) does not match bytes 0-${complete - TRAILER_BYTES - 1}`);
    }
    return { ...described, buffers, queued };
  } finally {
    await file.close();
  }
}
