// A control plane that never waits for the device. On lavapipe, Dawn's synchronous
// createComputePipeline waits in the driver while a kernel runs on the same device; gpunixd serves
// every session, the operators and the signals on one thread, and runs every process of a node on
// one real device, so one tenant's long kernel plus another tenant's pipeline creation used to stop
// the whole daemon. These scenarios run a long single-workgroup kernel (unsplittable: it holds the
// device for its whole run) and assert the order of what gpunixd answers meanwhile, never timings.

import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect, RemoteProcess } from '../src/client/index.js';
import { Session } from '../src/client/session.js';
import { hashToken, parseConfig } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { dispatchThenCopy, eventually } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN = 'admin-token-0123456789abcdef0123456789abcdef';
const LONG = 'long-token-0123456789abcdef0123456789abcdef0';
const NEIGHBOUR = 'neighbour-token-0123456789abcdef0123456789ab';
const RUNAWAY = 'runaway-token-0123456789abcdef0123456789abcd';
/** The runaway tenant's quota: the longest one dispatch of its processes may run. */
const RUNAWAY_MAX_DISPATCH_MS = 1500;

/** One workgroup that loops until d[0] == 7: nothing ever writes 7. */
const RUNAWAY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { loop { if (d[0] == 7u) { break; } d[1] = d[1] + 1u; } }`;

/** About how long the long kernel runs (calibrated on the device at hand). */
const LONG_KERNEL_MS = 3500;

// d[0] iterations of a recurrence nothing can fold away: the count is read from the buffer.
const SPIN_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() {
  var x = d[1];
  for (var i = 0u; i < d[0]; i++) { x = x * 1664525u + 1013904223u; }
  d[1] = x;
}`;

