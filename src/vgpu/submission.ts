// What one queue.submit becomes for the dispatcher: a divisible work item. Unless it must run
// whole, its commands are issued as pieces, each its own real command buffer: runs of copies
// (large ones chunked), and each dispatch either whole or as atoms — boxes of the original grid
// that the atomized twin of the pipeline computes exactly, placed by immediate data. Between two
// pieces the dispatcher may run another process's work: that is preemption.

import { COPY_CHUNK_BYTES, COST_PROBE_WORKGROUPS } from '../params.js';
import { withoutOpeningStamp, type BracketedSubmit, type DeviceStamp, type DeviceTimer, type TimerSlot } from '../device/deviceTimer.js';
import type { Captured, HeldSubmit } from '../device/physicalDevice.js';
import type { CostModel, WorkItem, WorkPiece } from '../kernel/dispatch.js';
import type { Proc } from '../kernel/proc.js';
import type { CheckedRun } from '../kernel/checkedRuns.js';
import { VirtualBuffer } from './buffer.js';
import { encodePassCommands, flagOf, PassCommand, RecordedCommand, VirtualCommandBuffer, realPassDescriptor } from './commandBuffer.js';
import { VirtualComputePipeline } from './computePipeline.js';
import type { VirtualDevice } from './device.js';
import type { HeldTarget } from './errorScopes.js';
import { REAL, unwrap, type VirtualObject } from './object.js';
import { VirtualQuerySet } from './querySet.js';
import { passFacts } from './passFacts.js';
import { GPUInternalErrorClass, GPUOutOfMemoryErrorClass, GPUValidationErrorClass, outOfMemoryError, validationError } from './webgpuGlobals.js';
import { atomParams } from '../wgsl/index.js';

type Grid = [number, number, number];

/** The pass state a dispatch needs re-established in a pass of its own. */
interface PassState {
  pipeline: unknown;
  bindGroups: Map<number, unknown[]>;
  /**
   * The program's immediates in this pass so far, merged into one image of bytes [0, length) (bytes
   * it never set are zero): replayed as one setImmediates for whole dispatches and atoms, however
   * many calls made it. Null until the first call.
   */
  immediates: Uint8Array | null;
}

/** Where the walk through the command buffers stands. */
interface Cursor {
  buffer: number;
  command: number;
  /** Inside a compute pass: the next pass command, and the state so far. */
  passCommand: number;
  pass: PassState | null;
  /** Inside a dispatch being split: the grid and how many workgroups (linear, x fastest) are done. */
  grid: Grid | null;
  done: number;
  /** Inside a copy being chunked: bytes done. */
  copied: number;
}

/** True when every buffer and query set the buffers use can be submitted now (else Dawn must refuse it). */
function submittable(buffers: readonly VirtualCommandBuffer[]): boolean {
  // Walks the records in place (resources() would build a list per submit, and this runs for every
  // one), with indexed loops: an unoptimized for-of (before V8 optimizes it, or after a full GC
  // dropped its code) makes an iterator result per element. A pass is asked through its facts (what
  // it uses, each once), not command by command.
  for (let b = 0; b < buffers.length; b++) {
    const commands = buffers[b].commands;
    for (let c = 0; c < commands.length; c++) {
      const command = commands[c];
      if (command.op !== 'computePass') {
        const args = command.args;
        for (let a = 0; a < args.length; a++) if (!usable(args[a])) return false;
        continue;
      }
      if (!usable(command.descriptor?.timestampWrites?.querySet)) return false;
      const used = passFacts(command).resources;
      for (let r = 0; r < used.length; r++) if (!usable(used[r])) return false;
    }
  }
  return true;
}

/** False for a destroyed or mapped buffer, or a destroyed query set: Dawn refuses a submit that uses one. */
function usable(resource: unknown): boolean {
  // mapState asks Dawn (a native call and a string each time): only for a buffer that can be mapped.
  if (resource instanceof VirtualBuffer) return !resource.isDestroyed && (!resource.mappable || resource.mapState === 'unmapped');
  if (resource instanceof VirtualQuerySet) return !resource.isDestroyed;
  return true;
}

/** The normalized arguments of copyBufferToBuffer's two overloads. */
function copyArgs(args: unknown[]): { src: unknown; srcOffset: number; dst: unknown; dstOffset: number; size: number | undefined } {
  if (typeof args[1] === 'number') {
    return { src: args[0], srcOffset: args[1], dst: args[2], dstOffset: args[3] as number, size: args[4] as number | undefined };
  }
  return { src: args[0], srcOffset: 0, dst: args[1], dstOffset: 0, size: args[2] as number | undefined };
}

/**
 * The bytes copyBufferToBuffer copies (either overload): its size, or what lies past its source
 * offset. A number, not copyArgs' object: every submit asks it of each copy, and the object's
 * shape went with each process (the submit path's code checking it was thrown away each time).
 */
function copyBytes(args: readonly unknown[]): number {
  const sized = typeof args[1] === 'number';
  const size = (sized ? args[4] : args[2]) as number | undefined;
  if (size !== undefined) return size;
  return ((args[0] as VirtualBuffer | undefined)?.size ?? 0) - (sized ? (args[1] as number) : 0);
}

