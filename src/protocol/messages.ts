// The wire protocol's messages, defined once, as data. The codec (codec.ts), the TypeScript types
// of every payload, the daemon's dispatch and the generated reference (docs/protocol.md) all derive
// from this table; adding a message means adding a row here and a handler where it is received.
//
// Conventions:
// - `req` is a client-chosen request number; the daemon answers it with exactly one Reply,
//   ReplyData or Failure carrying the same `req`. Messages without `req` get no answer: they are
//   pipelined, and their WebGPU errors travel the way WebGPU's do (error scopes, uncaptured-error
//   events), in the order the messages were sent.
// - Object ids (`id` fields, and `{"$ref": id}` inside JSON descriptors) are chosen by the client:
//   the low 32 bits are a slot, the bits above a generation that changes each time a slot is
//   reused, so a stale id can never name a newer object. Creating an object never waits.

/**
 * Bumped on any change to the table that an older peer would misread. 3: the bulk-data messages
 * (codes 43-50: BulkRegion..BufferWriteMapped), which a client sends only to a daemon whose Welcome says 3 or more.
 * 4: moving a process between nodes (codes 51-54: MoveBegin..MoveCancelled; 87-90: MigrateIn..MigrateAbort):
 * a daemon moves only a process whose client said 4 or more in its Hello.
 */
export const PROTOCOL_VERSION = 4;

/** The oldest client version the daemon still serves (it then never sees the messages added since). */
export const MIN_PROTOCOL_VERSION = 2;

/** Largest frame a daemon or client accepts unless configured otherwise (bytes, header included). */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024;

/**
 * How each field kind is laid out (little-endian):
 * u8, u16, u32: unsigned integers; f64: IEEE double; bool: one byte, 0 or 1;
 * str: u32 byte length + UTF-8; bytes: u32 length + raw bytes; json: u32 length + UTF-8 JSON;
 * id: u32 slot + u32 generation; ids: u32 count + that many ids.
 */
export const FIELD_KINDS = ['u8', 'u16', 'u32', 'f64', 'bool', 'str', 'bytes', 'json', 'id', 'ids'] as const;
export type FieldKind = (typeof FIELD_KINDS)[number];

/** The JavaScript value each field kind decodes to. */
export interface FieldValue {
  u8: number;
  u16: number;
  u32: number;
  f64: number;
  bool: boolean;
  str: string;
  bytes: Uint8Array;
  json: unknown;
  id: number;
  ids: number[];
}

/** Who sends a message: the client, the daemon, or the handshake's first message. */
export type Direction = 'client' | 'daemon';

/** Which sessions may send a message: process sessions (a program's GPU), control sessions (operators), or both. */
export type SessionRole = 'process' | 'control' | 'any';

interface MessageSpec {
  readonly code: number;
  readonly from: Direction;
  readonly role: SessionRole;
  readonly doc: string;
  readonly fields: Readonly<Record<string, FieldKind>>;
  /** What answers it (for messages with `req`). */
  readonly reply?: string;
}

