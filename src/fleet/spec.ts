// What users write to the fleet: a job spec (a program and what it needs), a queue spec (quotas),
// and a node's fleet configuration. Validated with zod so that each error names its field
// (GPUNIX_E_BAD_JOB: `gang: must be ...`). The records the fleet keeps about them are in records.ts;
// docs/fleet.md documents every field.

import { z } from 'zod';
import { describeIssues } from '../daemon/config.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { parseBytes, PRIORITY_CLASSES } from '../params.js';

/** The most processes one gang may have: each member is one key in the binding transaction (etcd allows 128 operations a transaction). */
export const MAX_GANG = 32;

/** Names of jobs, queues, nodes, label keys and values: safe in etcd keys and in tenant names. */
export const FLEET_NAME = /^[A-Za-z0-9_.-]{1,48}$/;
const fleetName = z.string().regex(FLEET_NAME, 'names are 1-48 of A-Z a-z 0-9 _ . -');

/** A queue path: names joined by "/" (e.g. "research/vision"); its parent is the path less its last name. */
const queuePath = z
  .string()
  .max(200)
  .regex(/^[A-Za-z0-9_.-]{1,48}(\/[A-Za-z0-9_.-]{1,48})*$/, 'a queue is names of A-Z a-z 0-9 _ . - joined by "/" (e.g. "research/vision")');