/** Whether every verdict is true (a submit's finish() verdicts: each command buffer valid). */
function allTrue(verdicts: readonly boolean[]): boolean {
  for (let i = 0; i < verdicts.length; i++) if (!verdicts[i]) return false;
  return true;
}

export class Submission implements WorkItem, BracketedSubmit, HeldSubmit {
  readonly usesDevice = true;
  enqueuedAtNs = NaN;
  #cursor: Cursor | null = null;
  /** Where the walk through a split submit stands (made at its first piece: a whole submit needs none). */
  private get cursor(): Cursor {
    return (this.#cursor ??= { buffer: 0, command: 0, passCommand: 0, pass: null, grid: null, done: 0, copied: 0 });
  }
  /** True when the submit must reach Dawn as one (invalid buffers, resubmission, refused resources). */
  private whole: boolean;
  private wholeIssued = false;
  /** Set when the whole submit reached Dawn without error: nothing of it runs later (see finish). */
  private issuedClean = false;
  private counted = false;
  private valid: readonly boolean[] = NO_VERDICTS;
  /** The command buffers of the whole submit once issued clean (for uses), kept past finish. */
  private issuedBuffers: readonly VirtualCommandBuffer[] = NO_BUFFERS;

  /** The submit's dispatches, direct and indirect, for its owner's accounting. */
  private readonly dispatches: number;
  private readonly indirectDispatches: number;

  constructor(
    private readonly device: VirtualDevice,
    /** Dropped once the submit is done (see finish). */
    private buffers: readonly VirtualCommandBuffer[],
    private readonly firstSubmission: readonly boolean[],
    private readonly target: HeldTarget,
    private readonly targetSliceNs: number,
  ) {
    let dispatches = 0;
    let indirectDispatches = 0;
    for (let i = 0; i < buffers.length; i++) {
      dispatches += buffers[i].dispatches;
      indirectDispatches += buffers[i].indirectDispatches;
    }
    this.dispatches = dispatches;
    this.indirectDispatches = indirectDispatches;
    this.owner = device.proc;
    // Decided at the call, from the state the program's call saw: splitting must not change
    // which submits Dawn refuses (destroyed or mapped resources make Dawn refuse the whole submit).
    this.refusedAtCall = firstSubmission.includes(false) || !submittable(buffers);
    this.whole = !device.host.atomize || this.refusedAtCall || !this.worthSplitting();
    this.refusal = this.memoryRefusal();
  }

  /** Dawn refuses the whole submit (a command buffer submitted before, a destroyed or mapped resource). */
  private readonly refusedAtCall: boolean;

  #summarizedYet = false;
  #checkedRuns: readonly CheckedRun[] = NO_CHECKED_RUNS;
  #labels: string[] | null = null;
  /** The records of the checked kernels its pipelines run (empty: none may run long; WorkItem.checkedRuns). */
  get checkedRuns(): readonly CheckedRun[] {
    this.#summarized();
    return this.#checkedRuns;
  }

  /** Its pipelines' labels and checked kernels, found once (the dispatcher may ask before wholePiece does); returns whether any may be cut. */
  #summarized(): boolean {
    if (!this.#summarizedYet) {
      summarizePipelines(this.buffers);
      this.#labels = summaryLabels;
      this.#checkedRuns = summaryCheckedRuns ?? NO_CHECKED_RUNS;
      this.#summarizedYet = true;
      summaryLabels = null;
      summaryCheckedRuns = null;
    }
    return this.#checkedRuns.length > 0;
  }

  /**
   * What a checkpoint records of this submit, nothing of which has been issued: the command
   * buffers it will execute, or null when it changes nothing (Dawn or gpunix refuses it whole).
   */
  async checkpointRecord(): Promise<readonly VirtualCommandBuffer[] | null> {
    if (this.refusal || this.refusedAtCall) return null;
    const valid = await Promise.all(this.buffers.map((cb) => cb.valid));
    return valid.includes(false) ? null : this.buffers;
  }

  /** Set when the submit needs more memory at once than the device's whole budget. */
  private readonly refusal: GPUError | null;

  /**
   * The buffers one submit uses must all be resident while it runs. Only worth counting when the
   * device is oversubscribed (something is evicted, or residency is over the budget).
   */
  private memoryRefusal(): GPUError | null {
    const physical = this.device.physical;
    if (physical.evictedBytes === 0 && physical.usedBytes <= physical.budgetBytes) return null;
    const used = new Set<VirtualBuffer>();
    for (const cb of this.buffers) for (const r of cb.resources()) if (r instanceof VirtualBuffer) used.add(r);
    let bytes = 0;
    for (const buffer of used) bytes += buffer.size;
    if (bytes <= physical.budgetBytes) return null;
    return outOfMemoryError(
      `gpunix: this submit uses ${bytes} bytes of buffers at once, more than device ${physical.id}'s whole memory budget (${physical.budgetBytes} bytes); nothing of it ran`,
    );
  }

  /** The device's process (fixed: migration moves the device, not the process); read by the dispatcher at every turn. */
  readonly owner: Proc;

  /** Counts the submit in its owner's accounting (1), or takes it back when Dawn refused it (-1). */
  private count(sign: 1 | -1): void {
    const proc = this.owner;
    proc.submits += sign;
    proc.dispatches += sign * this.dispatches;
    proc.indirectDispatches += sign * this.indirectDispatches;
  }

