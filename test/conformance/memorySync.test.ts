// WebGPU §3.4 (ordering of queue operations) and §"Programming model: memory model": every queue
// operation, command buffer, pass and dispatch of one queue observes the effects of the ones
// before it, and never of the ones after. The CTS's memory_sync,buffer,single_buffer cases write
// one value into a 4-byte buffer and read it back through another operation (write then read,
// read then write, write then write), separated by a dispatch, pass, command buffer or queue
// operation boundary. Here the compute and copy cases, each run once per boundary; the observation
// is the value the reading operation stored (or the buffer's final value), per case.

import { readWord } from '../helpers.js';
import { conformance, type Env } from './harness.js';

type WriteOp = 'storage' | 'b2b-copy' | 'write-buffer';
type ReadOp = 'storage-read' | 'input-indirect-dispatch' | 'b2b-copy';
type Boundary = 'queue-op' | 'command-buffer' | 'pass' | 'dispatch';

const ALL_USAGES = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100; // every usage the CTS gives its buffers but MAP_*
const USAGE = ALL_USAGES & ~0x3; // COPY_SRC | COPY_DST | INDEX | VERTEX | UNIFORM | STORAGE | INDIRECT

/** Where an operation can be encoded: write-buffer on the queue, copies in an encoder, the rest in a compute pass. */
function contextOf(op: WriteOp | ReadOp): 'queue' | 'encoder' | 'pass' {
  return op === 'write-buffer' ? 'queue' : op === 'b2b-copy' ? 'encoder' : 'pass';
}

/** Whether two operations can be separated by `boundary` (a pass boundary needs two pass ops...). */
function fits(a: WriteOp | ReadOp, b: WriteOp | ReadOp, boundary: Boundary): boolean {
  const ca = contextOf(a);
  const cb = contextOf(b);
  if (boundary === 'queue-op') return true;
  if (ca === 'queue' || cb === 'queue') return false;
  if (boundary === 'command-buffer') return true;
  if (boundary === 'pass') return ca === 'pass' && cb === 'pass';
  return ca === 'pass' && cb === 'pass'; // 'dispatch': one pass
}

/** The programs of one case on one device: the recorder that encodes ops across the boundary. */
class Recorder {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private finished: GPUCommandBuffer[] = [];
  constructor(private readonly device: GPUDevice) {}

