// The daemon's side of a process session: runs the WebGPU messages of one client on that client's
// kernel process, through the process's virtual navigator.gpu, exactly as an in-process program
// would call it. The client names objects with its own ids (slot | generation << 32); this table
// maps them to the virtual objects. Messages run in arrival order, each as soon as it arrives:
// asynchronous WebGPU calls start at once and their replies go when they settle. No message makes
// a Dawn call that can wait for the device (docs/daemon.md, "What never waits for the device"):
// CreateComputePipeline uses Dawn's asynchronous creation, and the session's later messages wait
// for it (held back here, and the client's input with them), not the daemon.
//
// Errors, and where they go:
// - A protocol violation (an id the session does not hold, of the wrong kind, a malformed command
//   list) throws ProtocolError; the daemon sends ProtocolError and closes the session.
// - A WebGPU error raised by a request (a message with `req`) is its Failure.
// - A WebGPU call of a pipelined message (no `req`) that throws synchronously (Dawn's TypeError
//   for a malformed descriptor, say) must not end the session: the exception is delivered as an
//   UncapturedError {type: 'validation', message: '<ErrorName>: <message>'} on the device of the
//   object the message names. An object whose creation threw stays in the table as a failed
//   object; later uses of it throw the same way.
// - Device errors no scope captured go out as UncapturedError; device.lost as DeviceLost.
// The command encoding of FinishCommandEncoder is src/protocol/commands.ts.
//
// Bulk data (protocol 3): a client on the Unix socket may ask for a shared-memory region
// (BulkRegion; src/daemon/sharedMemory.ts); its writeBuffer data, unmapped ranges and mapAsync
// reads then travel through the region, the messages carrying only where (QueueWriteBufferShared,
// BufferUnmapShared, BufferMapAsyncShared). Bytes the client wrote are read out when the message
// runs, so the client may reuse the space once a reply to a later request has come.

import { ErrorCodes, GpunixError } from '../errors.js';
import type { ProcessHandle } from '../kernel/kernel.js';
import { ProtocolError } from '../protocol/codec.js';
import { COMMANDS, CommandName, CommandSpec, DEBUG_COMMANDS, isRef, matchOverload, refKindOf, SELECT_ENCODER, SELECT_PASS } from '../protocol/commands.js';
import { joinId, Message, Payload, splitId } from '../protocol/messages.js';
import type { Duplex } from 'node:stream';
import type { Wire } from '../protocol/wire.js';
import type { VirtualDevice } from '../vgpu/device.js';
import type { GpunixDeviceExtension } from '../vgpu/extension.js';
import { GPUInternalErrorClass, GPUOutOfMemoryErrorClass, GPUValidationErrorClass, outOfMemoryError } from '../vgpu/webgpuGlobals.js';
import type { ObjectAccount } from './tenants.js';
import { SharedMemorySettings, SharedRegion } from './sharedMemory.js';
import { CreationLog, LoggedMessage } from './creationLog.js';
import type { SegmentReplica, SegmentReplicas } from './segmentReplica.js';
import type { VirtualBuffer } from '../vgpu/buffer.js';
import type { VirtualCommandBuffer } from '../vgpu/commandBuffer.js';

export type ObjectKind =
  | 'adapter'
  | 'device'
  | 'queue'
  | 'buffer'
  | 'shaderModule'
  | 'computePipeline'
  | 'bindGroupLayout'
  | 'pipelineLayout'
  | 'bindGroup'
  | 'querySet'
  | 'commandBuffer';

type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

interface Entry {
  generation: number;
  kind: ObjectKind;
  /** The virtual object; null while an asynchronous creation is pending or after a failed one. */
  object: unknown;
  /** The device the object belongs to (its own id for a device), for error reports. */
  device: number | null;
  pending: boolean;
  /** Why creating the object threw, if it did. */
  failed: string | null;
  /** WGSL source bytes charged to the tenant for a shader module (refunded with the entry). */
  shaderBytes?: number;
  /** A buffer's mapped range as handed out by getMappedRange (Dawn forbids asking twice). */
  mapped?: { offset: number; range: ArrayBuffer } | null;
  /** A device's restored objects, until BindRestored names them (see restoredOf). */
  restored?: { buffers: GPUBuffer[]; pipelines: GPUComputePipeline[]; shaderModules: GPUShaderModule[] } | null;
}

/** The largest MappedData piece of a streamed map (bytes). */
const STREAM_PIECE_BYTES = 8 * 1024 * 1024;
/** Bytes of MappedData a streamed map may have queued on the socket before it waits for 'drain'. */
const STREAM_WINDOW_BYTES = 16 * 1024 * 1024;

/** The most objects one session may hold at once: a client cannot grow the daemon without bound. */
const MAX_OBJECTS = 1 << 20;
/** Nesting deeper than this in a descriptor is malformed (no WebGPU descriptor comes close). */
const MAX_DEPTH = 32;

type KeyKinds = Readonly<Record<string, ObjectKind>>;
const NO_KEYS: KeyKinds = {};
const PIPELINE_KEYS: KeyKinds = { layout: 'pipelineLayout', module: 'shaderModule' };
const BIND_GROUP_KEYS: KeyKinds = { layout: 'bindGroupLayout', buffer: 'buffer', resource: 'buffer' };
const PIPELINE_LAYOUT_KEYS: KeyKinds = { bindGroupLayouts: 'bindGroupLayout' };
const PASS_KEYS: KeyKinds = { querySet: 'querySet' };

/** The class or DOMException name of an error thrown by a WebGPU call. */
function errorName(error: unknown): string {
  if (error instanceof Error || error instanceof DOMException) return error.name || error.constructor.name;
  return 'Error';
}

function errorType(error: GPUError): 'validation' | 'out-of-memory' | 'internal' {
  if (error instanceof GPUOutOfMemoryErrorClass) return 'out-of-memory';
  if (error instanceof GPUInternalErrorClass) return 'internal';
  if (error instanceof GPUValidationErrorClass) return 'validation';
  return 'validation';
}

const malformed = (message: string) => new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, message);

/** Why a command buffer submitted before its process moved here cannot be used (submitted twice). */
const SPENT_COMMAND_BUFFER = 'GPUValidationError: the command buffer was submitted before the process moved to this node';

/** What the session needs of its connection (a Wire; while a moved-in process waits for its client, a sink). */
export type SessionWire = Pick<Wire, 'send' | 'hold' | 'release' | 'close' | 'stream'>;

/** The connection of a session being replayed (no client yet): answers go to whoever expects them. */
export interface ReplaySink extends SessionWire {
  /** Resolves with the answer (Reply, ReplyData or Failure) to request `req`. */
  expect(req: number): Promise<{ name: string; payload: unknown }>;
}

