// What users and operators ask of the fleet, over its store: submit a job, list and show jobs,
// cancel one, list nodes and queues, set and remove queues. The CLI's --etcd path and the daemon's
// fleet control messages both use it; tenant scoping (`asTenant`) is how a daemon keeps one tenant
// from seeing or touching another's jobs (such a job answers NO_SUCH_JOB: nothing is revealed).

import { randomInt } from 'node:crypto';
import { posix } from 'node:path';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { Binding, JobPhase, JobRecord, MemberStatus, NodeRecord } from './records.js';
import { JobSpec, JobSpecInput, parseJobSpec, parseQueueSpec, QueueSpec, QueueSpecInput } from './spec.js';
import type { FleetStore } from './store.js';

/** Phases a job does not leave: cancelling such a job changes nothing. */
export const FINISHED_PHASES: readonly JobPhase[] = ['succeeded', 'failed', 'cancelled'];

/** A fresh job id: "j-" + the time in base 36 + 8 random base-36 characters (ids sort by submit time). */
export function newJobId(): string {
  // Eight random base-36 characters (2.8e12 ids a millisecond): a stream of thousands of submits
  // in one millisecond, from many clients, practically never draws one id twice (submit retries when it does).
  let random = '';
  for (let i = 0; i < 8; i++) random += randomInt(36).toString(36);
  return `j-${Date.now().toString(36)}${random}`;
}

/** One member's status as its node reports it, with the member's index. */
export type MemberStatusEntry = MemberStatus & { member: number };

/** What is bound on one device of a node: the sum of its running members' shares and memory. */
export interface DeviceAllocation {
  share: number;
  memory: number;
  members: number;
}

/** A node with what the scheduler has bound on each of its devices (index = device). */
export type NodeReport = NodeRecord & { allocated: DeviceAllocation[] };

/** A queue with its use: `set` false for a queue only jobs name (it has the defaults). */
export type QueueReport = QueueSpec & { set: boolean; used: number; pending: number; running: number };

/** Phases whose members hold their devices (a suspended job is swapped out: it holds nothing). */
const HOLDING_PHASES: readonly JobPhase[] = ['bound', 'running'];

export interface JobFilter {
  tenant?: string;
  phase?: JobPhase[];
}

export interface FleetClientOptions {
  /** The node's fleet.tenantDataRoot: where a tenant's job `image` and `checkpoint.dir` may be (absent: a tenant may give neither). */
  tenantDataRoot?: string;
}

export interface SubmitOptions {
  /** Submitting for this tenant through a daemon (not the admin): the tenant rules apply (paths, the queue's tenants and maxPriority). */
  asTenant?: string;
}

export class FleetClient {
  constructor(
    readonly store: FleetStore,
    readonly options: FleetClientOptions = {},
  ) {}

  /**
   * Validates `spec` (BAD_JOB naming the field) and puts it as a new pending job; returns its
   * record. With `asTenant`, FORBIDDEN when the tenant rules (checkTenantSubmit) refuse it.
   */
  async submit(spec: JobSpecInput, options: SubmitOptions = {}): Promise<JobRecord> {
    const parsed = parseJobSpec(spec);
    if (options.asTenant !== undefined) await this.checkTenantSubmit(parsed, options.asTenant);
    for (let attempt = 0; attempt < 5; attempt++) {
      const now = Date.now();
      const record: JobRecord = { id: newJobId(), spec: parsed, phase: 'pending', generation: 0, placement: [], submittedAt: now, updatedAt: now, restarts: 0, suspensions: 0 };
      const key = this.store.keys.job(record.id);
      // Conditioned on absent: two submits that drew one id never overwrite each other.
      let applied: boolean;
      try {
        applied = await this.store.commit({ ifs: [{ key, absent: true }], puts: [{ key, value: record }] });
      } catch (error) {
        // The outcome is unknown (etcd's deadline passed): if the put landed, the job is ours.
        const mine = await this.ownRecord(key, record).catch(() => null);
        if (mine) return mine;
        throw error;
      }
      if (applied) return record;
      // etcd3 retries a transaction whose answer was lost: a retry of one that applied is refused
      // (the key is no longer absent). The record there is then ours: do not submit it twice.
      const mine = await this.ownRecord(key, record);
      if (mine) return mine;
    }
    throw new GpunixError(ErrorCodes.BUSY, 'could not draw an unused job id in 5 attempts');
  }

