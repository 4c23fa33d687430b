// Times work on the device itself with pass timestamps: an atom, so the cost model learns a
// pipeline's time per workgroup without the fixed costs (submit, fence, event polling) that
// wall-clock time includes; and a piece the watchdog checks, so its verdict rests on the device's
// time rather than on when a busy kernel thread got round to seeing the completion. One per device
// that has 'timestamp-query'; a small pool of slots, each a pair of queries and its own 16-byte
// readback buffer, so reading one slot never waits for another.

import { globals } from 'webgpu';
import type { PhysicalDevice } from './physicalDevice.js';

const { GPUBufferUsage: BufferUsage, GPUMapMode: MapMode } = globals as unknown as {
  GPUBufferUsage: typeof GPUBufferUsage;
  GPUMapMode: typeof GPUMapMode;
};

/**
 * Slots: atoms being sampled hold one until read; pieces the watchdog checks hold one until their
 * completion is seen (a burst of small checked submits can have many out; past the pool they go
 * untimed, and the watchdog uses the host's clock for them, as without timestamps). A slot whose
 * closing stamp a later bracket shares as its opening one is held until that bracket lets go too.
 */
const SLOTS = 32;
/**
 * resolveQuerySet writes at 256-byte aligned offsets: each slot has two such places in the resolve
 * buffer, for a bracket whose two stamps are not a pair of its own (see bracket()).
 */
const RESOLVE_STRIDE = 256;
const SLOT_RESOLVE_BYTES = 2 * RESOLVE_STRIDE;

/**
 * A bracket shares the closing stamp of the bracket before it as its opening stamp when that one
 * was submitted at most this long ago (ns), and the watchdog's limit is at least
 * SHARE_LIMIT_FRACTION times that. Sharing makes the interval cover whatever ran or idled on the
 * queue between the two: a longer time, never a shorter one, so the verdict stays sound; the
 * bound keeps the overestimate small against any limit.
 */
const SHARE_WINDOW_NS = 1e6;
const SHARE_LIMIT_FRACTION = 8;

/** The opening stamp's command buffer, as Dawn names it in the message of a submit it refused. */
const OPENING_STAMP_LABEL = 'gpunix watchdog stamp';
const OPENING_STAMP_NAME = `[CommandBuffer "${OPENING_STAMP_LABEL}" from CommandEncoder "${OPENING_STAMP_LABEL}"], `;

/** A refused bracketed submit's message as the program's own submit would have had it: without the opening stamp. */
export function withoutOpeningStamp(message: string): string {
  return message.includes(OPENING_STAMP_NAME) ? message.split(OPENING_STAMP_NAME).join('') : message;
}

export interface TimerSlot {
  readonly index: number;
  readonly readback: GPUBuffer;
  /** Holders: the piece it times, and a later bracket that opens from its closing stamp. */
  refs: number;
}
type Slot = TimerSlot;

/**
 * The device time of one piece, recorded in a slot: read it (once) or drop it unread, which
 * returns the slot to the pool. Reading costs a resolve, a copy and a map, so the watchdog reads
 * only when the host's clock says the piece ran over its limit.
 */
export interface DeviceStamp {
  /** The piece's device time (ns) once it has run; null when unreadable (refused submit, a reset clock). */
  read(): Promise<number | null>;
  /** Gives the slot back without reading it (idempotent; after read() it does nothing). */
  drop(): void;
  /**
   * For a bracket (see DeviceTimer.bracket): submits the closing stamp. Called right after whoever
   * times the piece on the host has asked for its completion signal, so that the signal is the
   * piece's own, not the stamp's (later) one: the dispatcher measures a piece from the end of the
   * work ahead of it, and a signal after the stamp would let the piece's own run fence, settled
   * first, pass for work ahead.
   */
  close?(): void;
}

/**
 * Encodes an empty timed pass that writes timestamp `query` of `querySet` at its end: it brackets
 * work whose passes are not the kernel's to time (a program's own command buffers). Dawn writes a
 * pass's end timestamp after the work before it has finished (Vulkan: at the bottom of the pipe),
 * so the interval covers the bracketed work and never less.
 */
