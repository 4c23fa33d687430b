// A gpunixd's membership in the fleet (docs/fleet.md, "Nodes"; docs/daemon.md, "Fleet node"). The
// agent registers the node (NodeRecord) under an etcd lease, watches bindings/<node>/ and
// reconciles: each bound member runs as a child process `gpunix run --connect` on this daemon,
// under a per-job tenant whose quota the kernel enforces (weight = share, memory limit), on the
// bound device. It suspends (swap) and resumes members as told, checkpoints them periodically, and
// reports their statuses (MemberStatus, under the lease). A lost lease kills every member (the
// scheduler reruns them elsewhere: never two copies) and the node registers afresh.
// Moves (docs/fleet.md, "Moving running work"): a binding with `move` sends the member's process,
// live, to another node through the daemon (its program stays this node's child and follows the
// process by itself); a binding with `client` receives one (tenant made, nothing spawned).

import { ChildProcess, spawn } from 'node:child_process';
import { chmodSync, chownSync, closeSync, copyFileSync, linkSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LogFn } from '../daemon/log.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { TenantStore } from '../daemon/tenants.js';
import type { Kernel } from '../kernel/kernel.js';
import type { ProcessRecord } from '../kernel/proc.js';
import { PriorityClass, TOKEN_ENV } from '../params.js';
import { FleetClient } from './client.js';
import { FleetScheduler } from './scheduler.js';
import type { MigrateOutOptions, MigrateOutResult, NodeAddress } from '../daemon/migrationOut.js';
import type { ArrivalRecord, Binding, CheckpointRecord, MemberState, MemberStatus, NodeDevice, NodeRecord } from './records.js';
import type { FleetConfig } from './spec.js';
import { FleetStore, StoreLease } from './store.js';

/** Tenants the agent makes on its daemon are named `fleet.<job id>`; no other tenant has this prefix's meaning. */
export const FLEET_TENANT_PREFIX = 'fleet.';
/** How often the node republishes `used` and members' GPU time when they changed (ms): etcd writes stay low. */
const PUBLISH_INTERVAL_MS = 1_000;
/** A running member's gpuTimeMs is refreshed at least this often while it changes, even when `used` does not (ms). */
const GPU_TIME_REFRESH_MS = 5_000;
/** How often a starting member's kernel process is looked for (ms). */
const PID_POLL_MS = 100;
/** Waits between attempts to reach etcd and register (ms): from the first to the last, doubling. */
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5_000;
/** A member's child gets this long after its kernel process is killed before SIGKILL (ms). */
const CHILD_GRACE_MS = 2_000;
/**
 * Host memory a member's tenant may use beyond its device memory (bytes): the daemon counts the
 * memory it holds for the tenant's WebGPU objects and shader source against the tenant's
 * memoryLimit (src/daemon/tenants.ts, ObjectAccount). Each process's own limit is the job's
 * `memory`, exactly; this allowance keeps the tenant's limit from refusing before it.
 */
export const HOST_ALLOWANCE_PER_MEMBER = 64 * 1024 * 1024;
/** Periodic checkpoint images kept per member (older ones are deleted once a newer one is recorded). */
const IMAGES_KEPT = 2;
/** How long a move waits for its target to say it is ready (arrivals/<job>/<member>) before it fails (ms). */
const ARRIVAL_TIMEOUT_MS = 20_000;

/** The `gpunix` command this build ships (dist/src/fleet/nodeAgent.js → bin/gpunix.js). */
const GPUNIX_BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bin/gpunix.js');

export interface NodeAgentOptions {
  fleet: FleetConfig;
  kernel: Kernel;
  tenants: TenantStore;
  log: LogFn;
  /** The daemon's Unix socket: members connect to it, and the NodeRecord names it. */
  socket: string;
  /** The daemon's TCP/TLS URL, when it listens on one. */
  url: string | null;
  /** The daemon's imageDir: the default workDir is `<imageDir>/fleet`, tenants' restore images go under it. */
  imageDir: string;
  /** The daemon's live move of a connected program's process to another node (Server.moveProcess); absent: members are never moved. */
  moveProcess?: (pid: number, options: MigrateOutOptions) => Promise<MigrateOutResult>;
  /** The other nodes' admin token (the daemon's migration.peerToken): a move connects to its target with it. */
  peerToken?: string | null;
}

/** One bound member as this node runs it. */
class Member {
  state: MemberState = 'starting';
  /** Its program has ended (exited or failed): a final state, never left. */
  get ended(): boolean {
    return this.state === 'exited' || this.state === 'failed';
  }
  pid: number | undefined;
  exitCode: number | undefined;
  message: string | undefined;
  gpuTimeMs: number | undefined;
  child: ChildProcess | null = null;
  childExited: Promise<void> = Promise.resolve();
  /** What was last applied to its process: the binding's desired once the pid is known. */
  applied: 'run' | 'suspend' = 'run';
  /** Set when the node ends it (binding deleted, lease lost, shutdown): its end is not reported. */
  stopping = false;
  /** pids at or below this existed before the member's child started. */
  pidFloor = 0;
  pidPoll: NodeJS.Timeout | null = null;
  checkpointTimer: NodeJS.Timeout | null = null;
  checkpointing = false;
  checkpoints = 0;
  /** Images this member wrote, oldest first (the last IMAGES_KEPT are kept). */
  images: string[] = [];
  /** Its status put failed (etcd unreachable): republished at the next tick. */
  dirty = false;
  lastStatusAt = 0;
  /** Status puts in order (a later state never overwritten by an earlier put). */
  statusChain: Promise<void> = Promise.resolve();

  /** Binding.client: its program runs on another node; this node holds only its GPU process (moved here): no child, no status. */
  readonly remote: boolean;
  /** The move ids of Binding.move this node has begun (each is tried once). */
  lastMoveId = 0;
  /** The outcome of the latest move, reported in its status. */
  move: MemberStatus['move'] | undefined;
  /** Its process moved away (to `node`, where it is `pid`): the node only supervises its program now. */
  movedTo: { node: string; pid: number } | null = null;
  /** The move id this node said it is ready for (arrivals/<job>/<member>). */
  arrivalPut = 0;

  constructor(
    readonly key: string,
    /** Its binding (replaced when the scheduler rewrites it at the same generation: a move's start and end). */
    public binding: Binding,
    readonly tenant: string,
    readonly logPath: string,
  ) {
    this.remote = binding.client !== undefined;
  }

  get name(): string {
    return `${this.binding.job}.${this.binding.member}`;
  }
}

