// A process's compute pipeline: its descriptor (module, entry point, constants, layout) kept so
// the kernel can rebuild or rewrite it, in front of Dawn's pipeline.

import { CostModel } from '../kernel/dispatch.js';
import type { CheckedRun, CheckedRuns } from '../kernel/checkedRuns.js';
import { ATOM_RECORD_SIZE, atomize } from '../wgsl/index.js';
import { BufferUsage } from './webgpuGlobals.js';

/** GPUShaderStage.COMPUTE. */
const SHADER_STAGE_COMPUTE = 4;
import { VirtualBindGroup } from './bindGroup.js';
import type { VirtualDevice } from './device.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import { REAL, Rebuildable, unwrap, VirtualObject } from './object.js';
import { invalidReal } from './limits.js';
import { VirtualShaderModule, type FlaggedModule } from './shaderModule.js';
import type { LoopFlag } from './loopFlag.js';
import { unsignedLong } from '../webidl.js';
import { requireDictionary } from './dictionary.js';
import type { PassCommand } from './commandBuffer.js';

/** The kernel's twin of a pipeline whose entry point was rewritten to run as atoms. */
export interface AtomizedPipeline {
  readonly real: GPUComputePipeline;
  /** Bytes of immediate data the twin reads (0: the entry needs no record; any split is exact). */
  readonly immediateSize: number;
  /**
   * Where the record goes in the twin's immediates: 0, or past the program's own immediate data
   * when the entry uses an immediate variable (the bytes before it are the program's).
   */
  readonly recordOffset: number;
  /**
   * Set when the record is a uniform instead ('uniform' mode: the program's immediates leave it no
   * room): the bind group index the twin reads it at, the buffer each atom's record is written to
   * (queue order puts each write between the atoms around it), and the bind group holding it.
   */
  readonly uniformRecord: { group: number; buffer: GPUBuffer; bindGroup: GPUBindGroup } | null;
  /** The real bind group to set at `index` for the program's `group` (a twin for 'auto' layouts). */
  bindGroup(index: number, group: unknown): unknown;
  /** The budget-spent flag the twin binds (its pipeline's, at the same index), or null. */
  readonly spentFlag: SpentFlagBinding | null;
}

/** Where a pipeline made from a flagged module binds its process's budget-spent flag (src/vgpu/loopFlag.ts). */
export interface SpentFlagBinding {
  readonly index: number;
  readonly bindGroup: GPUBindGroup;
}

/**
 * The program's pipeline as Dawn should make it with the budget-spent flag, and the flag's index:
 * `real` (its descriptor for Dawn) with the flagged module, and for an explicit layout one of the
 * kernel's with the flag's layout at that index. Null when the pipeline cannot have the flag: its
 * module has none, its layout already has a group at that index, or its device is lost.
 */
export function flaggedPipelineDescriptor(device: VirtualDevice, descriptor: GPUComputePipelineDescriptor, real: GPUComputePipelineDescriptor): FlaggedDescriptor | null {
  const module = descriptor.compute?.module;
  if (!(module instanceof VirtualShaderModule) || module.flagged === null || module.refusal !== null) return null;
  const layout = descriptor.layout;
  if (!(layout instanceof VirtualPipelineLayout) && layout !== 'auto') return null;
  // The program may set bind groups at any index its layout has: the flag takes one it has not.
  if (layout !== 'auto' && layout.bindGroupLayouts.length > module.flagged.group) return null;
  const flag = device.loopFlag;
  if (flag === null) return null;
  const groups = layout === 'auto' ? 'auto' : layout.bindGroupLayouts.map((l) => unwrap(l) as GPUBindGroupLayout | null);
  return flaggedDescriptorOn(flag, module.flagged, real, groups, layout === 'auto' ? 0 : (layout.immediateSize ?? 0));
}

/** A pipeline descriptor for Dawn with the budget-spent flag, where the flag goes, and whether its layout is explicit. */
export interface FlaggedDescriptor {
  readonly real: GPUComputePipelineDescriptor;
  readonly index: number;
  readonly explicit: boolean;
}

