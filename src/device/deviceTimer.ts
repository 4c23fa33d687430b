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
 * untimed, and the watchdog uses the host's clock for them, as without timestamps).
 */
const SLOTS = 32;
/** resolveQuerySet writes at 256-byte aligned offsets. */
const RESOLVE_STRIDE = 256;

type Slot = TimerSlot;

export interface TimerSlot {
  readonly index: number;
  readonly readback: GPUBuffer;
}

/**
 * The device time of one piece, recorded in a slot: read it (once) or drop it unread, which
 * returns the slot to the pool. Reading costs a map, so the watchdog reads only when the host's
 * clock says the piece ran over its limit.
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

export class DeviceTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;
  private readonly free: Slot[] = [];

  private constructor(private readonly physical: PhysicalDevice) {
    const device = physical.device;
    this.querySet = device.createQuerySet({ type: 'timestamp', count: SLOTS * 2, label: 'gpunix-device-timer' });
    this.resolve = device.createBuffer({ size: SLOTS * RESOLVE_STRIDE, usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC });
    for (let index = 0; index < SLOTS; index++) {
      this.free.push({ index, readback: device.createBuffer({ size: 16, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST }) });
    }
  }

  /** A timer for `physical`, or null where the device has no timestamps (wall clock is used). */
  static for(physical: PhysicalDevice): DeviceTimer | null {
    if (!physical.adapter.features.includes('timestamp-query')) return null;
    const made = physical.capture(() => new DeviceTimer(physical));
    return made.clean ? made.value : null;
  }

  /** A free slot, or null when all are in use (that piece goes untimed). */
  take(): Slot | null {
    return this.free.pop() ?? null;
  }

  /** The pass descriptor part that times the atom in `slot`. */
  timestampWrites(slot: Slot): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: slot.index * 2, endOfPassWriteIndex: slot.index * 2 + 1 };
  }

  /**
   * Encodes an empty timed pass that stamps `slot`'s start (`end` false) or end (`end` true): it
   * brackets work whose passes are not the kernel's to time (a program's own command buffers).
   * Dawn writes a pass's end timestamp after the work before it has finished (Vulkan: at the
   * bottom of the pipe), so the interval covers the bracketed work and never less.
   */
  private encodeStamp(encoder: GPUCommandEncoder, slot: Slot, end: boolean): void {
    encoder.beginComputePass({ timestampWrites: { querySet: this.querySet, endOfPassWriteIndex: slot.index * 2 + (end ? 1 : 0) } }).end();
  }

  /**
   * Runs `submit` (one queue.submit of command buffers whose passes are not the kernel's to time)
   * after a stamp of its own submit (in the same submit, a refused one would list it in the error
   * the program reads); the closing stamp follows at the DeviceStamp's close(). Null when no slot
   * was free (`submit` then runs untimed).
   */
  bracket(submit: () => void): DeviceStamp | null {
    const slot = this.take();
    if (!slot) {
      submit();
      return null;
    }
    let written = this.submitStamp(slot, false);
    submit();
    const stamp = this.stamp(slot, () => written);
    let closed = false;
    stamp.close = () => {
      if (closed) return;
      closed = true;
      written &&= this.submitStamp(slot, true);
    };
    return stamp;
  }

  /** Submits a stamp of `slot` (with its readback after the closing one); false if Dawn refused it. */
  private submitStamp(slot: Slot, end: boolean): boolean {
    const { device, queue } = this.physical;
    // The kernel's own calls: captured, so that an error (none is expected) reaches no process.
    return this.physical.capture(() => {
      const encoder = device.createCommandEncoder();
      this.encodeStamp(encoder, slot, end);
      if (end) this.encodeReadback(encoder, slot);
      queue.submit([encoder.finish()]);
    }).clean;
  }

  /** Encodes, after the atom's pass, the copy of its two timestamps to the slot's readback buffer. */
  encodeReadback(encoder: GPUCommandEncoder, slot: Slot): void {
    encoder.resolveQuerySet(this.querySet, slot.index * 2, 2, this.resolve, slot.index * RESOLVE_STRIDE);
    encoder.copyBufferToBuffer(this.resolve, slot.index * RESOLVE_STRIDE, slot.readback, 0, 16);
  }

  /** Resolves with the atom's device time (ns) once it has run, and frees the slot; null if unreadable. */
  read(slot: Slot): Promise<number | null> {
    return slot.readback.mapAsync(MapMode.READ).then(
      () => {
        const [begin, end] = new BigUint64Array(slot.readback.getMappedRange());
        slot.readback.unmap();
        this.free.push(slot);
        // Timestamps may reset or go backwards (spec): such a sample teaches nothing.
        return end > begin ? Number(end - begin) : null;
      },
      () => null,
    );
  }

  /**
   * `slot` as a DeviceStamp: read at most once, or dropped back to the pool. `written` says whether
   * its stamps reached the device: if not, the slot holds an earlier piece's times, and reads null.
   */
  stamp(slot: Slot, written: () => boolean = () => true): DeviceStamp {
    let reading: Promise<number | null> | null = null;
    let dropped = false;
    return {
      read: () => {
        if (reading) return reading;
        if (dropped) return Promise.resolve(null);
        if (!written()) {
          dropped = true;
          this.free.push(slot);
          return (reading = Promise.resolve(null));
        }
        return (reading = this.read(slot));
      },
      drop: () => {
        if (reading || dropped) return;
        dropped = true;
        this.free.push(slot);
      },
    };
  }
}