  /**
   * Before the first piece: every path may need the record (split, re-encoded, or stale after an
   * eviction), so finish()'s verdict must be known; clean finishes know it at once.
   */
  prepare(): Promise<void> | null {
    let known = true;
    for (let i = 0; i < this.buffers.length; i++) known &&= this.buffers[i].knownValid;
    if (known) {
      this.valid = this.buffers.length === 1 ? ONE_VALID : this.buffers.map(() => true);
      return null;
    }
    return Promise.all(this.buffers.map((cb) => cb.valid)).then((valid) => {
      this.valid = valid;
      if (valid.includes(false)) this.whole = true;
    });
  }

  /**
   * Splitting costs a pass and a submit per piece: worth it only for a copy larger than one chunk,
   * or a dispatch of an atomizable pipeline with workgroups to split that is expected to take
   * longer than one slice (or whose cost is not known yet). Submits of many small dispatches go
   * whole, as fast as bare WebGPU.
   */
  private worthSplitting(): boolean {
    const buffers = this.buffers;
    for (let b = 0; b < buffers.length; b++) {
      const commands = buffers[b].commands;
      for (let c = 0; c < commands.length; c++) {
        const command = commands[c];
        if (command.op === 'copyBufferToBuffer') {
          if (copyBytes(command.args) > COPY_CHUNK_BYTES) return true;
        }
        if (command.op !== 'computePass' || command.descriptor?.timestampWrites) continue;
        // Per pipeline, its widest dispatch decides: a forecast grows with the workgroups.
        const { pipelines, widestDispatch } = passFacts(command);
        for (let p = 0; p < pipelines.length; p++) {
          const pipeline = pipelines[p];
          const workgroups = widestDispatch[p];
          if (workgroups < 2 || !pipeline.atomized) continue;
          if (this.device.host.atomSize !== null) return true;
          const forecast = pipeline.cost.forecast(workgroups);
          if (forecast === null || forecast > this.targetSliceNs || pipeline.cost.resampleDue()) return true;
        }
      }
    }
    return false;
  }

  nextPiece(budgetNs: number): WorkPiece | null {
    if (this.device.isLost) return this.finish();
    if (this.refusal) {
      this.device.reportRouted(this.target, this.refusal);
      return this.finish();
    }
    if (this.whole) return this.wholeIssued ? this.finish() : this.wholePiece();
    if (!this.counted) {
      // A split submit was checked valid before it started: it counts once, now.
      this.counted = true;
      this.count(1);
    }
    const piece = this.nextSplitPiece(budgetNs);
    return piece ?? this.finish();
  }

  cancel(): void {
    this.target.release();
  }

  /**
   * Whether the whole submit, issued clean, uses `resource` (WorkItem.uses: a map of it then
   * completes after the submit). False for a split submit: its last piece may not use it.
   */
  uses(resource: object): boolean {
    const buffers = this.issuedBuffers;
    for (let i = 0; i < buffers.length; i++) if (buffers[i].uses(resource)) return true;
    return false;
  }

  /** Issued, but held by the device for one real submit with the rest of its burst (holdSubmit): its scopes wait for the flush. */
  private held = false;
  /** finish() came while held: its scopes are released at the flush. */
  private finishedHeld = false;

  /** HeldSubmit: its batch reached Dawn; made again alone when Dawn refused the batch. */
  flushed(refused: boolean): void {
    this.held = false;
    if (refused) this.submitAlone();
    if (this.finishedHeld) {
      this.finishedHeld = false;
      this.released();
    }
  }

  /**
   * The submit alone, encoded afresh from its records (the batch Dawn refused consumed the
   * checked encodings): as the program's own submit would have gone, its errors to its own scopes.
   */
  private submitAlone(): void {
    const device = this.device;
    const physical = device.physical;
    const buffers = this.issuedBuffers;
    // Encoding and submit in one capture (rare: a closure is fine): whatever either raises is this submit's.
    const failed = physical.capture(() => physical.queue.submit(buffers.map((cb) => cb.encode(physical.device))));
    if (failed.clean) return;
    failed.errors.then((list) => list.length > 0 && this.count(-1));
    // Its errors are known now where Dawn raises them in the call (always, where submits are held).
    this.issuedClean = false;
    device.routeCaptured(this.target, failed);
  }

  /**
   * Done: the scopes are released, and the records let go of. The dispatcher keeps a finished item
   * until its run's fence completes (for its latency), and a burst of thousands of submits must
   * not keep every record alive that long: they would outlive the young generation and make the
   * collector's work heavy.
   */
  private finish(): null {
    this.buffers = NO_BUFFERS;
    if (this.held) this.finishedHeld = true;
    else this.released();
    return null;
  }

  /** finish()'s end once nothing of the submit is left to give Dawn: its scopes may settle. */
  private released(): void {
    this.target.release();
    if (shapeKeeper === null) {
      // The first submission issued whole without error is kept (see shapeKeeper), retired at the
      // next finish: by then the dispatcher is done with it (it reads the owner right after this
      // returns), and nothing else will call it (an erring submit's count waits on its errors).
      if (retiring !== null && retiring !== this) {
        retiring.retire();
        shapeKeeper = retiring;
        retiring = null;
      } else if (this.issuedClean) {
        retiring = this;
      }
    }
  }

