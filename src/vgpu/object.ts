// The base of every virtual WebGPU object a process holds: a kernel record with a label, standing
// in front of a real object that the kernel may replace (eviction, migration) without the program
// noticing. `unwrap` turns a program's argument into what Dawn should see.

export const REAL = Symbol('gpunix.real');

export abstract class VirtualObject<Real extends object = object> {
  label: string;
  constructor(label: string | undefined) {
    this.label = label ?? '';
  }
  /** The real object currently behind this record. */
  abstract get [REAL](): Real;
}

/**
 * What Dawn should be given for a program's argument: the real object behind a virtual one, and
 * anything else unchanged, so Dawn raises its own TypeError for foreign objects and garbage.
 */
export function unwrap<T>(value: T): T {
  return value instanceof VirtualObject ? (value[REAL] as T) : value;
}

/**
 * A virtual object whose real object the kernel can make afresh on another device from the
 * record it keeps (migration). Phases order the rebuild: what an object is made from comes first.
 */
export interface Rebuildable {
  rebuild(physical: import('../device/physicalDevice.js').PhysicalDevice): void;
}

/** Rebuild order: modules, explicit layouts, pipeline layouts, pipelines, derived layouts, bind groups. */
export const REBUILD_PHASES = ['shaderModule', 'bindGroupLayout', 'pipelineLayout', 'computePipeline', 'derivedLayout', 'bindGroup', 'querySet'] as const;
export type RebuildPhase = (typeof REBUILD_PHASES)[number];
