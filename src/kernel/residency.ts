// Where one buffer's contents live: on the device in a real GPUBuffer, or evicted to host memory.
// The virtual buffer a program holds stays the same; the real buffer behind it may be replaced.
// Every kernel use of a buffer goes through `touch()`, which brings it back first if it was
// evicted, and cancels an eviction still in progress (the program is using it).

import { globals } from 'webgpu';
import type { PhysicalDevice } from '../device/physicalDevice.js';
import type { ResourceLedger } from './ledger.js';
import type { Proc } from './proc.js';
import { Evicted, NO_SPILL, SpillSettings, SpillStore } from './spill.js';

const { GPUBufferUsage: BufferUsage, GPUMapMode: MapMode } = globals as unknown as {
  GPUBufferUsage: typeof GPUBufferUsage;
  GPUMapMode: typeof GPUMapMode;
};

/**
 * The usage the real buffer gets: the program's, plus COPY_SRC so the kernel can copy the
 * contents out for eviction. MAP_READ buffers (which allow nothing but COPY_DST) are read by
 * mapping instead; usage 0 stays 0 so that Dawn still refuses it. The program's own view
 * (`buffer.usage`, and the copies it may make) stays that of its descriptor.
 */
export function realUsageFor(usage: number): number {
  if (usage === 0 || usage & BufferUsage.MAP_READ) return usage;
  return usage | BufferUsage.COPY_SRC;
}

/**
 * Swap traffic, for stats and the oversubscription benchmark: bytes moved and the time spent
 * moving them. A transfer's moving time runs from when the device reached it (the work queued
 * ahead of it had completed, or the kernel started it, whichever is later) until its bytes have
 * arrived: in host memory (out), or on the device with the upload executed (in). The time it
 * waited behind work already on the device's one queue is counted apart (nsWaitOut, nsWaitIn):
 * it is other processes' device time, not transfer. The same rule the dispatcher uses to credit
 * device time (done − max(issued, previous fence done)). Per direction, time during which several
 * transfers were in progress counts once. Evictions that gave up count neither bytes nor time;
 * a restore's time is added when its upload has completed, shortly after its bytes.
 */
export interface SwapCounters {
  bytesOut: number;
  nsOut: number;
  bytesIn: number;
  nsIn: number;
  /**
   * Time during which swap transfers were in progress but every one of them was still queued
   * behind work queued before it (other processes' atoms): the rest of their end-to-end time.
   */
  nsWaitOut: number;
  nsWaitIn: number;
  /** Evicted contents held in host memory now (bytes; including those being written to spill files). */
  hostBytes: number;
  /** Evicted contents in spill files now: bytes, and files (see spill.ts). */
  spilledBytes: number;
  spillFiles: number;
  /** Bytes written to spill files so far. */
  bytesSpilled: number;
  /** Spill writes (or read-backs) that failed; their contents stayed in host memory (or in the file). */
  spillFailures: number;
  /** Evicted contents held in another node's host memory now (the remote tier, spill.ts), and bytes sent there so far. */
  remoteBytes: number;
  bytesToRemote: number;
}

/** Fresh swap counters, all zero. */
export function newSwapCounters(): SwapCounters {
  return { bytesOut: 0, nsOut: 0, bytesIn: 0, nsIn: 0, nsWaitOut: 0, nsWaitIn: 0, hostBytes: 0, spilledBytes: 0, spillFiles: 0, bytesSpilled: 0, spillFailures: 0, remoteBytes: 0, bytesToRemote: 0 };
}

const nowNs = (): number => performance.now() * 1e6;

type Span = [fromNs: number, toNs: number];

/** How far back a swap clock remembers spans: a transfer longer than this may be counted twice over. */
const SWAP_CLOCK_HORIZON_NS = 10e9;

/**
 * One direction's clock over a SwapCounters: the union of its transfers' spans, so that time
 * during which several transfers were in progress counts once.
 */
class SwapClock {
  /** Disjoint spans already counted, within the horizon. */
  private counted: Span[] = [];

  /** Counts a finished transfer's span; returns the ns it adds (the part no counted span covers). */
  add(from: number, to: number): number {
    if (!(to > from)) return 0;
    let added = to - from;
    const merged: Span = [from, to];
    const kept: Span[] = [];
    for (const span of this.counted) {
      if (span[1] < to - SWAP_CLOCK_HORIZON_NS) continue;
      if (span[1] < from || span[0] > to) {
        kept.push(span);
        continue;
      }
      added -= Math.min(span[1], to) - Math.max(span[0], from);
      merged[0] = Math.min(merged[0], span[0]);
      merged[1] = Math.max(merged[1], span[1]);
    }
    kept.push(merged);
    this.counted = kept;
    return added;
  }
}

