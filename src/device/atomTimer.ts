// Times atoms on the device itself with pass timestamps, so the cost model learns a pipeline's
// time per workgroup without the fixed costs (submit, fence, event polling) that wall-clock time
// includes. One per device that has 'timestamp-query'; a small pool of slots, each a pair of
// queries and its own 16-byte readback buffer, so reading one slot never waits for another.

import { globals } from 'webgpu';
import type { PhysicalDevice } from './physicalDevice.js';

const { GPUBufferUsage: BufferUsage, GPUMapMode: MapMode } = globals as unknown as {
  GPUBufferUsage: typeof GPUBufferUsage;
  GPUMapMode: typeof GPUMapMode;
};

const SLOTS = 8;
/** resolveQuerySet writes at 256-byte aligned offsets. */
const RESOLVE_STRIDE = 256;

type Slot = TimerSlot;

export interface TimerSlot {
  readonly index: number;
  readonly readback: GPUBuffer;
}

export class AtomTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;
  private readonly free: Slot[] = [];

  private constructor(physical: PhysicalDevice) {
    const device = physical.device;
    this.querySet = device.createQuerySet({ type: 'timestamp', count: SLOTS * 2, label: 'gpunix-atom-timer' });
    this.resolve = device.createBuffer({ size: SLOTS * RESOLVE_STRIDE, usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC });
    for (let index = 0; index < SLOTS; index++) {
      this.free.push({ index, readback: device.createBuffer({ size: 16, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST }) });
    }
  }

  /** A timer for `physical`, or null where the device has no timestamps (wall clock is used). */
  static for(physical: PhysicalDevice): AtomTimer | null {
    if (!physical.adapter.features.includes('timestamp-query')) return null;
    const made = physical.capture(() => new AtomTimer(physical));
    return made.clean ? made.value : null;
  }

  /** A free slot, or null when all are waiting to be read (that atom goes untimed). */
  take(): Slot | null {
    return this.free.pop() ?? null;
  }

  /** The pass descriptor part that times the atom in `slot`. */
  timestampWrites(slot: Slot): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: slot.index * 2, endOfPassWriteIndex: slot.index * 2 + 1 };
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
}
