// The call path a program uses in a loop (encoder, pass, setPipeline, setBindGroup, dispatch, end,
// finish, submit) takes shortcuts for valid calls (docs/benchmarks.md, "The call path"): direct
// calls into the real pass while the encoder is open, no closures, records let go of once a submit
// is done. These check what a program sees through them: every dispatch runs and is counted once
// (each form of dispatchWorkgroups with the workgroups it names),
// an encoding error made through the direct calls surfaces at finish() in the scope current there,
// a call after finish() errs in the scope current at that call and never joins the finished
// command buffer (whole or split, it runs as finish() made it), a submit Dawn refuses (a
// destroyed buffer) is neither run nor counted, a large write (in pieces, the program's bytes
// read in place while it runs at once) writes the bytes of the call, and a readback loop whose
// runs are settled from their maps (no fence per round) reads exact bytes and is fully accounted.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel, ProcessHandle } from '../src/index.js';
import { countFences, encodeDispatchPass, readWord } from './helpers.js';

const COUNTER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: atomic<u32>;
@compute @workgroup_size(1) fn main() { atomicAdd(&counter, 1u); }`;

interface Rig {
  proc: ProcessHandle;
  device: GPUDevice;
  pipeline: GPUComputePipeline;
  counter: GPUBuffer;
  group: GPUBindGroup;
}

async function rig(kernel: Kernel, name: string): Promise<Rig> {
  const proc = await kernel.spawn({ name });
  const device = await (await proc.gpu.requestAdapter())!.requestDevice();
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: COUNTER }) } });
  const counter = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: counter } }] });
  return { proc, device, pipeline, counter, group };
}

/** The counter's value. */
function read({ device, counter }: Rig): Promise<number> {
  return readWord(device, counter);
}

/** Encodes a pass that adds `workgroups` to the counter, ended; returns it. */
function encodeCounting(encoder: GPUCommandEncoder, { pipeline, group }: Rig, workgroups: number): GPUComputePassEncoder {
  return encodeDispatchPass(encoder, pipeline, group, workgroups);
}

describe('the call path of a dispatch loop', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel();
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('runs and counts every dispatch of a loop of submits, with no error in a scope around it', async () => {
    const r = await rig(kernel, 'loop');
    const { device, pipeline, group } = r;
    device.pushErrorScope('validation');
    for (let i = 0; i < 40; i++) {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(1);
      pass.end();
      device.queue.submit([encoder.finish()]);
    }
    assert.equal(await device.popErrorScope(), null);
    assert.equal(await read(r), 40);
    const [row] = kernel.ps().filter((p) => p.pid === r.proc.pid);
    assert.equal(row.accounting.dispatches, 40);
    assert.equal(row.accounting.submits, 41); // and the readback's
    await r.proc.exit();
  });

  it('runs the workgroups each form of dispatchWorkgroups names: (x), (x, y), (x, y, z), and (x, undefined, z) with y as 1', async () => {
    // Dawn is given the counts the program gave, no more: a z after an undefined y must still reach
    // it. A kernel that runs every submit whole runs the encoding Dawn checked as the calls were
    // made (an atomized submit re-encodes its dispatches from the kernel's record instead).
    const whole = await createKernel({ atomize: false });
    try {
      const r = await rig(whole, 'forms');
      const { device, pipeline, group } = r;
      device.pushErrorScope('validation');
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(3);
      pass.dispatchWorkgroups(2, 3);
      pass.dispatchWorkgroups(2, 3, 4);
      pass.dispatchWorkgroups(2, undefined, 5);
      pass.end();
      device.queue.submit([encoder.finish()]);
      assert.equal(await device.popErrorScope(), null);
      assert.equal(await read(r), 3 + 6 + 24 + 10);
      await r.proc.exit();
    } finally {
      await whole.shutdown();
    }
  });

  it('reports an encoding error at finish(), in the scope current there, and runs nothing of it', async () => {
    const r = await rig(kernel, 'unbound');
    const { device, pipeline } = r;
    device.pushErrorScope('validation'); // outer: current while encoding
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.dispatchWorkgroups(1); // no bind group at 0: Dawn fails the encoder
    pass.end();
    device.pushErrorScope('validation'); // inner: current at finish
    const commandBuffer = encoder.finish();
    const atFinish = await device.popErrorScope();
    const whileEncoding = await device.popErrorScope();
    assert.equal(atFinish?.constructor.name, 'GPUValidationError');
    assert.equal(whileEncoding, null);
    device.pushErrorScope('validation');
    device.queue.submit([commandBuffer]);
    assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', 'an invalid command buffer is refused at submit');
    assert.equal(await read(r), 0);
    await r.proc.exit();
  });

  it('reports a pass call made after finish() in the scope current at that call', async () => {
    const r = await rig(kernel, 'late');
    const { device, pipeline, group } = r;
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(1);
    device.pushErrorScope('validation');
    encoder.finish(); // the pass was never ended: finish fails
    const atFinish = await device.popErrorScope();
    assert.equal(atFinish?.constructor.name, 'GPUValidationError');
    device.pushErrorScope('validation');
    pass.end(); // the encoder is finished: Dawn refuses this on the device
    assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError');
    await r.proc.exit();
  });

  it('runs a command buffer as finish() made it: calls on its encoder or pass after finish() err and run nothing, on either path', async () => {
    // A submit the kernel splits (a dispatch of many workgroups, a copy over one chunk) is encoded
    // afresh from the kernel's record, not from the encoding Dawn checked: a call Dawn refused on
    // the finished encoder must not join that record.
    const r = await rig(kernel, 'after-finish');
    const { device, counter } = r;
    const encoder = device.createCommandEncoder();
    const pass = encodeCounting(encoder, r, 64);
    const dispatches = encoder.finish();
    device.pushErrorScope('validation');
    pass.dispatchWorkgroups(5);
    assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', 'a dispatch on a finished encoder\'s pass');
    device.queue.submit([dispatches]);
    assert.equal(await read(r), 64, 'the 64 workgroups finish() recorded, and not the 5 after it');

    const bytes = 8 << 20; // over one chunk (COPY_CHUNK_BYTES): the copy runs in pieces
    const U = GPUBufferUsage;
    const source = device.createBuffer({ size: bytes, usage: U.COPY_SRC | U.COPY_DST });
    const target = device.createBuffer({ size: bytes, usage: U.COPY_SRC | U.COPY_DST });
    device.queue.writeBuffer(source, 0, new Uint32Array([1, 2, 3, 4]));
    const copier = device.createCommandEncoder();
    copier.copyBufferToBuffer(source, 0, target, 0, bytes);
    const copy = copier.finish();
    device.pushErrorScope('validation');
    copier.copyBufferToBuffer(counter, 0, target, 0, 4);
    assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', 'a copy on a finished encoder');
    device.queue.submit([copy]);
    const readback = device.createBuffer({ size: 16, usage: U.MAP_READ | U.COPY_DST });
    const reader = device.createCommandEncoder();
    reader.copyBufferToBuffer(target, 0, readback, 0, 16);
    device.queue.submit([reader.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    assert.deepEqual([...new Uint32Array(readback.getMappedRange())], [1, 2, 3, 4], 'the source\'s bytes, not the counter copied after finish()');
    readback.unmap();
    await r.proc.exit();
  });

  it('keeps each command buffer as its own encoder made it when a loop repeats the same pass', async () => {
    // A pass alone in its encoder shares the record of the device's last identical pass: a
    // command recorded after it in another encoder must not reach the first one's command buffer,
    // which a split submit (64 workgroups of a kernel of unknown cost) encodes from that record.
    const r = await rig(kernel, 'shared-pass');
    const { device, counter } = r;
    const target = device.createBuffer({ size: 4, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    const first = device.createCommandEncoder();
    encodeCounting(first, r, 64);
    const dispatchOnly = first.finish();
    const second = device.createCommandEncoder();
    encodeCounting(second, r, 64);
    second.copyBufferToBuffer(counter, 0, target, 0, 4);
    const dispatchThenCopy = second.finish();
    device.pushErrorScope('validation');
    device.queue.submit([dispatchOnly]);
    assert.equal(await read(r), 64);
    assert.equal(await readWord(device, target), 0, 'the first command buffer copies nothing');
    device.queue.submit([dispatchThenCopy]);
    assert.equal(await read(r), 128);
    assert.equal(await readWord(device, target), 128, 'the second copies the counter after its own dispatch');
    assert.equal(await device.popErrorScope(), null);
    await r.proc.exit();
  });

  it('writes the bytes a large writeBuffer was given at the call, whether its pieces ran at once or waited', async () => {
    // Over one chunk (COPY_CHUNK_BYTES), a write goes in pieces: those issued during the call read
    // the program's array in place, the rest from a copy made before writeBuffer returns.
    const proc = await kernel.spawn({ name: 'large-write' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const size = 9 * 1024 * 1024;
    const pattern = (round: number) => new Uint32Array(size / 4).map((_, i) => (i * 2654435761 + round) >>> 0);
    const target = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    const firstWrong = async (round: number): Promise<number> => {
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(target, 0, readback, 0, size);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(GPUMapMode.READ);
      const out = new Uint32Array(readback.getMappedRange());
      const expected = pattern(round);
      let wrong = -1;
      for (let i = 0; i < out.length; i++) if (out[i] !== expected[i]) { wrong = i; break; }
      readback.unmap();
      return wrong;
    };
    // Uncontended: the pieces run during the call.
    const data = pattern(1);
    device.queue.writeBuffer(target, 0, data);
    data.fill(0);
    assert.equal(await firstWrong(1), -1, 'the write run at once has the bytes of the call');
    // Suspended: nothing runs until resume, so every piece reads the copy.
    const later = pattern(2);
    kernel.suspend(proc.pid);
    device.queue.writeBuffer(target, 0, later);
    later.fill(7);
    kernel.resume(proc.pid);
    assert.equal(await firstWrong(2), -1, 'the write that waited has the bytes of the call');
    await proc.exit();
  });

  it('settles a readback loop (write, copy, map) from its maps: exact bytes, every call timed, a refused map still settled', async () => {
    // A map of the buffer the run's last submit copies into completes only after that run: the
    // dispatcher takes the run's completion from it instead of asking Dawn for a fence per round.
    const proc = await kernel.spawn({ name: 'readback' });
    const device = await (await proc.gpu.requestAdapter())!.requestDevice();
    const size = 64 * 1024;
    const src = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const data = new Uint32Array(size / 4);
    const latencies = (): number => kernel.ps().find((p) => p.pid === proc.pid)!.accounting.latency.count;
    const round = async (r: number, mode: number = GPUMapMode.READ): Promise<number[] | null> => {
      data.fill(r);
      device.queue.writeBuffer(src, 0, data);
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(src, 0, readback, 0, size);
      device.queue.submit([encoder.finish()]);
      try {
        await readback.mapAsync(mode);
      } catch {
        return null;
      }
      const words = new Uint32Array(readback.getMappedRange());
      const seen = [words[0], words[words.length - 1]];
      readback.unmap();
      return seen;
    };
    const fences = countFences(device);
    try {
      await round(-1);
      const before = latencies();
      for (let r = 0; r < 20; r++) assert.deepEqual(await round(r), [r, r], `round ${r}`);
      assert.equal(latencies() - before, 40, 'every write and submit has its latency recorded (its run settled)');
      assert.ok(fences.count() < 20, `the maps stood for the rounds' fences (${fences.count()} fences for 20 rounds)`);
      // A map Dawn refuses (WRITE on a MAP_READ buffer) says nothing of the run: its error reaches
      // the scope current at the call, and the run still settles (from a fence).
      device.pushErrorScope('validation');
      assert.equal(await round(100, GPUMapMode.WRITE), null);
      assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError');
      assert.deepEqual(await round(101), [101, 101]);
      assert.equal(latencies() - before, 44);
    } finally {
      fences.restore();
    }
    assert.ok(kernel.ps().find((p) => p.pid === proc.pid)!.accounting.gpuTimeNs > 0);
    await proc.exit();
  });

  it('serves a second process that arrives while a readback loop settles its runs from maps', async () => {
    const reader = await kernel.spawn({ name: 'reader', priority: 'batch' });
    const rdevice = await (await reader.gpu.requestAdapter())!.requestDevice();
    const size = 16 * 1024;
    const src = rdevice.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    const readback = rdevice.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const data = new Uint32Array(size / 4);
    const reads = (async () => {
      const seen: number[] = [];
      for (let r = 0; r < 30; r++) {
        data.fill(r);
        rdevice.queue.writeBuffer(src, 0, data);
        const encoder = rdevice.createCommandEncoder();
        encoder.copyBufferToBuffer(src, 0, readback, 0, size);
        rdevice.queue.submit([encoder.finish()]);
        await readback.mapAsync(GPUMapMode.READ);
        seen.push(new Uint32Array(readback.getMappedRange())[size / 4 - 1]);
        readback.unmap();
      }
      return seen;
    })();
    const r = await rig(kernel, 'arrival'); // normal class: ahead of the batch reader
    for (let burst = 0; burst < 5; burst++) {
      for (let i = 0; i < 10; i++) {
        const encoder = r.device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(r.pipeline);
        pass.setBindGroup(0, r.group);
        pass.dispatchWorkgroups(1);
        pass.end();
        r.device.queue.submit([encoder.finish()]);
      }
      await r.device.queue.onSubmittedWorkDone();
    }
    assert.equal(await read(r), 50);
    assert.deepEqual(await reads, Array.from({ length: 30 }, (_, i) => i));
    const rows = kernel.ps();
    const row = (pid: number) => rows.find((p) => p.pid === pid)!.accounting;
    assert.equal(row(reader.pid).latency.count, 60, 'every write and submit of the reader settled');
    assert.equal(row(r.proc.pid).latency.count, 51);
    assert.ok(row(reader.pid).gpuTimeNs > 0 && row(r.proc.pid).gpuTimeNs > 0);
    await r.proc.exit();
    await reader.exit();
  });

  it('refuses and does not count a submit that uses a destroyed buffer, then runs the next one', async () => {
    const r = await rig(kernel, 'destroyed');
    const { device, pipeline, group } = r;
    const doomed = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
    const doomedGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: doomed } }] });
    const encode = (bindGroup: GPUBindGroup): GPUCommandBuffer => {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(1);
      pass.end();
      return encoder.finish();
    };
    const refused = encode(doomedGroup);
    const accepted = encode(group);
    doomed.destroy();
    device.pushErrorScope('validation');
    device.queue.submit([refused]);
    assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError');
    device.pushErrorScope('validation');
    device.queue.submit([accepted]);
    assert.equal(await device.popErrorScope(), null);
    assert.equal(await read(r), 1);
    const [row] = kernel.ps().filter((p) => p.pid === r.proc.pid);
    assert.equal(row.accounting.dispatches, 1);
    await r.proc.exit();
  });

  it('refuses a pass a loop repeats once a buffer it binds is destroyed, though the same pass ran before (whole and split)', async () => {
    // A repeated pass shares one record, whose facts (what it uses) the submit path keeps: the
    // buffers' state must still be read at each submit. Split into atoms, no piece may run.
    const atomKernel = await createKernel({ atomSize: 1 });
    try {
      for (const [how, owner] of [['whole', kernel], ['split', atomKernel]] as const) {
        const r = await rig(owner, `repeated-destroyed-${how}`);
        const { device, pipeline, group } = r;
        const doomed = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
        const doomedGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: doomed } }] });
        const submitBoth = (): void => {
          const encoder = device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, group);
          pass.dispatchWorkgroups(2);
          pass.setBindGroup(0, doomedGroup);
          pass.dispatchWorkgroups(2);
          pass.end();
          device.queue.submit([encoder.finish()]);
        };
        device.pushErrorScope('validation');
        for (let i = 0; i < 3; i++) submitBoth();
        assert.equal(await device.popErrorScope(), null, how);
        doomed.destroy();
        device.pushErrorScope('validation');
        submitBoth();
        assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError', how);
        assert.equal(await read(r), 6, `${how}: the three submits before the destroy ran, nothing of the one after it`);
        const [row] = owner.ps().filter((p) => p.pid === r.proc.pid);
        assert.equal(row.accounting.dispatches, 6, how);
        await r.proc.exit();
      }
    } finally {
      await atomKernel.shutdown();
    }
  });

  it('refuses a split submit whose pass binds many buffers once any one of them is destroyed', async () => {
    // Past 16 distinct buffers a pass's facts keep a Set beside the list: the last of 20 counts too.
    const atomKernel = await createKernel({ atomSize: 1 });
    try {
      const r = await rig(atomKernel, 'many-buffers');
      const { device, pipeline } = r;
      const buffers = Array.from({ length: 20 }, () => device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }));
      const groups = buffers.map((buffer) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
      const submitAll = (): void => {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        for (const group of groups) {
          pass.setBindGroup(0, group);
          pass.dispatchWorkgroups(2);
        }
        pass.end();
        device.queue.submit([encoder.finish()]);
      };
      submitAll();
      buffers[19].destroy();
      device.pushErrorScope('validation');
      submitAll();
      assert.equal((await device.popErrorScope())?.constructor.name, 'GPUValidationError');
      assert.deepEqual(await Promise.all(buffers.slice(0, 3).map((buffer) => readWord(device, buffer))), [2, 2, 2], 'the first submit ran, nothing of the second');
      await r.proc.exit();
    } finally {
      await atomKernel.shutdown();
    }
  });
});
