// The embedded kernel: the process table, the devices and their dispatchers, and the public API
// (spawn, ps, kill, wait, stats, shutdown). Control enters here whether embedded or, later, remote.

import { openDevices, runsOnHostCpu } from '../device/adapters.js';
import { resolveBackends } from '../device/backends.js';
import type { LoopRates } from '../device/loopRate.js';
import { eventPumpStats, EventPumpStats, holdEventPump } from '../device/eventPump.js';
import type { AdapterDescription, PhysicalDevice } from '../device/physicalDevice.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import {
  DEFAULT_TARGET_SLICE_MS,
  DEFAULT_CONTENTION_WINDOW_MS,
  DEFAULT_UNCONTENDED_MAX_IN_FLIGHT,
  DEFAULT_UNCONTENDED_SLICE_FACTOR,
  DEFAULT_TRACE_EVENTS,
  DEFAULT_DAWN_POLL_INTERVAL_US,
  DEFAULT_ISSUE_LEAD_MS,
  DEFAULT_COALESCE_SUBMITS_WITHIN_US,
  DEFAULT_MAX_DISPATCH_MS,
  MAX_DAWN_POLL_INTERVAL_US,
  DEFAULT_WEIGHT,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_OPERATION_TIMEOUT_MS,
  DEFAULT_MEMORY_BUDGET_BYTES,
  DEFAULT_TENANT,
  EXITED_PROCESS_RETENTION,
  MEMORY_BUDGET_ENV,
  parseBytes,
  PRIORITY_CLASSES,
  PriorityClass,
} from '../params.js';
import type { VirtualDevice } from '../vgpu/device.js';
import { VirtualGPU } from '../vgpu/gpu.js';
import type { ProcessHost } from '../vgpu/host.js';
import { refreshCallPathShapes } from '../vgpu/shapeKeepers.js';
import { Dispatcher, SchedulerParams } from './dispatch.js';
import { MemoryManager } from './mem.js';
import type { SwapCounters } from './residency.js';
import { RemoteTier, resolveSpillSettings, SpillSettings } from './spill.js';
import { SegmentRecord, SharedSegments } from './segments.js';
import { ChromeTrace, TraceLog } from './trace.js';
import { IMAGE_FORMAT_VERSION, ImageHeader, ProcessImage, readImage, writeImage, WrittenImage } from './image.js';
import { checkImageRestorable } from './imageCheck.js';
import { demandsOfDevice, demandsOfImage, describeTarget, incompatible, whatIsMissing } from './compatibility.js';
import { checkPathLength, isFsError, pathError, quotePath } from './imagePaths.js';
import { TenantAccount, TenantQuota, TenantRecord } from './tenant.js';
import { LiveCounts, ResourceKind } from './ledger.js';
import { ExitStatus, Proc, ProcessRecord, ProcessState } from './proc.js';
import { resolveShaderLimits, ShaderLimits } from '../wgsl/complexity.js';

/** How long (ms) an exited process stays listed after it ends before the kernel reaps it (10 minutes). */
export const DEFAULT_EXITED_RETENTION_MS = 600_000;

export interface KernelOptions {
  /**
   * The Dawn backends to open devices on, in order: 'vulkan', 'opengles', 'opengl', 'metal',
   * 'd3d12', 'd3d11' (default: $GPUNIX_BACKENDS, a comma list, if set; else the platform's own
   * backend only). GL and GLES devices are WebGPU compatibility-mode devices. Unknown names:
   * GPUNIX_E_BAD_OPTION; a backend that opens no adapter: GPUNIX_E_NO_DEVICE.
   */
  backends?: string[];
  /** How many real devices to open per backend, cycling over its adapters (default: one per adapter). */
  devices?: number;
  /** Memory budget per device: bytes, or a string such as "512M" (default 4 GiB, or $GPUNIX_MEMORY_BUDGET). */
  memoryBudget?: number | string;
  /** Most unfinished fences (runs and atoms) per device (default 2): the preemption bound in atoms. */
  maxInFlight?: number;
  /** Device time an atom aims to take, in ms (default 1). */
  targetSliceMs?: number;
  /** Device time of an atom while its process is uncontended, in ms (default 4 × targetSliceMs). */
  uncontendedSliceMs?: number;
  /** Most unfinished fences while the next piece's process is uncontended (default 4, at least maxInFlight). */
  uncontendedMaxInFlight?: number;
  /** How long after another process of the same or a higher class had work a process still counts as contended, in ms (default 100; 0 = only while the other has work). */
  contentionWindowMs?: number;
  /**
   * Least time between two of Dawn's event polls, in µs (default 100): the main thread sleeps
   * between them instead of spinning as dawn.node does by itself. 0 leaves dawn.node's polling as it
   * is. Process-wide while the kernel runs (src/device/eventPump.ts).
   */
  dawnPollIntervalUs?: number;
  /**
   * While a process of a higher class has been active within contentionWindowMs, a lower class's
   * next piece is queued this long (ms) before the device is predicted to run out of work, not as
   * soon as an in-flight slot frees (default 0.25; 0 turns this off).
   */
  issueLeadMs?: number;
  /** Split dispatches into atoms so that other processes can run between them (default true). */
  atomize?: boolean;
  /** Fixed workgroups per atom instead of the cost model's choice (testing and experiments). */
  atomSize?: number;
  /**
   * The longest one piece of device work (a whole dispatch, or an atom) may take, in ms (default
   * 2000). Every loop is bounded to end after about this long; a process whose work takes longer is
   * ended with reason `watchdog`. A tenant's quota can lower it for its processes.
   */
  maxDispatchMs?: number;
  /**
   * What one shader module may cost to compile, checked before Dawn sees it: module bytes, nesting,
   * functions, call depth, inlined size, per-invocation array bytes (defaults and measurements:
   * docs/configuration.md). A module over a limit is refused with GPUNIX_E_SHADER_LIMIT.
   */
  shaderLimits?: Partial<ShaderLimits>;
  /** Encode every command buffer afresh from the kernel's record at execution (default false). */
  reencodeCommandBuffers?: boolean;
  /**
   * Hold a whole submit the program called less than this long (µs) after its previous one, and
   * give the held ones to Dawn as one real submit when the burst ends, before anything else reaches
   * the queue, or every HELD_SUBMITS_MAX command buffers (default 250, up to 1e6; 0 turns holding
   * off; src/device/physicalDevice.ts holdSubmit). Not on GL backends.
   */
  coalesceSubmitsWithinUs?: number;
  /** Events the atom timeline keeps (default 100000; 0 turns tracing off). */
  traceEvents?: number;
  /** Tenants and their quotas, by name; `default` always exists (unlimited unless given here). */
  tenants?: Record<string, TenantQuotaOptions>;
  /**
   * Host memory for evicted buffers' contents: bytes or a string such as "512M" (default: no
   * limit). Beyond it, the oldest evicted contents go to files in `spillDirectory`.
   */
  hostMemoryLimit?: number | string | null;
  /**
   * Another node's host memory for evicted contents beyond `hostMemoryLimit`, tried before spill
   * files (gpunixd's `remoteTier`: src/daemon/remoteTier.ts). Absent: none.
   */
  remoteTier?: RemoteTier | null;
  /** Where spill files go (default: os.tmpdir()/gpunix-spill-<pid>, made 0700 on first need). */
  spillDirectory?: string;
  /** How long an exited process stays in the table (`ps`) after it ends, in ms (default 600000, 10 minutes; 0: gone at the next listing). */
  exitedRetentionMs?: number;
}

