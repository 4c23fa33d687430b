// The client's side of a session's shared-memory region (docs/daemon.md, "Bulk data"): for a
// program on the daemon's machine (a Unix socket), buffer contents travel through memory the
// daemon made and both have open (a sealed memory file whose descriptor it handed over, which both
// map, or a tmpfs file opened by name, moved with pwrite/pread), not through the socket. The client maps it
// (src/sharedMapping.ts) and copies with memcpy; where it cannot, bytes go in and out with
// pwrite/pread on the descriptor, a copy in the kernel that costs several times as much.
//
// The region is a ring of allocations, each freed on its own, reused in order:
// - a write (writeBuffer data, a mapped range at unmap) is put in the region and its message sent;
//   the daemon reads it when it runs the message, which is before it answers any request sent
//   later, so the space is freed when the reply to a fence (a Ping sent after it) arrives;
// - a read (mapAsync) reserves space the daemon fills before its reply; it is freed at unmap (or
//   when the reply comes to a mapping already abandoned).
// When the ring has no room a transfer goes in frames as before (never waits: writeBuffer is
// synchronous), and the region is asked to grow for next time.
//
// The region belongs to the node that made it: while the process moves to another node (MoveBegin)
// none is chosen, and once it has moved (Moved) it is closed and a new one is asked of the new node.

import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { GpunixError } from '../errors.js';
import { SharedMapping } from '../sharedMapping.js';
import { memoryCalls } from '../libc.js';
import type { Channel } from './channel.js';

/** Transfers smaller than this go in frames: a region round costs two system calls and a fence. */
export const BULK_MIN_BYTES = 64 * 1024;
/** The region asked for at first (bytes; tmpfs pages cost memory only once touched). */
const INITIAL_REGION_BYTES = 16 * 1024 * 1024;
/** The most address space reserved for a region's growth (the daemon's sharedMemory.maxBytes, up to this). */
const MAX_RESERVE_BYTES = 1024 * 1024 * 1024;
/** Set to "0" to keep bulk data in frames on a Unix socket too (benchmarks compare both paths). */
export const SHARED_MEMORY_ENV = 'GPUNIX_SHARED_MEMORY';

/** A span of the region in use. */
export interface Allocation {
  readonly at: number;
  readonly size: number;
  /** Freed; the ring reclaims it once every allocation before it is freed too. */
  freed: boolean;
}

export class BulkRegion {
  private fd: number;
  /** The region's size as the daemon last confirmed it. */
  private size: number;
  /** Live allocations, oldest first. */
  private readonly live: Allocation[] = [];
  /** Written allocations not yet covered by a fence sent. */
  private unfenced: Allocation[] = [];
  private fenceInFlight = false;
  /** A BulkRegion (grow) request is in flight. */
  private growing = false;
  /** The transfer size a grow asked for meanwhile is for (0: none). */
  private growAfter = 0;
  /** The most the daemon will give (it gave less than asked), once known. */
  private cappedAt: number | null = null;
  /** Bytes moved each way, for tests and benchmarks. */
  bytesWritten = 0;
  bytesRead = 0;

  private constructor(
    private readonly channel: Channel,
    fd: number,
    size: number,
    /** The region mapped into this process (null: pread/pwrite on fd). */
    private mapping: SharedMapping | null,
  ) {
    this.fd = fd;
    this.size = size;
  }

  /**
   * Asks the daemon for a region and opens it; null (bulk data stays in frames) when the daemon
   * has none to give (an older daemon, a TCP/TLS session, no shared-memory directory) or it
   * cannot be opened here. The request is pipelined: nothing waits for it.
   */
  static async attach(channel: Channel): Promise<BulkRegion | null> {
    if (process.env[SHARED_MEMORY_ENV] === '0' || !onUnixSocket(channel) || channel.session.welcome.version < 3) return null;
    let reply;
    try {
      reply = await channel.request('BulkRegion', { size: INITIAL_REGION_BYTES });
    } catch {
      return null;
    }
    const { path, size, handoff, limit } = reply.result as { path: string; size: number; handoff?: { socket: string; key: string }; limit?: number };
    let fd = -1;
    try {
      // A memory file comes as its descriptor, from the daemon's handoff socket; a tmpfs file is opened by name.
      fd = handoff ? await receiveDescriptor(handoff.socket, handoff.key) : openSync(path, constants.O_RDWR | constants.O_NOFOLLOW);
      const stat = fstatSync(fd);
      if (!stat.isFile() || stat.size < size) throw new Error(`${path} is not the region the daemon made`);
    } catch {
      if (fd >= 0) closeSync(fd);
      channel.post('BulkRegionOpened', { ok: false });
      return null;
    }
    channel.post('BulkRegionOpened', { ok: true });
    // Address space for all it may grow to (at most 1 GiB here), so growing re-faults nothing (sharedMapping.ts).
    const reserve = Math.min(Number.isSafeInteger(limit) ? limit! : size, MAX_RESERVE_BYTES);
    // Only a handed-over memory file is mapped: a tmpfs file's pages are not reserved by ftruncate,
    // and a touch of one a full tmpfs cannot back is SIGBUS (pwrite/pread merely fail with ENOSPC).
    const region = new BulkRegion(channel, fd, size, handoff ? SharedMapping.map(fd, size, reserve) : null);
    void channel.session.closed.then(() => region.close());
    return region;
  }

