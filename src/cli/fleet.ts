// The fleet's commands: submit, jobs, job show/cancel, nodes, queues, queue set/remove, scheduler.
// Each talks to the fleet one of two ways: straight to etcd with --etcd (an operator holding etcd
// credentials: full rights), or through a gpunixd that is a fleet node (--socket/--url/--token, as
// the operator commands: a tenant sees and submits only its own jobs). Documented in docs/cli.md.

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ErrorCodes, GpunixError } from '../errors.js';
import { FleetClient, MemberStatusEntry, NodeReport, QueueReport } from '../fleet/client.js';
import type { JobPhase, JobRecord } from '../fleet/records.js';
import type { JobSpecInput, QueueSpec, QueueSpecInput } from '../fleet/spec.js';
import { FleetScheduler, SchedulerLog } from '../fleet/scheduler.js';
import { FleetStore } from '../fleet/store.js';
import { PRIORITY_CLASSES } from '../params.js';
import { Column, formatBytes, formatNs, renderRows, table, TableFormat } from './format.js';
import { ConnectionFlags, connectionOptions, formatOptions, printRows, withControl } from './operator.js';

/** Where `--etcd` is taken from when not given, and the password of `--etcd-user`. */
export const ETCD_ENDPOINTS_ENV = 'GPUNIX_ETCD_ENDPOINTS';
export const ETCD_PASSWORD_ENV = 'GPUNIX_ETCD_PASSWORD';

const JOB_PHASES: JobPhase[] = ['pending', 'bound', 'running', 'suspended', 'succeeded', 'failed', 'cancelled'];

export interface FleetFlags extends ConnectionFlags, TableFormat {
  etcd?: string;
  etcdUser?: string;
  etcdPrefix?: string;
}

/** What the commands ask of the fleet, the same whichever way they reach it. */
interface FleetApi {
  submit(spec: JobSpecInput | Record<string, unknown>): Promise<JobRecord>;
  jobs(phase?: JobPhase[]): Promise<JobRecord[]>;
  show(id: string): Promise<{ job: JobRecord; members: MemberStatusEntry[] }>;
  cancel(id: string): Promise<JobRecord>;
  nodes(): Promise<NodeReport[]>;
  queues(): Promise<QueueReport[]>;
  setQueue(spec: QueueSpecInput): Promise<QueueSpec>;
  removeQueue(name: string): Promise<void>;
}

/**
 * The etcd endpoints --etcd names, else $GPUNIX_ETCD_ENDPOINTS unless --socket or --url picks a
 * daemon; none: the commands go through the daemon.
 */
