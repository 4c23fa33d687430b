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

/** Numbers kept per event (see TraceLog). */
const NUMBERS = 7;

/**
 * Events per block of the ring's numbers: it grows a block at a time up to its capacity, never
 * copying (fresh memory costs a page fault per page on first touch, dear on a VM: touch it once).
 */
const BLOCK_SLOTS = 4096;

/**
 * The ring is kept in columns (numbers in typed arrays, references in arrays), not as an object
 * per event: a full ring replaces one long-lived event per piece, and an object per event would
 * be promoted to the old generation and die there, at every submit of a dispatch-heavy program.
 * Recording an event allocates nothing; list() makes the objects when someone reads the trace.
 */
export class TraceLog {
  /** Slots in use (< capacity until the ring is full). */
  private size = 0;
  private next = 0;
  dropped = 0;
  // Numbers, NUMBERS per event in blocks of BLOCK_SLOTS events: startNs, endNs, issuedNs,
  // enqueuedNs (NaN: none), pid, sharedWith, ahead (NaN: none).
  private readonly blocks: Float64Array[] = [];
  private processes: string[] = [];
  private devices: string[] = [];
  private names: string[] = [];
  private args: Array<Record<string, unknown> | undefined> = [];

  constructor(private readonly capacity: number) {}

  add(proc: Proc, device: string, name: string, startNs: number, endNs: number, sharedWith: number, args?: Record<string, unknown>, timing?: RunTiming): void {
    if (this.capacity <= 0) return;
    let slot: number;
    if (this.size < this.capacity) {
      slot = this.size++;
      if (slot >= this.blocks.length * BLOCK_SLOTS) {
        this.blocks.push(new Float64Array(Math.min(BLOCK_SLOTS, this.capacity - slot) * NUMBERS));
      }
    } else {
      slot = this.next;
      this.next = (this.next + 1) % this.capacity;
      this.dropped++;
    }
    const n = this.blocks[Math.floor(slot / BLOCK_SLOTS)];
    const at = (slot % BLOCK_SLOTS) * NUMBERS;
    n[at] = startNs;
    n[at + 1] = endNs;
    n[at + 2] = timing ? timing.issuedNs : NaN;
    n[at + 3] = timing?.enqueuedNs ?? NaN;
    n[at + 4] = proc.pid;
    n[at + 5] = sharedWith;
    n[at + 6] = timing ? timing.ahead : NaN;
    this.processes[slot] = proc.name;
    this.devices[slot] = device;
    this.names[slot] = name;
    this.args[slot] = args;
  }

  private event(slot: number): TraceEvent {
    const n = this.blocks[Math.floor(slot / BLOCK_SLOTS)];
    const at = (slot % BLOCK_SLOTS) * NUMBERS;
    const event: TraceEvent = {
      pid: n[at + 4],
      process: this.processes[slot],
      device: this.devices[slot],
      name: this.names[slot],
      startNs: n[at],
      endNs: n[at + 1],
      sharedWith: n[at + 5],
      args: this.args[slot],
    };
    if (!Number.isNaN(n[at + 2])) {
      event.issuedNs = n[at + 2];
      event.ahead = n[at + 6];
      if (!Number.isNaN(n[at + 3])) event.enqueuedNs = n[at + 3];
    }
    return event;
  }

  /** The recorded events, oldest first. */
  list(): TraceEvent[] {
    const events: TraceEvent[] = [];
    for (let i = this.next; i < this.size; i++) events.push(this.event(i));
    for (let i = 0; i < this.next; i++) events.push(this.event(i));
    return events;
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
