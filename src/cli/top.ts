// `gpunix top`: a live view of the daemon's processes, refreshed every --interval. GPU share is the
// process's device time over the wall time between two samples. Keys (on a terminal): g/c GPU,
// m memory, p pid, n name, t tenant, s state, l latency, e preemptions; r reverses; q quits.

import { Command, InvalidArgumentError } from 'commander';
import type { Session } from '../client/session.js';
import type { ProcessRecord } from '../kernel/proc.js';
import { connectionOptions, ConnectionFlags, withControl } from './operator.js';
import { Column, formatBytes, formatNs, renderRows, truncate } from './format.js';

export const SORT_KEYS = ['gpu', 'cpu', 'mem', 'pid', 'name', 'tenant', 'state', 'latency', 'preempt'] as const;
type SortKey = (typeof SORT_KEYS)[number];

const KEY_BINDINGS: Record<string, SortKey> = { g: 'gpu', c: 'gpu', m: 'mem', p: 'pid', n: 'name', t: 'tenant', s: 'state', l: 'latency', e: 'preempt' };

export interface TopRow {
  pid: number;
  tenant: string;
  name: string;
  state: string;
  priority: string;
  /** Percent of one device's time the process used between the two samples. */
  gpuSharePct: number;
  memoryBytes: number;
  preemptions: number;
  p99LatencyUs: number | null;
}

/** Rows from two samples `wallNs` apart (processes new in the second count from zero). */
export function topRows(before: ProcessRecord[], after: ProcessRecord[], wallNs: number): TopRow[] {
  const previous = new Map(before.map((p) => [p.pid, p.accounting.gpuTimeNs]));
  return after.map((p) => ({
    pid: p.pid,
    tenant: p.tenant,
    name: p.name,
    state: p.state,
    priority: p.priority,
    gpuSharePct: wallNs > 0 ? Math.max(0, (100 * (p.accounting.gpuTimeNs - (previous.get(p.pid) ?? 0))) / wallNs) : 0,
    memoryBytes: p.accounting.bytesAllocated,
    preemptions: p.accounting.preemptions,
    p99LatencyUs: p.accounting.latency.p99Us,
  }));
}

/** Sorts rows by `key`: numbers largest first, text alphabetically; `reverse` flips it. */
export function sortRows(rows: TopRow[], key: SortKey, reverse = false): TopRow[] {
  const value = (r: TopRow): number | string => {
    switch (key) {
      case 'gpu':
      case 'cpu':
        return -r.gpuSharePct;
      case 'mem':
        return -r.memoryBytes;
      case 'pid':
        return r.pid;
      case 'name':
        return r.name;
      case 'tenant':
        return r.tenant;
      case 'state':
        return r.state;
      case 'latency':
        return -(r.p99LatencyUs ?? -1);
      case 'preempt':
        return -r.preemptions;
    }
  };
  const sorted = [...rows].sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return order !== 0 ? order : a.pid - b.pid;
  });
  return reverse ? sorted.reverse() : sorted;
}

const TOP_COLUMNS: Column<TopRow>[] = [
  { key: 'pid', header: 'PID', text: (r) => r.pid },
  { key: 'tenant', header: 'TENANT', text: (r) => r.tenant },
  { key: 'name', header: 'NAME', text: (r) => r.name },
  { key: 'state', header: 'STATE', text: (r) => r.state },
  { key: 'priority', header: 'PRIORITY', text: (r) => r.priority },
  { key: 'gpu', header: 'GPU %', text: (r) => r.gpuSharePct.toFixed(1) },
  { key: 'memory', header: 'MEMORY', text: (r) => formatBytes(r.memoryBytes) },
  { key: 'preempted', header: 'PREEMPTED', text: (r) => r.preemptions },
  { key: 'p99', header: 'P99 LATENCY', text: (r) => (r.p99LatencyUs === null ? '-' : `<= ${formatNs(r.p99LatencyUs * 1000)}`) },
];

/** The process table; with `width` (a terminal's columns), names are cut so that a line fits. */
export function topTable(rows: TopRow[], width?: number): string {
  return renderRows(TOP_COLUMNS, rows, { maxWidth: width, shrink: 'name' });
}

/** What top shows of a device: ListDevices' fields it uses. */
export interface TopDevice {
  id: string;
  description: string;
  budgetBytes: number;
  usedBytes: number;
  evictedBytes: number;
  utilization: number;
  lost?: string | null;
}

