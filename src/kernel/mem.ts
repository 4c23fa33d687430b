// The memory manager: keeps each device within its budget by evicting buffers of idle processes
// to host memory, least recently used first, and swaps whole processes out on request. A buffer
// comes back the moment its owner uses it again (BufferResidency.touch), before any of the
// owner's work runs. Buffers in use by in-flight work, or mapped, are never evicted: only
// processes with nothing on the device and nothing queued (or suspended) are candidates.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import type { Proc } from './proc.js';
import type { BufferResidency, SwapCounters } from './residency.js';

/**
 * True when none of `proc`'s buffers is in use: nothing of it on a device, and nothing queued
 * (or it is suspended: its queued work will find its buffers again when it runs).
 */
function idle(proc: Proc): boolean {
  return proc.inFlightGroups === 0 && (proc.queuedItems === 0 || proc.suspended);
}

export class MemoryManager {
  private readonly buffers = new Map<PhysicalDevice, Set<BufferResidency>>();
  private readonly rebalancing = new Set<PhysicalDevice>();
  /** All swap traffic so far: evictions (out) and restores (in), bytes and time. */
  readonly swap: SwapCounters = { bytesOut: 0, nsOut: 0, bytesIn: 0, nsIn: 0 };

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
    void this.evictUntilWithinBudget(device).finally(() => this.rebalancing.delete(device));
  }

  private async evictUntilWithinBudget(device: PhysicalDevice): Promise<void> {
    // Rounds, because an owner may wake during one (its buffers then stay) and memory may grow.
    for (let round = 0; round < 4 && device.usedBytes > device.budgetBytes; round++) {
      const candidates = [...(this.buffers.get(device) ?? [])]
        .filter((r) => r.owner.alive && idle(r.owner) && r.evictable())
        .sort((a, b) => a.lastUsedNs - b.lastUsedNs);
      if (candidates.length === 0) return;
      let excess = device.usedBytes - device.budgetBytes;
      const evictions: Promise<boolean>[] = [];
      for (const candidate of candidates) {
        if (excess <= 0) break;
        excess -= candidate.size;
        evictions.push(candidate.evict());
      }
      await Promise.all(evictions);
    }
  }

  /** Moves every buffer of `proc` it can to host memory; resolves with the bytes freed on devices. */
  async swapOut(proc: Proc): Promise<number> {
    const mine: BufferResidency[] = [];
    for (const set of this.buffers.values()) for (const r of set) if (r.owner === proc && r.evictable()) mine.push(r);
    const results = await Promise.all(mine.map((r) => r.evict()));
    return mine.reduce((sum, r, i) => sum + (results[i] ? r.size : 0), 0);
  }

  /** Brings every evicted buffer of `proc` back onto its device. */
  swapIn(proc: Proc): void {
    for (const set of this.buffers.values()) {
      for (const r of set) if (r.owner === proc && !r.resident) r.touch(); // each restore rebalances
    }
  }
}
