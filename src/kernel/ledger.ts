// Who holds which real WebGPU objects, and how many bytes, so that a process's end releases
// everything it caused to exist and the kernel's stats can prove it.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { startAsDoubles } from '../doubleFields.js';

export type ResourceKind =
  | 'buffer'
  | 'querySet'
  | 'shaderModule'
  | 'computePipeline'
  | 'bindGroupLayout'
  | 'pipelineLayout'
  | 'bindGroup';

export const RESOURCE_KINDS: readonly ResourceKind[] = [
  'buffer',
  'querySet',
  'shaderModule',
  'computePipeline',
  'bindGroupLayout',
  'pipelineLayout',
  'bindGroup',
];

export interface LedgerEntry {
  kind: ResourceKind;
  /** The device it stands on (migration moves it). */
  device: PhysicalDevice;
  /** The virtual device that created it: destroying that device releases it. */
  scope: object;
  /** Device memory the object holds by the kernel's count (0 for objects without storage). */
  bytes: number;
  /** Frees the real object now (buffers and query sets); others are dropped for the GC. */
  destroy?: () => void;
  /** True while the object's contents live in host memory, not on the device (evicted). */
  evicted?: boolean;
}

/** Kernel-wide totals, kept current so that stats() costs nothing. */
export class LiveCounts {
  readonly byKind: Record<ResourceKind, number> = Object.fromEntries(RESOURCE_KINDS.map((k) => [k, 0])) as Record<
    ResourceKind,
    number
  >;
  total = 0;
}

/** One per process: the process's share of live objects and bytes. */
export class ResourceLedger {
  private readonly entries = new Map<object, LedgerEntry>();
  bytes = 0;
  peakBytes = 0;
  /** Of `bytes`, those evicted to host memory (they do not count against the device budget). */
  evictedBytes = 0;
  evictions = 0;
  restores = 0;
  /** Virtual objects the program dropped without destroying: their real objects go too. */
  private readonly collected = new FinalizationRegistry<object>((token) => this.release(token, true));

  constructor(
    private readonly live: LiveCounts,
    /** The tenant whose memory this process's bytes count against. */
    private readonly tenant: { bytes: number },
  ) {
    startAsDoubles<ResourceLedger>(this, ['bytes', 'peakBytes', 'evictedBytes']);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Records a real object held for `owner` (a virtual object); returns the token that names it. */
  add(owner: object, entry: LedgerEntry): object {
    const token = {};
    this.entries.set(token, entry);
    this.collected.register(owner, token, token);
    this.live.byKind[entry.kind]++;
    this.live.total++;
    if (entry.bytes > 0) {
      this.bytes += entry.bytes;
      this.peakBytes = Math.max(this.peakBytes, this.bytes);
      entry.device.usedBytes += entry.bytes;
      this.tenant.bytes += entry.bytes;
    }
    return token;
  }

  /** Releases one object: destroys it when `destroy` is asked for, and returns its bytes. */
  release(token: object, destroy: boolean): void {
    const entry = this.entries.get(token);
    if (!entry) return;
    this.entries.delete(token);
    this.collected.unregister(token);
    this.live.byKind[entry.kind]--;
    this.live.total--;
    if (entry.bytes > 0) {
      this.bytes -= entry.bytes;
      if (entry.evicted) {
        this.evictedBytes -= entry.bytes;
        entry.device.evictedBytes -= entry.bytes;
      } else entry.device.usedBytes -= entry.bytes;
      this.tenant.bytes -= entry.bytes;
    }
    if (destroy) entry.destroy?.();
  }

  /** Moves an object's bytes off the device (evicted) or back onto it (restored). */
  setResident(token: object, resident: boolean): void {
    const entry = this.entries.get(token);
    if (!entry || !entry.evicted === resident) return;
    entry.evicted = !resident;
    const sign = resident ? 1 : -1;
    entry.device.usedBytes += sign * entry.bytes;
    entry.device.evictedBytes -= sign * entry.bytes;
    this.evictedBytes -= sign * entry.bytes;
    if (resident) this.restores++;
    else this.evictions++;
    if (resident) entry.device.restores++;
    else entry.device.evictions++;
  }

  /** Moves every object of one virtual device onto another physical device (migration). */
  moveScope(scope: object, target: PhysicalDevice): void {
    for (const entry of this.entries.values()) {
      if (entry.scope !== scope || entry.device === target) continue;
      if (entry.evicted) {
        entry.device.evictedBytes -= entry.bytes;
        target.evictedBytes += entry.bytes;
      } else {
        entry.device.usedBytes -= entry.bytes;
        target.usedBytes += entry.bytes;
      }
      entry.device = target;
    }
  }

  /** Releases every object of one virtual device (or of all): a device's or a process's end. */
  releaseAll(scope?: object): void {
    for (const [token, entry] of [...this.entries]) {
      if (!scope || entry.scope === scope) this.release(token, true);
    }
  }
}