/** A tenant's quotas as given in options (every field optional; see TenantQuota for meanings). */
export interface TenantQuotaOptions {
  /** Device memory all its processes may hold together: bytes or a string such as "2G" (default: no limit). */
  memoryLimit?: number | string | null;
  /** Its share of GPU time within a priority class relative to other tenants (default 1). */
  weight?: number;
  /** Live processes it may have at once (default: no limit). */
  maxProcesses?: number | null;
  /** Priority classes its processes may use (default: all). */
  priorities?: PriorityClass[];
  /** The longest one piece of its processes' device work may take, in ms (default: the kernel's maxDispatchMs; it can only lower it). */
  maxDispatchMs?: number | null;
}

export interface SpawnOptions {
  name?: string;
  priority?: PriorityClass;
  /** Share of GPU time within the priority class, relative to other processes' weights (default 1). */
  weight?: number;
  /** Device memory the process may hold: bytes, or a string such as "256M" (default: no own limit). */
  memoryLimit?: number | string;
  /** The tenant the process belongs to (default "default"); it must be one of the kernel's tenants. */
  tenant?: string;
  /**
   * The device its adapters stand on: an id ("gpu1") or index (default: placement, per request).
   * An adapter request the device cannot answer (featureLevel "core" on a GL/GLES device) gets null.
   */
  device?: string | number;
}

/** Options of the kernel's long control operations (checkpoint, migrate). */
export interface OperationOptions {
  /**
   * How long to wait for the process to stop at a piece boundary, behind earlier operations on it
   * included, in ms (default 30000; Infinity: no limit). Past it the operation fails with
   * GPUNIX_E_TIMEOUT and the process goes on as it was. Writing the image is not bounded by it.
   */
  timeoutMs?: number;
}

export interface CheckpointOptions extends OperationOptions {
  /** Called as the image file grows: bytes written so far of the file's total size. */
  onProgress?: (bytesWritten: number, totalBytes: number) => void;
}

/** What `restore` is asked for; priority, weight and memoryLimit, when given, win over the image's. */
export interface RestoreOptions {
  /** A device id (e.g. "gpu1") or index; default: where placement puts it now. */
  device?: string | number;
  name?: string;
  /** The tenant of the restored process (default: the image's, if the kernel has it, else "default"). */
  tenant?: string;
  priority?: PriorityClass;
  weight?: number;
  /** Bytes, or a string such as "256M". */
  memoryLimit?: number | string;
}

/** What admitRestore decided for a restore: who, how, and on which device (the image was checked there). */
interface RestoreAdmission {
  tenant: string;
  priority: PriorityClass | undefined;
  weight: number;
  memoryLimit: number | undefined;
  target: PhysicalDevice;
}

export interface ReniceOptions {
  priority?: PriorityClass;
  weight?: number;
}

export interface DeviceStats {
  id: string;
  description: string;
  /** The Dawn backend the device was opened on (vulkan, opengles, opengl, ...). */
  backend: string;
  /** WebGPU feature level of the device: 'core' or 'compatibility'. */
  featureLevel: 'core' | 'compatibility';
  isFallbackAdapter: boolean;
  /** The device runs on the host's CPU (lavapipe, llvmpipe, ...): checked work may wait for it to drain (docs/kernel.md). */
  runsOnHostCpu: boolean;
  budgetBytes: number;
  /** Memory resident on the device, by the kernel's count. */
  usedBytes: number;
  /** Memory of this device's buffers evicted to host memory. */
  evictedBytes: number;
  /** Fraction of the kernel's lifetime the device spent on processes' work. */
  utilization: number;
  /** Device time spent on processes' work since the kernel opened the device (ns; measured at completions, monotonic). */
  busyNs: number;
  /** Times the dispatcher switched away from a process that still had work queued (monotonic). */
  preemptions: number;
  /** Processes the device's scheduler holds: live ones that have used the device, ended ones whose work is still queued or on it. */
  processes: number;
  /** Buffers evicted from the device to host memory, and restored onto it, so far (monotonic). */
  evictions: number;
  restores: number;
  /**
   * Whole submits the dispatcher held and gave to Dawn together (docs/kernel.md, "Submits held for a
   * burst"): `batches` real submits carried `submits` of the programs' (monotonic; 0 where nothing is held).
   */
  heldSubmits: { batches: number; submits: number };
  lost: string | null;
  /** How fast this device runs loop iterations (measured at open): the watchdog's unit (src/device/loopRate.ts). */
  loopRates: LoopRates;
}

export interface KernelStats {
  processes: { total: number; byState: Record<ProcessState, number> };
  tenants: TenantRecord[];
  liveObjects: { total: number; byKind: Record<ResourceKind, number> };
  bytesAllocated: number;
  /** Swap traffic between devices and host memory so far (evictions out, restores in). */
  swap: SwapCounters;
  /**
   * The watchdog: the kernel's per-dispatch limit, the processes it has ended, and the pieces the
   * host's clock put over a limit that their device time cleared (their completion was seen late:
   * a busy kernel thread; docs/kernel.md). `bracketStamps`: device timestamps written around whole
   * submits with checked loops, on all devices; `sharedOpenings`: the brackets that opened from the
   * previous one's closing stamp instead of a stamp of their own. `spentFlagReads`: reads of
   * processes' budget-spent flags (after pieces within the limit but over 1/8 of it);
   * `endedBySpentFlag`: of `processesEnded`, those a set flag ended (their loops ran out of budget
   * within the limit: the device ran faster than its calibration said).
   */
  watchdog: {
    maxDispatchMs: number;
    processesEnded: number;
    piecesExcused: number;
    bracketStamps: number;
    sharedOpenings: number;
    spentFlagReads: number;
    endedBySpentFlag: number;
  };
  devices: DeviceStats[];
  /** Dawn's event polls as the kernel paces them (process-wide). */
  eventPump: EventPumpStats;
}

function checkPriority(priority: unknown): PriorityClass {
  if (!PRIORITY_CLASSES.includes(priority as PriorityClass)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `priority must be one of ${PRIORITY_CLASSES.join(', ')}, got ${JSON.stringify(priority)}`);
  }
  return priority as PriorityClass;
}

function checkPriorityQuota(account: TenantAccount, priority: PriorityClass): void {
  if (!account.quota.priorities.includes(priority)) {
    throw new GpunixError(ErrorCodes.QUOTA, `tenant ${account.name} may use priority ${account.quota.priorities.join(', ')}, not ${priority}`);
  }
}

function checkWeight(weight: unknown): number {
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `weight must be a positive number, got ${JSON.stringify(weight)}`);
  }
  return weight;
}

/** The longest timeout setTimeout can wait (ms); longer ones are given as Infinity. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function checkTimeoutMs(timeoutMs: unknown): number {
  if (timeoutMs === undefined) return DEFAULT_OPERATION_TIMEOUT_MS;
  if (timeoutMs === Infinity) return timeoutMs;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_TIMER_MS) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `timeoutMs must be a positive number of milliseconds up to ${MAX_TIMER_MS} (or Infinity), got ${String(timeoutMs)}`);
  }
  return timeoutMs;
}

/**
 * The bound on how long a control operation waits for its process to stop: `within` races a wait
 * against it, and its `signal` lets the dispatcher withdraw a wait that lost.
 */
class Deadline {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly timeoutMs: number,
    /** The operation, for the error: e.g. "checkpoint of process 3". */
    private readonly operation: string,
  ) {
    if (Number.isFinite(timeoutMs)) this.timer = setTimeout(() => this.controller.abort(new Error('timed out')), timeoutMs);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** `wait`, or GPUNIX_E_TIMEOUT saying `why` once the time is up (a rejection with the signal's reason becomes that too). */
  within<T>(wait: Promise<T>, why: string): Promise<T> {
    const signal = this.signal;
    const timedOut = (): GpunixError =>
      new GpunixError(ErrorCodes.TIMEOUT, `${this.operation} timed out after ${this.timeoutMs / 1000} s: ${why}; the process goes on as it was`);
    if (signal.aborted) return Promise.reject(timedOut());
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(timedOut());
      signal.addEventListener('abort', onAbort, { once: true });
      wait.then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error === signal.reason ? timedOut() : error);
        },
      );
    });
  }

  /** Stops the clock (the process has stopped, or the operation ended). */
  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