  /** Drops what a finished submission still names (the shape keeper holds no device or process). */
  private retire(): void {
    const fields = this as unknown as { device: unknown; owner: unknown; target: HeldTarget; issuedBuffers: readonly VirtualCommandBuffer[] };
    fields.device = null;
    fields.owner = null;
    fields.target = RETIRED_TARGET;
    fields.issuedBuffers = NO_BUFFERS;
  }

  /** The submit as the program made it: the checked encodings (or fresh ones), in one real submit. */
  private wholePiece(): WorkPiece {
    this.wholeIssued = true;
    const mayCut = this.#summarized();
    const labels = this.#labels;
    if (this.buffers.length === 1 && labels === null && !mayCut) return PLAIN_SUBMIT_PIECE.arm(this);
    const args = this.buffers.length === 1 ? ONE_COMMAND_BUFFER : { commandBuffers: this.buffers.length };
    return new WholePiece(labels === null ? 'submit' : labels.join(', '), args, this.#checkedRuns).arm(this);
  }

  /**
   * Issues the whole submit (its piece's issue()). `watchdogLimitNs`, given when its pipelines run
   * checked loops and the owner is watched: between device timestamps where the device has them,
   * whose stamp it returns for the watchdog.
   */
  issueWhole(watchdogLimitNs: number | undefined): DeviceStamp | null {
    const device = this.device;
    const buffers = this.buffers;
    for (let i = 0; i < buffers.length; i++) {
      const again = buffers[i];
      if (this.firstSubmission[i] || again.checkedConsumed) continue;
      // Its checked encoding never reached Dawn (fresh encodings or pieces did), so Dawn would
      // run it again: refuse the whole submit as WebGPU does, with Dawn's words.
      device.reportRouted(
        this.target,
        validationError(`${again.description} cannot be submitted more than once.\n - While calling [Queue].Submit([${buffers.map((cb) => cb.description).join(', ')}])\n`),
      );
      return null;
    }
    const reencode = device.host.reencodeCommandBuffers && !this.firstSubmission.includes(false);
    const epoch = device.proc.backingEpoch;
    const physical = device.physical;
    const timer = watchdogLimitNs !== undefined ? physical.deviceTimer : null;
    // The common submit of one command buffer, unbracketed, lends Dawn a reused array (emptied after).
    const real = timer === null && buffers.length === 1 ? ONE_REAL : new Array<GPUCommandBuffer>(buffers.length);
    for (let i = 0; i < buffers.length; i++) {
      const cb = buffers[i];
      // A record is encoded afresh when asked to, or when a buffer it names has moved since finish().
      if (this.valid[i] && this.firstSubmission[i] && (reencode || cb.backingEpoch !== epoch)) {
        real[i] = cb.encode(device.physical.device);
        continue;
      }
      cb.checkedConsumed = true;
      real[i] = cb[REAL];
    }
    this.count(1);
    let stamp: DeviceStamp | null = null;
    let failed: Captured<unknown> | null;
    // Held only when the program called submit right after its last one (a loop of submits): the
    // first after a pause reaches Dawn at once, so work submitted before the program turns to
    // something else (CPU work of its own) runs meanwhile, as on bare Dawn.
    const owner = this.owner;
    const rapid = this.enqueuedAtNs - owner.lastSubmitCallNs < physical.holdWithinNs;
    owner.lastSubmitCallNs = this.enqueuedAtNs;
    if (rapid && timer === null && !this.refusedAtCall && allTrue(this.valid)) {
      // Valid and submittable at the call, and nothing the program does before the flush can
      // change that without the flush coming first (its maps, writes and destroys are queued
      // behind this submit): held for one real submit with the rest of its burst.
      this.held = true;
      this.issuedClean = true;
      this.issuedBuffers = buffers;
      physical.holdSubmit(real, this);
      if (real === ONE_REAL) ONE_REAL[0] = NO_COMMAND_BUFFER;
      return null;
    }
    // A bracketed submit's stamps time this submit alone: the held ones go to Dawn first.
    if (timer !== null) physical.flushHeldSubmits();
    if (timer === null) {
      // The common submit: no closure, no stamp.
      try {
        physical.callCapturing(submitTo, physical.queue, real);
      } finally {
        if (real === ONE_REAL) ONE_REAL[0] = NO_COMMAND_BUFFER;
      }
      failed = physical.lastFailed;
    } else {
      this.#bracketReal = real;
      stamp = timer.bracket(this, watchdogLimitNs!);
      this.#bracketReal = NO_REAL_BUFFERS;
      failed = this.#bracketFailed;
      this.#bracketFailed = null;
      if (failed !== null && this.#bracketOpened) failed = withoutOpeningStampIn(failed);
    }
    if (failed === null) {
      this.issuedClean = true;
      this.issuedBuffers = buffers;
      return stamp;
    }
    device.routeCaptured(this.target, failed);
    failed.errors.then((list) => list.length > 0 && this.count(-1));
    return stamp;
  }

  // The bracketed submit's command buffers while DeviceTimer.bracket runs, and what its submit
  // did (fields, not a closure per submit: see DeviceTimer's SlotStamp).
  #bracketReal: readonly GPUCommandBuffer[] = NO_REAL_BUFFERS;
  #bracketOpened = false;
  #bracketFailed: Captured<unknown> | null = null;

  /** BracketedSubmit: the whole submit's one queue.submit, `opening` first when not null (DeviceTimer.bracket). */
  submitBracketed(opening: GPUCommandBuffer | null): boolean {
    const physical = this.device.physical;
    const real = this.#bracketReal;
    this.#bracketOpened = opening !== null;
    physical.callCapturing(submitTo, physical.queue, opening === null ? real : [opening, ...real]);
    // Read here: the stamps' own submits are captured too, and overwrite lastFailed.
    this.#bracketFailed = physical.lastFailed;
    return this.#bracketFailed === null;
  }

  /** Submits one freshly encoded command buffer for a piece. */
  private submitPiece(encode: (encoder: GPUCommandEncoder) => void): void {
    const device = this.device;
    const captured = device.physical.capture(() => {
      const encoder = device.physical.device.createCommandEncoder();
      encode(encoder);
      device.physical.queue.submit([encoder.finish()]);
    });
    if (!captured.clean) device.routeCaptured(this.target, captured);
  }

  private nextSplitPiece(budgetNs: number): WorkPiece | null {
    const c = this.cursor;
    while (c.buffer < this.buffers.length) {
      const commands = this.buffers[c.buffer].commands;
      if (c.command >= commands.length) {
        c.buffer++;
        c.command = 0;
        continue;
      }
      const command = commands[c.command];
      if (command.op === 'computePass') {
        const piece = this.passPiece(command, budgetNs);
        if (piece) return piece;
        continue;
      }
      return this.copyPiece(commands);
    }
    return null;
  }

  /** A run of consecutive non-pass commands; a large copy or clear goes in chunks. */
  private copyPiece(commands: readonly RecordedCommand[]): WorkPiece {
    const c = this.cursor;
    const command = commands[c.command] as { op: string; args: unknown[] };
    if (command.op === 'copyBufferToBuffer') {
      const { src, srcOffset, dst, dstOffset, size } = copyArgs(command.args);
      const total = size ?? (src as VirtualBuffer).size - srcOffset;
      if (total > COPY_CHUNK_BYTES) {
        const from = c.copied;
        const bytes = Math.min(COPY_CHUNK_BYTES, total - from);
        c.copied += bytes;
        if (c.copied >= total) {
          c.copied = 0;
          c.command++;
        }
        return {
          name: 'copyBufferToBuffer',
          args: { bytes, offset: from },
          issue: () => this.submitPiece((e) => e.copyBufferToBuffer(unwrap(src) as GPUBuffer, srcOffset + from, unwrap(dst) as GPUBuffer, dstOffset + from, bytes)),
        };
      }
    }
    const run: Array<{ op: string; args: unknown[] }> = [];
    while (c.command < commands.length && commands[c.command].op !== 'computePass') {
      const next = commands[c.command] as { op: string; args: unknown[] };
      if (next.op === 'copyBufferToBuffer' && run.length > 0) {
        const { src, srcOffset, size } = copyArgs(next.args);
        if ((size ?? (src as VirtualBuffer).size - srcOffset) > COPY_CHUNK_BYTES) break;
      }
      run.push(next);
      c.command++;
    }
    return {
      name: run.map((r) => r.op).join('+'),
      issue: () =>
        this.submitPiece((encoder) => {
          for (const r of run) (encoder as unknown as Record<string, (...a: unknown[]) => void>)[r.op](...r.args.map(unwrap));
        }),
    };
  }

  /** The next piece of a compute pass: a whole pass, a whole dispatch, or an atom. */
  private passPiece(command: Extract<RecordedCommand, { op: 'computePass' }>, budgetNs: number): WorkPiece | null {
    const c = this.cursor;
    const commands = command.commands;
    if (command.descriptor?.timestampWrites) {
      // The program times the pass itself: it runs as one, so its timestamps mean what they meant.
      c.command++;
      return {
        name: 'computePass',
        args: { timestamped: true },
        issue: () =>
          this.submitPiece((encoder) => {
            const pass = encoder.beginComputePass(realPassDescriptor(command.descriptor));
            encodePassCommands(pass, commands);
            pass.end();
          }),
      };
    }
    c.pass ??= { pipeline: null, bindGroups: new Map(), immediates: null };
    const state = c.pass;
    while (c.passCommand < commands.length) {
      const pc = commands[c.passCommand];
      switch (pc.op) {
        case 'setPipeline':
          // Immediates stay set across setPipeline (as in Dawn): a later pipeline reads them too.
          state.pipeline = pc.args[0];
          break;
        case 'setBindGroup':
          state.bindGroups.set(pc.args[0] as number, pc.args);
          break;
        case 'setImmediates':
          state.immediates = withImmediates(state.immediates, pc.args[0] as number, pc.args[1]);
          break;
        case 'dispatchWorkgroups': {
          const grid: Grid = [pc.args[0] as number, (pc.args[1] as number | undefined) ?? 1, (pc.args[2] as number | undefined) ?? 1];
          const piece = this.dispatchPiece(state, pc, grid, budgetNs);
          if (piece) return piece;
          break;
        }
        case 'dispatchWorkgroupsIndirect':
          c.passCommand++;
          return this.wholeDispatch(state, pc, null);
        default:
          // Debug groups and markers: they cannot span the passes a split makes, and change no result.
          break;
      }
      c.passCommand++;
    }
    c.pass = null;
    c.passCommand = 0;
    c.command++;
    return null;
  }

  /** The next piece of one dispatch; null once it is all issued (the caller moves on). */
  private dispatchPiece(state: PassState, pc: PassCommand, grid: Grid, budgetNs: number): WorkPiece | null {
    const c = this.cursor;
    const total = grid[0] * grid[1] * grid[2];
    if (total === 0) return null;
    const pipeline = state.pipeline instanceof VirtualComputePipeline ? state.pipeline : null;
    const atomized = pipeline?.atomized ?? null;
    if (!pipeline || !atomized) {
      if (c.grid) return this.endDispatch();
      c.grid = grid;
      return this.wholeDispatch(state, pc, pipeline);
    }
    if (!c.grid) {
      c.grid = grid;
      c.done = 0;
    }
    if (c.done >= total) return this.endDispatch();
    const wanted = this.device.host.atomSize ?? pipeline.cost.workgroupsFor(budgetNs, COST_PROBE_WORKGROUPS);
    const [offset, size] = nextBox(grid, c.done, wanted);
    c.done += size[0] * size[1] * size[2];
    if (size[0] * size[1] * size[2] === total) {
      // The whole grid fits in one atom: run the program's own pipeline, nothing to place.
      return this.wholeDispatch(state, pc, pipeline, true);
    }
    const record = atomized.uniformRecord;
    const flag = atomized.spentFlag;
    const params = atomized.immediateSize > 0 || record ? atomParams(offset, grid) : null;
    // A uniform record, and the budget-spent flag, take groups the shader does not read: the
    // program's groups there (if any) are left out (an 'auto' twin has no layout of the program's there).
    const bindGroups = [...state.bindGroups.values()]
      .filter((args) => args[0] !== record?.group && args[0] !== flag?.index)
      .map((args) => [args[0], atomized.bindGroup(args[0] as number, args[1]), ...args.slice(2)]);
    // The program's immediates, as it set them, then the record: where the twin composes the two
    // (recordOffset > 0) the program's bytes are zeroed first, so that every byte of the twin's
    // immediates is set (Dawn requires it) whatever range the program's own layout needed.
    const immediates = state.immediates?.slice() ?? null;
    const zeros = params && !record && atomized.recordOffset > 0 ? new Uint8Array(atomized.recordOffset) : null;
    const workgroups = size[0] * size[1] * size[2];
    const timer = this.device.physical.deviceTimer;
    // Timestamps teach the cost model; once it has learned, a sample of atoms keeps it current,
    // and the rest skip the readback (a resolve, a copy and a map each: real cost per atom). An
    // atom with checked loops is always stamped, for the watchdog, which maps the stamp only
    // when the host's clock puts the atom over its owner's limit.
    const sample = timer !== null && pipeline.cost.wantsSample();
    const mayCut = pipeline.mayCut;
    const slot = timer && (sample || mayCut) ? timer.take() : null;
    const piece: WorkPiece = {
      name: pipeline.label || 'dispatch',
      args: { offset, size, grid },
      atom: true,
      mayCut,
      checkedRuns: mayCut ? [pipeline.checkedRun] : undefined,
      // With a timer the model learns from timestamps alone, never from the run's wall clock.
      cost: { model: pipeline.cost, workgroups, timed: timer !== null },
      issue: () => {
        // The uniform record is written on the queue right before this atom's submit: queue order
        // keeps each atom's record from reaching the atoms before or after it.
        if (record) this.device.physical.queue.writeBuffer(record.buffer, 0, params!);
        this.submitPiece((encoder) => {
          const pass = encoder.beginComputePass(slot ? { timestampWrites: timer!.timestampWrites(slot) } : undefined);
          pass.setPipeline(atomized.real);
          for (const args of bindGroups) (pass.setBindGroup as (...a: unknown[]) => void)(...args.map(unwrap));
          if (record) pass.setBindGroup(record.group, record.bindGroup);
          if (flag) pass.setBindGroup(flag.index, flag.bindGroup);
          if (zeros) pass.setImmediates(0, zeros);
          if (immediates) pass.setImmediates(0, immediates as Uint8Array<ArrayBuffer>);
          if (params && !record) pass.setImmediates(atomized.recordOffset, params as Uint32Array<ArrayBuffer>);
          pass.dispatchWorkgroups(size[0], size[1], size[2]);
          pass.end();
          // A sample is read at once; a stamp only for the watchdog is copied if it is ever read.
          if (sample && slot) timer!.encodeReadback(encoder, slot);
        });
        if (slot) keepStamp(piece, timer!, slot, sample, pipeline.cost, workgroups);
      },
    };
    return piece;
  }

  private endDispatch(): null {
    this.cursor.grid = null;
    this.cursor.done = 0;
    return null;
  }

  /** One dispatch as the program wrote it, in a pass of its own with the pass state re-established. */
  private wholeDispatch(state: PassState, pc: PassCommand, pipeline: VirtualComputePipeline | null, fits = false): WorkPiece {
    const bindGroups = [...state.bindGroups.values()];
    const immediates = state.immediates?.slice() ?? null;
    const setPipeline = state.pipeline;
    const flag = flagOf(setPipeline);
    const grid = pc.op === 'dispatchWorkgroups' ? pc.args.map((n) => n ?? 1) : null;
    const mayCut = pipeline?.mayCut ?? false;
    // A grid that fits in one atom teaches the cost model as an atom does: from the device's
    // timestamps where it has them (a sample of such pieces, as of atoms), else from the run's time.
    const model = fits && pipeline && grid ? pipeline.cost : null;
    const workgroups = grid ? (grid as number[]).reduce((a, b) => a * (b ?? 1), 1) : 0;
    const deviceTimer = this.device.physical.deviceTimer;
    const sample = model !== null && deviceTimer !== null && model.wantsSample();
    const piece: WorkPiece = {
      name: pipeline?.label || (pc.op === 'dispatchWorkgroups' ? 'dispatch' : 'dispatchIndirect'),
      args: grid ? { grid } : { indirect: true },
      whole: !fits,
      mayCut,
      checkedRuns: mayCut ? [pipeline!.checkedRun] : undefined,
      cost: model ? { model, workgroups, timed: deviceTimer !== null } : undefined,
      issue: () => {
        // Stamped for a sample, and for the watchdog where loops are checked (read only if the host's clock says over).
        const timer = mayCut || sample ? deviceTimer : null;
        const slot = timer?.take() ?? null;
        this.submitPiece((encoder) => {
          const pass = encoder.beginComputePass(slot ? { timestampWrites: timer!.timestampWrites(slot) } : undefined) as unknown as Record<string, (...a: unknown[]) => void>;
          if (setPipeline) pass.setPipeline(unwrap(setPipeline));
          for (const args of bindGroups) pass.setBindGroup(...args.map(unwrap));
          // After the program's groups: its group at the flag's index (if any) is not the shader's.
          if (flag) pass.setBindGroup(flag.index, flag.bindGroup);
          if (immediates) pass.setImmediates(0, immediates);
          pass[pc.op](...pc.args.map(unwrap));
          pass.end();
          if (sample && slot) timer!.encodeReadback(encoder, slot);
        });
        if (slot) keepStamp(piece, timer!, slot, sample, model, workgroups);
      },
    };
    return piece;
  }
}

const NO_VERDICTS: readonly boolean[] = Object.freeze([]);

/**
 * One finished Submission, kept for the life of the process with its references dropped: V8 holds a class's object shape only while an instance
 * of it lives, and a full collection that finds none frees the shape and throws away the optimized
 * code of every function that checks it, so a program's next burst of submits starts in the
 * interpreter and recompiles (docs/benchmarks.md, "Where the wall time goes off the CPU").
 */
let shapeKeeper: Submission | null = null;
let retiring: Submission | null = null;
/** A retired submission's error target: nothing to release. */
const RETIRED_TARGET: HeldTarget = Object.freeze({ scopes: Object.freeze([]), release: () => {} });
const NO_BUFFERS: readonly VirtualCommandBuffer[] = Object.freeze([]);
/** The verdicts of a submit of one command buffer finished clean (shared: only read). */
const ONE_VALID: readonly boolean[] = Object.freeze([true]);

/** The real queue.submit, for captureWith (no closure per call). */
const submitTo = (queue: GPUQueue, buffers: readonly GPUCommandBuffer[]): void => queue.submit(buffers as GPUCommandBuffer[]);

/**
 * issueWhole's array for a submit of one command buffer: Dawn reads it during the call only, and
 * its slot is cleared after, so it holds no command buffer alive.
 */
const NO_COMMAND_BUFFER = undefined as unknown as GPUCommandBuffer;
const ONE_REAL: GPUCommandBuffer[] = [NO_COMMAND_BUFFER];
/** No command buffers (a Submission's between bracketed submits). */
const NO_REAL_BUFFERS: readonly GPUCommandBuffer[] = Object.freeze([]);

/** A refused bracketed submit's errors as the program's own submit would have raised them (DeviceTimer.bracket). */
function withoutOpeningStampIn(failed: Captured<unknown>): Captured<unknown> {
  const errors = failed.errors.then((list) =>
    list.map((error) => {
      const message = withoutOpeningStamp(error.message);
      if (message === error.message) return error;
      if (error instanceof GPUOutOfMemoryErrorClass) return new GPUOutOfMemoryErrorClass(message);
      if (error instanceof GPUInternalErrorClass) return new GPUInternalErrorClass(message);
      return new GPUValidationErrorClass(message);
    }),
  );
  return { ...failed, errors };
}

/** The trace arguments of a whole submit of one command buffer (shared: the trace only reads them). */
const ONE_COMMAND_BUFFER: Readonly<Record<string, unknown>> = Object.freeze({ commandBuffers: 1 });

/** A submit that runs no checked kernel (shared: only read). */
const NO_CHECKED_RUNS: readonly CheckedRun[] = Object.freeze([]);

/**
 * A whole submit's one piece. It lets go of its submission once issued: the dispatcher keeps a
 * run's pieces until the run's fence completes, and a burst of thousands of submits must not keep
 * every record (and everything it names) alive that long.
 */
class WholePiece implements WorkPiece {
  #submission: Submission | null = null;
  constructor(
    /** The submit's pipelines' labels, or 'submit' when none has one (for the trace and the watchdog's message). */
    readonly name: string,
    readonly args: Readonly<Record<string, unknown>>,
    /** The records (CheckedRuns) of its pipelines that run loops the watchdog checks; they learn how long the piece was seen to run. */
    readonly checkedRuns: readonly CheckedRun[],
  ) {
    this.mayCut = checkedRuns.length > 0;
  }
  /** Whether any of its pipelines runs checked loops (the piece may be cut: the dispatcher times it). */
  readonly mayCut: boolean;
  /** Makes this the piece of `submission` until issued. */
  arm(submission: Submission): this {
    this.#submission = submission;
    return this;
  }
  stamp: DeviceStamp | null = null;
  issue(watchdogLimitNs?: number): void {
    const submission = this.#submission;
    this.#submission = null;
    this.stamp = submission?.issueWhole(this.mayCut ? watchdogLimitNs : undefined) ?? null;
  }
}

/**
 * The piece of every whole submit of one command buffer whose pipelines have no label and run no
 * checked loops (the common one), shared: the dispatcher issues a piece as soon as it has it, so
 * one armed at a time suffices, and a run of thousands of submits then keeps one object, not one
 * per submit, until its fence. It is also what keeps WholePiece's shape alive (see shapeKeeper).
 */
const PLAIN_SUBMIT_PIECE = new WholePiece('submit', ONE_COMMAND_BUFFER, NO_CHECKED_RUNS);

/**
 * After a stamped piece's submit (an atom, or a dispatch whose grid fits one): a sample's reading
 * teaches `model` the device's own time, without submit and fence overheads, and stands as the
 * watchdog's stamp where the piece's loops are checked; a stamp taken only for the watchdog is
 * kept unread (copied only if it is ever read).
 */
function keepStamp(piece: WorkPiece, timer: DeviceTimer, slot: TimerSlot, sample: boolean, model: CostModel | null, workgroups: number): void {
  if (!sample) {
    piece.stamp = timer.stamp(slot);
    return;
  }
  const reading = timer.read(slot);
  void reading.then((ns) => ns !== null && model!.learn(ns, workgroups));
  if (piece.mayCut) piece.stamp = { read: () => reading, drop: () => {} };
}

// What summarizePipelines found (module scratch: no summary object per submit).
let summaryLabels: string[] | null = null;
let summaryCheckedRuns: CheckedRun[] | null = null;

/** A submit's pipelines' labels and whether any may be cut, from its passes' facts (into the scratch above). */
function summarizePipelines(buffers: readonly VirtualCommandBuffer[]): void {
  // An array, not a Set: a submit sets few pipelines.
  let labels: string[] | null = null;
  let checkedRuns: CheckedRun[] | null = null;
  let last: VirtualComputePipeline | null = null;
  for (let b = 0; b < buffers.length; b++) {
    const commands = buffers[b].commands;
    for (let c = 0; c < commands.length; c++) {
      const command = commands[c];
      if (command.op !== 'computePass') continue;
      const pipelines = passFacts(command).pipelines;
      for (let p = 0; p < pipelines.length; p++) {
        const pipeline = pipelines[p];
        if (pipeline === last) continue;
        last = pipeline;
        const label = pipeline.label;
        if (label && !(labels ??= []).includes(label)) labels.push(label);
        if (pipeline.mayCut) {
          const run = pipeline.checkedRun;
          if (!(checkedRuns ??= []).includes(run)) checkedRuns.push(run);
        }
      }
    }
  }
  summaryLabels = labels;
  summaryCheckedRuns = checkedRuns;
}

/**
 * The immediates image after setImmediates(offset, data): a pass's calls merged, later bytes over
 * earlier ones (the record was checked valid, so every range lies within maxImmediateSize).
 */
function withImmediates(image: Uint8Array | null, offset: number, data: unknown): Uint8Array {
  const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data as ArrayBuffer);
  const end = offset + bytes.byteLength;
  let next = image ?? new Uint8Array(end);
  if (next.byteLength < end) {
    next = new Uint8Array(end);
    next.set(image!);
  }
  next.set(bytes, offset);
  return next;
}

/**
 * The next box of `grid` starting at linear workgroup `done` (x fastest), with at most `wanted`
 * workgroups: whole planes when the start is at a plane, whole rows at a row, else part of a row.
 */
export function nextBox(grid: Grid, done: number, wanted: number): [Grid, Grid] {
  const [gx, gy, gz] = grid;
  const x = done % gx;
  const y = Math.floor(done / gx) % gy;
  const z = Math.floor(done / (gx * gy));
  const n = Math.max(1, wanted);
  if (x === 0 && y === 0 && n >= gx * gy) return [[0, 0, z], [gx, gy, Math.min(Math.floor(n / (gx * gy)), gz - z)]];
  if (x === 0 && n >= gx) return [[0, y, z], [gx, Math.min(Math.floor(n / gx), gy - y), 1]];
  return [[x, y, z], [Math.min(n, gx - x), 1, 1]];
}
