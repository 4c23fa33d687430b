// The atom timeline: what ran on each device, for whom, and when, kept in a bounded ring and
// exported in the Chrome trace event format (JSON), which Perfetto and chrome://tracing open.

import type { Proc } from './proc.js';

export interface TraceEvent {
  pid: number;
  process: string;
  device: string;
  name: string;
  startNs: number;
  endNs: number;
  /** Pieces that shared this fence (their times are the run's, not each piece's own). */
  sharedWith: number;
  args?: Record<string, unknown>;
  /**
   * Where a run's latency went: when its first piece was put on the device queue, when the
   * earliest program call it completes was made (none for a run that completes no call), and how
   * many fences were unfinished ahead of it then. startNs is max(issue, the previous fence seen
   * done), so start - issue is the wait behind the work ahead as JavaScript saw it.
   */
  issuedNs?: number;
  enqueuedNs?: number;
  ahead?: number;
}

/** TraceLog.add's optional timing of a run (see TraceEvent). */
export interface RunTiming {
  issuedNs: number;
  enqueuedNs?: number;
  ahead: number;
}

/** Chrome trace event format: "X" (complete) events, timestamps in µs. */
export interface ChromeTrace {
  traceEvents: Array<Record<string, unknown>>;
  displayTimeUnit: 'ms';
  otherData: Record<string, unknown>;
}

export class TraceLog {
  private readonly events: TraceEvent[] = [];
  private next = 0;
  dropped = 0;

  constructor(private readonly capacity: number) {}

  add(proc: Proc, device: string, name: string, startNs: number, endNs: number, sharedWith: number, args?: Record<string, unknown>, timing?: RunTiming): void {
    if (this.capacity <= 0) return;
    const event: TraceEvent = { pid: proc.pid, process: proc.name, device, name, startNs, endNs, sharedWith, args, ...timing };
    if (this.events.length < this.capacity) this.events.push(event);
    else {
      this.events[this.next] = event;
      this.next = (this.next + 1) % this.capacity;
      this.dropped++;
    }
  }

  /** The recorded events, oldest first. */
  list(): TraceEvent[] {
    return [...this.events.slice(this.next), ...this.events.slice(0, this.next)];
  }

  /** One track per device (Chrome "pid") and per process on it (Chrome "tid"). */
  toChrome(): ChromeTrace {
    const events = this.list();
    const devices = [...new Set(events.map((e) => e.device))];
    const traceEvents: Array<Record<string, unknown>> = [];
    for (const [i, device] of devices.entries()) {
      traceEvents.push({ ph: 'M', name: 'process_name', pid: i, args: { name: `device ${device}` } });
    }
    const named = new Set<string>();
    for (const e of events) {
      const pid = devices.indexOf(e.device);
      const key = `${pid}:${e.pid}`;
      if (!named.has(key)) {
        named.add(key);
        traceEvents.push({ ph: 'M', name: 'thread_name', pid, tid: e.pid, args: { name: `${e.process} (pid ${e.pid})` } });
      }
      traceEvents.push({
        ph: 'X',
        name: e.name,
        cat: 'gpu',
        pid,
        tid: e.pid,
        ts: e.startNs / 1000,
        dur: Math.max(0, e.endNs - e.startNs) / 1000,
        args: {
          ...e.args,
          sharedFence: e.sharedWith,
          ...(e.issuedNs === undefined ? {} : { issuedUs: e.issuedNs / 1000, ahead: e.ahead }),
          ...(e.enqueuedNs === undefined ? {} : { enqueuedUs: e.enqueuedNs / 1000 }),
        },
      });
    }
    return { traceEvents, displayTimeUnit: 'ms', otherData: { producer: 'gpunix', dropped: this.dropped } };
  }
}