const DOUBLE_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { d[g.x] = d[g.x] * 2u + 1u; }`;

/**
 * The watchdog would end a kernel this long (its default limit per dispatch is shorter): where the
 * configuration knows kernel.maxDispatchMs, the daemon allows this one its whole run. Either way
 * the order asserted holds; "off the device" is its completion or its process's end.
 */
function kernelOptions(): Record<string, unknown> {
  try {
    parseConfig({ socket: '/nonexistent/s', kernel: { maxDispatchMs: 60_000 } });
    return { maxDispatchMs: 60_000 };
  } catch {
    return {};
  }
}

/** A process that runs SPIN_WGSL: calibrated, then `start()` puts the long run on the device. */
async function longKernel(proc: RemoteProcess) {
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ label: 'spin', layout: 'auto', compute: { module: device.createShaderModule({ code: SPIN_WGSL }) } });
  const state = device.createBuffer({ label: 'spin state', size: 8, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: state } }] });
  const dispatch = () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
  };
  const timed = async (iterations: number) => {
    device.queue.writeBuffer(state, 0, new Uint32Array([iterations, 1]));
    await device.queue.onSubmittedWorkDone();
    const start = performance.now();
    dispatch();
    await device.queue.onSubmittedWorkDone();
    return performance.now() - start;
  };
  await timed(1 << 16); // compiles, and warms the device
  const probe = 1 << 24;
  const ms = await timed(probe);
  const iterations = Math.min(0xffff_ffff, Math.round((probe * LONG_KERNEL_MS) / Math.max(ms, 1)));
  return {
    /**
     * Writes the loop count, then submits the long run alone (so the process's only work in flight
     * is the run): `offDevice` resolves when it is off the device (done, or its process ended).
     */
    async start(): Promise<{ offDevice: Promise<string> }> {
      device.queue.writeBuffer(state, 0, new Uint32Array([iterations, 1]));
      await device.queue.onSubmittedWorkDone();
      dispatch();
      const offDevice = Promise.race([
        device.queue.onSubmittedWorkDone().then(
          () => 'done',
          () => 'ended',
        ),
        proc.ended.then((status) => `ended (${status?.reason ?? 'disconnected'})`),
      ]);
      return { offDevice };
    },
  };
}

/** The neighbour's program: a module, its pipeline (and a bad one) made while the device is busy. */
function neighbourPipelines(device: GPUDevice) {
  const module = device.createShaderModule({ code: DOUBLE_WGSL });
  device.pushErrorScope('validation');
  const pipeline = device.createComputePipeline({ label: 'double', layout: 'auto', compute: { module } });
  const goodScope = device.popErrorScope();
  device.pushErrorScope('validation');
  device.createComputePipeline({ label: 'bad', layout: 'auto', compute: { module, entryPoint: 'no_such_entry' } });
  const badScope = device.popErrorScope();
  return { pipeline, goodScope, badScope };
}

/** Runs the neighbour's pipeline on 64 words 0..63: exactly 2i+1 comes back. */
async function runDouble(device: GPUDevice, pipeline: GPUComputePipeline): Promise<number[]> {
  const words = 64;
  const data = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  new Uint32Array(data.getMappedRange()).set(Array.from({ length: words }, (_, i) => i));
  data.unmap();
  const readback = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  dispatchThenCopy(device, pipeline, data, 1, readback, words * 4);
  await readback.mapAsync(GPUMapMode.READ);
  const out = [...new Uint32Array(readback.getMappedRange())];
  readback.unmap();
  return out;
}

const EXPECTED_DOUBLE = Array.from({ length: 64 }, (_, i) => i * 2 + 1);

/**
 * A daemon that was stopped until the kernel ended would deliver the long process's completion
 * within this pause: it keeps such a daemon from passing by a race between two replies sent at
 * once. A daemon that is not stopped is a whole kernel run away from it.
 */
const SETTLE_MS = 100;

describe('a control plane that never waits for the device', () => {
  let dir: string;
  let socket: string;
  let daemon: Daemon;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-control-'));
    socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      adminTokenHash: hashToken(ADMIN),
      tenants: {
        long: { tokenHash: hashToken(LONG) },
        neighbour: { tokenHash: hashToken(NEIGHBOUR) },
        runaway: { tokenHash: hashToken(RUNAWAY), maxDispatchMs: RUNAWAY_MAX_DISPATCH_MS },
      },
      kernel: kernelOptions(),
    });
  });

  after(async () => {
    await daemon?.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  const record = (pid: number) => daemon.kernel.ps().find((p) => p.pid === pid)!;

  it('gpunixd answers status and a new session while a long kernel holds the device', async () => {
    const order: string[] = [];
    const long = await connect({ socket, token: LONG, name: 'long' });
    const spin = await longKernel(long);
    const offDevice = (await spin.start()).offDevice.then((how) => {
      order.push('the long kernel is off the device');
      return how;
    });
    // Its only work in flight is the run (a process is 'running' while it has work on the device).
    await eventually('the long kernel is on the device', () => record(long.pid).state === 'running');

    // A new tenant connects: the handshake, its adapter and device.
    const neighbour = await connect({ socket, token: NEIGHBOUR, name: 'neighbour' });
    const device = await (await neighbour.gpu.requestAdapter())!.requestDevice();
    order.push('the neighbour is connected');
    const uncaptured: GPUError[] = [];
    device.addEventListener('uncapturederror', (event) => uncaptured.push((event as GPUUncapturedErrorEvent).error));
    const objectsBefore = record(neighbour.pid).liveObjects;
    const { pipeline, goodScope, badScope } = neighbourPipelines(device);
    // The daemon has taken the createComputePipeline (the pipeline is in the process's ledger) ...
    await eventually('gpunixd has taken the neighbour\'s createComputePipeline', () => record(neighbour.pid).liveObjects > objectsBefore + 1);
    order.push('the neighbour\'s pipeline is taken');
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    // ... and goes on serving: an operator's session and its status.
    const control = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    const status = (await control.call('DaemonStatus', {})) as { admin: boolean; stats: { processes: unknown } };
    assert.equal(status.admin, true);
    order.push('status is answered');

    const how = await offDevice;
    assert.deepEqual(order, [
      'the neighbour is connected',
      'the neighbour\'s pipeline is taken',
      'status is answered',
      'the long kernel is off the device',
    ]);
    assert.ok(how === 'done' || how.startsWith('ended (watchdog'), `the long kernel ended as ${how}`);

    // What the neighbour made while the device was busy behaves as a synchronous call's result.
    assert.equal(await goodScope, null, 'the good pipeline raised no error');
    const badError = await badScope;
    assert.ok(badError, 'the bad entry point is a validation error in the neighbour\'s scope');
    assert.equal(badError.constructor.name, 'GPUValidationError');
    assert.match(badError.message, /no_such_entry/);
    assert.deepEqual(await runDouble(device, pipeline), EXPECTED_DOUBLE);
    assert.deepEqual(uncaptured, [], 'nothing reached uncapturederror');

    control.close();
    assert.equal((await neighbour.exit()).reason, 'normal');
    await long.exit().catch(() => {});
  });

  it('a runaway kernel through gpunixd is ended by the watchdog while the daemon keeps serving', async () => {
    const order: string[] = [];
    const runaway = await connect({ socket, token: RUNAWAY, name: 'runaway' });
    const device = await (await runaway.gpu.requestAdapter())!.requestDevice();
    const pipeline = device.createComputePipeline({ label: 'spin-forever', layout: 'auto', compute: { module: device.createShaderModule({ code: RUNAWAY_WGSL }) } });
    const state = device.createBuffer({ size: 8, usage: GPUBufferUsage.STORAGE });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: state } }] }));
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
    const ended = runaway.ended.then((status) => {
      order.push('the runaway is ended');
      return status;
    });
    await eventually('the runaway is on the device', () => record(runaway.pid).state === 'running');

    const neighbour = await connect({ socket, token: NEIGHBOUR, name: 'neighbour2' });
    const ndevice = await (await neighbour.gpu.requestAdapter())!.requestDevice();
    const { pipeline: double } = neighbourPipelines(ndevice);
    order.push('the neighbour is connected');
    const control = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    await control.call('DaemonStatus', {});
    order.push('status is answered');

    const status = await ended;
    assert.equal(status?.reason, 'watchdog');
    assert.match(status?.message ?? '', new RegExp(`'spin-forever' ran \\d+ ms on gpu0, over the limit of ${RUNAWAY_MAX_DISPATCH_MS} ms`));
    assert.deepEqual(order, ['the neighbour is connected', 'status is answered', 'the runaway is ended']);
    // The operator sees why; the neighbour's pipeline, made while the runaway held the device, works.
    const listed = (await control.call('ListProcesses', {})) as { processes: Array<{ pid: number; exit?: { reason: string } }> };
    assert.equal(listed.processes.find((p) => p.pid === runaway.pid)?.exit?.reason, 'watchdog');
    assert.deepEqual(await runDouble(ndevice, double), EXPECTED_DOUBLE);
    control.close();
    assert.equal((await neighbour.exit()).reason, 'normal');
  });
});

describe('signals while a long kernel holds the device', () => {
  let dir: string;
  let child: ChildProcess | null = null;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-signal-'));
  });

  after(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('gpunixd serves SIGTERM while a long kernel runs and a neighbour creates a pipeline, then drains', async () => {
    // A personal daemon (token-less sessions act as the default tenant) in its own process, as
    // systemd runs it: signals reach its thread only when nothing holds it.
    const socket = join(dir, 'gpunixd.sock');
    const config = join(dir, 'gpunixd.json');
    const kernel = kernelOptions();
    const args = [join(root, 'bin/gpunix.js'), 'daemon', '--socket', socket];
    if (Object.keys(kernel).length > 0) {
      writeFileSync(config, JSON.stringify({ socket, socketMode: '0600', anonymousTenant: 'default', kernel, log: { level: 'warn' } }));
      args.push('--config', config);
    }
    const daemon = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = daemon;
    let stderr = '';
    daemon.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
    await eventually('the daemon listens', () => existsSync(socket) || daemon.exitCode !== null, 20_000);
    assert.equal(daemon.exitCode, null, `the daemon failed to start: ${stderr}`);

    const order: string[] = [];
    const control = await Session.open({ socket }, { role: 'control' });
    type Listed = { pid: number; state: string; liveObjects: number };
    const listed = async (pid: number) => ((await control.call('ListProcesses', {})) as { processes: Listed[] }).processes.find((p) => p.pid === pid)!;
    const long = await connect({ socket, name: 'long' });
    const spin = await longKernel(long);
    const offDevice = (await spin.start()).offDevice.then((how) => {
      order.push('the long kernel is off the device');
      return how;
    });
    while ((await listed(long.pid)).state !== 'running') await new Promise((r) => setTimeout(r, 20));

    const neighbour = await connect({ socket, name: 'neighbour' });
    const device = await (await neighbour.gpu.requestAdapter())!.requestDevice();
    const objectsBefore = (await listed(neighbour.pid)).liveObjects;
    const { pipeline, badScope } = neighbourPipelines(device);
    while ((await listed(neighbour.pid)).liveObjects <= objectsBefore + 1) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, SETTLE_MS));

    // SIGTERM drains: the daemon stops listening at once (its socket file goes), and open sessions go on.
    daemon.kill('SIGTERM');
    await eventually('the daemon has stopped listening', () => !existsSync(socket), 20_000);
    order.push('SIGTERM is served');
    const how = await offDevice;
    assert.deepEqual(order, ['SIGTERM is served', 'the long kernel is off the device']);
    assert.ok(how === 'done' || how.startsWith('ended (watchdog'), `the long kernel ended as ${how}`);

    // The drain lets the open sessions finish their work.
    assert.deepEqual(await runDouble(device, pipeline), EXPECTED_DOUBLE);
    assert.equal((await badScope)?.constructor.name, 'GPUValidationError');
    await neighbour.exit();
    await long.exit().catch(() => {});
    control.close();
    assert.equal(await exited, 0, `the daemon drained and exited: ${stderr}`);
  });
});
