// A process's bind group: which of its buffers it binds where, in front of the real bind group.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { VirtualBuffer } from './buffer.js';
import { factsOfLayout, invalidReal } from './limits.js';
import { REAL, Rebuildable, unwrap, VirtualObject } from './object.js';
import type { PassCommand } from './commandBuffer.js';

/** What Dawn should be given for a bind group's entries: the real objects behind the virtual ones. */
export function realEntries(entries: Iterable<GPUBindGroupEntry>): GPUBindGroupEntry[] {
  return [...entries].map((entry) => {
    const resource = entry.resource as unknown;
    if (resource && typeof resource === 'object' && 'buffer' in resource) {
      const binding = resource as GPUBufferBinding;
      return { ...entry, resource: { ...binding, buffer: unwrap(binding.buffer) } };
    }
    if (resource === undefined || resource === null) {
      // Absent, not undefined: dawn.node aborts the Node process on an explicit undefined/null
      // dictionary member, where an absent one is a TypeError for this caller alone.
      const { resource: _absent, ...rest } = entry;
      return rest as GPUBindGroupEntry;
    }
    return { ...entry, resource: unwrap(resource) as GPUBindingResource };
  });
}

/** The buffers a bind group binds. */
function boundBuffers(entries: readonly GPUBindGroupEntry[]): VirtualBuffer[] {
  const found: VirtualBuffer[] = [];
  for (const entry of entries) {
    const resource = entry.resource as unknown;
    const buffer = resource && typeof resource === 'object' && 'buffer' in resource ? (resource as GPUBufferBinding).buffer : resource;
    if (buffer instanceof VirtualBuffer) found.push(buffer);
  }
  return found;
}

/** The virtual objects a bind group's entries name (a buffer binding's buffer, or the resource), each once. */
function boundObjects(entries: readonly GPUBindGroupEntry[]): VirtualObject[] {
  const found: VirtualObject[] = [];
  for (const entry of entries) {
    const resource = entry.resource as unknown;
    const object = resource && typeof resource === 'object' && 'buffer' in resource ? (resource as GPUBufferBinding).buffer : resource;
    if (object instanceof VirtualObject && !found.includes(object)) found.push(object);
  }
  return found;
}

export class VirtualBindGroup extends VirtualObject<GPUBindGroup> implements Rebuildable {
  // Private fields behind prototype accessors: a GPUBindGroup has no own properties (WebIDL).
  #descriptor: GPUBindGroupDescriptor & { entries: GPUBindGroupEntry[] };
  #buffers: VirtualBuffer[];
  #generations: number[];
  #twins: WeakMap<GPUBindGroupLayout, GPUBindGroup> | null = null;
  #physical: PhysicalDevice;
  #real: GPUBindGroup;
  #refused = false;
  /** Refused at the process's limits (limits.ts): invalid for good, whatever its buffers do. */
  get refused(): boolean {
    return this.#refused;
  }
  set refused(value: boolean) {
    this.#refused = value;
  }
  /** The virtual objects its entries bind (buffers), found once: a submit's resource check reads them per use. */
  get resources(): readonly VirtualObject[] {
    return this.#resources;
  }
  #resources: VirtualObject[];
  /** The program's descriptor, with virtual objects (entries copied once): what a re-creation binds. */
  get descriptor(): GPUBindGroupDescriptor & { entries: GPUBindGroupEntry[] } {
    return this.#descriptor;
  }
  /** The bound buffers' residency generations when `real` was made. */

  constructor(physical: PhysicalDevice, real: GPUBindGroup, descriptor: GPUBindGroupDescriptor & { entries: GPUBindGroupEntry[] }, owner: object) {
    super(descriptor.label, owner);
    this.#physical = physical;
    this.#real = real;
    this.#descriptor = descriptor;
    this.#buffers = boundBuffers(descriptor.entries);
    this.#generations = this.#buffers.map((b) => b.residency.generation);
    this.#resources = boundObjects(descriptor.entries);
  }

  #passRecord: PassCommand | null = null;
  /**
   * The record of setBindGroup(index, this) without dynamic offsets in a compute pass: the last
   * one made is kept and shared (a program binds a group at the same index pass after pass;
   * records are never changed once made, and frozen so that none can be).
   */
  passRecord(index: number): PassCommand {
    const last = this.#passRecord;
    if (last !== null && last.args[0] === index) return last;
    this.#passRecord = Object.freeze({ op: 'setBindGroup', args: Object.freeze([index, this]) as unknown[] }) as PassCommand;
    return this.#passRecord;
  }

  /**
   * The buffers work using this bind group may write: those bound as read-write storage by its
   * layout (a layout whose facts are unknown: every buffer). Found once.
   */
  writtenBuffers(): readonly VirtualBuffer[] {
    if (this.#written) return this.#written;
    const layout = this.descriptor.layout as unknown;
    const facts = layout && typeof layout === 'object' && 'source' in layout ? factsOfLayout(layout as Parameters<typeof factsOfLayout>[0]) : null;
    const written: VirtualBuffer[] = [];
    for (const entry of this.descriptor.entries) {
      const resource = entry.resource as unknown;
      const buffer = resource && typeof resource === 'object' && 'buffer' in resource ? (resource as GPUBufferBinding).buffer : resource;
      if (!(buffer instanceof VirtualBuffer)) continue;
      if (facts === null || facts.buffers.get(Number(entry.binding)) === 'storage') written.push(buffer);
    }
    this.#written = written;
    return written;
  }
  #written: VirtualBuffer[] | null = null;

  /** The real bind group, made afresh when a bound buffer's real buffer was replaced (evicted, restored). */
  get [REAL](): GPUBindGroup {
    if (this.refused) return this.#real;
    if (this.#moved()) {
      const entries = realEntries(this.descriptor.entries); // brings evicted buffers back
      this.#real = this.#physical.capture(() =>
        this.#physical.device.createBindGroup({ ...this.descriptor, layout: unwrap(this.descriptor.layout), entries }),
      ).value;
      this.#generations = this.#buffers.map((b) => b.residency.generation);
      this.#twins = null;
    }
    return this.#real;
  }

  /** True when a bound buffer's real buffer was replaced since the real bind group was made. */
  #moved(): boolean {
    const buffers = this.#buffers;
    for (let i = 0; i < buffers.length; i++) if (buffers[i].residency.generation !== this.#generations[i]) return true;
    return false;
  }

  /** Migration: made afresh (on first use) on `physical`, from the program's descriptor. */
  rebuild(physical: PhysicalDevice): void {
    this.#physical = physical;
    this.#generations = this.#generations.map(() => -1);
    if (this.refused) {
      this.#real = invalidReal.bindGroup(physical, this.label);
    } else if (this.#buffers.length === 0) {
      this.#real = physical.capture(() =>
        physical.device.createBindGroup({ ...this.descriptor, layout: unwrap(this.descriptor.layout), entries: realEntries(this.descriptor.entries) }),
      ).value;
    }
    this.#twins = null;
  }

  /** The same resources bound for another (kernel-made) layout: an atomized twin's 'auto' layout. */
  twinFor(layout: GPUBindGroupLayout): GPUBindGroup {
    if (this.refused) return this.#real;
    this[REAL]; // refreshes after a buffer moved, dropping stale twins
    this.#twins ??= new WeakMap();
    let twin = this.#twins.get(layout);
    if (!twin) {
      const entries = realEntries(this.descriptor.entries);
      twin = this.#physical.capture(() => this.#physical.device.createBindGroup({ layout, entries })).value;
      this.#twins.set(layout, twin);
    }
    return twin;
  }
}
