// The per-device dispatcher: the one place where processes' work reaches a real device queue, and
// the scheduler that decides whose work goes next and how much of it.
//
// Policy: strict priority between classes (realtime > normal > batch); within a class, weighted
// fair sharing of measured GPU time (virtual runtime: the process with the least GPU time per unit
// of weight goes next). A process's own work keeps its order: only the head of its queue runs.
// Divisible work (a submit whose dispatches the atomizer can split) is issued one piece at a time,
// each sized from the pipeline's cost model to about `targetSliceNs`, and a process issues only
// while fewer than `maxInFlight` fences of its own class or lower ones are outstanding: a newly
// ready realtime process waits for at most that many pieces of lower classes.
// While no other process of the same or a higher class has had work on the device for
// `contentionWindowNs`, the owner gets larger pieces (`uncontendedSliceNs`) and a deeper queue
// (`uncontendedMaxInFlight`): nobody is there to wait for it, and the device runs fewer, larger
// atoms far more efficiently. A process arriving after such a quiet spell waits for at most that
// deeper queue, once; its arrival makes the others contended again.
// While a process of a higher class has been active within that window, a lower class's next
// piece is not queued the moment a fence slot frees but `leadNs` before the device is predicted to
// run out of work (from the cost models of the pieces on it): a higher-class arrival then finds at
// most the running piece and one that was about to start ahead of it, instead of a whole second
// piece, while the device still never waits for JavaScript to notice a completion.
//
// GPU time is measured, not estimated: work is grouped into runs of one owner, a fence
// (onSubmittedWorkDone) closes each run, and since a queue completes in order, the device spent
// `done - max(first issue, previous fence's done)` on that run. Runs that one poll of Dawn
// reported together split that time among them (sighting.ts).

import { adviseEventPump, completedNoEarlierThanMs, eventPumpActive, lastPollEndedMs, wakeAt } from '../device/eventPump.js';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import { CHECKED_DRAIN_AFTER_NS, PRIORITY_CLASSES, WATCHDOG_FLAG_READ_FRACTION } from '../params.js';
import { runsOnHostCpu } from '../device/adapters.js';
import type { Proc } from './proc.js';
import { CheckedRuns, type CheckedRun } from './checkedRuns.js';
import { Sighting, SplitBasis } from './sighting.js';
import type { RunTiming, TraceLog } from './trace.js';
import { startAsDoubles } from '../doubleFields.js';
import type { DeviceStamp } from '../device/deviceTimer.js';

/** One piece of device work the dispatcher issues at once (an atom, a whole submit, a copy chunk, a write). */
export interface WorkPiece {
  /**
   * Puts the piece's work on the device queue, synchronously. `watchdogLimitNs`: the owner's limit,
   * given to a piece that may be cut while the watchdog times pieces (a whole submit brackets
   * itself with device timestamps for it).
   */
  issue(watchdogLimitNs?: number): void;
  /** What it is, for the trace: e.g. the pipeline's label and the workgroup range. */
  readonly name: string;
  readonly args?: Record<string, unknown>;
  /**
   * Teaches the pipeline's cost model from the piece's measured time: set on atoms. `timed` says
   * the piece reports its own device time from pass timestamps, so the run's wall clock is not used.
   */
  readonly cost?: { model: CostModel; workgroups: number; timed?: boolean };
  /** True for an atom of a split dispatch (counted as an atom, fenced on its own). */
  readonly atom?: boolean;
  /** True for a dispatch that could not be split (indirect, unsplittable kernel). */
  readonly whole?: boolean;
  /** True when the piece runs loops the watchdog checks (it may cut them): it is fenced alone and its time checked. */
  readonly mayCut?: boolean;
  /** With mayCut: the records of the checked kernels it runs, which learn how long it was seen to run (CheckedRuns). */
  readonly checkedRuns?: readonly CheckedRun[];
  /**
   * Set by issue() on a piece that may be cut, where the device has timestamps and a slot was
   * free: its device time, which the watchdog reads when the host's clock puts it over the limit.
   */
  stamp?: DeviceStamp | null;
}

export interface WorkItem {
  readonly owner: Proc;
  /** True when the item puts work on the device queue (submits, writes): it is timed. */
  readonly usesDevice: boolean;
  /** Indivisible work: executes the real call(s). May be async; the owner's next item waits. */
  run?(): void | Promise<void>;
  /** Divisible work: resolves when the item can produce pieces (e.g. after validation). */
  prepare?(): Promise<void> | null;
  /** Divisible work: the next piece, at most about `budgetNs` long; null when the item is done. */
  nextPiece?(budgetNs: number): WorkPiece | null;
  /** Called instead of `run`/`nextPiece` when the owner ends first: settle what the program awaits. */
  cancel(): void;
  /**
   * When the program made the call (for the submission latency histogram): set by the dispatcher;
   * the item's maker sets NaN. It is there from the making, not added at enqueue: an added field
   * gives every item a shape of its own that dies between calls (src/keptShapes.ts says what that costs).
   */
  enqueuedAtNs: number;
  /**
   * A buffer write, as a checkpoint records it (set by its maker: the kernel cannot see into the
   * item's closures): the bytes not yet written and where they go.
   */
  readonly write?: () => { buffer: object; offset: number; bytes: Uint8Array };
  /**
   * The records of the kernels with loops the watchdog checks that its work runs (empty or absent:
   * none), so that a piece of it may run long: on CPU devices the dispatcher may drain the device
   * first (see drainFirst).
   */
  readonly checkedRuns?: readonly CheckedRun[];
  /**
   * Once its last piece is issued: whether that work uses `resource`. A map of such a resource
   * completes only after the work (WebGPU orders a map after every earlier use of its buffer), so
   * the map can stand for the run's fence (see mapMade).
   */
  uses?(resource: object): boolean;
}

/** Items some pieces of which were issued before takeAll moved them (see Entity.headIssued). */
const partlyIssued = new WeakSet<WorkItem>();

/**
 * A work item that puts nothing on the device queue: `run` at its turn in the program's order,
 * `cancel` if the owner ends first (`run` returns nothing: the owner's next item does not wait for
 * what it starts). Every such item is made here, so all have one object shape, which
 * src/vgpu/shapeKeepers.ts keeps alive with one more made here.
 */
export function offDeviceItem(owner: Proc, run: () => undefined, cancel: () => void): WorkItem {
  return { owner, usesDevice: false, enqueuedAtNs: NaN, run, cancel };
}

/** An open run's lists before their first element: frozen, replaced at the first one (issue, finishItem), never pushed to. */
const NO_PIECES: WorkPiece[] = Object.freeze([]) as unknown as WorkPiece[];
const NO_TIMES: number[] = Object.freeze([]) as unknown as number[];

/** 0 as a double (V8 keeps -0 in no small integer): a field first given it never changes representation (doubleFields.ts). */
const DOUBLE_ZERO = -0;

/** A settled promise, whose then queues a microtask (closeScheduledRun). */
const SETTLED = Promise.resolve();

/** The device time `pieces` should take by their cost models, or null when one has none. */
function forecastNs(pieces: readonly WorkPiece[]): number | null {
  let total = 0;
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i];
    const ns = piece.cost ? piece.cost.model.forecast(piece.cost.workgroups) : null;
    if (ns === null) return null;
    total += ns;
  }
  return total;
}

/** When a fence should complete: it starts when the work ahead ends or when it was issued, whichever is later. */
const forecastEndNs = (aheadEndsNs: number, issuedAtNs: number, costNs: number): number => Math.max(aheadEndsNs, issuedAtNs) + costNs;

/** Atoms timed for every pipeline before its cost model samples. */
const COST_WARMUP_SAMPLES = 8;
/** After the warm-up, one atom in this many is timed. */
const COST_SAMPLE_EVERY = 8;
/** A dispatch that its forecast puts within one slice is split anyway once in this many, to sample the model (resampleDue). */
export const COST_RESAMPLE_WHOLE = 32;

/** A sample within this factor of the least atom time seen counts as taking that least time. */
const COST_FLOOR_BAND = 1.1;
/** Samples in a row above the floor's band after which the floor is measured afresh (a glitch, or a device that changed). */
const COST_FLOOR_MEMORY = 32;

