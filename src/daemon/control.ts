// The operators' messages (ListProcesses ... DaemonStatus): each checks what the caller may see and
// do, then calls the kernel. A tenant sees and acts on its own processes only: another tenant's
// pid is refused with GPUNIX_E_FORBIDDEN (a pid that does not exist: GPUNIX_E_NO_SUCH_PROCESS), and
// nothing about a foreign process (name, tenant, state) is ever in a reply. The admin sees all.

import { accessSync, constants as fsConstants, lstatSync, mkdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { z } from 'zod';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { FleetClient } from '../fleet/client.js';
import type { JobPhase } from '../fleet/records.js';
import type { JobSpecInput, QueueSpecInput } from '../fleet/spec.js';
import type { Kernel } from '../kernel/kernel.js';
import { checkPathLength, MAX_IMAGE_NAME_BYTES, MAX_PATH_COMPONENT_BYTES, pathError, quotePath } from '../kernel/imagePaths.js';
import type { ProcessRecord } from '../kernel/proc.js';
import type { ChromeTrace } from '../kernel/trace.js';
import { PRIORITY_CLASSES } from '../params.js';
import type { Message, MessageName } from '../protocol/messages.js';
import { describeIssues } from './config.js';
import type { LogFn } from './log.js';
import { checkQuota, Principal, TenantStore } from './tenants.js';
import type { MigrationsIn } from './migrationIn.js';
import type { SegmentHomes } from './segmentHome.js';
import type { LentHostMemory } from './lentHostMemory.js';
import { MigrateOutOptions, MigrateOutResult, NodeAddress, parseAddress } from './migrationOut.js';

export interface SessionCounts {
  process: number;
  control: number;
  handshaking: number;
}

/** What the control handlers need from the daemon. */
export interface ControlContext {
  kernel: Kernel;
  tenants: TenantStore;
  principal: Principal;
  imageDir: string;
  startedAt: number;
  sessions(): SessionCounts;
  /** A tenant was removed: the daemon ends that tenant's remaining sessions. */
  tenantRemoved(name: string): void;
  /** Sends a Progress message for request `req` on the caller's session (absent: progress is not reported). */
  progress?(req: number, what: string, done: number, total: number): void;
  /** The daemon's log, for the audit lines of operator actions (absent: none written). */
  log?: LogFn;
  /** The caller's session id and transport (`unix`, `tls`, `tcp`), for the audit lines. */
  session?: number;
  transport?: string;
  /** The fleet, when the daemon is a fleet node (its config has a `fleet` section); absent: fleet messages are FLEET_UNAVAILABLE. */
  fleet?: FleetClient;
  /** Processes moving in from other nodes (the peer messages MigrateIn..MigrateAbort); absent: refused. */
  migrationsIn?: MigrationsIn;
  /** Moves a connected program's process to another node; absent: refused. */
  moveProcess?: (pid: number, options: MigrateOutOptions) => Promise<MigrateOutResult>;
  /** The admin token presented to other nodes (config migration.peerToken), or null. */
  peerToken?: string | null;
  /** Where another node listens, by name (configured peers, else the fleet's records); null if unknown. */
  resolveNode?: (name: string) => Promise<NodeAddress | null>;
  /** Host memory lent to other nodes (HostStore, HostFetch, HostDrop); absent: refused. */
  lentHostMemory?: LentHostMemory;
  /** Segments homed here, as other nodes reach them (SegmentOpen..SegmentClose); absent: refused. */
  segmentHomes?: SegmentHomes;
}

/** A control result that travels as ReplyData: `result` and its bytes. */
export class ResultWithData {
  constructor(
    readonly result: unknown,
    readonly data: Uint8Array,
  ) {}
}

function lent(ctx: ControlContext): LentHostMemory {
  requireAdmin(ctx, 'keeping another node\'s evicted contents');
  if (!ctx.lentHostMemory || ctx.session === undefined) throw new GpunixError(ErrorCodes.UNSUPPORTED, 'this daemon lends no host memory');
  return ctx.lentHostMemory;
}

function segmentHomes(ctx: ControlContext): SegmentHomes {
  requireAdmin(ctx, 'serving a shared segment to another node');
  if (!ctx.segmentHomes || ctx.session === undefined) throw new GpunixError(ErrorCodes.UNSUPPORTED, 'this daemon serves no segments to other nodes');
  return ctx.segmentHomes;
}

const moveOptionsSchema = z.strictObject({
  to: z.string().min(1).max(4096).optional(),
  node: z.string().min(1).max(253).optional(),
  token: z.string().min(1).max(4096).optional(),
  timeoutMs: z.number().positive().max(3_600_000).nullable().optional(),
  rounds: z.number().int().min(0).max(64).optional(),
});

/** MigrateProcess to another node: where (an address, or a fleet node's), with which token. */
async function moveToNode(ctx: ControlContext, req: number, pid: number, raw: unknown): Promise<MigrateOutResult> {
  requireAdmin(ctx, 'moving a process to another node');
  const parsed = moveOptionsSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `migrate: ${describeIssues(parsed.error.issues)}`);
  const options = parsed.data;
  if ((options.to === undefined) === (options.node === undefined)) throw new GpunixError(ErrorCodes.BAD_OPTION, 'migrate: give exactly one of `to` (a daemon address) or `node` (a fleet node), or a `device` of this node');
  if (!ctx.moveProcess) throw new GpunixError(ErrorCodes.UNSUPPORTED, 'this daemon cannot move processes to other nodes');
  let address: NodeAddress;
  if (options.node !== undefined) {
    const found = ctx.resolveNode ? await ctx.resolveNode(options.node) : null;
    if (!found) throw new GpunixError(ErrorCodes.BAD_OPTION, `migrate: this daemon knows no node ${JSON.stringify(options.node)} (its configuration's peers, or the fleet's live nodes); give --to ADDRESS instead`);
    address = found;
  } else {
    address = parseAddress(options.to!);
  }
  const token = options.token ?? ctx.peerToken ?? null;
  if (token === null) throw new GpunixError(ErrorCodes.BAD_OPTION, 'migrate: no token for the target daemon: give `token` (its admin token) or set migration.peerToken in this daemon\'s configuration');
  return ctx.moveProcess(pid, {
    address,
    token,
    node: options.node,
    timeoutMs: options.timeoutMs ?? undefined,
    rounds: options.rounds,
    onProgress: progressReporter(ctx, req, 'bytes sent'),
  });
}

