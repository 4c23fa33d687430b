// Reclaim: which running jobs to suspend (swap out, never kill) so that a pending job can be
// placed. Pure: decides over a Capacity and a QueueTree and changes neither (it tries its choices
// inside capacity.trial(), which undoes them).
//
// Rules (docs/fleet.md):
// - Only jobs with spec.preemptible are ever victims, and never the job itself.
// - Eligible: (a) jobs of other queues that use more than their guarantee (borrowers), when the
//   job's queue would still be within its guarantee with the job added; a borrower stops being
//   eligible once the victims already taken bring its queue down to its guarantee (reclaim takes
//   back borrowed capacity, not guaranteed capacity). (b) jobs of the job's own queue with a lower
//   spec.priority.
// - Preference: borrowers (a) before own-queue jobs (b); then the lowest priority; then the newest
//   (latest submittedAt; id breaks ties).
// - Fewest victims: the shortest prefix of that order that makes room (found by doubling, then
//   bisecting: room only grows as victims are added), then every victim that is not needed after
//   all is dropped, the least preferred first.
// - The queue limit is the caller's to check (QueueTree.admits) before asking.

import type { Capacity, MemberPlacement } from './capacity.js';
import { placeGang } from './placement.js';
import type { QueueTree } from './queues.js';
import type { JobRecord } from './records.js';
import { shareUnits } from './capacity.js';

export interface RunningJob {
  job: JobRecord;
  placement: ReadonlyArray<MemberPlacement>;
}

/**
 * Running jobs to suspend so that `job` fits (most preferred first); [] when it fits already; null
 * when no eligible set makes room. `running`: jobs whose placement is reserved in `capacity` and
 * charged to `queues` now (others are skipped by the rules above, not checked).
 */
export function selectVictims(job: JobRecord, running: readonly RunningJob[], capacity: Capacity, queues: QueueTree): JobRecord[] | null {
  if (placeGang(job.spec, capacity) !== null) return [];
  const queue = job.spec.queue;
  const reclaimsBorrowed = queues.underGuarantee(queue, job.spec.gang * job.spec.share);

  // Candidates, in preference order. Those on nodes the job could not use anyway free nothing useful.
  const usable = usableNodes(job, capacity);
  const borrowers: RunningJob[] = [];
  const lower: RunningJob[] = [];
  for (const entry of running) {
    const spec = entry.job.spec;
    if (!spec.preemptible || entry.job.id === job.id || entry.placement.length === 0) continue;
    if (!entry.placement.some((m) => usable(m.node))) continue;
    if (spec.queue === queue) {
      if (spec.priority < job.spec.priority) lower.push(entry);
    } else if (reclaimsBorrowed && queues.borrowing(spec.queue)) {
      borrowers.push(entry);
    }
  }
  const preference = (a: RunningJob, b: RunningJob): number =>
    a.job.spec.priority - b.job.spec.priority || b.job.submittedAt - a.job.submittedAt || (a.job.id < b.job.id ? 1 : a.job.id > b.job.id ? -1 : 0);
  borrowers.sort(preference);
  lower.sort(preference);

  // Borrowers stay eligible only while their queue is over its guarantee (counting the victims taken before them).
  const takenFrom = new Map<string, number>();
  const candidates: RunningJob[] = [];
  for (const entry of borrowers) {
    const q = entry.job.spec.queue;
    const taken = takenFrom.get(q) ?? 0;
    if (shareUnits(queues.usage(q)) - taken <= shareUnits(queues.guaranteed(q))) continue;
    takenFrom.set(q, taken + shareUnits(entry.job.spec.gang * entry.job.spec.share));
    candidates.push(entry);
  }
  candidates.push(...lower);
  if (candidates.length === 0) return null;

  return capacity.trial(() => {
    const base = capacity.mark();
    /** Whether the job fits with the first `count` candidates released. */
    const fitsWith = (count: number): boolean => {
      capacity.undo(base);
      for (let i = 0; i < count; i++) capacity.release(candidates[i].job.spec, candidates[i].placement);
      return placeGang(job.spec, capacity) !== null;
    };
    // Doubling then bisecting for the shortest prefix that makes room.
    let high = 1;
    while (high < candidates.length && !fitsWith(high)) high *= 2;
    high = Math.min(high, candidates.length);
    if (!fitsWith(high)) return null;
    let low = Math.floor(high / 2); // fitsWith(low) is false (or low = 0: nothing released does not fit)
    while (high - low > 1) {
      const mid = (low + high) >> 1;
      if (fitsWith(mid)) high = mid;
      else low = mid;
    }
    // Drop the victims not needed after all, least preferred first (the last one is needed).
    capacity.undo(base);
    const chosen = candidates.slice(0, high);
    for (const entry of chosen) capacity.release(entry.job.spec, entry.placement);
    const kept: boolean[] = chosen.map(() => true);
    for (let i = chosen.length - 2; i >= 0; i--) {
      capacity.reserve(chosen[i].job.spec, chosen[i].placement);
      if (placeGang(job.spec, capacity) !== null) kept[i] = false;
      else capacity.release(chosen[i].job.spec, chosen[i].placement);
    }
    return chosen.filter((_, i) => kept[i]).map((entry) => entry.job);
  });
}