/**
 * Per-pipeline cost model: device time per workgroup, learned online (exponential average), and
 * the device's floor: the least time an atom of this pipeline takes however narrow it is.
 *
 * Why the floor: on a CPU device (lavapipe) time grows with the width from the first workgroup,
 * but a GPU runs an atom narrower than itself side by side, so such an atom takes one workgroup's
 * run whatever its width. Time per workgroup alone, given a budget shorter than that run, makes
 * each narrower atom look dearer per workgroup and shrinks atoms to one workgroup each, throwing
 * the GPU's width away (on an H200 a 25 ms kernel under a 0.1 ms budget ran for minutes). Once
 * samples show the floor (an atom at least twice as wide as another took as little time), a
 * budget within it gets the widest atom known to run in the floor's time, found by doubling.
 */
export class CostModel {
  nsPerWorkgroup: number | null = null;
  samples = 0;
  private sinceSample = 0;
  /** The least time an atom took (ns); the narrowest and the widest atoms that took about as little. */
  private leastNs = Infinity;
  private narrowestFast = 0;
  private widestFast = 0;
  /** The narrowest atom that took more than the floor's time (Infinity: none yet). */
  private narrowestSlow = Infinity;
  /** Samples in a row above the floor's band. */
  private aboveFloor = 0;
  /** Dispatches issued whole on this model's forecast since it last learned (resampleDue). */
  private wholeSinceLearned = 0;
  /**
   * Whether a dispatch the forecast puts within one slice (issued whole: a whole submit teaches no
   * model) should be split anyway, its atom sampled, so that the model hears of its pipeline again:
   * once in COST_RESAMPLE_WHOLE. Else a model that a low sample put under the slice kept every later
   * dispatch of its pipeline whole and unpreemptible for good (seen on GLES: one process's dispatches
   * of 128 workgroups went whole for the rest of a run, and its tenant's share of the device fell
   * from a half to under a quarter).
   */
  resampleDue(): boolean {
    if (++this.wholeSinceLearned < COST_RESAMPLE_WHOLE) return false;
    this.wholeSinceLearned = 0;
    // The next atom is timed, where atoms are timed one in COST_SAMPLE_EVERY (wantsSample).
    this.sinceSample = COST_SAMPLE_EVERY - 1;
    return true;
  }
  /**
   * Whether the next atom should be timed: every one until the model has COST_WARMUP_SAMPLES,
   * then one in COST_SAMPLE_EVERY (a device's speed drifts, but slowly).
   */
  wantsSample(): boolean {
    if (this.samples < COST_WARMUP_SAMPLES) return true;
    this.sinceSample = (this.sinceSample + 1) % COST_SAMPLE_EVERY;
    return this.sinceSample === 0;
  }
  /** One atom (or a run of atoms) of `workgroups` took `ns` of device time. */
  learn(ns: number, workgroups: number): void {
    if (workgroups <= 0 || ns <= 0) return;
    this.wholeSinceLearned = 0;
    const sample = ns / workgroups;
    this.nsPerWorkgroup = this.nsPerWorkgroup === null ? sample : 0.7 * this.nsPerWorkgroup + 0.3 * sample;
    this.samples++;
    if (ns * COST_FLOOR_BAND < this.leastNs || this.aboveFloor >= COST_FLOOR_MEMORY) {
      // A new floor (or the old one not seen for long: a misread sample must not set it for
      // good): the widths seen so far are measured against it again as they recur.
      this.leastNs = ns;
      this.narrowestFast = this.widestFast = workgroups;
      this.narrowestSlow = Infinity;
      this.aboveFloor = 0;
    } else if (ns <= this.leastNs * COST_FLOOR_BAND) {
      this.leastNs = Math.min(ns, this.leastNs);
      this.narrowestFast = Math.min(workgroups, this.narrowestFast);
      this.widestFast = Math.max(workgroups, this.widestFast);
      this.aboveFloor = 0;
    } else {
      this.narrowestSlow = Math.min(workgroups, this.narrowestSlow);
      this.aboveFloor++;
    }
  }
  /** The device time an atom of `workgroups` should take (ns); null before the first sample. */
  forecast(workgroups: number): number | null {
    return this.nsPerWorkgroup === null ? null : workgroups * this.nsPerWorkgroup;
  }
  /**
   * Workgroups for an atom of about `budgetNs`; a small probe while the cost is unknown. Where the
   * floor is shown and the budget falls within it, the widest atom known to take the floor's time,
   * doubled while no atom up to twice as wide has taken longer (feeling for the GPU's width).
   */
  workgroupsFor(budgetNs: number, probe: number): number {
    if (this.nsPerWorkgroup === null) return probe;
    const k = Math.floor(budgetNs / this.nsPerWorkgroup);
    const floorShown = this.widestFast >= 2 * this.narrowestFast;
    // At one workgroup and still over the budget, only a wider atom can show whether there is a floor.
    const stuckAtOne = k < 1 && this.widestFast <= 1;
    if ((floorShown && k <= this.widestFast) || stuckAtOne) {
      return this.narrowestSlow > 2 * this.widestFast ? 2 * this.widestFast : this.widestFast;
    }
    return Math.max(1, k);
  }
}

export interface SchedulerParams {
  /** Device time one piece of divisible work should take (ns). */
  targetSliceNs: number;
  /** Most unfinished fences on the device before the dispatcher holds work back. */
  maxInFlight: number;
  /** A piece's device time while the owner is uncontended (ns). */
  uncontendedSliceNs: number;
  /** Most unfinished fences while the owner of the next piece is uncontended. */
  uncontendedMaxInFlight: number;
  /**
   * A process is uncontended when no other process of the same or a higher class has had work
   * queued or on the device (and not stopped) within this long (ns).
   */
  contentionWindowNs: number;
  /**
   * While a higher class has been active within the contention window, a lower class's next piece
   * is queued this long before the device is predicted to run out of work (0: as soon as the
   * in-flight bound allows).
   */
  leadNs: number;
  /**
   * Experimental (set on the kernel's settings by bench/preemption.ts): while a process of a higher
   * class is alive on this device but idle past the contention window, an uncontended lower class
   * keeps its larger atoms but gets only `maxInFlight` fences and the issue lead, so the higher
   * class's first arrival waits for about one large atom, not `uncontendedMaxInFlight` of them.
   */
  standbyBound?: boolean;
}

/** Pieces of one owner issued back to back and fenced once: open while pieces join it, then closed until its fence completes. */
interface OpenRun {
  owner: Proc;
  firstIssuedAtNs: number;
  pieces: WorkPiece[];
  /**
   * When the items whose last piece is in this run were enqueued (NaN: unknown): their latency
   * ends when the run completes. Times, not the items: a burst of submits must not keep every
   * item alive (into the old generation) until its fence completes.
   */
  finishing: number[];
  /** Fences unfinished when the run was opened (for the trace: what it queued behind). */
  ahead: number;
  /**
   * Its forecast device time, set when it closes: null when some piece's cost is unknown (a whole
   * submit, a copy, an unlearned pipeline).
   */
  costNs: number | null;
  /** Its class's rank (classRank), taken when it closes. */
  rank: number;
  /**
   * Time the host spent inside its pieces' issue calls (ns): where a submit runs the work itself
   * (Dawn's GL backends over llvmpipe), its device time (sighting.ts). Measured only there
   * (Dispatcher.timesIssues); 0 elsewhere.
   */
  issueNs: number;
  /** Set once its completion has been accounted (settleRun). */
  settled: boolean;
}

/** The scheduler's state for one process on this device. */
interface Entity {
  proc: Proc;
  queue: WorkItem[];
  /** The head item was prepared (divisible items only). */
  prepared: boolean;
  /**
   * Some pieces of the head item were issued (a checkpoint lets it finish rather than record it).
   * A flag, not an entry in partlyIssued per item: that set holds only items moved to another
   * dispatcher partway (takeAll).
   */
  headIssued: boolean;
  /**
   * The waiters of finishStarted: while there are any, the head item runs to its end although the
   * process is stopped (suspended or held); each is called once it has.
   */
  finishing: Set<() => void>;
  /** When it last had work queued or on the device (ns). */
  lastActiveNs: number;
}

/** `next`, whatever settled before it: a promise chain's link bound to `next`, not a closure per link (see Dispatcher.closeRun's settle). */
function resolvedWith(next: Promise<void>): Promise<void> {
  return next;
}
const nowNs = (): number => performance.now() * 1e6;
/**
 * The earliest a completion seen at `seenNs` can have happened (ns): the poll before the one that
 * reported it (eventPump.ts), or `seenNs` itself where polls are not the pump's to know.
 */
