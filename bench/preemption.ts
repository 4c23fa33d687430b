// Preemption: a realtime client's submit-to-completion latency while a batch client saturates the
// device, on bare Dawn and on gpunix with and without atomization, in one process and one run.
//
//   a   bare Dawn, each client on its own device (two devices on one adapter): what two separate
//       programs get on this GPU today; the driver interleaves their queues as it likes
//   a1  bare Dawn, both clients on one device: one FIFO queue, no priorities (the worst case)
//   ap  a with the Dawn event polling gpunix's kernel installs (src/device/eventPump.ts): how much
//       of a's picture is dawn.node's polling rather than the device
//   b   gpunix, atomize: false: strict priority between processes, but a batch dispatch runs whole
//   c   gpunix, atomization on: batch dispatches run as atoms the realtime process can overtake
//
// The batch client keeps `--depth` submits of a long kernel in flight; the realtime client submits
// a short kernel, awaits onSubmittedWorkDone, sleeps `--interval` ms, again. Each configuration
// also runs the realtime client alone (its solo latency) and the batch client alone. Windows are
// interleaved over `--rounds` rounds, the order rotating, so drift hits every configuration alike;
// latencies are pooled over the rounds. batch_throughput_ratio = batch dispatches/s under
// contention / batch alone on bare Dawn as shipped (its polling spin and all);
// batch_ratio_vs_paced_bare divides by ap's batch alone instead (the same polling as gpunix).
// Bare configurations run with the kernel's event pump bypassed (bypassEventPump), so they see
// dawn.node exactly as a program without gpunix does. The clients and loops are src/kernel/capabilities.ts's
// (the same `gpunix caps` measures with).
//
// Latency is from the realtime client's submit call; `from due` is from when it was due to submit
// (its pause over): where the device's work runs on the program's own thread (Dawn's GL backends
// over llvmpipe, whose submit runs the kernel), a program waits for the thread before it can
// submit, and only the second figure shows that wait (LatencySample.lateMs).
//
// Each gpunix configuration also reports where its realtime latency went (`tail`): every sample
// matched to its run in the kernel's trace and split into the call path, the dispatcher's queue,
// the wait behind work already on the device, its own run until its completion was seen, and the
// program's resumption; with the slowest 1 % broken down the same way (tailBreakdown).
//
// Output: one JSON object on stdout, a table on stderr. See docs/benchmarks.md.
//
//   node dist/bench/preemption.js [--rounds N] [--duration MS] [--solo MS] [--interval MS] [--depth N]
//        [--target-slice MS] [--max-in-flight N] [--batch-workgroups N] [--iterations N] [--trace FILE]
//        [--dawn-poll-interval US] [--uncontended-slice MS] [--uncontended-max-in-flight N]
//        [--contention-window MS] [--configs a,a1,ap,b,c]

import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { globals } from 'webgpu';
import { benchBackend, collectGarbage, contentionLine, machine, measureContention, runBenchmark, takeBackendFlag } from './machine.js';
import { bypassEventPump, createKernel, Kernel, ProcessHandle } from '../src/index.js';
import type { ChromeTrace } from '../src/index.js';
import {
  batchAlone,
  BATCH_SHAPE,
  BATCH_TARGET_MS,
  BusyClient,
  calibrateBatchShape,
  contention,
  fromDueMs,
  KernelShape,
  LatencySample,
  percentile,
  pooled,
  rate,
  realtimeLatencies,
  realtimeSamples,
  REALTIME_SHAPE,
  summarize,
  Throughput,
} from '../src/kernel/capabilities.js';

Object.assign(globalThis, globals);

/** Experimental scheduler parameters a --variant may set (booleans: 0 or 1), not kernel options (src/kernel/dispatch.ts). */
const EXPERIMENTS = ['standbyBound'];

/** The least ratio of the batch kernel's length to the realtime kernel's submit-to-completion (the issue: 50x), with a margin. */
const MIN_LENGTH_RATIO = 60;