function migrations(ctx: ControlContext): MigrationsIn {
  requireAdmin(ctx, 'moving a process in from another node');
  if (!ctx.migrationsIn || ctx.session === undefined) throw new GpunixError(ErrorCodes.UNSUPPORTED, 'this daemon takes no processes from other nodes');
  return ctx.migrationsIn;
}

/** The most of a request's arguments an audit line shows (JSON characters): a client chooses them. */
const MAX_AUDIT_ARGS_CHARS = 1024;

/** `args` as they are, or, when a client made them long, their JSON cut short (as a string). */
function boundedArgs(args: Record<string, unknown>): unknown {
  const json = JSON.stringify(args) ?? '';
  return json.length <= MAX_AUDIT_ARGS_CHARS ? args : `${json.slice(0, MAX_AUDIT_ARGS_CHARS)}... (${json.length} characters)`;
}

/** The operator actions that change something, audited one line each, by their CLI verb. */
const AUDITED: Partial<Record<MessageName, string>> = {
  KillProcess: 'kill',
  SuspendProcess: 'suspend',
  ResumeProcess: 'resume',
  ReniceProcess: 'renice',
  CheckpointProcess: 'checkpoint',
  MigrateProcess: 'migrate',
  AddTenant: 'tenants add',
  UpdateTenant: 'tenants set',
  RemoveTenant: 'tenants remove',
  SubmitJob: 'submit',
  CancelJob: 'job cancel',
  SetQueue: 'queue set',
  RemoveQueue: 'queue remove',
};

/**
 * Answers one control message (see dispatchControl) and writes the audit line of an operator
 * action: who (admin or tenant, session, transport), what (the verb and its arguments), on which
 * process or tenant, and the result (`ok` or the error code). Tokens are never in it.
 */