/**
 * `real` on `flag`'s device with `flagged` (the module's flagged form there) and, where the program
 * gave an explicit layout (`groups`: its real bind group layouts there), a layout of the kernel's
 * with the flag's at its index; null when that layout reaches the index or Dawn refuses the layout
 * (the kernel's call: its errors are no one's). Also a migration's, for the target device.
 */
export function flaggedDescriptorOn(
  flag: LoopFlag,
  flagged: FlaggedModule,
  real: GPUComputePipelineDescriptor,
  groups: readonly (GPUBindGroupLayout | null)[] | 'auto',
  immediateSize: number,
): FlaggedDescriptor | null {
  let layout: GPUPipelineLayout | 'auto' = 'auto';
  if (groups !== 'auto') {
    if (groups.length > flagged.group) return null;
    const made = kernelPipelineLayout(flag.physical, groups, immediateSize, [{ index: flagged.group, layout: flag.layout() }]);
    if (made === null) return null;
    layout = made;
  }
  return { real: { ...real, layout, compute: { ...real.compute, module: flagged.real } }, index: flagged.group, explicit: layout !== 'auto' };
}

/**
 * A real pipeline layout of the program's groups (`groups`, real) with the kernel's `extras` at
 * their indices (in place of the program's there: the shader reads none of the program's at
 * those), empty groups filling the gaps; null when Dawn refuses it (the kernel's call).
 */
function kernelPipelineLayout(
  physical: PhysicalDevice,
  programGroups: readonly (GPUBindGroupLayout | null)[],
  immediateSize: number,
  extras: ReadonlyArray<{ index: number; layout: GPUBindGroupLayout }>,
): GPUPipelineLayout | null {
  const made = physical.capture(() => {
    const groups = programGroups.slice();
    for (const extra of extras) {
      while (groups.length <= extra.index) groups.push(physical.device.createBindGroupLayout({ entries: [] }));
      groups[extra.index] = extra.layout;
    }
    return physical.device.createPipelineLayout({ bindGroupLayouts: groups, immediateSize } as GPUPipelineLayoutDescriptor);
  });
  return made.clean ? made.value : null;
}

/** A real pipeline made with the budget-spent flag, and where it binds it. */
export interface FlaggedPipeline {
  readonly real: GPUComputePipeline;
  readonly flag: SpentFlagBinding;
}

/**
 * The program's pipeline made with the budget-spent flag, synchronously (the kernel's trial: its
 * errors are no one's); null when it cannot have one or Dawn refused it, and the caller makes the
 * program's pipeline as it wrote it, errors and all.
 */
export function makeFlaggedPipeline(device: VirtualDevice, descriptor: GPUComputePipelineDescriptor, real: GPUComputePipelineDescriptor): FlaggedPipeline | null {
  const flagged = flaggedPipelineDescriptor(device, descriptor, real);
  if (flagged === null) return null;
  const made = device.physical.capture(() => device.physical.device.createComputePipeline(flagged.real));
  if (!made.clean) return null;
  const flag = spentFlagBinding(device, made.value, flagged.index, flagged.explicit);
  return flag === null ? null : { real: made.value, flag };
}

/** makeFlaggedPipeline with Dawn's asynchronous creation (null at once when the pipeline cannot have the flag). */
export function makeFlaggedPipelineAsync(device: VirtualDevice, descriptor: GPUComputePipelineDescriptor, real: GPUComputePipelineDescriptor): Promise<FlaggedPipeline | null> | null {
  const flagged = flaggedPipelineDescriptor(device, descriptor, real);
  if (flagged === null) return null;
  const physical = device.physical;
  let made: Promise<GPUComputePipeline>;
  try {
    made = physical.capture(() => physical.device.createComputePipelineAsync(flagged.real)).value;
  } catch {
    return null;
  }
  return made.then(
    (value) => {
      // Moved to another device while Dawn made it: the caller's own path handles that.
      if (device.physical !== physical) return null;
      const flag = spentFlagBinding(device, value, flagged.index, flagged.explicit);
      return flag === null ? null : { real: value, flag };
    },
    () => null,
  );
}

/**
 * The flag binding of `real`, a pipeline made from flaggedPipelineDescriptor (an explicit layout:
 * the flag's own layout; 'auto': the pipeline's layout at the flag's index, exclusive to it); null
 * when Dawn refused the bind group.
 */
