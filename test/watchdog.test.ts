// The GPU watchdog: every loop of every kernel is bounded, so a runaway ends by itself and its
// process is ended with reason `watchdog`, while a neighbour keeps computing exact results and can
// create pipelines meanwhile; a long kernel that the atomizer splits is never ended; kernels with
// loops compute exactly what bare Dawn computes.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel } from '../src/index.js';
import { boundLoops } from '../src/wgsl/index.js';
import { bareDevice, deviceOf, dispatchThenCopy } from './helpers.js';

const U = () => GPUBufferUsage;

/** One workgroup that loops until d[0] == 7: it never does, nothing on the host ever writes 7. */
const RUNAWAY_WGSL = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1) fn main() { loop { if (d[0] == 7u) { break; } d[1] = d[1] + 1u; } }`;

/** Loop-heavy kernels whose results the watchdog must not change. */
const LOOPY_WGSL = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
var<workgroup> tile: array<u32, 64>;
fn collatz(n0: u32) -> u32 { var n = n0; var steps = 0u; while (n != 1u && steps < 500u) { if ((n & 1u) == 1u) { n = 3u * n + 1u; } else { n = n / 2u; } steps++; } return steps; }
fn sumTo(k: u32) -> u32 { var s = 0u; for (var i = 0u; i < k; i++) { s += collatz(i + 1u); } return s; }
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u, @builtin(local_invocation_index) li: u32) {
  var acc = 0u;
  for (var r = 0u; r < 3u; r++) {
    tile[li] = sumTo(li % 9u) + r;
    workgroupBarrier();
    acc += tile[(li + 1u) % 64u];
    workgroupBarrier();
  }
  var j = 0u;
  loop { if (j >= li % 5u) { break; } acc = acc * 31u + j; continuing { j++; } }
  a[g.x] = acc;
}`;

/** Runs `code` over `workgroups` workgroups on `device` with one storage buffer of `words` words; returns the words. */
async function run(device: GPUDevice, code: string, words: number, workgroups: number, init?: Uint32Array, label = 'kernel'): Promise<Uint32Array> {
  const buffer = device.createBuffer({ size: words * 4, usage: U().STORAGE | U().COPY_SRC | U().COPY_DST });
  if (init) device.queue.writeBuffer(buffer, 0, init as Uint32Array<ArrayBuffer>);
  const readback = device.createBuffer({ size: words * 4, usage: U().MAP_READ | U().COPY_DST });
  const pipeline = device.createComputePipeline({ label, layout: 'auto', compute: { module: device.createShaderModule({ code }) } });
  dispatchThenCopy(device, pipeline, buffer, workgroups, readback, words * 4);
  await readback.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  buffer.destroy();
  readback.destroy();
  return out;
}