const usage = `usage: node dist/bench/preemption.js [options]
  --rounds N           interleaved rounds; latencies are pooled over them (default 3)
  --duration MS        each contention window (default 2000)
  --solo MS            each realtime-alone and batch-alone window (default 1000)
  --interval MS        realtime client's pause between submits (default 5)
  --depth N            batch submits kept in flight (default 3)
  --target-slice MS    gpunix (c): targetSliceMs (default: the kernel's, 1)
  --max-in-flight N    gpunix (b, c): maxInFlight (default: the kernel's, 2)
  --batch-workgroups N batch kernel's workgroups (default ${BATCH_SHAPE.workgroups}, scaled up on a device
                       where it takes under ${BATCH_TARGET_MS * 0.8} ms)
  --iterations N       loop trips per invocation of both kernels (default ${BATCH_SHAPE.iterations}, likewise)
  --uncontended-slice MS, --uncontended-max-in-flight N, --contention-window MS
                       gpunix (c): the scheduler's uncontended bounds (default: the kernel's, 4 x slice, 4, 100)
  --configs LIST       which of a,a1,ap,b,c to run (default all; a always runs: it is the baseline)
  --backend B          Dawn backend for every configuration: bare Dawn on B, gpunix with backends [B]
                       (vulkan, opengles, opengl, ...; default: the platform's)
  --variant SETTINGS   another atomized gpunix configuration in the same run, interleaved with the
                       others, e.g. targetSliceMs=2,maxInFlight=3 (kernel options, or the experimental
                       scheduler parameters ${EXPERIMENTS.join(', ')} as 0/1; repeatable)
  --trace FILE         write (c)'s atom timeline (Chrome trace JSON, for Perfetto) to FILE
  --samples FILE       write every realtime sample ([start ms, latency ms, late ms]), each configuration's
                       contention windows and the GC pauses to FILE (JSON), for a closer look at tails
  --dawn-poll-interval US
                       gpunix kernels' dawnPollIntervalUs (default: the kernel's, 100; 0 = dawn.node's
                       own polling, as bare Dawn)
JSON goes to stdout, the table and progress to stderr.`;




/** One configuration's clients and what they measured over the rounds. */
interface Config {
  /** a, a1, ap, b, c, or `c:<settings>` for a --variant. */
  key: string;
  /** Whether Dawn's polls go through the kernel's event pump during this configuration's windows (bare a and a1: no). */
  pumped: boolean;
  name: string;
  realtime: BusyClient;
  batch: BusyClient;
  /** False for a1: it shares a's solo and batch-alone windows (same bare Dawn). */
  ownBaseline: boolean;
  kernel?: Kernel;
  batchProc?: ProcessHandle;
  solo: LatencySample[];
  alone: Throughput[];
  contended: LatencySample[];
  /** The contention windows' spans (performance.now(), ms), for the GC time inside them. */
  windows: Array<[number, number]>;
  batchContended: Throughput[];
  atoms: number;
  preemptions: number;
  wholeDispatches: number;
}

/** The components of one realtime sample's latency (ms), from the kernel's trace of its run. */
interface LatencyParts {
  /** The program's submit call to the dispatcher's queue (the vgpu call path). */
  call: number;
  /** Queued in the dispatcher until its run was put on the device. */
  dispatch: number;
  /** On the device queue behind work issued before it (as JavaScript saw that work complete). */
  ahead: number;
  /** Its own device time plus the time until its completion was seen. */
  run: number;
  /** From the completion seen by the dispatcher to the program's await resuming. */
  resolve: number;
}
const PARTS: Array<keyof LatencyParts> = ['call', 'dispatch', 'ahead', 'run', 'resolve'];

/**
 * Where a gpunix configuration's contended realtime latency goes: each sample matched to its run
 * in the kernel's trace (the run the sample's submit was enqueued in), split into LatencyParts;
 * their p50 and p99, and for the slowest 1 % of samples the mean of each part, how many were a
 * contention window's first submit (the batch process was uncontended until then) and how many
 * overlapped a GC pause. Also the batch atoms' device time as the dispatcher saw it (start to
 * completion seen) against the slice they were sized for, and how many fences were ahead of the
 * realtime runs when they were issued.
 */
