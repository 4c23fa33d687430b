// The opt-in Prometheus endpoint (GET /metrics on its own address). Values are read from the
// kernel at scrape time; counters that must outlive processes (per-tenant GPU time, latency) are
// accumulated from per-process deltas so they stay monotonic when processes leave the table.
// Names follow Prometheus conventions: gpunix_ prefix, base units (_seconds, _bytes), _total.

import { createServer, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Kernel } from '../kernel/kernel.js';
import { LATENCY_BUCKETS_US } from '../kernel/latency.js';
import type { SessionCounts } from './control.js';

const BUCKETS_SECONDS = LATENCY_BUCKETS_US.map((us) => us / 1e6);

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

  constructor(
    private readonly kernel: Kernel,
    sessions: () => SessionCounts,
  ) {
    const registers = [this.registry];
    const self = this;
    const devices = () => kernel.stats().devices;
    new Gauge({
      name: 'gpunix_device_utilization_ratio',
      help: 'Fraction of the kernel lifetime the device spent on processes\' work (0-1)',
      labelNames: ['device'],
      registers,
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.id }, d.utilization);
      },
    });
    const deviceBytes = (name: string, help: string, pick: (d: ReturnType<typeof devices>[number]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['device'],
        registers,
        collect() {
          this.reset();
          for (const d of devices()) this.set({ device: d.id }, pick(d));
        },
      });
    deviceBytes('gpunix_device_memory_budget_bytes', 'Device memory budget', (d) => d.budgetBytes);
    deviceBytes('gpunix_device_memory_used_bytes', 'Device memory resident on the device, by the kernel\'s count', (d) => d.usedBytes);
    deviceBytes('gpunix_device_memory_evicted_bytes', 'Memory of the device\'s buffers evicted to host memory', (d) => d.evictedBytes);
    new Counter({
      name: 'gpunix_watchdog_processes_ended_total',
      help: 'Processes the watchdog ended: a piece of their device work ran longer than maxDispatchMs',
      registers,
      collect() {
        this.reset();
        this.inc(kernel.stats().watchdog.processesEnded);
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
      labelNames: ['pid', 'tenant', 'name'],
      registers,
      collect() {
        this.reset();
        for (const p of kernel.ps()) this.inc({ pid: String(p.pid), tenant: p.tenant, name: p.name }, p.accounting.gpuTimeNs / 1e9);
      },
    });
    new Gauge({
      name: 'gpunix_process_memory_bytes',
      help: 'Device memory the process holds (resident and evicted)',
      labelNames: ['pid', 'tenant', 'name'],
      registers,
      collect() {
        this.reset();
        for (const p of kernel.ps()) this.set({ pid: String(p.pid), tenant: p.tenant, name: p.name }, p.accounting.bytesAllocated);
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

  /** Serves GET /metrics on host:port (0: any free port); resolves with the address. */
  listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer((request, response) => {
      if (request.method !== 'GET' || (request.url ?? '/').split('?')[0] !== '/metrics') {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('gpunixd: metrics are at /metrics\n');
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