describe('the GPU watchdog', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel({ memoryBudget: '256M', maxDispatchMs: 300 });
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('a runaway kernel is ended with reason watchdog while a neighbour keeps computing and creates a pipeline', async () => {
    const runaway = await kernel.spawn({ name: 'runaway' });
    const neighbour = await kernel.spawn({ name: 'neighbour' });
    const rd = await deviceOf(runaway);
    const nd = await deviceOf(neighbour);
    const square = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { a[g.x] = g.x * g.x + 1u; }`;
    const expected = Uint32Array.from({ length: 256 }, (_, i) => i * i + 1);
    const lost = rd.lost;
    // The runaway goes on the device first; its result promise must never hang the test.
    void run(rd, RUNAWAY_WGSL, 4, 1, undefined, 'spin-forever').catch(() => undefined);
    const order: string[] = [];
    void lost.then(() => order.push('runaway lost'));
    // Meanwhile the neighbour makes new pipelines and gets exact results, again and again.
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await run(nd, square, 256, 4, undefined, `square${i}`), expected);
      order.push(`neighbour result ${i}`);
    }
    const info = await lost;
    assert.match(info.message, /watchdog: 'spin-forever' ran \d+ ms on gpu0, over the limit of 300 ms per dispatch \(maxDispatchMs\)/);
    const record = kernel.ps().find((p) => p.pid === runaway.pid)!;
    assert.equal(record.state, 'exited');
    assert.equal(record.exit?.reason, 'watchdog');
    const stats = kernel.stats();
    assert.ok(stats.watchdog.processesEnded >= 1);
    assert.equal(stats.watchdog.maxDispatchMs, 300);
    assert.ok(stats.devices[0].loopRates.iterationsPerMs > 0 && stats.devices[0].loopRates.parallelInvocations >= 1 && stats.devices[0].loopRates.waitWeight >= 1);
    // kill() of an already ended process resolves with its status; the neighbour still computes.
    assert.equal((await runaway.kill()).reason, 'watchdog');
    assert.deepEqual(await run(nd, square, 256, 4), expected);
    assert.equal(kernel.ps().find((p) => p.pid === neighbour.pid)!.state !== 'exited', true);
    await neighbour.exit();
  });

  it('a runaway that waits for its workgroup at a barrier is ended too', async () => {
    // A non-uniform loop first makes the invocations' counters differ; the runaway then loops at a
    // barrier, so the whole workgroup must leave it together (the uniform stop flag).
    // On lavapipe an iteration at a barrier costs far more than the calibration loop's (every
    // invocation of the workgroup switches), so the runaway takes that much longer than its limit
    // to end: a small workgroup and a low tenant limit keep this scenario short.
    const code = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
var<workgroup> flag: u32;
@compute @workgroup_size(8) fn main(@builtin(local_invocation_index) li: u32) {
  var x = 0u; while (x < li) { x++; }
  loop { workgroupBarrier(); if (workgroupUniformLoad(&flag) == 7u) { break; } d[li] += 1u; }
}`;
    kernel.addTenant('impatient', { maxDispatchMs: 20 });
    const proc = await kernel.spawn({ name: 'barrier-runaway', tenant: 'impatient' });
    const d = await deviceOf(proc);
    void run(d, code, 8, 1, undefined, 'barrier-spin').catch(() => undefined);
    const info = await d.lost;
    assert.match(info.message, /watchdog: 'barrier-spin' ran \d+ ms on gpu0, over the limit of 20 ms/);
    assert.equal(kernel.ps().find((p) => p.pid === proc.pid)!.exit?.reason, 'watchdog');
  });

  it('kill() of a process whose runaway kernel is on the device resolves', async () => {
    const proc = await kernel.spawn({ name: 'killme' });
    const d = await deviceOf(proc);
    void run(d, RUNAWAY_WGSL, 4, 1).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const status = await proc.kill();
    assert.ok(status.reason === 'killed' || status.reason === 'watchdog', `ended as ${status.reason}`);
  });

  it('a long kernel that the atomizer splits is not ended', async () => {
    const proc = await kernel.spawn({ name: 'long-but-splittable' });
    const d = await deviceOf(proc);
    // Each workgroup is short; together they take longer than the 300 ms limit on lavapipe.
    const code = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var v = g.x; for (var i = 0u; i < 20000u; i++) { v = v * 1664525u + 1013904223u; } a[g.x] = v; }`;
    const workgroups = 256;
    const t0 = performance.now();
    const out = await run(d, code, workgroups * 64, workgroups);
    const tookMs = performance.now() - t0;
    const lcg = (x: number) => {
      let v = x >>> 0;
      for (let i = 0; i < 20000; i++) v = (Math.imul(v, 1664525) + 1013904223) >>> 0;
      return v;
    };
    for (const i of [0, 1, 777, workgroups * 64 - 1]) assert.equal(out[i], lcg(i));
    const record = kernel.ps().find((p) => p.pid === proc.pid)!;
    assert.notEqual(record.state, 'exited');
    assert.ok(tookMs > 0);
    await proc.exit();
  });

  it('loop-heavy kernels compute exactly what bare Dawn computes', async () => {
    const proc = await kernel.spawn({ name: 'loopy' });
    const d = await deviceOf(proc);
    const bare = await bareDevice();
    const words = 4 * 64;
    // Counted, capped (a parameter-bound `for` with an early-exit neighbour) and uncounted loops.
    const helperLoops = `@group(0) @binding(0) var<storage, read_write> a: array<u32>;
fn mix(x: u32, n: u32) -> u32 { var v = x; for (var i = 0u; i < n; i++) { v = (v ^ (v >> 3u)) * 2654435761u; } return v; }
fn firstOver(x: u32, n: u32) -> u32 { for (var i = 0u; i < n; i++) { if (mix(x, i) > 0x80000000u) { return i; } } return n; }
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  var acc = 0u; for (var j = 0u; j < arrayLength(&a) / 64u; j++) { acc += mix(g.x + j, 37u) + firstOver(g.x, 9u); }
  var n = g.x + 27u; var steps = 0u; while (n > 1u) { if ((n & 1u) == 1u) { n = 3u * n + 1u; } else { n = n / 2u; } steps++; }
  a[g.x] = acc + steps; }`;
    for (const code of [LOOPY_WGSL, helperLoops]) {
      const mine = await run(d, code, words, 4);
      const theirs = await run(bare, code, words, 4);
      assert.deepEqual(mine, theirs);
    }
    bare.destroy();
    await proc.exit();
  });

  it('the rewrite bounds every loop form, in every function, and keeps line numbers', () => {
    const out = boundLoops(LOOPY_WGSL, 1000, 'shared');
    // Counted: sumTo's `for` (its bound is a parameter: capped) and the `loop`. Uncounted: the barrier
    // loop (3 times, constant) and collatz's `while`, which its `steps < 500u` term bounds.
    assert.equal(out.loops, 2);
    assert.equal(out.staticLoops, 2);
    assert.match(out.code, /\(i < k\) && \(u32\(i\) - u32\(0u\) < gpunix_loop_left\)/);
    assert.match(out.code, /for \(var r = 0u; r < 3u; r\+\+\) \{\n/);
    assert.equal(out.code.split('\n').length, LOOPY_WGSL.split('\n').length);
    assert.match(out.code, /fn sumTo\(k: u32, gpunix_loop_budget: ptr<function, u32>\)/);
    // collatz's guarded `while` runs unchecked; what its guard advanced is charged when it ends.
    assert.match(out.code, /let gpunix_guard_from = steps; while .*\} \(\*gpunix_loop_budget\) -= min\(\(\*gpunix_loop_budget\), \(steps - gpunix_guard_from\)\);/);
    assert.match(out.code, /sumTo\(li % 9u, &gpunix_loop_budget\)/);
    const local = boundLoops(LOOPY_WGSL, 1000, 'local');
    assert.equal(local.loops, 2);
    // A constant loop inside a counted one runs unchecked and charges its 16 iterations when it ends.
    const charged = boundLoops('fn f(n: u32) -> u32 { var s = 0u; while (s < n) { for (var i = 0u; i < 16u; i++) { s += i; } } return s; }', 1000);
    assert.equal(charged.staticLoops, 1);
    assert.match(charged.code, /s \+= i; \} \(\*gpunix_loop_budget\) -= min\(\(\*gpunix_loop_budget\), 16u\);/);
    // A constant loop with a `break` of its own is checked: its trip count is not known.
    assert.equal(boundLoops('fn f() { for (var i = 0u; i < 10u; i++) { if (i == 3u) { break; } } }', 1000).loops, 1);
    // A constant loop too long to leave uncounted, or whose variable the body writes, is counted.
    assert.equal(boundLoops('fn f() { for (var i = 0u; i < 4000000u; i++) { } }', 1000).loops, 1);
    assert.equal(boundLoops('fn f() { for (var i = 0u; i < 10u; i++) { i = 0u; } }', 1000).loops, 1);
    assert.doesNotMatch(local.code, /ptr<function/);
    assert.equal(boundLoops('fn f() {}', 10).loops, 0);
  });

  it('an innermost capped loop runs as written when the budget covers it, and is cut when it does not', async () => {
    // Its trip count (N - 0) is known before it starts: the rewrite keeps an unchanged copy for when
    // the budget covers it (so the compiler can unroll it) and the capped loop for when it does not.
    const code = `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
override N: u32 = 100u;
@compute @workgroup_size(1) fn main() {
  var acc = 0u;
  for (var i = 0u; i < N; i++) { // the program's comment
    acc += i;
  }
  out[0] = acc;
  out[1] = 1u;
}`;
    const device = await bareDevice();
    try {
      const run = async (budget: number): Promise<[number, number]> => {
        const bounded = boundLoops(code, budget);
        assert.equal(bounded.loops, 1);
        assert.equal(bounded.code.split('\n').length, code.split('\n').length, 'line numbers kept');
        assert.match(bounded.code, /if \(gpunix_loop_trips <= gpunix_loop_left\) \{ for \(var i = 0u; i < N; i\+\+\) \{\s+acc \+= i;\s+\} \} else \{ for/);
        const out = device.createBuffer({ size: 8, usage: U().STORAGE | U().COPY_SRC });
        const read = device.createBuffer({ size: 8, usage: U().MAP_READ | U().COPY_DST });
        const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: bounded.code }), entryPoint: 'main' } });
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] }));
        pass.dispatchWorkgroups(1);
        pass.end();
        encoder.copyBufferToBuffer(out, 0, read, 0, 8);
        device.queue.submit([encoder.finish()]);
        await read.mapAsync(GPUMapMode.READ);
        const [acc, done] = new Uint32Array(read.getMappedRange().slice(0));
        read.destroy();
        out.destroy();
        return [acc, done];
      };
      assert.deepEqual(await run(1000), [4950, 1], 'covered: all 100 iterations, as written');
      assert.deepEqual(await run(10), [45, 1], 'not covered: cut after the 10 the budget allows');
    } finally {
      device.destroy();
    }
  });

  it('maxDispatchMs is checked', async () => {
    await assert.rejects(createKernel({ maxDispatchMs: 0 }), /GPUNIX_E_BAD_OPTION|maxDispatchMs must be/);
    await assert.rejects(createKernel({ tenants: { t: { maxDispatchMs: -5 } } }), /maxDispatchMs must be/);
  });
});
