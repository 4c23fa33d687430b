// A process's queue. Nothing here touches the device queue directly: submits, buffer writes and
// completion waits become work items for the device's dispatcher, which runs them in the program's
// order and times them. Errors still reach the scope that was current at the call.

import { refuseUnsupported } from '../errors.js';
import { VirtualCommandBuffer } from './commandBuffer.js';
import { offDeviceItem, type WorkItem } from '../kernel/dispatch.js';
import type { Proc } from '../kernel/proc.js';
import type { VirtualDevice } from './device.js';
import type { HeldTarget } from './errorScopes.js';
import { unwrap } from './object.js';
import { COPY_CHUNK_BYTES } from '../params.js';
import { VirtualBuffer } from './buffer.js';
import { Submission } from './submission.js';
import { BufferUsage } from './webgpuGlobals.js';
import { releaseWriteCopy, takeWriteCopy } from './writeStaging.js';
import { dataBytes, InterfaceName, sequence, size64, usvString } from '../webidl.js';

/** The bytes of writeBuffer's data argument, checked as WebGPU does (src/webidl.ts). */
export function writeBufferBytes(data: unknown, dataOffset: unknown = 0, size?: unknown): Uint8Array {
  return dataBytes('writeBuffer', data, dataOffset, size);
}

/** True when Dawn will accept this write as the program's call stands (so it may be chunked). */
function writeIsValid(buffer: unknown, offset: number, size: number): boolean {
  if (!(buffer instanceof VirtualBuffer)) return false;
  return (
    !buffer.isDestroyed &&
    buffer.mapState === 'unmapped' &&
    (buffer.usage & BufferUsage.COPY_DST) !== 0 &&
    Number.isInteger(offset) &&
    offset % 4 === 0 &&
    offset >= 0 &&
    offset + size <= buffer.size
  );
}

/** The first-submission verdicts of a submit of one command buffer (shared: only read). */
const FIRST_SUBMISSION: readonly boolean[] = Object.freeze([true]);
const SUBMITTED_BEFORE: readonly boolean[] = Object.freeze([false]);

const COMMAND_BUFFER: InterfaceName = 'GPUCommandBuffer';
const itself = (value: unknown): unknown => value;

export class VirtualQueue {
  // Private fields behind prototype accessors: a GPUQueue has no own properties (WebIDL).
  #label = '';
  #device: VirtualDevice;
  constructor(device: VirtualDevice) {
    this.#device = device;
  }

  get label(): string {
    return this.#label;
  }
  /** WebGPU's `attribute USVString label`, converted as WebIDL says. */
  set label(value: string) {
    this.#label = usvString(value, 'label', 'label');
  }

  submit(commandBuffers: Iterable<GPUCommandBuffer>): void {
    const device = this.#device;
    const objects = device.objects;
    // sequence<GPUCommandBuffer>: iterated once, then each element's interface and owner checked.
    const buffers = sequence(commandBuffers, 'submit', 'commandBuffers', itself) as VirtualCommandBuffer[];
    let foreign: VirtualCommandBuffer[] | null = null;
    for (let i = 0; i < buffers.length; i++) {
      const cb = objects.object(COMMAND_BUFFER, buffers[i], 'submit', 'commandBuffers') as VirtualCommandBuffer;
      if (cb === buffers[i]) continue;
      (foreign ??= []).push(buffers[i]);
      buffers[i] = cb;
    }
    if (foreign) return this.submitForeign(buffers, foreign);
    if (device.isLost) return;
    const target = device.errorTarget();
    // Which record runs is fixed now; a second submit of the same buffer (in a later submit, or
    // twice in this one) must fail like WebGPU's.
    let firstSubmission: readonly boolean[];
    if (buffers.length === 1) {
      // The common submit of one command buffer: a shared verdict, no array per submit.
      const cb = buffers[0];
      firstSubmission = cb instanceof VirtualCommandBuffer && !cb.submitted ? FIRST_SUBMISSION : SUBMITTED_BEFORE;
    } else {
      const verdicts = new Array<boolean>(buffers.length);
      for (let i = 0; i < buffers.length; i++) {
        const cb = buffers[i];
        verdicts[i] = cb instanceof VirtualCommandBuffer && !cb.submitted && buffers.indexOf(cb) === i;
      }
      firstSubmission = verdicts;
    }
    for (let i = 0; i < buffers.length; i++) {
      const cb = buffers[i];
      if (cb instanceof VirtualCommandBuffer) cb.submitted = true;
    }
    device.dispatcher.enqueue(new Submission(device, buffers, firstSubmission, target, device.dispatcher.params.targetSliceNs));
  }

  /**
   * A submit naming another device's command buffer: refused whole by Dawn, in the program's
   * order, with Dawn's two-device error (a stand-in takes the foreign buffer's place). As in Dawn,
   * every command buffer of a refused submit is used up, the other device's included.
   */
  private submitForeign(converted: readonly unknown[], foreign: readonly VirtualCommandBuffer[]): void {
    const device = this.#device;
    for (const cb of [...converted, ...foreign]) if (cb instanceof VirtualCommandBuffer) cb.submitted = true;
    if (device.isLost) return;
    const target = device.errorTarget();
    // Refused before it reaches the device queue: nothing to time, nothing a checkpoint keeps.
    device.dispatcher.enqueue(
      offDeviceItem(
        device.proc,
        () => {
          const real = converted.map((cb) => {
            if (cb instanceof VirtualCommandBuffer) cb.checkedConsumed = true;
            return unwrap(cb) as GPUCommandBuffer;
          });
          device.callRouted(target, () => device.physical.queue.submit(real));
        },
        () => target.release(),
      ),
    );
  }

