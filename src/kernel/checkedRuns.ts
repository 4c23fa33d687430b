// How long each kernel with checked loops was last seen to run on one device, across processes.
//
// On a device that runs on the host's CPU the dispatcher holds a checked submit until the work
// ahead of it has completed, unless it knows the submit's kernels run short (Dispatcher.drainFirst;
// docs/daemon.md, "What never waits for the device"). Knowing only the submitting process's own
// history, every new process paid for that on its first burst: its submits waited while the
// program was still issuing them (10 000 tiny looped dispatches: 0.70 of bare Dawn against 0.99
// without the rule). Kept per device and per kernel source, a job that runs again in a new process
// finds its kernels known, and a kernel seen to run long is held though its process is new.

/** One kernel's record on a device, shared by every pipeline of the same source, entry point and constants. */
export interface CheckedRun {
  /** How long its last checked piece was seen to run (ns; a lower bound, see Dispatcher.timePiece; NaN: never seen). */
  seenNs: number;
}

export class CheckedRuns {
  /** Insertion order is age: past capacity the oldest record is forgotten (pipelines holding it keep it). */
  private readonly runs = new Map<string, CheckedRun>();

  constructor(private readonly capacity = 1024) {}

  /** The record for the kernel `key` names (made, never seen, if new). */
  recordFor(key: string): CheckedRun {
    let run = this.runs.get(key);
    if (run) return run;
    if (this.runs.size >= this.capacity) this.runs.delete(this.runs.keys().next().value as string);
    run = { seenNs: NaN };
    this.runs.set(key, run);
    return run;
  }
}
