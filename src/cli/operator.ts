// The operator's commands against gpunixd: ps, kill, suspend, resume, renice, devices --connect,
// tenants, trace (from the daemon), mem, checkpoint, migrate, status, and the token helpers. Each
// opens a control session, sends one request, prints a table (or the result as JSON), and exits.
// Documented in docs/cli.md.

import { readFileSync, writeFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ProgressListener, Session, SessionOptions } from '../client/session.js';
import { hashToken, newToken } from '../daemon/config.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { BACKEND_NAMES, BACKENDS_ENV, parseBackendList } from '../device/backends.js';
import type { DeviceDescription, DeviceStats } from '../kernel/kernel.js';
import type { ProcessRecord } from '../kernel/proc.js';
import type { TenantRecord } from '../kernel/tenant.js';
import type { ChromeTrace } from '../kernel/trace.js';
import { DEFAULT_OPERATION_TIMEOUT_MS, parseBytes, PRIORITY_CLASSES, TOKEN_ENV } from '../params.js';
import type { MessageName, Payload } from '../protocol/messages.js';
import { Column, columnKeys, formatBytes, formatNs, renderRows, table, TableFormat } from './format.js';

export interface ConnectionFlags {
  socket?: string;
  url?: string;
  token?: string;
  ca?: string;
  json?: boolean;
}

/** `--backends vulkan,opengles,opengl`: the Dawn backends a kernel (embedded or the daemon's) opens devices on. */
export function backendsOption(): Option {
  return new Option('--backends <list>', `Dawn backends to open devices on, comma-separated, in order: ${BACKEND_NAMES.join(', ')} (default: $${BACKENDS_ENV}, else the platform's own)`).argParser(
    (value: string) => {
      try {
        return parseBackendList(value);
      } catch (error) {
        throw new InvalidArgumentError((error as Error).message);
      }
    },
  );
}

/** Adds --socket, --url, --token, --ca and --json to a command. */
export function connectionOptions(command: Command, json = true): Command {
  command
    .option('--socket <path>', 'the daemon\'s Unix socket (default: $GPUNIX_SOCKET or the platform default)')
    .option('--url <url>', 'connect to tcp://host:port or tls://host:port instead of the socket')
    .option('--token <token>', `the tenant's or admin's token (default: $${TOKEN_ENV})`)
    .option('--ca <file>', 'for tls:// URLs: a PEM certificate authority to trust (e.g. the daemon\'s self-signed certificate)');
  if (json) command.option('--json', 'print the result as JSON');
  return command;
}

export function sessionOptions(flags: ConnectionFlags): SessionOptions {
  return {
    socket: flags.socket,
    url: flags.url,
    token: flags.token ?? process.env[TOKEN_ENV],
    ca: flags.ca ? readFileSync(flags.ca) : undefined,
  };
}

/** Opens a control session, runs `fn`, and closes it. */
export async function withControl<T>(flags: ConnectionFlags, fn: (session: Session) => Promise<T>): Promise<T> {
  const session = await Session.open(sessionOptions(flags), { role: 'control' });
  try {
    return await fn(session);
  } finally {
    session.close();
  }
}

/** One control request on a fresh session. */
export function controlCall<N extends MessageName>(flags: ConnectionFlags, name: N, payload: Omit<Payload<N>, 'req'>): Promise<unknown> {
  return withControl(flags, (session) => session.call(name, payload));
}

function print(flags: ConnectionFlags, result: unknown, text: () => string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : `${text()}\n`);
}

export function parsePid(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) throw new InvalidArgumentError(`expected a pid (a positive integer), got ${value}`);
  return n;
}

function parsePositive(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got ${value}`);
  return n;
}

function parseNonNegativeInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new InvalidArgumentError(`${flag}: expected an integer from 0 to 64, got ${value}`);
  return n;
}

// "none" stays a string through commander (which treats a parser's null as no value); quotaOf()
// turns it into null, the wire's "no limit".
function parseLimit(value: string): number | 'none' {
  if (value === 'none') return value;
  try {
    return parseBytes(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function parseCount(value: string): number | 'none' {
  if (value === 'none') return value;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer or "none", got ${value}`);
  return n;
}

