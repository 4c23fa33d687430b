// Fair sharing between tenants: two tenants of equal weight on one device, one running a single
// busy process ("solo"), the other three ("crowd"), on bare Dawn and on gpunix, in one run.
//
//   bare    bare Dawn, the four clients each on a device of its own (four separate programs, as
//           today): the device serves programs, not tenants, so the crowd gets about 3:1
//   gpunix  gpunix, tenants solo and crowd of weight 1 each: the work should split 1:1
//
// Every client keeps `--depth` submits of a BUSY_WGSL dispatch of `--workgroups` workgroups in
// flight (src/kernel/capabilities.ts's client). Over `--windows` windows of `--window` ms after a
// warm-up, each window reports the tenants' split of the work done (dispatches completed) and,
// under gpunix, of the GPU time charged (accounting.gpuTimeNs), and how far each process's share
// of the charged time is from its share of the work: the accounting's error, which fair sharing
// rests on (src/kernel/sighting.ts says how one poll's completions are charged).
//
// Output: one JSON object on stdout, a table on stderr. See docs/benchmarks.md ("Fair sharing").
//
//   node dist/bench/fairShare.js [--backend NAME] [--windows N] [--window MS] [--workgroups N] [--depth N]

import { parseArgs } from 'node:util';
import { globals } from 'webgpu';
import { benchBackend, contentionLine, machine, measureContention, runBenchmark, takeBackendFlag } from './machine.js';
import { bypassEventPump, createKernel, type ProcessHandle } from '../src/index.js';
import { BusyClient, percentile, sleep, type KernelShape } from '../src/kernel/capabilities.js';

Object.assign(globalThis, globals);

/** Tenant of each client, in order: solo first. */
const TENANTS = ['solo', 'crowd', 'crowd', 'crowd'] as const;

/** A client kept busy until stopped, counting the dispatches it saw complete. */
class BusyLoop {
  completed = 0;
  private stopped = false;
  private readonly done: Promise<void>;
  constructor(
    readonly client: BusyClient,
    depth: number,
  ) {
    this.done = this.run(depth);
  }
  private async run(depth: number): Promise<void> {
    const pending: Promise<unknown>[] = [];
    const count = (): void => {
      this.completed++;
    };
    while (!this.stopped) {
      this.client.submit();
      pending.push(this.client.device.queue.onSubmittedWorkDone().then(count));
      if (pending.length >= depth) await pending.shift();
    }
    await Promise.all(pending);
  }
  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }
}

interface Window {
  /** Dispatches completed by each client in the window. */
  work: number[];
  /** GPU time charged to each process in the window (ms; gpunix only). */
  chargedMs?: number[];
}

/** Crowd over solo: the tenants' split of `values` (1 is an even split between the two tenants). */
const crowdOverSolo = (values: readonly number[]): number => (values[1] + values[2] + values[3]) / values[0];
const median = (values: readonly number[]): number => percentile(values, 0.5);

/** Runs the four loops and samples `windows` windows after `warmUpMs`; `charged` reads each process's GPU time (ns). */
async function sampleWindows(clients: BusyClient[], depth: number, warmUpMs: number, windows: number, windowMs: number, charged?: () => number[]): Promise<Window[]> {
  const loops = clients.map((c) => new BusyLoop(c, depth));
  try {
    // Every client has run before the windows start (a pipeline compiled later starts behind).
    while (loops.some((l) => l.completed === 0)) await sleep(10);
    await sleep(warmUpMs);
    const result: Window[] = [];
    for (let w = 0; w < windows; w++) {
      const work = loops.map((l) => l.completed);
      const ns = charged?.();
      await sleep(windowMs);
      const window: Window = { work: loops.map((l, i) => l.completed - work[i]) };
      if (ns) window.chargedMs = charged!().map((n, i) => (n - ns[i]) / 1e6);
      result.push(window);
    }
    return result;
  } finally {
    await Promise.all(loops.map((l) => l.stop()));
  }
}

interface Spread {
  median: number;
  min: number;
  max: number;
  windows: number[];
}

/** What the table and the JSON say of one side's windows. */
interface SideSummary {
  work_crowd_over_solo: Spread;
  dispatches_per_window: number;
  /** gpunix only. */
  charged_crowd_over_solo?: Spread;
  /** gpunix only: per process and window, |its share of the charged time - its share of the work|. */
  accounting_error?: { median: number; max: number };
}

