// A process's shader module: the WGSL source (kept for checkpoints and for rewriting pipelines)
// in front of Dawn's compiled module, which is also the judge of the program's WGSL. What Dawn
// compiles is the program's code with every loop bounded (the watchdog, src/wgsl/watchdog.ts),
// so every kernel made from it ends; the source the program gave is what checkpoints keep.

import type { Captured, PhysicalDevice } from '../device/physicalDevice.js';
import { ErrorCodes } from '../errors.js';
import { WATCHDOG_BUDGET_SLACK } from '../params.js';
import { boundLoops, MAX_LOOP_BUDGET, type Budget, type BoundedModule, type WatchdogMode } from '../wgsl/index.js';
import { REAL, Rebuildable, VirtualObject } from './object.js';

/** How the watchdog bounds a module's loops (for stats and docs). */
export interface ModuleWatchdog {
  /** 'shared' bounds the loops (see src/wgsl/watchdog.ts); 'none': no loop to bound, or Dawn refused the program's code. */
  mode: WatchdogMode | 'none';
  /** Whether counted loops that wait for their workgroup check a workgroup stop flag. */
  uniformChecks?: boolean;
  /** Loops bounded. */
  loops: number;
  /** Of those, the loops that check the budget (counted and capped ones): the ones the watchdog may cut. */
  checkedLoops: number;
  /** The iteration budget of one invocation of a single-invocation workgroup (wider ones get less). */
  budget: number;
}

/**
 * The bounded forms tried, in order (src/wgsl/watchdog.ts): one counter per invocation, with plain
 * checks, then with uniform checks in loops that wait for their workgroup (where plain checks break
 * WGSL's uniformity rules). Per-function counters ('local') are not tried: calls from loops
 * multiply their bound, so a program could nest its way out of the time limit.
 */
const BOUNDED_FORMS: ReadonlyArray<{ mode: WatchdogMode; uniformChecks: boolean }> = [
  { mode: 'shared', uniformChecks: false },
  { mode: 'shared', uniformChecks: true },
];

/**
 * The module compiled once more with the budget-spent flag (src/vgpu/loopFlag.ts): what its compute
 * pipelines are made from where their layout leaves the flag's group free.
 */
export interface FlaggedModule {
  real: GPUShaderModule;
  code: string;
  /** The flag's bind group index (binding 0). */
  group: number;
}

/** What a module compiles to on a device: the real module, the code Dawn got, and its bounds. */
export interface CompiledModule {
  real: GPUShaderModule;
  deviceCode: string;
  watchdog: ModuleWatchdog;
  /** The same bounds with the budget-spent flag, when the module can have one and Dawn took it. */
  flagged?: FlaggedModule;
  /** Set when the module was refused before compilation (a `shaderLimits` limit): the program's error. */
  refusal?: string;
}

/** What Dawn gets for a refused module: instantly refused by its parser, so every pipeline from it is invalid. */
const REFUSED_CODE = '// gpunix: refused (GPUNIX_E_SHADER_LIMIT or GPUNIX_E_UNBOUNDED_LOOPS)\nrefused';

/**
 * Stands in for a module refused before compilation (src/wgsl/complexity.ts): Dawn gets a few
 * invalid bytes, never the program's code; Dawn's own error about them is dropped, `refusal` is
 * the program's.
 */
export function refusedModule(physical: PhysicalDevice, label: string | undefined, refusal: string): CompiledModule {
  const real = physical.capture(() => physical.device.createShaderModule({ code: REFUSED_CODE, label })).value;
  return { real, deviceCode: REFUSED_CODE, watchdog: { mode: 'none', loops: 0, checkedLoops: 0, budget: 0 }, refusal };
}

/**
 * Compiles `descriptor` on `physical` with its loops bounded by `budget`: plain checks first,
 * uniform checks in loops that wait for their workgroup where Dawn refuses that (uniformity).
 * A module with no bounded form Dawn accepts (or that the rewriter cannot read) is compiled as the
 * program wrote it only to give the program Dawn's own verdict: if Dawn refuses it, that error is
 * the program's; if Dawn accepts it, it is refused (GPUNIX_E_UNBOUNDED_LOOPS), because an
 * unbounded kernel could hold the device for every tenant. `call` makes the one call whose errors
 * are the program's (the others are the kernel's trials).
 */