function parsePriorities(value: string): string[] {
  const list = value.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = list.filter((p) => !PRIORITY_CLASSES.includes(p as never));
  if (list.length === 0 || bad.length > 0) throw new InvalidArgumentError(`expected a comma-separated list of ${PRIORITY_CLASSES.join(', ')}, got ${value}`);
  return list;
}

const latencyText = (p: ProcessRecord) => (p.accounting.latency.p99Us === null ? '-' : `<= ${formatNs(p.accounting.latency.p99Us * 1000)}`);

/** A process as ListProcesses returns it: the record and the devices it is on now. */
export type ListedProcess = ProcessRecord & { devices?: string[] };

/** Every column `gpunix ps -o` can show, by key; PS_DEFAULT_COLUMNS are shown without -o. */
export const PS_COLUMNS: Column<ListedProcess>[] = [
  { key: 'pid', header: 'PID', text: (p) => p.pid },
  { key: 'tenant', header: 'TENANT', text: (p) => p.tenant },
  { key: 'name', header: 'NAME', text: (p) => p.name },
  { key: 'state', header: 'STATE', text: (p) => p.state },
  { key: 'device', header: 'DEVICE', text: (p) => (p.devices && p.devices.length > 0 ? p.devices.join(',') : '-'), raw: (p) => (p.devices ?? []).join(' ') },
  { key: 'priority', header: 'PRIORITY', text: (p) => p.priority },
  { key: 'weight', header: 'WEIGHT', text: (p) => p.weight },
  { key: 'gpu-time', header: 'GPU TIME', text: (p) => formatNs(p.accounting.gpuTimeNs), raw: (p) => p.accounting.gpuTimeNs },
  { key: 'ready-wait', header: 'READY WAIT', text: (p) => formatNs(p.accounting.readyWaitNs), raw: (p) => p.accounting.readyWaitNs },
  { key: 'memory', header: 'MEMORY', text: (p) => formatBytes(p.accounting.bytesAllocated), raw: (p) => p.accounting.bytesAllocated },
  { key: 'resident', header: 'RESIDENT', text: (p) => formatBytes(p.accounting.residentBytes), raw: (p) => p.accounting.residentBytes },
  { key: 'evicted', header: 'EVICTED', text: (p) => formatBytes(p.accounting.evictedBytes), raw: (p) => p.accounting.evictedBytes },
  { key: 'peak', header: 'PEAK', text: (p) => formatBytes(p.accounting.peakBytesAllocated), raw: (p) => p.accounting.peakBytesAllocated },
  { key: 'memory-limit', header: 'MEMORY LIMIT', text: (p) => (p.memoryLimit === null ? 'none' : formatBytes(p.memoryLimit)), raw: (p) => p.memoryLimit },
  { key: 'objects', header: 'OBJECTS', text: (p) => p.liveObjects },
  { key: 'dispatches', header: 'DISPATCHES', text: (p) => p.accounting.dispatches },
  { key: 'atoms', header: 'ATOMS', text: (p) => p.accounting.atomsRun },
  { key: 'preempted', header: 'PREEMPTED', text: (p) => p.accounting.preemptions },
  { key: 'p99', header: 'P99 LATENCY', text: (p) => latencyText(p), raw: (p) => p.accounting.latency.p99Us },
  { key: 'started', header: 'STARTED', text: (p) => new Date(p.startedAt).toISOString(), raw: (p) => new Date(p.startedAt).toISOString() },
  { key: 'ended', header: 'ENDED', text: (p) => (p.endedAt === null ? '-' : new Date(p.endedAt).toISOString()), raw: (p) => (p.endedAt === null ? null : new Date(p.endedAt).toISOString()) },
  { key: 'exit', header: 'EXIT', text: (p) => (p.exit ? `${p.exit.code} (${p.exit.reason})` : '-'), raw: (p) => (p.exit ? p.exit.code : null) },
  { key: 'reason', header: 'REASON', text: (p) => p.exit?.reason ?? '-', raw: (p) => p.exit?.reason ?? null },
];

export const PS_DEFAULT_COLUMNS = ['pid', 'tenant', 'name', 'state', 'device', 'priority', 'weight', 'gpu-time', 'memory', 'peak', 'preempted', 'p99', 'exit'];