interface SwapClocks {
  /** Moving time per direction. */
  out: SwapClock;
  in: SwapClock;
  /** End-to-end time per direction (start to arrival), and its total so far. */
  spanOut: SwapClock;
  spanIn: SwapClock;
  totalOut: number;
  totalIn: number;
}

const clocks = new WeakMap<SwapCounters, SwapClocks>();
function clocksOf(swap: SwapCounters): SwapClocks {
  let set = clocks.get(swap);
  if (!set) clocks.set(swap, (set = { out: new SwapClock(), in: new SwapClock(), spanOut: new SwapClock(), spanIn: new SwapClock(), totalOut: 0, totalIn: 0 }));
  return set;
}

/** When the work queued on `device` so far has completed (ns): where a transfer queued now can start. */
function queueAhead(device: GPUDevice): Promise<number> {
  return device.queue.onSubmittedWorkDone().then(nowNs, nowNs);
}

/**
 * Counts one transfer: it was started at `startedNs`, handed to the device's queue at `queuedNs`
 * (the host-side work before that — reading a spill file, copying into Dawn's staging — is
 * moving), reached by the device once the work queued ahead of it completed (`reachedNs`), and
 * arrived at `arrivedNs`. Between queuing and reaching it waited behind others' work.
 */
function countTransfer(swap: SwapCounters, direction: 'out' | 'in', startedNs: number, queuedNs: number, reachedNs: number, arrivedNs: number): void {
  const queued = Math.min(arrivedNs, Math.max(startedNs, queuedNs));
  const reached = Math.min(arrivedNs, Math.max(queued, reachedNs));
  const set = clocksOf(swap);
  const moving = direction === 'out' ? set.out : set.in;
  const moved = moving.add(startedNs, queued) + moving.add(reached, arrivedNs);
  // Moving spans lie inside end-to-end spans, so the unions' difference is the time when
  // transfers were in progress and none was moving.
  if (direction === 'out') {
    set.totalOut += set.spanOut.add(startedNs, arrivedNs);
    swap.nsOut += moved;
    swap.nsWaitOut = Math.max(0, set.totalOut - swap.nsOut);
  } else {
    set.totalIn += set.spanIn.add(startedNs, arrivedNs);
    swap.nsIn += moved;
    swap.nsWaitIn = Math.max(0, set.totalIn - swap.nsIn);
  }
}

/**
 * Copies out go through at most this many staging buffers per device at a time, each reused:
 * making (and faulting in) a fresh staging buffer per eviction cost more than the copy itself.
 * Several let the device fill one while another is read, and let one round of evictions queue
 * its copies together (each further wait for a slot would queue behind newer work).
 */
const STAGING_SLOTS = 4;
/** Copies larger than this get a staging buffer of their own, freed after use (slots stay small). */
const STAGING_SLOT_MAX_BYTES = 16 * 1024 * 1024;
/** Pooled staging buffers and host memory unused for this long are freed. */
const POOL_IDLE_MS = 2000;

