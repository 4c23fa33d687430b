// The fleet scheduler: one of several replicas, leader-elected through an etcd lease. The leader
// keeps an in-memory mirror of etcd (one list + one watch per prefix, never a re-list per decision)
// and runs one decision loop, woken by watch events (debounced by a few ms) and by a resync timer:
//   1. jobs on dead nodes (their nodes/<node> key gone with its lease, or a bound member's status
//      gone with the lease it was written under) → unbound and made pending again (restoring from
//      checkpoints when every member has one, else restarted when restartable, else failed);
//   2. cancel requests → bindings deleted, phase 'cancelled';
//   3. member statuses → phases (all running → running; all exited 0 → succeeded; any failure or
//      non-zero exit → failed; bindings deleted when it ends);
//   4. suspended jobs whose devices have room again → resumed in place (desired 'run'), highest
//      priority first;
//   5. pending jobs in QueueTree order → admitted by the queues → placed (best fit) → bound; when
//      they do not fit, reclaim by migration first: running members in the way moved, live, to
//      other nodes (JobRecord.move; the job waits for them, and their end frees its room); else
//      reclaim: victims suspended (desired 'suspend', phase 'suspended'), then the job bound; else
//      left pending with a message saying why (written only when it changes). A move's outcome
//      (its source's MemberStatus.move) is judged in step 3: committed → the member's placement is
//      the target; failed → it goes on where it was (docs/fleet.md, "Moving running work").
// Decisions are made synchronously against the mirror: capacity and queue usage are reserved in
// memory at decision time; the commits of a pass go out merged into as few transactions as etcd
// allows (group commit), up to 64 in flight; a pass places for at most 10 ms and then yields so its
// commits go out while the next pass decides. A commit that fails releases its reservation and
// re-reads the job. A job with a commit in flight is "busy":
// no other decision touches it until the commit answers.
//
// Never bound twice — the argument:
// (a) Only the leader writes bindings and job phases, and every commit it makes carries
//     leadership.condition (scheduler/leader is held under this replica's lease). etcd applies a
//     transaction atomically at one revision, and at any revision the leader key is held under at
//     most one lease, so at most one replica's commits can succeed at a time; a deposed leader's
//     in-flight commits fail, and it also drops their results (its term changed).
// (b) Every commit that writes a job's bindings also writes its JobRecord, conditioned on the
//     JobRecord's modRevision as this leader last saw it. A bind moves the job out of 'pending'
//     (phase 'bound', generation+1) in the same transaction as its bindings, so two binds decided
//     from one view of the job cannot both apply, and a later decision sees phase 'bound' and does
//     not bind. A merged (group) transaction is all-or-nothing too, and each decision in it keeps
//     its own conditions. A new leader starts from etcd's state (list), not from its predecessor's memory.
// (c) A job is bound again only after a commit that deleted every binding of its previous
//     generation (node death, in the same transaction that made it pending); the node that lost its
//     lease kills its members itself. So at most one generation of a job has bindings at any time.
//     A move keeps the generation: during it the member has a binding on its target too, but the
//     target never spawns (it only receives the process), and the daemon's move hands the one
//     process over at its commit — before it the source's runs, after it the target's.
// Bindings are written only by the leader, so it does not watch bindings/ (that would only echo
// its own writes at the bind rate): it lists them when it starts leading, deletes any that no job
// accounts for, and tracks the rest from its own commits.

import { performance } from 'node:perf_hooks';
import { Capacity, MemberPlacement } from './capacity.js';
import { FINISHED_PHASES } from './client.js';
import { explainUnplaceable, placeGang } from './placement.js';
import { QueueTree } from './queues.js';
import type { Binding, CheckpointRecord, JobPhase, JobRecord, LeaderRecord, MemberMove, MemberStatus, NodeRecord } from './records.js';
import { PlannedMove, selectMoves, selectVictims } from './reclaim.js';
import type { QueueSpec } from './spec.js';
import type { Commit, FleetStore, Leadership, WatchEvent } from './store.js';

export type SchedulerLogLevel = 'debug' | 'info' | 'warn' | 'error';
/** A pino-like log function: (level, message, fields). */
export type SchedulerLog = (level: SchedulerLogLevel, msg: string, fields?: Record<string, unknown>) => void;

export interface FleetSchedulerOptions {
  /** This replica's id (the LeaderRecord's); default scheduler-<pid>-<random>. */
  id?: string;
  log?: SchedulerLog;
  /** TTL of the leader lease (s): a dead leader is replaced within about this long. Default 2. */
  leaseTtlSeconds?: number;
  /** How often the loop also runs without an event, re-trying every blocked job (ms). Default 1000. */
  resyncMs?: number;
  /** The most commits in flight at once. Default 64. */
  maxInFlight?: number;
  /** How long an event waits for more before the loop runs (ms). Default 2. */
  debounceMs?: number;
  /** JobRecords of jobs finished (succeeded, failed, cancelled) longer ago than this are deleted (ms). Default 24 h. */
  retentionMs?: number;
}

export interface SchedulerStats {
  /** Gangs bound (first binds and rebinds after node death). */
  placements: number;
  /** Commits whose conditions did not hold or that etcd did not take (the job was re-read). */
  bindFailures: number;
  /** Submit → bind commit answered, over the last 10 000 first binds (ms). */
  bindLatencyMs: { p50: number; p99: number; count: number };
  /** Jobs suspended to make room. */
  reclaims: number;
  /** Jobs taken off a dead node to be bound again. */
  reschedules: number;
  /** Live moves of a member to another node: begun, committed, failed (the member went on where it was). */
  movesStarted: number;
  movesDone: number;
  movesFailed: number;
  /** Passes of the decision loop, and placement searches (placeGang) they made. */
  passes: number;
  placeAttempts: number;
  /** Round trip of this leader's commits (sent → answered), over the last 10 000 (ms). */
  commitMs: { p50: number; p99: number; count: number };
  /** When this replica became the leader (ms since the epoch), or null while it does not lead. */
  leaderSince: number | null;
  inFlight: number;
}

/** Phases whose members hold their devices' share and memory. */
const HOLDING: ReadonlySet<JobPhase> = new Set(['bound', 'running']);
/** Phases with bindings. */
const BOUND: ReadonlySet<JobPhase> = new Set(['bound', 'running', 'suspended']);
/** etcd's default limit of operations in one transaction is 128; stay under it. */
const MAX_TXN_OPS = 120;
const LATENCY_SAMPLES = 10_000;
/** The longest a pass of the loop places jobs before it yields to let its commits go out (ms). */
const PASS_BUDGET_MS = 10;
/** A pending job's changing reason is rewritten at most this often (etcd writes stay low). */
const MESSAGE_INTERVAL_MS = 2_000;
/** A `lost` entry for a bound job some of whose bindings are missing (it is rebound). */
const MISSING_BINDINGS = '(missing bindings)';
/** The most finished JobRecords one pass deletes (retention): the rest wait for the next passes. */
const RETENTION_DELETES_PER_PASS = 16;
/** A job whose move failed is not moved again for this long (ms): the member goes on where it was. */
export const MOVE_RETRY_MS = 30_000;
/** A job is not moved again sooner than this after its last move ended (ms): no ping-pong. */
export const MOVE_COOLDOWN_MS = 5_000;
/**
 * A move its source has not begun (no status naming it) this long after it was decided is given up
 * (ms). One under way (`moving`) is waited for: its node reports how it ended, or dies (its status
 * goes with its lease, and the job is rescheduled), and a large process may take minutes to copy.
 */
export const MOVE_TIMEOUT_MS = 120_000;

/** What the leader knows and has decided about one job. */
interface JobState {
  record: JobRecord;
  modRevision: number;
  /** The record a commit in flight will make (while busy). */
  next?: JobRecord;
  /** The bindings that commit will leave (null: none). */
  nextBindings?: Binding[] | null;
  /** A commit or re-read about this job is in flight: no other decision touches it. */
  busy: boolean;
  /** The placement reserved in capacity and charged to its queue now (null: nothing). */
  held: MemberPlacement[] | null;
  /** Its bindings as last written (index = member); null when it has none. */
  bindings: Binding[] | null;
  /** Nodes it is bound to that died: it must be unbound and placed again. */
  lost?: Set<string>;
  /** Capacity epoch at which it last failed to be placed or resumed (skipped until capacity frees). */
  blockedAt?: number;
  /** When this leader last wrote its pending message. */
  messageAt?: number;
  /** The node sets it is indexed under (onNode). */
  indexed: string[];
  /** The pending job its move (under way) makes room for, as indexed in movesFor. */
  movingFor?: string;
}

/** Member `member` of `job` as bound at `generation` on `device`: what the node runs (no restore image, no incarnation). */
export function memberBinding(job: JobRecord, member: number, generation: number, device: number): Binding {
  return {
    job: job.id,
    member,
    generation,
    device,
    tenant: job.spec.tenant,
    class: job.spec.class,
    share: job.spec.share,
    memory: job.spec.memory,
    program: job.spec.program,
    args: job.spec.args,
    ...(job.spec.checkpoint ? { checkpoint: job.spec.checkpoint } : {}),
    desired: 'run',
  };
}

