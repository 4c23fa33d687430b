// The process record: identity, a closed set of states, exit status, and accounting. State is
// derived from what the process has queued and in flight, except `exited`, which is final.

import type { LoopFlag } from '../vgpu/loopFlag.js';
import type { PriorityClass } from '../params.js';
import { LatencyHistogram, LatencySnapshot } from './latency.js';
import { LiveCounts, ResourceLedger } from './ledger.js';
import type { TenantAccount } from './tenant.js';
import { startAsDoubles } from '../doubleFields.js';

/**
 * ready:   GPU work queued, waiting for the device
 * running: GPU work executing on a device
 * waiting: no GPU work pending (the program is on the CPU, or idle)
 * suspended: kernel.suspend(): nothing of it runs until kernel.resume()
 * exited:  final; every resource released; the exit status says why
 */
export type ProcessState = 'ready' | 'running' | 'waiting' | 'suspended' | 'exited';

export type ExitReason =
  | 'normal' // the program finished, or called exit()
  | 'error' // the program threw, or exited with a non-zero code
  | 'killed' // kernel.kill()
  | 'out-of-memory'
  | 'device-lost'
  | 'watchdog' // a piece of its GPU work ran longer than maxDispatchMs (its loops were cut short)
  | 'moved' // it moved, live, to another node (gpunix migrate --to/--node): it goes on there
  | 'kernel-shutdown';

export interface ExitStatus {
  code: number;
  reason: ExitReason;
  message?: string;
}

/** What a process has cost, measured by the kernel. */
export interface ProcessAccounting {
  /** Device time attributed to this process, from the device's completion signals (ns). */
  gpuTimeNs: number;
  /** Memory the process holds now (bytes), on its devices and evicted to host memory together. */
  bytesAllocated: number;
  /** Of bytesAllocated, what is on a device now. */
  residentBytes: number;
  /** Of bytesAllocated, what is evicted to host memory now. */
  evictedBytes: number;
  /** Of evictedBytes, what is in spill files now (beyond the kernel's hostMemoryLimit). */
  spilledBytes: number;
  /** Bytes of this process written to spill files so far (a spill lasts only until its restore). */
  bytesSpilled: number;
  /** Buffers moved to host memory, and brought back. */
  evictions: number;
  restores: number;
  peakBytesAllocated: number;
  dispatches: number;
  indirectDispatches: number;
  submits: number;
  bufferWrites: number;
  /** Pieces of split dispatches run (atoms). */
  atomsRun: number;
  /** Dispatches that ran whole because they could not be split (indirect, unsplittable kernels). */
  wholeDispatches: number;
  /** Submits with checked loops held until the work ahead completed, on a CPU device (docs/kernel.md, drainFirst). */
  drainWaits: number;
  /** Times the scheduler switched away from this process while it had work queued. */
  preemptions: number;
  /** Time spent with work queued but nothing on the device (ns). */
  readyWaitNs: number;
  /** Program call to device completion, per submit and write. */
  latency: LatencySnapshot;
}

/** A row of `kernel.ps()`: a snapshot, safe to keep. */
export interface ProcessRecord {
  pid: number;
  name: string;
  tenant: string;
  priority: PriorityClass;
  weight: number;
  /** Device memory this process may hold (bytes); null: only its tenant's and the device's limits. */
  memoryLimit: number | null;
  state: ProcessState;
  startedAt: number;
  endedAt: number | null;
  exit: ExitStatus | null;
  liveObjects: number;
  accounting: ProcessAccounting;
}

export class Proc {
  // kernel/proc: identity
  readonly startedAt = Date.now();
  endedAt: number | null = null;
  exit: ExitStatus | null = null;

  // kernel/dispatch: work this process has given the dispatcher, and its scheduling state
  queuedItems = 0;
  inFlightGroups = 0;
  /** The user's suspension (kernel.suspend/resume): what `state` shows as `suspended`. */
  suspended = false;
  /**
   * The kernel's own holds (a checkpoint or migration in progress), separate from the user's
   * `suspended` so that neither undoes the other: the process runs only while both are clear.
   */
  holds = 0;
  /**
   * Its long control operations (checkpoint, migrate, swap-out) in arrival order: each starts once
   * the one before it has ended. Always settles (never rejects).
   */
  lane: Promise<void> = Promise.resolve();
  /** GPU time divided by weight (ns): the fair-share clock within a priority class. */
  vruntimeNs = 0;
  readySinceNs: number | null = null;
  readyWaitNs = 0;
  atomsRun = 0;
  wholeDispatches = 0;
  drainWaits = 0;
  /**
   * How long its last piece with checked loops was seen to run: from the end of the work ahead to
   * the last poll that did not yet report it done (ns; a lower bound; NaN: none yet). Read by
   * Dispatcher.drainFirst.
   */
  lastCheckedPieceNs = NaN;
  /** When the program called its last whole submit that was issued (ns, the dispatcher's clock): a submit right after it may be held (PhysicalDevice.holdSubmit). */
  lastSubmitCallNs = -Infinity;
  preemptions = 0;
  /**
   * The shortest time limit (ms) its shader modules' loop budgets were made for: a budget spent
   * means at least this long, so the watchdog's check must not use a longer limit (a raised quota
   * does not stretch budgets already compiled).
   */
  loopLimitMs = Infinity;
  readonly latency = new LatencyHistogram();
  /** Bumped on every use of the process's resources and every piece of its work: evictions in progress give up when it moves. */
  activity = 0;
  /** A restored process image waiting for the process's first device (kernel.restore). */
  pendingImage: import('./image.js').ProcessImage | null = null;
  /** Where the process's devices go, when the kernel was told (restore onto a device). */
  preferredDevice: import('../device/physicalDevice.js').PhysicalDevice | null = null;
  /** Bumped whenever a real buffer of the process is replaced (evicted, restored): encodings made before are stale. */
  backingEpoch = 0;

