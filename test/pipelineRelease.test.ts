// A pipeline a program lets go of is freed by Dawn in the poll that sees the submit after its
// release complete, and lavapipe's vkDestroyPipeline waits for the submit its queue is running.
// A short submit just ahead of a long kernel made that poll run during the kernel, and the
// kernel's thread (every process's calls, a daemon's sockets) stopped until the kernel ended:
// in about one round of three. The dispatcher now issues checked work on a CPU device only once
// the work ahead has completed (Dispatcher.drainFirst; docs/daemon.md, "What never waits for the
// device"). This checks that the thread keeps running through each long kernel.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createKernel, Kernel } from '../src/index.js';
import { deviceOf, dispatchOnce } from './helpers.js';

setFlagsFromString('--expose-gc');
/** A full collection: dawn.node releases the Dawn objects of wrappers it finds dead. */
const collect = runInNewContext('gc') as () => void;

const U = () => GPUBufferUsage;

/** One invocation stepping an LCG d[0] times (a loop the watchdog checks: its bound is read at run time). */
const SPIN_WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { var x = d[1]; for (var i = 0u; i < d[0]; i++) { x = x * 1664525u + 1013904223u; } d[1] = x; }`;
/** One add, no loop (never checked). */
const TINY_WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { d[0] = d[0] + 1u; }`;

/** How long each long kernel should run (ms). */
const KERNEL_MS = 400;
const ROUNDS = 5;