const PROCESS_STATES = ['ready', 'running', 'waiting', 'suspended', 'exited'];

/** A comma-separated list (repeatable flags add up). */
function listOf(check?: (item: string) => string | null) {
  return (value: string, previous: string[] | undefined): string[] => {
    const items = value.split(',').map((s) => s.trim()).filter(Boolean);
    if (items.length === 0) throw new InvalidArgumentError(`expected a comma-separated list, got ${JSON.stringify(value)}`);
    for (const item of items) {
      const problem = check?.(item);
      if (problem) throw new InvalidArgumentError(problem);
    }
    return [...(previous ?? []), ...items];
  };
}

const parseColumns = listOf((key) => (PS_COLUMNS.some((c) => c.key === key) ? null : `no column ${JSON.stringify(key)}; columns: ${columnKeys(PS_COLUMNS)}`));
const parseStates = listOf((state) => (PROCESS_STATES.includes(state) ? null : `no state ${JSON.stringify(state)}; states: ${PROCESS_STATES.join(', ')}`));
const parsePids = listOf((pid) => (/^[1-9][0-9]*$/.test(pid) ? null : `expected pids (positive integers), got ${JSON.stringify(pid)}`));

export interface PsFlags extends ConnectionFlags, TableFormat {
  tenant?: string[];
  state?: string[];
  pid?: string[];
  output?: string[];
  all?: boolean;
}

/**
 * The processes `gpunix ps` shows: filtered by --tenant, --state and --pid; exited ones only with
 * --all or when --state asks for them (the kernel reaps them exitedRetentionMs after exit anyway).
 */
export function selectProcesses(processes: ListedProcess[], flags: PsFlags): ListedProcess[] {
  return processes.filter(
    (p) =>
      (flags.all || flags.state?.includes('exited') || p.state !== 'exited') &&
      (!flags.tenant || flags.tenant.includes(p.tenant)) &&
      (!flags.state || flags.state.includes(p.state)) &&
      (!flags.pid || flags.pid.includes(String(p.pid))),
  );
}

/** Adds --format (table or csv) and --no-header to a tabular command. */
export function formatOptions(command: Command): Command {
  return command
    .addOption(new Option('--format <format>', 'table (default) or csv (raw values: bytes, ns; for scripts)').choices(['table', 'csv']))
    .option('--no-header', 'leave out the header line (table or csv)');
}

/** Prints rows as --json, a table or CSV; nothing at all for CSV or a header-less table with no rows. */
export function printRows<T>(flags: ConnectionFlags & TableFormat, result: unknown, columns: Column<T>[], rows: T[], tty: Partial<TableFormat> = {}): void {
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const text = renderRows(columns, rows, { format: flags.format, header: flags.header, ...tty });
  if (text !== '') process.stdout.write(`${text}\n`);
}

const TENANT_COLUMNS: Column<TenantRecord>[] = [
  { key: 'tenant', header: 'TENANT', text: (t) => t.name },
  { key: 'memory-limit', header: 'MEMORY LIMIT', text: (t) => (t.memoryLimit === null ? 'none' : formatBytes(t.memoryLimit)), raw: (t) => t.memoryLimit },
  { key: 'memory', header: 'MEMORY', text: (t) => formatBytes(t.bytes), raw: (t) => t.bytes },
  { key: 'weight', header: 'WEIGHT', text: (t) => t.weight },
  { key: 'max-processes', header: 'MAX PROCESSES', text: (t) => (t.maxProcesses === null ? 'none' : String(t.maxProcesses)), raw: (t) => t.maxProcesses },
  { key: 'processes', header: 'PROCESSES', text: (t) => t.processes },
  { key: 'priorities', header: 'PRIORITIES', text: (t) => t.priorities.join(','), raw: (t) => t.priorities.join(' ') },
];

function tenantTable(tenants: TenantRecord[]): string {
  return table(
    ['TENANT', 'MEMORY LIMIT', 'MEMORY', 'WEIGHT', 'MAX PROCESSES', 'PROCESSES', 'PRIORITIES'],
    tenants.map((t) => [
      t.name,
      t.memoryLimit === null ? 'none' : formatBytes(t.memoryLimit),
      formatBytes(t.bytes),
      t.weight,
      t.maxProcesses === null ? 'none' : String(t.maxProcesses),
      t.processes,
      t.priorities.join(','),
    ]),
  );
}

