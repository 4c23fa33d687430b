// Errors and lifetimes as the WebGPU spec says: the uncapturederror event and its handler
// attribute (HTML event handlers, DOM event dispatch), mapAsync's failures, pipeline creation on a
// lost device, device loss, error scopes, and what created objects reflect. One rule per scenario,
// observed on bare Dawn and on a gpunix process.

import { conformance, Env, settled, thrown, validationOf } from './harness.js';

const BUFFER_MAP_READ = 0x0001;
const BUFFER_COPY_DST = 0x0008;
const BUFFER_STORAGE = 0x0080;
const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;
/** MAP_READ with STORAGE: an invalid usage, so an invalid buffer (a validation error). */
const INVALID_USAGE = BUFFER_MAP_READ | BUFFER_STORAGE;
const CODE = '@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n@compute @workgroup_size(1) fn main() { out[0] = 1u; }';

/** Lets queued events and callbacks run (an uncaptured error's event comes after the call that raised it). */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 50));
}

/** Raises one uncaptured validation error on `device`. */
function raiseError(device: GPUDevice): void {
  device.createBuffer({ size: 4, usage: INVALID_USAGE });
}

/** The order in which listeners and the handler attribute ran for one uncaptured error, after `arrange`. */
async function handlerOrder(env: Env, arrange: (device: GPUDevice, log: string[]) => void): Promise<string[]> {
  const device = await env.device();
  const log: string[] = [];
  arrange(device, log);
  raiseError(device);
  await settle();
  device.destroy();
  return log;
}

