// What is free where in the fleet, as the scheduler sees it: the time share and memory left on
// each (node, device). Pure and in memory (no etcd): the scheduler feeds it NodeRecords and the
// bindings it makes or finds; placement.ts and reclaim.ts decide over it.
//
// Model (docs/fleet.md): each device of a node has a time capacity of 1.0 and memory =
// NodeDevice.memoryBudget. Every binding with desired 'run' uses its job's `share` and `memory` of
// its device (reserve); a suspended (swapped) one uses neither (release).
//
// Representation, chosen for 10 000 nodes:
// - Shares are kept in integer units (SHARE_UNITS a device), so that 0.1 + 0.2 fits exactly into
//   0.3 and ten members of 0.1 fill one device exactly.
// - Devices live in flat typed arrays (a node's devices side by side); a node's slot holds its
//   range. Usage is kept per (node name, device index), apart from the records: a reservation on a
//   node that has no record (dead, or not seen yet) is kept and applies when the node appears, and
//   removing a node keeps its usage until the scheduler releases it. So usage is always exactly the
//   sum of reserve - release, whatever order records and bindings arrive in.
// - clone() copies the usage arrays (a memcpy) and shares the node topology copy-on-write; trial()
//   is the cheaper way to try something: it undoes every reserve/release made inside it (an undo
//   log), which is what reclaim uses.
// - FreeIndex keeps the ready devices sorted by the best-fit ranking (free share, node free share,
//   free memory, name, device), for the fleet and per sameLabel group once asked for, updated on
//   every reserve/release/setNode/removeNode in O(log n + chunk) per device touched (a change of a
//   node's free share re-ranks its devices): best fit walks it from the first device with enough
//   share instead of scanning 10 000 nodes for every gang. A clone or a compaction rebuilds it on
//   first use.

import type { NodeRecord } from './records.js';
import type { JobSpec } from './spec.js';

/** Integer units of one device's time: shares are rounded to 1/SHARE_UNITS of a device. */
export const SHARE_UNITS = 1_000_000;

/** A share (a fraction of one device's time, or a sum of them) in integer units; a positive share is at least 1 unit. */
export function shareUnits(share: number): number {
  const units = Math.round(share * SHARE_UNITS);
  return units === 0 && share > 0 ? 1 : units;
}

/** Units back to a share (for people and for the API). */
export function unitsToShare(units: number): number {
  return units / SHARE_UNITS;
}

export type MemberPlacement = { node: string; device: number };

/** What one fleet device has: its node's slot, its device index on that node. */
export interface NodeSlot {
  readonly name: string;
  readonly record: NodeRecord;
  readonly ready: boolean;
  /** Flat index of its first device; its devices are first .. first + indexes.length - 1. */
  readonly first: number;
  /** NodeDevice.index of each device, in flat order. */
  readonly indexes: readonly number[];
}

/** The node side of a Capacity: slots, budgets and orders. Shared between clones until one changes it. */
class Topology {
  /** Live nodes; undefined where a node was removed (its range is garbage until a rebuild). */
  slots: Array<NodeSlot | undefined> = [];
  byName = new Map<string, number>();
  /** Memory budget of each flat device. */
  budget = new Float64Array(64);
  /** Slot number of each flat device. */
  flatSlot = new Int32Array(64);
  /** Flat devices in use (live or garbage). */
  flatLength = 0;
  garbage = 0;
  live = 0;
  /** Live slot numbers in node-name order (cached). */
  private sortedCache: number[] | null = null;
  /** label key -> groups of ranks (each in name order) by label value (in value order); nodes without the label are left out. */
  private groupCache = new Map<string, LabelGroups>();
  /** The live nodes in name order as dense arrays (cached with sortedCache). */
  private rankCache: RankIndex | null = null;

  copy(): Topology {
    const t = new Topology();
    t.slots = this.slots.slice();
    t.byName = new Map(this.byName);
    t.budget = this.budget.slice();
    t.flatSlot = this.flatSlot.slice();
    t.flatLength = this.flatLength;
    t.garbage = this.garbage;
    t.live = this.live;
    t.sortedCache = this.sortedCache;
    t.groupCache = new Map(this.groupCache);
    // Ready flags change in place (setNode), so the copy gets its own.
    t.rankCache = this.rankCache === null ? null : { ...this.rankCache, ready: this.rankCache.ready.slice() };
    return t;
  }

  sorted(): number[] {
    if (this.sortedCache === null) {
      const list: number[] = [];
      for (let i = 0; i < this.slots.length; i++) if (this.slots[i] !== undefined) list.push(i);
      list.sort((a, b) => compareNames(this.slots[a]!.name, this.slots[b]!.name));
      this.sortedCache = list;
    }
    return this.sortedCache;
  }