/** What ListDevices returns: each device's description and its use (src/daemon/control.ts). */
type RemoteDevice = DeviceDescription & DeviceStats;

/** `gpunix devices --connect`: the daemon's devices with their use. */
export async function remoteDevices(flags: ConnectionFlags & TableFormat): Promise<void> {
  const result = (await controlCall(flags, 'ListDevices', {})) as { devices: RemoteDevice[] };
  printRows(flags, result, REMOTE_DEVICE_COLUMNS, result.devices);
}

const REMOTE_DEVICE_COLUMNS: Column<RemoteDevice>[] = [
  { key: 'id', header: 'ID', text: (d) => d.id },
  { key: 'description', header: 'DESCRIPTION', text: (d) => d.description },
  { key: 'backend', header: 'BACKEND', text: (d) => d.backend ?? '-', raw: (d) => d.backend ?? null },
  { key: 'feature-level', header: 'LEVEL', text: (d) => d.featureLevel ?? '-', raw: (d) => d.featureLevel ?? null },
  { key: 'cpu-fallback', header: 'CPU FALLBACK', text: (d) => (d.isFallbackAdapter ? 'yes' : 'no') },
  { key: 'budget', header: 'BUDGET', text: (d) => formatBytes(d.budgetBytes), raw: (d) => d.budgetBytes },
  { key: 'used', header: 'USED', text: (d) => formatBytes(d.usedBytes), raw: (d) => d.usedBytes },
  { key: 'evicted', header: 'EVICTED', text: (d) => formatBytes(d.evictedBytes), raw: (d) => d.evictedBytes },
  { key: 'utilization', header: 'UTILIZATION', text: (d) => `${(d.utilization * 100).toFixed(1)}%`, raw: (d) => Number((d.utilization * 100).toFixed(2)) },
  { key: 'lost', header: 'LOST', text: (d) => d.lost ?? '-', raw: (d) => d.lost ?? null },
];

/** `gpunix trace` without a program: the daemon's atom timeline (the caller's processes). */
export async function remoteTrace(flags: ConnectionFlags & { pid?: number; out: string }): Promise<void> {
  const trace = (await controlCall(flags, 'GetTrace', { pid: flags.pid ?? 0 })) as ChromeTrace;
  writeFileSync(flags.out, JSON.stringify(trace));
  const events = trace.traceEvents.filter((e) => e.ph === 'X').length;
  print(flags, { path: flags.out, events }, () => `wrote ${events} trace events to ${flags.out} (open it in Perfetto or chrome://tracing)`);
}

interface QuotaFlags {
  memoryLimit?: number | 'none';
  weight?: number;
  maxProcesses?: number | 'none';
  priorities?: string[];
  maxDispatchMs?: number | 'none';
  maxObjects?: number | 'none';
  maxShaderBytes?: number | 'none';
}

function quotaOf(flags: QuotaFlags): Record<string, unknown> {
  const quota: Record<string, unknown> = {};
  if (flags.memoryLimit !== undefined) quota.memoryLimit = flags.memoryLimit === 'none' ? null : flags.memoryLimit;
  if (flags.weight !== undefined) quota.weight = flags.weight;
  if (flags.maxProcesses !== undefined) quota.maxProcesses = flags.maxProcesses === 'none' ? null : flags.maxProcesses;
  if (flags.priorities !== undefined) quota.priorities = flags.priorities;
  if (flags.maxDispatchMs !== undefined) quota.maxDispatchMs = flags.maxDispatchMs === 'none' ? null : flags.maxDispatchMs;
  if (flags.maxObjects !== undefined) quota.maxObjects = flags.maxObjects === 'none' ? null : flags.maxObjects;
  if (flags.maxShaderBytes !== undefined) quota.maxShaderBytes = flags.maxShaderBytes === 'none' ? null : flags.maxShaderBytes;
  return quota;
}