  /** Closed (the session ended): nothing more is read or written. */
  get closed(): boolean {
    return this.fd < 0;
  }

  get isOpen(): boolean {
    return this.fd >= 0 && this.channel.session.isOpen;
  }

  /** Takes `size` bytes of the ring; null when there is no room (and asks for a larger region). */
  allocate(size: number): Allocation | null {
    if (!this.isOpen) return null;
    const at = this.place(size);
    if (at === null) {
      this.grow(size);
      return null;
    }
    const allocation: Allocation = { at, size, freed: false };
    this.live.push(allocation);
    return allocation;
  }

  /** Where `size` bytes fit after the newest allocation (wrapping to 0 past the end), or null. */
  private place(size: number): number | null {
    if (size <= 0 || size > this.size) return null;
    if (this.live.length === 0) return 0;
    const oldest = this.live[0].at;
    const newest = this.live[this.live.length - 1];
    const end = newest.at + newest.size;
    if (end > oldest) {
      // Not wrapped: the free space is [end, size) and [0, oldest).
      if (this.size - end >= size) return end;
      return oldest >= size ? 0 : null;
    }
    // Wrapped: the free space is [end, oldest).
    return oldest - end >= size ? end : null;
  }

  /** Frees an allocation; the ring moves past every freed allocation at its oldest end. */
  free(allocation: Allocation): void {
    allocation.freed = true;
    while (this.live.length > 0 && this.live[0].freed) this.live.shift();
  }

  /** Puts `bytes` in the region; null when there is no room (send them in a frame instead). */
  put(bytes: Uint8Array): Allocation | null {
    const allocation = this.allocate(bytes.byteLength);
    if (!allocation) return null;
    try {
      this.write(allocation.at, bytes);
    } catch (error) {
      this.free(allocation);
      this.fail(error);
      return null;
    }
    return allocation;
  }

  /** Writes `bytes` at `at` (inside an allocation of ours). */
  write(at: number, bytes: Uint8Array): void {
    if (this.mapping) {
      this.mapping.bytes.set(bytes, at);
      this.bytesWritten += bytes.byteLength;
      return;
    }
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
    this.bytesWritten += bytes.byteLength;
  }

  /**
   * Reads region bytes at `at` into `target` (one copy: the region straight into the program's
   * memory). Once the session has ended the region is closed and `target` is left as it is (a
   * range read after the device is lost holds zeros, as a lost device's mapped ranges may).
   */
  read(at: number, target: Uint8Array): void {
    if (this.fd < 0) return;
    if (this.mapping) {
      target.set(this.mapping.bytes.subarray(at, at + target.byteLength));
      this.bytesRead += target.byteLength;
      return;
    }
    let done = 0;
    while (done < target.byteLength) {
      const n = readSync(this.fd, target, done, target.byteLength - done, at + done);
      if (n === 0) throw new GpunixError('GPUNIX_E_DISCONNECTED', 'the shared-memory region ended early');
      done += n;
    }
    this.bytesRead += target.byteLength;
  }

  /**
   * The message naming `allocation`'s bytes has been sent: it is freed once the daemon has run it,
   * which a reply to any request sent later proves. A request the program makes in the same turn
   * (a mapAsync after a writeBuffer, say) serves (coveredBy); otherwise, at the turn's end, a
   * fence (a Ping) is sent, one at a time, covering everything sent before it.
   */
  sent(allocation: Allocation): void {
    this.unfenced.push(allocation);
    if (this.fenceScheduled) return;
    this.fenceScheduled = true;
    process.nextTick(this.fenceIfNeeded);
  }
  private fenceScheduled = false;
  private readonly fenceIfNeeded = (): void => {
    this.fenceScheduled = false;
    if (this.unfenced.length > 0 && !this.fenceInFlight && this.isOpen) this.fence();
  };

  /** `reply` answers a request sent after every allocation sent so far: it frees them when it settles. */
  coveredBy(reply: Promise<unknown>): void {
    if (this.unfenced.length === 0) return;
    const covered = this.unfenced;
    this.unfenced = [];
    const done = (): void => {
      for (const allocation of covered) this.free(allocation);
    };
    reply.then(done, done);
  }

  private fence(): void {
    this.fenceInFlight = true;
    const done = (): void => {
      this.fenceInFlight = false;
      if (this.unfenced.length > 0 && this.isOpen) this.fence();
    };
    const ping = this.channel.request('Ping', {});
    this.coveredBy(ping);
    ping.then(done, done);
  }

