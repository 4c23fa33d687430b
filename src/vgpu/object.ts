// The base of every virtual WebGPU object a process holds: a kernel record with a label, standing
// in front of a real object that the kernel may replace (eviction, migration) without the program
// noticing. `unwrap` turns a program's argument into what Dawn should see.

import { usvString } from '../webidl.js';

export const REAL = Symbol('gpunix.real');

export abstract class VirtualObject<Real extends object = object> {
  // State lives in private fields, never own properties: a WebGPU object has none (WebIDL: its
  // members are accessors and methods of its interface's prototype; Object.keys is empty).
  #label: string;
  #owner: object | null;
  constructor(label: string | undefined, owner: object | null = null) {
    this.#label = label ?? '';
    this.#owner = owner;
  }
  /**
   * The device that made this object, set once at its creation: only that device may use it
   * (WebGPU's ownership rule), a pointer comparison per use (src/vgpu/foreign.ts). Typed loosely
   * so this base does not import the device; a class whose constructor does not take it has it
   * set by the creating device method, right after construction.
   */
  get owner(): object | null {
    return this.#owner;
  }
  set owner(device: object | null) {
    this.#owner = device;
  }
  get label(): string {
    return this.#label;
  }
  /** WebGPU's `attribute USVString label`: converted as WebIDL says (a Symbol is a TypeError). */
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }
  /** The real object currently behind this record. */
  abstract get [REAL](): Real;
}

/**
 * Makes the own properties a base class's constructor left on `object` non-enumerable: Node's
 * EventTarget keeps its listeners in symbol-keyed own properties of the device, which a spread
 * (`{...device}`) would otherwise copy. Once per object, at construction.
 */
export function hideOwnSlots(object: object): void {
  for (const key of Reflect.ownKeys(object)) {
    const descriptor = Object.getOwnPropertyDescriptor(object, key)!;
    if (descriptor.enumerable) Object.defineProperty(object, key, { enumerable: false });
  }
}

/**
 * What Dawn should be given for an argument already converted (src/webidl.ts) and owned
 * (src/vgpu/foreign.ts): the real object behind a virtual one, anything else unchanged.
 */
export function unwrap<T>(value: T): T {
  return value instanceof VirtualObject ? (value[REAL] as T) : value;
}

/**
 * A virtual object whose real object the kernel can make afresh on another device from the
 * record it keeps (migration). Phases order the rebuild: what an object is made from comes first.
 */
export interface Rebuildable {
  /** A promise when the object is made asynchronously (a pipeline): what depends on it waits. */
  rebuild(physical: import('../device/physicalDevice.js').PhysicalDevice): void | Promise<void>;
}

/** Rebuild order: modules, explicit layouts, pipeline layouts, pipelines, derived layouts, bind groups. */
export const REBUILD_PHASES = ['shaderModule', 'bindGroupLayout', 'pipelineLayout', 'computePipeline', 'derivedLayout', 'bindGroup', 'querySet'] as const;
export type RebuildPhase = (typeof REBUILD_PHASES)[number];
