// The dispatcher's per-pipeline cost model (src/kernel/dispatch.ts), driven in a closed loop the way
// the atomizer drives it: ask for an atom of a budget, "run" it, teach the model the time. The device
// here is a stated response curve (time for k workgroups), not a GPU: this file checks the model's
// arithmetic against the two shapes real devices have; the real devices' behaviour is in
// scheduler.test.ts (lavapipe) and bench/preemption (any GPU).

import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { COST_RESAMPLE_WHOLE, CostModel } from '../src/kernel/dispatch.js';
import { COST_PROBE_WORKGROUPS } from '../src/params.js';

/** Device time (ns) of an atom of `k` workgroups. */
type Device = (k: number) => number;

/** A CPU device (lavapipe): every workgroup adds the same time. */
const linear = (nsPerWorkgroup: number): Device => (k) => k * nsPerWorkgroup;
/**
 * A GPU: `width` workgroups run side by side, each for `waveNs`; a wider atom runs in waves. An atom
 * narrower than the GPU takes one workgroup's run whatever its width.
 */
const waves = (width: number, waveNs: number): Device => (k) => Math.ceil(k / width) * waveNs;

/** Runs a dispatch of `total` workgroups as the atomizer would under `budgetNs`: each atom's width and the total device time. */
function atomize(model: CostModel, device: Device, total: number, budgetNs: number): { widths: number[]; deviceNs: number } {
  const widths: number[] = [];
  let deviceNs = 0;
  for (let done = 0; done < total; ) {
    const k = Math.min(total - done, model.workgroupsFor(budgetNs, COST_PROBE_WORKGROUPS));
    const ns = device(k);
    model.learn(ns, k);
    widths.push(k);
    deviceNs += ns;
    done += k;
  }
  return { widths, deviceNs };
}

/** The H200's width for the busy kernel: 132 SMs x 32 workgroups of 64 invocations side by side. */
const GPU_WIDTH = 4224;

/** Every atom but the dispatch's last (its remainder) is at least half as wide as the GPU. */
function assertGpuWide(widths: number[]): void {
  for (const k of widths.slice(0, -1)) assert.ok(k >= GPU_WIDTH / 2, `an atom of ${k} workgroups on a GPU ${GPU_WIDTH} wide (${widths.join(' ')})`);
}

describe('cost model', () => {
  it('on a CPU device, sizes atoms to the budget and forecasts their time', () => {
    const model = new CostModel();
    const device = linear(12_000); // 12 µs a workgroup: lavapipe's busy kernel
    const { widths } = atomize(model, device, 4096, 1e6);
    const settled = widths.slice(8, -1);
    assert.ok(settled.length > 10, `atoms: ${widths.join(' ')}`);
    for (const k of settled) assert.ok(k >= 80 && k <= 84, `a 1 ms atom is 83 workgroups: got ${k} (${widths.join(' ')})`);
    assert.ok(Math.abs(model.forecast(83)! - device(83)) < 0.02 * device(83), `forecast ${model.forecast(83)} ns for ${device(83)}`);
  });

  it('on a GPU, under a budget shorter than one workgroup, keeps atoms as wide as the GPU runs at once', () => {
    // Each workgroup runs 500 µs: a budget of 100 µs cannot be met by any atom; narrowing atoms
    // below the GPU's width only multiplies their number.
    const device = waves(GPU_WIDTH, 500_000);
    const model = new CostModel();
    const total = 16 * GPU_WIDTH;
    const first = atomize(model, device, total, 100_000); // the model learns the GPU's width
    const { widths, deviceNs } = atomize(model, device, total, 100_000);
    const whole = device(total);
    assert.ok(deviceNs <= 1.25 * whole, `device time ${deviceNs / 1e6} ms for a kernel of ${whole / 1e6} ms in ${widths.length} atoms: ${widths.join(' ')} (first ${first.widths.join(' ')})`);
    assertGpuWide(widths);
  });

  it('on a GPU, finds its width again after a misread sample set a floor no atom reaches', () => {
    const device = waves(GPU_WIDTH, 500_000);
    const model = new CostModel();
    atomize(model, device, 16 * GPU_WIDTH, 100_000);
    model.learn(1_000, GPU_WIDTH); // a misread timestamp: far below anything the device can do
    atomize(model, device, 64 * GPU_WIDTH, 100_000); // the floor is measured afresh
    assertGpuWide(atomize(model, device, 16 * GPU_WIDTH, 100_000).widths);
  });

  it('on a GPU, under a budget of several waves, fills it', () => {
    const device = waves(GPU_WIDTH, 250_000);
    const model = new CostModel();
    atomize(model, device, 64 * GPU_WIDTH, 1e6);
    const { widths, deviceNs } = atomize(model, device, 64 * GPU_WIDTH, 1e6);
    const settled = widths.slice(widths.length >> 1, -1);
    for (const k of settled) assert.ok(device(k) <= 1.25e6 && k >= 2 * GPU_WIDTH, `an atom of ${k} workgroups (${device(k) / 1e6} ms) for a 1 ms budget`);
    assert.ok(deviceNs <= 1.25 * device(64 * GPU_WIDTH), `device time ${deviceNs / 1e6} ms against ${device(64 * GPU_WIDTH) / 1e6} ms whole`);
  });

  it('on a CPU device, sizes by the budget also after a glitch, and probes while nothing is known', () => {
    const model = new CostModel();
    const device = linear(12_000);
    atomize(model, device, 4096, 1e6);
    model.learn(1_000, 83); // one sample far below the rest (a misread timestamp)
    const { widths } = atomize(model, device, 4096, 1e6);
    for (const k of widths.slice(10, -1)) assert.ok(k >= 80 && k <= 84, `a 1 ms atom is 83 workgroups: got ${k} (${widths.join(' ')})`);
    assert.equal(new CostModel().workgroupsFor(1e6, COST_PROBE_WORKGROUPS), COST_PROBE_WORKGROUPS);
  });
  it('asks for a dispatch its forecast puts within a slice to be split and sampled now and then, until it learns again', () => {
    const model = new CostModel();
    for (let i = 0; i < 40; i++) model.learn(1000, 1);
    // Past the warm-up, one atom in eight is timed.
    const timed = Array.from({ length: 16 }, () => model.wantsSample()).filter(Boolean).length;
    assert.equal(timed, 2);
    const due = Array.from({ length: 3 * COST_RESAMPLE_WHOLE }, () => model.resampleDue());
    assert.deepEqual(due.flatMap((d, i) => (d ? [i + 1] : [])), [1, 2, 3].map((n) => n * COST_RESAMPLE_WHOLE));
    // The split is timed, and what it teaches starts the count again.
    for (let i = 0; i < COST_RESAMPLE_WHOLE - 1; i++) assert.equal(model.resampleDue(), false);
    assert.equal(model.resampleDue(), true);
    assert.equal(model.wantsSample(), true);
    for (let i = 0; i < COST_RESAMPLE_WHOLE - 1; i++) assert.equal(model.resampleDue(), false);
    model.learn(5000, 1);
    assert.equal(model.resampleDue(), false, 'a sample starts the count again');
  });
});
