// requestAdapter and requestDevice as the WebGPU spec says (§4.3 GPU, §4.4 GPUAdapter, §3.6
// limits and features): what an adapter and a device report, how requiredLimits and
// requiredFeatures are checked, how an adapter is consumed, featureLevel, and the classes of the
// info objects. Each scenario is one rule, observed on bare Dawn and on a gpunix process.

import { conformance, Env, settled, thrown, validationOf } from './harness.js';

async function adapterOf(env: Env, options?: GPURequestAdapterOptions): Promise<GPUAdapter> {
  const adapter = await env.gpu.requestAdapter(options);
  if (!adapter) throw new Error(`${env.side}: no adapter`);
  return adapter;
}

/** The limit names and values an object reports, as a program enumerates them (for...in). */
function limitsOf(limits: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name in limits) {
    const value = (limits as unknown as Record<string, unknown>)[name];
    if (typeof value === 'number') out[name] = value;
  }
  return out;
}

conformance('requestAdapter and requestDevice', [
  {
    rule: 'a device reports every limit, each at its default when none is requested',
    source: 'WebGPU §3.6.2 (limits), §4.4 requestDevice; CTS api,operation,adapter,requestDevice:default',
    async run(env) {
      const device = await env.device();
      const limits = limitsOf(device.limits);
      device.destroy();
      return limits;
    },
  },
  {
    rule: 'an adapter reports every limit a device has',
    source: 'WebGPU §4.4 GPUAdapter.limits; CTS api,operation,adapter,requestDevice:limits,supported',
    async run(env) {
      const adapter = await adapterOf(env);
      const device = await adapter.requestDevice();
      const missing = Object.keys(limitsOf(device.limits)).filter((name) => typeof (adapter.limits as unknown as Record<string, unknown>)[name] !== 'number');
      device.destroy();
      return missing;
    },
  },
  {
    rule: "requiredLimits at the adapter's values give a device with exactly those limits",
    source: 'WebGPU §4.4 requestDevice, "a new device"; CTS api,operation,adapter,requestDevice:limits,supported',
    async run(env) {
      const adapter = await adapterOf(env);
      const wanted = limitsOf(adapter.limits);
      const device = await adapter.requestDevice({ requiredLimits: wanted });
      const got = limitsOf(device.limits);
      device.destroy();
      return Object.keys(wanted).filter((name) => got[name] !== wanted[name]);
    },
  },
  {
    rule: 'a required storage limit for one stage raises maxStorage*PerShaderStage to match',
    source: 'WebGPU "a new device" (max of per-stage and in-stage limits); CTS requestDevice:limits,supported',
    async run(env) {
      const adapter = await adapterOf(env);
      const fragment = adapter.limits.maxStorageBuffersInFragmentStage;
      const device = await adapter.requestDevice({ requiredLimits: { maxStorageBuffersInFragmentStage: fragment } });
      const seen = [device.limits.maxStorageBuffersInFragmentStage, device.limits.maxStorageBuffersPerShaderStage, device.limits.maxStorageBuffersInVertexStage];
      device.destroy();
      return seen.map((v) => v === fragment);
    },
  },
  {
    rule: 'requiredLimits entries that are undefined are ignored, even under unknown names',
    source: 'WebGPU §4.4 requestDevice; CTS requestDevice:limits,unknown, limits,supported (undefined)',
    async run(env) {
      const adapter = await adapterOf(env);
      const device = await adapter.requestDevice({ requiredLimits: { maxBindGroups: undefined, unknownLimitName: undefined } as unknown as Record<string, number> });
      const seen = device.limits.maxBindGroups;
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'an unknown limit name rejects with OperationError and leaves the adapter usable',
    source: 'WebGPU §4.4 requestDevice; CTS requestDevice:limits,unknown',
    async run(env) {
      const adapter = await adapterOf(env);
      const first = await settled(adapter.requestDevice({ requiredLimits: { unknownLimitName: 9000 } }));
      const device = adapter.requestDevice();
      const second = await settled(device);
      (await device).destroy();
      return [first, second];
    },
  },
  {
    rule: 'a limit better than the adapter supports rejects with OperationError (maximum: larger; alignment: smaller)',
    source: 'WebGPU §3.6.2 (better), §4.4 requestDevice; CTS requestDevice:limit,better_than_supported',
    async run(env) {
      const out: string[] = [];
      for (const [name, value] of [
        ['maxBindGroups', (a: GPUAdapter) => a.limits.maxBindGroups + 1],
        ['maxBufferSize', (a: GPUAdapter) => a.limits.maxBufferSize + 100],
        ['minUniformBufferOffsetAlignment', (a: GPUAdapter) => a.limits.minUniformBufferOffsetAlignment / 2],
        ['minStorageBufferOffsetAlignment', (a: GPUAdapter) => Math.max(1, a.limits.minStorageBufferOffsetAlignment / 1024)],
      ] as const) {
        const adapter = await adapterOf(env);
        out.push(`${name}: ${await settled(adapter.requestDevice({ requiredLimits: { [name]: value(adapter) } }))}`);
      }
      return out;
    },
  },
  {
    rule: 'a limit worse than the default gives the default (an alignment must still be a power of two)',
    source: 'WebGPU "a new device"; CTS requestDevice:limit,worse_than_default',
    async run(env) {
      const out: Array<string | number> = [];
      for (const [name, value] of [
        ['maxBindGroups', 3],
        ['maxComputeWorkgroupSizeX', 1],
        ['maxStorageBuffersInFragmentStage', 0],
        ['minUniformBufferOffsetAlignment', 512],
        ['minStorageBufferOffsetAlignment', 256 * 1024],
        ['minStorageBufferOffsetAlignment', 257],
      ] as const) {
        const adapter = await adapterOf(env);
        try {
          const device = await adapter.requestDevice({ requiredLimits: { [name]: value } });
          out.push((device.limits as unknown as Record<string, number>)[name]);
          device.destroy();
        } catch (error) {
          out.push(`${name}: ${(error as Error).name}`);
        }
      }
      return out;
    },
  },
  {
    rule: 'an alignment limit must be a power of two below 2^32, else OperationError',
    source: 'WebGPU §4.4 requestDevice; CTS requestDevice:limit,out_of_range, stale (OperationError)',
    async run(env) {
      const out: string[] = [];
      for (const value of [255, 2 ** 31 + 1, 2 ** 32, 2 ** 33]) {
        const adapter = await adapterOf(env);
        const outcome = await settled(adapter.requestDevice({ requiredLimits: { minUniformBufferOffsetAlignment: value } }).then((d) => d.destroy()));
        out.push(`${value}: ${outcome}`);
      }
      return out;
    },
  },
  {
    rule: 'a limit value out of the range of its IDL type rejects with TypeError',
    source: 'WebIDL [EnforceRange] GPUSize64; CTS requestDevice:limit,out_of_range',
    async run(env) {
      const out: string[] = [];
      for (const value of [-1, Number.MAX_SAFE_INTEGER + 1, 2 ** 64, Number.MAX_VALUE]) {
        const adapter = await adapterOf(env);
        out.push(`${value}: ${await settled(adapter.requestDevice({ requiredLimits: { maxBindGroups: value } }).then((d) => d.destroy()))}`);
      }
      return out;
    },
  },
  {
    rule: 'a maximum limit above the adapter but within its type rejects with OperationError',
    source: 'WebGPU §4.4 requestDevice; CTS requestDevice:limit,out_of_range',
    async run(env) {
      const out: string[] = [];
      for (const value of [2 ** 32 - 2, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER]) {
        const adapter = await adapterOf(env);
        out.push(`${value}: ${await settled(adapter.requestDevice({ requiredLimits: { maxComputeWorkgroupSizeX: value } }).then((d) => d.destroy()))}`);
      }
      return out;
    },
  },
  {
    rule: 'an unknown or unsupported required feature rejects with TypeError',
    source: 'WebGPU §4.4 requestDevice; CTS requestDevice:features,unknown, features,known',
    async run(env) {
      const adapter = await adapterOf(env);
      const unknown = await settled(adapter.requestDevice({ requiredFeatures: ['unknown-feature' as GPUFeatureName] }));
      // A feature the spec names that lavapipe's adapter lacks.
      const unsupported = adapter.features.has('texture-compression-astc') ? 'supported' : await settled(adapter.requestDevice({ requiredFeatures: ['texture-compression-astc'] }));
      return [unknown, unsupported];
    },
  },
  {
    rule: 'a default device has only the default feature; a required feature is enabled with what it requires',
    source: 'WebGPU "a new device", §3.6.1 feature dependencies; CTS requestDevice:default, features,known',
    async run(env) {
      const plain = await env.device();
      const base = [...plain.features].sort();
      plain.destroy();
      const adapter = await adapterOf(env);
      const wanted = (['timestamp-query', 'subgroup-size-control', 'shader-f16'] as GPUFeatureName[]).filter((f) => adapter.features.has(f));
      const device = await adapter.requestDevice({ requiredFeatures: wanted });
      const features = [...device.features].sort();
      device.destroy();
      return { base, wanted, features };
    },
  },
  {
    rule: 'an adapter offers the same features as bare Dawn, core-features-and-limits among them',
    source: 'WebGPU §4.4 GPUAdapter.features, "core" feature level',
    async run(env) {
      return [...(await adapterOf(env)).features].sort();
    },
  },
  {
    rule: 'an adapter is consumed by one requestDevice: another rejects with OperationError, after a failed one it does not',
    source: 'WebGPU §4.4 requestDevice (adapter [[state]] "consumed"); CTS requestDevice:stale',
    async run(env) {
      const adapter = await adapterOf(env);
      const failed = await settled(adapter.requestDevice({ requiredFeatures: ['unknown-feature' as GPUFeatureName] }));
      const failedLimit = await settled(adapter.requestDevice({ requiredLimits: { minUniformBufferOffsetAlignment: 255 } }));
      const devicePromise = adapter.requestDevice();
      // Made before the first one resolves: the adapter is consumed already.
      const concurrent = settled(adapter.requestDevice());
      const first = await settled(devicePromise);
      const after = await settled(adapter.requestDevice());
      (await devicePromise).destroy();
      const afterDestroy = await settled(adapter.requestDevice());
      return { failed, failedLimit, first, concurrent: await concurrent, after, afterDestroy };
    },
  },
  {
    rule: 'on a consumed adapter, an unsupported feature still rejects with TypeError (features are checked first)',
    source: 'WebGPU §4.4 requestDevice (feature check precedes the [[state]] check)',
    async run(env) {
      const adapter = await adapterOf(env);
      (await adapter.requestDevice()).destroy();
      return settled(adapter.requestDevice({ requiredFeatures: ['unknown-feature' as GPUFeatureName] }));
    },
  },
  {
    rule: 'requestDevice with no descriptor, undefined, {} or empty requirements gives a default device',
    source: 'WebGPU §4.4 requestDevice (GPUDeviceDescriptor defaults); CTS requestDevice:default',
    async run(env) {
      const out: string[][] = [];
      for (const args of [[], [undefined], [{}], [{ requiredFeatures: [], requiredLimits: {} }]] as Array<[GPUDeviceDescriptor?]>) {
        const device = await (await adapterOf(env)).requestDevice(...args);
        out.push([...device.features].sort());
        device.destroy();
      }
      return out;
    },
  },
  {
    rule: 'requestAdapter options: power preferences and forceFallbackAdapter give an adapter (here, the CPU one); an unknown preference is a TypeError',
    source: 'WebGPU §4.3 requestAdapter, GPURequestAdapterOptions; CTS api,operation,adapter,requestAdapter',
    async run(env) {
      const out: Record<string, unknown> = {};
      for (const options of [undefined, {}, { powerPreference: 'low-power' }, { powerPreference: 'high-performance' }, { forceFallbackAdapter: true }, { xrCompatible: false }] as Array<GPURequestAdapterOptions | undefined>) {
        const adapter = await env.gpu.requestAdapter(options);
        out[JSON.stringify(options) ?? 'undefined'] = adapter === null ? null : (adapter.info as GPUAdapterInfo & { isFallbackAdapter: boolean }).isFallbackAdapter;
      }
      out.badPreference = await settled(env.gpu.requestAdapter({ powerPreference: 'fastest' as GPUPowerPreference }));
      return out;
    },
  },
  {
    rule: 'requestAdapter featureLevel: "core" and "compatibility" give an adapter, anything else null',
    source: 'WebGPU §4.3 requestAdapter, GPURequestAdapterOptions.featureLevel',
    async run(env) {
      const out: Record<string, unknown> = {};
      for (const featureLevel of ['core', 'compatibility', 'garbage', '']) {
        const adapter = await env.gpu.requestAdapter({ featureLevel } as GPURequestAdapterOptions);
        out[featureLevel || '(empty)'] = adapter === null ? null : adapter.features.has('core-features-and-limits');
      }
      return out;
    },
  },
  {
    rule: 'a "compatibility" adapter gives a core device (core-features-and-limits, core limits) or a compatibility one (neither)',
    source: 'WebGPU GPURequestAdapterOptions.featureLevel ("compatibility" may be taken as "core"), "a new device"',
    async run(env) {
      const adapter = await adapterOf(env, { featureLevel: 'compatibility' } as GPURequestAdapterOptions);
      const device = await adapter.requestDevice();
      const core = device.features.has('core-features-and-limits');
      // The core default of maxStorageBuffersInFragmentStage is 8, compatibility mode's is 4.
      const consistent = core === (device.limits.maxStorageBuffersInFragmentStage ?? 0) >= 8;
      device.destroy();
      // Asking for core-features-and-limits gives a core device either way.
      const again = await (await adapterOf(env, { featureLevel: 'compatibility' } as GPURequestAdapterOptions)).requestDevice({ requiredFeatures: ['core-features-and-limits'] });
      const coreOnRequest = again.features.has('core-features-and-limits') && (again.limits.maxStorageBuffersInFragmentStage ?? 0) >= 8;
      again.destroy();
      return { consistent, coreOnRequest };
    },
  },
  {
    rule: 'adapter.info and device.adapterInfo are each the same object each time, not one another, and match member by member',
    source: 'WebGPU §4.4 GPUAdapter.info [SameObject], GPUDevice.adapterInfo; CTS api,operation,adapter,info:same_object, device_matches_adapter',
    async run(env) {
      const adapter = await adapterOf(env);
      const info = adapter.info;
      const device = await adapter.requestDevice();
      const members = Object.getOwnPropertyNames((env.globals.GPUAdapterInfo as { prototype: object }).prototype).filter((n) => n !== 'constructor');
      const mismatched = members.filter((name) => (info as unknown as Record<string, unknown>)[name] !== (device.adapterInfo as unknown as Record<string, unknown>)[name]);
      const seen = { sameObject: adapter.info === info, deviceSameObject: device.adapterInfo === device.adapterInfo, deviceOwnObject: device.adapterInfo !== info, mismatched };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'adapter info members: vendor, architecture, device, description are strings; fallback and subgroup sizes present',
    source: 'WebGPU §4.2 GPUAdapterInfo; CTS api,operation,adapter,info:adapter_info',
    async run(env) {
      const info = (await adapterOf(env)).info as GPUAdapterInfo & { isFallbackAdapter: boolean };
      return {
        vendor: typeof info.vendor,
        architecture: typeof info.architecture,
        device: typeof info.device,
        description: typeof info.description,
        subgroupMinSize: info.subgroupMinSize,
        subgroupMaxSize: info.subgroupMaxSize,
        isFallbackAdapter: info.isFallbackAdapter,
      };
    },
  },
  {
    rule: 'limits, features and adapter info are instances of GPUSupportedLimits, GPUSupportedFeatures, GPUAdapterInfo',
    source: 'WebIDL interface objects; WebGPU §3.6, §4.2; CTS idl',
    async run(env) {
      const g = env.globals as Record<string, new () => unknown>;
      const adapter = await adapterOf(env);
      const device = await adapter.requestDevice();
      const seen = {
        adapterLimits: adapter.limits instanceof g.GPUSupportedLimits,
        deviceLimits: device.limits instanceof g.GPUSupportedLimits,
        adapterFeatures: adapter.features instanceof g.GPUSupportedFeatures,
        deviceFeatures: device.features instanceof g.GPUSupportedFeatures,
        adapterInfo: adapter.info instanceof g.GPUAdapterInfo,
        deviceAdapterInfo: device.adapterInfo instanceof g.GPUAdapterInfo,
        tags: [adapter.limits, adapter.features, adapter.info].map((o) => Object.prototype.toString.call(o)),
      };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'limits and adapter info have no own enumerable members (they are prototype attributes)',
    source: 'WebIDL §3.7.6 (attributes are accessor properties on the interface prototype); CTS idl',
    async run(env) {
      const adapter = await adapterOf(env);
      const device = await adapter.requestDevice();
      const seen = { adapterLimits: Object.keys(adapter.limits), deviceLimits: Object.keys(device.limits), spreadLimits: Object.keys({ ...device.limits }) };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'GPUSupportedFeatures is a setlike: size, has, keys, values, entries, forEach and iteration',
    source: 'WebIDL §3.7.12 setlike declarations; WebGPU §3.6.1 GPUSupportedFeatures',
    dawnBreaks: {
      expected: { size: true, has: true, keys: true, values: true, entries: true, forEach: true, iterator: true },
      why: 'no values, entries or forEach',
    },
    async run(env) {
      const features = (await adapterOf(env)).features as unknown as Record<string | symbol, unknown> & ReadonlySet<string>;
      const list = [...features];
      const fn = (name: string | symbol) => typeof features[name] === 'function';
      return {
        size: features.size === list.length,
        has: fn('has') && features.has(list[0]) && !features.has('no-such-feature'),
        keys: fn('keys') && [...features.keys()].length === list.length,
        values: fn('values') && [...features.values()].length === list.length,
        entries: fn('entries') && [...features.entries()].every(([a, b]) => a === b),
        forEach: fn('forEach'),
        iterator: fn(Symbol.iterator),
      };
    },
  },
  {
    rule: 'createQuerySet of type "timestamp" without the timestamp-query feature throws TypeError',
    source: 'WebGPU §20.2 createQuerySet; CTS api,validation,query_set,create',
    async run(env) {
      const device = await env.device();
      const error = await validationOf(device, () => device.createQuerySet({ type: 'timestamp', count: 2 }));
      device.destroy();
      return error;
    },
  },
  {
    rule: 'timestampWrites without the timestamp-query feature is a validation error',
    source: 'WebGPU "Validate timestampWrites"; CTS api,validation,capability_checks,features,query_type',
    async run(env) {
      const device = await env.device();
      const querySet = device.createQuerySet({ type: 'occlusion', count: 2 });
      const error = await validationOf(device, () => {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 0 } });
        pass.end();
        encoder.finish();
      });
      device.destroy();
      return error;
    },
  },
  {
    rule: 'with timestamp-query, a timestamp query set is made and usable in timestampWrites',
    source: 'WebGPU §20.2 createQuerySet, "Validate timestampWrites"',
    async run(env) {
      const adapter = await adapterOf(env);
      if (!adapter.features.has('timestamp-query')) return 'no timestamp-query';
      const device = await adapter.requestDevice({ requiredFeatures: ['timestamp-query'] });
      let querySet: GPUQuerySet | null = null;
      const creation = await validationOf(device, () => (querySet = device.createQuerySet({ type: 'timestamp', count: 2 })));
      const use = await validationOf(device, () => {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass({ timestampWrites: { querySet: querySet!, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
        pass.end();
        device.queue.submit([encoder.finish()]);
      });
      const seen = { creation, use, type: (querySet as GPUQuerySet | null)?.type, count: (querySet as GPUQuerySet | null)?.count };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'device limits cannot be assigned',
    source: 'WebIDL readonly attributes (no setter: a strict-mode assignment throws TypeError)',
    async run(env) {
      const device = await env.device();
      const before = device.limits.maxBindGroups;
      const threw = thrown(() => {
        (device.limits as unknown as Record<string, number>).maxBindGroups = 1;
      });
      const seen = { threw, unchanged: device.limits.maxBindGroups === before };
      device.destroy();
      return seen;
    },
  },
]);