  /** The live nodes in name order: rank r is the r-th node by name. */
  ranks(): RankIndex {
    if (this.rankCache === null) {
      const sorted = this.sorted();
      const index: RankIndex = {
        slot: Int32Array.from(sorted),
        first: new Int32Array(sorted.length),
        count: new Int32Array(sorted.length),
        ready: new Uint8Array(sorted.length),
        rankOf: new Int32Array(this.slots.length).fill(-1),
      };
      for (let r = 0; r < sorted.length; r++) {
        const slot = this.slots[sorted[r]]!;
        index.first[r] = slot.first;
        index.count[r] = slot.indexes.length;
        index.ready[r] = slot.ready ? 1 : 0;
        index.rankOf[sorted[r]] = r;
      }
      this.rankCache = index;
    }
    return this.rankCache;
  }

  /** A node's health changed in place: keep the rank index's ready flag current. */
  setReady(slot: number, ready: boolean): void {
    if (this.rankCache !== null) this.rankCache.ready[this.rankCache.rankOf[slot]] = ready ? 1 : 0;
  }

  groups(label: string): LabelGroups {
    let entry = this.groupCache.get(label);
    if (entry === undefined) {
      const byValue = new Map<string, number[]>();
      const sorted = this.sorted();
      for (let rank = 0; rank < sorted.length; rank++) {
        const value = this.slots[sorted[rank]]!.record.labels[label];
        if (value === undefined) continue;
        let group = byValue.get(value);
        if (group === undefined) byValue.set(value, (group = []));
        group.push(rank);
      }
      const values = [...byValue.keys()].sort(compareNames);
      entry = { values, groups: values.map((v) => byValue.get(v)!) };
      this.groupCache.set(label, entry);
    }
    return entry;
  }

  invalidateOrder(): void {
    this.sortedCache = null;
    this.rankCache = null;
    this.groupCache.clear();
  }

  invalidateLabels(): void {
    this.groupCache.clear();
  }
}

/** The nodes with each value of one label: values in order, each group's ranks in name order. */
export interface LabelGroups {
  values: string[];
  groups: number[][];
}

/** Plain code-unit order (deterministic, locale-free). */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

type UsageEntry = { share: number; memory: number };

export class Capacity {
  private topo = new Topology();
  /** Whether `topo` may be changed in place (false after clone() until the first change copies it). */
  private ownsTopo = true;
  /** Share units used on each flat device (may exceed SHARE_UNITS when over-committed). */
  private usedShare = new Float64Array(64);
  /** Bytes used on each flat device. */
  private usedMemory = new Float64Array(64);
  /**
   * Per slot: the sum over its devices of min(used share, SHARE_UNITS), so that the node's free
   * share (the sum of its devices' free shares, negatives as 0) is devices × SHARE_UNITS minus
   * this, in O(1): placement skips nodes with no room, or empty ones that cannot win, without
   * reading their devices.
   */
  private nodeUsed = new Float64Array(64);
  /** Usage on nodes that have no record now: node name -> device index -> usage. */
  private orphans = new Map<string, Map<number, UsageEntry>>();
  /** Undo log of reserve/release made inside trial(): [node, device, share units, memory] applied; undone by applying the negation. */
  private journal: Array<[string, number, number, number]> = [];
  private trialDepth = 0;
  /** The ready devices in best-fit rank order, kept current on every change (placement walks it instead of scanning the fleet). */
  private index = new FreeIndex(() => this.topo);
  /** False after clone(): the index is built on first use. */
  private indexValid = true;
  /** Inside batched(): the slots whose devices changed, re-ranked at its end. */
  private touched: number[] | null = null;

  /** Adds or replaces a node (its health, labels, devices and budgets); its usage is kept. */
  setNode(record: NodeRecord): void {
    this.assertNoTrial('setNode');
    const topo = this.ownTopology();
    const existing = topo.byName.get(record.name);
    if (existing !== undefined) {
      const slot = topo.slots[existing]!;
      if (sameDeviceIndexes(slot.indexes, record)) {
        // The common case (a heartbeat, a health or budget change): update in place.
        const labelsChanged = !sameLabels(slot.record.labels, record.labels);
        if (labelsChanged) topo.invalidateLabels();
        const ready = record.health === 'ready';
        topo.slots[existing] = { ...slot, record, ready };
        if (slot.ready !== ready) topo.setReady(existing, ready);
        let budgetChanged = false;
        for (let i = 0; i < slot.indexes.length; i++) {
          if (topo.budget[slot.first + i] !== record.devices[i].memoryBudget) budgetChanged = true;
          topo.budget[slot.first + i] = record.devices[i].memoryBudget;
        }
        // A heartbeat that changes neither health, budgets nor labels leaves the index alone.
        if (slot.ready !== ready || budgetChanged || labelsChanged) {
          if (ready) this.indexNode(existing);
          else this.unindexNode(existing);
        }
        return;
      }
      this.removeNode(record.name);
    }
    this.addSlot(record);
  }