/** A job's tenant on this daemon and the token its members connect with (never leaves the node but into their environment). */
interface JobTenant {
  name: string;
  token: string;
  members: number;
}

export class NodeAgent {
  private storeNow: FleetStore | null = null;
  private lease: StoreLease | null = null;
  private stopped = false;
  private running: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  /** What etcd says this node must run: `<job>/<member>` → Binding. */
  private readonly bindings = new Map<string, Binding>();
  private readonly members = new Map<string, Member>();
  private readonly jobTenants = new Map<string, JobTenant>();
  /** Members killed when the lease was lost (`<job>/<member>@<generation>`): never started again at that generation. */
  private readonly abandoned = new Set<string>();
  /** Reconciliations and teardowns, one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();
  private reconcileQueued = false;
  private readonly startedAt = Date.now();
  private lastPublished = '';
  private readonly workDir: string;
  private readonly devices: NodeDevice[];
  private fleetClient: FleetClient | null = null;
  /** The scheduler replica this daemon runs (fleet.scheduler), once etcd was reached. */
  private scheduler: FleetScheduler | null = null;

  constructor(private readonly options: NodeAgentOptions) {
    this.workDir = resolve(options.fleet.workDir ?? join(options.imageDir, 'fleet'));
    this.devices = options.kernel.describeDevices().map((d, index) => ({
      index,
      name: d.description || d.device || d.id,
      backend: d.backend,
      featureLevel: d.featureLevel,
      memoryBudget: d.budgetBytes,
      maxBufferSize: d.limits.maxBufferSize ?? 0,
      maxStorageBufferBindingSize: d.limits.maxStorageBufferBindingSize ?? 0,
    }));
  }

  /** The fleet's store while connected (the daemon's fleet control messages use it); null before the first connect. */
  get store(): FleetStore | null {
    return this.storeNow;
  }

  /** The fleet's client over the node's store (the daemon's fleet control messages); FLEET_UNAVAILABLE until etcd was reached. */
  client(): FleetClient {
    const store = this.storeNow;
    if (!store || this.stopped) {
      throw new GpunixError(ErrorCodes.FLEET_UNAVAILABLE, `fleet node ${this.node} ${this.stopped ? 'is leaving the fleet' : `has not reached etcd (${this.options.fleet.etcd.endpoints.join(',')}) yet; it keeps trying`}`);
    }
    if (this.fleetClient?.store !== store) this.fleetClient = new FleetClient(store, { tenantDataRoot: this.options.fleet.tenantDataRoot });
    return this.fleetClient;
  }

  get node(): string {
    return this.options.fleet.node;
  }

  /** Begins joining the fleet in the background: an unreachable etcd is retried, never fatal to the daemon. */
  start(): void {
    if (this.running) return;
    this.removeLeftoverTenants();
    this.running = this.loop();
  }