function quotaOptions(command: Command): Command {
  return command
    .option('--memory-limit <bytes>', 'device memory all its processes may hold together, e.g. 8G ("none": no limit)', parseLimit)
    .option('--weight <w>', 'its share of GPU time within a priority class, relative to other tenants', parsePositive)
    .option('--max-processes <n>', 'live processes it may have at once ("none": no limit)', parseCount)
    .option('--max-dispatch-ms <ms>', 'the longest one dispatch of its processes may run; the watchdog ends longer ones ("none": the kernel\'s maxDispatchMs)', (v: string) => (v === 'none' ? 'none' : parsePositive(v)))
    .option('--priorities <list>', 'priority classes its processes may use, comma-separated (e.g. normal,batch)', parsePriorities)
    .option('--max-objects <n>', 'WebGPU objects its sessions may hold at once ("none": no limit; default: the daemon\'s maxObjectsPerTenant)', parseCount)
    .option('--max-shader-bytes <bytes>', 'WGSL source its live shader modules may hold, e.g. 16M ("none": no limit; default: maxShaderBytesPerTenant)', parseLimit);
}

/** The wire's options for a checkpoint or migration: `--timeout` in seconds, as ms (null: the daemon's default). */
function timeoutOption(flags: { timeout?: number }): { timeoutMs: number } | null {
  return flags.timeout === undefined ? null : { timeoutMs: flags.timeout * 1000 };
}

/**
 * Shows a long request's progress: with --json, one JSON line per Progress message on stderr
 * ({"event":"progress",...}; stdout keeps the one result document); else on a terminal, a line on
 * stderr redrawn in place and erased at the end; else nothing.
 */
function progressDisplay(flags: ConnectionFlags, doing: string): { update: ProgressListener; done(): void } {
  if (flags.json) {
    return { update: (p) => void process.stderr.write(`${JSON.stringify({ event: 'progress', ...p })}\n`), done: () => {} };
  }
  if (process.stderr.isTTY !== true) return { update: () => {}, done: () => {} };
  let shown = false;
  return {
    update: ({ done, total }) => {
      const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
      process.stderr.write(`\r\x1b[2K${doing}: ${formatBytes(done)} of ${formatBytes(total)} (${pct}%)`);
      shown = true;
    },
    done: () => {
      if (shown) process.stderr.write('\r\x1b[2K');
    },
  };
}

