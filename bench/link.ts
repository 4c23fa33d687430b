// The links the migration benchmark (bench/nodeMigration.ts) moves processes over, and the raw
// throughput of each measured with bare Node sockets:
//   - loopback: 127.0.0.1 on this host;
//   - shaped: a network namespace joined to the root namespace by a veth pair, both ends shaped
//     with `tc qdisc ... tbf` (a token bucket: a rate limit, like a NIC of that speed). netem (delay,
//     loss) is not available on this machine, so the shaped link has a rate and no added delay.
// Everything set up here is undone at exit, on errors and on SIGINT/SIGTERM (see onCleanup).

import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { connect as netConnect } from 'node:net';

// ---- cleanup at exit ---------------------------------------------------------------------------

const cleanups: Array<() => void> = [];
let exitHooked = false;

/**
 * Registers a synchronous undo step (killing a child, deleting a namespace), run in reverse order
 * at process exit, including after SIGINT/SIGTERM; returns a function that runs it now, once.
 */
export function onCleanup(step: () => void): () => void {
  let done = false;
  const once = (): void => {
    if (done) return;
    done = true;
    try {
      step();
    } catch {
      // Best effort: the rest of the cleanup must still run.
    }
  };
  cleanups.push(once);
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', runCleanups);
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        process.stderr.write(`\nbench: ${signal}: cleaning up\n`);
        runCleanups();
        process.exit(130);
      });
    }
  }
  return once;
}

function runCleanups(): void {
  while (cleanups.length > 0) cleanups.pop()!();
}

/** Kills `child` (SIGKILL) at cleanup unless it has exited. */
export function killAtCleanup(child: ChildProcess): () => void {
  return onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
}

// ---- the shaped link -----------------------------------------------------------------------------

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export interface ShapeOptions {
  /** tc's rate, e.g. "1gbit". */
  rate: string;
  /** tbf's bucket, e.g. "512kb" (at least rate / HZ, else the rate is not reached). */
  burst: string;
  /** tbf's most queueing delay before a packet is dropped, e.g. "20ms". */
  latency: string;
}

export const DEFAULT_SHAPE: ShapeOptions = { rate: '1gbit', burst: '512kb', latency: '20ms' };

export interface ShapedLink {
  /** The namespace's name (`ip netns exec NAME ...` runs a command inside it). */
  namespace: string;
  /** This end's address (root namespace) and the far end's (inside the namespace). */
  hostAddress: string;
  peerAddress: string;
  shape: ShapeOptions;
  /** Deletes the namespace (and with it both ends of the veth pair). */
  close(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function tc(namespace: string | null, ...args: string[]): void {
  if (namespace) execFileSync('ip', ['netns', 'exec', namespace, 'tc', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  else execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Makes network namespace `gpunix-bench-<pid>` joined to this one by a veth pair
 * (10.77.N.1 here, 10.77.N.2 there, N = pid mod 256), each end's egress shaped by tbf. Throws a one-line error
 * when not root or when ip/tc refuse; anything half made is removed first.
 */
export function createShapedLink(shape: ShapeOptions = DEFAULT_SHAPE): ShapedLink {
  if (!isRoot()) throw new Error('the shaped link needs root (network namespaces, veth, tc)');
  const namespace = `gpunix-bench-${process.pid}`;
  // Interface names are at most 15 bytes.
  const hostEnd = `gxa${process.pid}`.slice(0, 15);
  const peerEnd = `gxb${process.pid}`.slice(0, 15);
  // A /30 of its own per run (by pid), so that two runs at once do not route into each other's namespace.
  const subnet = `10.77.${process.pid % 256}`;
  const hostAddress = `${subnet}.1`;
  const peerAddress = `${subnet}.2`;
  const close = onCleanup(() => {
    // Deleting the namespace destroys the veth end inside it, and a veth pair goes with either end.
    try {
      ip('netns', 'del', namespace);
    } finally {
      try {
        ip('link', 'del', hostEnd);
      } catch {
        // Already gone with the namespace: the usual case.
      }
    }
  });
  try {
    ip('netns', 'add', namespace);
    ip('link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', peerEnd);
    ip('link', 'set', peerEnd, 'netns', namespace);
    ip('addr', 'add', `${hostAddress}/30`, 'dev', hostEnd);
    ip('link', 'set', hostEnd, 'up');
    ip('-n', namespace, 'addr', 'add', `${peerAddress}/30`, 'dev', peerEnd);
    ip('-n', namespace, 'link', 'set', peerEnd, 'up');
    ip('-n', namespace, 'link', 'set', 'lo', 'up');
    const tbf = ['root', 'tbf', 'rate', shape.rate, 'burst', shape.burst, 'latency', shape.latency];
    tc(null, 'qdisc', 'add', 'dev', hostEnd, ...tbf);
    tc(namespace, 'qdisc', 'add', 'dev', peerEnd, ...tbf);
  } catch (error) {
    close();
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`cannot set up the shaped link: ${stderr || (error as Error).message}`);
  }
  return { namespace, hostAddress, peerAddress, shape, close };
}

/** The command line that runs `argv` inside `namespace` (or as it is, for null). */
export function inNamespace(namespace: string | null, argv: string[]): [string, string[]] {
  return namespace ? ['ip', ['netns', 'exec', namespace, ...argv]] : [argv[0], argv.slice(1)];
}

// ---- raw link throughput ---------------------------------------------------------------------------

/**
 * The receiver, run with `node -e` (inside the namespace for the shaped link): listens on
 * argv[1]:0, prints its port, counts what one connection sends and answers one byte once
 * argv[2] bytes have come, then exits.
 */
const RECEIVER = `
const net = require('node:net');
const [host, total] = [process.argv[1], Number(process.argv[2])];
const server = net.createServer((socket) => {
  let got = 0;
  socket.on('data', (chunk) => {
    got += chunk.length;
    if (got >= total) { socket.end(Buffer.alloc(1)); server.close(); }
  });
});
server.listen({ host, port: 0 }, () => process.stdout.write(server.address().port + '\\n'));
`;

/**
 * Bytes per second one TCP connection carries from here to `host` (a receiver started there,
 * inside `namespace` if given): `bytes` sent in 4 MiB writes, timed from the connect to the
 * receiver's acknowledgement of the last byte.
 */
export async function rawThroughput(namespace: string | null, host: string, bytes: number): Promise<number> {
  const [command, args] = inNamespace(namespace, [process.execPath, '-e', RECEIVER, host, String(bytes)]);
  const receiver = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const kill = killAtCleanup(receiver);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      receiver.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(Number(out.trim()));
      });
      receiver.once('exit', (code) => reject(new Error(`the link receiver exited (${code}) before listening`)));
    });
    const chunk = Buffer.alloc(4 * 1024 * 1024, 0x5a);
    const start = performance.now();
    await new Promise<void>((resolve, reject) => {
      const socket = netConnect({ host, port }, async () => {
        let left = bytes;
        while (left > 0) {
          const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= piece.length;
          if (!socket.write(piece)) await new Promise((r) => socket.once('drain', r));
        }
      });
      socket.once('data', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', reject);
    });
    return bytes / ((performance.now() - start) / 1000);
  } finally {
    kill();
  }
}