  /** The record at `key` when it is the one this submit wrote (same submit time and spec), else null. */
  private async ownRecord(key: string, record: JobRecord): Promise<JobRecord | null> {
    const entry = await this.store.get<JobRecord>(key);
    if (!entry || entry.value.submittedAt !== record.submittedAt || JSON.stringify(entry.value.spec) !== JSON.stringify(record.spec)) return null;
    return entry.value;
  }

  /**
   * The rules for a tenant's job submitted through a daemon (FORBIDDEN naming what breaks one):
   * `image` and `checkpoint.dir` only as absolute paths under <tenantDataRoot>/<tenant>/ (none at
   * all without a tenantDataRoot); the queue's `tenants` (when set) must name the tenant; the
   * priority must not exceed the queue's `maxPriority` (when set).
   */
  async checkTenantSubmit(spec: JobSpec, tenant: string): Promise<void> {
    const root = this.options.tenantDataRoot;
    const paths: Array<[string, string | undefined]> = [
      ['image', spec.image],
      ['checkpoint.dir', spec.checkpoint?.dir],
    ];
    for (const [field, path] of paths) {
      if (path === undefined) continue;
      if (root === undefined) throw forbidden(`job spec: ${field}: a tenant may not give it through a daemon (this node has no fleet.tenantDataRoot)`);
      const allowed = `${posix.resolve(root, tenant)}/`;
      if (!posix.isAbsolute(path) || !`${posix.resolve(path)}/`.startsWith(allowed)) {
        throw forbidden(`job spec: ${field}: must be an absolute path under ${allowed}, got ${JSON.stringify(path.slice(0, 200))}`);
      }
    }
    const queue = (await this.store.get<QueueSpec>(this.store.keys.queue(spec.queue)))?.value;
    if (queue?.tenants && !queue.tenants.includes(tenant)) throw forbidden(`queue ${spec.queue}: tenant ${tenant} may not submit to it (its tenants: ${queue.tenants.join(', ') || 'none'})`);
    if (queue?.maxPriority !== undefined && spec.priority > queue.maxPriority) {
      throw forbidden(`job spec: priority: ${spec.priority} is above queue ${spec.queue}'s maxPriority ${queue.maxPriority}`);
    }
  }

  /** The job `id`; NO_SUCH_JOB when there is none, or (with `asTenant`) it is another tenant's. */
  async job(id: string, asTenant?: string): Promise<JobRecord> {
    const entry = validJobId(id) ? await this.store.get<JobRecord>(this.store.keys.job(id)) : null;
    if (!entry || (asTenant !== undefined && entry.value.spec.tenant !== asTenant)) throw noSuchJob(id);
    return entry.value;
  }

  /** Every job that passes `filter`, oldest submit first. */
  async jobs(filter: JobFilter = {}): Promise<JobRecord[]> {
    const { entries } = await this.store.list<JobRecord>(this.store.keys.jobs());
    return entries
      .map((entry) => entry.value)
      .filter((job) => (filter.tenant === undefined || job.spec.tenant === filter.tenant) && (!filter.phase || filter.phase.includes(job.phase)))
      .sort((a, b) => a.submittedAt - b.submittedAt || a.id.localeCompare(b.id));
  }

  /**
   * Asks the scheduler to end job `id` (sets cancelRequested; the scheduler deletes its bindings
   * and marks it cancelled). A finished job is returned unchanged. NO_SUCH_JOB as job() does.
   */
  async cancel(id: string, asTenant?: string): Promise<JobRecord> {
    await this.job(id, asTenant);
    const after = await this.store.update<JobRecord>(this.store.keys.job(id), (current) => {
      if (!current || FINISHED_PHASES.includes(current.value.phase) || current.value.cancelRequested) return undefined;
      return { ...current.value, cancelRequested: true, updatedAt: Date.now() };
    });
    if (!after) throw noSuchJob(id);
    return after;
  }