function etcdEndpoints(flags: FleetFlags): string[] | null {
  const raw = flags.etcd ?? (flags.socket || flags.url ? undefined : process.env[ETCD_ENDPOINTS_ENV]);
  if (raw === undefined || raw.trim() === '') return null;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

/** Connects to etcd straight, as --etcd, --etcd-user ($GPUNIX_ETCD_PASSWORD) and --etcd-prefix say. */
async function connectStore(flags: FleetFlags, endpoints: string[]): Promise<FleetStore> {
  const password = process.env[ETCD_PASSWORD_ENV];
  if (flags.etcdUser && !password) throw new GpunixError(ErrorCodes.BAD_OPTION, `--etcd-user ${flags.etcdUser} needs the password in $${ETCD_PASSWORD_ENV}`);
  return FleetStore.connect({
    endpoints,
    ...(flags.etcdUser ? { username: flags.etcdUser, password } : {}),
    ...(flags.etcdPrefix ? { prefix: flags.etcdPrefix } : {}),
  });
}

/** Runs `fn` against the fleet: over etcd with --etcd ($GPUNIX_ETCD_ENDPOINTS), else through the daemon. */
async function withFleet<T>(flags: FleetFlags, fn: (api: FleetApi, direct: boolean) => Promise<T>): Promise<T> {
  const endpoints = etcdEndpoints(flags);
  if (endpoints) {
    const store = await connectStore(flags, endpoints);
    const client = new FleetClient(store);
    try {
      return await fn(
        {
          submit: (spec) => client.submit(spec as JobSpecInput),
          jobs: (phase) => client.jobs({ phase }),
          show: async (id) => ({ job: await client.job(id), members: await client.members(id) }),
          cancel: (id) => client.cancel(id),
          nodes: () => client.nodeReport(),
          queues: () => client.queueReport(),
          setQueue: (spec) => client.setQueue(spec),
          removeQueue: (name) => client.removeQueue(name),
        },
        true,
      );
    } finally {
      store.close();
    }
  }
  return withControl(flags, (session) =>
    fn(
      {
        submit: async (spec) => (await session.call('SubmitJob', { spec })) as JobRecord,
        jobs: async (phase) => ((await session.call('ListJobs', { phase: phase ?? null })) as { jobs: JobRecord[] }).jobs,
        show: async (id) => (await session.call('ShowJob', { id })) as { job: JobRecord; members: MemberStatusEntry[] },
        cancel: async (id) => (await session.call('CancelJob', { id })) as JobRecord,
        nodes: async () => ((await session.call('ListNodes', {})) as { nodes: NodeReport[] }).nodes,
        queues: async () => ((await session.call('ListQueues', {})) as { queues: QueueReport[] }).queues,
        setQueue: async (spec) => (await session.call('SetQueue', { spec })) as QueueSpec,
        removeQueue: async (name) => void (await session.call('RemoveQueue', { name })),
      },
      false,
    ),
  );
}

/** Adds the daemon's connection flags (connectionOptions) and the etcd ones (etcdOptions). */
function fleetOptions(command: Command): Command {
  return etcdOptions(connectionOptions(command));
}

/** Adds --etcd, --etcd-user and --etcd-prefix. */
function etcdOptions(command: Command): Command {
  return command
    .option('--etcd <endpoints>', `talk to the fleet's etcd straight (comma-separated endpoints, e.g. 127.0.0.1:2379; default $${ETCD_ENDPOINTS_ENV}) instead of through the daemon`)
    .option('--etcd-user <name>', `etcd user (its password in $${ETCD_PASSWORD_ENV})`)
    .option('--etcd-prefix <prefix>', 'the fleet\'s key prefix in etcd (default /gpunix/)');
}

function print(flags: { json?: boolean }, result: unknown, text: () => string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : `${text()}\n`);
}

function parseNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got ${value}`);
  return n;
}

function parseLimit(value: string): number | 'none' {
  return value === 'none' ? 'none' : parseNumber(value);
}

/** `--node-selector zone=a` (repeatable, or comma-separated): label key → value. */
function parseSelector(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const selector = { ...(previous ?? {}) };
  for (const pair of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new InvalidArgumentError(`expected key=value, got ${JSON.stringify(pair)}`);
    selector[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return selector;
}

function parsePhases(value: string, previous: JobPhase[] | undefined): JobPhase[] {
  const phases = value.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = phases.filter((p) => !JOB_PHASES.includes(p as JobPhase));
  if (phases.length === 0 || bad.length > 0) throw new InvalidArgumentError(`expected phases (comma-separated) of ${JOB_PHASES.join(', ')}, got ${value}`);
  return [...(previous ?? []), ...(phases as JobPhase[])];
}

interface SubmitFlags extends FleetFlags {
  spec?: string;
  name?: string;
  tenant?: string;
  queue?: string;
  priority?: number;
  class?: string;
  gang?: number;
  share?: number;
  memory?: string;
  sameNode?: boolean;
  sameLabel?: string;
  spread?: boolean;
  nodeSelector?: Record<string, string>;
  image?: string;
  checkpointEvery?: number;
  checkpointDir?: string;
  preemptible?: boolean;
  restartable?: boolean;
  movable?: boolean;
}

/** Reads a --spec file: a JSON job spec (BAD_PATH unreadable, BAD_JOB not JSON or not an object). */
function readSpecFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new GpunixError(ErrorCodes.BAD_PATH, `cannot read the job spec ${JSON.stringify(path)}: ${(error as Error).message}`);
  }
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch (error) {
    throw new GpunixError(ErrorCodes.BAD_JOB, `job spec ${JSON.stringify(path)} is not JSON: ${(error as Error).message}`);
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new GpunixError(ErrorCodes.BAD_JOB, `job spec ${JSON.stringify(path)}: must be a JSON object`);
  return spec as Record<string, unknown>;
}

/**
 * The job spec `gpunix submit` sends: the --spec file's (its relative paths taken from the file's
 * directory), with the flags given on top. Paths become absolute: the nodes read them, from
 * wherever they run. Left to the spec's schema to check (BAD_JOB naming the field).
 */
export function submitSpec(program: string | undefined, args: string[], flags: SubmitFlags, cwd = process.cwd()): Record<string, unknown> {
  const spec: Record<string, unknown> = flags.spec ? readSpecFile(flags.spec) : {};
  const specDir = flags.spec ? dirname(resolve(cwd, flags.spec)) : cwd;
  const absolute = (value: unknown, base: string) => (typeof value === 'string' && value !== '' && !isAbsolute(value) ? resolve(base, value) : value);
  spec.program = absolute(spec.program, specDir);
  spec.image = absolute(spec.image, specDir);
  if (typeof spec.checkpoint === 'object' && spec.checkpoint !== null) {
    const checkpoint = spec.checkpoint as Record<string, unknown>;
    spec.checkpoint = { ...checkpoint, dir: absolute(checkpoint.dir, specDir) };
  }
  if (program !== undefined) {
    spec.program = resolve(cwd, program);
    spec.args = args;
  } else if (args.length > 0) spec.args = args;
  if (spec.program === undefined) throw new GpunixError(ErrorCodes.BAD_JOB, 'job spec: program: required (gpunix submit <program> [args...], or "program" in --spec)');
  const set = (key: string, value: unknown) => {
    if (value !== undefined) spec[key] = value;
  };
  set('name', flags.name);
  set('tenant', flags.tenant);
  set('queue', flags.queue);
  set('priority', flags.priority);
  set('class', flags.class);
  set('gang', flags.gang);
  set('share', flags.share);
  set('memory', flags.memory);
  set('image', flags.image === undefined ? undefined : resolve(cwd, flags.image));
  // commander's --not-x flags are `x: false` when given, absent otherwise.
  if (flags.preemptible === false) spec.preemptible = false;
  if (flags.restartable === false) spec.restartable = false;
  if (flags.movable === false) spec.movable = false;
  const placementFlags = flags.sameNode || flags.sameLabel !== undefined || flags.spread || flags.nodeSelector !== undefined;
  if (placementFlags) {
    const placement = typeof spec.placement === 'object' && spec.placement !== null ? { ...(spec.placement as Record<string, unknown>) } : {};
    if (flags.sameNode) placement.sameNode = true;
    if (flags.sameLabel !== undefined) placement.sameLabel = flags.sameLabel;
    if (flags.spread) placement.spread = true;
    if (flags.nodeSelector !== undefined) placement.nodeSelector = { ...((placement.nodeSelector as Record<string, string>) ?? {}), ...flags.nodeSelector };
    spec.placement = placement;
  }
  if ((flags.checkpointEvery === undefined) !== (flags.checkpointDir === undefined)) {
    throw new GpunixError(ErrorCodes.BAD_JOB, 'job spec: checkpoint: --checkpoint-every and --checkpoint-dir go together');
  }
  if (flags.checkpointEvery !== undefined) spec.checkpoint = { intervalMs: flags.checkpointEvery, dir: resolve(cwd, flags.checkpointDir!) };
  for (const key of Object.keys(spec)) if (spec[key] === undefined) delete spec[key];
  return spec;
}

/** "12s", "5m", "3h", "2d": how long ago `at` was. */
export function formatAge(at: number, now = Date.now()): string {
  const seconds = Math.max(0, Math.floor((now - at) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

/** Why a job is where it is, for people: its message, or that a cancel was asked for. */
function jobMessage(job: JobRecord): string {
  if (job.message) return job.message;
  if (job.cancelRequested && !['succeeded', 'failed', 'cancelled'].includes(job.phase)) return 'cancel requested';
  return '-';
}

const jobNodes = (job: JobRecord): string[] => [...new Set(job.placement.map((p) => p.node))];

export const JOB_COLUMNS: Column<JobRecord>[] = [
  { key: 'id', header: 'ID', text: (j) => j.id },
  { key: 'name', header: 'NAME', text: (j) => j.spec.name ?? '-', raw: (j) => j.spec.name ?? null },
  { key: 'tenant', header: 'TENANT', text: (j) => j.spec.tenant },
  { key: 'queue', header: 'QUEUE', text: (j) => j.spec.queue },
  { key: 'priority', header: 'PRIO', text: (j) => j.spec.priority },
  { key: 'phase', header: 'PHASE', text: (j) => j.phase },
  { key: 'gang', header: 'GANG', text: (j) => j.spec.gang },
  { key: 'share', header: 'SHARE', text: (j) => j.spec.share },
  { key: 'memory', header: 'MEMORY', text: (j) => formatBytes(j.spec.memory), raw: (j) => j.spec.memory },
  { key: 'nodes', header: 'NODES', text: (j) => jobNodes(j).join(',') || '-', raw: (j) => jobNodes(j).join(' ') },
  { key: 'age', header: 'AGE', text: (j) => formatAge(j.submittedAt), raw: (j) => new Date(j.submittedAt).toISOString() },
  { key: 'message', header: 'MESSAGE', text: (j) => jobMessage(j) },
];

/** The fleet's capacity of a node, summed over its devices: allocated share of the devices' 1.0 each, memory of their budgets. */
function nodeTotals(node: NodeReport): { share: number; capacity: number; memory: number; budget: number; members: number; measured: number } {
  const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
  return {
    share: sum(node.allocated.map((a) => a.share)),
    capacity: node.devices.length,
    memory: sum(node.allocated.map((a) => a.memory)),
    budget: sum(node.devices.map((d) => d.memoryBudget)),
    members: sum(node.allocated.map((a) => a.members)),
    measured: sum(node.used.map((u) => u.bytes)),
  };
}

const round = (n: number) => Number(n.toFixed(3));

export const NODE_COLUMNS: Column<NodeReport>[] = [
  { key: 'name', header: 'NAME', text: (n) => n.name },
  { key: 'health', header: 'HEALTH', text: (n) => n.health },
  { key: 'labels', header: 'LABELS', text: (n) => Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-', raw: (n) => Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(' ') },
  { key: 'devices', header: 'DEVICES', text: (n) => `${n.devices.length} (${[...new Set(n.devices.map((d) => d.backend))].join(',') || '-'})`, raw: (n) => n.devices.length },
  { key: 'share-free', header: 'SHARE FREE/USED', text: (n) => { const t = nodeTotals(n); return `${round(t.capacity - t.share)}/${round(t.share)}`; }, raw: (n) => round(nodeTotals(n).share) },
  { key: 'memory-free', header: 'MEMORY FREE/USED', text: (n) => { const t = nodeTotals(n); return `${formatBytes(Math.max(0, t.budget - t.memory))}/${formatBytes(t.memory)}`; }, raw: (n) => nodeTotals(n).memory },
  { key: 'measured', header: 'MEASURED', text: (n) => formatBytes(nodeTotals(n).measured), raw: (n) => nodeTotals(n).measured },
  { key: 'members', header: 'MEMBERS', text: (n) => nodeTotals(n).members },
  { key: 'age', header: 'AGE', text: (n) => formatAge(n.startedAt), raw: (n) => new Date(n.startedAt).toISOString() },
];

export const QUEUE_COLUMNS: Column<QueueReport>[] = [
  { key: 'name', header: 'NAME', text: (q) => q.name },
  { key: 'guaranteed', header: 'GUARANTEED', text: (q) => q.guaranteed },
  { key: 'limit', header: 'LIMIT', text: (q) => (q.limit === null ? 'none' : q.limit), raw: (q) => q.limit },
  { key: 'weight', header: 'WEIGHT', text: (q) => q.weight },
  { key: 'used', header: 'USED', text: (q) => round(q.used) },
  { key: 'running', header: 'RUNNING', text: (q) => q.running },
  { key: 'pending', header: 'PENDING', text: (q) => q.pending },
  { key: 'set', header: 'SET', text: (q) => (q.set ? 'yes' : 'no (defaults)'), raw: (q) => (q.set ? 'yes' : 'no') },
];

/** `gpunix job show`'s text: the record's fields, then a table of its members' statuses. */
export function jobText(job: JobRecord, members: MemberStatusEntry[]): string {
  const spec = job.spec;
  const placement = spec.placement;
  const placementText = [
    placement.sameNode && 'same node',
    placement.sameLabel && `same ${placement.sameLabel}`,
    placement.spread && 'spread',
    placement.nodeSelector && Object.keys(placement.nodeSelector).length > 0 && `on ${Object.entries(placement.nodeSelector).map(([k, v]) => `${k}=${v}`).join(',')}`,
  ].filter(Boolean);
  const lines: Array<[string, string]> = [
    ['id', job.id],
    ['name', spec.name ?? '-'],
    ['tenant', spec.tenant],
    ['queue', spec.queue],
    ['priority', `${spec.priority} (class ${spec.class})`],
    ['phase', `${job.phase} (generation ${job.generation})${job.cancelRequested ? ', cancel requested' : ''}`],
    ['gang', `${spec.gang} × share ${spec.share}, ${formatBytes(spec.memory)} each${placementText.length > 0 ? `; ${placementText.join(', ')}` : ''}`],
    ['program', [spec.program, ...spec.args].join(' ')],
    ...(spec.image ? ([['image', spec.image]] as Array<[string, string]>) : []),
    ...(spec.checkpoint ? ([['checkpoint', `every ${spec.checkpoint.intervalMs} ms to ${spec.checkpoint.dir}`]] as Array<[string, string]>) : []),
    ['preemptible', spec.preemptible ? 'yes' : 'no'],
    ['restartable', spec.restartable ? 'yes' : 'no'],
    ['movable', spec.movable === false ? 'no' : 'yes'],
    ['placement', job.placement.length > 0 ? job.placement.map((p, i) => `${i}→${p.node}/${p.device}`).join(' ') : '-'],
    ['submitted', `${new Date(job.submittedAt).toISOString()} (${formatAge(job.submittedAt)} ago)`],
    ...(job.bindLatencyMs !== undefined ? ([['bind latency', `${job.bindLatencyMs} ms`]] as Array<[string, string]>) : []),
    ['restarts', String(job.restarts)],
    ['suspensions', String(job.suspensions)],
    ['message', jobMessage(job)],
  ];
  const width = Math.max(...lines.map(([k]) => k.length)) + 1;
  const head = lines.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}`).join('\n');
  if (members.length === 0) return `${head}\n\nmembers: none reported yet`;
  const rows = members.map((m) => [
    m.member,
    m.node,
    m.generation,
    m.state,
    m.pid ?? '-',
    m.exitCode ?? '-',
    m.gpuTimeMs === undefined ? '-' : formatNs(m.gpuTimeMs * 1e6),
    m.message ?? '-',
  ]);
  return `${head}\n\n${table(['MEMBER', 'NODE', 'GEN', 'STATE', 'PID', 'EXIT', 'GPU TIME', 'MESSAGE'], rows)}`;
}

