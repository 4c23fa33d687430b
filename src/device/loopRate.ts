// How fast a device runs loop iterations: the watchdog's unit of time. The watchdog rewrite
// (src/wgsl/watchdog.ts) bounds every loop by an iteration budget; the kernel turns its
// per-dispatch time limit into that budget with these figures, measured once per adapter per Node
// process when the device opens (about 1 s on lavapipe).
//
// Three measurements, each the fastest of a few runs (a run slowed by the machine would make the
// budget too small, and a budget spent must always mean at least the limit):
//   - iterationsPerMs: one invocation, the rewrite's own counter around the cheapest body a loop
//     can have that the compiler does not fold away (a read-modify-write of one word). On lavapipe
//     it ran the fastest of the bodies tried (194 M iterations/s, against 179-186 for
//     register-only and runaway-shaped bodies and 146 for a dependent load).
//   - parallelInvocations: how many invocations of one workgroup run side by side (the same loop
//     in a workgroup of 256: per-invocation rate x 256 / the single rate). A GPU runs all 256 at
//     once; lavapipe's SIMD lanes a few dozen. An entry point with larger workgroups gets a
//     budget smaller by as much, so its runaway ends after about the same time.
//   - waitWeight: what one iteration that waits at a barrier costs, in iterations of the same
//     loop without it (a workgroup of 8): on a CPU device every invocation switches at a barrier.
//
// On a CPU device (lavapipe, llvmpipe, SwiftShader: the device's work runs on this process's own
// threads) a run's time is the CPU time of the thread that ran it, not the wall clock: a machine
// busy with other processes stretches the wall clock by as much as it takes their threads' turns
// (4x with three busy processes per core here), and a rate measured that way makes budgets so
// small that a runaway's loops are cut before the limit, which the time check cannot see: its
// process then goes on with results of cut loops. A calibration run is one workgroup, which a CPU
// device runs on one thread: that thread's CPU time is what the run takes on an idle machine
// (30.1-32.7 ms for a run whose wall clock read 30.6-62.2 ms on an idle machine here, and whose
// process's other threads together spent 30.1-46.7), so the budget holds however busy the machine
// was when the device opened.

import { readdirSync, readFileSync } from 'node:fs';

export interface LoopRates {
  iterationsPerMs: number;
  parallelInvocations: number;
  waitWeight: number;
}

/** Iterations the first calibration run makes; doubled until a run takes CALIBRATION_MIN_MS. */
const FIRST_ITERATIONS = 1 << 12;
const CALIBRATION_MIN_MS = 15;
const CALIBRATION_RUNS = 5;
const MAX_ITERATIONS = 0x4000_0000;
/** The workgroup size every WebGPU device supports (maxComputeInvocationsPerWorkgroup's default). */
const WIDE = 256;
const WAITING = 8;
/** The wait weight is rounded down from 0.8 of its measure: an underestimate keeps the guarantee. */
const WAIT_WEIGHT_MARGIN = 0.8;

/** The calibration loop, `invocations` wide, with a barrier in its body when `waits`. */
function calibrationWgsl(invocations: number, waits: boolean): string {
  return `
@group(0) @binding(0) var<storage, read_write> d: array<u32, ${WIDE + 8}>;
var<workgroup> gpunix_stop: u32;
@compute @workgroup_size(${invocations}) fn main(@builtin(local_invocation_index) li: u32) {
  var gpunix_loop_budget: u32 = d[1];
  loop {
    ${waits ? 'if (gpunix_loop_budget < 1u) { gpunix_stop = 1u; } else { gpunix_loop_budget -= 1u; } if (workgroupUniformLoad(&gpunix_stop) != 0u) { break; }' : 'if (gpunix_loop_budget < 1u) { break; } gpunix_loop_budget -= 1u;'}
    d[li + 8u] = d[li + 8u] + 1u;
  }
}`;
}

/** CPU time (ms) of this process's threads other than the main one: all of them together, ended ones included, and each live one by id. */
interface ThreadTimes {
  othersMs: number;
  byThread: Map<string, number>;
}

/** The CPU times now, or null where they cannot be read (off Linux). */
function threadTimes(): ThreadTimes | null {
  try {
    const main = String(process.pid);
    const byThread = new Map<string, number>();
    let mainMs = 0;
    for (const tid of readdirSync('/proc/self/task')) {
      let ms: number;
      try {
        ms = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
      } catch {
        continue; // it ended meanwhile
      }
      if (tid === main) mainMs = ms;
      else byThread.set(tid, ms);
    }
    const { user, system } = process.cpuUsage(); // counts ended threads too
    return { othersMs: (user + system) / 1e3 - mainMs, byThread };
  } catch {
    return null;
  }
}

