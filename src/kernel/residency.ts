// Where one buffer's contents live: on the device in a real GPUBuffer, or evicted to host memory.
// The virtual buffer a program holds stays the same; the real buffer behind it may be replaced.
// Every kernel use of a buffer goes through `touch()`, which brings it back first if it was
// evicted, and cancels an eviction still in progress (the program is using it).

import { globals } from 'webgpu';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import type { ResourceLedger } from './ledger.js';
import type { Proc } from './proc.js';

const { GPUBufferUsage: BufferUsage, GPUMapMode: MapMode } = globals as unknown as {
  GPUBufferUsage: typeof GPUBufferUsage;
  GPUMapMode: typeof GPUMapMode;
};

/**
 * The usage the real buffer gets: the program's, plus COPY_SRC so the kernel can copy the
 * contents out for eviction. MAP_READ buffers (which allow nothing but COPY_DST) are read by
 * mapping instead; usage 0 stays 0 so that Dawn still refuses it. The program's own view
 * (`buffer.usage`, and the copies it may make) stays that of its descriptor.
 */
export function realUsageFor(usage: number): number {
  if (usage === 0 || usage & BufferUsage.MAP_READ) return usage;
  return usage | BufferUsage.COPY_SRC;
}

/** Swap traffic, for stats and the oversubscription benchmark: bytes moved and the time it took. */
export interface SwapCounters {
  bytesOut: number;
  nsOut: number;
  bytesIn: number;
  nsIn: number;
}

export class BufferResidency {
  /** Changes whenever the real buffer is replaced or dropped: anything made from the old one is stale. */
  generation = 0;
  lastUsedNs = performance.now() * 1e6;
  /** Ledger token of the counted buffer; null for buffers that hold no memory (invalid ones). */
  token: object | null = null;
  private host: Uint8Array | null = null;
  /** Told after a restore put bytes back on the device (the memory manager rebalances). */
  onRestore: ((residency: BufferResidency) => void) | null = null;
  private eviction: { cancelled: boolean; mapping: boolean } | null = null;

  constructor(
    /** The device the contents are (or go back) on; migration changes it. */
    public physical: PhysicalDevice,
    private real: GPUBuffer | null,
    readonly size: number,
    readonly realUsage: number,
    readonly label: string,
    readonly owner: Proc,
    private readonly ledger: ResourceLedger,
    private readonly swap: SwapCounters,
  ) {}

  get resident(): boolean {
    return this.real !== null;
  }

  get evicting(): boolean {
    return this.eviction !== null;
  }

  /** The real buffer when resident, without touching it (for states the program reads). */
  peek(): GPUBuffer | null {
    return this.real;
  }

  /** The real buffer for a use now: restored first if evicted; an eviction in progress is called off. */
  touch(): GPUBuffer {
    this.lastUsedNs = performance.now() * 1e6;
    this.owner.activity++;
    if (this.eviction) {
      this.eviction.cancelled = true;
      // The kernel's own read mapping of a MAP_READ buffer must not stand in the program's way.
      if (this.eviction.mapping && this.real?.mapState !== 'unmapped') this.real?.unmap();
    }
    if (!this.real) this.restore();
    return this.real!;
  }

  /** True when the buffer may be evicted now: resident, counted, unmapped, copyable whole. */
  evictable(): boolean {
    return (
      this.real !== null &&
      this.token !== null &&
      this.eviction === null &&
      this.real.mapState === 'unmapped' &&
      this.size > 0 &&
      this.size % 4 === 0
    );
  }

