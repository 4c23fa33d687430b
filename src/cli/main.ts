// The `gpunix` command: thin — it parses, calls the embedded kernel's API, and prints.
// Commands and flags are documented in docs/cli.md.

import { readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ErrorCodes, GpunixError } from '../errors.js';
import { createKernel, DeviceDescription, Kernel, KernelOptions, ProcessHandle } from '../kernel/kernel.js';
import type { ProcessRecord } from '../kernel/proc.js';
import { parseBytes, PRIORITY_CLASSES, PriorityClass } from '../params.js';
import { RemoteFailure } from '../client/session.js';
import { registerCapsCommand } from './caps.js';
import { registerDaemonCommand, remoteRunCommand, RemoteRunOptions } from './daemonCommands.js';
import { registerFleetCommands } from './fleet.js';
import { Column, formatBytes, formatNs, table, TableFormat } from './format.js';
import { backendsOption, ConnectionFlags, connectionOptions, formatOptions, printRows, registerOperatorCommands, remoteDevices, remoteTrace, parsePid } from './operator.js';
import { checkProgram, runProgram } from './programRunner.js';
import { registerTopCommand } from './top.js';

/** A message on one line (a cause's text may hold line breaks). */
const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, ' ').trim();

const EXAMPLES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../examples');

function parseBudget(value: string): number {
  try {
    return parseBytes(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function parseWeight(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got ${value}`);
  return n;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got ${value}`);
  return n;
}

const budgetOption = (): Option =>
  new Option('--memory-budget <bytes>', 'memory budget per device, e.g. 512M or 4G (default 4G)').argParser(parseBudget);

function kernelOptions(options: { memoryBudget?: number; backends?: string[] }): KernelOptions {
  return { memoryBudget: options.memoryBudget, backends: options.backends };
}

export function processTable(records: ProcessRecord[]): string {
  return table(
    ['PID', 'NAME', 'PRIORITY', 'WEIGHT', 'STATE', 'GPU TIME', 'READY WAIT', 'MEMORY', 'PEAK', 'DISPATCHES', 'ATOMS', 'PREEMPTED', 'P99 LATENCY', 'EXIT'],
    records.map((p) => [
      p.pid,
      p.name,
      p.priority,
      p.weight,
      p.state,
      formatNs(p.accounting.gpuTimeNs),
      formatNs(p.accounting.readyWaitNs),
      formatBytes(p.accounting.bytesAllocated),
      formatBytes(p.accounting.peakBytesAllocated),
      p.accounting.dispatches,
      p.accounting.atomsRun,
      p.accounting.preemptions,
      p.accounting.latency.p99Us === null ? '-' : `<= ${formatNs(p.accounting.latency.p99Us * 1000)}`,
      p.exit ? `${p.exit.code} (${p.exit.reason})` : '-',
    ]),
  );
}

const DEVICE_COLUMNS: Column<DeviceDescription>[] = [
  { key: 'id', header: 'ID', text: (d) => d.id },
  { key: 'description', header: 'DESCRIPTION', text: (d) => d.description },
  { key: 'vendor', header: 'VENDOR', text: (d) => d.vendor },
  { key: 'architecture', header: 'ARCH', text: (d) => d.architecture },
  { key: 'backend', header: 'BACKEND', text: (d) => d.backend },
  { key: 'feature-level', header: 'LEVEL', text: (d) => d.featureLevel },
  { key: 'cpu-fallback', header: 'CPU FALLBACK', text: (d) => (d.isFallbackAdapter ? 'yes' : 'no') },
  { key: 'budget', header: 'BUDGET', text: (d) => formatBytes(d.budgetBytes), raw: (d) => d.budgetBytes },
  { key: 'max-buffer', header: 'MAX BUFFER', text: (d) => formatBytes(d.limits.maxBufferSize), raw: (d) => d.limits.maxBufferSize },
  { key: 'features', header: 'FEATURES', text: (d) => d.features.length },
];

async function devicesCommand(options: ConnectionFlags & TableFormat & { json?: boolean; memoryBudget?: number; backends?: string[]; connect?: boolean }): Promise<void> {
  if (options.connect || options.socket || options.url) return remoteDevices(options);
  const kernel = await createKernel(kernelOptions(options));
  try {
    const devices = kernel.describeDevices();
    printRows(options, devices, DEVICE_COLUMNS, devices);
  } finally {
    await kernel.shutdown();
  }
}

interface RunOptions {
  name?: string;
  priority: PriorityClass;
  weight?: number;
  memoryBudget?: number;
  /** --backends: the Dawn backends the embedded kernel opens. */
  backends?: string[];
  /** `gpunix trace`: where to write the atom timeline when the program ends. */
  traceOut?: string;
  /** Write a process image here when the checkpoint signal arrives. */
  checkpoint?: string;
  checkpointSignal?: string;
  /** `gpunix restore`: the image the process is restored from. */
  restoreFrom?: string;
  /** Print the memory table when the program ends. */
  memReport?: boolean;
}

/** The memory table: per device budget, resident and evicted; per process resident, evicted, swaps. */
function memoryReport(kernel: Kernel): string {
  const stats = kernel.stats();
  const devices = table(
    ['DEVICE', 'BUDGET', 'RESIDENT', 'EVICTED'],
    stats.devices.map((d) => [d.id, formatBytes(d.budgetBytes), formatBytes(d.usedBytes), formatBytes(d.evictedBytes)]),
  );
  const processes = table(
    ['PID', 'NAME', 'RESIDENT', 'EVICTED', 'PEAK', 'EVICTIONS', 'RESTORES'],
    kernel.ps().map((p) => [
      p.pid,
      p.name,
      formatBytes(p.accounting.residentBytes),
      formatBytes(p.accounting.evictedBytes),
      formatBytes(p.accounting.peakBytesAllocated),
      p.accounting.evictions,
      p.accounting.restores,
    ]),
  );
  const swap = stats.swap;
  return `${devices}\n\n${processes}\n\nswap: ${formatBytes(swap.bytesOut)} out, ${formatBytes(swap.bytesIn)} in\n`;
}

/** Writes the kernel's atom timeline as Chrome trace JSON and says where, on stderr. */
function writeTrace(kernel: Kernel, path: string): void {
  const trace = kernel.trace();
  writeFileSync(path, JSON.stringify(trace));
  const events = trace.traceEvents.filter((e) => e.ph === 'X').length;
  process.stderr.write(`gpunix: wrote ${events} trace events to ${path} (open it in Perfetto or chrome://tracing)\n`);
}

async function runCommand(program: string, args: string[], options: RunOptions): Promise<void> {
  checkProgram(program); // before the devices open: a typo costs no time
  const kernel = await createKernel(kernelOptions(options));
  const proc = options.restoreFrom
    ? await kernel.restore(options.restoreFrom, { name: options.name })
    : await kernel.spawn({ name: options.name ?? program.split('/').pop(), priority: options.priority, weight: options.weight });
  if (options.checkpoint) {
    const path = options.checkpoint;
    process.on((options.checkpointSignal ?? 'SIGUSR2') as NodeJS.Signals, () => {
      kernel.checkpoint(proc.pid, path).then(
        (written) => process.stderr.write(`gpunix: checkpoint of pid ${proc.pid} written to ${path} (${written.bytes} bytes)\n`),
        (error: unknown) => process.stderr.write(`gpunix: checkpoint failed: ${error instanceof GpunixError ? `${error.code}: ` : ''}${(error as Error).message}\n`),
      );
    });
  }
  // The program sees the argv it would see under `node prog.mjs args...`.
  process.argv = [process.argv[0], resolve(program), ...args];
  const end = async (): Promise<void> => {
    if (options.traceOut) writeTrace(kernel, options.traceOut);
    if (options.memReport) process.stderr.write(`\n${memoryReport(kernel)}`);
    await kernel.shutdown();
  };
  // When the program has nothing left to do, the process exits with the code the program set.
  process.once('beforeExit', () => {
    const code = typeof process.exitCode === 'number' ? process.exitCode : 0;
    void proc
      .exit(code)
      .then(end)
      .finally(() => process.exit(code));
  });
  try {
    await runProgram(proc, program);
  } catch (error) {
    await kernel.kill(proc.pid).catch(() => {});
    await end();
    if (error instanceof GpunixError) throw error;
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  }
}

interface DemoOptions {
  json?: boolean;
  trace?: string;
  interval: number;
  memoryBudget?: number;
  backends?: string[];
}

/** The example programs the demo runs: every .mjs in examples/. */
export function demoPrograms(): string[] {
  return readdirSync(EXAMPLES_DIR)
    .filter((f) => f.endsWith('.mjs'))
    .sort()
    .map((f) => join(EXAMPLES_DIR, f));
}

async function demoCommand(options: DemoOptions): Promise<void> {
  const kernel: Kernel = await createKernel(kernelOptions(options));
  const programs = demoPrograms();
  const say = (text: string): void => {
    if (!options.json) process.stdout.write(`${text}\n`);
  };
  say(`gpunix demo: ${programs.length} example programs as concurrent processes on ${kernel.describeDevices()[0].description}`);
  // The examples read their arguments from process.argv: under the demo they get none (defaults).
  process.argv = process.argv.slice(0, 2);
  // With --json, stdout carries only the JSON: the examples' own output goes to stderr.
  if (options.json) console.log = (...args: unknown[]) => console.error(...args);
  const handles: ProcessHandle[] = [];
  for (const program of programs) {
    handles.push(await kernel.spawn({ name: program.split('/').pop()!.replace(/\.mjs$/, ''), priority: 'normal' }));
  }
  say(`\n${processTable(kernel.ps())}`);
  const timer = setInterval(() => say(`\n${processTable(kernel.ps())}`), options.interval);
  const failures: string[] = [];
  await Promise.all(
    handles.map(async (handle, i) => {
      try {
        await runProgram(handle, programs[i]);
        await handle.exit(0);
      } catch (error) {
        failures.push(`${handle.name}: ${(error as Error).message}`);
        await handle.exit(1);
      }
    }),
  );
  clearInterval(timer);
  const records = kernel.ps();
  const stats = kernel.stats();
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ processes: records, stats }, null, 2)}\n`);
  } else {
    say(`\nfinal:\n${processTable(records)}`);
    say(`\nlive objects after exit: ${stats.liveObjects.total}, device memory in use: ${formatBytes(stats.bytesAllocated)}`);
    for (const failure of failures) process.stderr.write(`failed: ${failure}\n`);
  }
  if (options.trace) writeTrace(kernel, options.trace);
  await kernel.shutdown();
  process.exitCode = failures.length > 0 ? 1 : 0;
}

// Output piped into a reader that stops early (`gpunix top | head`) is not an error of gpunix:
// end quietly, as Unix tools do, instead of dying on an unhandled EPIPE.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

/** `run --connect` refuses the embedded kernel's options instead of ignoring them. */
function refuseEmbeddedOnly(options: { checkpoint?: string; memReport?: boolean; backends?: string[] }): void {
  // The daemon's processes are checkpointed by `gpunix checkpoint PID PATH`; its memory is `gpunix mem`.
  const given = [
    options.checkpoint && '--checkpoint (use `gpunix checkpoint PID PATH`)',
    options.memReport && '--mem-report (use `gpunix mem`)',
    options.backends && '--backends (the daemon opens its own: `gpunix daemon --backends`)',
  ].filter(Boolean);
  if (given.length > 0) throw new GpunixError(ErrorCodes.BAD_OPTION, `with --connect, ${given.join(' and ')} ${given.length > 1 ? 'are' : 'is'} not taken: ${given.length > 1 ? 'they are' : 'it is'} for the embedded kernel only`);
}

function buildProgram(): Command {
  const program = new Command('gpunix')
    .description('gpunix: an operating system for GPUs, on WebGPU')
    .showSuggestionAfterError()
    // Errors are printed by the exit override below, as one line naming the command's --help.
    .configureOutput({ outputError: () => {} })
    .enablePositionalOptions()
    .version('0.1.0');

  const run = program
    .command('run')
    .description('run an unmodified WebGPU program (an ES module using navigator.gpu) as a gpunix process')
    .argument('<program>', 'path to the program (.mjs/.js)')
    .argument('[args...]', 'arguments passed to the program (its process.argv)')
    .option('--name <name>', 'process name (default: the file name)')
    .addOption(new Option('--priority <class>', 'priority class').choices([...PRIORITY_CLASSES]).default('normal'))
    .option('--weight <w>', 'share of GPU time within the priority class (default 1)', parseWeight)
    .addOption(budgetOption())
    .addOption(backendsOption())
    .option('--checkpoint <image>', 'write a process image here whenever the checkpoint signal arrives (the program goes on)')
    .addOption(new Option('--checkpoint-signal <signal>', 'the signal that takes a checkpoint').choices(['SIGUSR1', 'SIGUSR2', 'SIGHUP']).default('SIGUSR2'))
    .option('--mem-report', 'print the memory table (budget, resident, evicted, swaps) when the program ends')
    .option('--connect', 'run the program as a process of gpunixd (the daemon), over its socket or --url')
    .option('--restore <image>', 'with --connect: restore this process image (on the daemon\'s machine) as the process')
    .option('--memory-limit <bytes>', 'with --connect: device memory the process may hold, e.g. 256M', parseBudget)
    .option('--device <device>', "with --connect: the daemon's device the process runs on, by index or id (e.g. 1 or gpu1); default: the daemon places it", (v: string) => (/^\d+$/.test(v) ? Number(v) : v))
    .passThroughOptions()
    .action((file: string, args: string[], options, command: Command) => {
      if (!(options.connect || options.socket || options.url || options.restore)) return runCommand(file, args, options);
      refuseEmbeddedOnly(options);
      // A restored process keeps the image's priority unless --priority was given.
      return remoteRunCommand(file, args, { ...options, priority: command.getOptionValueSource('priority') === 'default' ? undefined : options.priority } as RemoteRunOptions);
    });
  connectionOptions(run, false);

  program
    .command('restore')
    .description('restore a process image as a new process and run a resuming program as it (it finds its objects with device.gpunix)')
    .argument('<image>', 'the process image (written by checkpoint)')
    .argument('<program>', 'the resuming program (.mjs/.js)')
    .argument('[args...]', 'arguments passed to the program')
    .option('--name <name>', "process name (default: the image's)")
    .addOption(budgetOption())
    .addOption(backendsOption())
    .option('--checkpoint <image>', 'write a process image here whenever the checkpoint signal arrives')
    .addOption(new Option('--checkpoint-signal <signal>', 'the signal that takes a checkpoint').choices(['SIGUSR1', 'SIGUSR2', 'SIGHUP']).default('SIGUSR2'))
    .option('--mem-report', 'print the memory table when the program ends')
    .passThroughOptions()
    .action((image: string, file: string, args: string[], options) => runCommand(file, args, { ...options, priority: 'normal', restoreFrom: image }));

  const trace = program
    .command('trace')
    .description('run a WebGPU program as `run` does, then write its atom timeline as Chrome trace JSON (Perfetto); without a program, fetch the daemon\'s timeline')
    .argument('[program]', 'path to the program (.mjs/.js); none: the daemon\'s timeline (--pid, --socket, --url, --token)')
    .argument('[args...]', 'arguments passed to the program')
    .option('--out <file>', 'where to write the trace', 'gpunix-trace.json')
    .option('--name <name>', 'process name (default: the file name)')
    .addOption(new Option('--priority <class>', 'priority class').choices([...PRIORITY_CLASSES]).default('normal'))
    .option('--weight <w>', 'share of GPU time within the priority class (default 1)', parseWeight)
    .addOption(budgetOption())
    .addOption(backendsOption())
    .option('--checkpoint <image>', 'write a process image here whenever the checkpoint signal arrives (the program goes on)')
    .addOption(new Option('--checkpoint-signal <signal>', 'the signal that takes a checkpoint').choices(['SIGUSR1', 'SIGUSR2', 'SIGHUP']).default('SIGUSR2'))
    .option('--mem-report', 'print the memory table when the program ends')
    .option('--pid <pid>', 'without a program: only this process of the daemon (default: every process you may see)', parsePid)
    .passThroughOptions()
    .action((file: string | undefined, args: string[], options) => {
      if (file === undefined) return remoteTrace(options);
      // With a program the trace is the embedded kernel's: the daemon's options would be ignored.
      const daemonOnly = ['pid', 'socket', 'url', 'token', 'ca', 'json'].filter((key) => options[key] !== undefined).map((key) => `--${key}`);
      if (daemonOnly.length > 0) throw new GpunixError(ErrorCodes.BAD_OPTION, `${daemonOnly.join(', ')}: only for the daemon's timeline (gpunix trace without a program)`);
      return runCommand(file, args, { ...options, traceOut: options.out });
    });
  connectionOptions(trace);

  const devices = program
    .command('devices')
    .description("list the machine's WebGPU devices as the kernel opens them (with --connect: the daemon's, with their use)")
    .option('--connect', "list the daemon's devices with budget, use and utilization")
    .addOption(budgetOption())
    .addOption(backendsOption())
    .action((options) => devicesCommand(options));
  formatOptions(devices);
  connectionOptions(devices);

  program
    .command('demo')
    .description('run the example programs in examples/ as concurrent processes, printing a process table while they run')
    .option('--json', 'print only the final process table and stats, as JSON')
    .option('--interval <ms>', 'how often to print the table while they run', parsePositiveInt, 250)
    .option('--trace <file>', 'also write the atom timeline of all the examples as Chrome trace JSON')
    .addOption(budgetOption())
    .addOption(backendsOption())
    .action((options) => demoCommand(options));

  registerCapsCommand(program);
  registerOperatorCommands(program);
  registerTopCommand(program);
  registerDaemonCommand(program);
  registerFleetCommands(program);

  shortErrors(program, 'gpunix');
  return program;
}