export class FleetScheduler {
  readonly id: string;
  private readonly log: SchedulerLog;
  private readonly ttl: number;
  private readonly resyncMs: number;
  private readonly maxInFlight: number;
  private readonly debounceMs: number;
  private readonly retentionMs: number;

  private stopped = true;
  private campaigning: Promise<void> | null = null;
  /** Resolves the wait of the current term (lost leadership, stop, or a reload after a broken watch). */
  private endTerm: ((why: 'lost' | 'stop' | 'reload') => void) | null = null;
  private leadership: Leadership | null = null;
  /** Bumped whenever leadership (or the mirror) is dropped: results of older terms are ignored. */
  private term = 0;
  private ready = false;
  private leaderSince: number | null = null;
  private watches: Array<{ close(): Promise<void> }> = [];

  // The mirror.
  private nodes = new Map<string, NodeRecord>();
  private jobs = new Map<string, JobState>();
  private statuses = new Map<string, Map<number, MemberStatus>>();
  private checkpoints = new Map<string, Map<number, CheckpointRecord>>();
  private queueSpecs = new Map<string, QueueSpec>();
  private capacity = new Capacity();
  private queues = new QueueTree([]);

  // Indexes over the mirror (each decision step looks only at its own set).
  private pending = new Set<string>();
  private suspended = new Set<string>();
  private active = new Set<string>();
  private cancels = new Set<string>();
  private lostJobs = new Set<string>();
  private statusDirty = new Set<string>();
  private onNode = new Map<string, Set<string>>();
  /** Bumped whenever capacity may have grown (a release, a node, a queue change). */
  private freeEpoch = 0;
  /** Finished jobs whose records retention deletes, about in finishing order (updatedAt: when they finished). */
  private finished: Array<{ id: string; at: number; modRevision: number }> = [];
  /** The ids in `finished` (each once: a finish is seen both at its commit and at its watch echo). */
  private finishedIds = new Set<string>();

  private inFlight = 0;
  private timer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private fullPass = false;
  /** The rest of a pending order a pass was cut short in (by its time budget or a full window). */
  private carry: { order: string[]; at: number } | null = null;
  /** Gang shapes that did not fit in this pass, at which capacity epoch, and why. */
  private failedShapes = new Map<string, { epoch: number; reason: string }>();
  /** Decisions of this pass not sent yet (enqueue/flush), and their operation counts. */
  private batch: Array<{ commit: Commit; what: string; done: (ok: boolean, revision: number) => void }> = [];
  private batchOps = 0;
  private batchIfs = 0;
  /** preemptible() of this pass of the loop (null: not built yet, or a reclaim changed it). */
  private runningCache: Array<{ job: JobRecord; placement: MemberPlacement[] }> | null = null;

  private counters = { placements: 0, bindFailures: 0, reclaims: 0, reschedules: 0, movesStarted: 0, movesDone: 0, movesFailed: 0, passes: 0, placeAttempts: 0 };
  /** Pending job → the jobs moving a member to make room for it (JobRecord.move.forJob). */
  private movesFor = new Map<string, Set<string>>();
  private latencies = new Samples(LATENCY_SAMPLES);
  private commitTimes = new Samples(LATENCY_SAMPLES);

