// Argument conversion (WebIDL), buffer mapping, queue.writeBuffer and error-scope rules, and the
// CTS idl cases no other group covers (flag constants, constructible error classes), each
// observed on bare Dawn and on a gpunix process. test/webidl.test.ts checks the conversions in
// depth (every string member, a Symbol, a throwing toString, the remote client); here a few
// representative rules stand in the conformance table. Buffers are 16 to 32 bytes: the rules are
// about validation, not data.

import { conformance, settled, thrown, validationOf } from './harness.js';

const U = GPUBufferUsage;
const M = GPUMapMode;
const asAny = (value: unknown): never => value as never;

/** A small buffer of `usage` on `device`. */
const buffer = (device: GPUDevice, usage: number, size = 16, mappedAtCreation = false): GPUBuffer =>
  device.createBuffer({ size, usage, mappedAtCreation });

/**
 * What one `mapAsync` call does: the error type in a validation scope around the call and how its
 * promise settles. The promise is observed at once, so its rejection is never unhandled.
 */
async function mapOutcome(device: GPUDevice, target: GPUBuffer, mode: number, offset?: number, size?: number): Promise<{ scope: string | null; promise: string }> {
  let promise: Promise<string> = Promise.resolve('not called');
  const scope = await validationOf(device, () => {
    promise = settled(target.mapAsync(mode, offset, size));
  });
  return { scope, promise: await promise };
}

/** What `getMappedRange(offset, size)` gives: the range's byteLength or the exception's name. */
function rangeOutcome(target: GPUBuffer, offset?: number, size?: number): number | string {
  try {
    return target.getMappedRange(offset, size).byteLength;
  } catch (error) {
    return (error as Error).name;
  }
}

