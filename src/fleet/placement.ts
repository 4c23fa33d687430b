// Where a gang goes: pure decisions over a Capacity (nothing is reserved here; the caller
// reserves the placement it commits). Every member of a gang needs `share` of one device's time and
// `memory` of its memory; several members may share a device when it has room for them all (not
// with placement.spread, which asks for distinct nodes).
//
// Best fit (placeGang), to keep fragmentation low:
// - A device's fit for the gang is k = how many members it has room for (share and memory).
// - Devices are ranked by (1) the free share they have now, least first — with identical members,
//   the device a member leaves fullest; (2) the free share of their node, least first — nodes
//   already in use before empty ones, so whole nodes stay free for big and sameNode gangs; (3) the
//   free memory of the device, least first; (4) node-name order, then device order (determinism).
//   Members fill the best device as far as it has room, then the next.
// - spread: the best device of each node (same rank), one member per node, best nodes first.
// - sameNode: the node with the least free share among those with room for the whole gang, then
//   best fit among its devices.
// - sameLabel: each group of nodes with one value of the label is tried (with spread/sameNode/
//   plain as asked); of the groups that can take the gang, the one with the least free share wins
//   (groups already in use first), ties by label value.
// - nodeSelector: only nodes whose labels have those values; always only nodes with health 'ready'.
// First fit (firstFitGang, the benchmark's baseline): the first device with room, in node-name
// order, same constraints (sameLabel: groups in label-value order, the first that takes the gang).
//
// Cost: best fit without sameNode (and, for sameLabel, without nodeSelector) walks the rank index
// kept by Capacity (FreeIndex) from the first device with the gang's share free and stops once
// the gang is placed: a few entries in the common case, no pass over the fleet. sameNode,
// sameLabel with nodeSelector, and first fit (the naive baseline, on purpose) make one pass over
// the eligible devices (O(devices)) with a candidate list of at most `gang` entries.

import { Capacity, CapacityView, MemberPlacement, NodeSlot, SHARE_UNITS, shareUnits, SortedDevices, unitsToShare } from './capacity.js';
import type { JobSpec } from './spec.js';

type Spec = Pick<JobSpec, 'gang' | 'share' | 'memory' | 'placement'>;

/** What one gang asks for, in the units the scan uses. */
interface Request {
  n: number;
  share: number;
  memory: number;
  spread: boolean;
  sameNode: boolean;
  label: string | undefined;
  selector: Array<[string, string]>;
}

function request(spec: Spec): Request {
  const p = spec.placement ?? {};
  return {
    n: spec.gang,
    share: shareUnits(spec.share),
    memory: spec.memory,
    // A gang of one is on distinct nodes and on one node whatever it asks.
    spread: p.spread === true && spec.gang > 1,
    sameNode: p.sameNode === true && spec.gang > 1,
    label: p.sameLabel,
    selector: Object.entries(p.nodeSelector ?? {}),
  };
}

/** Places every member of the gang (best fit, constraints honoured), or null when the whole gang does not fit. Reserves nothing. */
export function placeGang(spec: Spec, capacity: Capacity): MemberPlacement[] | null {
  return place(spec, capacity, true);
}

/** The baseline: the first device with room, in node-name order, same constraints. Reserves nothing. */
export function firstFitGang(spec: Spec, capacity: Capacity): MemberPlacement[] | null {
  return place(spec, capacity, false);
}

function place(spec: Spec, capacity: Capacity, bestFit: boolean): MemberPlacement[] | null {
  const req = request(spec);
  const view = capacity.view();
  if (req.label === undefined) {
    const picked = placeAmong(view, req, null, bestFit);
    return picked === null ? null : toPlacement(view, picked);
  }
  if (bestFit && !req.sameNode && req.selector.length === 0) {
    const picked = placeInGroupByIndex(view, req);
    return picked === null ? null : toPlacement(view, picked);
  }
  const { groups } = view.topo.groups(req.label);
  let best: Picked | null = null;
  for (const group of groups) {
    const picked = placeAmong(view, req, group, bestFit);
    if (picked === null) continue;
    if (!bestFit) return toPlacement(view, picked);
    if (best === null || picked.poolFree < best.poolFree) best = picked;
  }
  return best === null ? null : toPlacement(view, best);
}

/** Devices picked for a gang: slot numbers, flat device indexes and how many members each takes; poolFree: free share units of the eligible nodes scanned (label groups only). */
interface Picked {
  slots: number[];
  flats: number[];
  counts: number[];
  poolFree: number;
}