  /** Forgets a node (its record); its usage stays (as if its bindings were still reserved) until released. */
  removeNode(name: string): void {
    this.assertNoTrial('removeNode');
    const topo = this.ownTopology();
    const index = topo.byName.get(name);
    if (index === undefined) return;
    const slot = topo.slots[index]!;
    this.unindexNode(index);
    this.keepUsage(slot);
    this.nodeUsed[index] = 0;
    this.usedShare.fill(0, slot.first, slot.first + slot.indexes.length);
    this.usedMemory.fill(0, slot.first, slot.first + slot.indexes.length);
    topo.slots[index] = undefined;
    topo.byName.delete(name);
    topo.garbage += slot.indexes.length;
    topo.live--;
    topo.invalidateOrder();
    if (topo.garbage > 1024 && topo.garbage > topo.flatLength / 2) this.rebuild();
  }

  /** The live nodes' records, in node-name order. */
  *nodes(): Iterable<NodeRecord> {
    for (const slot of this.topo.sorted()) yield this.topo.slots[slot]!.record;
  }

  /** The record of one node, if it is live. */
  node(name: string): NodeRecord | undefined {
    const index = this.topo.byName.get(name);
    return index === undefined ? undefined : this.topo.slots[index]!.record;
  }

  /** Counts the members' share and memory as used on their devices (a binding with desired 'run'). Over-commits rather than refuses: the scheduler reserves what etcd says is bound. */
  reserve(spec: Pick<JobSpec, 'share' | 'memory'>, placement: ReadonlyArray<MemberPlacement>): void {
    const share = shareUnits(spec.share);
    this.batched(() => {
      for (const member of placement) this.apply(member.node, member.device, share, spec.memory);
    });
  }

  /** Undoes reserve() with the same arguments (the binding was suspended, deleted or moved). */
  release(spec: Pick<JobSpec, 'share' | 'memory'>, placement: ReadonlyArray<MemberPlacement>): void {
    const share = shareUnits(spec.share);
    this.batched(() => {
      for (const member of placement) this.apply(member.node, member.device, -share, -spec.memory);
    });
  }

  /**
   * Whether the members could run where `placement` says now (e.g. a suspended job resuming where
   * its processes are): every device exists on a live node that is not 'unhealthy' and has room for
   * all the members placed on it together.
   */
  fits(spec: Pick<JobSpec, 'share' | 'memory'>, placement: ReadonlyArray<MemberPlacement>): boolean {
    const share = shareUnits(spec.share);
    for (let i = 0; i < placement.length; i++) {
      const { node, device } = placement[i];
      const flat = this.flatOf(node, device);
      if (flat < 0 || this.topo.slots[this.topo.byName.get(node)!]!.record.health === 'unhealthy') return false;
      let members = 0;
      for (const other of placement) if (other.node === node && other.device === device) members++;
      if (SHARE_UNITS - this.usedShare[flat] < members * share) return false;
      if (this.topo.budget[flat] - this.usedMemory[flat] < members * spec.memory) return false;
    }
    return true;
  }

  /** Free share (fraction of the device's time) and memory (bytes) of a device; negative when over-committed; zero for an unknown device. */
  free(node: string, device: number): { share: number; memory: number } {
    const flat = this.flatOf(node, device);
    if (flat < 0) return { share: 0, memory: 0 };
    return { share: unitsToShare(SHARE_UNITS - this.usedShare[flat]), memory: this.topo.budget[flat] - this.usedMemory[flat] };
  }

  /** An independent copy (changes to either do not show in the other). Costs a copy of the usage arrays; trial() is cheaper for try-and-undo. */
  clone(): Capacity {
    const copy = new Capacity();
    copy.topo = this.topo;
    copy.ownsTopo = false;
    this.ownsTopo = false;
    copy.usedShare = this.usedShare.slice();
    copy.usedMemory = this.usedMemory.slice();
    copy.nodeUsed = this.nodeUsed.slice();
    copy.indexValid = false;
    for (const [name, devices] of this.orphans) {
      const map = new Map<number, UsageEntry>();
      for (const [device, entry] of devices) map.set(device, { ...entry });
      copy.orphans.set(name, map);
    }
    return copy;
  }

  /**
   * Runs `fn` and then undoes every reserve/release it made, whatever it returns or throws
   * (setNode/removeNode are refused inside). Nests. The cheap way to ask "would it fit if...".
   */
  trial<T>(fn: () => T): T {
    const mark = this.journal.length;
    this.trialDepth++;
    try {
      return fn();
    } finally {
      this.undo(mark);
      this.trialDepth--;
    }
  }

  /** Inside trial(): a point to undo() back to. */
  mark(): number {
    if (this.trialDepth === 0) throw new Error('Capacity.mark() is only meaningful inside trial()');
    return this.journal.length;
  }

