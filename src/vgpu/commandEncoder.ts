// Command and compute-pass encoders of a process. Each call is recorded for the kernel and, in
// the same step, replayed into a real encoder so that Dawn checks it: finish() then reports
// exactly the validation errors bare WebGPU would, in the scope that was current at finish().
// Arguments are converted as WebIDL says (src/webidl.ts) and object arguments taken through the
// device's ownership check (src/vgpu/foreign.ts) before either: another device's object makes
// the real encoder invalid exactly as Dawn's own check would, so finish() fails.

import { refuseUnsupported } from '../errors.js';
import { keepShape } from '../keptShapes.js';
import {
  computePassDescriptor,
  copyBufferToBufferArgs,
  dataBytes,
  labelDescriptor,
  setBindGroupArgs,
  setBindGroupArgs2,
  size32,
  size64,
  usvString,
} from '../webidl.js';
import { flagOf, PassCommand, PassOp, RecordedCommand, EncoderOp, VirtualCommandBuffer, realPassDescriptor, type FlagBinding } from './commandBuffer.js';
import { VirtualBuffer } from './buffer.js';
import type { VirtualDevice } from './device.js';
import type { DeviceObjects } from './foreign.js';
import { BufferUsage } from './webgpuGlobals.js';
import { REAL, unwrap, VirtualObject } from './object.js';
import { VirtualBindGroup } from './bindGroup.js';
import { VirtualComputePipeline } from './computePipeline.js';
import { VirtualBindGroupLayout } from './layouts.js';
import { keepCallPathShapes } from './shapeKeepers.js';
import { factsOfLayout } from './limits.js';
import { findFacts } from './passFacts.js';

/** `error` with each of Dawn's sentences in `rewordings` replaced (a new error of its class when any is). */
function reword(error: GPUError, rewordings: ReadonlyArray<[string, string]>): GPUError {
  let message = error.message;
  for (const [dawn, program] of rewordings) message = message.split(dawn).join(program);
  return message === error.message ? error : new (error.constructor as new (message: string) => GPUError)(message);
}

/**
 * setImmediates' content, as the WebGPU spec takes it: dataOffset and size in elements of a typed
 * array, and a RangeError (nothing recorded, the encoder stays valid) for a range outside the
 * data or a byte size that is not a multiple of 4. Dawn throws an OperationError for the first
 * and makes the encoder invalid for the second; the spec's behaviour is the one programs are
 * written against (CTS api,validation,encoding,cmds,setImmediates).
 */
function immediateBytes(data: unknown, dataOffset: number | undefined, size: number | undefined): Uint8Array {
  try {
    return dataBytes('setImmediates', data, dataOffset, size, true).slice();
  } catch (error) {
    if ((error as Error)?.name === 'OperationError') throw new RangeError(`Failed to execute 'setImmediates' on 'GPUComputePassEncoder': ${(error as Error).message}`);
    throw error;
  }
}

/** The validity of every command buffer finish() made without error (shared: never mutated). */
const FINISHED_CLEAN: Promise<boolean> = Promise.resolve(true);

/** The record of the last dispatchWorkgroups recorded (any encoder's): shared while the counts repeat. */
let lastDispatch: PassCommand | null = null;

/**
 * The record of dispatchWorkgroups(x, y, z): the last one made when its counts are these (records
 * are never changed once made, and frozen so that none can be), else a new one.
 */
function dispatchRecord(x: number, y: number, z: number): PassCommand {
  const last = lastDispatch;
  if (last !== null && last.args[0] === x && last.args[1] === y && last.args[2] === z) return last;
  lastDispatch = Object.freeze({ op: 'dispatchWorkgroups', args: Object.freeze([x, y, z]) as unknown[] }) as PassCommand;
  return lastDispatch;
}

/** A process's maxComputeWorkgroupsPerDimension below the real device's (ProcessLimits.workgroupsPerDimension). */
interface WorkgroupLimit {
  readonly limit: number;
  readonly realLimit: number;
}