export function compileBounded(
  physical: PhysicalDevice,
  descriptor: GPUShaderModuleDescriptor,
  budget: Budget,
  call: (make: () => GPUShaderModule) => GPUShaderModule,
): CompiledModule {
  const code = descriptor.code;
  const singleBudget = typeof budget === 'number' ? budget : budget(1);
  const make = (deviceCode: string) => () => physical.device.createShaderModule({ ...descriptor, code: deviceCode });
  let reason = 'Dawn refused every bounded form of the module';
  for (const form of BOUNDED_FORMS) {
    const bounded = boundLoops(code, budget, form.mode, { uniformChecks: form.uniformChecks, waitWeight: physical.loopRates.waitWeight, spentFlagBelow: physical.device.limits.maxBindGroups });
    if (bounded.reason) {
      reason = bounded.reason;
      break;
    }
    if (bounded.loops + bounded.staticLoops === 0) return { real: call(make(code)), deviceCode: code, watchdog: { mode: 'none', loops: 0, checkedLoops: 0, budget: singleBudget } };
    const trial: Captured<GPUShaderModule> = physical.capture(make(bounded.code));
    if (trial.clean) {
      const watchdog: ModuleWatchdog = { mode: form.mode, uniformChecks: form.uniformChecks, loops: bounded.loops + bounded.staticLoops, checkedLoops: bounded.loops, budget: singleBudget };
      return { real: trial.value, deviceCode: bounded.code, watchdog, ...flaggedForm(physical, bounded, make) };
    }
  }
  // Dawn's verdict on the program's own code: its errors are the program's.
  const own = physical.capture(make(code));
  if (!own.clean) return { real: call(make(code)), deviceCode: code, watchdog: { mode: 'none', loops: 0, checkedLoops: 0, budget: singleBudget } };
  return refusedModule(
    physical,
    descriptor.label,
    `${ErrorCodes.UNBOUNDED_LOOPS}: shader module ${JSON.stringify(descriptor.label ?? '')} is refused: the watchdog cannot bound its loops (${reason}), and an unbounded kernel could hold the device for every process. Write its loops in plain WGSL (no constructs the rewriter cannot read), or keep barriers out of loops that other loops' data decide`,
  );
}

/**
 * The bounded module's flagged form compiled (the kernel's trial: its errors are no one's); nothing
 * when it has none (an entry point that is not compute, no free bind group) or Dawn refuses it:
 * its pipelines then run without.
 */
function flaggedForm(physical: PhysicalDevice, bounded: BoundedModule, make: (deviceCode: string) => () => GPUShaderModule): { flagged?: FlaggedModule } {
  if (bounded.flaggedCode === undefined || bounded.spentFlagGroup === undefined) return {};
  const trial = physical.capture(make(bounded.flaggedCode));
  return trial.clean ? { flagged: { real: trial.value, code: bounded.flaggedCode, group: bounded.spentFlagGroup } } : {};
}

/**
 * The loop budget for `maxDispatchMs` on `physical`, per entry point: the iterations one
 * invocation runs in that time, with slack, made smaller for a workgroup wider than the device runs
 * side by side (its invocations take turns). Workgroups of a size the rewrite cannot evaluate get
 * the single invocation's budget: an overestimate there would cut a loop before the limit.
 */
export function loopBudget(physical: PhysicalDevice, maxDispatchMs: number): Budget {
  const { iterationsPerMs, parallelInvocations } = physical.loopRates;
  const single = iterationsPerMs * maxDispatchMs * WATCHDOG_BUDGET_SLACK;
  return (invocations) => Math.ceil(single / Math.max(1, Math.min(invocations ?? 1, WIDEST_MEASURED) / parallelInvocations));
}

/** The longest time (ms) a loop budget can stand for on `physical`: budgets are u32 (MAX_LOOP_BUDGET). */
export function budgetTimeLimitMs(physical: PhysicalDevice): number {
  return MAX_LOOP_BUDGET / (physical.loopRates.iterationsPerMs * WATCHDOG_BUDGET_SLACK);
}