conformance('webidl conversions', [
  {
    rule: 'a negative GPUSize64 is a TypeError ([EnforceRange]): createBuffer({size: -1})',
    source: 'WebIDL §3.2.4.9 (ConvertToInt, [EnforceRange])',
    async run(env) {
      const device = await env.device();
      return thrown(() => device.createBuffer({ size: -1, usage: U.STORAGE }));
    },
  },
  {
    rule: 'a GPUSize64 above 2**53 - 1 is a TypeError ([EnforceRange])',
    source: 'WebIDL §3.2.4.9 (ConvertToInt, [EnforceRange])',
    async run(env) {
      const device = await env.device();
      return thrown(() => device.createBuffer({ size: 2 ** 53, usage: U.STORAGE }));
    },
  },
  {
    rule: 'a fractional GPUSize64 is truncated: createBuffer({size: 16.7}).size is 16',
    source: 'WebIDL §3.2.4.9 (ConvertToInt)',
    async run(env) {
      const device = await env.device();
      return device.createBuffer({ size: 16.7, usage: U.STORAGE }).size;
    },
  },
  {
    rule: 'GPUBufferUsageFlags of 2**32 is a TypeError ([EnforceRange] unsigned long)',
    source: 'WebGPU §3.1 (GPUFlagsConstant); WebIDL §3.2.4.9',
    async run(env) {
      const device = await env.device();
      return thrown(() => device.createBuffer({ size: 16, usage: 2 ** 32 }));
    },
  },
  {
    rule: "a numeric string converts with ToNumber: createBuffer({size: '16'}).size is 16",
    source: 'WebIDL §3.2.4.9 (ConvertToInt starts with ToNumber)',
    async run(env) {
      const device = await env.device();
      try {
        return device.createBuffer({ size: asAny('16'), usage: U.STORAGE }).size;
      } catch (error) {
        return (error as Error).name;
      }
    },
    dawnBreaks: { expected: 16, why: "dawn.node refuses a string where a number goes (TypeError)" },
  },
  {
    rule: "a boolean member converts with ToBoolean: mappedAtCreation: 'yes' maps the buffer",
    source: 'WebIDL §3.2.2 (boolean)',
    async run(env) {
      const device = await env.device();
      try {
        return device.createBuffer({ size: 16, usage: U.STORAGE, mappedAtCreation: asAny('yes') }).mapState;
      } catch (error) {
        return (error as Error).name;
      }
    },
    dawnBreaks: { expected: 'mapped', why: 'dawn.node refuses a non-boolean (TypeError)' },
  },
  {
    rule: 'a missing required dictionary member is a TypeError: createBuffer({usage})',
    source: 'WebIDL §3.2.17 (dictionaries, required members)',
    async run(env) {
      const device = await env.device();
      return [thrown(() => device.createBuffer(asAny({ usage: U.STORAGE }))), thrown(() => device.createBuffer(asAny({ size: 16 })))];
    },
  },
  {
    rule: "a string that is not a value of the enum is a TypeError: pushErrorScope('bogus')",
    source: 'WebIDL §3.2.19 (enumeration types)',
    async run(env) {
      const device = await env.device();
      return thrown(() => device.pushErrorScope(asAny('bogus')));
    },
  },
  {
    rule: 'null or undefined for an optional dictionary is an empty one; a number is a TypeError',
    source: 'WebIDL §3.2.17 (dictionaries)',
    async run(env) {
      const device = await env.device();
      return [
        thrown(() => device.createCommandEncoder(asAny(null))),
        thrown(() => device.createCommandEncoder(undefined)),
        thrown(() => device.createCommandEncoder(asAny(5))),
      ];
    },
    dawnBreaks: { expected: [null, null, 'TypeError'], why: 'dawn.node takes a number for a dictionary (as an empty one)' },
  },
  {
    rule: 'a string where a sequence goes is a TypeError: requiredFeatures: "timestamp-query" rejects',
    source: 'WebIDL §3.2.22 (sequences: not an object)',
    async run(env) {
      const adapter = await env.gpu.requestAdapter();
      return settled(adapter!.requestDevice({ requiredFeatures: asAny('timestamp-query') }));
    },
  },
  {
    rule: 'a sequence argument takes any iterable: queue.submit(new Set([commandBuffer]))',
    source: 'WebIDL §3.2.22 (sequences from iterables)',
    async run(env) {
      const device = await env.device();
      return validationOf(device, () => device.queue.submit(asAny(new Set([device.createCommandEncoder().finish()]))));
    },
    dawnBreaks: { expected: null, why: 'dawn.node takes only an array there (TypeError)' },
  },
  {
    rule: "a setlike converts as a sequence: requiredFeatures: adapter.features asks for every adapter feature",
    source: 'WebIDL §3.2.22 (sequences from iterables); CTS idl,javascript:setlike,requiredFeatures',
    async run(env) {
      const adapter = await env.gpu.requestAdapter();
      let device: GPUDevice;
      try {
        device = await adapter!.requestDevice({ requiredFeatures: adapter!.features as unknown as Iterable<GPUFeatureName> });
      } catch (error) {
        return (error as Error).name;
      }
      const missing = [...adapter!.features].filter((feature) => !device.features.has(feature));
      const extra = [...device.features].filter((feature) => !adapter!.features.has(feature));
      return { missing, extra };
    },
    dawnBreaks: { expected: { missing: [], extra: [] }, why: 'dawn.node takes only an array there (and throws its TypeError instead of rejecting)' },
  },
  {
    rule: 'a limits object converts as an empty record (its members are not own properties): requiredLimits: adapter.limits gives the default limits',
    source: 'WebIDL §3.2.23 (records: own enumerable properties); CTS idl,javascript:limits',
    async run(env) {
      const adapter = await env.gpu.requestAdapter();
      const device = await adapter!.requestDevice({ requiredLimits: adapter!.limits as unknown as Record<string, number> });
      const limits = device.limits as unknown as Record<string, number>;
      return ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxBindGroups'].map(
        (name) => `${name} ${limits[name]}`,
      );
    },
    dawnBreaks: {
      expected: ['maxBufferSize 268435456', 'maxStorageBufferBindingSize 134217728', 'maxComputeWorkgroupStorageSize 16384', 'maxComputeInvocationsPerWorkgroup 256', 'maxBindGroups 4'],
      why: "dawn.node reads every limit from the object, own property or not: the device gets the adapter's limits",
    },
  },
  {
    rule: 'a promise-returning operation rejects on a conversion error instead of throwing: mapAsync(2**32)',
    source: 'WebIDL §3.7.7 (operations returning a promise)',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_READ);
      let promise: Promise<string> = Promise.resolve('no promise');
      const threw = thrown(() => {
        promise = settled(target.mapAsync(2 ** 32));
      });
      return { threw, promise: await promise };
    },
  },
  {
    rule: '[EnforceRange] on writeBuffer offsets: writeBuffer(buffer, 2**60, data) is a TypeError',
    source: 'WebGPU §21.2 (GPUQueue.writeBuffer: GPUSize64); WebIDL §3.2.4.9',
    async run(env) {
      const device = await env.device();
      return thrown(() => device.queue.writeBuffer(buffer(device, U.COPY_DST), 2 ** 60, new Uint8Array(4)));
    },
  },
  {
    rule: "dictionary members are read once each, in order (inherited first, then lexicographic)",
    source: 'WebIDL §3.2.17 (dictionary conversion order)',
    async run(env) {
      const device = await env.device();
      const reads: string[] = [];
      const descriptor = new Proxy(
        { usage: U.STORAGE, size: 16, mappedAtCreation: false, label: 'b' },
        {
          get(target, key, receiver) {
            if (typeof key === 'string') reads.push(key);
            return Reflect.get(target, key, receiver);
          },
        },
      );
      device.createBuffer(descriptor);
      return reads;
    },
    dawnBreaks: { expected: ['label', 'mappedAtCreation', 'size', 'usage'], why: 'dawn.node reads members in its own order, some twice' },
  },
]);

