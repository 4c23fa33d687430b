// The remote WebGPU facade: a navigator.gpu whose objects live in a gpunixd process. Every object
// is made here at once with an id of our choosing (the create message is pipelined), so a program
// never waits for the daemon except where WebGPU itself returns a promise. What WebGPU checks
// synchronously (argument conversions, mapped ranges, writeBuffer ranges) is checked here so the
// program sees the same exceptions at the same call; everything else is the daemon's (Dawn's)
// verdict, through WebGPU's channels: error scopes, uncapturederror events, rejected promises.
// Command encoders record locally and travel whole at finish() (src/protocol/commands.ts).
// Arguments are converted by the same module as the embedded device's (src/webidl.ts), so both
// throw the same exceptions. An object of another session (another connect()) cannot travel; in
// its place goes a stand-in made on this device, an invalid object whose label describes the
// foreign one (src/foreignObject.ts): the daemon's Dawn refuses the call as it refuses another
// device's object, and the error reaches the scope current at the call worded as Dawn words it.
// Another device's object of the same session travels as it is: the daemon's device refuses it.

import { ErrorCodes, GpunixError, refuseUnsupported } from '../errors.js';
import type { Message } from '../protocol/messages.js';
import { Command, SELECT_ENCODER, SELECT_PASS } from '../protocol/commands.js';
import type { Channel } from './channel.js';
import { adapterInfo, copyAdapterInfo, deviceLostInfo, supportedFeatures, supportedLimits } from '../vgpu/supported.js';
import { EventHandlerAttribute } from '../vgpu/eventHandler.js';
import { RemoteGpunixExtension, RestoredListing } from './extension.js';
import {
  bindGroupDescriptor,
  bindGroupLayoutDescriptor,
  bufferDescriptor,
  computePassDescriptor,
  computePipelineDescriptor,
  copyBufferToBufferArgs,
  dataBytes,
  deviceDescriptor,
  ERROR_FILTERS,
  enumValue,
  InterfaceName,
  labelDescriptor,
  ObjectConverter,
  pipelineLayoutDescriptor,
  querySetDescriptor,
  requestAdapterOptions,
  sequence,
  setBindGroupArgs,
  shaderModuleDescriptor,
  size32,
  size64,
  unsignedLong,
  usvString,
  workgroupCounts,
} from '../webidl.js';
import { DAWN_KIND_NAMES, describeCommandBuffer, describeDevice, describeObject, foreignMarkerLabel } from '../foreignObject.js';
import { gpuError, notOfInterface, operationError, UncapturedErrorEvent } from './errors.js';
import { Allocation, BULK_MIN_BYTES, BulkRegion, bulkOf, expectTransfers, fencedBy, startBulk } from './bulkRegion.js';

/** Largest writeBuffer payload sent in one message; bigger valid writes go in pieces (frames stay far below the limit). */
export const WRITE_CHUNK_BYTES = 8 * 1024 * 1024;

const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;
const COPY_DST = 0x0008;


/** The base of every remote object the daemon holds: its id, its label (set travels), its session and device. */
export abstract class RemoteObject {
  #label: string;
  constructor(
    readonly channel: Channel,
    readonly id: number,
    label: string | undefined,
    /** The device that made it (null for adapters and queues), for Dawn's wording of a foreign use. */
    readonly owner: RemoteDevice | null = null,
  ) {
    this.#label = label ?? '';
    channel.track(this, id);
  }
  get label(): string {
    return this.#label;
  }
  /** WebGPU's `attribute USVString label`, converted as WebIDL says. */
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
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
  constructor(private readonly channel: Channel) {
    // Same-host sessions move buffer bytes through shared memory (src/client/bulkRegion.ts); the
    // request goes out now, behind the program's first calls, and nothing waits for it.
    startBulk(channel);
  }

