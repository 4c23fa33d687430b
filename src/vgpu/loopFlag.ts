// A process's budget-spent flag on one device: one word of device memory that an invocation which
// ends with its loop budget spent (every loop the watchdog cuts leaves it so) sets to 1
// (src/wgsl/watchdog.ts, `spentFlagBelow`). The watchdog's time check
// rests on a calibration (a spent budget means more than the limit of device time); the flag does
// not: a piece that ran long enough that its loops may have been cut while the calibration read
// slow has the flag read, and a set flag ends the process whatever the piece's time said
// (Dispatcher.checkPieceTime; docs/kernel.md, "The budget-spent flag").
//
// Every compute pipeline made from a flagged module binds it at the module's flag group: pipelines
// with explicit layouts through one bind group layout of the flag's own, 'auto' ones through their
// own (exclusive) layout at that index (bindGroupFor). Never reset: once set, its process ends.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { BufferUsage, MapMode } from './webgpuGlobals.js';

/** GPUShaderStage.COMPUTE. */
const SHADER_STAGE_COMPUTE = 4;

export class LoopFlag {
  private readonly buffer: GPUBuffer;
  private readonly readback: GPUBuffer;
  /** The flag's bind group layout for pipelines with explicit layouts, and its bind group there (made once each). */
  private ownLayout: GPUBindGroupLayout | null = null;
  private ownGroup: GPUBindGroup | null = null;
  /** The read in progress (reads go one after another: one readback buffer). */
  private reading: Promise<boolean> = Promise.resolve(false);
  /** Set once a read found the flag set (it is never cleared on the device either). */
  private seenSet = false;

  constructor(readonly physical: PhysicalDevice, label: string) {
    // The kernel's own objects: created outside every program's error scopes.
    const made = physical.capture(() => ({
      buffer: physical.device.createBuffer({ label: `${label} (loop budget spent)`, size: 4, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC }),
      readback: physical.device.createBuffer({ label: `${label} (loop budget spent, read back)`, size: 4, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST }),
    }));
    this.buffer = made.value.buffer;
    this.readback = made.value.readback;
  }

  /** The flag's layout for a pipeline layout the kernel builds (the program's groups, then this one at the flag's index). */
  layout(): GPUBindGroupLayout {
    return (this.ownLayout ??= this.physical.capture(() =>
      this.physical.device.createBindGroupLayout({ entries: [{ binding: 0, visibility: SHADER_STAGE_COMPUTE, buffer: { type: 'storage' } }] }),
    ).value);
  }

  /**
   * The flag's bind group for `layout`: its own layout()'s (made once), or a new one for an 'auto'
   * pipeline's layout at the flag's index (exclusive to that pipeline, which keeps it: none is kept
   * here, so a released pipeline's goes with it); null when Dawn refuses it.
   */
  bindGroupFor(layout: GPUBindGroupLayout): GPUBindGroup | null {
    const own = layout === this.ownLayout;
    if (own && this.ownGroup !== null) return this.ownGroup;
    const made = this.physical.capture(() => this.physical.device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer: this.buffer } }] }));
    if (!made.clean) return null;
    if (own) this.ownGroup = made.value;
    return made.value;
  }

  /**
   * Whether a loop of the process was cut short on this device, by everything submitted before the
   * call (queue order): a copy of the word and a map. False when it cannot be read (the device lost).
   */
  read(): Promise<boolean> {
    if (this.seenSet) return Promise.resolve(true);
    const next = this.reading.then(this.readOnce.bind(this));
    this.reading = next;
    return next;
  }

  private readOnce(): Promise<boolean> {
    const physical = this.physical;
    const submitted = physical.capture(() => {
      const encoder = physical.device.createCommandEncoder({ label: 'gpunix loop budget flag' });
      encoder.copyBufferToBuffer(this.buffer, 0, this.readback, 0, 4);
      physical.queue.submit([encoder.finish()]);
    }).clean;
    if (!submitted) return Promise.resolve(false);
    return this.readback.mapAsync(MapMode.READ).then(
      () => {
        // Destroyed between the map and this (the device lost, a migration's retire): unread, not
        // a throw, which would leave the time-check chain, and every map waiting on it, rejected.
        try {
          const set = new Uint32Array(this.readback.getMappedRange())[0] !== 0;
          this.readback.unmap();
          if (set) this.seenSet = true;
          return set;
        } catch {
          return false;
        }
      },
      () => false,
    );
  }

  /** Frees its device memory (the process's device went). */
  destroy(): void {
    this.buffer.destroy();
    this.readback.destroy();
    this.ownGroup = null;
  }

  /** Frees it once the reads already asked for have settled (the process moved to another device); then `done`. */
  retire(done: () => void): void {
    void this.reading.then(() => {
      this.destroy();
      done();
    });
  }
}