conformance('buffer validation', [
  {
    rule: 'mapAsync(READ) on a buffer without MAP_READ: a validation error, and the promise rejects with OperationError',
    source: 'WebGPU §5.2 (mapAsync validation); CTS api,validation,buffer,mapping:mapAsync,usage',
    async run(env) {
      const device = await env.device();
      return [await mapOutcome(device, buffer(device, U.STORAGE), M.READ), await mapOutcome(device, buffer(device, U.MAP_READ), M.WRITE)];
    },
  },
  {
    rule: 'mapAsync with mode 0 or READ | WRITE is a validation error (OperationError)',
    source: 'WebGPU §5.2 (mapAsync validation); CTS api,validation,buffer,mapping:mapAsync,usage',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_READ);
      return [await mapOutcome(device, target, 0), await mapOutcome(device, target, M.READ | M.WRITE)];
    },
  },
  {
    rule: 'mapAsync on a destroyed buffer is a validation error (OperationError)',
    source: 'CTS api,validation,buffer,mapping:mapAsync,state,destroyed',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_READ);
      target.destroy();
      return mapOutcome(device, target, M.READ);
    },
  },
  {
    rule: 'mapAsync while a map is pending rejects with OperationError; while mapped it is a validation error too; after unmap it succeeds',
    source: 'CTS api,validation,buffer,mapping:mapAsync,state,mappingPending and mapAsync,state,mapped',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_READ);
      // Synchronously, so that the first map is still pending at the second call and at unmap.
      device.pushErrorScope('validation');
      const first = settled(target.mapAsync(M.READ));
      const second = settled(target.mapAsync(M.READ));
      target.unmap();
      const scope = (await device.popErrorScope())?.constructor.name ?? null;
      const whilePending = { first: await first, second: await second, scope };
      const afterUnmap = await mapOutcome(device, target, M.READ);
      const whileMapped = await mapOutcome(device, target, M.READ);
      const atCreation = await mapOutcome(device, buffer(device, U.MAP_WRITE, 16, true), M.WRITE);
      return { whilePending, afterUnmap, whileMapped, atCreation };
    },
  },
  {
    rule: 'mapAsync offset must be a multiple of 8 and size of 4, within the buffer',
    source: 'WebGPU §5.2 (mapAsync validation); CTS api,validation,buffer,mapping:mapAsync,offsetAndSizeAlignment and offsetAndSizeOOB',
    async run(env) {
      const device = await env.device();
      const seen: Record<string, unknown> = {};
      for (const [offset, size] of [[0, 0], [8, 4], [4, 4], [8, 2], [8, 8], [8, 12], [16, 0], [24, undefined]] as [number, number | undefined][]) {
        const target = buffer(device, U.MAP_READ);
        seen[`${offset},${size}`] = await mapOutcome(device, target, M.READ, offset, size);
      }
      return seen;
    },
  },
  {
    rule: 'mapState goes unmapped → pending → mapped → unmapped; mappedAtCreation starts mapped; destroy unmaps',
    source: 'WebGPU §5.2 (GPUBuffer.mapState)',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_READ);
      const states = [target.mapState];
      const mapped = target.mapAsync(M.READ);
      states.push(target.mapState);
      await mapped;
      states.push(target.mapState);
      target.unmap();
      states.push(target.mapState);
      const created = buffer(device, U.STORAGE, 16, true);
      states.push(created.mapState);
      created.destroy();
      states.push(created.mapState);
      return states;
    },
  },
  {
    rule: 'unmap of a buffer that is not mapped is no error',
    source: 'WebGPU §5.2 (GPUBuffer.unmap); CTS api,validation,buffer,mapping:unmap,state,unmapped',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_READ);
      return [await validationOf(device, () => target.unmap()), await validationOf(device, () => target.unmap())];
    },
  },
  {
    rule: 'getMappedRange on a buffer that is not mapped (unmapped, pending, destroyed) throws OperationError',
    source: 'WebGPU §5.2 (getMappedRange); CTS api,validation,buffer,mapping:getMappedRange,state,*',
    async run(env) {
      const device = await env.device();
      const unmapped = buffer(device, U.MAP_READ);
      const pending = buffer(device, U.MAP_READ);
      const map = settled(pending.mapAsync(M.READ));
      const whilePending = rangeOutcome(pending);
      await map;
      const destroyed = buffer(device, U.STORAGE, 16, true);
      destroyed.destroy();
      return { unmapped: rangeOutcome(unmapped), pending: whilePending, destroyed: rangeOutcome(destroyed) };
    },
  },
  {
    rule: 'getMappedRange: offset a multiple of 8, size of 4, inside the mapped range; size defaults to the rest',
    source: 'WebGPU §5.2 (getMappedRange); CTS api,validation,buffer,mapping:getMappedRange,offsetAndSizeAlignment and sizeAndOffsetOOB',
    async run(env) {
      const device = await env.device();
      const seen: Record<string, unknown> = {};
      for (const [offset, size] of [[undefined, undefined], [8, undefined], [4, 4], [8, 2], [8, 8], [8, 12], [16, 0], [24, undefined]] as [number | undefined, number | undefined][]) {
        const target = buffer(device, U.MAP_READ, 16, true);
        seen[`${offset},${size}`] = rangeOutcome(target, offset, size);
      }
      const partly = buffer(device, U.MAP_READ);
      await partly.mapAsync(M.READ, 8, 8);
      seen['mapped 8..16: 0,8'] = rangeOutcome(partly, 0, 8);
      seen['mapped 8..16: 8,8'] = rangeOutcome(partly, 8, 8);
      seen['mapped 8..16: default'] = rangeOutcome(partly);
      return seen;
    },
  },
  {
    rule: 'getMappedRange ranges must not overlap one another',
    source: 'WebGPU §5.2 (getMappedRange); CTS api,validation,buffer,mapping:getMappedRange,disjointRanges',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.MAP_WRITE, 32, true);
      return [rangeOutcome(target, 0, 8), rangeOutcome(target, 8, 8), rangeOutcome(target, 0, 16), rangeOutcome(target, 8, 4), rangeOutcome(target, 16, 16)];
    },
  },
  {
    rule: "unmap and destroy detach the mapped ranges' ArrayBuffers",
    source: 'WebGPU §5.2 (unmap: detach each mapped ArrayBuffer)',
    async run(env) {
      const device = await env.device();
      const unmapped = buffer(device, U.MAP_WRITE, 16, true);
      const a = unmapped.getMappedRange();
      unmapped.unmap();
      const destroyed = buffer(device, U.MAP_WRITE, 16, true);
      const b = destroyed.getMappedRange(0, 8);
      destroyed.destroy();
      return [a.byteLength, b.byteLength];
    },
  },
  {
    rule: 'bytes written through mapped ranges are the contents after unmap; mapAsync(READ) ranges show them',
    source: 'WebGPU §5.2 (unmap: the mapped bytes become the buffer contents)',
    async run(env) {
      const device = await env.device();
      const source = buffer(device, U.COPY_SRC, 16, true);
      new Uint32Array(source.getMappedRange(0, 8)).set([1, 2]);
      new Uint32Array(source.getMappedRange(8, 8)).set([3, 4]);
      source.unmap();
      const written = buffer(device, U.MAP_WRITE | U.COPY_SRC);
      await written.mapAsync(M.WRITE, 8, 8);
      new Uint32Array(written.getMappedRange(8, 8)).set([7, 8]);
      written.unmap();
      const readback = buffer(device, U.MAP_READ | U.COPY_DST, 32);
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(source, 0, readback, 0, 16);
      encoder.copyBufferToBuffer(written, 0, readback, 16, 16);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(M.READ);
      return [...new Uint32Array(readback.getMappedRange())];
    },
  },
  {
    rule: 'createBuffer with mappedAtCreation and a size not a multiple of 4 throws RangeError',
    source: 'WebGPU §5.1 (createBuffer); CTS api,validation,buffer,create:createBuffer_invalid_and_oom',
    async run(env) {
      const device = await env.device();
      return [6, 0, 8].map((size) => thrown(() => device.createBuffer({ size, usage: U.STORAGE, mappedAtCreation: true })));
    },
  },
  {
    rule: 'buffer usage must be nonzero, known bits only, MAP_READ only with COPY_DST, MAP_WRITE only with COPY_SRC',
    source: 'WebGPU §5.1 (createBuffer validation); CTS api,validation,buffer,create:usage',
    async run(env) {
      const device = await env.device();
      const cases: Record<string, number> = {
        'none': 0,
        'MAP_READ | COPY_DST': U.MAP_READ | U.COPY_DST,
        'MAP_READ | MAP_WRITE': U.MAP_READ | U.MAP_WRITE,
        'MAP_READ | STORAGE': U.MAP_READ | U.STORAGE,
        'MAP_WRITE | COPY_SRC': U.MAP_WRITE | U.COPY_SRC,
        'MAP_WRITE | UNIFORM': U.MAP_WRITE | U.UNIFORM,
        'an unknown bit (1 << 15)': 1 << 15,
      };
      const seen: Record<string, string | null> = {};
      for (const [what, usage] of Object.entries(cases)) seen[what] = await validationOf(device, () => device.createBuffer({ size: 16, usage }));
      return seen;
    },
  },
]);