function toPlacement(view: CapacityView, picked: Picked): MemberPlacement[] {
  const out: MemberPlacement[] = [];
  for (let i = 0; i < picked.flats.length; i++) {
    const slot = view.topo.slots[picked.slots[i]]!;
    const device = slot.indexes[picked.flats[i] - slot.first];
    for (let c = 0; c < picked.counts[i]; c++) out.push({ node: slot.name, device });
  }
  return out;
}

/** Whether a ready node also passes the gang's nodeSelector and has its sameLabel label. */
function eligible(slot: NodeSlot | undefined, req: Request): slot is NodeSlot {
  if (slot === undefined || !slot.ready) return false;
  const labels = slot.record.labels;
  for (const [key, value] of req.selector) if (labels[key] !== value) return false;
  return req.label === undefined || labels[req.label] !== undefined;
}

/** How many members of `req` device `flat` has room for (0 when none), at most `cap`. */
function fits(view: CapacityView, req: Request, flat: number, cap: number): number {
  const freeShare = SHARE_UNITS - view.usedShare[flat];
  if (freeShare < req.share) return 0;
  const freeMemory = view.topo.budget[flat] - view.usedMemory[flat];
  if (freeMemory < req.memory) return 0;
  let k = Math.floor(freeShare / req.share);
  if (req.memory > 0) k = Math.min(k, Math.floor(freeMemory / req.memory));
  return Math.min(k, cap);
}

/** Places the gang on the nodes of `ranks` (null: every node), or null. */
function placeAmong(view: CapacityView, req: Request, ranks: readonly number[] | null, bestFit: boolean): Picked | null {
  if (req.sameNode) return placeOnOneNode(view, req, ranks, bestFit);
  // Best fit over the whole fleet (no sameLabel group): walk the rank index instead of scanning.
  if (bestFit && ranks === null && req.label === undefined) return placeByIndex(view, req);
  // The scan (first fit; best fit within one node or a label group with a nodeSelector): dense
  // typed arrays first; a node's labels and total free share only for a device that could enter the list.
  const { usedShare, usedMemory, nodeUsed } = view;
  const { budget, slots } = view.topo;
  const index = view.topo.ranks();
  const share = req.share;
  const memory = req.memory;
  const perDeviceCap = req.spread ? 1 : req.n;
  // Label groups hold only nodes with the label, and readiness is in the rank index: only a nodeSelector needs the node's labels.
  const filtered = req.selector.length > 0 || (req.label !== undefined && ranks === null);
  const wantPool = bestFit && req.label !== undefined;
  const best = new BestList(req.n, bestFit);
  let poolFree = 0;
  const length = ranks === null ? index.slot.length : ranks.length;
  for (let i = 0; i < length; i++) {
    const r = ranks === null ? i : ranks[i];
    if (index.ready[r] === 0) continue;
    const first = index.first[r];
    const count = index.count[r];
    const end = first + count;
    const nodeFree = count * SHARE_UNITS - nodeUsed[index.slot[r]];
    let checked = !filtered;
    if (wantPool) {
      if (!checked && !eligible(slots[index.slot[r]], req)) continue;
      checked = true;
      poolFree += nodeFree;
    }
    // Whole nodes at once: one with less free share than a member has no device with room; an
    // empty one (every device has all its share free) cannot beat a full list of devices as good.
    if (nodeFree < share) continue;
    if (nodeFree === count * SHARE_UNITS) {
      // Every device has key (SHARE_UNITS, nodeFree, its free memory).
      if (SHARE_UNITS > best.limitA) continue;
      if (SHARE_UNITS === best.limitA) {
        if (nodeFree > best.limitB) continue;
        if (nodeFree === best.limitB && count === 1 && budget[first] - usedMemory[first] >= best.limitC) continue;
      }
    }
    if (req.spread) {
      // The node's best device (least free share, then least free memory, then device order).
      let pick = -1;
      let pickShare = 0;
      let pickMemory = 0;
      for (let flat = first; flat < end; flat++) {
        const freeShare = SHARE_UNITS - usedShare[flat];
        if (freeShare < share) continue;
        const freeMemory = budget[flat] - usedMemory[flat];
        if (freeMemory < memory) continue;
        if (pick < 0 || (bestFit && (freeShare < pickShare || (freeShare === pickShare && freeMemory < pickMemory)))) {
          pick = flat;
          pickShare = freeShare;
          pickMemory = freeMemory;
          if (!bestFit) break;
        }
      }
      if (pick < 0 || !less(pickShare, nodeFree, pickMemory, best.limitA, best.limitB, best.limitC)) continue;
      if (!checked && !eligible(slots[index.slot[r]], req)) continue;
      best.offer(index.slot[r], pick, 1, pickShare, nodeFree, pickMemory);
    } else {
      for (let flat = first; flat < end; flat++) {
        const freeShare = SHARE_UNITS - usedShare[flat];
        if (freeShare < share) continue;
        const freeMemory = budget[flat] - usedMemory[flat];
        if (freeMemory < memory || freeShare > best.limitA) continue;
        if (freeShare === best.limitA && (nodeFree > best.limitB || (nodeFree === best.limitB && freeMemory >= best.limitC))) continue;
        if (!checked) {
          if (!eligible(slots[index.slot[r]], req)) break;
          checked = true;
        }
        let k = Math.floor(freeShare / share);
        if (memory > 0) k = Math.min(k, Math.floor(freeMemory / memory));
        best.offer(index.slot[r], flat, Math.min(k, perDeviceCap), freeShare, nodeFree, freeMemory);
        if (!bestFit && best.full()) break;
      }
    }
    if (!bestFit && best.full()) break; // first fit: done
  }
  if (!best.full()) return null;
  return { slots: best.slots, flats: best.flats, counts: best.takes(), poolFree };
}