describe('a pipeline let go of while a long kernel runs', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ maxDispatchMs: 20_000 });
  });
  after(async () => {
    await kernel.shutdown();
  });

  /** A process with the spin (of `spinCode`) and tiny pipelines, and the calls the test makes. */
  async function rig(name: string, spinCode = SPIN_WGSL) {
    const proc = await kernel.spawn({ name });
    const device = await deviceOf(proc);
    const bind = (pipeline: GPUComputePipeline, buffer: GPUBuffer): GPUBindGroup =>
      device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
    const dispatch = (pipeline: GPUComputePipeline, group: GPUBindGroup): void => dispatchOnce(device, pipeline, group);
    const spin = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: spinCode }) } });
    const spinBuffer = device.createBuffer({ size: 8, usage: U().STORAGE | U().COPY_DST | U().COPY_SRC });
    const spinGroup = bind(spin, spinBuffer);
    const tiny = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: TINY_WGSL }) } });
    const tinyGroup = bind(tiny, device.createBuffer({ size: 4, usage: U().STORAGE }));
    const runSpin = (iterations: number): void => {
      device.queue.writeBuffer(spinBuffer, 0, new Uint32Array([iterations, 1]));
      dispatch(spin, spinGroup);
    };
    return { proc, device, bind, dispatch, runSpin, spinBuffer, runTiny: () => dispatch(tiny, tinyGroup) };
  }

  it("is freed without stopping the kernel's thread for the kernel, though a short submit goes just ahead of it", async () => {
    // Iterations for about KERNEL_MS on this device, timed in a process of its own and with a
    // source of its own (the device remembers how long each checked kernel ran, in any process):
    // the process under test has run no checked kernel yet when its first long one goes out, and
    // no process has run that kernel; each later one follows a long one (drainFirst's cases; a
    // kernel that suddenly runs long after short ones is not covered: docs/daemon.md).
    const calibration = await rig('calibrate', `${SPIN_WGSL}// calibration`);
    const probe = 1 << 20;
    const probeStart = performance.now();
    calibration.runSpin(probe);
    await calibration.device.queue.onSubmittedWorkDone();
    const iterations = Math.min(2 ** 31, Math.round((probe * KERNEL_MS) / Math.max(1, performance.now() - probeStart)));
    await calibration.proc.exit();

    const { proc, device, bind, dispatch, runSpin, runTiny } = await rig('release');
    for (let round = 0; round < ROUNDS; round++) {
      {
        // A pipeline used once and let go of (a fresh module: Dawn's cache would keep a known one).
        const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: `${TINY_WGSL}// ${round}` }) } });
        dispatch(pipeline, bind(pipeline, device.createBuffer({ size: 4, usage: U().STORAGE })));
        await device.queue.onSubmittedWorkDone();
      }
      for (let i = 0; i < 3; i++) {
        collect();
        await new Promise((resolve) => setImmediate(resolve));
      }
      // The short submit, then the long kernel, in one burst.
      runTiny();
      let last = performance.now();
      let gap = 0;
      const ticker = setInterval(() => {
        const now = performance.now();
        gap = Math.max(gap, now - last);
        last = now;
      }, 5);
      const start = performance.now();
      runSpin(iterations);
      await device.queue.onSubmittedWorkDone();
      const kernelMs = performance.now() - start;
      clearInterval(ticker);
      assert.ok(gap < kernelMs / 2, `round ${round}: the kernel's thread stood still for ${gap.toFixed(0)} ms of a ${kernelMs.toFixed(0)} ms kernel`);
    }
    assert.notEqual(proc.state, 'exited', 'the program is alive: its kernels ran within its limit');
    await proc.exit();
  });

  it('remembers across processes how long each checked kernel ran: a job run again is not held, a kernel seen long is', async (t) => {
    if (!kernel.stats().devices[0].runsOnHostCpu) return t.skip('checked work waits for a drain only on a device that runs on the host CPU');
    const drainWaits = (proc: { pid: number }): number => kernel.ps().find((p) => p.pid === proc.pid)!.accounting.drainWaits;
    /** A burst of `count` one-workgroup dispatches of `code`'s spin, `iterations` steps each; resolves with the final LCG word. */
    async function burst(name: string, code: string, count: number, iterations: number) {
      const r = await rig(name, code);
      for (let i = 0; i < count; i++) r.runSpin(iterations);
      const readback = r.device.createBuffer({ size: 8, usage: U().MAP_READ | U().COPY_DST });
      const encoder = r.device.createCommandEncoder();
      encoder.copyBufferToBuffer(r.spinBuffer, 0, readback, 0, 8);
      r.device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const word = new Uint32Array(readback.getMappedRange())[1];
      readback.unmap();
      return { ...r, word };
    }
    /** The LCG word after `count` spins of `iterations` steps from 1, as the kernel computes it. */
    const expected = (count: number, iterations: number): number => {
      let x = 1;
      for (let c = 0; c < count; c++) {
        x = 1;
        for (let i = 0; i < iterations; i++) x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      }
      return x;
    };
    const short = `${SPIN_WGSL}// short job`;
    // A new kernel in a new process: its burst waits for the device to drain once.
    const first = await burst('first', short, 20, 64);
    assert.equal(first.word, expected(20, 64));
    assert.ok(drainWaits(first.proc) >= 1, 'a kernel no process ran yet is held behind the work ahead');
    await first.proc.exit();
    // The same job again, in another process: its kernel is known to run short here.
    const again = await burst('again', short, 20, 64);
    assert.equal(again.word, expected(20, 64));
    assert.equal(drainWaits(again.proc), 0, 'the kernel ran short before, in another process: not held');
    await again.proc.exit();

    // A kernel seen to run long (tens of milliseconds), in one process...
    const long = `${SPIN_WGSL}// long job`;
    const timing = await rig('timing', long);
    const probe = 1 << 18;
    // Once untimed: the first dispatch of a pipeline also pays the driver's compile (lavapipe
    // compiles at first use), and a probe that counted it sized the long run too short (a flake).
    timing.runSpin(probe);
    await timing.device.queue.onSubmittedWorkDone();
    let start = performance.now();
    timing.runSpin(probe);
    await timing.device.queue.onSubmittedWorkDone();
    const iterations = Math.min(2 ** 31, Math.round((probe * 60) / Math.max(1, performance.now() - start)));
    start = performance.now();
    timing.runSpin(iterations);
    await timing.device.queue.onSubmittedWorkDone();
    assert.ok(performance.now() - start > 20, 'the long kernel ran long enough to be seen running');
    await timing.proc.exit();
    // ...is held in another whose own checked kernels ran short, though it never ran it itself.
    const later = await burst('later', short, 3, 64);
    assert.equal(drainWaits(later.proc), 0);
    later.runTiny();
    later.runSpin(64);
    const spinLong = later.device.createComputePipeline({ layout: 'auto', compute: { module: later.device.createShaderModule({ code: long }) } });
    later.dispatch(spinLong, later.bind(spinLong, later.spinBuffer));
    await later.device.queue.onSubmittedWorkDone();
    assert.equal(drainWaits(later.proc), 1, 'the kernel seen long elsewhere waited for the drain');
    await later.proc.exit();
  });
});
