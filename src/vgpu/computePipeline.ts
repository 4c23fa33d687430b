// A process's compute pipeline: its descriptor (module, entry point, constants, layout) kept so
// the kernel can rebuild or rewrite it, in front of Dawn's pipeline.

import { CostModel } from '../kernel/dispatch.js';
import { atomize } from '../wgsl/index.js';
import { VirtualBindGroup } from './bindGroup.js';
import type { VirtualDevice } from './device.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import { REAL, Rebuildable, unwrap, VirtualObject } from './object.js';
import { VirtualShaderModule } from './shaderModule.js';
import { unsignedLong } from '../webidl.js';
import { requireDictionary } from './dictionary.js';

/** The kernel's twin of a pipeline whose entry point was rewritten to run as atoms. */
export interface AtomizedPipeline {
  readonly real: GPUComputePipeline;
  /** Bytes of immediate data the twin reads (0: the entry needs no record; any split is exact). */
  readonly immediateSize: number;
  /** The real bind group to set at `index` for the program's `group` (a twin for 'auto' layouts). */
  bindGroup(index: number, group: unknown): unknown;
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
  const entry = atomize(module.deviceCode, compute.entryPoint, { maxImmediateSize: limits.maxImmediateSize ?? 0, maxBindGroups: limits.maxBindGroups });
  if (entry.mode !== 'immediate') {
    pipeline.wholeReason = entry.reason ?? `the atomizer chose '${entry.mode}'`;
    return;
  }
  const immediateSize = entry.immediateSize ?? 0;
  if (immediateSize === 0) {
    // The entry needs no atom record, so the twin's code would be the program's own: the program's
    // pipeline serves as the twin, and the module is compiled once, not twice.
    const real = pipeline[REAL];
    pipeline.atomized = { real, immediateSize: 0, bindGroup: (_index, group) => unwrap(group) };
    return;
  }
  const layout = pipeline.descriptor.layout;
  const physical = device.physical;
  const explicit = layout instanceof VirtualPipelineLayout;
  let realLayout: GPUPipelineLayout | 'auto' = 'auto';
  if (explicit) {
    // The program's own bind group layouts, so its bind groups fit the twin as they are.
    const made = physical.capture(() =>
      physical.device.createPipelineLayout({
        bindGroupLayouts: layout.bindGroupLayouts.map((l) => unwrap(l) as GPUBindGroupLayout | null),
        immediateSize,
      } as GPUPipelineLayoutDescriptor),
    );
    if (!made.clean) {
      pipeline.wholeReason = 'the twin pipeline layout was refused';
      return;
    }
    realLayout = made.value;
  }
  const descriptor: GPUComputePipelineDescriptor = {
    label: `${pipeline.label} (atomized)`,
    layout: realLayout,
    compute: { ...compute, module: physical.device.createShaderModule({ code: entry.code }) },
  };
  const adopt = (real: GPUComputePipeline): void => {
    // 'auto' layouts are exclusive to their pipeline: the program's bind groups get twins made
    // against the twin's own layouts (same resources), created once per group and layout.
    const layouts = new Map<number, GPUBindGroupLayout>();
    const twinLayout = (index: number): GPUBindGroupLayout => {
      let found = layouts.get(index);
      if (!found) layouts.set(index, (found = real.getBindGroupLayout(index)));
      return found;
    };
    pipeline.atomized = {
      real,
      immediateSize,
      bindGroup: explicit
        ? (_index, group) => unwrap(group)
        : (index, group) => (group instanceof VirtualBindGroup ? group.twinFor(twinLayout(index)) : unwrap(group)),
    };
  };
  const refuse = (why: string): void => {
    pipeline.wholeReason = `the atomized twin did not compile: ${why}`;
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
  /** Device time per workgroup, learned from this pipeline's atoms and dispatches. */
  readonly cost = new CostModel();
  /** Set once the atomized twin is ready; stays null when the kernel runs this pipeline whole. */
  atomized: AtomizedPipeline | null = null;
  /** Why the pipeline runs whole, when it does (for stats and the trace). */
  wholeReason: string | null = null;

  /** Whether its kernels run loops the watchdog checks, and so may cut: the dispatcher times such work alone. */
  get mayCut(): boolean {
    const module = this.descriptor.compute?.module;
    return module instanceof VirtualShaderModule && module.watchdog.checkedLoops > 0;
  }

  constructor(
    private readonly device: VirtualDevice,
    /** Dawn's pipeline; null until a deferred creation attaches it (VirtualDevice.createComputePipelineDeferred). */
    private real: GPUComputePipeline | null,
    readonly descriptor: GPUComputePipelineDescriptor,
  ) {
    super(descriptor.label, device);
  }

  /** Puts Dawn's pipeline behind a pipeline made before Dawn had it (a deferred creation). */
  attach(real: GPUComputePipeline): void {
    this.real = real;
  }

  /**
   * Made afresh on `physical` (migration), with Dawn's asynchronous creation: the synchronous one
   * would wait in the driver for whatever runs on that device, on the thread that serves everyone.
   */
  async rebuild(physical: PhysicalDevice): Promise<void> {
    let made: Promise<GPUComputePipeline>;
    try {
      made = physical.capture(() => physical.device.createComputePipelineAsync(realComputePipelineDescriptor(this.descriptor))).value;
    } catch {
      made = Promise.reject(new TypeError('refused'));
    }
    // Invalid before, invalid again (its errors were the program's when it was made).
    this.real = await made.catch(() => invalidComputePipeline(physical));
    const hadTwin = this.atomized !== null;
    this.atomized = null;
    if (hadTwin) await buildAtomizedTwin(this.device, this, false);
  }
  get [REAL](): GPUComputePipeline {
    return this.real as GPUComputePipeline;
  }
  getBindGroupLayout(index: number): VirtualBindGroupLayout {
    index = unsignedLong(index, 'getBindGroupLayout', 'index');
    const real = this.device.call(() => this.real!.getBindGroupLayout(index));
    const layout = new VirtualBindGroupLayout(real, undefined, { pipeline: this, index });
    this.device.remember('derivedLayout', layout);
    return layout;
  }
}