/**
 * Best fit by the rank index (capacity.ts FreeIndex: ready devices in rank order): walks from the
 * first device with the gang's share free upward, takes each device with room (spread: only each
 * node's first, which is its best device, as a node's devices keep their own order within the
 * ranking), and stops as soon as the gang is placed. Devices with the share but not the memory,
 * or off the nodeSelector, are stepped over; the common case reads a handful of entries.
 */
function placeByIndex(view: CapacityView, req: Request, list: SortedDevices = view.index.all, poolFree = 0): Picked | null {
  const { keyA, keyC } = view.index;
  const { chunks } = list;
  const { flatSlot, slots: nodeSlots } = view.topo;
  const { share, memory } = req;
  const filtered = req.selector.length > 0;
  const taken = req.spread ? new Set<number>() : null;
  const slots: number[] = [];
  const flats: number[] = [];
  const counts: number[] = [];
  let left = req.n;
  let [c, offset] = list.lowerBound(share);
  for (; c < chunks.length; c++, offset = 0) {
    const chunk = chunks[c];
    for (; offset < chunk.length; offset++) {
      const flat = chunk[offset];
      const freeMemory = keyC[flat];
      if (freeMemory < memory) continue;
      const slot = flatSlot[flat];
      if (taken !== null) {
        if (taken.has(slot)) continue;
        taken.add(slot);
      }
      if (filtered && !eligible(nodeSlots[slot], req)) continue;
      let k = taken !== null ? 1 : Math.floor(keyA[flat] / share);
      if (memory > 0) k = Math.min(k, Math.floor(freeMemory / memory));
      k = Math.min(k, left);
      slots.push(slot);
      flats.push(flat);
      counts.push(k);
      left -= k;
      if (left === 0) return { slots, flats, counts, poolFree };
    }
  }
  return null;
}

/**
 * sameLabel best fit (no nodeSelector, not sameNode) by the per-label index: the same choice as
 * trying every group, as the group with the least free share (ties: label-value order) among those
 * that can take the gang wins: groups are tried in that order, each by its own rank-ordered list,
 * and the first that takes the gang is the answer. Groups with less free share than the gang needs
 * are not walked at all.
 */
function placeInGroupByIndex(view: CapacityView, req: Request): Picked | null {
  const groups = view.index.label(req.label!);
  const need = req.share * req.n;
  const rank = groups.valueRanks();
  const candidates: number[] = [];
  for (let g = 0; g < groups.values.length; g++) if (groups.free[g] >= need && groups.lists[g].chunks.length > 0) candidates.push(g);
  // Least free share first (ties: value order), picked one at a time: the first usually takes it,
  // so sorting every group (hundreds of racks) for every gang would be wasted.
  while (candidates.length > 0) {
    let at = 0;
    for (let i = 1; i < candidates.length; i++) {
      const g = candidates[i];
      const b = candidates[at];
      if (groups.free[g] < groups.free[b] || (groups.free[g] === groups.free[b] && rank[g] < rank[b])) at = i;
    }
    const g = candidates[at];
    const picked = placeByIndex(view, req, groups.lists[g], groups.free[g]);
    if (picked !== null) return picked;
    candidates[at] = candidates[candidates.length - 1];
    candidates.pop();
  }
  return null;
}

