// Ownership of a process's objects. Every virtual object knows the VirtualDevice that made it
// (VirtualObject.owner, set at creation); every object argument of a device, queue, encoder or
// pass is taken through DeviceObjects.object, which checks its interface (TypeError) and, when it
// belongs to another device (another process's, or another device of the same process), puts a
// ForeignStandIn in its place: an invalid object of the calling device whose label describes the
// foreign one (src/foreignObject.ts). Dawn then refuses the call exactly as it refuses another
// device's object — a validation error in the scope current at the call, an encoder that fails
// at finish(), a submit refused whole — and the device's error routing words the error as Dawn
// does for two devices. The foreign object itself never reaches Dawn, and nothing made from the
// stand-in ever names it again (rebuilds and re-encodings use the stand-in), so no process can
// read or write another's memory through it. The check is one pointer comparison per argument.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { DAWN_KIND_NAMES, describeDevice, describeObject, foreignMarkerLabel, rewriteForeignMessage } from '../foreignObject.js';
import { InterfaceName, notOfInterface, ObjectConverter } from '../webidl.js';
import { VirtualBindGroup } from './bindGroup.js';
import { VirtualBuffer } from './buffer.js';
import { VirtualCommandBuffer } from './commandBuffer.js';
import { VirtualComputePipeline } from './computePipeline.js';
import type { VirtualDevice } from './device.js';
import { VirtualBindGroupLayout, VirtualPipelineLayout } from './layouts.js';
import { REAL, VirtualObject } from './object.js';
import { VirtualQuerySet } from './querySet.js';
import { VirtualShaderModule } from './shaderModule.js';
import { GPUPipelineErrorClass } from './webgpuGlobals.js';

type Constructor = abstract new (...args: never[]) => VirtualObject;

/** The virtual class of each interface an argument can name. */
const CLASSES: Readonly<Record<InterfaceName, Constructor>> = {
  GPUBuffer: VirtualBuffer,
  GPUShaderModule: VirtualShaderModule,
  GPUComputePipeline: VirtualComputePipeline,
  GPUBindGroupLayout: VirtualBindGroupLayout,
  GPUPipelineLayout: VirtualPipelineLayout,
  GPUBindGroup: VirtualBindGroup,
  GPUQuerySet: VirtualQuerySet,
  GPUCommandBuffer: VirtualCommandBuffer,
};


/** A device's way to take object arguments (webidl.ts converts everything else). One per device. */
export class DeviceObjects implements ObjectConverter {
  constructor(private readonly device: VirtualDevice) {}

  implements(name: InterfaceName, value: unknown): boolean {
    return value instanceof CLASSES[name];
  }

  /** `value` if it is a `name` of this device; a stand-in if of another device; else TypeError. */
  object(name: InterfaceName, value: unknown, method: string, what: string): unknown {
    if (!(value instanceof CLASSES[name])) throw notOfInterface(method, what);
    if ((value as VirtualObject).owner === this.device) return value;
    return new ForeignStandIn(name, describeForeign(name, value as VirtualObject), this.device);
  }
}

/** The marker label for `object` (of interface `name`, owned by another device). */
function describeForeign(name: InterfaceName, object: VirtualObject): string {
  const owner = object.owner as VirtualDevice;
  const description =
    object instanceof VirtualCommandBuffer ? object.description : describeObject(DAWN_KIND_NAMES[name], object.label);
  return foreignMarkerLabel(description, describeDevice(owner.label));
}

/**
 * What the calling device uses in place of another device's object: an invalid real object of
 * the same kind, labelled with the foreign object's description, made on whichever real device
 * the caller stands on now (made afresh after a migration). It holds no reference to the foreign object.
 */
export class ForeignStandIn extends VirtualObject<object> {
  private real: object | null = null;
  private madeOn: PhysicalDevice | null = null;

  constructor(
    readonly kind: InterfaceName,
    private readonly marker: string,
    owner: VirtualDevice,
  ) {
    super('', owner);
  }

