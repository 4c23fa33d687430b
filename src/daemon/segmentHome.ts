// Shared segments homed on this node, as other nodes reach them (docs/memory.md, "Shared segments
// across nodes"; the other side is segmentReplica.ts). A peer daemon opens tenant T's segment N
// (SegmentOpen) for the processes of T on its node that attached "N@<this node>"; from then on it
// pulls the blocks that changed here since it last had them (SegmentPull) and pushes the words
// its node wrote (SegmentPush).
//
// The segment here is the ordinary one (kernel/segments.ts): local processes of T that attach N
// use the same buffer. Remote nodes hold it through a holder process of the tenant (visible in
// `ps`, counted in the tenant's memory): it keeps the segment alive while any node has it open,
// and its queue orders the reads and writes done for them after the work the device has been
// given. Changes are found by comparing the buffer with a shadow copy, block by block (64 KiB),
// each changed block getting a new version from a clock; a peer's handle remembers the version it
// has of each block, so a pull sends only newer blocks.

import { ErrorCodes, GpunixError } from '../errors.js';
import type { Kernel, ProcessHandle } from '../kernel/kernel.js';
import type { VirtualBuffer } from '../vgpu/buffer.js';
import type { VirtualDevice } from '../vgpu/device.js';

type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** The unit in which changes are found and sent. */
export const SEGMENT_BLOCK_BYTES = 64 * 1024;

interface Home {
  tenant: string;
  name: string;
  size: number;
  holder: ProcessHandle;
  device: VirtualDevice;
  buffer: VirtualBuffer;
  /** The contents as last read or written here. */
  shadow: Uint8Array;
  /** Per block, the clock value of its last change. */
  versions: Float64Array;
  clock: number;
  /** Reads and writes of this segment, one at a time. */
  turn: Promise<unknown>;
  handles: Set<Handle>;
}

interface Handle {
  id: number;
  peerSession: number;
  home: Home;
  /** Per block, the version the peer's node has. */
  known: Float64Array;
}

export class SegmentHomes {
  private readonly homes = new Map<string, Home>();
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;

  constructor(private readonly deps: { kernel: Kernel; log: LogFn }) {}