export interface DeviceDescription extends AdapterDescription {
  id: string;
  budgetBytes: number;
}

/** What a program holds for one of its processes. */
export class ProcessHandle {
  constructor(
    private readonly kernel: Kernel,
    private readonly proc: Proc,
    private readonly virtualGpu: VirtualGPU,
  ) {}
  /** The process's `navigator.gpu`, typed as WebGPU's GPU: programs use it as they would Dawn's. */
  get gpu(): GPU {
    return this.virtualGpu as unknown as GPU;
  }
  get pid(): number {
    return this.proc.pid;
  }
  get name(): string {
    return this.proc.name;
  }
  get state(): ProcessState {
    return this.proc.state;
  }
  record(): ProcessRecord {
    return this.proc.record();
  }
  /** Ends the process normally once its queued work has finished; releases everything it holds. */
  exit(code = 0): Promise<ExitStatus> {
    return this.kernel.exitProcess(this.proc, code);
  }
  kill(): Promise<ExitStatus> {
    return this.kernel.kill(this.proc.pid);
  }
  /** Resolves with the exit status when the process ends, however it ends. */
  wait(): Promise<ExitStatus> {
    return this.proc.exited;
  }
}

/** A positive byte count from a number or a string such as "512M"; `name` is the option's, for errors. */
function byteOption(name: string, raw: number | string): number {
  const bytes = typeof raw === 'number' ? raw : (() => {
    try {
      return parseBytes(raw);
    } catch (error) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `${name}: ${(error as Error).message}`);
    }
  })();
  if (!Number.isFinite(bytes) || bytes <= 0) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `${name} must be a positive byte count, got ${String(raw)}`);
  }
  return bytes;
}

function resolveBudget(option: number | string | undefined): number {
  const raw = option ?? process.env[MEMORY_BUDGET_ENV];
  if (raw === undefined || raw === '') return DEFAULT_MEMORY_BUDGET_BYTES;
  return byteOption('memoryBudget', raw);
}

const UNLIMITED_QUOTA: TenantQuota = { memoryLimit: null, weight: DEFAULT_WEIGHT, maxProcesses: null, priorities: PRIORITY_CLASSES, maxDispatchMs: null };

function checkTenantName(name: unknown): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `tenant names are 1-64 letters, digits, '_', '.' or '-', got ${JSON.stringify(name)}`);
  }
  return name;
}

/** A checked quota: the fields of `options` that are given, over `base`. */
export function resolveTenantQuota(name: string, options: TenantQuotaOptions | undefined, base: TenantQuota = UNLIMITED_QUOTA): TenantQuota {
  const o = options ?? {};
  if (typeof o !== 'object' || Array.isArray(o)) throw new GpunixError(ErrorCodes.BAD_OPTION, `tenants.${name}: a quota must be an object`);
  const known = ['memoryLimit', 'weight', 'maxProcesses', 'priorities', 'maxDispatchMs'];
  const unknown = Object.keys(o).filter((k) => !known.includes(k));
  if (unknown.length > 0) throw new GpunixError(ErrorCodes.BAD_OPTION, `tenants.${name}: unknown quota field ${unknown.join(', ')} (known: ${known.join(', ')})`);
  const quota: TenantQuota = { ...base };
  if (o.memoryLimit !== undefined) quota.memoryLimit = o.memoryLimit === null ? null : byteOption(`tenants.${name}.memoryLimit`, o.memoryLimit);
  if (o.weight !== undefined) quota.weight = checkWeight(o.weight);
  if (o.maxProcesses !== undefined) {
    if (o.maxProcesses !== null && (!Number.isInteger(o.maxProcesses) || o.maxProcesses < 1)) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `tenants.${name}.maxProcesses must be a positive integer or null, got ${String(o.maxProcesses)}`);
    }
    quota.maxProcesses = o.maxProcesses;
  }
  if (o.priorities !== undefined) {
    if (!Array.isArray(o.priorities) || o.priorities.length === 0) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `tenants.${name}.priorities must be a non-empty list of ${PRIORITY_CLASSES.join(', ')}`);
    }
    quota.priorities = [...new Set(o.priorities.map(checkPriority))];
  }
  if (o.maxDispatchMs !== undefined) quota.maxDispatchMs = o.maxDispatchMs === null ? null : checkMaxDispatchMs(`tenants.${name}.maxDispatchMs`, o.maxDispatchMs);
  return quota;
}

function resolveTenants(option: KernelOptions['tenants']): Map<string, TenantAccount> {
  const tenants = new Map<string, TenantAccount>();
  for (const [name, quota] of Object.entries(option ?? {})) {
    tenants.set(checkTenantName(name), new TenantAccount(name, resolveTenantQuota(name, quota)));
  }
  if (!tenants.has(DEFAULT_TENANT)) tenants.set(DEFAULT_TENANT, new TenantAccount(DEFAULT_TENANT, { ...UNLIMITED_QUOTA }));
  return tenants;
}

/** GPUNIX_E_INCOMPATIBLE_DEVICE naming what `target` lacks of what process `pid`'s `vdevices` use (src/kernel/compatibility.ts). */
function assertCanHold(pid: number, vdevices: readonly VirtualDevice[], target: PhysicalDevice): void {
  const missing = new Set<string>();
  for (const vdevice of vdevices) for (const m of whatIsMissing(demandsOfDevice(vdevice), target, vdevice.physical)) missing.add(m);
  if (missing.size > 0) throw incompatible(`cannot migrate process ${pid} to ${describeTarget(target)}`, [...missing]);
}

export class Kernel {
  private readonly procs = new Map<number, Proc>();
  private readonly dispatchers = new Map<PhysicalDevice, Dispatcher>();
  private readonly virtualDevices = new Map<PhysicalDevice, Set<VirtualDevice>>();
  private readonly live = new LiveCounts();
  private readonly traceLog: TraceLog;
  private readonly memory: MemoryManager;
  private readonly segments: SharedSegments;
  private nextPid = 1;
  private down = false;
  /** Gives back this kernel's hold on the Dawn event pump (a no-op when it holds none). */
  private readonly releaseEventPump: () => void = () => {};

  constructor(
    readonly devices: readonly PhysicalDevice[],
    readonly options: KernelSettings,
  ) {
    this.traceLog = new TraceLog(options.traceEvents);
    this.memory = new MemoryManager(options.spill);
    this.segments = new SharedSegments(this.live);
    for (const device of devices) {
      const dispatcher = new Dispatcher(device, options.scheduler, this.traceLog);
      // Where a submit runs its work before it returns (GL over llvmpipe), holding it would move
      // that work, and the dispatcher's timing of it, to the flush: only where a submit queues.
      device.allowHeldSubmits(dispatcher.timesIssues ? 0 : options.coalesceSubmitsWithinNs);
      dispatcher.watchdog = {
        limitNs: (proc) => this.maxDispatchMsOf(proc) * 1e6,
        overrun: (proc, piece, ns) => this.endByWatchdog(proc, device.id, piece, ns),
        excused: () => this.watchdogExcused++,
        cut: (proc, piece, ns) => this.endByWatchdog(proc, device.id, piece, ns, true),
      };
      this.dispatchers.set(device, dispatcher);
      this.virtualDevices.set(device, new Set());
      device.device.lost.then((info) => {
        for (const vdevice of this.virtualDevices.get(device) ?? []) vdevice.lose('unknown', `gpunix: device ${device.id} was lost: ${info.message}`);
      });
    }
    // Last, so that nothing above can throw with the process's setImmediate already replaced.
    if (options.dawnPollIntervalUs > 0) this.releaseEventPump = holdEventPump(options.dawnPollIntervalUs);
  }

