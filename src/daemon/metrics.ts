// The opt-in Prometheus endpoint (GET /metrics on its own address). Values are read from the
// kernel at scrape time; counters that must outlive processes (per-tenant GPU time, latency) are
// accumulated from per-process deltas so they stay monotonic when processes leave the table.
// Names follow Prometheus conventions: gpunix_ prefix, base units (_seconds, _bytes), _total.

import { readFileSync } from 'node:fs';
import { createServer, Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Kernel } from '../kernel/kernel.js';
import { LATENCY_BUCKETS_US } from '../kernel/latency.js';
import type { SessionCounts } from './control.js';

const BUCKETS_SECONDS = LATENCY_BUCKETS_US.map((us) => us / 1e6);

/** Why the daemon is not healthy now (`/healthz` answers 503 with it), or null when it serves. */
export type HealthCheck = () => string | null;

/** gpunix's version, Node's and the webgpu package's (Dawn's build), for gpunix_build_info. */
export function buildInfo(): { version: string; node: string; webgpu: string } {
  const readVersion = (file: string): string => {
    try {
      return String((JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version ?? 'unknown');
    } catch {
      return 'unknown';
    }
  };
  // This file is src/daemon/ or dist/src/daemon/: the package's package.json is the first one up
  // the tree that names gpunix.
  let version = 'unknown';
  for (let dir = dirname(fileURLToPath(import.meta.url)); dirname(dir) !== dir; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'gpunix') {
        version = String(pkg.version);
        break;
      }
    } catch {
      // No package.json here: look further up.
    }
  }
  let webgpu = 'unknown';
  try {
    webgpu = readVersion(createRequire(import.meta.url).resolve('webgpu/package.json'));
  } catch {
    // Not resolvable from here (bundled differently): unknown.
  }
  return { version, node: process.version, webgpu };
}

/** A process's devices as one label value: ids joined with ',' ("" before it has a device). */
function deviceLabel(kernel: Kernel, pid: number): string {
  try {
    return kernel.devicesOf(pid).join(',');
  } catch {
    return '';
  }
}

/** What was last seen of a process, to turn its totals into deltas. */
interface Seen {
  tenant: string;
  gpuTimeNs: number;
  latencyCounts: number[];
  latencySumUs: number;
}

interface TenantTotals {
  gpuTimeNs: number;
  buckets: number[];
  count: number;
  sumUs: number;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly seen = new Map<number, Seen>();
  private readonly tenantTotals = new Map<string, TenantTotals>();
  private server: Server | null = null;
  readonly protocolErrors: Counter<'code'>;
  readonly sessionsOpened: Counter<'role'>;
  readonly authFailures: Counter;
  readonly processExits: Counter<'reason'>;

