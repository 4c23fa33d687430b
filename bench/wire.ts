// The daemon's cost: the same workloads as an embedded gpunix process and as a process of gpunixd
// over its Unix socket (and, with --tls, over its TLS listener on loopback), in one run; and the
// raw ceiling of each transport on the same machine, measured in the same run (before the daemon
// starts and after it stops; the better kept), so that every figure is shown against what the
// machine itself can carry:
//   - unix / tls: a bare Node echo over a Unix socket / TLS on loopback (a child process echoes
//     whatever it reads): the ping (a 16-byte frame there and back) and the throughput of frames
//     of the bandwidth workloads' sizes sent there and back, one at a time (the echo writes each
//     piece back as it arrives, so both directions overlap);
//   - tls-whole (with --tls): the same TLS echo answering each frame whole, once all of it has
//     come — the pattern of a bandwidth round, whose reply needs all of its write;
//   - shm: a file in /dev/shm written and read back as the shared-memory bulk path moves bytes:
//     copied into a mapping of it and out again (memcpy; pwrite + pread where mmap is not
//     available), there and back (two writes and two reads a round).
// The daemon runs as a child process (as in production: its own event loop, its own core),
// started here with a throw-away configuration.
//
// Output: JSON on stdout, a table on stderr; ratio = daemon / embedded, and daemon / ceiling.
// See docs/benchmarks.md ("The daemon: embedded against over the wire").
//
//   node dist/bench/wire.js [--reps N] [--scale X] [--only name[,name]] [--tls] [--no-ceilings]