function summarizeSide(windows: Window[]): SideSummary {
  const workRatios = windows.map((w) => crowdOverSolo(w.work));
  const side: SideSummary = {
    work_crowd_over_solo: { median: median(workRatios), min: Math.min(...workRatios), max: Math.max(...workRatios), windows: workRatios },
    dispatches_per_window: median(windows.map((w) => w.work.reduce((a, b) => a + b, 0))),
  };
  if (windows[0].chargedMs) {
    const chargedRatios = windows.map((w) => crowdOverSolo(w.chargedMs!));
    // Per process and window: its share of the charged time minus its share of the work.
    const errors = windows.flatMap((w) => {
      const work = w.work.reduce((a, b) => a + b, 0);
      const charged = w.chargedMs!.reduce((a, b) => a + b, 0);
      return w.work.map((n, i) => Math.abs(w.chargedMs![i] / charged - n / work));
    });
    side.charged_crowd_over_solo = { median: median(chargedRatios), min: Math.min(...chargedRatios), max: Math.max(...chargedRatios), windows: chargedRatios };
    side.accounting_error = { median: median(errors), max: Math.max(...errors) };
  }
  return side;
}

async function main(): Promise<void> {
  const target = benchBackend(takeBackendFlag());
  const usage = 'usage: node dist/bench/fairShare.js [--backend NAME] [--windows N] [--window MS] [--workgroups N] [--depth N]';
  const { values } = parseArgs({
    options: {
      windows: { type: 'string' },
      window: { type: 'string' },
      workgroups: { type: 'string' },
      depth: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stderr.write(`${usage}\n`);
    return;
  }
  const positiveInteger = (name: string, text: string | undefined, fallback: number): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${text}\n${usage}`);
    return n;
  };
  const windows = positiveInteger('windows', values.windows, 8);
  const windowMs = positiveInteger('window', values.window, 500);
  const depth = positiveInteger('depth', values.depth, 3);
  const shape: KernelShape = { workgroups: positiveInteger('workgroups', values.workgroups, 128), iterations: 1000 };
  const warmUpMs = 500;

  const bareAdapter = await target.bare.requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const kernel = await createKernel({ ...target.kernel, tenants: { solo: {}, crowd: {} } });
  const stopContention = measureContention();
  const log = (text: string): void => {
    process.stderr.write(text);
  };

  log(`bare Dawn: four clients, a device each, ${windows} windows of ${windowMs} ms...\n`);
  // Bare Dawn polls as dawn.node does by itself, not through the kernel's pump.
  bypassEventPump(true);
  const bareClients = await Promise.all(TENANTS.map((tenant, i) => BusyClient.open(target.bare, shape, `bare-${tenant}-${i}`)));
  const bare = await sampleWindows(bareClients, depth, warmUpMs, windows, windowMs);
  for (const c of bareClients) await c.verify();
  for (const c of bareClients) c.destroy();
  bypassEventPump(false);

  log(`gpunix: tenants solo (one process) and crowd (three), weight 1 each...\n`);
  const procs: ProcessHandle[] = [];
  for (const [i, tenant] of TENANTS.entries()) procs.push(await kernel.spawn({ name: `${tenant}-${i}`, tenant }));
  const clients = await Promise.all(procs.map((p, i) => BusyClient.open(target.process(p).gpu, shape, `gpunix-${TENANTS[i]}-${i}`)));
  const gpunix = await sampleWindows(clients, depth, warmUpMs, windows, windowMs, () => procs.map((p) => p.record().accounting.gpuTimeNs));
  for (const c of clients) await c.verify();
  for (const c of clients) c.destroy();
  await Promise.all(procs.map((p) => p.exit()));
  await kernel.shutdown();
  const contention = stopContention();

  const report = {
    benchmark: 'gpunix-fair-share',
    ...machine(bareAdapter, target),
    params: { windows, window_ms: windowMs, warm_up_ms: warmUpMs, depth, workgroups: shape.workgroups, iterations: shape.iterations },
    bare: summarizeSide(bare),
    gpunix: summarizeSide(gpunix),
    contention: { wall_s: contention.wallSeconds, other_cpu_s: contention.otherCpuSeconds },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const info = bareAdapter.info;
  const fmt = (x: number): string => x.toFixed(2);
  const row = (name: string, s: SideSummary): string => {
    const work = s.work_crowd_over_solo;
    const charged = s.charged_crowd_over_solo ? fmt(s.charged_crowd_over_solo.median) : '-';
    const error = s.accounting_error ? `${(100 * s.accounting_error.median).toFixed(1)} / ${(100 * s.accounting_error.max).toFixed(1)}` : '-';
    return `${name.padEnd(8)} ${fmt(work.median).padStart(13)} ${`${fmt(work.min)} - ${fmt(work.max)}`.padStart(13)} ${charged.padStart(16)} ${error.padStart(22)}\n`;
  };
  log(`\n${info.description || info.vendor}, node ${process.version}, ${windows} windows of ${windowMs} ms, ${shape.workgroups} workgroups per dispatch, depth ${depth}\n`);
  log(`side     work crowd:solo (min - max)    charged crowd:solo  accounting error % med/max\n`);
  log(row('bare', report.bare));
  log(row('gpunix', report.gpunix));
  log(`target: gpunix splits the work 1:1 between the tenants (bare Dawn serves programs: about 3:1)\n`);
  log(contentionLine(contention));
}

runBenchmark(main);
