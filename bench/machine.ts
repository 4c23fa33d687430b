// What every benchmark shares: a full GC before each sample, the machine's busy time (to report
// contention from other programs), the description of the machine recorded with each result, and
// busy processes to load the machine on purpose (bench/loopRateCalibration, test/watchdogBusyMachine).

import { ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { AddressInfo, createServer as createNetServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { create } from 'webgpu';
import { type BackendName, featureLevelOf, type FeatureLevel, parseBackendList } from '../src/device/backends.js';
import { asFeatureLevelProgram } from '../src/kernel/capabilities.js';

/**
 * A full garbage collection before every timed sample, so neither side pays for the other's
 * garbage. node exposes gc() only with --expose-gc; setting the flag at run time and fetching the
 * function from a fresh context gives it without changing how the benchmark is started.
 */
export const collectGarbage: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    if (typeof gc === 'function') return gc as () => void;
  } catch {
    // Without gc() samples are noisier, not wrong.
  }
  return () => {};
})();

/** Starts `count` processes that each keep a core busy (a Node process of some 40 MB each) until stopProcesses(). */
export function startBusyProcesses(count: number): ChildProcess[] {
  return Array.from({ length: count }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
}

/** Kills `children` and waits until each has exited (at once for one that had already). */
export async function stopProcesses(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map((child) => {
      if (child.exitCode !== null || child.signalCode !== null) return undefined;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      return exited;
    }),
  );
}

/**
 * CPU seconds this process's main thread (the one that runs JavaScript, and gpunix's kernel in an
 * embedded process) has run, from the scheduler's own nanosecond count (/proc schedstat); null off
 * Linux. Unlike wall time, it leaves out what other threads do meanwhile: on a CPU device
 * (lavapipe) the device's threads share the cores with the calls, and on a GPU the driver's own
 * threads run beside them, so this is the measure of what one call path costs the CPU.
 */
export function mainThreadCpuSeconds(): number | null {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
  } catch {
    return null;
  }
}

/** CPU seconds the whole machine has spent busy (user + nice + system), from /proc/stat; null off Linux. */
export function machineBusySeconds(): number | null {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return (fields[0] + fields[1] + fields[2]) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

export function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line ? line.split(':')[1].trim() : 'unknown';
  } catch {
    return 'unknown';
  }
}

// ---- the backend measured (`--backend NAME`) ------------------------------------------------------

/** Both sides of a benchmark on one Dawn backend: bare Dawn there, and gpunix with `backends: [name]`. */
export interface BenchBackend {
  /** The backend named by --backend; undefined: the platform's own, as create([]) and createKernel() open it. */
  name: BackendName | undefined;
  featureLevel: FeatureLevel;
  /** Bare Dawn on the backend; on GL/GLES, a program's requestAdapter() asks for 'compatibility' (all they offer). */
  bare: GPU;
  /** Options for createKernel on the same backend (spread them into the benchmark's own). */
  kernel: { backends?: string[] };
  /** A gpunix process, its navigator.gpu seen by the same program as bare Dawn's (see `bare`). */
  process<P extends { readonly gpu: GPU; exit(): Promise<unknown> }>(proc: P): { readonly gpu: GPU; exit(): Promise<unknown> };
}

/**
 * Takes `--backend NAME` (or `--backend=NAME`) out of process.argv, before the benchmark parses
 * its own flags, and returns NAME (undefined when absent). Unknown names throw.
 */
export function takeBackendFlag(argv: string[] = process.argv): BackendName | undefined {
  const at = argv.findIndex((a) => a === '--backend' || a.startsWith('--backend='));
  if (at < 0) return undefined;
  const [flag] = argv.splice(at, 1);
  const name = flag === '--backend' ? argv.splice(at, 1)[0] : flag.slice('--backend='.length);
  if (name === undefined || name === '') throw new Error('--backend needs a backend name (vulkan, opengles, opengl, ...)');
  const [backend, ...more] = parseBackendList(name);
  if (more.length > 0) throw new Error(`--backend takes one backend, got ${name}`);
  return backend;
}

/** The "bare GPU for backend X" both sides of a per-backend benchmark share (see BenchBackend). */
export function benchBackend(name: BackendName | undefined): BenchBackend {
  if (name === undefined) {
    return { name, featureLevel: 'core', bare: create([]), kernel: {}, process: (proc) => proc };
  }
  const featureLevel = featureLevelOf(name);
  // Mesa's EGL reads EGL_PLATFORM when Dawn loads it (as the kernel sets it: src/device/backends.ts).
  if (name === 'opengles' || name === 'opengl') process.env.EGL_PLATFORM ??= 'surfaceless';
  // Held by the returned object for the benchmark's life: dawn.node crashes when a GPU object is
  // collected while its devices live.
  const bare = asFeatureLevelProgram(create([`backend=${name}`]), featureLevel);
  return {
    name,
    featureLevel,
    bare,
    kernel: { backends: [name] },
    process: (proc) => ({ gpu: asFeatureLevelProgram(proc.gpu, featureLevel), exit: () => proc.exit() }),
  };
}

/** The machine a result came from: date, node, platform, CPU, and the adapter measured (and its backend, when named). */
export function machine(adapter: GPUAdapter, backend?: BenchBackend): Record<string, unknown> {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  return {
    ...(backend?.name ? { backend: backend.name, feature_level: backend.featureLevel } : {}),
    date: new Date().toISOString(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpuModel(),
    cpus: availableParallelism(),
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      isFallbackAdapter: Boolean(info.isFallbackAdapter),
    },
  };
}

export interface Contention {
  wallSeconds: number;
  /** CPU seconds other programs used meanwhile (null off Linux): above a few seconds, rerun. */
  otherCpuSeconds: number | null;
}

/** Starts measuring how much CPU other programs take during a run; call the result to stop. */
export function measureContention(): () => Contention {
  const busyBefore = machineBusySeconds();
  const ownBefore = process.cpuUsage();
  const wallBefore = performance.now();
  return () => {
    const busyAfter = machineBusySeconds();
    const own = process.cpuUsage(ownBefore);
    const wallSeconds = (performance.now() - wallBefore) / 1000;
    const otherCpuSeconds =
      busyBefore === null || busyAfter === null ? null : Math.max(0, busyAfter - busyBefore - (own.user + own.system) / 1e6);
    return { wallSeconds, otherCpuSeconds };
  };
}

/** The line that says how noisy a run was, for the end of a benchmark's stderr table ('' off Linux). */
export function contentionLine({ wallSeconds, otherCpuSeconds }: Contention): string {
  if (otherCpuSeconds === null) return '';
  const noisy = otherCpuSeconds / wallSeconds > 0.05 ? ' — the figures are noisy; rerun on a quiet machine' : '';
  return `other programs used ${otherCpuSeconds.toFixed(1)} CPU s during the ${wallSeconds.toFixed(0)} s run${noisy}\n`;
}

/** Runs a benchmark's main and exits: 0 when it finished, 1 with the error on stderr. */
export function runBenchmark(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`\nbench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