  /** Starts a process. Its program reaches the GPU only through `handle.gpu`. */
  async spawn(options: SpawnOptions = {}): Promise<ProcessHandle> {
    this.assertUp();
    const priority = checkPriority(options.priority ?? 'normal');
    const weight = checkWeight(options.weight ?? DEFAULT_WEIGHT);
    const memoryLimit = options.memoryLimit === undefined ? null : byteOption('memoryLimit', options.memoryLimit);
    const account = this.options.tenants.get(options.tenant ?? DEFAULT_TENANT);
    if (!account) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `no tenant ${JSON.stringify(options.tenant)}: the kernel has ${[...this.options.tenants.keys()].join(', ')}`);
    }
    checkPriorityQuota(account, priority);
    let device: PhysicalDevice | null = null;
    if (options.device !== undefined) {
      device = (typeof options.device === 'number' ? this.devices[options.device] : this.devices.find((d) => d.id === options.device)) ?? null;
      if (!device) throw new GpunixError(ErrorCodes.BAD_OPTION, `no device ${JSON.stringify(options.device)}: the kernel has ${this.devices.map((d) => d.id).join(', ')}`);
    }
    if (account.quota.maxProcesses !== null && account.processes >= account.quota.maxProcesses) {
      throw new GpunixError(ErrorCodes.QUOTA, `tenant ${account.name} already has ${account.processes} live processes, its limit`);
    }
    const pid = this.nextPid++;
    const proc = new Proc(pid, options.name ?? `proc${pid}`, account, priority, weight, memoryLimit, this.live);
    proc.preferredDevice = device;
    this.procs.set(pid, proc);
    this.trimExited();
    return new ProcessHandle(this, proc, new VirtualGPU(this.hostFor(proc)));
  }

  private hostFor(proc: Proc): ProcessHost {
    // src/vgpu/shapeKeepers.ts keeps one object of these fields, in this order (its shape).
    return {
      proc,
      reencodeCommandBuffers: this.options.reencodeCommandBuffers,
      memory: this.memory,
      segments: this.segments,
      atomize: this.options.atomize,
      atomSize: this.options.atomSize,
      maxDispatchMs: () => this.configuredMaxDispatchMs(proc),
      shaderLimits: this.options.shaderLimits,
      chooseDevice: (options) => (proc.preferredDevice && !proc.preferredDevice.lostReason ? proc.preferredDevice : this.chooseDevice(options)),
      dispatcherFor: (device) => this.dispatchers.get(device)!,
      adopt: (vdevice) => {
        this.virtualDevices.get(vdevice.physical)!.add(vdevice);
        // Looked up at loss, not now: migration may have moved the device since.
        vdevice.lost.then(() => this.virtualDevices.get(vdevice.physical)?.delete(vdevice));
        proc.onEnd.add((status) =>
          vdevice.lose('unknown', status.reason === 'watchdog' && status.message ? status.message : `gpunix: process ${proc.pid} exited (${status.reason})`),
        );
        if (proc.pendingImage) {
          // A restored process: its first device receives the image's objects, found by label.
          const image = proc.pendingImage;
          proc.pendingImage = null;
          return vdevice.adoptImage(image);
        }
      },
    };
  }

  /**
   * Placement: the live device with the most free budget; a fallback adapter only when asked; for
   * an adapter request of featureLevel "core" (its default) a core device only (GL and GLES devices
   * are compatibility-only). No options (a restore's placement): any device.
   */
  private chooseDevice(options: GPURequestAdapterOptions | undefined): PhysicalDevice | null {
    const core = options !== undefined && (options.featureLevel ?? 'core') === 'core';
    const candidates = this.devices.filter(
      (d) => d.lostReason === null && (!options?.forceFallbackAdapter || d.adapter.isFallbackAdapter) && (!core || d.adapter.featureLevel === 'core'),
    );
    if (candidates.length === 0) return null;
    return candidates.reduce((best, d) => (d.budgetBytes - d.usedBytes > best.budgetBytes - best.usedBytes ? d : best));
  }

  /** Every process the table holds, live ones and recently exited ones (reaped exitedRetentionMs after they end). */
  ps(): ProcessRecord[] {
    this.reapExited();
    return [...this.procs.values()].map((p) => p.record());
  }

  /** The ids of the devices `pid`'s virtual devices are on now (none before its first requestDevice, or after exit). */
  devicesOf(pid: number): string[] {
    const ids = new Set<string>();
    for (const [physical, set] of this.virtualDevices) for (const v of set) if (v.proc.pid === pid) ids.add(physical.id);
    return [...ids];
  }

  private lookup(pid: number): Proc {
    const proc = this.procs.get(pid);
    if (!proc) throw new GpunixError(ErrorCodes.NO_SUCH_PROCESS, `no process with pid ${pid}`);
    return proc;
  }

  /**
   * Ends a process that moved to another node (src/daemon/migrationOut.ts), as kill does, but with
   * reason 'moved' and exit code 0: its program goes on there, `where` says where.
   */
  async endMoved(pid: number, where: string): Promise<ExitStatus> {
    const proc = this.lookup(pid);
    this.terminate(proc, { code: 0, reason: 'moved', message: `moved to ${where}` });
    await this.settle(proc);
    return proc.exit!;
  }

  /** Kills a process: its queued work is dropped, its devices turn lost, everything it holds is freed. */
  async kill(pid: number): Promise<ExitStatus> {
    const proc = this.lookup(pid);
    this.terminate(proc, { code: 137, reason: 'killed', message: `killed by the kernel` });
    await this.settle(proc);
    return proc.exit!;
  }

  /** Changes a process's priority class and/or weight; the next scheduling decision uses them. */
  renice(pid: number, options: ReniceOptions): ProcessRecord {
    const proc = this.lookupLive(pid);
    const priority = options.priority === undefined ? proc.priority : checkPriority(options.priority);
    const weight = options.weight === undefined ? proc.weight : checkWeight(options.weight);
    checkPriorityQuota(proc.account, priority);
    proc.priority = priority;
    proc.weight = weight;
    this.rescheduleAll();
    return proc.record();
  }

  /**
   * Stops a process's GPU work at the next atom boundary; queued work waits until resume. It takes
   * effect at once, also during a checkpoint or migration of the process, which then leave it
   * suspended.
   */
  suspend(pid: number): ProcessRecord {
    const proc = this.lookupLive(pid);
    proc.suspended = true;
    return proc.record();
  }

  /**
   * Ends the user's suspension at once. A process held by a checkpoint or migration in progress
   * goes on when that ends; a swapped-out one gets its buffers back before any of its work runs.
   */
  resume(pid: number): ProcessRecord {
    const proc = this.lookupLive(pid);
    proc.suspended = false;
    // While held, a checkpoint may be reading its evicted contents: they come back when it lets go.
    if (proc.holds > 0) this.swapInOnRelease.add(proc);
    else this.memory.swapIn(proc);
    this.rescheduleAll();
    return proc.record();
  }

  /**
   * Suspends a process (at once) and, once earlier operations on it have ended and its work on the
   * devices has finished, moves its buffers to host memory, freeing their device memory for others;
   * `resume` brings them back intact. A resume that arrives first wins: nothing stays swapped out.
   * `options.onProgress` hears the bytes done of the process's buffers as each has been moved.
   */
  async swapOut(pid: number, options: { onProgress?: (bytesDone: number, totalBytes: number) => void } = {}): Promise<ProcessRecord> {
    const proc = this.lookupLive(pid);
    proc.suspended = true;
    return this.onLane(proc, null, `swap-out of process ${pid}`, async () => {
      await Promise.all([...this.dispatchers.values()].map((d) => d.whenOffDevice(proc)));
      this.assertSurvived(proc, 'being swapped out');
      if (proc.suspended) {
        await this.memory.swapOut(proc, options.onProgress);
        this.assertSurvived(proc, 'being swapped out');
        // Resumed while its buffers were going out: those that went come back.
        if (!proc.suspended) this.memory.swapIn(proc);
      }
      return proc.record();
    });
  }

  /**
   * Runs `body` on `proc`'s operation lane, once every long operation on it that arrived earlier
   * has ended (so that concurrent checkpoints, migrations and swap-outs of one process end in the
   * order they arrived). `deadline` bounds the wait for that turn; the lane's next operation
   * waits for this one and for the one before it, whichever ends last.
   */
  private onLane<T>(proc: Proc, deadline: Deadline | null, operation: string, body: () => Promise<T>): Promise<T> {
    const turn = proc.lane;
    const op = (async () => {
      await (deadline ? deadline.within(turn, 'earlier operations on the process did not end in time') : turn);
      if (!proc.alive) throw new GpunixError(ErrorCodes.PROCESS_EXITED, `${operation}: the process exited (${proc.exit!.reason})`);
      return body();
    })();
    proc.lane = Promise.allSettled([turn, op]).then(() => undefined);
    return op;
  }

  /** Holds `proc` at its next piece boundary for a checkpoint or migration, without touching the user's `suspended`. */
  private hold(proc: Proc): void {
    proc.holds++;
  }

  /** Lets go of a hold: the process goes on unless the user suspended it (or another hold remains). */
  private release(proc: Proc): void {
    proc.holds--;
    if (proc.holds === 0 && this.swapInOnRelease.delete(proc) && proc.alive && !proc.suspended) this.memory.swapIn(proc);
    this.rescheduleAll();
  }

  /** Processes resumed while held: their evicted buffers come back when the hold ends. */
  private readonly swapInOnRelease = new Set<Proc>();

  private rescheduleAll(): void {
    for (const dispatcher of this.dispatchers.values()) dispatcher.reschedule();
  }

  private lookupLive(pid: number): Proc {
    const proc = this.lookup(pid);
    if (!proc.alive) throw new GpunixError(ErrorCodes.PROCESS_EXITED, `process ${pid} has exited (${proc.exit!.reason})`);
    return proc;
  }

  /** GPUNIX_E_PROCESS_EXITED if `proc` ended while an operation on it was under way. */
  private assertSurvived(proc: Proc, operation: string): void {
    if (!proc.alive) throw new GpunixError(ErrorCodes.PROCESS_EXITED, `process ${proc.pid} exited while ${operation} (${proc.exit!.reason})`);
  }

  /**
   * Moves a live process, with everything it holds, onto another device while its program keeps
   * running: the program's handles keep working and its results are unchanged. `device` is a
   * device id (e.g. "gpu1") or index. Work queued meanwhile runs on the new device, in order. It
   * waits for earlier operations on the process and for its work on the device to finish, up to
   * `options.timeoutMs` (GPUNIX_E_TIMEOUT; the process goes on where it was).
   */
  async migrate(pid: number, device: string | number, options: OperationOptions = {}): Promise<ProcessRecord> {
    const proc = this.lookupLive(pid);
    const target = typeof device === 'number' ? this.devices[device] : this.devices.find((d) => d.id === device);
    if (!target) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `no device ${JSON.stringify(device)}: the kernel has ${this.devices.map((d) => d.id).join(', ')}`);
    }
    const deadline = new Deadline(checkTimeoutMs(options.timeoutMs), `migration of process ${pid}`);
    try {
      return await this.onLane(proc, deadline, `migration of process ${pid}`, async () => {
        if (target.lostReason) throw new GpunixError(ErrorCodes.NO_DEVICE, `device ${target.id} is lost (${target.lostReason})`);
        if (this.segments.holds(proc)) throw new GpunixError(ErrorCodes.BUSY, `process ${pid} is attached to a shared segment, which pins it to its device`);
        const vdevices = [...this.virtualDevices.entries()].flatMap(([, set]) => [...set].filter((v) => v.proc === proc && v.physical !== target));
        for (const vdevice of vdevices) {
          const blocker = vdevice.migrationBlocker();
          if (blocker) throw new GpunixError(ErrorCodes.BUSY, `cannot migrate process ${pid} now: ${blocker}`);
        }
        // Refused before the process is even held when the target lacks what it uses (another backend, vendor).
        assertCanHold(pid, vdevices, target);
        this.hold(proc);
        try {
          await deadline.within(
            Promise.all([...this.dispatchers.values()].map((d) => d.whenOffDevice(proc))),
            'its work on the device did not finish',
          );
          deadline.clear();
          this.assertSurvived(proc, 'being migrated');
          // Again, now that it is stopped: the program may have made objects while it was waited for.
          assertCanHold(pid, vdevices, target);
          for (const vdevice of vdevices) {
            const from = this.dispatchers.get(vdevice.physical)!;
            const to = this.dispatchers.get(target)!;
            // Its queue moves in the switch: what the program submits until then goes to the old device's.
            await vdevice.migrateTo(target, to, () => {
              for (const item of from.takeAll(proc)) to.enqueue(item);
            });
            this.virtualDevices.get(from.device)!.delete(vdevice);
            this.virtualDevices.get(target)!.add(vdevice);
          }
          // A process held to a device (spawn's or restore's) is held to its new one: a later requestAdapter finds it there.
          if (proc.preferredDevice) proc.preferredDevice = target;
        } finally {
          this.release(proc);
        }
        return proc.record();
      });
    } finally {
      deadline.clear();
    }
  }

  /**
   * Writes a process image of `pid` to `path` (docs/image-format.md): shader sources, pipeline
   * descriptions, buffer contents and labels, its queued but unfinished work, and metadata, with
   * checksums, atomically. Once earlier operations on the process have ended, it is held at the
   * next piece boundary (a suspended or swapped-out one is already stopped): its work on the
   * device finishes, a queue item some pieces of which already ran (a split submit with atoms
   * done) runs to its end, and the rest of its queue is recorded as it stands. Then it goes on as
   * it was, or as suspend/resume calls made meanwhile left it. Reaching that boundary is bounded by
   * `options.timeoutMs` (GPUNIX_E_TIMEOUT, the process untouched); `options.onProgress` follows
   * the file as it is written. A kill meanwhile fails it with GPUNIX_E_PROCESS_EXITED, leaving no file.
   */
  async checkpoint(pid: number, path: string, options: CheckpointOptions = {}): Promise<WrittenImage> {
    const proc = this.lookupLive(pid);
    if (this.segments.holds(proc)) throw new GpunixError(ErrorCodes.BUSY, `process ${pid} is attached to a shared segment; detach before checkpointing`);
    const deadline = new Deadline(checkTimeoutMs(options.timeoutMs), `checkpoint of process ${pid}`);
    try {
      return await this.onLane(proc, deadline, `checkpoint of process ${pid}`, async () => {
        if (this.segments.holds(proc)) throw new GpunixError(ErrorCodes.BUSY, `process ${pid} is attached to a shared segment; detach before checkpointing`);
        this.hold(proc);
        try {
          await deadline.within(
            Promise.all([...this.dispatchers.values()].map((d) => d.finishStarted(proc, deadline.signal))),
            'it did not reach a piece boundary (its work on the device, or a dispatch it had started, did not finish: a long dispatch, or processes of a higher class keeping the device busy)',
          );
          deadline.clear();
          this.assertSurvived(proc, 'being checkpointed');
          const vdevices = [...this.virtualDevices.values()].flatMap((set) => [...set].filter((v) => v.proc === proc && !v.isLost));
          if (vdevices.length !== 1) {
            throw new GpunixError(ErrorCodes.BUSY, `process ${pid} has ${vdevices.length} live devices; a checkpoint takes a process with exactly one`);
          }
          const vdevice = vdevices[0];
          const blocker = vdevice.checkpointBlocker();
          if (blocker) throw new GpunixError(ErrorCodes.BUSY, `cannot checkpoint process ${pid} now: ${blocker}`);
          // The queue as it stands now, in order; what the program queues from here on is not in the image.
          const queued = this.dispatchers.get(vdevice.physical)!.queued(proc);
          let body: Awaited<ReturnType<VirtualDevice['captureImage']>>;
          try {
            body = await vdevice.captureImage(queued);
          } catch (error) {
            // A kill while its buffers were being read makes the reads fail: the kill is the reason.
            this.assertSurvived(proc, 'being checkpointed');
            throw error;
          }
          this.assertSurvived(proc, 'being checkpointed');
          const image: ProcessImage = {
            version: IMAGE_FORMAT_VERSION,
            createdAt: new Date().toISOString(),
            process: { name: proc.name, priority: proc.priority, weight: proc.weight, tenant: proc.tenant, memoryLimit: proc.memoryLimit },
            ...body,
          };
          return await writeImage(path, image, {
            onProgress: (written, total) => {
              // Throwing here abandons the write and removes the partial file.
              this.assertSurvived(proc, 'its image was being written');
              options.onProgress?.(written, total);
            },
          }).catch((error: unknown) => {
            // A full disk, a read-only directory, a name too long: one coded line, not Node's error.
            throw pathError(error, 'write the process image', path);
          });
        } finally {
          this.release(proc);
        }
      });
    } finally {
      deadline.clear();
    }
  }

  /**
   * Brings a process image back as a new process (on `device`, or wherever placement puts it now).
   * The image is read and checked whole first: a corrupted or truncated one is refused with
   * GPUNIX_E_BAD_IMAGE and nothing is created. Then every object is checked against the target
   * device and the restoring process's limits (src/kernel/imageCheck.ts: shaders compile, entry
   * points exist, usages and sizes are legal and within the memory limits), again before anything
   * is created. The process's first device receives the image's buffers, shader modules and
   * pipelines, which its program finds by label (`device.gpunix`), and the image's queued work,
   * queued ahead of anything the program does. Version 1 and 2 images are read. `priority`,
   * `weight` and `memoryLimit` are the restoring caller's and win over the image's, which apply
   * only where the caller gave none (a priority the tenant may not use falls back to the default).
   * A path that cannot be read is GPUNIX_E_BAD_PATH.
   */
  async restore(path: string, options: RestoreOptions = {}): Promise<ProcessHandle> {
    this.assertUp();
    checkPathLength(path, 'restore the process image');
    let preferred: PhysicalDevice | null = null;
    if (options.device !== undefined) {
      const device = options.device;
      preferred = (typeof device === 'number' ? this.devices[device] : this.devices.find((d) => d.id === device)) ?? null;
      if (!preferred) throw new GpunixError(ErrorCodes.BAD_OPTION, `no device ${JSON.stringify(device)}: the kernel has ${this.devices.map((d) => d.id).join(', ')}`);
    }
    let admitted: RestoreAdmission | undefined;
    let image: ProcessImage;
    try {
      // Checked from the header, before the data section is read: a refused image costs no read of its contents.
      image = await readImage(path, { checkHeader: async (header) => void (admitted = await this.admitRestore(header, options, preferred, path)) });
    } catch (error) {
      if (isFsError(error) && error.code === 'ENOENT') {
        throw new GpunixError(ErrorCodes.BAD_PATH, `cannot restore the process image ${quotePath(path)}: no such image`, { cause: error });
      }
      throw pathError(error, 'restore the process image', path);
    }
    const { tenant, priority, weight, memoryLimit, target } = admitted!;
    const handle = await this.spawn({ name: options.name ?? image.process.name, priority, weight, memoryLimit, tenant });
    const proc = this.procs.get(handle.pid)!;
    proc.pendingImage = image;
    proc.preferredDevice = target;
    return handle;
  }

  /**
   * What a restore of the image `header` describes will be, for `options`: the tenant, the
   * caller's priority, weight and memory limit over the image's, and the device, on which every
   * object of the image is checked (imageCheck.ts). Throws what refuses the restore.
   */
  private async admitRestore(header: ImageHeader, options: RestoreOptions, preferred: PhysicalDevice | null, path: string): Promise<RestoreAdmission> {
    // `tenant` (the daemon: the restoring session's) overrides the image's own.
    const tenant = options.tenant ?? (this.options.tenants.has(header.process.tenant) ? header.process.tenant : DEFAULT_TENANT);
    const account = this.options.tenants.get(tenant);
    if (!account) throw new GpunixError(ErrorCodes.BAD_OPTION, `no tenant ${JSON.stringify(tenant)}: the kernel has ${[...this.options.tenants.keys()].join(', ')}`);
    // The caller's values win; the image's apply only where the caller gave none.
    const priority =
      options.priority !== undefined ? checkPriority(options.priority) : account.quota.priorities.includes(header.process.priority) ? header.process.priority : undefined;
    const weight = options.weight !== undefined ? checkWeight(options.weight) : header.process.weight;
    const memoryLimit = options.memoryLimit !== undefined ? byteOption('memoryLimit', options.memoryLimit) : (header.process.memoryLimit ?? undefined);
    if (priority !== undefined) checkPriorityQuota(account, priority);
    if (account.quota.maxProcesses !== null && account.processes >= account.quota.maxProcesses) {
      throw new GpunixError(ErrorCodes.QUOTA, `tenant ${account.name} already has ${account.processes} live processes, its limit`);
    }
    // Checked on the device the process will get, which it is then held to.
    // Placement, among the devices that can hold what the image's process uses (another backend may lack a feature it enabled).
    const demands = demandsOfImage(header);
    const placed = this.chooseDevice(undefined);
    const target =
      preferred ??
      (placed && whatIsMissing(demands, placed).length > 0
        ? (this.devices
            .filter((d) => d.lostReason === null && whatIsMissing(demands, d).length === 0)
            .reduce<PhysicalDevice | null>((best, d) => (!best || d.budgetBytes - d.usedBytes > best.budgetBytes - best.usedBytes ? d : best), null) ?? placed)
        : placed);
    if (!target) throw new GpunixError(ErrorCodes.NO_DEVICE, 'no live device to restore the process image on');
    await checkImageRestorable(
      header,
      {
        physical: target,
        shaderLimits: this.options.shaderLimits,
        maxDispatchMs: Math.min(this.options.maxDispatchMs, account.quota.maxDispatchMs ?? Infinity),
        memoryLimit: memoryLimit ?? null,
        account,
      },
      path,
    );
    return { tenant, priority, weight, memoryLimit, target };
  }

  /** The atom timeline in the Chrome trace event format (open it in Perfetto or chrome://tracing). */
  trace(): ChromeTrace {
    return this.traceLog.toChrome();
  }

  /** Waits for a process to end and removes it from the table; returns its exit status. */
  async wait(pid: number): Promise<ExitStatus> {
    const proc = this.lookup(pid);
    const status = await proc.exited;
    this.procs.delete(pid);
    return status;
  }

  /** The graceful end: queued work finishes first. */
  async exitProcess(proc: Proc, code: number): Promise<ExitStatus> {
    if (!proc.alive) return proc.exit!;
    await Promise.all([...this.dispatchers.values()].map((d) => d.whenIdle(proc)));
    proc.end({ code, reason: code === 0 ? 'normal' : 'error' });
    this.ended(proc);
    await this.settle(proc);
    return proc.exit!;
  }

  /** Processes the watchdog has ended (for stats). */
  private watchdogEnded = 0;
  /** Pieces over the limit by the host's clock that the device's timestamps cleared (for stats). */
  private watchdogExcused = 0;
  /** Of those ended, the processes a set budget-spent flag ended (for stats). */
  private watchdogEndedByFlag = 0;

  /** The watchdog's limit on one piece of `proc`'s work (ms): the configured one, or the shortest its loop budgets were made for. */
  private maxDispatchMsOf(proc: Proc): number {
    return Math.min(this.configuredMaxDispatchMs(proc), proc.loopLimitMs);
  }

  /** The limit new loop budgets are made for: the kernel's, or the tenant's lower one (as configured now). */
  private configuredMaxDispatchMs(proc: Proc): number {
    return Math.min(this.options.maxDispatchMs, proc.account.quota.maxDispatchMs ?? Infinity);
  }

  /**
   * Ends a process whose piece of work ran over its limit, or (`flagged`) whose budget-spent flag
   * says its loops were cut short before it (the device ran faster than its calibration): either
   * way the watchdog cut its loops, so its results are not to be trusted.
   */
  private endByWatchdog(proc: Proc, deviceId: string, piece: string, ns: number, flagged = false): void {
    const limit = this.maxDispatchMsOf(proc);
    if (proc.alive) this.watchdogEnded++;
    if (proc.alive && flagged) this.watchdogEndedByFlag++;
    const ran = `'${piece}' ran ${(ns / 1e6).toFixed(0)} ms on ${deviceId}`;
    this.terminate(proc, {
      code: 152,
      reason: 'watchdog',
      message: flagged
        ? `gpunix watchdog: ${ran} and its loops ran out of their iteration budget (made for the limit of ${limit} ms per dispatch, maxDispatchMs); its loops were stopped`
        : `gpunix watchdog: ${ran}, over the limit of ${limit} ms per dispatch (maxDispatchMs); its loops were stopped`,
    });
  }

  private terminate(proc: Proc, status: ExitStatus): void {
    if (!proc.alive) return;
    proc.suspended = false;
    for (const dispatcher of this.dispatchers.values()) dispatcher.cancelAll(proc);
    proc.end(status);
    this.ended(proc);
  }

  /** What follows a process's end, however it ended. */
  private ended(proc: Proc): void {
    for (const dispatcher of this.dispatchers.values()) dispatcher.processEnded(proc);
    // Its objects were the last of their shapes: the keepers take them on before they die.
    refreshCallPathShapes();
  }

  /** Waits until work the process had already put on a device has completed. */
  private async settle(proc: Proc): Promise<void> {
    await Promise.all([...this.dispatchers.values()].map((d) => d.whenIdle(proc)));
  }

  /** The tenants with their quotas and current use. */
  tenants(): TenantRecord[] {
    return [...this.options.tenants.values()].map((t) => t.record());
  }

  /** A tenant's memoryLimit and the device bytes it holds now, without building its record (the daemon asks at every object it creates); null: no such tenant or no limit. */
  tenantMemory(name: string): { limit: number; deviceBytes: number } | null {
    const account = this.options.tenants.get(name);
    return account && account.quota.memoryLimit !== null ? { limit: account.quota.memoryLimit, deviceBytes: account.bytes } : null;
  }

  /** Adds a tenant; its processes are limited by `quota` from their next spawn or allocation. */
  addTenant(name: string, quota?: TenantQuotaOptions): TenantRecord {
    this.assertUp();
    checkTenantName(name);
    if (this.options.tenants.has(name)) throw new GpunixError(ErrorCodes.BAD_OPTION, `tenant ${name} already exists`);
    const account = new TenantAccount(name, resolveTenantQuota(name, quota));
    this.options.tenants.set(name, account);
    return account.record();
  }

  /**
   * Changes a tenant's quota (given fields only). Live processes keep what they hold; the new
   * limits apply to their next allocation, spawn or renice, and the new weight at once.
   */
  updateTenant(name: string, quota: TenantQuotaOptions): TenantRecord {
    const account = this.options.tenants.get(name);
    if (!account) throw new GpunixError(ErrorCodes.BAD_OPTION, `no tenant ${JSON.stringify(name)}`);
    account.quota = resolveTenantQuota(name, quota, account.quota);
    this.rescheduleAll();
    return account.record();
  }

  /** Removes a tenant, killing its live processes first. The default tenant stays. */
  async removeTenant(name: string): Promise<void> {
    if (name === DEFAULT_TENANT) throw new GpunixError(ErrorCodes.BAD_OPTION, `the ${DEFAULT_TENANT} tenant cannot be removed`);
    const account = this.options.tenants.get(name);
    if (!account) throw new GpunixError(ErrorCodes.BAD_OPTION, `no tenant ${JSON.stringify(name)}`);
    this.options.tenants.delete(name);
    const procs = [...this.procs.values()].filter((p) => p.account === account && p.alive);
    await Promise.all(procs.map((p) => this.kill(p.pid)));
  }

  /** The shared segments that exist now, with the pids attached. */
  sharedSegments(): SegmentRecord[] {
    return this.segments.list();
  }

  stats(): KernelStats {
    this.reapExited(); // the counts agree with ps()
    const byState: Record<ProcessState, number> = { ready: 0, running: 0, waiting: 0, suspended: 0, exited: 0 };
    for (const proc of this.procs.values()) byState[proc.state]++;
    return {
      processes: { total: this.procs.size, byState },
      tenants: [...this.options.tenants.values()].map((t) => t.record()),
      liveObjects: { total: this.live.total, byKind: { ...this.live.byKind } },
      bytesAllocated: this.devices.reduce((sum, d) => sum + d.usedBytes + d.evictedBytes, 0),
      swap: { ...this.memory.swap },
      watchdog: {
        maxDispatchMs: this.options.maxDispatchMs,
        processesEnded: this.watchdogEnded,
        piecesExcused: this.watchdogExcused,
        bracketStamps: this.devices.reduce((sum, d) => sum + (d.deviceTimer?.brackets.stamps ?? 0), 0),
        sharedOpenings: this.devices.reduce((sum, d) => sum + (d.deviceTimer?.brackets.sharedOpenings ?? 0), 0),
        spentFlagReads: [...this.dispatchers.values()].reduce((sum, d) => sum + d.spentFlagReads, 0),
        endedBySpentFlag: this.watchdogEndedByFlag,
      },
      eventPump: eventPumpStats(),
      devices: this.devices.map((d) => ({
        id: d.id,
        description: d.adapter.description,
        backend: d.adapter.backend,
        featureLevel: d.adapter.featureLevel,
        isFallbackAdapter: d.adapter.isFallbackAdapter,
        runsOnHostCpu: runsOnHostCpu(d.adapter),
        budgetBytes: d.budgetBytes,
        usedBytes: d.usedBytes,
        evictedBytes: d.evictedBytes,
        utilization: this.dispatchers.get(d)!.utilization(),
        busyNs: this.dispatchers.get(d)!.busyNs,
        preemptions: this.dispatchers.get(d)!.preemptions,
        processes: this.dispatchers.get(d)!.processes,
        evictions: d.evictions,
        restores: d.restores,
        heldSubmits: { batches: d.batchedSubmits, submits: d.submitsBatched },
        lost: d.lostReason,
        loopRates: { ...d.loopRates },
      })),
    };
  }

  describeDevices(): DeviceDescription[] {
    return this.devices.map((d) => ({ id: d.id, budgetBytes: d.budgetBytes, ...d.adapter }));
  }

  /** Ends every process, waits for the devices to go idle, and closes them. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.down) return;
    this.down = true;
    for (const proc of this.procs.values()) {
      this.terminate(proc, { code: 143, reason: 'kernel-shutdown', message: 'the kernel shut down' });
    }
    await Promise.all([...this.dispatchers.values()].map((d) => d.whenIdle(null)));
    try {
      for (const device of this.devices) device.destroy();
    } finally {
      // Node's setImmediate goes back however the devices end.
      for (const dispatcher of this.dispatchers.values()) dispatcher.detach();
      this.releaseEventPump();
    }
    await this.memory.spill.close(); // every spill file (and the default directory) removed
  }

  get isShutdown(): boolean {
    return this.down;
  }

  private assertUp(): void {
    if (this.down) throw new GpunixError(ErrorCodes.SHUTDOWN, 'the kernel has shut down');
  }

  /** Drops exited processes that ended more than exitedRetentionMs ago: a reaped pid is gone for good (NO_SUCH_PROCESS). */
  private reapExited(): void {
    const before = Date.now() - (this.options.exitedRetentionMs ?? DEFAULT_EXITED_RETENTION_MS);
    for (const [pid, proc] of this.procs) if (!proc.alive && proc.endedAt !== null && proc.endedAt <= before) this.procs.delete(pid);
  }

  /** Keeps at most EXITED_PROCESS_RETENTION exited processes listed; the oldest go first. */
  private trimExited(): void {
    const exited = [...this.procs.values()].filter((p) => !p.alive);
    for (const proc of exited.slice(0, Math.max(0, exited.length - EXITED_PROCESS_RETENTION))) this.procs.delete(proc.pid);
  }
}

