// The fleet scheduler at scale (issue 15, item 8): the real scheduler (src/fleet/scheduler.ts
// FleetScheduler) against a real etcd with thousands of simulated nodes, and in the same run a
// naive first-fit scheduler over the same store and the same job stream, as the baseline.
//
// One run starts its own etcd (1 or 3 members on loopback, data on disk under os.tmpdir()) and, for
// every node count and every scheduler, in a fresh key prefix:
//   1. registers the simulated nodes (bench/fleetSimNodes.ts: NodeRecords under a few shared
//      leases, one watch over bindings/ acknowledging every binding with MemberStatus 'running');
//   2. starts the scheduler under test in a child process of its own (as a replica runs in
//      production: its own event loop; `--profile DIR` runs it under node --cpu-prof) and waits
//      until it leads;
//   3. submits the job stream (seeded: the same jobs for both schedulers) — through
//      FleetClient.submit (`--submit client`, one transaction a job, SUBMIT_WINDOW in flight) or
//      in batches of SUBMIT_BATCH jobs a transaction (`--submit batch`, the default: the submit
//      path is then not what limits the rate) — as fast as it goes or at `--rate` jobs/s;
//   4. waits until every job is bound, or no job has been bound for IDLE_MS (the rest do not fit),
//      and reads the fleet's bindings (fragmentation is taken there);
//   5. submits the probe: `--probe` more jobs one at a time at `--probe-rate` jobs/s, a rate both
//      schedulers keep up with — their bind latency is latency without a backlog;
//   6. reads the outcome back from etcd: each JobRecord's submittedAt and bindLatencyMs (submit →
//      the decision that bound it: the scheduler writes it in the binding commit), the bindings —
//      and checks it (no job bound twice, no device over-committed, every gang whole).
// Reported per scheduler: gang placements/s = placed jobs ÷ (first submit → last bind), bind
// latency p50/p99 (of the stream, and of the probe), fragmentation after the stream
// (Capacity.fragmentation() over the bindings in etcd), the submit rate, CPU seconds of the
// scheduler, of etcd and of this process, and the ratio gpunix / first-fit.
//
// The baseline (FirstFitBaseline, below): what a naive scheduler does — it leads through the same
// campaign, mirrors nodes and pending jobs with the same store watches, takes pending jobs in
// arrival order, places each with placement.ts firstFitGang (the first device that fits, in node
// name order, same constraints) and binds one gang per commit, awaiting each commit before the
// next decision. Its commits have the same shape as the real scheduler's (leadership condition +
// the job's modRevision; the member bindings + the JobRecord). It does not turn member statuses
// into phases ('running'), which the real scheduler does (one more write a job).
//
// Output: one JSON object on stdout; progress and the table on stderr. docs/benchmarks.md
// ("Fleet scheduler at scale") describes it and what it does not simulate.
//
//   node dist/bench/fleet.js [--nodes 1000,10000] [--jobs N] [--gang-mix 1:40,2:25,4:20,8:15]
//        [--members 1|3] [--rate R[,R]] [--probe N] [--probe-rate R] [--submit batch|client]
//        [--only gpunix|first-fit] [--seed N] [--timeout S] [--profile DIR] [--etcd-dir DIR]
//        [--scheduler-options JSON] [--quick]

import { ChildProcess, fork } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { pickWeighted, seededRandom, simNodeRecords, SimulatedNodes, LEASES } from './fleetSimNodes.js';
import { EtcdCluster, startEtcd } from '../test/etcdCluster.js';
import { Capacity } from '../src/fleet/capacity.js';
import { FleetClient, newJobId } from '../src/fleet/client.js';
import { firstFitGang } from '../src/fleet/placement.js';
import type { Binding, JobRecord, NodeRecord } from '../src/fleet/records.js';
import { FleetScheduler, memberBinding, SchedulerLogLevel } from '../src/fleet/scheduler.js';
import { JobSpecInput, parseJobSpec } from '../src/fleet/spec.js';
import { Entry, FleetStore, Leadership } from '../src/fleet/store.js';

const GiB = 1024 ** 3;

// ---- from bench/machine.ts's conventions, here without importing it: machine.ts loads Dawn and the
// kernel, and this benchmark (and its scheduler processes) needs no GPU and should load only the fleet.

