// The operators' messages (ListProcesses ... DaemonStatus): each checks what the caller may see and
// do, then calls the kernel. A tenant sees and acts on its own processes only: another tenant's
// pid is refused with GPUNIX_E_FORBIDDEN (a pid that does not exist: GPUNIX_E_NO_SUCH_PROCESS), and
// nothing about a foreign process (name, tenant, state) is ever in a reply. The admin sees all.

import { lstatSync, mkdirSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { z } from 'zod';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { Kernel } from '../kernel/kernel.js';
import type { ProcessRecord } from '../kernel/proc.js';
import type { ChromeTrace } from '../kernel/trace.js';
import { PRIORITY_CLASSES } from '../params.js';
import type { Message } from '../protocol/messages.js';
import { describeIssues } from './config.js';
import { checkQuota, Principal, TenantStore } from './tenants.js';

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
  if (principal.admin) return isAbsolute(path) ? path : resolve(imageDir, path);
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
  // Nor through a symbolic link: what already exists of the path must resolve inside the directory.
  // (lstat: a dangling link is there too, and would be written through.)
  const present = (p: string) => lstatSync(p, { throwIfNoEntry: false }) !== undefined;
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

/**
 * Answers one control message: resolves with the Reply's result, or rejects with a GpunixError
 * for a Failure. Never called with process-session messages.
 */
export async function handleControl(ctx: ControlContext, message: Message): Promise<unknown> {
  const { kernel } = ctx;
  switch (message.name) {
    case 'Ping':
      return null;
    case 'ListProcesses':
      return { processes: visibleProcesses(ctx) };
    case 'KillProcess':
      ownProcess(ctx, message.payload.pid);
      return kernel.kill(message.payload.pid);
    case 'SuspendProcess':
      ownProcess(ctx, message.payload.pid);
      return message.payload.swap ? kernel.swapOut(message.payload.pid) : kernel.suspend(message.payload.pid);
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
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const written = await kernel.checkpoint(message.payload.pid, path);
      return { path, ...written };
    }
    case 'MigrateProcess':
      ownProcess(ctx, message.payload.pid);
      return kernel.migrate(message.payload.pid, message.payload.device);
    case 'ListTenants':
      return { tenants: ctx.principal.admin ? kernel.tenants() : kernel.tenants().filter((t) => t.name === ctx.principal.tenant) };
    case 'AddTenant': {
      requireAdmin(ctx, 'adding a tenant');
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
    default:
      throw new GpunixError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `${message.name} is not a control message`);
  }
}