  /**
   * Copies the contents to host memory and frees the device memory. Gives up (false) when the
   * owner did anything meanwhile: its work might have changed the contents being copied.
   */
  async evict(): Promise<boolean> {
    if (!this.evictable()) return false;
    const real = this.real!;
    const eviction = { cancelled: false, mapping: false };
    this.eviction = eviction;
    const activity = this.owner.activity;
    const startedNs = performance.now() * 1e6;
    const data = await this.copyOut(real, eviction);
    this.eviction = null;
    const owner = this.owner;
    const stillIdle = owner.inFlightGroups === 0 && (owner.queuedItems === 0 || owner.suspended) && owner.activity === activity;
    if (!data || eviction.cancelled || !stillIdle || this.real !== real || this.token === null) return false;
    this.host = data;
    this.real = null;
    this.generation++;
    owner.backingEpoch++;
    this.swap.bytesOut += this.size;
    this.swap.nsOut += performance.now() * 1e6 - startedNs;
    real.destroy();
    this.ledger.setResident(this.token, false);
    return true;
  }

  /**
   * The bytes of `real`, read through a staging copy (or, for MAP_READ buffers, by mapping it);
   * null when the read failed or `eviction` was called off meanwhile.
   */
  private async copyOut(real: GPUBuffer, eviction: { cancelled: boolean; mapping: boolean }): Promise<Uint8Array | null> {
    try {
      if (this.realUsage & BufferUsage.MAP_READ) {
        eviction.mapping = true;
        await real.mapAsync(MapMode.READ);
        const data = eviction.cancelled ? null : new Uint8Array(real.getMappedRange().slice(0));
        real.unmap();
        return data;
      }
      const device = this.physical.device;
      const staging = device.createBuffer({ size: this.size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST, label: 'gpunix-copy-out' });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(real, 0, staging, 0, this.size);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(MapMode.READ);
      const data = new Uint8Array(staging.getMappedRange().slice(0));
      staging.destroy();
      return data;
    } catch {
      return null;
    }
  }

  /**
   * A copy of the contents, wherever they are (checkpoints); the buffer stays where it is. The
   * owner must be quiet (suspended, nothing on the device), as for an eviction.
   */
  async readContents(): Promise<Uint8Array | null> {
    if (this.host) return this.host.slice();
    if (!this.real || this.eviction || this.real.mapState !== 'unmapped' || this.size % 4 !== 0) return null;
    const eviction = { cancelled: false, mapping: false };
    this.eviction = eviction;
    const data = await this.copyOut(this.real, eviction);
    this.eviction = null;
    return eviction.cancelled ? null : data;
  }

  /** Brings the contents back into a new real buffer (synchronous: mapped at creation). */
  private restore(): void {
    const startedNs = performance.now() * 1e6;
    const host = this.host!;
    const real = this.physical.device.createBuffer({ size: this.size, usage: this.realUsage, label: this.label, mappedAtCreation: true });
    new Uint8Array(real.getMappedRange()).set(host);
    real.unmap();
    this.real = real;
    this.host = null;
    this.generation++;
    this.owner.backingEpoch++;
    this.swap.bytesIn += this.size;
    this.swap.nsIn += performance.now() * 1e6 - startedNs;
    if (this.token) this.ledger.setResident(this.token, true);
    this.onRestore?.(this);
  }

  /**
   * Frees everything, resident or not. A destroyed real buffer stays behind it, so that later
   * uses by the program fail exactly as WebGPU's destroyed buffer does.
   */
  destroy(): void {
    if (this.eviction) this.eviction.cancelled = true;
    this.token = null;
    this.host = null;
    // An evicted buffer has no real one left: a stand-in of the same shape is made to be destroyed.
    this.real ??= this.physical.device.createBuffer({ size: this.size, usage: this.realUsage, label: this.label });
    this.real.destroy();
  }
}

/**
 * The residency of a process's attachment to a shared segment: always on the device (segments
 * are pinned), never counted per process; destroying it detaches, and the last detach frees it.
 */
export class SharedResidency extends BufferResidency {
  private detached = false;
  constructor(
    physical: PhysicalDevice,
    real: GPUBuffer,
    usage: number,
    label: string,
    owner: Proc,
    ledger: ResourceLedger,
    swap: SwapCounters,
    private readonly detach: () => void,
  ) {
    super(physical, real, real.size, usage, label, owner, ledger, swap);
  }
  override evictable(): boolean {
    return false;
  }
  override destroy(): void {
    if (this.detached) return;
    this.detached = true;
    this.detach();
  }
}
