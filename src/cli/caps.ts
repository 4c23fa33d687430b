// `gpunix caps`: what the OS can promise on each device, measured (src/kernel/capabilities.ts),
// and with --require, whether that is enough for a workload. Documented in docs/cli.md.

import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKENDS_ENV, parseBackendList } from '../device/backends.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import {
  checkRequirements,
  DeviceCapabilities,
  measureCapabilities,
  parseRequirements,
  Requirement,
  RequirementCheck,
} from '../kernel/capabilities.js';
import { parseBytes } from '../params.js';
import { table } from './format.js';

interface CapsCommandOptions {
  json?: boolean;
  require?: string;
  device?: string;
  backends?: string[];
  duration: number;
  overheadDuration: number;
  targetSlice?: number;
  maxInFlight?: number;
  memoryBudget?: number;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got ${value}`);
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got ${value}`);
  return n;
}

function backendList(value: string): string[] {
  try {
    return parseBackendList(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function bytes(value: string): number {
  try {
    return parseBytes(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** Reads and checks the requirements file before anything is measured. */
function readRequirements(file: string): Requirement[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new GpunixError(ErrorCodes.BAD_REQUIREMENTS, `cannot read requirements file ${file}: ${(error as Error).message}`);
  }
  return parseRequirements(text, file);
}

const fixed = (n: number, digits: number): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');
const yes = (b: boolean): string => (b ? 'yes' : 'no');

function capabilityTable(c: DeviceCapabilities): string {
  const m = c.measured;
  return table(
    ['CAPABILITY', 'VALUE', 'HOW'],
    [
      ['backend', c.backend, 'the Dawn backend the device was opened on (--backends)'],
      [
        'feature level',
        c.feature_level,
        c.feature_level === 'core' ? 'WebGPU core' : 'WebGPU compatibility mode: lower default limits, fewer features (no timestamp-query)',
      ],
      [
        'preemption bound',
        `${fixed(c.preemption_bound_ms, 2)} ms`,
        `p99 realtime due-to-done (from when it was due to submit) against a saturating batch kernel (p50 ${fixed(c.realtime_p50_ms, 2)} ms; ` +
          `alone p99 ${fixed(c.solo_p99_ms, 2)} ms; ${m.realtime_samples} samples; slice ${m.target_slice_ms} ms, ${m.max_in_flight} in flight)`,
      ],
      [
        'atomization overhead',
        `${fixed(c.atomization_overhead_pct, 1)} %`,
        `batch throughput atomized ${fixed(m.batch_atomized_dispatches_per_s, 1)} vs whole ${fixed(m.batch_whole_dispatches_per_s, 1)} dispatches/s`,
      ],
      ['timestamps', yes(c.timestamps), c.timestamps ? "'timestamp-query': atoms timed on the device" : 'no timestamp-query: atoms timed by wall clock'],
      ['immediates', yes(c.immediates), c.immediates ? `${c.immediate_bytes} bytes: atoms placed by immediate data` : 'none: atoms placed by a reserved uniform binding'],
      ['robust access', yes(c.robust_access), '1 MiB written through a 256-byte binding; neighbouring buffers (same and other process) unchanged'],
      ['zero-init', yes(c.zero_init), "fresh buffers read as zeros, also after another process's freed memory"],
      ['per-process buffers', yes(c.per_process_buffers), "by construction: each createBuffer gets its own real GPUBuffer (shared segments: one tenant's, by name)"],
    ],
  );
}

function checksTable(checks: RequirementCheck[]): string {
  const value = (v: number | boolean | string): string => (typeof v === 'number' ? fixed(v, 2) : String(v));
  return table(
    ['RESULT', 'REQUIREMENT', 'MEASURED', 'DEVICE'],
    checks.map((c) => [c.met ? 'met' : 'NOT MET', c.requirement, value(c.measured), c.device]),
  );
}

async function capsCommand(options: CapsCommandOptions): Promise<void> {
  const requirements = options.require === undefined ? null : readRequirements(options.require);
  const log = options.json ? undefined : (line: string): void => void process.stderr.write(`${line}\n`);
  const devices = await measureCapabilities({
    durationMs: options.duration,
    overheadMs: options.overheadDuration,
    device: options.device,
    kernel: { targetSliceMs: options.targetSlice, maxInFlight: options.maxInFlight, memoryBudget: options.memoryBudget, backends: options.backends },
    log,
  });
  const checks = requirements ? checkRequirements(devices, requirements) : null;
  const met = checks ? checks.every((c) => c.met) : true;
  if (options.json) {
    const report = checks ? { devices, requirements: { file: options.require, met, checks } } : { devices };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    for (const c of devices) {
      process.stdout.write(
        // GL adapters report no vendor: only the parts that say something.
        `\n${c.device}  ${c.description} (${[c.vendor, c.backend, c.feature_level, c.fallback ? 'CPU fallback' : ''].filter(Boolean).join(', ')})\n${capabilityTable(c)}\n`,
      );
    }
    if (checks) {
      process.stdout.write(`\nrequirements (${options.require}): ${met ? 'all met' : 'NOT all met'}\n${checksTable(checks)}\n`);
    }
  }
  if (!met) process.exitCode = 1;
}

/** Adds `gpunix caps` to the program. */
export function registerCapsCommand(program: Command): void {
  program
    .command('caps')
    .description('measure what gpunix can promise on each device: preemption bound, atomization overhead, timestamps, immediates, isolation')
    .option('--json', 'print JSON instead of tables')
    .option('--require <file>', 'check the measurements against a requirements file (JSON); exit 1 when one is not met')
    .option('--device <id>', 'measure only this device (as `gpunix devices` lists it)')
    .option(
      '--backends <list>',
      `Dawn backends to open and measure, comma-separated, e.g. vulkan,opengles,opengl (default: $${BACKENDS_ENV}, else the platform's own)`,
      backendList,
    )
    .option('--duration <ms>', 'how long the realtime client measures against the batch client', positiveNumber, 3000)
    .option('--overhead-duration <ms>', 'batch-alone time for the atomization overhead (atomized and whole, together)', positiveNumber, 2000)
    .option('--target-slice <ms>', "the kernel's targetSliceMs for the measurement (default: the kernel's)", positiveNumber)
    .option('--max-in-flight <n>', "the kernel's maxInFlight for the measurement (default: the kernel's)", positiveInt)
    .addOption(new Option('--memory-budget <bytes>', 'memory budget per device, e.g. 512M or 4G (default 4G)').argParser(bytes))
    .action((options: CapsCommandOptions) => capsCommand(options));
}