  /** Every live node (a node's key vanishes with its lease), by name. */
  async nodes(): Promise<NodeRecord[]> {
    const { entries } = await this.store.list<NodeRecord>(this.store.keys.nodes());
    return entries.map((entry) => entry.value).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** nodes(), each with the shares and memory its bindings (desired 'run') hold per device. */
  async nodeReport(): Promise<NodeReport[]> {
    const [nodes, bindings] = await Promise.all([this.nodes(), this.store.list<Binding>(this.store.keys.bindings())]);
    const byNode = new Map<string, NodeReport>(nodes.map((node) => [node.name, { ...node, allocated: node.devices.map(() => ({ share: 0, memory: 0, members: 0 })) }]));
    for (const { key, value } of bindings.entries) {
      const node = byNode.get(this.store.keys.rest(this.store.keys.bindings(), key).split('/')[0]);
      const device = node?.allocated[value.device];
      if (!device || value.desired !== 'run' || value.movedTo) continue;
      device.share += value.share;
      device.memory += value.memory;
      device.members++;
    }
    return [...byNode.values()];
  }

  /** Every queue that is set or that a job names, with the shares its bound and running jobs use and its job counts. */
  async queueReport(): Promise<QueueReport[]> {
    const [queues, jobs] = await Promise.all([this.queues(), this.jobs()]);
    const byName = new Map<string, QueueReport>(queues.map((queue) => [queue.name, { ...queue, set: true, used: 0, pending: 0, running: 0 }]));
    for (const job of jobs) {
      let queue = byName.get(job.spec.queue);
      if (!queue) {
        queue = { ...parseQueueSpec({ name: job.spec.queue }), set: false, used: 0, pending: 0, running: 0 };
        byName.set(queue.name, queue);
      }
      if (job.phase === 'pending') queue.pending++;
      if (HOLDING_PHASES.includes(job.phase)) {
        queue.running++;
        queue.used += job.spec.share * job.spec.gang;
      }
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The statuses the nodes report for job `id`'s members, by member index (a member not started yet has none). */
  async members(id: string, asTenant?: string): Promise<MemberStatusEntry[]> {
    if (asTenant !== undefined) await this.job(id, asTenant);
    if (!validJobId(id)) return [];
    const prefix = this.store.keys.jobStatuses(id);
    const { entries } = await this.store.list<MemberStatus>(prefix);
    return entries
      .map((entry) => ({ ...entry.value, member: Number(this.store.keys.rest(prefix, entry.key)) }))
      .filter((entry) => Number.isInteger(entry.member))
      .sort((a, b) => a.member - b.member);
  }

  /** Every queue spec, by name (a queue nobody set is used with the defaults: guaranteed 0, no limit, weight 1). */
  async queues(): Promise<QueueSpec[]> {
    const { entries } = await this.store.list<QueueSpec>(this.store.keys.queues());
    return entries.map((entry) => entry.value).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Validates and puts a queue spec (BAD_JOB naming the field); returns what was stored. */
  async setQueue(spec: QueueSpecInput): Promise<QueueSpec> {
    const parsed = parseQueueSpec(spec);
    await this.store.put(this.store.keys.queue(parsed.name), parsed);
    return parsed;
  }

  /** Removes queue `name`'s spec (not its sub-queues'); BAD_OPTION when no such queue was set. */
  async removeQueue(name: string): Promise<void> {
    const key = this.store.keys.queue(name);
    const existing = QUEUE_PATH.test(name) ? await this.store.get<QueueSpec>(key) : null;
    if (!existing) throw new GpunixError(ErrorCodes.BAD_OPTION, `no queue named ${JSON.stringify(name)} is set`);
    await this.store.delete(key);
  }
}

/** The shape of a queue path (spec.ts's queue schema): a name that is not one names no key. */
const QUEUE_PATH = /^[A-Za-z0-9_.-]{1,48}(\/[A-Za-z0-9_.-]{1,48})*$/;

function forbidden(message: string): GpunixError {
  return new GpunixError(ErrorCodes.FORBIDDEN, message);
}

function noSuchJob(id: string): GpunixError {
  return new GpunixError(ErrorCodes.NO_SUCH_JOB, `no job ${JSON.stringify(id)} in the fleet`);
}

/** Job ids are key components: anything else (a "/", "..") names no job rather than another key. */
function validJobId(id: string): boolean {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(id) && id !== '.' && id !== '..';
}
