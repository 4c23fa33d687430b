// The watchdog on a machine that was busy when the device opened. The kernel measures its device's
// loop rate once, when the device opens, and makes every loop budget from it (src/device/loopRate.ts);
// a budget spent must mean more than the limit of device time, or a kernel whose loops were cut
// short would pass its time check and its process would go on with wrong results. On a CPU device
// other processes' load used to stretch that measurement (4x here) and cut runaways before the
// limit: the process then kept running. Its own file: the rate is measured once per Node process,
// so this kernel must be the first to open the device here.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { after, describe, it } from 'node:test';
import { startBusyProcesses, stopProcesses } from '../bench/machine.js';
import { createKernel, Kernel } from '../src/index.js';
import { dispatchThenCopy } from './helpers.js';

/** One workgroup that loops until d[0] == 7: nothing ever writes 7. */
const RUNAWAY_WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { loop { if (d[0] == 7u) { break; } d[1] = d[1] + 1u; } }`;

/**
 * Three busy processes per core, so that the device's threads get a quarter of one (at most 32: on
 * a machine that large the old calibration would be slowed less, which only makes this test less
 * strict, never fail).
 */
const BUSY_PROCESSES = Math.min(32, 3 * availableParallelism());

describe('the watchdog on a machine that was busy when the device opened', () => {
  let kernel: Kernel | undefined;
  let busy: ChildProcess[] = [];
  after(async () => {
    await stopProcesses(busy);
    await kernel?.shutdown();
  });

  it('ends a runaway with reason watchdog once the machine is idle again', async () => {
    busy = startBusyProcesses(BUSY_PROCESSES);
    kernel = await createKernel({ memoryBudget: '64M', maxDispatchMs: 300 });
    await stopProcesses(busy);

    const proc = await kernel.spawn({ name: 'runaway' });
    const device = (await (await proc.gpu.requestAdapter())!.requestDevice()) as GPUDevice;
    const state = device.createBuffer({ size: 8, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size: 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const pipeline = device.createComputePipeline({ label: 'spin-forever', layout: 'auto', compute: { module: device.createShaderModule({ code: RUNAWAY_WGSL }) } });
    dispatchThenCopy(device, pipeline, state, 1, readback, 8);
    // Either the process is ended (its map is aborted), or the runaway's loops were cut short
    // before the limit and the program reads the cut loop's count back as if it were a result.
    const outcome = await readback.mapAsync(GPUMapMode.READ).then(
      () => `the program read back a result of cut loops (${new Uint32Array(readback.getMappedRange())[1]} iterations)`,
      () => 'ended',
    );
    assert.equal(outcome, 'ended');
    const info = await device.lost;
    assert.match(info.message, /watchdog: 'spin-forever' ran \d+ ms on gpu0, over the limit of 300 ms per dispatch/);
    assert.equal(kernel.ps().find((p) => p.pid === proc.pid)!.exit?.reason, 'watchdog');
  });
});