/** Registers the operator commands on the `gpunix` program. */
export function registerOperatorCommands(program: Command): void {
  connectionOptions(
    formatOptions(
      program
        .command('ps')
        .description('list the daemon\'s processes (the tenant\'s own; all for the admin); exited ones only with --all')
        .option('--tenant <names>', 'only these tenants\' processes (comma-separated)', listOf())
        .option('--state <states>', `only processes in these states (comma-separated: ${PROCESS_STATES.join(', ')})`, parseStates)
        .option('--pid <pids>', 'only these pids (comma-separated)', parsePids)
        .option('-o, --output <columns>', `the columns to show, in order (comma-separated): ${columnKeys(PS_COLUMNS)}`, parseColumns)
        .option('-a, --all', 'also list exited processes not yet reaped (kept exitedRetentionMs, default 10 minutes, after exit)'),
    ),
  ).action(async (flags: PsFlags) => {
    const result = (await controlCall(flags, 'ListProcesses', {})) as { processes: ListedProcess[] };
    const processes = selectProcesses(result.processes, flags);
    const keys = flags.output ?? PS_DEFAULT_COLUMNS;
    const columns = keys.map((key) => PS_COLUMNS.find((c) => c.key === key)!);
    printRows(flags, { processes }, columns, processes);
  });

  // Idempotent, as kill(1) of a zombie is: a process that has already exited (and is not yet
  // reaped) is reported as it ended, with exit code 0; a reaped or unknown pid is NO_SUCH_PROCESS.
  connectionOptions(program.command('kill').description('kill a process of the daemon (as SIGKILL: exit code 137); no signals: see suspend/resume').argument('<pid>', 'the process', parsePid)).action(
    async (pid: number, flags: ConnectionFlags) => {
      await withControl(flags, async (session) => {
        const listed = (await session.call('ListProcesses', {})) as { processes: ProcessRecord[] };
        const before = listed.processes.find((p) => p.pid === pid);
        if (before?.exit) {
          const status = { ...before.exit, alreadyExited: true };
          print(flags, status, () => `pid ${pid}: already exited: ${status.reason} (exit code ${status.code})`);
          return;
        }
        const status = (await session.call('KillProcess', { pid })) as { code: number; reason: string };
        print(flags, status, () => `pid ${pid}: ${status.reason} (exit code ${status.code})`);
      });
    },
  );

  connectionOptions(
    program
      .command('suspend')
      .description('suspend a process at its next atom boundary')
      .argument('<pid>', 'the process', parsePid)
      .option('--swap', 'also move its buffers to host memory, freeing its device memory'),
  ).action(async (pid: number, flags: ConnectionFlags & { swap?: boolean }) => {
    const progress = flags.swap ? progressDisplay(flags, `pid ${pid}: swapping out`) : null;
    let record: ProcessRecord;
    try {
      record = (await withControl(flags, (session) => session.call('SuspendProcess', { pid, swap: flags.swap === true }, progress?.update))) as ProcessRecord;
    } finally {
      progress?.done();
    }
    print(flags, record, () => `pid ${pid}: ${record.state}${flags.swap ? `, ${formatBytes(record.accounting.evictedBytes)} swapped out` : ''}`);
  });

  connectionOptions(program.command('resume').description('resume a suspended (or swapped-out) process').argument('<pid>', 'the process', parsePid)).action(
    async (pid: number, flags: ConnectionFlags) => {
      const record = (await controlCall(flags, 'ResumeProcess', { pid })) as ProcessRecord;
      print(flags, record, () => `pid ${pid}: ${record.state}`);
    },
  );

  connectionOptions(
    program
      .command('renice')
      .description('change a process\'s priority class and/or weight')
      .argument('<pid>', 'the process', parsePid)
      .addOption(new Option('--priority <class>', 'priority class').choices([...PRIORITY_CLASSES]))
      .option('--weight <w>', 'share of GPU time within the priority class', parsePositive),
  ).action(async (pid: number, flags: ConnectionFlags & { priority?: string; weight?: number }) => {
    const options: Record<string, unknown> = {};
    if (flags.priority !== undefined) options.priority = flags.priority;
    if (flags.weight !== undefined) options.weight = flags.weight;
    const record = (await controlCall(flags, 'ReniceProcess', { pid, options })) as ProcessRecord;
    print(flags, record, () => `pid ${pid}: priority ${record.priority}, weight ${record.weight}`);
  });

  connectionOptions(program.command('mem').description('memory per device and per process (budget, resident, evicted, swaps)')).action(async (flags: ConnectionFlags) => {
    type Report = {
      devices: Array<{ id: string; budgetBytes: number; usedBytes: number; evictedBytes: number }>;
      processes: Array<{ pid: number; tenant: string; name: string; residentBytes: number; evictedBytes: number; peakBytesAllocated: number; evictions: number; restores: number }>;
      swap: { bytesOut: number; bytesIn: number } | null;
    };
    const report = (await controlCall(flags, 'MemoryReport', {})) as Report;
    print(flags, report, () => {
      const devices = table(
        ['DEVICE', 'BUDGET', 'RESIDENT', 'EVICTED'],
        report.devices.map((d) => [d.id, formatBytes(d.budgetBytes), formatBytes(d.usedBytes), formatBytes(d.evictedBytes)]),
      );
      const processes = table(
        ['PID', 'TENANT', 'NAME', 'RESIDENT', 'EVICTED', 'PEAK', 'EVICTIONS', 'RESTORES'],
        report.processes.map((p) => [p.pid, p.tenant, p.name, formatBytes(p.residentBytes), formatBytes(p.evictedBytes), formatBytes(p.peakBytesAllocated), p.evictions, p.restores]),
      );
      const swap = report.swap ? `\n\nswap: ${formatBytes(report.swap.bytesOut)} out, ${formatBytes(report.swap.bytesIn)} in` : '';
      return `${devices}\n\n${processes}${swap}`;
    });
  });

  connectionOptions(
    program
      .command('checkpoint')
      .description('write a process image of a running process, on the daemon\'s machine')
      .argument('<pid>', 'the process', parsePid)
      .argument('<path>', 'the image: a name inside the tenant\'s image directory (the admin: any absolute path)')
      .option('--timeout <seconds>', `how long to wait for the process to stop at a piece boundary (default ${DEFAULT_OPERATION_TIMEOUT_MS / 1000})`, parsePositive),
  ).action(async (pid: number, path: string, flags: ConnectionFlags & { timeout?: number }) => {
    const progress = progressDisplay(flags, `pid ${pid}: writing the image`);
    let written: { path: string; bytes: number };
    try {
      written = (await withControl(flags, (session) => session.call('CheckpointProcess', { pid, path, options: timeoutOption(flags) }, progress.update))) as typeof written;
    } finally {
      progress.done();
    }
    print(flags, written, () => `pid ${pid}: image written to ${written.path} (${formatBytes(written.bytes)})`);
  });

  connectionOptions(
    program
      .command('migrate')
      .description('move a running process to another device, or, live, to another node (--to, --node)')
      .argument('<pid>', 'the process', parsePid)
      .argument('[device]', 'a device id of this node, e.g. gpu1')
      .option('--to <address>', "another node's daemon: its socket path, tcp://host:port or tls://host:port (admin)")
      .option('--node <name>', 'another node of the fleet, by name (admin; this daemon must be a fleet node)')
      .option('--to-token <token>', "the other daemon's admin token (default: $GPUNIX_PEER_TOKEN, else this daemon's migration.peerToken)")
      .option('--rounds <n>', 'pre-copy rounds after the first, at most (default 4)', (v: string) => parseNonNegativeInt(v, '--rounds'))
      .option('--timeout <seconds>', `how long to wait for the process's work on its device to finish (default ${DEFAULT_OPERATION_TIMEOUT_MS / 1000})`, parsePositive),
  ).action(async (pid: number, device: string | undefined, flags: ConnectionFlags & { timeout?: number; to?: string; node?: string; toToken?: string; rounds?: number }) => {
    const remote = flags.to !== undefined || flags.node !== undefined;
    if (remote === (device !== undefined)) throw new GpunixError(ErrorCodes.BAD_OPTION, 'migrate: give a device of this node, or --to ADDRESS / --node NAME for another node (one of them)');
    if (!remote) {
      const record = (await controlCall(flags, 'MigrateProcess', { pid, device: device!, options: timeoutOption(flags) })) as ProcessRecord & { moved?: boolean };
      print(flags, record, () => (record.moved === false ? `pid ${pid}: already on ${device}, nothing moved` : `pid ${pid}: moved to ${device}`));
      return;
    }
    const token = flags.toToken ?? process.env.GPUNIX_PEER_TOKEN;
    const options = {
      ...timeoutOption(flags),
      ...(flags.to !== undefined ? { to: flags.to.includes('://') ? flags.to : resolvePath(flags.to) } : {}),
      ...(flags.node !== undefined ? { node: flags.node } : {}),
      ...(token ? { token } : {}),
      ...(flags.rounds !== undefined ? { rounds: flags.rounds } : {}),
    };
    const progress = progressDisplay(flags, `pid ${pid}: sending its memory`);
    let moved: { node: string | null; address: { socket?: string; url?: string }; pid: number; bytes: number; rounds: number; totalMs: number; downtimeMs: number; finalBytes?: number; finalMs?: number; bytesPerSecond: number };
    try {
      moved = (await withControl(flags, (session) => session.call('MigrateProcess', { pid, device: '', options }, progress.update))) as typeof moved;
    } finally {
      progress.done();
    }
    const where = moved.node ?? moved.address.socket ?? moved.address.url;
    print(flags, moved, () =>
      `pid ${pid}: moved to ${where} (pid ${moved.pid} there): ${formatBytes(moved.bytes)} in ${moved.rounds} round${moved.rounds === 1 ? '' : 's'}, ${(moved.totalMs / 1000).toFixed(2)} s in all (${formatBytes(moved.bytesPerSecond)}/s), stopped ${moved.downtimeMs.toFixed(1)} ms` +
      (moved.finalBytes !== undefined && moved.finalMs !== undefined ? ` (${formatBytes(moved.finalBytes)} sent in ${moved.finalMs.toFixed(1)} ms of it)` : ''),
    );
  });

  connectionOptions(program.command('status').description('the daemon\'s uptime, sessions and kernel statistics')).action(async (flags: ConnectionFlags) => {
    const status = (await controlCall(flags, 'DaemonStatus', {})) as {
      uptimeSeconds: number;
      tenant: string;
      admin: boolean;
      sessions: Record<string, number>;
      stats: { processes: { total: number; byState: Record<string, number> }; bytesAllocated: number };
    };
    print(flags, status, () =>
      [
        `uptime: ${status.uptimeSeconds.toFixed(0)} s`,
        `caller: ${status.admin ? 'admin' : `tenant ${status.tenant}`}`,
        `sessions: ${Object.entries(status.sessions).map(([k, v]) => `${v} ${k}`).join(', ')}`,
        `processes: ${status.stats.processes.total} (${Object.entries(status.stats.processes.byState).map(([k, v]) => `${v} ${k}`).join(', ')})`,
        `device memory held: ${formatBytes(status.stats.bytesAllocated)}`,
      ].join('\n'),
    );
  });

  const tenants = program.command('tenants').description('list tenants; add, change or remove them (admin) while the daemon runs');
  connectionOptions(formatOptions(tenants.command('list', { isDefault: true }).alias('ls').description('tenants with their quotas and use (your own unless admin)'))).action(
    async (flags: ConnectionFlags & TableFormat) => {
      const result = (await controlCall(flags, 'ListTenants', {})) as { tenants: TenantRecord[] };
      printRows(flags, result, TENANT_COLUMNS, result.tenants);
    },
  );
  connectionOptions(quotaOptions(tenants.command('add').description('add a tenant and print its token (shown once; the daemon keeps only its hash)').argument('<name>', 'tenant name'))).action(
    async (name: string, flags: ConnectionFlags & QuotaFlags) => {
      const result = (await controlCall(flags, 'AddTenant', { name, quota: quotaOf(flags) })) as TenantRecord & { token: string };
      print(flags, result, () => `${tenantTable([result])}\n\ntoken for ${name} (shown once, keep it secret):\n${result.token}`);
    },
  );
  connectionOptions(
    quotaOptions(tenants.command('set').description('change a tenant\'s quota (only the flags given)').argument('<name>', 'tenant name')).option('--rotate-token', 'issue a new token (the old one stops working)'),
  ).action(async (name: string, flags: ConnectionFlags & QuotaFlags & { rotateToken?: boolean }) => {
    const result = (await controlCall(flags, 'UpdateTenant', { name, quota: quotaOf(flags), rotateToken: flags.rotateToken === true })) as TenantRecord & { token?: string };
    print(flags, result, () => `${tenantTable([result])}${result.token ? `\n\nnew token for ${name} (shown once, keep it secret):\n${result.token}` : ''}`);
  });
  connectionOptions(tenants.command('remove').alias('rm').description('remove a tenant; its processes are killed and its sessions closed').argument('<name>', 'tenant name')).action(
    async (name: string, flags: ConnectionFlags) => {
      const result = await controlCall(flags, 'RemoveTenant', { name });
      print(flags, result, () => `tenant ${name} removed`);
    },
  );

  const token = program.command('token').description('make tokens and their hashes for the daemon\'s configuration');
  token
    .command('new')
    .description('print a new random token (256 bits) and its hash: the token goes to the user, the hash into the configuration')
    .option('--json', 'print {token, hash}')
    .action((flags: { json?: boolean }) => {
      const value = newToken();
      const hash = hashToken(value);
      process.stdout.write(flags.json ? `${JSON.stringify({ token: value, hash })}\n` : `token: ${value}\nhash:  ${hash}\n`);
    });
  token
    .command('hash')
    .description('print the hash of a token ("-": read it from stdin, keeping it out of the shell history)')
    .argument('<token>', 'the token, or - for stdin')
    .option('--json', 'print {hash}')
    .action((value: string, flags: { json?: boolean }) => {
      const text = value === '-' ? readFileSync(0, 'utf8').trim() : value;
      const hash = hashToken(text);
      process.stdout.write(flags.json ? `${JSON.stringify({ hash })}\n` : `${hash}\n`);
    });
}