  constructor(
    private readonly store: FleetStore,
    options: FleetSchedulerOptions = {},
  ) {
    this.id = options.id ?? `scheduler-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    this.log = options.log ?? (() => undefined);
    this.ttl = options.leaseTtlSeconds ?? 2;
    this.resyncMs = options.resyncMs ?? 1_000;
    this.maxInFlight = options.maxInFlight ?? 64;
    this.debounceMs = options.debounceMs ?? 2;
    this.retentionMs = options.retentionMs ?? 24 * 3_600_000;
  }

  get isLeader(): boolean {
    return this.ready && this.leadership !== null;
  }

  stats(): SchedulerStats {
    return { ...this.counters, bindLatencyMs: this.latencies.summary(), commitMs: this.commitTimes.summary(), leaderSince: this.leaderSince, inFlight: this.inFlight };
  }

  /** Starts campaigning for leadership (returns at once; the replica leads when it wins). */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    this.campaigning = this.campaignLoop();
  }

  /** Stops deciding and resigns (the leader key goes at once, so another replica takes over). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.ready = false;
    this.endTerm?.('stop');
    await this.campaigning;
    this.campaigning = null;
  }

  private async campaignLoop(): Promise<void> {
    while (!this.stopped) {
      let lostWhy: Error | null = null;
      let leadership: Leadership | null;
      const record: LeaderRecord = { id: this.id, since: Date.now() };
      try {
        leadership = await this.store.campaign(
          record,
          this.ttl,
          (error) => {
            // Stop every decision at once: nothing of this term may act after this point.
            lostWhy = error;
            this.ready = false;
            this.term++;
            this.endTerm?.('lost');
          },
          () => this.stopped,
        );
      } catch (error) {
        this.log('warn', 'fleet scheduler: campaign failed; retrying', { error: (error as Error).message });
        await sleep(500);
        continue;
      }
      if (!leadership) break;
      if (this.stopped || lostWhy) {
        await leadership.resign().catch(() => undefined);
        continue;
      }
      const why = await this.lead(leadership);
      if (why === 'stop') {
        await leadership.resign().catch(() => undefined);
        break;
      }
      if (why === 'lost') this.log('warn', 'fleet scheduler: leadership lost', { id: this.id, error: (lostWhy as Error | null)?.message });
      if (why === 'failed') await sleep(500);
      // A failed load also ends here: give the lease up so another replica (or this one) may lead.
      if (!leadership.lease.lost) await leadership.resign().catch(() => undefined);
    }
  }

  /** Leads until leadership is lost or stop(): loads the mirror, runs the loop; reloads after a broken watch. */
  private async lead(leadership: Leadership): Promise<'lost' | 'stop' | 'failed'> {
    for (;;) {
      const ended = new Promise<'lost' | 'stop' | 'reload'>((resolve) => (this.endTerm = resolve));
      if (leadership.lease.lost) return 'lost';
      const term = ++this.term;
      this.leadership = leadership;
      try {
        await this.load(term);
      } catch (error) {
        if (term === this.term) this.log('warn', 'fleet scheduler: loading the fleet state failed', { error: (error as Error).message });
        await this.dropTerm();
        return this.stopped ? 'stop' : 'failed';
      }
      if (term === this.term && !this.stopped && !leadership.lease.lost) {
        this.ready = true;
        this.leaderSince ??= Date.now();
        this.log('info', 'fleet scheduler: leading', { id: this.id, nodes: this.nodes.size, jobs: this.jobs.size });
        this.resyncTimer = setInterval(() => {
          this.fullPass = true;
          this.schedule();
        }, this.resyncMs);
        this.resyncTimer.unref?.();
        this.fullPass = true;
        this.schedule();
      }
      const why = this.stopped ? 'stop' : leadership.lease.lost ? 'lost' : await ended;
      await this.dropTerm();
      if (why !== 'reload') return why;
      this.log('info', 'fleet scheduler: reloading the fleet state (a watch ended)');
    }
  }

  /** Stops every decision of this term at once and forgets the mirror. */
  private async dropTerm(): Promise<void> {
    this.term++;
    this.ready = false;
    this.leadership = null;
    this.leaderSince = null;
    this.endTerm = null;
    if (this.timer) clearTimeout(this.timer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.timer = this.resyncTimer = null;
    const watches = this.watches;
    this.watches = [];
    this.inFlight = 0;
    this.batch = [];
    this.batchOps = this.batchIfs = 0;
    this.carry = null;
    this.nodes = new Map();
    this.jobs = new Map();
    this.statuses = new Map();
    this.checkpoints = new Map();
    this.queueSpecs = new Map();
    this.capacity = new Capacity();
    this.queues = new QueueTree([]);
    for (const set of [this.pending, this.suspended, this.active, this.cancels, this.lostJobs, this.statusDirty]) set.clear();
    this.onNode = new Map();
    this.movesFor = new Map();
    this.finished = [];
    this.finishedIds.clear();
    await Promise.all(watches.map((w) => w.close()));
  }

  // ---- loading and watching -------------------------------------------------------------------

  /** Lists each prefix and watches it from its list's revision (so no change in between is missed). */
  private async load(term: number): Promise<void> {
    const keys = this.store.keys;
    const alive = () => term === this.term;
    const watchFrom = async <T>(prefix: string, revision: number, apply: (event: WatchEvent<T>) => void) => {
      const watch = await this.store.watch<T>(
        prefix,
        revision,
        (event) => {
          if (!alive()) return;
          try {
            apply(event);
          } catch (error) {
            // A record this leader cannot apply is skipped (logged), never thrown into the watch.
            this.log('error', 'fleet scheduler: applying a change failed; skipped', { key: event.key, error: (error as Error).stack });
          }
          this.schedule();
        },
        (error) => {
          if (!alive()) return;
          this.log('warn', 'fleet scheduler: a watch ended', { prefix, error: error.message });
          this.endTerm?.('reload');
        },
      );
      if (alive()) this.watches.push(watch);
      else await watch.close();
    };

    // Every list at once (a takeover waits for these round trips), applied in dependency order
    // (nodes before jobs, jobs before statuses); the watches start after, each from its list's revision.
    const [queues, nodes, jobs, bindings, statuses, checkpoints] = await Promise.all([
      this.store.list<QueueSpec>(keys.queues()),
      this.store.list<NodeRecord>(keys.nodes()),
      this.store.list<JobRecord>(keys.jobs()),
      this.store.list<Binding>(keys.bindings()),
      this.store.list<MemberStatus>(keys.statuses()),
      this.store.list<CheckpointRecord>(keys.checkpoints()),
    ]);
    if (!alive()) return;
    for (const entry of queues.entries) this.queueSpecs.set(entry.value.name, entry.value);
    this.queues = new QueueTree([...this.queueSpecs.values()]);
    for (const entry of nodes.entries) {
      if (!this.validNode(entry.key, entry.value)) continue;
      this.nodes.set(entry.value.name, entry.value);
      this.capacity.setNode(entry.value);
    }

    // Bindings by job, checked against the job records: what no job accounts for is deleted. (The
    // lists may be of different revisions; between them only submits and cancels can happen — no
    // other replica can commit a binding once this one holds the leader key.)
    const byJob = new Map<string, Binding[]>();
    const orphans: string[] = [];
    const validJobs = jobs.entries.filter((entry) => this.validJob(entry.key, entry.value));
    const jobsById = new Map(validJobs.map((entry) => [entry.value.id, entry]));
    for (const { key, value } of bindings.entries) {
      const [node, jobId, member] = keys.rest(keys.bindings(), key).split('/');
      const job = jobsById.get(jobId)?.value;
      if (job && BOUND.has(job.phase) && job.placement[Number(member)]?.node === node && value.generation === job.generation && value.member === Number(member)) {
        let list = byJob.get(jobId);
        if (!list) byJob.set(jobId, (list = []));
        list[value.member] = value;
      } else if (job && BOUND.has(job.phase) && value.generation === job.generation && value.member === Number(member) && extraBindingNodes(job, value.member).includes(node)) {
        // A move's target, or the node supervising a moved member's program: derived from the record.
      } else orphans.push(key);
    }
    for (const entry of validJobs) {
      if (FINISHED_PHASES.includes(entry.value.phase)) {
        this.noteFinished(entry.value, entry.modRevision);
        continue;
      }
      const state = this.newState(entry.value, entry.modRevision);
      if (BOUND.has(entry.value.phase)) {
        const list = byJob.get(entry.value.id) ?? [];
        let complete = list.length === entry.value.spec.gang;
        for (let m = 0; m < entry.value.spec.gang; m++) complete &&= list[m] !== undefined;
        state.bindings = list;
        for (const { node } of entry.value.placement) if (!this.nodes.has(node)) (state.lost ??= new Set()).add(node);
        // A node that restarted (another incarnation) dropped what it ran: as if it had died.
        for (const binding of list) {
          const node = binding ? entry.value.placement[binding.member]?.node : undefined;
          if (node !== undefined && this.restarted(binding, node)) (state.lost ??= new Set()).add(node);
        }
        // Cannot happen with all-or-nothing commits; if it does, rebinding the gang is the safe way out.
        if (!complete) (state.lost ??= new Set()).add(MISSING_BINDINGS);
      }
      this.jobs.set(entry.value.id, state);
      this.refresh(state);
    }
    this.finished.sort((a, b) => a.at - b.at);
    for (const entry of statuses.entries) this.applyMemberKey(this.statuses, keys.statuses(), entry.key, entry.value);
    for (const entry of checkpoints.entries) this.applyMemberKey(this.checkpoints, keys.checkpoints(), entry.key, entry.value);
    if (orphans.length > 0) {
      this.log('info', 'fleet scheduler: deleting bindings no job accounts for', { count: orphans.length });
      for (let i = 0; i < orphans.length; i += MAX_TXN_OPS) this.fire([], { deletes: orphans.slice(i, i + MAX_TXN_OPS) }, 'orphan bindings', () => undefined);
    }

    await Promise.all([
      watchFrom<QueueSpec>(keys.queues(), queues.revision, (event) => this.applyQueue(event)),
      watchFrom<NodeRecord>(keys.nodes(), nodes.revision, (event) => this.applyNode(event)),
      watchFrom<JobRecord>(keys.jobs(), jobs.revision, (event) => this.applyJob(event)),
      watchFrom<MemberStatus>(keys.statuses(), statuses.revision, (event) => this.applyMemberKey(this.statuses, keys.statuses(), event.key, event.type === 'put' ? event.value : undefined)),
      watchFrom<CheckpointRecord>(keys.checkpoints(), checkpoints.revision, (event) => this.applyMemberKey(this.checkpoints, keys.checkpoints(), event.key, event.type === 'put' ? event.value : undefined)),
    ]);
    if (!alive()) return;
    for (const id of this.jobs.keys()) this.statusDirty.add(id);
  }

  private newState(record: JobRecord, modRevision: number): JobState {
    return { record, modRevision, busy: false, held: null, bindings: null, indexed: [] };
  }

  /** Whether `value` has what the scheduler reads of a JobRecord; else it is skipped (logged). */
  private validJob(key: string, value: JobRecord | undefined | null): value is JobRecord {
    const spec = value?.spec as Partial<JobRecord['spec']> | undefined;
    const ok =
      typeof value === 'object' && value !== null && typeof value.id === 'string' && key === this.store.keys.job(value.id) && typeof value.phase === 'string' &&
      typeof value.generation === 'number' && Array.isArray(value.placement) && typeof value.submittedAt === 'number' &&
      typeof spec === 'object' && spec !== null && typeof spec.gang === 'number' && typeof spec.share === 'number' && typeof spec.memory === 'number' && typeof spec.queue === 'string' && typeof spec.priority === 'number' &&
      typeof spec.placement === 'object' && spec.placement !== null;
    if (!ok) this.log('warn', 'fleet scheduler: skipping a malformed job record', { key });
    return ok;
  }

  /** Whether `value` has what the scheduler reads of a NodeRecord; else it is skipped (logged). */
  private validNode(key: string, value: NodeRecord | undefined | null): value is NodeRecord {
    const ok =
      typeof value === 'object' && value !== null && typeof value.name === 'string' && key === this.store.keys.node(value.name) && Array.isArray(value.devices) &&
      value.devices.every((d) => typeof d === 'object' && d !== null && typeof d.index === 'number' && typeof d.memoryBudget === 'number') &&
      typeof value.labels === 'object' && value.labels !== null;
    if (!ok) this.log('warn', 'fleet scheduler: skipping a malformed node record', { key });
    return ok;
  }

  /** A binding made for another incarnation of `node` than the one registered now (the node restarted). */
  private restarted(binding: Binding, node: string): boolean {
    if (binding.incarnation === undefined) return false;
    const record = this.nodes.get(node);
    const now = record ? nodeIncarnation(record) : undefined;
    return now !== undefined && now !== binding.incarnation;
  }

  private applyQueue(event: WatchEvent<QueueSpec>): void {
    const name = this.store.keys.rest(this.store.keys.queues(), event.key);
    if (event.type === 'put' && event.value) this.queueSpecs.set(event.value.name, event.value);
    else this.queueSpecs.delete(name);
    // A new tree, charged with what every job holds now.
    this.queues = new QueueTree([...this.queueSpecs.values()]);
    for (const state of this.jobs.values()) if (state.held) this.queues.charge(state.record.spec.queue, charged(state.record.spec, state.held));
    this.freeEpoch++;
  }

  private applyNode(event: WatchEvent<NodeRecord>): void {
    const name = this.store.keys.rest(this.store.keys.nodes(), event.key);
    if (event.type === 'put') {
      if (!this.validNode(event.key, event.value)) return;
      this.nodes.set(name, event.value);
      this.capacity.setNode(event.value);
      this.freeEpoch++;
      // A node of another incarnation than its jobs' bindings name restarted: it dropped what it
      // ran (and ignores those bindings), so its jobs are taken off it as if it had died.
      for (const id of this.onNode.get(name) ?? []) {
        const state = this.jobs.get(id);
        const bindings = state ? (state.nextBindings !== undefined ? state.nextBindings : state.bindings) : null;
        if (!state || !bindings?.some((b) => b && (state.next ?? state.record).placement[b.member]?.node === name && this.restarted(b, name))) continue;
        this.log('info', 'fleet scheduler: node restarted (new incarnation); its jobs are rescheduled', { node: name, job: id });
        (state.lost ??= new Set()).add(name);
        this.refresh(state);
      }
      return;
    }
    if (!this.nodes.has(name)) return;
    // The node's lease went: every job bound there must be placed again (it killed its members).
    this.nodes.delete(name);
    const ids = this.onNode.get(name);
    this.log('info', 'fleet scheduler: node lost', { node: name, jobs: ids?.size ?? 0 });
    for (const id of ids ?? []) {
      const state = this.jobs.get(id);
      if (!state) continue;
      (state.lost ??= new Set()).add(name);
      this.refresh(state);
    }
    this.capacity.removeNode(name);
  }

  private applyJob(event: WatchEvent<JobRecord>): void {
    const id = this.store.keys.rest(this.store.keys.jobs(), event.key);
    const state = this.jobs.get(id);
    if (event.type === 'delete' || !event.value) {
      if (!state || event.modRevision <= state.modRevision) return;
      // A job removed from etcd while bound: its members must not run on.
      const keys = BOUND.has(state.record.phase) ? this.bindingKeys(state.record) : [];
      this.forget(id, state);
      if (keys.length > 0) this.fire([], { deletes: keys }, 'bindings of a deleted job', () => undefined);
      return;
    }
    if (!this.validJob(event.key, event.value)) return;
    if (!state) {
      if (FINISHED_PHASES.includes(event.value.phase)) {
        this.noteFinished(event.value, event.modRevision);
        return;
      }
      const fresh = this.newState(event.value, event.modRevision);
      this.jobs.set(id, fresh);
      this.refresh(fresh);
      this.statusDirty.add(id);
      return;
    }
    if (event.modRevision <= state.modRevision) return; // the echo of a commit already applied
    const before = state.record;
    state.record = event.value;
    state.modRevision = event.modRevision;
    this.settle(id, state);
    // Only this leader moves phases and generations: such a change it did not see answered (a
    // commit whose answer was lost but which applied) leaves its bindings to be read from etcd.
    if (!state.busy && this.jobs.get(id) === state && (before.phase !== event.value.phase || before.generation !== event.value.generation)) this.refetch(id);
  }

  /** status/<job>/<member> or checkpoints/<job>/<member> into its map (value undefined: deleted). */
  private applyMemberKey<T>(map: Map<string, Map<number, T>>, prefix: string, key: string, value: T | undefined): void {
    const [job, memberText] = this.store.keys.rest(prefix, key).split('/');
    const member = Number(memberText);
    if (!Number.isInteger(member)) return;
    if (value !== undefined && (typeof value !== 'object' || value === null || typeof (value as { generation?: unknown }).generation !== 'number')) {
      this.log('warn', 'fleet scheduler: skipping a malformed record', { key });
      return;
    }
    let members = map.get(job);
    if (value === undefined) {
      const old = members?.get(member);
      members?.delete(member);
      if (members?.size === 0) map.delete(job);
      if (map === this.statuses && old) this.memberVanished(job, member, old as unknown as MemberStatus);
    } else {
      if (!this.jobs.has(job)) return; // a finished or unknown job: nothing to decide
      if (!members) map.set(job, (members = new Map()));
      members.set(member, value);
    }
    if (map === this.statuses) this.statusDirty.add(job);
  }

  /**
   * A member's status went while it is still bound there: its node's lease ended under it (the
   * node re-registered under a new lease and dropped what it ran — nodes delete a status
   * themselves only after its binding is gone). The job is then lost as if its node had died.
   */
  private memberVanished(id: string, member: number, old: MemberStatus): void {
    const state = this.jobs.get(id);
    if (!state) return;
    const target = state.next ?? state.record;
    if (!BOUND.has(target.phase) || old.generation !== target.generation) return;
    // The status is written by the node that runs the member's program: its placement, or (moved) its client node.
    if ((target.clients?.[member] ?? target.placement[member]?.node) !== old.node) return;
    if (!this.nodes.has(old.node)) return; // the node's own death handles it
    this.log('info', 'fleet scheduler: a bound member\'s status vanished (its node\'s lease ended)', { job: id, member, node: old.node });
    (state.lost ??= new Set()).add(old.node);
    this.refresh(state);
  }

  // ---- bookkeeping ------------------------------------------------------------------------------

  /** After the committed record changed: indexes, reservations, and forgetting a finished job. */
  private settle(id: string, state: JobState): void {
    this.pruneLost(state);
    if (!state.busy && FINISHED_PHASES.includes(state.record.phase)) {
      this.noteFinished(state.record, state.modRevision);
      this.forget(id, state);
      return;
    }
    this.refresh(state);
    this.statusDirty.add(id);
  }

  /** Keeps only the dead nodes the job's committed record is still bound to. */
  private pruneLost(state: JobState): void {
    if (!state.lost || state.busy) return;
    const nodes = new Set(BOUND.has(state.record.phase) ? [...state.record.placement.map((p) => p.node), ...Object.values(state.record.clients ?? {})] : []);
    for (const node of state.lost) if (!nodes.has(node) && node !== MISSING_BINDINGS) state.lost.delete(node);
    if (state.lost.size === 0 || !BOUND.has(state.record.phase)) state.lost = undefined;
  }

  /** Recomputes a job's indexes and its reservation from what it is (or will be, while busy). */
  private refresh(state: JobState): void {
    const target = state.next ?? state.record;
    const id = target.id;
    const phase = target.phase;
    const finished = FINISHED_PHASES.includes(phase);
    toggle(this.pending, id, phase === 'pending' && !finished);
    toggle(this.suspended, id, phase === 'suspended');
    toggle(this.active, id, HOLDING.has(phase));
    toggle(this.cancels, id, target.cancelRequested === true && !finished);
    toggle(this.lostJobs, id, state.lost !== undefined);
    // Moves under way for a pending job.
    const forJob = target.move?.forJob;
    if (state.movingFor !== forJob) {
      if (state.movingFor !== undefined) {
        const set = this.movesFor.get(state.movingFor);
        set?.delete(id);
        if (set?.size === 0) this.movesFor.delete(state.movingFor);
      }
      if (forJob !== undefined && !finished) {
        let set = this.movesFor.get(forJob);
        if (!set) this.movesFor.set(forJob, (set = new Set()));
        set.add(id);
      }
      state.movingFor = finished ? undefined : forJob;
    }
    // The node index, for node deaths: where its processes run and where its moved members' programs run (not a move's target).
    const nodes = BOUND.has(phase) ? [...new Set([...target.placement.map((p) => p.node), ...Object.values(target.clients ?? {})])] : [];
    if (!sameList(nodes, state.indexed)) {
      for (const node of state.indexed) {
        const set = this.onNode.get(node);
        set?.delete(id);
        if (set?.size === 0) this.onNode.delete(node);
      }
      for (const node of nodes) {
        let set = this.onNode.get(node);
        if (!set) this.onNode.set(node, (set = new Set()));
        set.add(id);
      }
      state.indexed = nodes;
    }
    // The reservation: the placement while it holds devices, and is not lost with a node (and a
    // move's target from the move's start: the room it goes to is its; the queue is charged once).
    const want = HOLDING.has(phase) && !state.lost ? (target.move ? [...target.placement, target.move.to] : target.placement) : null;
    if (!samePlacement(state.held, want)) {
      const spec = target.spec;
      if (state.held) {
        this.capacity.release(spec, state.held);
        this.queues.credit(spec.queue, charged(spec, state.held));
        this.freeEpoch++;
      }
      if (want) {
        this.capacity.reserve(spec, want);
        this.queues.charge(spec.queue, charged(spec, want));
      }
      state.held = want;
    }
  }

  private forget(id: string, state: JobState): void {
    state.next = undefined;
    state.lost = undefined;
    // As a finished record, so that refresh releases its reservation and unindexes it.
    const phase = FINISHED_PHASES.includes(state.record.phase) ? state.record.phase : 'cancelled';
    state.record = { ...state.record, phase, cancelRequested: false };
    this.refresh(state);
    this.jobs.delete(id);
    this.statuses.delete(id);
    this.checkpoints.delete(id);
    this.statusDirty.delete(id);
  }

  // ---- the loop ---------------------------------------------------------------------------------

  /** Wakes the loop (debounced). */
  private schedule(delayMs = this.debounceMs): void {
    if (this.timer || !this.ready) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.ready) return;
      try {
        this.decide();
      } catch (error) {
        this.log('error', 'fleet scheduler: decision loop failed', { error: (error as Error).stack });
      }
    }, delayMs);
  }

  private room(): boolean {
    return this.inFlight < this.maxInFlight;
  }

  /** One pass of the decision loop (synchronous; commits go out and answer later). */
  private decide(): void {
    const deadline = performance.now() + PASS_BUDGET_MS;
    const full = this.fullPass;
    this.fullPass = false;
    this.runningCache = null;
    this.failedShapes.clear();
    this.counters.passes++;
    if (full) for (const id of this.active) this.statusDirty.add(id);
    // 1. Jobs on dead nodes.
    for (const id of this.lostJobs) {
      if (!this.room()) return;
      const state = this.jobs.get(id);
      if (state && !state.busy) this.reschedule(state);
    }
    // 2. Cancel requests.
    for (const id of this.cancels) {
      if (!this.room()) return;
      const state = this.jobs.get(id);
      if (state && !state.busy && !state.lost) this.cancel(state);
    }
    // 3. Member statuses → phases.
    for (const id of this.statusDirty) {
      if (!this.room()) return;
      const state = this.jobs.get(id);
      if (!state) {
        this.statusDirty.delete(id);
        continue;
      }
      if (state.busy || state.lost) continue;
      this.statusDirty.delete(id);
      this.judge(state);
    }
    // 4. Suspended jobs whose devices have room again, highest priority first.
    if (this.suspended.size > 0) {
      const candidates: JobState[] = [];
      for (const id of this.suspended) {
        const state = this.jobs.get(id);
        if (state && !state.busy && !state.lost && !state.record.cancelRequested && (full || state.blockedAt !== this.freeEpoch)) candidates.push(state);
      }
      candidates.sort((a, b) => b.record.spec.priority - a.record.spec.priority || a.record.submittedAt - b.record.submittedAt);
      // Room that frees goes to a waiting job of higher priority in the same queue first.
      const waiting = candidates.length > 0 ? this.pendingTopPriority() : null;
      for (const state of candidates) {
        if (!this.room()) return;
        const top = waiting?.get(state.record.spec.queue);
        if (top !== undefined && top > state.record.spec.priority) {
          this.block(state);
          continue;
        }
        this.resume(state);
      }
    }
    // Retention: delete a few records of jobs finished long ago.
    this.expireFinished();
    // 5. Pending jobs, in queue order (an order a cut pass left is finished first: not re-sorted per pass).
    if (this.pending.size > 0 || this.carry) {
      let order: string[];
      let at = 0;
      if (this.carry) {
        ({ order, at } = this.carry);
        this.carry = null;
      } else {
        const candidates: JobRecord[] = [];
        for (const id of this.pending) {
          const state = this.jobs.get(id);
          if (state && !state.busy && !state.record.cancelRequested && (full || state.blockedAt !== this.freeEpoch)) candidates.push(state.record);
        }
        order = (candidates.length > 1 ? this.queues.order(candidates) : candidates).map((record) => record.id);
      }
      for (; at < order.length; at++) {
        const room = this.room();
        if (!room || performance.now() > deadline) {
          // The window is full (answers wake the loop), or the pass used its time: yield, so that
          // this pass's commits go out and etcd works while the next pass decides.
          this.carry = { order, at };
          this.fullPass ||= full;
          if (room) this.schedule(0);
          return;
        }
        const state = this.jobs.get(order[at]);
        if (state && !state.busy && state.record.phase === 'pending' && !state.record.cancelRequested) this.place(state);
      }
    }
  }

  /**
   * The highest priority of a pending job in each queue that may use room freed now: not being
   * cancelled, and not already found not to fit at this capacity (so a job that can never fit
   * does not keep a suspended one from resuming past the next resync).
   */
  private pendingTopPriority(): Map<string, number> {
    const top = new Map<string, number>();
    for (const id of this.pending) {
      const state = this.jobs.get(id);
      const record = state?.record;
      if (!state || !record || state.busy || record.phase !== 'pending' || record.cancelRequested || state.blockedAt === this.freeEpoch) continue;
      const best = top.get(record.spec.queue);
      if (best === undefined || record.spec.priority > best) top.set(record.spec.queue, record.spec.priority);
    }
    return top;
  }

  /** Queues a finished job's record for retention (once). */
  private noteFinished(record: JobRecord, modRevision: number): void {
    if (this.finishedIds.has(record.id)) return;
    this.finishedIds.add(record.id);
    this.finished.push({ id: record.id, at: typeof record.updatedAt === 'number' ? record.updatedAt : 0, modRevision });
  }

  /**
   * Retention: deletes the records (and any checkpoints left) of up to RETENTION_DELETES_PER_PASS
   * jobs that finished more than retentionMs ago, each conditioned on the record being unchanged.
   */
  private expireFinished(): void {
    const cutoff = Date.now() - this.retentionMs;
    let deleted = 0;
    while (this.finished.length > 0 && this.finished[0].at < cutoff && deleted < RETENTION_DELETES_PER_PASS && this.room()) {
      const entry = this.finished.shift()!;
      const { id, modRevision } = entry;
      this.finishedIds.delete(id);
      if (this.jobs.has(id)) continue; // submitted again under the same id meanwhile: not finished
      const key = this.store.keys.job(id);
      deleted++;
      const term = this.term;
      this.enqueue({ ifs: [{ key, modRevision }], deletes: [key], deletePrefixes: this.leftovers(id) }, 'retention', (ok, revision) => {
        if (ok) this.log('debug', 'fleet scheduler: deleted a finished job past retention', { job: id });
        // etcd did not answer: try again later (refused means the record changed or went: leave it).
        else if (revision === 0 && term === this.term && !this.finishedIds.has(id)) {
          this.finishedIds.add(id);
          this.finished.push(entry);
        }
      });
    }
  }

  /** What a job that ended leaves in etcd besides its record: its members' checkpoints and final statuses. */
  private leftovers(id: string): string[] {
    return [this.store.keys.jobCheckpoints(id), this.store.keys.jobStatuses(id)];
  }

  /**
   * Step 1: unbinds a job from a dead node and makes it pending (or failed), keeping its progress
   * when it can — unless its members' statuses (a finished member's outlives its node) already say
   * how it ended: then it ends so, and nothing runs again.
   */
  private reschedule(state: JobState): void {
    const job = state.record;
    const dead = [...(state.lost ?? [])].join(', ');
    const ended = this.verdict(job);
    if (ended && FINISHED_PHASES.includes(ended.phase)) {
      this.log('info', `fleet scheduler: job ${ended.phase} (its node was lost after its members ended)`, { job: job.id, node: dead, message: ended.message });
      this.decideCommit(state, ended, null, { deletes: this.bindingKeys(job), deletePrefixes: this.leftovers(job.id) }, ended.phase);
      return;
    }
    const checkpoints = this.checkpoints.get(job.id);
    const restorable = checkpoints !== undefined && checkpoints.size >= job.spec.gang && allMembers(job.spec.gang, (m) => checkpoints.has(m));
    let next: JobRecord;
    const unmoved = { move: undefined, clients: undefined };
    if (restorable) next = { ...job, ...unmoved, phase: 'pending', placement: [], message: `node ${dead} lost; resuming from the members' checkpoints`, updatedAt: Date.now() };
    else if (job.spec.restartable) next = { ...job, ...unmoved, phase: 'pending', placement: [], restarts: job.restarts + 1, message: `node ${dead} lost; restarting from the beginning (no checkpoint of every member)`, updatedAt: Date.now() };
    else next = { ...job, phase: 'failed', message: `node ${dead} lost, no checkpoint of every member, and the job is not restartable`, updatedAt: Date.now() };
    this.log('info', 'fleet scheduler: rescheduling a job from a dead node', { job: job.id, node: dead, restore: restorable, phase: next.phase });
    const ends = FINISHED_PHASES.includes(next.phase);
    this.decideCommit(state, next, null, { deletes: this.bindingKeys(job), ...(ends ? { deletePrefixes: this.leftovers(job.id) } : {}) }, 'reschedule', () => {
      this.counters.reschedules++;
    });
  }