export async function handleControl(ctx: ControlContext, message: Message): Promise<unknown> {
  const action = AUDITED[message.name];
  if (!action || !ctx.log) return dispatchControl(ctx, message);
  const { req: _req, ...args } = message.payload as Record<string, unknown>;
  // Tokens are never in an audit line (a move's token for the other node included).
  const options = args.options as Record<string, unknown> | null | undefined;
  if (options && typeof options === 'object' && 'token' in options) args.options = { ...options, token: '(hidden)' };
  const fields: Record<string, unknown> = {
    audit: action,
    actor: ctx.principal.admin ? 'admin' : 'tenant',
    tenant: ctx.principal.tenant,
    session: ctx.session,
    transport: ctx.transport,
  };
  if (typeof args.pid === 'number') {
    // The target as it was before the action (a kill may take it out of the table).
    const target = ctx.kernel.ps().find((p) => p.pid === args.pid);
    fields.gpid = args.pid;
    if (target) Object.assign(fields, { targetTenant: target.tenant, targetName: target.name });
    delete args.pid;
  }
  if (typeof args.name === 'string' && action.startsWith('tenants')) {
    fields.targetTenant = args.name;
    delete args.name;
  }
  if (typeof args.id === 'string' && message.name === 'CancelJob') {
    fields.job = args.id;
    delete args.id;
  }
  fields.args = boundedArgs(args);
  const log = ctx.log;
  try {
    const result = await dispatchControl(ctx, message);
    // A submitted job's id is known only now.
    if (message.name === 'SubmitJob') fields.job = (result as { id?: string } | null)?.id;
    log('info', `audit: ${action}`, { ...fields, result: 'ok' });
    return result;
  } catch (error) {
    const code = error instanceof GpunixError ? error.code : 'internal';
    log('warn', `audit: ${action}`, { ...fields, result: code, error: error instanceof Error ? error.message : String(error) });
    throw error;
  }
}

const operationOptionsSchema = z.strictObject({ timeoutMs: z.number().positive().finite().optional() });

/** The options of a checkpoint or migration request ({timeoutMs?}; null: the defaults). */
function operationOptions(what: string, raw: unknown): { timeoutMs?: number } {
  const options = operationOptionsSchema.safeParse(raw ?? {});
  if (!options.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `${what}: ${describeIssues(options.error.issues)}`);
  return options.data;
}

/** Least time between two Progress messages of one request (ms): the first and the last always go. */
const PROGRESS_INTERVAL_MS = 100;