const completedNoEarlierThanNs = (seenNs: number): number => {
  const polledMs = completedNoEarlierThanMs();
  return Number.isNaN(polledMs) ? seenNs : Math.min(seenNs, polledMs * 1e6);
};
/**
 * When a run issued at `issuedAtNs` and settling now was seen complete (ns): at the end of the
 * Dawn poll that reported it, not at the clock now. Earlier settlings of that poll pumped and may
 * have issued work in between, and on Dawn's GL backends over llvmpipe a submit runs its kernel
 * before it returns: read now, the run would seem to end a kernel later, that kernel's time
 * charged to it and missing from its own. The clock now where the pump does not know the poll,
 * or the run was issued after it (not that poll's report).
 */
const seenCompleteNs = (issuedAtNs: number): number => {
  const polledNs = lastPollEndedMs() * 1e6;
  return polledNs >= issuedAtNs ? polledNs : nowNs();
};
/** How long a map awaited with no fence of its device out keeps the pump polling without pause (ns). */
const EAGER_MAP_WINDOW_NS = 100e6;
const classRank = (proc: Proc): number => PRIORITY_CLASSES.indexOf(proc.priority);

export class Dispatcher {
  private readonly entities = new Map<Proc, Entity>();
  /**
   * The entities' values, kept beside the map for the scheduler's scans: they run at every
   * enqueue and pick, and a loop over an array makes no iterator (a Map's may, after a full GC).
   */
  private readonly entityList: Entity[] = [];
  private busy = false;
  private openRun: OpenRun | null = null;
  private closeScheduled = false;
  /** The microtask that closes the open run after the program's synchronous burst (pump). */
  private readonly closeScheduledRun = (): void => {
    this.closeScheduled = false;
    // The program's burst is over: its held submits go to Dawn now, whatever else waits.
    this.device.flushHeldSubmits();
    if (!this.busy) this.closeRun();
  };
  private outstandingFences = 0;
  /** Outstanding fences by the class of the run's owner (PRIORITY_CLASSES order). */
  private readonly inFlightByClass = PRIORITY_CLASSES.map(() => 0);
  private lastFenceDoneNs = 0;
  /**
   * For the watchdog's time check: the earliest the last fence's completion can have happened
   * (completedNoEarlierThanNs), and the same for the last piece it timed that was within its limit.
   * A busy thread sees completions late, all at once: measured from when it saw them, a runaway
   * seen in the same batch would look short.
   */
  private aheadEndedNs = 0;
  private lastTimedDoneNs = 0;
  /** The completion signal timePiece asked for a piece that closes its run: closeRun's fence for that run (taken at once). */
  private runFence: Promise<undefined> | null = null;
  /** The time check of the last piece the watchdog timed, until it has run; then null (timeChecked). */
  private pendingTimeCheck: Promise<void> | null = null;
  /**
   * Unfinished fences: the closed runs not yet complete, oldest first (a queue completes in order),
   * each with its forecast (OpenRun.costNs).
   */
  private readonly forecasts: OpenRun[] = [];
  /** The pending lead wake-up: when, and its cancel. */
  private leadWake: { atNs: number; cancel: () => void } | null = null;
  /** The process whose work was issued last: switching away from it while it has work is a preemption. */
  private lastOwner: Proc | null = null;
  /**
   * Each owner's last closed run not yet complete: an item whose last piece (an atom) closed its
   * run is found to be finished only at the next decision, and completes with that run.
   */
  private readonly lastRunOf = new Map<Proc, OpenRun | null>();
  /** Runs of each owner issued on this device and not yet complete (owner.inFlightGroups counts all devices'). */
  private readonly runsInFlight = new Map<Proc, number>();
  /**
   * The runs completed since the last poll of Dawn, accounted together once all are in
   * (closeSighting, a microtask queued by the first: every run that poll reported settles before it).
   */
  private readonly sighting = new Sighting<OpenRun>();
  private readonly closeSightingNow = (): void => this.closeSighting();
  /** closeSighting's timing of a run for the trace (reused: TraceLog.add keeps numbers, not the object). */
  private readonly runTiming: RunTiming = { issuedNs: 0, enqueuedNs: NaN, ahead: 0 };
  private idleWaiters: Array<{ owner: Proc | null; resolve: () => void; offDevice?: boolean }> = [];
  /** Device work issued so far (pieces, and items that run whole on the device): a serial. */
  private issuedWork = 0;
  /** The item whose piece was the last device work issued (issuedWork then), until its run closes. */
  private lastIssuedItem: WorkItem | null = null;
  private lastIssuedWork = -1;
  /**
   * A map made right after the open run's last work, of a resource that work uses (mapMade): its
   * settling tells when the run completed, and closeRun uses it instead of a fence of its own.
   */
  private mapCover: { run: OpenRun; work: number; mapping: Promise<unknown> } | null = null;
  /**
   * The closed runs not yet complete, oldest first (settleRun). A queue completes in order, so a
   * run completing settles every run ahead of it first (one whose completion is a map's may be
   * reported after the fence of a later run).
   */
  private readonly unsettled: OpenRun[] = [];
  /** Device time spent on all owners (ns), for utilization. */
  busyNs = 0;
  /** Switches away from a process that still had work queued, on this device (monotonic, for metrics). */
  preemptions = 0;
  readonly createdAtNs = nowNs();

  private readonly stopAdvising: () => void;
  /**
   * Each piece's issue call is timed (OpenRun.issueNs, for the split of a sighting): on Dawn's GL
   * backends, whose submit runs the work over llvmpipe. Elsewhere a submit only queues the work,
   * and two clock reads per piece on the call path would say nothing.
   */
  readonly timesIssues: boolean;
  /**
   * A submit runs its work before it returns (Dawn's GL backends over a CPU device: llvmpipe runs a
   * dispatch on the calling thread's behalf and waits for it), so the thread that issues is the
   * device's: while a lower class's atom is issued, nothing else (a poll, a program) runs. Work of
   * a higher class then goes first not only to the device but to the thread (higherWorkOutstanding,
   * pumpNextTurn).
   */
  private readonly issueRunsWork: boolean;
  /** A pump is queued for the next turn of the event loop (pumpNextTurn). */
  private pumpQueued = false;
  private readonly pumpQueuedNow = (): void => {
    this.pumpQueued = false;
    if (!this.detached) this.pump();
  };
  /** Set at kernel shutdown (detach): a pump queued before then does nothing. */
  private detached = false;
  /** The device runs on the host's CPU: checked work may wait for the device to drain (drainFirst). */
  private readonly drainsBeforeChecked: boolean;
  /** How long each checked kernel was last seen to run on this device, in any process (drainFirst). */
  readonly checkedRuns = new CheckedRuns();
  /** The item drainFirst held last (counted once in its owner's drainWaits, though the pump asks again). */
  private heldForDrain: WorkItem | null = null;
  /** The last pump stopped at drainFirst: work waits for the device to drain, and its completion is polled for without pause. */
  private holdingForDrain = false;
  /**
   * The watchdog's time check, set by the kernel: each owner's limit on one piece's device time,
   * and what to do when a piece ran longer (its loops were cut short: end the owner).
   */
  watchdog: {
    limitNs(owner: Proc): number;
    overrun(owner: Proc, piece: string, ns: number): void;
    /** A piece the host's clock put over the limit (`hostNs`) that its device time (`deviceNs`) clears. */
    excused(owner: Proc, piece: string, hostNs: number, deviceNs: number): void;
    /** A piece within the limit after which the owner's budget-spent flag was found set: its loops were cut all the same. */
    cut(owner: Proc, piece: string, ns: number): void;
  } | null = null;

  constructor(
    readonly device: PhysicalDevice,
    readonly params: SchedulerParams,
    private readonly trace: TraceLog,
  ) {
    startAsDoubles<Dispatcher>(this, ['busyNs']);
    this.drainsBeforeChecked = runsOnHostCpu(device.adapter);
    this.timesIssues = device.adapter.backend === 'opengles' || device.adapter.backend === 'opengl';
    this.issueRunsWork = this.timesIssues && this.drainsBeforeChecked;
    this.stopAdvising = adviseEventPump((nowMs) => this.nextUsefulPollNs(nowMs * 1e6) / 1e6);
  }

  /** Withdraws from the event pump: its advice and any pending wake-up (at kernel shutdown). */
  detach(): void {
    this.device.flushHeldSubmits();
    this.detached = true;
    this.stopAdvising();
    this.leadWake?.cancel();
    this.leadWake = null;
  }

