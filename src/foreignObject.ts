// Another device's object, used on this one: what WebGPU makes a validation error ("an object is
// only valid with the device that created it"), worded as Dawn words it for two devices:
//   [Buffer "b"] is associated with [Device "B"], and cannot be used with [Device "A"].
// Every gpunix process stands on the kernel's one real device per GPU, so Dawn cannot tell two
// processes' objects apart. gpunix hands Dawn, in the foreign object's place, an invalid object
// of the calling device whose label carries the foreign object's description (a marker). Dawn
// then validates the call exactly as it would have with the foreign object, in the same order
// (its object check asks "same device?" then "valid?" at one point), invalidates the same
// encoder, fails the same finish() and submit; the only difference is the sentence, which
// rewriteForeignMessage turns back into Dawn's two-device one. The embedded device makes its
// markers on the real device (src/vgpu/foreign.ts); the remote client makes them on its own
// session's device through the wire (src/client/remote.ts). Shared by both: depends on nothing but webidl.ts's types.

import type { InterfaceName } from './webidl.js';

const PREFIX = 'gpunix-foreign:';

/** Dawn's name for each interface's objects in its messages. */
export const DAWN_KIND_NAMES: Readonly<Record<InterfaceName, string>> = {
  GPUBuffer: 'Buffer',
  GPUShaderModule: 'ShaderModule',
  GPUComputePipeline: 'ComputePipeline',
  GPUBindGroupLayout: 'BindGroupLayout',
  GPUPipelineLayout: 'PipelineLayout',
  GPUBindGroup: 'BindGroup',
  GPUQuerySet: 'QuerySet',
  GPUCommandBuffer: 'CommandBuffer',
};

/** Dawn's description of an object: `[Buffer "label"]`, or `[Buffer (unlabeled)]`. */
export function describeObject(kind: string, label: string): string {
  return label ? `[${kind} "${label}"]` : `[${kind} (unlabeled)]`;
}

/** Dawn's description of a device: `[Device "label"]`, or `[Device]`. */
export function describeDevice(label: string): string {
  return label ? `[Device "${label}"]` : '[Device]';
}

/** Dawn's description of a command buffer: `[CommandBuffer "cb" from CommandEncoder "enc"]`, each part when labelled. */
export function describeCommandBuffer(label: string, encoderLabel: string): string {
  return `[CommandBuffer${label ? ` "${label}"` : ''}${encoderLabel ? ` from CommandEncoder "${encoderLabel}"` : ''}]`;
}

/** The label of a marker standing for the object `object` of the device `device` (both Dawn descriptions). */
export function foreignMarkerLabel(object: string, device: string): string {
  return PREFIX + Buffer.from(JSON.stringify([object, device]), 'utf8').toString('base64url');
}

// Dawn's description of an invalid object (the marker) and, for a command buffer, of its encoder.
const MARKER = /\[Invalid [A-Za-z]+ "gpunix-foreign:([A-Za-z0-9_-]*)"(?: from CommandEncoder "[^"\]]*")?\]/g;
const INVALID_SENTENCE = ' is invalid due to a previous error.';

/**
 * Dawn's message about a marker, as Dawn words it for the foreign object it stands for, used
 * with device `self` (a Dawn description); null when the message names no marker.
 */
export function rewriteForeignMessage(message: string, self: string): string | null {
  if (!message.includes(PREFIX)) return null;
  let changed = false;
  const rewritten = message.replace(MARKER, (whole, encoded: string, offset: number, text: string) => {
    let object: string;
    let device: string;
    try {
      [object, device] = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8')) as [string, string];
      if (typeof object !== 'string' || typeof device !== 'string') return whole;
    } catch {
      return whole;
    }
    changed = true;
    // The sentence Dawn gives for the invalid object becomes the two-device one.
    if (text.startsWith(INVALID_SENTENCE, offset + whole.length)) return `${object} is associated with ${device}, and cannot be used with ${self}.\u0000`;
    return object;
  });
  if (!changed) return null;
  return rewritten.split(`.\u0000${INVALID_SENTENCE}`).join('.');
}