/** CPU seconds the whole machine has spent busy (user + nice + system), from /proc/stat; null off Linux. */
function machineBusySeconds(): number | null {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return (fields[0] + fields[1] + fields[2]) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line ? line.split(':')[1].trim() : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The line that says how noisy a run was ('' off Linux). */
function contentionLine({ wallSeconds, otherCpuSeconds }: { wallSeconds: number; otherCpuSeconds: number | null }): string {
  if (otherCpuSeconds === null) return '';
  const noisy = otherCpuSeconds / wallSeconds > 0.05 ? ' — the figures are noisy; rerun on a quiet machine' : '';
  return `other programs used ${otherCpuSeconds.toFixed(1)} CPU s during the ${wallSeconds.toFixed(0)} s run${noisy}\n`;
}

/** Runs main and exits: 0 when it finished, 1 with the error on stderr. */
function runBenchmark(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`\nbench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}

/** Targets (issue 15), reported against, not asserted. */
const TARGET_PLACEMENTS_PER_S = 1000;
const TARGET_P99_MS = 50;
const ANCHORS = 'kube-scheduler ~100 pods/s at 5 000 nodes; Volcano / Gödel ~1 000 pods/s';

/** A run ends this long after the last bind once every job is submitted (the rest do not fit). */
const IDLE_MS = 3_000;
/** How long a scheduler may take to lead and load the fleet. */
const READY_TIMEOUT_MS = 60_000;
const SUBMIT_BATCH = 100;
const SUBMIT_WINDOW = 64;
const BATCH_WINDOW = 4;
/** Job names of the stream and of the latency probe (how the outcome tells them apart). */
const STREAM_NAME = 'stream-';
const PROBE_NAME = 'probe-';

const KINDS = ['gpunix', 'first-fit'] as const;
type Kind = (typeof KINDS)[number];

const usage = `usage: node dist/bench/fleet.js [options]
  --nodes LIST       simulated node counts, comma-separated (default 1000,10000)
  --jobs N           jobs in each stream (default: 1.5 x nodes, at most 5000)
  --gang-mix LIST    gang sizes and their weights, size:weight comma-separated (default 1:40,2:25,4:20,8:15)
  --members 1|3      etcd members (default 3)
  --rate LIST        offered submit rates in jobs/s, comma-separated; 0 = as fast as the submitter goes (default 0)
  --probe N          after the stream, N more jobs at --probe-rate, for bind latency without a backlog (default 200; 0: none)
  --probe-rate R     the probe's rate in jobs/s (default 50)
  --submit MODE      batch (${SUBMIT_BATCH} jobs a transaction, default) or client (FleetClient.submit, one transaction a job, ${SUBMIT_WINDOW} in flight)
  --only KIND        gpunix or first-fit (default: both, in that order)
  --seed N           seed of the fleet and the job stream (default 1)
  --timeout S        give up on one stream after S seconds (default 120)
  --profile DIR      run the scheduler under node --cpu-prof, profiles into DIR
  --etcd-dir DIR     where etcd keeps its data (default: the OS temp directory)
  --scheduler-options JSON  more FleetScheduler options, e.g. '{"maxInFlight":128,"resyncMs":5000}' (default {})
  --scheduler-log FILE  append the scheduler's whole log (debug included), one JSON line each with the time in ms
  --quick            a small smoke run: --nodes 300 --jobs 450 --probe 100 --members 1
JSON goes to stdout, the table and progress to stderr.`;

interface Options {
  nodes: number[];
  jobs: number | null;
  gangMix: Array<[number, number]>;
  members: 1 | 3;
  rates: number[];
  probe: number;
  probeRate: number;
  submit: 'batch' | 'client';
  kinds: Kind[];
  seed: number;
  timeoutMs: number;
  profile: string | null;
  etcdDir: string | undefined;
  schedulerOptions: Record<string, unknown>;
  schedulerLog: string | null;
}

/** --scheduler-options: a JSON object of FleetSchedulerOptions (the scheduler ignores what it does not know). */
function parseSchedulerOptions(raw: string, fail: (message: string) => never): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return fail(`--scheduler-options must be a JSON object, got ${raw}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail(`--scheduler-options must be a JSON object, got ${raw}`);
  return value as Record<string, unknown>;
}

function parseOptions(): Options | null {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string' },
      jobs: { type: 'string' },
      'gang-mix': { type: 'string', default: '1:40,2:25,4:20,8:15' },
      members: { type: 'string' },
      rate: { type: 'string', default: '0' },
      probe: { type: 'string' },
      'probe-rate': { type: 'string', default: '50' },
      submit: { type: 'string', default: 'batch' },
      only: { type: 'string' },
      seed: { type: 'string', default: '1' },
      timeout: { type: 'string', default: '120' },
      profile: { type: 'string' },
      'etcd-dir': { type: 'string' },
      'scheduler-options': { type: 'string', default: '{}' },
      'scheduler-log': { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stderr.write(`${usage}\n`);
    return null;
  }
  const fail = (message: string): never => {
    throw new Error(`${message}\n${usage}`);
  };
  const positive = (raw: string, what: string): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) fail(`${what} must be a positive integer, got ${raw}`);
    return n;
  };
  const quick = values.quick === true;
  const nodes = (values.nodes ?? (quick ? '300' : '1000,10000')).split(',').map((s) => positive(s.trim(), '--nodes'));
  const jobsRaw = values.jobs ?? (quick ? '450' : undefined);
  const gangMix = values['gang-mix']!.split(',').map((pair): [number, number] => {
    const [size, weight] = pair.split(':').map(Number);
    if (!Number.isInteger(size) || size < 1 || size > 32 || !(weight > 0)) fail(`--gang-mix takes size:weight pairs (size 1-32), got ${pair}`);
    return [size, weight];
  });
  const members = Number(values.members ?? (quick ? '1' : '3'));
  if (members !== 1 && members !== 3) fail('--members must be 1 or 3');
  const rates = values.rate!.split(',').map((s) => {
    const r = Number(s);
    if (!(r >= 0)) fail(`--rate takes jobs/s >= 0, got ${s}`);
    return r;
  });
  if (values.submit !== 'batch' && values.submit !== 'client') fail('--submit must be batch or client');
  const kinds = values.only ? [values.only as Kind] : [...KINDS];
  if (!kinds.every((k) => KINDS.includes(k))) fail(`--only must be one of ${KINDS.join(', ')}`);
  return {
    nodes,
    jobs: jobsRaw === undefined ? null : positive(jobsRaw, '--jobs'),
    gangMix,
    members: members as 1 | 3,
    rates,
    probe: values.probe === '0' ? 0 : positive(values.probe ?? (quick ? '100' : '200'), '--probe'),
    probeRate: positive(values['probe-rate']!, '--probe-rate'),
    submit: values.submit as 'batch' | 'client',
    kinds,
    seed: positive(values.seed!, '--seed'),
    timeoutMs: positive(values.timeout!, '--timeout') * 1000,
    profile: values.profile ?? null,
    etcdDir: values['etcd-dir'],
    schedulerOptions: parseSchedulerOptions(values['scheduler-options']!, fail),
    schedulerLog: values['scheduler-log'] ?? null,
  };
}

