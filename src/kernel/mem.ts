// The memory manager: keeps each device within its budget by evicting buffers of idle processes
// to host memory, least recently used first, and swaps whole processes out on request. A buffer
// comes back the moment its owner uses it again (BufferResidency.touch), before any of the
// owner's work runs. Buffers in use by in-flight work, or mapped, are never evicted: only
// processes with nothing on the device and nothing queued (or suspended) are candidates.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import type { Proc } from './proc.js';
import { type BufferResidency, newSwapCounters, spillStoreOf, type SwapCounters } from './residency.js';
import { NO_SPILL, SpillSettings, SpillStore } from './spill.js';

/**
 * True when none of `proc`'s buffers is in use: nothing of it on a device, and nothing queued
 * (or it is suspended: its queued work will find its buffers again when it runs).
 */
function idle(proc: Proc): boolean {
  return proc.inFlightGroups === 0 && (proc.queuedItems === 0 || proc.suspended);
}

/**
 * How long a device that is still over its budget after a rebalance waits before looking again:
 * the processes holding its memory were busy, and one that goes idle is a candidate then. The
 * wait doubles, up to the maximum, while looking again finds nothing to evict.
 */
const REBALANCE_RETRY_MS = 1;
const REBALANCE_RETRY_MAX_MS = 16;

export class MemoryManager {
  private readonly buffers = new Map<PhysicalDevice, Set<BufferResidency>>();
  private readonly rebalancing = new Set<PhysicalDevice>();
  /** Devices with a look-again timer pending, and the wait before the next (see REBALANCE_RETRY_MS). */
  private readonly retrying = new Set<PhysicalDevice>();
  private readonly retryDelayMs = new Map<PhysicalDevice, number>();
  /** All swap traffic so far: evictions (out) and restores (in), bytes and time; host and spill use now. */
  readonly swap: SwapCounters = newSwapCounters();
  /** Where evicted contents live: host memory up to the host limit, spill files beyond it. */
  readonly spill: SpillStore;

  constructor(spill: SpillSettings = NO_SPILL) {
    this.spill = spillStoreOf(this.swap, spill);
  }

  register(residency: BufferResidency): void {
    let set = this.buffers.get(residency.physical);
    if (!set) this.buffers.set(residency.physical, (set = new Set()));
    set.add(residency);
    residency.onRestore = (restored) => this.rebalance(restored.physical);
  }

  unregister(residency: BufferResidency): void {
    this.buffers.get(residency.physical)?.delete(residency);
  }

  /** Evicts idle processes' buffers, least recently used first, until `device` is within budget. */
  rebalance(device: PhysicalDevice): void {
    if (device.usedBytes <= device.budgetBytes || this.rebalancing.has(device)) return;
    this.rebalancing.add(device);
    void this.evictUntilWithinBudget(device).then(
      (evicted) => this.settled(device, evicted),
      () => this.settled(device, false),
    );
  }

  private settled(device: PhysicalDevice, evicted: boolean): void {
    this.rebalancing.delete(device);
    const delay = evicted ? REBALANCE_RETRY_MS : Math.min(2 * (this.retryDelayMs.get(device) ?? REBALANCE_RETRY_MS / 2), REBALANCE_RETRY_MAX_MS);
    this.retryDelayMs.set(device, delay);
    this.retryLater(device);
  }

  /**
   * Nothing else calls rebalance when a busy process goes idle, so a device left over its budget
   * is looked at again shortly, for as long as it stays over (and holds buffers, and is not lost).
   */
  private retryLater(device: PhysicalDevice): void {
    if (device.usedBytes <= device.budgetBytes || device.lostReason !== null || this.retrying.has(device)) {
      if (device.usedBytes <= device.budgetBytes) this.retryDelayMs.delete(device);
      return;
    }
    if ((this.buffers.get(device)?.size ?? 0) === 0) return;
    this.retrying.add(device);
    setTimeout(() => {
      this.retrying.delete(device);
      this.rebalance(device);
    }, this.retryDelayMs.get(device) ?? REBALANCE_RETRY_MS).unref();
  }

  /** Resolves true when it evicted anything. */
  private async evictUntilWithinBudget(device: PhysicalDevice): Promise<boolean> {
    let evicted = false;
    // Rounds, because an owner may wake during one (its buffers then stay) and memory may grow.
    for (let round = 0; round < 4 && device.usedBytes > device.budgetBytes; round++) {
      const candidates = [...(this.buffers.get(device) ?? [])]
        .filter((r) => r.owner.alive && idle(r.owner) && r.evictable())
        .sort((a, b) => a.lastUsedNs - b.lastUsedNs);
      if (candidates.length === 0) return evicted;
      let excess = device.usedBytes - device.budgetBytes;
      const evictions: Promise<boolean>[] = [];
      for (const candidate of candidates) {
        if (excess <= 0) break;
        excess -= candidate.size;
        evictions.push(candidate.evict());
      }
      if ((await Promise.all(evictions)).includes(true)) evicted = true;
    }
    return evicted;
  }

  /**
   * Moves every buffer of `proc` it can to host memory; resolves with the bytes freed on devices.
   * `onProgress` hears, as each buffer is done (moved or left), the bytes done of those tried.
   */
  async swapOut(proc: Proc, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<number> {
    const mine: BufferResidency[] = [];
    for (const set of this.buffers.values()) for (const r of set) if (r.owner === proc && r.evictable()) mine.push(r);
    const total = mine.reduce((sum, r) => sum + r.size, 0);
    let done = 0;
    onProgress?.(0, total);
    const results = await Promise.all(
      mine.map((r) =>
        r.evict().then((moved) => {
          done += r.size;
          onProgress?.(done, total);
          return moved;
        }),
      ),
    );
    return mine.reduce((sum, r, i) => sum + (results[i] ? r.size : 0), 0);
  }

  /** Brings every evicted buffer of `proc` back onto its device. */
  swapIn(proc: Proc): void {
    for (const set of this.buffers.values()) {
      for (const r of set) if (r.owner === proc && !r.resident) r.touch(); // each restore rebalances
    }
  }
}
