// A finished command buffer: the kernel's record of what the program encoded, which the
// dispatcher executes. The record, not a real command buffer, is the truth: the kernel can encode
// it afresh against whatever real objects stand behind the virtual ones at execution time.

import { REAL, unwrap, VirtualObject } from './object.js';
import { describeCommandBuffer } from '../foreignObject.js';
import { VirtualBindGroup } from './bindGroup.js';
import { keepShape } from '../keptShapes.js';
import type { PassFacts } from './passFacts.js';

export type PassOp =
  | 'setPipeline'
  | 'setBindGroup'
  | 'dispatchWorkgroups'
  | 'dispatchWorkgroupsIndirect'
  | 'setImmediates'
  | 'pushDebugGroup'
  | 'popDebugGroup'
  | 'insertDebugMarker';

export type EncoderOp =
  | 'copyBufferToBuffer'
  | 'clearBuffer'
  | 'resolveQuerySet'
  | 'pushDebugGroup'
  | 'popDebugGroup'
  | 'insertDebugMarker';

export interface PassCommand {
  op: PassOp;
  args: unknown[];
}

export type RecordedCommand =
  | { op: 'computePass'; descriptor: GPUComputePassDescriptor | undefined; commands: PassCommand[]; facts: PassFacts | null }
  | { op: EncoderOp; args: unknown[] };

/** Where a pipeline binds its process's budget-spent flag (VirtualComputePipeline.spentFlag), read without importing it. */
export interface FlagBinding {
  readonly index: number;
  readonly bindGroup: GPUBindGroup;
}

/** The budget-spent flag `pipeline` (a pass's setPipeline argument) binds, or null. */
export function flagOf(pipeline: unknown): FlagBinding | null {
  return (pipeline as { spentFlag?: FlagBinding | null } | null)?.spentFlag ?? null;
}

/**
 * Encodes a pass's recorded commands into a real pass: as the program made them, with its
 * pipeline's budget-spent flag set after each setPipeline of a flagged pipeline, and again after
 * the program's own setBindGroup at the flag's index (its shader reads none there); a later
 * pipeline that does not bind the flag there gets the program's group at that index back (bind
 * groups outlive setPipeline), or none.
 */
export function encodePassCommands(pass: GPUComputePassEncoder, commands: readonly PassCommand[]): void {
  const target = pass as unknown as Record<string, (...args: unknown[]) => void>;
  let flag: FlagBinding | null = null;
  const programGroups: Array<unknown[] | undefined> = [];
  for (const pc of commands) {
    const args = pc.args.map(unwrap);
    target[pc.op](...args);
    if (pc.op === 'setPipeline') {
      const previous: FlagBinding | null = flag;
      const next = flagOf(pc.args[0]);
      flag = next;
      if (previous !== null && previous.index !== next?.index) {
        const own = programGroups[previous.index];
        if (own) target.setBindGroup(...own);
        else pass.setBindGroup(previous.index, null);
      }
    } else if (pc.op === 'setBindGroup') {
      programGroups[pc.args[0] as number] = args;
      if (flag === null || pc.args[0] !== flag.index) continue;
    } else continue;
    if (flag !== null) pass.setBindGroup(flag.index, flag.bindGroup);
  }
}

/** What Dawn should see for a program's compute pass descriptor. */
export function realPassDescriptor(descriptor: GPUComputePassDescriptor | undefined): GPUComputePassDescriptor | undefined {
  if (!descriptor?.timestampWrites) return descriptor;
  return { ...descriptor, timestampWrites: { ...descriptor.timestampWrites, querySet: unwrap(descriptor.timestampWrites.querySet) } };
}

/**
 * The distinct virtual objects a record names, in first-use order: a list searched in place while
 * short (a record names few; this runs for every submit), a Set beside it once long.
 */
export class Resources {
  readonly list: VirtualObject[] = [];
  #seen: Set<VirtualObject> | null = null;
  /** Adds `value` if it is a virtual object; a bind group adds what its entries bind instead. */
  add(value: unknown): void {
    if (!(value instanceof VirtualObject)) return;
    if (value instanceof VirtualBindGroup) {
      for (const bound of value.resources) this.#add(bound);
      return;
    }
    this.#add(value);
  }
  #add(value: VirtualObject): void {
    if (this.#seen === null) {
      if (this.list.includes(value)) return;
      this.list.push(value);
      if (this.list.length > 16) this.#seen = new Set(this.list);
      return;
    }
    if (this.#seen.has(value)) return;
    this.#seen.add(value);
    this.list.push(value);
  }
}
// Every Resources lives for one call: one kept keeps the shape (src/keptShapes.ts says why).
keepShape(new Resources());

/** Whether `args` name `resource`, or a bind group that binds it (as Resources.add counts them). */
function argsUse(args: readonly unknown[], resource: object): boolean {
  for (let a = 0; a < args.length; a++) {
    const arg = args[a];
    if (arg instanceof VirtualBindGroup ? arg.resources.includes(resource as VirtualObject) : arg === resource) return true;
  }
  return false;
}

export class VirtualCommandBuffer extends VirtualObject<GPUCommandBuffer> {
  // Private fields behind prototype accessors: a GPUCommandBuffer has no own properties (WebIDL).
  #submitted = false;
  #checkedConsumed = false;
  #checked: GPUCommandBuffer;
  #commands: readonly RecordedCommand[];
  #valid: Promise<boolean>;
  #knownValid: boolean;
  #dispatches: number;
  #indirectDispatches: number;
  #backingEpoch: number;
  #encoderLabel: string;
  #finishLabelled: boolean;
  #referenced: VirtualObject[] | null = null;