  /** Opens whatever `context` needs, closing what it does not. */
  context(context: 'queue' | 'encoder' | 'pass'): { encoder: GPUCommandEncoder; pass: GPUComputePassEncoder } {
    if (context === 'queue') {
      this.flush();
      return null as never;
    }
    if (context === 'encoder' && this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.encoder ??= this.device.createCommandEncoder();
    if (context === 'pass') this.pass ??= this.encoder.beginComputePass();
    return { encoder: this.encoder, pass: this.pass! };
  }

  boundary(boundary: Boundary): void {
    if (boundary === 'dispatch') return;
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (boundary === 'pass') return;
    if (this.encoder) {
      this.finished.push(this.encoder.finish());
      this.encoder = null;
    }
    if (boundary === 'queue-op') this.flush();
  }

  /** Submits everything encoded so far. */
  flush(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (this.encoder) {
      this.finished.push(this.encoder.finish());
      this.encoder = null;
    }
    if (this.finished.length > 0) this.device.queue.submit(this.finished);
    this.finished = [];
  }
}

async function bufferWith(device: GPUDevice, values: number[]): Promise<GPUBuffer> {
  const buffer = device.createBuffer({ size: 4 * values.length, usage: USAGE, mappedAtCreation: true });
  new Uint32Array(buffer.getMappedRange()).set(values);
  buffer.unmap();
  await device.queue.onSubmittedWorkDone();
  return buffer;
}

function storeValuePipeline(device: GPUDevice, value: number): GPUComputePipeline {
  const code = `struct Data { a: u32 }
@group(0) @binding(0) var<storage, read_write> data: Data;
@compute @workgroup_size(1) fn main() { data.a = ${value}u; }`;
  return device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
}

function copyValuePipeline(device: GPUDevice): GPUComputePipeline {
  const code = `struct Data { a: u32 }
@group(0) @binding(0) var<storage, read> src: Data;
@group(0) @binding(1) var<storage, read_write> dst: Data;
@compute @workgroup_size(1) fn main() { dst.a = src.a; }`;
  return device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
}

/** Encodes a write of `value` into `buffer` (from `tmp` for a copy). */
function encodeWrite(device: GPUDevice, r: Recorder, op: WriteOp, buffer: GPUBuffer, value: number, tmp: GPUBuffer | null): void {
  const at = r.context(contextOf(op));
  if (op === 'write-buffer') device.queue.writeBuffer(buffer, 0, new Uint32Array([value]));
  else if (op === 'b2b-copy') at.encoder.copyBufferToBuffer(tmp!, 0, buffer, 0, 4);
  else {
    const pipeline = storeValuePipeline(device, value);
    at.pass.setPipeline(pipeline);
    at.pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
    at.pass.dispatchWorkgroups(1);
  }
}

/** Encodes a read of `src` whose outcome lands in `dst`. */
function encodeRead(device: GPUDevice, r: Recorder, op: ReadOp, src: GPUBuffer, dst: GPUBuffer): void {
  const at = r.context(contextOf(op));
  if (op === 'b2b-copy') at.encoder.copyBufferToBuffer(src, 0, dst, 0, 4);
  else if (op === 'storage-read') {
    const pipeline = copyValuePipeline(device);
    at.pass.setPipeline(pipeline);
    at.pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }] }));
    at.pass.dispatchWorkgroups(1);
  } else {
    // src = [x, 1, 1] is the indirect grid: x workgroups store 1 into dst.
    const pipeline = storeValuePipeline(device, 1);
    at.pass.setPipeline(pipeline);
    at.pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: dst } }] }));
    at.pass.dispatchWorkgroupsIndirect(src, 0);
  }
}

const WRITES: WriteOp[] = ['storage', 'b2b-copy', 'write-buffer'];
const READS: ReadOp[] = ['storage-read', 'input-indirect-dispatch', 'b2b-copy'];
const BOUNDARIES: Boundary[] = ['queue-op', 'command-buffer', 'pass', 'dispatch'];

/** Runs every (read, write, boundary) case in `order` on one device: case name -> observed value. */
async function sweep(env: Env, order: 'wr' | 'rw'): Promise<Record<string, number>> {
  const device = await env.device();
  const out: Record<string, number> = {};
  for (const boundary of BOUNDARIES) {
    for (const readOp of READS) {
      for (const writeOp of WRITES) {
        if (!fits(readOp, writeOp, boundary)) continue;
        const src = await bufferWith(device, readOp === 'input-indirect-dispatch' ? [0, 1, 1] : [0]);
        const tmp = writeOp === 'b2b-copy' ? await bufferWith(device, [1]) : null;
        const dst = device.createBuffer({ size: 4, usage: USAGE });
        const r = new Recorder(device);
        if (order === 'wr') {
          encodeWrite(device, r, writeOp, src, 1, tmp);
          r.boundary(boundary);
          encodeRead(device, r, readOp, src, dst);
        } else {
          encodeRead(device, r, readOp, src, dst);
          r.boundary(boundary);
          encodeWrite(device, r, writeOp, src, 1, tmp);
        }
        r.flush();
        out[`${writeOp}/${readOp}/${boundary}`] = await readWord(device, dst);
      }
    }
  }
  device.destroy();
  return out;
}