  /** Step 2. */
  private cancel(state: JobState): void {
    const job = state.record;
    const next: JobRecord = { ...job, phase: 'cancelled', message: 'cancelled on request', updatedAt: Date.now() };
    this.log('info', 'fleet scheduler: cancelling a job', { job: job.id });
    this.decideCommit(state, next, null, { deletes: BOUND.has(job.phase) ? this.bindingKeys(job) : [], deletePrefixes: this.leftovers(job.id) }, 'cancel');
  }

  /** Step 3: the phase the members' statuses (of its current generation) say. */
  private judge(state: JobState): void {
    const job = state.record;
    if (!BOUND.has(job.phase)) return;
    if (job.move && this.judgeMove(state, job.move, this.statuses.get(job.id)?.get(job.move.member))) return;
    const next = this.verdict(job);
    if (!next) return;
    const ends = next.phase !== 'running';
    this.log(ends ? 'info' : 'debug', `fleet scheduler: job ${next.phase}`, { job: job.id, message: next.message });
    this.decideCommit(state, next, ends ? null : state.bindings, ends ? { deletes: this.bindingKeys(job), deletePrefixes: this.leftovers(job.id) } : {}, next.phase);
  }

  /** The record a bound job's member statuses (of its current generation) call for: failed, succeeded, running, or null (no change). */
  private verdict(job: JobRecord): JobRecord | null {
    const statuses = this.statuses.get(job.id);
    if (!statuses) return null;
    const gang = job.spec.gang;
    let running = 0;
    let exited = 0;
    let failure: string | undefined;
    for (let m = 0; m < gang; m++) {
      const status = statuses.get(m);
      if (!status || status.generation !== job.generation) continue;
      if (status.state === 'failed') failure ??= `member ${m} failed${status.message ? `: ${status.message}` : ''}`;
      else if (status.state === 'exited' && (status.exitCode ?? 0) !== 0) failure ??= `member ${m} exited with code ${status.exitCode}`;
      else if (status.state === 'exited') exited++;
      else if (status.state === 'running') running++;
    }
    if (failure) return { ...job, phase: 'failed', message: failure, updatedAt: Date.now() };
    if (exited === gang) return { ...job, phase: 'succeeded', message: undefined, updatedAt: Date.now() };
    if (job.phase === 'bound' && running === gang) return { ...job, phase: 'running', message: undefined, updatedAt: Date.now() };
    return null;
  }