export class ProcessSession {
  private readonly handleRef: ProcessHandle;
  /** The connection; swapped when a client takes over a process that moved here (attach). */
  private wire: SessionWire;
  /** The messages that made the objects the client holds: what moves to another node. */
  readonly creations = new CreationLog();
  /** While the process moves to another node: the buffers written since they were last sent. */
  private dirty: Set<VirtualBuffer> | null = null;
  /** Requests (messages with `req`) not answered yet. */
  private unanswered = 0;
  private onAnswered: (() => void) | null = null;
  /** This node's copies of segments homed elsewhere (segmentReplica.ts), or null. */
  private readonly replicas: SegmentReplicas | null;
  /** The remote segments this session attached: their buffers, with the device each is on. */
  private readonly attachedReplicas = new Map<VirtualBuffer, { replica: SegmentReplica; device: VirtualDevice }>();
  /** True while a move of this session's process to another node is under way (one at a time). */
  movingOut = false;
  /** Called when MoveFence arrives, after every message before it has run (migrationOut). */
  onFence: (() => void) | null = null;
  private readonly log: LogFn;
  private readonly objects = new Map<number, Entry>();
  /** The tenant's account of objects held in the daemon (its quotas); null: not counted. */
  private readonly account: ObjectAccount | null;
  private closed = false;
  /**
   * What arrived while the session waits for a call that completes later (see createPipeline):
   * messages, and steps of the connection's own (after()), in order; null when it is not waiting.
   */
  private waiting: Array<Message | (() => void)> | null = null;
  /** Ends the session for an error of a message run after a wait (handle()'s caller gets the others). */
  private readonly failed: (error: unknown, what: string) => void;
  /** How this session may have a shared-memory region (null: not at all, e.g. a TCP/TLS client). */
  private sharedMemory: SharedMemorySettings | null;
  /** The session's shared-memory region, once the client asked for one (BulkRegion). */
  private region: SharedRegion | null = null;
  /** Reused for the bytes of QueueWriteBufferShared (the queue copies what it keeps, as WebGPU lets a program reuse its array). */
  private scratch = new Uint8Array(0);

  constructor(options: {
    handle: ProcessHandle;
    wire: SessionWire;
    log?: LogFn;
    failed?: (error: unknown, what: string) => void;
    objects?: ObjectAccount;
    /** Shared memory for bulk data (clients on the Unix socket); absent or null: none. */
    sharedMemory?: SharedMemorySettings | null;
    /** Copies of segments homed on other nodes ("name@node"); absent: such names are local names. */
    replicas?: SegmentReplicas | null;
  }) {
    this.replicas = options.replicas ?? null;
    this.handleRef = options.handle;
    this.sharedMemory = options.sharedMemory ?? null;
    this.account = options.objects ?? null;
    this.wire = options.wire;
    this.log = options.log ?? (() => {});
    this.failed = options.failed ?? ((error, what) => this.protocolFailure(error, what));
  }

  /**
   * Executes one WebGPU-role message (RequestAdapter..SetLabel, Ping, Goodbye), in arrival order:
   * while the session waits for a call of an earlier message (createPipeline), it is held back,
   * and so is reading from the client. Throws ProtocolError on protocol violations (of a message
   * run later, `failed` gets it).
   */
  handle(message: Message): void {
    if (this.closed) return;
    if (this.waiting) {
      this.waiting.push(message);
      return;
    }
    this.run(message);
  }

  /** Runs `step` (the connection's own handling of a message, e.g. Goodbye) after what the session holds back. */
  after(step: () => void): void {
    if (this.waiting) this.waiting.push(step);
    else step();
  }

  private run(message: Message): void {
    const wait = this.execute(message);
    if (wait) this.waitFor(wait);
  }

  /**
   * The last message made a call that completes later: the session's later messages wait, in order,
   * and nothing more is read from the client until it settles (its writes block: the backpressure
   * of a client that does not read its replies). Every other session, and the operators, go on.
   */
  private waitFor(wait: Promise<void>): void {
    this.waiting = [];
    this.wire.hold('device');
    const resume = (): void => {
      const queued = this.waiting ?? [];
      this.waiting = null;
      for (let i = 0; i < queued.length; i++) {
        if (this.closed) return;
        // (Set again by a message run below.)
        const held = this.waiting as Array<Message | (() => void)> | null;
        if (held) {
          // Behind a new wait: the rest stays held back, in order.
          held.push(...queued.slice(i));
          return;
        }
        const next = queued[i];
        try {
          if (typeof next === 'function') next();
          else this.run(next);
        } catch (error) {
          this.failed(error, typeof next === 'function' ? 'Goodbye' : next.name);
          return;
        }
      }
      if (!this.closed && !this.waiting) this.wire.release('device');
    };
    wait.then(resume, resume);
  }