/** A byte count: a positive number, or a string such as "512M". */
const bytes = z.union([z.number(), z.string()]).transform((raw, ctx) => {
  let value: number;
  try {
    value = typeof raw === 'number' ? raw : parseBytes(raw);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
  if (!Number.isSafeInteger(Math.floor(value)) || value <= 0) {
    ctx.addIssue({ code: 'custom', message: `must be a positive byte count, got ${JSON.stringify(raw)}` });
    return z.NEVER;
  }
  return Math.floor(value);
});

export const placementSchema = z.strictObject({
  /** All members on one node. */
  sameNode: z.boolean().optional(),
  /** All members on nodes with one value of this label (e.g. "zone", "rack"). */
  sameLabel: fleetName.optional(),
  /** Members on distinct nodes (one member a node). */
  spread: z.boolean().optional(),
  /** Only nodes whose labels have these values. */
  nodeSelector: z.record(fleetName, fleetName).optional(),
});
export type Placement = z.output<typeof placementSchema>;

export const jobSpecSchema = z
  .strictObject({
    /** A name for people (not unique); the fleet names the job by its id. */
    name: fleetName.optional(),
    /** The tenant that owns the job (through a daemon: the caller's tenant, always). */
    tenant: fleetName,
    queue: queuePath.default('default'),
    /** Order within the queue and for reclaim: a higher priority is placed first and may suspend lower ones. */
    priority: z.number().int().min(-1000).max(1000).default(0),
    /** The node kernel's priority class of the job's processes. */
    class: z.enum(PRIORITY_CLASSES).default('normal'),
    /** The program each member runs (an ES module using navigator.gpu), by a path every node can read. */
    program: z.string().min(1).max(4096),
    args: z.array(z.string().max(4096)).max(64).default([]),
    /** Start each member from this process image instead (the program then resumes it: it finds its objects with device.gpunix). */
    image: z.string().min(1).max(4096).optional(),
    /** Processes that start together or not at all. */
    gang: z.number().int().min(1).max(MAX_GANG).default(1),
    /** Each member's share of one device's time, (0, 1]; the node enforces it as its tenant's weight. */
    share: z.number().gt(0).max(1).default(1),
    /** Device memory each member may hold (bytes, or "256M"); the node enforces it as a memory limit. */
    memory: bytes,
    placement: placementSchema.default({}),
    /** May the scheduler suspend it (swap) to make room for higher-priority or guaranteed work. */
    preemptible: z.boolean().default(true),
    /** May the scheduler move its members, live, to other nodes (to make room for a gang); no progress is lost. */
    movable: z.boolean().default(true),
    /** Periodic checkpoints: every intervalMs, each member's image under dir (a path every node can reach). */
    checkpoint: z.strictObject({ intervalMs: z.number().int().min(100).max(86_400_000), dir: z.string().min(1).max(4096) }).optional(),
    /** Whether the fleet may throw its progress away (restart it from the beginning) when its node dies and it has no checkpoint. */
    restartable: z.boolean().default(true),
  })
  .refine((job) => !(job.placement.sameNode && job.placement.spread && job.gang > 1), { message: 'sameNode and spread cannot both hold for a gang of more than one', path: ['placement'] });
export type JobSpecInput = z.input<typeof jobSpecSchema>;
export type JobSpec = z.output<typeof jobSpecSchema>;

export const queueSpecSchema = z.strictObject({
  name: queuePath,
  /** Device shares the queue is guaranteed (sum of its running members' shares); null: none guaranteed. */
  guaranteed: z.number().min(0).default(0),
  /** The most device shares it may use, borrowing idle quota included; null: no limit. */
  limit: z.number().positive().nullable().default(null),
  /** Its weight when queues share what is left over (fair share between siblings). */
  weight: z.number().positive().finite().default(1),
  /** The highest priority a tenant's job may have in this queue when submitted through a daemon (FORBIDDEN above it); absent: no cap. */
  maxPriority: z.number().int().min(-1000).max(1000).optional(),
  /** The tenants that may submit to this queue through a daemon; absent: every tenant. (The admin and --etcd operators may always.) */
  tenants: z.array(fleetName).max(1000).optional(),
});
export type QueueSpecInput = z.input<typeof queueSpecSchema>;
export type QueueSpec = z.output<typeof queueSpecSchema>;

/** How to reach the fleet's etcd: endpoints, and credentials when etcd has auth or TLS on. */
export const etcdConnectionSchema = z.strictObject({
  endpoints: z.array(z.string().min(1)).min(1),
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  tls: z.strictObject({ ca: z.string().min(1).optional(), cert: z.string().min(1).optional(), key: z.string().min(1).optional() }).optional(),
  /** Key prefix of this fleet (several fleets may share one etcd). */
  prefix: z.string().regex(/^\/[A-Za-z0-9_./-]*$/).default('/gpunix/'),
});
export type EtcdConnectionInput = z.input<typeof etcdConnectionSchema>;
export type EtcdConnection = z.output<typeof etcdConnectionSchema>;

/** gpunixd's `fleet` section: the daemon joins the fleet as node `node`. */
export const fleetConfigSchema = z.strictObject({
  etcd: etcdConnectionSchema,
  node: fleetName,
  labels: z.record(fleetName, fleetName).default({}),
  /** Seconds the node's lease lives without a keepalive: the node is down this long after it dies. */
  leaseTtlSeconds: z.number().int().min(2).max(600).default(5),
  /** Where the node keeps job logs and its own images (default: <imageDir>/fleet). */
  workDir: z.string().min(1).optional(),
  /** Also run a scheduler replica in this daemon (leader-elected with the others). */
  scheduler: z.boolean().default(false),
  /**
   * Run fleet members (job programs) as this OS user and group, not as the daemon's user (root).
   * Needs gpunixd to run as root (refused at start otherwise); production nodes should set it.
   */
  runAs: z
    .strictObject({ uid: z.number().int().min(0), gid: z.number().int().min(0) })
    .refine(() => typeof process.getuid !== 'function' || process.getuid() === 0, { message: 'needs gpunixd to run as root (it starts the members as that user)' })
    .optional(),
  /**
   * Where tenants' fleet data lives: a tenant submitting through this daemon may give a job
   * `image` or `checkpoint.dir` only as an absolute path under <tenantDataRoot>/<tenant>/.
   * Absent: tenants may not give them through a daemon at all (the admin and --etcd operators may).
   */
  tenantDataRoot: z.string().min(1).refine((p) => p.startsWith('/'), 'must be an absolute path').optional(),
});
export type FleetConfigInput = z.input<typeof fleetConfigSchema>;
export type FleetConfig = z.output<typeof fleetConfigSchema>;

/** Parses `raw` with `schema`; GPUNIX_E_BAD_JOB naming each bad field when it does not fit. */
export function parseSpec<T extends z.ZodTypeAny>(schema: T, raw: unknown, what: string): z.output<T> {
  const result = schema.safeParse(raw);
  if (!result.success) throw new GpunixError(ErrorCodes.BAD_JOB, `${what}: ${describeIssues(result.error.issues)}`);
  return result.data;
}

export const parseJobSpec = (raw: unknown): JobSpec => parseSpec(jobSpecSchema, raw, 'job spec');
export const parseQueueSpec = (raw: unknown): QueueSpec => parseSpec(queueSpecSchema, raw, 'queue spec');