/** Staging buffers for copying buffers out of one device: a few reusable slots, handed out in turn. */
class StagingPool {
  /** Idle slot buffers (null: a slot with no buffer yet); the others are lent out. */
  private readonly idle: Array<GPUBuffer | null> = Array(STAGING_SLOTS).fill(null);
  private readonly waiting: Array<(buffer: GPUBuffer | null) => void> = [];
  private lastUsedMs = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly physical: PhysicalDevice) {}

  /**
   * A MAP_READ staging buffer of at least `size` bytes, unmapped: at once when one is free (so
   * that the copy can be queued before whatever the caller queues next), else a promise of the
   * next one given back with `release`. Large copies get one of their own at once.
   */
  acquire(size: number): GPUBuffer | Promise<GPUBuffer> {
    if (size > STAGING_SLOT_MAX_BYTES) return this.create(size);
    if (this.idle.length > 0) return this.fit(this.idle.pop()!, size);
    return new Promise<GPUBuffer | null>((resolve) => this.waiting.push(resolve)).then((slot) => this.fit(slot, size));
  }

  /** `slot`'s buffer if it is large enough, else a new one in its place. */
  private fit(slot: GPUBuffer | null, size: number): GPUBuffer {
    this.lastUsedMs = performance.now();
    if (slot && slot.size >= size) return slot;
    slot?.destroy();
    return this.create(size);
  }

  /** Takes back a buffer from `acquire`, unmapped (or destroyed, when the copy failed). */
  release(buffer: GPUBuffer, failed: boolean): void {
    if (buffer.size > STAGING_SLOT_MAX_BYTES) {
      buffer.destroy();
      return;
    }
    this.lastUsedMs = performance.now();
    const slot = failed || this.physical.lostReason !== null ? (buffer.destroy(), null) : buffer;
    const next = this.waiting.shift();
    if (next) {
      next(slot);
      return;
    }
    this.idle.push(slot);
    this.timer ??= setTimeout(() => this.trim(), POOL_IDLE_MS).unref();
  }

  private create(size: number): GPUBuffer {
    return this.physical.device.createBuffer({ size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST, label: 'gpunix-copy-out' });
  }

  /** Frees the idle slots' buffers once none has been used for POOL_IDLE_MS. */
  private trim(): void {
    this.timer = null;
    const idleForMs = performance.now() - this.lastUsedMs;
    if (idleForMs < POOL_IDLE_MS && this.physical.lostReason === null) {
      this.timer = setTimeout(() => this.trim(), POOL_IDLE_MS - idleForMs).unref();
      return;
    }
    for (let i = 0; i < this.idle.length; i++) {
      this.idle[i]?.destroy();
      this.idle[i] = null;
    }
  }
}

/** Most bytes of freed host copies a kernel keeps for later evictions. */
const HOST_POOL_BYTES = 64 * 1024 * 1024;

/**
 * Host memory for evicted contents, recycled: copying into memory already faulted in is several
 * times faster than into a fresh allocation (`slice`), and makes no garbage. Arrays are kept by
 * exact size and always overwritten whole before use, so no process's bytes reach another; an
 * array given back must have no other holder.
 */
class HostPool {
  private readonly free = new Map<number, Array<Uint8Array<ArrayBuffer>>>();
  private bytes = 0;
  private lastUsedMs = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** An array of `size` bytes with unspecified contents, to be overwritten whole. */
  take(size: number): Uint8Array<ArrayBuffer> {
    this.lastUsedMs = performance.now();
    const recycled = this.free.get(size)?.pop();
    if (!recycled) return new Uint8Array(size);
    this.bytes -= size;
    return recycled;
  }

  give(array: Uint8Array<ArrayBuffer>): void {
    if (this.bytes + array.byteLength > HOST_POOL_BYTES) return;
    this.lastUsedMs = performance.now();
    let list = this.free.get(array.byteLength);
    if (!list) this.free.set(array.byteLength, (list = []));
    list.push(array);
    this.bytes += array.byteLength;
    this.timer ??= setTimeout(() => this.trim(), POOL_IDLE_MS).unref();
  }

  private trim(): void {
    this.timer = null;
    const idleForMs = performance.now() - this.lastUsedMs;
    if (idleForMs < POOL_IDLE_MS) {
      this.timer = setTimeout(() => this.trim(), POOL_IDLE_MS - idleForMs).unref();
      return;
    }
    this.free.clear();
    this.bytes = 0;
  }
}

const hostPools = new WeakMap<SwapCounters, HostPool>();
function hostPoolOf(swap: SwapCounters): HostPool {
  let pool = hostPools.get(swap);
  if (!pool) hostPools.set(swap, (pool = new HostPool()));
  return pool;
}

const spillStores = new WeakMap<SwapCounters, SpillStore>();
/**
 * The store that keeps evicted contents for the owner of `swap` (a memory manager), made with
 * `settings` on first call; later calls return it. Residencies find it through their counters.
 */
export function spillStoreOf(swap: SwapCounters, settings: SpillSettings = NO_SPILL): SpillStore {
  let store = spillStores.get(swap);
  if (!store) spillStores.set(swap, (store = new SpillStore(settings, swap, hostPoolOf(swap))));
  return store;
}

const stagingPools = new WeakMap<PhysicalDevice, StagingPool>();
function stagingPoolOf(physical: PhysicalDevice): StagingPool {
  let pool = stagingPools.get(physical);
  if (!pool) stagingPools.set(physical, (pool = new StagingPool(physical)));
  return pool;
}