  /** Inside trial(): undoes the reserve/release made since `mark`. */
  undo(mark: number): void {
    this.batched(() => {
      while (this.journal.length > mark) {
        const [node, device, share, memory] = this.journal.pop()!;
        this.applyRaw(node, device, -share, -memory);
      }
    });
  }

  /**
   * Runs `fn` (usage changes) and re-ranks each node it touched once at the end, not once per
   * member: a gang of 8 on one node moves its devices in the index once.
   */
  private batched(fn: () => void): void {
    if (this.touched !== null) return fn();
    this.touched = [];
    try {
      fn();
    } finally {
      const touched = this.touched;
      this.touched = null;
      for (const slotNumber of touched) if (this.topo.slots[slotNumber]?.ready) this.indexNode(slotNumber);
    }
  }

  /**
   * How fragmented the ready devices are. devices: ready devices; used: those with some share in
   * use; partial: 0 < used share < 1 (partly used: what is left on them only fits small members);
   * strandedShare: the free share on partial devices (device-fractions); score = strandedShare /
   * total free share of the ready devices (0 = no fragmentation: all free time is on whole free
   * devices; 1 = all of it is in pieces). Memory is not counted.
   */
  fragmentation(): { devices: number; used: number; partial: number; strandedShare: number; score: number } {
    let devices = 0;
    let used = 0;
    let partial = 0;
    let stranded = 0;
    let free = 0;
    const { slots } = this.topo;
    for (let s = 0; s < slots.length; s++) {
      const slot = slots[s];
      if (slot === undefined || !slot.ready) continue;
      for (let flat = slot.first; flat < slot.first + slot.indexes.length; flat++) {
        devices++;
        const usedUnits = this.usedShare[flat];
        const freeUnits = Math.max(0, SHARE_UNITS - usedUnits);
        free += freeUnits;
        if (usedUnits > 0) {
          used++;
          if (usedUnits < SHARE_UNITS) {
            partial++;
            stranded += freeUnits;
          }
        }
      }
    }
    return { devices, used, partial, strandedShare: unitsToShare(stranded), score: free === 0 ? 0 : stranded / free };
  }

  /** Low-level read access for placement.ts and reclaim.ts (same package): not for other callers. */
  view(): CapacityView {
    return { topo: this.topo, usedShare: this.usedShare, usedMemory: this.usedMemory, nodeUsed: this.nodeUsed, index: this.freeIndex() };
  }

  /** The rank index, built first where a clone or a compaction left it to build. */
  private freeIndex(): FreeIndex {
    if (!this.indexValid) {
      this.index = new FreeIndex(() => this.topo);
      this.indexValid = true;
      const { slots } = this.topo;
      for (let s = 0; s < slots.length; s++) if (slots[s]?.ready) this.indexNode(s);
    }
    return this.index;
  }

  /** (Re)indexes every device of a live ready node with its keys now. */
  private indexNode(slotNumber: number): void {
    if (!this.indexValid) return;
    const slot = this.topo.slots[slotNumber]!;
    const nodeFree = slot.indexes.length * SHARE_UNITS - this.nodeUsed[slotNumber];
    this.index.addNode(
      slotNumber,
      slot,
      (flat) => SHARE_UNITS - this.usedShare[flat],
      nodeFree,
      (flat) => this.topo.budget[flat] - this.usedMemory[flat],
    );
  }

  /** Takes a node's devices out of the index (whether or not they are in it). */
  private unindexNode(slotNumber: number): void {
    if (this.indexValid) this.index.removeNode(slotNumber, this.topo.slots[slotNumber]!);
  }

  /** Flat index of (node, device index), or -1 when the node has no record or no such device. */
  flatOf(node: string, device: number): number {
    const index = this.topo.byName.get(node);
    if (index === undefined) return -1;
    const slot = this.topo.slots[index]!;
    if (slot.indexes[device] === device) return slot.first + device;
    const at = slot.indexes.indexOf(device);
    return at < 0 ? -1 : slot.first + at;
  }

  private apply(node: string, device: number, share: number, memory: number): void {
    if (this.trialDepth > 0) this.journal.push([node, device, share, memory]);
    this.applyRaw(node, device, share, memory);
  }

  private applyRaw(node: string, device: number, share: number, memory: number): void {
    const flat = this.flatOf(node, device);
    if (flat >= 0) {
      const before = this.usedShare[flat];
      const after = before + share;
      this.usedShare[flat] = after;
      this.usedMemory[flat] += memory;
      const slotNumber = this.topo.flatSlot[flat];
      const nodeChange = Math.min(after, SHARE_UNITS) - Math.min(before, SHARE_UNITS);
      this.nodeUsed[slotNumber] += nodeChange;
      if (this.indexValid && this.topo.slots[slotNumber]!.ready) {
        // Re-ranked at the end of the batch; else now: the node's free share is every sibling's
        // second key, so all its devices move when it changed, else only this one.
        if (this.touched !== null) {
          if (!this.touched.includes(slotNumber)) this.touched.push(slotNumber);
        } else if (nodeChange !== 0) this.indexNode(slotNumber);
        else this.index.updateDevice(flat, slotNumber, SHARE_UNITS - after, this.topo.budget[flat] - this.usedMemory[flat]);
      }
      return;
    }
    const entry = this.orphanEntry(node, device);
    entry.share += share;
    entry.memory += memory;
    if (entry.share === 0 && entry.memory === 0) {
      const devices = this.orphans.get(node)!;
      devices.delete(device);
      if (devices.size === 0) this.orphans.delete(node);
    }
  }