// ---- the job stream ---------------------------------------------------------------------------

/**
 * `count` job specs, the same for the same seed: gang size from `gangMix`; share 0.25/0.5/1
 * (30/30/40 %); memory 1/2/4/8 GiB (30/30/25/15 %); two queues; gangs of more than one member
 * carry a constraint half the time (sameLabel rack 25 %, sameLabel zone 10 %, spread 10 %,
 * sameNode 5 %), single jobs a zone nodeSelector 10 % of the time.
 */
export function jobStream(count: number, seed: number, gangMix: Array<[number, number]>, name: string): JobSpecInput[] {
  const random = seededRandom(seed * 7919 + 17);
  const specs: JobSpecInput[] = [];
  for (let i = 0; i < count; i++) {
    const gang = pickWeighted(random, gangMix);
    const share = pickWeighted(random, [[0.25, 30], [0.5, 30], [1, 40]]);
    const memory = pickWeighted(random, [[1 * GiB, 30], [2 * GiB, 30], [4 * GiB, 25], [8 * GiB, 15]]);
    let placement: JobSpecInput['placement'] = {};
    const r = random();
    if (gang > 1) {
      if (r < 0.25) placement = { sameLabel: 'rack' };
      else if (r < 0.35) placement = { sameLabel: 'zone' };
      else if (r < 0.45) placement = { spread: true };
      else if (r < 0.5) placement = { sameNode: true };
    } else if (r < 0.1) {
      placement = { nodeSelector: { zone: `z${Math.floor(random() * 8)}` } };
    }
    specs.push({
      name: `${name}${i}`,
      tenant: 'bench',
      queue: i % 2 === 0 ? 'team-a' : 'team-b',
      program: '/simulated/none.mjs',
      gang,
      share,
      memory,
      placement,
    });
  }
  return specs;
}

// ---- the schedulers, each in a child process --------------------------------------------------

interface ChildConfig {
  kind: Kind;
  endpoints: string[];
  prefix: string;
  schedulerOptions: Record<string, unknown>;
  schedulerLog: string | null;
}

type ChildMessage = { type: 'ready' } | { type: 'stats'; stats: unknown; cpuSeconds: number } | { type: 'error'; message: string };

/** The baseline: a naive first-fit scheduler binding one gang per awaited commit (see the top of the file). */
class FirstFitBaseline {
  placements = 0;
  bindFailures = 0;
  unplaced = 0;
  private readonly capacity = new Capacity();
  private readonly queue: Array<Entry<JobRecord>> = [];
  private readonly queued = new Set<string>();
  private parked: Array<Entry<JobRecord>> = [];
  private leadership: Leadership | null = null;
  private watches: Array<{ close(): Promise<void> }> = [];
  private wake: (() => void) | null = null;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();

  constructor(private readonly store: FleetStore) {}

  async start(): Promise<void> {
    const { store } = this;
    this.leadership = await store.campaign({ id: 'first-fit', since: Date.now() }, 5, () => {
      this.stopped = true;
    });
    const nodes = await store.list<NodeRecord>(store.keys.nodes());
    for (const { value } of nodes.entries) this.capacity.setNode(value);
    const bindings = await store.list<Binding>(store.keys.bindings());
    for (const { key, value } of bindings.entries) {
      if (value.desired === 'run') this.capacity.reserve(value, [{ node: store.keys.rest(store.keys.bindings(), key).split('/')[0], device: value.device }]);
    }
    const jobs = await store.list<JobRecord>(store.keys.jobs());
    for (const entry of jobs.entries) this.enqueue(entry);
    this.watches.push(
      await store.watch<NodeRecord>(store.keys.nodes(), nodes.revision, (event) => {
        if (event.type === 'put' && event.value) this.capacity.setNode(event.value);
        else if (event.type === 'delete') this.capacity.removeNode(store.keys.rest(store.keys.nodes(), event.key));
        // A node came or changed: what did not fit may fit now.
        this.queue.push(...this.parked);
        this.parked = [];
        this.wake?.();
      }),
      await store.watch<JobRecord>(store.keys.jobs(), jobs.revision, (event) => {
        if (event.type === 'put' && event.value) this.enqueue({ key: event.key, value: event.value, modRevision: event.modRevision, createRevision: 0 });
      }),
    );
    this.loop = this.run();
  }