/** The kernel's options, checked and with defaults filled in. */
export interface KernelSettings {
  scheduler: SchedulerParams;
  atomize: boolean;
  atomSize: number | null;
  /** The kernel's per-piece device time limit (ms); tenants may lower it. */
  maxDispatchMs: number;
  /** What one shader module may cost to compile. */
  shaderLimits: ShaderLimits;
  reencodeCommandBuffers: boolean;
  /** Holding of submits (ns; 0: off). */
  coalesceSubmitsWithinNs: number;
  traceEvents: number;
  /** Least µs between Dawn polls (0: dawn.node's own polling). */
  dawnPollIntervalUs: number;
  tenants: Map<string, TenantAccount>;
  /** Host memory limit for evicted contents and the spill directory. */
  spill: SpillSettings;
  /** How long (ms) an exited process is listed before it is reaped; undefined: the default. */
  exitedRetentionMs?: number;
}

/** A per-piece time limit in ms: a finite number from 1 ms to one hour. */
function checkMaxDispatchMs(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1 || value > 3_600_000) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `${name} must be a number of milliseconds from 1 to 3600000, got ${String(value)}`);
  }
  return value;
}

function positiveInteger(name: string, value: unknown): number {
  if (!Number.isInteger(value) || (value as number) < 1) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `${name} must be a positive integer, got ${String(value)}`);
  }
  return value as number;
}