  /**
   * Leaves the fleet: kills every member (the scheduler reruns them elsewhere), then revokes the
   * lease so the node's key and its members' statuses vanish at once. Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopped) return this.running ?? undefined;
    // The lease is taken now: the session ends within ~100 ms of `stopped` and drops its reference.
    const lease = this.lease;
    this.stopped = true;
    this.wake?.();
    // The members' kernel processes die first (in-process, at once), then the lease goes: the node's
    // key vanishes without waiting for the members' children to exit (up to CHILD_GRACE_MS).
    const killed = this.killMembersNow('the daemon is shutting down', false);
    await Promise.race([killed, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
    await lease?.revoke();
    if (this.lease === lease) this.lease = null;
    await this.scheduler?.stop().catch(() => undefined);
    await this.enqueue(() => this.stopAll('the daemon is shutting down'));
    await this.running;
    this.storeNow?.close();
    this.log('info', 'left the fleet', {});
  }

  private log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void {
    this.options.log(level, msg, { node: this.node, ...fields });
  }

  /** Connect, register, serve the bindings until the lease is lost; again, until stopped. */
  private async loop(): Promise<void> {
    let delay = RETRY_MIN_MS;
    let lastError = '';
    while (!this.stopped) {
      try {
        if (!this.storeNow) this.storeNow = await FleetStore.connect(this.options.fleet.etcd);
        if (this.options.fleet.scheduler && !this.scheduler && !this.stopped) {
          this.scheduler = new FleetScheduler(this.storeNow, { id: `${this.node}-${process.pid}`, log: (level, msg, fields) => this.log(level, msg, { component: 'scheduler', ...fields }) });
          await this.scheduler.start();
          this.log('info', 'scheduler replica started', { id: this.scheduler.id });
        }
        delay = RETRY_MIN_MS;
        lastError = '';
        await this.session(this.storeNow);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        // Each new failure once; the same one again is not repeated every few seconds.
        if (message !== lastError && !this.stopped) this.log('error', 'cannot register the node in the fleet; retrying', { error: message, retryMs: delay });
        lastError = message;
      }
      if (this.stopped) break;
      await this.sleep(delay);
      delay = Math.min(RETRY_MAX_MS, delay * 2);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  /**
   * One registration: a fresh lease, the NodeRecord under it, the bindings listed and watched.
   * Returns when the lease is lost (after its members were killed) or the agent stops.
   */
  private async session(store: FleetStore): Promise<void> {
    let lost!: (reason: string) => void;
    const leaseLost = new Promise<string>((resolve) => (lost = resolve));
    const lease = await store.lease(this.options.fleet.leaseTtlSeconds, (error) => lost(error.message), { keepUntilRevoked: true });
    if (this.stopped) {
      await lease.revoke();
      return;
    }
    this.lease = lease;
    this.lastPublished = '';
    let watch: { close(): Promise<void> } | null = null;
    let tick: NodeJS.Timeout | null = null;
    /** Set when this session ends: a watch that is created after it is closed at once. */
    let ended = false;
    try {
      await this.register(store, lease);
      const prefix = store.keys.nodeBindings(this.node);
      const listen = async () => {
        const { entries, revision } = await store.list<Binding>(prefix);
        if (ended || this.lease !== lease) return;
        this.bindings.clear();
        for (const entry of entries) this.setBinding(store.keys.rest(prefix, entry.key), entry.value, lease);
        this.scheduleReconcile();
        const opened = await store.watch<Binding>(
          prefix,
          revision,
          (event) => {
            const key = store.keys.rest(prefix, event.key);
            if (event.type === 'put' && event.value) this.setBinding(key, event.value, lease);
            else this.bindings.delete(key);
            this.scheduleReconcile();
          },
          // etcd ended the watch (compaction): list again and watch from there.
          (error) => {
            this.log('warn', 'the bindings watch ended; listing again', { error: error.message });
            const old = watch;
            watch = null;
            void old?.close();
            const relist = (): void => {
              if (lease.lost || this.stopped || this.lease !== lease) return;
              // etcd unreachable for now: the members go on; listed again in a second.
              listen().catch((e: Error) => {
                this.log('warn', 'cannot list the bindings; retrying', { error: e.message });
                setTimeout(relist, 1_000);
              });
            };
            relist();
          },
        );
        // The lease changed or the agent stopped while the watch was being made: nobody would close it.
        if (ended || lease.lost || this.stopped || this.lease !== lease) {
          await opened.close();
          return;
        }
        watch = opened;
      };
      await listen();
      this.log('info', 'joined the fleet', { lease: lease.id, devices: this.devices.length, labels: this.options.fleet.labels, ttlSeconds: this.options.fleet.leaseTtlSeconds });
      tick = setInterval(() => void this.tick(store, lease), PUBLISH_INTERVAL_MS);
      const stopped = new Promise<string>((resolve) => {
        const check = setInterval(() => this.stopped && (clearInterval(check), resolve('')), 100);
        void leaseLost.then(() => clearInterval(check));
      });
      const reason = await Promise.race([leaseLost, stopped]);
      if (this.stopped) return;
      this.log('warn', 'the node lost its fleet lease: killing its fleet members (the scheduler reruns them elsewhere), then registering afresh', { error: reason, members: this.members.size });
      // At once, not behind queued reconcile work: the scheduler may rebind them elsewhere as soon
      // as etcd expires the lease (the store counts it lost before that can happen).
      void this.killMembersNow('the node lost its fleet lease', true);
      await this.enqueue(() => this.stopAll('the node lost its fleet lease', true));
      // Members that finished while etcd was out of reach: their ends are recorded before the
      // lease goes, else the node's death (the lease's end) would have the scheduler run them again.
      await this.recordFinished(store, lease, this.options.fleet.leaseTtlSeconds * 1000);
    } finally {
      ended = true;
      if (tick) clearInterval(tick);
      await (watch as { close(): Promise<void> } | null)?.close();
      if (this.lease === lease) this.lease = null;
      if (!this.stopped) await lease.revoke();
    }
  }

  /**
   * Puts nodes/<node> for the first time under `lease`, only when no such key exists: a second
   * daemon with the same fleet.node (or this node's previous run, until its lease expires) holds it.
   */
  private async register(store: FleetStore, lease: StoreLease): Promise<void> {
    const key = store.keys.node(this.node);
    const { used, health } = this.measure();
    const record = this.nodeRecord(lease, used, health);
    if (!(await store.commit({ ifs: [{ key, absent: true }], puts: [{ key, value: record, lease }] }))) {
      throw new Error(
        `node name ${JSON.stringify(this.node)} is taken: ${key} exists (another gpunixd with the same fleet.node, or this node's previous run whose lease has not expired yet: it goes within ${this.options.fleet.leaseTtlSeconds} s)`,
      );
    }
    this.lastPublished = JSON.stringify({ used, health });
  }

  /** Records a binding, unless it was made for another life of this node (Binding.incarnation). */
  private setBinding(key: string, binding: Binding, lease: StoreLease): void {
    if (binding.incarnation !== undefined && binding.incarnation !== lease.id) {
      this.bindings.delete(key);
      this.log('warn', 'ignoring a binding made for an earlier life of this node', { job: binding.job, member: binding.member, generation: binding.generation, incarnation: binding.incarnation, ours: lease.id });
      return;
    }
    this.bindings.set(key, binding);
  }

  /**
   * Kills every member's kernel process and signals its child now, outside the work queue (lease
   * lost, shutdown); with `abandon`, they are never started again at their generation. The queued
   * stopAll() that follows waits for the children and tidies up. Resolves when the kernel kills are done.
   */
  private killMembersNow(why: string, abandon: boolean): Promise<unknown> {
    const kills: Array<Promise<unknown>> = [];
    for (const member of this.members.values()) {
      if (abandon) this.abandoned.add(`${member.key}@${member.binding.generation}`);
      if (member.ended) continue;
      member.stopping = true;
      this.clearTimers(member);
      const record = this.findProcess(member);
      if (record && record.state !== 'exited') kills.push(this.options.kernel.kill(record.pid).catch(() => undefined));
      const child = member.child;
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      this.log('info', 'fleet member killed', { job: member.binding.job, member: member.binding.member, generation: member.binding.generation, gpid: record?.pid, why });
    }
    return Promise.all(kills);
  }

  /** Runs `work` after every reconciliation and teardown queued before it. */
  private enqueue(work: () => Promise<void>): Promise<void> {
    const run = this.queue.then(work).catch((error: unknown) => this.log('error', 'fleet node work failed', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) }));
    this.queue = run;
    return run;
  }

  private scheduleReconcile(): void {
    if (this.reconcileQueued || this.stopped) return;
    this.reconcileQueued = true;
    void this.enqueue(async () => {
      this.reconcileQueued = false;
      await this.reconcile();
    });
  }