/** One line per device, as nvidia-smi's header: id, adapter, busy %, memory used of budget; cut to `width`. */
export function deviceSummary(devices: TopDevice[], width = Infinity): string {
  return devices
    .map((d) => {
      const use = `${(d.utilization * 100).toFixed(1)}% busy  ${formatBytes(d.usedBytes)} / ${formatBytes(d.budgetBytes)}${d.evictedBytes > 0 ? ` (${formatBytes(d.evictedBytes)} evicted)` : ''}${d.lost ? `  LOST: ${d.lost}` : ''}`;
      // The adapter's description is what gives way when the line is too long.
      const room = width - d.id.length - use.length - 4;
      return room >= 8 ? `${d.id}  ${truncate(d.description, room)}  ${use}` : truncate(`${d.id}  ${use}`, width);
    })
    .join('\n');
}

interface TopFlags extends ConnectionFlags {
  interval: number;
  sort: SortKey;
  once?: boolean;
}

async function sample(session: Session): Promise<{ at: bigint; processes: ProcessRecord[]; devices: TopDevice[] }> {
  const [result, devices] = (await Promise.all([session.call('ListProcesses', {}), session.call('ListDevices', {})])) as [{ processes: ProcessRecord[] }, { devices: TopDevice[] }];
  return { at: process.hrtime.bigint(), processes: result.processes, devices: devices.devices };
}

async function top(flags: TopFlags): Promise<void> {
  await withControl(flags, async (session) => {
    let sort: SortKey = flags.sort;
    let reverse = false;
    let previous = await sample(session);
    const tty = process.stdout.isTTY === true && !flags.json;
    let quit = false;
    let wake: (() => void) | null = null;
    const stdin = process.stdin;
    const interactive = !flags.once && tty && stdin.isTTY === true;
    const onKey = (data: Buffer) => {
      const key = data.toString();
      if (key === 'q' || key === '\u0003') quit = true;
      else if (key === 'r') reverse = !reverse;
      else if (KEY_BINDINGS[key]) sort = KEY_BINDINGS[key];
      wake?.();
    };
    if (interactive) {
      stdin.setRawMode(true);
      stdin.resume();
      stdin.on('data', onKey);
      process.stdout.write('\x1b[?25l'); // hide the cursor while drawing
    }
    let latest: TopRow[] = [];
    let devices: TopDevice[] = [];
    const draw = () => {
      const rows = sortRows(latest, sort, reverse);
      if (flags.json) {
        const deviceUse = devices.map((d) => ({ id: d.id, description: d.description, utilization: d.utilization, usedBytes: d.usedBytes, budgetBytes: d.budgetBytes, evictedBytes: d.evictedBytes }));
        process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), sort, devices: deviceUse, processes: rows })}\n`);
        return;
      }
      // On a terminal every line fits its width (names and adapters are cut); piped, nothing is cut.
      const width = tty && process.stdout.columns ? process.stdout.columns : undefined;
      const header = `gpunix top - ${new Date().toLocaleTimeString()} - ${rows.length} processes, ${rows.filter((r) => r.state !== 'exited').length} live - sorted by ${sort}${reverse ? ' (reversed)' : ''}`;
      const help = interactive ? '\nkeys: g gpu  m mem  p pid  n name  t tenant  s state  l latency  e preempted  r reverse  q quit' : '';
      const body = `${header}${help}\n${deviceSummary(devices, width)}\n\n${topTable(rows, width)}\n`;
      process.stdout.write(tty ? `\x1b[H\x1b[2J${body}` : `${body}\n`);
    };
    try {
      while (!quit && session.isOpen) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, flags.interval);
        });
        wake = null;
        if (quit) break;
        const current = await sample(session);
        latest = topRows(previous.processes, current.processes, Number(current.at - previous.at));
        devices = current.devices;
        previous = current;
        draw();
        if (flags.once) break;
      }
    } finally {
      if (interactive) {
        stdin.off('data', onKey);
        stdin.setRawMode(false);
        stdin.pause();
        process.stdout.write('\x1b[?25h');
      }
    }
  });
}

function parseInterval(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 50) throw new InvalidArgumentError(`expected milliseconds (at least 50), got ${value}`);
  return n;
}

function parseSort(value: string): SortKey {
  if (!SORT_KEYS.includes(value as SortKey)) throw new InvalidArgumentError(`sort by one of ${SORT_KEYS.join(', ')}, got ${value}`);
  return value as SortKey;
}

export function registerTopCommand(program: Command): void {
  connectionOptions(
    program
      .command('top')
      .description('a live view of the daemon\'s processes: GPU share, memory, state, preemptions, latency (keys change the sort; q quits)')
      .option('--interval <ms>', 'refresh period', parseInterval, 1000)
      .option('--sort <key>', `sort by ${SORT_KEYS.join(', ')} (cpu means gpu)`, parseSort, 'gpu' as SortKey)
      .option('--once', 'print one frame (two samples --interval apart) and exit'),
  ).action((flags: TopFlags) => top(flags));
}