/** True when no count is refused by workgroupCountRefusal (the common case, without an array). */
function countsAllowed({ limit, realLimit }: WorkgroupLimit, x: number, y: number, z: number): boolean {
  return !((x > limit && x <= realLimit) || (y > limit && y <= realLimit) || (z > limit && z <= realLimit));
}

const NO_COMMANDS: readonly RecordedCommand[] = Object.freeze([]);
/** A pass's commands until it ends (replaced then: passCommandsOf). */
const NO_PASS_COMMANDS: PassCommand[] = Object.freeze([]) as unknown as PassCommand[];
/** What a reused scratch slot holds once its pass is done with it (nothing of the program's). */
const NO_COMMAND: PassCommand = Object.freeze({ op: 'popDebugGroup', args: Object.freeze([]) as unknown as unknown[] });

/**
 * Where open passes record their calls: arrays reused from pass to pass, so that a pass's list is
 * made once, of its size, when it ends (an array grown from `[]` by its first push allocates room
 * for sixteen, every pass: most of what a dispatch loop's record cost). Usually one is in use.
 */
const spareScratch: PassCommand[][] = [];

/**
 * Each device's last pass commands made at end(), and the record of an encoder of that pass alone
 * (made when first wanted): a loop that encodes the same pass again (the same pipeline, bind
 * groups and counts, whose records are shared objects) reuses both, so that its command buffers'
 * records cost nothing. Keyed by device, as they name its objects; frozen, as every record shared
 * between command buffers; held weakly, so that the last pass a program encoded does not keep
 * its pipeline and bind groups (and the memory the ledger charges for them) once its command
 * buffers are gone.
 */
interface LastPass {
  commands: WeakRef<PassCommand[]>;
  loneRecord: WeakRef<readonly RecordedCommand[]> | null;
}
const lastPasses = new WeakMap<object, LastPass>();

/** `scratch[0, count)` as a pass's frozen commands: the device's last list when it is the same, else a new one. */
function passCommandsOf(device: object, scratch: readonly PassCommand[], count: number): PassCommand[] {
  const last = lastPasses.get(device)?.commands.deref();
  if (last !== undefined && last.length === count) {
    let same = true;
    for (let i = 0; i < count && same; i++) same = last[i] === scratch[i];
    if (same) return last;
  }
  const commands = Object.freeze(scratch.slice(0, count)) as PassCommand[];
  lastPasses.set(device, { commands: new WeakRef(commands), loneRecord: null });
  return commands;
}

/** The record of an encoder that holds one pass of `commands` (from passCommandsOf), without a descriptor, and nothing else. */
function loneRecordOf(device: object, commands: PassCommand[]): readonly RecordedCommand[] {
  const last = lastPasses.get(device);
  const current = last !== undefined && last.commands.deref() === commands ? last : null;
  const shared = current?.loneRecord?.deref();
  if (shared !== undefined) return shared;
  // Shared by every command buffer of this pass alone: its facts are found once, here.
  const record = Object.freeze([Object.freeze({ op: 'computePass' as const, descriptor: undefined, commands, facts: findFacts(commands) })]);
  if (current !== null) current.loneRecord = new WeakRef(record);
  return record;
}

// A pass's frozen list and an encoder's frozen lone record are shapes of their own (a frozen
// array, a frozen entry), and every one of them goes with its process's command buffers: one of
// each, made by the two functions themselves for a key nothing else has, is kept so that a full
// collection between processes leaves the submit path's optimized code (see src/keptShapes.ts).
// The key is kept too: the device's entry in lastPasses (a LastPass, its loneRecord set) is a
// shape of its own as well, and lives only while its key does.
const keptRecords: { key: object; commands: PassCommand[]; record: readonly RecordedCommand[] } = (() => {
  const key = {};
  const commands = passCommandsOf(key, [NO_COMMAND], 1);
  return keepShape({ key, commands, record: loneRecordOf(key, commands) });
})();

/** The kept list and lone record, for the test that compares their shapes with a program's. */
export function keptRecordShapes(): { commands: PassCommand[]; record: readonly RecordedCommand[] } {
  return keptRecords;
}

/** The real finish, for captureWith (no closure per call). */
const finishEncoder = (encoder: GPUCommandEncoder, descriptor: GPUCommandBufferDescriptor | undefined): GPUCommandBuffer => encoder.finish(descriptor);

