// Live migration of a process between two nodes (two gpunixd), over loopback and over a shaped
// link, against the raw throughput of the same link measured in the same run.
//
// For each link (bench/link.ts):
//   - loopback: daemons A and B on this host, each with its Unix socket and a TCP listener on
//     127.0.0.1; the process moves A -> B over B's TCP address;
//   - shaped (root only): B inside a network namespace joined by a veth pair shaped with tbf
//     (default 1 Gbit/s), A in the root namespace; the process moves to B's address in there.
// and for each size: a program (a child process, `connect()` on A's Unix socket) holds that many
// bytes in buffers and keeps running a kernel that advances a small running state and rewrites a
// slice of its "hot" buffers every step (so they are dirty again during the pre-copy); an admin
// control session on A sends MigrateProcess {to: B's tcp:// address}; then the program runs a few
// more steps (on B), reads every buffer back and checks each word against a CPU oracle. A wrong
// word, or a migration that fails, fails the benchmark.
//
// Output: a markdown table (stdout; with --json, JSON on stdout and the table on stderr).
// See docs/benchmarks.md ("Live migration between nodes").
//
//   node dist/bench/nodeMigration.js [--sizes 64M,512M[,2G]] [--links loopback,shaped] [--json]

import { ChildProcess, fork, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { create, globals } from 'webgpu';
import { hashToken, newToken } from '../src/daemon/config.js';
import { connect } from '../src/client/index.js';
import { Session } from '../src/client/session.js';
import { parseBytes } from '../src/params.js';
import { createShapedLink, DEFAULT_SHAPE, inNamespace, isRoot, killAtCleanup, onCleanup, rawThroughput, ShapedLink } from './link.js';
import { contentionLine, freePort, machine, machineBusySeconds, runBenchmark } from './machine.js';
import { median, MiB } from './workloads.js';

const GiB = 1024 * MiB;
const GPUNIX_JS = join(import.meta.dirname, '..', '..', 'bin', 'gpunix.js');
/** B's TCP port inside the namespace (a fresh namespace: nothing else listens there). */
const NAMESPACE_PORT = 7447;

const usage = `usage: node dist/bench/nodeMigration.js [options]
  --sizes LIST        bytes the program holds, comma-separated (default 64M,512M; 2G is opt-in: slow on lavapipe)
  --links LIST        loopback, shaped (default both; shaped needs root, else loopback only)
  --rate R            the shaped link's tbf rate (default ${DEFAULT_SHAPE.rate}); --burst B (${DEFAULT_SHAPE.burst}), --latency L (${DEFAULT_SHAPE.latency})
  --raw-bytes N       bytes each raw link sample moves (default 256M); --raw-reps N samples, the median kept (default 3)
  --buffer N          the program's buffer size (default 64M, at most 128M)
  --hot N             buffers the program rewrites a slice of, one per step in turn (default 1)
  --slice N           bytes of a hot buffer rewritten each step (default 1M)
  --idle-ms MS        the program's pause between steps (default 5)
  --warm-ms MS        how long the program runs before the migration starts (default 2000)
  --after-steps N     steps the program runs after the migration before it checks its buffers (default 20)
  --timeout S         MigrateProcess's timeoutMs, in seconds (default: the daemon's)
  --rounds N          MigrateProcess's most pre-copy rounds (default: the daemon's)
  --profile DIR       run both daemons under node --cpu-prof, writing their profiles into DIR
  --no-migrate        run the harness without migrating (daemons, link, program, check)
  --json              JSON on stdout, the table on stderr`;

interface Args {
  sizes: number[];
  links: Array<'loopback' | 'shaped'>;
  shape: typeof DEFAULT_SHAPE;
  rawBytes: number;
  rawReps: number;
  program: Omit<ProgramConfig, 'socket' | 'token' | 'bytes'>;
  warmMs: number;
  timeoutMs: number | null;
  rounds: number | null;
  migrate: boolean;
  json: boolean;
  profileDir: string | null;
}

function parseBenchArgs(): Args | null {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '64M,512M' },
      links: { type: 'string', default: 'loopback,shaped' },
      rate: { type: 'string', default: DEFAULT_SHAPE.rate },
      burst: { type: 'string', default: DEFAULT_SHAPE.burst },
      latency: { type: 'string', default: DEFAULT_SHAPE.latency },
      'raw-bytes': { type: 'string', default: '256M' },
      'raw-reps': { type: 'string', default: '3' },
      buffer: { type: 'string', default: '64M' },
      hot: { type: 'string', default: '1' },
      slice: { type: 'string', default: '1M' },
      'idle-ms': { type: 'string', default: '5' },
      'warm-ms': { type: 'string', default: '2000' },
      'after-steps': { type: 'string', default: '20' },
      timeout: { type: 'string' },
      rounds: { type: 'string' },
      'no-migrate': { type: 'boolean', default: false },
      profile: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return null;
  }
  const count = (name: string, text: string, min = 1): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got ${text}`);
    return n;
  };
  const bufferBytes = parseBytes(values.buffer);
  const sliceBytes = parseBytes(values.slice);
  if (bufferBytes > 128 * MiB || bufferBytes % 256 !== 0) throw new Error('--buffer: at most 128M (a whole buffer is bound), a multiple of 256 bytes');
  if (sliceBytes > bufferBytes || sliceBytes % 256 !== 0 || sliceBytes === 0) throw new Error('--slice: a multiple of 256 bytes, at most --buffer');
  const sizes = values.sizes.split(',').map((s) => parseBytes(s));
  for (const size of sizes) if (size < bufferBytes || size % bufferBytes !== 0) throw new Error(`--sizes: each size must be a multiple of --buffer (${bufferBytes} bytes), got ${size}`);
  const links = values.links.split(',').map((l) => l.trim());
  for (const link of links) if (link !== 'loopback' && link !== 'shaped') throw new Error(`--links: loopback or shaped, got ${link}`);
  return {
    sizes,
    links: links as Args['links'],
    shape: { rate: values.rate, burst: values.burst, latency: values.latency },
    rawBytes: parseBytes(values['raw-bytes']),
    rawReps: count('raw-reps', values['raw-reps']),
    program: {
      bufferBytes,
      sliceBytes,
      hot: count('hot', values.hot),
      idleMs: count('idle-ms', values['idle-ms'], 0),
      afterSteps: count('after-steps', values['after-steps'], 0),
    },
    warmMs: count('warm-ms', values['warm-ms'], 0),
    timeoutMs: values.timeout === undefined ? null : Number(values.timeout) * 1000,
    rounds: values.rounds === undefined ? null : count('rounds', values.rounds),
    migrate: !values['no-migrate'],
    json: values.json,
    profileDir: values.profile ?? null,
  };
}

// ---- the program (a child process of the benchmark: `--program CONFIG`) ----------------------------

interface ProgramConfig {
  socket: string;
  token: string;
  /** Bytes held in buffers of bufferBytes each. */
  bytes: number;
  bufferBytes: number;
  /** Bytes of a hot buffer rewritten each step. */
  sliceBytes: number;
  /** How many buffers (the first ones) are hot: step s rewrites a slice of buffer s mod hot. */
  hot: number;
  idleMs: number;
  afterSteps: number;
}

type ProgramMessage =
  | { type: 'ready'; pid: number; setupMs: number }
  | { type: 'done'; exact: boolean; mismatch: string | null; steps: number; stepsAfterStop: number; pidAtEnd: number; verifyMs: number }
  | { type: 'error'; message: string };

/** Each step: data[offset + i] = data[offset + i] * 3 + step + (offset + i), for i < count. */
const SLICE_STEP_WGSL = `
struct Params { step: u32, offset: u32, count: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < p.count) { let i = p.offset + g.x; data[i] = data[i] * 3u + p.step + i; }
}`;

/** The running state: a small buffer every step advances whole (each step depends on the last). */
const STATE_BYTES = 64 * 1024;

/** Word i of buffer b before any step (b = the buffer count: the state buffer). */
function initialWord(b: number, i: number): number {
  return (Math.imul(b + 1, 0x9e3779b1) ^ Math.imul(i, 0x85ebca6b)) >>> 0;
}

/** The program's loop: set up, say ready, step until told to stop (plus afterSteps), check, exit. */
async function runProgram(config: ProgramConfig): Promise<void> {
  Object.assign(globalThis, globals);
  const send = (message: ProgramMessage): void => void process.send!(message);
  const setupStart = performance.now();
  const proc = await connect({ socket: config.socket, token: config.token, name: 'bench-migrating' });
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  let uncaptured: string | null = null;
  device.addEventListener('uncapturederror', (event) => (uncaptured ??= (event as GPUUncapturedErrorEvent).error.message));
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: SLICE_STEP_WGSL }) } });
  const count = config.bytes / config.bufferBytes;
  const words = config.bufferBytes / 4;
  const stateWords = STATE_BYTES / 4;
  const makeBuffer = (b: number, bytes: number): GPUBuffer => {
    const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    const view = new Uint32Array(buffer.getMappedRange());
    for (let i = 0; i < view.length; i++) view[i] = initialWord(b, i);
    buffer.unmap();
    return buffer;
  };
  const data = [...Array(count)].map((_, b) => makeBuffer(b, config.bufferBytes));
  const state = makeBuffer(count, STATE_BYTES);
  const params = (): GPUBuffer => device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const stateParams = params();
  const sliceParams = params();
  const bind = (buffer: GPUBuffer, uniform: GPUBuffer): GPUBindGroup =>
    device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }, { binding: 1, resource: { buffer: uniform } }] });
  const hot = Math.min(config.hot, count);
  const hotGroups = data.slice(0, hot).map((buffer) => bind(buffer, sliceParams));
  const stateGroup = bind(state, stateParams);
  await device.queue.onSubmittedWorkDone();
  send({ type: 'ready', pid: proc.pid, setupMs: performance.now() - setupStart });

  // Every slice step, in order, for the oracle: [buffer, first word].
  const sliceSteps: Array<[number, number]> = [];
  const sliceWords = config.sliceBytes / 4;
  const slicesPerBuffer = Math.floor(words / sliceWords);
  let stopAt = Infinity;
  let stopRequestedAt = -1;
  process.on('message', (message) => {
    if (message === 'stop' && stopAt === Infinity) {
      stopRequestedAt = sliceSteps.length;
      stopAt = sliceSteps.length + config.afterSteps;
    }
  });
  for (let step = 0; step < stopAt; step++) {
    const b = step % hot;
    const first = (Math.floor(step / hot) % slicesPerBuffer) * sliceWords;
    device.queue.writeBuffer(stateParams, 0, new Uint32Array([step, 0, stateWords, 0]));
    device.queue.writeBuffer(sliceParams, 0, new Uint32Array([step, first, sliceWords, 0]));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, stateGroup);
    pass.dispatchWorkgroups(Math.ceil(stateWords / 64));
    pass.setBindGroup(0, hotGroups[b]);
    pass.dispatchWorkgroups(Math.ceil(sliceWords / 64));
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    sliceSteps.push([b, first]);
    if (uncaptured) throw new Error(`WebGPU error at step ${step}: ${uncaptured}`);
    if (config.idleMs > 0) await new Promise((r) => setTimeout(r, config.idleMs));
  }
  const steps = sliceSteps.length;

  // The check: every word of every buffer against the CPU's replay of the same steps.
  const verifyStart = performance.now();
  const staging = device.createBuffer({ size: config.bufferBytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let mismatch: string | null = null;
  const check = async (b: number, buffer: GPUBuffer, n: number, expected: Uint32Array): Promise<void> => {
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, n * 4);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ, 0, n * 4);
    const got = new Uint32Array(staging.getMappedRange(0, n * 4));
    for (let i = 0; i < n && mismatch === null; i++) {
      if (got[i] !== expected[i]) mismatch = `${b === count ? 'state buffer' : `buffer ${b}`} word ${i}: ${got[i]}, expected ${expected[i]}`;
    }
    staging.unmap();
  };
  const stateExpected = new Uint32Array(stateWords).map((_, i) => initialWord(count, i));
  for (let s = 0; s < steps; s++) for (let i = 0; i < stateWords; i++) stateExpected[i] = (Math.imul(stateExpected[i], 3) + s + i) >>> 0;
  await check(count, state, stateWords, stateExpected);
  const expected = new Uint32Array(words);
  for (let b = 0; b < count && mismatch === null; b++) {
    for (let i = 0; i < words; i++) expected[i] = initialWord(b, i);
    if (b < hot) {
      for (let s = 0; s < steps; s++) {
        const [sb, first] = sliceSteps[s];
        if (sb !== b) continue;
        for (let i = first; i < first + sliceWords; i++) expected[i] = (Math.imul(expected[i], 3) + s + i) >>> 0;
      }
    }
    await check(b, data[b], words, expected);
  }
  send({
    type: 'done',
    exact: mismatch === null,
    mismatch,
    steps,
    stepsAfterStop: steps - stopRequestedAt,
    pidAtEnd: proc.pid,
    verifyMs: performance.now() - verifyStart,
  });
  device.destroy();
  await proc.exit();
}

// ---- daemons -----------------------------------------------------------------------------------------

interface Tokens {
  admin: string;
  tenant: string;
}

interface DaemonChild {
  name: string;
  socket: string;
  /** Its TCP listener, as MigrateProcess's `to` takes it. */
  url: string;
  stop(): Promise<void>;
}



/**
 * Starts gpunixd `name` as a child process (inside `namespace` if given) with its own Unix socket
 * in `dir` and a plain TCP listener on host:port; the admin token (also each daemon's
 * migration.peerToken) and tenant "bench" are the same on every daemon. Resolves once it answers a control session on the socket and on TCP.
 */
async function startDaemon(dir: string, name: string, namespace: string | null, host: string, port: number, tokens: Tokens, budget: number, profileDir: string | null): Promise<DaemonChild> {
  const socket = join(dir, `${name}.sock`);
  const config = join(dir, `${name}.json`);
  const url = `tcp://${host}:${port}`;
  mkdirSync(join(dir, `images-${name}`), { recursive: true });
  writeFileSync(
    config,
    JSON.stringify({
      socket,
      log: { level: 'warn' },
      tcp: { host, port, insecure: true },
      adminTokenHash: hashToken(tokens.admin),
      tenants: { bench: { tokenHash: hashToken(tokens.tenant) } },
      imageDir: join(dir, `images-${name}`),
      kernel: { memoryBudget: budget },
      // The admin token A presents to B when it moves a process there (the same on both).
      migration: { peerToken: tokens.admin },
    }),
  );
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-name', `${name}.cpuprofile`] : [];
  const [command, args] = inNamespace(namespace, [process.execPath, ...profile, GPUNIX_JS, 'daemon', '--config', config]);
  const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  killAtCleanup(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (const where of [{ socket }, { url }]) {
    for (let attempt = 0; ; attempt++) {
      try {
        const probe = await Session.open({ ...where, token: tokens.admin }, { role: 'control' });
        probe.close();
        break;
      } catch (error) {
        if (child.exitCode !== null || child.signalCode !== null || attempt > 300) {
          throw new Error(`gpunixd ${name} did not start (${where.socket ?? where.url}): ${(error as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  return {
    name,
    socket,
    url,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// ---- one migration -----------------------------------------------------------------------------------

interface MigrationResult {
  moved: boolean;
  node?: string;
  address?: unknown;
  pid: number;
  bytes: number;
  rounds: number;
  totalMs: number;
  downtimeMs: number;
  bytesPerSecond: number;
}

interface Row {
  link: string;
  size: number;
  rawBytesPerSecond: number;
  /** Bare Dawn's read-back rate in the benchmark's process (median), the same for every row. */
  deviceReadBytesPerSecond: number;
  migration: MigrationResult | null;
  /** migration.bytesPerSecond / rawBytesPerSecond. */
  ratio: number | null;
  error: string | null;
  /** With --profile: the MigrateProcess call's start and end on the monotonic clock (µs), as the daemons' .cpuprofile times are. */
  profileWindowUs?: [number, number];
  program: { pidBefore: number; pidAtEnd: number; setupMs: number; steps: number; stepsAfterStop: number; exact: boolean; mismatch: string | null; verifyMs: number };
}

/** The program as a child process, and its next message. */
function startProgram(config: ProgramConfig): { child: ChildProcess; next(): Promise<ProgramMessage> } {
  const child = fork(import.meta.filename, ['--program', JSON.stringify(config)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  killAtCleanup(child);
  const queue: ProgramMessage[] = [];
  let waiting: ((m: ProgramMessage) => void) | null = null;
  child.on('message', (m) => {
    if (waiting) {
      const w = waiting;
      waiting = null;
      w(m as ProgramMessage);
    } else queue.push(m as ProgramMessage);
  });
  child.once('exit', (code, signal) => {
    const m: ProgramMessage = { type: 'error', message: `the program exited (${signal ?? code}) before it reported` };
    if (waiting) waiting(m);
    else queue.push(m);
  });
  return {
    child,
    next: () => {
      const m = queue.shift();
      return m ? Promise.resolve(m) : new Promise((resolve) => (waiting = resolve));
    },
  };
}

async function expect<T extends ProgramMessage['type']>(next: () => Promise<ProgramMessage>, type: T): Promise<Extract<ProgramMessage, { type: T }>> {
  const m = await next();
  if (m.type === 'error') throw new Error(`the program failed: ${m.message}`);
  if (m.type !== type) throw new Error(`the program said ${m.type}, expected ${type}`);
  return m as Extract<ProgramMessage, { type: T }>;
}

/** Runs the program of `size` bytes on A, moves it to B while it runs, and checks its results. */
async function measureMigration(args: Args, link: string, size: number, a: DaemonChild, b: DaemonChild, tokens: Tokens, raw: number, deviceRead: number): Promise<Row> {
  const log = (text: string): void => void process.stderr.write(`[${link} ${formatSize(size)}] ${text}\n`);
  const program = startProgram({ socket: a.socket, token: tokens.tenant, bytes: size, ...args.program });
  const ready = await expect(program.next, 'ready');
  log(`program pid ${ready.pid} on ${a.name}: ${formatSize(size)} in buffers (set up in ${(ready.setupMs / 1000).toFixed(1)} s)`);
  await new Promise((r) => setTimeout(r, args.warmMs));
  let migration: MigrationResult | null = null;
  let error: string | null = null;
  let profileWindowUs: [number, number] | undefined;
  if (args.migrate) {
    const options: Record<string, unknown> = { to: b.url };
    if (args.timeoutMs !== null) options.timeoutMs = args.timeoutMs;
    if (args.rounds !== null) options.rounds = args.rounds;
    log(`MigrateProcess ${ready.pid} -> ${b.url}`);
    const control = await Session.open({ socket: a.socket, token: tokens.admin }, { role: 'control' });
    let lastShown = 0;
    const startUs = Number(process.hrtime.bigint() / 1000n);
    try {
      migration = (await control.call('MigrateProcess', { pid: ready.pid, device: '', options }, ({ what, done, total }) => {
        if (performance.now() - lastShown < 1000) return;
        lastShown = performance.now();
        log(`${what}: ${formatSize(done)}${total ? ` of ${formatSize(total)}` : ''}`);
      })) as MigrationResult;
      log(`moved: pid ${migration.pid} there, ${formatSize(migration.bytes)} in ${migration.rounds} rounds, ${(migration.totalMs / 1000).toFixed(2)} s, downtime ${migration.downtimeMs.toFixed(0)} ms`);
    } catch (e) {
      error = e instanceof Error ? `${(e as { code?: string }).code ? `${(e as { code?: string }).code}: ` : ''}${e.message}` : String(e);
      log(`the migration failed: ${error}`);
    } finally {
      control.close();
      if (args.profileDir) profileWindowUs = [startUs, Number(process.hrtime.bigint() / 1000n)];
    }
  }
  program.child.send('stop');
  const done = await expect(program.next, 'done');
  log(`program: ${done.steps} steps (${done.stepsAfterStop} after the move), ${done.exact ? 'exact' : `WRONG: ${done.mismatch}`} (checked in ${(done.verifyMs / 1000).toFixed(1)} s)`);
  await new Promise<void>((resolve) => (program.child.exitCode !== null ? resolve() : program.child.once('exit', () => resolve())));
  return {
    link,
    size,
    rawBytesPerSecond: raw,
    deviceReadBytesPerSecond: deviceRead,
    migration,
    ratio: migration ? migration.bytesPerSecond / raw : null,
    error,
    ...(profileWindowUs ? { profileWindowUs } : {}),
    program: {
      pidBefore: ready.pid,
      pidAtEnd: done.pidAtEnd,
      setupMs: ready.setupMs,
      steps: done.steps,
      stepsAfterStop: done.stepsAfterStop,
      exact: done.exact,
      mismatch: done.mismatch,
      verifyMs: done.verifyMs,
    },
  };
}

// ---- the run -------------------------------------------------------------------------------------------

function formatSize(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB) return `${Math.round(bytes / MiB)} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}

/**
 * The device's own read-back rate, bare Dawn in this process: a buffer of `bytes` copied to a
 * MAP_READ buffer, mapped and copied out, `reps` times after one warm-up. The pre-copy reads every
 * buffer this way (on the daemon's device), so on a software adapter this, not the link, can bound
 * a migration.
 */
async function deviceReadThroughput(adapter: GPUAdapter, bytes: number, reps: number): Promise<number[]> {
  const device = await adapter.requestDevice();
  try {
    const source = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(source, 0, new Uint8Array(bytes).fill(0x5a));
    const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    await device.queue.onSubmittedWorkDone();
    const samples: number[] = [];
    for (let rep = 0; rep <= reps; rep++) {
      const start = performance.now();
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(source, 0, staging, 0, bytes);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const copy = new Uint8Array(staging.getMappedRange()).slice();
      staging.unmap();
      if (copy[bytes - 1] !== 0x5a) throw new Error('the device read-back returned wrong bytes');
      if (rep > 0) samples.push(bytes / ((performance.now() - start) / 1000));
    }
    return samples;
  } finally {
    device.destroy();
  }
}

async function measureRaw(args: Args, link: string, namespace: string | null, host: string): Promise<{ median: number; samples: number[] }> {
  const samples: number[] = [];
  for (let rep = 0; rep < args.rawReps; rep++) samples.push(await rawThroughput(namespace, host, args.rawBytes));
  process.stderr.write(`[${link}] raw link: ${samples.map((s) => (s / MiB).toFixed(0)).join(', ')} MiB/s (${formatSize(args.rawBytes)} each)\n`);
  return { median: median(samples), samples };
}

function table(rows: Row[]): string {
  const cell = (n: number | null | undefined, digits = 0): string => (n === null || n === undefined ? '—' : n.toFixed(digits));
  const lines = [
    '| link | size | raw link MiB/s | device read MiB/s | migration MiB/s | ratio | sent MiB | total s | downtime ms | rounds | exact |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const m = r.migration;
    lines.push(
      `| ${r.link} | ${formatSize(r.size)} | ${cell(r.rawBytesPerSecond / MiB)} | ${cell(r.deviceReadBytesPerSecond / MiB)} | ${m ? cell(m.bytesPerSecond / MiB) : r.error ? `failed: ${r.error}` : '—'} | ${cell(r.ratio, 2)} | ${m ? cell(m.bytes / MiB) : '—'} | ${m ? cell(m.totalMs / 1000, 2) : '—'} | ${m ? cell(m.downtimeMs) : '—'} | ${m ? m.rounds : '—'} | ${r.program.exact ? 'yes' : 'NO'} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

let bareGpu: GPU | null = null;

/**
 * CPU seconds of this process and of its children that have ended and been waited for (the
 * daemons, the program, the link receivers), from /proc/self/stat; null off Linux. Taken once
 * every child has ended, it lets the contention line count only programs outside the benchmark.
 */
function ownAndChildrenCpuSeconds(): number | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // After the command name: state is field 3, so utime, stime, cutime, cstime are 14..17.
    return (fields[11] + fields[12] + fields[13] + fields[14]) / 100;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const args = parseBenchArgs();
  if (!args) return;
  let links = args.links;
  if (links.includes('shaped') && !isRoot()) {
    process.stderr.write('bench: the shaped link needs root (network namespaces, veth, tc); running the loopback link only\n');
    links = links.filter((l) => l !== 'shaped');
    if (links.length === 0) links = ['loopback'];
  }
  Object.assign(globalThis, globals);
  // Held for the whole run: dawn.node crashes when a GPU object is collected while its devices live.
  bareGpu = create([]);
  const adapter = await bareGpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  const deviceReads = await deviceReadThroughput(adapter, args.program.bufferBytes, 5);
  const deviceRead = median(deviceReads);
  process.stderr.write(`device read-back (bare Dawn, ${formatSize(args.program.bufferBytes)}): ${deviceReads.map((s) => (s / MiB).toFixed(0)).join(', ')} MiB/s\n`);
  const busyBefore = machineBusySeconds();
  const ownBefore = ownAndChildrenCpuSeconds();
  const wallBefore = performance.now();
  const tokens: Tokens = { admin: newToken(), tenant: newToken() };
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-bench-migrate-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  // Each daemon's budget holds the largest size with room for the program's staging buffer.
  const budget = Math.max(...args.sizes) + 512 * MiB;
  const rows: Row[] = [];
  const raws: Record<string, number[]> = {};
  let shapedLink: ShapedLink | null = null;
  for (const link of links) {
    let namespace: string | null = null;
    let bHost = '127.0.0.1';
    let bPort = await freePort();
    if (link === 'shaped') {
      shapedLink = createShapedLink(args.shape);
      namespace = shapedLink.namespace;
      bHost = shapedLink.peerAddress;
      bPort = NAMESPACE_PORT;
      process.stderr.write(`[shaped] namespace ${namespace}: ${shapedLink.hostAddress} <-> ${bHost}, tbf rate ${args.shape.rate} burst ${args.shape.burst} latency ${args.shape.latency} on both ends\n`);
    }
    const raw = await measureRaw(args, link, namespace, bHost);
    raws[link] = raw.samples;
    const a = await startDaemon(dir, `a-${link}`, null, '127.0.0.1', await freePort(), tokens, budget, args.profileDir);
    const b = await startDaemon(dir, `b-${link}`, namespace, bHost, bPort, tokens, budget, args.profileDir);
    process.stderr.write(`[${link}] daemons: A ${a.socket} (${a.url}), B ${b.socket} (${b.url}${namespace ? ` in ${namespace}` : ''})\n`);
    try {
      for (const size of args.sizes) rows.push(await measureMigration(args, link, size, a, b, tokens, raw.median, deviceRead));
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      shapedLink?.close();
      shapedLink = null;
    }
  }
  const busyAfter = machineBusySeconds();
  const ownAfter = ownAndChildrenCpuSeconds();
  const contention = {
    wallSeconds: (performance.now() - wallBefore) / 1000,
    otherCpuSeconds:
      busyBefore === null || busyAfter === null || ownBefore === null || ownAfter === null ? null : Math.max(0, busyAfter - busyBefore - (ownAfter - ownBefore)),
  };
  const text = table(rows) + contentionLine(contention);
  if (args.json) {
    process.stdout.write(
      `${JSON.stringify(
        {
          ...machine(adapter),
          sizes: args.sizes,
          links,
          shape: links.includes('shaped') ? args.shape : null,
          rawBytes: args.rawBytes,
          rawSamples: raws,
          deviceReadSamples: deviceReads,
          program: { ...args.program, stateBytes: STATE_BYTES, warmMs: args.warmMs },
          contention,
          results: rows,
        },
        null,
        2,
      )}\n`,
    );
    process.stderr.write(text);
  } else process.stdout.write(text);
  const wrong = rows.filter((r) => !r.program.exact);
  if (wrong.length > 0) throw new Error(`wrong results after the move: ${wrong.map((r) => `${r.link} ${formatSize(r.size)}: ${r.program.mismatch}`).join('; ')}`);
  const failed = rows.filter((r) => r.error !== null);
  if (failed.length > 0) throw new Error(`${failed.length} migration(s) failed: ${failed.map((r) => `${r.link} ${formatSize(r.size)}: ${r.error}`).join('; ')}`);
}

const programAt = process.argv.indexOf('--program');
if (programAt >= 0) {
  runProgram(JSON.parse(process.argv[programAt + 1]) as ProgramConfig).then(
    () => process.exit(0),
    (error) => {
      process.send?.({ type: 'error', message: error instanceof Error ? error.message : String(error) } satisfies ProgramMessage, () => process.exit(1));
    },
  );
} else {
  runBenchmark(main);
}
