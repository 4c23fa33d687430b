// A process's shader module: the WGSL source (kept for checkpoints and for rewriting pipelines)
// in front of Dawn's compiled module, which is also the judge of the program's WGSL. What Dawn
// compiles is the program's code with every loop bounded (the watchdog, src/wgsl/watchdog.ts),
// so every kernel made from it ends; the source the program gave is what checkpoints keep.

import type { Captured, PhysicalDevice } from '../device/physicalDevice.js';
import { WATCHDOG_BUDGET_SLACK } from '../params.js';
import { boundLoops, type WatchdogMode } from '../wgsl/index.js';
import { REAL, Rebuildable, VirtualObject } from './object.js';

/** How the watchdog bounds a module's loops (for stats and docs). */
export interface ModuleWatchdog {
  /** 'shared' and 'local' bound the loops (see src/wgsl/watchdog.ts); 'none': no loop to bound. */
  mode: WatchdogMode | 'none' | 'unbounded';
  /** Whether counted loops that wait for their workgroup check a workgroup stop flag. */
  uniformChecks?: boolean;
  /** Loops bounded. */
  loops: number;
  /** The iteration budget each invocation has. */
  budget: number;
  /** Why the module runs unbounded ('unbounded'), e.g. Dawn refused every bounded form. */
  reason?: string;
}

/**
 * The bounded forms tried, in order (src/wgsl/watchdog.ts): one counter per invocation first (the
 * tightest bound), with uniform checks in loops that wait for their workgroup where plain checks
 * break WGSL's uniformity rules, then per-function counters.
 */
const BOUNDED_FORMS: ReadonlyArray<{ mode: WatchdogMode; uniformChecks: boolean }> = [
  { mode: 'shared', uniformChecks: false },
  { mode: 'shared', uniformChecks: true },
  { mode: 'local', uniformChecks: false },
  { mode: 'local', uniformChecks: true },
];

/** What a module compiles to on a device: the real module, the code Dawn got, and its bounds. */
export interface CompiledModule {
  real: GPUShaderModule;
  deviceCode: string;
  watchdog: ModuleWatchdog;
  /** Set when the module was refused before compilation (a `shaderLimits` limit): the program's error. */
  refusal?: string;
}

/** What Dawn gets for a refused module: instantly refused by its parser, so every pipeline from it is invalid. */
const REFUSED_CODE = '// gpunix: refused before compilation (GPUNIX_E_SHADER_LIMIT)\nrefused';

/**
 * Stands in for a module refused before compilation (src/wgsl/complexity.ts): Dawn gets a few
 * invalid bytes, never the program's code; Dawn's own error about them is dropped, `refusal` is
 * the program's.
 */
export function refusedModule(physical: PhysicalDevice, label: string | undefined, refusal: string): CompiledModule {
  const real = physical.capture(() => physical.device.createShaderModule({ code: REFUSED_CODE, label })).value;
  return { real, deviceCode: REFUSED_CODE, watchdog: { mode: 'none', loops: 0, budget: 0 }, refusal };
}

/**
 * Compiles `descriptor` on `physical` with its loops bounded by `budget` iterations: the shared
 * counter first, per-function counters where Dawn refuses that (uniformity), and the program's own
 * code where Dawn refuses both, so the program always gets Dawn's own verdict on its code.
 * `call` makes the one call whose errors are the program's (the others are the kernel's trials).
 */
export function compileBounded(
  physical: PhysicalDevice,
  descriptor: GPUShaderModuleDescriptor,
  budget: number,
  call: (make: () => GPUShaderModule) => GPUShaderModule,
): CompiledModule {
  const code = descriptor.code;
  const make = (deviceCode: string) => () => physical.device.createShaderModule({ ...descriptor, code: deviceCode });
  let reason: string | undefined;
  for (const form of BOUNDED_FORMS) {
    const bounded = boundLoops(code, budget, form.mode, { uniformChecks: form.uniformChecks });
    if (bounded.loops + bounded.staticLoops === 0) {
      if (bounded.reason) {
        reason = bounded.reason;
        break;
      }
      return { real: call(make(code)), deviceCode: code, watchdog: { mode: 'none', loops: 0, budget } };
    }
    const trial: Captured<GPUShaderModule> = physical.capture(make(bounded.code));
    if (trial.clean) return { real: trial.value, deviceCode: bounded.code, watchdog: { mode: form.mode, uniformChecks: form.uniformChecks, loops: bounded.loops + bounded.staticLoops, budget } };
    reason = 'Dawn refused every bounded form of the module';
  }
  return { real: call(make(code)), deviceCode: code, watchdog: { mode: 'unbounded', loops: 0, budget, reason } };
}

/** The loop budget for `maxDispatchMs` on `physical`: iterations one invocation runs in that time, with slack. */
export function loopBudget(physical: PhysicalDevice, maxDispatchMs: number): number {
  return Math.ceil(physical.loopIterationsPerMs * maxDispatchMs * WATCHDOG_BUDGET_SLACK);
}

export class VirtualShaderModule extends VirtualObject<GPUShaderModule> implements Rebuildable {
  /** The program's source, as it gave it. */
  readonly code: string;
  /** What Dawn compiled: the source with its loops bounded (what pipelines and atomized twins use). */
  deviceCode: string;
  watchdog: ModuleWatchdog;
  /** Why the module was refused before compilation (its getCompilationInfo() error); null when compiled. */
  readonly refusal: string | null;
  private real: GPUShaderModule;
  constructor(
    compiled: CompiledModule,
    descriptor: GPUShaderModuleDescriptor,
    /** The process's time limit now (a tenant's quota may change), for rebuilding on another device. */
    private readonly maxDispatchMs: () => number,
  ) {
    super(descriptor.label);
    this.code = descriptor.code;
    this.real = compiled.real;
    this.deviceCode = compiled.deviceCode;
    this.watchdog = compiled.watchdog;
    this.refusal = compiled.refusal ?? null;
  }
  get [REAL](): GPUShaderModule {
    return this.real;
  }
  rebuild(physical: PhysicalDevice): void {
    if (this.refusal !== null) {
      this.real = refusedModule(physical, this.label, this.refusal).real;
      return;
    }
    const descriptor = { code: this.code, label: this.label };
    const compiled = compileBounded(physical, descriptor, loopBudget(physical, this.maxDispatchMs()), (make) => physical.capture(make).value);
    this.real = compiled.real;
    this.deviceCode = compiled.deviceCode;
    this.watchdog = compiled.watchdog;
  }
  getCompilationInfo(): Promise<GPUCompilationInfo> {
    if (this.refusal !== null) {
      const message = Object.freeze({ type: 'error', message: this.refusal, lineNum: 0, linePos: 0, offset: 0, length: 0 });
      return Promise.resolve(Object.freeze({ messages: Object.freeze([message]) }) as unknown as GPUCompilationInfo);
    }
    return this.real.getCompilationInfo();
  }
}
