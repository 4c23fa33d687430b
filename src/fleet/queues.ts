// Hierarchical queues: quotas (guaranteed, limit), borrowing, and the order pending jobs are
// tried in. Pure and in memory; the scheduler charges a queue when it binds (or resumes) a job and
// credits it when the job is suspended or ends.
//
// - "a/b" is a child of "a". A queue that has no spec (a job names it, or only a child of it has
//   a spec) is implicit: guaranteed 0, limit none, weight 1, under its parent if any.
// - A queue's usage is the device shares in use by its whole subtree (a job uses gang × share).
//   Shares are counted in integer units (capacity.ts SHARE_UNITS), so sums are exact.
// - limit: a queue and every ancestor with a limit must stay within it (admits).
// - guarantee: a queue is within its guarantee when its usage ≤ guaranteed, and so is every
//   ancestor that guarantees something (guaranteed > 0: a parent's guarantee bounds what its
//   children together are guaranteed; a parent with none — implicit, or only a limit or weight —
//   does not constrain them). A job that takes its queue beyond that is borrowing idle quota;
//   borrowed capacity is what reclaim takes back (reclaim.ts).
// - order (fair share): see QueueTree.order.

import { shareUnits, unitsToShare } from './capacity.js';
import type { JobRecord } from './records.js';
import type { QueueSpec } from './spec.js';

interface QueueNode {
  name: string;
  parent: QueueNode | null;
  children: QueueNode[];
  /** Whether a spec names it (else implicit). */
  explicit: boolean;
  guaranteed: number;
  limit: number | null;
  weight: number;
  /** Share units in use by the subtree. */
  usage: number;
  /** Share units in use by jobs of this queue itself (not its children). */
  own: number;
}

/** The parent path of a queue path ("a/b" -> "a", "a" -> null). */
export function parentQueue(name: string): string | null {
  const at = name.lastIndexOf('/');
  return at < 0 ? null : name.slice(0, at);
}

export class QueueTree {
  private readonly byName = new Map<string, QueueNode>();
  /** Top-level queues. */
  private readonly roots: QueueNode[] = [];

  constructor(specs: readonly QueueSpec[]) {
    for (const spec of specs) {
      const node = this.node(spec.name);
      node.explicit = true;
      node.guaranteed = shareUnits(spec.guaranteed ?? 0);
      node.limit = spec.limit === null || spec.limit === undefined ? null : shareUnits(spec.limit);
      node.weight = spec.weight ?? 1;
    }
  }

  /** Device shares in use by the queue's subtree. */
  usage(queue: string): number {
    return unitsToShare(this.node(queue).usage);
  }

  /** Counts `share` (a job's gang × share) as used by the queue and its ancestors. */
  charge(queue: string, share: number): void {
    this.add(this.node(queue), shareUnits(share));
  }

  /** Undoes charge(). */
  credit(queue: string, share: number): void {
    this.add(this.node(queue), -shareUnits(share));
  }

  guaranteed(queue: string): number {
    return unitsToShare(this.node(queue).guaranteed);
  }

  /** The queue's limit (device shares), null when none. */
  limit(queue: string): number | null {
    const limit = this.node(queue).limit;
    return limit === null ? null : unitsToShare(limit);
  }

  /** Would the queue be within its guarantee with `extraShare` more — and every ancestor that guarantees something (guaranteed > 0) too. */
  underGuarantee(queue: string, extraShare: number): boolean {
    const extra = shareUnits(extraShare);
    const leaf = this.node(queue);
    for (let q: QueueNode | null = leaf; q !== null; q = q.parent) {
      if ((q === leaf || q.guaranteed > 0) && q.usage + extra > q.guaranteed) return false;
    }
    return true;
  }

  /** Whether the queue is using more than its guarantee now (a borrower, whose jobs reclaim may take back). */
  borrowing(queue: string): boolean {
    const node = this.node(queue);
    return node.usage > node.guaranteed;
  }

  /** May a job of `share` (gang × share) start in the queue: within the limit of the queue and of every ancestor; borrowing = beyond its guarantee (underGuarantee false). */
  admits(queue: string, share: number): { ok: true; borrowing: boolean } | { ok: false; reason: string } {
    const extra = shareUnits(share);
    for (let q: QueueNode | null = this.node(queue); q !== null; q = q.parent) {
      if (q.limit !== null && q.usage + extra > q.limit) {
        return {
          ok: false,
          reason: `queue ${q.name} uses ${fmt(q.usage)} of its limit ${fmt(q.limit)}; the job needs ${fmt(extra)} more`,
        };
      }
    }
    return { ok: true, borrowing: !this.underGuarantee(queue, share) };
  }