export class BufferResidency {
  /** Changes whenever the real buffer is replaced or dropped: anything made from the old one is stale. */
  generation = 0;
  lastUsedNs = performance.now() * 1e6;
  /** Ledger token of the counted buffer; null for buffers that hold no memory (invalid ones). */
  token: object | null = null;
  /** The contents while evicted: in host memory or a spill file (spill.ts). */
  private evicted: Evicted | null = null;
  /** Told after a restore put bytes back on the device (the memory manager rebalances). */
  onRestore: ((residency: BufferResidency) => void) | null = null;
  private eviction: { cancelled: boolean; mapping: boolean } | null = null;

  constructor(
    /** The device the contents are (or go back) on; migration changes it. */
    public physical: PhysicalDevice,
    private real: GPUBuffer | null,
    readonly size: number,
    readonly realUsage: number,
    readonly label: string,
    readonly owner: Proc,
    private readonly ledger: ResourceLedger,
    private readonly swap: SwapCounters,
  ) {}

  get resident(): boolean {
    return this.real !== null;
  }

  get evicting(): boolean {
    return this.eviction !== null;
  }

  /** The real buffer when resident, without touching it (for states the program reads). */
  peek(): GPUBuffer | null {
    return this.real;
  }

  /** The real buffer for a use now: restored first if evicted; an eviction in progress is called off. */
  touch(): GPUBuffer {
    this.lastUsedNs = performance.now() * 1e6;
    this.owner.activity++;
    if (this.eviction) {
      this.eviction.cancelled = true;
      // The kernel's own read mapping of a MAP_READ buffer must not stand in the program's way.
      if (this.eviction.mapping && this.real?.mapState !== 'unmapped') this.real?.unmap();
    }
    if (!this.real) this.restore();
    return this.real!;
  }

  /** True when the buffer may be evicted now: resident, counted, unmapped, copyable whole. */
  evictable(): boolean {
    return (
      this.real !== null &&
      this.token !== null &&
      this.eviction === null &&
      this.real.mapState === 'unmapped' &&
      this.size > 0 &&
      this.size % 4 === 0
    );
  }

  /**
   * Copies the contents to host memory and frees the device memory. Gives up (false) when the
   * owner did anything meanwhile: its work might have changed the contents being copied (`forMove`:
   * its process is held for a migration, and only a use of this buffer counts).
   */
  async evict(forMove = false): Promise<boolean> {
    if (!this.evictable()) return false;
    const real = this.real!;
    const eviction = { cancelled: false, mapping: false };
    this.eviction = eviction;
    const activity = this.owner.activity;
    const startedNs = nowNs();
    const ahead = queueAhead(this.physical.device);
    const data = await this.copyOut(real, eviction);
    const arrivedNs = nowNs();
    // Already settled: the queue completes in order, so the work ahead finished before the copy.
    const reachedNs = await ahead;
    this.eviction = null;
    const owner = this.owner;
    // A process being moved is held: its queued work does not run, and a use of this buffer
    // meanwhile calls the copy off (touch), so what it did with its other buffers changes nothing here.
    const stillIdle = owner.inFlightGroups === 0 && (forMove || ((owner.queuedItems === 0 || owner.suspended) && owner.activity === activity));
    if (!data || eviction.cancelled || !stillIdle || this.real !== real || this.token === null) {
      if (data) hostPoolOf(this.swap).give(data);
      return false;
    }
    this.evicted = spillStoreOf(this.swap).hold(data, owner);
    this.real = null;
    this.generation++;
    owner.backingEpoch++;
    this.swap.bytesOut += this.size;
    countTransfer(this.swap, 'out', startedNs, startedNs, reachedNs, arrivedNs);
    real.destroy();
    this.ledger.setResident(this.token, false);
    return true;
  }

