// The per-device dispatcher: the one place where processes' work reaches a real device queue.
// This first policy runs work in arrival order across processes (FIFO) and keeps a bounded number
// of fences in flight. `pickNext` is the seam where the preemptive scheduler plugs in.
//
// GPU time is measured, not estimated: work is grouped into runs of one owner, a fence
// (onSubmittedWorkDone) closes each run, and since a queue completes in order, the device spent
// `done - max(first issue, previous fence's done)` on that run.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import type { Proc } from './proc.js';

export interface WorkItem {
  readonly owner: Proc;
  /** True when `run` puts work on the device queue (submits, buffer writes): it is timed. */
  readonly usesDevice: boolean;
  /** Executes the real call(s). May be async; the next item waits for it. */
  run(): void | Promise<void>;
  /** Called instead of `run` when the owner ends first: settle whatever the program awaits. */
  cancel(): void;
}

interface OpenRun {
  owner: Proc;
  firstIssuedAtNs: number;
}

const nowNs = (): number => performance.now() * 1e6;

export class Dispatcher {
  private readonly queue: WorkItem[] = [];
  private running = false;
  private openRun: OpenRun | null = null;
  private closeScheduled = false;
  private outstandingFences = 0;
  private lastFenceDoneNs = 0;
  private idleWaiters: Array<{ owner: Proc | null; resolve: () => void }> = [];
  /** Device time spent on all owners (ns), for utilization. */
  busyNs = 0;
  readonly createdAtNs = nowNs();

  constructor(
    readonly device: PhysicalDevice,
    private readonly maxInFlight: number,
  ) {}

  /** True when an item enqueued now would run before enqueue returns. */
  get wouldRunNow(): boolean {
    return this.queue.length === 0 && !this.running && this.outstandingFences < this.maxInFlight;
  }

  enqueue(item: WorkItem): void {
    item.owner.queuedItems++;
    this.queue.push(item);
    this.pump();
  }

  /** Cancels every queued item of `owner`; work already on the device finishes on its own. */
  cancelAll(owner: Proc): void {
    const kept: WorkItem[] = [];
    for (const item of this.queue) {
      if (item.owner !== owner) {
        kept.push(item);
        continue;
      }
      owner.queuedItems--;
      try {
        item.cancel();
      } catch {
        // A cancel must never stop the cancelling of the others.
      }
    }
    this.queue.length = 0;
    this.queue.push(...kept);
    this.notifyIdle();
  }

  /** Resolves when `owner` (or, with null, everyone) has nothing queued and nothing on the device. */
  whenIdle(owner: Proc | null): Promise<void> {
    if (this.isIdle(owner)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push({ owner, resolve }));
  }

  private isIdle(owner: Proc | null): boolean {
    if (owner) return owner.queuedItems === 0 && owner.inFlightGroups === 0;
    return this.queue.length === 0 && !this.running && this.outstandingFences === 0 && this.openRun === null;
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0) return;
    const still: typeof this.idleWaiters = [];
    for (const waiter of this.idleWaiters) {
      if (this.isIdle(waiter.owner)) waiter.resolve();
      else still.push(waiter);
    }
    this.idleWaiters = still;
  }

  /** The scheduling policy: which queued item runs next. FIFO for now (arrival order). */
  private pickNext(): WorkItem | undefined {
    return this.queue.shift();
  }

  private pump(): void {
    while (!this.running && this.queue.length > 0 && this.outstandingFences < this.maxInFlight) {
      const item = this.pickNext()!;
      item.owner.queuedItems--;
      if (item.usesDevice) this.openRunFor(item.owner);
      let pending: void | Promise<void> = undefined;
      try {
        pending = item.run();
      } catch (error) {
        // run() routes WebGPU errors to the owner itself; anything thrown here is a kernel bug.
        process.stderr.write(`gpunix: dispatcher: work item of pid ${item.owner.pid} failed: ${String(error)}\n`);
      }
      if (pending instanceof Promise) {
        this.running = true;
        pending
          .catch((error) => process.stderr.write(`gpunix: dispatcher: work item of pid ${item.owner.pid} failed: ${String(error)}\n`))
          .finally(() => {
            this.running = false;
            this.pump();
          });
        return;
      }
    }
    if (this.openRun && !this.closeScheduled) {
      // Close the run after the program's current synchronous burst, so a loop of submits
      // costs one fence, not one per submit.
      this.closeScheduled = true;
      queueMicrotask(() => {
        this.closeScheduled = false;
        if (this.queue.length === 0 && !this.running) this.closeRun();
      });
    }
    this.notifyIdle();
  }

  private openRunFor(owner: Proc): void {
    if (this.openRun && this.openRun.owner !== owner) this.closeRun();
    if (!this.openRun) {
      this.openRun = { owner, firstIssuedAtNs: nowNs() };
      owner.inFlightGroups++;
    }
  }

  private closeRun(): void {
    const run = this.openRun;
    if (!run) return;
    this.openRun = null;
    this.outstandingFences++;
    const settle = (): void => {
      const doneNs = nowNs();
      const spent = Math.max(0, doneNs - Math.max(run.firstIssuedAtNs, this.lastFenceDoneNs));
      this.lastFenceDoneNs = doneNs;
      run.owner.gpuTimeNs += spent;
      this.busyNs += spent;
      run.owner.inFlightGroups--;
      this.outstandingFences--;
      this.pump();
    };
    this.device.queue.onSubmittedWorkDone().then(settle, settle);
  }

  /** Fraction of the dispatcher's lifetime the device spent on processes' work. */
  utilization(): number {
    const lifetime = nowNs() - this.createdAtNs;
    return lifetime > 0 ? Math.min(1, this.busyNs / lifetime) : 0;
  }
}