/** The widest workgroup the calibration measured (src/device/loopRate.ts); wider ones are not scaled further. */
const WIDEST_MEASURED = 256;

export class VirtualShaderModule extends VirtualObject<GPUShaderModule> implements Rebuildable {
  // Private fields behind prototype accessors: a GPUShaderModule has no own properties (WebIDL).
  #code: string;
  #deviceCode: string;
  #watchdog: ModuleWatchdog;
  #refusal: string | null;
  #real: GPUShaderModule;
  #budgetOn: (physical: PhysicalDevice) => Budget;
  #flagged: FlaggedModule | null;
  /** The module compiled with the budget-spent flag on its device, for its compute pipelines (null: none). */
  get flagged(): FlaggedModule | null {
    return this.#flagged;
  }
  /** The program's source, as it gave it. */
  get code(): string {
    return this.#code;
  }
  /** What Dawn compiled: the source with its loops bounded (what pipelines and atomized twins use). */
  get deviceCode(): string {
    return this.#deviceCode;
  }
  set deviceCode(code: string) {
    this.#deviceCode = code;
  }
  get watchdog(): ModuleWatchdog {
    return this.#watchdog;
  }
  set watchdog(watchdog: ModuleWatchdog) {
    this.#watchdog = watchdog;
    this.#mayCut = watchdog.checkedLoops > 0;
  }
  #mayCut: boolean;
  /**
   * Whether its loops check the budget, so that the watchdog may cut them (watchdog.checkedLoops >
   * 0), kept as a field: a submit asks it of every pipeline it sets, and the watchdog record is a
   * literal of one of several shapes that go with the process (reading it there made the submit
   * path's optimized code check shapes a full collection then freed).
   */
  get mayCut(): boolean {
    return this.#mayCut;
  }
  /** Why the module was refused before compilation (its getCompilationInfo() error); null when compiled. */
  get refusal(): string | null {
    return this.#refusal;
  }
  /** The process's loop budget on a device (its limit now: a tenant's quota may change), for rebuilding on another device. */
  constructor(compiled: CompiledModule, descriptor: GPUShaderModuleDescriptor, budgetOn: (physical: PhysicalDevice) => Budget) {
    super(descriptor.label);
    this.#budgetOn = budgetOn;
    this.#code = descriptor.code;
    this.#real = compiled.real;
    this.#flagged = compiled.flagged ?? null;
    this.#deviceCode = compiled.deviceCode;
    this.#watchdog = compiled.watchdog;
    this.#mayCut = compiled.watchdog.checkedLoops > 0;
    this.#refusal = compiled.refusal ?? null;
  }
  get [REAL](): GPUShaderModule {
    return this.#real;
  }
  rebuild(physical: PhysicalDevice): void {
    this.install(this.compiledOn(physical));
  }
  /** The module compiled for `physical` (its loop budget there), not yet put in place. */
  compiledOn(physical: PhysicalDevice): CompiledModule {
    if (this.refusal !== null) return refusedModule(physical, this.label, this.refusal);
    const descriptor = { code: this.code, label: this.label };
    return compileBounded(physical, descriptor, this.#budgetOn(physical), (make) => physical.capture(make).value);
  }
  /** Puts a compilation from compiledOn() in place (a migration's switch). */
  install(compiled: CompiledModule): void {
    this.#real = compiled.real;
    this.#flagged = compiled.flagged ?? null;
    if (this.refusal !== null) return;
    this.deviceCode = compiled.deviceCode;
    this.watchdog = compiled.watchdog;
  }
  getCompilationInfo(): Promise<GPUCompilationInfo> {
    if (this.refusal !== null) {
      const message = Object.freeze({ type: 'error', message: this.refusal, lineNum: 0, linePos: 0, offset: 0, length: 0 });
      return Promise.resolve(Object.freeze({ messages: Object.freeze([message]) }) as unknown as GPUCompilationInfo);
    }
    return this.#real.getCompilationInfo();
  }
}