/** Which nodes the job may use at all (ready, nodeSelector, has the sameLabel label). */
function usableNodes(job: JobRecord, capacity: Capacity): (node: string) => boolean {
  const placement = job.spec.placement ?? {};
  const selector = Object.entries(placement.nodeSelector ?? {});
  const cache = new Map<string, boolean>();
  return (name) => {
    let ok = cache.get(name);
    if (ok === undefined) {
      const record = capacity.node(name);
      ok =
        record !== undefined &&
        record.health === 'ready' &&
        selector.every(([k, v]) => record.labels[k] === v) &&
        (placement.sameLabel === undefined || record.labels[placement.sameLabel] !== undefined);
      cache.set(name, ok);
    }
    return ok;
  };
}

/** One member to move: from where its process runs to a device of another node. */
export interface PlannedMove {
  job: JobRecord;
  member: number;
  from: MemberPlacement;
  to: MemberPlacement;
}

/**
 * Reclaim by migration: members of running jobs to move, live, to other nodes so that `job` fits
 * (no progress lost, nobody suspended); [] when it fits already; null when moving cannot make room.
 * `running`: jobs that may be moved (movable, running, no move under way), reserved in `capacity`.
 * `allowed(job, member, node?)`: whether that member may move (at all, or to that node): the
 * scheduler moves a member only from the node that runs its program (once). Pure: the capacity is
 * left as it was.
 *
 * The plan, simple on purpose: (1) take every candidate member off the nodes the job could use and
 * place the job (best fit); (2) with the job reserved there, put each candidate back where it is
 * when it still fits (largest first), so only the members in the way move; (3) place each of those
 * (best fit, its own nodeSelector) on another node. Members of jobs with sameNode, sameLabel or
 * spread (gangs of more than one) are not moved: a single member moving could break the rule.
 * At most one member per job is moved at a time (the rest move on a later pass).
 */
export function selectMoves(job: JobRecord, running: readonly RunningJob[], capacity: Capacity, allowed: (job: JobRecord, member: number, node?: string) => boolean): PlannedMove[] | null {
  if (placeGang(job.spec, capacity) !== null) return [];
  const usable = usableNodes(job, capacity);
  const candidates: Array<{ job: JobRecord; member: number; from: MemberPlacement }> = [];
  for (const entry of running) {
    const spec = entry.job.spec;
    if (spec.movable === false || entry.job.id === job.id) continue;
    const rules = spec.placement ?? {};
    if (spec.gang > 1 && (rules.sameNode || rules.sameLabel !== undefined || rules.spread)) continue;
    entry.placement.forEach((from, member) => {
      if (usable(from.node) && allowed(entry.job, member)) candidates.push({ job: entry.job, member, from });
    });
  }
  if (candidates.length === 0) return null;
  return capacity.trial(() => {
    for (const c of candidates) capacity.release(c.job.spec, [c.from]);
    const target = placeGang(job.spec, capacity);
    if (!target) return null;
    capacity.reserve(job.spec, target);
    // Largest first: the members hardest to place elsewhere stay where they are when they can.
    const order = candidates.slice().sort((a, b) => b.job.spec.share - a.job.spec.share || b.job.spec.memory - a.job.spec.memory);
    const inTheWay: typeof candidates = [];
    for (const c of order) {
      if (capacity.fits(c.job.spec, [c.from])) capacity.reserve(c.job.spec, [c.from]);
      else inTheWay.push(c);
    }
    const moves: PlannedMove[] = [];
    const moving = new Set<string>();
    for (const c of inTheWay) {
      const spec = c.job.spec;
      const single = { ...spec, gang: 1, placement: spec.placement?.nodeSelector ? { nodeSelector: spec.placement.nodeSelector } : {} };
      const [to] = placeGang(single, capacity) ?? [];
      if (!to || to.node === c.from.node || !allowed(c.job, c.member, to.node)) return null;
      capacity.reserve(spec, [to]);
      if (moving.has(c.job.id)) continue; // its next member moves once this one has
      moving.add(c.job.id);
      moves.push({ job: c.job, member: c.member, from: c.from, to });
    }
    return moves.length > 0 ? moves : null;
  });
}