  /**
   * A move under way: its source's outcome (MemberStatus.move of this move's id) ends it — committed:
   * the member is where it went; failed: it goes on where it was — or, without an outcome for
   * MOVE_TIMEOUT_MS, it is given up. True when a commit about it was decided.
   */
  private judgeMove(state: JobState, move: MemberMove, status: MemberStatus | undefined): boolean {
    const outcome = status && status.generation === state.record.generation && status.move?.id === move.id ? status.move : undefined;
    if (outcome?.outcome === 'moved') {
      this.finishMove(state, move);
      return true;
    }
    if (outcome?.outcome === 'failed') {
      this.failMove(state, move, outcome.message ?? 'the move failed');
      return true;
    }
    if (outcome === undefined && Date.now() - move.startedAt > MOVE_TIMEOUT_MS) {
      this.failMove(state, move, `node ${move.from.node} did not begin the move within ${MOVE_TIMEOUT_MS / 1000} s`);
      return true;
    }
    return false;
  }

  /** Begins moving one member, live (one commit): the job holds the target's room from now; the source's binding says move, the target's expect. */
  private startMove(state: JobState, plan: PlannedMove, forJob: string): void {
    const job = state.record;
    const { member, from, to } = plan;
    const current = state.bindings?.[member];
    if (!current) return;
    const id = (job.moveSeq ?? 0) + 1;
    const move: MemberMove = { id, member, from, to, forJob, startedAt: Date.now() };
    const next: JobRecord = { ...job, move, moveSeq: id, updatedAt: Date.now() };
    const client = job.clients?.[member] ?? from.node;
    const source: Binding = { ...current, move: { id, node: to.node, device: to.device } };
    const { move: _move, movedTo: _movedTo, ...base } = current;
    const arriving: Binding = { ...base, device: to.device, desired: 'run', client: { node: client, arriving: id }, ...incarnationOf(this.nodes.get(to.node)) };
    const bindings = (state.bindings ?? []).slice();
    bindings[member] = source;
    this.log('info', 'fleet scheduler: moving a member to make room', { job: job.id, member, from: from.node, to: to.node, forJob, move: id });
    this.decideCommit(
      state,
      next,
      bindings,
      { puts: [{ key: this.store.keys.binding(from.node, job.id, member), value: source }, { key: this.store.keys.binding(to.node, job.id, member), value: arriving }] },
      'move',
      () => this.counters.movesStarted++,
    );
  }