  // kernel/ledger: the real objects it holds
  readonly ledger: ResourceLedger;

  // kernel/dispatch + vgpu: what it has cost
  gpuTimeNs = 0;
  dispatches = 0;
  indirectDispatches = 0;
  submits = 0;
  bufferWrites = 0;
  /** Of its evicted bytes, those in spill files now (kept by kernel/spill). */
  spilledBytes = 0;
  /** Bytes written to spill files so far (kept by kernel/spill). */
  bytesSpilled = 0;

  /** Resolves with the exit status once the process has exited and released everything. */
  readonly exited: Promise<ExitStatus>;
  private resolveExited!: (status: ExitStatus) => void;

  /** Run when the process ends (kill or exit): the virtual devices turn lost and free their objects. */
  readonly onEnd = new Set<(status: ExitStatus) => void>();

  /** Its devices' budget-spent flags (src/vgpu/loopFlag.ts), which the watchdog's time check reads. */
  readonly loopFlags = new Set<LoopFlag>();

  constructor(
    readonly pid: number,
    readonly name: string,
    readonly account: TenantAccount,
    public priority: PriorityClass,
    public weight: number,
    readonly memoryLimit: number | null,
    live: LiveCounts,
  ) {
    this.ledger = new ResourceLedger(live, account);
    startAsDoubles<Proc>(this, ['vruntimeNs', 'readyWaitNs', 'gpuTimeNs', 'spilledBytes']);
    account.processes++;
    account.members.add(this);
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
  }

  get tenant(): string {
    return this.account.name;
  }

  /** The weight fair sharing uses: the tenant's weight, split among its processes by their weights. */
  get shareWeight(): number {
    return this.account.shareOf(this);
  }

  get alive(): boolean {
    return this.exit === null;
  }

  /** True while nothing of it may be started on a device: suspended by the user, or held by the kernel. */
  get stopped(): boolean {
    return this.suspended || this.holds > 0;
  }

  get state(): ProcessState {
    if (this.exit) return 'exited';
    if (this.suspended) return 'suspended';
    if (this.inFlightGroups > 0) return 'running';
    if (this.queuedItems > 0) return 'ready';
    return 'waiting';
  }

  /** The one transition into `exited`: records the status, releases everything, wakes waiters. */
  end(status: ExitStatus): boolean {
    if (this.exit) return false;
    this.exit = status;
    this.endedAt = Date.now();
    for (const hook of this.onEnd) hook(status);
    this.onEnd.clear();
    this.ledger.releaseAll();
    this.account.processes--;
    this.account.members.delete(this);
    this.resolveExited(status);
    return true;
  }

  record(): ProcessRecord {
    return {
      pid: this.pid,
      name: this.name,
      tenant: this.account.name,
      priority: this.priority,
      weight: this.weight,
      memoryLimit: this.memoryLimit,
      state: this.state,
      startedAt: this.startedAt,
      endedAt: this.endedAt,
      exit: this.exit ? { ...this.exit } : null,
      liveObjects: this.ledger.size,
      accounting: {
        gpuTimeNs: this.gpuTimeNs,
        bytesAllocated: this.ledger.bytes,
        residentBytes: this.ledger.bytes - this.ledger.evictedBytes,
        evictedBytes: this.ledger.evictedBytes,
        spilledBytes: this.spilledBytes,
        bytesSpilled: this.bytesSpilled,
        evictions: this.ledger.evictions,
        restores: this.ledger.restores,
        peakBytesAllocated: this.ledger.peakBytes,
        dispatches: this.dispatches,
        indirectDispatches: this.indirectDispatches,
        submits: this.submits,
        bufferWrites: this.bufferWrites,
        atomsRun: this.atomsRun,
        wholeDispatches: this.wholeDispatches,
        drainWaits: this.drainWaits,
        preemptions: this.preemptions,
        readyWaitNs: this.readyWaitNs,
        latency: this.latency.snapshot(),
      },
    };
  }
}
