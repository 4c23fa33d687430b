// What every benchmark shares: a full GC before each sample, the machine's busy time (to report
// contention from other programs), and the description of the machine recorded with each result.

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

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

/** The machine a result came from: date, node, platform, CPU, and the adapter measured. */
export function machine(adapter: GPUAdapter): Record<string, unknown> {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  return {
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