/** Opens the machine's devices and returns a kernel that owns them. */
export async function createKernel(options: KernelOptions = {}): Promise<Kernel> {
  const budgetBytes = resolveBudget(options.memoryBudget);
  const tenants = resolveTenants(options.tenants);
  const spill: SpillSettings = { ...resolveSpillSettings(options.hostMemoryLimit, options.spillDirectory), remote: options.remoteTier ?? null };
  const maxInFlight = positiveInteger('maxInFlight', options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
  const targetSliceMs = options.targetSliceMs ?? DEFAULT_TARGET_SLICE_MS;
  if (typeof targetSliceMs !== 'number' || !(targetSliceMs > 0)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `targetSliceMs must be a positive number, got ${String(options.targetSliceMs)}`);
  }
  const uncontendedSliceMs = options.uncontendedSliceMs ?? targetSliceMs * DEFAULT_UNCONTENDED_SLICE_FACTOR;
  if (typeof uncontendedSliceMs !== 'number' || !(uncontendedSliceMs >= targetSliceMs)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `uncontendedSliceMs must be a number at least targetSliceMs, got ${String(options.uncontendedSliceMs)}`);
  }
  const uncontendedMaxInFlight =
    options.uncontendedMaxInFlight === undefined
      ? Math.max(maxInFlight, DEFAULT_UNCONTENDED_MAX_IN_FLIGHT)
      : positiveInteger('uncontendedMaxInFlight', options.uncontendedMaxInFlight);
  if (uncontendedMaxInFlight < maxInFlight) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `uncontendedMaxInFlight must be at least maxInFlight (${maxInFlight}), got ${uncontendedMaxInFlight}`);
  }
  const contentionWindowMs = options.contentionWindowMs ?? DEFAULT_CONTENTION_WINDOW_MS;
  if (typeof contentionWindowMs !== 'number' || !(contentionWindowMs >= 0)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `contentionWindowMs must be a non-negative number, got ${String(options.contentionWindowMs)}`);
  }
  const issueLeadMs = options.issueLeadMs ?? DEFAULT_ISSUE_LEAD_MS;
  if (typeof issueLeadMs !== 'number' || !(issueLeadMs >= 0) || !Number.isFinite(issueLeadMs)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `issueLeadMs must be a non-negative number, got ${String(options.issueLeadMs)}`);
  }
  const atomSize = options.atomSize === undefined ? null : positiveInteger('atomSize', options.atomSize);
  const maxDispatchMs = checkMaxDispatchMs('maxDispatchMs', options.maxDispatchMs ?? DEFAULT_MAX_DISPATCH_MS);
  const shaderLimits = resolveShaderLimits(options.shaderLimits);
  const traceEvents = options.traceEvents ?? DEFAULT_TRACE_EVENTS;
  if (!Number.isInteger(traceEvents) || traceEvents < 0) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `traceEvents must be a non-negative integer, got ${String(options.traceEvents)}`);
  }
  const coalesceSubmitsWithinUs = options.coalesceSubmitsWithinUs ?? DEFAULT_COALESCE_SUBMITS_WITHIN_US;
  if (typeof coalesceSubmitsWithinUs !== 'number' || !(coalesceSubmitsWithinUs >= 0 && coalesceSubmitsWithinUs <= 1e6)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `coalesceSubmitsWithinUs must be a number of µs from 0 to 1000000, got ${String(options.coalesceSubmitsWithinUs)}`);
  }
  const dawnPollIntervalUs = options.dawnPollIntervalUs ?? DEFAULT_DAWN_POLL_INTERVAL_US;
  if (typeof dawnPollIntervalUs !== 'number' || !(dawnPollIntervalUs >= 0 && dawnPollIntervalUs <= MAX_DAWN_POLL_INTERVAL_US)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `dawnPollIntervalUs must be a number from 0 to ${MAX_DAWN_POLL_INTERVAL_US}, got ${String(options.dawnPollIntervalUs)}`);
  }
  if (options.devices !== undefined) positiveInteger('devices', options.devices);
  const backends = resolveBackends(options.backends);
  const exitedRetentionMs = options.exitedRetentionMs ?? DEFAULT_EXITED_RETENTION_MS;
  if (typeof exitedRetentionMs !== 'number' || !(exitedRetentionMs >= 0)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `exitedRetentionMs must be a non-negative number of milliseconds, got ${String(options.exitedRetentionMs)}`);
  }
  const devices = await openDevices({ backends, count: options.devices, budgetBytes });
  return new Kernel(devices, {
    scheduler: {
      maxInFlight,
      targetSliceNs: targetSliceMs * 1e6,
      uncontendedSliceNs: uncontendedSliceMs * 1e6,
      uncontendedMaxInFlight,
      contentionWindowNs: contentionWindowMs * 1e6,
      leadNs: issueLeadMs * 1e6,
    },
    atomize: options.atomize ?? true,
    atomSize,
    maxDispatchMs,
    shaderLimits,
    reencodeCommandBuffers: options.reencodeCommandBuffers ?? false,
    coalesceSubmitsWithinNs: coalesceSubmitsWithinUs * 1e3,
    traceEvents,
    dawnPollIntervalUs,
    tenants,
    spill,
    exitedRetentionMs,
  });
}