conformance('queue.writeBuffer validation', [
  {
    rule: 'writeBuffer: a buffer offset not a multiple of 4 is a validation error; a byte count not a multiple of 4 throws OperationError',
    source: 'WebGPU §21.2 (writeBuffer validation); CTS api,validation,queue,writeBuffer:ranges',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.COPY_DST);
      return {
        offset2: await validationOf(device, () => device.queue.writeBuffer(target, 2, new Uint8Array(4))),
        bytes6: await validationOf(device, () => device.queue.writeBuffer(target, 0, new Uint8Array(6))),
        aligned: await validationOf(device, () => device.queue.writeBuffer(target, 4, new Uint8Array(8))),
      };
    },
  },
  {
    rule: 'writeBuffer: dataOffset and size count elements of a typed array, bytes of an ArrayBuffer; a range beyond the data throws OperationError',
    source: 'WebGPU §21.2 (writeBuffer); CTS api,validation,queue,writeBuffer:ranges',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.COPY_DST, 32);
      const data = new Uint32Array(4);
      return {
        'elements 1..3': await validationOf(device, () => device.queue.writeBuffer(target, 0, data, 1, 2)),
        'elements 1..5': await validationOf(device, () => device.queue.writeBuffer(target, 0, data, 1, 4)),
        'offset past the end': await validationOf(device, () => device.queue.writeBuffer(target, 0, data, 5)),
        'bytes of an ArrayBuffer 4..12': await validationOf(device, () => device.queue.writeBuffer(target, 0, data.buffer, 4, 8)),
      };
    },
  },
  {
    rule: 'writeBuffer takes a DataView as data, dataOffset and size in bytes',
    source: 'WebGPU §21.2 (writeBuffer: data is an AllowSharedBufferSource)',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.COPY_DST, 32);
      const view = new DataView(new ArrayBuffer(16));
      return {
        '4..12': await validationOf(device, () => device.queue.writeBuffer(target, 0, view, 4, 8)),
        '4..20': await validationOf(device, () => device.queue.writeBuffer(target, 0, view, 4, 16)),
      };
    },
    dawnBreaks: { expected: { '4..12': null, '4..20': 'threw OperationError' }, why: 'dawn.node refuses a DataView (TypeError)' },
  },
  {
    rule: 'writeBuffer of a detached ArrayBuffer (a range already unmapped) writes nothing; a size beyond its 0 bytes throws OperationError',
    source: 'WebGPU §21.2 (writeBuffer: the size of data); WebIDL (a detached buffer holds no bytes)',
    async run(env) {
      const device = await env.device();
      const target = buffer(device, U.COPY_DST);
      const staging = buffer(device, U.COPY_SRC, 16, true);
      const range = staging.getMappedRange();
      const view = new Uint32Array(range);
      staging.unmap();
      return {
        whole: await validationOf(device, () => device.queue.writeBuffer(target, 0, range)),
        view: await validationOf(device, () => device.queue.writeBuffer(target, 0, view)),
        sized: await validationOf(device, () => device.queue.writeBuffer(target, 0, range, 0, 4)),
      };
    },
  },
  {
    rule: 'writeBuffer takes shared memory: a SharedArrayBuffer or a typed array over one',
    source: 'WebGPU §21.2 (writeBuffer: data is an AllowSharedBufferSource)',
    async run(env) {
      // Not run on bare Dawn: dawn.node crashes the test's Node process (SIGSEGV) on the view.
      if (env.side === 'dawn') return 'not run: dawn.node crashes on a typed array over a SharedArrayBuffer';
      const device = await env.device();
      const target = buffer(device, U.COPY_DST | U.COPY_SRC);
      const readback = buffer(device, U.COPY_DST | U.MAP_READ);
      const shared = new SharedArrayBuffer(16);
      new Uint32Array(shared).set([5, 6, 7, 8]);
      const scopes = [
        await validationOf(device, () => device.queue.writeBuffer(target, 0, shared, 0, 8)),
        await validationOf(device, () => device.queue.writeBuffer(target, 8, asAny(new Uint32Array(shared)), 3, 1)),
      ];
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(target, 0, readback, 0, 16);
      device.queue.submit([encoder.finish()]);
      await readback.mapAsync(M.READ);
      return { scopes, contents: [...new Uint32Array(readback.getMappedRange())] };
    },
    dawnBreaks: {
      expected: { scopes: [null, null], contents: [5, 6, 8, 0] },
      why: 'dawn.node refuses a SharedArrayBuffer (TypeError) and crashes the Node process (SIGSEGV) on a typed array over one',
    },
  },
  {
    rule: 'writeBuffer to a buffer without COPY_DST, past its end, destroyed, or mapped is a validation error',
    source: 'WebGPU §21.2 (writeBuffer validation); CTS api,validation,queue,writeBuffer:usages, ranges, buffer_state',
    async run(env) {
      const device = await env.device();
      const destroyed = buffer(device, U.COPY_DST);
      destroyed.destroy();
      const data = new Uint8Array(8);
      return {
        noCopyDst: await validationOf(device, () => device.queue.writeBuffer(buffer(device, U.STORAGE), 0, data)),
        pastEnd: await validationOf(device, () => device.queue.writeBuffer(buffer(device, U.COPY_DST), 12, data)),
        destroyed: await validationOf(device, () => device.queue.writeBuffer(destroyed, 0, data)),
        mapped: await validationOf(device, () => device.queue.writeBuffer(buffer(device, U.COPY_DST, 16, true), 0, data)),
      };
    },
  },
  {
    rule: 'submit of a command buffer using a mapped buffer, or submitted before, is a validation error',
    source: 'WebGPU §21.2 (submit validation); CTS api,validation,queue,buffer_mapped and submit',
    async run(env) {
      const device = await env.device();
      const mapped = buffer(device, U.COPY_SRC, 16, true);
      const copy = (source: GPUBuffer) => {
        const encoder = device.createCommandEncoder();
        encoder.copyBufferToBuffer(source, 0, buffer(device, U.COPY_DST), 0, 16);
        return encoder.finish();
      };
      const usesMapped = copy(mapped);
      const twice = copy(buffer(device, U.COPY_SRC));
      return {
        mapped: await validationOf(device, () => device.queue.submit([usesMapped])),
        first: await validationOf(device, () => device.queue.submit([twice])),
        again: await validationOf(device, () => device.queue.submit([twice])),
      };
    },
  },
]);

