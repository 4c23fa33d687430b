// A sighting: the runs that one poll of Dawn reported complete, and how the device time they took
// together is split among them.
//
// The host learns of a completion only when Dawn is polled, and one poll often reports several
// runs. Timed from the moment each was seen, the first of them seemed to have taken all the time
// since it started and the others none (each "started" when the run ahead of it was seen done).
// On Dawn's GL backends over llvmpipe the submit itself runs the kernel, so both runs in flight
// are done by the next poll nearly every time (in scheduler.test's tenant case, 3238 of 3242 polls
// reported two runs): fair sharing then charged processes by their order of issue, not by their
// work, and the cost models learned from a double sample and an empty one in turn. A process that
// kept being issued second was charged almost nothing: one tenant's process was seen charged 7 ms
// of each 500 ms window while the other tenant's three were charged the rest (CI, 2026-12-06).
//
// So the dispatcher accounts the runs a poll reported together once all of them are in, splitting
// the time from the first run's start to the sighting among them in queue order, no run charged
// from before its issue (the device may have idled in between), by what is known of each:
// - the time the host spent inside its issue calls, where those calls took most of the time: the
//   device ran the work in them (GL over llvmpipe), so that is the work's own time (the dispatcher
//   times issue calls on GL backends only: elsewhere a submit queues the work and returns);
// - else its forecast (its pipelines' cost models), when every run has one;
// - else equal parts.
// A cost model learns from a run's share only where the share did not come from the cost models
// (a run seen alone, or a split by issue time): learning from its own forecast's share, a model
// that forecast low was charged low and kept forecasting low (a process charged 15 ms of 500 while
// it ran most of the device, in the first version of this split).

/** The facts of a sighted run the split needs. */
export interface SightedRun {
  /** When its first piece was issued (ns). */
  readonly firstIssuedAtNs: number;
  /** Its forecast device time (ns), or null when some piece had none. */
  readonly costNs: number | null;
  /** Time the host spent inside its pieces' issue calls (ns). */
  readonly issueNs: number;
}

/** What a sighting's time was split by (Sighting.split). */
export const enum SplitBasis {
  /** One run: it took all of it. */
  Alone,
  /** The runs' issue times: the device ran the work inside the calls. */
  Issue,
  Forecast,
  Equal,
}

/** Issue calls that took at least this fraction of a sighting's time ran its work themselves. */
const RAN_IN_ISSUE_FRACTION = 0.5;

export class Sighting<Run extends SightedRun> {
  /** Runs in queue order; the first `count` slots are this sighting's (the arrays are reused, not reallocated). */
  count = 0;
  readonly runs: Array<Run | null> = [];
  /** Per run: when the items it finished were first enqueued (NaN: none), for the trace. */
  readonly enqueuedNs: number[] = [];
  /** Per run, after split(): the device time charged to it, from startNs to endNs. */
  readonly startNs: number[] = [];
  readonly endNs: number[] = [];
  /** When the first run started: its issue, or the end of the work ahead of it, whichever was later. */
  private fromNs = 0;
  /** When the host saw the last run complete. */
  private seenNs = 0;

  /** Adds the next run the poll reported, seen at `seenNs`; `aheadEndedNs` (the first's): when the work ahead of it was seen done. */
  add(run: Run, enqueuedNs: number, seenNs: number, aheadEndedNs: number): void {
    const at = this.count++;
    if (at === 0) this.fromNs = Math.max(run.firstIssuedAtNs, aheadEndedNs);
    this.seenNs = seenNs;
    if (at < this.runs.length) {
      this.runs[at] = run;
      this.enqueuedNs[at] = enqueuedNs;
    } else {
      this.runs.push(run);
      this.enqueuedNs.push(enqueuedNs);
      this.startNs.push(0);
      this.endNs.push(0);
    }
  }

  /**
   * Splits the time from the first run's start to the sighting among the runs (startNs, endNs):
   * each in turn gets its weight's share of what is left, starting when the run ahead of it ends
   * or when it was issued, whichever is later. Returns what the weights were.
   */
  split(): SplitBasis {
    const n = this.count;
    const basis = this.basis();
    let weightLeft = 0;
    for (let i = 0; i < n; i++) weightLeft += this.weight(this.runs[i]!, basis);
    let endNs = this.fromNs;
    for (let i = 0; i < n; i++) {
      const run = this.runs[i]!;
      const startNs = i === 0 ? this.fromNs : Math.min(this.seenNs, Math.max(endNs, run.firstIssuedAtNs));
      const weight = this.weight(run, basis);
      endNs = i === n - 1 || weightLeft <= 0 ? this.seenNs : startNs + ((this.seenNs - startNs) * weight) / weightLeft;
      weightLeft -= weight;
      this.startNs[i] = startNs;
      this.endNs[i] = Math.max(startNs, endNs);
    }
    return basis;
  }

  private basis(): SplitBasis {
    const n = this.count;
    if (n === 1) return SplitBasis.Alone;
    let issueNs = 0;
    let forecasts = true;
    for (let i = 0; i < n; i++) {
      const run = this.runs[i]!;
      issueNs += run.issueNs;
      if (!(run.costNs !== null && run.costNs > 0)) forecasts = false;
    }
    if (issueNs >= RAN_IN_ISSUE_FRACTION * (this.seenNs - this.fromNs)) return SplitBasis.Issue;
    return forecasts ? SplitBasis.Forecast : SplitBasis.Equal;
  }

  private weight(run: Run, basis: SplitBasis): number {
    if (basis === SplitBasis.Issue) return run.issueNs;
    if (basis === SplitBasis.Forecast) return run.costNs!;
    return 1;
  }

  /** Empties it for the next poll, letting go of its runs. */
  clear(): void {
    for (let i = 0; i < this.count; i++) this.runs[i] = null;
    this.count = 0;
  }
}
