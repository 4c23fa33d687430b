// How fast one invocation runs loop iterations on a device: the watchdog's unit of time. The
// watchdog rewrite (src/wgsl/watchdog.ts) bounds every loop by an iteration budget; the kernel
// turns its per-dispatch time limit into that budget with this rate, measured once per adapter
// per Node process when the device opens.
//
// The calibration loop is the rewrite's own counter around the cheapest body a real loop can
// have that the compiler does not fold away (a read-modify-write of one word): on lavapipe it ran
// the fastest of the bodies tried (194 M iterations/s, against 179-186 for register-only and
// runaway-shaped bodies and 146 for a dependent load), so a budget spent means at least the limit.

/** Iterations the first calibration run makes; doubled until a run takes CALIBRATION_MIN_MS. */
const FIRST_ITERATIONS = 1 << 16;
const CALIBRATION_MIN_MS = 15;
/** Runs at the final size; the fastest counts (a run slowed by the machine would make the budget too small). */
const CALIBRATION_RUNS = 3;
const MAX_ITERATIONS = 0x4000_0000;

const CALIBRATION_WGSL = `
@group(0) @binding(0) var<storage, read_write> d: array<u32, 64>;
@compute @workgroup_size(1) fn main() {
  var gpunix_loop_count: u32 = 0u;
  var acc = d[0];
  loop { gpunix_loop_count += 1u; if (gpunix_loop_count > d[1]) { break; } d[3] = d[3] + 1u; }
  d[2] = acc;
}`;

/** Measured rates by adapter, so that every kernel of a process (tests open many) measures once. */
const measured = new Map<string, number>();

/** Loop iterations per millisecond one invocation runs on `device` (the fastest of a few runs). */
export async function loopIterationsPerMs(device: GPUDevice, adapterKey: string): Promise<number> {
  const known = measured.get(adapterKey);
  if (known !== undefined) return known;
  const buffer = device.createBuffer({ size: 256, usage: 0x80 | 0x08 }) // STORAGE | COPY_DST: the kernel installs no WebGPU globals;
  // Synchronous: the device is new and idle, and a pending async creation does not keep Node's event loop alive.
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: CALIBRATION_WGSL }) } });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const run = async (iterations: number): Promise<number> => {
    device.queue.writeBuffer(buffer, 0, new Uint32Array([12345, iterations]));
    await device.queue.onSubmittedWorkDone();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
    const start = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - start;
  };
  try {
    let iterations = FIRST_ITERATIONS;
    while ((await run(iterations)) < CALIBRATION_MIN_MS && iterations < MAX_ITERATIONS) iterations *= 2;
    let fastest = Infinity;
    for (let i = 0; i < CALIBRATION_RUNS; i++) fastest = Math.min(fastest, await run(iterations));
    const rate = iterations / Math.max(fastest, 0.001);
    measured.set(adapterKey, rate);
    return rate;
  } finally {
    buffer.destroy();
  }
}
