// Shared segments: named device buffers that several processes of one tenant attach, so that a
// producer and a consumer exchange data on the device without copying through the host. A
// segment is one real buffer, counted once against its device and tenant, alive while attached.
// Segments are pinned: never evicted, and a process holding one is not migrated or checkpointed.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { LiveCounts } from './ledger.js';
import type { Proc } from './proc.js';

/** Usages a segment's real buffer has: everything a compute program does with shared data. */
const SEGMENT_USAGE = 0x0080 /* STORAGE */ | 0x0004 /* COPY_SRC */ | 0x0008 /* COPY_DST */;

interface Segment {
  name: string;
  tenant: string;
  device: PhysicalDevice;
  size: number;
  real: GPUBuffer;
  attached: Set<Proc>;
}

export interface SegmentRecord {
  name: string;
  tenant: string;
  device: string;
  size: number;
  attached: number[];
}

export class SharedSegments {
  private readonly segments = new Map<string, Segment>();

  constructor(private readonly live: LiveCounts) {}

  private key(tenant: string, name: string): string {
    return `${tenant}\u0000${name}`;
  }

  /**
   * Attaches `proc` to the segment `name` of its tenant on `device`, creating it with `size`
   * bytes if it does not exist. Returns the real buffer and the usage the program sees.
   */
  attach(proc: Proc, device: PhysicalDevice, name: string, size: number): { real: GPUBuffer; usage: number } {
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `a shared segment needs a name of 1-256 characters, got ${JSON.stringify(name)}`);
    }
    if (!Number.isInteger(size) || size <= 0 || size % 4 !== 0) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `a shared segment's size must be a positive multiple of 4 bytes, got ${size}`);
    }
    const key = this.key(proc.tenant, name);
    let segment = this.segments.get(key);
    if (segment) {
      if (segment.size !== size) {
        throw new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}" has ${segment.size} bytes, not ${size}`);
      }
      if (segment.device !== device) {
        throw new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}" lives on device ${segment.device.id}; attach it from a device there`);
      }
    } else {
      const account = proc.account;
      if (device.usedBytes + size > device.budgetBytes || (account.quota.memoryLimit !== null && account.bytes + size > account.quota.memoryLimit)) {
        throw new GpunixError(ErrorCodes.OUT_OF_MEMORY, `shared segment "${name}" of ${size} bytes does not fit in the device budget or tenant "${proc.tenant}"'s limit`);
      }
      const made = device.capture(() => device.device.createBuffer({ size, usage: SEGMENT_USAGE, label: `gpunix segment ${name}` }));
      if (!made.clean) throw new GpunixError(ErrorCodes.OUT_OF_MEMORY, `shared segment "${name}" could not be created on device ${device.id}`);
      segment = { name, tenant: proc.tenant, device, size, real: made.value, attached: new Set() };
      this.segments.set(key, segment);
      device.usedBytes += size;
      account.bytes += size;
      this.live.byKind.buffer++;
      this.live.total++;
    }
    if (!segment.attached.has(proc)) {
      segment.attached.add(proc);
      const s = segment;
      proc.onEnd.add(() => this.detach(proc, s.name));
    }
    return { real: segment.real, usage: SEGMENT_USAGE };
  }

  /** Detaches `proc`; the last detach frees the segment. */
  detach(proc: Proc, name: string): void {
    const key = this.key(proc.tenant, name);
    const segment = this.segments.get(key);
    if (!segment || !segment.attached.delete(proc) || segment.attached.size > 0) return;
    this.segments.delete(key);
    segment.real.destroy();
    segment.device.usedBytes -= segment.size;
    proc.account.bytes -= segment.size;
    this.live.byKind.buffer--;
    this.live.total--;
  }

  /** True when `proc` holds a segment (such a process is pinned to its device). */
  holds(proc: Proc): boolean {
    for (const segment of this.segments.values()) if (segment.attached.has(proc)) return true;
    return false;
  }

  list(): SegmentRecord[] {
    return [...this.segments.values()].map((s) => ({ name: s.name, tenant: s.tenant, device: s.device.id, size: s.size, attached: [...s.attached].map((p) => p.pid) }));
  }
}