import { ChildProcess, fork, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { AddressInfo, connect as netConnect, createServer as createNetServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { create, globals } from 'webgpu';
import { collectGarbage, contentionLine, freePort, machine, measureContention, runBenchmark } from './machine.js';
import { connect, createKernel } from '../src/index.js';
import { SharedMapping } from '../src/sharedMapping.js';
import { widenSocketBuffers } from '../src/socketBuffers.js';
import { bandwidthWorkload, BenchProcess, dispatchWorkload, failIfUncaptured, formatRate, median, MiB, parseComparisonArgs, roundTripWorkload, Sample, sampleInProcess, Workload } from './workloads.js';

Object.assign(globalThis, globals);

const KiB = 1024;

// Sized so that the defaults (5 reps) take about a minute and a half on a quiet 2-core lavapipe machine.
const WORKLOADS: Workload[] = [
  dispatchWorkload('dispatch-batched', 400, 100, '400 submits x 100 tiny dispatches in one pass, then onSubmittedWorkDone'),
  dispatchWorkload('dispatch-single', 3000, 1, '3000 submits x 1 tiny dispatch (fresh encoder + pass each), then onSubmittedWorkDone'),
  roundTripWorkload('round-trip', 3000, '3000 x pushErrorScope + await popErrorScope (each timed: p50, p99)'),
  bandwidthWorkload('bandwidth-64KiB', 500, 64 * KiB, '500 rounds: writeBuffer 64 KiB, copyBufferToBuffer, mapAsync(READ) + read, unmap'),
  bandwidthWorkload('bandwidth-4MiB', 40, 4 * MiB, '40 rounds: the same with 4 MiB'),
  bandwidthWorkload('bandwidth-64MiB', 3, 64 * MiB, '3 rounds: the same with 64 MiB'),
  bandwidthWorkload('bandwidth-64MiB-warm', 3, 64 * MiB, '2 untimed rounds, then 3 timed: 64 MiB once memory first touched is warm (each sample is a fresh process)', 2),
];

/** The payload size of each bandwidth workload (its transport ceilings are measured at the same size). */
const CHUNK_OF: Record<string, number> = { 'bandwidth-64KiB': 64 * KiB, 'bandwidth-4MiB': 4 * MiB, 'bandwidth-64MiB': 64 * MiB, 'bandwidth-64MiB-warm': 64 * MiB };
/** Bytes each ceiling sample moves there and back (at least one frame): about as long as a workload sample. */
const CEILING_BYTES = 64 * MiB;
const PING_FRAME_BYTES = 16;
const PINGS = 3000;

const usage = `usage: node dist/bench/wire.js [--reps N] [--scale X] [--only name[,name]] [--tls] [--no-shm] [--no-ceilings] [--profile-daemon DIR]
  --reps N              timed repetitions per side, interleaved (default 5; one warm-up each comes first)
  --scale X             multiplies every workload's iteration count and the ceilings' bytes (default 1)
  --only LIST           comma-separated workload names (${WORKLOADS.map((w) => w.name).join(', ')})
  --tls                 also run each workload through the daemon's TLS listener on loopback, and measure the TLS ceiling
  --no-shm              run the daemon with shared memory off (sharedMemory.directory null): bulk data in frames on the socket
  --no-ceilings         skip the transport ceilings (unix socket, TLS, shared memory)
  --profile-daemon DIR  run the daemon under node --cpu-prof, writing its profile into DIR
JSON goes to stdout, the table and progress to stderr.`;

interface Args {
  reps: number;
  scale: number;
  workloads: Workload[];
  tls: boolean;
  shm: boolean;
  ceilings: boolean;
  profileDaemon: string | null;
}

function parseWireArgs(): Args | null {
  const args = parseComparisonArgs(usage, WORKLOADS, 5, {
    tls: { type: 'boolean', default: false },
    'no-shm': { type: 'boolean', default: false },
    'no-ceilings': { type: 'boolean', default: false },
    'profile-daemon': { type: 'string' },
  });
  if (!args) return null;
  const { flags } = args;
  return { ...args, tls: flags.tls === true, shm: flags['no-shm'] !== true, ceilings: flags['no-ceilings'] !== true, profileDaemon: (flags['profile-daemon'] as string | undefined) ?? null };
}

/** The repository's fixed self-signed certificate for localhost (test/fixtures/tls): never for anything but tests and this benchmark. */
const TLS_FIXTURES = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'tls');
const TLS_CERT = join(TLS_FIXTURES, 'localhost-cert.pem');
const TLS_KEY = join(TLS_FIXTURES, 'localhost-key.pem');


interface DaemonChild {
  socket: string;
  tlsUrl: string | null;
  stop(): Promise<void>;
}

/** Starts gpunixd as a child process with one tenant (and a TLS listener if asked); resolves once it accepts sessions. */
async function startDaemon(dir: string, token: string, tls: boolean, shm: boolean, profileDir: string | null): Promise<DaemonChild> {
  const socket = join(dir, 'gpunixd.sock');
  const config = join(dir, 'gpunixd.json');
  const tokenHash = `sha256:${createHash('sha256').update(token).digest('hex')}`;
  const port = tls ? await freePort() : 0;
  const tcp = tls ? { host: '127.0.0.1', port, tls: { cert: TLS_CERT, key: TLS_KEY } } : undefined;
  // (sharedMemory only when turned off: the default needs no field, so older daemons run this too.)
  const sharedMemory = shm ? {} : { sharedMemory: { directory: null } };
  writeFileSync(config, JSON.stringify({ socket, log: { level: 'warn' }, tenants: { bench: { tokenHash } }, ...(tcp ? { tcp } : {}), ...sharedMemory }));
  const nodeArgs = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const child = spawn(process.execPath, [...nodeArgs, join(import.meta.dirname, '..', '..', 'bin', 'gpunix.js'), 'daemon', '--config', config], {
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
    tlsUrl: tls ? `tls://127.0.0.1:${port}` : null,
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

// ---- the transport ceilings -------------------------------------------------------------------

/**
 * In the echo child: listens on a Unix socket or TLS on loopback and writes back whatever it
 * reads — at once, piece by piece (the transport's streaming throughput: both directions overlap),
 * or with `whole`, each frame (its first 8 bytes give its length) in one write once all of it has
 * come: the request-reply pattern of a bandwidth round, which needs all of a write before its reply.
 */
function serveEcho(kind: string, where: string, whole: boolean): void {
  const echo = (socket: Socket) => {
    // As gpunixd's sockets: no Nagle delay (a frame goes out whole, at once).
    socket.setNoDelay(true);
    if (!whole) {
      socket.on('data', (chunk) => socket.write(chunk));
      return;
    }
    let pieces: Buffer[] = [];
    let got = 0;
    let frameBytes = -1;
    socket.on('data', (chunk: Buffer) => {
      pieces.push(chunk);
      got += chunk.byteLength;
      if (frameBytes < 0 && got >= 8) frameBytes = Number((pieces[0].byteLength >= 8 ? pieces[0] : Buffer.concat(pieces)).readBigUInt64LE(0));
      if (frameBytes < 0 || got < frameBytes) return;
      socket.write(Buffer.concat(pieces, got));
      pieces = [];
      got = 0;
      frameBytes = -1;
    });
  };
  const server =
    kind === 'tls' ? createTlsServer({ cert: readFileSync(TLS_CERT), key: readFileSync(TLS_KEY) }, echo) : createNetServer(echo);
  // As gpunixd's TCP connections: socket buffers that hold a large frame (src/socketBuffers.ts).
  if (kind === 'tls') server.on('connection', (raw: Socket) => widenSocketBuffers(raw));
  const options = kind === 'tls' ? { host: '127.0.0.1', port: 0 } : { path: where };
  server.listen(options, () => {
    const address = server.address();
    process.send!(typeof address === 'string' ? address : (address as AddressInfo).port);
  });
  process.on('disconnect', () => process.exit(0));
}

let echoServers = 0;

/** A bare echo peer in a child process (streaming, or whole frames: see serveEcho), and a connection to it. */
async function openEcho(kind: 'unix' | 'tls', dir: string, whole: boolean): Promise<{ socket: Socket; child: ChildProcess }> {
  // A path of its own each time: a killed echo server leaves its socket file behind.
  const path = join(dir, `echo-${kind}-${++echoServers}.sock`);
  const child = fork(import.meta.filename, ['--echo-server', kind, path, whole ? 'whole' : 'stream'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const where = await new Promise<string | number>((resolve, reject) => {
    child.once('message', (m) => resolve(m as string | number));
    child.once('exit', (code) => reject(new Error(`the ${kind} echo server exited (${code})`)));
  });
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s: Socket =
      kind === 'tls'
        ? tlsConnect({ host: '127.0.0.1', port: where as number, ca: readFileSync(TLS_CERT), servername: 'localhost' }, () => resolve(s))
        : netConnect({ path: where as string }, () => resolve(s));
    s.once('error', reject);
  });
  socket.setNoDelay(true);
  if (kind === 'tls') widenSocketBuffers(socket);
  return { socket, child };
}

/** Sends `frame` and resolves once as many bytes have come back (the echo). */
function echoRound(socket: Socket, frame: Buffer): Promise<void> {
  return new Promise((resolve) => {
    let left = frame.byteLength;
    const onData = (chunk: Buffer): void => {
      left -= chunk.byteLength;
      if (left > 0) return;
      socket.off('data', onData);
      resolve();
    };
    socket.on('data', onData);
    socket.write(frame);
  });
}

interface Ceiling {
  /** Round-trip latency of a 16-byte frame (µs); socket transports only. */
  pingUs?: { p50: number; p99: number };
  /** By bandwidth workload: payload bytes per second there and back (median of the reps). */
  bytesPerSecond: Record<string, number>;
  /** shm only: one direction (a copy in and a copy out), bytes per second, by workload. */
  oneWayBytesPerSecond?: Record<string, number>;
  /** shm only: whether the copies were memcpy through a mapping (else pwrite + pread). */
  mapped?: boolean;
}

/** A bare socket's ping and its throughput at each bandwidth workload's size, `reps` samples each. */
async function socketCeiling(kind: 'unix' | 'tls', dir: string, chunks: [string, number][], reps: number, scale: number, whole = false): Promise<Ceiling> {
  const { socket, child } = await openEcho(kind, dir, whole);
  try {
    const ping = Buffer.alloc(PING_FRAME_BYTES);
    ping.writeBigUInt64LE(BigInt(PING_FRAME_BYTES), 0);
    for (let i = 0; i < 200; i++) await echoRound(socket, ping);
    const latencies: number[] = [];
    for (let rep = 0; rep < reps; rep++) {
      for (let i = 0; i < PINGS; i++) {
        const start = performance.now();
        await echoRound(socket, ping);
        latencies.push((performance.now() - start) * 1000);
      }
    }
    const bytesPerSecond: Record<string, number> = {};
    for (const [name, chunk] of chunks) {
      const frame = Buffer.alloc(chunk, 7);
      frame.writeBigUInt64LE(BigInt(chunk), 0);
      const rounds = Math.max(1, Math.round((CEILING_BYTES * scale) / chunk));
      await echoRound(socket, frame);
      const rates: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        collectGarbage();
        const start = performance.now();
        for (let r = 0; r < rounds; r++) await echoRound(socket, frame);
        rates.push((rounds * chunk) / ((performance.now() - start) / 1000));
      }
      bytesPerSecond[name] = median(rates);
    }
    return { pingUs: percentiles(latencies), bytesPerSecond };
  } finally {
    socket.destroy();
    child.kill();
  }
}

/**
 * Shared memory's ceiling: a file in /dev/shm (else the temporary directory) of each size,
 * written and read back whole as the bulk path moves bytes: memcpy into and out of a mapping of
 * it (src/sharedMapping.ts), or positional calls (pwrite, pread) where it cannot be mapped.
 * There and back is two of those, as a workload round moves its payload both ways.
 */
function shmCeiling(chunks: [string, number][], reps: number, scale: number): Ceiling {
  const dir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const path = join(dir, `gpunix-bench-wire-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fd = openSync(path, 'w+', 0o600);
  try {
    const oneWay: Record<string, number> = {};
    let mapped = false;
    for (const [name, chunk] of chunks) {
      const source = Buffer.alloc(chunk, 7);
      const target = Buffer.allocUnsafe(chunk);
      const rounds = Math.max(1, Math.round((CEILING_BYTES * scale) / chunk));
      writeSync(fd, source, 0, chunk, 0);
      const mapping = SharedMapping.map(fd, chunk);
      const rates: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        collectGarbage();
        const start = performance.now();
        for (let r = 0; r < rounds; r++) {
          if (mapping) {
            mapping.bytes.set(source);
            target.set(mapping.bytes);
          } else {
            writeSync(fd, source, 0, chunk, 0);
            readSync(fd, target, 0, chunk, 0);
          }
        }
        rates.push((rounds * chunk) / ((performance.now() - start) / 1000));
      }
      mapping?.close();
      oneWay[name] = median(rates);
      mapped = mapping !== null;
    }
    const bytesPerSecond = Object.fromEntries(Object.entries(oneWay).map(([name, rate]) => [name, rate / 2]));
    return { bytesPerSecond, oneWayBytesPerSecond: oneWay, mapped };
  } finally {
    closeSync(fd);
    unlinkSync(path);
  }
}

/** Each transport's best figures over the runs: the highest throughput, the ping of the lowest p50. */
function bestCeilings(runs: Record<string, Ceiling>[]): Record<string, Ceiling> {
  const best: Record<string, Ceiling> = {};
  for (const run of runs) {
    for (const [kind, c] of Object.entries(run)) {
      const b = (best[kind] ??= { bytesPerSecond: {}, ...(c.oneWayBytesPerSecond ? { oneWayBytesPerSecond: {} } : {}) });
      if (c.pingUs && (!b.pingUs || c.pingUs.p50 < b.pingUs.p50)) b.pingUs = c.pingUs;
      if (c.mapped !== undefined) b.mapped = c.mapped;
      for (const [name, rate] of Object.entries(c.bytesPerSecond)) b.bytesPerSecond[name] = Math.max(b.bytesPerSecond[name] ?? 0, rate);
      for (const [name, rate] of Object.entries(c.oneWayBytesPerSecond ?? {})) b.oneWayBytesPerSecond![name] = Math.max(b.oneWayBytesPerSecond![name] ?? 0, rate);
    }
  }
  return best;
}

/**
 * The best daemon / embedded a same-host bandwidth round could reach if it cost embedded's round
 * plus only the three copies the mapped path makes (the client's write into the region, the
 * daemon's read-back into it, the client's copy out), each at the measured memcpy rate — a round
 * is sequential, so nothing overlaps them. Undefined without both figures.
 */
function copyBound(result: Result | undefined, shm: Ceiling): number | undefined {
  const name = result?.name;
  const embedded = name ? result!.rates.embedded : undefined;
  const oneWay = name ? shm.oneWayBytesPerSecond?.[name] : undefined;
  if (!embedded || !oneWay) return undefined;
  // oneWay is two copies (into the mapping and out of it) per payload byte.
  return 1 / embedded / (1 / embedded + 1.5 / oneWay);
}

function percentiles(values: number[]): { p50: number; p99: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50: at(0.5), p99: at(0.99) };
}

// ---- the workloads, on every side ---------------------------------------------------------------

interface Side {
  name: string;
  spawn(processName: string): Promise<BenchProcess>;
}

interface Result {
  name: string;
  describe: string;
  unit: string;
  /** Median rate of each side, by side name. */
  rates: Record<string, number>;
  /** Every side's rate over the embedded one (the first side). */
  ratios: Record<string, number>;
  /** Per rep, each side's rate over the embedded one of the same rep: min / median / max. */
  pairedRatios: Record<string, { min: number; median: number; max: number }>;
  /** round-trip: each side's per-operation latency over all reps (µs). */
  latencyUs?: Record<string, { p50: number; p99: number }>;
  samples: Record<string, number[]>;
  /** Sides whose run failed, with why (the others are still measured). */
  failed?: Record<string, string>;
}


/**
 * Each workload on every side: one warm-up each, then `reps` repetitions whose side order rotates
 * every rep, so drift (thermal, caches, GC, other programs) hits every side alike. A side that
 * fails (a transfer the transport cannot carry yet, say) is reported as failed; the others go on.
 */
async function compareAll(workloads: Workload[], sides: Side[], reps: number, scale: number): Promise<Result[]> {
  const results: Result[] = [];
  let serial = 0;
  for (const w of workloads) {
    process.stderr.write(`${w.name}: warm-up`);
    const failed: Record<string, string> = {};
    const live = async (side: Side, keep: (s: Sample) => void) => {
      if (failed[side.name]) return;
      try {
        keep(await sampleInProcess(side.spawn, `bench-${w.name}-${++serial}`, w, scale));
      } catch (error) {
        failed[side.name] = (error as Error).message.split('\n')[0];
      }
    };
    for (const side of sides) await live(side, () => {});
    const samples: Record<string, number[]> = Object.fromEntries(sides.map((s) => [s.name, []]));
    const latencies: Record<string, number[]> = Object.fromEntries(sides.map((s) => [s.name, []]));
    for (let rep = 0; rep < reps; rep++) {
      const order = sides.map((_, i) => sides[(i + rep) % sides.length]);
      for (const side of order) {
        await live(side, (s) => {
          samples[side.name].push(s.units / s.seconds);
          if (s.latenciesMs) for (const ms of s.latenciesMs) latencies[side.name].push(ms * 1000);
        });
      }
      process.stderr.write('.');
    }
    process.stderr.write('\n');
    const base = sides[0].name;
    const rates: Record<string, number> = {};
    const ratios: Record<string, number> = {};
    const pairedRatios: Result['pairedRatios'] = {};
    for (const side of sides) {
      if (samples[side.name].length === 0) continue;
      rates[side.name] = median(samples[side.name]);
      if (side.name === base || samples[base].length === 0) continue;
      ratios[side.name] = rates[side.name] / rates[base];
      const paired = samples[side.name].map((v, i) => v / samples[base][i]).filter((v) => Number.isFinite(v));
      if (paired.length > 0) pairedRatios[side.name] = { min: Math.min(...paired), median: median(paired), max: Math.max(...paired) };
    }
    const withLatency = sides.filter((s) => latencies[s.name].length > 0);
    results.push({
      name: w.name,
      describe: w.describe,
      unit: `${w.unit}/s`,
      rates,
      ratios,
      pairedRatios,
      ...(withLatency.length > 0 ? { latencyUs: Object.fromEntries(withLatency.map((s) => [s.name, percentiles(latencies[s.name])])) } : {}),
      samples,
      ...(Object.keys(failed).length > 0 ? { failed } : {}),
    });
  }
  return results;
}

// ---- the report -------------------------------------------------------------------------------

function printTable(heading: string, rows: string[][]): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  process.stderr.write(`\n${heading}\n`);
  for (const row of rows) process.stderr.write(`${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : (cell ?? '').padStart(widths[i]))).join('  ')}\n`);
}

const fixed = (value: number | undefined, digits = 3) => (value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits));

async function main(): Promise<void> {
  const args = parseWireArgs();
  if (!args) return;
  const { reps, scale, workloads, tls } = args;

  const bareAdapter = await create([]).requestAdapter();
  if (!bareAdapter) throw new Error('no WebGPU adapter: run scripts/setup.sh');
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-bench-wire-'));
  const token = randomBytes(32).toString('hex');
  const stopContention = measureContention();
  const chunks = workloads.filter((w) => CHUNK_OF[w.name]).map((w) => [w.name, CHUNK_OF[w.name]] as [string, number]);
  const ceilingRuns: Record<string, Ceiling>[] = [];
  let results: Result[];
  try {
    // The ceilings before the daemon starts and again after it has stopped (half the reps each),
    // the better of the two kept: other programs' load can only make a ceiling look lower.
    const ceilingReps = Math.max(1, Math.ceil(reps / 2));
    const measureCeilings = async (when: string): Promise<Record<string, Ceiling>> => {
      const found: Record<string, Ceiling> = {};
      process.stderr.write(`ceilings (${when}): unix socket`);
      found.unix = await socketCeiling('unix', dir, chunks, ceilingReps, scale);
      if (tls) {
        process.stderr.write(', tls');
        found.tls = await socketCeiling('tls', dir, chunks, ceilingReps, scale);
        process.stderr.write(', tls whole frames');
        found['tls-whole'] = await socketCeiling('tls', dir, chunks, ceilingReps, scale, true);
      }
      process.stderr.write(', shared memory\n');
      found.shm = shmCeiling(chunks, ceilingReps, scale);
      return found;
    };
    if (args.ceilings) ceilingRuns.push(await measureCeilings('before'));
    const daemon = await startDaemon(dir, token, tls, args.shm, args.profileDaemon);
    const kernel = await createKernel();
    try {
      const sides: Side[] = [
        { name: 'embedded', spawn: (name) => kernel.spawn({ name }) },
        { name: 'daemon', spawn: (name) => connect({ socket: daemon.socket, token, name }) },
      ];
      if (daemon.tlsUrl) {
        const ca = readFileSync(TLS_CERT);
        sides.push({ name: 'daemon-tls', spawn: (name) => connect({ url: daemon.tlsUrl!, ca, servername: 'localhost', token, name }) });
      }
      results = await compareAll(workloads, sides, reps, scale);
    } finally {
      await kernel.shutdown();
      await daemon.stop();
    }
    if (args.ceilings) ceilingRuns.push(await measureCeilings('after'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const ceilings = bestCeilings(ceilingRuns);
  // The daemon is another program here: its CPU time shows up as "other", so report it plainly.
  const { wallSeconds, otherCpuSeconds } = stopContention();
  /** Each socket side's ceiling: the daemon rides the Unix socket, daemon-tls TLS. */
  const transportOf: Record<string, string> = { daemon: 'unix', 'daemon-tls': 'tls' };
  const toCeiling = (r: Result, side: string) => {
    const out: Record<string, number> = {};
    const rate = r.rates[side];
    if (rate === undefined) return out;
    const own = ceilings[transportOf[side]];
    if (own?.bytesPerSecond[r.name]) out[transportOf[side]] = rate / own.bytesPerSecond[r.name];
    if (side === 'daemon' && ceilings.shm?.bytesPerSecond[r.name]) out.shm = rate / ceilings.shm.bytesPerSecond[r.name];
    if (side === 'daemon-tls' && ceilings['tls-whole']?.bytesPerSecond[r.name]) out.tlsWhole = rate / ceilings['tls-whole'].bytesPerSecond[r.name];
    if (r.latencyUs?.[side] && own?.pingUs) out.p50OverPing = r.latencyUs[side].p50 / own.pingUs.p50;
    return out;
  };
  const remoteSides = ['daemon', 'daemon-tls'].filter((s) => s === 'daemon' || tls);
  const report = {
    benchmark: 'gpunix-wire',
    ...machine(bareAdapter),
    reps,
    scale,
    targets: { bandwidthOverEmbedded: 0.8, tlsBandwidthOverTransport: 0.5, roundTripP50OverPing: 2, dispatchBatchedOverEmbedded: 0.9 },
    transport: `${tls ? 'unix socket and TLS on loopback' : 'unix socket'}, daemon in a child process${args.shm ? '' : ', shared memory off'}`,
    contention: { wallSeconds, otherCpuSecondsIncludingDaemon: otherCpuSeconds },
    ceilings,
    ceilingRuns,
    workloads: results.map((r) => ({ ...r, toCeiling: Object.fromEntries(remoteSides.map((s) => [s, toCeiling(r, s)])), ...(ceilings.shm?.mapped && CHUNK_OF[r.name] ? { copyBound: copyBound(r, ceilings.shm) } : {}) })),
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  const info = bareAdapter.info;
  const header = ['workload', 'embedded', ...remoteSides.flatMap((s) => [s, `${s}/emb`, ...(s === 'daemon' ? ['/unix', '/shm'] : ['/tls', '/tls-whole'])]), 'per-rep daemon/emb (min/med/max)'];
  const rows = [header];
  for (const r of results) {
    const unit = workloads.find((w) => w.name === r.name)!.unit;
    const show = (side: string) => (r.failed?.[side] ? 'failed' : r.rates[side] === undefined ? '-' : formatRate(r.rates[side], unit));
    const row = [r.name, show('embedded')];
    for (const s of remoteSides) {
      const c = toCeiling(r, s);
      row.push(show(s), fixed(r.ratios[s]));
      if (s === 'daemon') row.push(fixed(c.unix), fixed(c.shm));
      else row.push(fixed(c.tls), fixed(c.tlsWhole));
    }
    const p = r.pairedRatios.daemon;
    row.push(p ? `${p.min.toFixed(2)} / ${p.median.toFixed(2)} / ${p.max.toFixed(2)}` : '-');
    rows.push(row);
  }
  printTable(`${info.description || info.device} (${info.vendor}), node ${process.version}, ${reps} reps, scale ${scale}${args.shm ? '' : ', daemon without shared memory'}`, rows);

  const latency = results.find((r) => r.latencyUs);
  if (latency?.latencyUs) {
    const lrows = [['round trip (µs)', 'p50', 'p99', 'p50 / ping']];
    for (const [side, l] of Object.entries(latency.latencyUs)) lrows.push([side, l.p50.toFixed(1), l.p99.toFixed(1), fixed(toCeiling(latency, side).p50OverPing, 2)]);
    for (const [kind, c] of Object.entries(ceilings)) if (c.pingUs) lrows.push([`${kind} ping (bare echo)`, c.pingUs.p50.toFixed(1), c.pingUs.p99.toFixed(1), '']);
    printTable('Round-trip latency', lrows);
  }
  if (Object.keys(ceilings).length > 0 && chunks.length > 0) {
    const crows = [['transport ceiling (there and back)', ...chunks.map(([name]) => name.replace('bandwidth-', ''))]];
    for (const [kind, c] of Object.entries(ceilings)) crows.push([kind, ...chunks.map(([name]) => formatRate(c.bytesPerSecond[name], 'bytes'))]);
    if (ceilings.shm?.oneWayBytesPerSecond) crows.push([`shm one way (${ceilings.shm.mapped ? 'memcpy in + out of a mapping' : 'pwrite + pread'})`, ...chunks.map(([name]) => formatRate(ceilings.shm.oneWayBytesPerSecond![name], 'bytes'))]);
    if (ceilings.shm?.mapped) crows.push(['daemon / embedded if a round cost only its 3 copies more', ...chunks.map(([name]) => fixed(copyBound(results.find((r) => r.name === name), ceilings.shm)))]);
    printTable('Transport ceilings on this machine', crows);
  }
  for (const r of results) for (const [side, why] of Object.entries(r.failed ?? {})) process.stderr.write(`${r.name} failed on ${side}: ${why}\n`);
  process.stderr.write(contentionLine({ wallSeconds, otherCpuSeconds }));
}

// The same file is the transport ceilings' echo peer, in a child process of its own.
if (process.argv[2] === '--echo-server') serveEcho(process.argv[3], process.argv[4], process.argv[5] === 'whole');
else runBenchmark(main);