  /** Without a connection to end the session: ProtocolError to the client, and the connection closed. */
  private protocolFailure(error: unknown, what: string): void {
    const coded = error instanceof GpunixError;
    if (!coded) this.log('error', `internal error handling ${what}; closing the session`, { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    this.wire.send('ProtocolError', {
      code: coded ? error.code : ErrorCodes.PROTOCOL_MALFORMED,
      message: coded ? error.message : `gpunixd could not handle ${what} (an internal error, logged); the session is closed`,
    });
    this.close();
    this.wire.close();
  }

  /** One message; a promise when the session's later messages must wait for a call it made (never rejects). */
  private execute(message: Message): Promise<void> | void {
    this.creations.note(message);
    if ((message.payload as { req?: unknown }).req !== undefined && message.name !== 'Goodbye') this.unanswered++;
    if (this.dirty) this.noteWrites(message);
    switch (message.name) {
      case 'MoveFence':
        this.onFence?.();
        return;
      case 'Ping':
        this.reply(message.payload.req, null);
        return;
      case 'Goodbye': {
        const { req, code } = message.payload;
        this.settle(req, () => this.handleRef.exit(code), (status) => status);
        return;
      }
      case 'RequestAdapter':
        return this.requestAdapter(message.payload);
      case 'RequestDevice':
        return this.requestDevice(message.payload);
      case 'BindRestored':
        return this.bindRestored(message.payload);
      case 'AttachShared': {
        const { device, id, name, size } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        const local = this.replicas ? this.replicas.localName(name) : name;
        const entry = this.create(id, 'buffer', device, () => (target() as unknown as { gpunix: GpunixDeviceExtension }).gpunix.attachShared(local, size));
        if (entry.object && this.replicas?.homeOf(name)) return this.attachRemote(entry, device, name, size);
        return;
      }
      case 'DeviceDestroy': {
        const { device } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.pipelined(device, () => target().destroy());
        return;
      }
      case 'PushErrorScope': {
        const { device, filter } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.pipelined(device, () => target().pushErrorScope(filter as GPUErrorFilter));
        return;
      }
      case 'PopErrorScope': {
        const { req, device } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.settle(req, () => target().popErrorScope(), (error) => (error ? { type: errorType(error), message: error.message } : null));
        return;
      }
      case 'CreateBuffer': {
        const { device, id, descriptor } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        const made = this.create(id, 'buffer', device, () => target().createBuffer(this.resolve(descriptor, NO_KEYS) as GPUBufferDescriptor));
        this.creations.made(id, made.object);
        return;
      }
      case 'BufferMapAsync':
        return this.mapAsync(message.payload);
      case 'BufferUnmap':
        return this.unmap(message.payload);
      case 'BulkRegion':
        return this.bulkRegion(message.payload);
      case 'BulkRegionOpened': {
        const region = this.region;
        if (!region) return;
        region.unlink();
        if (!message.payload.ok) {
          region.close();
          this.region = null;
          this.log('debug', 'the client could not open its shared-memory region; bulk data goes in frames');
        }
        return;
      }
      case 'QueueWriteBufferShared': {
        const { queue, buffer, offset, at, size } = message.payload;
        const queueEntry = this.entry(queue, 'queue');
        const target = this.get<GPUQueue>(queue, 'queue');
        const destination = this.get<GPUBuffer>(buffer, 'buffer');
        const data = this.readShared(at, size);
        this.pipelined(queueEntry.device, () => {
          if (!Number.isSafeInteger(offset) || offset < 0) {
            throw new TypeError('no overload matched for writeBuffer:\nValues are out of the range of that integer.');
          }
          target().writeBuffer(destination(), offset, data as Uint8Array<ArrayBuffer>);
        });
        return;
      }
      case 'BufferMapAsyncStreamed':
        return this.mapAsync(message.payload, 'streamed');
      case 'BufferWriteMapped': {
        const { buffer, offset, data } = message.payload;
        const entry = this.entry(buffer, 'buffer');
        const target = this.get<GPUBuffer>(buffer, 'buffer');
        this.pipelined(entry.device, () => {
          const mapped = entry.mapped;
          if (mapped && offset >= mapped.offset && offset - mapped.offset + data.byteLength <= mapped.range.byteLength) {
            new Uint8Array(mapped.range, offset - mapped.offset, data.byteLength).set(data);
          } else {
            // Mapped at creation: each piece is a range of its own (the pieces never overlap).
            new Uint8Array(target().getMappedRange(offset, data.byteLength)).set(data);
          }
        });
        return;
      }
      case 'BufferMapAsyncShared': {
        const { req, buffer, mode, offset, size, at } = message.payload;
        this.sharedRange(at, size);
        return this.mapAsync({ req, buffer, mode, offset, size }, at);
      }
      case 'BufferUnmapShared': {
        const { buffer, offset, at, size } = message.payload;
        this.sharedRange(at, size);
        return this.unmap({ buffer, offset, data: new Uint8Array(0) }, { at, size });
      }
      case 'BufferDestroy': {
        const { buffer } = message.payload;
        const entry = this.entry(buffer, 'buffer');
        const target = this.get<GPUBuffer>(buffer, 'buffer');
        this.pipelined(entry.device, () => {
          entry.mapped = null;
          target().destroy();
        });
        return;
      }
      case 'QueueWriteBuffer': {
        const { queue, buffer, offset, data } = message.payload;
        const queueEntry = this.entry(queue, 'queue');
        const target = this.get<GPUQueue>(queue, 'queue');
        const destination = this.get<GPUBuffer>(buffer, 'buffer');
        this.pipelined(queueEntry.device, () => {
          // The kernel queues the write and converts its arguments later, where a TypeError would reach
          // no one (the program, or a hostile client, would never learn of it): convert it here, as
          // WebIDL does at the call.
          if (!Number.isSafeInteger(offset) || offset < 0) {
            throw new TypeError('no overload matched for writeBuffer:\nValues are out of the range of that integer.');
          }
          target().writeBuffer(destination(), offset, data as Uint8Array<ArrayBuffer>);
        });
        return;
      }
      case 'CreateShaderModule': {
        const { device, id, descriptor } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        const code = (descriptor as { code?: unknown } | null)?.code;
        const shaderBytes = typeof code === 'string' ? Buffer.byteLength(code) : 0;
        this.create(id, 'shaderModule', device, () => target().createShaderModule(this.resolve(descriptor, NO_KEYS) as GPUShaderModuleDescriptor), shaderBytes);
        return;
      }
      case 'GetCompilationInfo': {
        const { req, module } = message.payload;
        const target = this.get<GPUShaderModule>(module, 'shaderModule');
        this.settle(req, () => target().getCompilationInfo(), (info) => ({
          messages: [...info.messages].map((m) => ({ type: m.type, message: m.message, lineNum: m.lineNum, linePos: m.linePos, offset: m.offset, length: m.length })),
        }));
        return;
      }
      case 'CreateComputePipeline':
        return this.createPipeline(message.payload);
      case 'CreateComputePipelineAsync':
        return this.createPipelineAsync(message.payload);
      case 'GetBindGroupLayout': {
        const { pipeline, index, id } = message.payload;
        const entry = this.entry(pipeline, 'computePipeline');
        const target = this.get<GPUComputePipeline>(pipeline, 'computePipeline');
        this.create(id, 'bindGroupLayout', entry.device, () => target().getBindGroupLayout(index));
        return;
      }
      case 'CreateBindGroupLayout': {
        const { device, id, descriptor } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.create(id, 'bindGroupLayout', device, () => target().createBindGroupLayout(this.resolve(descriptor, NO_KEYS) as GPUBindGroupLayoutDescriptor));
        return;
      }
      case 'CreatePipelineLayout': {
        const { device, id, descriptor } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.create(id, 'pipelineLayout', device, () =>
          target().createPipelineLayout(this.resolve(descriptor, PIPELINE_LAYOUT_KEYS) as GPUPipelineLayoutDescriptor),
        );
        return;
      }
      case 'CreateBindGroup': {
        const { device, id, descriptor } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.create(id, 'bindGroup', device, () => target().createBindGroup(bindGroupDescriptor(this.resolve(descriptor, BIND_GROUP_KEYS))));
        return;
      }
      case 'CreateQuerySet': {
        const { device, id, descriptor } = message.payload;
        const target = this.get<GPUDevice>(device, 'device');
        this.create(id, 'querySet', device, () => target().createQuerySet(this.resolve(descriptor, NO_KEYS) as GPUQuerySetDescriptor));
        return;
      }
      case 'QuerySetDestroy': {
        const { querySet } = message.payload;
        const entry = this.entry(querySet, 'querySet');
        const target = this.get<GPUQuerySet>(querySet, 'querySet');
        this.pipelined(entry.device, () => target().destroy());
        return;
      }
      case 'FinishCommandEncoder':
        return this.finishEncoder(message.payload);
      case 'QueueSubmit': {
        const { queue, commandBuffers } = message.payload;
        const queueEntry = this.entry(queue, 'queue');
        const target = this.get<GPUQueue>(queue, 'queue');
        const buffers = commandBuffers.map((id) => this.get<GPUCommandBuffer>(id, 'commandBuffer'));
        const submit = () => this.pipelined(queueEntry.device, () => target().submit(buffers.map((b) => b())));
        // Acquire: a submit that uses a segment homed on another node first takes the home's changes.
        if (this.attachedReplicas.size > 0) {
          const used = this.replicasUsedBy(commandBuffers);
          if (used.length > 0) return this.acquireThen(used, queueEntry.device, submit);
        }
        submit();
        return;
      }
      case 'QueueOnSubmittedWorkDone': {
        const { req, queue } = message.payload;
        const target = this.get<GPUQueue>(queue, 'queue');
        if (this.attachedReplicas.size === 0) {
          this.settle(req, () => target().onSubmittedWorkDone(), () => null);
          return;
        }
        // Release: the writes of this process's finished work reach the segments' homes before the promise resolves.
        this.settle(req, async () => {
          await target().onSubmittedWorkDone();
          await Promise.all([...this.attachedReplicas].map(([buffer, { replica, device }]) => replica.release(device, buffer)));
        }, () => null);
        return;
      }
      case 'Release': {
        const { ids } = message.payload;
        for (const id of ids) this.entry(id, null, true);
        for (const id of ids) this.drop(splitId(id).slot);
        return;
      }
      case 'SetLabel': {
        const { object, label } = message.payload;
        const entry = this.entry(object, null);
        if (entry.object) (entry.object as { label: string }).label = label;
        return;
      }
      default:
        throw new ProtocolError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `${message.name} is not a message of a process session`);
    }
  }

  /** The session is ending (client gone or daemon closing): forget every object. Does not end the process. */
  close(): void {
    this.closed = true;
    for (const { replica } of this.attachedReplicas.values()) this.replicas?.detach(replica);
    this.attachedReplicas.clear();
    this.waiting = null;
    for (const slot of [...this.objects.keys()]) this.drop(slot);
    this.region?.close();
    this.region = null;
    this.scratch = new Uint8Array(0);
  }

  // ---- segments homed on other nodes (src/daemon/segmentReplica.ts) ---------------------------

  /**
   * AttachShared of "name@node" (another node): the local copy is attached (entry); this opens it
   * at the home and takes its contents before the session's next message runs. A failure makes
   * the buffer a failed object, with an error on the device, as a refused attach does.
   */
  private attachRemote(entry: Entry, device: number, name: string, size: number): Promise<void> {
    const buffer = entry.object as VirtualBuffer;
    const vdevice = this.objects.get(splitId(device).slot)?.object as VirtualDevice;
    return this.replicas!.attach(this.handleRef.record().tenant, name, size).then(
      async (replica) => {
        if (this.closed) return this.replicas!.detach(replica);
        this.attachedReplicas.set(buffer, { replica, device: vdevice });
        try {
          await replica.acquire(vdevice, buffer);
        } catch (error) {
          this.uncaught(device, error);
        }
      },
      (error: unknown) => {
        (buffer as unknown as GPUBuffer).destroy();
        this.failObject(entry, device, error);
      },
    );
  }

  /** The remote segments the command buffers `ids` use. */
  private replicasUsedBy(ids: number[]): Array<[VirtualBuffer, { replica: SegmentReplica; device: VirtualDevice }]> {
    const used = new Map<VirtualBuffer, { replica: SegmentReplica; device: VirtualDevice }>();
    for (const id of ids) {
      const cb = this.objects.get(splitId(id).slot)?.object as VirtualCommandBuffer | null | undefined;
      if (!cb || typeof cb.resources !== 'function') continue;
      for (const resource of cb.resources()) {
        const attached = this.attachedReplicas.get(resource as VirtualBuffer);
        if (attached) used.set(resource as VirtualBuffer, attached);
      }
    }
    return [...used];
  }

  /** Takes the homes' changes into `used`, then runs `then` (the session's later messages wait). */
  private acquireThen(used: Array<[VirtualBuffer, { replica: SegmentReplica; device: VirtualDevice }]>, device: number | null, then: () => void): Promise<void> {
    return Promise.all(used.map(([buffer, { replica, device: d }]) => replica.acquire(d, buffer))).then(
      () => then(),
      (error: unknown) => {
        // The home unreachable: the program's submit still runs, on what this node has; it hears why.
        this.uncaught(device, error);
        then();
      },
    );
  }

  // ---- moving to another node (src/daemon/migrationOut.ts, migrationIn.ts) --------------------

  /** Starts noting the buffers the program writes from now on (dirty), for a move's pre-copy rounds. */
  trackWrites(): void {
    this.dirty ??= new Set();
  }

  /** Stops noting writes (the move ended, either way). */
  untrackWrites(): void {
    this.dirty = null;
  }

  /** The buffers written since the last call (or since trackWrites), and starts a new set. */
  takeDirty(): Set<VirtualBuffer> {
    const dirty = this.dirty ?? new Set<VirtualBuffer>();
    this.dirty = new Set();
    return dirty;
  }

  /** True when `buffer` was written since the last takeDirty() (a pre-copy skips it: it goes again anyway). */
  isDirty(buffer: VirtualBuffer): boolean {
    return this.dirty?.has(buffer) ?? false;
  }

  /** Notes what a message may write (conservative: a read-write binding counts whether or not the shader writes it). */
  private noteWrites(message: Message): void {
    const dirty = this.dirty!;
    const payload = message.payload as { buffer?: number; commandBuffers?: number[] };
    switch (message.name) {
      case 'QueueWriteBuffer':
      case 'QueueWriteBufferShared':
      case 'BufferUnmap':
      case 'BufferUnmapShared':
      case 'BufferWriteMapped': {
        const entry = this.objects.get(splitId(payload.buffer!).slot);
        if (entry?.object) dirty.add(entry.object as VirtualBuffer);
        return;
      }
      case 'QueueSubmit':
        for (const id of payload.commandBuffers!) {
          const cb = this.objects.get(splitId(id).slot)?.object as VirtualCommandBuffer | null | undefined;
          if (cb && typeof cb.writtenBuffers === 'function') for (const buffer of cb.writtenBuffers()) dirty.add(buffer as VirtualBuffer);
        }
        return;
      default:
    }
  }

  /** Resolves when every request received so far has been answered. */
  whenAnswered(): Promise<void> {
    if (this.unanswered <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const before = this.onAnswered;
      this.onAnswered = () => {
        before?.();
        resolve();
      };
    });
  }