function encodeStampPass(encoder: GPUCommandEncoder, querySet: GPUQuerySet, query: number): void {
  encoder.beginComputePass({ timestampWrites: { querySet, endOfPassWriteIndex: query } }).end();
}

/** A device's queue and the timer's query set: where a stamp is submitted. */
interface StampSite {
  readonly device: GPUDevice;
  readonly queue: GPUQueue;
  readonly querySet: GPUQuerySet;
}

/** Submits an empty pass that writes timestamp `query` (DeviceTimer.submitStamp captures it). */
function submitStampPass(site: StampSite, query: number): void {
  const encoder = site.device.createCommandEncoder();
  encodeStampPass(encoder, site.querySet, query);
  site.queue.submit([encoder.finish()]);
}

/** The submit a bracket wraps (DeviceTimer.bracket). */
export interface BracketedSubmit {
  /** Makes the one queue.submit, with `opening` first when not null; whether Dawn took it. */
  submitBracketed(opening: GPUCommandBuffer | null): boolean;
}

/** Where a stamp's two timestamps are: query indices, and the slots that hold them. */
interface StampQueries {
  readonly slot: Slot;
  readonly begin: number;
  readonly end: number;
  /** The slot whose closing stamp is the begin query, when it is not `slot` (a shared opening). */
  readonly openedFrom: Slot | null;
}