/** Verbs people type for the commands gpunix has, by the command they are under. */
const VERB_SYNONYMS: Record<string, Record<string, string>> = {
  gpunix: { list: 'ps', ls: 'ps', stop: 'suspend', pause: 'suspend', cont: 'resume', continue: 'resume', nice: 'renice', move: 'migrate', snapshot: 'checkpoint', dump: 'checkpoint', info: 'status', gpus: 'devices', 'nvidia-smi': 'devices', start: 'run', exec: 'run', sbatch: 'submit', qsub: 'submit', squeue: 'jobs', scancel: 'job cancel' },
  'gpunix tenants': { change: 'set', modify: 'set', update: 'set', edit: 'set', quota: 'set', delete: 'remove', del: 'remove', create: 'add', new: 'add', show: 'list', get: 'list' },
  'gpunix job': { kill: 'cancel', stop: 'cancel', delete: 'cancel', rm: 'cancel', get: 'show', describe: 'show', info: 'show', status: 'show' },
  'gpunix queue': { add: 'set', create: 'set', update: 'set', change: 'set', delete: 'remove', del: 'remove' },
};

/** kill(1) habits: `kill -9 PID`, `kill -s TERM PID`, `kill --signal KILL PID`, `kill -KILL PID`. */
const SIGNAL_ARGUMENT = /^(-\d+|-s|-n|-l|--signal(=.*)?|-[A-Z]+\d*|-SIG[A-Z]+\d*)$/;