export function spentFlagBinding(device: VirtualDevice, real: GPUComputePipeline, index: number, explicit: boolean): SpentFlagBinding | null {
  const flag = device.loopFlag;
  return flag === null ? null : flagBindingOn(flag, real, index, explicit);
}

/** spentFlagBinding for `flag`, on its device (a migration's target too). */
export function flagBindingOn(flag: LoopFlag, real: GPUComputePipeline, index: number, explicit: boolean): SpentFlagBinding | null {
  const layout = explicit ? flag.layout() : flag.physical.capture(() => real.getBindGroupLayout(index)).value;
  const bindGroup = flag.bindGroupFor(layout);
  return bindGroup === null ? null : { index, bindGroup };
}

/**
 * Builds the atomized twin of `pipeline`: at once (`sync`, beside a program's synchronous
 * createComputePipeline) or resolving when compiled (beside createComputePipelineAsync), so that
 * every dispatch of a pipeline the program holds can be split. If the entry cannot be split, or
 * the twin fails, the pipeline runs whole. Errors stay the kernel's: the program already got
 * Dawn's verdict on its own pipeline.
 */
export function buildAtomizedTwin(device: VirtualDevice, pipeline: VirtualComputePipeline, sync: boolean): Promise<void> | void {
  const compute = pipeline.descriptor.compute;
  const module = compute?.module;
  if (!(module instanceof VirtualShaderModule)) return;
  const limits = device.physical.adapter.limits;
  // A flagged pipeline's twin is made from the flagged code, and binds the flag where it does;
  // where the flag took the only group an atom record could have, from the plain code, unflagged
  // (the atoms keep the time check alone; splitting matters more).
  const options = { maxImmediateSize: limits.maxImmediateSize ?? 0, maxBindGroups: limits.maxBindGroups };
  let pipelineFlag = module.flagged !== null ? pipeline.spentFlag : null;
  let entry = atomize(pipelineFlag !== null ? module.flagged!.code : module.deviceCode, compute.entryPoint, options);
  if (pipelineFlag !== null && entry.mode === 'whole' && entry.cause === 'no-free-bind-group') {
    pipelineFlag = null;
    entry = atomize(module.deviceCode, compute.entryPoint, options);
  }
  if (entry.mode === 'whole') {
    pipeline.wholeReason = entry.reason ?? `the atomizer chose '${entry.mode}'`;
    return;
  }
  const uniform = entry.mode === 'uniform' ? entry.uniformBinding! : null;
  const immediateSize = entry.immediateSize ?? 0;
  if (!uniform && immediateSize === 0) {
    // The entry needs no atom record, so the twin's code would be the program's own: the program's
    // pipeline serves as the twin, and the module is compiled once, not twice.
    const real = pipeline[REAL];
    pipeline.atomized = { real, immediateSize: 0, recordOffset: 0, uniformRecord: null, bindGroup: (_index, group) => unwrap(group), spentFlag: pipeline.spentFlag };
    return;
  }
  const layout = pipeline.descriptor.layout;
  const physical = device.physical;
  const explicit = layout instanceof VirtualPipelineLayout;
  let realLayout: GPUPipelineLayout | 'auto' = 'auto';
  let recordLayout: GPUBindGroupLayout | null = null;
  if (explicit) {
    // The program's own bind group layouts, so its bind groups fit the twin as they are; a
    // uniform record takes a group the shader does not use, and the program's immediates stay;
    // the flag, where the pipeline has it, is at its own index.
    const extras: Array<{ index: number; layout: GPUBindGroupLayout }> = [];
    if (uniform) {
      const made = physical.capture(() =>
        physical.device.createBindGroupLayout({
          entries: [{ binding: uniform.binding, visibility: SHADER_STAGE_COMPUTE, buffer: { type: 'uniform', minBindingSize: ATOM_RECORD_SIZE } }],
        }),
      );
      recordLayout = made.value;
      extras.push({ index: uniform.group, layout: made.value });
    }
    const flag = pipelineFlag !== null ? device.loopFlag : null;
    if (pipelineFlag !== null && flag === null) return; // lost meanwhile
    if (flag !== null) extras.push({ index: pipelineFlag!.index, layout: flag.layout() });
    const made = kernelPipelineLayout(physical, layout.bindGroupLayouts.map((l) => unwrap(l) as GPUBindGroupLayout | null), uniform ? (layout.immediateSize ?? 0) : immediateSize, extras);
    if (made === null) {
      pipeline.wholeReason = 'the twin pipeline layout was refused';
      return;
    }
    realLayout = made;
  }
  const descriptor: GPUComputePipelineDescriptor = {
    label: `${pipeline.label} (atomized)`,
    layout: realLayout,
    compute: { ...compute, module: physical.device.createShaderModule({ code: entry.code }) },
  };
  const refuse = (why: string): void => {
    pipeline.wholeReason = `the atomized twin did not compile: ${why}`;
  };
  const adopt = (real: GPUComputePipeline): Promise<void> | void => {
    // Migrated while the twin compiled: the pipeline was made again there, and so is its twin.
    if (device.physical !== physical) return pipeline.atomized || pipeline.wholeReason ? undefined : buildAtomizedTwin(device, pipeline, false);
    // 'auto' layouts are exclusive to their pipeline: the program's bind groups get twins made
    // against the twin's own layouts (same resources), created once per group and layout.
    const layouts = new Map<number, GPUBindGroupLayout>();
    const twinLayout = (index: number): GPUBindGroupLayout => {
      let found = layouts.get(index);
      if (!found) layouts.set(index, (found = real.getBindGroupLayout(index)));
      return found;
    };
    let uniformRecord: AtomizedPipeline['uniformRecord'] = null;
    if (uniform) {
      const record = physical.capture(() => {
        const buffer = physical.device.createBuffer({ label: `${pipeline.label} (atom record)`, size: ATOM_RECORD_SIZE, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
        const bindGroup = physical.device.createBindGroup({
          layout: recordLayout ?? real.getBindGroupLayout(uniform.group),
          entries: [{ binding: uniform.binding, resource: { buffer } }],
        });
        return { group: uniform.group, buffer, bindGroup };
      });
      if (!record.clean) return refuse('the atom record bind group was refused');
      uniformRecord = record.value;
    }
    // The twin binds the flag as its pipeline does: the same bind group for an explicit layout, one for its own layout if 'auto'.
    const spentFlag = pipelineFlag === null ? null : explicit ? pipelineFlag : spentFlagBinding(device, real, pipelineFlag.index, false);
    if (pipelineFlag !== null && spentFlag === null) return refuse('the flag bind group was refused');
    pipeline.atomized = {
      real,
      immediateSize,
      recordOffset: entry.recordOffset ?? 0,
      uniformRecord,
      spentFlag,
      bindGroup: explicit
        ? (_index, group) => unwrap(group)
        : (index, group) => (group instanceof VirtualBindGroup ? group.twinFor(twinLayout(index)) : unwrap(group)),
    };
  };
  if (sync) {
    const made = physical.capture(() => physical.device.createComputePipeline(descriptor));
    if (made.clean) adopt(made.value);
    else made.errors.then((list) => refuse(list.map((e) => e.message).join('; ')));
    return;
  }
  const made = physical.capture(() => physical.device.createComputePipelineAsync(descriptor));
  return made.value.then(adopt, (error: unknown) => refuse(error instanceof Error ? error.message : String(error)));
}

/** The program's descriptor checked as the WebGPU call does (TypeError), and what Dawn should be given for it. */
export function checkedPipelineDescriptor(method: string, descriptor: GPUComputePipelineDescriptor): GPUComputePipelineDescriptor {
  requireDictionary(method, descriptor);
  requireDictionary(method, descriptor.compute, 'compute');
  return realComputePipelineDescriptor(descriptor);
}

/**
 * An invalid pipeline, as Dawn makes one for a failed creation, made without reaching the driver
 * (an entry point no WGSL identifier can name fails Dawn's validation, and an empty module is
 * well-formed whatever the program gave); its error is dropped.
 */
export function invalidComputePipeline(physical: PhysicalDevice): GPUComputePipeline {
  return physical.capture(() =>
    physical.device.createComputePipeline({ layout: 'auto', compute: { module: physical.device.createShaderModule({ code: '' }), entryPoint: 'gpunix: not made' } }),
  ).value;
}

/** What Dawn should be given for a program's compute pipeline descriptor. */
export function realComputePipelineDescriptor(descriptor: GPUComputePipelineDescriptor): GPUComputePipelineDescriptor {
  const real: GPUComputePipelineDescriptor = { ...descriptor, layout: descriptor.layout === 'auto' ? 'auto' : unwrap(descriptor.layout) };
  // A missing or null `compute` must stay missing: dawn.node aborts the whole Node process on an
  // explicit undefined/null dictionary, where an absent one is an ordinary TypeError for this caller.
  if (descriptor.compute) real.compute = { ...descriptor.compute, module: unwrap(descriptor.compute.module) };
  else delete (real as Partial<GPUComputePipelineDescriptor>).compute;
  return real;
}

export class VirtualComputePipeline extends VirtualObject<GPUComputePipeline> implements Rebuildable {
  // Private fields behind prototype accessors: a GPUComputePipeline has no own properties (WebIDL).
  #cost = new CostModel();
  #atomized: AtomizedPipeline | null = null;
  #wholeReason: string | null = null;
  #device: VirtualDevice;
  #real: GPUComputePipeline | null;
  #descriptor: GPUComputePipelineDescriptor;
  #refused = false;
  /** Refused at the process's limits (limits.ts): invalid, and made invalid again when made afresh. */
  get refused(): boolean {
    return this.#refused;
  }
  set refused(value: boolean) {
    this.#refused = value;
  }
  /** Device time per workgroup, learned from this pipeline's atoms and dispatches. */
  get cost(): CostModel {
    return this.#cost;
  }
  #spentFlag: SpentFlagBinding | null = null;
  /**
   * Where Dawn's pipeline binds its process's budget-spent flag (made from the flagged module),
   * or null (no flag: its module has none, its layout left no index, or made afresh on another
   * device). Every pass that sets this pipeline sets the flag's group after it (the live pass in
   * commandEncoder.ts; replays: encodePassCommands; atoms and whole dispatches: submission.ts).
   */
  get spentFlag(): SpentFlagBinding | null {
    return this.#spentFlag;
  }
  set spentFlag(binding: SpentFlagBinding | null) {
    this.#spentFlag = binding;
  }
  /** Set once the atomized twin is ready; stays null when the kernel runs this pipeline whole. */
  get atomized(): AtomizedPipeline | null {
    return this.#atomized;
  }
  set atomized(twin: AtomizedPipeline | null) {
    this.#atomized = twin;
  }
  /** Why the pipeline runs whole, when it does (for stats and the trace). */
  get wholeReason(): string | null {
    return this.#wholeReason;
  }
  set wholeReason(reason: string | null) {
    this.#wholeReason = reason;
  }
  /** Dawn's pipeline; null until a deferred creation attaches it (VirtualDevice.createComputePipelineDeferred). */
  get descriptor(): GPUComputePipelineDescriptor {
    return this.#descriptor;
  }

  #passRecord: PassCommand | null = null;
  /**
   * The record of setPipeline(this) in a compute pass, made once and shared by every pass that
   * sets this pipeline (records are never changed once made; frozen so that none can be).
   */
  get passRecord(): PassCommand {
    return (this.#passRecord ??= Object.freeze({ op: 'setPipeline', args: Object.freeze([this]) as unknown[] }) as PassCommand);
  }

  /** Its shader module (null when the descriptor names none), found once, at creation. */
  #module: VirtualShaderModule | null;
  /**
   * Whether its kernels run loops the watchdog checks, and so may cut: the dispatcher times such
   * work alone. A submit asks it of every pipeline it sets: it reads the module found at creation,
   * not the descriptor, whose object shapes go with the process (reading through them made the
   * submit path's optimized code check shapes that a full collection then freed, every process).
   */
  get mayCut(): boolean {
    return this.#module !== null && this.#module.mayCut;
  }

  #checkedRun: CheckedRun | null = null;
  #checkedRunOf: CheckedRuns | null = null;
  /**
   * The kernel's key among its device's CheckedRuns (entry point, constants, module source),
   * made at creation: found from the descriptor at the first submit instead, that path's
   * optimized code checked the descriptor's per-process shapes, thrown away with them.
   */
  #checkedRunKey = '';
  /**
   * With mayCut: its device's record of how long its kernel was last seen to run, shared with
   * every pipeline of the same source, entry point and constants there (found once per device).
   */
  get checkedRun(): CheckedRun {
    const runs = this.#device.dispatcher.checkedRuns;
    if (this.#checkedRunOf !== runs || this.#checkedRun === null) {
      this.#checkedRun = runs.recordFor(this.#checkedRunKey);
      this.#checkedRunOf = runs;
    }
    return this.#checkedRun;
  }

  constructor(device: VirtualDevice, real: GPUComputePipeline | null, descriptor: GPUComputePipelineDescriptor) {
    super(descriptor.label, device);
    this.#device = device;
    this.#real = real;
    this.#descriptor = descriptor;
    const module = descriptor.compute?.module;
    this.#module = module instanceof VirtualShaderModule ? module : null;
    if (this.#module !== null) {
      const compute = descriptor.compute!;
      const constants = compute.constants ? JSON.stringify(Object.entries(compute.constants)) : '';
      this.#checkedRunKey = `${compute.entryPoint ?? ''}\0${constants}\0${this.#module.code}`;
    }
  }

  /** Puts Dawn's pipeline behind a pipeline made before Dawn had it (a deferred creation), with its flag if made flagged. */
  attach(real: GPUComputePipeline, spentFlag: SpentFlagBinding | null = null): void {
    this.#real = real;
    this.#spentFlag = spentFlag;
  }

  /**
   * Puts a pipeline made on another device in place (a migration's switch, src/vgpu/migrationStage.ts).
   * The cost learned on the old device says nothing of another backend's or vendor's speed, and
   * the atomized twin is made afresh for the new device's limits (immediates, bind groups).
   */
  install(real: GPUComputePipeline, spentFlag: SpentFlagBinding | null = null): void {
    this.#real = real;
    // Made flagged on the new device (MigrationStage), or from the plain module (rebuild): none.
    this.#spentFlag = spentFlag;
    this.#cost = new CostModel();
    this.atomized = null;
    this.wholeReason = null;
  }

  /**
   * Made afresh on `physical`, the device its process moved to while Dawn made it on the old one,
   * from the objects it names as they stand there now; with Dawn's asynchronous creation (the
   * synchronous one would wait in the driver for whatever runs on that device). Its atomized twin
   * is the caller's to make.
   */
  async rebuild(physical: PhysicalDevice): Promise<void> {
    this.install((await this.madeOn(physical, realComputePipelineDescriptor(this.descriptor))).real);
  }

  /**
   * Dawn's pipeline made afresh on `physical` from `real`, this pipeline's descriptor with the real
   * objects it names there (not put in place), and whether Dawn made it valid: invalid before,
   * invalid again (its errors were the program's when it was made).
   */
  async madeOn(physical: PhysicalDevice, real: GPUComputePipelineDescriptor): Promise<{ real: GPUComputePipeline; valid: boolean }> {
    if (this.refused) return { real: invalidReal.computePipeline(physical, this.label), valid: false };
    let made: Promise<GPUComputePipeline>;
    try {
      made = physical.capture(() => physical.device.createComputePipelineAsync(real)).value;
    } catch {
      made = Promise.reject(new TypeError('refused'));
    }
    let valid = true;
    const value = await made.catch(() => ((valid = false), invalidComputePipeline(physical)));
    return { real: value, valid };
  }
  get [REAL](): GPUComputePipeline {
    return this.#real as GPUComputePipeline;
  }
  getBindGroupLayout(index: number): VirtualBindGroupLayout {
    index = unsignedLong(index, 'getBindGroupLayout', 'index');
    // At the budget-spent flag's index the program's pipeline has no group: Dawn gives an empty
    // layout there (below maxBindGroups), and so does this, not the flag's.
    const real =
      index === this.#spentFlag?.index
        ? this.#device.call(() => this.#device.physical.device.createBindGroupLayout({ entries: [] }))
        : this.#device.call(() => this.#real!.getBindGroupLayout(index));
    const layout = new VirtualBindGroupLayout(real, undefined, { pipeline: this, index });
    this.#device.remember('derivedLayout', layout);
    return layout;
  }
}
