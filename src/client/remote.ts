// The remote WebGPU facade: a navigator.gpu whose objects live in a gpunixd process. Every object
// is made here at once with an id of our choosing (the create message is pipelined), so a program
// never waits for the daemon except where WebGPU itself returns a promise. What WebGPU checks
// synchronously (argument conversions, mapped ranges, writeBuffer ranges) is checked here so the
// program sees the same exceptions at the same call; everything else is the daemon's (Dawn's)
// verdict, through WebGPU's channels: error scopes, uncapturederror events, rejected promises.
// Command encoders record locally and travel whole at finish() (src/protocol/commands.ts).

import { ErrorCodes, GpunixError, refuseUnsupported } from '../errors.js';
import type { Message } from '../protocol/messages.js';
import { Command, SELECT_ENCODER, SELECT_PASS } from '../protocol/commands.js';
import type { Channel } from './channel.js';
import { RemoteGpunixExtension, RestoredListing } from './extension.js';
import { dataBytes } from '../webidl.js';
import { enforceRange, gpuError, notOfInterface, operationError, U32_MAX, U64_MAX, UncapturedErrorEvent } from './errors.js';

/** Largest writeBuffer payload sent in one message; bigger valid writes go in pieces (frames stay far below the limit). */
export const WRITE_CHUNK_BYTES = 8 * 1024 * 1024;

const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;
const COPY_DST = 0x0008;

const ERROR_FILTERS = new Set(['validation', 'out-of-memory', 'internal']);

/** The base of every remote object the daemon holds: its id, its label (set travels), its session. */
export abstract class RemoteObject {
  #label: string;
  constructor(
    readonly channel: Channel,
    readonly id: number,
    label: unknown,
  ) {
    this.#label = label === undefined || label === null ? '' : String(label);
    channel.track(this, id);
  }
  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = String(value);
    this.channel.post('SetLabel', { object: this.id, label: this.#label });
  }
}

/**
 * A descriptor as JSON for the wire: remote objects become {"$ref": id} (of this session only),
 * iterables arrays, undefined members are left out. `refs` collects the objects referenced.
 */
export function toWire(value: unknown, channel: Channel, method: string, refs?: Set<object>, depth = 0): unknown {
  if (depth > 32) throw new TypeError(`${method}: descriptor nests too deeply`);
  if (value === null || value === undefined) return value ?? null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return value;
    case 'bigint':
      return Number(value);
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value instanceof RemoteObject) {
    if (value.channel !== channel) throw notOfInterface(method, 'an object of another gpunix session');
    refs?.add(value);
    return { $ref: value.id };
  }
  if (Array.isArray(value) || ArrayBuffer.isView(value)) return Array.from(value as ArrayLike<unknown>, (item) => toWire(item, channel, method, refs, depth + 1) ?? null);
  if (typeof (value as Iterable<unknown>)[Symbol.iterator] === 'function' && !(value instanceof String)) {
    return Array.from(value as Iterable<unknown>, (item) => toWire(item, channel, method, refs, depth + 1) ?? null);
  }
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value as object)) {
    const item = toWire((value as Record<string, unknown>)[key], channel, method, refs, depth + 1);
    if (item !== undefined && (value as Record<string, unknown>)[key] !== undefined) out[key] = item;
  }
  return out;
}

// ---- GPU and adapter ----------------------------------------------------------------------------

export class RemoteGPU {
  constructor(private readonly channel: Channel) {}

  async requestAdapter(options?: GPURequestAdapterOptions): Promise<RemoteAdapter | null> {
    const channel = this.channel;
    const id = channel.ids.allocate();
    let reply;
    try {
      reply = await channel.request('RequestAdapter', { adapter: id, options: toWire(options ?? {}, channel, 'requestAdapter') });
    } catch (error) {
      channel.ids.recycle(id);
      throw error;
    }
    if (reply.result === null) {
      channel.ids.recycle(id);
      return null;
    }
    return new RemoteAdapter(channel, id, reply.result as AdapterResult);
  }

  getPreferredCanvasFormat(): GPUTextureFormat {
    return 'rgba8unorm';
  }

  /** Not carried by the protocol: reported empty. */
  get wgslLanguageFeatures(): ReadonlySet<string> {
    return new Set();
  }
}

interface AdapterResult {
  features: string[];
  limits: Record<string, number>;
  info: Record<string, unknown>;
}