  /** True while messages wait behind a call that completes later (a pipeline being made). */
  get isWaiting(): boolean {
    return this.waiting !== null;
  }

  /** The devices the client holds, with their ids (a move carries their open error scopes). */
  devices(): Array<{ id: number; device: VirtualDevice }> {
    const out: Array<{ id: number; device: VirtualDevice }> = [];
    for (const [slot, entry] of this.objects) {
      if (entry.kind === 'device' && entry.object) out.push({ id: joinId(slot, entry.generation), device: entry.object as VirtualDevice });
    }
    return out;
  }

  /** Why the session cannot move now (a mapped buffer, a shared segment), or null. */
  moveBlocker(): string | null {
    if (this.creations.attachesShared) return 'it is attached to a shared segment, which pins it to its node';
    for (const [slot, entry] of this.objects) {
      if (entry.kind !== 'buffer' || !entry.object) continue;
      const state = (entry.object as GPUBuffer).mapState;
      if (state !== 'unmapped' || entry.mapped) return `buffer ${slot}:${entry.generation} is mapped (${state}); unmap it first`;
    }
    return null;
  }

  /** A client takes over the session (a process that moved here, on its resume). */
  attach(wire: SessionWire, sharedMemory: SharedMemorySettings | null): void {
    this.wire = wire;
    this.sharedMemory = sharedMemory;
  }