  /** Makes what runs match the bindings: stop the unbound, start the new, suspend or resume. */
  private async reconcile(): Promise<void> {
    const store = this.storeNow;
    const lease = this.lease;
    if (!store || !lease || lease.lost || this.stopped) return;
    for (const tag of [...this.abandoned]) {
      const [key, generation] = tag.split('@');
      if (this.bindings.get(key)?.generation !== Number(generation)) this.abandoned.delete(tag);
    }
    for (const [key, member] of [...this.members]) {
      const binding = this.bindings.get(key);
      // Same generation, same kind (its program here, or only its process): the scheduler rewrote it (a move began or ended).
      if (binding && binding.generation === member.binding.generation && (binding.client !== undefined) === member.remote) {
        member.binding = binding;
        continue;
      }
      this.members.delete(key);
      await this.stopMember(member, binding ? `rebound (generation ${binding.generation})` : 'its binding was deleted');
      await member.statusChain;
      if (member.remote) {
        if (member.arrivalPut > 0) await store.delete(store.keys.arrival(member.binding.job, member.binding.member)).catch(() => undefined);
      } else if (!binding) await store.delete(store.keys.status(member.binding.job, member.binding.member)).catch((error: Error) => this.log('warn', 'cannot delete a member status', { job: member.binding.job, member: member.binding.member, error: error.message }));
    }
    // Tenants: one per job, its memory limit and process count from its members bound here.
    const perJob = new Map<string, Binding[]>();
    for (const [key, binding] of this.bindings) {
      if (this.abandoned.has(`${key}@${binding.generation}`)) continue;
      perJob.set(binding.job, [...(perJob.get(binding.job) ?? []), binding]);
    }
    for (const [job, tenant] of [...this.jobTenants]) {
      if (perJob.has(job) || [...this.members.values()].some((m) => m.binding.job === job)) continue;
      await this.removeTenant(job, tenant);
    }
    const refused = new Map<string, string>();
    for (const [job, bindings] of perJob) {
      try {
        await this.ensureTenant(job, bindings);
      } catch (error) {
        refused.set(job, `cannot make the job's tenant on node ${this.node}: ${(error as Error).message}`);
      }
    }
    for (const [key, binding] of this.bindings) {
      if (this.members.has(key) || this.abandoned.has(`${key}@${binding.generation}`)) continue;
      if (binding.client) this.startRemoteMember(key, binding, refused.get(binding.job));
      else if (binding.movedTo) {
        // Its program was this node's child in an earlier life of the agent: it cannot be supervised again.
        const member = new Member(key, binding, `${FLEET_TENANT_PREFIX}${binding.job}`, join(this.workDir, binding.job, `${binding.member}.log`));
        this.members.set(key, member);
        void this.enqueue(() => this.memberFailed(member, `the member's program is gone (its process had moved to node ${binding.movedTo!.node})`));
      }
      else this.startMember(store, lease, key, binding, refused.get(binding.job));
    }
    for (const [key, member] of this.members) {
      const binding = this.bindings.get(key);
      if (!binding || member.movedTo) continue;
      if (member.remote) await this.remoteMember(store, lease, member, refused.get(binding.job));
      // A move begins once per id, from the node that runs the member's program (the scheduler moves no other).
      if (binding.move && binding.move.id > member.lastMoveId && !member.remote && member.state !== 'starting') void this.moveMember(store, lease, member, binding.move);
      if (binding.desired !== member.applied) await this.applyDesired(store, lease, member, binding.desired);
      else if (binding.desired === 'suspend' && member.state === 'suspended') await this.keepSwappedOut(member);
    }
  }

  /**
   * A member whose GPU process moves (or moved) here while its program runs on another node
   * (Binding.client): the job's tenant is made (reconcile did), nothing is spawned. The node says it
   * is ready for the move (arrivals/<job>/<member>); once the move committed it finds the process
   * (its tenant and name) and suspends, resumes and checkpoints it as told. Its status is the
   * program's node's to write.
   */
  private startRemoteMember(key: string, binding: Binding, refusal: string | undefined): void {
    const member = new Member(key, binding, `${FLEET_TENANT_PREFIX}${binding.job}`, join(this.workDir, binding.job, `${binding.member}.log`));
    member.pidFloor = this.options.kernel.ps().reduce((max, p) => Math.max(max, p.pid), 0);
    this.members.set(key, member);
    if (refusal) this.log('warn', 'cannot take a moving fleet member', { job: binding.job, member: binding.member, error: refusal });
    this.log('info', 'fleet member expected (its process moves here)', { job: binding.job, member: binding.member, generation: binding.generation, from: binding.client?.node, move: binding.client?.arriving });
  }

  /** Each reconcile: says it is ready for an arriving move, or finds the process that arrived. */
  private async remoteMember(store: FleetStore, lease: StoreLease, member: Member, refusal: string | undefined): Promise<void> {
    const arriving = member.binding.client?.arriving;
    if (arriving !== undefined) {
      if (member.arrivalPut === arriving || refusal || !this.jobTenants.has(member.binding.job)) return;
      const record: ArrivalRecord = { node: this.node, move: arriving };
      try {
        await store.put(store.keys.arrival(member.binding.job, member.binding.member), record, lease);
        member.arrivalPut = arriving;
        this.log('info', 'ready for a moving fleet member', { job: member.binding.job, member: member.binding.member, move: arriving });
      } catch (error) {
        this.log('warn', 'cannot say the node is ready for a move; retrying', { job: member.binding.job, error: (error as Error).message });
      }
      return;
    }
    if (member.pid !== undefined || member.stopping) return;
    const record = this.findProcess(member);
    if (!record || record.state === 'exited') return;
    member.pid = record.pid;
    member.state = 'running';
    this.log('info', 'fleet member arrived (its process moved here; its program runs on another node)', { job: member.binding.job, member: member.binding.member, gpid: record.pid, client: member.binding.client?.node });
    const checkpoint = member.binding.checkpoint;
    if (checkpoint) member.checkpointTimer = setInterval(() => void this.checkpoint(member, checkpoint.dir), checkpoint.intervalMs);
  }

  /**
   * Binding.move: moves the member's process, live, to the target node once it says it is ready,
   * through the daemon (Server.moveProcess, with migration.peerToken); the program follows by itself
   * and stays supervised here. The outcome goes into the member's status; a failure leaves the
   * process running here untouched (the daemon's guarantee).
   */
  private async moveMember(store: FleetStore, lease: StoreLease, member: Member, move: NonNullable<Binding['move']>): Promise<void> {
    member.lastMoveId = move.id;
    const fields = { job: member.binding.job, member: member.binding.member, gpid: member.pid, to: move.node, move: move.id };
    const report = (outcome: NonNullable<MemberStatus['move']>) => {
      member.move = outcome;
      if (!member.stopping && this.lease === lease) this.publishStatus(store, lease, member);
    };
    report({ id: move.id, outcome: 'moving', node: move.node });
    const started = Date.now();
    try {
      const moveProcess = this.options.moveProcess;
      const token = this.options.peerToken;
      if (!moveProcess) throw new Error('this daemon cannot move processes');
      if (!token) throw new Error(`node ${this.node} has no migration.peerToken (the other nodes' admin token) in its configuration`);
      if (member.state !== 'running' || member.pid === undefined) throw new Error(`the member is ${member.state} here`);
      const address = await this.awaitArrival(store, member, move);
      // A periodic checkpoint under way finishes first (none begins while the move is `moving`).
      while (member.checkpointing) await new Promise((resolve) => setTimeout(resolve, 50));
      const pid = member.pid;
      if (pid === undefined || member.state !== 'running' || member.stopping) throw new Error(`the member is ${member.stopping ? 'stopping' : member.state} here`);
      this.log('info', 'moving a fleet member to another node', fields);
      const result = await moveProcess(pid, { address, token, node: move.node });
      member.movedTo = { node: move.node, pid: result.pid };
      this.clearTimers(member);
      this.log('info', 'fleet member moved (its program stays here, supervised)', { ...fields, newPid: result.pid, bytes: result.bytes, totalMs: result.totalMs, downtimeMs: result.downtimeMs });
      report({ id: move.id, outcome: 'moved', node: move.node, ms: Date.now() - started });
    } catch (error) {
      const message = (error as Error).message;
      this.log('warn', 'moving a fleet member failed; it goes on here', { ...fields, error: message });
      report({ id: move.id, outcome: 'failed', node: move.node, message: message.slice(0, 300), ms: Date.now() - started });
    }
  }

