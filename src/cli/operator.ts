// The operator's commands against gpunixd: ps, kill, suspend, resume, renice, devices --connect,
// tenants, trace (from the daemon), mem, checkpoint, migrate, status, and the token helpers. Each
// opens a control session, sends one request, prints a table (or the result as JSON), and exits.
// Documented in docs/cli.md.

import { readFileSync, writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Session, SessionOptions } from '../client/session.js';
import { hashToken, newToken } from '../daemon/config.js';
import type { DeviceDescription, DeviceStats } from '../kernel/kernel.js';
import type { ProcessRecord } from '../kernel/proc.js';
import type { TenantRecord } from '../kernel/tenant.js';
import type { ChromeTrace } from '../kernel/trace.js';
import { parseBytes, PRIORITY_CLASSES, TOKEN_ENV } from '../params.js';
import type { MessageName, Payload } from '../protocol/messages.js';
import { formatBytes, formatNs, table } from './format.js';

export interface ConnectionFlags {
  socket?: string;
  url?: string;
  token?: string;
  ca?: string;
  json?: boolean;
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

export function remoteProcessTable(records: ProcessRecord[]): string {
  return table(
    ['PID', 'TENANT', 'NAME', 'STATE', 'PRIORITY', 'WEIGHT', 'GPU TIME', 'MEMORY', 'PEAK', 'PREEMPTED', 'P99 LATENCY', 'EXIT'],
    records.map((p) => [
      p.pid,
      p.tenant,
      p.name,
      p.state,
      p.priority,
      p.weight,
      formatNs(p.accounting.gpuTimeNs),
      formatBytes(p.accounting.bytesAllocated),
      formatBytes(p.accounting.peakBytesAllocated),
      p.accounting.preemptions,
      latencyText(p),
      p.exit ? `${p.exit.code} (${p.exit.reason})` : '-',
    ]),
  );
}

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
export async function remoteDevices(flags: ConnectionFlags): Promise<void> {
  const result = (await controlCall(flags, 'ListDevices', {})) as { devices: RemoteDevice[] };
  print(flags, result, () =>
    table(
      ['ID', 'DESCRIPTION', 'BACKEND', 'CPU FALLBACK', 'BUDGET', 'USED', 'EVICTED', 'UTILIZATION', 'LOST'],
      result.devices.map((d) => [
        d.id,
        d.description,
        d.backend ?? '-',
        d.isFallbackAdapter ? 'yes' : 'no',
        formatBytes(d.budgetBytes),
        formatBytes(d.usedBytes),
        formatBytes(d.evictedBytes),
        `${(d.utilization * 100).toFixed(1)}%`,
        d.lost ?? '-',
      ]),
    ),
  );
}

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
}

function quotaOf(flags: QuotaFlags): Record<string, unknown> {
  const quota: Record<string, unknown> = {};
  if (flags.memoryLimit !== undefined) quota.memoryLimit = flags.memoryLimit === 'none' ? null : flags.memoryLimit;
  if (flags.weight !== undefined) quota.weight = flags.weight;
  if (flags.maxProcesses !== undefined) quota.maxProcesses = flags.maxProcesses === 'none' ? null : flags.maxProcesses;
  if (flags.priorities !== undefined) quota.priorities = flags.priorities;
  if (flags.maxDispatchMs !== undefined) quota.maxDispatchMs = flags.maxDispatchMs === 'none' ? null : flags.maxDispatchMs;
  return quota;
}

function quotaOptions(command: Command): Command {
  return command
    .option('--memory-limit <bytes>', 'device memory all its processes may hold together, e.g. 8G ("none": no limit)', parseLimit)
    .option('--weight <w>', 'its share of GPU time within a priority class, relative to other tenants', parsePositive)
    .option('--max-processes <n>', 'live processes it may have at once ("none": no limit)', parseCount)
    .option('--max-dispatch-ms <ms>', 'the longest one dispatch of its processes may run; the watchdog ends longer ones ("none": the kernel\'s maxDispatchMs)', (v: string) => (v === 'none' ? 'none' : parsePositive(v)))
    .option('--priorities <list>', 'priority classes its processes may use, comma-separated (e.g. normal,batch)', parsePriorities);
}

/** Registers the operator commands on the `gpunix` program. */
export function registerOperatorCommands(program: Command): void {
  connectionOptions(program.command('ps').description('list the daemon\'s processes (the tenant\'s own; all for the admin)')).action(async (flags: ConnectionFlags) => {
    const result = (await controlCall(flags, 'ListProcesses', {})) as { processes: ProcessRecord[] };
    print(flags, result, () => remoteProcessTable(result.processes));
  });

  connectionOptions(program.command('kill').description('kill a process of the daemon').argument('<pid>', 'the process', parsePid)).action(
    async (pid: number, flags: ConnectionFlags) => {
      const status = (await controlCall(flags, 'KillProcess', { pid })) as { code: number; reason: string };
      print(flags, status, () => `pid ${pid}: ${status.reason} (exit code ${status.code})`);
    },
  );

  connectionOptions(
    program
      .command('suspend')
      .description('suspend a process at its next atom boundary')
      .argument('<pid>', 'the process', parsePid)
      .option('--swap', 'also move its buffers to host memory, freeing its device memory'),
  ).action(async (pid: number, flags: ConnectionFlags & { swap?: boolean }) => {
    const record = (await controlCall(flags, 'SuspendProcess', { pid, swap: flags.swap === true })) as ProcessRecord;
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
      .argument('<path>', 'the image: a name inside the tenant\'s image directory (the admin: any absolute path)'),
  ).action(async (pid: number, path: string, flags: ConnectionFlags) => {
    const written = (await controlCall(flags, 'CheckpointProcess', { pid, path })) as { path: string; bytes: number };
    print(flags, written, () => `pid ${pid}: image written to ${written.path} (${formatBytes(written.bytes)})`);
  });

  connectionOptions(
    program.command('migrate').description('move a running process to another device').argument('<pid>', 'the process', parsePid).argument('<device>', 'a device id, e.g. gpu1'),
  ).action(async (pid: number, device: string, flags: ConnectionFlags) => {
    const record = (await controlCall(flags, 'MigrateProcess', { pid, device })) as ProcessRecord;
    print(flags, record, () => `pid ${pid}: moved to ${device}`);
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
  connectionOptions(tenants.command('list', { isDefault: true }).description('tenants with their quotas and use (your own unless admin)')).action(async (flags: ConnectionFlags) => {
    const result = (await controlCall(flags, 'ListTenants', {})) as { tenants: TenantRecord[] };
    print(flags, result, () => tenantTable(result.tenants));
  });
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
  connectionOptions(tenants.command('remove').description('remove a tenant; its processes are killed and its sessions closed').argument('<name>', 'tenant name')).action(
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
