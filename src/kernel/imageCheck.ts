// What a restore checks before it creates anything: that every object of a well-formed process
// image (readImage has checked its bytes and fields) can be made on the target device for the
// restoring process. Without this, an image whose checksums are right but whose WGSL does not
// compile, whose pipeline names a missing entry point, or whose buffer has an impossible usage or
// size would restore into invalid objects and uncaptured errors. Dawn, on the target device, is
// the judge of shaders, pipelines and usages, after the kernel's own compile checks (shaderLimits,
// the watchdog's loop bounding: src/vgpu/shaderModule.ts). Nothing made here is kept or charged to
// anyone: the objects are only Dawn's verdicts, and the collector frees them.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { WEBGPU_DEFAULT_LIMITS } from '../params.js';
import { compileBounded, CompiledModule, loopBudget } from '../vgpu/shaderModule.js';
import { bindGroupLayoutDescriptor } from '../webidl.js';
import { checkShader, describeShaderLimit, ShaderLimits } from '../wgsl/complexity.js';
import type { ImageHeader } from './image.js';
import { demandsOfImage, describeTarget, incompatible, whatIsMissing } from './compatibility.js';
import type { TenantAccount } from './tenant.js';

/** GPUBufferUsage flags (WebGPU's values). */
const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;
const COPY_SRC = 0x0004;
const COPY_DST = 0x0008;
const UNIFORM = 0x0040;
const STORAGE = 0x0080;
/** Every flag WebGPU defines (MAP_READ … QUERY_RESOLVE). */
const KNOWN_USAGE = 0x03ff;

/** Where and for whom the image is to be restored. */
export interface RestoreTarget {
  /** The device the process's first device will be made on. */
  physical: PhysicalDevice;
  /** The kernel's limits on what a shader module may cost to compile. */
  shaderLimits: ShaderLimits;
  /** The per-piece time limit the process's loop budgets are made for (ms). */
  maxDispatchMs: number;
  /** The restored process's own memory limit (bytes), or null. */
  memoryLimit: number | null;
  /** The restoring tenant (its quota and what it already holds). */
  account: TenantAccount;
}

const describe = (kind: string, index: number, object: { id: number; label: string }): string =>
  `${kind}[${index}] (id ${object.id}, label ${JSON.stringify(object.label.length > 64 ? `${object.label.slice(0, 64)}...` : object.label)})`;

/** The first line of a message (with the next when it ends in a colon), cut short: refusals are one line. */
const oneLine = (message: string): string => {
  const lines = message.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const line = (lines[0] ?? '').endsWith(':') && lines.length > 1 ? `${lines[0]} ${lines[1]}` : (lines[0] ?? '');
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
};

/** Why `usage` is not a legal GPUBufferUsage combination by WebGPU's rules; null when it is. */
export function usageProblem(usage: number): string | null {
  const hex = `0x${usage.toString(16)}`;
  if (usage === 0) return 'usage 0 is not a legal buffer usage (WebGPU needs at least one flag)';
  if ((usage & ~KNOWN_USAGE) !== 0) return `usage ${hex} has flags WebGPU does not define (it defines 0x1 to 0x200)`;
  if (usage & MAP_READ && (usage & ~(MAP_READ | COPY_DST)) !== 0) return `usage ${hex} combines MAP_READ with flags other than COPY_DST, which WebGPU does not allow`;
  if (usage & MAP_WRITE && (usage & ~(MAP_WRITE | COPY_SRC)) !== 0) return `usage ${hex} combines MAP_WRITE with flags other than COPY_SRC, which WebGPU does not allow`;
  return null;
}

/**
 * Checks that `image` can be restored on `target`: first that the device has what the image's
 * process uses (compatibility.ts: GPUNIX_E_INCOMPATIBLE_DEVICE naming each missing feature or
 * limit), then each object; throws GPUNIX_E_BAD_IMAGE naming the first
 * object that cannot (its kind, index, id and label) and why, or GPUNIX_E_QUOTA when the image
 * would fit the tenant's memory limit but not beside what the tenant already holds. `path` is for
 * the message. Creates nothing that outlives the call.
 */
