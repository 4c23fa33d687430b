// `gpunix daemon` (gpunixd in the foreground, as systemd runs it) and `gpunix run --connect`
// (a program as a process of the daemon). Documented in docs/cli.md and docs/daemon.md.

import { basename } from 'node:path';
import type { Command } from 'commander';
import { installSignalHandlers, startDaemon } from '../daemon/daemon.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { PriorityClass } from '../params.js';
import { backendsOption, ConnectionFlags, sessionOptions } from './operator.js';

interface DaemonFlags {
  config?: string;
  socket?: string;
  /** --backends: the Dawn backends to open (replaces the configuration's kernel.backends). */
  backends?: string[];
}

/**
 * Runs gpunixd until a signal: SIGTERM drains (stop accepting, let processes finish up to
 * drainTimeoutMs, kill the rest), SIGINT kills everything at once. Without --config it is a
 * personal daemon: the socket is 0600 (only its owner) and token-less sessions act as the
 * `default` tenant.
 */
async function daemonCommand(flags: DaemonFlags): Promise<void> {
  const daemon = await (flags.config
    ? startDaemon({ configPath: flags.config, socket: flags.socket, backends: flags.backends }, { ownsProcess: true })
    : startDaemon({ socket: flags.socket, socketMode: 0o600, anonymousTenant: 'default', ...(flags.backends ? { kernel: { backends: flags.backends } } : {}) }, { ownsProcess: true })
  ).catch((error: unknown) => {
    throw listenError(error);
  });
  installSignalHandlers(daemon);
  await daemon.closed;
  // Dawn's instance can keep the event loop alive after the devices are gone.
  process.exit(0);
}

/** A listener's system error (a TCP or metrics port in use, a privileged port) as a coded one-line error. */
function listenError(error: unknown): unknown {
  const err = error as NodeJS.ErrnoException & { address?: string; port?: number };
  if (err?.syscall !== 'listen' && err?.code !== 'EADDRINUSE') return error;
  const where = err.port !== undefined ? `${err.address ?? ''}:${err.port}` : (err.address ?? 'its address');
  if (err.code === 'EADDRINUSE') return new GpunixError(ErrorCodes.BUSY, `cannot listen on ${where}: the address is already in use (another gpunixd, or another program)`, { cause: error });
  return new GpunixError(ErrorCodes.BAD_CONFIG, `cannot listen on ${where}: ${err.code ?? err.message}${err.code === 'EACCES' ? ' (a port under 1024 needs privileges)' : ''}`, { cause: error });
}

export function registerDaemonCommand(program: Command): void {
  program
    .command('daemon')
    .description('run gpunixd, the daemon that owns the devices and runs the kernel behind a socket (SIGTERM drains, SIGINT kills all)')
    .option('--config <file>', 'the JSON configuration (docs/daemon.md); none: a personal daemon, socket 0600, no tokens needed')
    .option('--socket <path>', 'listen on this Unix socket instead of the configured (or default) one')
    .addOption(backendsOption())
    .action((flags: DaemonFlags) => daemonCommand(flags));
}

export interface RemoteRunOptions extends ConnectionFlags {
  name?: string;
  /** Absent: the daemon's default, or the image's with --restore. */
  priority?: PriorityClass;
  weight?: number;
  memoryLimit?: number;
  restore?: string;
  /** --device: the daemon's device (index or id) the process stands on. */
  device?: number | string;
}

/**
 * `gpunix run --connect`: the program runs here, its GPU work as a process of the daemon. When the
 * program's top level has finished, the process exits with the program's exit code; if the
 * daemon ends the process first (an operator's kill, a shutdown), this exits with its code.
 */
export async function remoteRunCommand(program: string, args: string[], options: RemoteRunOptions): Promise<void> {
  const { connect } = await import('../client/index.js');
  const { checkProgram, runProgramRemote } = await import('./programRunner.js');
  checkProgram(program); // before connecting: no process is made for a program that cannot run
  const remote = await connect({
    ...sessionOptions(options),
    name: options.name ?? basename(program),
    priority: options.priority,
    weight: options.weight,
    memoryLimit: options.memoryLimit,
    restoreImage: options.restore,
    device: options.device,
  });
  let exiting = false;
  void remote.ended.then((status) => {
    if (exiting) return;
    process.stderr.write(`gpunix: process ${remote.pid} ended: ${status ? `${status.reason}${status.message ? ` (${status.message})` : ''}` : 'the connection to gpunixd closed'}\n`);
    process.exit(status?.code || 1);
  });
  try {
    await runProgramRemote(remote, program, args);
  } catch (error) {
    exiting = true;
    remote.close();
    if (error instanceof GpunixError) throw error;
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  }
  const code = typeof process.exitCode === 'number' ? process.exitCode : 0;
  exiting = true;
  await remote.exit(code);
  process.exit(code);
}