  /** The move committed on the target: the member is there now (capacity moves), its program stays supervised where it runs. */
  private finishMove(state: JobState, move: MemberMove): void {
    const job = state.record;
    const { member, from, to } = move;
    const current = state.bindings?.[member];
    if (!current) return;
    const client = job.clients?.[member] ?? from.node;
    const { move: _move, movedTo: _movedTo, client: _client, ...base } = current;
    const arrived: Binding = { ...base, device: to.device, client: { node: client }, ...incarnationOf(this.nodes.get(to.node)) };
    const placement = job.placement.slice();
    placement[member] = { node: to.node, device: to.device };
    const clients = { ...(job.clients ?? {}) };
    if (client === to.node) delete clients[member];
    else clients[member] = client;
    const next: JobRecord = { ...job, placement, move: undefined, clients: Object.keys(clients).length > 0 ? clients : undefined, moves: (job.moves ?? 0) + 1, lastMoveAt: Date.now(), updatedAt: Date.now() };
    const bindings = (state.bindings ?? []).slice();
    bindings[member] = arrived;
    const puts: NonNullable<Commit['puts']> = [{ key: this.store.keys.binding(to.node, job.id, member), value: arrived }];
    const deletes: string[] = [];
    // The node that runs the program keeps a binding that says so; a node the process merely passed through keeps none.
    if (from.node === client) puts.push({ key: this.store.keys.binding(from.node, job.id, member), value: { ...base, movedTo: { node: to.node } } });
    else deletes.push(this.store.keys.binding(from.node, job.id, member));
    this.log('info', 'fleet scheduler: member moved', { job: job.id, member, from: from.node, to: to.node, move: move.id, forJob: move.forJob });
    this.decideCommit(state, next, bindings, { puts, deletes }, 'moved', () => this.counters.movesDone++);
  }

  /** The move failed (or was given up): the member goes on where it was; the target's room is released; no new move for MOVE_RETRY_MS. */
  private failMove(state: JobState, move: MemberMove, message: string): void {
    const job = state.record;
    const { member, from, to } = move;
    const current = state.bindings?.[member];
    const { move: _move, ...unmoved } = current ?? ({} as Binding);
    const bindings = (state.bindings ?? []).slice();
    const puts: NonNullable<Commit['puts']> = [];
    if (current) {
      bindings[member] = unmoved as Binding;
      puts.push({ key: this.store.keys.binding(from.node, job.id, member), value: unmoved as Binding });
    }
    const next: JobRecord = { ...job, move: undefined, lastMoveAt: Date.now(), moveFailure: { at: Date.now(), to: to.node, message }, updatedAt: Date.now() };
    this.log('warn', 'fleet scheduler: a move failed; the member goes on where it was', { job: job.id, member, from: from.node, to: to.node, move: move.id, error: message });
    this.decideCommit(state, next, bindings, { puts, deletes: to.node === from.node ? [] : [this.store.keys.binding(to.node, job.id, member)] }, 'move failed', () => this.counters.movesFailed++);
  }

  /** Jobs whose members may be moved now: running, movable, not busy, no move under way or recently ended. */
  private movableJobs(): Array<{ job: JobRecord; placement: MemberPlacement[] }> {
    const now = Date.now();
    const out: Array<{ job: JobRecord; placement: MemberPlacement[] }> = [];
    for (const id of this.active) {
      const other = this.jobs.get(id);
      const record = other?.record;
      if (!other || !record || other.busy || !other.held || other.lost || record.phase !== 'running' || record.spec.movable === false || record.move || record.cancelRequested) continue;
      if (record.lastMoveAt !== undefined && now - record.lastMoveAt < MOVE_COOLDOWN_MS) continue;
      if (record.moveFailure && now - record.moveFailure.at < MOVE_RETRY_MS) continue;
      if (!other.bindings || !allMembers(record.spec.gang, (m) => other.bindings![m] !== undefined)) continue;
      out.push({ job: record, placement: record.placement });
    }
    return out;
  }

  /** Step 4: resumes a suspended job in place when every member's device has room again. */
  private resume(state: JobState): void {
    const job = state.record;
    const need = new Map<string, { share: number; memory: number }>();
    for (const { node, device } of job.placement) {
      const record = this.nodes.get(node);
      if (!record || record.health === 'unhealthy') return this.block(state);
      const key = `${node}\0${device}`;
      const entry = need.get(key) ?? { share: 0, memory: 0 };
      entry.share += job.spec.share;
      entry.memory += job.spec.memory;
      need.set(key, entry);
    }
    for (const [key, entry] of need) {
      const [node, device] = key.split('\0');
      const free = this.capacity.free(node, Number(device));
      // Shares compare with a tolerance well under capacity's unit (1e-6 of a device).
      if (free.share + 1e-9 < entry.share || free.memory < entry.memory) return this.block(state);
    }
    if (!this.queues.admits(job.spec.queue, job.spec.share * job.spec.gang).ok) return this.block(state);
    const next: JobRecord = { ...job, phase: 'bound', message: 'resumed', updatedAt: Date.now() };
    const bindings = (state.bindings ?? []).map((b) => ({ ...b, desired: 'run' as const }));
    this.log('info', 'fleet scheduler: resuming a job', { job: job.id });
    this.decideCommit(state, next, bindings, { puts: this.bindingPuts(job, bindings) }, 'resume');
  }

  private block(state: JobState): void {
    state.blockedAt = this.freeEpoch;
  }