/** sameNode: the node (least free share first, or the first in name order) with room for the whole gang; best/first fit on its devices. */
function placeOnOneNode(view: CapacityView, req: Request, ranks: readonly number[] | null, bestFit: boolean): Picked | null {
  const index = view.topo.ranks();
  if (bestFit && ranks === null) {
    // Walk the nodes by free share from the least that could hold the gang: the first with room wins.
    const { chunks } = view.index.nodes;
    let [c, offset] = view.index.nodes.lowerBound(req.share * req.n);
    for (; c < chunks.length; c++, offset = 0) {
      const chunk = chunks[c];
      for (; offset < chunk.length; offset++) {
        const slot = chunk[offset];
        const node = view.topo.slots[slot]!;
        if (!eligible(node, req)) continue;
        let room = 0;
        for (let flat = node.first; flat < node.first + node.indexes.length && room < req.n; flat++) room += fits(view, req, flat, req.n);
        if (room >= req.n) return placeAmong(view, { ...req, sameNode: false, label: undefined, selector: [] }, [index.rankOf[slot]], bestFit);
      }
    }
    return null;
  }
  let chosen = -1;
  let chosenFree = 0;
  let poolFree = 0;
  const length = ranks === null ? index.slot.length : ranks.length;
  for (let i = 0; i < length; i++) {
    const r = ranks === null ? i : ranks[i];
    if (index.ready[r] === 0) continue;
    const first = index.first[r];
    const count = index.count[r];
    const nodeFree = count * SHARE_UNITS - view.nodeUsed[index.slot[r]];
    if (nodeFree < req.share * req.n && !(bestFit && req.label !== undefined)) continue; // cannot hold the gang
    if (!eligible(view.topo.slots[index.slot[r]], req)) continue;
    poolFree += nodeFree;
    if (chosen >= 0 && !bestFit) break;
    if (chosen >= 0 && nodeFree >= chosenFree) continue;
    let room = 0;
    for (let flat = first; flat < first + count && room < req.n; flat++) room += fits(view, req, flat, req.n);
    if (room >= req.n) {
      chosen = r;
      chosenFree = nodeFree;
    }
  }
  if (chosen < 0) return null;
  const picked = placeAmong(view, { ...req, sameNode: false, label: undefined, selector: [] }, [chosen], bestFit);
  return picked === null ? null : { ...picked, poolFree };
}

/**
 * The best devices seen so far, at most enough of them to take `need` members: entries in rank
 * order (keys a, b, c ascending; equal keys keep arrival order, which is name order). In first-fit
 * mode the rank is arrival order alone.
 */
class BestList {
  slots: number[] = [];
  flats: number[] = [];
  counts: number[] = [];
  private a: number[] = [];
  private b: number[] = [];
  private c: number[] = [];
  private total = 0;
  /**
   * The key a device must beat to enter (read inline by the hot loop): +Infinity while the list
   * has not room for the gang yet; the last entry's key once it has (best fit); -Infinity once it
   * has (first fit: nothing more enters).
   */
  limitA = Infinity;
  limitB = Infinity;
  limitC = Infinity;

  constructor(
    private readonly need: number,
    private readonly bestFit: boolean,
  ) {}

  full(): boolean {
    return this.total >= this.need;
  }

  offer(slot: number, flat: number, k: number, a: number, b: number, c: number): void {
    let at = this.flats.length;
    if (this.bestFit) {
      while (at > 0 && less(a, b, c, this.a[at - 1], this.b[at - 1], this.c[at - 1])) at--;
    }
    if (at === this.flats.length && this.full()) return;
    this.slots.splice(at, 0, slot);
    this.flats.splice(at, 0, flat);
    this.counts.splice(at, 0, k);
    this.a.splice(at, 0, a);
    this.b.splice(at, 0, b);
    this.c.splice(at, 0, c);
    // Keep only the prefix that takes `need` members.
    let sum = 0;
    for (let i = 0; i < this.counts.length; i++) {
      sum += this.counts[i];
      if (sum >= this.need) {
        const keep = i + 1;
        this.slots.length = this.flats.length = this.counts.length = this.a.length = this.b.length = this.c.length = keep;
        break;
      }
    }
    this.total = sum;
    if (sum >= this.need) {
      const last = this.a.length - 1;
      this.limitA = this.bestFit ? this.a[last] : -Infinity;
      this.limitB = this.bestFit ? this.b[last] : -Infinity;
      this.limitC = this.bestFit ? this.c[last] : -Infinity;
    }
  }