function tailBreakdown(trace: ChromeTrace, c: Config, overlapsGc: (s: LatencySample) => boolean): Record<string, unknown> {
  type X = { tid: number; ts: number; dur: number; args: Record<string, number> };
  const xs = trace.traceEvents.filter((e) => e.ph === 'X') as unknown as X[];
  const realtimeTid = (trace.traceEvents.find((e) => e.ph === 'M' && e.name === 'thread_name' && String((e.args as { name: string }).name).startsWith(`${c.key}-realtime`)) as { tid?: number } | undefined)?.tid;
  const runs = xs.filter((e) => e.tid === realtimeTid && e.args.enqueuedUs !== undefined).sort((p, q) => p.args.enqueuedUs - q.args.enqueuedUs);
  const enqueued = runs.map((e) => e.args.enqueuedUs);
  const firsts = new Set(c.windows.map(([from, to]) => c.contended.find((x) => x.startMs >= from && x.startMs < to)));
  const matched: Array<{ sample: LatencySample; parts: LatencyParts; ahead: number }> = [];
  for (const sample of c.contended) {
    const startUs = sample.startMs * 1000;
    let lo = 0;
    let hi = enqueued.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (enqueued[mid] < startUs) lo = mid + 1;
      else hi = mid;
    }
    const run = runs[lo];
    // The sample's own run was enqueued after its start and before its completion.
    if (!run || run.args.enqueuedUs > startUs + sample.latencyMs * 1000) continue;
    const endUs = run.ts + run.dur;
    matched.push({
      sample,
      ahead: run.args.ahead,
      parts: {
        call: (run.args.enqueuedUs - startUs) / 1000,
        dispatch: (run.args.issuedUs - run.args.enqueuedUs) / 1000,
        ahead: (run.ts - run.args.issuedUs) / 1000,
        run: run.dur / 1000,
        resolve: (startUs + sample.latencyMs * 1000 - endUs) / 1000,
      },
    });
  }
  const round = (n: number): number => Math.round(n * 1000) / 1000;
  const slowest = [...matched].sort((p, q) => q.sample.latencyMs - p.sample.latencyMs).slice(0, Math.max(1, Math.ceil(matched.length / 100)));
  const atoms = xs.filter((e) => e.tid !== realtimeTid && e.args.size !== undefined && c.windows.some(([from, to]) => e.ts >= from * 1000 && e.ts < to * 1000));
  const atomMs = atoms.map((e) => e.dur / 1000);
  // Time the device was seen with nothing on it while the batch client had work: a piece issued
  // after everything before it was seen complete left the device idle at least from then to its
  // issue (what an issue lead too short costs).
  const windowOf = (e: X): number => c.windows.findIndex(([from, to]) => e.ts >= from * 1000 && e.ts < to * 1000);
  const inWindows = xs.filter((e) => e.args.issuedUs !== undefined && windowOf(e) >= 0).sort((p, q) => p.ts - q.ts);
  let idleUs = 0;
  let lateIssues = 0;
  for (let i = 1; i < inWindows.length; i++) {
    const gap = inWindows[i].args.issuedUs - (inWindows[i - 1].ts + inWindows[i - 1].dur);
    if (gap > 0 && inWindows[i].tid !== realtimeTid && windowOf(inWindows[i]) === windowOf(inWindows[i - 1])) {
      idleUs += gap;
      lateIssues++;
    }
  }
  const windowUs = c.windows.reduce((sum, [from, to]) => sum + (to - from) * 1000, 0);
  return {
    matched: matched.length,
    p50_ms: Object.fromEntries(PARTS.map((k) => [k, round(percentile(matched.map((m) => m.parts[k]), 0.5))])),
    p99_ms: Object.fromEntries(PARTS.map((k) => [k, round(percentile(matched.map((m) => m.parts[k]), 0.99))])),
    slowest_1pct: {
      samples: slowest.length,
      latency_ms: round(slowest.reduce((sum, m) => sum + m.sample.latencyMs, 0) / slowest.length),
      mean_ms: Object.fromEntries(PARTS.map((k) => [k, round(slowest.reduce((sum, m) => sum + m.parts[k], 0) / slowest.length)])),
      window_first_submits: slowest.filter((m) => firsts.has(m.sample)).length,
      overlapping_gc: slowest.filter((m) => overlapsGc(m.sample)).length,
      fences_ahead_mean: round(slowest.reduce((sum, m) => sum + m.ahead, 0) / slowest.length),
    },
    fences_ahead_p50: percentile(matched.map((m) => m.ahead), 0.5),
    fences_ahead_p99: percentile(matched.map((m) => m.ahead), 0.99),
    batch_atoms: atoms.length,
    /** Batch pieces issued after the device was seen idle, and the fraction of the windows it sat so. */
    batch_late_issues: lateIssues,
    device_idle_seen_fraction: round(idleUs / windowUs),
    batch_atom_ms_p50: round(percentile(atomMs, 0.5)),
    batch_atom_ms_p90: round(percentile(atomMs, 0.9)),
    batch_atom_ms_p99: round(percentile(atomMs, 0.99)),
  };
}