  /** Step 5: admit, place, bind — or reclaim — or explain. */
  private place(state: JobState): void {
    const job = state.record;
    const spec = job.spec;
    // Never two copies: a job bound before runs again only once every live node has stopped its
    // earlier members (a node deletes a member's status after killing it; a dead node's statuses
    // go with its lease). Each status deletion wakes the loop.
    const stale = this.runningElsewhere(job);
    if (stale) {
      this.explain(state, stale);
      return;
    }
    const admitted = this.queues.admits(spec.queue, spec.share * spec.gang);
    if (!admitted.ok) {
      this.log('debug', 'fleet scheduler: job not admitted by its queue', { job: job.id, reason: admitted.reason });
      this.block(state);
      this.explain(state, admitted.reason);
      return;
    }
    // A job asking what another one already failed to get in this pass (same shape, queue and
    // priority, capacity not grown since) fails the same way: skip the search.
    const shape = `${spec.gang}|${spec.share}|${spec.memory}|${spec.queue}|${spec.priority}|${JSON.stringify(spec.placement)}`;
    const failed = this.failedShapes.get(shape);
    if (failed && failed.epoch === this.freeEpoch) {
      this.block(state);
      this.explain(state, failed.reason);
      return;
    }
    this.counters.placeAttempts++;
    const placement = placeGang(spec, this.capacity);
    if (placement) {
      this.bind(state, placement);
      return;
    }
    // Moves under way to make room for it: wait for them (their end frees the room).
    const moving = this.movesFor.get(job.id);
    if (moving && moving.size > 0) {
      this.block(state);
      this.explain(state, `waiting for ${moving.size} job${moving.size > 1 ? 's' : ''} to move a member to another node to make room (${[...moving].join(', ')})`);
      return;
    }
    // Reclaim by migration first: moving running members elsewhere loses no progress and suspends nobody.
    const movable = this.movableJobs();
    const moves = movable.length > 0 ? selectMoves(job, movable, this.capacity, (other, member) => other.clients?.[member] === undefined) : null;
    if (moves && moves.length > 0) {
      for (const plan of moves) {
        const other = this.jobs.get(plan.job.id);
        if (other && !other.busy) this.startMove(other, plan, job.id);
      }
      this.runningCache = null;
      this.block(state);
      this.explain(state, `waiting for ${moves.length} job${moves.length > 1 ? 's' : ''} to move a member to another node to make room (${moves.map((m) => m.job.id).join(', ')})`);
      return;
    }
    const running = this.preemptible();
    const victims = running.length > 0 ? selectVictims(job, running, this.capacity, this.queues) : null;
    if (victims && victims.length > 0) {
      this.reclaim(state, victims);
      return;
    }
    this.block(state);
    const reason = explainUnplaceable(spec, this.capacity);
    this.failedShapes.set(shape, { epoch: this.freeEpoch, reason });
    this.log('debug', 'fleet scheduler: job does not fit', { job: job.id, reason });
    this.explain(state, reason);
  }

  /** Why a pending job that ran before must wait (a live node still reports one of its earlier members), or null. */
  private runningElsewhere(job: JobRecord): string | null {
    if (job.generation === 0) return null;
    const statuses = this.statuses.get(job.id);
    if (!statuses) return null;
    for (const [member, status] of statuses) {
      if (status.generation <= job.generation && this.nodes.has(status.node)) return `waiting for node ${status.node} to stop member ${member} of generation ${status.generation}`;
    }
    return null;
  }

  /** Preemptible jobs holding devices and free to be decided about (cached for one pass of the loop). */
  private preemptible(): Array<{ job: JobRecord; placement: MemberPlacement[] }> {
    if (this.runningCache) return this.runningCache;
    const running: Array<{ job: JobRecord; placement: MemberPlacement[] }> = [];
    for (const id of this.active) {
      const other = this.jobs.get(id);
      if (other && !other.busy && other.held && other.record.spec.preemptible && !other.record.move) running.push({ job: other.record, placement: other.held });
    }
    return (this.runningCache = running);
  }

  /** Writes a pending job's message, only when it changed (etcd writes stay low). */
  private explain(state: JobState, message: string): void {
    if (state.record.message === message) return;
    // A reason that keeps changing (counts of nodes) is rewritten at most every MESSAGE_INTERVAL_MS.
    const now = Date.now();
    if (state.record.message !== undefined && state.messageAt !== undefined && now - state.messageAt < MESSAGE_INTERVAL_MS) return;
    state.messageAt = now;
    this.decideCommit(state, { ...state.record, message, updatedAt: Date.now() }, state.bindings, {}, 'message');
  }

  /** Binds a whole gang in one commit (its bindings and its record). */
  private bind(state: JobState, placement: MemberPlacement[], after?: () => void): void {
    const job = state.record;
    const generation = job.generation + 1;
    const checkpoints = job.generation > 0 ? this.checkpoints.get(job.id) : undefined;
    const restore = checkpoints !== undefined && allMembers(job.spec.gang, (m) => checkpoints.has(m));
    const bindings: Binding[] = placement.map(({ node, device }, member) => ({
      ...memberBinding(job, member, generation, device),
      ...(restore ? { restoreFrom: checkpoints!.get(member)!.path } : job.spec.image ? { restoreFrom: job.spec.image } : {}),
      ...incarnationOf(this.nodes.get(node)),
    }));
    const now = Date.now();
    const next: JobRecord = { ...job, phase: 'bound', generation, placement, move: undefined, clients: undefined, message: undefined, bindLatencyMs: job.bindLatencyMs ?? now - job.submittedAt, updatedAt: now };
    const first = job.bindLatencyMs === undefined;
    this.log('debug', 'fleet scheduler: binding', { job: job.id, placement });
    this.decideCommit(state, next, bindings, { puts: this.bindingPuts(next, bindings) }, 'bind', () => {
      this.counters.placements++;
      if (first) this.latencies.add(Date.now() - job.submittedAt);
      this.log('info', 'fleet scheduler: bound', { job: job.id, generation, nodes: [...new Set(placement.map((p) => p.node))], restore });
      after?.();
    });
  }

  /** Suspends `victims` (one commit while it fits etcd's limit) and then binds `state`'s job in the room they leave. */
  private reclaim(state: JobState, victims: JobRecord[]): void {
    const job = state.record;
    const term = this.term;
    const victimStates: JobState[] = [];
    for (const victim of victims) {
      const v = this.jobs.get(victim.id);
      if (!v || v.busy || !v.held) return this.block(state);
      victimStates.push(v);
    }
    // Reserve: victims release now, the job takes its place now; all of it undone if a commit fails.
    const commits: Commit[] = [];
    let current: Commit = { ifs: [], puts: [] };
    for (const v of victimStates) {
      const record = v.record;
      const next: JobRecord = { ...record, phase: 'suspended', suspensions: record.suspensions + 1, message: `suspended to make room for ${job.id}`, updatedAt: Date.now() };
      const bindings = (v.bindings ?? []).map((b) => ({ ...b, desired: 'suspend' as const }));
      v.busy = true;
      v.next = next;
      v.nextBindings = bindings;
      this.refresh(v);
      const puts: NonNullable<Commit['puts']> = [...this.bindingPuts(next, bindings), { key: this.store.keys.job(record.id), value: next }];
      if (current.puts!.length > 0 && current.puts!.length + puts.length + current.ifs!.length + 2 > MAX_TXN_OPS) {
        commits.push(current);
        current = { ifs: [], puts: [] };
      }
      current.ifs!.push({ key: this.store.keys.job(record.id), modRevision: v.modRevision });
      current.puts!.push(...puts);
    }
    commits.push(current);
    const placement = placeGang(job.spec, this.capacity);
    const undoVictims = () => {
      for (const v of victimStates) {
        if (!v.busy || !v.next) continue;
        this.endBusy(v);
        this.refetch(v.record.id);
      }
    };
    if (!placement) {
      // selectVictims said they make room; if best fit disagrees, suspend nobody.
      for (const v of victimStates) {
        v.busy = false;
        v.next = v.nextBindings = undefined;
        this.refresh(v);
      }
      this.block(state);
      return;
    }
    // Hold the job (busy) with its placement reserved while the victims' commit runs.
    state.busy = true;
    state.next = { ...job, phase: 'bound', placement };
    this.refresh(state);
    this.runningCache = null;
    this.log('info', 'fleet scheduler: reclaiming', { job: job.id, victims: victims.map((v) => v.id) });
    let left = commits.length;
    let failed = false;
    for (const commit of commits) {
      this.fire([], commit, 'suspend', (ok, revision) => {
        if (term !== this.term) return;
        const ids = new Set((commit.ifs ?? []).map((c) => this.store.keys.rest(this.store.keys.jobs(), c.key)));
        for (const v of victimStates) {
          if (!ids.has(v.record.id)) continue;
          if (ok) {
            this.counters.reclaims++;
            this.commitDone(v, revision);
          }
        }
        if (!ok) failed = true;
        if (--left > 0) return;
        // Every suspend answered: bind the job now, or give back what it held.
        state.busy = false;
        state.next = undefined;
        this.refresh(state);
        if (failed) {
          undoVictims();
          this.counters.bindFailures++;
          this.refetch(job.id);
          return;
        }
        if (!state.busy && state.record.phase === 'pending' && !state.record.cancelRequested) {
          const again = placeGang(job.spec, this.capacity);
          if (again) this.bind(state, again);
        }
      });
    }
  }

  // ---- commits ----------------------------------------------------------------------------------

  /**
   * Decides `next` for a job: reserves what it implies now (busy until the commit answers), sends
   * the commit (conditioned on the job's modRevision and leadership), and on success makes it the
   * job's record; on failure gives the reservation back and re-reads the job.
   */
  private decideCommit(state: JobState, next: JobRecord, bindings: Binding[] | null, commit: Commit, what: string, onSuccess?: () => void): void {
    const key = this.store.keys.job(next.id);
    state.busy = true;
    state.next = next;
    state.nextBindings = bindings;
    this.refresh(state);
    const full: Commit = { ...commit, ifs: [{ key, modRevision: state.modRevision }, ...(commit.ifs ?? [])], puts: [...(commit.puts ?? []), { key, value: next }] };
    this.enqueue(full, what, (ok, revision) => {
      if (ok) {
        this.commitDone(state, revision);
        onSuccess?.();
      } else {
        if (what === 'bind') this.counters.bindFailures++;
        this.endBusy(state);
        this.refetch(next.id);
      }
    });
  }