  /** Members each kept device takes (the last one only what is still needed). */
  takes(): number[] {
    const out: number[] = [];
    let left = this.need;
    for (const k of this.counts) {
      out.push(Math.min(k, left));
      left -= Math.min(k, left);
    }
    return out;
  }
}

function less(a: number, b: number, c: number, a2: number, b2: number, c2: number): boolean {
  return a < a2 || (a === a2 && (b < b2 || (b === b2 && c < c2)));
}

/** A one-line reason why the gang does not fit now, for a pending job's message (one pass over the fleet; says "fit now" when it does fit). */
export function explainUnplaceable(spec: Spec, capacity: Capacity): string {
  const req = request(spec);
  const view = capacity.view();
  const what = `share ${formatShare(req.share)} and ${formatMemory(req.memory)}`;
  const members = `${req.n} member${req.n === 1 ? '' : 's'}`;
  // Nodes that may take it at all.
  let nodes = 0;
  for (const s of view.topo.sorted()) if (eligible(view.topo.slots[s], req)) nodes++;
  if (nodes === 0) {
    const conditions: string[] = [];
    if (req.selector.length > 0) conditions.push(`matching nodeSelector ${req.selector.map(([k, v]) => `${k}=${v}`).join(',')}`);
    if (req.label !== undefined) conditions.push(`with label ${req.label}`);
    return `no ready node${conditions.length > 0 ? ` ${conditions.join(' and ')}` : ''}`;
  }

  // Room per pool: the whole fleet, or each label group (the best one is reported).
  const sorted = view.topo.sorted();
  const pools: Array<{ name: string; order: readonly number[] }> =
    req.label === undefined
      ? [{ name: '', order: sorted }]
      : view.topo.groups(req.label).groups.map((ranks, i) => ({ name: `${req.label}=${view.topo.groups(req.label!).values[i]}`, order: ranks.map((r) => sorted[r]) }));
  let bestRoom = -1;
  let bestPool = '';
  let shareOnly = 0;
  for (const pool of pools) {
    let room = 0;
    for (const s of pool.order) {
      const slot = view.topo.slots[s];
      if (!eligible(slot, req)) continue;
      let nodeRoom = 0;
      for (let flat = slot.first; flat < slot.first + slot.indexes.length; flat++) {
        const k = fits(view, req, flat, req.spread ? 1 : req.n);
        nodeRoom += k;
        if (k === 0 && SHARE_UNITS - view.usedShare[flat] >= req.share) shareOnly++;
      }
      if (req.spread) room += Math.min(nodeRoom, 1);
      else if (req.sameNode) room = Math.max(room, nodeRoom);
      else room += nodeRoom;
    }
    if (room > bestRoom) {
      bestRoom = room;
      bestPool = pool.name;
    }
  }
  // Room is counted as placement counts it, so room for the whole gang in one pool means it fits.
  if (bestRoom >= req.n) return `${members} of ${what} fit now`;
  const where = req.label === undefined ? '' : ` with one value of label ${req.label}`;
  const best = req.label === undefined ? '' : ` (best: ${bestPool})`;
  let line: string;
  if (req.spread) line = `needs ${req.n} nodes${where} with ${what} free on one device; ${bestRoom} ${bestRoom === 1 ? 'has' : 'have'} it${best}`;
  else if (req.sameNode) line = `needs one node${where} with room for ${members} of ${what}; the best has room for ${bestRoom}${best}`;
  else line = `needs room for ${members} of ${what} each${where}; ${req.label === undefined ? 'the fleet has' : 'the best value has'} room for ${bestRoom}${best}`;
  if (shareOnly > 0) line += `; ${shareOnly} device${shareOnly === 1 ? ' has' : 's have'} the share free but not the memory`;
  return line;
}

function formatShare(units: number): string {
  return String(Number(unitsToShare(units).toFixed(6)));
}

function formatMemory(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number(value.toFixed(1))} ${units[unit]}`;
}