  private orphanEntry(node: string, device: number): UsageEntry {
    let devices = this.orphans.get(node);
    if (devices === undefined) this.orphans.set(node, (devices = new Map()));
    let entry = devices.get(device);
    if (entry === undefined) devices.set(device, (entry = { share: 0, memory: 0 }));
    return entry;
  }

  private addSlot(record: NodeRecord): void {
    const topo = this.ownTopology();
    const count = record.devices.length;
    const first = topo.flatLength;
    this.ensureFlat(first + count);
    topo.flatLength += count;
    const indexes = record.devices.map((d) => d.index);
    const slot: NodeSlot = { name: record.name, record, ready: record.health === 'ready', first, indexes };
    const slotNumber = topo.slots.length;
    topo.byName.set(record.name, slotNumber);
    topo.slots.push(slot);
    if (slotNumber >= this.nodeUsed.length) {
      const next = new Float64Array(this.nodeUsed.length * 2);
      next.set(this.nodeUsed);
      this.nodeUsed = next;
    }
    let nodeUsed = 0;
    topo.live++;
    topo.invalidateOrder();
    const orphans = this.orphans.get(record.name);
    for (let i = 0; i < count; i++) {
      const flat = first + i;
      topo.budget[flat] = record.devices[i].memoryBudget;
      const entry = orphans?.get(indexes[i]);
      this.usedShare[flat] = entry?.share ?? 0;
      this.usedMemory[flat] = entry?.memory ?? 0;
      topo.flatSlot[flat] = slotNumber;
      nodeUsed += Math.min(this.usedShare[flat], SHARE_UNITS);
      if (entry !== undefined) orphans!.delete(indexes[i]);
    }
    this.nodeUsed[slotNumber] = nodeUsed;
    if (orphans !== undefined && orphans.size === 0) this.orphans.delete(record.name);
    if (slot.ready) this.indexNode(slotNumber);
  }

  /** Rebuilds the topology without garbage ranges (usage moves through the orphan map and back). */
  private rebuild(): void {
    const live = this.topo.slots.filter((s): s is NodeSlot => s !== undefined);
    for (const slot of live) this.keepUsage(slot);
    const records = live.map((s) => s.record);
    this.topo = new Topology();
    this.ownsTopo = true;
    this.usedShare = new Float64Array(64);
    this.usedMemory = new Float64Array(64);
    this.nodeUsed = new Float64Array(64);
    // Flat indexes change: the index is rebuilt on first use.
    this.indexValid = false;
    for (const record of records) this.addSlot(record);
  }

  /** Moves a node's usage to the orphan map (its range is about to go). */
  private keepUsage(slot: NodeSlot): void {
    const name = slot.name;
    for (let i = 0; i < slot.indexes.length; i++) {
      const flat = slot.first + i;
      if (this.usedShare[flat] !== 0 || this.usedMemory[flat] !== 0) {
        const entry = this.orphanEntry(name, slot.indexes[i]);
        entry.share += this.usedShare[flat];
        entry.memory += this.usedMemory[flat];
      }
    }
  }

  private ensureFlat(length: number): void {
    const topo = this.topo;
    if (length <= this.usedShare.length && length <= topo.budget.length && length <= topo.flatSlot.length) return;
    let size = Math.max(64, this.usedShare.length);
    while (size < length) size *= 2;
    const grow = (old: Float64Array): Float64Array<ArrayBuffer> => {
      const next = new Float64Array(size);
      next.set(old.subarray(0, Math.min(old.length, size)));
      return next;
    };
    this.usedShare = grow(this.usedShare);
    this.usedMemory = grow(this.usedMemory);
    topo.budget = grow(topo.budget);
    const flatSlot = new Int32Array(size);
    flatSlot.set(topo.flatSlot.subarray(0, Math.min(topo.flatSlot.length, size)));
    topo.flatSlot = flatSlot;
  }

  private ownTopology(): Topology {
    if (!this.ownsTopo) {
      this.topo = this.topo.copy();
      this.ownsTopo = true;
    }
    return this.topo;
  }

  private assertNoTrial(what: string): void {
    if (this.trialDepth > 0) throw new Error(`Capacity.${what}() inside trial(): only reserve/release can be undone`);
  }
}

