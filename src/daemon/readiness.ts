// Readiness for systemd's Type=notify: when the service manager gave the daemon a notification
// socket ($NOTIFY_SOCKET), the daemon says READY=1 once every listener is up, and STOPPING=1 when
// it begins to shut down (with EXTEND_TIMEOUT_USEC, so that a drain longer than the unit's
// TimeoutStopSec= is not cut short by SIGKILL). See docs/daemon.md#install-as-a-service.
//
// The protocol is one datagram on a Unix datagram socket (sd_notify(3)). Node cannot send one:
// its `dgram` module is UDP only, and the npm packages that can (`sd-notify`, `unix-dgram`) are
// native addons that need a compiler and, for sd-notify, libsystemd's headers at install time. So
// the daemon runs `systemd-notify`, which is on every machine with systemd (the only place
// Type=notify means anything), knows the abstract-namespace form of the address, and waits until
// the service manager has taken the message (its barrier) before it exits, so systemd can still
// tell which unit the message came from. The unit needs NotifyAccess=all: the sender is a child.

import { spawn } from 'node:child_process';
import type { LogFn } from './log.js';

export interface ServiceManager {
  /** Tells the service manager the daemon is ready, with a status line (`systemctl status`). */
  ready(status: string): void;
  /** Tells it the daemon is stopping; `withinMs`: how long the stop may take from now. */
  stopping(status: string, withinMs?: number): void;
  /** Resolves once every notification sent so far has been delivered (or has failed, logged). */
  settled(): Promise<void>;
}

/** Margin added to a drain's timeout in EXTEND_TIMEOUT_USEC: the kernel's shutdown after it. */
const STOP_MARGIN_MS = 15_000;

/**
 * The service manager that started this process, from $NOTIFY_SOCKET, or null when there is none
 * (not run by systemd, or a unit of another Type=). Takes NOTIFY_SOCKET out of the environment, as
 * sd_notify(3)'s unset_environment does, so that no child spawned from then on inherits it.
 */
export function serviceManagerFromEnvironment(log: LogFn, env: NodeJS.ProcessEnv = process.env): ServiceManager | null {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return null;
  delete env.NOTIFY_SOCKET;
  return new SystemdNotifier(socket, log);
}

class SystemdNotifier implements ServiceManager {
  private pending: Promise<void> = Promise.resolve();
  private missing = false;

  constructor(
    private readonly socket: string,
    private readonly log: LogFn,
  ) {}

  ready(status: string): void {
    // MAINPID: this process, even though the message comes from a child (sd_notify(3)).
    this.send(['--ready', `--pid=${process.pid}`, `--status=${status}`]);
  }

  stopping(status: string, withinMs?: number): void {
    const extend = withinMs === undefined ? [] : [`EXTEND_TIMEOUT_USEC=${Math.ceil((withinMs + STOP_MARGIN_MS) * 1000)}`];
    this.send(['STOPPING=1', `STATUS=${status}`, ...extend]);
  }

  settled(): Promise<void> {
    return this.pending;
  }

  /** Runs `systemd-notify ARGS` with the socket; notifications go out in the order they were made. */
  private send(args: string[]): void {
    this.pending = this.pending.then(() => (this.missing ? undefined : this.run(args)));
  }

  private run(args: string[]): Promise<void> {
    return new Promise((resolve) => {
      let stderr = '';
      let failed = false;
      const child = spawn('systemd-notify', args, { env: { ...process.env, NOTIFY_SOCKET: this.socket }, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.once('error', (error: NodeJS.ErrnoException) => {
        // Without it systemd never hears READY=1 and fails the start at TimeoutStartSec=: say why.
        failed = true;
        if (error.code === 'ENOENT') this.missing = true;
        this.log('warn', 'cannot tell systemd the daemon state: systemd-notify did not run', { reason: error.message, notification: args.join(' ') });
        resolve();
      });
      child.once('close', (code) => {
        if (!failed && code !== 0) this.log('warn', 'cannot tell systemd the daemon state: systemd-notify failed', { exitCode: code, stderr: stderr.trim(), notification: args.join(' ') });
        resolve();
      });
    });
  }
}