  /**
   * When polling Dawn is next worth it for this device (ns; Infinity: no opinion): now while work
   * waits for the device to drain (drainFirst), and when the
   * oldest fence has no cost forecast and covers several submits; that fence's forecast end when
   * it has one. With no fence out it has no opinion: the pump's advice is process-wide, and an
   * idle kernel must not make it spin for another's work. Polls do more than notice completions:
   * on lavapipe, work queued behind unfinished work advances only as Dawn is polled (measured: a
   * loop of small submits polled every 100 µs ran at half speed), so a run of several submits
   * without a forecast is polled without pause; a single one (a whole dispatch, a realtime
   * process's small kernel) is seen at most an interval late. A map a program awaits (mapMade)
   * is polled for without pause, as dawn.node itself polls, except until a forecast end: the
   * program is blocked on it (a readback loop waited an interval per round), and bare Dawn spins
   * for it too.
   */
  private nextUsefulPollNs(now: number): number {
    const head = this.forecasts[0];
    // Work held for the device to drain waits on exactly that completion.
    if (this.holdingForDrain && head !== undefined) return now;
    // With nothing of its own on the device, a map is eager only for a while after it was made:
    // a map whose settling Dawn never reported must not keep the pump spinning.
    const eager = this.awaitedMaps > 0 && (head !== undefined || now - this.lastMapMadeNs < EAGER_MAP_WINDOW_NS) ? now : Infinity;
    if (!head) return eager;
    if (head.costNs === null) return head.pieces.length > 1 ? now : eager;
    const end = forecastEndNs(this.lastFenceDoneNs, head.firstIssuedAtNs, head.costNs);
    return end > now ? end : eager;
  }

  /** Maps made on this device that a program awaits and that have not settled (see nextUsefulPollNs). */
  private awaitedMaps = 0;
  /** When the last of them was made (ns). */
  private lastMapMadeNs = 0;

  /**
   * A program's mapAsync of `buffer` reached the real buffer (`mapping` settles with it): until
   * mapSettled(), Dawn is polled eagerly. When the last work issued is in the open run and uses
   * the buffer (a readback: a copy into it, then the map), the map cannot complete before that
   * work, nor (a queue completes in order) before the rest of the run: the run's completion is
   * then taken from the map, and closeRun asks Dawn for no fence of its own.
   */
  mapMade(buffer?: object, mapping?: Promise<unknown>): void {
    this.awaitedMaps++;
    this.lastMapMadeNs = nowNs();
    const run = this.openRun;
    const item = this.lastIssuedItem;
    if (mapping === undefined || buffer === undefined || run === null || item === null || this.lastIssuedWork !== this.issuedWork) return;
    if (item.owner === run.owner && item.uses?.(buffer) === true) this.mapCover = { run, work: this.issuedWork, mapping };
  }

  /** The map mapMade() counted has settled (resolved or rejected). */
  mapSettled(): void {
    this.awaitedMaps--;
  }

  /** True when an item of `owner` enqueued now would run before enqueue returns. */
  wouldRunNow(owner: Proc): boolean {
    if (owner.stopped || this.busy || this.outstandingFences >= this.params.maxInFlight || this.queuedTotal() !== 0) return false;
    if (this.issueRunsWork && (this.higherClassAlive(owner) || this.higherWorkOutstanding(classRank(owner)))) return false;
    return !(this.leadApplies() && this.outstandingFences > 0 && this.higherClassWaiting(owner, nowNs()));
  }

  /**
   * The lead rule needs wake-ups finer than Node's millisecond timers, which the event pump gives:
   * without it (dawnPollIntervalUs 0, or bypassed) pieces are issued as soon as the bound allows.
   */
  private leadApplies(): boolean {
    return this.params.leadNs > 0 && eventPumpActive();
  }

  private queuedTotal(): number {
    let total = 0;
    for (let i = 0; i < this.entityList.length; i++) total += this.entityList[i].queue.length;
    return total;
  }

  enqueue(item: WorkItem): void {
    const owner = item.owner;
    let entity = this.entities.get(owner);
    if (!entity) {
      entity = { proc: owner, queue: [], prepared: false, headIssued: false, finishing: new Set(), lastActiveNs: nowNs() };
      this.entities.set(owner, entity);
      this.entityList.push(entity);
    }
    if (entity.queue.length === 0) this.wake(entity);
    item.enqueuedAtNs = entity.lastActiveNs = nowNs();
    owner.queuedItems++;
    entity.queue.push(item);
    if (this.issueRunsWork && item.usesDevice && this.higherClassAlive(owner)) this.pumpNextTurn();
    else this.pump();
  }

  /**
   * A process that had nothing queued becomes runnable: it may not bank the GPU time it did not
   * use while idle (CFS-style), so its virtual runtime is raised to the least of its class's.
   */
  private wake(entity: Entity): void {
    let least: number | null = null;
    for (let i = 0; i < this.entityList.length; i++) {
      const other = this.entityList[i];
      if (other === entity || other.queue.length === 0 || other.proc.priority !== entity.proc.priority) continue;
      least = least === null ? other.proc.vruntimeNs : Math.min(least, other.proc.vruntimeNs);
    }
    if (least !== null) entity.proc.vruntimeNs = Math.max(entity.proc.vruntimeNs, least);
    if (entity.proc.inFlightGroups === 0) entity.proc.readySinceNs = nowNs();
  }

  /**
   * Processes this scheduler holds now: every live one that has used the device, and ended ones
   * whose work is still queued or on it. An ended process must leave: every turn of pump() walks
   * the list, and a lone process's calls take a shorter path (a kernel serving many short
   * processes otherwise slows down with each one, and keeps each one's memory).
   */
  get processes(): number {
    return this.entityList.length;
  }

  /** `owner` has ended: it leaves now if nothing of it is queued or on the device, else when its last run completes. */
  processEnded(owner: Proc): void {
    // Only ever compared with a live owner (a switch away from it is a preemption): an ended one
    // would be kept, with all it names, until another process's work is issued here.
    if (this.lastOwner === owner) this.lastOwner = null;
    const entity = this.entities.get(owner);
    if (entity) this.forgetIfEnded(entity);
    else this.forgetRunsOf(owner);
  }

  /** Drops an ended process's entity once nothing of it is queued or on the device. */
  private forgetIfEnded(entity: Entity): void {
    const owner = entity.proc;
    if (!owner.alive && entity.queue.length === 0 && !this.hasRunsInFlight(owner)) this.forget(owner);
  }

  /** Drops `owner`'s entity (from the map and the list). */
  private forget(owner: Proc): void {
    const entity = this.entities.get(owner);
    if (!entity) return;
    if (this.heldForDrain?.owner === owner) this.heldForDrain = null;
    if (this.lastOwner === owner && !owner.alive) this.lastOwner = null;
    this.entities.delete(owner);
    this.entityList.splice(this.entityList.indexOf(entity), 1);
    this.forgetRunsOf(owner);
  }

  /**
   * Drops `owner`'s run entries (kept between runs while it lives: see runCompleted) once none of
   * its runs is on the device; an ended process's last run drops them when it completes.
   */
  private forgetRunsOf(owner: Proc): void {
    if (this.hasRunsInFlight(owner)) return;
    this.runsInFlight.delete(owner);
    this.lastRunOf.delete(owner);
  }

  private hasRunsInFlight(owner: Proc): boolean {
    return (this.runsInFlight.get(owner) ?? 0) > 0;
  }

  /** Cancels every queued item of `owner`; work already on the device finishes on its own. */
  cancelAll(owner: Proc): void {
    // What it issued reaches Dawn as it would have unheld; what it queued after is cancelled.
    this.device.flushHeldSubmits();
    const entity = this.entities.get(owner);
    if (entity) {
      for (const item of entity.queue.splice(0)) {
        owner.queuedItems--;
        try {
          item.cancel();
        } catch {
          // A cancel must never stop the cancelling of the others.
        }
      }
      entity.prepared = false;
      entity.headIssued = false;
      this.endFinishing(entity);
      if (owner.inFlightGroups === 0) this.forget(owner);
    }
    this.notifyIdle();
  }

  /** Removes every queued item of `owner` without cancelling it, in order (migration moves them). */
  takeAll(owner: Proc): WorkItem[] {
    const entity = this.entities.get(owner);
    if (!entity) return [];
    const items = entity.queue.splice(0);
    owner.queuedItems -= items.length;
    entity.prepared = false;
    if (entity.headIssued && items.length > 0) partlyIssued.add(items[0]);
    entity.headIssued = false;
    return items;
  }