  private enqueue(entry: Entry<JobRecord>): void {
    if (entry.value.phase !== 'pending' || this.queued.has(entry.value.id)) return;
    this.queued.add(entry.value.id);
    this.queue.push(entry);
    this.wake?.();
  }

  /** One decision at a time: first fit, one commit, await it, next. */
  private async run(): Promise<void> {
    const { store } = this;
    while (!this.stopped) {
      const entry = this.queue.shift();
      if (!entry) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
        continue;
      }
      const job = entry.value;
      const placement = firstFitGang(job.spec, this.capacity);
      if (!placement) {
        this.parked.push(entry);
        continue;
      }
      const generation = job.generation + 1;
      const now = Date.now();
      const bindings = placement.map(({ node, device }, member) => {
        return { key: store.keys.binding(node, job.id, member), value: memberBinding(job, member, generation, device) };
      });
      const bound: JobRecord = { ...job, phase: 'bound', generation, placement, updatedAt: now, bindLatencyMs: now - job.submittedAt, message: undefined };
      const ok = await store.commit({
        ifs: [this.leadership!.condition, { key: entry.key, modRevision: entry.modRevision }],
        puts: [...bindings, { key: entry.key, value: bound }],
      });
      if (ok) {
        this.capacity.reserve(job.spec, placement);
        this.placements++;
      } else {
        this.bindFailures++;
        const fresh = await store.get<JobRecord>(entry.key);
        if (fresh && fresh.value.phase === 'pending') this.queue.push(fresh);
      }
    }
  }

  stats(): Record<string, unknown> {
    return { placements: this.placements, bindFailures: this.bindFailures, parked: this.parked.length };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    await Promise.all(this.watches.map((w) => w.close()));
    await this.leadership?.resign();
  }
}

/** The child process's side: connect, lead, schedule until told to stop, send the stats. */
async function schedulerChild(): Promise<void> {
  const send = (message: ChildMessage) => new Promise<void>((resolve) => process.send!(message, () => resolve()));
  try {
    const config = await new Promise<ChildConfig>((resolve) => process.once('message', (m) => resolve(m as ChildConfig)));
    const store = await FleetStore.connect({ endpoints: config.endpoints, prefix: config.prefix });
    let scheduler: { stop(): Promise<void>; stats(): unknown };
    if (config.kind === 'gpunix') {
      const logFile = config.schedulerLog;
      const log = (level: SchedulerLogLevel, message: string, fields?: Record<string, unknown>) => {
        if (logFile) appendFileSync(logFile, `${JSON.stringify({ time: Date.now(), level, msg: message, ...fields })}\n`);
        if (level === 'warn' || level === 'error') process.stderr.write(`scheduler ${level}: ${message} ${fields ? JSON.stringify(fields) : ''}\n`);
      };
      const real = new FleetScheduler(store, { id: 'bench', log, leaseTtlSeconds: 5, ...config.schedulerOptions });
      await real.start();
      while (!real.isLeader) await new Promise((resolve) => setTimeout(resolve, 10));
      scheduler = real;
    } else {
      const baseline = new FirstFitBaseline(store);
      await baseline.start();
      scheduler = baseline;
    }
    const cpuBefore = process.cpuUsage();
    await send({ type: 'ready' });
    await new Promise((resolve) => process.once('message', resolve));
    const stats = scheduler.stats();
    const cpu = process.cpuUsage(cpuBefore);
    await scheduler.stop();
    store.close();
    await send({ type: 'stats', stats, cpuSeconds: (cpu.user + cpu.system) / 1e6 });
  } catch (error) {
    await send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  }
  process.exit(0);
}

interface SchedulerProcess {
  /** Resolves with the scheduler's own stats and the CPU seconds it used while the stream ran. */
  stop(): Promise<{ stats: unknown; cpuSeconds: number }>;
  kill(): void;
}