  writeBuffer(buffer: GPUBuffer, bufferOffset: number, data: unknown, dataOffset?: number, size?: number): void {
    const device = this.#device;
    // WebIDL's conversions, in argument order; another device's buffer becomes a stand-in that
    // Dawn refuses with the two-device error, in the program's order (foreign.ts).
    buffer = device.objects.object('GPUBuffer', buffer, 'writeBuffer', 'buffer') as GPUBuffer;
    bufferOffset = size64(bufferOffset, 'writeBuffer', 'bufferOffset');
    const bytes = writeBufferBytes(data, dataOffset, size);
    if (device.isLost) return;
    const target = device.errorTarget();
    const proc = device.proc;
    if (bytes.byteLength > COPY_CHUNK_BYTES && writeIsValid(buffer, bufferOffset, bytes.byteLength)) {
      // A large write is scheduled work in pieces, so other processes' atoms can run between them.
      // It was checked valid first: pieces of an invalid write would each raise Dawn's error.
      // Pieces issued before enqueue returns (an uncontended device takes them all at once) read
      // the program's bytes in place; what is left then is copied (into reused memory:
      // writeStaging.ts), since the program may change its array as soon as writeBuffer returns.
      let source = bytes;
      /** The offset in the program's bytes at which `source` starts. */
      let sourceFrom = 0;
      let copy: Uint8Array | null = null;
      let written = 0;
      // Dawn's writeBuffer has taken the bytes of every piece issued: the copy can go back.
      const done = (): void => {
        target.release();
        if (copy) releaseWriteCopy(copy);
        copy = null;
      };
      device.dispatcher.enqueue({
        owner: proc,
        usesDevice: true,
        enqueuedAtNs: NaN,
        nextPiece: () => {
          if (written >= bytes.byteLength || device.isLost) {
            done();
            return null;
          }
          const from = written;
          const chunk = source.subarray(from - sourceFrom, Math.min(bytes.byteLength, from + COPY_CHUNK_BYTES) - sourceFrom);
          written += chunk.byteLength;
          if (from === 0) proc.bufferWrites++;
          return {
            name: 'writeBuffer',
            args: { bytes: chunk.byteLength, offset: bufferOffset + from },
            issue: () => {
              const captured = device.physical.capture(() => device.physical.queue.writeBuffer(unwrap(buffer), bufferOffset + from, chunk as Uint8Array<ArrayBuffer>));
              device.routeCaptured(target, captured);
            },
          };
        },
        cancel: done,
        // A copy: `source` may be reused memory, which goes back for other writes once this one is done.
        write: () => ({ buffer, offset: bufferOffset + written, bytes: source.slice(written - sourceFrom) }),
      });
      if (written < bytes.byteLength) {
        copy = source = takeWriteCopy(bytes.subarray(written));
        sourceFrom = written;
      }
      return;
    }
    // If it runs now the program's bytes are used in place; if it waits (a suspended owner's
    // work waits too), they are copied first.
    const payload = device.dispatcher.wouldRunNow(proc) && !proc.suspended ? bytes : bytes.slice();
    device.dispatcher.enqueue(new BufferWrite(proc, device, target, buffer, bufferOffset, payload));
  }

  onSubmittedWorkDone(): Promise<undefined> {
    const device = this.#device;
    if (device.isLost) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      device.dispatcher.enqueue(
        offDeviceItem(
          device.proc,
          () => {
            device.physical.queue.onSubmittedWorkDone().then(() => resolve(undefined), () => resolve(undefined));
          },
          () => resolve(undefined),
        ),
      );
    });
  }

}

refuseUnsupported(VirtualQueue, 'GPUQueue');

/**
 * A writeBuffer that goes to Dawn whole, as the dispatcher's work item. A class rather than a
 * literal of closures, as MapRequest (buffer.ts) says: a loop of writes keeps its optimized code
 * across full collections.
 */
export class BufferWrite implements WorkItem {
  readonly usesDevice = true;
  enqueuedAtNs = NaN;

  constructor(
    readonly owner: Proc,
    private readonly device: VirtualDevice,
    private readonly target: HeldTarget,
    private readonly buffer: GPUBuffer,
    private readonly offset: number,
    private readonly bytes: Uint8Array,
  ) {}

  run(): void {
    this.owner.bufferWrites++;
    // The real buffer is looked up now, not at the call: it may have been evicted and brought back since.
    this.device.callRoutedWith(this.target, BufferWrite.writeReal, this);
  }

  /** The real write (for callRoutedWith: no closure per write). */
  private static writeReal(write: BufferWrite): void {
    write.device.physical.queue.writeBuffer(unwrap(write.buffer), write.offset, write.bytes as Uint8Array<ArrayBuffer>);
  }

  cancel(): void {
    this.target.release();
  }

  /** What a checkpoint records of it. */
  write(): { buffer: object; offset: number; bytes: Uint8Array } {
    return { buffer: this.buffer, offset: this.offset, bytes: this.bytes };
  }
}