export async function checkImageRestorable(image: ImageHeader, target: RestoreTarget, path: string): Promise<void> {
  const refuse = (what: string, problem: string): GpunixError =>
    new GpunixError(ErrorCodes.BAD_IMAGE, `bad process image ${path}: cannot restore ${what}: ${problem}`);
  const { physical, account } = target;
  if (physical.lostReason) throw new GpunixError(ErrorCodes.NO_DEVICE, `cannot restore ${path}: device ${physical.id} is lost (${physical.lostReason})`);
  const device = physical.device;
  // First what the device offers against what the process uses (features, limits): the check migration makes too.
  const missing = whatIsMissing(demandsOfImage(image), physical);
  if (missing.length > 0) throw incompatible(`cannot restore ${path} on ${describeTarget(physical)}`, missing);

  // Buffers: usage and size (cheap, and first: a refused image costs no compilation).
  // The restored device has the image's own limit (what the program was promised, WebGPU's
  // default if it recorded none), never more than the adapter's.
  const adapterMax = physical.adapter.limits.maxBufferSize ?? WEBGPU_DEFAULT_LIMITS.maxBufferSize;
  const maxBufferSize = Math.min(adapterMax, image.limits.maxBufferSize ?? WEBGPU_DEFAULT_LIMITS.maxBufferSize);
  const quota = account.quota.memoryLimit;
  let total = 0;
  for (const [i, b] of image.buffers.entries()) {
    const what = `buffer ${describe('buffers', i, b)}`;
    const problem = usageProblem(b.usage);
    if (problem) throw refuse(what, problem);
    // Restore makes each buffer mapped at creation to fill it, which WebGPU allows only for such sizes
    // (and a checkpoint never takes another: it could not copy the buffer out).
    if (b.size % 4 !== 0) throw refuse(what, `its size ${b.size} is not a multiple of 4, which a restored buffer needs`);
    if (b.size > maxBufferSize) throw refuse(what, `its size ${b.size} is more than the device's maxBufferSize (${maxBufferSize})`);
    if (b.size > physical.budgetBytes) throw refuse(what, `its size ${b.size} is more than device ${physical.id}'s whole memory budget (${physical.budgetBytes} bytes)`);
    total += b.size;
    if (target.memoryLimit !== null && total > target.memoryLimit) {
      throw refuse(what, `the image's buffers up to this one need ${total} bytes, more than the process's memory limit (${target.memoryLimit} bytes)`);
    }
    if (quota !== null && total > quota) {
      throw refuse(what, `the image's buffers up to this one need ${total} bytes, more than tenant "${account.name}"'s memory limit (${quota} bytes)`);
    }
    // Dawn's verdict on the usage, on a 4-byte buffer: anything the target device refuses.
    const trial = physical.capture(() => device.createBuffer({ label: 'gpunix: restore check', size: 4, usage: b.usage }));
    trial.value.destroy();
    if (!trial.clean) throw refuse(what, `device ${physical.id} refuses usage 0x${b.usage.toString(16)}: ${oneLine((await trial.errors)[0]?.message ?? 'invalid')}`);
  }
  const querySetBytes = image.querySets.reduce((sum, q) => sum + q.count * 8, 0);
  if (quota !== null && account.bytes + total + querySetBytes > quota) {
    throw new GpunixError(
      ErrorCodes.QUOTA,
      `cannot restore ${path}: its buffers need ${total + querySetBytes} bytes, and tenant "${account.name}" already holds ${account.bytes} of its ${quota}-byte memory limit`,
    );
  }

  // Shader modules: the kernel's limits, then the watchdog's bounded form, then Dawn's compiler.
  const budget = loopBudget(physical, target.maxDispatchMs);
  const modules = new Map<number, CompiledModule>();
  for (const [i, s] of image.shaders.entries()) {
    const what = `shader module ${describe('shaders', i, s)}`;
    const over = checkShader(s.code, target.shaderLimits);
    if (over) throw refuse(what, `${ErrorCodes.SHADER_LIMIT}: ${describeShaderLimit(s.label, over)}`);
    // The program's own errors are dropped here: getCompilationInfo() reports them.
    let compiled: CompiledModule;
    try {
      compiled = compileBounded(physical, { label: s.label, code: s.code }, budget, (make) => physical.capture(make).value);
    } catch (thrown) {
      throw refuse(what, `the kernel cannot compile it: ${oneLine((thrown as Error).message ?? String(thrown))}`);
    }
    if (compiled.refusal) throw refuse(what, oneLine(compiled.refusal));
    const info = await compiled.real.getCompilationInfo();
    const error = info.messages.find((m) => m.type === 'error');
    if (error) throw refuse(what, `its WGSL does not compile: ${error.lineNum}:${error.linePos}: ${oneLine(error.message)}`);
    modules.set(s.id, compiled);
  }

  // Pipelines: the layout, then Dawn makes the pipeline (entry point, constants, bindings).
  const pipelines = new Map<number, GPUComputePipeline>();
  for (const [i, p] of image.pipelines.entries()) {
    const what = `pipeline ${describe('pipelines', i, p)}`;
    let layout: GPUPipelineLayout | 'auto' = 'auto';
    if (p.layout !== 'auto') {
      const groups: (GPUBindGroupLayout | null)[] = [];
      for (const [g, raw] of p.layout.bindGroupLayouts.entries()) {
        if (raw === null) {
          groups.push(null);
          continue;
        }
        let descriptor: GPUBindGroupLayoutDescriptor;
        try {
          // The converter the program's own call goes through: dawn.node must never see a raw
          // JSON value (an explicit null dictionary aborts the whole process).
          descriptor = bindGroupLayoutDescriptor(raw);
        } catch (thrown) {
          throw refuse(what, `its layout's bindGroupLayouts[${g}] is not a bind group layout descriptor: ${oneLine((thrown as Error).message)}`);
        }
        const made = physical.capture(() => device.createBindGroupLayout(descriptor));
        if (!made.clean) throw refuse(what, `its layout's bindGroupLayouts[${g}] is invalid: ${oneLine((await made.errors)[0]?.message ?? 'invalid')}`);
        groups.push(made.value);
      }
      const made = physical.capture(() => device.createPipelineLayout({ bindGroupLayouts: groups as GPUBindGroupLayout[] }));
      if (!made.clean) throw refuse(what, `its layout is invalid: ${oneLine((await made.errors)[0]?.message ?? 'invalid')}`);
      layout = made.value;
    }
    const compute: GPUProgrammableStage = { module: modules.get(p.shader)!.real };
    if (p.entryPoint !== undefined) compute.entryPoint = p.entryPoint;
    if (p.constants !== undefined) compute.constants = p.constants;
    // Asynchronous: Dawn's synchronous creation may wait in the driver for other processes' work.
    try {
      pipelines.set(p.id, await physical.capture(() => device.createComputePipelineAsync({ label: p.label, layout, compute })).value);
    } catch (thrown) {
      const entry = p.entryPoint === undefined ? 'its default entry point' : `entry point ${JSON.stringify(p.entryPoint)}`;
      throw refuse(what, `Dawn cannot make it (${entry} of shader id ${p.shader}): ${oneLine((thrown as Error).message)}`);
    }
  }

  // Bind groups of queued work: the pipeline's group exists; each binding is a usable range; Dawn
  // makes the group from stand-in buffers (bindings fit the layout: numbers, types, usages).
  const buffers = new Map(image.buffers.map((b) => [b.id, b] as const));
  for (const [i, g] of image.bindGroups.entries()) {
    const what = `bind group ${describe('bindGroups', i, g)}`;
    let layout: GPUBindGroupLayout;
    if ('pipeline' in g.layout) {
      const pipeline = pipelines.get(g.layout.pipeline)!;
      const group = g.layout.group;
      const maxBindGroups = Math.min(physical.adapter.limits.maxBindGroups ?? WEBGPU_DEFAULT_LIMITS.maxBindGroups, image.limits.maxBindGroups ?? WEBGPU_DEFAULT_LIMITS.maxBindGroups);
      if (group >= maxBindGroups) throw refuse(what, `its layout is group ${group} of pipeline id ${g.layout.pipeline}, beyond the device's maxBindGroups (${maxBindGroups})`);
      const got = physical.capture(() => pipeline.getBindGroupLayout(group));
      if (!got.clean) throw refuse(what, `its layout, group ${group} of pipeline id ${g.layout.pipeline}, does not exist: ${oneLine((await got.errors)[0]?.message ?? 'invalid')}`);
      layout = got.value;
    } else {
      let descriptor: GPUBindGroupLayoutDescriptor;
      try {
        descriptor = bindGroupLayoutDescriptor(g.layout.descriptor);
      } catch (thrown) {
        throw refuse(what, `its layout is not a bind group layout descriptor: ${oneLine((thrown as Error).message)}`);
      }
      const made = physical.capture(() => device.createBindGroupLayout(descriptor));
      if (!made.clean) throw refuse(what, `its layout is invalid: ${oneLine((await made.errors)[0]?.message ?? 'invalid')}`);
      layout = made.value;
    }
    for (const [e, entry] of g.entries.entries()) {
      const buffer = buffers.get(entry.buffer)!;
      const offset = entry.offset ?? 0;
      const size = entry.size ?? buffer.size - offset;
      if ((buffer.usage & (STORAGE | UNIFORM)) === 0) throw refuse(what, `entries[${e}] binds buffer id ${buffer.id}, whose usage 0x${buffer.usage.toString(16)} has neither STORAGE nor UNIFORM`);
      if (offset > buffer.size || size < 0 || offset + size > buffer.size) {
        throw refuse(what, `entries[${e}] binds bytes ${offset} to ${offset + size} of buffer id ${buffer.id}, which has ${buffer.size}`);
      }
    }
    const problem = await bindGroupProblem(physical, layout, g.entries.map((e) => ({ binding: e.binding, buffer: buffers.get(e.buffer)!, offset: e.offset, size: e.size })));
    if (problem) throw refuse(what, `Dawn cannot make it: ${problem}`);
  }

  // Queued writes and copies: in range of their buffers, with the usage they need.
  const range = (what: string, id: number, offset: number, size: number, usage: number, flag: string): void => {
    const buffer = buffers.get(id)!;
    if ((buffer.usage & usage) === 0) throw refuse(what, `buffer id ${id} lacks ${flag} (usage 0x${buffer.usage.toString(16)})`);
    if (offset + size > buffer.size) throw refuse(what, `bytes ${offset} to ${offset + size} are past the end of buffer id ${id} (${buffer.size} bytes)`);
  };
  for (const [i, q] of image.queued.entries()) {
    if (q.kind === 'writeBuffer') {
      range(`queued[${i}] (a write of ${q.size} bytes)`, q.buffer, q.bufferOffset, q.size, COPY_DST, 'COPY_DST');
    } else if (q.kind === 'submit') {
      for (const [c, cb] of q.commandBuffers.entries()) {
        for (const [k, command] of cb.commands.entries()) {
          const what = `queued[${i}].commandBuffers[${c}].commands[${k}] (${command.op})`;
          if (command.op === 'copyBufferToBuffer') {
            range(what, command.source, command.sourceOffset, command.size, COPY_SRC, 'COPY_SRC');
            range(what, command.destination, command.destinationOffset, command.size, COPY_DST, 'COPY_DST');
          } else if (command.op === 'clearBuffer') {
            range(what, command.buffer, command.offset, command.size ?? 0, COPY_DST, 'COPY_DST');
          }
        }
      }
    }
  }
}