export class RemoteAdapter extends RemoteObject {
  readonly features: ReadonlySet<string>;
  readonly limits: Readonly<Record<string, number>>;
  readonly info: GPUAdapterInfo;

  constructor(channel: Channel, id: number, result: AdapterResult) {
    super(channel, id, '');
    this.features = new Set(result.features);
    this.limits = Object.freeze({ ...result.limits });
    this.info = Object.freeze({ ...result.info }) as unknown as GPUAdapterInfo;
  }

  get isFallbackAdapter(): boolean {
    return Boolean((this.info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter);
  }

  async requestDevice(descriptor?: GPUDeviceDescriptor): Promise<RemoteDevice> {
    const channel = this.channel;
    const device = channel.ids.allocate();
    const queue = channel.ids.allocate();
    let reply;
    try {
      reply = await channel.request('RequestDevice', { adapter: this.id, device, queue, descriptor: toWire(descriptor ?? {}, channel, 'requestDevice') });
    } catch (error) {
      channel.ids.recycle(device);
      channel.ids.recycle(queue);
      throw error;
    }
    const result = reply.result as { features: string[]; limits: Record<string, number>; restored?: RestoredListing | null };
    const made = new RemoteDevice(channel, device, queue, result, this.info, descriptor);
    if (result.restored) made.bindRestored(result.restored);
    return made;
  }
}

// ---- device -------------------------------------------------------------------------------------

export interface RemoteDeviceLostInfo {
  readonly reason: GPUDeviceLostReason;
  readonly message: string;
}

/** Every live device of a session by id, for the daemon's events (weak: dropped devices go). */
export class DeviceTable {
  private readonly devices = new Map<number, WeakRef<RemoteDevice>>();
  add(device: RemoteDevice): void {
    this.devices.set(device.id, new WeakRef(device));
  }
  forget(id: number): void {
    this.devices.delete(id);
  }
  get(id: number): RemoteDevice | undefined {
    return this.devices.get(id)?.deref();
  }
  all(): RemoteDevice[] {
    return [...this.devices.values()].map((ref) => ref.deref()).filter((d): d is RemoteDevice => d !== undefined);
  }
}

const deviceTables = new WeakMap<Channel, DeviceTable>();
export function deviceTableOf(channel: Channel): DeviceTable {
  let table = deviceTables.get(channel);
  if (!table) deviceTables.set(channel, (table = new DeviceTable()));
  return table;
}

export class RemoteDevice extends EventTarget {
  readonly queue: RemoteQueue;
  readonly features: ReadonlySet<string>;
  readonly limits: Readonly<Record<string, number>>;
  readonly adapterInfo: GPUAdapterInfo;
  readonly lost: Promise<RemoteDeviceLostInfo>;
  onuncapturederror: ((event: Event) => void) | null = null;
  #label: string;
  #resolveLost!: (info: RemoteDeviceLostInfo) => void;
  #isLost = false;
  #listeners = 0;