/** A progress callback that reports through `ctx` at most every PROGRESS_INTERVAL_MS, plus the first and last. */
function progressReporter(ctx: ControlContext, req: number, what: string): (done: number, total: number) => void {
  let last = -Infinity;
  return (done, total) => {
    const now = Date.now();
    if (done !== 0 && done < total && now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    ctx.progress?.(req, what, done, total);
  };
}

function forbidden(message: string): GpunixError {
  return new GpunixError(ErrorCodes.FORBIDDEN, message);
}

function requireAdmin(ctx: ControlContext, what: string): void {
  if (!ctx.principal.admin) throw forbidden(`${what} needs the admin token`);
}

/** The processes the caller may see. */
export function visibleProcesses(ctx: { kernel: Kernel; principal: Principal }): ProcessRecord[] {
  const all = ctx.kernel.ps();
  return ctx.principal.admin ? all : all.filter((p) => p.tenant === ctx.principal.tenant);
}

/** The record of `pid` if the caller may act on it; FORBIDDEN for another tenant's, NO_SUCH_PROCESS if none. */
function ownProcess(ctx: ControlContext, pid: number): ProcessRecord {
  const record = ctx.kernel.ps().find((p) => p.pid === pid);
  if (!record) throw new GpunixError(ErrorCodes.NO_SUCH_PROCESS, `no process with pid ${pid}`);
  if (!ctx.principal.admin && record.tenant !== ctx.principal.tenant) {
    throw forbidden(`pid ${pid} is not a process of tenant ${ctx.principal.tenant}`);
  }
  return record;
}

/**
 * Where a checkpoint image named `path` lives on the daemon's machine. A tenant names a file
 * inside its own directory, `<imageDir>/<tenant>/`, never outside it (the daemon would otherwise
 * read and write any file it can, for anyone); the admin may give any absolute path, and relative
 * ones are inside imageDir.
 */
export function imagePath(principal: Principal, imageDir: string, path: string): string {
  if (typeof path !== 'string' || path === '') throw new GpunixError(ErrorCodes.BAD_OPTION, 'an image path is required');
  if (path.includes('\0')) throw new GpunixError(ErrorCodes.BAD_OPTION, 'an image path cannot contain a NUL character');
  // A name over 255 bytes is refused here, coded, not as the filesystem's ENAMETOOLONG.
  checkPathLength(path, 'use the image path');
  if (principal.admin) {
    // Normalized: a `..` must not make a path outside imageDir look inside it (prepareImageDirectory).
    const full = resolve(imageDir, path);
    checkPathLength(full, 'use the image path');
    return full;
  }
  const root = resolve(imageDir);
  const base = resolve(root, principal.tenant);
  // A tenant name such as ".." would make the tenant's directory the image directory's parent.
  if (dirname(base) !== root) throw forbidden(`tenant ${JSON.stringify(principal.tenant)} has no image directory of its own`);
  const inside = normalize(path);
  if (isAbsolute(path) || inside.split(/[\\/]/).includes('..')) {
    throw forbidden(`a tenant's image path is a name inside its image directory (like job.img or runs/job.img), not ${JSON.stringify(path.slice(0, 200))}`);
  }
  const full = join(base, inside);
  if (!full.startsWith(base + sep)) throw forbidden(`image path ${JSON.stringify(path.slice(0, 200))} leaves the tenant's image directory`);
  checkPathLength(full, 'use the image path');
  // Nor through a symbolic link: what already exists of the path must resolve inside the directory.
  // (lstat: a dangling link is there too, and would be written through.)
  const present = (p: string) => {
    try {
      return lstatSync(p, { throwIfNoEntry: false }) !== undefined;
    } catch (error) {
      throw pathError(error, 'use the image path', path); // ENOTDIR, EACCES, ...: coded, one line
    }
  };
  if (present(base)) {
    let existing = full;
    while (!present(existing)) existing = dirname(existing);
    const realBase = realpathSync(base);
    let real: string | null;
    try {
      real = realpathSync(existing);
    } catch {
      real = null; // a dangling link
    }
    if (real === null || (real !== realBase && !real.startsWith(realBase + sep))) {
      throw forbidden(`image path ${JSON.stringify(path.slice(0, 200))} leaves the tenant's image directory (through a symbolic link)`);
    }
  }
  return full;
}

/**
 * Makes sure the directory an image is to be written in exists, creating it only inside the
 * daemon's image directory (a tenant's `runs/` under `<imageDir>/<tenant>/`); an admin's path
 * elsewhere must name an existing directory. Filesystem errors are GPUNIX_E_BAD_PATH.
 */
export function prepareImageDirectory(imageDir: string, path: string): void {
  const root = resolve(imageDir);
  const dir = resolve(dirname(path));
  // The image is written to `<name>.tmp-<pid>-<12 hex>` first: that name must fit too.
  const name = basename(path);
  if (Buffer.byteLength(name, 'utf8') > MAX_IMAGE_NAME_BYTES) {
    throw new GpunixError(ErrorCodes.BAD_PATH, `cannot write the image ${quotePath(path)}: its file name is ${Buffer.byteLength(name, 'utf8')} bytes, more than the ${MAX_IMAGE_NAME_BYTES} an image's may have (its temporary file adds up to ${MAX_PATH_COMPONENT_BYTES - MAX_IMAGE_NAME_BYTES})`);
  }
  try {
    if (dir === root || dir.startsWith(root + sep)) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } else {
      const stat = statSync(dir, { throwIfNoEntry: false });
      if (stat === undefined) {
        throw new GpunixError(ErrorCodes.BAD_PATH, `cannot write the image ${quotePath(path)}: no such directory ${quotePath(dir)} (gpunixd creates directories only inside its image directory ${quotePath(root)})`);
      }
      if (!stat.isDirectory()) throw new GpunixError(ErrorCodes.BAD_PATH, `cannot write the image ${quotePath(path)}: ${quotePath(dir)} is not a directory`);
    }
    accessSync(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (error) {
    throw pathError(error, 'write the image', path);
  }
}

const reniceSchema = z.strictObject({ priority: z.enum(PRIORITY_CLASSES).optional(), weight: z.number().positive().finite().optional() });

/** The trace, keeping only the events of processes in `pids` (device tracks stay). */
export function filterTrace(trace: ChromeTrace, pids: Set<number>): ChromeTrace {
  return {
    ...trace,
    traceEvents: trace.traceEvents.filter((e) => e.tid === undefined || pids.has(e.tid as number)),
  };
}

function statusOf(ctx: ControlContext): unknown {
  const stats = ctx.kernel.stats();
  const common = { uptimeSeconds: (Date.now() - ctx.startedAt) / 1000, sessions: ctx.sessions(), tenant: ctx.principal.tenant, admin: ctx.principal.admin };
  if (ctx.principal.admin) return { ...common, stats };
  const own = visibleProcesses(ctx);
  const byState = { ready: 0, running: 0, waiting: 0, suspended: 0, exited: 0 };
  for (const p of own) byState[p.state]++;
  const tenant = stats.tenants.filter((t) => t.name === ctx.principal.tenant);
  return {
    ...common,
    stats: {
      processes: { total: own.length, byState },
      tenants: tenant,
      liveObjects: { total: own.reduce((sum, p) => sum + p.liveObjects, 0) },
      bytesAllocated: tenant[0]?.bytes ?? 0,
      devices: stats.devices,
    },
  };
}

const JOB_PHASES = ['pending', 'bound', 'running', 'suspended', 'succeeded', 'failed', 'cancelled'] as const satisfies readonly JobPhase[];
const listJobsSchema = z.array(z.enum(JOB_PHASES)).max(JOB_PHASES.length).nullable();

/** The fleet client, or FLEET_UNAVAILABLE on a daemon that is not a fleet node. */
function fleetOf(ctx: ControlContext): FleetClient {
  if (!ctx.fleet) throw new GpunixError(ErrorCodes.FLEET_UNAVAILABLE, 'this daemon is not a fleet node (no fleet section in its configuration)');
  return ctx.fleet;
}

/** The tenant whose jobs the caller may see and act on: undefined for the admin (all). */
function jobScope(ctx: ControlContext): string | undefined {
  return ctx.principal.admin ? undefined : ctx.principal.tenant;
}

/**
 * The job spec a caller submits: a tenant's is always its own (a spec naming another tenant is
 * FORBIDDEN, none names the caller's); the admin's names any tenant (default its own name).
 */
function submittedSpec(ctx: ControlContext, raw: unknown): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new GpunixError(ErrorCodes.BAD_JOB, 'job spec: must be an object (docs/fleet.md)');
  const spec = { ...(raw as Record<string, unknown>) };
  if (spec.tenant === undefined) spec.tenant = ctx.principal.tenant;
  else if (!ctx.principal.admin && spec.tenant !== ctx.principal.tenant) {
    throw forbidden(`tenant ${ctx.principal.tenant} may submit jobs only as itself, not as ${JSON.stringify(String(spec.tenant).slice(0, 64))}`);
  }
  return spec;
}

/** Answers the fleet's control messages (SubmitJob ... RemoveQueue) with the daemon's fleet client. */
async function dispatchFleet(ctx: ControlContext, message: Message): Promise<unknown> {
  const fleet = fleetOf(ctx);
  const scope = jobScope(ctx);
  switch (message.name) {
    case 'SubmitJob':
      // The schema (in submit) checks every field: BAD_JOB naming the one that does not fit; a
      // tenant's job also meets the tenant rules (paths under its data root, the queue's tenants
      // and maxPriority): FORBIDDEN naming the rule.
      return fleet.submit(submittedSpec(ctx, message.payload.spec) as JobSpecInput, { asTenant: scope });
    case 'ListJobs': {
      const phase = listJobsSchema.safeParse(message.payload.phase ?? null);
      if (!phase.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `phase: ${describeIssues(phase.error.issues)}`);
      return { jobs: await fleet.jobs({ tenant: scope, phase: phase.data ?? undefined }) };
    }
    case 'ShowJob': {
      const job = await fleet.job(message.payload.id, scope);
      return { job, members: await fleet.members(job.id) };
    }
    case 'CancelJob':
      return fleet.cancel(message.payload.id, scope);
    case 'ListNodes':
      return { nodes: await fleet.nodeReport() };
    case 'ListQueues':
      // A tenant sees the queues' specs and totals, not whose jobs make them up.
      return { queues: await fleet.queueReport() };
    case 'SetQueue':
      requireAdmin(ctx, 'setting a queue');
      return fleet.setQueue(message.payload.spec as QueueSpecInput);
    case 'RemoveQueue':
      requireAdmin(ctx, 'removing a queue');
      await fleet.removeQueue(message.payload.name);
      return { name: message.payload.name, removed: true };
    default:
      throw new GpunixError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `${message.name} is not a fleet message`);
  }
}

