// The GPUDevice a process sees. It stands on one of the kernel's physical devices, shared with
// other processes; every real call it makes is wrapped so that its errors reach only this device's
// scopes, and every object it creates is the process's own and is counted in its ledger.

import type { Captured, PhysicalDevice } from '../device/physicalDevice.js';
import type { Dispatcher } from '../kernel/dispatch.js';
import type { ResourceKind } from '../kernel/ledger.js';
import type { Proc } from '../kernel/proc.js';
import { ErrorCodes, GpunixError, refuseUnsupported } from '../errors.js';
import { MIGRATION_ROUNDS } from '../params.js';
import type { ImageBindGroup, ImageCommand, ImagePassCommand, ImagePipeline, ImageQuerySet, ProcessImage, QueuedWork } from '../kernel/image.js';
import { offDeviceItem, type WorkItem } from '../kernel/dispatch.js';
import type { PassCommand, RecordedCommand, VirtualCommandBuffer } from './commandBuffer.js';
import { Submission } from './submission.js';
import { GpunixDeviceExtension } from './extension.js';
import {
  bindGroupDescriptor,
  bindGroupLayoutDescriptor,
  bufferDescriptor,
  computePipelineDescriptor,
  labelDescriptor,
  pipelineLayoutDescriptor,
  querySetDescriptor,
  shaderModuleDescriptor,
  usvString,
} from '../webidl.js';
import { DeviceObjects, ForeignStandIn, foreignWords, foreignWordsOfRejection } from './foreign.js';
import { realEntries, VirtualBindGroup } from './bindGroup.js';
import { VirtualBuffer } from './buffer.js';
import { VirtualCommandEncoder } from './commandEncoder.js';
import { buildAtomizedTwin, checkedPipelineDescriptor, invalidComputePipeline, makeFlaggedPipeline, makeFlaggedPipelineAsync, VirtualComputePipeline, type FlaggedPipeline, type SpentFlagBinding } from './computePipeline.js';
import { LoopFlag } from './loopFlag.js';
import { ErrorScopes, ErrorTarget, HeldTarget } from './errorScopes.js';
import { deviceLostInfo, limitValues } from './supported.js';
import { EventHandlerAttribute } from './eventHandler.js';
import type { ProcessHost } from './host.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import { BindingSlots, enableRefusal, factsOfLayout, invalidReal, layoutFacts, ProcessLimits, rememberLayoutFacts } from './limits.js';
import { MigrationStage } from './migrationStage.js';
import { hideOwnSlots, REBUILD_PHASES, RebuildPhase, Rebuildable, unwrap } from './object.js';
import { VirtualQuerySet } from './querySet.js';
import { VirtualQueue, writeBufferBytes } from './queue.js';
import { budgetTimeLimitMs, compileBounded, loopBudget, refusedModule, VirtualShaderModule } from './shaderModule.js';
import type { Budget } from '../wgsl/index.js';
import { checkShader, describeShaderLimit } from '../wgsl/complexity.js';
import { GPUInternalErrorClass, GPUOutOfMemoryErrorClass, GPUPipelineErrorClass, GPUUncapturedErrorEventClass, GPUValidationErrorClass, outOfMemoryError, validationError } from './webgpuGlobals.js';
import { BufferResidency, realUsageFor, SharedResidency } from '../kernel/residency.js';
import type { MemoryManager } from '../kernel/mem.js';

/**
 * The ledger's way to free a real object. Made outside the creating method so the closure holds
 * only the real object: capturing the method's scope would keep the virtual object reachable from
 * the ledger, and a buffer the program dropped would never be reclaimed.
 */
function destroyer(real: { destroy(): void }): () => void {
  return () => real.destroy();
}

/** Like destroyer, for a buffer: the memory manager forgets it too. */
function releaser(memory: MemoryManager, residency: BufferResidency): () => void {
  return () => {
    memory.unregister(residency);
    residency.destroy();
  };
}

const RESOLVED_TRUE: Promise<boolean> = Promise.resolve(true);

/** The real createCommandEncoder, for captureWith (no closure per call). */
const createEncoder = (device: GPUDevice, descriptor: GPUCommandEncoderDescriptor | undefined): GPUCommandEncoder => device.createCommandEncoder(descriptor);

export interface DeviceLostInfo {
  readonly reason: GPUDeviceLostReason;
  readonly message: string;
}

/** Calls `call`: callRouted as callRoutedWith(target, invokeCall, call), one body for both. */
const invokeCall = <T>(call: () => T): T => call();

export class VirtualDevice extends EventTarget {
  // State lives in private fields behind prototype accessors: a GPUDevice has no own properties
  // (WebIDL). Kernel-side members keep their names as accessors, so the code below reads as before.
  #label: string;
  #objects: DeviceObjects = new DeviceObjects(this);
  #queue!: VirtualQueue;
  #features!: ReadonlySet<string>;
  #limits!: Readonly<Record<string, number>>;
  #adapterInfo!: GPUAdapterInfo;
  #lost!: Promise<DeviceLostInfo>;
  #onuncapturederror: ((event: Event) => void) | null = null;
  #dispatcher!: Dispatcher;
  #isLost = false;
  #migratable = new Map<RebuildPhase, Set<WeakRef<Rebuildable>>>();
  #buffers = new Set<WeakRef<VirtualBuffer>>();
  #resolveLost!: (info: DeviceLostInfo) => void;
  #scopes!: ErrorScopes;
  #listenerCount = 0;
  #host: ProcessHost;
  #physical: PhysicalDevice;
  #requiredLimits!: Record<string, number | undefined>;

  /** Takes object arguments: interface check and ownership (src/vgpu/foreign.ts). */
  get objects(): DeviceObjects {
    return this.#objects;
  }
  get queue(): VirtualQueue {
    return this.#queue;
  }
  get features(): ReadonlySet<string> {
    return this.#features;
  }
  get limits(): Readonly<Record<string, number>> {
    return this.#limits;
  }
  get adapterInfo(): GPUAdapterInfo {
    return this.#adapterInfo;
  }
  get lost(): Promise<DeviceLostInfo> {
    return this.#lost;
  }
  get onuncapturederror(): ((event: Event) => void) | null {
    return this.#onuncapturederror;
  }
  /** An event handler attribute: runs among the listeners, where first set (src/vgpu/eventHandler.ts). */
  set onuncapturederror(value: ((event: Event) => void) | null) {
    this.#uncapturedHandler.value = value;
    this.#onuncapturederror = this.#uncapturedHandler.value as ((event: Event) => void) | null;
  }
  #uncapturedHandler = new EventHandlerAttribute(this, 'uncapturederror');
  get dispatcher(): Dispatcher {
    return this.#dispatcher;
  }
  set dispatcher(dispatcher: Dispatcher) {
    this.#dispatcher = dispatcher;
  }
  get isLost(): boolean {
    return this.#isLost;
  }
  set isLost(value: boolean) {
    this.#isLost = value;
  }
  /** What migration must make afresh on another device, by phase; weak, so dropped objects go. */
  private set resolveLost(resolve: (info: DeviceLostInfo) => void) {
    this.#resolveLost = resolve;
  }
  get host(): ProcessHost {
    return this.#host;
  }
  /** The kernel's device this one stands on; migration changes it. */
  get physical(): PhysicalDevice {
    return this.#physical;
  }
  set physical(physical: PhysicalDevice) {
    this.#physical = physical;
  }

  constructor(
    host: ProcessHost,
    physical: PhysicalDevice,
    features: ReadonlySet<string>,
    limits: Readonly<Record<string, number>>,
    adapterInfo: GPUAdapterInfo,
    descriptor: GPUDeviceDescriptor | undefined,
  ) {
    super();
    hideOwnSlots(this);
    this.#host = host;
    this.#physical = physical;
    this.#label = descriptor?.label ?? '';
    // The limits the program asked for: a migration checks its target against them (src/kernel/compatibility.ts).
    this.#requiredLimits = { ...(descriptor?.requiredLimits ?? {}) };
    this.#features = features;
    this.#limits = limits;
    this.#adapterInfo = adapterInfo;
    this.dispatcher = host.dispatcherFor(physical);
    this.#queue = new VirtualQueue(this);
    if (descriptor?.defaultQueue?.label) this.#queue.label = descriptor.defaultQueue.label;
    this.#lost = new Promise((resolve) => (this.#resolveLost = resolve));
    this.#scopes = new ErrorScopes((error) => this.dispatchUncaptured(error));
  }