  constructor(
    private readonly kernel: Kernel,
    sessions: () => SessionCounts,
    private readonly health: HealthCheck = () => null,
  ) {
    const registers = [this.registry];
    const self = this;
    const devices = () => kernel.stats().devices;
    new Gauge({
      name: 'gpunix_device_utilization_ratio',
      help: 'Fraction of the kernel lifetime the device spent on processes\' work (0-1)',
      labelNames: ['device', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.id, backend: d.backend }, d.utilization);
      },
    });
    const deviceBytes = (name: string, help: string, pick: (d: ReturnType<typeof devices>[number]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['device', 'backend'],
        registers,
        collect() {
          this.reset();
          for (const d of devices()) this.set({ device: d.id, backend: d.backend }, pick(d));
        },
      });
    deviceBytes('gpunix_device_memory_budget_bytes', 'Device memory budget', (d) => d.budgetBytes);
    deviceBytes('gpunix_device_memory_used_bytes', 'Device memory resident on the device, by the kernel\'s count', (d) => d.usedBytes);
    deviceBytes('gpunix_device_memory_free_bytes', 'Device memory budget not resident now (budget minus used)', (d) => Math.max(0, d.budgetBytes - d.usedBytes));
    deviceBytes('gpunix_device_memory_evicted_bytes', 'Memory of the device\'s buffers evicted to host memory', (d) => d.evictedBytes);
    // Counters the kernel keeps per device since it opened it: read, not accumulated here.
    const deviceCounter = (name: string, help: string, pick: (d: ReturnType<typeof devices>[number]) => number) =>
      new Counter({
        name,
        help,
        labelNames: ['device', 'backend'],
        registers,
        collect() {
          this.reset();
          for (const d of devices()) this.inc({ device: d.id, backend: d.backend }, pick(d));
        },
      });
    deviceCounter('gpunix_device_busy_seconds_total', 'Device time spent on processes\' work, measured at completions', (d) => d.busyNs / 1e9);
    deviceCounter('gpunix_device_preemptions_total', 'Switches away from a process that still had work queued on the device', (d) => d.preemptions);
    deviceCounter('gpunix_device_evictions_total', 'Buffers evicted from the device to host memory', (d) => d.evictions);
    deviceCounter('gpunix_device_restores_total', 'Evicted buffers restored onto the device', (d) => d.restores);
    deviceCounter('gpunix_device_held_submits_total', 'Programs\' whole submits held and given to Dawn together with the rest of their burst', (d) => d.heldSubmits.submits);
    deviceCounter('gpunix_device_held_submit_batches_total', 'Real submits made of held ones', (d) => d.heldSubmits.batches);
    new Gauge({
      name: 'gpunix_device_up',
      help: 'Whether the device is usable (0: lost or destroyed)',
      labelNames: ['device', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.id, backend: d.backend }, d.lost === null ? 1 : 0);
      },
    });
    new Gauge({
      name: 'gpunix_device_processes',
      help: 'Processes the device\'s scheduler holds: live ones that have used the device, and ended ones whose work is still queued or on it',
      labelNames: ['device', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.id, backend: d.backend }, d.processes);
      },
    });
    new Gauge({
      name: 'gpunix_device_info',
      help: 'The device\'s adapter (always 1): backend, vendor, architecture, adapter name, driver description, CPU fallback, WebGPU feature level',
      labelNames: ['device', 'backend', 'vendor', 'architecture', 'adapter', 'driver', 'fallback', 'feature_level'],
      registers,
      collect() {
        this.reset();
        for (const d of kernel.describeDevices()) {
          this.set({ device: d.id, backend: d.backend, vendor: d.vendor, architecture: d.architecture, adapter: d.device, driver: d.description, fallback: String(d.isFallbackAdapter), feature_level: d.featureLevel }, 1);
        }
      },
    });
    const swap = () => kernel.stats().swap;
    new Counter({
      name: 'gpunix_swap_bytes_total',
      help: 'Bytes moved between devices and host memory by eviction (out) and restore (in)',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        const s = swap();
        this.inc({ direction: 'out' }, s.bytesOut);
        this.inc({ direction: 'in' }, s.bytesIn);
      },
    });
    new Counter({
      name: 'gpunix_swap_transfer_seconds_total',
      help: 'Time swap transfers were moving data, by direction (out: evictions, in: restores)',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        const s = swap();
        this.inc({ direction: 'out' }, s.nsOut / 1e9);
        this.inc({ direction: 'in' }, s.nsIn / 1e9);
      },
    });
    new Gauge({
      name: 'gpunix_swap_host_bytes',
      help: 'Evicted contents held in host memory now',
      registers,
      collect() {
        this.set(swap().hostBytes);
      },
    });
    new Gauge({
      name: 'gpunix_swap_spilled_bytes',
      help: 'Evicted contents in spill files now',
      registers,
      collect() {
        this.set(swap().spilledBytes);
      },
    });
    new Counter({
      name: 'gpunix_swap_spill_failures_total',
      help: 'Spill file writes or read-backs that failed (the contents stayed where they were)',
      registers,
      collect() {
        this.reset();
        this.inc(swap().spillFailures);
      },
    });
    // The daemon's own process under the usual exporter names (prom-client's full default set is
    // not promtool-clean): the host memory it holds for everyone, and its CPU time.
    new Gauge({
      name: 'process_resident_memory_bytes',
      help: 'Resident memory of the gpunixd process',
      registers,
      collect() {
        this.set(process.memoryUsage.rss());
      },
    });
    new Counter({
      name: 'process_cpu_seconds_total',
      help: 'User and system CPU time of the gpunixd process',
      registers,
      collect() {
        const { user, system } = process.cpuUsage();
        this.reset();
        this.inc((user + system) / 1e6);
      },
    });
    new Gauge({ name: 'process_start_time_seconds', help: 'When the gpunixd process started (seconds since the epoch)', registers }).set(
      Math.round(Date.now() / 1000 - process.uptime()),
    );
    const build = buildInfo();
    new Gauge({
      name: 'gpunix_build_info',
      help: 'gpunixd\'s build (always 1): gpunix version, Node version, webgpu (Dawn) package version',
      labelNames: ['version', 'node', 'webgpu'],
      registers,
    }).set(build, 1);
    new Counter({
      name: 'gpunix_watchdog_processes_ended_total',
      help: 'Processes the watchdog ended: a piece of their device work ran longer than maxDispatchMs',
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.processesEnded);
      },
    });
    new Counter({
      name: 'gpunix_watchdog_pieces_excused_total',
      help: "Pieces of device work the host's clock put over maxDispatchMs whose device time (GPU timestamps) cleared them: a busy kernel thread saw their completion late",
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.piecesExcused);
      },
    });
    new Counter({
      name: 'gpunix_watchdog_bracket_stamps_total',
      help: 'GPU timestamps written around whole submits whose kernels run loops the watchdog checks (what the device-time verdict costs: tens of microseconds of device time each on a CPU device)',
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.bracketStamps);
      },
    });
    new Counter({
      name: 'gpunix_watchdog_spent_flag_reads_total',
      help: "Reads of a process's budget-spent flag (a copy and a map of one word) after a piece of its device work ran within maxDispatchMs but over an eighth of it",
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.spentFlagReads);
      },
    });
    new Counter({
      name: 'gpunix_watchdog_ended_by_spent_flag_total',
      help: 'Processes the watchdog ended because a loop of theirs ran out of its iteration budget within maxDispatchMs (the device ran faster than its loop-rate calibration said); also counted in gpunix_watchdog_processes_ended_total',
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.endedBySpentFlag);
      },
    });
    new Counter({
      name: 'gpunix_watchdog_shared_openings_total',
      help: "Brackets that opened from the previous bracket's closing timestamp instead of writing one of their own",
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.sharedOpenings);
      },
    });
    new Gauge({
      name: 'gpunix_processes',
      help: 'Processes in the table, by state',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(kernel.stats().processes.byState)) this.set({ state }, n);
      },
    });
    new Counter({
      name: 'gpunix_tenant_gpu_time_seconds_total',
      help: 'Device time used by the tenant\'s processes',
      labelNames: ['tenant'],
      registers,
      collect() {
        self.update();
        this.reset();
        for (const [tenant, totals] of self.tenantTotals) this.inc({ tenant }, totals.gpuTimeNs / 1e9);
      },
    });
    new Gauge({
      name: 'gpunix_tenant_memory_bytes',
      help: 'Device memory the tenant\'s processes hold',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        for (const t of kernel.tenants()) this.set({ tenant: t.name }, t.bytes);
      },
    });
    new Gauge({
      name: 'gpunix_tenant_memory_limit_bytes',
      help: 'The tenant\'s memory quota (absent: no limit)',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        for (const t of kernel.tenants()) if (t.memoryLimit !== null) this.set({ tenant: t.name }, t.memoryLimit);
      },
    });
    new Gauge({
      name: 'gpunix_tenant_processes',
      help: 'Live processes of the tenant',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        for (const t of kernel.tenants()) this.set({ tenant: t.name }, t.processes);
      },
    });
    new Counter({
      name: 'gpunix_process_gpu_time_seconds_total',
      help: 'Device time used by the process',
      labelNames: ['pid', 'tenant', 'name', 'device'],
      registers,
      collect() {
        this.reset();
        for (const p of kernel.ps()) this.inc({ pid: String(p.pid), tenant: p.tenant, name: p.name, device: deviceLabel(kernel, p.pid) }, p.accounting.gpuTimeNs / 1e9);
      },
    });
    new Gauge({
      name: 'gpunix_process_memory_bytes',
      help: 'Device memory the process holds (resident and evicted)',
      labelNames: ['pid', 'tenant', 'name', 'device'],
      registers,
      collect() {
        this.reset();
        for (const p of kernel.ps()) this.set({ pid: String(p.pid), tenant: p.tenant, name: p.name, device: deviceLabel(kernel, p.pid) }, p.accounting.bytesAllocated);
      },
    });
    new Gauge({
      name: 'gpunix_sessions',
      help: 'Open sessions, by role',
      labelNames: ['role'],
      registers,
      collect() {
        this.reset();
        for (const [role, n] of Object.entries(sessions())) this.set({ role }, n);
      },
    });
    this.sessionsOpened = new Counter({ name: 'gpunix_sessions_opened_total', help: 'Sessions that completed the handshake, by role', labelNames: ['role'], registers });
    this.protocolErrors = new Counter({ name: 'gpunix_protocol_errors_total', help: 'Sessions closed for a protocol error, by code', labelNames: ['code'], registers });
    this.authFailures = new Counter({ name: 'gpunix_auth_failures_total', help: 'Handshakes refused for a missing or wrong token', registers });
    this.processExits = new Counter({ name: 'gpunix_process_exits_total', help: 'Processes of sessions that ended, by exit reason (normal, error, killed, watchdog, ...)', labelNames: ['reason'], registers });
    // Prometheus histograms cannot be set from bucket counts with prom-client's Histogram, so this
    // one is a custom metric with the same exposition.
    this.registry.registerMetric({
      name: 'gpunix_submission_latency_seconds',
      help: 'Submission latency (program call to device completion), per tenant',
      type: 'histogram',
      aggregator: 'sum',
      get: async () => {
        self.update();
        const values: Array<{ value: number; labels: Record<string, string | number>; metricName: string }> = [];
        for (const [tenant, totals] of self.tenantTotals) {
          let cumulative = 0;
          BUCKETS_SECONDS.forEach((le, i) => {
            cumulative += totals.buckets[i];
            values.push({ metricName: 'gpunix_submission_latency_seconds_bucket', labels: { le, tenant }, value: cumulative });
          });
          values.push({ metricName: 'gpunix_submission_latency_seconds_bucket', labels: { le: '+Inf', tenant }, value: totals.count });
          values.push({ metricName: 'gpunix_submission_latency_seconds_sum', labels: { tenant }, value: totals.sumUs / 1e6 });
          values.push({ metricName: 'gpunix_submission_latency_seconds_count', labels: { tenant }, value: totals.count });
        }
        return { name: 'gpunix_submission_latency_seconds', help: 'Submission latency (program call to device completion), per tenant', type: 'histogram', values, aggregator: 'sum' };
      },
      reset: () => {},
    } as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** Folds every process's growth since the last look into its tenant's totals. */
  update(): void {
    const present = new Set<number>();
    for (const p of this.kernel.ps()) {
      present.add(p.pid);
      const prev = this.seen.get(p.pid) ?? { tenant: p.tenant, gpuTimeNs: 0, latencyCounts: [], latencySumUs: 0 };
      let totals = this.tenantTotals.get(p.tenant);
      if (!totals) this.tenantTotals.set(p.tenant, (totals = { gpuTimeNs: 0, buckets: new Array(LATENCY_BUCKETS_US.length + 1).fill(0), count: 0, sumUs: 0 }));
      totals.gpuTimeNs += Math.max(0, p.accounting.gpuTimeNs - prev.gpuTimeNs);
      const latency = p.accounting.latency;
      const sumUs = latency.meanUs * latency.count;
      latency.counts.forEach((n, i) => {
        const delta = Math.max(0, n - (prev.latencyCounts[i] ?? 0));
        totals!.buckets[i] += delta;
        totals!.count += delta;
      });
      totals.sumUs += Math.max(0, sumUs - prev.latencySumUs);
      this.seen.set(p.pid, { tenant: p.tenant, gpuTimeNs: p.accounting.gpuTimeNs, latencyCounts: [...latency.counts], latencySumUs: sumUs });
    }
    for (const pid of this.seen.keys()) if (!present.has(pid)) this.seen.delete(pid);
  }

  /**
   * Serves GET /metrics and GET /healthz on host:port (0: any free port); resolves with the
   * address. /healthz is 200 "ok" while the daemon serves, 503 with the reason otherwise (draining,
   * no usable device), for load balancers and liveness probes.
   */
  listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer((request, response) => {
      const path = (request.url ?? '/').split('?')[0];
      const method = request.method ?? 'GET';
      if ((method === 'GET' || method === 'HEAD') && path === '/healthz') {
        let problem: string | null;
        try {
          problem = this.health();
        } catch (error) {
          problem = `health check failed: ${(error as Error).message}`;
        }
        response.writeHead(problem === null ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
        response.end(method === 'HEAD' ? undefined : `${problem ?? 'ok'}\n`);
        return;
      }
      if (method !== 'GET' || path !== '/metrics') {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('gpunixd: metrics are at /metrics, health at /healthz\n');
        return;
      }
      this.registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (error: Error) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`gpunixd: ${error.message}\n`),
      );
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve(server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return Promise.resolve();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}