/** Calls `target[op]` with `args` unwrapped (the real objects behind virtual ones), without copying them for the common counts. */
function replay(target: object, op: string, args: readonly unknown[]): void {
  const method = (target as Record<string, (...a: unknown[]) => void>)[op];
  switch (args.length) {
    case 0:
      return method.call(target);
    case 1:
      return method.call(target, unwrap(args[0]));
    case 2:
      return method.call(target, unwrap(args[0]), unwrap(args[1]));
    case 3:
      return method.call(target, unwrap(args[0]), unwrap(args[1]), unwrap(args[2]));
    default:
      return method.apply(target, args.map(unwrap));
  }
}

export class VirtualComputePassEncoder {
  // Private fields behind prototype accessors: a GPUComputePassEncoder has no own properties (WebIDL).
  #label: string;
  #encoder: VirtualCommandEncoder;
  #real: GPUComputePassEncoder;
  /**
   * The encoder's record of this pass, whose commands are set when it ends (or at finish); null
   * while the encoder defers it (a pass alone in its encoder: VirtualCommandEncoder.#lonePass).
   */
  #entry: { commands: PassCommand[] } | null;
  /** The calls so far, in `#scratch[0, #count)` (spareScratch); null once the pass's commands are set. */
  #scratch: PassCommand[] | null;
  #count = 0;
  /** Its direct dispatches so far: added to its encoder's count when its commands are set (not per call). */
  #dispatches = 0;
  /** The workgroup count limits its dispatches are checked against (null: the process's are the real device's), read once. */
  readonly #workgroupLimit: WorkgroupLimit | null;
  private get encoder(): VirtualCommandEncoder {
    return this.#encoder;
  }
  private get real(): GPUComputePassEncoder {
    return this.#real;
  }
  constructor(
    encoder: VirtualCommandEncoder,
    real: GPUComputePassEncoder,
    entry: { commands: PassCommand[] } | null,
    label: string | undefined,
    workgroupLimit: WorkgroupLimit | null = null,
  ) {
    this.#encoder = encoder;
    this.#real = real;
    this.#entry = entry;
    // A pass begun on a finished encoder records nothing (its calls are Dawn's errors on the device).
    this.#scratch = encoder.finished ? null : (spareScratch.pop() ?? []);
    this.#label = label ?? '';
    this.#workgroupLimit = workgroupLimit;
  }

  /** Appends a call to the pass's commands (nothing once they are set: the pass ended, or its encoder finished). */
  #push(command: PassCommand): void {
    const scratch = this.#scratch;
    if (scratch === null) return;
    if (this.#count < scratch.length) scratch[this.#count] = command;
    else scratch.push(command);
    this.#count++;
  }

  /** The encoder made this deferred pass's record (something else was recorded after it). */
  setEntry(entry: { commands: PassCommand[] }): void {
    this.#entry = entry;
  }