  /** The queued items of `owner`, in order, left in place (a checkpoint records them). */
  queued(owner: Proc): readonly WorkItem[] {
    return [...(this.entities.get(owner)?.queue ?? [])];
  }

  /**
   * Resolves when nothing of `owner` is on the device and its head item, if some of its pieces
   * were issued (a split submit with atoms done, a chunked copy or write partway), has run to its
   * end: that one item runs although `owner` is stopped, then it stops again. What a checkpoint
   * waits for before recording the queue item by item. Any number of callers may wait at once.
   * When `signal` aborts first, the wait is withdrawn (the item no longer runs on its account)
   * and the promise rejects with the signal's reason.
   */
  async finishStarted(owner: Proc, signal?: AbortSignal): Promise<void> {
    await this.abortable(this.whenOffDevice(owner), signal);
    const entity = this.entities.get(owner);
    if (!entity || entity.queue.length === 0 || !(entity.headIssued || partlyIssued.has(entity.queue[0]))) return;
    let waiter!: () => void;
    const finished = new Promise<void>((resolve) => {
      waiter = resolve;
      entity.finishing.add(resolve);
      this.pump();
    });
    try {
      await this.abortable(finished, signal);
    } finally {
      entity.finishing.delete(waiter);
    }
    await this.abortable(this.whenOffDevice(owner), signal);
  }

  /** `promise`, or a rejection with `signal`'s reason as soon as it aborts (whichever comes first). */
  private abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    if (!signal) return promise;
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  /** The head item of `entity` has ended (or its queue was emptied): every finishStarted waiter goes on. */
  private endFinishing(entity: Entity): void {
    if (entity.finishing.size === 0) return; // the common case: no copy of an empty set per item
    const waiters = [...entity.finishing];
    entity.finishing.clear();
    for (const waiter of waiters) waiter();
  }

  /** Called when a process is resumed or reniced: its work may now be picked. */
  reschedule(): void {
    this.pump();
  }

  /** Resolves when `owner` (or, with null, everyone) has nothing queued and nothing on the device. */
  whenIdle(owner: Proc | null): Promise<void> {
    if (this.isIdle(owner)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push({ owner, resolve }));
  }

  /** Resolves when nothing of `owner` is on this device (what it has queued may stay queued). */
  whenOffDevice(owner: Proc): Promise<void> {
    if (this.isOffDevice(owner)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push({ owner, resolve, offDevice: true }));
  }

  /**
   * This device's share only: callers wait on every dispatcher at once, and a dispatcher hears of
   * (and wakes its waiters on) its own completions alone, so a process count would leave a
   * device the process is not on waiting for another's fences.
   */
  private isOffDevice(owner: Proc): boolean {
    return !this.hasRunsInFlight(owner) && !this.busy;
  }