/**
 * The ready devices in best-fit rank order (docs/fleet.md "Placement"): free share, then their
 * node's free share, then free memory (least first), then node-name order and device order; kept
 * for the whole fleet (`all`) and, once a sameLabel gang asked for a label, for each group of nodes
 * with one value of it. Each change is a few binary searches and short splices (O(log n + CHUNK))
 * and best fit walks from the first device with enough free share upward instead of scanning the
 * fleet. Each device's keys are the ones its entries were inserted with (keyA/keyB/keyC), so they
 * can be found and removed after the usage changed.
 */
export class FreeIndex {
  /** Keys of each indexed flat device: free share units, its node's free share units, free memory. */
  keyA: Float64Array<ArrayBuffer> = new Float64Array(64);
  keyB: Float64Array<ArrayBuffer> = new Float64Array(64);
  keyC: Float64Array<ArrayBuffer> = new Float64Array(64);
  /** Per slot: 1 when its devices are indexed (a live ready node). */
  indexed = new Uint8Array(64);
  /** Per slot: its node's free share units as indexed (what it adds to its label groups). */
  private nodeFree = new Float64Array(64);
  readonly all: SortedDevices;
  /** The indexed nodes (slot numbers) by free share, least first, then name: sameNode's walk. */
  readonly nodes: SortedDevices;
  /** Label -> its groups; `labelList` holds the same, for loops that must not allocate. */
  private labels = new Map<string, LabelIndex>();
  private labelList: Array<[string, LabelIndex]> = [];

  constructor(private readonly topo: () => Topology) {
    this.all = new SortedDevices(this);
    const index = this;
    this.nodes = new SortedDevices({
      compare: (x, y) => index.nodeFree[x] - index.nodeFree[y] || compareNames(index.topo().slots[x]!.name, index.topo().slots[y]!.name),
      get keyA() {
        return index.nodeFree;
      },
    });
  }


  /** Rank order of two indexed flat devices (negative: x first). */
  compare(x: number, y: number): number {
    const { keyA, keyB, keyC } = this;
    if (keyA[x] !== keyA[y]) return keyA[x] - keyA[y];
    if (keyB[x] !== keyB[y]) return keyB[x] - keyB[y];
    if (keyC[x] !== keyC[y]) return keyC[x] - keyC[y];
    const topo = this.topo();
    const sx = topo.flatSlot[x];
    const sy = topo.flatSlot[y];
    // Devices of one node lie side by side in device order.
    if (sx === sy) return x - y;
    return compareNames(topo.slots[sx]!.name, topo.slots[sy]!.name);
  }

  /** Indexes every device of a live ready node with its keys now (nodeFree: its node's free share units). */
  addNode(slotNumber: number, slot: NodeSlot, freeShare: (flat: number) => number, nodeFree: number, freeMemory: (flat: number) => number): void {
    if (slotNumber < this.indexed.length && this.indexed[slotNumber] === 1) this.removeNode(slotNumber, slot);
    this.ensureSlots(slotNumber + 1);
    this.ensureFlat(slot.first + slot.indexes.length);
    this.indexed[slotNumber] = 1;
    this.nodeFree[slotNumber] = nodeFree;
    this.nodes.insert(slotNumber);
    const end = slot.first + slot.indexes.length;
    for (let flat = slot.first; flat < end; flat++) {
      this.keyA[flat] = freeShare(flat);
      this.keyB[flat] = nodeFree;
      this.keyC[flat] = freeMemory(flat);
      this.all.insert(flat);
    }
    for (let l = 0; l < this.labelList.length; l++) {
      const [label, groups] = this.labelList[l];
      const g = groups.join(slotNumber, slot.record.labels[label]);
      if (g < 0) continue;
      groups.free[g] += nodeFree;
      for (let flat = slot.first; flat < end; flat++) groups.lists[g].insert(flat);
    }
  }

  /** Takes a node's devices out (a no-op for one that is not indexed). */
  removeNode(slotNumber: number, slot: NodeSlot): void {
    if (slotNumber >= this.indexed.length || this.indexed[slotNumber] === 0) return;
    const end = slot.first + slot.indexes.length;
    for (let flat = slot.first; flat < end; flat++) this.all.remove(flat);
    this.nodes.remove(slotNumber);
    for (let l = 0; l < this.labelList.length; l++) {
      const groups = this.labelList[l][1];
      const g = groups.leave(slotNumber);
      if (g < 0) continue;
      groups.free[g] -= this.nodeFree[slotNumber];
      for (let flat = slot.first; flat < end; flat++) groups.lists[g].remove(flat);
    }
    this.indexed[slotNumber] = 0;
  }