  /** SegmentOpen: the segment (made if new), held for the peer's node. */
  async open(peerSession: number, tenant: string, name: string, size: number): Promise<{ segment: number }> {
    if (!this.deps.kernel.tenants().some((t) => t.name === tenant)) throw new GpunixError(ErrorCodes.BAD_OPTION, `tenant ${tenant} does not exist on this node`);
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4 !== 0) throw new GpunixError(ErrorCodes.BAD_OPTION, `a shared segment's size must be a positive multiple of 4 bytes, got ${size}`);
    const key = `${tenant}\u0000${name}`;
    let home = this.homes.get(key);
    if (!home) {
      home = await this.makeHome(tenant, name, size);
      this.homes.set(key, home);
    } else if (home.size !== size) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}" has ${home.size} bytes, not ${size}`);
    }
    const handle: Handle = { id: this.nextHandle++, peerSession, home, known: new Float64Array(home.versions.length) };
    home.handles.add(handle);
    this.handles.set(handle.id, handle);
    this.deps.log('info', 'a remote node attached a shared segment', { tenant, segment: name, bytes: size });
    return { segment: handle.id };
  }

  /** SegmentPull: the blocks newer than the peer has, as [offset, length] runs and their bytes. */
  pull(peerSession: number, id: number): Promise<{ result: { blocks: Array<[number, number]> }; data: Uint8Array }> {
    const handle = this.handle(peerSession, id);
    return this.inTurn(handle.home, async () => {
      const home = handle.home;
      await this.refresh(home);
      const blocks: Array<[number, number]> = [];
      let bytes = 0;
      for (let b = 0; b < home.versions.length; b++) {
        if (home.versions[b] <= handle.known[b]) continue;
        handle.known[b] = home.versions[b];
        const offset = b * SEGMENT_BLOCK_BYTES;
        const length = Math.min(SEGMENT_BLOCK_BYTES, home.size - offset);
        blocks.push([offset, length]);
        bytes += length;
      }
      const data = new Uint8Array(bytes);
      let at = 0;
      for (const [offset, length] of blocks) {
        data.set(home.shadow.subarray(offset, offset + length), at);
        at += length;
      }
      return { result: { blocks }, data };
    });
  }

  /** SegmentPush: writes the peer's node made (word runs); applied before the answer. */
  push(peerSession: number, id: number, runs: unknown, data: Uint8Array): Promise<null> {
    const handle = this.handle(peerSession, id);
    const home = handle.home;
    const checked = checkRuns(runs, data.byteLength, home.size);
    return this.inTurn(home, async () => {
      // Changes made here (or by others) first, so the peer's knowledge of each block stays true.
      await this.refresh(home);
      let at = 0;
      const touched = new Set<number>();
      for (const [offset, length] of checked) {
        const bytes = data.subarray(at, at + length);
        at += length;
        home.device.queue.writeBuffer(home.buffer as unknown as GPUBuffer, offset, bytes);
        home.shadow.set(bytes, offset);
        for (let b = Math.floor(offset / SEGMENT_BLOCK_BYTES); b * SEGMENT_BLOCK_BYTES < offset + length; b++) touched.add(b);
      }
      for (const b of touched) {
        const current = handle.known[b] === home.versions[b];
        home.versions[b] = ++home.clock;
        // The peer has the block as it is now only if it had it before its own writes.
        if (current) handle.known[b] = home.versions[b];
      }
      // Visible to this node's processes (and the next pull's read) once the writes have run.
      await home.device.queue.onSubmittedWorkDone();
      return null;
    });
  }

  /** SegmentClose. */
  close(peerSession: number, id: number): null {
    const handle = this.handles.get(id);
    if (handle && handle.peerSession === peerSession) this.drop(handle);
    return null;
  }

  /** A peer's control session ended: its handles close. */
  peerGone(peerSession: number): void {
    for (const handle of [...this.handles.values()]) if (handle.peerSession === peerSession) this.drop(handle);
  }

  private handle(peerSession: number, id: number): Handle {
    const handle = this.handles.get(id);
    if (!handle || handle.peerSession !== peerSession) throw new GpunixError(ErrorCodes.BAD_OPTION, `no open segment ${id} on this session`);
    return handle;
  }

  private drop(handle: Handle): void {
    this.handles.delete(handle.id);
    const home = handle.home;
    home.handles.delete(handle);
    if (home.handles.size > 0) return;
    this.homes.delete(`${home.tenant}\u0000${home.name}`);
    // The holder's end detaches it: the last detach anywhere frees the segment.
    void this.deps.kernel.kill(home.holder.pid).catch(() => {});
    this.deps.log('info', 'no remote node attaches the shared segment any more', { tenant: home.tenant, segment: home.name });
  }

  private async makeHome(tenant: string, name: string, size: number): Promise<Home> {
    const holder = await this.deps.kernel.spawn({ tenant, name: `segment ${name} (remote nodes)`, priority: 'normal' });
    try {
      const adapter = await holder.gpu.requestAdapter();
      if (!adapter) throw new GpunixError(ErrorCodes.NO_DEVICE, 'no adapter for the segment holder');
      const device = (await adapter.requestDevice()) as unknown as VirtualDevice;
      const buffer = (device as unknown as { gpunix: { attachShared(name: string, size: number): GPUBuffer } }).gpunix.attachShared(name, size) as unknown as VirtualBuffer;
      const blocks = Math.ceil(size / SEGMENT_BLOCK_BYTES);
      return { tenant, name, size, holder, device, buffer, shadow: new Uint8Array(size), versions: new Float64Array(blocks), clock: 0, turn: Promise.resolve(), handles: new Set() };
    } catch (error) {
      void this.deps.kernel.kill(holder.pid).catch(() => {});
      throw error instanceof GpunixError ? error : new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}": ${(error as Error).message}`);
    }
  }

  /** Reads the segment (after the work given to the device so far) and versions the blocks that changed. */
  private async refresh(home: Home): Promise<void> {
    const data = await home.device.readInOrder(home.buffer);
    if (!data) throw new GpunixError(ErrorCodes.BUSY, `shared segment "${home.name}" could not be read`);
    for (let b = 0; b < home.versions.length; b++) {
      const offset = b * SEGMENT_BLOCK_BYTES;
      const end = Math.min(offset + SEGMENT_BLOCK_BYTES, home.size);
      if (Buffer.compare(data.subarray(offset, end), home.shadow.subarray(offset, end)) === 0) continue;
      home.shadow.set(data.subarray(offset, end), offset);
      home.versions[b] = ++home.clock;
    }
  }

  private inTurn<T>(home: Home, body: () => Promise<T>): Promise<T> {
    const run = home.turn.then(body, body);
    home.turn = run.catch(() => undefined);
    return run;
  }
}

/** Checks SegmentPush runs: word-aligned, in order, inside the segment, adding up to the data. */
function checkRuns(runs: unknown, bytes: number, size: number): Array<[number, number]> {
  if (!Array.isArray(runs)) throw new GpunixError(ErrorCodes.BAD_OPTION, 'SegmentPush.runs must be an array of [offset, length]');
  let total = 0;
  let end = 0;
  const out: Array<[number, number]> = [];
  for (const run of runs) {
    const [offset, length] = Array.isArray(run) ? run : [];
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset % 4 !== 0 || length % 4 !== 0 || length <= 0 || offset < end || offset + length > size) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `SegmentPush: run ${JSON.stringify(run)} is not a word-aligned range after the previous one inside ${size} bytes`);
    }
    out.push([offset, length]);
    total += length;
    end = offset + length;
  }
  if (total !== bytes) throw new GpunixError(ErrorCodes.BAD_OPTION, `SegmentPush: the runs add up to ${total} bytes, the data has ${bytes}`);
  return out;
}