conformance('memory sync (one buffer)', [
  {
    rule: 'a read after a write of one buffer sees the write, across every boundary',
    source: 'WebGPU §3.4 queue ordering; CTS api,operation,memory_sync,buffer,single_buffer:wr',
    run: (env) => sweep(env, 'wr'),
  },
  {
    rule: 'a read before a write of one buffer does not see the write, across every boundary',
    source: 'WebGPU §3.4 queue ordering; CTS api,operation,memory_sync,buffer,single_buffer:rw',
    run: (env) => sweep(env, 'rw'),
  },
  {
    rule: 'of two writes of one buffer, the second one stays, across every boundary',
    source: 'WebGPU §3.4 queue ordering; CTS api,operation,memory_sync,buffer,single_buffer:ww',
    async run(env) {
      const device = await env.device();
      const out: Record<string, number> = {};
      for (const boundary of BOUNDARIES) {
        for (const first of WRITES) {
          for (const second of WRITES) {
            if (!fits(first, second, boundary)) continue;
            const buffer = await bufferWith(device, [0]);
            const tmp1 = first === 'b2b-copy' ? await bufferWith(device, [1]) : null;
            const tmp2 = second === 'b2b-copy' ? await bufferWith(device, [2]) : null;
            const r = new Recorder(device);
            encodeWrite(device, r, first, buffer, 1, tmp1);
            r.boundary(boundary);
            encodeWrite(device, r, second, buffer, 2, tmp2);
            r.flush();
            out[`${first}/${second}/${boundary}`] = await readWord(device, buffer);
          }
        }
      }
      device.destroy();
      return out;
    },
  },
]);