export const MESSAGES = {
  // ---- session ----------------------------------------------------------------------------------
  Hello: {
    code: 1, from: 'client', role: 'any',
    doc: 'The first frame of every session. `role` is "process" (a program\'s GPU: the daemon spawns a process for the session) or "control" (an operator). `options` (process role): {memoryLimit?, restoreImage?, device?, resume?} where restoreImage is a process image path on the daemon\'s machine to restore as this session\'s process, device (an index or id such as "gpu1") the device the process stands on (default: placement), and resume the token of a Moved message: the session takes over the process that moved here (the token is the credential: `token` is ignored; it is good once, for 30 s). `priority` "" and `weight` 0 ask for none: the daemon\'s defaults (normal, 1), or a restored image\'s own; what the client asks for (priority, weight, memoryLimit) wins over the image\'s.',
    fields: { version: 'u16', role: 'str', token: 'str', name: 'str', priority: 'str', weight: 'f64', options: 'json' },
    reply: 'Welcome, or ProtocolError and close',
  },
  Welcome: {
    code: 2, from: 'daemon', role: 'any',
    doc: 'The handshake succeeded. `pid` is the session\'s process (0 for control sessions); `admin` says whether the token is the admin token.',
    fields: { version: 'u16', session: 'u32', pid: 'u32', tenant: 'str', admin: 'bool' },
  },
  Goodbye: {
    code: 3, from: 'client', role: 'any',
    doc: 'Ends the session gracefully. A process session\'s process exits with `code` once its queued work has finished; the reply\'s result is its exit status.',
    fields: { req: 'u32', code: 'u32' },
    reply: 'Reply {code, reason, message?}',
  },
  ProtocolError: {
    code: 4, from: 'daemon', role: 'any',
    doc: 'The session broke the protocol (or failed the handshake): the daemon sends this, then closes this session only.',
    fields: { code: 'str', message: 'str' },
  },
  Ping: {
    code: 5, from: 'client', role: 'any',
    doc: 'A round trip through the session\'s queue of messages (latency probes).',
    fields: { req: 'u32' },
    reply: 'Reply null',
  },
  Reply: {
    code: 8, from: 'daemon', role: 'any',
    doc: 'The answer to request `req`.',
    fields: { req: 'u32', result: 'json' },
  },
  ReplyData: {
    code: 9, from: 'daemon', role: 'any',
    doc: 'The answer to request `req`, with bytes (a mapped buffer range).',
    fields: { req: 'u32', result: 'json', data: 'bytes' },
  },
  Failure: {
    code: 10, from: 'daemon', role: 'any',
    doc: 'Request `req` failed. `code` is a GPUNIX_E_* code for gpunix errors, or empty for a WebGPU error, whose class or DOMException name is `name`.',
    fields: { req: 'u32', code: 'str', name: 'str', message: 'str' },
  },
  Progress: {
    code: 15, from: 'daemon', role: 'control',
    doc: 'How far a long request `req` has got, before its Reply: `done` of `total` units of `what` ("bytes written": a checkpoint\'s image file; "bytes swapped out": a swap-out\'s buffers). Sent when the work starts, then at most about every 100 ms, and when it is complete.',
    fields: { req: 'u32', what: 'str', done: 'f64', total: 'f64' },
  },
  UncapturedError: {
    code: 12, from: 'daemon', role: 'process',
    doc: 'A WebGPU error no error scope captured, for the device\'s uncapturederror event. `type` is validation, out-of-memory or internal.',
    fields: { device: 'id', type: 'str', message: 'str' },
  },
  DeviceLost: {
    code: 13, from: 'daemon', role: 'process',
    doc: 'The device is lost (destroyed, its process ended, or the physical device was lost).',
    fields: { device: 'id', reason: 'str', message: 'str' },
  },
  ProcessEnded: {
    code: 14, from: 'daemon', role: 'process',
    doc: 'The session\'s process ended (killed, out of memory, daemon shutdown...). The daemon closes the session after it.',
    fields: { code: 'u32', reason: 'str', message: 'str' },
  },

  // ---- WebGPU (process sessions) ------------------------------------------------------------------
  RequestAdapter: {
    code: 16, from: 'client', role: 'process',
    doc: 'navigator.gpu.requestAdapter(options). The result is null (no adapter) or {features, limits, info, featureLevel}.',
    fields: { req: 'u32', adapter: 'id', options: 'json' },
    reply: 'Reply',
  },
  RequestDevice: {
    code: 17, from: 'client', role: 'process',
    doc: 'adapter.requestDevice(descriptor), creating `device` and its `queue`. The result is {features, limits}.',
    fields: { req: 'u32', adapter: 'id', device: 'id', queue: 'id', descriptor: 'json' },
    reply: 'Reply or Failure',
  },
  DeviceDestroy: {
    code: 18, from: 'client', role: 'process',
    doc: 'device.destroy().',
    fields: { device: 'id' },
  },
  PushErrorScope: {
    code: 19, from: 'client', role: 'process',
    doc: 'device.pushErrorScope(filter).',
    fields: { device: 'id', filter: 'str' },
  },
  PopErrorScope: {
    code: 20, from: 'client', role: 'process',
    doc: 'device.popErrorScope(). The result is null or {type, message}.',
    fields: { req: 'u32', device: 'id' },
    reply: 'Reply or Failure (OperationError: no scope)',
  },
  CreateBuffer: {
    code: 21, from: 'client', role: 'process',
    doc: 'device.createBuffer(descriptor). With mappedAtCreation, the client keeps the mapped bytes and sends them with BufferUnmap.',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  BufferMapAsync: {
    code: 22, from: 'client', role: 'process',
    doc: 'buffer.mapAsync(mode, offset, size). The reply carries the range\'s current bytes.',
    fields: { req: 'u32', buffer: 'id', mode: 'u32', offset: 'f64', size: 'f64' },
    reply: 'ReplyData or Failure',
  },
  BufferUnmap: {
    code: 23, from: 'client', role: 'process',
    doc: 'buffer.unmap(). `data` holds the bytes of the mapped range from `offset` when it was mapped for writing (or at creation); empty otherwise.',
    fields: { buffer: 'id', offset: 'f64', data: 'bytes' },
  },
  BufferDestroy: {
    code: 24, from: 'client', role: 'process',
    doc: 'buffer.destroy().',
    fields: { buffer: 'id' },
  },
  QueueWriteBuffer: {
    code: 25, from: 'client', role: 'process',
    doc: 'queue.writeBuffer(buffer, offset, data).',
    fields: { queue: 'id', buffer: 'id', offset: 'f64', data: 'bytes' },
  },
  CreateShaderModule: {
    code: 26, from: 'client', role: 'process',
    doc: 'device.createShaderModule(descriptor).',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  GetCompilationInfo: {
    code: 27, from: 'client', role: 'process',
    doc: 'shaderModule.getCompilationInfo(). The result is {messages: [{type, message, lineNum, linePos, offset, length}]}.',
    fields: { req: 'u32', module: 'id' },
    reply: 'Reply',
  },
  CreateComputePipeline: {
    code: 28, from: 'client', role: 'process',
    doc: 'device.createComputePipeline(descriptor).',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  CreateComputePipelineAsync: {
    code: 29, from: 'client', role: 'process',
    doc: 'device.createComputePipelineAsync(descriptor).',
    fields: { req: 'u32', device: 'id', id: 'id', descriptor: 'json' },
    reply: 'Reply or Failure (GPUPipelineError)',
  },
  GetBindGroupLayout: {
    code: 30, from: 'client', role: 'process',
    doc: 'pipeline.getBindGroupLayout(index), as object `id`.',
    fields: { pipeline: 'id', index: 'u32', id: 'id' },
  },
  CreateBindGroupLayout: {
    code: 31, from: 'client', role: 'process',
    doc: 'device.createBindGroupLayout(descriptor).',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  CreatePipelineLayout: {
    code: 32, from: 'client', role: 'process',
    doc: 'device.createPipelineLayout(descriptor).',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  CreateBindGroup: {
    code: 33, from: 'client', role: 'process',
    doc: 'device.createBindGroup(descriptor).',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  CreateQuerySet: {
    code: 34, from: 'client', role: 'process',
    doc: 'device.createQuerySet(descriptor).',
    fields: { device: 'id', id: 'id', descriptor: 'json' },
  },
  QuerySetDestroy: {
    code: 35, from: 'client', role: 'process',
    doc: 'querySet.destroy().',
    fields: { querySet: 'id' },
  },
  FinishCommandEncoder: {
    code: 36, from: 'client', role: 'process',
    doc: 'A command encoder\'s whole recording, sent at finish(): the daemon replays `commands` ([method, ...args] in call order, passes included) into an encoder made with `descriptor` and finishes it as command buffer `id` (with `finishDescriptor`).',
    fields: { device: 'id', id: 'id', descriptor: 'json', commands: 'json', finishDescriptor: 'json' },
  },
  QueueSubmit: {
    code: 37, from: 'client', role: 'process',
    doc: 'queue.submit(commandBuffers).',
    fields: { queue: 'id', commandBuffers: 'ids' },
  },
  QueueOnSubmittedWorkDone: {
    code: 38, from: 'client', role: 'process',
    doc: 'queue.onSubmittedWorkDone().',
    fields: { req: 'u32', queue: 'id' },
    reply: 'Reply',
  },
  Release: {
    code: 39, from: 'client', role: 'process',
    doc: 'The program dropped these objects (the client\'s garbage collector saw them go): the daemon forgets them and their slots may be reused with a new generation.',
    fields: { ids: 'ids' },
  },
  SetLabel: {
    code: 40, from: 'client', role: 'process',
    doc: 'object.label = label.',
    fields: { object: 'id', label: 'str' },
  },
  BindRestored: {
    code: 41, from: 'client', role: 'process',
    doc: 'On a device that received a restored process image, gives client ids to the restored objects `device.gpunix` finds by label: one id per entry of RequestDevice\'s `restored` result ({buffers: [{label, size, usage}], pipelines: [{label}], shaderModules: [{label}]}), in that order.',
    fields: { device: 'id', buffers: 'ids', pipelines: 'ids', shaderModules: 'ids' },
  },
  AttachShared: {
    code: 42, from: 'client', role: 'process',
    doc: 'device.gpunix.attachShared(name, size), as buffer `id`: the tenant\'s named shared segment (created with `size` bytes when new). A refusal (another size, over a limit) is an UncapturedError on the device and leaves `id` an invalid buffer.',
    fields: { device: 'id', id: 'id', name: 'str', size: 'f64' },
  },
  BulkRegion: {
    code: 43, from: 'client', role: 'process',
    doc: 'Asks for the session\'s shared-memory region (protocol 3; docs/daemon.md, "Bulk data"), of `size` bytes, or less (the daemon\'s limits: sharedMemory.maxBytes, and what is left of the tenant\'s maxBytesPerTenant; it never shrinks). The first one asks the daemon to make it: the result is {path: "", size, handoff: {socket, key}, limit} for a sealed memory file (limit: the most it may grow to, which the client may reserve address space for), whose descriptor the client receives by connecting to `socket` and writing `key` and a newline (SCM_RIGHTS; src/daemon/regionHandoff.ts), or {path, size} for a tmpfs file the client opens read-write by name (a daemon without the libc calls); either way the client then confirms with BulkRegionOpened; a later one grows it: {path: "", size}. Failure GPUNIX_E_UNSUPPORTED where there is none (not a Unix socket, no usable shared-memory directory): the session\'s bulk data then travels in frames.',
    fields: { req: 'u32', size: 'f64' },
    reply: 'Reply or Failure',
  },
  BulkRegionOpened: {
    code: 44, from: 'client', role: 'process',
    doc: 'The client has taken the region BulkRegion offered (`ok`), or could not (`ok` false: the daemon drops it). Either way the daemon unlinks a tmpfs file\'s name, or withdraws a memory file\'s offer: from then on only the two open descriptors reach it.',
    fields: { ok: 'bool' },
  },
  BufferMapAsyncStreamed: {
    code: 48, from: 'client', role: 'process',
    doc: 'buffer.mapAsync(mode, offset, size) for a large range over frames (protocol 3): the range\'s bytes come in MappedData frames of at most 8 MiB, each written once the socket has taken the one before, then the Reply null.',
    fields: { req: 'u32', buffer: 'id', mode: 'u32', offset: 'f64', size: 'f64' },
    reply: 'MappedData*, then Reply or Failure',
  },
  MappedData: {
    code: 49, from: 'daemon', role: 'process',
    doc: 'A piece of the range a BufferMapAsyncStreamed of `buffer` mapped: its bytes from `offset` (in the buffer).',
    fields: { buffer: 'id', offset: 'f64', data: 'bytes' },
  },
  BufferWriteMapped: {
    code: 50, from: 'client', role: 'process',
    doc: 'A piece of a large mapped range the program wrote (protocol 3): `data` goes into the mapped range at `offset` (in the buffer); sent in pieces of at most 8 MiB ahead of the BufferUnmap (with empty data) that ends the mapping.',
    fields: { buffer: 'id', offset: 'f64', data: 'bytes' },
  },
  QueueWriteBufferShared: {
    code: 45, from: 'client', role: 'process',
    doc: 'queue.writeBuffer(buffer, offset, data) with the `size` bytes of data at `at` in the session\'s region. The daemon reads them when it runs the message; the client may reuse that space once any reply to a request sent after it has arrived.',
    fields: { queue: 'id', buffer: 'id', offset: 'f64', at: 'f64', size: 'f64' },
  },
  BufferMapAsyncShared: {
    code: 46, from: 'client', role: 'process',
    doc: 'buffer.mapAsync(mode, offset, size), the range\'s bytes delivered into the session\'s region at `at` (the client keeps that space for them) before the Reply null.',
    fields: { req: 'u32', buffer: 'id', mode: 'u32', offset: 'f64', size: 'f64', at: 'f64' },
    reply: 'Reply or Failure',
  },
  BufferUnmapShared: {
    code: 47, from: 'client', role: 'process',
    doc: 'buffer.unmap() of a range mapped for writing (or at creation): the `size` bytes written from `offset` are at `at` in the session\'s region, read by the daemon when it runs the message.',
    fields: { buffer: 'id', offset: 'f64', at: 'f64', size: 'f64' },
  },

  // ---- moving a process to another node (protocol 4; docs/fleet.md, "Live migration between nodes") ----
  MoveBegin: {
    code: 51, from: 'daemon', role: 'process',
    doc: 'The daemon is about to move this session\'s process to another node. The client answers MoveFence at once and from then on keeps what the program sends in memory (in order) until Moved or MoveCancelled.',
    fields: {},
  },
  MoveFence: {
    code: 52, from: 'client', role: 'process',
    doc: 'The answer to MoveBegin: nothing the client sent after this frame is on this connection. The daemon runs what came before it, waits for the replies it owes and the work it queued, and moves the process.',
    fields: {},
  },
  Moved: {
    code: 53, from: 'daemon', role: 'process',
    doc: 'The process now runs on another node, with every object under the same id and every reply owed already sent. `address` is {socket} (a Unix socket path) or {url} ("tcp://host:port" or "tls://host:port"); the client opens a session there with Hello options {resume: token}, then sends what it kept. The daemon closes this connection after it; the client\'s shared-memory region (if any) stays behind.',
    fields: { address: 'json', token: 'str' },
  },
  MoveCancelled: {
    code: 54, from: 'daemon', role: 'process',
    doc: 'The move failed (`reason`); the process goes on here, untouched. The client sends what it kept, on this connection.',
    fields: { reason: 'str' },
  },

  // ---- control (operators) -----------------------------------------------------------------------
  ListProcesses: {
    code: 64, from: 'client', role: 'control',
    doc: 'The process table: the caller\'s tenant\'s processes, or all for the admin (exited ones until reaped, kernel exitedRetentionMs). Result: {processes: ProcessRecord[]}, each with devices: the ids of the devices it is on now.',
    fields: { req: 'u32' },
    reply: 'Reply',
  },
  KillProcess: {
    code: 65, from: 'client', role: 'control',
    doc: 'Kills a process. Result: its exit status.',
    fields: { req: 'u32', pid: 'u32' },
    reply: 'Reply or Failure',
  },
  SuspendProcess: {
    code: 66, from: 'client', role: 'control',
    doc: 'Suspends a process at the next atom boundary; with `swap`, also frees its device memory (Progress messages with this `req` follow the buffers moved out). Result: its record.',
    fields: { req: 'u32', pid: 'u32', swap: 'bool' },
    reply: 'Progress* (swap) then Reply or Failure',
  },
  ResumeProcess: {
    code: 67, from: 'client', role: 'control',
    doc: 'Resumes a suspended (or swapped-out) process. Result: its record.',
    fields: { req: 'u32', pid: 'u32' },
    reply: 'Reply or Failure',
  },
  ReniceProcess: {
    code: 68, from: 'client', role: 'control',
    doc: 'Changes a process\'s priority class and/or weight: `options` is {priority?, weight?}. Result: its record.',
    fields: { req: 'u32', pid: 'u32', options: 'json' },
    reply: 'Reply or Failure',
  },
  ListDevices: {
    code: 69, from: 'client', role: 'control',
    doc: 'The daemon\'s devices with their budgets and current use. Result: {devices: DeviceStats[]}.',
    fields: { req: 'u32' },
    reply: 'Reply',
  },
  MemoryReport: {
    code: 70, from: 'client', role: 'control',
    doc: 'Memory per device (budget, used, evicted) and per process (resident, evicted, evictions, restores), limited to the caller\'s tenant unless admin. Result: {devices, processes, swap}.',
    fields: { req: 'u32' },
    reply: 'Reply',
  },
  GetTrace: {
    code: 71, from: 'client', role: 'control',
    doc: 'The atom timeline in the Chrome trace event format, limited to `pid` (0: every process the caller may see).',
    fields: { req: 'u32', pid: 'u32' },
    reply: 'Reply',
  },
  CheckpointProcess: {
    code: 72, from: 'client', role: 'control',
    doc: 'Writes a process image of `pid` to `path` on the daemon\'s machine. `options`: {timeoutMs?} (null: the default, 30000): how long to wait for the process to stop at a piece boundary, behind earlier operations on it included; past it the Failure is GPUNIX_E_TIMEOUT and the process goes on as it was. Progress messages with this `req` follow the image file as it is written. Result: {path, bytes, sha256}.',
    fields: { req: 'u32', pid: 'u32', path: 'str', options: 'json' },
    reply: 'Progress* then Reply or Failure',
  },
  MigrateProcess: {
    code: 73, from: 'client', role: 'control',
    doc: 'Moves a live process to device `device` (an id such as "gpu1"). `options`: {timeoutMs?}, as for CheckpointProcess. Result: its record. With `device` "" and `options` {node} (a fleet node\'s name) or {to} (a daemon\'s address: a socket path, "tcp://host:port" or "tls://host:port"), and optionally {token} (the admin token of the daemon there; default: this daemon\'s migration.peerToken), {timeoutMs}, {rounds}: moves it live to that node (docs/fleet.md, "Live migration between nodes"); Progress messages ("bytes sent") follow the copy. Result: {moved: true, node, address, pid (there), bytes, rounds, totalMs, downtimeMs (MoveBegin sent to Moved sent: the program\'s calls wait this long), finalBytes (bytes sent during that stop: buffers dirty at the end, or made during the copy), finalMs (the part of downtimeMs spent reading and sending them), bytesPerSecond (bytes / totalMs)}. Admin only.',
    fields: { req: 'u32', pid: 'u32', device: 'str', options: 'json' },
    reply: 'Reply or Failure',
  },
  ListTenants: {
    code: 74, from: 'client', role: 'control',
    doc: 'Tenants with their quotas and use (the caller\'s own unless admin). Result: {tenants}.',
    fields: { req: 'u32' },
    reply: 'Reply',
  },
  AddTenant: {
    code: 75, from: 'client', role: 'control',
    doc: 'Admin only. Adds tenant `name` with `quota` {memoryLimit?, weight?, maxProcesses?, priorities?, maxDispatchMs?, maxObjects?, maxShaderBytes?}. Result: {name, token}: the token is shown this once; the daemon keeps only its hash.',
    fields: { req: 'u32', name: 'str', quota: 'json' },
    reply: 'Reply or Failure',
  },
  UpdateTenant: {
    code: 76, from: 'client', role: 'control',
    doc: 'Admin only. Changes tenant `name`\'s quota (fields given replace those set); with `rotateToken`, issues a new token. Result: the tenant, and {token} when rotated.',
    fields: { req: 'u32', name: 'str', quota: 'json', rotateToken: 'bool' },
    reply: 'Reply or Failure',
  },
  RemoveTenant: {
    code: 77, from: 'client', role: 'control',
    doc: 'Admin only. Removes tenant `name`; its live processes are killed first.',
    fields: { req: 'u32', name: 'str' },
    reply: 'Reply or Failure',
  },
  DaemonStatus: {
    code: 78, from: 'client', role: 'control',
    doc: 'Kernel statistics (as kernel.stats(), limited to the caller\'s tenant unless admin), sessions and uptime.',
    fields: { req: 'u32' },
    reply: 'Reply',
  },

  // ---- fleet (control sessions of a daemon with a `fleet` section; docs/fleet.md) -----------------
  // On a daemon with no fleet section each answers Failure GPUNIX_E_FLEET_UNAVAILABLE. A tenant
  // sees and acts on its own jobs only: another tenant's job is GPUNIX_E_NO_SUCH_JOB, as a missing one is.
  SubmitJob: {
    code: 79, from: 'client', role: 'control',
    doc: 'Submits job `spec` (a job spec, docs/fleet.md) to the fleet as a pending job. A tenant\'s job is its own: `spec.tenant` absent becomes the caller\'s, another is GPUNIX_E_FORBIDDEN; the admin names any tenant (absent: the admin\'s own, "default"). A bad spec is GPUNIX_E_BAD_JOB naming the field. Result: the JobRecord.',
    fields: { req: 'u32', spec: 'json' },
    reply: 'Reply or Failure',
  },
  ListJobs: {
    code: 80, from: 'client', role: 'control',
    doc: 'The fleet\'s jobs (the caller\'s tenant\'s, or all for the admin), oldest first; `phase`: null, or an array of phases to keep. Result: {jobs: JobRecord[]}.',
    fields: { req: 'u32', phase: 'json' },
    reply: 'Reply or Failure',
  },
  ShowJob: {
    code: 81, from: 'client', role: 'control',
    doc: 'Job `id` and its members\' statuses as their nodes report them. Result: {job: JobRecord, members: Array<MemberStatus & {member}>}.',
    fields: { req: 'u32', id: 'str' },
    reply: 'Reply or Failure',
  },
  CancelJob: {
    code: 82, from: 'client', role: 'control',
    doc: 'Asks the fleet to end job `id` (the scheduler ends its members and marks it cancelled); a finished job is left as it is. Result: the JobRecord (cancelRequested true).',
    fields: { req: 'u32', id: 'str' },
    reply: 'Reply or Failure',
  },
  ListNodes: {
    code: 83, from: 'client', role: 'control',
    doc: 'The fleet\'s live nodes, each with what is bound on it per device. Result: {nodes: Array<NodeRecord & {allocated: Array<{share, memory, members}>}>}.',
    fields: { req: 'u32' },
    reply: 'Reply or Failure',
  },
  ListQueues: {
    code: 84, from: 'client', role: 'control',
    doc: 'The fleet\'s queues (those set, and those jobs name), with their use. Result: {queues: Array<QueueSpec & {set, used, pending, running}>}.',
    fields: { req: 'u32' },
    reply: 'Reply or Failure',
  },
  SetQueue: {
    code: 85, from: 'client', role: 'control',
    doc: 'Admin only. Sets queue `spec` {name, guaranteed?, limit?, weight?} (replacing what was set). Result: the QueueSpec stored.',
    fields: { req: 'u32', spec: 'json' },
    reply: 'Reply or Failure',
  },
  RemoveQueue: {
    code: 86, from: 'client', role: 'control',
    doc: 'Admin only. Removes queue `name`\'s spec (its jobs stay; the queue then has the defaults). Result: {name, removed: true}.',
    fields: { req: 'u32', name: 'str' },
    reply: 'Reply or Failure',
  },

  // ---- node to node: a process moving in (admin control sessions of a peer daemon) -----------------
  MigrateIn: {
    code: 87, from: 'client', role: 'control',
    doc: 'A peer daemon starts moving a process here: `process` is {name, tenant, priority, weight, memoryLimit}; `log` is the session\'s creation log ([name, payload] pairs: the messages that made its live objects, in order). The daemon spawns the process under that tenant (which must exist here) and replays the log on it with no client attached. Result: {migration} (an id for the messages below). Admin only.',
    fields: { req: 'u32', process: 'json', log: 'json' },
    reply: 'Reply or Failure',
  },
  MigrateData: {
    code: 88, from: 'client', role: 'control',
    doc: 'Contents of buffer `buffer` (a client id in the log, or made by the log MigrateCommit carries: such pieces wait for it) from `offset`, for migration `migration`; a later piece of the same range replaces an earlier one. Result: null once taken.',
    fields: { req: 'u32', migration: 'str', buffer: 'id', offset: 'f64', data: 'bytes' },
    reply: 'Reply or Failure',
  },
  MigrateCommit: {
    code: 89, from: 'client', role: 'control',
    doc: 'Every byte has been sent; `state` is {errorScopes: [{device, scopes: [{filter, error: {type, message} | null}]}]} (the open error scopes, innermost last). The buffers take their contents and the process waits for its client (Hello options {resume}). Result: {pid, token}.',
    fields: { req: 'u32', migration: 'str', state: 'json' },
    reply: 'Reply or Failure',
  },
  SegmentOpen: {
    code: 91, from: 'client', role: 'control',
    doc: 'A peer daemon attaches its node to tenant `tenant`\'s shared segment `name` of `size` bytes homed here (docs/memory.md, "Shared segments across nodes"), creating it if new. Result: {segment} (a handle for the messages below, on this session). Admin only.',
    fields: { req: 'u32', tenant: 'str', name: 'str', size: 'f64' },
    reply: 'Reply or Failure',
  },
  SegmentPull: {
    code: 92, from: 'client', role: 'control',
    doc: 'The segment\'s blocks that changed since this session last had them (64 KiB blocks; completed writes of every node count). Result: {blocks: [[offset, length], ...]} with their bytes, in order, as `data`.',
    fields: { req: 'u32', segment: 'u32' },
    reply: 'ReplyData or Failure',
  },
  SegmentPush: {
    code: 93, from: 'client', role: 'control',
    doc: 'Writes the peer\'s node made: `runs` [[offset, length], ...] (word-aligned, in order) with their bytes, in order, as `data`; only those bytes change here. Result: null once applied.',
    fields: { req: 'u32', segment: 'u32', runs: 'json', data: 'bytes' },
    reply: 'Reply or Failure',
  },
  SegmentClose: {
    code: 94, from: 'client', role: 'control',
    doc: 'The peer\'s node no longer attaches the segment (also when its session closes); the last detach anywhere frees it. Result: null.',
    fields: { req: 'u32', segment: 'u32' },
    reply: 'Reply',
  },
  HostStore: {
    code: 95, from: 'client', role: 'control',
    doc: 'A peer daemon keeps evicted buffer contents in this node\'s host memory (its remote tier: docs/memory.md, "Remote host memory as a tier"), within this daemon\'s lendHostMemory. Result: {key}. Failure GPUNIX_E_OUT_OF_MEMORY when there is no room. Admin only.',
    fields: { req: 'u32', data: 'bytes' },
    reply: 'Reply or Failure',
  },
  HostFetch: {
    code: 96, from: 'client', role: 'control',
    doc: 'The bytes kept under `key` (by this session). Result: null, with the bytes as `data`.',
    fields: { req: 'u32', key: 'str' },
    reply: 'ReplyData or Failure',
  },
  HostDrop: {
    code: 97, from: 'client', role: 'control',
    doc: 'Frees what is kept under `keys` (by this session); what a session kept is freed when it closes. Result: null.',
    fields: { req: 'u32', keys: 'json' },
    reply: 'Reply',
  },
  MigrateAbort: {
    code: 90, from: 'client', role: 'control',
    doc: 'Gives up migration `migration`: the process made for it is killed (as it is when the peer\'s session closes before the commit). Result: null.',
    fields: { req: 'u32', migration: 'str' },
    reply: 'Reply',
  },
} as const satisfies Record<string, MessageSpec>;

export type MessageName = keyof typeof MESSAGES;

type Spec<N extends MessageName> = (typeof MESSAGES)[N];

/** The json fields of message N: a sender may leave them out (they go as null). */
type JsonFields<N extends MessageName> = { [F in keyof Spec<N>['fields']]: Spec<N>['fields'][F] extends 'json' ? F : never }[keyof Spec<N>['fields']];

/** The payload of message N: one property per field, typed by its kind (json ones optional). */
export type Payload<N extends MessageName> = {
  -readonly [F in Exclude<keyof Spec<N>['fields'], JsonFields<N>>]: FieldValue[Spec<N>['fields'][F] & FieldKind];
} & {
  -readonly [F in JsonFields<N>]?: unknown;
};

/** A decoded message: its name and payload. */
export type Message = { [N in MessageName]: { name: N; payload: Payload<N> } }[MessageName];

/** Messages by their wire code. */
export const MESSAGE_BY_CODE: ReadonlyMap<number, MessageName> = new Map(
  (Object.keys(MESSAGES) as MessageName[]).map((name) => [MESSAGES[name].code, name]),
);

/** Names of the messages a client may send on a session of `role` (after the handshake). */
export function acceptedFrom(role: 'process' | 'control'): Set<MessageName> {
  return new Set(
    (Object.keys(MESSAGES) as MessageName[]).filter((name) => {
      const spec: MessageSpec = MESSAGES[name];
      return spec.from === 'client' && name !== 'Hello' && (spec.role === 'any' || spec.role === role);
    }),
  );
}

/** One object reference inside a JSON descriptor. */
export interface ObjectRef {
  $ref: number;
}

/** Splits an object id into its slot and generation. */
export function splitId(id: number): { slot: number; generation: number } {
  return { slot: id % 2 ** 32, generation: Math.floor(id / 2 ** 32) };
}

/** Joins a slot and generation into an object id (generations wrap below 2^21, keeping ids exact doubles). */
export function joinId(slot: number, generation: number): number {
  return (generation % 2 ** 21) * 2 ** 32 + slot;
}