conformance('error scopes', [
  {
    rule: 'popErrorScope on an empty stack rejects with OperationError',
    source: 'WebGPU §22.2 (popErrorScope); CTS api,validation,error_scope:empty',
    async run(env) {
      const device = await env.device();
      return settled(device.popErrorScope());
    },
  },
  {
    rule: 'an error goes to the innermost scope whose filter matches it',
    source: 'WebGPU §22.2 (error scopes); CTS api,validation,error_scope:simple and parent_scope',
    async run(env) {
      const device = await env.device();
      device.pushErrorScope('validation');
      device.pushErrorScope('out-of-memory');
      device.pushErrorScope('internal');
      device.createBuffer({ size: 16, usage: U.MAP_READ | U.MAP_WRITE });
      const popped = [await device.popErrorScope(), await device.popErrorScope(), await device.popErrorScope()];
      return popped.map((error) => (error ? error.constructor.name : null));
    },
  },
  {
    rule: 'a scope keeps the first error it catches; later ones are dropped',
    source: 'WebGPU §22.2 (error scopes: only the first error); CTS api,validation,error_scope:current_scope',
    async run(env) {
      const device = await env.device();
      device.pushErrorScope('validation');
      device.createBuffer({ label: 'first', size: 16, usage: 0 });
      device.createBuffer({ label: 'second', size: 16, usage: 0 });
      const error = await device.popErrorScope();
      return { type: error?.constructor.name, namesFirst: /first/.test(error?.message ?? ''), namesSecond: /second/.test(error?.message ?? '') };
    },
  },
  {
    rule: "scopes are a device's own: another device's error does not reach them",
    source: 'WebGPU §22.2 (each device has its error scope stack)',
    async run(env) {
      const a = await env.device();
      const b = await env.device();
      a.pushErrorScope('validation');
      b.pushErrorScope('validation');
      b.createBuffer({ size: 16, usage: 0 });
      const [onA, onB] = [await a.popErrorScope(), await b.popErrorScope()];
      return [onA?.constructor.name ?? null, onB?.constructor.name ?? null];
    },
  },
]);

