// Timestamp queries: the device requires 'timestamp-query', two passes write beginning and end
// timestamps, and resolveQuerySet copies them to a non-zero offset of a QUERY_RESOLVE buffer.
// Timestamp values differ run to run, so only deterministic facts are returned: how many queries
// were resolved, the query set's count and type, and whether end >= begin in each pass, alongside
// the passes' compute results.

import { concat, type DeviceNeeds, expectNoErrors, openDevice, readBack } from './common.js';

export const name = 'timestamp-queries';

// Without the feature the program runs its passes untimed: skipped by name there (compatibility
// mode has no timestamp-query), so that no one takes that for the timestamps working.
export const needs: DeviceNeeds = { features: ['timestamp-query'] };

const QUERIES = 4;
const RESOLVE_OFFSET = 256; // resolveQuerySet's destinationOffset must be a multiple of 256
const N = 256;

const SHADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> round: u32;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  var x = data[gid.x] + round;
  for (var k = 0u; k < 32u; k++) { x = x * 1664525u + 1013904223u; }
  data[gid.x] = x;
}
`;

export async function run(gpu: GPU): Promise<Uint8Array> {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('corpus: no WebGPU adapter');
  const supported = adapter.features.has('timestamp-query');
  const device = await adapter.requestDevice({ requiredFeatures: supported ? ['timestamp-query'] : [] });
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');

  const data = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(data, 0, new Uint32Array(N).map((_, i) => i));
  const rounds = device.createBuffer({ size: 512, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(rounds, 0, new Uint32Array([11]));
  device.queue.writeBuffer(rounds, 256, new Uint32Array([22]));
  const module = device.createShaderModule({ code: SHADER });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module } });
  const groups = [0, 256].map((offset) =>
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: data } },
        { binding: 1, resource: { buffer: rounds, offset, size: 4 } },
      ],
    }),
  );

  const querySet = supported ? device.createQuerySet({ type: 'timestamp', count: QUERIES }) : null;
  const resolved = device.createBuffer({
    size: RESOLVE_OFFSET + QUERIES * 8,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });

  const encoder = device.createCommandEncoder();
  for (let p = 0; p < 2; p++) {
    const pass = encoder.beginComputePass(
      querySet ? { timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * p, endOfPassWriteIndex: 2 * p + 1 } } : {},
    );
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, groups[p]);
    pass.dispatchWorkgroups(N / 64);
    pass.end();
  }
  if (querySet) encoder.resolveQuerySet(querySet, 0, QUERIES, resolved, RESOLVE_OFFSET);
  device.queue.submit([encoder.finish()]);

  const bytes = await readBack(device, [
    { buffer: data, size: N * 4 },
    { buffer: resolved, offset: RESOLVE_OFFSET, size: QUERIES * 8 },
  ]);
  const times = new BigUint64Array(bytes.buffer.slice(N * 4));
  const facts = new Uint8Array([
    supported ? 1 : 0,
    querySet ? QUERIES : 0,
    querySet?.count ?? 0,
    querySet?.type === 'timestamp' ? 1 : 0,
    supported && times[1] >= times[0] ? 1 : 0,
    supported && times[3] >= times[2] ? 1 : 0,
  ]);
  querySet?.destroy();
  for (const b of [data, rounds, resolved]) b.destroy();
  await expectNoErrors(device, name);
  device.destroy();
  return concat(bytes.subarray(0, N * 4), facts);
}