  get proc(): Proc {
    return this.host.proc;
  }

  get label(): string {
    return this.#label;
  }
  /** WebGPU's `attribute USVString label`, converted as WebIDL says. */
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  // ---- error plumbing -------------------------------------------------------------------------

  /**
   * The scopes current now, for a call the dispatcher makes later: their pops wait until
   * callRouted/callRoutedChecked makes the call with this target, or until `release()` (the call
   * will never be made). Every path of a work item must do one of the two.
   */
  errorTarget(): HeldTarget {
    return this.#scopes.hold();
  }

  /** Makes a real call now; its errors go to the scopes current now. */
  call<T>(realCall: () => T): T {
    const captured = this.physical.capture(realCall);
    if (!captured.clean) this.route(this.#scopes.target(), captured);
    return captured.value;
  }

  /** Makes a real call (now, perhaps on the program's behalf after a wait); errors go to `target`. */
  callRouted<T>(target: HeldTarget, realCall: () => T): T {
    return this.callRoutedWith(target, invokeCall, realCall);
  }

  /** callRouted(target, () => call(a)) without that closure: for calls a loop makes every round (a map, a write). */
  callRoutedWith<A, T>(target: HeldTarget, call: (a: A) => T, a: A): T {
    try {
      const physical = this.physical;
      const value = physical.callCapturing(call, a, undefined);
      const failed = physical.lastFailed;
      if (failed !== null) this.route(target.scopes, failed);
      return value;
    } finally {
      target.release();
    }
  }

  /**
   * Routes the errors of a call captured now (physical.capture/captureWith) to the scopes current
   * now; resolves whether it raised none. Nothing to route, and no promise made, for a clean call.
   */
  checked(captured: Captured<unknown>): Promise<boolean> {
    return captured.clean ? RESOLVED_TRUE : this.route(this.#scopes.target(), captured);
  }

  /** Like call(), and also says whether the call raised no error (`clean`: known at return). */
  callChecked<T>(realCall: () => T): { value: T; valid: Promise<boolean>; clean: boolean } {
    const captured = this.physical.capture(realCall);
    return { value: captured.value, valid: this.route(this.#scopes.target(), captured), clean: captured.clean };
  }

  /** Like callChecked, with the call's errors reworded by `reword` before the program sees them. */
  callReworded<T>(realCall: () => T, reword: (errors: GPUError[]) => GPUError[]): { value: T; valid: Promise<boolean>; clean: boolean } {
    const captured = this.physical.capture(realCall);
    const reworded = { ...captured, errors: captured.errors.then(reword) };
    return { value: captured.value, valid: this.route(this.#scopes.target(), reworded), clean: captured.clean };
  }

  /** Routes the errors of a call the kernel made for this device to `target` (see errorTarget). */
  routeCaptured(target: HeldTarget, captured: Captured<unknown>): void {
    this.route(target.scopes, captured);
  }

  callRoutedChecked(target: HeldTarget, realCall: () => void): Promise<boolean> {
    try {
      return this.route(target.scopes, this.physical.capture(realCall));
    } finally {
      target.release();
    }
  }

  /** Delivers a call's errors to `target`; resolves whether the call raised none. */
  private route(target: ErrorTarget, captured: Captured<unknown>): Promise<boolean> {
    // A call known clean at return needs no routing at all: the hot path of every valid program.
    if (captured.clean) return RESOLVED_TRUE;
    // A lost device reports no errors (WebGPU): its calls are no-ops from the program's view.
    // Errors about another device's object (a stand-in) are worded as Dawn words them (foreign.ts).
    this.#scopes.route(
      target,
      captured.errors.then((list) => (this.isLost ? [] : foreignWords(list, this))),
    );
    return captured.errors.then((list) => list.length === 0);
  }

  /** Reports an error gpunix itself found for a call the dispatcher makes later (see errorTarget). */
  reportRouted(target: HeldTarget, error: GPUError): void {
    this.route(target.scopes, { value: undefined, errors: Promise.resolve([error]), clean: false });
    target.release();
  }

  /** Reports an error gpunix itself found (a limit or budget), through the same channels. */
  private reportNow(error: GPUError): void {
    if (!this.isLost) this.#scopes.report(this.#scopes.target(), error);
  }

  private dispatchUncaptured(error: GPUError): void {
    if (this.isLost) return;
    // Cancelable, as WebGPU's note on preventDefault() (it silences the warning) implies and Dawn does.
    const event = new GPUUncapturedErrorEventClass('uncapturederror', { error, cancelable: true } as { error: GPUError });
    const handled = this.hasUncapturedListener();
    // The attribute's handler is one of the listeners (see onuncapturederror): one dispatch runs all, in order.
    this.dispatchEvent(event as unknown as Event);
    if (!handled) {
      process.stderr.write(`gpunix: pid ${this.proc.pid}: uncaptured WebGPU ${error.constructor.name}: ${error.message}\n`);
    }
  }

  override addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions | boolean): void {
    if (type === 'uncapturederror' && listener) this.#listenerCount++;
    super.addEventListener(type, listener, options);
  }
  override removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: EventListenerOptions | boolean): void {
    if (type === 'uncapturederror' && listener) this.#listenerCount = Math.max(0, this.#listenerCount - 1);
    super.removeEventListener(type, listener, options);
  }
  private hasUncapturedListener(): boolean {
    return this.#listenerCount > 0 || this.onuncapturederror !== null;
  }

  pushErrorScope(filter: GPUErrorFilter): void {
    this.#scopes.push(filter);
  }

  popErrorScope(): Promise<GPUError | null> {
    if (this.isLost) {
      // WebGPU (and Dawn): on a lost device popErrorScope resolves null, even with no scope open.
      return this.#scopes.pop().then(
        () => null,
        () => null,
      );
    }
    return this.#scopes.pop();
  }

  // ---- resources ------------------------------------------------------------------------------

  private track<T extends object>(owner: T, kind: ResourceKind, bytes: number, destroy?: () => void): object | null {
    if (this.isLost) return null;
    return this.proc.ledger.add(owner, { kind, device: this.physical, scope: this, bytes, destroy });
  }

  /** An out-of-memory error when `size` more bytes break the device budget or a limit; else null. */
  private memoryRefusal(size: number): GPUError | null {
    const physical = this.physical;
    // The budget bounds what is resident, not what is allocated: beyond it, the memory manager
    // evicts idle processes' buffers to host memory. Only a buffer that could never be resident fails.
    if (size > physical.budgetBytes) {
      return outOfMemoryError(
        `gpunix: buffer of ${size} bytes is larger than device ${physical.id}'s whole memory budget (${physical.budgetBytes} bytes)`,
      );
    }
    const proc = this.proc;
    if (proc.memoryLimit !== null && proc.ledger.bytes + size > proc.memoryLimit) {
      return outOfMemoryError(
        `gpunix: buffer of ${size} bytes would exceed process ${proc.pid}'s memory limit (${proc.ledger.bytes} of ${proc.memoryLimit} bytes in use)`,
      );
    }
    const tenant = proc.account;
    if (tenant.quota.memoryLimit !== null && tenant.bytes + size > tenant.quota.memoryLimit) {
      return outOfMemoryError(
        `gpunix: buffer of ${size} bytes would exceed tenant "${tenant.name}"'s memory limit (${tenant.bytes} of ${tenant.quota.memoryLimit} bytes in use)`,
      );
    }
    return null;
  }

  createBuffer(input: GPUBufferDescriptor): VirtualBuffer {
    const descriptor = bufferDescriptor(input);
    const size = descriptor.size;
    let refusal: GPUError | null = null;
    if (this.isLost) {
      refusal = validationError('device is lost');
    } else if (size > this.#limits.maxBufferSize) {
      refusal = validationError(
        `Buffer size (${size}) exceeds the max buffer size limit (${this.#limits.maxBufferSize}).\n - While calling [Device].CreateBuffer([BufferDescriptor "${descriptor.label ?? ''}"]).`,
      );
    } else {
      refusal = this.memoryRefusal(size);
    }
    const residencyOf = (real: GPUBuffer, realUsage: number): BufferResidency =>
      new BufferResidency(this.physical, real, real.size, realUsage, descriptor?.label ?? '', this.proc, this.proc.ledger, this.host.memory.swap);
    if (refusal) {
      // An invalid real buffer (usage 0 makes Dawn return one) keeps every later use failing
      // exactly as WebGPU's invalid buffer would; its own error is dropped in favour of ours.
      const real = this.physical.capture(() => this.physical.device.createBuffer({ ...descriptor, usage: 0 })).value;
      this.reportNow(refusal);
      return new VirtualBuffer(this, residencyOf(real, 0), descriptor);
    }
    const realUsage = realUsageFor(Number(descriptor.usage));
    const { value: real, valid, clean } = this.callChecked(() => this.physical.device.createBuffer({ ...descriptor, usage: realUsage }));
    const residency = residencyOf(real, realUsage);
    const buffer = new VirtualBuffer(this, residency, descriptor);
    this.#buffers.add(new WeakRef(buffer));
    const memory = this.host.memory;
    const token = this.track(buffer, 'buffer', real.size, releaser(memory, residency));
    buffer.ledgerToken = token;
    residency.token = token;
    if (token) {
      memory.register(residency);
      if (clean) memory.rebalance(this.physical);
      // An invalid buffer holds no memory: stop counting it once Dawn says so.
      valid.then((ok) => {
        if (!ok && buffer.ledgerToken === token) {
          buffer.ledgerToken = null;
          residency.token = null;
          memory.unregister(residency);
          this.proc.ledger.release(token, true);
        }
      });
    }
    return buffer;
  }

  /**
   * The loop budget of this process's modules on `physical` (made now, or again on migration), and
   * the record of the time it stands for (a budget clamped to u32 stands for less): the watchdog's
   * time check must fire by then.
   */
  private loopBudgetOn(physical: PhysicalDevice): Budget {
    const maxDispatchMs = this.host.maxDispatchMs();
    this.proc.loopLimitMs = Math.min(this.proc.loopLimitMs, maxDispatchMs, budgetTimeLimitMs(physical));
    return loopBudget(physical, maxDispatchMs);
  }

  createShaderModule(input: GPUShaderModuleDescriptor): VirtualShaderModule {
    const descriptor = shaderModuleDescriptor(input, this.objects);
    // What compilation would cost is measured first: a module over a limit never reaches Dawn.
    const refusal = checkShader(descriptor.code, this.host.shaderLimits);
    // The real device has every feature: an extension whose feature this device lacks is refused here, as Dawn would.
    const disabled = refusal ? null : enableRefusal(descriptor.code, this.#features);
    const budget = this.loopBudgetOn(this.physical);
    const compiled = refusal
      ? refusedModule(this.physical, descriptor.label, `${ErrorCodes.SHADER_LIMIT}: ${describeShaderLimit(descriptor.label ?? '', refusal)}`)
      : disabled
        ? refusedModule(this.physical, descriptor.label, disabled.message)
        : compileBounded(this.physical, descriptor, budget, (make) => this.call(make));
    if (disabled) {
      this.reportNow(
        validationError(
          `Error while parsing WGSL: :${disabled.line}:${disabled.column} error: ${disabled.message}\n${disabled.excerpt}\n\n\n - While calling [Device].CreateShaderModule([ShaderModuleDescriptor ""${descriptor.label ?? ''}""]).\n`,
        ),
      );
    } else if (compiled.refusal) this.reportNow(validationError(compiled.refusal));
    const module = new VirtualShaderModule(compiled, descriptor, (physical) => this.loopBudgetOn(physical));
    module.owner = this;
    this.track(module, 'shaderModule', 0);
    this.remember('shaderModule', module);
    return module;
  }

  createComputePipeline(input: GPUComputePipelineDescriptor): VirtualComputePipeline {
    const descriptor = computePipelineDescriptor(input, this.objects);
    const real = checkedPipelineDescriptor('createComputePipeline', descriptor);
    const limited = this.pipelineRefusal(descriptor);
    if (limited) {
      this.reportNow(validationError(`${limited}\n - While calling [Device].CreateComputePipeline([ComputePipelineDescriptor ""${descriptor.label ?? ''}""]).\n`));
      return this.refusedPipeline(descriptor);
    }
    // With the budget-spent flag where it can have one; else as the program wrote it, its errors its own.
    const flagged = this.isLost ? null : makeFlaggedPipeline(this, descriptor, real);
    if (flagged !== null) {
      const pipeline = this.madePipeline(flagged.real, descriptor, flagged.flag);
      if (this.host.atomize) buildAtomizedTwin(this, pipeline, true);
      return pipeline;
    }
    const { value, clean } = this.callChecked(() => this.physical.device.createComputePipeline(real));
    const pipeline = this.madePipeline(value, descriptor);
    if (clean && this.host.atomize && !this.isLost) buildAtomizedTwin(this, pipeline, true);
    return pipeline;
  }

  /**
   * createComputePipeline for a caller that must never wait for the device (gpunixd serves every
   * session and the operators on one thread): Dawn's synchronous creation waits in the driver for
   * the kernel running on the device (lavapipe takes its queue lock), its asynchronous one does
   * not. The pipeline exists at once, with the synchronous call's semantics; `ready` resolves when
   * Dawn's pipeline (and its atomized twin) are made, and until then the pipeline must not be used.
   * Errors go where the synchronous call's would: to the error scopes current now (uncaptured if
   * none). `ready` rejects only with what the synchronous call would have thrown (a TypeError
   * Dawn's bindings give the asynchronous call as a rejection).
   */
  createComputePipelineDeferred(input: GPUComputePipelineDescriptor): { pipeline: VirtualComputePipeline; ready: Promise<void> } {
    const descriptor = computePipelineDescriptor(input, this.objects);
    const real = checkedPipelineDescriptor('createComputePipeline', descriptor);
    const limited = this.pipelineRefusal(descriptor);
    if (limited) {
      this.reportNow(validationError(`${limited}\n - While calling [Device].CreateComputePipeline([ComputePipelineDescriptor ""${descriptor.label ?? ''}""]).\n`));
      return { pipeline: this.refusedPipeline(descriptor), ready: Promise.resolve() };
    }
    const physical = this.physical;
    const target = this.errorTarget();
    const plain = (): Promise<GPUComputePipeline> => physical.capture(() => physical.device.createComputePipelineAsync(real)).value;
    // With the budget-spent flag where it can have one; else as the program wrote it.
    const flagged = this.isLost ? null : makeFlaggedPipelineAsync(this, descriptor, real);
    let made: Promise<GPUComputePipeline | FlaggedPipeline>;
    try {
      made = flagged === null ? plain() : flagged.then<GPUComputePipeline | FlaggedPipeline>((value) => value ?? plain());
    } catch (error) {
      target.release();
      throw error;
    }
    const pipeline = this.madePipeline(null, descriptor);
    const ready = made.then(
      (value): Promise<void> | void => {
        target.release();
        // Migrated meanwhile: rebuild() has made it on the new device from the descriptor.
        if (this.physical !== physical) return;
        if ('flag' in value) pipeline.attach(value.real, value.flag);
        else pipeline.attach(value);
        if (this.host.atomize && !this.isLost) return buildAtomizedTwin(this, pipeline, false);
      },
      (error: unknown) => {
        if (!(error instanceof GPUPipelineErrorClass) || this.physical !== physical) {
          target.release();
          if (error instanceof GPUPipelineErrorClass) return;
          throw error;
        }
        if (error.reason === 'validation') {
          // Dawn validates before it reaches the driver, so the synchronous call cannot wait here: it
          // makes the invalid pipeline and raises exactly the error the program's call would have.
          const captured = physical.capture(() => physical.device.createComputePipeline(real));
          this.routeCaptured(target, captured);
          target.release();
          pipeline.attach(captured.value);
          if (captured.clean && this.host.atomize && !this.isLost) return buildAtomizedTwin(this, pipeline, false);
          return;
        }
        // The driver failed it (GPUInternalError): an invalid pipeline made without the driver stands in.
        pipeline.attach(invalidComputePipeline(physical));
        this.reportRouted(target, new GPUInternalErrorClass(error.message));
      },
    );
    return { pipeline, ready };
  }

  async createComputePipelineAsync(input: GPUComputePipelineDescriptor): Promise<VirtualComputePipeline> {
    const descriptor = computePipelineDescriptor(input, this.objects, 'createComputePipelineAsync');
    const real = checkedPipelineDescriptor('createComputePipelineAsync', descriptor);
    // On a lost device the promise resolves, with an invalid pipeline (WebGPU; Dawn does the same):
    // the device timeline validates nothing any more.
    if (this.isLost) return this.madePipeline(invalidComputePipeline(this.physical), descriptor);
    const limited = this.pipelineRefusal(descriptor);
    if (limited) throw new GPUPipelineErrorClass(`${limited}\n`, { reason: 'validation' });
    const physical = this.physical;
    // With the budget-spent flag where it can have one; else as the program wrote it, its rejection its own.
    const flagged = await makeFlaggedPipelineAsync(this, descriptor, real);
    if (flagged && this.physical === physical && !this.isLost) {
      const pipeline = this.madePipeline(flagged.real, descriptor, flagged.flag);
      if (this.host.atomize) await buildAtomizedTwin(this, pipeline, false);
      return pipeline;
    }
    const made = physical.device.createComputePipelineAsync(real).catch((error: unknown) => {
      // Lost while it was being made: resolves all the same, as on a device lost before the call.
      if (this.isLost) return invalidComputePipeline(physical);
      throw foreignWordsOfRejection(error, this);
    });
    const value = await made;
    const pipeline = this.madePipeline(this.physical === physical ? value : null, descriptor);
    // Migrated while Dawn made it (on the old device, which migration could not see): made again here.
    if (this.physical !== physical && !this.isLost) await pipeline.rebuild(this.physical);
    if (this.host.atomize && !this.isLost) await buildAtomizedTwin(this, pipeline, false);
    return pipeline;
  }

  /**
   * Why the process's own limits refuse a pipeline that the real device's would accept (limits.ts),
   * or null. A module gpunix refused already, or one not of this device, is left to Dawn's verdict.
   */
  private pipelineRefusal(descriptor: GPUComputePipelineDescriptor): string | null {
    if (this.isLost) return null;
    const compute = descriptor.compute;
    const module = compute?.module as unknown;
    if (!(module instanceof VirtualShaderModule) || module.refusal !== null) return null;
    const refusal = this.limitChecks.pipelineRefusal(module, compute.entryPoint, compute.constants as Record<string, number> | undefined, descriptor.layout === 'auto');
    return refusal && `${refusal}\n - While initializing [ComputePipeline ${descriptor.label ? `"${descriptor.label}"` : '(unlabeled)'}]`;
  }

  /** The invalid pipeline a refused creation returns. */
  private refusedPipeline(descriptor: GPUComputePipelineDescriptor): VirtualComputePipeline {
    const pipeline = this.madePipeline(invalidReal.computePipeline(this.physical, descriptor.label), descriptor);
    pipeline.refused = true;
    return pipeline;
  }

  #limitChecks: ProcessLimits | null = null;
  #limitChecksOn: PhysicalDevice | null = null;
  /** The checks of this device's limits against the real device's (made again after a migration). */
  get limitChecks(): ProcessLimits {
    if (this.#limitChecks === null || this.#limitChecksOn !== this.physical) {
      this.#limitChecks = ProcessLimits.of(this.#limits, this.physical);
      this.#limitChecksOn = this.physical;
    }
    return this.#limitChecks;
  }

  /** The process's record of a pipeline Dawn made (`real`, binding `spentFlag` if made flagged; null until a deferred creation attaches it). */
  private madePipeline(real: GPUComputePipeline | null, descriptor: GPUComputePipelineDescriptor, spentFlag: SpentFlagBinding | null = null): VirtualComputePipeline {
    const pipeline = new VirtualComputePipeline(this, real, descriptor);
    pipeline.spentFlag = spentFlag;
    this.track(pipeline, 'computePipeline', 0);
    this.remember('computePipeline', pipeline);
    return pipeline;
  }

  createBindGroupLayout(input: GPUBindGroupLayoutDescriptor): VirtualBindGroupLayout {
    // Converted into a fresh descriptor (webidl.ts): kept as it is, for rebuilds and checkpoints.
    const kept = bindGroupLayoutDescriptor(input);
    const facts = layoutFacts(kept.entries);
    const limited = this.isLost ? null : this.limitChecks.bindGroupLayoutRefusal(kept.entries, facts);
    const real = limited ? invalidReal.bindGroupLayout(this.physical, kept.label) : this.call(() => this.physical.device.createBindGroupLayout(kept));
    if (limited) {
      const what = `[BindGroupLayoutDescriptor ""${kept.label ?? ''}""]`;
      this.reportNow(validationError(`${limited}\n - While validating binding counts\n - While validating ${what}\n - While calling [Device].CreateBindGroupLayout(${what}).\n`));
    }
    const layout = new VirtualBindGroupLayout(real, kept.label, { descriptor: kept }, this);
    layout.refused = limited !== null;
    rememberLayoutFacts(layout, facts);
    this.track(layout, 'bindGroupLayout', 0);
    this.remember('bindGroupLayout', layout);
    return layout;
  }

  createPipelineLayout(input: GPUPipelineLayoutDescriptor): VirtualPipelineLayout {
    const descriptor = pipelineLayoutDescriptor(input, this.objects);
    const layouts = [...descriptor.bindGroupLayouts];
    const limited = this.isLost ? null : this.pipelineLayoutRefusal(layouts);
    const real = limited
      ? invalidReal.pipelineLayout(this.physical, descriptor.label)
      : this.call(() => this.physical.device.createPipelineLayout({ ...descriptor, bindGroupLayouts: layouts.map((l) => unwrap(l)) }));
    if (limited) this.reportNow(validationError(`${limited}\n - While calling [Device].CreatePipelineLayout([PipelineLayoutDescriptor ""${descriptor.label ?? ''}""]).\n`));
    const layout = new VirtualPipelineLayout(real, layouts, descriptor.label, descriptor.immediateSize, this);
    layout.refused = limited !== null;
    this.track(layout, 'pipelineLayout', 0);
    this.remember('pipelineLayout', layout);
    return layout;
  }

  createBindGroup(input: GPUBindGroupDescriptor): VirtualBindGroup {
    // Converted and owned: another device's layout or buffer is a stand-in from here on (foreign.ts).
    const kept = bindGroupDescriptor(input, this.objects);
    const limited = this.isLost ? null : this.bindGroupRefusal(kept);
    const real = limited
      ? invalidReal.bindGroup(this.physical, kept.label)
      : this.call(() => this.physical.device.createBindGroup({ ...kept, layout: unwrap(kept.layout), entries: realEntries(kept.entries) }));
    if (limited) this.reportNow(validationError(`${limited}\n - While calling [Device].CreateBindGroup([BindGroupDescriptor ""${kept.label ?? ''}""]).\n`));
    const group = new VirtualBindGroup(this.physical, real, kept, this);
    group.refused = limited !== null;
    this.track(group, 'bindGroup', 0);
    this.remember('bindGroup', group);
    return group;
  }

  /** createPipelineLayout at the process's limits: group count and summed binding slots. */
  private pipelineLayoutRefusal(layouts: readonly unknown[]): string | null {
    const checks = this.limitChecks;
    const slots = new BindingSlots();
    for (const layout of layouts) {
      const facts = layout instanceof VirtualBindGroupLayout ? factsOfLayout(layout) : null;
      if (facts) slots.plus(facts.slots);
    }
    return checks.pipelineLayoutRefusal(layouts.length, slots);
  }

  /** createBindGroup at the process's limits: each buffer binding's offset alignment and size. */
  private bindGroupRefusal(descriptor: GPUBindGroupDescriptor & { entries: GPUBindGroupEntry[] }): string | null {
    const checks = this.limitChecks;
    if (!checks.alignmentBelow && !checks.bindingSizeBelow) return null;
    const layout = descriptor.layout as unknown;
    const facts = layout instanceof VirtualBindGroupLayout && !layout.refused ? factsOfLayout(layout) : null;
    if (!facts) return null;
    for (const [i, entry] of descriptor.entries.entries()) {
      const kind = facts.buffers.get(Number(entry.binding));
      const resource = entry.resource as unknown;
      const binding = (resource instanceof VirtualBuffer ? { buffer: resource } : resource) as GPUBufferBinding | undefined;
      if (!kind || !binding || !(binding.buffer instanceof VirtualBuffer)) continue;
      const refusal = checks.bufferBindingRefusal(kind, Number(binding.offset ?? 0), binding.buffer.size, binding.size === undefined ? undefined : Number(binding.size), binding.buffer.label);
      if (refusal) return `${refusal}\n - While validating entries[${i}]\n - While validating [BindGroupDescriptor ""${descriptor.label ?? ''}""] against [BindGroupLayout ${layout instanceof VirtualBindGroupLayout && layout.label ? `"${layout.label}"` : '(unlabeled)'}]`;
    }
    return null;
  }

  createCommandEncoder(input?: GPUCommandEncoderDescriptor): VirtualCommandEncoder {
    const descriptor = labelDescriptor(input, 'createCommandEncoder');
    const physical = this.physical;
    const real = physical.callCapturing(createEncoder, physical.device, descriptor);
    const failed = physical.lastFailed;
    if (failed !== null) this.route(this.#scopes.target(), failed);
    return new VirtualCommandEncoder(this, real, descriptor);
  }

  createQuerySet(input: GPUQuerySetDescriptor): VirtualQuerySet {
    const descriptor = querySetDescriptor(input);
    if (descriptor.type === 'timestamp' && !this.#features.has('timestamp-query')) {
      // WebGPU's content-timeline check (as Dawn does it): a TypeError, no query set made.
      throw new TypeError("Failed to execute 'createQuerySet' on 'GPUDevice': query type 'timestamp' requires the 'timestamp-query' feature, which is not enabled on this device.");
    }
    const { value: real } = this.callChecked(() => this.physical.device.createQuerySet(descriptor));
    const querySet = new VirtualQuerySet(this, real, descriptor);
    this.remember('querySet', querySet);
    // Each query is an 8-byte result slot on the device.
    querySet.ledgerToken = this.track(querySet, 'querySet', real.count * 8, destroyer(real));
    return querySet;
  }

  // ---- migration ------------------------------------------------------------------------------

  /** Records an object that migration must make afresh. */
  remember(phase: RebuildPhase, object: Rebuildable): void {
    let set = this.#migratable.get(phase);
    if (!set) this.#migratable.set(phase, (set = new Set()));
    set.add(new WeakRef(object));
    if (set.size % 256 === 0) for (const ref of set) if (!ref.deref()) set.delete(ref);
  }

  private liveBuffers(): VirtualBuffer[] {
    const live: VirtualBuffer[] = [];
    for (const ref of this.#buffers) {
      const buffer = ref.deref();
      if (buffer && !buffer.isDestroyed) live.push(buffer);
      else if (!buffer || buffer.realDestroyed) this.#buffers.delete(ref);
    }
    return live;
  }

  /**
   * The buffers a migration takes along: the live ones, and those the program destroyed whose
   * real buffer waits in the kernel's queue behind work submitted before destroy() (that work runs
   * on the new device and reads them there).
   */
  private buffersToMove(): VirtualBuffer[] {
    const moving: VirtualBuffer[] = [];
    for (const ref of this.#buffers) {
      const buffer = ref.deref();
      if (buffer && !buffer.realDestroyed) moving.push(buffer);
      else this.#buffers.delete(ref);
    }
    return moving;
  }

  /**
   * What this device's process uses, for the check that a device can hold it before it moves
   * there (src/kernel/compatibility.ts): what it asked for, and its live objects.
   */
  inUse(): {
    requiredLimits: Readonly<Record<string, number | undefined>>;
    features: string[];
    limits: Readonly<Record<string, number>>;
    pipelines: VirtualComputePipeline[];
    buffers: VirtualBuffer[];
    bindGroups: VirtualBindGroup[];
  } {
    return {
      requiredLimits: this.#requiredLimits,
      features: [...this.#features],
      limits: limitValues(this.#limits),
      pipelines: this.live<VirtualComputePipeline>('computePipeline'),
      buffers: this.liveBuffers(),
      bindGroups: this.live<VirtualBindGroup>('bindGroup'),
    };
  }

  /**
   * Why this device cannot move now (a mapped buffer: the program holds its bytes), or null.
   */
  migrationBlocker(): string | null {
    for (const buffer of this.liveBuffers()) {
      if (buffer.mapState !== 'unmapped') return `buffer "${buffer.label}" is mapped or being mapped; unmap it first`;
      if (buffer.size % 4 !== 0) return `buffer "${buffer.label}" has a size (${buffer.size}) that is not a multiple of 4 and cannot be copied`;
    }
    return null;
  }

  /**
   * Moves this device onto `target` (its process is held and has nothing on the device): every
   * buffer's contents go through host memory, every other object is made afresh from the
   * kernel's record, and the program's handles keep working. The program goes on calling
   * meanwhile, so the move switches devices in one synchronous step, once everything is ready:
   * until then each call finds every object it names on the old device, after it on the new one
   * (a pipeline made from a layout of the other device would fail with an error the program never
   * caused). `onSwitch` runs in that step (the kernel moves the process's queue there).
   */
  async migrateTo(target: PhysicalDevice, dispatcher: Dispatcher, onSwitch: () => void = () => {}): Promise<void> {
    const from = this.physical;
    if (from === target) return;
    const stage = new MigrationStage(target, `pid ${this.proc.pid}`);
    try {
      // Pipelines first (Dawn takes a while), then buffers' contents; what the program makes or
      // uses while either is awaited is made or copied in the next round.
      for (let round = 0; ; round++) {
        const unmade = this.live<VirtualComputePipeline>('computePipeline').filter((pipeline) => !stage.holds(pipeline));
        const resident = this.buffersToMove().filter((buffer) => buffer.residency.resident);
        if (unmade.length === 0 && resident.length === 0) break;
        const stuck = resident.find((buffer) => !buffer.residency.evictable() && !buffer.residency.evicting);
        if (stuck) {
          throw new GpunixError(ErrorCodes.BUSY, `buffer "${stuck.label}" cannot be copied off device ${from.id} now (mapped, or invalid); the process stays there`);
        }
        if (round === MIGRATION_ROUNDS) {
          const what = unmade.length > 0 ? `${unmade.length} new pipeline(s)` : `${resident.length} buffer(s) in use (${resident.map((b) => JSON.stringify(b.label)).join(', ')})`;
          throw new GpunixError(ErrorCodes.BUSY, `the program kept making or using objects while it moved (${what} after ${round} rounds); it stays on device ${from.id}`);
        }
        if (unmade.length > 0) await Promise.all(unmade.map((pipeline) => stage.pipeline(pipeline)));
        else if (!(await Promise.all(resident.map((buffer) => buffer.residency.evict(true)))).some(Boolean)) {
          // None copied (the memory manager was evicting them, or the program used them): a moment.
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }
    } catch (error) {
      // The process stays: what the stage made for the target alone goes.
      stage.discard();
      throw error;
    }
    // The switch: nothing below awaits, so no call of the program's falls in the middle of it.
    const memory = this.host.memory;
    for (const buffer of this.buffersToMove()) {
      memory.unregister(buffer.residency);
      buffer.residency.physical = target;
      memory.register(buffer.residency);
    }
    this.proc.ledger.moveScope(this, target);
    this.physical = target;
    this.dispatcher = dispatcher;
    const madeValid = stage.install();
    this.adoptLoopFlag(stage.takeLoopFlag());
    for (const phase of REBUILD_PHASES) {
      for (const ref of this.#migratable.get(phase) ?? []) {
        const object = ref.deref();
        if (object && !stage.holds(object)) void object.rebuild(target);
      }
    }
    // Encodings made before name the old device's objects: submits re-encode from the record.
    this.proc.backingEpoch++;
    onSwitch();
    // Twins for the new device's limits; until each is made its pipeline runs whole.
    if (this.host.atomize && !this.isLost) await Promise.all(madeValid.map((pipeline) => buildAtomizedTwin(this, pipeline, false)));
  }

  // ---- checkpoint and restore -----------------------------------------------------------------

  /** The gpunix extension (docs/vgpu.md): shared segments, restored objects by label. */
  #gpunix = new GpunixDeviceExtension((name, size) => this.attachShared(name, size));
  get gpunix(): GpunixDeviceExtension {
    return this.#gpunix;
  }

  private attachShared(name: string, size: number): VirtualBuffer {
    if (this.isLost) throw new GpunixError(ErrorCodes.PROCESS_EXITED, 'the device is lost');
    const segments = this.host.segments;
    const { real, usage } = segments.attach(this.proc, this.physical, name, size);
    const proc = this.proc;
    const residency = new SharedResidency(this.physical, real, usage, `segment ${name}`, proc, proc.ledger, this.host.memory.swap, () =>
      segments.detach(proc, name),
    );
    return new VirtualBuffer(this, residency, { label: name, size, usage });
  }

  private live<T extends object>(phase: RebuildPhase): T[] {
    return [...(this.#migratable.get(phase) ?? [])].map((ref) => ref.deref() as T | undefined).filter((o): o is T => o !== undefined);
  }

  /**
   * Why this process cannot be checkpointed now, or null: a buffer mapped or being mapped on the
   * device (the program holds its bytes), or one that cannot be copied. A map still queued behind
   * the process's work is no obstacle: the image records the buffer as it is, unmapped.
   */
  checkpointBlocker(): string | null {
    for (const buffer of this.liveBuffers()) {
      const real = buffer.residency.peek();
      if (real && real.mapState !== 'unmapped') return `buffer "${buffer.label}" is mapped or being mapped; unmap it first`;
      if (buffer.size % 4 !== 0) return `buffer "${buffer.label}" has a size (${buffer.size}) that is not a multiple of 4 and cannot be copied`;
    }
    return null;
  }

  /**
   * Everything of this device a process image holds: shader sources, pipeline descriptions, buffer
   * contents with labels, and `queued` — the process's queued items, in order, none of them begun
   * (the kernel lets a begun one finish first) — as the kernel's records: submits as their command
   * buffers, writes with their bytes. Items that change no buffer (completion waits, maps) and
   * submits that Dawn would refuse whole are left out. The process must be suspended with nothing
   * on the device.
   */
  async captureImage(
    queued: readonly WorkItem[] = [],
  ): Promise<Pick<ProcessImage, 'device' | 'limits' | 'features' | 'shaders' | 'pipelines' | 'buffers' | 'bindGroups' | 'querySets' | 'queued'>> {
    const modules = this.live<VirtualShaderModule>('shaderModule');
    const shaders = modules.map((m, id) => ({ id, label: m.label, code: m.code }));
    const pipelines: ImagePipeline[] = [];
    const pipelineIds = new Map<unknown, number>();
    for (const pipeline of this.live<VirtualComputePipeline>('computePipeline')) {
      const compute = pipeline.descriptor.compute;
      const shader = modules.indexOf(compute.module as unknown as VirtualShaderModule);
      if (shader < 0) continue;
      const layout = pipeline.descriptor.layout;
      // Made with another device's layout: invalid, and must not come back valid from the image.
      if (layout instanceof ForeignStandIn) continue;
      if (layout instanceof VirtualPipelineLayout && layout.bindGroupLayouts.some((l) => l instanceof ForeignStandIn)) continue;
      let imageLayout: ImagePipeline['layout'] = 'auto';
      if (layout instanceof VirtualPipelineLayout) {
        const descriptors = layout.bindGroupLayouts.map((l) => {
          if (l === null || l === undefined) return null;
          if (l instanceof VirtualBindGroupLayout && 'descriptor' in l.source) return JSON.parse(JSON.stringify(l.source.descriptor));
          throw new GpunixError(ErrorCodes.BUSY, `pipeline "${pipeline.label}" uses a bind group layout taken from another pipeline; it cannot be checkpointed`);
        });
        imageLayout = { bindGroupLayouts: descriptors };
      }
      pipelineIds.set(pipeline, pipelines.length);
      pipelines.push({
        id: pipelines.length,
        label: pipeline.label,
        shader,
        ...(compute.entryPoint !== undefined ? { entryPoint: compute.entryPoint } : {}),
        ...(compute.constants ? { constants: { ...(compute.constants as Record<string, number>) } } : {}),
        layout: imageLayout,
      });
    }

    // The queue, item by item: what of it changes buffers, with the objects it names.
    const kept: Array<{ submit: readonly VirtualCommandBuffer[] } | { write: { buffer: object; offset: number; bytes: Uint8Array } }> = [];
    for (const item of queued) {
      if (item instanceof Submission) {
        const commandBuffers = await item.checkpointRecord();
        if (commandBuffers) kept.push({ submit: commandBuffers });
      } else if (item.write) {
        kept.push({ write: item.write() });
      } else if (item.usesDevice) {
        throw new GpunixError(ErrorCodes.BUSY, `process ${this.proc.pid} has queued work of a kind a checkpoint cannot record`);
      }
    }
    const imageBuffers: VirtualBuffer[] = this.liveBuffers();
    const inImage = new Set<unknown>(imageBuffers);
    const destroyedBuffers: VirtualBuffer[] = [];
    const querySetList: VirtualQuerySet[] = [];
    for (const entry of kept) {
      if (!('submit' in entry)) continue;
      for (const cb of entry.submit) {
        for (const resource of cb.resources()) {
          if (resource instanceof VirtualBuffer && !inImage.has(resource)) {
            // Destroyed by the program after this submit: it goes once the queued work has run.
            if (!resource.isDestroyed) throw new GpunixError(ErrorCodes.BUSY, `queued work uses buffer "${resource.label}", which a checkpoint cannot record`);
            imageBuffers.push(resource);
            inImage.add(resource);
            destroyedBuffers.push(resource);
          }
          if (resource instanceof VirtualQuerySet && !querySetList.includes(resource)) querySetList.push(resource);
        }
      }
    }
    const bufferIds = new Map<unknown, number>(imageBuffers.map((b, i) => [b, i]));
    const querySetIds = new Map<unknown, number>(querySetList.map((q, i) => [q, i]));
    const bindGroups: ImageBindGroup[] = [];
    const bindGroupIds = new Map<unknown, number>();
    const cannot = (what: string): never => {
      throw new GpunixError(ErrorCodes.BUSY, `queued work of process ${this.proc.pid} names ${what}, which a checkpoint cannot record`);
    };
    const idOf = (ids: Map<unknown, number>, value: unknown, what: string): number => ids.get(value) ?? cannot(what);
    const bindGroupId = (group: unknown): number => {
      const known = bindGroupIds.get(group);
      if (known !== undefined) return known;
      if (!(group instanceof VirtualBindGroup)) return cannot('a bind group not of this device');
      const layout = group.descriptor.layout as unknown;
      if (!(layout instanceof VirtualBindGroupLayout)) return cannot(`bind group "${group.label}" with a layout not of this device`);
      const source = layout.source;
      const imageLayout: ImageBindGroup['layout'] =
        'descriptor' in source
          ? { descriptor: JSON.parse(JSON.stringify(source.descriptor)) }
          : { pipeline: idOf(pipelineIds, source.pipeline, 'a pipeline not in the image'), group: source.index };
      const entries = group.descriptor.entries.map((entry) => {
        const resource = entry.resource as unknown;
        const binding: { buffer: unknown; offset?: number; size?: number } =
          resource && typeof resource === 'object' && 'buffer' in resource ? (resource as GPUBufferBinding) : { buffer: resource };
        return {
          binding: Number(entry.binding),
          buffer: idOf(bufferIds, binding.buffer, `a resource of bind group "${group.label}" that is not a buffer`),
          ...(binding.offset !== undefined ? { offset: Number(binding.offset) } : {}),
          ...(binding.size !== undefined ? { size: Number(binding.size) } : {}),
        };
      });
      const id = bindGroups.length;
      bindGroupIds.set(group, id);
      bindGroups.push({ id, label: group.label, layout: imageLayout, entries });
      return id;
    };
    const buffer = (value: unknown): number => idOf(bufferIds, value, 'a buffer not in the image');
    const querySet = (value: unknown): number => idOf(querySetIds, value, 'a query set not of this device');
    const passCommand = (pc: PassCommand): ImagePassCommand => {
      const a = pc.args;
      switch (pc.op) {
        case 'setPipeline':
          return { op: 'setPipeline', pipeline: idOf(pipelineIds, a[0], 'a pipeline not in the image') };
        case 'setBindGroup': {
          let offsets: number[] | undefined;
          if (a.length > 2) {
            offsets = ArrayBuffer.isView(a[2])
              ? [...(a[2] as Uint32Array).subarray(Number(a[3] ?? 0), Number(a[3] ?? 0) + Number(a[4] ?? (a[2] as Uint32Array).length))]
              : [...(a[2] as Iterable<number>)].map(Number);
          }
          return { op: 'setBindGroup', index: Number(a[0]), bindGroup: a[1] === null || a[1] === undefined ? null : bindGroupId(a[1]), ...(offsets ? { dynamicOffsets: offsets } : {}) };
        }
        case 'dispatchWorkgroups':
          return { op: 'dispatchWorkgroups', workgroups: [Number(a[0]), Number(a[1] ?? 1), Number(a[2] ?? 1)] };
        case 'dispatchWorkgroupsIndirect':
          return { op: 'dispatchWorkgroupsIndirect', buffer: buffer(a[0]), offset: Number(a[1]) };
        case 'setImmediates':
          return { op: 'setImmediates', offset: Number(a[0]), data: Buffer.from(writeBufferBytes(a[1], a[2] as number | undefined, a[3] as number | undefined)).toString('hex') };
        case 'popDebugGroup':
          return { op: 'popDebugGroup' };
        default:
          return { op: pc.op, label: String(a[0]) };
      }
    };
    const command = (c: RecordedCommand): ImageCommand => {
      if (c.op === 'computePass') {
        const t = c.descriptor?.timestampWrites;
        return {
          op: 'computePass',
          ...(c.descriptor?.label !== undefined ? { label: c.descriptor.label } : {}),
          ...(t
            ? {
                timestampWrites: {
                  querySet: querySet(t.querySet),
                  ...(t.beginningOfPassWriteIndex !== undefined ? { beginningOfPassWriteIndex: t.beginningOfPassWriteIndex } : {}),
                  ...(t.endOfPassWriteIndex !== undefined ? { endOfPassWriteIndex: t.endOfPassWriteIndex } : {}),
                },
              }
            : {}),
          commands: c.commands.map(passCommand),
        };
      }
      const a = c.args;
      switch (c.op) {
        case 'copyBufferToBuffer': {
          // Both overloads, made explicit: (src, srcOffset, dst, dstOffset, size?) and (src, dst, size?).
          const [src, srcOffset, dst, dstOffset, size] = typeof a[1] === 'number' ? a : [a[0], 0, a[1], 0, a[2]];
          const source = buffer(src);
          return {
            op: 'copyBufferToBuffer',
            source,
            sourceOffset: Number(srcOffset),
            destination: buffer(dst),
            destinationOffset: Number(dstOffset),
            size: size === undefined ? imageBuffers[source].size - Number(srcOffset) : Number(size),
          };
        }
        case 'clearBuffer':
          return { op: 'clearBuffer', buffer: buffer(a[0]), offset: Number(a[1] ?? 0), ...(a[2] !== undefined ? { size: Number(a[2]) } : {}) };
        case 'resolveQuerySet':
          return { op: 'resolveQuerySet', querySet: querySet(a[0]), firstQuery: Number(a[1]), queryCount: Number(a[2]), destination: buffer(a[3]), destinationOffset: Number(a[4]) };
        case 'popDebugGroup':
          return { op: 'popDebugGroup' };
        default:
          return { op: c.op, label: String(a[0]) };
      }
    };
    const work: QueuedWork[] = [];
    for (const entry of kept) {
      if ('submit' in entry) {
        work.push({ kind: 'submit', commandBuffers: entry.submit.map((cb) => ({ label: cb.label, commands: cb.commands.map(command) })) });
      } else {
        const id = bufferIds.get(entry.write.buffer);
        // A write to a buffer that is gone (or never was valid) changes nothing anyone reads.
        if (id !== undefined) work.push({ kind: 'writeBuffer', buffer: id, bufferOffset: entry.write.offset, data: entry.write.bytes.slice() });
      }
    }
    for (const b of destroyedBuffers) work.push({ kind: 'destroyBuffer', buffer: bufferIds.get(b)! });
    for (const q of querySetList) if (q.isDestroyed) work.push({ kind: 'destroyQuerySet', querySet: querySetIds.get(q)! });

    const buffers = [];
    for (const [id, b] of imageBuffers.entries()) {
      const contents = await b.residency.readContents();
      if (!contents) throw new GpunixError(ErrorCodes.BUSY, `the contents of buffer "${b.label}" could not be read (mapped, or a size not a multiple of 4)`);
      buffers.push({ id, label: b.label, size: b.size, usage: b.usage, contents });
    }
    const a = this.physical.adapter;
    return {
      device: { description: a.description, vendor: a.vendor, backend: a.backend },
      limits: limitValues(this.#limits),
      features: [...this.#features],
      shaders,
      pipelines,
      buffers,
      bindGroups,
      querySets: querySetList.map((q, id) => ({ id, label: q.label, type: q.type as ImageQuerySet['type'], count: q.count })),
      queued: work,
    };
  }

  // ---- moving to another node (src/daemon/migrationOut.ts, migrationIn.ts) ----------------------

  /**
   * The contents of `buffer` as the program's work queued so far leaves them: a queue item, so it
   * reads after that work and never waits for what the program queues later (which a moving
   * process sends again). Null when it could not be read now (see BufferResidency.snapshot).
   */
  readInOrder(buffer: VirtualBuffer): Promise<Uint8Array | null> {
    return new Promise((resolve) => {
      this.dispatcher.enqueue(
        offDeviceItem(
          this.proc,
          () => {
            buffer.residency.snapshot().then(resolve, () => resolve(null));
          },
          () => resolve(null),
        ),
      );
    });
  }

  /**
   * readInOrder for bytes [offset, offset + size) of `buffer`, handed to `use` without a host copy
   * (residency.snapshotRange: a view valid until `use`'s promise settles). Resolves false where
   * readInOrder gives null, or the process ended first.
   */
  readRangeInOrder(buffer: VirtualBuffer, offset: number, size: number, use: (bytes: Uint8Array) => void | Promise<void>): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.dispatcher.enqueue(
        offDeviceItem(
          this.proc,
          () => {
            buffer.residency.snapshotRange(offset, size, use).then(resolve, reject);
          },
          () => resolve(false),
        ),
      );
    });
  }

  /** The open error scopes with what each caught (a quiet process moving to another node). */
  errorScopeState(): ReturnType<ErrorScopes['exportState']> {
    return this.#scopes.exportState();
  }

  /** Opens the error scopes a process that moved here had open, with what they had caught. */
  importErrorScopes(state: Parameters<ErrorScopes['importState']>[0]): void {
    this.#scopes.importState(state, (type, message) =>
      type === 'out-of-memory' ? new GPUOutOfMemoryErrorClass(message) : type === 'internal' ? new GPUInternalErrorClass(message) : new GPUValidationErrorClass(message),
    );
  }

  /**
   * Makes the objects of a process image on this device, findable by label through `gpunix`, and
   * puts the image's queued work on this device's queue, ahead of anything its program does.
   * Resolves when that is done (the device is handed to the program then): the pipelines are made
   * with Dawn's asynchronous creation, which, unlike the synchronous one, never waits in the driver
   * for a kernel another process has on the device.
   */
  async adoptImage(image: ProcessImage): Promise<void> {
    const destroyed = new Set(image.queued.flatMap((q) => (q.kind === 'destroyBuffer' ? [q.buffer] : [])));
    const buffers = new Map(
      image.buffers.map((b) => {
        const buffer = this.createBuffer({ label: b.label, size: b.size, usage: b.usage, mappedAtCreation: true });
        new Uint8Array(buffer.getMappedRange()).set(b.contents);
        buffer.unmap();
        return [b.id, buffer] as const;
      }),
    );
    const modules = new Map(image.shaders.map((s) => [s.id, this.createShaderModule({ label: s.label, code: s.code })] as const));
    const making: Promise<void>[] = [];
    const pipelines = new Map(
      image.pipelines.map((p) => {
        const layout =
          p.layout === 'auto'
            ? 'auto'
            : this.createPipelineLayout({
                bindGroupLayouts: p.layout.bindGroupLayouts.map((d) => (d ? (this.createBindGroupLayout(d as GPUBindGroupLayoutDescriptor) as unknown as GPUBindGroupLayout) : null)),
              });
        const made = this.createComputePipelineDeferred({
          label: p.label,
          layout: layout as GPUPipelineLayout | 'auto',
          compute: { module: modules.get(p.shader) as unknown as GPUShaderModule, entryPoint: p.entryPoint, constants: p.constants },
        });
        making.push(made.ready);
        return [p.id, made.pipeline] as const;
      }),
    );
    await Promise.all(making);
    this.gpunix.adopt({
      buffers: image.buffers.filter((b) => !destroyed.has(b.id)).map((b) => buffers.get(b.id)!),
      pipelines: [...pipelines.values()],
      modules: [...modules.values()],
    });
    if (image.queued.length === 0) return;

    // The queued work, through the program's own API, so it is checked, split and scheduled as it was.
    const querySets = new Map(image.querySets.map((q) => [q.id, this.createQuerySet({ label: q.label, type: q.type, count: q.count })] as const));
    const groups = new Map(
      image.bindGroups.map((g) => {
        const layout =
          'pipeline' in g.layout
            ? pipelines.get(g.layout.pipeline)!.getBindGroupLayout(g.layout.group)
            : this.createBindGroupLayout(g.layout.descriptor as GPUBindGroupLayoutDescriptor);
        const entries = g.entries.map((e) => ({ binding: e.binding, resource: { buffer: buffers.get(e.buffer) as unknown as GPUBuffer, offset: e.offset, size: e.size } }));
        return [g.id, this.createBindGroup({ label: g.label, layout: layout as unknown as GPUBindGroupLayout, entries })] as const;
      }),
    );
    const real = <T>(map: Map<number, object>, id: number): T => map.get(id) as unknown as T;
    for (const item of image.queued) {
      switch (item.kind) {
        case 'submit': {
          const commandBuffers = item.commandBuffers.map((cb) => {
            const encoder = this.createCommandEncoder({ label: cb.label });
            for (const c of cb.commands) {
              switch (c.op) {
                case 'computePass': {
                  const t = c.timestampWrites;
                  const pass = encoder.beginComputePass({
                    ...(c.label !== undefined ? { label: c.label } : {}),
                    ...(t ? { timestampWrites: { ...t, querySet: real<GPUQuerySet>(querySets, t.querySet) } } : {}),
                  });
                  for (const pc of c.commands) {
                    switch (pc.op) {
                      case 'setPipeline':
                        pass.setPipeline(real(pipelines, pc.pipeline));
                        break;
                      case 'setBindGroup':
                        pass.setBindGroup(pc.index, pc.bindGroup === null ? null : real(groups, pc.bindGroup), ...(pc.dynamicOffsets ? [pc.dynamicOffsets] : []));
                        break;
                      case 'dispatchWorkgroups':
                        pass.dispatchWorkgroups(...pc.workgroups);
                        break;
                      case 'dispatchWorkgroupsIndirect':
                        pass.dispatchWorkgroupsIndirect(real(buffers, pc.buffer), pc.offset);
                        break;
                      case 'setImmediates':
                        pass.setImmediates(pc.offset, Uint8Array.from(Buffer.from(pc.data, 'hex')));
                        break;
                      case 'popDebugGroup':
                        pass.popDebugGroup();
                        break;
                      default:
                        pass[pc.op](pc.label);
                    }
                  }
                  pass.end();
                  break;
                }
                case 'copyBufferToBuffer':
                  encoder.copyBufferToBuffer(real(buffers, c.source), c.sourceOffset, real(buffers, c.destination), c.destinationOffset, c.size);
                  break;
                case 'clearBuffer':
                  encoder.clearBuffer(real(buffers, c.buffer), c.offset, c.size);
                  break;
                case 'resolveQuerySet':
                  encoder.resolveQuerySet(real(querySets, c.querySet), c.firstQuery, c.queryCount, real(buffers, c.destination), c.destinationOffset);
                  break;
                case 'popDebugGroup':
                  encoder.popDebugGroup();
                  break;
                default:
                  encoder[c.op](c.label);
              }
            }
            return encoder.finish({ label: cb.label });
          });
          this.#queue.submit(commandBuffers as unknown as GPUCommandBuffer[]);
          break;
        }
        case 'writeBuffer':
          this.#queue.writeBuffer(real(buffers, item.buffer), item.bufferOffset, item.data);
          break;
        case 'destroyBuffer':
          buffers.get(item.buffer)!.destroy();
          break;
        case 'destroyQuerySet':
          querySets.get(item.querySet)!.destroy();
          break;
      }
    }
  }

  // ---- lifetime -------------------------------------------------------------------------------

  destroy(): void {
    this.lose('destroyed', 'Device was destroyed.');
  }

  #loopFlag: LoopFlag | null = null;
  /**
   * The process's budget-spent flag on this device's physical device (made at the first pipeline
   * that binds it; made afresh after a migration, the old one freed once the reads asked of it have
   * settled); null once the device is lost (nothing binds one any more).
   */
  get loopFlag(): LoopFlag | null {
    if (this.isLost) return null;
    const flag = this.#loopFlag;
    if (flag !== null && flag.physical === this.physical) return flag;
    const made = new LoopFlag(this.physical, `pid ${this.proc.pid}`);
    this.adoptLoopFlag(made);
    return made;
  }

  /**
   * `flag` becomes the process's flag on this device (the old one, if any, retired): a new one, or
   * at a migration's switch the one its staged pipelines bind on the new device.
   */
  private adoptLoopFlag(flag: LoopFlag | null): void {
    if (flag === null) return;
    const old = this.#loopFlag;
    if (old !== null) old.retire(() => this.proc.loopFlags.delete(old));
    this.#loopFlag = flag;
    this.proc.loopFlags.add(flag);
  }

  private dropLoopFlag(): void {
    const flag = this.#loopFlag;
    if (flag === null) return;
    this.proc.loopFlags.delete(flag);
    flag.destroy();
    this.#loopFlag = null;
  }

  /** Turns this device lost: its objects are freed, its later calls do nothing. Idempotent. */
  lose(reason: GPUDeviceLostReason, message: string): void {
    if (this.isLost) return;
    // Submits the program made before, held for their burst, reach Dawn before its objects go.
    this.physical.flushHeldSubmits();
    this.isLost = true;
    this.#scopes.clear();
    this.proc.ledger.releaseAll(this);
    this.dropLoopFlag();
    this.#resolveLost(deviceLostInfo(reason, message));
  }
}

refuseUnsupported(VirtualDevice, 'GPUDevice');