/**
 * Answers one control message: resolves with the Reply's result, or rejects with a GpunixError
 * for a Failure. Never called with process-session messages.
 */
async function dispatchControl(ctx: ControlContext, message: Message): Promise<unknown> {
  const { kernel } = ctx;
  switch (message.name) {
    case 'Ping':
      return null;
    case 'ListProcesses':
      // Each record with the devices the process is on now (`gpunix ps`'s DEVICE column).
      return { processes: visibleProcesses(ctx).map((p) => ({ ...p, devices: kernel.devicesOf(p.pid) })) };
    case 'KillProcess':
      ownProcess(ctx, message.payload.pid);
      return kernel.kill(message.payload.pid);
    case 'SuspendProcess':
      ownProcess(ctx, message.payload.pid);
      return message.payload.swap
        ? kernel.swapOut(message.payload.pid, { onProgress: progressReporter(ctx, message.payload.req, 'bytes swapped out') })
        : kernel.suspend(message.payload.pid);
    case 'ResumeProcess':
      ownProcess(ctx, message.payload.pid);
      return kernel.resume(message.payload.pid);
    case 'ReniceProcess': {
      ownProcess(ctx, message.payload.pid);
      const options = reniceSchema.safeParse(message.payload.options ?? {});
      if (!options.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `renice: ${describeIssues(options.error.issues)}`);
      // The tenant's allowed priority classes are the kernel's to enforce (GPUNIX_E_QUOTA).
      return kernel.renice(message.payload.pid, options.data);
    }
    case 'ListDevices': {
      const stats = kernel.stats().devices;
      return { devices: kernel.describeDevices().map((d, i) => ({ ...d, ...stats[i] })) };
    }
    case 'MemoryReport': {
      const stats = kernel.stats();
      return {
        devices: stats.devices.map((d) => ({ id: d.id, budgetBytes: d.budgetBytes, usedBytes: d.usedBytes, evictedBytes: d.evictedBytes })),
        processes: visibleProcesses(ctx).map((p) => ({
          pid: p.pid,
          name: p.name,
          tenant: p.tenant,
          state: p.state,
          memoryLimit: p.memoryLimit,
          bytesAllocated: p.accounting.bytesAllocated,
          residentBytes: p.accounting.residentBytes,
          evictedBytes: p.accounting.evictedBytes,
          peakBytesAllocated: p.accounting.peakBytesAllocated,
          evictions: p.accounting.evictions,
          restores: p.accounting.restores,
        })),
        swap: ctx.principal.admin ? stats.swap : null,
      };
    }
    case 'GetTrace': {
      const pid = message.payload.pid;
      if (pid !== 0) {
        ownProcess(ctx, pid);
        return filterTrace(kernel.trace(), new Set([pid]));
      }
      if (ctx.principal.admin) return kernel.trace();
      return filterTrace(kernel.trace(), new Set(visibleProcesses(ctx).map((p) => p.pid)));
    }
    case 'CheckpointProcess': {
      ownProcess(ctx, message.payload.pid);
      const path = imagePath(ctx.principal, ctx.imageDir, message.payload.path);
      prepareImageDirectory(ctx.imageDir, path);
      const options = operationOptions('checkpoint', message.payload.options);
      const written = await kernel.checkpoint(message.payload.pid, path, { ...options, onProgress: progressReporter(ctx, message.payload.req, 'bytes written') });
      return { path, ...written };
    }
    case 'MigrateProcess': {
      if (message.payload.device === '') return moveToNode(ctx, message.payload.req, message.payload.pid, message.payload.options);
      ownProcess(ctx, message.payload.pid);
      const options = operationOptions('migrate', message.payload.options);
      const before = kernel.devicesOf(message.payload.pid);
      const record = await kernel.migrate(message.payload.pid, message.payload.device, options);
      // `moved`: false when the process was on no device, or on the target already.
      return { ...record, devices: kernel.devicesOf(message.payload.pid), moved: before.some((id) => id !== message.payload.device) };
    }
    case 'MigrateIn':
      return migrations(ctx).begin(ctx.session!, message.payload);
    case 'MigrateData':
      return migrations(ctx).data(ctx.session!, message.payload);
    case 'MigrateCommit':
      return migrations(ctx).commit(ctx.session!, message.payload);
    case 'MigrateAbort':
      return migrations(ctx).abort(ctx.session!, message.payload);
    case 'HostStore':
      return lent(ctx).store(ctx.session!, message.payload.data);
    case 'HostFetch':
      return new ResultWithData(null, lent(ctx).fetch(ctx.session!, message.payload.key));
    case 'HostDrop':
      return lent(ctx).drop(ctx.session!, message.payload.keys);
    case 'SegmentOpen':
      return segmentHomes(ctx).open(ctx.session!, message.payload.tenant, message.payload.name, message.payload.size);
    case 'SegmentPull': {
      const { result, data } = await segmentHomes(ctx).pull(ctx.session!, message.payload.segment);
      return new ResultWithData(result, data);
    }
    case 'SegmentPush':
      return segmentHomes(ctx).push(ctx.session!, message.payload.segment, message.payload.runs, message.payload.data);
    case 'SegmentClose':
      return segmentHomes(ctx).close(ctx.session!, message.payload.segment);
    case 'ListTenants':
      return { tenants: (ctx.principal.admin ? kernel.tenants() : kernel.tenants().filter((t) => t.name === ctx.principal.tenant)).map((t) => ctx.tenants.withObjects(t)) };
    case 'AddTenant': {
      requireAdmin(ctx, 'adding a tenant');
      // fleet.* tenants belong to the node's fleet agent (one per job, src/fleet/nodeAgent.ts).
      if (typeof message.payload.name === 'string' && message.payload.name.startsWith('fleet.')) throw new GpunixError(ErrorCodes.BAD_OPTION, `tenant names starting with "fleet." are reserved for the fleet node's job tenants; got ${JSON.stringify(message.payload.name)}`);
      const { tenant, token } = ctx.tenants.add(message.payload.name, checkQuota(message.payload.quota, message.payload.name));
      return { ...tenant, token };
    }
    case 'UpdateTenant': {
      requireAdmin(ctx, 'changing a tenant');
      const { tenant, token } = ctx.tenants.update(message.payload.name, checkQuota(message.payload.quota, message.payload.name), message.payload.rotateToken);
      return token === undefined ? tenant : { ...tenant, token };
    }
    case 'RemoveTenant':
      requireAdmin(ctx, 'removing a tenant');
      await ctx.tenants.remove(message.payload.name);
      ctx.tenantRemoved(message.payload.name);
      return { name: message.payload.name, removed: true };
    case 'DaemonStatus':
      return statusOf(ctx);
    case 'SubmitJob':
    case 'ListJobs':
    case 'ShowJob':
    case 'CancelJob':
    case 'ListNodes':
    case 'ListQueues':
    case 'SetQueue':
    case 'RemoveQueue':
      return dispatchFleet(ctx, message);
    default:
      throw new GpunixError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `${message.name} is not a control message`);
  }
}