export class DeviceTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;
  private readonly free: Slot[] = [];
  /** Timestamps written to bracket whole submits, and the brackets that opened from the previous one's closing stamp. */
  readonly brackets = { stamps: 0, sharedOpenings: 0 };
  /** The last bracket's closing stamp, while a next bracket may share it: its slot holds a ref for it. */
  private lastClosing: { slot: Slot; atNs: number } | null = null;

  /** What submitting a stamp takes (submitStampPass). */
  private readonly stampSite: StampSite;

  private constructor(private readonly physical: PhysicalDevice) {
    const device = physical.device;
    this.querySet = device.createQuerySet({ type: 'timestamp', count: SLOTS * 2, label: 'gpunix-device-timer' });
    this.stampSite = { device, queue: physical.queue, querySet: this.querySet };
    this.resolve = device.createBuffer({ size: SLOTS * SLOT_RESOLVE_BYTES, usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC });
    for (let index = 0; index < SLOTS; index++) {
      this.free.push({ index, readback: device.createBuffer({ size: 16, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST }), refs: 0 });
    }
  }

  /** A timer for `physical`, or null where the device has no timestamps (wall clock is used). */
  static for(physical: PhysicalDevice): DeviceTimer | null {
    if (!physical.adapter.features.includes('timestamp-query')) return null;
    const made = physical.capture(() => new DeviceTimer(physical));
    return made.clean ? made.value : null;
  }

  /** A free slot, held once, or null when all are in use (that piece goes untimed). */
  take(): Slot | null {
    const slot = this.free.pop() ?? null;
    if (slot) slot.refs = 1;
    return slot;
  }

  /** Lets go of one hold on `slot`; the last one returns it to the pool. */
  private release(slot: Slot): void {
    if (--slot.refs === 0) this.free.push(slot);
  }

  /** The pass descriptor part that times the atom in `slot`. */
  timestampWrites(slot: Slot): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: slot.index * 2, endOfPassWriteIndex: slot.index * 2 + 1 };
  }

  /**
   * Runs `submit` (one queue.submit of command buffers whose passes are not the kernel's to time),
   * giving it the opening stamp's command buffer to put first in that same submit (null: none to
   * add); `submit` says whether Dawn took the submit. The closing stamp follows at the
   * DeviceStamp's close(). The opening stamp is the previous bracket's closing one when that was
   * submitted within the share window (SHARE_WINDOW_NS, and at most 1/SHARE_LIMIT_FRACTION of
   * `limitNs`, the owner's limit): a loop of small checked submits then pays one timestamp each,
   * not two (on lavapipe each costs tens of microseconds of device time). Null when no slot was
   * free (`submit` runs untimed).
   *
   * Why the opening stamp shares the piece's submit: in a submit of its own it would complete at
   * once, and the poll that sees it complete while the piece (a long kernel) runs frees what was let
   * go of before it; on lavapipe freeing a used pipeline takes the lock the running kernel holds,
   * so that poll, on the kernel's one thread, waited for the whole piece (docs/daemon.md). A
   * refused submit then names the stamp's command buffer: withoutOpeningStamp() takes it out of
   * the message the program reads.
   */
  bracket(submit: BracketedSubmit, limitNs: number): DeviceStamp | null {
    const slot = this.take();
    if (!slot) {
      submit.submitBracketed(null);
      return null;
    }
    let openedFrom: Slot | null = null;
    let written: boolean;
    const last = this.lastClosing;
    if (last !== null && performance.now() * 1e6 - last.atNs <= Math.min(SHARE_WINDOW_NS, limitNs / SHARE_LIMIT_FRACTION)) {
      openedFrom = last.slot;
      openedFrom.refs++;
      written = true;
      this.brackets.sharedOpenings++;
      submit.submitBracketed(null);
    } else {
      const opening = this.openingStamp(slot.index * 2);
      written = submit.submitBracketed(opening) && opening !== null;
    }
    const queries: StampQueries = { slot, begin: openedFrom ? openedFrom.index * 2 + 1 : slot.index * 2, end: slot.index * 2 + 1, openedFrom };
    return new SlotStamp(this, queries, written, true);
  }

  /** A bracket's close() (DeviceStamp.close): submits its closing stamp, which a next bracket may share as its opening. */
  closeBracket(stamp: SlotStamp): void {
    const slot = stamp.queries.slot;
    stamp.written &&= this.submitStamp(stamp.queries.end);
    const previous = this.lastClosing;
    this.lastClosing = null;
    if (previous) this.release(previous.slot);
    if (!stamp.written) return;
    slot.refs++;
    this.lastClosing = { slot, atNs: performance.now() * 1e6 };
  }

  /** An empty pass that writes timestamp `query`, finished, for a piece's submit to carry first; null if Dawn refused it. */
  private openingStamp(query: number): GPUCommandBuffer | null {
    this.brackets.stamps++;
    const made = this.physical.capture(() => {
      const encoder = this.physical.device.createCommandEncoder({ label: OPENING_STAMP_LABEL });
      encodeStampPass(encoder, this.querySet, query);
      return encoder.finish({ label: OPENING_STAMP_LABEL });
    });
    return made.clean ? made.value : null;
  }

  /** Submits an empty pass that writes timestamp `query`; false if Dawn refused it. */
  private submitStamp(query: number): boolean {
    this.brackets.stamps++;
    // The kernel's own calls: captured, so that an error (none is expected) reaches no process.
    // A module function, not a closure per stamp (see SlotStamp).
    return this.physical.captureWith(submitStampPass, this.stampSite, query).clean;
  }

  /** Encodes, after the atom's pass, the copy of its two timestamps to the slot's readback buffer. */
  encodeReadback(encoder: GPUCommandEncoder, slot: Slot): void {
    const at = slot.index * SLOT_RESOLVE_BYTES;
    encoder.resolveQuerySet(this.querySet, slot.index * 2, 2, this.resolve, at);
    encoder.copyBufferToBuffer(this.resolve, at, slot.readback, 0, 16);
  }

  /** Resolves with the atom's device time (ns) once it has run, and frees the slot; null if unreadable. */
  read(slot: Slot): Promise<number | null> {
    return slot.readback.mapAsync(MapMode.READ).then(
      () => {
        const [begin, end] = new BigUint64Array(slot.readback.getMappedRange());
        slot.readback.unmap();
        this.release(slot);
        // Timestamps may reset or go backwards (spec): such a sample teaches nothing.
        return end > begin ? Number(end - begin) : null;
      },
      () => {
        this.release(slot);
        return null;
      },
    );
  }

  /**
   * `slot` (its pair of timestamps written by a pass of the piece, not yet copied anywhere) as a
   * DeviceStamp: the copy is made only when it is read, which the watchdog seldom does.
   */
  stamp(slot: Slot): DeviceStamp {
    return new SlotStamp(this, { slot, begin: slot.index * 2, end: slot.index * 2 + 1, openedFrom: null }, true, false);
  }

  /**
   * SlotStamp.read: submits the resolve of its two timestamps (they stay in the query set while
   * the slots are held) and maps the slot's readback; null at once when its stamps never reached
   * the device (the queries then hold an earlier piece's times) or the resolve was refused.
   */
  readStamp(stamp: SlotStamp): Promise<number | null> {
    const queries = stamp.queries;
    if (!stamp.written || !this.submitReadback(queries)) {
      this.letGo(stamp);
      return Promise.resolve(null);
    }
    // The resolve is on the queue: a later stamp in the opening slot cannot reach it.
    if (queries.openedFrom) this.release(queries.openedFrom);
    stamp.done = true;
    return this.read(queries.slot);
  }

  /** A stamp is done with unread: its slots go back to the pool. */
  letGo(stamp: SlotStamp): void {
    stamp.done = true;
    const queries = stamp.queries;
    if (queries.openedFrom) this.release(queries.openedFrom);
    this.release(queries.slot);
  }

  /** Submits the resolve of `queries` into its slot's readback buffer (begin, then end); false if refused. */
  private submitReadback(queries: StampQueries): boolean {
    const { device, queue } = this.physical;
    const at = queries.slot.index * SLOT_RESOLVE_BYTES;
    const { readback } = queries.slot;
    return this.physical.capture(() => {
      const encoder = device.createCommandEncoder();
      if (queries.openedFrom === null) {
        // The slot's own pair, as an atom's sample is copied.
        this.encodeReadback(encoder, queries.slot);
      } else {
        encoder.resolveQuerySet(this.querySet, queries.begin, 1, this.resolve, at);
        encoder.resolveQuerySet(this.querySet, queries.end, 1, this.resolve, at + RESOLVE_STRIDE);
        encoder.copyBufferToBuffer(this.resolve, at, readback, 0, 8);
        encoder.copyBufferToBuffer(this.resolve, at + RESOLVE_STRIDE, readback, 8, 8);
      }
      queue.submit([encoder.finish()]);
    }).clean;
  }
}

