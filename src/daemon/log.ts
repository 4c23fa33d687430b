// gpunixd's logs: JSON lines (pino), one object per event with `level`, `time`, `msg` and fields,
// to stderr (journald keeps it under systemd) or to a file. The schema is in docs/daemon.md#logs:
// `pid` is always the daemon's OS pid; a gpunix process is `gpid`.
// A daemon run as a program also routes what native code (Dawn, the Vulkan driver and loader, Node
// itself) writes to fd 2 through a relay that wraps each such line as a JSON object, so that every
// line on stderr parses (captureNativeStderr).

import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { LogLevel } from './config.js';

export type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export interface DaemonLogger {
  log: LogFn;
  /** Writes what is buffered; call before the process exits. */
  flush(): void;
}

/** pino's numeric levels, for lines the relay wraps (docs/daemon.md#logs). */
export const LEVEL_NUMBERS: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/**
 * A logger at `level` writing to `file` (appending), or to stderr. Every line has `level`, `time`,
 * `name`, `pid` (the daemon's OS pid), `hostname` and `msg`, each once: a caller's `pid` field
 * (a gpunix process) is written as `gpid`.
 */
export function createLogger(options: { level: LogLevel; file?: string }): DaemonLogger {
  // Synchronous writes: a daemon killed right after an error must still have logged it.
  const destination = pino.destination(options.file ? { dest: options.file, sync: true, mkdir: true, append: true } : { fd: 2, sync: true });
  const logger = pino({ level: options.level, base: { name: 'gpunixd', pid: process.pid, hostname: hostname() } }, destination);
  return {
    log: (level, msg, fields) => {
      if (fields) logger[level](withoutReservedKeys(fields), msg);
      else logger[level](msg);
    },
    flush: () => {
      try {
        destination.flushSync();
      } catch {
        // Nothing buffered (sync mode) or the destination is gone: nothing to do.
      }
    },
  };
}

/** Keys the logger writes itself; a caller's field of the same name would be a duplicate key. */
const RESERVED = new Set(['level', 'time', 'name', 'hostname', 'msg']);

/** `fields` with `pid` written as `gpid` (a gpunix pid), and the logger's own keys prefixed with `field_`. */
function withoutReservedKeys(fields: Record<string, unknown>): Record<string, unknown> {
  if (!('pid' in fields) && !Object.keys(fields).some((k) => RESERVED.has(k))) return fields;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (key === 'pid') {
      if (value !== undefined && !('gpid' in fields)) out.gpid = value;
    } else if (RESERVED.has(key)) {
      out[`field_${key}`] = value;
    } else {
      out[key] = value;
    }
  }
  return out;
}

/**
 * Routes fd 2 of this process through a relay process that copies JSON lines as they are and
 * wraps every other line (Dawn's "Warning: ...", the Vulkan loader's, Node's own warnings) as a
 * JSON log object with `source: "stderr"`, writing to the original stderr. Native code writes to
 * fd 2 with fprintf, out of JavaScript's reach, so the descriptor itself is replaced: a FIFO whose
 * reader is the relay (started first, so it inherits the original stderr). For a daemon run as a
 * program only (never in a test runner's process), before the devices are opened. Returns why it
 * could not (stderr is then left as it was), or null.
 */
export async function captureNativeStderr(level: LogLevel): Promise<string | null> {
  // close(2) + open() yields fd 2 only if fds 0 and 1 are open (POSIX: the lowest free descriptor).
  for (const fd of [0, 1, 2]) {
    try {
      fstatSync(fd);
    } catch {
      return `fd ${fd} is not open`;
    }
  }
  let dir: string;
  try {
    dir = mkdtempSync(join(tmpdir(), 'gpunixd-stderr-'));
  } catch (error) {
    return `no temporary directory: ${(error as Error).message}`;
  }
  const fifo = join(dir, 'stderr');
  try {
    execFileSync('mkfifo', ['-m', '600', fifo], { stdio: 'ignore' });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    return `mkfifo failed: ${(error as Error).message}`;
  }
  const relayPath = fileURLToPath(new URL('./stderrRelay.js', import.meta.url));
  const relay = spawn(process.execPath, [relayPath, fifo, String(process.pid), String(LEVEL_NUMBERS[level]), hostname()], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  // The relay says "ready" once it has the FIFO open for reading: then opening it for writing does
  // not block. It starts reading on "go", once this end is open (before that, reading a FIFO that
  // has no writer would be its end).
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    let said = '';
    relay.stdout!.on('data', (chunk: Buffer) => {
      said += chunk.toString();
      if (said.includes('ready\n')) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    relay.once('error', () => resolve(false));
    relay.once('exit', () => resolve(false));
  });
  if (!ready) {
    relay.kill();
    rmSync(dir, { recursive: true, force: true });
    return 'the stderr relay did not start';
  }
  relay.stdout!.destroy();
  closeSync(2);
  const fd = openSync(fifo, constants.O_WRONLY);
  // The FIFO's name is no longer needed: the relay and this process hold it open.
  rmSync(dir, { recursive: true, force: true });
  relay.stdin!.end('go\n');
  relay.unref();
  if (fd !== 2) return `the FIFO opened as fd ${fd}, not 2 (another thread took fd 2)`;
  return null;
}