  /**
   * Sets the pass's commands in the encoder's record from what it recorded, and hands its scratch
   * back (emptied: it must not keep the program's objects alive). At end(), the list may be the
   * device's last one (passCommandsOf), and a deferred pass becomes its encoder's whole record; at
   * finish() of a pass never ended, a copy of its own (the encoder made its record first).
   */
  settleCommands(atEnd: boolean): void {
    const scratch = this.#scratch;
    if (scratch === null) return;
    this.#scratch = null;
    const count = this.#count;
    this.#encoder.dispatches += this.#dispatches;
    const commands = atEnd ? passCommandsOf(this.#encoder.objects, scratch, count) : scratch.slice(0, count);
    if (this.#entry !== null) this.#entry.commands = commands;
    else this.#encoder.loneCommands(commands);
    for (let i = 0; i < count; i++) scratch[i] = NO_COMMAND;
    spareScratch.push(scratch);
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  /** Replays converted arguments into the real pass and records them (they are fresh: no copy needed). */
  private forward(op: PassOp, args: unknown[]): void {
    this.#encoder.forwardTo(this.#real, op, args);
    this.#keep({ op, args });
  }

  /**
   * Records a call into the pass's commands, unless the encoder is finished: its record is then
   * the command buffer's, which a split or replayed submit encodes afresh, and Dawn refused the
   * call (on the device) rather than let it join the command buffer.
   */
  #keep(command: PassCommand): void {
    if (!this.#encoder.finished) this.#push(command);
  }

  // The common calls (setPipeline, setBindGroup without offsets, dispatchWorkgroups, end) call the
  // real pass directly while the encoder is open: no closure, no copy of the arguments.

  setPipeline(pipeline: GPUComputePipeline): void {
    const encoder = this.#encoder;
    const converted = encoder.objects.object('GPUComputePipeline', pipeline, 'setPipeline', 'pipeline') as VirtualObject<GPUComputePipeline>;
    if (encoder.finished) return this.forward('setPipeline', [converted]);
    this.#real.setPipeline(converted[REAL]);
    // Its budget-spent flag, where its pipeline binds one (encodePassCommands does the same on
    // replays); bind groups outlive setPipeline, so the program's own group (or none) goes back
    // where the previous pipeline's flag was, for a pipeline that does not bind it there.
    const previous = this.#flag;
    const flag = (this.#flag = flagOf(converted));
    if (previous !== null && previous.index !== flag?.index) this.#restoreProgramGroup(previous.index);
    if (flag !== null) this.#real.setBindGroup(flag.index, flag.bindGroup);
    // The pipeline's own record, shared by every pass (a stand-in for another device's gets one of its own).
    this.#push(converted instanceof VirtualComputePipeline ? converted.passRecord : { op: 'setPipeline', args: [converted] });
  }
  setBindGroup(index: number, bindGroup: GPUBindGroup | null, ...dynamicOffsets: unknown[]): void;
  // Declared with the two parameters every overload has (WebIDL: its length is 2); the others are read from `arguments`.
  setBindGroup(index: number, bindGroup: GPUBindGroup | null): void {
    const encoder = this.#encoder;
    // WebIDL picks the overload by argument count: the two-argument call (the common one) is
    // converted without gathering its arguments into an array first, and recorded with the bind
    // group's own record for its index (no record per call).
    if (arguments.length === 2 && !encoder.finished) {
      const slot = size32(index, 'setBindGroup', 'index');
      const group = bindGroup === null || bindGroup === undefined ? null : (encoder.objects.object('GPUBindGroup', bindGroup, 'setBindGroup', 'bindGroup') as VirtualObject<GPUBindGroup>);
      this.#real.setBindGroup(slot, group === null ? null : group[REAL]);
      this.#push(group instanceof VirtualBindGroup ? group.passRecord(slot) : { op: 'setBindGroup', args: [slot, group] });
      if (slot === this.#flag?.index) this.#reflag();
      return;
    }
    const converted =
      arguments.length === 2 ? setBindGroupArgs2(index, bindGroup, encoder.objects) : setBindGroupArgs([...arguments], encoder.objects);
    const offsets = converted[2] as number[] | undefined;
    const refusal = offsets && offsets.length > 0 ? this.encoder.dynamicOffsetRefusal(converted[1], offsets) : null;
    if (refusal) {
      // Aligned for the real device, not for this one: Dawn is given an offset it refuses too (the
      // encoder fails at finish, as WebGPU says), and finish() words the error for the program's offset.
      const real = offsets!.slice();
      const offset = real[refusal.index];
      if (offset % refusal.realAlignment === 0) real[refusal.index] = offset + 1;
      this.encoder.forwardTo(this.real, 'setBindGroup', [converted[0], converted[1], real]);
      this.#keep({ op: 'setBindGroup', args: converted });
      this.encoder.rewordAtFinish(
        `Dynamic Offset[${refusal.index}] (${real[refusal.index]}) is not ${refusal.realAlignment} byte aligned.`,
        refusal.message,
      );
      return;
    }
    this.forward('setBindGroup', converted);
    if (converted[0] === this.#flag?.index) this.#reflag();
  }

  /** The current pipeline's budget-spent flag binding (null: none), set again after the program's group at its index. */
  #flag: FlagBinding | null = null;
  #reflag(): void {
    if (this.#flag !== null && !this.#encoder.finished) this.#real.setBindGroup(this.#flag.index, this.#flag.bindGroup);
  }

  /** Sets the program's last group at `index` in this pass again (none: unset), over a flag's (rare: read from the record). */
  #restoreProgramGroup(index: number): void {
    const scratch = this.#scratch;
    if (scratch === null) return;
    for (let i = this.#count - 1; i >= 0; i--) {
      const command = scratch[i];
      if (command.op === 'setBindGroup' && command.args[0] === index) return replay(this.#real, 'setBindGroup', command.args);
    }
    this.#real.setBindGroup(index, null);
  }
  dispatchWorkgroups(x: number, y?: number, z?: number): void {
    const encoder = this.#encoder;
    // The common call, converted as workgroupCounts does (x, then y, then z) without its array,
    // and recorded with a shared record when the counts repeat the last dispatch's.
    const m = 'dispatchWorkgroups';
    const cx = size32(x, m, 'workgroupCountX');
    const cy = y === undefined ? 1 : size32(y, m, 'workgroupCountY');
    const cz = z === undefined ? 1 : size32(z, m, 'workgroupCountZ');
    this.#dispatches++;
    const limit = this.#workgroupLimit;
    if (!encoder.finished && (limit === null || countsAllowed(limit, cx, cy, cz))) {
      // Dawn converts each count it is given (WebIDL, in native code): the counts the program left
      // at their default of 1 are left out here too (about 0.1 µs a dispatch on lavapipe's host).
      if (cz !== 1) this.#real.dispatchWorkgroups(cx, cy, cz);
      else if (cy !== 1) this.#real.dispatchWorkgroups(cx, cy);
      else this.#real.dispatchWorkgroups(cx);
      this.#push(dispatchRecord(cx, cy, cz));
      return;
    }
    const counts: [number, number, number] = [cx, cy, cz];
    const over = encoder.workgroupCountRefusal(counts);
    if (over) {
      // Within the real device's limit, over this device's: Dawn is given a count over its own, and
      // finish() words the error for the program's count.
      const real = counts.slice();
      real[over.index] = over.realLimit + 1;
      this.encoder.forwardTo(this.real, 'dispatchWorkgroups', real);
      this.#keep({ op: 'dispatchWorkgroups', args: counts });
      const axis = 'XYZ'[over.index];
      this.encoder.rewordAtFinish(
        `Dispatch workgroup count ${axis} (${over.realLimit + 1}) exceeds max compute workgroups per dimension (${over.realLimit}).`,
        `Dispatch workgroup count ${axis} (${counts[over.index]}) exceeds max compute workgroups per dimension (${over.limit}).`,
      );
      this.encoder.rewordAtFinish(`DispatchWorkgroups(${real.join(', ')})`, `DispatchWorkgroups(${counts.join(', ')})`);
      return;
    }
    this.forward('dispatchWorkgroups', counts);
  }
  dispatchWorkgroupsIndirect(buffer: GPUBuffer, offset: number): void {
    const m = 'dispatchWorkgroupsIndirect';
    this.forward(m, [this.encoder.objects.object('GPUBuffer', buffer, m, 'indirectBuffer'), size64(offset, m, 'indirectOffset')]);
    this.#encoder.indirectDispatches++;
  }
  setImmediates(rangeOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    const m = 'setImmediates';
    const offset = size32(rangeOffset, m, 'rangeOffset');
    // The bytes the program means, copied now: later edits of its array must not leak in.
    this.forward(m, [offset, immediateBytes(data, dataOffset, size)]);
  }
  pushDebugGroup(groupLabel: string): void {
    this.forward('pushDebugGroup', [usvString(groupLabel, 'pushDebugGroup', 'groupLabel')]);
  }
  popDebugGroup(): void {
    this.forward('popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.forward('insertDebugMarker', [usvString(markerLabel, 'insertDebugMarker', 'markerLabel')]);
  }
  end(): void {
    if (this.#encoder.finished) return this.#encoder.forwardTo(this.#real, 'end', []);
    this.#real.end();
    // A second end() is Dawn's error (the encoder fails at finish); the commands are set once.
    this.settleCommands(true);
    this.#encoder.passEnded(this);
  }
}

export class VirtualCommandEncoder {
  // Private fields behind prototype accessors: a GPUCommandEncoder has no own properties (WebIDL).
  #label: string;
  #dispatches = 0;
  #indirectDispatches = 0;
  #objects: DeviceObjects;
  // Made at the first command, of its size: most encoders record one pass (and `[]` grown by a push
  // would allocate room for sixteen).
  #record: RecordedCommand[] = NO_COMMANDS as RecordedCommand[];
  #finished = false;
  #device: VirtualDevice;
  #real: GPUCommandEncoder;
  get dispatches(): number {
    return this.#dispatches;
  }
  set dispatches(count: number) {
    this.#dispatches = count;
  }
  get indirectDispatches(): number {
    return this.#indirectDispatches;
  }
  set indirectDispatches(count: number) {
    this.#indirectDispatches = count;
  }
  /** The device's object arguments check (ownership). */
  get objects(): DeviceObjects {
    return this.#objects;
  }
  private get record(): RecordedCommand[] {
    return this.#record;
  }
  /** Records a call, unless finished: the record is the command buffer's then, and Dawn refused the call (see the pass's #keep). */
  #recordCommand(command: RecordedCommand): void {
    if (this.#finished) return;
    this.#recordLonePass();
    if (this.#record.length === 0) this.#record = [command];
    else if (this.#recordShared) {
      this.#record = [...this.#record, command];
      this.#recordShared = false;
    } else this.#record.push(command);
  }

  /**
   * A pass begun first, without a descriptor, whose record is not made yet: if it stays alone, the
   * encoder's whole record is the device's shared one for its commands (loneRecordOf), made when
   * it ends; anything recorded after it makes its record first.
   */
  #lonePass: VirtualComputePassEncoder | null = null;
  /** True while the record is a shared one (loneRecordOf): a command recorded after it copies it first. */
  #recordShared = false;

  /** Makes the deferred pass's record, in its place (first). */
  #recordLonePass(): void {
    const pass = this.#lonePass;
    if (pass === null) return;
    this.#lonePass = null;
    const entry = { op: 'computePass' as const, descriptor: undefined, commands: NO_PASS_COMMANDS, facts: null };
    this.#record = [entry];
    pass.setEntry(entry);
  }

  /** The deferred pass ended with `commands`, alone in the encoder: the record is the device's shared one. */
  loneCommands(commands: PassCommand[]): void {
    this.#lonePass = null;
    this.#record = loneRecordOf(this.#objects, commands) as RecordedCommand[];
    this.#recordShared = true;
  }
  /** Set by finish(): calls after it are refused by Dawn on the device (captured), not inside the encoder. */
  get finished(): boolean {
    return this.#finished;
  }
  private get device(): VirtualDevice {
    return this.#device;
  }
  private get real(): GPUCommandEncoder {
    return this.#real;
  }

  constructor(device: VirtualDevice, real: GPUCommandEncoder, descriptor: { label: string } | undefined) {
    keepCallPathShapes(device.physical);
    this.#device = device;
    this.#real = real;
    this.#label = descriptor?.label ?? '';
    this.#objects = device.objects;
  }

  get label(): string {
    return this.#label;
  }
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  /**
   * Replays one call into a real encoder. Before finish() Dawn keeps encoding errors inside the
   * encoder (reported at finish); after it, Dawn reports them on the device, so they are captured.
   */
  forwardTo(target: object, op: string, args: unknown[]): void {
    if (this.#finished) this.#replayAfterFinish(target, op, args);
    else replay(target, op, args);
  }

  /** A call on a finished encoder (or its pass): Dawn refuses it on the device, so it is captured (apart: no closure per common call). */
  #replayAfterFinish(target: object, op: string, args: unknown[]): void {
    this.#device.call(() => replay(target, op, args));
  }

  private forward(op: EncoderOp, args: unknown[]): void {
    this.forwardTo(this.real, op, args);
    this.#recordCommand({ op, args });
  }

  /** The pass begun last and not yet ended: finish() sets its commands if the program never ends it. */
  #openPass: VirtualComputePassEncoder | null = null;

  beginComputePass(descriptor?: GPUComputePassDescriptor): VirtualComputePassEncoder {
    const converted = computePassDescriptor(descriptor, this.#objects);
    const real = realPassDescriptor(converted);
    const realPass = this.#finished ? this.#beginAfterFinish(real) : this.#real.beginComputePass(real);
    // Its commands are set when it ends (VirtualComputePassEncoder.settleCommands); a pass still
    // open here (Dawn fails the encoder for it) keeps what it recorded so far.
    this.#settleOpenPass();
    let pass: VirtualComputePassEncoder;
    if (!this.#finished && converted === undefined && this.#record.length === 0) {
      pass = new VirtualComputePassEncoder(this, realPass, null, undefined, this.workgroupLimit);
      this.#lonePass = pass;
    } else {
      const entry: RecordedCommand = { op: 'computePass', descriptor: converted, commands: NO_PASS_COMMANDS, facts: null };
      this.#recordCommand(entry);
      pass = new VirtualComputePassEncoder(this, realPass, entry, converted?.label, this.workgroupLimit);
    }
    if (!this.#finished) this.#openPass = pass;
    return pass;
  }

  /** A pass begun and not ended (Dawn fails the encoder for it): the record keeps what it recorded. */
  #settleOpenPass(): void {
    const open = this.#openPass;
    if (open === null) return;
    this.#openPass = null;
    this.#recordLonePass();
    open.settleCommands(false);
  }

  /** `pass` has ended (its commands are set). */
  passEnded(pass: VirtualComputePassEncoder): void {
    if (this.#openPass === pass) this.#openPass = null;
  }

  /** A pass begun on a finished encoder: Dawn refuses it on the device (apart, so the common call makes no closure). */
  #beginAfterFinish(descriptor: GPUComputePassDescriptor | undefined): GPUComputePassEncoder {
    return this.#device.call(() => this.#real.beginComputePass(descriptor));
  }

  copyBufferToBuffer(...args: unknown[]): void {
    const converted = copyBufferToBufferArgs(args, this.objects);
    const source = converted[0];
    if (source instanceof VirtualBuffer && !(source.usage & BufferUsage.COPY_SRC)) {
      // The real buffer may have COPY_SRC (the kernel's own), the program's has not: Dawn must
      // see a source it refuses. The record keeps the program's arguments.
      this.forwardTo(this.real, 'copyBufferToBuffer', [this.device.physical.invalidCopySource, ...converted.slice(1)]);
      this.#recordCommand({ op: 'copyBufferToBuffer', args: converted });
      return;
    }
    this.forward('copyBufferToBuffer', converted);
  }
  clearBuffer(buffer: GPUBuffer, offset?: number, size?: number): void {
    const m = 'clearBuffer';
    const args = [this.objects.object('GPUBuffer', buffer, m, 'buffer'), offset === undefined ? 0 : size64(offset, m, 'offset')];
    if (size !== undefined) args.push(size64(size, m, 'size'));
    this.forward(m, args);
  }
  resolveQuerySet(querySet: GPUQuerySet, firstQuery: number, queryCount: number, destination: GPUBuffer, destinationOffset: number): void {
    const m = 'resolveQuerySet';
    this.forward(m, [
      this.objects.object('GPUQuerySet', querySet, m, 'querySet'),
      size32(firstQuery, m, 'firstQuery'),
      size32(queryCount, m, 'queryCount'),
      this.objects.object('GPUBuffer', destination, m, 'destination'),
      size64(destinationOffset, m, 'destinationOffset'),
    ]);
  }
  pushDebugGroup(groupLabel: string): void {
    this.forward('pushDebugGroup', [usvString(groupLabel, 'pushDebugGroup', 'groupLabel')]);
  }
  popDebugGroup(): void {
    this.forward('popDebugGroup', []);
  }
  insertDebugMarker(markerLabel: string): void {
    this.forward('insertDebugMarker', [usvString(markerLabel, 'insertDebugMarker', 'markerLabel')]);
  }
  writeTimestamp(querySet: GPUQuerySet, index: number): void {
    // Removed from WebGPU; Dawn throws its own error, which the program should see unchanged.
    const m = 'writeTimestamp';
    const real = unwrap(this.objects.object('GPUQuerySet', querySet, m, 'querySet'));
    (this.real as unknown as { writeTimestamp(q: unknown, i: number): void }).writeTimestamp(real, size32(index, m, 'queryIndex'));
  }

  #rewordings: Array<[dawn: string, program: string]> | null = null;

  /** At finish(), Dawn's sentence `dawn` (about an argument gpunix gave it) becomes `program` (about the program's). */
  rewordAtFinish(dawn: string, program: string): void {
    (this.#rewordings ??= []).push([dawn, program]);
  }

  /**
   * Why the process's minimum offset alignments refuse `offsets` for `group` when the real device's
   * accept them (limits.ts), with the real device's alignment for that offset; null when they do not.
   */
  dynamicOffsetRefusal(group: unknown, offsets: readonly number[]): { index: number; message: string; realAlignment: number } | null {
    const checks = this.device.limitChecks;
    if (!checks.alignmentBelow || !(group instanceof VirtualBindGroup) || group.refused) return null;
    const layout = group.descriptor.layout as unknown;
    const facts = layout instanceof VirtualBindGroupLayout ? factsOfLayout(layout) : null;
    const refusal = facts ? checks.dynamicOffsetRefusal(facts.dynamic, offsets) : null;
    if (!refusal) return null;
    const realAlignment = facts!.dynamic[refusal.index] === 'uniform' ? checks.realUniformAlignment : checks.realStorageAlignment;
    return { ...refusal, realAlignment };
  }

  /** The workgroup count limits a dispatch is checked against (null: the process's are the real device's); a pass reads them at its start. */
  private get workgroupLimit(): WorkgroupLimit | null {
    return this.device.limitChecks.workgroupsPerDimension;
  }

  /** A workgroup count over this device's maxComputeWorkgroupsPerDimension but within the real device's, or null. */
  workgroupCountRefusal(counts: readonly number[]): { index: number; limit: number; realLimit: number } | null {
    const below = this.device.limitChecks.workgroupsPerDimension;
    if (below === null) return null;
    const { limit, realLimit } = below;
    for (let index = 0; index < counts.length; index++) if (counts[index] > limit && counts[index] <= realLimit) return { index, limit, realLimit };
    return null;
  }

  /** finish() with Dawn's sentences about arguments gpunix changed reworded (apart: its closures would cost every finish). */
  #finishReworded(
    descriptor: { label: string } | undefined,
    rewordings: ReadonlyArray<[string, string]>,
  ): { value: GPUCommandBuffer; valid: Promise<boolean>; clean: boolean } {
    return this.#device.callReworded(
      () => this.#real.finish(descriptor),
      (errors) => errors.map((error) => reword(error, rewordings)),
    );
  }

  finish(descriptor?: GPUCommandBufferDescriptor): VirtualCommandBuffer {
    const converted = labelDescriptor(descriptor, 'finish');
    this.#settleOpenPass();
    this.#finished = true;
    const rewordings = this.#rewordings;
    const device = this.#device;
    let value: GPUCommandBuffer;
    let valid: Promise<boolean>;
    let clean: boolean;
    if (rewordings) {
      ({ value, valid, clean } = this.#finishReworded(converted, rewordings));
    } else {
      const physical = device.physical;
      value = physical.callCapturing(finishEncoder, this.#real, converted);
      const failed = physical.lastFailed;
      clean = failed === null;
      valid = failed === null ? FINISHED_CLEAN : device.checked(failed);
    }
    return new VirtualCommandBuffer(
      value,
      this.record,
      converted?.label || this.label,
      valid,
      clean,
      this.dispatches,
      this.indirectDispatches,
      this.device.proc.backingEpoch,
      this.device,
      this.label,
      Boolean(converted?.label),
    );
  }
}

refuseUnsupported(VirtualCommandEncoder, 'GPUCommandEncoder');