  async requestAdapter(options?: GPURequestAdapterOptions): Promise<RemoteAdapter | null> {
    const channel = this.channel;
    const converted = requestAdapterOptions(options);
    const id = channel.ids.allocate();
    let reply;
    try {
      reply = await channel.request('RequestAdapter', { adapter: id, options: toWire(converted, channel, 'requestAdapter') });
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
  /** The adapter's default feature level (absent from older daemons: 'core'). */
  featureLevel?: 'core' | 'compatibility';
}

export class RemoteAdapter extends RemoteObject {
  readonly features: ReadonlySet<string>;
  readonly limits: Readonly<Record<string, number>>;
  readonly info: GPUAdapterInfo;
  readonly #featureLevel: 'core' | 'compatibility';

  constructor(channel: Channel, id: number, result: AdapterResult) {
    super(channel, id, '');
    this.#featureLevel = result.featureLevel ?? 'core';
    this.features = supportedFeatures(result.features);
    this.limits = supportedLimits(result.limits);
    this.info = adapterInfo(result.info);
  }

  get isFallbackAdapter(): boolean {
    return Boolean((this.info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter);
  }

  /** The adapter's default feature level on the daemon: 'core', or 'compatibility' (a GL/GLES device, or a compatibility request). */
  get featureLevel(): 'core' | 'compatibility' {
    return this.#featureLevel;
  }

  async requestDevice(input?: GPUDeviceDescriptor): Promise<RemoteDevice> {
    const channel = this.channel;
    const descriptor = deviceDescriptor(input, this.features);
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
    const made = new RemoteDevice(channel, device, queue, result, copyAdapterInfo(this.info), descriptor);
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
  #uncapturedHandler = new EventHandlerAttribute(this, 'uncapturederror');
  /** An event handler attribute: runs among the listeners, where first set (src/vgpu/eventHandler.ts). */
  get onuncapturederror(): ((event: Event) => void) | null {
    return this.#uncapturedHandler.value as ((event: Event) => void) | null;
  }
  set onuncapturederror(value: ((event: Event) => void) | null) {
    this.#uncapturedHandler.value = value;
  }
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
    this.features = supportedFeatures(result.features);
    this.limits = supportedLimits(result.limits);
    this.adapterInfo = adapterInfo;
    this.lost = new Promise((resolve) => (this.#resolveLost = resolve));
    this.queue = new RemoteQueue(channel, queueId, descriptor?.defaultQueue?.label, this);
    this.gpunix = new RemoteGpunixExtension(channel, this, (id, size, usage, label) => new RemoteBuffer(channel, id, this, size, usage, label, false));
    deviceTableOf(channel).add(this);
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
    this.channel.post('SetLabel', { object: this.id, label: this.#label });
  }

  /** Takes object arguments: interface check, and a stand-in for another session's object. */
  readonly objects: ObjectConverter = new RemoteObjects(this);

  /**
   * An invalid object of this device standing for `foreign` (of interface `name`, from another
   * session), labelled with its description: made under an error scope of its own, so making it
   * reports nothing; using it is the validation error Dawn gives for another device's object.
   */
  standIn(name: InterfaceName, foreign: RemoteObject): RemoteObject {
    const description =
      foreign instanceof RemoteCommandBuffer ? describeCommandBuffer(foreign.ownLabel, foreign.encoderLabel) : describeObject(DAWN_KIND_NAMES[name], foreign.label);
    const label = foreignMarkerLabel(description, describeDevice(foreign.owner?.label ?? ''));
    const channel = this.channel;
    channel.post('PushErrorScope', { device: this.id, filter: 'validation' });
    const invalidLayout = (): RemoteBindGroupLayout => {
      const entry = { binding: 0, visibility: 4, buffer: {} };
      return new RemoteBindGroupLayout(channel, this.make('CreateBindGroupLayout', 'createBindGroupLayout', { label, entries: [entry, entry] }), label, this);
    };
    let made: RemoteObject;
    switch (name) {
      case 'GPUBuffer': {
        // Invalid (MAP_READ combines with COPY_DST only), yet with COPY_SRC in its usage: a copy
        // from it must fail on its invalidity, as one from the foreign buffer would.
        const descriptor = { label, size: 4, usage: MAP_READ | COPY_SRC | STORAGE, mappedAtCreation: false };
        made = new RemoteBuffer(channel, this.make('CreateBuffer', 'createBuffer', descriptor), this, 4, descriptor.usage, label, false);
        break;
      }
      case 'GPUQuerySet':
        made = new RemoteQuerySet(channel, this.make('CreateQuerySet', 'createQuerySet', { label, type: 'occlusion', count: 4097 }), 'occlusion', 4097, label, this);
        break;
      case 'GPUShaderModule':
        made = new RemoteShaderModule(channel, this.make('CreateShaderModule', 'createShaderModule', { label, code: `// ${label}\n!` }), label, this);
        break;
      case 'GPUBindGroupLayout':
        made = invalidLayout();
        break;
      case 'GPUPipelineLayout': {
        const layout = invalidLayout();
        made = new RemotePipelineLayout(channel, this.make('CreatePipelineLayout', 'createPipelineLayout', { label, bindGroupLayouts: [layout] }), label, this);
        break;
      }
      case 'GPUBindGroup': {
        const layout = invalidLayout();
        made = new RemoteBindGroup(channel, this.make('CreateBindGroup', 'createBindGroup', { label, layout, entries: [] }), label, this);
        break;
      }
      case 'GPUComputePipeline': {
        const module = new RemoteShaderModule(channel, this.make('CreateShaderModule', 'createShaderModule', { label, code: `// ${label}\n!` }), label, this);
        made = new RemoteComputePipeline(channel, this.make('CreateComputePipeline', 'createComputePipeline', { label, layout: 'auto', compute: { module } }), this, label);
        break;
      }
      case 'GPUCommandBuffer': {
        const id = channel.ids.allocate();
        channel.post('FinishCommandEncoder', { device: this.id, id, descriptor: { label }, commands: [['popDebugGroup']], finishDescriptor: { label } });
        made = new RemoteCommandBuffer(channel, id, label, this, label, true);
        break;
      }
    }
    channel.request('PopErrorScope', { device: this.id }).catch(() => {});
    return made;
  }

  /** The gpunix extension (docs/vgpu.md): restored objects by label, shared segments. */
  readonly gpunix: RemoteGpunixExtension;

  /** Names a restored image's objects with client ids (BindRestored) and makes them findable. */
  bindRestored(listing: RestoredListing): void {
    const ids = this.channel.ids;
    const buffers = listing.buffers.map((b) => new RemoteBuffer(this.channel, ids.allocate(), this, b.size, b.usage, b.label, false));
    const pipelines = listing.pipelines.map((p) => new RemoteComputePipeline(this.channel, ids.allocate(), this, p.label));
    const shaderModules = listing.shaderModules.map((m) => new RemoteShaderModule(this.channel, ids.allocate(), m.label, this));
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
    this.#resolveLost(deviceLostInfo(reason, message));
  }

  /** An error no scope captured, for the uncapturederror event; printed when nobody listens (as Dawn does). */
  uncaptured(type: string, message: string): void {
    const error = gpuError(type, message);
    const event = new UncapturedErrorEvent('uncapturederror', { error, cancelable: true } as { error: GPUError });
    const handled = this.#listeners > 0 || this.onuncapturederror !== null;
    // The attribute's handler is one of the listeners: one dispatch runs all, in registration order.
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
    const value = enumValue<GPUErrorFilter>(filter, ERROR_FILTERS, 'GPUErrorFilter', 'pushErrorScope', 'filter');
    this.channel.post('PushErrorScope', { device: this.id, filter: value });
  }

  async popErrorScope(): Promise<GPUError | null> {
    const { result } = await fencedBy(this.channel, this.channel.request('PopErrorScope', { device: this.id }));
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

  createBuffer(input: GPUBufferDescriptor): RemoteBuffer {
    const descriptor = bufferDescriptor(input);
    const { size, usage, mappedAtCreation } = descriptor;
    if (mappedAtCreation && size % 4 !== 0) throw new RangeError('createBuffer failed, size is not a multiple of 4 when mappedAtCreation is true.');
    const id = this.make('CreateBuffer', 'createBuffer', descriptor);
    // A mappable buffer's ranges cross the wire whole: the shared-memory region makes room ahead of
    // time. (Not for every writeBuffer target: a large storage buffer written in small pieces
    // would hold a large region, which the ring then fills, for nothing.)
    if (mappedAtCreation || (usage & (MAP_READ | MAP_WRITE)) !== 0) expectTransfers(this.channel, size);
    return new RemoteBuffer(this.channel, id, this, size, usage, descriptor.label, mappedAtCreation ?? false);
  }

  createShaderModule(input: GPUShaderModuleDescriptor): RemoteShaderModule {
    const descriptor = shaderModuleDescriptor(input, this.objects);
    const id = this.make('CreateShaderModule', 'createShaderModule', descriptor);
    return new RemoteShaderModule(this.channel, id, descriptor.label, this);
  }

  createComputePipeline(input: GPUComputePipelineDescriptor): RemoteComputePipeline {
    const descriptor = computePipelineDescriptor(input, this.objects);
    const id = this.make('CreateComputePipeline', 'createComputePipeline', descriptor);
    return new RemoteComputePipeline(this.channel, id, this, descriptor.label);
  }

  async createComputePipelineAsync(input: GPUComputePipelineDescriptor): Promise<RemoteComputePipeline> {
    const descriptor = computePipelineDescriptor(input, this.objects, 'createComputePipelineAsync');
    const wire = toWire(descriptor, this.channel, 'createComputePipelineAsync');
    const id = this.channel.ids.allocate();
    try {
      await this.channel.request('CreateComputePipelineAsync', { device: this.id, id, descriptor: wire });
    } catch (error) {
      // The daemon forgot the id of a failed creation: no Release is owed.
      this.channel.ids.recycle(id);
      throw error;
    }
    return new RemoteComputePipeline(this.channel, id, this, descriptor.label);
  }

  createBindGroupLayout(input: GPUBindGroupLayoutDescriptor): RemoteBindGroupLayout {
    const descriptor = bindGroupLayoutDescriptor(input);
    const id = this.make('CreateBindGroupLayout', 'createBindGroupLayout', descriptor);
    return new RemoteBindGroupLayout(this.channel, id, descriptor.label, this);
  }

  createPipelineLayout(input: GPUPipelineLayoutDescriptor): RemotePipelineLayout {
    const descriptor = pipelineLayoutDescriptor(input, this.objects);
    const id = this.make('CreatePipelineLayout', 'createPipelineLayout', descriptor);
    return new RemotePipelineLayout(this.channel, id, descriptor.label, this);
  }

  createBindGroup(input: GPUBindGroupDescriptor): RemoteBindGroup {
    const descriptor = bindGroupDescriptor(input, this.objects);
    const id = this.make('CreateBindGroup', 'createBindGroup', descriptor);
    return new RemoteBindGroup(this.channel, id, descriptor.label, this);
  }

  createQuerySet(input: GPUQuerySetDescriptor): RemoteQuerySet {
    const descriptor = querySetDescriptor(input);
    // WebGPU's content-timeline check, made here so the program gets the TypeError at the call (as locally).
    if (descriptor.type === 'timestamp' && !this.features.has('timestamp-query')) {
      throw new TypeError("Failed to execute 'createQuerySet' on 'GPUDevice': query type 'timestamp' requires the 'timestamp-query' feature, which is not enabled on this device.");
    }
    const id = this.make('CreateQuerySet', 'createQuerySet', descriptor);
    return new RemoteQuerySet(this.channel, id, descriptor.type, descriptor.count, descriptor.label, this);
  }

  createCommandEncoder(input?: GPUCommandEncoderDescriptor): RemoteCommandEncoder {
    return new RemoteCommandEncoder(this, labelDescriptor(input, 'createCommandEncoder'));
  }
}

const STORAGE = 0x0080;
const COPY_SRC = 0x0004;


/** The remote class of each interface (a function: the classes are declared further down). */
function remoteClass(name: InterfaceName): abstract new (...args: never[]) => RemoteObject {
  switch (name) {
    case 'GPUBuffer':
      return RemoteBuffer;
    case 'GPUShaderModule':
      return RemoteShaderModule;
    case 'GPUComputePipeline':
      return RemoteComputePipeline;
    case 'GPUBindGroupLayout':
      return RemoteBindGroupLayout;
    case 'GPUPipelineLayout':
      return RemotePipelineLayout;
    case 'GPUBindGroup':
      return RemoteBindGroup;
    case 'GPUQuerySet':
      return RemoteQuerySet;
    case 'GPUCommandBuffer':
      return RemoteCommandBuffer;
  }
}

/** A remote device's way to take object arguments (webidl.ts converts everything else). */
class RemoteObjects implements ObjectConverter {
  constructor(private readonly device: RemoteDevice) {}

  implements(name: InterfaceName, value: unknown): boolean {
    return value instanceof remoteClass(name);
  }

  /** `value` if it is a `name` of this session (the daemon checks its device); a stand-in if of another session. */
  object(name: InterfaceName, value: unknown, method: string, what: string): unknown {
    if (!(value instanceof remoteClass(name))) throw notOfInterface(method, what);
    if (value.channel === this.device.channel) return value;
    return this.device.standIn(name, value);
  }
}

// ---- queue --------------------------------------------------------------------------------------

export class RemoteQueue extends RemoteObject {
  submit(commandBuffers: Iterable<GPUCommandBuffer>): void {
    const objects = this.owner!.objects;
    const given = sequence(commandBuffers, 'submit', 'commandBuffers', (cb) => cb);
    const ids: number[] = [];
    for (const cb of given) {
      const own = objects.object('GPUCommandBuffer', cb, 'submit', 'commandBuffers') as RemoteCommandBuffer;
      ids.push(own.id);
      if (own !== cb) {
        // Dawn uses up every command buffer of a refused submit, another device's included.
        (cb as RemoteCommandBuffer).usedUp = true;
      } else if (own.usedUp) {
        // Used up by another session's refused submit: named twice, the daemon refuses it as
        // submitted before, with nothing run (it never was submitted here).
        ids.push(own.id);
      }
    }
    this.channel.post('QueueSubmit', { queue: this.id, commandBuffers: ids });
  }

  writeBuffer(target: GPUBuffer, bufferOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    const buffer = this.owner!.objects.object('GPUBuffer', target, 'writeBuffer', 'buffer') as RemoteBuffer;
    const offset = size64(bufferOffset, 'writeBuffer', 'bufferOffset');
    const bytes = dataBytes('writeBuffer', data, dataOffset, size);
    // Through the session's shared-memory region: one copy into it here, one out of it in the
    // daemon; the message carries where. The program may reuse its array at once, as WebGPU allows.
    const region = bytes.byteLength >= BULK_MIN_BYTES ? bulkOf(this.channel) : null;
    const allocation = region?.put(bytes);
    if (region && allocation) {
      this.channel.post('QueueWriteBufferShared', { queue: this.id, buffer: buffer.id, offset, at: allocation.at, size: bytes.byteLength });
      region.sent(allocation);
      return;
    }
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
    await fencedBy(this.channel, this.channel.request('QueueOnSubmittedWorkDone', { queue: this.id }));
    return undefined;
  }

}

// ---- buffer -------------------------------------------------------------------------------------

interface Mapping {
  writable: boolean;
  offset: number;
  size: number;
  /** The mapped range's bytes: from the daemon (in a frame), or zeros at creation; null when in the region. */
  bytes: Uint8Array | null;
  /** Where the daemon put the range's bytes in the session's shared-memory region (freed at unmap). */
  shared: { region: BulkRegion; allocation: Allocation } | null;
  /** Ranges handed out by getMappedRange, detached at unmap. */
  handed: { offset: number; range: ArrayBuffer }[];
  /** `bytes` is a spare range's memory (copied out of the reply frame): given back at unmap. */
  spareBytes?: boolean;
}

export class RemoteBuffer extends RemoteObject {
  readonly size: number;
  readonly usage: number;
  #state: GPUBufferMapState = 'unmapped';
  #mapping: Mapping | null = null;
  /** The mapAsync the buffer waits on; a later unmap() or destroy() abandons it. */
  #waiting: object | null = null;
  #destroyed = false;

  constructor(channel: Channel, id: number, readonly device: RemoteDevice, size: number, usage: number, label: string | undefined, mappedAtCreation: boolean) {
    super(channel, id, label, device);
    this.size = size;
    this.usage = usage;
    if (mappedAtCreation) {
      this.#state = 'mapped';
      this.#mapping = { writable: true, offset: 0, size, bytes: new Uint8Array(size), shared: null, handed: [] };
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
    const modeValue = size32(mode, 'mapAsync', 'mode');
    const from = offset === undefined ? 0 : size64(offset, 'mapAsync', 'offset');
    const length = size === undefined ? Math.max(0, this.size - from) : size64(size, 'mapAsync', 'size');
    // A map while another is pending or mapped fails on the daemon (as in Dawn) and changes nothing here.
    const token = this.#state === 'unmapped' ? {} : null;
    if (token) {
      this.#state = 'pending';
      this.#waiting = token;
    }
    // A large range comes through the shared-memory region, into space kept for it until unmap.
    const region = token && length >= BULK_MIN_BYTES ? bulkOf(this.channel) : null;
    const allocation = region?.allocate(length) ?? null;
    // A large range over frames comes in pieces (MappedData), gathered here as they arrive.
    const streamed = !allocation && token && length > WRITE_CHUNK_BYTES && this.channel.session.welcome.version >= 3 ? new Uint8Array(mappedRangeBuffer(length)) : null;
    if (streamed) streamsOf(this.channel).set(this.id, { offset: from, bytes: streamed });
    let reply;
    try {
      // The reply also proves the daemon has read the bulk writes sent before (bulkRegion.ts).
      reply = await fencedBy(
        this.channel,
        allocation
          ? this.channel.request('BufferMapAsyncShared', { buffer: this.id, mode: modeValue, offset: from, size: length, at: allocation.at })
          : streamed
            ? this.channel.request('BufferMapAsyncStreamed', { buffer: this.id, mode: modeValue, offset: from, size: length })
            : this.channel.request('BufferMapAsync', { buffer: this.id, mode: modeValue, offset: from, size: length }, token ? copyToSpare : undefined),
      );
    } catch (error) {
      if (allocation) region!.free(allocation);
      if (streamed && streamsOf(this.channel).get(this.id)?.bytes === streamed) streamsOf(this.channel).delete(this.id);
      if (token && this.#waiting === token) {
        this.#waiting = null;
        this.#state = 'unmapped';
      }
      throw error;
    }
    if (token && this.#waiting === token) {
      this.#waiting = null;
      this.#state = 'mapped';
      const writable = (modeValue & MAP_WRITE) !== 0 && (modeValue & MAP_READ) === 0;
      // The reply's bytes are this mapping's alone (copied out of the frame into spare memory as it
      // came, copyToSpare; streamed pieces likewise), copied once more, by getMappedRange.
      const bytes = allocation ? null : (streamed ?? reply.data ?? new Uint8Array(length));
      this.#mapping = { writable, offset: from, size: length, bytes, shared: allocation ? { region: region!, allocation } : null, handed: [], spareBytes: !allocation && (streamed !== null || reply.data !== undefined) };
    } else if (allocation) {
      // Abandoned (unmap() or destroy() came first): the daemon has written its bytes; the space is free.
      region!.free(allocation);
    }
    if (streamed && streamsOf(this.channel).get(this.id)?.bytes === streamed) streamsOf(this.channel).delete(this.id);
    return undefined;
  }

  getMappedRange(offset?: number, size?: number): ArrayBuffer {
    const from = offset === undefined ? 0 : size64(offset, 'getMappedRange', 'offset');
    const length = size === undefined ? Math.max(0, this.size - from) : size64(size, 'getMappedRange', 'size');
    const mapping = this.#mapping;
    if (this.#state !== 'mapped' || !mapping) throw operationError('getMappedRange called on a buffer that is not mapped');
    const end = from + length;
    if (from % 8 !== 0) throw operationError(`getMappedRange: offset (${from}) must be a multiple of 8`);
    if (length % 4 !== 0) throw operationError(`getMappedRange: size (${length}) must be a multiple of 4`);
    if (from < mapping.offset || end > mapping.offset + mapping.size) {
      throw operationError(`getMappedRange: [${from}, ${end}) is outside the mapped range [${mapping.offset}, ${mapping.offset + mapping.size})`);
    }
    for (const handed of mapping.handed) {
      if (from < handed.offset + handed.range.byteLength && handed.offset < end) {
        throw operationError(`getMappedRange: [${from}, ${end}) overlaps a range already handed out`);
      }
    }
    // (A closed region, the session over, gives zeros: never a reused buffer's old bytes.)
    const range = mapping.shared?.region.closed ? new ArrayBuffer(length) : mappedRangeBuffer(length);
    if (mapping.shared) {
      // The one copy of a shared-memory read: from the region straight into the program's ArrayBuffer.
      mapping.shared.region.read(mapping.shared.allocation.at + from - mapping.offset, new Uint8Array(range));
    } else {
      new Uint8Array(range).set(mapping.bytes!.subarray(from - mapping.offset, end - mapping.offset));
    }
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
      const shared = mapping.shared;
      if (mapping.writable && mapping.handed.length > 0) {
        // Only the span the program could have written travels back.
        const lo = Math.min(...mapping.handed.map((h) => h.offset));
        const hi = Math.max(...mapping.handed.map((h) => h.offset + h.range.byteLength));
        if (shared && shared.region.isOpen) {
          // Back into the region where the range came from; the daemon reads it into the mapped memory.
          for (const handed of mapping.handed) shared.region.write(shared.allocation.at + handed.offset - mapping.offset, new Uint8Array(handed.range));
          detach(mapping);
          this.channel.post('BufferUnmapShared', { buffer: this.id, offset: lo, at: shared.allocation.at + lo - mapping.offset, size: hi - lo });
          shared.region.sent(shared.allocation);
          return;
        }
        if (mapping.bytes) {
          for (const handed of mapping.handed) mapping.bytes.set(new Uint8Array(handed.range), handed.offset - mapping.offset);
          offset = lo;
          data = mapping.bytes.subarray(lo - mapping.offset, hi - mapping.offset);
        }
      }
      detach(mapping);
      if (shared) shared.region.free(shared.allocation);
      // A large range written at creation goes through the region too.
      const region = data.byteLength >= BULK_MIN_BYTES ? bulkOf(this.channel) : null;
      const allocation = region?.put(data);
      if (region && allocation) {
        this.channel.post('BufferUnmapShared', { buffer: this.id, offset, at: allocation.at, size: data.byteLength });
        region.sent(allocation);
        return;
      }
      if (data.byteLength > WRITE_CHUNK_BYTES && this.channel.session.welcome.version >= 3) {
        // Over frames, in pieces ahead of the unmap: a range of any size stays within the frame limit.
        for (let at = 0; at < data.byteLength; at += WRITE_CHUNK_BYTES) {
          this.channel.post('BufferWriteMapped', { buffer: this.id, offset: offset + at, data: data.subarray(at, Math.min(data.byteLength, at + WRITE_CHUNK_BYTES)) });
        }
        data = new Uint8Array(0);
        offset = 0;
      }
    }
    this.channel.post('BufferUnmap', { buffer: this.id, offset, data });
  }

  destroy(): void {
    if (this.#mapping) {
      detach(this.#mapping);
      this.#mapping.shared?.region.free(this.#mapping.shared.allocation);
    }
    this.#mapping = null;
    this.#waiting = null;
    this.#state = 'unmapped';
    this.#destroyed = true;
    this.channel.post('BufferDestroy', { buffer: this.id });
  }
}

/**
 * Large ArrayBuffers taken back from unmapped ranges, for the next getMappedRange of the same size:
 * a fresh one costs a page fault per 4 KiB on first touch (and garbage to collect), which at MiBs
 * a round is most of a mapped read's time. Bounded in count and bytes.
 */
const spareRanges: ArrayBuffer[] = [];
const SPARE_RANGES = 4;
const SPARE_RANGE_BYTES = 64 * 1024 * 1024;

/** An ArrayBuffer of `length` bytes for a mapped range (its contents are written before it is handed out). */
function mappedRangeBuffer(length: number): ArrayBuffer {
  const i = length >= BULK_MIN_BYTES ? spareRanges.findIndex((b) => b.byteLength === length) : -1;
  return i >= 0 ? spareRanges.splice(i, 1)[0] : new ArrayBuffer(length);
}

/**
 * A mapped range's bytes as a reply frame brings them (over TCP/TLS), copied at once into a spare
 * range's memory (given back at unmap): the frame's buffer is then reused (ReplySink in session.ts).
 */
function copyToSpare(data: Uint8Array): Uint8Array {
  const copy = new Uint8Array(mappedRangeBuffer(data.byteLength));
  copy.set(data);
  return copy;
}

/** Keeps `buffer` (ours alone) for a later mapped range, if it is large and not too large. */
function keepSpare(buffer: ArrayBuffer): void {
  if (buffer.byteLength >= BULK_MIN_BYTES && buffer.byteLength <= SPARE_RANGE_BYTES) {
    spareRanges.push(buffer);
    if (spareRanges.length > SPARE_RANGES) spareRanges.shift();
  }
}

/**
 * Detaches the ArrayBuffers getMappedRange handed out, as unmap() does in WebGPU (keeping large
 * ones' memory for reuse), and gives back the spare memory the mapping's bytes were kept in
 * (callers use what they read from those bytes before anything takes a spare again).
 */
function detach(mapping: Mapping): void {
  for (const handed of mapping.handed) {
    try {
      // Transferring detaches the program's ArrayBuffer and gives its memory to a new one, ours alone.
      keepSpare(structuredClone(handed.range, { transfer: [handed.range] }));
    } catch {
      // Already detached by the program: nothing to do.
    }
  }
  mapping.handed = [];
  if (mapping.spareBytes && mapping.bytes) keepSpare(mapping.bytes.buffer as ArrayBuffer);
  mapping.spareBytes = false;
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
    label: string | undefined,
  ) {
    super(channel, id, label, device);
  }
  getBindGroupLayout(index: number): RemoteBindGroupLayout {
    // `unsigned long` without [EnforceRange] in the IDL: converted modulo 2^32.
    const value = unsignedLong(index, 'getBindGroupLayout', 'index');
    const id = this.channel.ids.allocate();
    this.channel.post('GetBindGroupLayout', { pipeline: this.id, index: value, id });
    return new RemoteBindGroupLayout(this.channel, id, '', this.device);
  }
}

export class RemoteBindGroupLayout extends RemoteObject {}
export class RemotePipelineLayout extends RemoteObject {}
export class RemoteBindGroup extends RemoteObject {}

export class RemoteCommandBuffer extends RemoteObject {
  constructor(
    channel: Channel,
    id: number,
    label: string | undefined,
    owner: RemoteDevice,
    /** Its encoder's label, and whether finish() gave a label of its own (Dawn names both). */
    readonly encoderLabel: string,
    private readonly finishLabelled: boolean,
  ) {
    super(channel, id, label, owner);
  }
  /** Set when another session's submit named it and was refused (Dawn then counts it submitted). */
  usedUp = false;
  /** The label Dawn gives the command buffer itself: finish()'s, or none. */
  get ownLabel(): string {
    return this.finishLabelled || this.label !== this.encoderLabel ? this.label : '';
  }
}

export class RemoteQuerySet extends RemoteObject {
  constructor(
    channel: Channel,
    id: number,
    readonly type: GPUQueryType,
    readonly count: number,
    label: string | undefined,
    owner: RemoteDevice,
  ) {
    super(channel, id, label, owner);
  }
  destroy(): void {
    this.channel.post('QuerySetDestroy', { querySet: this.id });
  }
}

// ---- command encoding ---------------------------------------------------------------------------

export class RemoteCommandEncoder {
  #label: string;
  private readonly commands: Command[] = [];
  /** The objects the recording names: kept alive until finish() has sent it (no early Release). */
  private readonly refs = new Set<object>();
  private target: 'encoder' | number = 'encoder';
  private passes = 0;
  private finished = false;
  private readonly descriptor: unknown;
  /** The device's object arguments check (another session's object becomes a stand-in). */
  readonly objects: ObjectConverter;

  constructor(
    private readonly device: RemoteDevice,
    descriptor: { label: string } | undefined,
  ) {
    this.#label = descriptor?.label ?? '';
    this.descriptor = descriptor ?? {};
    this.objects = device.objects;
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  /** An object argument of interface `name` as a reference (TypeError for anything else, as Dawn). */
  ref(value: unknown, name: InterfaceName, method: string, what: string): { $ref: number } {
    const object = this.objects.object(name, value, method, what) as RemoteObject;
    this.refs.add(object);
    return { $ref: object.id };
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
    const converted = computePassDescriptor(descriptor, this.objects);
    const wire = converted === undefined ? null : toWire(converted, this.device.channel, 'beginComputePass', this.refs);
    this.record('encoder', 'beginComputePass', wire === null ? [] : [wire]);
    const index = this.passes++;
    if (!this.finished) this.target = index;
    return new RemoteComputePassEncoder(this, index, converted?.label);
  }

  copyBufferToBuffer(...args: unknown[]): void {
    const converted = copyBufferToBufferArgs(args, this.objects);
    this.record('encoder', 'copyBufferToBuffer', converted.map((arg) => (arg instanceof RemoteObject ? this.reference(arg) : arg)));
  }

  /** A reference to an already converted object of this session. */
  private reference(object: RemoteObject): { $ref: number } {
    this.refs.add(object);
    return { $ref: object.id };
  }

  clearBuffer(buffer: GPUBuffer, offset?: number, size?: number): void {
    const m = 'clearBuffer';
    const args: unknown[] = [this.ref(buffer, 'GPUBuffer', m, 'buffer'), offset === undefined ? 0 : size64(offset, m, 'offset')];
    if (size !== undefined) args.push(size64(size, m, 'size'));
    this.record('encoder', m, args);
  }

  resolveQuerySet(querySet: GPUQuerySet, firstQuery: number, queryCount: number, destination: GPUBuffer, destinationOffset: number): void {
    const m = 'resolveQuerySet';
    this.record('encoder', m, [
      this.ref(querySet, 'GPUQuerySet', m, 'querySet'),
      size32(firstQuery, m, 'firstQuery'),
      size32(queryCount, m, 'queryCount'),
      this.ref(destination, 'GPUBuffer', m, 'destination'),
      size64(destinationOffset, m, 'destinationOffset'),
    ]);
  }

  writeTimestamp(querySet: GPUQuerySet, queryIndex: number): void {
    const m = 'writeTimestamp';
    this.record('encoder', m, [this.ref(querySet, 'GPUQuerySet', m, 'querySet'), size32(queryIndex, m, 'queryIndex')]);
  }

  pushDebugGroup(groupLabel: string): void {
    this.record('encoder', 'pushDebugGroup', [usvString(groupLabel, 'pushDebugGroup', 'groupLabel')]);
  }
  popDebugGroup(): void {
    this.record('encoder', 'popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.record('encoder', 'insertDebugMarker', [usvString(markerLabel, 'insertDebugMarker', 'markerLabel')]);
  }

  finish(descriptor?: GPUCommandBufferDescriptor): RemoteCommandBuffer {
    const channel = this.device.channel;
    const converted = labelDescriptor(descriptor, 'finish');
    // A second finish() must give an invalid command buffer and a validation error, as Dawn's
    // does: an unbalanced popDebugGroup makes the daemon's encoder fail the same way.
    const commands: Command[] = this.finished ? [['popDebugGroup']] : this.commands.splice(0);
    this.finished = true;
    const id = channel.ids.allocate();
    channel.post('FinishCommandEncoder', { device: this.device.id, id, descriptor: this.descriptor, commands, finishDescriptor: converted ?? {} });
    this.refs.clear();
    return new RemoteCommandBuffer(channel, id, converted?.label || this.label, this.device, this.label, Boolean(converted?.label));
  }
}

export class RemoteComputePassEncoder {
  #label: string;
  constructor(
    private readonly encoder: RemoteCommandEncoder,
    private readonly index: number,
    label: string | undefined,
  ) {
    this.#label = label ?? '';
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  setPipeline(pipeline: GPUComputePipeline): void {
    this.encoder.record(this.index, 'setPipeline', [this.encoder.ref(pipeline, 'GPUComputePipeline', 'setPipeline', 'pipeline')]);
  }

  setBindGroup(...args: unknown[]): void {
    const converted = setBindGroupArgs(args, this.encoder.objects);
    const group = converted[1] as RemoteObject | null;
    if (group !== null) converted[1] = this.encoder.ref(group, 'GPUBindGroup', 'setBindGroup', 'bindGroup');
    this.encoder.record(this.index, 'setBindGroup', converted);
  }

  dispatchWorkgroups(x: number, y?: number, z?: number): void {
    this.encoder.record(this.index, 'dispatchWorkgroups', workgroupCounts(x, y, z));
  }

  dispatchWorkgroupsIndirect(indirectBuffer: GPUBuffer, indirectOffset: number): void {
    const m = 'dispatchWorkgroupsIndirect';
    this.encoder.record(this.index, m, [this.encoder.ref(indirectBuffer, 'GPUBuffer', m, 'indirectBuffer'), size64(indirectOffset, m, 'indirectOffset')]);
  }

  setImmediates(rangeOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    const m = 'setImmediates';
    const offset = size32(rangeOffset, m, 'rangeOffset');
    const bytes = dataBytes(m, data, dataOffset, size, false);
    this.encoder.record(this.index, m, [offset, Array.from(bytes)]);
  }

  pushDebugGroup(groupLabel: string): void {
    this.encoder.record(this.index, 'pushDebugGroup', [usvString(groupLabel, 'pushDebugGroup', 'groupLabel')]);
  }
  popDebugGroup(): void {
    this.encoder.record(this.index, 'popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.encoder.record(this.index, 'insertDebugMarker', [usvString(markerLabel, 'insertDebugMarker', 'markerLabel')]);
  }
  end(): void {
    this.encoder.record(this.index, 'end', []);
  }
}

/** Mapped ranges being gathered from MappedData pieces, by buffer id (one map of a buffer at a time). */
const streams = new WeakMap<Channel, Map<number, { offset: number; bytes: Uint8Array }>>();
function streamsOf(channel: Channel): Map<number, { offset: number; bytes: Uint8Array }> {
  let table = streams.get(channel);
  if (!table) streams.set(channel, (table = new Map()));
  return table;
}

/** Routes one daemon event of a process session to its device (or its mapped range being streamed). */
export function deliverEvent(channel: Channel, message: Message): void {
  const devices = deviceTableOf(channel);
  switch (message.name) {
    case 'MappedData': {
      const { buffer, offset, data } = message.payload;
      const target = streams.get(channel)?.get(buffer);
      const at = target ? offset - target.offset : -1;
      if (target && at >= 0 && at + data.byteLength <= target.bytes.byteLength) target.bytes.set(data, at);
      return;
    }
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