/**
 * The one line a command-line mistake gets: commander's message (and its suggestion), a hint for
 * habits from other tools, and the command's --help; then exit 1. --help and --version exit as usual.
 */
function shortErrors(command: Command, path: string): void {
  command.exitOverride((error) => {
    if (error.code.startsWith('commander.help') || error.code === 'commander.version' || error.exitCode === 0) process.exit(error.exitCode);
    let message = error.message.replace(/^error: /, '').replace(/\n\(Did you mean (.+)\?\)$/, " (did you mean '$1'?)").replace(/\s*\n\s*/g, ' ');
    const args = command.args;
    if (path === 'gpunix kill' && args.some((arg) => SIGNAL_ARGUMENT.test(arg))) {
      message = 'gpunix kill takes no signal: it always ends the process as SIGKILL does (exit code 137); to stop one for a while use `gpunix suspend PID`, then `gpunix resume PID`';
    } else if (error.code === 'commander.unknownCommand' || (path === 'gpunix tenants list' && args.length > 0 && !args[0].startsWith('-'))) {
      // `tenants change x` reaches the default subcommand `list` with `change` as an operand.
      const parentPath = error.code === 'commander.unknownCommand' ? path : path.slice(0, -' list'.length);
      const verb = args[0] ?? '';
      const synonym = VERB_SYNONYMS[parentPath]?.[verb];
      message = `unknown command '${verb}' for \`${parentPath}\`${synonym ? ` (did you mean '${synonym}'?)` : message.includes('did you mean') ? message.slice(message.indexOf(' (did you mean')) : ''}`;
      path = parentPath;
    }
    process.stderr.write(`error: ${message} — see \`${path} --help\`\n`);
    process.exit(error.exitCode || 1);
  });
  for (const sub of command.commands) shortErrors(sub, `${path} ${sub.name()}`);
}