/**
 * A DeviceStamp of timestamps in the timer's slots, read at most once or dropped (the slots go
 * back to the pool). A class, not an object of closures: one is made per checked submit, and V8
 * keeps a closure's optimized code, or an object literal's shape, only while one of its kind
 * lives, which none did between two processes (a daemon between jobs; each bench/overhead
 * sample), so every new process ran this path in the interpreter again. KEPT_STAMP keeps the shape.
 */
class SlotStamp implements DeviceStamp {
  #reading: Promise<number | null> | null = null;
  /** Its slots went back (read or dropped). */
  done = false;
  /** A bracket not closed yet (close() submits its closing stamp); false for an atom's stamp. */
  #open: boolean;

  constructor(
    private readonly timer: DeviceTimer | null,
    readonly queries: StampQueries,
    /** Whether its stamps reached the device (a refused opening or closing stamp: it reads null). */
    public written: boolean,
    bracketed: boolean,
  ) {
    this.#open = bracketed;
  }

  read(): Promise<number | null> {
    if (this.#reading) return this.#reading;
    if (this.done) return Promise.resolve(null);
    return (this.#reading = this.timer!.readStamp(this));
  }

  drop(): void {
    if (this.#reading || this.done) return;
    this.timer!.letGo(this);
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.timer!.closeBracket(this);
  }
}

/** Keeps SlotStamp's shape alive between processes (see the class); never read or closed. */
export const KEPT_STAMP: DeviceStamp = new SlotStamp(null, { slot: { index: 0, readback: null as unknown as GPUBuffer, refs: 0 }, begin: 0, end: 1, openedFrom: null }, false, false);