  /** Waits until the move's target says it is ready (its arrival record); returns the target's address (from its NodeRecord). */
  private async awaitArrival(store: FleetStore, member: Member, move: NonNullable<Binding['move']>): Promise<NodeAddress> {
    const deadline = Date.now() + ARRIVAL_TIMEOUT_MS;
    for (;;) {
      const [arrival, node] = await Promise.all([store.get<ArrivalRecord>(store.keys.arrival(member.binding.job, member.binding.member)), store.get<NodeRecord>(store.keys.node(move.node))]);
      if (!node) throw new Error(`node ${move.node} is not in the fleet (it left or died)`);
      if (arrival && arrival.value.node === move.node && arrival.value.move === move.id) {
        const { url, socket } = node.value.address;
        if (url) return { url };
        if (socket) return { socket };
        throw new Error(`node ${move.node} publishes no address`);
      }
      if (this.bindings.get(member.key)?.move?.id !== move.id || member.stopping) throw new Error('the move was called off');
      if (Date.now() > deadline) throw new Error(`node ${move.node} did not get ready for the move within ${ARRIVAL_TIMEOUT_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /**
   * A suspended member's program may still touch its buffers (a writeBuffer or an encoder it had
   * under way when it was swapped out), and the kernel brings a touched buffer back to the device.
   * Reclaim counts on the device memory staying free: what came back is swapped out again.
   */
  private async keepSwappedOut(member: Member): Promise<void> {
    const record = this.findProcess(member);
    if (!record || record.state === 'exited' || record.accounting.residentBytes === 0) return;
    try {
      await this.options.kernel.swapOut(record.pid);
      this.log('debug', 'fleet member swapped out again', { job: member.binding.job, member: member.binding.member, gpid: record.pid, bytes: record.accounting.residentBytes });
    } catch (error) {
      this.log('warn', 'cannot swap a suspended fleet member out again', { job: member.binding.job, member: member.binding.member, gpid: record.pid, error: (error as Error).message });
    }
  }

  /** The job's tenant, made or updated: weight = share, memory = memory × members here (+ host allowance), priorities [class]. */
  private async ensureTenant(job: string, bindings: Binding[]): Promise<void> {
    const first = bindings[0];
    const count = bindings.length;
    const quota = {
      memoryLimit: first.memory * count + HOST_ALLOWANCE_PER_MEMBER * count,
      weight: first.share,
      maxProcesses: count,
      priorities: [first.class] as [PriorityClass, ...PriorityClass[]],
    };
    const existing = this.jobTenants.get(job);
    if (existing) {
      if (existing.members !== count) {
        this.options.tenants.update(existing.name, quota, false);
        existing.members = count;
      }
      return;
    }
    const name = `${FLEET_TENANT_PREFIX}${job}`;
    if (this.options.kernel.tenants().some((t) => t.name === name)) {
      // One this node made in an earlier run (its list says so): made anew for its token. Any other
      // (an operator's, from before `tenants add fleet.*` was refused) is never touched.
      if (!this.madeTenants().has(name)) throw new Error(`a tenant named ${name} exists that this node did not make; it is left alone`);
      this.log('warn', 'replacing a leftover fleet tenant', { tenant: name });
      await this.options.tenants.remove(name).catch(() => undefined);
    }
    this.noteTenant(name, true);
    const { token } = this.options.tenants.add(name, quota);
    this.jobTenants.set(job, { name, token, members: count });
    this.log('info', 'fleet job tenant added', { job, tenant: name, weight: quota.weight, memoryLimit: quota.memoryLimit, members: count });
  }

  private async removeTenant(job: string, tenant: JobTenant): Promise<void> {
    this.jobTenants.delete(job);
    try {
      await this.options.tenants.remove(tenant.name);
    } catch (error) {
      this.log('warn', 'cannot remove a fleet job tenant', { tenant: tenant.name, error: (error as Error).message });
    }
    this.noteTenant(tenant.name, false);
    // Restore images linked into the tenant's image directory.
    rmSync(join(this.options.imageDir, tenant.name), { recursive: true, force: true });
    this.log('info', 'fleet job tenant removed', { job, tenant: tenant.name });
  }

  /**
   * Tenants a previous run of this node made (its list, `<workDir>/tenants.json`) that the daemon's
   * state file still holds: their jobs are not this run's. A fleet.* tenant not on the list is not
   * the node's and stays.
   */
  private removeLeftoverTenants(): void {
    const made = this.madeTenants();
    for (const tenant of this.options.kernel.tenants()) {
      if (!tenant.name.startsWith(FLEET_TENANT_PREFIX)) continue;
      if (!made.has(tenant.name)) {
        this.log('warn', 'a fleet.* tenant this node did not make is left alone', { tenant: tenant.name });
        continue;
      }
      this.log('info', 'removing a fleet tenant left by an earlier run', { tenant: tenant.name });
      void this.options.tenants.remove(tenant.name).catch(() => undefined);
    }
    for (const name of made) if (!this.options.kernel.tenants().some((t) => t.name === name)) this.noteTenant(name, false);
  }

  /** Where the node lists the tenants it made (so that it removes only its own). */
  private get madeTenantsPath(): string {
    return join(this.workDir, 'tenants.json');
  }

  /** The fleet tenants this node made and has not removed yet (this run's and earlier runs'). */
  private madeTenants(): Set<string> {
    try {
      const names: unknown = JSON.parse(readFileSync(this.madeTenantsPath, 'utf8'));
      return new Set(Array.isArray(names) ? names.filter((n): n is string => typeof n === 'string') : []);
    } catch {
      return new Set();
    }
  }

  /** Adds `name` to the node's list of tenants it made (`made`), or takes it off. Written before the tenant is added. */
  private noteTenant(name: string, made: boolean): void {
    const names = this.madeTenants();
    if (made === names.has(name)) return;
    if (made) names.add(name);
    else names.delete(name);
    try {
      mkdirSync(this.workDir, { recursive: true, mode: 0o700 });
      writeFileSync(this.madeTenantsPath, `${JSON.stringify([...names])}\n`, { mode: 0o600 });
    } catch (error) {
      this.log('warn', 'cannot write the list of fleet tenants this node made', { path: this.madeTenantsPath, error: (error as Error).message });
    }
  }

  /** Starts the member's child: `gpunix run --connect` on this daemon, as its job's tenant, on its device. */
  private startMember(store: FleetStore, lease: StoreLease, key: string, binding: Binding, refusal: string | undefined): void {
    const tenant = this.jobTenants.get(binding.job);
    const jobDir = join(this.workDir, binding.job);
    const member = new Member(key, binding, tenant?.name ?? `${FLEET_TENANT_PREFIX}${binding.job}`, join(jobDir, `${binding.member}.log`));
    this.members.set(key, member);
    if (!tenant) {
      void this.enqueue(() => this.memberFailed(member, refusal ?? 'the job has no tenant on this node'));
      return;
    }
    member.pidFloor = this.options.kernel.ps().reduce((max, p) => Math.max(max, p.pid), 0);
    const args = [
      GPUNIX_BIN,
      'run',
      '--connect',
      '--socket',
      this.options.socket,
      '--name',
      member.name,
      '--priority',
      binding.class,
      '--memory-limit',
      String(binding.memory),
      '--device',
      String(binding.device),
    ];
    let logFd: number | null = null;
    try {
      mkdirSync(jobDir, { recursive: true, mode: 0o700 });
      if (binding.restoreFrom) args.push('--restore', this.linkRestoreImage(tenant.name, binding));
      args.push(resolve(binding.program), ...binding.args);
      logFd = openSync(member.logPath, 'a', 0o600);
      const runAs = this.options.fleet.runAs;
      // The member's user must be able to enter its working directory (the log fd is the daemon's).
      if (runAs) {
        chmodSync(this.workDir, 0o711);
        chownSync(jobDir, runAs.uid, runAs.gid);
      }
      const child = spawn(process.execPath, args, { cwd: jobDir, env: memberEnvironment(tenant.token, runAs ? jobDir : undefined), stdio: ['ignore', logFd, logFd], ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}) });
      member.child = child;
      member.childExited = new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          resolve();
          void this.enqueue(() => this.childEnded(member, code, signal));
        });
        child.once('error', (error) => {
          resolve();
          void this.enqueue(() => this.memberFailed(member, `cannot start the member's process: ${error.message}`));
        });
      });
    } catch (error) {
      void this.enqueue(() => this.memberFailed(member, error instanceof Error ? error.message : String(error)));
      return;
    } finally {
      if (logFd !== null) closeSync(logFd);
    }
    this.log('info', 'fleet member starting', { job: binding.job, member: binding.member, generation: binding.generation, device: binding.device, tenant: tenant.name, restoreFrom: binding.restoreFrom, log: member.logPath, childPid: member.child?.pid });
    this.publishStatus(store, lease, member);
    member.pidPoll = setInterval(() => {
      if (this.findProcess(member)) void this.enqueue(() => this.memberRunning(member));
    }, PID_POLL_MS);
  }

  /**
   * The restore image, made reachable to the member's tenant: a tenant session restores only from
   * its own image directory (`<imageDir>/<tenant>/`), so the image (e.g. on a shared checkpoint
   * directory) is hard-linked there, or copied across file systems. Returns the name to restore.
   */
  private linkRestoreImage(tenant: string, binding: Binding): string {
    const name = `restore-${binding.member}.g${binding.generation}.gpimg`;
    const dir = join(this.options.imageDir, tenant);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const target = join(dir, name);
    rmSync(target, { force: true });
    try {
      linkSync(resolve(binding.restoreFrom!), target);
    } catch {
      copyFileSync(resolve(binding.restoreFrom!), target);
    }
    return name;
  }

  /** The member's kernel process (its tenant's, its name, started after its child), if it has one yet. */
  private findProcess(member: Member): ProcessRecord | undefined {
    if (member.pid !== undefined) return this.options.kernel.ps().find((p) => p.pid === member.pid);
    return this.options.kernel.ps().find((p) => p.pid > member.pidFloor && p.tenant === member.tenant && p.name === member.name);
  }

  private async memberRunning(member: Member): Promise<void> {
    if (member.pid !== undefined || member.stopping || member.state !== 'starting') return;
    const record = this.findProcess(member);
    if (!record) return;
    if (member.pidPoll) clearInterval(member.pidPoll);
    member.pidPoll = null;
    member.pid = record.pid;
    member.state = 'running';
    member.gpuTimeMs = gpuTimeMs(record);
    this.log('info', 'fleet member running', { job: member.binding.job, member: member.binding.member, generation: member.binding.generation, gpid: record.pid });
    const store = this.storeNow;
    const lease = this.lease;
    if (store && lease) this.publishStatus(store, lease, member);
    const checkpoint = member.binding.checkpoint;
    if (checkpoint) member.checkpointTimer = setInterval(() => void this.checkpoint(member, checkpoint.dir), checkpoint.intervalMs);
    // Told to suspend before its process existed: apply it now.
    const desired = this.bindings.get(member.key)?.desired ?? 'run';
    if (desired !== member.applied && store && lease) await this.applyDesired(store, lease, member, desired);
  }

  /** desired 'suspend': the process is suspended and swapped out (its device memory freed); 'run': resumed. */
  private async applyDesired(store: FleetStore, lease: StoreLease, member: Member, desired: 'run' | 'suspend'): Promise<void> {
    if (member.pid === undefined || member.stopping || (member.state !== 'running' && member.state !== 'suspended')) return;
    const pid = member.pid;
    const fields = { job: member.binding.job, member: member.binding.member, gpid: pid };
    try {
      if (desired === 'suspend') {
        await this.options.kernel.swapOut(pid);
        member.state = 'suspended';
        this.log('info', 'fleet member suspended (swapped out)', fields);
      } else {
        this.options.kernel.resume(pid);
        member.state = 'running';
        this.log('info', 'fleet member resumed', fields);
      }
      member.applied = desired;
      this.publishStatus(store, lease, member);
    } catch (error) {
      // An exited process: its end is reported by its child's exit. Others are retried at the next tick.
      this.log('warn', `cannot ${desired === 'suspend' ? 'suspend' : 'resume'} a fleet member`, { ...fields, error: (error as Error).message });
    }
  }

  /** The member's child ended on its own: its status says how. */
  private async childEnded(member: Member, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    this.clearTimers(member);
    if (member.stopping || this.members.get(member.key) !== member) return;
    const record = this.findProcess(member);
    if (record && member.pid === undefined) member.pid = record.pid;
    if (record && !member.movedTo) member.gpuTimeMs = gpuTimeMs(record);
    // A member whose process moved: the process here ended by moving; the program's exit is the member's.
    const reason = !member.movedTo && record?.exit && record.exit.reason !== 'normal' ? `${record.exit.reason}${record.exit.message ? `: ${record.exit.message}` : ''}` : undefined;
    if (code === 0) {
      member.state = 'exited';
      member.exitCode = 0;
    } else if (code !== null && record) {
      member.state = 'exited';
      member.exitCode = code;
      member.message = reason ?? lastLine(member.logPath) ?? `exited with code ${code}`;
    } else {
      member.state = 'failed';
      member.message = reason ?? lastLine(member.logPath) ?? (signal ? `its process was killed by ${signal}` : `exited with code ${code}`);
    }
    this.log(member.state === 'exited' && member.exitCode === 0 ? 'info' : 'warn', 'fleet member exited', {
      job: member.binding.job,
      member: member.binding.member,
      generation: member.binding.generation,
      gpid: member.movedTo?.pid ?? member.pid,
      gpuNode: member.movedTo?.node,
      state: member.state,
      exitCode: member.exitCode,
      message: member.message,
    });
    const store = this.storeNow;
    const lease = this.lease;
    if (store && lease) this.publishStatus(store, lease, member);
  }

  private async memberFailed(member: Member, message: string): Promise<void> {
    this.clearTimers(member);
    if (member.stopping || this.members.get(member.key) !== member || member.ended) return;
    member.state = 'failed';
    member.message = message;
    this.log('warn', 'fleet member failed', { job: member.binding.job, member: member.binding.member, generation: member.binding.generation, error: message });
    const store = this.storeNow;
    const lease = this.lease;
    if (store && lease) this.publishStatus(store, lease, member);
  }

  private clearTimers(member: Member): void {
    if (member.pidPoll) clearInterval(member.pidPoll);
    if (member.checkpointTimer) clearInterval(member.checkpointTimer);
    member.pidPoll = null;
    member.checkpointTimer = null;
  }

  /** Ends a member the node no longer runs: its kernel process, then its child. Its status is not reported. */
  private async stopMember(member: Member, why: string): Promise<void> {
    member.stopping = true;
    this.clearTimers(member);
    const record = this.findProcess(member);
    if (record && record.state !== 'exited') await this.options.kernel.kill(record.pid).catch(() => undefined);
    const child = member.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const grace = setTimeout(() => child.kill('SIGKILL'), CHILD_GRACE_MS);
      await member.childExited;
      clearTimeout(grace);
    }
    // A process its child made after the first look (it was still connecting).
    const late = this.findProcess(member);
    if (late && late.state !== 'exited') await this.options.kernel.kill(late.pid).catch(() => undefined);
    this.log('info', 'fleet member stopped', { job: member.binding.job, member: member.binding.member, generation: member.binding.generation, gpid: record?.pid, why });
  }

  /**
   * Stops every member and removes their tenants (lease lost, shutdown). With `keepFinished`,
   * members that already exited stay known, their statuses republished under the next lease (their
   * end is news the scheduler may not have had; nothing of them runs).
   */
  private async stopAll(why: string, keepFinished = false): Promise<void> {
    const members = [...this.members.values()].filter((m) => !(keepFinished && m.ended));
    for (const member of this.members.values()) {
      if (members.includes(member)) this.members.delete(member.key);
      else member.dirty = true;
    }
    await Promise.all(members.map((member) => this.stopMember(member, why)));
    for (const [job, tenant] of [...this.jobTenants]) await this.removeTenant(job, tenant);
  }

  /**
   * One periodic checkpoint: the image to `<dir>/<job>/<member>.g<generation>.<n>.gpimg` (the
   * kernel writes a temporary file and renames it: a reader never sees half an image), then
   * checkpoints/<job>/<member>. A failure (BUSY, a timeout) is logged and retried at the next
   * interval; it never stops the member.
   */
  private async checkpoint(member: Member, dir: string): Promise<void> {
    const store = this.storeNow;
    if (!store || member.checkpointing || member.stopping || member.pid === undefined || (member.state !== 'running' && member.state !== 'suspended')) return;
    // Not while its process is being moved (the target checkpoints it once it is there).
    if (member.move?.outcome === 'moving' || member.movedTo) return;
    member.checkpointing = true;
    const { job, member: index, generation } = member.binding;
    const path = resolve(dir, job, `${index}.g${generation}.${member.checkpoints}.gpimg`);
    const fields = { job, member: index, generation, gpid: member.pid, path };
    try {
      mkdirSync(dirname(path), { recursive: true });
      const written = await this.options.kernel.checkpoint(member.pid, path, { timeoutMs: Math.min(member.binding.checkpoint!.intervalMs, 30_000) });
      member.checkpoints++;
      // Stopped or replaced while it wrote (binding deleted, rebound, lease lost): the image is of a
      // member the fleet no longer runs here; recording it could send a newer generation back in time.
      if (member.stopping || this.members.get(member.key) !== member) {
        rmSync(path, { force: true });
        this.log('info', 'fleet member checkpoint dropped: the member is no longer current', fields);
        return;
      }
      member.images.push(path);
      const record: CheckpointRecord = { path, generation, at: Date.now() };
      // Conditioned on what was read (store.update): a record of a newer generation (the member
      // rebound elsewhere) is never overwritten by this one.
      const kept = await store.update<CheckpointRecord>(store.keys.checkpoint(job, index), (current) => (current && current.value.generation > generation ? undefined : record), 5);
      if (kept !== record) {
        this.log('info', 'fleet member checkpoint not recorded: a newer generation has one', { ...fields, recorded: kept?.generation });
        return;
      }
      this.log('info', 'fleet member checkpointed', { ...fields, bytes: written.bytes });
      while (member.images.length > IMAGES_KEPT) {
        const old = member.images.shift()!;
        try {
          unlinkSync(old);
        } catch {
          // Already gone: nothing to keep tidy.
        }
      }
    } catch (error) {
      this.log('warn', 'fleet member checkpoint failed; retried at the next interval', { ...fields, error: (error as Error).message });
    } finally {
      member.checkpointing = false;
    }
  }

  /**
   * Puts the member's status (in order; a failed put is retried at the next tick). A running
   * member's status lives under the lease (it vanishes with the node); a finished member's is a
   * fact that outlives the node — put without the lease, even once the lease is lost, while the
   * member is still bound here — so that a node lost right after a member ended does not get it
   * run again.
   */
  private publishStatus(store: FleetStore, lease: StoreLease, member: Member): void {
    if (member.remote) return; // its program's node reports it
    const status: MemberStatus = { node: this.node, generation: member.binding.generation, state: member.state, updatedAt: Date.now() };
    if (member.pid !== undefined) status.pid = member.pid;
    if (member.movedTo) {
      status.pid = member.movedTo.pid;
      status.gpuNode = member.movedTo.node;
    }
    if (member.move) status.move = member.move;
    if (member.exitCode !== undefined) status.exitCode = member.exitCode;
    if (member.message !== undefined) status.message = member.message;
    if (member.gpuTimeMs !== undefined) status.gpuTimeMs = member.gpuTimeMs;
    member.lastStatusAt = status.updatedAt;
    member.dirty = false;
    const final = member.ended;
    member.statusChain = member.statusChain.then(async () => {
      if (member.stopping || (lease.lost && !final)) return;
      const key = store.keys.status(member.binding.job, member.binding.member);
      try {
        // Not bound here any more (the job ended or moved on): its status is nobody's news.
        if (final) await store.commit({ ifs: [{ key: store.keys.binding(this.node, member.binding.job, member.binding.member), present: true }], puts: [{ key, value: status }] });
        else await store.put(key, status, lease);
      } catch (error) {
        member.dirty = true;
        this.log('warn', 'cannot publish a member status; retrying', { job: member.binding.job, member: member.binding.member, error: (error as Error).message });
      }
    });
  }

  /**
   * Puts the statuses of finished members not yet recorded (their puts failed while etcd was out
   * of reach), retrying for up to `withinMs`. Called after the lease is lost and before it is revoked.
   */
  private async recordFinished(store: FleetStore, lease: StoreLease, withinMs: number): Promise<void> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      const finished = [...this.members.values()].filter((m) => !m.remote && m.ended);
      await Promise.all(finished.map((m) => m.statusChain));
      const unrecorded = finished.filter((m) => m.dirty);
      if (unrecorded.length === 0 || this.stopped) return;
      if (Date.now() >= deadline) {
        this.log('warn', 'could not record finished members before the node\'s lease ended: the scheduler may run them again', { members: unrecorded.map((m) => m.key) });
        return;
      }
      for (const member of unrecorded) this.publishStatus(store, lease, member);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Once a second: the NodeRecord when `used` or health changed; members' GPU time; retries; a reconcile pass. */
  private async tick(store: FleetStore, lease: StoreLease): Promise<void> {
    if (lease.lost || this.stopped) return;
    const usedChanged = await this.publishNode(store, lease, false);
    const now = Date.now();
    for (const member of this.members.values()) {
      if (member.stopping) continue;
      if (member.state === 'running' && member.pid !== undefined && !member.movedTo && !member.remote) {
        const record = this.findProcess(member);
        const time = record ? gpuTimeMs(record) : member.gpuTimeMs;
        if (time !== member.gpuTimeMs && (usedChanged || now - member.lastStatusAt >= GPU_TIME_REFRESH_MS)) {
          member.gpuTimeMs = time;
          member.dirty = true;
        }
      }
      if (member.dirty) this.publishStatus(store, lease, member);
    }
    // Suspends or resumes that failed, members whose process appeared: tried again.
    this.scheduleReconcile();
  }

  /** Puts the NodeRecord when it changed (or `force`); true when it did. */
  private async publishNode(store: FleetStore, lease: StoreLease, force: boolean): Promise<boolean> {
    const { used, health } = this.measure();
    const fingerprint = JSON.stringify({ used, health });
    if (!force && fingerprint === this.lastPublished) return false;
    const record = this.nodeRecord(lease, used, health);
    try {
      await store.put(store.keys.node(this.node), record, lease);
      this.lastPublished = fingerprint;
    } catch (error) {
      if (force) throw error;
      this.log('warn', 'cannot publish the node record; retrying', { error: (error as Error).message });
    }
    return true;
  }

  private nodeRecord(lease: StoreLease, used: NodeRecord['used'], health: NodeRecord['health']): NodeRecord {
    return {
      name: this.node,
      labels: this.options.fleet.labels,
      devices: this.devices,
      health,
      address: this.options.url ? { socket: this.options.socket, url: this.options.url } : { socket: this.options.socket },
      used,
      startedAt: this.startedAt,
      updatedAt: Date.now(),
      incarnation: lease.id,
    };
  }

  /** Device bytes in use and live processes per device index, and the node's health. */
  private measure(): { used: NodeRecord['used']; health: NodeRecord['health'] } {
    const { kernel } = this.options;
    const stats = kernel.stats().devices;
    const used = stats.map((d) => ({ bytes: d.usedBytes, processes: 0 }));
    const indexOf = new Map(stats.map((d, i) => [d.id, i]));
    for (const p of kernel.ps()) {
      if (p.state === 'exited') continue;
      for (const id of kernel.devicesOf(p.pid)) {
        const i = indexOf.get(id);
        if (i !== undefined) used[i].processes++;
      }
    }
    const health = this.stopped ? 'draining' : stats.length > 0 && stats.every((d) => d.lost !== null) ? 'unhealthy' : 'ready';
    return { used, health };
  }
}