/** The most bytes of one binding a stand-in buffer holds: enough for any binding's own checks but the minimum binding size of a larger one. */
const STAND_IN_BYTES = 1 << 20;

/**
 * Dawn's verdict on a bind group of `layout` with `entries`, made from small stand-in buffers with
 * the same usages (never the image's sizes: the check must not take the memory the restore will).
 * A binding cut down to STAND_IN_BYTES can fail only Dawn's minimum-binding-size rule because of
 * the cut, so that one error is not held against it; an offset past the stand-in keeps its
 * alignment. Returns the first error's line, or null.
 */
async function bindGroupProblem(
  physical: PhysicalDevice,
  layout: GPUBindGroupLayout,
  entries: { binding: number; buffer: { size: number; usage: number }; offset?: number; size?: number }[],
): Promise<string | null> {
  const standIns: GPUBuffer[] = [];
  let cut = false;
  try {
    const real = entries.map((e) => {
      const offset = e.offset ?? 0;
      const size = e.size ?? e.buffer.size - offset;
      const heldSize = Math.min(size, STAND_IN_BYTES);
      const heldOffset = offset <= STAND_IN_BYTES ? offset : offset % 256;
      cut ||= heldSize < size;
      const buffer = physical.capture(() => physical.device.createBuffer({ label: 'gpunix: restore check', size: Math.ceil((heldOffset + heldSize) / 4) * 4 || 4, usage: e.buffer.usage })).value;
      standIns.push(buffer);
      return { binding: e.binding, resource: { buffer, offset: heldOffset, size: heldSize } };
    });
    const made = physical.capture(() => physical.device.createBindGroup({ label: 'gpunix: restore check', layout, entries: real }));
    if (made.clean) return null;
    const message = oneLine((await made.errors)[0]?.message ?? 'invalid');
    return cut && /minimum binding size/i.test(message) ? null : message;
  } finally {
    for (const buffer of standIns) buffer.destroy();
  }
}
