// gpunixd's logs: JSON lines (pino), one object per event with `level`, `time`, `msg` and fields,
// to stderr (journald keeps it under systemd) or to a file.

import { pino } from 'pino';
import type { LogLevel } from './config.js';

export type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export interface DaemonLogger {
  log: LogFn;
  /** Writes what is buffered; call before the process exits. */
  flush(): void;
}

/** A logger at `level` writing to `file` (appending), or to stderr. */
export function createLogger(options: { level: LogLevel; file?: string }): DaemonLogger {
  // Synchronous writes: a daemon killed right after an error must still have logged it.
  const destination = pino.destination(options.file ? { dest: options.file, sync: true, mkdir: true, append: true } : { fd: 2, sync: true });
  const logger = pino({ level: options.level, base: { name: 'gpunixd', pid: process.pid } }, destination);
  return {
    log: (level, msg, fields) => {
      if (fields) logger[level](fields, msg);
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