  private isIdle(owner: Proc | null): boolean {
    if (owner) return (this.entities.get(owner)?.queue.length ?? 0) === 0 && !this.hasRunsInFlight(owner);
    return this.queuedTotal() === 0 && !this.busy && this.outstandingFences === 0 && this.openRun === null;
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0) return;
    const still: typeof this.idleWaiters = [];
    for (const waiter of this.idleWaiters) {
      const done = waiter.offDevice ? this.isOffDevice(waiter.owner!) : this.isIdle(waiter.owner);
      if (done) waiter.resolve();
      else still.push(waiter);
    }
    this.idleWaiters = still;
  }

  /** The policy: strict priority between classes, least virtual runtime within one. */
  private pickNext(): Entity | null {
    let best: Entity | null = null;
    for (let i = 0; i < this.entityList.length; i++) {
      const entity = this.entityList[i];
      if (entity.queue.length === 0 || (entity.proc.stopped && entity.finishing.size === 0)) continue;
      if (
        !best ||
        classRank(entity.proc) < classRank(best.proc) ||
        (classRank(entity.proc) === classRank(best.proc) && entity.proc.vruntimeNs < best.proc.vruntimeNs)
      ) {
        best = entity;
      }
    }
    return best;
  }

  /**
   * True when no other process of `entity`'s class or a higher one has been active within the
   * contention window: then nobody waits behind the owner's work but lower classes.
   */
  private uncontended(entity: Entity, now: number): boolean {
    const rank = classRank(entity.proc);
    const since = now - this.params.contentionWindowNs;
    for (let i = 0; i < this.entityList.length; i++) {
      const other = this.entityList[i];
      if (other === entity || other.proc.stopped || !other.proc.alive || classRank(other.proc) > rank) continue;
      if (other.queue.length > 0 || other.proc.inFlightGroups > 0 || other.lastActiveNs > since) return false;
    }
    return true;
  }

  /** True when a process of a higher class than `proc`'s has had work within the contention window. */
  private higherClassActive(proc: Proc, now: number): boolean {
    const rank = classRank(proc);
    const since = now - this.params.contentionWindowNs;
    for (let i = 0; i < this.entityList.length; i++) {
      const other = this.entityList[i];
      if (classRank(other.proc) >= rank || other.proc.stopped || !other.proc.alive) continue;
      if (other.queue.length > 0 || other.proc.inFlightGroups > 0 || other.lastActiveNs > since) return true;
    }
    return false;
  }

  /** True when a live process of a higher class than `proc`'s, not stopped, has used this device (active or not). */
  private higherClassAlive(proc: Proc): boolean {
    const rank = classRank(proc);
    for (let i = 0; i < this.entityList.length; i++) {
      const other = this.entityList[i];
      if (classRank(other.proc) < rank && !other.proc.stopped && other.proc.alive) return true;
    }
    return false;
  }

  /**
   * Whether a higher class may arrive behind `proc`'s next piece and should find little ahead of
   * it: one active within the contention window, or (standbyBound) one alive on this device.
   */
  private higherClassWaiting(proc: Proc, now: number): boolean {
    return this.higherClassActive(proc, now) || (this.params.standbyBound === true && this.higherClassAlive(proc));
  }

  /** When the device is predicted to finish the work on it (ns), or null when some of it has no forecast. */
  private predictedIdleAtNs(): number | null {
    let end = this.lastFenceDoneNs;
    for (let i = 0; i < this.forecasts.length; i++) {
      const fence = this.forecasts[i];
      if (fence.costNs === null) return null;
      end = forecastEndNs(end, fence.firstIssuedAtNs, fence.costNs);
    }
    return end;
  }

  /**
   * Whether `entity`'s next piece should wait (the lead rule above); if so, arms a wake-up for
   * when it should go. Work that does not use the device (a map, a work-done) never waits.
   */
  private holdForLead(entity: Entity, now: number): boolean {
    if (this.outstandingFences === 0 || !entity.queue[0].usesDevice || !this.leadApplies()) return false;
    if (!this.higherClassWaiting(entity.proc, now)) return false;
    const idleAt = this.predictedIdleAtNs();
    if (idleAt === null || idleAt - now <= this.params.leadNs) return false;
    const atNs = idleAt - this.params.leadNs;
    if (!this.leadWake || this.leadWake.atNs > atNs) {
      this.leadWake?.cancel();
      const wake = {
        atNs,
        cancel: wakeAt(atNs / 1e6, () => {
          if (this.leadWake === wake) this.leadWake = null;
          this.pumpAfterSettle();
        }),
      };
      this.leadWake = wake;
    }
    return true;
  }

  /**
   * The in-flight bound, counted in the pieces that a process arriving later with a higher class
   * would wait for: `entity` may put work on the device while fewer than `limit` runs of its own
   * class or lower ones are unfinished. Runs of higher classes ahead do not count (a short
   * realtime submit must not leave the device idle behind it), and a process whose class has
   * nothing unfinished may always queue (it waits behind lower work already there either way).
   */
  private mayIssue(entity: Entity, limit: number): boolean {
    // Every unfinished fence counts at most once below: fewer than the limit in all passes at once.
    if (this.outstandingFences < limit) return true;
    const rank = classRank(entity.proc);
    let ownOrLower = 0;
    let ownOrHigher = 0;
    for (let k = 0; k < this.inFlightByClass.length; k++) {
      if (k >= rank) ownOrLower += this.inFlightByClass[k];
      if (k <= rank) ownOrHigher += this.inFlightByClass[k];
    }
    return ownOrLower < limit || ownOrHigher === 0;
  }

  /**
   * Where a submit runs its work (issueRunsWork): whether a run of a class higher than `rank` is
   * open or not yet seen complete. Lower work then waits for it: issued now, its atom would hold
   * the thread, and with it the poll that sees the higher run complete and its program's next
   * step, for the atom's whole length (measured on GLES: a realtime process resumed 1.9 ms after
   * its run was seen done, p50, two batch atoms later). The device idles for at most a poll.
   */
  private higherWorkOutstanding(rank: number): boolean {
    const open = this.openRun;
    if (open !== null && classRank(open.owner) < rank) return true;
    for (let k = 0; k < rank; k++) if (this.inFlightByClass[k] > 0) return true;
    return false;
  }

  /**
   * The pump, on the next turn of the event loop. Where a submit runs its work (issueRunsWork) the
   * pump waits for it after something settled (a run, an item's promise, a wake-up) while processes
   * of several classes use the device (classesMixed), and after a process enqueued device work
   * while one of a higher class lives: a completion has just resolved programs' promises, and their
   * continuations (a realtime program's next submit among them) run in the microtasks ahead of
   * that turn, not after whatever atom a pump issued now had run. (A batch program resumed by the
   * same poll as a realtime one would otherwise issue its next atom from its own submit first.)
   */
  private pumpNextTurn(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    setImmediate(this.pumpQueuedNow);
  }

  private pump(): void {
    this.holdingForDrain = false;
    while (!this.busy) {
      const entity = this.pickNext();
      if (!entity) break;
      // The clock is read only where it can matter (another process here, or the lead rule in
      // force): a lone process's loop of submits reads it once per call, at enqueue.
      const now = this.entityList.length > 1 || (this.outstandingFences > 0 && this.leadApplies()) ? nowNs() : NaN;
      const uncontended = this.uncontended(entity, now);
      const deep = uncontended && !(this.params.standbyBound === true && this.higherClassAlive(entity.proc));
      if (!this.mayIssue(entity, deep ? this.params.uncontendedMaxInFlight : this.params.maxInFlight)) break;
      if (this.issueRunsWork && entity.queue[0].usesDevice && this.higherWorkOutstanding(classRank(entity.proc))) break;
      if (this.holdForLead(entity, now)) break;
      const item = entity.queue[0];
      if (item.nextPiece) {
        if (!entity.prepared) {
          const preparing = item.prepare?.() ?? null;
          if (preparing) return this.awaitPrepared(entity, item, preparing);
          entity.prepared = true;
        }
        if (this.drainFirst(entity, item)) {
          // Issued once the work ahead completes (its settle pumps again); nothing else goes first.
          this.closeRun();
          this.holdingForDrain = true;
          break;
        }
        const budgetNs = uncontended ? this.params.uncontendedSliceNs : this.params.targetSliceNs;
        let piece = this.nextPieceOf(item, budgetNs);
        if (piece) {
          this.issue(entity, piece);
          // A lone process (no other on this device) whose piece closed no run: the checks above
          // would pass again unchanged (no fence was added, nobody else can be picked), so the
          // item's next piece (for a whole submit: none, the item is done) is taken at once.
          if (this.entityList.length !== 1 || this.openRun === null || entity.queue[0] !== item) continue;
          piece = this.nextPieceOf(item, budgetNs);
          if (piece) {
            this.issue(entity, piece);
            continue;
          }
        }
        // The item has no more pieces: it is done once its last run completes.
        this.finishItem(entity, item);
        continue;
      }
      this.finishItem(entity, item, true);
      item.owner.activity++;
      if (item.usesDevice) this.issuedWork++;
      let pending: void | Promise<void>;
      if (item.usesDevice && this.timesIssues) {
        // Timed like a piece's issue (see issue()); the run finishItem opened is this item's alone.
        const runningNs = nowNs();
        pending = this.runSafely(item);
        if (this.openRun) this.openRun.issueNs += nowNs() - runningNs;
      } else {
        pending = this.runSafely(item);
      }
      if (pending instanceof Promise) return this.awaitRun(item, pending);
    }
    if (this.openRun && !this.closeScheduled) {
      // Close the run after the program's current synchronous burst, so a loop of submits
      // costs one fence, not one per submit.
      this.closeScheduled = true;
      // A settled promise's then, not queueMicrotask: that makes an AsyncResource per call, a
      // shape that dies between bursts and takes optimized code with it at a full collection.
      void SETTLED.then(this.closeScheduledRun);
    }
    this.notifyIdle();
  }

  // The waits of pump(), apart from it: closures in the loop would make V8 allocate their
  // variables' context on every turn, the common one that waits for nothing included.
  private awaitPrepared(entity: Entity, item: WorkItem, preparing: Promise<void>): void {
    this.busy = true;
    // Nothing more is issued until it settles: the held submits do not wait for it.
    this.device.flushHeldSubmits();
    preparing
      .catch((error) => this.report(item, error))
      .finally(() => {
        entity.prepared = true;
        this.busy = false;
        this.pumpAfterSettle();
      });
  }
  private awaitRun(item: WorkItem, pending: Promise<void>): void {
    this.busy = true;
    this.device.flushHeldSubmits();
    pending
      .catch((error) => this.report(item, error))
      .finally(() => {
        this.busy = false;
        this.pumpAfterSettle();
      });
  }
  private runSafely(item: WorkItem): void | Promise<void> {
    // An item may reach the device by other ways than the queue (a map, a destroy): after the held submits.
    this.device.flushHeldSubmits();
    try {
      return item.run?.();
    } catch (error) {
      this.report(item, error);
      return undefined;
    }
  }

  /**
   * On a CPU device, whether `item` must wait for the device to drain before its first piece: its
   * work has checked loops, work is on the device or in the open run, and one of its kernels was
   * last seen to run long on this device (by any process), or one was never seen and its
   * process's last checked piece was long or there was none. Dawn frees a pipeline the program
   * let go of in the poll that sees the submit after its release complete; on lavapipe vkDestroyPipeline waits
   * for whatever the queue runs, so a short piece just ahead of a long kernel would stop the
   * kernel's thread (every process's calls, the daemon's sockets) for the whole kernel. Issued on
   * a drained device, the kernel is that submit, and its frees wait until it is done.
   */
  private drainFirst(entity: Entity, item: WorkItem): boolean {
    if (!this.mustDrainFor(entity, item)) {
      // Let go of a held item once it goes: it names its process's objects.
      if (this.heldForDrain === item) this.heldForDrain = null;
      return false;
    }
    if (this.heldForDrain !== item) {
      this.heldForDrain = item;
      entity.proc.drainWaits++;
    }
    return true;
  }

  /** drainFirst's rule, without its bookkeeping. */
  private mustDrainFor(entity: Entity, item: WorkItem): boolean {
    if (!this.drainsBeforeChecked || entity.headIssued || (this.outstandingFences === 0 && this.openRun === null)) return false;
    const runs = item.checkedRuns;
    if (runs === undefined || runs.length === 0) return false;
    let unknown = false;
    for (let i = 0; i < runs.length; i++) {
      const seenNs = runs[i].seenNs;
      if (seenNs > CHECKED_DRAIN_AFTER_NS) return true;
      if (!(seenNs <= CHECKED_DRAIN_AFTER_NS)) unknown = true;
    }
    return unknown && !(entity.proc.lastCheckedPieceNs <= CHECKED_DRAIN_AFTER_NS);
  }

  // nextPieceOf, issueSafely and runSafely report what an item throws (a kernel bug) and go on,
  // without a closure per call: they run for every piece and item.
  private nextPieceOf(item: WorkItem, budgetNs: number): WorkPiece | null | undefined {
    try {
      return item.nextPiece!(budgetNs);
    } catch (error) {
      this.report(item, error);
      return undefined;
    }
  }
  private issueSafely(item: WorkItem, piece: WorkPiece): void {
    try {
      if (piece.mayCut && this.watchdog) piece.issue(this.watchdog.limitNs(item.owner));
      else piece.issue();
    } catch (error) {
      this.report(item, error);
    }
  }

  private report(item: WorkItem, error: unknown): void {
    // Items route WebGPU errors to their owner themselves; anything thrown here is a kernel bug.
    process.stderr.write(`gpunix: dispatcher: work item of pid ${item.owner.pid} failed: ${String(error)}\n`);
  }

  /** Removes the head item of `entity`; its latency is recorded when its last run completes. */
  private finishItem(entity: Entity, item: WorkItem, indivisible = false): void {
    entity.queue.shift();
    entity.prepared = false;
    entity.headIssued = false;
    item.owner.queuedItems--;
    this.endFinishing(entity);
    // Work of an ended process (what it queued before its end) leaves with its last item.
    if (!item.owner.alive) this.forgetIfEnded(entity);
    if (!item.usesDevice) return;
    if (indivisible) this.openRunFor(item.owner);
    const run = this.openRun?.owner === item.owner ? this.openRun : this.lastRunOf.get(item.owner);
    if (run) {
      // Made as literals of their elements, not grown from `[]` (a first push allocates room for
      // sixteen): a readback round's run finishes two items, its write and its submit.
      const finishing = run.finishing;
      if (finishing.length === 0) run.finishing = [item.enqueuedAtNs];
      else if (finishing.length === 1) run.finishing = [finishing[0], item.enqueuedAtNs];
      else finishing.push(item.enqueuedAtNs);
    }
    // Its last piece has completed already (or it issued none): its latency ends now.
    else item.owner.latency.record(Number.isNaN(item.enqueuedAtNs) ? 0 : nowNs() - item.enqueuedAtNs);
  }

  private issue(entity: Entity, piece: WorkPiece): void {
    const owner = entity.proc;
    this.openRunFor(owner);
    owner.activity++;
    const run = this.openRun!;
    entity.headIssued = true;
    const item = entity.queue[0];
    // Timed from before its issue: on Dawn's GL backends over llvmpipe the submit itself may run
    // the kernel, and a clock read after it would miss that time (a checked piece's time check; the
    // split of a sighting's time by issue times, sighting.ts).
    const issuingNs = piece.mayCut || this.timesIssues ? nowNs() : 0;
    this.issueSafely(item, piece);
    if (this.timesIssues) run.issueNs += nowNs() - issuingNs;
    this.lastIssuedItem = item;
    this.lastIssuedWork = ++this.issuedWork;
    if (run.pieces.length === 0) run.pieces = [piece];
    else run.pieces.push(piece);
    if (piece.atom) owner.atomsRun++;
    if (piece.whole) owner.wholeDispatches++;
    // An atom is fenced alone: the preemption bound is counted in atoms, and its time teaches the cost model.
    const closesRun = piece.atom === true || piece.cost !== undefined;
    // A piece whose loops the watchdog may cut is timed on its own (its time decides whether it was
    // cut) without a fence of its own: a burst of small submits stays one run. One that closes its
    // run shares the run's fence: nothing is issued between the two, so they complete together.
    if (piece.mayCut) this.timePiece(owner, piece, issuingNs, closesRun);
    if (closesRun) this.closeRun();
  }

  private openRunFor(owner: Proc): void {
    if (this.openRun && this.openRun.owner !== owner) this.closeRun();
    if (this.openRun) return;
    const issuedAt = nowNs();
    if (this.lastOwner && this.lastOwner !== owner && this.lastOwner.alive) {
      const previous = this.entities.get(this.lastOwner);
      if (previous && previous.queue.length > 0) {
        this.lastOwner.preemptions++;
        this.preemptions++;
      }
    }
    this.lastOwner = owner;
    if (owner.readySinceNs !== null) {
      owner.readyWaitNs += issuedAt - owner.readySinceNs;
      owner.readySinceNs = null;
    }
    this.openRun = { owner, firstIssuedAtNs: issuedAt, pieces: NO_PIECES, finishing: NO_TIMES, ahead: this.outstandingFences, costNs: null, rank: 0, issueNs: DOUBLE_ZERO, settled: false };
    owner.inFlightGroups++;
    this.runsInFlight.set(owner, (this.runsInFlight.get(owner) ?? 0) + 1);
  }

  private closeRun(): void {
    // The run's fence (or covering map) must follow all of its work.
    this.device.flushHeldSubmits();
    const run = this.openRun;
    const shared = this.runFence;
    this.runFence = null;
    if (!run) return;
    this.openRun = null;
    this.lastIssuedItem = null;
    const cover = this.mapCover;
    this.mapCover = null;
    this.lastRunOf.set(run.owner, run);
    this.outstandingFences++;
    const rank = classRank(run.owner);
    run.rank = rank;
    this.inFlightByClass[rank]++;
    run.costNs = forecastNs(run.pieces);
    this.forecasts.push(run);
    // The method bound to the run, not a closure: V8 keeps a closure's optimized code only while
    // some closure of its kind lives, and every run's is gone by a full collection (between two
    // processes; every sample of bench/overhead), so each new process ran this in the interpreter
    // again while TurboFan compiled it anew. A method's code lives as long as its class.
    const settle = this.settleRun.bind(this, run);
    this.unsettled.push(run);
    if (cover !== null && cover.run === run && cover.work === this.issuedWork) {
      // The map covers the whole run (mapMade). Refused or aborted, it says nothing of the work:
      // a fence then.
      cover.mapping.then(settle, () => this.device.queue.onSubmittedWorkDone().then(settle, settle));
      return;
    }
    (shared ?? this.device.queue.onSubmittedWorkDone()).then(settle, settle);
  }

  /** `run`'s fence or covering map settled: the runs ahead of it complete first (a queue completes in order), then it. */
  private settleRun(run: OpenRun): void {
    if (run.settled) return;
    const unsettled = this.unsettled;
    while (unsettled.length > 0 && unsettled[0] !== run) this.settleRun(unsettled[0]);
    if (unsettled[0] === run) unsettled.shift();
    run.settled = true;
    this.runCompleted(run, run.rank);
  }

  /** A closed run has completed (its fence or covering map settled): its latency is recorded, its time joins the sighting, and the pump goes on. */
  private runCompleted(run: OpenRun, rank: number): void {
    const doneNs = seenCompleteNs(run.firstIssuedAtNs);
    this.forecasts.shift();
    const aheadSeenDoneNs = this.lastFenceDoneNs;
    this.lastFenceDoneNs = doneNs;
    this.aheadEndedNs = completedNoEarlierThanNs(doneNs);
    const owner = run.owner;
    // Entries of a live process are kept (emptied) rather than deleted: a Map's delete shrinks its
    // table, an allocation per run; an ended process's go here or when it is forgotten.
    if (this.lastRunOf.get(owner) === run) {
      if (owner.alive) this.lastRunOf.set(owner, null);
      else this.lastRunOf.delete(owner);
    }
    let enqueuedNs: number | undefined;
    // Indexed loops here and in closeSighting: this runs once per run, rarely enough that V8 may not
    // optimize it, and an unoptimized for-of makes an iterator result per element.
    const finishing = run.finishing;
    for (let i = 0; i < finishing.length; i++) {
      const enqueuedAtNs = finishing[i];
      if (Number.isNaN(enqueuedAtNs)) {
        owner.latency.record(0);
        continue;
      }
      owner.latency.record(doneNs - enqueuedAtNs);
      if (enqueuedNs === undefined || enqueuedAtNs < enqueuedNs) enqueuedNs = enqueuedAtNs;
    }
    if (this.sighting.count === 0) void SETTLED.then(this.closeSightingNow);
    this.sighting.add(run, enqueuedNs ?? NaN, doneNs, aheadSeenDoneNs);
    owner.inFlightGroups--;
    const here = this.runsInFlight.get(owner)! - 1;
    if (here === 0 && !owner.alive) this.runsInFlight.delete(owner);
    else this.runsInFlight.set(owner, here);
    this.outstandingFences--;
    this.inFlightByClass[rank]--;
    const entity = this.entities.get(owner);
    if (entity) entity.lastActiveNs = doneNs;
    if (entity && entity.queue.length > 0 && owner.inFlightGroups === 0) owner.readySinceNs = doneNs;
    if (entity) this.forgetIfEnded(entity);
    this.pumpAfterSettle();
  }

  /** The pump after something Dawn or the device reported settled (a run, an item's promise, a wake-up): at once, except as pumpNextTurn says. */
  private pumpAfterSettle(): void {
    if (this.issueRunsWork && this.classesMixed()) this.pumpNextTurn();
    else this.pump();
  }

  /**
   * Whether live processes of more than one class use this device: only then can an atom issued
   * by the pump hold up a higher class's program (pumpNextTurn). A process alone, or processes of
   * one class, keep the pump that goes on at once, which finds an item whose last atom completed
   * done in that atom's run (its latency and trace then end with the run).
   */
  private classesMixed(): boolean {
    let rank = -1;
    for (let i = 0; i < this.entityList.length; i++) {
      const proc = this.entityList[i].proc;
      if (!proc.alive || proc.stopped) continue;
      const own = classRank(proc);
      if (rank === -1) rank = own;
      else if (own !== rank) return true;
    }
    return false;
  }

  /**
   * The watchdog's time check on one piece that can be cut (`mayCut`): a loop budget spent means
   * more than the owner's limit of device time, so a piece over the limit may have had its loops
   * cut, and its owner is ended.
   *
   * A piece with a device stamp is timed by the host from its issue, and its stamp is read when
   * that is over the limit. One without (no timestamps, or no slot free) is timed from its issue or
   * from the end of the work ahead of it (the last fence, or the last timed piece within its
   * limit), whichever is later: the queue completes in order. That end is the earliest the host's
   * sighting allows (the poll before it), not the sighting: a busy thread sees a batch of
   * completions at once, and pieces measured from a late sighting of the work ahead would look
   * short, a runaway among them passing with its cut loops' results; and a piece seen over its
   * limit leaves no end behind (test/watchdogHostDelay.test.ts).
   */
  private timePiece(owner: Proc, piece: WorkPiece, issuedAtNs: number, closesRun: boolean): void {
    const watchdog = this.watchdog;
    const stamp = piece.stamp ?? null;
    if (!watchdog) {
      stamp?.drop();
      return;
    }
    // Methods bound to the piece's facts, not closures (see closeRun's settle).
    const settle = this.checkPieceTime.bind(this, watchdog, owner, piece, issuedAtNs, stamp);
    // A piece that closes its run asks Dawn for one completion signal, not two (a native future and
    // a promise per atom): closeRun takes it as the run's fence, and settles the run after this
    // check, which reads the end of the work ahead before the run's own completion moves it.
    const signal = this.device.queue.onSubmittedWorkDone();
    if (closesRun) this.runFence = signal;
    const own = signal.then(settle, settle);
    // After the piece's own completion signal, not before it (DeviceStamp.close).
    stamp?.close?.();
    // Checks settle in queue order, but one that reads its stamp ends after the next one starts:
    // chained, so that timeChecked() covers every check issued so far.
    const previous = this.pendingTimeCheck;
    let check: Promise<void> = own;
    if (previous !== null) {
      const next = resolvedWith.bind(null, own);
      check = previous.then(next, next);
    }
    this.pendingTimeCheck = check;
    void check.then(this.timeCheckSettled.bind(this, check));
  }

  /** A timed piece completed (timePiece): its time against its owner's limit, the device's deciding when the host saw it late. */
  private checkPieceTime(watchdog: NonNullable<Dispatcher['watchdog']>, owner: Proc, piece: WorkPiece, issuedAtNs: number, stamp: DeviceStamp | null): Promise<void> | undefined {
    // Seen at the end of the poll that reported it, still after it completed (an upper bound), but
    // not a kernel later: on GL an earlier settling of that poll may have issued one (seenCompleteNs).
    const doneNs = seenCompleteNs(issuedAtNs);
    // Its own time as near as the host can tell: from the end of the work ahead, if later.
    const startNs = Math.max(issuedAtNs, this.aheadEndedNs, this.lastTimedDoneNs);
    const ownNs = doneNs - startNs;
    const spentNs = stamp ? doneNs - issuedAtNs : ownNs;
    const limitNs = watchdog.limitNs(owner);
    // The drain rule's history is what the piece was seen to run, not the watchdog's upper
    // bound: it was still running at the poll before the one that reported it. A piece seen
    // late (the thread busy with the program's own loop of submits) is not counted long.
    const seenNs = Math.max(0, completedNoEarlierThanNs(doneNs) - startNs);
    owner.lastCheckedPieceNs = seenNs;
    const runs = piece.checkedRuns;
    if (runs) for (let i = 0; i < runs.length; i++) runs[i].seenNs = seenNs;
    if (!owner.alive || spentNs <= limitNs) {
      this.lastTimedDoneNs = completedNoEarlierThanNs(doneNs);
      stamp?.drop();
      return spentNs * WATCHDOG_FLAG_READ_FRACTION >= limitNs ? this.readSpentFlags(watchdog, owner, piece.name, spentNs) : undefined;
    }
    if (!stamp) {
      watchdog.overrun(owner, piece.name, spentNs);
      return undefined;
    }
    // The host saw the completion late: a kernel thread busy past the limit (a long compile,
    // another process's checkpoint) stretches this clock, not the device's. The device's time
    // decides; it covers the piece and never less (deviceTimer.ts), so a piece whose loops were
    // cut is never excused.
    return stamp.read().then((deviceNs) => {
      if (deviceNs !== null && deviceNs <= limitNs) {
        watchdog.excused(owner, piece.name, spentNs, deviceNs);
        return this.readSpentFlags(watchdog, owner, piece.name, deviceNs);
      }
      if (owner.alive) watchdog.overrun(owner, piece.name, deviceNs ?? spentNs);
      return undefined;
    });
  }

  /**
   * A piece within its owner's limit, but long enough (WATCHDOG_FLAG_READ_FRACTION) that its loops
   * may have run out of budget all the same had the calibration read the device slow: the owner's
   * budget-spent flags on this device decide (src/vgpu/loopFlag.ts); a set one ends it. Nothing to
   * read (no flagged pipeline, or the owner ended): undefined.
   */
  private readSpentFlags(watchdog: NonNullable<Dispatcher['watchdog']>, owner: Proc, piece: string, ns: number): Promise<void> | undefined {
    if (!owner.alive || owner.loopFlags.size === 0) return undefined;
    let reads: Array<Promise<boolean>> | null = null;
    for (const flag of owner.loopFlags) if (flag.physical === this.device) (reads ??= []).push(flag.read());
    if (reads === null) return undefined;
    this.spentFlagReads += reads.length;
    return Promise.all(reads).then((set) => {
      if (set.includes(true) && owner.alive) watchdog.cut(owner, piece, ns);
    });
  }

  /** Budget-spent flags read so far (readSpentFlags), for stats. */
  spentFlagReads = 0;

  /** The chain of time checks up to `check` settled: none is pending unless another joined it since. */
  private timeCheckSettled(check: Promise<void>): void {
    if (this.pendingTimeCheck === check) this.pendingTimeCheck = null;
  }

  /**
   * Settles once the watchdog has checked every piece it times that was issued so far (their
   * checks run in queue order); null when none is pending. A map made now hands its result over
   * only after it: the work it reads back may include loops the watchdog cut, whose process must
   * be ended before the program could read them.
   */
  timeChecked(): Promise<void> | null {
    return this.pendingTimeCheck;
  }

  /**
   * Accounts the runs the last poll reported (sighting.ts): each one's share of their time goes to
   * its owner's GPU time and virtual runtime, the trace and the cost model.
   */
  private closeSighting(): void {
    const sighting = this.sighting;
    const basis = sighting.split();
    // A share that came from the cost models teaches them nothing (sighting.ts).
    const teaches = basis === SplitBasis.Alone || basis === SplitBasis.Issue;
    // One timing object for every run: the trace copies its numbers out as it records.
    const timing = this.runTiming;
    for (let i = 0; i < sighting.count; i++) {
      const run = sighting.runs[i]!;
      const startNs = sighting.startNs[i];
      const endNs = sighting.endNs[i];
      const spent = endNs - startNs;
      const owner = run.owner;
      owner.gpuTimeNs += spent;
      owner.vruntimeNs += spent / owner.shareWeight;
      this.busyNs += spent;
      if (teaches) this.learn(run, spent);
      timing.issuedNs = run.firstIssuedAtNs;
      timing.enqueuedNs = sighting.enqueuedNs[i];
      timing.ahead = run.ahead;
      const pieces = run.pieces;
      for (let p = 0; p < pieces.length; p++) this.trace.add(owner, this.device.id, pieces[p].name, startNs, endNs, pieces.length, pieces[p].args, timing);
    }
    sighting.clear();
  }

  /** Teaches each pipeline's cost model from a run of pieces, splitting the time by workgroups. */
  private learn(run: OpenRun, spentNs: number): void {
    // Every piece must be costed and untimed (timed pieces teach themselves): checked first, in a
    // loop (no array per run, which settle makes for every fence).
    const pieces = run.pieces;
    for (let i = 0; i < pieces.length; i++) if (!pieces[i].cost || pieces[i].cost!.timed) return;
    if (pieces.length === 0) return;
    const model = pieces[0].cost!.model;
    if (pieces.some((p) => p.cost!.model !== model)) return;
    model.learn(spentNs, pieces.reduce((sum, p) => sum + p.cost!.workgroups, 0));
  }

  /** Fraction of the dispatcher's lifetime the device spent on processes' work. */
  utilization(): number {
    const lifetime = nowNs() - this.createdAtNs;
    return lifetime > 0 ? Math.min(1, this.busyNs / lifetime) : 0;
  }
}