  /**
   * Makes the objects of a moved-in log (src/daemon/creationLog.ts), under the client ids it names,
   * with no client yet: adapter and device requests are awaited in turn (their answers go
   * nowhere), buffers are made unmapped (their contents come after). Rejects, naming the message,
   * when one fails that the client had seen succeed (the device here lacks what it asked for).
   */
  async replay(log: LoggedMessage[], sink: ReplaySink): Promise<void> {
    for (const [name, raw] of log) {
      if (this.closed) throw new GpunixError(ErrorCodes.MIGRATION_FAILED, 'the process ended while its objects were being made');
      // In order with the messages (which may wait behind a pipeline being made): a later object may take a slot a Release frees.
      if (name === 'ConsumedCommandBuffer') {
        const { device, id } = raw as { device: number; id: number };
        this.after(() => {
          const entry = this.register(id, 'commandBuffer', device);
          entry.failed = SPENT_COMMAND_BUFFER;
          this.creations.addConsumed(device, id);
        });
        continue;
      }
      if (name === 'Consume') {
        const ids = (raw as { ids: number[] }).ids;
        this.after(() => {
          this.creations.note({ name: 'QueueSubmit', payload: { queue: 0, commandBuffers: ids } } as Message);
          for (const id of ids) {
            const entry = this.entry(id, 'commandBuffer');
            entry.object = null;
            entry.failed = SPENT_COMMAND_BUFFER;
          }
        });
        continue;
      }
      let payload = raw as Record<string, unknown>;
      if (name === 'CreateBuffer' && payload.descriptor && typeof payload.descriptor === 'object') {
        payload = { ...payload, descriptor: { ...(payload.descriptor as object), mappedAtCreation: false } };
      }
      const message = { name, payload } as Message;
      const req = payload.req as number | undefined;
      const answer = req === undefined ? null : sink.expect(req);
      this.handle(message);
      if (answer) {
        const { name: replied, payload: result } = await answer;
        const refused = replied === 'Failure' || ((name === 'RequestAdapter' || name === 'RequestDevice') && (result as { result?: unknown }).result === null);
        if (refused) {
          const why = replied === 'Failure' ? (result as { message: string }).message : 'no adapter';
          throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `${name} failed on this node: ${why}`);
        }
      }
    }
    // Done once what waits behind a pipeline being made has run.
    await new Promise<void>((resolve) => this.after(resolve));
  }

  // ---- shared memory (bulk data) --------------------------------------------------------------

  /**
   * BulkRegion: makes the session's region (Reply {path, size} for a tmpfs file, {path: "", size,
   * handoff: {socket, key}} for a memory file whose descriptor is on offer there) or grows it
   * (Reply {path: "", size}).
   */
  private bulkRegion({ req, size }: Payload<'BulkRegion'>): void {
    const settings = this.sharedMemory;
    try {
      if (!settings) throw new GpunixError(ErrorCodes.UNSUPPORTED, 'no shared memory for this session (only for clients on the Unix socket, when the daemon has a sharedMemory.directory)');
      if (!Number.isSafeInteger(size) || size <= 0) throw malformed(`BulkRegion.size must be a positive integer, not ${size}`);
      if (!this.region) {
        this.region = SharedRegion.create(settings, size, this.account ?? this);
        this.log('debug', 'shared-memory region made', { bytes: size, mapped: this.region.mapped });
        this.reply(req, { ...this.region.whereabouts, size: this.region.size });
      } else {
        this.region.grow(size, settings);
        this.reply(req, { path: '', size: this.region.size });
      }
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      this.fail(req, error);
    }
  }

  /** Checks that [at, at + size) lies in the session's region; ProtocolError if not (or there is none). */
  private sharedRange(at: number, size: number): SharedRegion {
    const region = this.region;
    if (!region) throw new ProtocolError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, 'a shared-memory message before the session has a region (BulkRegion)');
    if (!Number.isSafeInteger(at) || !Number.isSafeInteger(size) || at < 0 || size < 0 || at + size > region.size) {
      throw malformed(`[${at}, ${at + size}) is not inside the session's shared-memory region of ${region.size} bytes`);
    }
    return region;
  }

  /**
   * The `size` bytes at `at` in the region, for use now (the client may reuse the space after):
   * in place when the daemon maps the region, else read into a scratch array.
   */
  private readShared(at: number, size: number): Uint8Array {
    const region = this.sharedRange(at, size);
    const inPlace = region.viewOf(at, size);
    if (inPlace) return inPlace;
    if (this.scratch.byteLength < size) this.scratch = new Uint8Array(size);
    const bytes = this.scratch.subarray(0, size);
    region.read(at, bytes);
    return bytes;
  }

  // ---- the object table -----------------------------------------------------------------------

  /** The table entry `id` names; BAD_OBJECT if none, stale, pending or (when `kind` is given) of another kind. */
  private entry(id: number, kind: ObjectKind | null, allowPending = false): Entry {
    const { slot, generation } = splitId(id);
    const entry = this.objects.get(slot);
    if (!entry || entry.generation !== generation) {
      throw new ProtocolError(ErrorCodes.BAD_OBJECT, `object ${slot}:${generation} is not held by this session${entry ? ` (slot ${slot} holds generation ${entry.generation})` : ''}`);
    }
    if (kind !== null && entry.kind !== kind) {
      throw new ProtocolError(ErrorCodes.BAD_OBJECT, `object ${slot}:${generation} is a ${entry.kind}, not a ${kind}`);
    }
    if (entry.pending && !allowPending) throw new ProtocolError(ErrorCodes.BAD_OBJECT, `object ${slot}:${generation} (a ${entry.kind}) is still being created`);
    return entry;
  }

  /**
   * Checks `id` now (protocol errors are immediate) and returns how to get the object when the
   * call runs: a failed object then throws the TypeError its creation threw.
   */
  private get<T>(id: number, kind: ObjectKind): () => T {
    const entry = this.entry(id, kind);
    return () => {
      if (entry.failed !== null) throw new TypeError(`the ${kind} was not created: ${entry.failed}`);
      return entry.object as T;
    };
  }

  private register(id: number, kind: ObjectKind, device: number | null, shaderBytes = 0): Entry {
    const { slot, generation } = splitId(id);
    const existing = this.objects.get(slot);
    if (existing) throw new ProtocolError(ErrorCodes.BAD_OBJECT, `object ${slot}:${generation}: slot ${slot} is in use (generation ${existing.generation}); release it first`);
    if (this.objects.size >= MAX_OBJECTS) throw new ProtocolError(ErrorCodes.BAD_OBJECT, `the session holds ${MAX_OBJECTS} objects, the most it may`);
    const hard = this.account?.hardRefusal();
    if (hard) throw new ProtocolError(ErrorCodes.QUOTA, hard);
    const entry: Entry = { generation, kind, object: null, device, pending: false, failed: null, shaderBytes };
    this.account?.charge(shaderBytes);
    this.objects.set(slot, entry);
    return entry;
  }

  /** Forgets the object in `slot` (released, or its creation undone) and refunds the tenant for it. */
  private drop(slot: number): void {
    const entry = this.objects.get(slot);
    if (!entry) return;
    this.objects.delete(slot);
    this.account?.refund(entry.shaderBytes ?? 0);
  }

  /**
   * Registers object `id` made by `make`; a make that throws leaves a failed object and an
   * UncapturedError. When the tenant's object quota (or memoryLimit) refuses it, nothing is made:
   * the object is a failed one and the device gets a GPUOutOfMemoryError "GPUNIX_E_QUOTA: ..." in
   * the error scope current at the call (else uncaptured), as the kernel reports a memory limit.
   */
  private create(id: number, kind: ObjectKind, device: number | null, make: () => unknown, shaderBytes = 0): Entry {
    const refusal = this.account?.refusal(shaderBytes) ?? null;
    const entry = this.register(id, kind, device, refusal ? 0 : shaderBytes);
    if (refusal) {
      this.refuse(entry, device, refusal);
      return entry;
    }
    try {
      entry.object = make();
    } catch (error) {
      if (error instanceof ProtocolError) {
        this.drop(splitId(id).slot);
        throw error;
      }
      this.failObject(entry, device, error);
    }
    return entry;
  }

  /** A creation the tenant's quota refused: a failed object, and an out-of-memory error on its device. */
  private refuse(entry: Entry, device: number | null, refusal: string): void {
    const message = `${ErrorCodes.QUOTA}: ${refusal}`;
    entry.object = null;
    entry.failed = `GpunixError: ${message}`;
    this.log('debug', 'object quota refused a creation', { kind: entry.kind, refusal });
    const owner = device === null ? undefined : this.objects.get(splitId(device).slot);
    const target = owner?.kind === 'device' ? (owner.object as Partial<Pick<VirtualDevice, 'errorTarget' | 'reportRouted'>> | null) : null;
    if (target?.errorTarget && target.reportRouted) {
      target.reportRouted(target.errorTarget(), outOfMemoryError(message));
      return;
    }
    if (!this.closed && device !== null) this.wire.send('UncapturedError', { device, type: 'out-of-memory', message });
  }

  /** The object of `entry` could not be made (its creation threw): later uses throw the same way. */
  private failObject(entry: Entry, device: number | null, error: unknown): void {
    entry.object = null;
    entry.failed = `${errorName(error)}: ${(error as Error).message}`;
    this.uncaught(device, error);
  }

  /**
   * A JSON descriptor as the WebGPU call takes it: every `{"$ref": id}` replaced by the object
   * (`keys` names the object kind a reference under that key must have; elsewhere any kind), and
   * JSON nulls made harmless. Dawn's bindings abort the whole daemon on a null where a dictionary
   * is expected (a null descriptor, `compute: null`, `entries: [null]`, `resource: null`), so a
   * null descriptor becomes {} (WebIDL's conversion of null to a dictionary), a null member is left
   * out, and a null list element becomes {} — except in `bindGroupLayouts`, whose elements may be
   * null. A client of this library never sends such nulls; Dawn then rejects what is left.
   */
  private resolve(value: unknown, keys: KeyKinds, kind: ObjectKind | null = null, depth = 0, key = ''): unknown {
    if (depth > MAX_DEPTH) throw malformed(`a descriptor nests deeper than ${MAX_DEPTH} levels`);
    if (depth === 0 && (value === null || typeof value !== 'object' || Array.isArray(value))) return {};
    if (value === null || typeof value !== 'object') return value;
    if (isRef(value)) {
      if (!Number.isSafeInteger(value.$ref) || value.$ref < 0) throw malformed(`{"$ref": ${value.$ref}} is not an object id`);
      return this.get(value.$ref, kind ?? this.entry(value.$ref, null).kind)();
    }
    if (Array.isArray(value)) {
      const nullable = key === 'bindGroupLayouts';
      return value.map((item) => (item === null ? (nullable ? null : {}) : this.resolve(item, keys, kind, depth + 1, key)));
    }
    if ('$ref' in value) throw malformed('a {"$ref": id} object must have no other keys');
    const out: Record<string, unknown> = {};
    for (const [member, item] of Object.entries(value)) {
      if (item !== null) out[member] = this.resolve(item, keys, keys[member] ?? null, depth + 1, member);
    }
    return out;
  }

  /** An optional descriptor: absent (null) stays absent. */
  private optional(value: unknown, keys: KeyKinds = NO_KEYS): unknown {
    return value === null || value === undefined ? undefined : this.resolve(value, keys);
  }

  // ---- replies --------------------------------------------------------------------------------

  private reply(req: number, result: unknown): void {
    this.answered();
    if (!this.closed) this.wire.send('Reply', { req, result: result ?? null });
  }

  /** One request fewer waiting for its answer (every Reply, ReplyData and Failure of the session's). */
  private answered(): void {
    if (--this.unanswered === 0 && this.onAnswered) {
      const waiting = this.onAnswered;
      this.onAnswered = null;
      waiting();
    }
  }

  private fail(req: number, error: unknown): void {
    this.answered();
    if (this.closed) return;
    if (error instanceof GpunixError) {
      this.wire.send('Failure', { req, code: error.code, name: 'GpunixError', message: error.message });
      return;
    }
    this.wire.send('Failure', { req, code: '', name: errorName(error), message: error instanceof Error || error instanceof DOMException ? error.message : String(error) });
  }

  /**
   * Runs a request's WebGPU call now and replies when it settles: Reply with `result(value)`, or
   * Failure with the error (thrown synchronously or rejected).
   */
  private settle<T>(req: number, call: Promise<T> | (() => Promise<T>), result: (value: T) => unknown): void {
    let promise: Promise<T>;
    try {
      promise = typeof call === 'function' ? call() : call;
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      this.fail(req, error);
      return;
    }
    promise.then(
      (value) => {
        let out: unknown;
        try {
          out = result(value);
        } catch (error) {
          this.fail(req, error);
          return;
        }
        this.reply(req, out);
      },
      (error: unknown) => this.fail(req, error),
    );
  }

  /** Runs a pipelined message's WebGPU call; what it throws becomes an UncapturedError on `device`. */
  private pipelined(device: number | null, call: () => void): void {
    try {
      call();
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      this.uncaught(device, error);
    }
  }

  private uncaught(device: number | null, error: unknown): void {
    const message = `${errorName(error)}: ${error instanceof Error || error instanceof DOMException ? error.message : String(error)}`;
    this.log('debug', 'a pipelined WebGPU call threw; reported as an uncaptured error', { error: message });
    if (this.closed || device === null) return;
    this.wire.send('UncapturedError', { device, type: 'validation', message });
  }

  // ---- adapters and devices -------------------------------------------------------------------

  private requestAdapter({ req, adapter, options }: Payload<'RequestAdapter'>): void {
    const entry = this.register(adapter, 'adapter', null);
    entry.pending = true;
    const { slot } = splitId(adapter);
    const forget = () => {
      this.creations.forget(adapter);
      if (this.objects.get(slot) === entry) this.drop(slot);
    };
    let promise: Promise<GPUAdapter | null>;
    try {
      promise = this.handleRef.gpu.requestAdapter(this.optional(options) as GPURequestAdapterOptions | undefined);
    } catch (error) {
      forget();
      this.fail(req, error);
      return;
    }
    promise.then(
      (found) => {
        if (!found) {
          // No adapter: the client never holds this id.
          forget();
          this.reply(req, null);
          return;
        }
        entry.object = found;
        entry.pending = false;
        const featureLevel = (found as { featureLevel?: string }).featureLevel ?? 'core';
        this.reply(req, { features: [...found.features], limits: { ...limitsOf(found.limits) }, info: { ...infoOf(found.info) }, featureLevel });
      },
      (error: unknown) => {
        forget();
        this.fail(req, error);
      },
    );
  }

  private requestDevice({ req, adapter, device, queue, descriptor }: Payload<'RequestDevice'>): void {
    const target = this.get<GPUAdapter>(adapter, 'adapter');
    this.resolveCheck(descriptor, NO_KEYS);
    const deviceEntry = this.register(device, 'device', device);
    let queueEntry: Entry;
    try {
      queueEntry = this.register(queue, 'queue', device);
    } catch (error) {
      this.drop(splitId(device).slot);
      throw error;
    }
    deviceEntry.pending = queueEntry.pending = true;
    const forget = () => {
      this.creations.forget(device);
      for (const [id, entry] of [
        [device, deviceEntry],
        [queue, queueEntry],
      ] as const) {
        const { slot } = splitId(id);
        if (this.objects.get(slot) === entry) this.drop(slot);
      }
    };
    let promise: Promise<GPUDevice>;
    try {
      promise = target().requestDevice(this.optional(descriptor) as GPUDeviceDescriptor | undefined);
    } catch (error) {
      forget();
      this.fail(req, error);
      return;
    }
    promise.then(
      (made) => {
        deviceEntry.object = made;
        queueEntry.object = made.queue;
        deviceEntry.pending = queueEntry.pending = false;
        this.watch(device, made);
        this.reply(req, { features: [...made.features], limits: { ...limitsOf(made.limits) }, restored: this.restoredOf(deviceEntry, made) });
      },
      (error: unknown) => {
        forget();
        this.fail(req, error);
      },
    );
  }

  /**
   * What a restored process image put on `device` (found by label through `device.gpunix`), as
   * RequestDevice's result lists it for BindRestored; null on an ordinary device. The objects, in
   * that order, are kept on the device's entry until the client names them.
   */
  private restoredOf(entry: Entry, device: GPUDevice): unknown {
    const extension = (device as unknown as { gpunix?: GpunixDeviceExtension }).gpunix;
    if (!extension?.restored) return null;
    const labels = extension.labels();
    const buffers = labels.buffers.map((label) => extension.findBuffer(label)!);
    const pipelines = labels.pipelines.map((label) => extension.findPipeline(label)!);
    const shaderModules = labels.shaderModules.map((label) => extension.findShaderModule(label)!);
    entry.restored = { buffers, pipelines, shaderModules };
    return {
      buffers: buffers.map((b) => ({ label: b.label, size: b.size, usage: b.usage })),
      pipelines: pipelines.map((p) => ({ label: p.label })),
      shaderModules: shaderModules.map((m) => ({ label: m.label })),
    };
  }

  /** BindRestored: registers the client's ids for the restored objects, in the listed order. */
  private bindRestored({ device, buffers, pipelines, shaderModules }: Payload<'BindRestored'>): void {
    const entry = this.entry(device, 'device');
    const restored = entry.restored;
    if (!restored) throw new ProtocolError(ErrorCodes.BAD_OBJECT, 'BindRestored on a device that received no process image');
    const lists: [number[], unknown[], ObjectKind][] = [
      [buffers, restored.buffers, 'buffer'],
      [pipelines, restored.pipelines, 'computePipeline'],
      [shaderModules, restored.shaderModules, 'shaderModule'],
    ];
    for (const [ids, objects] of lists) {
      if (ids.length !== objects.length) throw malformed(`BindRestored: ${ids.length} ids for ${objects.length} restored objects`);
    }
    entry.restored = null;
    for (const [ids, objects, kind] of lists) {
      ids.forEach((id, i) => (this.register(id, kind, device).object = objects[i]));
    }
  }

  /** Forwards the device's uncaptured errors and its loss to the client. */
  private watch(id: number, device: GPUDevice): void {
    device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      if (!this.closed) this.wire.send('UncapturedError', { device: id, type: errorType(error), message: error.message });
    });
    void device.lost.then((info) => {
      if (!this.closed) this.wire.send('DeviceLost', { device: id, reason: info.reason ?? 'unknown', message: info.message ?? '' });
    });
  }

  // ---- buffers --------------------------------------------------------------------------------

  /**
   * BufferMapAsync; with `at` a number, the range's bytes go into the region there, with
   * 'streamed' in MappedData pieces; either way the reply is then Reply null.
   */
  private mapAsync({ req, buffer, mode, offset, size }: Payload<'BufferMapAsync'>, at?: number | 'streamed'): void {
    const entry = this.entry(buffer, 'buffer');
    const target = this.get<GPUBuffer>(buffer, 'buffer');
    let mapping: Promise<undefined>;
    try {
      mapping = target().mapAsync(mode, offset, size);
    } catch (error) {
      this.fail(req, error);
      return;
    }
    mapping.then(
      () => {
        let range: ArrayBuffer;
        try {
          // Dawn hands a range out once: it is kept for the unmap that brings the program's bytes.
          range = target().getMappedRange(offset, size);
        } catch (error) {
          this.fail(req, error);
          return;
        }
        entry.mapped = { offset, range };
        if (this.closed) return;
        if (at === undefined) {
          this.answered();
          this.wire.send('ReplyData', { req, result: null, data: new Uint8Array(range) });
          return;
        }
        if (at === 'streamed') {
          this.streamRange(req, buffer, offset, range);
          return;
        }
        // One copy, from the mapped memory into the region; the client reads it straight into the program's ArrayBuffer.
        try {
          this.sharedRange(at, range.byteLength).write(at, new Uint8Array(range));
        } catch (error) {
          this.fail(req, error);
          return;
        }
        this.reply(req, null);
      },
      (error: unknown) => this.fail(req, error),
    );
  }

  /** BufferUnmap; with `shared`, the written bytes are read from the region straight into the mapped range. */
  /**
   * Sends a mapped range in MappedData pieces, at most STREAM_WINDOW_BYTES of them queued on the
   * socket (then waiting for its 'drain'): a range of any size, within the frame limit, never all
   * queued in memory at once.
   * A client that unmaps meanwhile (abandoning the map) detaches the range: the rest is not sent.
   */
  private streamRange(req: number, buffer: number, offset: number, range: ArrayBuffer): void {
    const stream = this.wire.stream as Duplex & { writableNeedDrain?: boolean };
    let done = 0;
    const step = (): void => {
      while (!this.closed) {
        if (range.byteLength === 0) {
          this.fail(req, new DOMException('the mapping was abandoned (unmap() or destroy()) while its bytes were sent', 'AbortError'));
          return;
        }
        if (done >= range.byteLength) {
          this.reply(req, null);
          return;
        }
        const piece = new Uint8Array(range, done, Math.min(STREAM_PIECE_BYTES, range.byteLength - done));
        this.wire.send('MappedData', { buffer, offset: offset + done, data: piece });
        done += piece.byteLength;
        // Up to a window queued, so the socket never runs dry between pieces; past it, wait until it has taken them.
        if (stream.writableLength >= STREAM_WINDOW_BYTES && done < range.byteLength) {
          stream.once('drain', step);
          return;
        }
      }
    };
    step();
  }

  private unmap({ buffer, offset, data }: Payload<'BufferUnmap'>, shared?: { at: number; size: number }): void {
    const entry = this.entry(buffer, 'buffer');
    const target = this.get<GPUBuffer>(buffer, 'buffer');
    this.pipelined(entry.device, () => {
      const mapped = entry.mapped;
      entry.mapped = null;
      const real = target();
      try {
        if (shared && shared.size > 0) {
          const target =
            mapped && offset >= mapped.offset && offset - mapped.offset + shared.size <= mapped.range.byteLength
              ? new Uint8Array(mapped.range, offset - mapped.offset, shared.size)
              : new Uint8Array(real.getMappedRange(offset, shared.size));
          this.sharedRange(shared.at, shared.size).read(shared.at, target);
        } else if (data.byteLength > 0) {
          if (mapped && offset >= mapped.offset && offset - mapped.offset + data.byteLength <= mapped.range.byteLength) {
            new Uint8Array(mapped.range, offset - mapped.offset, data.byteLength).set(data);
          } else {
            new Uint8Array(real.getMappedRange(offset, data.byteLength)).set(data);
          }
        }
      } finally {
        real.unmap();
      }
    });
  }

  // ---- pipelines and encoders -----------------------------------------------------------------

  /**
   * device.createComputePipeline, which must never stop the daemon: Dawn's synchronous creation
   * waits in the driver while a kernel (any process's) runs on the device, on the one thread that
   * serves every session and the operators. The pipeline is made with Dawn's asynchronous creation
   * (VirtualDevice.createComputePipelineDeferred) and exists at once for the client, with the
   * synchronous call's semantics (errors in the scopes current at the call); this session's later
   * messages wait until Dawn has made it, while every other session goes on.
   */
  private createPipeline({ device, id, descriptor }: Payload<'CreateComputePipeline'>): Promise<void> | void {
    const target = this.get<GPUDevice>(device, 'device');
    let ready: Promise<void> | null = null;
    const entry = this.create(id, 'computePipeline', device, () => {
      const real = target() as unknown as Partial<Pick<VirtualDevice, 'createComputePipelineDeferred'>> & GPUDevice;
      const resolved = pipelineDescriptor(this.resolve(descriptor, PIPELINE_KEYS));
      if (!real.createComputePipelineDeferred) return real.createComputePipeline(resolved);
      const made = real.createComputePipelineDeferred(resolved);
      ready = made.ready;
      return made.pipeline;
    });
    if (ready === null) return;
    // What the synchronous call would have thrown (Dawn's TypeError) fails the object, as create() does.
    return (ready as Promise<void>).then(undefined, (error: unknown) => this.failObject(entry, device, error));
  }

  private createPipelineAsync({ req, device, id, descriptor }: Payload<'CreateComputePipelineAsync'>): void {
    const target = this.get<GPUDevice>(device, 'device');
    this.resolveCheck(descriptor, PIPELINE_KEYS);
    // Refused by the tenant's object quota: the promise rejects, and the client never holds the id.
    const refusal = this.account?.refusal() ?? null;
    if (refusal) {
      this.fail(req, new GpunixError(ErrorCodes.QUOTA, refusal));
      return;
    }
    const entry = this.register(id, 'computePipeline', device);
    entry.pending = true;
    const { slot } = splitId(id);
    const forget = () => {
      // A failed creation: the client never holds the id and sends no Release for it.
      this.creations.forget(id);
      if (this.objects.get(slot) === entry) this.drop(slot);
    };
    let promise: Promise<GPUComputePipeline>;
    try {
      promise = target().createComputePipelineAsync(pipelineDescriptor(this.resolve(descriptor, PIPELINE_KEYS)));
    } catch (error) {
      forget();
      this.fail(req, error);
      return;
    }
    promise.then(
      (pipeline) => {
        entry.object = pipeline;
        entry.pending = false;
        this.reply(req, null);
      },
      (error: unknown) => {
        forget();
        this.fail(req, error);
      },
    );
  }

  private finishEncoder({ device, id, descriptor, commands, finishDescriptor }: Payload<'FinishCommandEncoder'>): void {
    const target = this.get<GPUDevice>(device, 'device');
    if (!Array.isArray(commands)) throw malformed('FinishCommandEncoder.commands must be an array of commands');
    // Everything is checked and resolved before anything runs: a protocol error runs nothing.
    const plan = commands.map((command, i) => this.planCommand(command, i));
    this.resolveCheck(descriptor, NO_KEYS);
    this.resolveCheck(finishDescriptor, NO_KEYS);
    let passesBegun = 0;
    let current: 'encoder' | number = 'encoder';
    for (const step of plan) {
      if (step.select !== undefined) {
        if (step.select !== 'encoder' && step.select >= passesBegun) throw malformed(`${SELECT_PASS} ${step.select}: only ${passesBegun} passes were begun`);
        current = step.select;
        continue;
      }
      const spec: CommandSpec = COMMANDS[step.method];
      const onPass = current !== 'encoder';
      if (spec.target === 'pass' && !onPass) throw malformed(`${step.method} needs a compute pass: begin one or select one with ${SELECT_PASS}`);
      if (spec.target === 'encoder' && onPass && !DEBUG_COMMANDS.has(step.method)) {
        throw malformed(`${step.method} is a command encoder method, but a pass is the current target: select the encoder with ${SELECT_ENCODER}`);
      }
      if (step.method === 'beginComputePass') current = passesBegun++;
      else if (step.method === 'end') current = 'encoder';
    }
    this.create(id, 'commandBuffer', device, () => {
      const encoder = target().createCommandEncoder(this.optional(descriptor) as GPUCommandEncoderDescriptor | undefined);
      const passes: GPUComputePassEncoder[] = [];
      let on: object = encoder;
      for (const step of plan) {
        if (step.select !== undefined) {
          on = step.select === 'encoder' ? encoder : passes[step.select];
          continue;
        }
        let result: unknown;
        try {
          result = (on as Record<string, (...args: unknown[]) => unknown>)[step.method](...step.args());
        } catch (error) {
          // Without its pass the rest cannot be replayed: the command buffer fails (reported once).
          if (step.method === 'beginComputePass') throw error;
          // Dawn threw for one call (as it would have at the program's call): report it, go on.
          this.uncaught(device, error);
        }
        if (step.method === 'beginComputePass') {
          passes.push(result as GPUComputePassEncoder);
          on = result as object;
        } else if (step.method === 'end') {
          on = encoder;
        }
      }
      return encoder.finish(this.optional(finishDescriptor) as GPUCommandBufferDescriptor | undefined);
    });
  }

  /** Checks one recorded command against the table; returns how to make its arguments when it runs. */
  private planCommand(command: unknown, index: number): { select?: 'encoder' | number; method: CommandName; args: () => unknown[] } {
    if (!Array.isArray(command) || typeof command[0] !== 'string') throw malformed(`command ${index} is not [method, ...args]`);
    const [method, ...args] = command as [string, ...unknown[]];
    if (method === SELECT_ENCODER && args.length === 0) return { select: 'encoder', method: 'end', args: () => [] };
    if (method === SELECT_PASS) {
      if (args.length !== 1 || !Number.isSafeInteger(args[0]) || (args[0] as number) < 0) throw malformed(`command ${index}: ${SELECT_PASS} takes a pass number`);
      return { select: args[0] as number, method: 'end', args: () => [] };
    }
    if (!Object.prototype.hasOwnProperty.call(COMMANDS, method)) throw malformed(`command ${index}: ${JSON.stringify(method).slice(0, 60)} is not a recordable command`);
    const spec: CommandSpec = COMMANDS[method as CommandName];
    const kinds = matchOverload(spec, args);
    if (!kinds) throw malformed(`command ${index}: the arguments of ${method} match none of its forms`);
    // Object references are checked now; they are read when the command runs.
    const makers = args.map((arg, i) => {
      const kind = kinds[i].replace(/=$/, '');
      const refKind = refKindOf(kind);
      if (refKind) {
        if (arg === null) return () => null;
        return this.get((arg as { $ref: number }).$ref, refKind);
      }
      if (kind === 'passDescriptor') {
        if (arg === null) return () => undefined;
        this.resolveCheck(arg, PASS_KEYS);
        return () => this.resolve(arg, PASS_KEYS);
      }
      if (kind === 'bytes') return () => new Uint8Array(arg as number[]);
      if (kind === 'u32[]') return () => [...(arg as number[])];
      return () => arg;
    });
    return { method: method as CommandName, args: () => makers.map((make) => make()) };
  }

  /** Checks a descriptor's references now (protocol errors before anything runs). */
  private resolveCheck(value: unknown, keys: KeyKinds, kind: ObjectKind | null = null, depth = 0): void {
    if (depth > MAX_DEPTH) throw malformed(`a descriptor nests deeper than ${MAX_DEPTH} levels`);
    if (value === null || typeof value !== 'object') return;
    if (isRef(value)) {
      this.entry(value.$ref, kind);
      return;
    }
    if (Array.isArray(value)) for (const item of value) this.resolveCheck(item, keys, kind, depth + 1);
    else for (const [key, item] of Object.entries(value)) this.resolveCheck(item, keys, keys[key] ?? null, depth + 1);
  }
}