  /** New free share and memory of one device of an indexed node whose free share as a node did not change. */
  updateDevice(flat: number, slotNumber: number, freeShare: number, freeMemory: number): void {
    this.all.remove(flat);
    for (let l = 0; l < this.labelList.length; l++) this.labelList[l][1].member(slotNumber)?.remove(flat);
    this.keyA[flat] = freeShare;
    this.keyC[flat] = freeMemory;
    this.all.insert(flat);
    for (let l = 0; l < this.labelList.length; l++) this.labelList[l][1].member(slotNumber)?.insert(flat);
  }

  /** The groups of one label (built on first use from the indexed nodes, then kept current). */
  label(label: string): LabelIndex {
    let groups = this.labels.get(label);
    if (groups === undefined) {
      groups = new LabelIndex(this);
      this.labels.set(label, groups);
      this.labelList.push([label, groups]);
      const topo = this.topo();
      const { slots } = topo;
      const members: number[][] = [];
      for (let s = 0; s < slots.length && s < this.indexed.length; s++) {
        const slot = slots[s];
        if (slot === undefined || this.indexed[s] === 0) continue;
        const g = groups.join(s, slot.record.labels[label]);
        if (g < 0) continue;
        groups.free[g] += this.nodeFree[s];
        members[g] ??= [];
        for (let flat = slot.first; flat < slot.first + slot.indexes.length; flat++) members[g].push(flat);
      }
      // Sorted at once, with name ranks for the name order (compare() would compare the names).
      const { rankOf } = topo.ranks();
      const { keyA, keyB, keyC } = this;
      const { flatSlot } = topo;
      const byRank = (x: number, y: number): number =>
        keyA[x] - keyA[y] || keyB[x] - keyB[y] || keyC[x] - keyC[y] || rankOf[flatSlot[x]] - rankOf[flatSlot[y]] || x - y;
      members.forEach((flats, g) => groups!.lists[g].build(flats.sort(byRank)));
    }
    return groups;
  }

  private ensureSlots(length: number): void {
    if (length <= this.indexed.length) return;
    let size = this.indexed.length;
    while (size < length) size *= 2;
    const indexed = new Uint8Array(size);
    indexed.set(this.indexed);
    this.indexed = indexed;
    const nodeFree = new Float64Array(size);
    nodeFree.set(this.nodeFree);
    this.nodeFree = nodeFree;
  }

  private ensureFlat(length: number): void {
    if (length <= this.keyA.length) return;
    let size = this.keyA.length;
    while (size < length) size *= 2;
    const grow = (old: Float64Array): Float64Array<ArrayBuffer> => {
      const next = new Float64Array(size);
      next.set(old);
      return next;
    };
    this.keyA = grow(this.keyA);
    this.keyB = grow(this.keyB);
    this.keyC = grow(this.keyC);
  }
}

/** The indexed nodes with each value of one label: a rank-ordered list and the free share units of each group. */
export class LabelIndex {
  /** Group number -> label value (groups are numbered as values first appear). */
  values: string[] = [];
  lists: SortedDevices[] = [];
  /** Free share units of each group's indexed nodes (the sameLabel choice: least first). */
  free: number[] = [];
  private byValue = new Map<string, number>();
  private ranks: Int32Array | null = null;
  /** Slot -> group number, -1 when the node is not indexed or has no such label. */
  private slotGroup = new Int32Array(64).fill(-1);

  constructor(private readonly owner: FreeIndex) {}

  /** Records a node's group (creating it for a new value); -1 when the node has no such label. */
  join(slot: number, value: string | undefined): number {
    if (slot >= this.slotGroup.length) {
      let size = this.slotGroup.length;
      while (size <= slot) size *= 2;
      const next = new Int32Array(size).fill(-1);
      next.set(this.slotGroup);
      this.slotGroup = next;
    }
    if (value === undefined) return (this.slotGroup[slot] = -1);
    let g = this.byValue.get(value);
    if (g === undefined) {
      g = this.values.length;
      this.byValue.set(value, g);
      this.values.push(value);
      this.lists.push(new SortedDevices(this.owner));
      this.free.push(0);
    }
    return (this.slotGroup[slot] = g);
  }

  /** Each group's place in label-value order (cached until a new value appears). */
  valueRanks(): Int32Array {
    if (this.ranks === null || this.ranks.length !== this.values.length) {
      const order = this.values.map((_, g) => g).sort((x, y) => compareNames(this.values[x], this.values[y]));
      const ranks = new Int32Array(this.values.length);
      order.forEach((g, i) => (ranks[g] = i));
      this.ranks = ranks;
    }
    return this.ranks;
  }

  /** Forgets a node's group; returns the group it was in (-1: none). */
  leave(slot: number): number {
    if (slot >= this.slotGroup.length) return -1;
    const g = this.slotGroup[slot];
    this.slotGroup[slot] = -1;
    return g;
  }

  /** The list a node's devices are in, if any. */
  member(slot: number): SortedDevices | undefined {
    const g = slot < this.slotGroup.length ? this.slotGroup[slot] : -1;
    return g < 0 ? undefined : this.lists[g];
  }
}