/** The hint a DISCONNECTED error gets when no daemon answered. */
function disconnectedHint(error: GpunixError): string {
  return /cannot connect|ENOENT|ECONNREFUSED/.test(error.message) ? ' — is the daemon running? (start one with `gpunix daemon`; pick it with --socket, --url or $GPUNIX_SOCKET)' : '';
}

buildProgram()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    if (error instanceof GpunixError) {
      const hint = error.code === ErrorCodes.DISCONNECTED ? disconnectedHint(error) : '';
      process.stderr.write(`gpunix: ${error.code}: ${oneLine(error.message)}${hint}\n`);
      process.exit(2);
    }
    if (error instanceof RemoteFailure) {
      process.stderr.write(`gpunix: ${error.name}: ${oneLine(error.message)}\n`);
      process.exit(2);
    }
    // Anything else is a gpunix bug or a system error: one line; the stack only when asked for.
    const err = error as NodeJS.ErrnoException;
    if (process.env.GPUNIX_DEBUG) process.stderr.write(`${err?.stack ?? String(error)}\n`);
    process.stderr.write(`gpunix: ${err?.code ?? err?.name ?? 'Error'}: ${oneLine(err?.message ?? String(error))}${process.env.GPUNIX_DEBUG ? '' : ' (GPUNIX_DEBUG=1 shows the stack)'}\n`);
    process.exit(1);
  });