/** A limits object (Dawn's GPUSupportedLimits or the kernel's plain record) as plain data. */
function limitsOf(limits: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  const source = limits as Record<string, unknown>;
  for (const key of keysOf(source)) if (typeof source[key] === 'number') out[key] = source[key] as number;
  return out;
}

function infoOf(info: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const source = info as Record<string, unknown>;
  for (const key of keysOf(source)) {
    const value = source[key];
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') out[key] = value;
  }
  return out;
}

/** Own and prototype getter keys: Dawn's info and limits objects keep their fields on the prototype. */
function keysOf(object: Record<string, unknown>): string[] {
  const keys = new Set<string>(Object.keys(object));
  for (let proto = Object.getPrototypeOf(object); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const key of Object.getOwnPropertyNames(proto)) if (key !== 'constructor') keys.add(key);
  }
  return [...keys];
}

const isDictionary = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * A pipeline descriptor with `compute` a dictionary: the kernel passes a missing one on to Dawn as
 * an explicit undefined, on which Dawn's bindings abort the process; {} makes Dawn throw its TypeError.
 */
function pipelineDescriptor(resolved: unknown): GPUComputePipelineDescriptor {
  const descriptor = resolved as Record<string, unknown>;
  return (isDictionary(descriptor.compute) ? descriptor : { ...descriptor, compute: {} }) as unknown as GPUComputePipelineDescriptor;
}

/** A bind group descriptor whose entries are dictionaries with a `resource` (same reason as above). */
function bindGroupDescriptor(resolved: unknown): GPUBindGroupDescriptor {
  const descriptor = resolved as Record<string, unknown>;
  if (!Array.isArray(descriptor.entries)) return descriptor as unknown as GPUBindGroupDescriptor;
  const entries = descriptor.entries.map((entry: unknown) => {
    const dictionary = isDictionary(entry) ? entry : {};
    return 'resource' in dictionary ? dictionary : { ...dictionary, resource: {} };
  });
  return { ...descriptor, entries } as unknown as GPUBindGroupDescriptor;
}