  get [REAL](): object {
    const physical = (this.owner as VirtualDevice).physical;
    if (this.madeOn !== physical || this.real === null) {
      this.real = invalidObject(physical, this.kind, this.marker);
      this.madeOn = physical;
    }
    return this.real;
  }
}

const MAP_READ = 0x0001;
const STORAGE = 0x0080;
const COPY_SRC = 0x0004;

/** Helpers an invalid object is made from, once per real device. */
const helpers = new WeakMap<PhysicalDevice, { layout: GPUBindGroupLayout; module: GPUShaderModule }>();

function helpersOf(physical: PhysicalDevice): { layout: GPUBindGroupLayout; module: GPUShaderModule } {
  let found = helpers.get(physical);
  if (!found) {
    const device = physical.device;
    found = physical.capture(() => ({
      // Two entries with one binding number: refused by every implementation.
      layout: device.createBindGroupLayout({
        label: 'gpunix: invalid layout',
        entries: [
          { binding: 0, visibility: 4, buffer: {} },
          { binding: 0, visibility: 4, buffer: {} },
        ],
      }),
      module: device.createShaderModule({ label: 'gpunix: invalid module', code: '!' }),
    })).value;
    helpers.set(physical, found);
  }
  return found;
}

/** An invalid real object of `kind` labelled `label`, made on `physical` with its errors dropped. */
function invalidObject(physical: PhysicalDevice, kind: InterfaceName, label: string): object {
  const device = physical.device;
  const { layout, module } = helpersOf(physical);
  return physical.capture((): object => {
    switch (kind) {
      case 'GPUBuffer':
        return device.createBuffer({ label, size: 4, usage: MAP_READ | COPY_SRC | STORAGE });
      case 'GPUQuerySet':
        // Above every implementation's 4096-query maximum.
        return device.createQuerySet({ label, type: 'occlusion', count: 4097 });
      case 'GPUShaderModule':
        // Code of its own: Dawn keeps one module per source text, and its label would be another's.
        return device.createShaderModule({ label, code: `// ${label}\n!` });
      case 'GPUBindGroupLayout':
        return device.createBindGroupLayout({ label, entries: [{ binding: 0, visibility: 4, buffer: {} }, { binding: 0, visibility: 4, buffer: {} }] });
      case 'GPUPipelineLayout':
        return device.createPipelineLayout({ label, bindGroupLayouts: [layout] });
      case 'GPUComputePipeline':
        return device.createComputePipeline({ label, layout: 'auto', compute: { module } });
      case 'GPUBindGroup':
        return device.createBindGroup({ label, layout, entries: [] });
      case 'GPUCommandBuffer': {
        const encoder = device.createCommandEncoder({ label });
        encoder.popDebugGroup();
        return encoder.finish({ label });
      }
    }
  }).value;
}

type ErrorClass = new (message: string) => GPUError;

/**
 * The errors of a call as the program must see them: an error about a stand-in is worded as
 * Dawn words it for the foreign object on `device`; others unchanged. Allocates nothing when no
 * error names a stand-in.
 */
export function foreignWords(errors: GPUError[], device: VirtualDevice): GPUError[] {
  let out: GPUError[] | null = null;
  for (let i = 0; i < errors.length; i++) {
    const message = rewriteForeignMessage(errors[i].message, describeDevice(device.label));
    if (message === null) continue;
    out ??= errors.slice();
    out[i] = new (errors[i].constructor as ErrorClass)(message);
  }
  return out ?? errors;
}

/** A rejection of createComputePipelineAsync, worded the same way. */
export function foreignWordsOfRejection(error: unknown, device: VirtualDevice): unknown {
  if (!(error instanceof GPUPipelineErrorClass)) return error;
  const message = rewriteForeignMessage(error.message, describeDevice(device.label));
  return message === null ? error : new GPUPipelineErrorClass(message, { reason: error.reason });
}