  /** A commit about the job succeeded at `revision`: its next record is now the record. */
  private commitDone(state: JobState, revision: number): void {
    const next = state.next;
    if (next && revision > state.modRevision) {
      state.record = next;
      state.modRevision = revision;
    }
    if (state.nextBindings !== undefined) state.bindings = state.nextBindings;
    state.busy = false;
    state.next = undefined;
    state.nextBindings = undefined;
    state.blockedAt = undefined;
    this.settle(next?.id ?? state.record.id, state);
  }

  /** A commit about the job failed: back to its record (reservation returned). */
  private endBusy(state: JobState): void {
    state.busy = false;
    state.next = undefined;
    state.nextBindings = undefined;
    this.pruneLost(state);
    this.refresh(state);
  }

  /** Re-reads one job (after a failed commit: someone changed it, or etcd did not answer). */
  private refetch(id: string): void {
    const state = this.jobs.get(id);
    if (!state) return;
    const term = this.term;
    state.busy = true;
    this.readJob(id).then(
      ({ entry, bindings }) => {
        if (term !== this.term) return;
        state.busy = false;
        if (!entry || !this.validJob(this.store.keys.job(id), entry.value)) this.forget(id, state);
        else if (entry.modRevision >= state.modRevision) {
          // The commit's outcome may be unknown (a deadline, or a retried transaction reported
          // refused although its first attempt applied): the mirror takes etcd's word, the record
          // and its bindings both.
          state.record = entry.value;
          state.modRevision = entry.modRevision;
          state.bindings = bindings;
          // Cannot happen with all-or-nothing commits; if it does, rebinding the gang is the safe way out.
          if (bindings && !allMembers(entry.value.spec.gang, (m) => bindings[m] !== undefined)) (state.lost ??= new Set()).add(MISSING_BINDINGS);
          this.settle(id, state);
        }
        this.schedule();
      },
      (error) => {
        if (term !== this.term) return;
        this.log('warn', 'fleet scheduler: re-reading a job failed', { job: id, error: (error as Error).message });
        setTimeout(() => {
          if (term !== this.term) return;
          state.busy = false;
          this.schedule();
        }, 200).unref?.();
      },
    );
  }

  /** A job's record and, while it is bound, the bindings its placement names (index = member; null: none). */
  private async readJob(id: string): Promise<{ entry: { value: JobRecord; modRevision: number } | null; bindings: Binding[] | null }> {
    const entry = await this.store.get<JobRecord>(this.store.keys.job(id));
    const job = entry?.value;
    if (!job || !Array.isArray(job.placement) || !BOUND.has(job.phase)) return { entry, bindings: null };
    const read = await Promise.all(this.bindingKeys(job).map((key) => this.store.get<Binding>(key)));
    const bindings: Binding[] = [];
    read.forEach((binding, member) => {
      if (binding && binding.value.generation === job.generation) bindings[member] = binding.value;
    });
    return { entry, bindings };
  }

  /**
   * Group commit: decisions made in one pass go out together, as few transactions as etcd's
   * operation limit allows (one raft entry and one round trip for many jobs). Each unit is about
   * one job and its own keys, so units never collide; when a merged transaction is refused (some
   * job changed meanwhile), each unit is sent again alone, so only the changed job's fails.
   */
  private enqueue(commit: Commit, what: string, done: (ok: boolean, revision: number) => void): void {
    const ops = (commit.puts?.length ?? 0) + (commit.deletes?.length ?? 0) + (commit.deletePrefixes?.length ?? 0);
    const ifs = commit.ifs?.length ?? 0;
    if (this.batch.length > 0 && (this.batchOps + ops > MAX_TXN_OPS || this.batchIfs + ifs + 1 > MAX_TXN_OPS)) this.flush();
    this.batch.push({ commit, what, done });
    this.batchOps += ops;
    this.batchIfs += ifs;
    if (this.batch.length === 1) queueMicrotask(() => this.flush());
  }

  private flush(): void {
    const units = this.batch;
    this.batch = [];
    this.batchOps = this.batchIfs = 0;
    if (units.length === 0) return;
    if (units.length === 1) return this.fire([], units[0].commit, units[0].what, units[0].done);
    const merged: Commit = { ifs: [], puts: [], deletes: [], deletePrefixes: [] };
    for (const { commit } of units) {
      merged.ifs!.push(...(commit.ifs ?? []));
      merged.puts!.push(...(commit.puts ?? []));
      merged.deletes!.push(...(commit.deletes ?? []));
      merged.deletePrefixes!.push(...(commit.deletePrefixes ?? []));
    }
    this.fire([], merged, `${units.length} decisions`, (ok, revision) => {
      if (ok) for (const unit of units) unit.done(true, revision);
      else if (revision === 0) for (const unit of units) unit.done(false, 0); // etcd did not answer: each is re-read
      else for (const unit of units) this.fire([], unit.commit, unit.what, unit.done);
    });
  }

  /** Sends a commit with the leadership condition; `done` hears its outcome (only within this term). */
  private fire(_ids: string[], commit: Commit, what: string, done: (ok: boolean, revision: number) => void): void {
    const leadership = this.leadership;
    if (!leadership) return;
    const term = this.term;
    this.inFlight++;
    const started = performance.now();
    this.store.transact({ ...commit, ifs: [leadership.condition, ...(commit.ifs ?? [])] }).then(
      ({ succeeded, revision }) => {
        if (term !== this.term) return;
        this.inFlight--;
        this.commitTimes.add(performance.now() - started);
        this.log('debug', `fleet scheduler: ${what} commit ${succeeded ? 'applied' : 'refused'}`, { ms: Math.round(performance.now() - started), revision });
        done(succeeded, revision);
        this.schedule();
      },
      (error) => {
        if (term !== this.term) return;
        this.inFlight--;
        this.log('warn', `fleet scheduler: ${what} commit failed`, { error: (error as Error).message });
        done(false, 0);
        this.schedule();
      },
    );
  }

  /** Every binding key of the job: each member's (where its process is), a move's target's, and moved members' program nodes'. */
  private bindingKeys(job: JobRecord): string[] {
    const keys = job.placement.map(({ node }, member) => this.store.keys.binding(node, job.id, member));
    for (let member = 0; member < job.placement.length; member++) for (const node of extraBindingNodes(job, member)) keys.push(this.store.keys.binding(node, job.id, member));
    return keys;
  }

  private bindingPuts(job: JobRecord, bindings: Binding[]): Array<{ key: string; value: Binding }> {
    return bindings.map((binding) => ({ key: this.store.keys.binding(job.placement[binding.member].node, job.id, binding.member), value: binding }));
  }

}

/** The last `size` samples of a latency, for percentiles. */
class Samples {
  private values: number[] = [];
  private next = 0;
  constructor(private readonly size: number) {}
  add(ms: number): void {
    if (this.values.length < this.size) this.values.push(ms);
    else this.values[this.next++ % this.size] = ms;
  }
  summary(): { p50: number; p99: number; count: number } {
    const sorted = this.values.slice().sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? 0 : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 10) / 10);
    return { p50: at(0.5), p99: at(0.99), count: sorted.length };
  }
}

function toggle(set: Set<string>, id: string, on: boolean): void {
  if (on) set.add(id);
  else set.delete(id);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function samePlacement(a: readonly MemberPlacement[] | null, b: readonly MemberPlacement[] | null): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i].node !== b[i].node || a[i].device !== b[i].device) return false;
  return true;
}

/** `{ incarnation }` of a node that reports one, else nothing (spread into a Binding). */
function incarnationOf(node: NodeRecord | undefined): { incarnation?: string } {
  const incarnation = node ? nodeIncarnation(node) : undefined;
  return incarnation === undefined ? {} : { incarnation };
}

/** NodeRecord.incarnation (the node's lease id; absent on nodes that do not report one). */
function nodeIncarnation(node: NodeRecord): string | undefined {
  const value = (node as NodeRecord & { incarnation?: unknown }).incarnation;
  return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
}

/** Nodes other than its placement's with a binding of `member`: a move's target, and the node supervising its program after it moved. */
function extraBindingNodes(job: JobRecord, member: number): string[] {
  const nodes: string[] = [];
  const at = job.placement[member]?.node;
  if (job.move?.member === member && job.move.to.node !== at) nodes.push(job.move.to.node);
  const client = job.clients?.[member];
  if (client !== undefined && client !== at && !nodes.includes(client)) nodes.push(client);
  return nodes;
}

/** The device shares a job's reservation charges its queue: one share per member (a move's target is not charged twice). */
function charged(spec: JobRecord['spec'], held: readonly MemberPlacement[]): number {
  return spec.share * Math.min(held.length, spec.gang);
}

function allMembers(gang: number, has: (member: number) => boolean): boolean {
  for (let m = 0; m < gang; m++) if (!has(m)) return false;
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