/** An order for SortedDevices: a total order of entries, and the first key it sorts by. */
export interface SortOrder {
  compare(x: number, y: number): number;
  readonly keyA: Float64Array;
}

/**
 * Flat device indexes in FreeIndex.compare order (or slot numbers in another SortOrder): a list of sorted chunks of at most CHUNK
 * entries, so an insert or remove is two binary searches and a short splice.
 */
export class SortedDevices {
  private static readonly CHUNK = 256;
  chunks: number[][] = [];

  /** `index`: the order (compare) and the first key (keyA, what lowerBound searches by). */
  constructor(private readonly index: SortOrder) {}

  /** Fills an empty list with entries already in order. */
  build(sorted: number[]): void {
    const half = SortedDevices.CHUNK >> 1;
    for (let i = 0; i < sorted.length; i += half) this.chunks.push(sorted.slice(i, i + half));
  }

  insert(flat: number): void {
    const chunks = this.chunks;
    if (chunks.length === 0) {
      chunks.push([flat]);
      return;
    }
    const c = this.chunkOf(flat);
    const chunk = chunks[c];
    // Shifted by hand: splice() allocates an array for what it removes, on every call.
    const at = this.position(chunk, flat);
    chunk.push(flat);
    for (let i = chunk.length - 1; i > at; i--) chunk[i] = chunk[i - 1];
    chunk[at] = flat;
    if (chunk.length > SortedDevices.CHUNK) chunks.splice(c + 1, 0, chunk.splice(chunk.length >> 1));
  }

  /** Takes out an entry that was inserted with the keys the device has now in the index. */
  remove(flat: number): void {
    const chunks = this.chunks;
    const c = this.chunkOf(flat);
    const chunk = chunks[c];
    const at = this.position(chunk, flat);
    if (chunk[at] !== flat) throw new Error(`FreeIndex: device ${flat} is not where its keys say`);
    for (let i = at + 1; i < chunk.length; i++) chunk[i - 1] = chunk[i];
    chunk.pop();
    if (chunk.length === 0) chunks.splice(c, 1);
  }

  /** [chunk, offset] of the first device with free share ≥ `share` (chunk = chunks.length when none). */
  lowerBound(share: number): [number, number] {
    const { chunks } = this;
    const keyA = this.index.keyA;
    let lo = 0;
    let hi = chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const chunk = chunks[mid];
      if (keyA[chunk[chunk.length - 1]] < share) lo = mid + 1;
      else hi = mid;
    }
    if (lo === chunks.length) return [lo, 0];
    const chunk = chunks[lo];
    let a = 0;
    let b = chunk.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (keyA[chunk[mid]] < share) a = mid + 1;
      else b = mid;
    }
    return [lo, a];
  }

  /** The first chunk whose last entry does not come before `flat` (or the last chunk). */
  private chunkOf(flat: number): number {
    const chunks = this.chunks;
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const chunk = chunks[mid];
      if (this.index.compare(chunk[chunk.length - 1], flat) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Where `flat` is or would go in a chunk. */
  private position(chunk: number[], flat: number): number {
    let lo = 0;
    let hi = chunk.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.index.compare(chunk[mid], flat) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** The live nodes in name order, as dense arrays indexed by rank (the hot loop of placement reads these, not the slot objects). */
export interface RankIndex {
  slot: Int32Array;
  first: Int32Array;
  count: Int32Array;
  /** 1 when the node's health is 'ready'. */
  ready: Uint8Array;
  /** Slot number -> rank (-1 for a removed slot). */
  rankOf: Int32Array;
}

/** What placement.ts reads: the topology and the usage arrays (read-only by convention). */
export interface CapacityView {
  readonly topo: {
    readonly slots: ReadonlyArray<NodeSlot | undefined>;
    readonly budget: Float64Array;
    /** Slot number of each flat device. */
    readonly flatSlot: Int32Array;
    /** Live slot numbers in node-name order. */
    sorted(): number[];
    /** The same order as dense arrays. */
    ranks(): RankIndex;
    /** Ranks of the nodes with each value of a label. */
    groups(label: string): LabelGroups;
  };
  readonly usedShare: Float64Array;
  readonly usedMemory: Float64Array;
  /** Per slot: sum of min(used share, SHARE_UNITS) over its devices (its free share = devices × SHARE_UNITS − this). */
  readonly nodeUsed: Float64Array;
  /** The ready devices in best-fit rank order. */
  readonly index: FreeIndex;
}

function sameDeviceIndexes(indexes: readonly number[], record: NodeRecord): boolean {
  if (indexes.length !== record.devices.length) return false;
  for (let i = 0; i < indexes.length; i++) if (indexes[i] !== record.devices[i].index) return false;
  return true;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  if (a === b) return true;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const key of keys) if (a[key] !== b[key]) return false;
  return true;
}