/**
 * A member's environment: what node needs to run `gpunix run --connect`, and its job tenant's token;
 * never the daemon's whole environment (it may hold etcd credentials or other secrets).
 * `home`: HOME for a member run as another user (fleet.runAs).
 */
export function memberEnvironment(token: string, home?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (name === 'PATH' || name === 'HOME' || name === 'LANG' || name === 'LC_ALL' || name === 'TMPDIR' || name === 'EGL_PLATFORM' || name === 'GPUNIX_BACKENDS' || name.startsWith('NODE_')) env[name] = value;
  }
  if (home) env.HOME = home;
  env[TOKEN_ENV] = token;
  return env;
}

function gpuTimeMs(record: ProcessRecord): number {
  return Math.round(record.accounting.gpuTimeNs / 1e5) / 10;
}

/** The last non-empty line of a member's log (its error, usually), cut to 300 characters. */
function lastLine(path: string): string | undefined {
  try {
    const size = statSync(path).size;
    const length = Math.min(size, 4096);
    const buffer = Buffer.alloc(length);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, buffer, 0, length, size - length);
    } finally {
      closeSync(fd);
    }
    const line = buffer.toString('utf8').split('\n').map((l) => l.trim()).filter(Boolean).pop();
    return line ? line.slice(0, 300) : undefined;
  } catch {
    return undefined;
  }
}