  /**
   * The order in which to try pending jobs. Fair share, then priority, then FIFO:
   * - Queues are chosen top-down: among sibling queues that have pending jobs in their subtree
   *   (and the parent's own jobs, counted as one more sibling with no guarantee and weight 1),
   *   the one furthest below its fair share goes first. A queue under its guarantee (usage <
   *   guaranteed) comes before any that is not, ordered by usage / guaranteed; the others by usage /
   *   weight (weighted fair share of what is left over). Ties: queue name.
   * - Within a queue: higher spec.priority first, then earlier submittedAt, then id.
   * - Each job taken counts its gang × share as used by its queue for the rest of the ordering,
   *   so queues interleave by fair share instead of one draining first.
   * Deterministic: the same jobs and usage give the same order. O(jobs × queues on the path).
   */
  order(pending: readonly JobRecord[]): JobRecord[] {
    const jobsOf = new Map<QueueNode, JobRecord[]>();
    for (const job of pending) {
      const node = this.node(job.spec.queue);
      let list = jobsOf.get(node);
      if (list === undefined) jobsOf.set(node, (list = []));
      list.push(job);
    }
    const waiting = new Map<QueueNode, number>();
    for (const [node, list] of jobsOf) {
      list.sort(
        (a, b) => b.spec.priority - a.spec.priority || a.submittedAt - b.submittedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
      );
      list.reverse(); // pop() from the end takes the next one
      for (let q: QueueNode | null = node; q !== null; q = q.parent) waiting.set(q, (waiting.get(q) ?? 0) + list.length);
    }
    // Usage as the ordering goes (real usage plus the jobs already taken).
    const usage = new Map<QueueNode, number>();
    const own = new Map<QueueNode, number>();
    const usageOf = (q: QueueNode): number => usage.get(q) ?? q.usage;
    const ownOf = (q: QueueNode): number => own.get(q) ?? q.own;

    const out: JobRecord[] = [];
    while (out.length < pending.length) {
      let parent: QueueNode | null = null;
      let children = this.roots;
      let chosen: QueueNode;
      for (;;) {
        let best: QueueNode | null = null;
        let bestTier = 0;
        let bestRatio = 0;
        let self = false;
        // The parent's own jobs compete as a sibling with no guarantee and weight 1.
        if (parent !== null && (jobsOf.get(parent)?.length ?? 0) > 0) {
          best = parent;
          bestTier = 1;
          bestRatio = ownOf(parent);
          self = true;
        }
        for (const child of children) {
          if ((waiting.get(child) ?? 0) === 0) continue;
          const u = usageOf(child);
          const tier = u < child.guaranteed ? 0 : 1;
          const ratio = tier === 0 ? u / child.guaranteed : u / child.weight;
          if (best === null || tier < bestTier || (tier === bestTier && (ratio < bestRatio || (ratio === bestRatio && child.name < best.name)))) {
            best = child;
            bestTier = tier;
            bestRatio = ratio;
            self = false;
          }
        }
        if (best === null) throw new Error('QueueTree.order: lost track of pending jobs');
        if (self) {
          chosen = best;
          break;
        }
        parent = best;
        children = best.children;
        if (best.children.every((c) => (waiting.get(c) ?? 0) === 0)) {
          chosen = best;
          break;
        }
      }
      const job = jobsOf.get(chosen)!.pop()!;
      out.push(job);
      const units = shareUnits(job.spec.gang * job.spec.share);
      own.set(chosen, ownOf(chosen) + units);
      for (let q: QueueNode | null = chosen; q !== null; q = q.parent) {
        usage.set(q, usageOf(q) + units);
        waiting.set(q, waiting.get(q)! - 1);
      }
    }
    return out;
  }

  /** The queue's node, created (implicit, with implicit ancestors) when no spec named it. */
  private node(name: string): QueueNode {
    let node = this.byName.get(name);
    if (node !== undefined) return node;
    const parentName = parentQueue(name);
    const parent = parentName === null ? null : this.node(parentName);
    node = { name, parent, children: [], explicit: false, guaranteed: 0, limit: null, weight: 1, usage: 0, own: 0 };
    this.byName.set(name, node);
    (parent === null ? this.roots : parent.children).push(node);
    return node;
  }

  private add(leaf: QueueNode, units: number): void {
    leaf.own += units;
    for (let q: QueueNode | null = leaf; q !== null; q = q.parent) q.usage += units;
  }
}

function fmt(units: number): string {
  return String(Number(unitsToShare(units).toFixed(6)));
}