/**
 * A CPU device's time for one calibration run between two readings (file comment): the CPU time
 * of the thread that ran it, the busiest one. The main thread only waits for the device and is
 * left out. When that thread ended before the second reading, the busiest one left may be an idle
 * helper: unless it did at least half of what all of them did, all of them together count. Never
 * more than the wall clock; and a reading that says the threads hardly ran (under 1/16 of the wall
 * clock) means the work ran elsewhere: the wall clock then, as a tiny time would make budgets, and
 * runaways, far too long.
 */
function cpuDeviceMs(before: ThreadTimes | null, after: ThreadTimes | null, wallMs: number): number {
  if (before === null || after === null) return wallMs;
  const othersMs = after.othersMs - before.othersMs;
  let busiestMs = 0;
  for (const [tid, ms] of after.byThread) busiestMs = Math.max(busiestMs, ms - (before.byThread.get(tid) ?? 0));
  const ms = busiestMs >= othersMs / 2 ? busiestMs : othersMs;
  return ms >= wallMs / 16 ? Math.min(wallMs, ms) : wallMs;
}

/** Measured rates by adapter, so that every kernel of a process (tests open many) measures once. */
const measured = new Map<string, LoopRates>();

/** The device's loop rates (see the file comment). */
export async function measureLoopRates(device: GPUDevice, adapterKey: string, cpuDevice = false): Promise<LoopRates> {
  const known = measured.get(adapterKey);
  if (known !== undefined) return known;
  const buffer = device.createBuffer({ size: (WIDE + 8) * 4, usage: 0x80 | 0x08 }); // STORAGE | COPY_DST: the kernel installs no WebGPU globals
  try {
    /** Iterations per ms per invocation of the loop `invocations` wide. */
    const rate = async (invocations: number, waits: boolean): Promise<number> => {
      // Synchronous: the device is new and idle, and a pending async creation does not keep Node's event loop alive.
      const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: calibrationWgsl(invocations, waits) }) } });
      const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
      const run = async (iterations: number): Promise<number> => {
        device.queue.writeBuffer(buffer, 0, new Uint32Array([0, iterations]));
        await device.queue.onSubmittedWorkDone();
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(1);
        pass.end();
        const before = cpuDevice ? threadTimes() : null;
        const start = performance.now();
        device.queue.submit([encoder.finish()]);
        await device.queue.onSubmittedWorkDone();
        const wallMs = performance.now() - start;
        return cpuDevice ? cpuDeviceMs(before, threadTimes(), wallMs) : wallMs;
      };
      // A first run compiles the shader (lavapipe compiles at first use): never measured.
      await run(FIRST_ITERATIONS);
      // Runs long enough that submit and fence overheads do not count: the fastest of a few must
      // still take CALIBRATION_MIN_MS (a run slowed by a compile or a busy moment could stop the
      // doubling early, and a short run's overheads would make the rate look slow).
      let iterations = FIRST_ITERATIONS;
      for (;;) {
        let fastest = Infinity;
        for (let i = 0; i < CALIBRATION_RUNS; i++) fastest = Math.min(fastest, await run(iterations));
        if (fastest >= CALIBRATION_MIN_MS || iterations >= MAX_ITERATIONS) return iterations / Math.max(fastest, 0.001);
        iterations = Math.min(MAX_ITERATIONS, iterations * Math.max(2, Math.ceil((2 * CALIBRATION_MIN_MS) / Math.max(fastest, 0.01))));
      }
    };
    const single = await rate(1, false);
    const wide = await rate(WIDE, false);
    const narrow = await rate(WAITING, false);
    const waiting = await rate(WAITING, true);
    const rates: LoopRates = {
      iterationsPerMs: single,
      // Never more than measured (256), never less than one.
      parallelInvocations: Math.max(1, Math.min(WIDE, (WIDE * wide) / single)),
      waitWeight: Math.max(1, Math.floor((WAIT_WEIGHT_MARGIN * narrow) / waiting)),
    };
    measured.set(adapterKey, rates);
    return rates;
  } finally {
    buffer.destroy();
  }
}