  constructor(
    checked: GPUCommandBuffer,
    commands: readonly RecordedCommand[],
    label: string | undefined,
    valid: Promise<boolean>,
    knownValid: boolean,
    dispatches: number,
    indirectDispatches: number,
    backingEpoch: number,
    /** The device whose encoder made it. */
    owner: object,
    encoderLabel = '',
    finishLabelled = true,
  ) {
    super(label, owner);
    this.#checked = checked;
    this.#commands = commands;
    this.#valid = valid;
    this.#knownValid = knownValid;
    this.#dispatches = dispatches;
    this.#indirectDispatches = indirectDispatches;
    this.#backingEpoch = backingEpoch;
    this.#encoderLabel = encoderLabel;
    this.#finishLabelled = finishLabelled;
  }

  /** Set by the first queue.submit(): WebGPU lets a command buffer be submitted once. */
  get submitted(): boolean {
    return this.#submitted;
  }
  set submitted(value: boolean) {
    this.#submitted = value;
  }
  /** Set when the encoding Dawn checked at finish() was itself submitted (it can be, once). */
  get checkedConsumed(): boolean {
    return this.#checkedConsumed;
  }
  set checkedConsumed(value: boolean) {
    this.#checkedConsumed = value;
  }
  get commands(): readonly RecordedCommand[] {
    return this.#commands;
  }
  /** Resolves true when finish() raised no error, i.e. the record is valid to execute. */
  get valid(): Promise<boolean> {
    return this.#valid;
  }
  /** True when finish() is known, at once, to have raised no error. */
  get knownValid(): boolean {
    return this.#knownValid;
  }
  get dispatches(): number {
    return this.#dispatches;
  }
  get indirectDispatches(): number {
    return this.#indirectDispatches;
  }
  /** The owner's backing epoch at finish(): if it moved, the checked encoding names stale buffers. */
  get backingEpoch(): number {
    return this.#backingEpoch;
  }
  /** Its encoder's label (Dawn names both the command buffer and its encoder). */
  get encoderLabel(): string {
    return this.#encoderLabel;
  }
  /** Whether finish() gave a label of its own. */

  /** The label Dawn gives the command buffer itself: finish()'s, or none. */
  get ownLabel(): string {
    return this.#finishLabelled || this.label !== this.encoderLabel ? this.label : '';
  }

  /** How Dawn names it in messages: `[CommandBuffer "cb" from CommandEncoder "enc"]`. */
  get description(): string {
    return describeCommandBuffer(this.ownLabel, this.encoderLabel);
  }

  /** The encoding Dawn checked at finish(): submitting it is exact when nothing was replaced. */
  get [REAL](): GPUCommandBuffer {
    return this.#checked;
  }

  /**
   * Whether the commands use `resource` (directly, or bound by a bind group): resources().includes
   * without building the list, for the check a map makes after every submit (Dispatcher.mapMade).
   */
  uses(resource: object): boolean {
    if (this.#referenced) return this.#referenced.includes(resource as VirtualObject);
    const commands = this.#commands;
    for (let c = 0; c < commands.length; c++) {
      const command = commands[c];
      if (command.op !== 'computePass') {
        if (argsUse(command.args, resource)) return true;
        continue;
      }
      if (command.descriptor?.timestampWrites?.querySet === resource) return true;
      const passCommands = command.commands;
      for (let p = 0; p < passCommands.length; p++) if (argsUse(passCommands[p].args, resource)) return true;
    }
    return false;
  }

  /** Every buffer and query set the record uses (directly or through bind groups). */
  resources(): VirtualObject[] {
    if (this.#referenced) return this.#referenced;
    const found = new Resources();
    for (const command of this.#commands) {
      if (command.op === 'computePass') {
        found.add(command.descriptor?.timestampWrites?.querySet);
        for (const passCommand of command.commands) for (const arg of passCommand.args) found.add(arg);
      } else {
        for (const arg of command.args) found.add(arg);
      }
    }
    this.#referenced = found.list;
    return this.#referenced;
  }

  /**
   * The buffers the record may write: read-write storage bindings of its passes, copy and clear
   * destinations, resolve targets. A process moving to another node resends them (dirty).
   */
  writtenBuffers(): VirtualObject[] {
    if (this.#written) return this.#written;
    const found = new Resources();
    for (const command of this.#commands) {
      if (command.op === 'computePass') {
        for (const { op, args } of command.commands) {
          if (op === 'setBindGroup' && args[1] instanceof VirtualBindGroup) for (const buffer of args[1].writtenBuffers()) found.add(buffer);
        }
      } else if (command.op === 'copyBufferToBuffer') {
        // (source, sourceOffset, destination, ...) or (source, destination, size?)
        found.add(typeof command.args[1] === 'number' ? command.args[2] : command.args[1]);
      } else if (command.op === 'clearBuffer') {
        found.add(command.args[0]);
      } else if (command.op === 'resolveQuerySet') {
        found.add(command.args[3]);
      }
    }
    this.#written = found.list;
    return this.#written;
  }
  #written: VirtualObject[] | null = null;

  /** Encodes the record afresh on `device`, against the real objects behind it now. */
  encode(device: GPUDevice): GPUCommandBuffer {
    const encoder = device.createCommandEncoder({ label: this.label });
    for (const command of this.commands) {
      if (command.op === 'computePass') {
        const pass = encoder.beginComputePass(realPassDescriptor(command.descriptor));
        encodePassCommands(pass, command.commands);
        pass.end();
      } else {
        (encoder as unknown as Record<string, (...args: unknown[]) => void>)[command.op](...command.args.map(unwrap));
      }
    }
    return encoder.finish({ label: this.label });
  }
}