/** Forks this file as a scheduler of `kind` over `prefix`; resolves once it leads and has loaded its state. */
async function startScheduler(kind: Kind, endpoints: string[], prefix: string, options: Options): Promise<SchedulerProcess> {
  const profile = options.profile;
  const child: ChildProcess = fork(new URL(import.meta.url).pathname, [], {
    env: { ...process.env, GPUNIX_FLEET_BENCH_CHILD: '1' },
    execArgv: profile ? ['--cpu-prof', '--cpu-prof-dir', profile, '--cpu-prof-name', `fleet-${kind}-${Date.now()}.cpuprofile`] : [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = () =>
    new Promise<ChildMessage>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`the ${kind} scheduler process exited (${code}) before answering`));
      child.once('exit', onExit);
      child.once('message', (message) => {
        child.off('exit', onExit);
        const m = message as ChildMessage;
        if (m.type === 'error') reject(new Error(`${kind} scheduler: ${m.message}`));
        else resolve(m);
      });
    });
  const ready = next();
  child.send({ kind, endpoints, prefix, schedulerOptions: options.schedulerOptions, schedulerLog: options.schedulerLog } satisfies ChildConfig);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([ready, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`the ${kind} scheduler did not lead within ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS)))]);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return {
    async stop() {
      const answer = next();
      child.send({ type: 'stop' });
      const m = await answer;
      await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)));
      return m.type === 'stats' ? { stats: m.stats, cpuSeconds: m.cpuSeconds } : { stats: null, cpuSeconds: 0 };
    },
    kill: () => child.kill('SIGKILL'),
  };
}

// ---- one stream -------------------------------------------------------------------------------

interface SideResult {
  scheduler: Kind;
  jobs: number;
  placed: number;
  unplaced: number;
  /** Placed gangs ÷ (first submit → last bind commit). */
  placementsPerSecond: number;
  /** Members bound per second over the same span. */
  membersPerSecond: number;
  /** Submit → bind commit of the stream's jobs (with the stream as fast as it goes: mostly time queued behind the others). */
  bindLatencyMs: { p50: number; p99: number; max: number };
  /** The probe after the stream: `jobs` more at `rate` jobs/s, and their submit → bind latency. */
  probe: {
    jobs: number;
    rate: number;
    placed: number;
    bindLatencyMs: { p50: number; p99: number; max: number };
    /** Submit → this process's watch seeing the pending job (the submit commit and a watch's delivery): the floor under bindLatencyMs. */
    seenMs: { p50: number; p99: number };
  };
  submitRate: number;
  spanSeconds: number;
  fragmentation: ReturnType<Capacity['fragmentation']>;
  /** Share of the fleet's device time bound at the end. */
  utilization: number;
  check: { boundTwice: number; overcommittedDevices: number; brokenGangs: number };
  /** CPU the scheduler process used from its start of leading to the end of the stream. */
  schedulerCpuSeconds: number;
  /** CPU every etcd member used from the first submit to the end of the stream. */
  etcdCpuSeconds: number;
  /** CPU this process used meanwhile: the simulated nodes, the submitter, the progress watch. */
  benchCpuSeconds: number;
  schedulerStats: unknown;
}

const sortedCopy = (values: number[]) => values.slice().sort((a, b) => a - b);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** CPU seconds of this process's live children by command name (etcd, node), from /proc; empty off Linux. */
function childrenCpuSeconds(): Map<string, number> {
  const byName = new Map<string, number>();
  try {
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        continue; // gone meanwhile
      }
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields[1] is the parent's pid; [11..14] utime, stime, cutime, cstime in ticks (USER_HZ 100).
      if (Number(fields[1]) !== process.pid) continue;
      const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      byName.set(name, (byName.get(name) ?? 0) + ticks / 100);
    }
  } catch {
    // not Linux
  }
  return byName;
}

/** CPU seconds of this process, its reaped children and its live ones: what the benchmark itself spent (etcd and the schedulers included). */
function familyCpuSeconds(): number {
  try {
    const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
    const own = (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / 100;
    return own + [...childrenCpuSeconds().values()].reduce((a, b) => a + b, 0);
  } catch {
    return 0;
  }
}

/** Like bench/machine.ts measureContention, but what this benchmark's own children (etcd, the schedulers) use is not "other programs". */
function measureFleetContention(): () => { wallSeconds: number; otherCpuSeconds: number | null } {
  const busyBefore = machineBusySeconds();
  const familyBefore = familyCpuSeconds();
  const wallBefore = performance.now();
  return () => {
    const busyAfter = machineBusySeconds();
    const wallSeconds = (performance.now() - wallBefore) / 1000;
    const otherCpuSeconds = busyBefore === null || busyAfter === null ? null : Math.max(0, busyAfter - busyBefore - (familyCpuSeconds() - familyBefore));
    return { wallSeconds, otherCpuSeconds };
  };
}

/** Runs one stream against one scheduler in a fresh prefix; everything it started is stopped and its keys deleted. */
async function runStream(options: Options, endpoints: string[], kind: Kind, records: NodeRecord[], specs: JobSpecInput[], probeSpecs: JobSpecInput[], rate: number): Promise<SideResult> {
  const prefix = `/bench-fleet-${process.pid}-${Date.now().toString(36)}/`;
  const store = await FleetStore.connect({ endpoints, prefix });
  const label = `[${records.length} nodes, ${kind}${rate > 0 ? `, ${rate}/s` : ''}]`;
  let sim: SimulatedNodes | null = null;
  let scheduler: SchedulerProcess | null = null;
  let jobsWatch: { close(): Promise<void> } | null = null;
  let progress: NodeJS.Timeout | null = null;
  try {
    let lastPrinted = 0;
    sim = await SimulatedNodes.start({
      store,
      records,
      onRegistered: (n) => {
        if (Date.now() - lastPrinted > 1000 || n === records.length) {
          lastPrinted = Date.now();
          process.stderr.write(`${label} nodes registered ${n}/${records.length}\n`);
        }
      },
    });
    scheduler = await startScheduler(kind, endpoints, prefix, options);

    // Binds as the benchmark sees them (for progress and the end condition; the figures come from etcd at the end).
    const bound = new Set<string>();
    let lastBindSeenAt = Date.now();
    // And, for the probe, how long a new job takes to reach a watcher (submit commit + watch delivery): the floor under any scheduler's bind latency.
    const probeSeenMs: number[] = [];
    jobsWatch = await store.watch<JobRecord>(store.keys.jobs(), await store.revision(), (event) => {
      if (event.type === 'put' && event.value?.phase === 'pending' && event.value.generation === 0 && event.value.spec.name?.startsWith(PROBE_NAME) && event.value.updatedAt === event.value.submittedAt) {
        probeSeenMs.push(Date.now() - event.value.submittedAt);
      }
      if (event.type === 'put' && event.value && event.value.phase !== 'pending' && !bound.has(event.value.id)) {
        bound.add(event.value.id);
        lastBindSeenAt = Date.now();
      }
    });

    let submitted = 0;
    const total = specs.length + probeSpecs.length;
    const started = Date.now();
    progress = setInterval(() => {
      process.stderr.write(`${label} ${((Date.now() - started) / 1000).toFixed(0)} s: submitted ${submitted}/${total}, bound ${bound.size}, member statuses written ${sim!.acknowledged}\n`);
    }, 1000);

    const client = new FleetClient(store);
    const usedIds = new Set<string>();
    /** Submits `list` (SUBMIT_WINDOW single submits or BATCH_WINDOW batches in flight; with a rate, none ahead of the schedule); returns the seconds it took. */
    const submitStream = async (list: JobSpecInput[], streamRate: number): Promise<number> => {
      const submitStart = Date.now();
      const parsed = options.submit === 'batch' ? list.map((spec) => parseJobSpec(spec)) : [];
      const submitBatch = async (from: number, to: number) => {
        const now = Date.now();
        const puts = [];
        for (let i = from; i < to; i++) {
          // newJobId() is time + 4 random characters: two in one millisecond may draw the same id (one batch may not hold a key twice).
          let id = newJobId();
          while (usedIds.has(id)) id = newJobId();
          usedIds.add(id);
          const record: JobRecord = { id, spec: parsed[i], phase: 'pending', generation: 0, placement: [], submittedAt: now, updatedAt: now, restarts: 0, suspensions: 0 };
          puts.push({ key: store.keys.job(record.id), value: record });
        }
        await store.commit({ puts });
        submitted += to - from;
      };
      let issued = 0;
      const unit = options.submit === 'batch' ? Math.min(SUBMIT_BATCH, streamRate > 0 ? Math.max(1, Math.floor(streamRate / 100)) : SUBMIT_BATCH) : 1;
      const worker = async () => {
        while (issued < list.length) {
          if (streamRate > 0) {
            const due = submitStart + ((issued + unit) / streamRate) * 1000;
            if (due > Date.now()) {
              await sleep(Math.min(due - Date.now(), 5));
              continue;
            }
          }
          const from = issued;
          const to = Math.min(list.length, issued + unit);
          issued = to;
          if (options.submit === 'batch') await submitBatch(from, to);
          else {
            await client.submit(list[from]);
            submitted++;
          }
        }
      };
      await Promise.all(Array.from({ length: options.submit === 'batch' ? BATCH_WINDOW : SUBMIT_WINDOW }, worker));
      return (Date.now() - submitStart) / 1000;
    };
    const deadline = started + options.timeoutMs;
    /** Waits until `count` jobs are bound, or none has been for IDLE_MS (the rest do not fit), or the stream's time is up. */
    const waitBound = async (count: number) => {
      while (bound.size < count && Date.now() - lastBindSeenAt < IDLE_MS && Date.now() < deadline) await sleep(20);
      if (Date.now() >= deadline) process.stderr.write(`${label} timed out after ${options.timeoutMs / 1000} s with ${bound.size} of ${count} bound\n`);
    };

    // The stream, as fast as it goes (or at --rate): throughput.
    const etcdCpuBefore = childrenCpuSeconds().get('etcd') ?? 0;
    const ownCpuBefore = process.cpuUsage();
    const submitSeconds = await submitStream(specs, rate);
    await waitBound(specs.length);
    const etcdCpuSeconds = (childrenCpuSeconds().get('etcd') ?? 0) - etcdCpuBefore;
    const ownCpu = process.cpuUsage(ownCpuBefore);
    // The fleet as the stream left it (fragmentation is read here, before the probe adds to it).
    const [bindings, nodes] = await Promise.all([store.list<Binding>(store.keys.bindings()), store.list<NodeRecord>(store.keys.nodes())]);
    // Then the probe, at a rate both schedulers keep up with: bind latency without a backlog.
    if (probeSpecs.length > 0) {
      lastBindSeenAt = Date.now();
      await submitStream(probeSpecs, options.probeRate);
      await waitBound(total);
    }
    clearInterval(progress);
    progress = null;
    const { stats, cpuSeconds } = await scheduler.stop();
    scheduler = null;

    // The outcome, from etcd.
    const jobs = await store.list<JobRecord>(store.keys.jobs());
    const streamJobs = jobs.entries.map((e) => e.value).filter((job) => job.spec.name?.startsWith(STREAM_NAME));
    const probeJobs = jobs.entries.map((e) => e.value).filter((job) => job.spec.name?.startsWith(PROBE_NAME) && job.bindLatencyMs !== undefined);
    const placedJobs = streamJobs.filter((job) => job.bindLatencyMs !== undefined);
    const firstSubmit = Math.min(...streamJobs.map((job) => job.submittedAt));
    const lastBind = Math.max(...placedJobs.map((job) => job.submittedAt + job.bindLatencyMs!));
    const span = placedJobs.length > 0 ? (lastBind - firstSubmit) / 1000 : NaN;
    const latencies = placedJobs.map((job) => job.bindLatencyMs!).sort((a, b) => a - b);
    const probeLatencies = probeJobs.map((job) => job.bindLatencyMs!).sort((a, b) => a - b);
    const members = placedJobs.reduce((sum, job) => sum + job.spec.gang, 0);

    // Fragmentation and utilization: the fleet as the stream left it.
    const capacity = new Capacity();
    for (const { value } of nodes.entries) capacity.setNode(value);
    let usedShare = 0;
    for (const { key, value } of bindings.entries) {
      if (value.desired !== 'run') continue;
      capacity.reserve(value, [{ node: store.keys.rest(store.keys.bindings(), key).split('/')[0], device: value.device }]);
      usedShare += value.share;
    }
    // The checks: the bindings at the end (probe included) against every bound job.
    const finalBindings = await store.list<Binding>(store.keys.bindings());
    const perDevice = new Map<string, { share: number; memory: number; budget: number }>();
    const budgets = new Map(nodes.entries.map(({ value }) => [value.name, value.devices]));
    const membersOf = new Map<string, Set<number>>();
    let boundTwice = 0;
    for (const { key, value } of finalBindings.entries) {
      if (value.desired !== 'run') continue;
      const node = store.keys.rest(store.keys.bindings(), key).split('/')[0];
      const deviceKey = `${node}/${value.device}`;
      const device = perDevice.get(deviceKey) ?? { share: 0, memory: 0, budget: budgets.get(node)?.[value.device]?.memoryBudget ?? 0 };
      device.share += value.share;
      device.memory += value.memory;
      perDevice.set(deviceKey, device);
      const seen = membersOf.get(value.job) ?? new Set<number>();
      if (seen.has(value.member)) boundTwice++;
      seen.add(value.member);
      membersOf.set(value.job, seen);
    }
    const overcommitted = [...perDevice.values()].filter((d) => d.share > 1 + 1e-9 || d.memory > d.budget).length;
    const brokenGangs = [...placedJobs, ...probeJobs].filter((job) => (membersOf.get(job.id)?.size ?? 0) !== job.spec.gang).length;
    const totalDevices = records.reduce((sum, r) => sum + r.devices.length, 0);

    return {
      scheduler: kind,
      jobs: specs.length,
      placed: placedJobs.length,
      unplaced: specs.length - placedJobs.length,
      placementsPerSecond: placedJobs.length / span,
      membersPerSecond: members / span,
      bindLatencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies[latencies.length - 1] ?? NaN },
      probe: {
        jobs: probeSpecs.length,
        rate: options.probeRate,
        placed: probeLatencies.length,
        bindLatencyMs: { p50: percentile(probeLatencies, 50), p99: percentile(probeLatencies, 99), max: probeLatencies[probeLatencies.length - 1] ?? NaN },
        seenMs: { p50: percentile(sortedCopy(probeSeenMs), 50), p99: percentile(sortedCopy(probeSeenMs), 99) },
      },
      submitRate: specs.length / submitSeconds,
      spanSeconds: span,
      fragmentation: capacity.fragmentation(),
      utilization: usedShare / totalDevices,
      check: { boundTwice, overcommittedDevices: overcommitted, brokenGangs },
      schedulerCpuSeconds: cpuSeconds,
      etcdCpuSeconds,
      benchCpuSeconds: (ownCpu.user + ownCpu.system) / 1e6,
      schedulerStats: stats,
    };
  } finally {
    if (progress) clearInterval(progress);
    scheduler?.kill();
    await jobsWatch?.close();
    await sim?.stop().catch(() => undefined);
    await store.deletePrefix(prefix).catch(() => undefined);
    store.close();
  }
}

// ---- main -------------------------------------------------------------------------------------

/** The etcd this run started (stopped on Ctrl-C). */
let runningEtcd: EtcdCluster | null = null;

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

async function main(): Promise<void> {
  const options = parseOptions();
  if (!options) return;
  const stopContention = measureFleetContention();
  process.stderr.write(`starting a ${options.members}-member etcd\n`);
  const etcd = await startEtcd({ members: options.members, dir: options.etcdDir });
  runningEtcd = etcd;
  const results: Array<Record<string, unknown>> = [];
  try {
    for (const nodeCount of options.nodes) {
      const records = simNodeRecords(nodeCount, options.seed);
      const devices = records.reduce((sum, r) => sum + r.devices.length, 0);
      const jobCount = options.jobs ?? Math.min(Math.round(1.5 * nodeCount), 5_000);
      const specs = jobStream(jobCount, options.seed, options.gangMix, STREAM_NAME);
      const probeSpecs = jobStream(options.probe, options.seed + 1, options.gangMix, PROBE_NAME);
      const demand = specs.reduce((sum, s) => sum + (s.gang ?? 1) * (s.share ?? 1), 0);
      process.stderr.write(`${nodeCount} nodes with ${devices} devices; ${jobCount} jobs asking for ${fmt((100 * demand) / devices)} % of the fleet's device time\n`);
      for (const rate of options.rates) {
        const sides: Partial<Record<Kind, SideResult>> = {};
        for (const kind of options.kinds) sides[kind] = await runStream(options, etcd.endpoints, kind, records, specs, probeSpecs, rate);
        const gpunix = sides.gpunix;
        const baseline = sides['first-fit'];
        results.push({
          nodes: nodeCount,
          devices,
          jobs: jobCount,
          demand: demand / devices,
          offeredRate: rate || 'max',
          ...sides,
          ratio:
            gpunix && baseline
              ? {
                  placementsPerSecond: gpunix.placementsPerSecond / baseline.placementsPerSecond,
                  p99: gpunix.bindLatencyMs.p99 / baseline.bindLatencyMs.p99,
                  probeP99: gpunix.probe.bindLatencyMs.p99 / baseline.probe.bindLatencyMs.p99,
                  fragmentationScore: baseline.fragmentation.score === 0 ? null : gpunix.fragmentation.score / baseline.fragmentation.score,
                }
              : null,
        });
      }
    }
  } catch (error) {
    await etcd.stop();
    throw error;
  }
  const contention = stopContention();
  await etcd.stop();

  const simulated = {
    simulated: `nodes are NodeRecords only (no GPU, no daemon); ${LEASES} leases shared by all nodes instead of one each; one watch over bindings/ acknowledges every binding (MemberStatus 'running', batched up to 100 a transaction); members never finish (capacity does not turn over)`,
    real: 'etcd (its own cluster, data on disk), the key layout and records, the scheduler code (src/fleet/scheduler.ts in its own process), every commit',
  };
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'fleet',
        date: new Date().toISOString(),
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        cpu: cpuModel(),
        cpus: availableParallelism(),
        etcdMembers: options.members,
        submit: options.submit,
        schedulerOptions: options.schedulerOptions,
        gangMix: options.gangMix,
        seed: options.seed,
        targets: { placementsPerSecond: TARGET_PLACEMENTS_PER_S, bindP99Ms: TARGET_P99_MS, at: '10 000 nodes', anchors: ANCHORS },
        ...simulated,
        contention,
        results,
      },
      null,
      2,
    )}\n`,
  );

  const rows: string[][] = [['nodes', 'rate', 'scheduler', 'placed', 'gangs/s', 'members/s', 'p50 ms', 'p99 ms', 'probe p50/p99 (seen)', 'frag', 'partial', 'util %', 'submit/s', 'CPU s sched/etcd/sim', 'checks']];
  for (const result of results) {
    for (const kind of KINDS) {
      const side = result[kind] as SideResult | undefined;
      if (!side) continue;
      const ok = side.check.boundTwice === 0 && side.check.overcommittedDevices === 0 && side.check.brokenGangs === 0;
      rows.push([
        String(result.nodes),
        String(result.offeredRate),
        kind,
        `${side.placed}/${side.jobs}`,
        fmt(side.placementsPerSecond),
        fmt(side.membersPerSecond),
        fmt(side.bindLatencyMs.p50, 1),
        fmt(side.bindLatencyMs.p99, 1),
        `${fmt(side.probe.bindLatencyMs.p50)}/${fmt(side.probe.bindLatencyMs.p99)} (${fmt(side.probe.seenMs.p50)}/${fmt(side.probe.seenMs.p99)})`,
        fmt(side.fragmentation.score, 3),
        String(side.fragmentation.partial),
        fmt(100 * side.utilization, 1),
        fmt(side.submitRate),
        `${fmt(side.schedulerCpuSeconds, 1)}/${fmt(side.etcdCpuSeconds, 1)}/${fmt(side.benchCpuSeconds, 1)}`,
        ok ? 'ok' : JSON.stringify(side.check),
      ]);
    }
    const ratio = result.ratio as { placementsPerSecond: number; p99: number; probeP99: number } | null;
    if (ratio) rows.push(['', '', 'gpunix/first-fit', '', fmt(ratio.placementsPerSecond, 2), '', '', fmt(ratio.p99, 2), `p99 ${fmt(ratio.probeP99, 2)}`, '', '', '', '', '', '']);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  process.stderr.write('\n');
  for (const row of rows) process.stderr.write(`${row.map((cell, i) => (i <= 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')}\n`);
  process.stderr.write(
    `targets (issue 15): >= ${TARGET_PLACEMENTS_PER_S} gang placements/s at 10 000 nodes, bind p99 <= ${TARGET_P99_MS} ms; anchors: ${ANCHORS}\n` +
      `simulated: ${simulated.simulated}\nreal: ${simulated.real}\n` +
      'frag = Capacity.fragmentation().score (free share stranded on partly used devices / all free share); partial = partly used devices\n' +
      contentionLine(contention),
  );
}

if (process.env.GPUNIX_FLEET_BENCH_CHILD === '1') {
  // The benchmark went away (Ctrl-C, a crash): nothing else will tell this scheduler to stop.
  process.on('disconnect', () => process.exit(0));
  void schedulerChild();
} else {
  // Ctrl-C: stop etcd (members and data), then exit (test/etcdCluster.ts's exit hook kills any member left).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      setTimeout(() => process.exit(130), 3_000).unref();
      void (runningEtcd?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
    });
  }
  runBenchmark(main);
}