  constructor(
    readonly channel: Channel,
    readonly id: number,
    queueId: number,
    result: { features: string[]; limits: Record<string, number> },
    adapterInfo: GPUAdapterInfo,
    descriptor: GPUDeviceDescriptor | undefined,
  ) {
    super();
    this.#label = descriptor?.label ?? '';
    channel.track(this, id);
    this.features = new Set(result.features);
    this.limits = Object.freeze({ ...result.limits });
    this.adapterInfo = adapterInfo;
    this.lost = new Promise((resolve) => (this.#resolveLost = resolve));
    this.queue = new RemoteQueue(channel, queueId, descriptor?.defaultQueue?.label);
    this.gpunix = new RemoteGpunixExtension(channel, this, (id, size, usage, label) => new RemoteBuffer(channel, id, this, size, usage, label, false));
    deviceTableOf(channel).add(this);
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = String(value);
    this.channel.post('SetLabel', { object: this.id, label: this.#label });
  }

  /** The gpunix extension (docs/vgpu.md): restored objects by label, shared segments. */
  readonly gpunix: RemoteGpunixExtension;

  /** Names a restored image's objects with client ids (BindRestored) and makes them findable. */
  bindRestored(listing: RestoredListing): void {
    const ids = this.channel.ids;
    const buffers = listing.buffers.map((b) => new RemoteBuffer(this.channel, ids.allocate(), this, b.size, b.usage, b.label, false));
    const pipelines = listing.pipelines.map((p) => new RemoteComputePipeline(this.channel, ids.allocate(), this, p.label));
    const shaderModules = listing.shaderModules.map((m) => new RemoteShaderModule(this.channel, ids.allocate(), m.label));
    this.channel.post('BindRestored', {
      device: this.id,
      buffers: buffers.map((b) => b.id),
      pipelines: pipelines.map((p) => p.id),
      shaderModules: shaderModules.map((m) => m.id),
    });
    this.gpunix.adopt({ buffers, pipelines, shaderModules });
  }

  /** The daemon says the device is lost (or the session ended). */
  lose(reason: GPUDeviceLostReason, message: string): void {
    if (this.#isLost) return;
    this.#isLost = true;
    this.#resolveLost(Object.freeze({ reason, message }));
  }

  /** An error no scope captured, for the uncapturederror event; printed when nobody listens (as Dawn does). */
  uncaptured(type: string, message: string): void {
    const error = gpuError(type, message);
    const event = new UncapturedErrorEvent('uncapturederror', { error });
    const handled = this.#listeners > 0 || this.onuncapturederror !== null;
    this.onuncapturederror?.call(this, event);
    this.dispatchEvent(event);
    if (!handled) process.stderr.write(`gpunix: pid ${this.channel.pid}: uncaptured WebGPU ${error.constructor.name}: ${message}\n`);
  }

  override addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions | boolean): void {
    if (type === 'uncapturederror' && listener) this.#listeners++;
    super.addEventListener(type, listener, options);
  }
  override removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: EventListenerOptions | boolean): void {
    if (type === 'uncapturederror' && listener) this.#listeners = Math.max(0, this.#listeners - 1);
    super.removeEventListener(type, listener, options);
  }

  destroy(): void {
    this.channel.post('DeviceDestroy', { device: this.id });
  }

  pushErrorScope(filter: GPUErrorFilter): void {
    if (!ERROR_FILTERS.has(filter)) throw new TypeError(`no overload matched for pushErrorScope:\n${String(filter)} is not a valid enum value of GPUErrorFilter`);
    this.channel.post('PushErrorScope', { device: this.id, filter });
  }

  async popErrorScope(): Promise<GPUError | null> {
    const { result } = await this.channel.request('PopErrorScope', { device: this.id });
    if (result === null) return null;
    const { type, message } = result as { type: string; message: string };
    return gpuError(type, message);
  }

  /** Allocates an id and posts the create message for it (descriptor already checked). */
  private make(name: 'CreateBuffer' | 'CreateShaderModule' | 'CreateComputePipeline' | 'CreateBindGroupLayout' | 'CreatePipelineLayout' | 'CreateBindGroup' | 'CreateQuerySet', method: string, descriptor: unknown): number {
    const wire = toWire(descriptor, this.channel, method);
    const id = this.channel.ids.allocate();
    this.channel.post(name, { device: this.id, id, descriptor: wire });
    return id;
  }

  createBuffer(descriptor: GPUBufferDescriptor): RemoteBuffer {
    if (typeof descriptor !== 'object' || descriptor === null) throw new TypeError('no overload matched for createBuffer: a descriptor is required');
    const size = enforceRange(descriptor.size, U64_MAX, 'createBuffer', "member 'size'");
    const usage = enforceRange(descriptor.usage, U32_MAX, 'createBuffer', "member 'usage'");
    const mappedAtCreation = Boolean(descriptor.mappedAtCreation);
    if (mappedAtCreation && size % 4 !== 0) throw new RangeError('createBuffer failed, size is not a multiple of 4 when mappedAtCreation is true.');
    const id = this.make('CreateBuffer', 'createBuffer', { ...descriptor, size, usage, mappedAtCreation });
    return new RemoteBuffer(this.channel, id, this, size, usage, descriptor.label, mappedAtCreation);
  }

  createShaderModule(descriptor: GPUShaderModuleDescriptor): RemoteShaderModule {
    const id = this.make('CreateShaderModule', 'createShaderModule', { ...descriptor, code: String(descriptor?.code) });
    return new RemoteShaderModule(this.channel, id, descriptor?.label);
  }

  createComputePipeline(descriptor: GPUComputePipelineDescriptor): RemoteComputePipeline {
    const id = this.make('CreateComputePipeline', 'createComputePipeline', descriptor);
    return new RemoteComputePipeline(this.channel, id, this, descriptor?.label);
  }

  async createComputePipelineAsync(descriptor: GPUComputePipelineDescriptor): Promise<RemoteComputePipeline> {
    const wire = toWire(descriptor, this.channel, 'createComputePipelineAsync');
    const id = this.channel.ids.allocate();
    try {
      await this.channel.request('CreateComputePipelineAsync', { device: this.id, id, descriptor: wire });
    } catch (error) {
      // The daemon forgot the id of a failed creation: no Release is owed.
      this.channel.ids.recycle(id);
      throw error;
    }
    return new RemoteComputePipeline(this.channel, id, this, descriptor?.label);
  }

  createBindGroupLayout(descriptor: GPUBindGroupLayoutDescriptor): RemoteBindGroupLayout {
    const id = this.make('CreateBindGroupLayout', 'createBindGroupLayout', descriptor);
    return new RemoteBindGroupLayout(this.channel, id, descriptor?.label);
  }

  createPipelineLayout(descriptor: GPUPipelineLayoutDescriptor): RemotePipelineLayout {
    const id = this.make('CreatePipelineLayout', 'createPipelineLayout', descriptor);
    return new RemotePipelineLayout(this.channel, id, descriptor?.label);
  }

  createBindGroup(descriptor: GPUBindGroupDescriptor): RemoteBindGroup {
    const id = this.make('CreateBindGroup', 'createBindGroup', descriptor);
    return new RemoteBindGroup(this.channel, id, descriptor?.label);
  }

  createQuerySet(descriptor: GPUQuerySetDescriptor): RemoteQuerySet {
    const count = enforceRange(descriptor?.count, U32_MAX, 'createQuerySet', "member 'count'");
    const id = this.make('CreateQuerySet', 'createQuerySet', { ...descriptor, count });
    return new RemoteQuerySet(this.channel, id, descriptor.type, count, descriptor.label);
  }

  createCommandEncoder(descriptor?: GPUCommandEncoderDescriptor): RemoteCommandEncoder {
    return new RemoteCommandEncoder(this, descriptor);
  }

}

// ---- queue --------------------------------------------------------------------------------------

export class RemoteQueue extends RemoteObject {
  submit(commandBuffers: Iterable<GPUCommandBuffer>): void {
    const ids: number[] = [];
    for (const cb of commandBuffers as Iterable<unknown>) {
      if (!(cb instanceof RemoteCommandBuffer) || cb.channel !== this.channel) throw notOfInterface('submit', 'array element');
      ids.push(cb.id);
    }
    this.channel.post('QueueSubmit', { queue: this.id, commandBuffers: ids });
  }

  writeBuffer(buffer: GPUBuffer, bufferOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    if (!(buffer instanceof RemoteBuffer) || buffer.channel !== this.channel) throw notOfInterface('writeBuffer', 'buffer');
    const offset = enforceRange(bufferOffset, U64_MAX, 'writeBuffer', 'bufferOffset');
    const bytes = dataBytes('writeBuffer', data, dataOffset, size);
    // The frame copies the bytes now: the program may reuse its array at once, as WebGPU allows.
    if (bytes.byteLength > WRITE_CHUNK_BYTES && buffer.writableAt(offset, bytes.byteLength)) {
      // Split only a write known valid: pieces of an invalid one would each raise the error.
      for (let at = 0; at < bytes.byteLength; at += WRITE_CHUNK_BYTES) {
        const piece = bytes.subarray(at, Math.min(bytes.byteLength, at + WRITE_CHUNK_BYTES));
        this.channel.post('QueueWriteBuffer', { queue: this.id, buffer: buffer.id, offset: offset + at, data: piece });
      }
      return;
    }
    this.channel.post('QueueWriteBuffer', { queue: this.id, buffer: buffer.id, offset, data: bytes });
  }

  async onSubmittedWorkDone(): Promise<undefined> {
    await this.channel.request('QueueOnSubmittedWorkDone', { queue: this.id });
    return undefined;
  }

}

// ---- buffer -------------------------------------------------------------------------------------

interface Mapping {
  writable: boolean;
  offset: number;
  /** The mapped range's bytes: from the daemon, or zeros at creation. */
  bytes: Uint8Array;
  /** Ranges handed out by getMappedRange, detached at unmap. */
  handed: { offset: number; range: ArrayBuffer }[];
}

export class RemoteBuffer extends RemoteObject {
  readonly size: number;
  readonly usage: number;
  #state: GPUBufferMapState = 'unmapped';
  #mapping: Mapping | null = null;
  /** The mapAsync the buffer waits on; a later unmap() or destroy() abandons it. */
  #waiting: object | null = null;
  #destroyed = false;

  constructor(channel: Channel, id: number, readonly device: RemoteDevice, size: number, usage: number, label: unknown, mappedAtCreation: boolean) {
    super(channel, id, label);
    this.size = size;
    this.usage = usage;
    if (mappedAtCreation) {
      this.#state = 'mapped';
      this.#mapping = { writable: true, offset: 0, bytes: new Uint8Array(size), handed: [] };
    }
  }

  get mapState(): GPUBufferMapState {
    return this.#state;
  }

  /** Whether a write of `size` bytes at `offset` is valid as far as this side knows. */
  writableAt(offset: number, size: number): boolean {
    return !this.#destroyed && this.#state === 'unmapped' && (this.usage & COPY_DST) !== 0 && offset % 4 === 0 && offset + size <= this.size;
  }

  async mapAsync(mode: GPUMapModeFlags, offset?: number, size?: number): Promise<undefined> {
    const modeValue = enforceRange(mode, U32_MAX, 'mapAsync', 'mode');
    const from = offset === undefined ? 0 : enforceRange(offset, U64_MAX, 'mapAsync', 'offset');
    const length = size === undefined ? Math.max(0, this.size - from) : enforceRange(size, U64_MAX, 'mapAsync', 'size');
    // A map while another is pending or mapped fails on the daemon (as in Dawn) and changes nothing here.
    const token = this.#state === 'unmapped' ? {} : null;
    if (token) {
      this.#state = 'pending';
      this.#waiting = token;
    }
    let reply;
    try {
      reply = await this.channel.request('BufferMapAsync', { buffer: this.id, mode: modeValue, offset: from, size: length });
    } catch (error) {
      if (token && this.#waiting === token) {
        this.#waiting = null;
        this.#state = 'unmapped';
      }
      throw error;
    }
    if (token && this.#waiting === token) {
      this.#waiting = null;
      this.#state = 'mapped';
      const data = reply.data ?? new Uint8Array(length);
      this.#mapping = { writable: (modeValue & MAP_WRITE) !== 0 && (modeValue & MAP_READ) === 0, offset: from, bytes: new Uint8Array(data), handed: [] };
    }
    return undefined;
  }

  getMappedRange(offset?: number, size?: number): ArrayBuffer {
    const mapping = this.#mapping;
    if (this.#state !== 'mapped' || !mapping) throw operationError('getMappedRange called on a buffer that is not mapped');
    const from = offset === undefined ? 0 : enforceRange(offset, U64_MAX, 'getMappedRange', 'offset');
    const length = size === undefined ? Math.max(0, this.size - from) : enforceRange(size, U64_MAX, 'getMappedRange', 'size');
    const end = from + length;
    if (from % 8 !== 0) throw operationError(`getMappedRange: offset (${from}) must be a multiple of 8`);
    if (length % 4 !== 0) throw operationError(`getMappedRange: size (${length}) must be a multiple of 4`);
    if (from < mapping.offset || end > mapping.offset + mapping.bytes.byteLength) {
      throw operationError(`getMappedRange: [${from}, ${end}) is outside the mapped range [${mapping.offset}, ${mapping.offset + mapping.bytes.byteLength})`);
    }
    for (const handed of mapping.handed) {
      if (from < handed.offset + handed.range.byteLength && handed.offset < end) {
        throw operationError(`getMappedRange: [${from}, ${end}) overlaps a range already handed out`);
      }
    }
    const range = mapping.bytes.slice(from - mapping.offset, end - mapping.offset).buffer;
    mapping.handed.push({ offset: from, range });
    return range;
  }

  unmap(): void {
    const mapping = this.#mapping;
    this.#mapping = null;
    this.#waiting = null;
    this.#state = 'unmapped';
    let offset = 0;
    let data: Uint8Array = new Uint8Array(0);
    if (mapping) {
      if (mapping.writable && mapping.handed.length > 0) {
        // Only the span the program could have written travels back.
        const lo = Math.min(...mapping.handed.map((h) => h.offset));
        const hi = Math.max(...mapping.handed.map((h) => h.offset + h.range.byteLength));
        for (const handed of mapping.handed) mapping.bytes.set(new Uint8Array(handed.range), handed.offset - mapping.offset);
        offset = lo;
        data = mapping.bytes.subarray(lo - mapping.offset, hi - mapping.offset);
      }
      detach(mapping);
    }
    this.channel.post('BufferUnmap', { buffer: this.id, offset, data });
  }

  destroy(): void {
    if (this.#mapping) detach(this.#mapping);
    this.#mapping = null;
    this.#waiting = null;
    this.#state = 'unmapped';
    this.#destroyed = true;
    this.channel.post('BufferDestroy', { buffer: this.id });
  }
}

/** Detaches the ArrayBuffers getMappedRange handed out, as unmap() does in WebGPU. */
function detach(mapping: Mapping): void {
  for (const handed of mapping.handed) {
    try {
      structuredClone(handed.range, { transfer: [handed.range] });
    } catch {
      // Already detached by the program: nothing to do.
    }
  }
  mapping.handed = [];
}

// ---- shader modules, pipelines, layouts, bind groups, query sets ---------------------------------

export class RemoteShaderModule extends RemoteObject {
  async getCompilationInfo(): Promise<GPUCompilationInfo> {
    const { result } = await this.channel.request('GetCompilationInfo', { module: this.id });
    const messages = ((result as { messages?: unknown[] })?.messages ?? []).map((m) => Object.freeze({ ...(m as object) }));
    return Object.freeze({ messages: Object.freeze(messages) }) as unknown as GPUCompilationInfo;
  }
}

export class RemoteComputePipeline extends RemoteObject {
  constructor(
    channel: Channel,
    id: number,
    private readonly device: RemoteDevice,
    label: unknown,
  ) {
    super(channel, id, label);
  }
  getBindGroupLayout(index: number): RemoteBindGroupLayout {
    const value = enforceRange(index, U32_MAX, 'getBindGroupLayout', 'index');
    const id = this.channel.ids.allocate();
    this.channel.post('GetBindGroupLayout', { pipeline: this.id, index: value, id });
    return new RemoteBindGroupLayout(this.channel, id, '');
  }
}

export class RemoteBindGroupLayout extends RemoteObject {}
export class RemotePipelineLayout extends RemoteObject {}
export class RemoteBindGroup extends RemoteObject {}
export class RemoteCommandBuffer extends RemoteObject {}

export class RemoteQuerySet extends RemoteObject {
  constructor(
    channel: Channel,
    id: number,
    readonly type: GPUQueryType,
    readonly count: number,
    label: unknown,
  ) {
    super(channel, id, label);
  }
  destroy(): void {
    this.channel.post('QuerySetDestroy', { querySet: this.id });
  }
}

// ---- command encoding ---------------------------------------------------------------------------

export class RemoteCommandEncoder {
  label: string;
  private readonly commands: Command[] = [];
  /** The objects the recording names: kept alive until finish() has sent it (no early Release). */
  private readonly refs = new Set<object>();
  private target: 'encoder' | number = 'encoder';
  private passes = 0;
  private finished = false;
  private readonly descriptor: unknown;

  constructor(
    private readonly device: RemoteDevice,
    descriptor: GPUCommandEncoderDescriptor | undefined,
  ) {
    this.label = descriptor?.label ?? '';
    this.descriptor = toWire(descriptor ?? {}, device.channel, 'createCommandEncoder');
  }

  /** A remote object argument of `type` as a reference (TypeError for anything else, as Dawn). */
  ref(value: unknown, type: abstract new (...args: never[]) => RemoteObject, method: string, what: string): { $ref: number } {
    if (!(value instanceof type) || value.channel !== this.device.channel) throw notOfInterface(method, what);
    this.refs.add(value);
    return { $ref: value.id };
  }

  /** Records one call on the encoder ('encoder') or on its pass number `on`. */
  record(on: 'encoder' | number, method: string, args: unknown[]): void {
    // Calls after finish() are dropped (Dawn would report them on the device; see docs/protocol-webgpu.md).
    if (this.finished) return;
    if (on !== this.target) this.commands.push(on === 'encoder' ? [SELECT_ENCODER] : [SELECT_PASS, on]);
    this.commands.push([method, ...args]);
    this.target = on;
    if (method === 'end' && on !== 'encoder') this.target = 'encoder';
  }

  beginComputePass(descriptor?: GPUComputePassDescriptor): RemoteComputePassEncoder {
    const wire = descriptor === undefined ? null : toWire(descriptor, this.device.channel, 'beginComputePass', this.refs);
    this.record('encoder', 'beginComputePass', wire === null ? [] : [wire]);
    const index = this.passes++;
    if (!this.finished) this.target = index;
    return new RemoteComputePassEncoder(this, index, descriptor?.label);
  }

  copyBufferToBuffer(source: GPUBuffer, a: unknown, b?: unknown, c?: unknown, d?: unknown): void {
    const m = 'copyBufferToBuffer';
    if (a instanceof RemoteObject || (typeof a === 'object' && a !== null)) {
      // (source, destination, size?)
      const args: unknown[] = [this.ref(source, RemoteBuffer, m, 'source'), this.ref(a, RemoteBuffer, m, 'destination')];
      if (b !== undefined) args.push(enforceRange(b, U64_MAX, m, 'size'));
      this.record('encoder', m, args);
      return;
    }
    const args: unknown[] = [
      this.ref(source, RemoteBuffer, m, 'source'),
      enforceRange(a, U64_MAX, m, 'sourceOffset'),
      this.ref(b, RemoteBuffer, m, 'destination'),
      enforceRange(c, U64_MAX, m, 'destinationOffset'),
    ];
    if (d !== undefined) args.push(enforceRange(d, U64_MAX, m, 'size'));
    this.record('encoder', m, args);
  }

  clearBuffer(buffer: GPUBuffer, offset?: number, size?: number): void {
    const m = 'clearBuffer';
    const args: unknown[] = [this.ref(buffer, RemoteBuffer, m, 'buffer')];
    if (offset !== undefined || size !== undefined) args.push(offset === undefined ? 0 : enforceRange(offset, U64_MAX, m, 'offset'));
    if (size !== undefined) args.push(enforceRange(size, U64_MAX, m, 'size'));
    this.record('encoder', m, args);
  }

  resolveQuerySet(querySet: GPUQuerySet, firstQuery: number, queryCount: number, destination: GPUBuffer, destinationOffset: number): void {
    const m = 'resolveQuerySet';
    this.record('encoder', m, [
      this.ref(querySet, RemoteQuerySet, m, 'querySet'),
      enforceRange(firstQuery, U32_MAX, m, 'firstQuery'),
      enforceRange(queryCount, U32_MAX, m, 'queryCount'),
      this.ref(destination, RemoteBuffer, m, 'destination'),
      enforceRange(destinationOffset, U64_MAX, m, 'destinationOffset'),
    ]);
  }

  writeTimestamp(querySet: GPUQuerySet, queryIndex: number): void {
    const m = 'writeTimestamp';
    this.record('encoder', m, [this.ref(querySet, RemoteQuerySet, m, 'querySet'), enforceRange(queryIndex, U32_MAX, m, 'queryIndex')]);
  }

  pushDebugGroup(groupLabel: string): void {
    this.record('encoder', 'pushDebugGroup', [String(groupLabel)]);
  }
  popDebugGroup(): void {
    this.record('encoder', 'popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.record('encoder', 'insertDebugMarker', [String(markerLabel)]);
  }

  finish(descriptor?: GPUCommandBufferDescriptor): RemoteCommandBuffer {
    const channel = this.device.channel;
    const finishDescriptor = toWire(descriptor ?? {}, channel, 'finish');
    // A second finish() must give an invalid command buffer and a validation error, as Dawn's
    // does: an unbalanced popDebugGroup makes the daemon's encoder fail the same way.
    const commands: Command[] = this.finished ? [['popDebugGroup']] : this.commands.splice(0);
    this.finished = true;
    const id = channel.ids.allocate();
    channel.post('FinishCommandEncoder', { device: this.device.id, id, descriptor: this.descriptor, commands, finishDescriptor });
    this.refs.clear();
    return new RemoteCommandBuffer(channel, id, descriptor?.label ?? this.label);
  }
}

export class RemoteComputePassEncoder {
  label: string;
  constructor(
    private readonly encoder: RemoteCommandEncoder,
    private readonly index: number,
    label: string | undefined,
  ) {
    this.label = label ?? '';
  }

  setPipeline(pipeline: GPUComputePipeline): void {
    this.encoder.record(this.index, 'setPipeline', [this.encoder.ref(pipeline, RemoteComputePipeline, 'setPipeline', 'pipeline')]);
  }

  setBindGroup(index: number, bindGroup: GPUBindGroup | null, offsets?: Iterable<number> | Uint32Array, start?: number, length?: number): void {
    const m = 'setBindGroup';
    const args: unknown[] = [enforceRange(index, U32_MAX, m, 'index'), bindGroup === null ? null : this.encoder.ref(bindGroup, RemoteBindGroup, m, 'bindGroup')];
    if (offsets !== undefined) {
      let list: number[];
      if (start !== undefined || length !== undefined) {
        if (!(offsets instanceof Uint32Array)) throw new TypeError(`no overload matched for ${m}:\nvalue is not a Uint32Array`);
        const from = enforceRange(start ?? 0, U64_MAX, m, 'dynamicOffsetsDataStart');
        const count = enforceRange(length ?? 0, U32_MAX, m, 'dynamicOffsetsDataLength');
        if (from + count > offsets.length) throw new RangeError('dynamicOffsetsDataLength + dynamicOffsetsDataStart is out of bound of dynamicOffsetData');
        list = Array.from(offsets.subarray(from, from + count));
      } else {
        list = Array.from(offsets as Iterable<number>, (v) => enforceRange(v, U32_MAX, m, 'dynamicOffsets'));
      }
      args.push(list);
    }
    this.encoder.record(this.index, m, args);
  }

  dispatchWorkgroups(x: number, y?: number, z?: number): void {
    const m = 'dispatchWorkgroups';
    const args = [enforceRange(x, U32_MAX, m, 'workgroupCountX')];
    if (y !== undefined || z !== undefined) args.push(y === undefined ? 1 : enforceRange(y, U32_MAX, m, 'workgroupCountY'));
    if (z !== undefined) args.push(enforceRange(z, U32_MAX, m, 'workgroupCountZ'));
    this.encoder.record(this.index, m, args);
  }

  dispatchWorkgroupsIndirect(indirectBuffer: GPUBuffer, indirectOffset: number): void {
    const m = 'dispatchWorkgroupsIndirect';
    this.encoder.record(this.index, m, [this.encoder.ref(indirectBuffer, RemoteBuffer, m, 'indirectBuffer'), enforceRange(indirectOffset, U64_MAX, m, 'indirectOffset')]);
  }

  setImmediates(rangeOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    const m = 'setImmediates';
    const bytes = dataBytes(m, data, dataOffset, size, false);
    this.encoder.record(this.index, m, [enforceRange(rangeOffset, U32_MAX, m, 'rangeOffset'), Array.from(bytes)]);
  }

  pushDebugGroup(groupLabel: string): void {
    this.encoder.record(this.index, 'pushDebugGroup', [String(groupLabel)]);
  }
  popDebugGroup(): void {
    this.encoder.record(this.index, 'popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.encoder.record(this.index, 'insertDebugMarker', [String(markerLabel)]);
  }
  end(): void {
    this.encoder.record(this.index, 'end', []);
  }
}

/** Routes one daemon event of a process session to its device. */
export function deliverEvent(channel: Channel, message: Message): void {
  const devices = deviceTableOf(channel);
  switch (message.name) {
    case 'UncapturedError': {
      const device = devices.get(message.payload.device);
      if (device) device.uncaptured(message.payload.type, message.payload.message);
      else process.stderr.write(`gpunix: pid ${channel.pid}: uncaptured WebGPU ${message.payload.type} error: ${message.payload.message}\n`);
      return;
    }
    case 'DeviceLost':
      devices.get(message.payload.device)?.lose(message.payload.reason as GPUDeviceLostReason, message.payload.message);
      return;
  }
}

/** The session ended: every device of it is lost. */
export function loseAll(channel: Channel, message: string): void {
  for (const device of deviceTableOf(channel).all()) device.lose('unknown', message);
}

export { GpunixError, ErrorCodes };

refuseUnsupported(RemoteDevice, 'GPUDevice');
refuseUnsupported(RemoteQueue, 'GPUQueue');
refuseUnsupported(RemoteCommandEncoder, 'GPUCommandEncoder');