function positive(name: string, text: string | undefined, integer: boolean): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!(n > 0) || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}\n${usage}`);
  return n;
}

async function main(): Promise<void> {
  const target = benchBackend(takeBackendFlag());
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      duration: { type: 'string' },
      solo: { type: 'string' },
      interval: { type: 'string' },
      depth: { type: 'string' },
      'target-slice': { type: 'string' },
      'max-in-flight': { type: 'string' },
      'batch-workgroups': { type: 'string' },
      iterations: { type: 'string' },
      trace: { type: 'string' },
      samples: { type: 'string' },
      'dawn-poll-interval': { type: 'string' },
      'uncontended-slice': { type: 'string' },
      'uncontended-max-in-flight': { type: 'string' },
      'contention-window': { type: 'string' },
      configs: { type: 'string', default: 'a,a1,ap,b,c' },
      variant: { type: 'string', multiple: true, default: [] },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stderr.write(`${usage}\n`);
    return;
  }
  const rounds = positive('rounds', values.rounds, true) ?? 3;
  const durationMs = positive('duration', values.duration, false) ?? 2000;
  const soloMs = positive('solo', values.solo, false) ?? 1000;
  const intervalMs = positive('interval', values.interval, false) ?? 5;
  const depth = positive('depth', values.depth, true) ?? 3;
  const targetSliceMs = positive('target-slice', values['target-slice'], false);
  const maxInFlight = positive('max-in-flight', values['max-in-flight'], true);
  const uncontendedSliceMs = positive('uncontended-slice', values['uncontended-slice'], false);
  const uncontendedMaxInFlight = positive('uncontended-max-in-flight', values['uncontended-max-in-flight'], true);
  const contentionWindowText = values['contention-window'];
  const contentionWindowMs = contentionWindowText === undefined ? undefined : Number(contentionWindowText);
  if (contentionWindowMs !== undefined && !(contentionWindowMs >= 0)) throw new Error(`--contention-window must be a non-negative number\n${usage}`);
  const wanted = new Set(['a', ...values.configs.split(',').map((k) => k.trim())]);
  for (const k of wanted) if (!['a', 'a1', 'ap', 'b', 'c'].includes(k)) throw new Error(`--configs: unknown configuration ${k}\n${usage}`);
  const iterations = positive('iterations', values.iterations, true) ?? BATCH_SHAPE.iterations;
  const workgroups = positive('batch-workgroups', values['batch-workgroups'], true) ?? BATCH_SHAPE.workgroups;
  const realtimeShape: KernelShape = { ...REALTIME_SHAPE, iterations };
  const pollText = values['dawn-poll-interval'];
  const dawnPollIntervalUs = pollText === undefined ? undefined : Number(pollText);
  if (dawnPollIntervalUs !== undefined && !(dawnPollIntervalUs >= 0)) throw new Error(`--dawn-poll-interval must be a non-negative number\n${usage}`);

  const log = (text: string): void => {
    process.stderr.write(text);
  };
  const bare = target.bare;
  const bareAdapter = await bare.requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const whole = await createKernel({ ...target.kernel, atomize: false, maxInFlight, dawnPollIntervalUs });
  const atomized = await createKernel({ ...target.kernel, targetSliceMs, maxInFlight, uncontendedSliceMs, uncontendedMaxInFlight, contentionWindowMs, dawnPollIntervalUs });
  // Sized by the flags, or else long enough on this device (a fast GPU needs a far bigger grid).
  // Calibrated with the kernels' polling, where the device runs fastest (on a CPU device, dawn.node's
  // spin takes a core from it), so that the batch kernel is long enough in every configuration.
  // The realtime kernel's submit-to-completion alone first: the batch kernel must be at least
  // MIN_LENGTH_RATIO times longer (the issue asks for 50x), as well as BATCH_TARGET_MS.
  const bareRealtime = await BusyClient.open(bare, realtimeShape, 'a-realtime');
  const bareRealtimeMs = await realtimeLatencies(bareRealtime, 300, 1);
  const batchTargetMs = Math.max(BATCH_TARGET_MS, MIN_LENGTH_RATIO * percentile(bareRealtimeMs, 0.5));
  const sized = values['batch-workgroups'] !== undefined || values.iterations !== undefined;
  const batchShape: KernelShape = sized ? { workgroups, iterations } : await calibrateBatchShape(bare, { workgroups, iterations }, batchTargetMs / 0.8);

  const config = (key: Config['key'], name: string, realtime: BusyClient, batch: BusyClient, extra: Partial<Config> = {}): Config => ({
    key,
    name,
    realtime,
    batch,
    pumped: false,
    ownBaseline: true,
    solo: [],
    alone: [],
    contended: [],
    windows: [],
    batchContended: [],
    atoms: 0,
    preemptions: 0,
    wholeDispatches: 0,
    ...extra,
  });
  const gpunixConfig = async (key: string, name: string, kernel: Kernel): Promise<Config> => {
    const realtimeProc = await kernel.spawn({ name: `${key}-realtime`, priority: 'realtime' });
    const batchProc = await kernel.spawn({ name: `${key}-batch`, priority: 'batch' });
    return config(key, name, await BusyClient.open(realtimeProc.gpu, realtimeShape, `${key}-realtime`), await BusyClient.open(batchProc.gpu, batchShape, `${key}-batch`), {
      kernel,
      batchProc,
      pumped: true,
    });
  };
  const bareBatch = await BusyClient.open(bare, batchShape, 'a-batch');
  const configs: Config[] = [config('a', 'bare Dawn, two devices', bareRealtime, bareBatch)];
  if (wanted.has('a1')) configs.push(config('a1', 'bare Dawn, one shared device', BusyClient.on(bareBatch.device, realtimeShape, 'a1-realtime'), bareBatch, { ownBaseline: false }));
  if (wanted.has('ap')) configs.push(config('ap', "bare Dawn, two devices, gpunix's polling", bareRealtime, bareBatch, { pumped: true }));
  if (wanted.has('b')) configs.push(await gpunixConfig('b', 'gpunix, atomize off', whole));
  if (wanted.has('c')) configs.push(await gpunixConfig('c', 'gpunix, atomized', atomized));
  const variantKernels: Kernel[] = [];
  for (const spec of values.variant) {
    const options: Record<string, number> = {};
    const experiments: Record<string, number> = {};
    for (const pair of spec.split(',')) {
      const [name, value] = pair.split('=');
      const known = ['targetSliceMs', 'maxInFlight', 'uncontendedSliceMs', 'uncontendedMaxInFlight', 'contentionWindowMs', 'traceEvents', 'issueLeadMs', 'dawnPollIntervalUs'].includes(name);
      if (!(known || EXPERIMENTS.includes(name)) || !(Number(value) >= 0)) {
        throw new Error(`--variant: not a scheduler setting: ${pair}\n${usage}`);
      }
      (known ? options : experiments)[name] = Number(value);
    }
    const kernel = await createKernel({ ...target.kernel, ...options });
    // Experimental scheduler parameters, not kernel options: set on the kernel's settings, which its dispatchers read.
    const scheduler = kernel.options.scheduler as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(experiments)) scheduler[name] = value !== 0;
    variantKernels.push(kernel);
    configs.push(await gpunixConfig(`c:${spec}`, `gpunix, atomized, ${spec}`, kernel));
  }

  // The realtime and batch kernels' lengths, each alone on an idle bare device (polled as gpunix polls).
  const bareBatchMs: number[] = [];
  for (let i = 0; i < 6; i++) bareBatchMs.push(await bareBatch.timedSubmit());
  bareBatchMs.shift();
  log(`batch kernel ${batchShape.workgroups} x ${batchShape.rows ?? 1} workgroups x ${batchShape.iterations} iterations, ${percentile(bareBatchMs, 0.5).toFixed(2)} ms alone; realtime ${percentile(bareRealtimeMs, 0.5).toFixed(3)} ms\n`);
  // Warm-up of every configuration: pipelines compiled, (c)'s cost model has learned the batch kernel.
  for (const c of configs) {
    bypassEventPump(!c.pumped);
    await realtimeLatencies(c.realtime, 50, 1);
    if (c.ownBaseline) await batchAlone(c.batch, depth, 300);
  }

  // Every GC pause of this process (performance.now() spans): a realtime completion that falls in
  // one is seen only after it, whatever the scheduler did.
  const gcPauses: Array<[number, number]> = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcPauses.push([e.startTime, e.startTime + e.duration]);
  });
  gcObserver.observe({ entryTypes: ['gc'] });

  bypassEventPump(false);
  /** Each gpunix configuration's atom timeline, taken before its kernel shuts down. */
  const traces = new Map<string, ChromeTrace>();
  const stopContention = measureContention();
  try {
    for (let round = 0; round < rounds; round++) {
      log(`round ${round + 1}/${rounds}:`);
      // Rotate the order so that no configuration always follows the same one.
      const order = configs.map((_, i) => configs[(i + round) % configs.length]);
      for (const c of order) {
        // Progress: seconds since this configuration's turn began, after each of its windows; a
        // total far past the windows' durations means a configuration the device cannot keep up
        // with (each window awaits its submits to the end).
        const phaseStart = performance.now();
        const took = (): string => ((performance.now() - phaseStart) / 1000).toFixed(1);
        log(` ${c.key} [`);
        bypassEventPump(!c.pumped);
        if (c.ownBaseline) {
          collectGarbage();
          c.solo.push(...(await realtimeSamples(c.realtime, soloMs, intervalMs)));
          log(`solo ${took()}`);
          collectGarbage();
          c.alone.push(await batchAlone(c.batch, depth, soloMs));
          log(` alone ${took()} `);
        }
        const before = c.batchProc?.record().accounting;
        collectGarbage();
        const windowStart = performance.now();
        const result = await contention(c.realtime, c.batch, { durationMs, intervalMs, depth });
        c.windows.push([windowStart, performance.now()]);
        log(`contended ${took()} s]`);
        c.contended.push(...result.samples);
        c.batchContended.push(result.batch);
        const after = c.batchProc?.record().accounting;
        if (before && after) {
          c.atoms += after.atomsRun - before.atomsRun;
          c.preemptions += after.preemptions - before.preemptions;
          c.wholeDispatches += after.wholeDispatches - before.wholeDispatches;
        }
      }
      log('\n');
    }
    bypassEventPump(false);
    for (const c of configs) {
      await c.realtime.verify();
      await c.batch.verify();
    }
    for (const c of configs) if (c.kernel) traces.set(c.key, c.kernel.trace());
    if (values.trace) writeFileSync(values.trace, JSON.stringify(atomized.trace()));
  } finally {
    await whole.shutdown();
    await atomized.shutdown();
    for (const kernel of variantKernels) await kernel.shutdown();
  }

  const { wallSeconds, otherCpuSeconds } = stopContention();

  for (const e of gcObserver.takeRecords()) gcPauses.push([e.startTime, e.startTime + e.duration]);
  gcObserver.disconnect();
  const overlapsGc = (s: LatencySample): boolean => gcPauses.some(([start, end]) => end > s.startMs && start < s.startMs + s.latencyMs);
  const gcMsWithin = (windows: Array<[number, number]>): number =>
    gcPauses.reduce((sum, [start, end]) => sum + (windows.some(([from, to]) => start >= from && start < to) ? end - start : 0), 0);
  const ms = (samples: LatencySample[]): number[] => samples.map((x) => x.latencyMs);

  if (values.samples) {
    const pairs = (samples: LatencySample[]): number[][] => samples.map((x) => [x.startMs, x.latencyMs, x.lateMs]);
    const dump = Object.fromEntries(configs.map((c) => [c.key, { windows: c.windows, contended: pairs(c.contended), solo: pairs(c.solo) }]));
    writeFileSync(values.samples, JSON.stringify({ gcPauses, configs: dump }));
  }
  const a = configs[0];
  const bareSoloP99 = percentile(ms(a.solo), 0.99);
  const bareAlone = rate(pooled(a.alone));
  const ap = configs.find((c) => c.key === 'ap');
  const pacedBareAlone = ap ? rate(pooled(ap.alone)) : NaN;
  const results: Record<string, unknown> = {};
  for (const c of configs) {
    const solo = ms(c.ownBaseline ? c.solo : a.solo);
    const latency = summarize(ms(c.contended));
    const soloP99 = percentile(solo, 0.99);
    const gpunix = c.kernel !== undefined;
    const clear = c.contended.filter((x) => !overlapsGc(x));
    const windowSeconds = c.windows.reduce((sum, [from, to]) => sum + (to - from), 0) / 1000;
    results[c.key] = {
      name: c.name,
      realtime_p50_ms: latency.p50_ms,
      realtime_p90_ms: latency.p90_ms,
      realtime_p99_ms: latency.p99_ms,
      realtime_max_ms: latency.max_ms,
      realtime_samples: latency.count,
      solo_p50_ms: percentile(solo, 0.5),
      solo_p99_ms: soloP99,
      solo_samples: solo.length,
      p99_over_solo: latency.p99_ms / soloP99,
      p99_over_bare_solo: latency.p99_ms / bareSoloP99,
      /** Garbage collection in this process during the contention windows: JS cannot see a completion while it runs. */
      gc_ms_per_s: gcMsWithin(c.windows) / windowSeconds,
      samples_overlapping_gc: c.contended.length - clear.length,
      realtime_p99_without_gc_ms: percentile(ms(clear), 0.99),
      /** Latency from when the program was due to submit (LatencySample.lateMs): what it waits where the device's work holds its thread (GL). */
      realtime_from_due_p50_ms: percentile(fromDueMs(c.contended), 0.5),
      realtime_from_due_p99_ms: percentile(fromDueMs(c.contended), 0.99),
      solo_from_due_p99_ms: percentile(fromDueMs(c.ownBaseline ? c.solo : a.solo), 0.99),
      batch_dispatches_per_s: rate(pooled(c.batchContended)),
      batch_throughput_ratio: rate(pooled(c.batchContended)) / bareAlone,
      /** Over bare Dawn alone with the same polling as gpunix (ap): what atomization itself costs. */
      batch_ratio_vs_paced_bare: rate(pooled(c.batchContended)) / pacedBareAlone,
      batch_alone_dispatches_per_s: c.ownBaseline ? rate(pooled(c.alone)) : bareAlone,
      /** The batch client alone on this configuration over alone on bare Dawn (gpunix: the scheduler's cost with nobody to preempt for). */
      batch_alone_ratio: (c.ownBaseline ? rate(pooled(c.alone)) : bareAlone) / bareAlone,
      ...(gpunix ? { atoms: c.atoms, preemptions: c.preemptions, whole_dispatches: c.wholeDispatches } : {}),
      ...(traces.has(c.key) ? { tail: tailBreakdown(traces.get(c.key)!, c, overlapsGc) } : {}),
    };
  }
  const r = (key: string): Record<string, number> => results[key] as Record<string, number>;
  const info = bareAdapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const realtimeKernelMs = percentile(bareRealtimeMs, 0.5);
  const batchKernelMs = percentile(bareBatchMs, 0.5);
  const report = {
    benchmark: 'gpunix-preemption',
    ...machine(bareAdapter, target),
    params: {
      rounds,
      duration_ms: durationMs,
      solo_ms: soloMs,
      interval_ms: intervalMs,
      depth,
      dawn_poll_interval_us: atomized.options.dawnPollIntervalUs,
      target_slice_ms: atomized.options.scheduler.targetSliceNs / 1e6,
      max_in_flight: atomized.options.scheduler.maxInFlight,
      uncontended_slice_ms: atomized.options.scheduler.uncontendedSliceNs / 1e6,
      uncontended_max_in_flight: atomized.options.scheduler.uncontendedMaxInFlight,
      contention_window_ms: atomized.options.scheduler.contentionWindowNs / 1e6,
      issue_lead_ms: atomized.options.scheduler.leadNs / 1e6,
      realtime_kernel: realtimeShape,
      batch_kernel: batchShape,
    },
    kernels: {
      /** Submit-to-completion of the realtime kernel alone (an upper bound of its device time). */
      realtime_ms: realtimeKernelMs,
      batch_ms: batchKernelMs,
      length_ratio: batchKernelMs / realtimeKernelMs,
    },
    baseline: {
      solo_p50_ms: percentile(ms(a.solo), 0.5),
      solo_p99_ms: bareSoloP99,
      batch_alone_dispatches_per_s: bareAlone,
      paced_batch_alone_dispatches_per_s: pacedBareAlone,
    },
    /** CPU time other programs used during the run (null where unknown): above a few seconds, rerun. */
    contention: { wallSeconds, otherCpuSeconds },
    /** This process's GC pauses over the whole run (dawn.node's own polling allocates heavily while GPU work is pending). */
    gc: {
      pauses: gcPauses.length,
      total_ms: gcPauses.reduce((sum, [start, end]) => sum + end - start, 0),
      p50_ms: percentile(gcPauses.map(([start, end]) => end - start), 0.5),
      max_ms: Math.max(0, ...gcPauses.map(([start, end]) => end - start)),
    },
    configs: results,
    targets: {
      a_p99_at_least_10x_solo: r('a').p99_over_solo >= 10,
      c_p99_within_2x_solo: r('c')?.p99_over_solo <= 2,
      c_batch_ratio_at_least_0_9: r('c')?.batch_throughput_ratio >= 0.9,
    },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const fmt = (n: number, digits = 2): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');
  const rows = [
    ['config', 'rt p50 ms', 'rt p99 ms', 'solo p99 ms', 'p99/solo', 'p99/bare solo', 'from due p50/p99', 'batch ratio', 'vs ap', 'alone ratio', 'atoms', 'preemptions', 'GC ms/s', 'p99 w/o GC'],
    ...configs.map((c) => {
      const x = r(c.key);
      return [
        `${c.key}  ${c.name}`,
        fmt(x.realtime_p50_ms),
        fmt(x.realtime_p99_ms),
        fmt(x.solo_p99_ms),
        fmt(x.p99_over_solo, 1),
        fmt(x.p99_over_bare_solo, 1),
        `${fmt(x.realtime_from_due_p50_ms)}/${fmt(x.realtime_from_due_p99_ms)}`,
        fmt(x.batch_throughput_ratio),
        fmt(x.batch_ratio_vs_paced_bare),
        fmt(x.batch_alone_ratio),
        x.atoms === undefined ? '-' : String(x.atoms),
        x.preemptions === undefined ? '-' : String(x.preemptions),
        fmt(x.gc_ms_per_s, 0),
        fmt(x.realtime_p99_without_gc_ms),
      ];
    }),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  log(`\n${info.description || info.device} (${[info.vendor, target.name].filter(Boolean).join(', ')}), node ${process.version}, ${availableParallelism()} CPUs, ${rounds} rounds, gpunix polls Dawn every ${report.params.dawn_poll_interval_us} µs at most\n`);
  log(
    `realtime kernel ${fmt(realtimeKernelMs, 3)} ms, batch kernel ${fmt(batchKernelMs, 1)} ms (${fmt(batchKernelMs / realtimeKernelMs, 0)}x); ` +
      `bare solo p99 ${fmt(bareSoloP99)} ms; batch alone ${fmt(bareAlone, 1)} dispatches/s (ap: ${fmt(pacedBareAlone, 1)}); (c) targetSliceMs ${report.params.target_slice_ms}, maxInFlight ${report.params.max_in_flight}, ` +
      `uncontended ${report.params.uncontended_slice_ms} ms x ${report.params.uncontended_max_in_flight} after ${report.params.contention_window_ms} ms\n`,
  );
  for (const row of rows) log(`${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')}\n`);
  const tails = configs.filter((c) => (results[c.key] as { tail?: unknown }).tail);
  if (tails.length > 0) {
    log('where the realtime latency goes (ms; p50 / p99 of each part; slowest 1 %: mean of each part, window-first submits, GC-hit):\n');
    for (const c of tails) {
      const t = (results[c.key] as { tail: { p50_ms: LatencyParts; p99_ms: LatencyParts; slowest_1pct: { samples: number; latency_ms: number; mean_ms: LatencyParts; window_first_submits: number; overlapping_gc: number }; batch_atom_ms_p50: number; batch_atom_ms_p90: number; device_idle_seen_fraction: number } }).tail;
      const parts = PARTS.map((k) => `${k} ${fmt(t.p50_ms[k])}/${fmt(t.p99_ms[k])}`).join(', ');
      const slow = t.slowest_1pct;
      log(
        `  ${c.key}: ${parts}; slowest ${slow.samples} (${fmt(slow.latency_ms)}): ahead ${fmt(slow.mean_ms.ahead)}, run ${fmt(slow.mean_ms.run)}, ` +
          `resolve ${fmt(slow.mean_ms.resolve)}, first ${slow.window_first_submits}, GC ${slow.overlapping_gc}; batch atoms ${fmt(t.batch_atom_ms_p50)}/${fmt(t.batch_atom_ms_p90)} ms (p50/p90), idle seen ${fmt(100 * t.device_idle_seen_fraction, 1)} %\n`,
      );
    }
  }
  log(
    `targets: (a) p99 >= 10x solo: ${report.targets.a_p99_at_least_10x_solo ? 'yes' : 'no'}; (c) p99 <= 2x solo: ${report.targets.c_p99_within_2x_solo ? 'yes' : 'no'}; ` +
      `(c) batch ratio >= 0.9: ${report.targets.c_batch_ratio_at_least_0_9 ? 'yes' : 'no'}\n`,
  );
  // A solo p99 is the few slowest of a few hundred samples: on a GPU the first submits after an
  // idle spell (clocks coming up) can decide it for one configuration and not another, so the
  // contended p99 is given over both solos.
  if (r('c')) log(`(c) p99 ${fmt(r('c').realtime_p99_ms)} ms = ${fmt(r('c').p99_over_solo)}x its own solo p99, ${fmt(r('c').p99_over_bare_solo)}x bare Dawn's\n`);
  log(contentionLine({ wallSeconds, otherCpuSeconds }));
}

runBenchmark(main);