conformance('memory sync (dispatches of one pass)', [
  {
    rule: 'dispatches of one pass see each other in order (four read-modify-writes of one buffer)',
    source: 'WebGPU §"Compute Pass Encoding" (usage scope per dispatch); CTS single_buffer:multiple_dispatches_in_the_same_compute_pass',
    async run(env) {
      const device = await env.device();
      const count = 512;
      const buffer = device.createBuffer({ size: 4 * count, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (const operation of ['i * 2', 'data[i] + 2', 'data[i] / 2', 'data[i] - 1']) {
        const code = `@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { let i = g.x; data[i] = ${operation}; }`;
        const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
        pass.dispatchWorkgroups(count / 64);
      }
      pass.end();
      device.queue.submit([encoder.finish()]);
      const staging = device.createBuffer({ size: 4 * count, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
      const copy = device.createCommandEncoder();
      copy.copyBufferToBuffer(buffer, 0, staging, 0, 4 * count);
      device.queue.submit([copy.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const words = [...new Uint32Array(staging.getMappedRange())];
      device.destroy();
      // Every word i should be i: report the indices that are not.
      return words.flatMap((w, i) => (w === i ? [] : [i])).slice(0, 8);
    },
  },
]);

/** Copies `src[i]` (plus `add`) into `dst[i]`, one workgroup per element: a dispatch gpunix can split. */
function spreadCopyPipeline(device: GPUDevice, add: number): GPUComputePipeline {
  const code = `@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3u) { dst[w.x] = src[w.x] + ${add}u; }`;
  return device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
}

async function readWords(device: GPUDevice, buffer: GPUBuffer, words: number): Promise<number[]> {
  const staging = device.createBuffer({ size: 4 * words, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, 4 * words);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = [...new Uint32Array(staging.getMappedRange())];
  staging.unmap();
  return out;
}

// The same orderings when gpunix splits every dispatch into one-workgroup atoms, each its own
// real submit: a writeBuffer or a later pass must still land between the right atoms' work.
conformance(
  'memory sync (dispatches split into atoms)',
  [
    {
      rule: 'queue.writeBuffer between two submits lands after the first split dispatch and before the second',
      source: 'WebGPU §3.4 queue ordering; CTS single_buffer:rw/wr (queue-op)',
      async run(env) {
        const device = await env.device();
        const src = await bufferWith(device, [1, 2, 3, 4]);
        const before = device.createBuffer({ size: 16, usage: USAGE });
        const afterwards = device.createBuffer({ size: 16, usage: USAGE });
        const pipeline = spreadCopyPipeline(device, 0);
        for (const dst of [before, afterwards]) {
          const encoder = device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }] }));
          pass.dispatchWorkgroups(4);
          pass.end();
          device.queue.submit([encoder.finish()]);
          if (dst === before) device.queue.writeBuffer(src, 0, new Uint32Array([9, 9, 9, 9]));
        }
        const result = { before: await readWords(device, before, 4), after: await readWords(device, afterwards, 4) };
        device.destroy();
        return result;
      },
    },
    {
      rule: 'split dispatches, passes and copies of one command buffer run in order (a chain through one buffer)',
      source: 'WebGPU §3.4 queue ordering; CTS single_buffer:wr (pass, dispatch, command-buffer)',
      async run(env) {
        const device = await env.device();
        const a = await bufferWith(device, [1, 2, 3, 4]);
        const b = device.createBuffer({ size: 16, usage: USAGE });
        const c = device.createBuffer({ size: 16, usage: USAGE });
        const add1 = spreadCopyPipeline(device, 1);
        const add10 = spreadCopyPipeline(device, 10);
        const group = (p: GPUComputePipeline, from: GPUBuffer, to: GPUBuffer) =>
          device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: from } }, { binding: 1, resource: { buffer: to } }] });
        const encoder = device.createCommandEncoder();
        let pass = encoder.beginComputePass();
        pass.setPipeline(add1);
        pass.setBindGroup(0, group(add1, a, b)); // b = a + 1
        pass.dispatchWorkgroups(4);
        pass.setPipeline(add10);
        pass.setBindGroup(0, group(add10, b, c)); // c = b + 10, same pass
        pass.dispatchWorkgroups(4);
        pass.end();
        encoder.copyBufferToBuffer(c, 0, a, 0, 16); // a = c
        pass = encoder.beginComputePass();
        pass.setPipeline(add1);
        pass.setBindGroup(0, group(add1, a, b)); // b = a + 1, next pass
        pass.dispatchWorkgroups(4);
        pass.end();
        const second = device.createCommandEncoder();
        second.copyBufferToBuffer(b, 0, c, 0, 8); // c[0..2] = b[0..2], next command buffer
        device.queue.submit([encoder.finish(), second.finish()]);
        const result = { a: await readWords(device, a, 4), b: await readWords(device, b, 4), c: await readWords(device, c, 4) };
        device.destroy();
        return result;
      },
    },
  ],
  { atomSize: 1 },
);

// What made the CTS's memory_sync cases fail under gpunix was not memory ordering but its test
// helper: it tells a finished command buffer from a render bundle with `instanceof GPURenderBundle`
// (a ReferenceError when that global is missing), and two cases skip unless
// device.limits.maxStorageBuffersInFragmentStage >= 1. Both patterns, as a program runs them.
conformance('memory sync (what the CTS helper relies on)', [
  {
    rule: 'a finished command buffer can be tested with instanceof GPURenderBundle (false)',
    source: 'CTS memory_sync operation_context_helper (ensureContext)',
    async run(env) {
      const device = await env.device();
      const commandBuffer = device.createCommandEncoder().finish();
      let observed: string;
      try {
        observed = String(commandBuffer instanceof (env.globals.GPURenderBundle as new () => unknown));
      } catch (error) {
        observed = `threw ${(error as Error).name}`;
      }
      device.destroy();
      return observed;
    },
  },
  {
    rule: 'a default device reports maxStorageBuffersInFragmentStage of at least 1',
    source: 'CTS memory_sync single_buffer:two_dispatches_in_the_same_compute_pass (skip condition)',
    async run(env) {
      const device = await env.device();
      const limit = (device.limits as unknown as Record<string, number | undefined>).maxStorageBuffersInFragmentStage;
      device.destroy();
      return typeof limit === 'number' && limit >= 1;
    },
  },
]);