/** A global of the side, as a constructor (undefined when the side lacks it). */
const ctor = (env: { globals: Record<string, unknown> }, name: string) => env.globals[name] as (new (...args: unknown[]) => object) | undefined;

conformance('idl: constants and constructors', [
  {
    rule: 'the flag namespaces have the spec’s members and values (GPUBufferUsage, GPUMapMode, GPUShaderStage, GPUTextureUsage, GPUColorWrite)',
    source: 'WebGPU §5.1.2, §5.2.1, §6.1, §8.1.2, §10.3.2 (flag constants); CTS idl,constants,flags',
    async run(env) {
      const namespaces = ['GPUBufferUsage', 'GPUMapMode', 'GPUShaderStage', 'GPUTextureUsage', 'GPUColorWrite'];
      return Object.fromEntries(
        namespaces.map((name) => {
          const namespace = env.globals[name] as Record<string, unknown> | undefined;
          return [name, namespace ? Object.fromEntries(Object.keys(namespace).sort().map((key) => [key, namespace[key]])) : 'missing'];
        }),
      );
    },
  },
  {
    rule: 'the error classes are constructible: GPUValidationError(message), GPUPipelineError(message, {reason}), GPUUncapturedErrorEvent(type, {error})',
    source: 'WebGPU §22.1 (GPUError constructors), §22.3 (GPUUncapturedErrorEvent); CTS idl,constructable',
    async run(env) {
      const made: Record<string, unknown> = {};
      for (const name of ['GPUValidationError', 'GPUOutOfMemoryError', 'GPUInternalError']) {
        try {
          const ErrorClass = ctor(env, name)!;
          const error = new ErrorClass('this is a test') as GPUError;
          made[name] = { message: error.message, isGPUError: error instanceof (ctor(env, 'GPUError') as typeof GPUError) };
        } catch (error) {
          made[name] = (error as Error).name;
        }
      }
      try {
        const error = new (ctor(env, 'GPUPipelineError')!)(undefined, { reason: 'internal' }) as GPUPipelineError;
        made.GPUPipelineError = { message: error.message, reason: error.reason, name: error.name };
      } catch (error) {
        made.GPUPipelineError = (error as Error).name;
      }
      try {
        const error = new (ctor(env, 'GPUValidationError')!)('e');
        const event = new (ctor(env, 'GPUUncapturedErrorEvent')!)('uncapturederror', { error }) as GPUUncapturedErrorEvent;
        made.GPUUncapturedErrorEvent = { type: event.type, sameError: event.error === error };
      } catch (error) {
        made.GPUUncapturedErrorEvent = (error as Error).name;
      }
      return made;
    },
  },
]);
