// A histogram of submission latencies (from the program's call to the device's completion), with
// fixed log-spaced buckets so that percentiles are cheap and snapshots are small.

/** Upper bounds of the buckets, in microseconds; the last bucket is open-ended. */
export const LATENCY_BUCKETS_US = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000] as const;

export interface LatencySnapshot {
  count: number;
  /** Counts per bucket: `counts[i]` holds latencies <= LATENCY_BUCKETS_US[i]; the last one the rest. */
  bucketsUs: readonly number[];
  counts: number[];
  meanUs: number;
  maxUs: number;
  /** Upper bounds of the buckets holding the 50th and 99th percentiles (µs); null when empty. */
  p50Us: number | null;
  p99Us: number | null;
}

export class LatencyHistogram {
  private readonly counts = new Array<number>(LATENCY_BUCKETS_US.length + 1).fill(0);
  private count = 0;
  private sumUs = 0;
  private maxUs = 0;

  record(ns: number): void {
    const us = ns / 1000;
    let i = 0;
    while (i < LATENCY_BUCKETS_US.length && us > LATENCY_BUCKETS_US[i]) i++;
    this.counts[i]++;
    this.count++;
    this.sumUs += us;
    this.maxUs = Math.max(this.maxUs, us);
  }

  private percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.ceil(p * this.count);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return i < LATENCY_BUCKETS_US.length ? LATENCY_BUCKETS_US[i] : this.maxUs;
    }
    return this.maxUs;
  }

  snapshot(): LatencySnapshot {
    return {
      count: this.count,
      bucketsUs: LATENCY_BUCKETS_US,
      counts: [...this.counts],
      meanUs: this.count ? this.sumUs / this.count : 0,
      maxUs: this.maxUs,
      p50Us: this.percentile(0.5),
      p99Us: this.percentile(0.99),
    };
  }
}
