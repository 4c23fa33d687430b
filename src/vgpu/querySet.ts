// A process's query set (timestamps), in front of its own real query set.

import type { VirtualDevice } from './device.js';
import { offDeviceItem } from '../kernel/dispatch.js';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import { REAL, Rebuildable, VirtualObject } from './object.js';

export class VirtualQuerySet extends VirtualObject<GPUQuerySet> implements Rebuildable {
  // Private fields behind prototype accessors: a GPUQuerySet has no own properties (WebIDL).
  #type: GPUQueryType;
  #count: number;
  #ledgerToken: object | null = null;
  #destroyed = false;
  #device: VirtualDevice;
  #real: GPUQuerySet;
  get type(): GPUQueryType {
    return this.#type;
  }
  get count(): number {
    return this.#count;
  }
  get ledgerToken(): object | null {
    return this.#ledgerToken;
  }
  set ledgerToken(token: object | null) {
    this.#ledgerToken = token;
  }

  constructor(device: VirtualDevice, real: GPUQuerySet, descriptor: GPUQuerySetDescriptor) {
    super(descriptor.label, device);
    this.#device = device;
    this.#real = real;
    this.#type = real.type;
    this.#count = real.count;
  }
  get [REAL](): GPUQuerySet {
    return this.#real;
  }
  /** Migration: a new query set of the same type and count (query results are not carried). */
  rebuild(physical: PhysicalDevice): void {
    if (this.#destroyed) return;
    const old = this.#real;
    this.#real = physical.capture(() => physical.device.createQuerySet({ type: this.type, count: this.count, label: this.label })).value;
    old.destroy();
  }

  get isDestroyed(): boolean {
    return this.#destroyed;
  }
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const token = this.ledgerToken;
    this.ledgerToken = null;
    const proc = this.#device.proc;
    const release = (): undefined => {
      if (token) proc.ledger.release(token, true);
      else this.#real.destroy();
    };
    this.#device.dispatcher.enqueue(offDeviceItem(proc, release, release));
  }
}
