// The relay behind gpunixd's fd 2 (started by captureNativeStderr in log.ts): reads the FIFO the
// daemon's fd 2 now is, copies JSON lines (the daemon's own log) to its stderr as they are, and
// wraps every other line (Dawn's and the Vulkan driver's fprintf, Node's warnings) as a JSON log
// object: {"level","time","name":"gpunixd","pid":<daemon pid>,"hostname","source":"stderr","msg"}.
// Usage: node stderrRelay.js FIFO DAEMON_PID MIN_LEVEL HOSTNAME. It exits when every writer has
// closed the FIFO (the daemon has exited), after writing what was left.

import { constants, openSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';

const [fifo, daemonPid, minLevelArg, host] = process.argv.slice(2);
const minLevel = Number(minLevelArg);

// Signals are the daemon's to handle: a Ctrl-C or systemd's SIGTERM reaches the whole group, and
// the relay must outlive the daemon to write its last lines.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => {});

/** Writes all of `text` to fd 2, waiting out a full non-blocking pipe. */
function writeAll(text: string): void {
  let buffer = Buffer.from(text);
  while (buffer.length > 0) {
    try {
      buffer = buffer.subarray(writeSync(2, buffer));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') return; // stderr is gone: nothing to write to
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}

/** The level of a line that names none: info, but never filtered out (it may be a crash's stack). */
const UNKNOWN = -30;

/** The level a native line gets: Dawn and Mesa say "Warning:" / "Error:" first; the CLI's own last words name a GPUNIX_E_ code. */
function levelOf(line: string): number {
  if (/^\s*(error|fatal)\b/i.test(line) || /^gpunix: GPUNIX_E_/.test(line)) return 50;
  if (/^\s*warn(ing)?\b/i.test(line)) return 40;
  if (/^\s*(info|debug|verbose)\b/i.test(line)) return 30;
  return UNKNOWN;
}


function relayLine(line: string): void {
  if (line.length === 0) return;
  if (line.startsWith('{')) {
    try {
      JSON.parse(line);
      writeAll(`${line}\n`);
      return;
    } catch {
      // Not JSON after all: wrapped below.
    }
  }
  let level = levelOf(line);
  // The CLI's last words (why the daemon could not start or had to stop) are shown at every level:
  // an operator who silenced the log still needs to know why gpunixd exited.
  const lastWords = /^gpunix: GPUNIX_E_/.test(line);
  if (lastWords) {
    // Shown below whatever minLevel is.
  } else if (level === UNKNOWN) {
    if (minLevel === Infinity) return; // log.level "silent"
    level = 30;
  } else if (level < minLevel) {
    return;
  }
  writeAll(`${JSON.stringify({ level, time: Date.now(), name: 'gpunixd', pid: Number(daemonPid), hostname: host, source: 'stderr', msg: line })}\n`);
}

const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
let started = false;
let control = '';
process.stdin.on('data', (chunk: Buffer) => {
  control += chunk.toString();
  if (!started && control.includes('go\n')) {
    started = true;
    start();
  }
});
// The daemon went away before opening its end: nothing will come.
process.stdin.on('end', () => {
  if (!started) process.exit(0);
});
process.stdout.write('ready\n');

function start(): void {
  const input = new Socket({ fd, readable: true, writable: false });
  let pending = '';
  input.setEncoding('utf8');
  input.on('data', (text: string) => {
    pending += text;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      relayLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
  });
  const finish = () => {
    relayLine(pending);
    pending = '';
    process.exit(0);
  };
  input.on('end', finish);
  input.on('error', finish);
}
