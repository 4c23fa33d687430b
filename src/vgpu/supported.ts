// The capability objects a program gets from an adapter or a device: GPUSupportedLimits,
// GPUSupportedFeatures, GPUAdapterInfo and GPUDeviceLostInfo. WebIDL makes each an instance of its
// interface, with its members as getters on the interface's prototype (so Object.keys and spreads
// see nothing). gpunix's globals for these interfaces are Dawn's classes, which script cannot
// construct; gpunix's objects are made from a prototype that inherits Dawn's, with getters of its
// own over a private record: `instanceof` Dawn's class holds, `constructor` and the
// Symbol.toStringTag are Dawn's, and Dawn's native getters (which would reject a non-native
// receiver) are never reached.

import { globals } from 'webgpu';

type Interface = { prototype: object };

const dawnGlobals = globals as Record<string, unknown>;

/** The members Dawn's interface declares (its prototype's accessors and methods, but the constructor). */
function membersOf(name: string): string[] {
  return Object.getOwnPropertyNames((dawnGlobals[name] as Interface).prototype).filter((member) => member !== 'constructor');
}

/** Every limit name WebGPU (as Dawn implements it) defines: GPUSupportedLimits' attributes. */
export const LIMIT_NAMES: readonly string[] = membersOf('GPUSupportedLimits');
const LIMIT_NAME_SET: ReadonlySet<string> = new Set(LIMIT_NAMES);

export function isLimitName(name: string): boolean {
  return LIMIT_NAME_SET.has(name);
}

/** An alignment-class limit ("better" means smaller; values are powers of two); else maximum-class. */
export function isAlignmentLimit(name: string): boolean {
  return name.startsWith('min') && name.endsWith('Alignment');
}

/** The record behind each object made here (never reachable from the program). */
const records = new WeakMap<object, unknown>();

function recordOf<T>(object: unknown, what: string): T {
  const record = records.get(object as object);
  if (record === undefined) throw new TypeError(`Illegal invocation: not a ${what}`);
  return record as T;
}

/** A prototype inheriting Dawn's `name`, with a getter reading `field` of the record for each attribute. */
function attributePrototype(name: string, attributes: readonly string[]): object {
  const descriptors: PropertyDescriptorMap = {};
  for (const attribute of attributes) {
    descriptors[attribute] = {
      configurable: true,
      enumerable: true,
      get(this: unknown) {
        return recordOf<Record<string, unknown>>(this, name)[attribute];
      },
    };
  }
  return Object.create((dawnGlobals[name] as Interface).prototype, descriptors);
}

const LIMITS_PROTOTYPE = attributePrototype('GPUSupportedLimits', LIMIT_NAMES);
const ADAPTER_INFO_PROTOTYPE = attributePrototype('GPUAdapterInfo', membersOf('GPUAdapterInfo'));
const LOST_INFO_PROTOTYPE = attributePrototype('GPUDeviceLostInfo', ['reason', 'message']);

/** A GPUSupportedLimits reporting `values` (every limit name should be there). */
export function supportedLimits(values: Readonly<Record<string, number>>): Readonly<Record<string, number>> {
  const limits = Object.create(LIMITS_PROTOTYPE) as Record<string, number>;
  records.set(limits, Object.freeze({ ...values }));
  // Frozen: the kernel reads its checks' limits through this object, so a program must not be able
  // to shadow a getter with a property of its own.
  return Object.freeze(limits);
}

/** The values of a GPUSupportedLimits made here (or any limits object), as a plain record. */
export function limitValues(limits: Readonly<Record<string, number>>): Record<string, number> {
  const own = records.get(limits);
  if (own) return { ...(own as Record<string, number>) };
  const out: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const value = (limits as Record<string, unknown>)[name];
    if (typeof value === 'number') out[name] = value;
  }
  return out;
}

/** A GPUAdapterInfo with `values` for its attributes. */
export function adapterInfo(values: Readonly<Record<string, unknown>>): GPUAdapterInfo {
  const info = Object.create(ADAPTER_INFO_PROTOTYPE) as GPUAdapterInfo;
  records.set(info, Object.freeze({ ...values }));
  return Object.freeze(info);
}

/** A new GPUAdapterInfo with the same values as `info` (a device's adapterInfo is its own object, WebGPU §4.5). */
export function copyAdapterInfo(info: GPUAdapterInfo): GPUAdapterInfo {
  const own = records.get(info) as Record<string, unknown> | undefined;
  if (own) return adapterInfo(own);
  const values: Record<string, unknown> = {};
  for (const name of membersOf('GPUAdapterInfo')) values[name] = (info as unknown as Record<string, unknown>)[name];
  return adapterInfo(values);
}

/** A GPUDeviceLostInfo. */
export function deviceLostInfo(reason: GPUDeviceLostReason, message: string): GPUDeviceLostInfo {
  const info = Object.create(LOST_INFO_PROTOTYPE) as GPUDeviceLostInfo;
  records.set(info, Object.freeze({ reason, message }));
  return info;
}

// GPUSupportedFeatures is a setlike (WebIDL §3.7.12): size, has, keys, values, entries, forEach
// and iteration, all over the read-only set behind it.
const setOf = (object: unknown): ReadonlySet<string> => recordOf<ReadonlySet<string>>(object, 'GPUSupportedFeatures');
const FEATURES_PROTOTYPE = Object.create((dawnGlobals.GPUSupportedFeatures as Interface).prototype, {
  size: {
    configurable: true,
    enumerable: true,
    get(this: unknown) {
      return setOf(this).size;
    },
  },
  has: {
    configurable: true,
    enumerable: true,
    writable: true,
    value: function has(this: unknown, name: unknown): boolean {
      return setOf(this).has(String(name));
    },
  },
  entries: {
    configurable: true,
    enumerable: true,
    writable: true,
    value: function entries(this: unknown) {
      return setOf(this).entries();
    },
  },
  forEach: {
    configurable: true,
    enumerable: true,
    writable: true,
    value: function forEach(this: unknown, callback: (value: string, key: string, set: unknown) => void, thisArg?: unknown): void {
      if (typeof callback !== 'function') throw new TypeError("Failed to execute 'forEach' on 'GPUSupportedFeatures': The callback provided as parameter 1 is not a function.");
      for (const value of setOf(this)) callback.call(thisArg, value, value, this);
    },
  },
});
// keys, values and @@iterator are one function, as WebIDL's setlike requires.
const valuesFunction = function values(this: unknown) {
  return setOf(this).values();
};
for (const key of ['keys', 'values', Symbol.iterator]) {
  Object.defineProperty(FEATURES_PROTOTYPE, key, { configurable: true, enumerable: typeof key === 'string', writable: true, value: valuesFunction });
}

/** A GPUSupportedFeatures holding `names` (read-only: a setlike has no add or delete). */
export function supportedFeatures(names: Iterable<string>): ReadonlySet<string> {
  const features = Object.create(FEATURES_PROTOTYPE) as ReadonlySet<string>;
  records.set(features, new Set(names));
  // Frozen, as limits are: the kernel asks this object which features a device has.
  return Object.freeze(features);
}