  /**
   * The bytes of `real`, read through one of the device's staging buffers (or, for MAP_READ
   * buffers, by mapping it); null when the read failed or `eviction` was called off meanwhile.
   */
  private async copyOut(real: GPUBuffer, eviction: { cancelled: boolean; mapping: boolean }): Promise<Uint8Array<ArrayBuffer> | null> {
    try {
      if (this.realUsage & BufferUsage.MAP_READ) {
        eviction.mapping = true;
        await real.mapAsync(MapMode.READ);
        const data = eviction.cancelled ? null : this.hostCopy(real.getMappedRange());
        real.unmap();
        return data;
      }
      const device = this.physical.device;
      const pool = stagingPoolOf(this.physical);
      const acquired = pool.acquire(this.size);
      const staging = acquired instanceof Promise ? await acquired : acquired;
      // Called off while waiting for a staging buffer: no copy to make.
      if (eviction.cancelled || this.real !== real) {
        pool.release(staging, false);
        return null;
      }
      let data: Uint8Array<ArrayBuffer> | null = null;
      try {
        const encoder = device.createCommandEncoder();
        encoder.copyBufferToBuffer(real, 0, staging, 0, this.size);
        device.queue.submit([encoder.finish()]);
        await staging.mapAsync(MapMode.READ, 0, this.size);
        data = this.hostCopy(staging.getMappedRange(0, this.size));
        staging.unmap();
      } finally {
        pool.release(staging, data === null);
      }
      return data;
    } catch {
      return null;
    }
  }

  /** A copy of `mapped` (this buffer's size) in host memory of the kernel's. */
  private hostCopy(mapped: ArrayBuffer): Uint8Array<ArrayBuffer> {
    const data = hostPoolOf(this.swap).take(this.size);
    data.set(new Uint8Array(mapped, 0, this.size));
    return data;
  }

  /**
   * A copy of the contents, wherever they are (checkpoints); the buffer stays where it is. The
   * owner must be quiet (suspended, nothing on the device), as for an eviction.
   */
  async readContents(): Promise<Uint8Array | null> {
    if (this.evicted) return spillStoreOf(this.swap).peek(this.evicted);
    if (!this.real || this.eviction || this.real.mapState !== 'unmapped' || this.size % 4 !== 0) return null;
    const eviction = { cancelled: false, mapping: false };
    this.eviction = eviction;
    const data = await this.copyOut(this.real, eviction);
    this.eviction = null;
    return eviction.cancelled ? null : data;
  }

  /**
   * A copy of the contents as the device queue has them now, for a process moving to another
   * node while it runs: unlike readContents, the owner's later use does not call it off (what the
   * owner writes after this point is sent again). Null for buffers the kernel cannot read without
   * mapping them (MAP_READ: mapping would stand in the program's way), mapped ones, and sizes not
   * a multiple of 4; also when the real buffer was replaced meanwhile (evicted): try again.
   */
  async snapshot(): Promise<Uint8Array | null> {
    if (this.evicted) return spillStoreOf(this.swap).peek(this.evicted);
    const real = this.real;
    if (!real || real.mapState !== 'unmapped' || this.size % 4 !== 0 || this.realUsage & BufferUsage.MAP_READ) return null;
    return this.copyOut(real, { cancelled: false, mapping: false });
  }

  /**
   * snapshot() of bytes [offset, offset + size) (multiples of 4, inside the buffer), with no host
   * copy: the range is copied into one of the device's pooled staging buffers and `use` gets a view
   * of its mapped range, valid until the promise `use` returns settles (then the staging buffer is
   * unmapped and reused). A move streams a buffer this way piece by piece: fresh multi-megabyte
   * staging buffers and host arrays cost more (page faults) than the copies themselves. Resolves
   * false, without calling `use`, where snapshot() gives null (MAP_READ, mapped, replaced meanwhile).
   */
  async snapshotRange(offset: number, size: number, use: (bytes: Uint8Array) => void | Promise<void>): Promise<boolean> {
    if (this.evicted) {
      // Evicted meanwhile (the mover reads an evicted buffer whole with snapshot()): rare, so simple.
      const whole = await spillStoreOf(this.swap).peek(this.evicted);
      await use(whole.subarray(offset, offset + size));
      return true;
    }
    const real = this.real;
    if (!real || real.mapState !== 'unmapped' || this.size % 4 !== 0 || this.realUsage & BufferUsage.MAP_READ) return false;
    const pool = stagingPoolOf(this.physical);
    const acquired = pool.acquire(size);
    const staging = acquired instanceof Promise ? await acquired : acquired;
    // Replaced (evicted) or destroyed while waiting for a staging buffer: nothing to copy from.
    if (this.real !== real || this.token === null || real.mapState !== 'unmapped') {
      pool.release(staging, false);
      return false;
    }
    try {
      const device = this.physical.device;
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(real, offset, staging, 0, size);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(MapMode.READ, 0, size);
    } catch {
      pool.release(staging, true);
      return false;
    }
    try {
      await use(new Uint8Array(staging.getMappedRange(0, size)));
    } finally {
      staging.unmap();
      pool.release(staging, false);
    }
    return true;
  }