conformance('errors and lifecycle', [
  {
    rule: 'onuncapturederror runs among addEventListener listeners at the place where it was first set',
    source: 'HTML §8.1.8.1 event handler attributes; DOM §2.9 dispatch; CTS api,operation,uncapturederror',
    async run(env) {
      return handlerOrder(env, (device, log) => {
        device.addEventListener('uncapturederror', () => log.push('listener 1'));
        device.onuncapturederror = () => log.push('handler');
        device.addEventListener('uncapturederror', () => log.push('listener 2'));
      });
    },
  },
  {
    rule: 'a handler replaced while set keeps its place; one set after null runs last',
    source: 'HTML §8.1.8.1 (setting null deactivates the handler; a new value registers it again)',
    async run(env) {
      const replaced = await handlerOrder(env, (device, log) => {
        device.onuncapturederror = () => log.push('first handler');
        device.addEventListener('uncapturederror', () => log.push('listener'));
        device.onuncapturederror = () => log.push('second handler');
      });
      const reset = await handlerOrder(env, (device, log) => {
        device.onuncapturederror = () => log.push('first handler');
        device.addEventListener('uncapturederror', () => log.push('listener'));
        device.onuncapturederror = null;
        device.onuncapturederror = () => log.push('second handler');
      });
      return { replaced, reset };
    },
  },
  {
    rule: 'a removed listener and a handler set to null do not run',
    source: 'DOM §2.7 removeEventListener; HTML §8.1.8.1',
    async run(env) {
      return handlerOrder(env, (device, log) => {
        const listener = () => log.push('removed listener');
        device.addEventListener('uncapturederror', listener);
        device.onuncapturederror = () => log.push('handler');
        device.addEventListener('uncapturederror', () => log.push('listener'));
        device.removeEventListener('uncapturederror', listener);
        device.onuncapturederror = null;
      });
    },
  },
  {
    rule: 'the uncapturederror event: a cancelable GPUUncapturedErrorEvent carrying the error',
    source: 'WebGPU §22.3 GPUUncapturedErrorEvent, "dispatch error"; CTS api,operation,uncapturederror',
    async run(env) {
      const device = await env.device();
      const g = env.globals as Record<string, new () => unknown>;
      let seen: Record<string, unknown> = {};
      device.addEventListener('uncapturederror', (event) => event.preventDefault());
      device.onuncapturederror = function (this: unknown, event: Event) {
        const e = event as GPUUncapturedErrorEvent;
        seen = {
          instance: e instanceof g.GPUUncapturedErrorEvent,
          type: e.type,
          error: e.error.constructor.name,
          errorInstance: e.error instanceof g.GPUValidationError,
          message: typeof e.error.message,
          cancelable: e.cancelable,
          bubbles: e.bubbles,
          defaultPrevented: e.defaultPrevented,
        };
      };
      raiseError(device);
      await settle();
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'the uncapturederror event is fired at the device: its target, currentTarget and the handler\'s this',
    source: 'WebGPU "dispatch error" (fire an event at device); DOM §2.9 dispatch; HTML §8.1.8.1',
    dawnBreaks: { expected: { target: true, currentTarget: true, thisIsDevice: true }, why: 'target and currentTarget are not the device, nor is the handler\'s this' },
    async run(env) {
      const device = await env.device();
      let seen: Record<string, boolean> = {};
      device.onuncapturederror = function (this: unknown, event: Event) {
        seen = { target: event.target === device, currentTarget: event.currentTarget === device, thisIsDevice: this === device };
      };
      raiseError(device);
      await settle();
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'a lost device raises no uncaptured errors',
    source: 'WebGPU §22 (errors of a lost device are not generated)',
    async run(env) {
      const device = await env.device();
      let count = 0;
      device.onuncapturederror = () => count++;
      device.destroy();
      raiseError(device);
      await settle();
      return count;
    },
  },
  {
    rule: 'mapAsync on an invalid buffer (bad usage, or over maxBufferSize) rejects with OperationError and raises a validation error',
    source: 'WebGPU §5.3 mapAsync; CTS api,validation,buffer,mapping:mapAsync,invalidBuffer',
    async run(env) {
      const device = await env.device();
      const out: Array<{ rejection: string; error: string | null }> = [];
      for (const descriptor of [
        { size: 16, usage: INVALID_USAGE },
        { size: device.limits.maxBufferSize + 4, usage: BUFFER_MAP_READ },
      ]) {
        device.pushErrorScope('validation');
        const buffer = device.createBuffer(descriptor);
        await device.popErrorScope();
        let rejection = '';
        const error = await validationOf(device, () => {
          rejection = 'pending';
          buffer.mapAsync(MAP_READ).then(
            () => (rejection = 'resolved'),
            (e: Error) => (rejection = e.name),
          );
        });
        await settle();
        out.push({ rejection, error });
      }
      device.destroy();
      return out;
    },
  },
  {
    rule: 'mapAsync with a mode the usage lacks, or on a mapped buffer, rejects with OperationError and raises a validation error',
    source: 'WebGPU §5.3 mapAsync; CTS api,validation,buffer,mapping:mapAsync,usage, mapAsync,state,mapped',
    async run(env) {
      const device = await env.device();
      const readable = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
      const out: Array<string | null> = [];
      let wrongMode: Promise<string> | null = null;
      out.push(await validationOf(device, () => (wrongMode = settled(readable.mapAsync(MAP_WRITE)))));
      out.push(await wrongMode!);
      const mapped = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ, mappedAtCreation: true });
      let again: Promise<string> | null = null;
      out.push(await validationOf(device, () => (again = settled(mapped.mapAsync(MAP_READ)))));
      out.push(await again!);
      device.destroy();
      return out;
    },
  },
  {
    rule: 'a second mapAsync while one is pending rejects with OperationError (a validation error); the first still maps',
    source: 'WebGPU §5.3 mapAsync ([[pending_map]] must be null); CTS api,validation,buffer,mapping:mapAsync,state,mappingPending',
    async run(env) {
      const device = await env.device();
      const buffer = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
      const first = settled(buffer.mapAsync(MAP_READ));
      let second: Promise<string> | null = null;
      const error = await validationOf(device, () => (second = settled(buffer.mapAsync(MAP_READ))));
      const seen = { second: await second!, error, first: await first, mapState: buffer.mapState };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'mapAsync with an offset or size that breaks alignment or bounds rejects with OperationError (a validation error)',
    source: 'WebGPU §5.3 mapAsync (offset multiple of 8, size multiple of 4, range within the buffer); CTS api,validation,buffer,mapping:mapAsync,offsetAndSizeAlignment',
    async run(env) {
      const device = await env.device();
      const out: Array<string | null> = [];
      for (const [offset, size] of [[4, 8], [0, 6], [8, 16]]) {
        const buffer = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
        let mapping: Promise<string> | null = null;
        out.push(await validationOf(device, () => (mapping = settled(buffer.mapAsync(MAP_READ, offset, size)))));
        out.push(await mapping!);
      }
      device.destroy();
      return out;
    },
  },
  {
    rule: 'mapAsync on a destroyed buffer rejects with OperationError (a validation error)',
    source: 'WebGPU §5.3 mapAsync (the buffer must be valid: not destroyed); CTS api,validation,buffer,mapping:mapAsync,state,destroyed',
    async run(env) {
      const device = await env.device();
      const buffer = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
      buffer.destroy();
      let mapping: Promise<string> | null = null;
      const error = await validationOf(device, () => (mapping = settled(buffer.mapAsync(MAP_READ))));
      const seen = { error, mapping: await mapping!, mapState: buffer.mapState };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'a pending mapAsync rejects with AbortError when unmapped, destroyed, or its device is destroyed',
    source: 'WebGPU §5.3 unmap, destroy ("reject the map promise with AbortError"); CTS api,operation,buffers,map_detach',
    async run(env) {
      const device = await env.device();
      const out: string[] = [];
      for (const end of ['unmap', 'destroy'] as const) {
        const buffer = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
        const mapping = settled(buffer.mapAsync(MAP_READ));
        buffer[end]();
        out.push(`${end}: ${await mapping}`);
      }
      const buffer = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
      const mapping = settled(buffer.mapAsync(MAP_READ));
      device.destroy();
      out.push(`device destroy: ${await mapping}`);
      return out;
    },
  },
  {
    rule: 'device.destroy() unmaps its mapped buffers; their ranges can no longer be got',
    source: 'WebGPU §4.5 GPUDevice.destroy ("unmap" every buffer), §5.3 getMappedRange; CTS api,operation,buffers,map_detach',
    async run(env) {
      const device = await env.device();
      const atCreation = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ | BUFFER_COPY_DST, mappedAtCreation: true });
      const range = atCreation.getMappedRange();
      const mapped = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
      await mapped.mapAsync(MAP_READ);
      device.destroy();
      return {
        states: [atCreation.mapState, mapped.mapState],
        detached: range.byteLength === 0,
        getMappedRange: thrown(() => mapped.getMappedRange()),
      };
    },
  },
  {
    rule: 'mapAsync on a lost device rejects with AbortError',
    source: 'WebGPU §5.3 mapAsync (device lost: AbortError)',
    async run(env) {
      const device = await env.device();
      const buffer = device.createBuffer({ size: 16, usage: BUFFER_MAP_READ });
      device.destroy();
      return settled(buffer.mapAsync(MAP_READ));
    },
  },
  {
    rule: 'createComputePipelineAsync on a lost device resolves, even for a descriptor that is invalid',
    source: 'WebGPU §10.3 createComputePipelineAsync (a lost device does not reject); CTS api,validation,compute_pipeline',
    async run(env) {
      const device = await env.device();
      const module = device.createShaderModule({ code: CODE });
      device.destroy();
      const valid = await settled(device.createComputePipelineAsync({ layout: 'auto', compute: { module } }));
      const invalid = await settled(device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'missing' } }));
      return { valid, invalid };
    },
  },
  {
    rule: 'createComputePipelineAsync with an invalid descriptor rejects with a GPUPipelineError of reason "validation"',
    source: 'WebGPU §10.3 createComputePipelineAsync, GPUPipelineError',
    async run(env) {
      const device = await env.device();
      const module = device.createShaderModule({ code: CODE });
      let seen: unknown = 'resolved';
      try {
        await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'missing' } });
      } catch (error) {
        const e = error as GPUPipelineError;
        seen = { name: e.name, reason: e.reason, instance: e instanceof (env.globals.GPUPipelineError as new () => unknown) };
      }
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'a buffer reflects size, usage, label and mapState from creation through mapping',
    source: 'WebGPU §5.1 GPUBuffer attributes; CTS api,operation,buffers,map (mapState), idl',
    async run(env) {
      const device = await env.device();
      const buffer = device.createBuffer({ label: 'reflected', size: 16, usage: BUFFER_MAP_READ | BUFFER_COPY_DST, mappedAtCreation: true });
      const states: string[] = [buffer.mapState];
      buffer.unmap();
      states.push(buffer.mapState);
      const mapping = buffer.mapAsync(MAP_READ);
      states.push(buffer.mapState);
      await mapping;
      states.push(buffer.mapState);
      buffer.destroy();
      states.push(buffer.mapState);
      const seen = { size: buffer.size, usage: buffer.usage, label: buffer.label, states };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'an invalid buffer (bad usage, or over maxBufferSize) still reflects the size, usage and label it was asked for, unmapped',
    source: 'WebGPU §5.1 createBuffer (attributes set on the content timeline); CTS api,validation,buffer,create',
    async run(env) {
      const device = await env.device();
      const seen = [];
      for (const descriptor of [
        { label: 'invalid', size: 16, usage: INVALID_USAGE },
        { label: 'too large', size: device.limits.maxBufferSize + 4, usage: BUFFER_MAP_READ | BUFFER_COPY_DST },
      ]) {
        device.pushErrorScope('validation');
        const buffer = device.createBuffer(descriptor);
        const error = await device.popErrorScope();
        seen.push({ size: buffer.size, usage: buffer.usage, label: buffer.label, mapState: buffer.mapState, error: error?.constructor.name });
      }
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'objects reflect their labels, a query set its type and count, a device its descriptor label',
    source: 'WebGPU §3.2 GPUObjectBase.label, §20.2 GPUQuerySet, §4.5 GPUDeviceDescriptor.defaultQueue',
    async run(env) {
      const device = await env.device({ label: 'the device', defaultQueue: { label: 'the queue' } });
      const module = device.createShaderModule({ label: 'module', code: CODE });
      const pipeline = device.createComputePipeline({ label: 'pipeline', layout: 'auto', compute: { module } });
      const querySet = device.createQuerySet({ label: 'queries', type: 'occlusion', count: 3 });
      const encoder = device.createCommandEncoder({ label: 'encoder' });
      const commands = encoder.finish({ label: 'commands' });
      pipeline.label = 'renamed';
      const seen = {
        device: device.label,
        module: module.label,
        pipeline: pipeline.label,
        querySet: [querySet.label, querySet.type, querySet.count],
        encoder: encoder.label,
        commands: commands.label,
      };
      device.destroy();
      return seen;
    },
  },
  {
    rule: "the default queue's label is the one requestDevice's defaultQueue names",
    source: 'WebGPU §4.4 GPUDeviceDescriptor.defaultQueue ("the descriptor for the default GPUQueue"); MDN GPUQueue.label',
    dawnBreaks: { expected: 'the queue', why: "dawn.node leaves the default queue's label empty" },
    async run(env) {
      const device = await env.device({ defaultQueue: { label: 'the queue' } });
      const label = device.queue.label;
      device.destroy();
      return label;
    },
  },
  {
    rule: 'getBindGroupLayout on an invalid pipeline, or past its layouts, gives a layout object and a validation error',
    source: 'WebGPU §10.2 getBindGroupLayout; CTS api,validation,getBindGroupLayout',
    async run(env) {
      const device = await env.device();
      const module = device.createShaderModule({ code: CODE });
      const layoutClass = env.globals.GPUBindGroupLayout as new () => unknown;
      device.pushErrorScope('validation');
      const invalid = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'missing' } });
      await device.popErrorScope();
      let layout: unknown = null;
      const fromInvalid = await validationOf(device, () => (layout = invalid.getBindGroupLayout(0)));
      const invalidLayout = layout instanceof layoutClass;
      const valid = device.createComputePipeline({ layout: 'auto', compute: { module } });
      const pastEnd = await validationOf(device, () => (layout = valid.getBindGroupLayout(3)));
      const seen = { fromInvalid, invalidLayout, pastEnd, pastEndLayout: layout instanceof layoutClass };
      device.destroy();
      return seen;
    },
  },
  {
    rule: 'device.lost is one promise; destroy() resolves it with a GPUDeviceLostInfo of reason "destroyed"',
    source: 'WebGPU §22.2 GPUDevice.lost [SameObject], GPUDeviceLostInfo; CTS api,operation,device,lost',
    async run(env) {
      const device = await env.device();
      const sameObject = device.lost === device.lost;
      device.destroy();
      const info = await device.lost;
      return {
        sameObject,
        instance: info instanceof (env.globals.GPUDeviceLostInfo as new () => unknown),
        reason: info.reason,
        message: typeof info.message,
        ownKeys: Object.keys(info),
      };
    },
  },
  {
    rule: 'popErrorScope with no scope rejects with OperationError; on a lost device it resolves null',
    source: 'WebGPU §22.1 popErrorScope; CTS api,validation,error_scope',
    async run(env) {
      const device = await env.device();
      const empty = await settled(device.popErrorScope());
      device.pushErrorScope('validation');
      device.destroy();
      const lostWithScope = await device.popErrorScope();
      const lostEmpty = await device.popErrorScope().then(
        (value) => value,
        (error: Error) => error.name,
      );
      return { empty, lostWithScope, lostEmpty };
    },
  },
  {
    rule: 'pushErrorScope with an unknown filter throws TypeError',
    source: 'WebIDL enumeration conversion (GPUErrorFilter)',
    async run(env) {
      const device = await env.device();
      const seen = thrown(() => device.pushErrorScope('everything' as GPUErrorFilter));
      device.destroy();
      return seen;
    },
  },
]);