  /**
   * Asks for a region that holds a transfer of `size` twice over (a write and a read in flight);
   * pipelined, never waited for. Asked while a grow is in flight, it follows that one.
   */
  grow(size: number): void {
    if (!this.isOpen) return;
    if (this.growing) {
      this.growAfter = Math.max(this.growAfter, size);
      return;
    }
    let wanted = this.size;
    while (wanted < 2 * size) wanted *= 2;
    // The daemon gave less than asked before (its sharedMemory.maxBytes): no more is to be had.
    if (wanted <= this.size || (this.cappedAt !== null && wanted > this.cappedAt)) return;
    this.growing = true;
    this.channel.request('BulkRegion', { size: wanted }).then(
      (reply) => {
        this.growing = false;
        const size = (reply.result as { size: number }).size;
        if (size < wanted) this.cappedAt = size;
        if (size > this.size && this.mapping) {
          try {
            this.mapping.remap(size);
          } catch (error) {
            this.fail(error);
            return;
          }
        }
        this.size = Math.max(this.size, size);
        const next = this.growAfter;
        this.growAfter = 0;
        if (next > 0) this.grow(next);
      },
      () => {
        this.growing = false;
        this.cappedAt = this.size;
      },
    );
  }

  /** A region call failed (the file is gone?): bulk data goes in frames from now on. */
  private fail(error: unknown): void {
    process.emitWarning(`gpunix: the shared-memory region failed (${(error as Error).message}); buffer data goes through the socket from now on`);
    this.close();
  }

  close(): void {
    if (this.fd < 0) return;
    this.mapping?.close();
    this.mapping = null;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** How long the daemon may take to hand a region's descriptor over (it answers from its event loop). */
const HANDOFF_TIMEOUT_MS = 5_000;

/**
 * The descriptor the daemon offers under `key` on its handoff socket (src/daemon/regionHandoff.ts):
 * connects, sends the key, and waits for the descriptor without blocking this thread (the daemon
 * may run in this very process). Throws when none comes.
 */
export async function receiveDescriptor(socket: string, key: string): Promise<number> {
  const libc = memoryCalls();
  if (!libc) throw new Error('no libc calls here to receive a descriptor');
  const fd = libc.connectUnix(socket);
  if (fd === null) throw new Error(`cannot connect to ${socket}`);
  try {
    if (!libc.writeAll(fd, Buffer.from(`${key}\n`, 'latin1'))) throw new Error('cannot send the key');
    const deadline = Date.now() + HANDOFF_TIMEOUT_MS;
    for (let wait = 0; ; wait = Math.min(20, wait + 1)) {
      const received = libc.receiveDescriptor(fd);
      if (typeof received === 'number') return received;
      if (received === null || Date.now() > deadline) throw new Error('the daemon sent no descriptor');
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  } finally {
    libc.close(fd);
  }
}

/** Whether the session runs on a Unix socket (shared memory reaches only the daemon's machine). */
function onUnixSocket(channel: Channel): boolean {
  const stream = channel.session.wire.stream as Socket;
  return !(stream instanceof TLSSocket) && typeof stream.remoteAddress !== 'string';
}

/** A session's region: being asked for (promise), then attached (region; null: frames only). */
interface BulkState {
  readonly promise: Promise<BulkRegion | null>;
  region: BulkRegion | null;
}
const states = new WeakMap<Channel, BulkState>();
/** Channels whose session's moves reset their region (the listener is added once). */
const watched = new WeakSet<Channel>();

/** Starts attaching the session's region (once per session, and once more after each move; pipelined behind what was sent). */
export function startBulk(channel: Channel): void {
  if (states.has(channel)) return;
  const state: BulkState = { promise: BulkRegion.attach(channel).catch(() => null), region: null };
  states.set(channel, state);
  if (!watched.has(channel)) {
    watched.add(channel);
    // The region belongs to the node the process left: dropped; the next one is asked of the new node.
    channel.session.onMoved((moved) => {
      if (moved) resetBulk(channel);
    });
  }
  void state.promise.then((region) => {
    // Attached after the process moved away from the node that made it: of no use.
    if (states.get(channel) === state) state.region = region;
    else region?.close();
  });
}

/** The process moved to another node: closes the old node's region and asks the new node for one, as a fresh session does. */
function resetBulk(channel: Channel): void {
  const state = states.get(channel);
  if (!state) return;
  states.delete(channel);
  state.region?.close();
  startBulk(channel);
}

/**
 * The program made a buffer it may move `size` bytes of at a time (mappable, or a writeBuffer
 * target): the region is asked to grow to hold such a transfer now, ahead of the first, which
 * would otherwise go in frames while the region grows. Once the region is attached, if not yet.
 */
export function expectTransfers(channel: Channel, size: number): void {
  if (size < BULK_MIN_BYTES) return;
  const state = states.get(channel);
  if (!state) return;
  if (state.region) state.region.grow(size);
  else void state.promise.then((region) => region?.grow(size));
}

/** Frees the session's bulk writes sent so far once `reply` (to a request just sent) settles. */
export function fencedBy<T>(channel: Channel, reply: Promise<T>): Promise<T> {
  states.get(channel)?.region?.coveredBy(reply);
  return reply;
}

/**
 * The session's region if it is attached and usable now (else bulk data goes in frames). None
 * while the process moves: what the program sends then may reach another node, which cannot
 * read this region.
 */
export function bulkOf(channel: Channel): BulkRegion | null {
  if (channel.session.moving) return null;
  const region = states.get(channel)?.region ?? null;
  return region?.isOpen ? region : null;
}