/**
 * Runs a scheduler replica until SIGINT or SIGTERM (needs etcd straight: a scheduler writes
 * bindings). Its log goes to stderr, one JSON line an event (info and up; --verbose: debug too).
 */
async function schedulerCommand(flags: FleetFlags & { id?: string; leaseTtl?: number; retention?: number; verbose?: boolean }): Promise<void> {
  const endpoints = etcdEndpoints(flags);
  if (!endpoints) throw new GpunixError(ErrorCodes.BAD_OPTION, `gpunix scheduler talks to etcd straight: give --etcd <endpoints> or $${ETCD_ENDPOINTS_ENV}`);
  const store = await connectStore(flags, endpoints);
  const log: SchedulerLog = (level, msg, fields = {}) => {
    if (level === 'debug' && !flags.verbose) return;
    process.stderr.write(`${JSON.stringify({ level, time: Date.now(), msg, ...fields })}\n`);
  };
  // A fault nothing caught leaves the replica in an unknown state: log it and exit non-zero, so
  // that a supervisor restarts it (its lease then expires and another replica leads), rather
  // than run on half-working.
  const fatal = (what: string) => (error: unknown) => {
    log('error', `scheduler replica: ${what}; exiting`, { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    process.exit(70);
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled promise rejection'));
  if (flags.retention !== undefined && !(Number.isFinite(flags.retention) && flags.retention >= 0)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `--retention: must be a number of milliseconds >= 0, got ${flags.retention}`);
  }
  const scheduler = new FleetScheduler(store, { id: flags.id, log, leaseTtlSeconds: flags.leaseTtl, retentionMs: flags.retention });
  await scheduler.start();
  log('info', 'scheduler replica started', { id: scheduler.id, etcd: endpoints.join(','), prefix: store.connection.prefix });
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await scheduler.stop();
  store.close();
}

/** Registers the fleet commands on the `gpunix` program. */
export function registerFleetCommands(program: Command): void {
  fleetOptions(
    program
      .command('submit')
      .description('submit a job to the fleet (a gang of processes running <program>); prints its id')
      .argument('[program]', 'the program each member runs (made absolute: the nodes read it); optional with --spec')
      .argument('[args...]', 'arguments passed to the program')
      .option('--spec <file>', 'a JSON job spec (docs/fleet.md); flags given win over its fields')
      .option('--name <name>', 'a name for people (not unique)')
      .option('--tenant <name>', 'the tenant that owns the job (through the daemon: yours, the default)')
      .option('--queue <path>', 'the queue, e.g. research/vision (default "default")')
      .option('--priority <n>', 'order in its queue and for reclaim, -1000..1000 (default 0)', parseNumber)
      .addOption(new Option('--class <class>', 'the node kernel\'s priority class of its processes (default normal)').choices([...PRIORITY_CLASSES]))
      .option('--gang <n>', 'processes that start together or not at all (default 1)', parseNumber)
      .option('--share <fraction>', 'each member\'s share of one device\'s time, (0, 1] (default 1)', parseNumber)
      .option('--memory <bytes>', 'device memory each member may hold, e.g. 256M (required)')
      .option('--same-node', 'all members on one node')
      .option('--same-label <key>', 'all members on nodes with one value of this label (e.g. zone)')
      .option('--spread', 'members on distinct nodes')
      .option('--node-selector <key=value>', 'only nodes with this label value (repeatable)', parseSelector)
      .option('--image <image>', 'start each member from this process image (made absolute)')
      .option('--checkpoint-every <ms>', 'periodic checkpoints of each member, every <ms> (with --checkpoint-dir)', parseNumber)
      .option('--checkpoint-dir <dir>', 'where the periodic checkpoints go (a directory every node can reach; made absolute)')
      .option('--not-preemptible', 'never suspend it to make room for other work')
      .option('--not-restartable', 'never start it over from the beginning (node death without a checkpoint fails it instead)')
      .option('--not-movable', 'never move it, live, to another node to make room (reclaim then suspends it, if preemptible)')
      .passThroughOptions(),
  ).action(async (file: string | undefined, args: string[], flags: SubmitFlags & { notPreemptible?: boolean; notRestartable?: boolean; notMovable?: boolean }) => {
    const spec = submitSpec(file, args, { ...flags, preemptible: flags.notPreemptible ? false : undefined, restartable: flags.notRestartable ? false : undefined, movable: flags.notMovable ? false : undefined });
    const job = await withFleet(flags, (api) => api.submit(spec));
    print(flags, job, () => job.id);
  });

  fleetOptions(
    formatOptions(
      program
        .command('jobs')
        .description('list the fleet\'s jobs (through the daemon: your tenant\'s; the admin and --etcd: all)')
        .option('--phase <phases>', `only jobs in these phases (comma-separated: ${JOB_PHASES.join(', ')})`, parsePhases),
    ),
  ).action(async (flags: FleetFlags & { phase?: JobPhase[] }) => {
    const jobs = await withFleet(flags, (api) => api.jobs(flags.phase));
    printRows(flags, { jobs }, JOB_COLUMNS, jobs);
  });

  const job = program.command('job').description('show or cancel one job of the fleet');
  fleetOptions(job.command('show').description('a job\'s spec, phase and placement, and its members\' statuses').argument('<id>', 'the job id (j-...)')).action(
    async (id: string, flags: FleetFlags) => {
      const shown = await withFleet(flags, (api) => api.show(id));
      print(flags, shown, () => jobText(shown.job, shown.members));
    },
  );
  fleetOptions(job.command('cancel').description('end a job: the scheduler stops its members and marks it cancelled (a finished job is left as it is)').argument('<id>', 'the job id (j-...)')).action(
    async (id: string, flags: FleetFlags) => {
      const record = await withFleet(flags, (api) => api.cancel(id));
      const finished = ['succeeded', 'failed', 'cancelled'].includes(record.phase);
      print(flags, record, () => (finished ? `${id}: already ${record.phase}` : `${id}: cancel requested (phase ${record.phase})`));
    },
  );

  fleetOptions(formatOptions(program.command('nodes').description('the fleet\'s live nodes: health, labels, devices, what is bound on them'))).action(async (flags: FleetFlags) => {
    const nodes = await withFleet(flags, (api) => api.nodes());
    printRows(flags, { nodes }, NODE_COLUMNS, nodes);
  });

  fleetOptions(formatOptions(program.command('queues').description('the fleet\'s queues: quotas (guaranteed, limit, weight) and use'))).action(async (flags: FleetFlags) => {
    const queues = await withFleet(flags, (api) => api.queues());
    printRows(flags, { queues }, QUEUE_COLUMNS, queues);
  });

  const queue = program.command('queue').description('set or remove a queue\'s quota (through the daemon: the admin only)');
  fleetOptions(
    queue
      .command('set')
      .description('set a queue\'s quota; only the flags given change (a new queue starts from guaranteed 0, no limit, weight 1)')
      .argument('<name>', 'the queue path, e.g. research/vision')
      .option('--guaranteed <shares>', 'device shares it is guaranteed (sum of its running members\' shares)', parseNumber)
      .option('--limit <shares>', 'the most device shares it may use, borrowing included ("none": no limit)', parseLimit)
      .option('--weight <w>', 'its weight when queues share what is left over', parseNumber)
      .option('--max-priority <n>', 'the highest priority a tenant\'s job may have in it through a daemon ("none": no cap, the default)', parseLimit)
      .option('--tenants <names>', 'the tenants that may submit to it through a daemon, comma-separated ("all": every tenant, the default)'),
  ).action(async (name: string, flags: FleetFlags & { guaranteed?: number; limit?: number | 'none'; weight?: number; maxPriority?: number | 'none'; tenants?: string }) => {
    const stored = await withFleet(flags, async (api) => {
      const current = (await api.queues()).find((q) => q.name === name && q.set);
      const spec: QueueSpecInput = { name, guaranteed: current?.guaranteed, limit: current?.limit, weight: current?.weight, maxPriority: current?.maxPriority, tenants: current?.tenants };
      if (flags.guaranteed !== undefined) spec.guaranteed = flags.guaranteed;
      if (flags.limit !== undefined) spec.limit = flags.limit === 'none' ? null : flags.limit;
      if (flags.weight !== undefined) spec.weight = flags.weight;
      if (flags.maxPriority !== undefined) spec.maxPriority = flags.maxPriority === 'none' ? undefined : flags.maxPriority;
      if (flags.tenants !== undefined) spec.tenants = flags.tenants.trim() === 'all' ? undefined : flags.tenants.split(',').map((t) => t.trim()).filter((t) => t !== '');
      return api.setQueue(spec);
    });
    print(flags, stored, () => renderRows(QUEUE_COLUMNS.slice(0, 4) as unknown as Column<QueueSpec>[], [stored]));
  });
  fleetOptions(queue.command('remove').alias('rm').description('remove a queue\'s quota (its jobs stay; the queue then has the defaults)').argument('<name>', 'the queue path')).action(
    async (name: string, flags: FleetFlags) => {
      await withFleet(flags, (api) => api.removeQueue(name));
      print(flags, { name, removed: true }, () => `queue ${name} removed`);
    },
  );

  etcdOptions(
    program
      .command('scheduler')
      .description('run a fleet scheduler replica (leader-elected with the others) until SIGINT or SIGTERM; needs --etcd')
      .option('--id <id>', 'this replica\'s id (default: scheduler-<pid>-<random>)')
      .option('--lease-ttl <seconds>', 'TTL of the leader lease: a dead leader is replaced within about this long (default 2)', parseNumber)
      .option('--retention <ms>', 'delete the records of jobs finished longer ago than this (default 86400000: 24 h)', parseNumber)
      .option('--verbose', 'also log debug events'),
  ).action((flags: FleetFlags & { id?: string; leaseTtl?: number; retention?: number; verbose?: boolean }) => schedulerCommand(flags));
}
