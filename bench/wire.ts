// The daemon's cost: the same workloads as an embedded gpunix process and as a process of gpunixd
// over its Unix socket, in one run. The daemon runs as a child process (as it would in production:
// its own event loop, its own core), started here with a throw-away configuration.
//
// Output: JSON on stdout, a table on stderr; ratio = daemon / embedded (target >= 0.8 for batched
// work). See docs/benchmarks.md.
//
//   node dist/bench/wire.js [--reps N] [--scale X] [--only name[,name]]

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, globals } from 'webgpu';
import { machine, measureContention, runBenchmark } from './machine.js';
import { connect, createKernel } from '../src/index.js';
import { bandwidthWorkload, compareSides, Comparison, dispatchWorkload, MiB, parseComparisonArgs, printComparison, processSide, roundTripWorkload, Workload } from './workloads.js';

Object.assign(globalThis, globals);

const WORKLOADS: Workload[] = [
  dispatchWorkload('dispatch-batched', 400, 100, '400 submits x 100 tiny dispatches in one pass, then onSubmittedWorkDone'),
  bandwidthWorkload('bandwidth-4MiB', 300, 4 * MiB, '300 rounds: writeBuffer 4 MiB, copyBufferToBuffer, mapAsync(READ) + read, unmap'),
  roundTripWorkload('round-trip', 3000, '3000 x pushErrorScope + await popErrorScope'),
];

const usage = `usage: node dist/bench/wire.js [--reps N] [--scale X] [--only name[,name]]
  --reps N     timed repetitions per side, interleaved (default 7; one warm-up each comes first)
  --scale X    multiplies every workload's iteration count (default 1)
  --only LIST  comma-separated workload names (${WORKLOADS.map((w) => w.name).join(', ')})
JSON goes to stdout, the table and progress to stderr.`;

/** Starts gpunixd as a child process with one tenant; resolves once it accepts sessions. */
async function startDaemon(dir: string, token: string): Promise<{ socket: string; stop(): Promise<void> }> {
  const socket = join(dir, 'gpunixd.sock');
  const config = join(dir, 'gpunixd.json');
  const tokenHash = `sha256:${createHash('sha256').update(token).digest('hex')}`;
  writeFileSync(config, JSON.stringify({ socket, log: { level: 'warn' }, tenants: { bench: { tokenHash } } }));
  const child = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'gpunix.js'), 'daemon', '--config', config], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (let attempt = 0; ; attempt++) {
    try {
      const probe = await connect({ socket, token, name: 'probe' });
      await probe.exit();
      break;
    } catch (error) {
      if (child.exitCode !== null || attempt > 300) throw new Error(`gpunixd did not start: ${(error as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    socket,
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const args = parseComparisonArgs(usage, WORKLOADS, 7);
  if (!args) return;
  const { reps, scale, workloads } = args;

  const bareAdapter = await create([]).requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-bench-wire-'));
  const token = randomBytes(32).toString('hex');
  const daemon = await startDaemon(dir, token);
  const kernel = await createKernel();
  const stopContention = measureContention();
  let comparisons: Comparison[];
  try {
    comparisons = await compareSides(workloads, [
      processSide('embedded', scale, (name) => kernel.spawn({ name })),
      processSide('daemon', scale, (name) => connect({ socket: daemon.socket, token, name })),
    ], reps);
  } finally {
    await kernel.shutdown();
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  // The daemon is another program here: its CPU time shows up as "other", so report it plainly.
  const { wallSeconds, otherCpuSeconds } = stopContention();
  const report = {
    benchmark: 'gpunix-wire',
    ...machine(bareAdapter),
    reps,
    scale,
    target: { batched: 0.8 },
    transport: 'unix socket, daemon in a child process',
    contention: { wallSeconds, otherCpuSecondsIncludingDaemon: otherCpuSeconds },
    workloads: comparisons.map(({ rates, ...r }) => ({ ...r, embedded: rates.embedded, daemon: rates.daemon })),
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const info = bareAdapter.info;
  printComparison(`${info.description || info.device} (${info.vendor}), node ${process.version}, ${reps} reps, scale ${scale}`, comparisons, WORKLOADS, ['embedded', 'daemon']);
}

runBenchmark(main);