  /**
   * Replaces the contents with `data` (exactly `size` bytes) before the owner's program uses the
   * buffer (a process that moved here): kept in host memory as if evicted, and put on the device
   * by the ordinary restore at its first use.
   */
  adoptContents(data: Uint8Array<ArrayBuffer>): void {
    if (data.byteLength !== this.size) throw new RangeError(`adoptContents: ${data.byteLength} bytes for a buffer of ${this.size}`);
    if (this.eviction) this.eviction.cancelled = true;
    if (this.evicted) spillStoreOf(this.swap).drop(this.evicted);
    this.evicted = spillStoreOf(this.swap).hold(data, this.owner);
    const real = this.real;
    this.real = null;
    this.generation++;
    this.owner.backingEpoch++;
    if (real) {
      real.destroy();
      if (this.token) this.ledger.setResident(this.token, false);
    }
  }

  /**
   * Brings the contents back into a new real buffer, synchronously: the upload is queued ahead of
   * anything that can use the new buffer. Buffers the queue may write (COPY_DST, not mappable)
   * get it by writeBuffer; others by mapping at creation, whose copy onto the device is slower.
   * The swap clock runs until the device has executed the upload.
   */
  private restore(): void {
    const startedNs = nowNs();
    const device = this.physical.device;
    const ahead = queueAhead(device);
    // From host memory, or read back from its spill file (synchronously; the file is removed).
    const { data: host, recycle } = spillStoreOf(this.swap).take(this.evicted!);
    let real: GPUBuffer;
    if ((this.realUsage & BufferUsage.COPY_DST) !== 0 && (this.realUsage & (BufferUsage.MAP_READ | BufferUsage.MAP_WRITE)) === 0) {
      real = device.createBuffer({ size: this.size, usage: this.realUsage, label: this.label });
      device.queue.writeBuffer(real, 0, host);
    } else {
      real = device.createBuffer({ size: this.size, usage: this.realUsage, label: this.label, mappedAtCreation: true });
      new Uint8Array(real.getMappedRange()).set(host);
      real.unmap();
    }
    const queuedNs = nowNs();
    this.real = real;
    this.evicted = null;
    if (recycle) hostPoolOf(this.swap).give(host); // copied: writeBuffer and the mapped range took their own
    this.generation++;
    this.owner.backingEpoch++;
    this.swap.bytesIn += this.size;
    const swap = this.swap;
    const arrived = (): void => {
      const arrivedNs = nowNs();
      void ahead.then((reachedNs) => countTransfer(swap, 'in', startedNs, queuedNs, reachedNs, arrivedNs));
    };
    device.queue.onSubmittedWorkDone().then(arrived, arrived);
    if (this.token) this.ledger.setResident(this.token, true);
    this.onRestore?.(this);
  }

  /**
   * Frees everything, resident or not. A destroyed real buffer stays behind it, so that later
   * uses by the program fail exactly as WebGPU's destroyed buffer does.
   */
  destroy(): void {
    if (this.eviction) this.eviction.cancelled = true;
    this.token = null;
    if (this.evicted) spillStoreOf(this.swap).drop(this.evicted);
    this.evicted = null;
    // An evicted buffer has no real one left: a stand-in of the same shape is made to be destroyed.
    this.real ??= this.physical.device.createBuffer({ size: this.size, usage: this.realUsage, label: this.label });
    this.real.destroy();
  }
}

/**
 * The residency of a process's attachment to a shared segment: always on the device (segments
 * are pinned), never counted per process; destroying it detaches, and the last detach frees it.
 */
export class SharedResidency extends BufferResidency {
  private detached = false;
  constructor(
    physical: PhysicalDevice,
    real: GPUBuffer,
    usage: number,
    label: string,
    owner: Proc,
    ledger: ResourceLedger,
    swap: SwapCounters,
    private readonly detach: () => void,
  ) {
    super(physical, real, real.size, usage, label, owner, ledger, swap);
  }
  override evictable(): boolean {
    return false;
  }
  override destroy(): void {
    if (this.detached) return;
    this.detached = true;
    this.detach();
  }
}
