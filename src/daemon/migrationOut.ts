// Moving a live process to another node (the source's side; the target's is migrationIn.ts).
//
// The loop, in order (docs/fleet.md, "Live migration between nodes"):
// 1. Connect to the target daemon as its admin; MigrateIn with the process and its creation log:
//    the target makes every object under the client's ids.
// 2. Pre-copy, while the program runs: send every buffer, then, round after round, the buffers
//    written since they were sent (the session notes writes as it runs messages; a buffer's read
//    is a queue item of the process, so it sees every write queued before it was asked for).
//    Rounds end when what is dirty no longer shrinks much, is small, or after `rounds`.
// 3. The stop: MoveBegin to the client, which answers MoveFence and keeps its later calls. Once
//    what came before the fence has run, every reply it owes has gone and the work it queued has
//    finished, the last dirty buffers are read and sent, and MigrateCommit carries what changed in
//    the log meanwhile and the open error scopes.
// 4. Moved {address, token} to the client, which reconnects there; this node's process ends.
// Anything failing before the commit (the target unreachable or refusing or dying, a mapped
// buffer at the stop, the timeout) sends MoveCancelled, aborts the target's half, and leaves the
// process running here exactly as it was: the error is GPUNIX_E_MIGRATION_FAILED (or BUSY).

import { performance } from 'node:perf_hooks';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { ProcessHandle } from '../kernel/kernel.js';
import { Session, SessionOptions } from '../client/session.js';
import type { VirtualBuffer } from '../vgpu/buffer.js';
import type { VirtualDevice } from '../vgpu/device.js';
import type { ProcessSession, SessionWire } from './processSession.js';

type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** Where the target daemon listens, as a client reaches it (and as Moved tells the program). */
export type NodeAddress = { socket: string } | { url: string };

export interface MigrateOutOptions {
  address: NodeAddress;
  /** The target daemon's admin token. */
  token: string;
  /** The fleet name of the target, when it was given by name (reported back). */
  node?: string;
  /** How long the stop may wait for the client's fence and the process's queued work (default 30 s). */
  timeoutMs?: number;
  /** Pre-copy rounds after the first full one, at most (default 4). */
  rounds?: number;
  onProgress?: (bytesSent: number, bytesTotal: number) => void;
}

export interface MigrateOutResult {
  moved: true;
  node: string | null;
  address: NodeAddress;
  /** The process's pid on the target node. */
  pid: number;
  bytes: number;
  rounds: number;
  totalMs: number;
  /** MoveBegin sent to Moved sent: the program's calls wait this long. */
  downtimeMs: number;
  /** Bytes sent during the stop (what was dirty at the end, and buffers made during the pre-copy). */
  finalBytes: number;
  /** Time spent reading and sending them (part of downtimeMs). */
  finalMs: number;
  bytesPerSecond: number;
}

/** The session side of the process being moved: its connection to its client. */
export interface MovingClient {
  session: ProcessSession;
  handle: ProcessHandle;
  wire: SessionWire;
  /** The protocol version the client said in its Hello (a move needs 4). */
  clientVersion: number;
  /** The move committed: the process here ends (reason 'moved', `where`), and its connection with it. */
  movedAway(where: string): void;
}

/** Bytes per MigrateData frame (and per staging read), and how many may be unanswered at once (flow control). */
const PIECE_BYTES = 8 * 1024 * 1024;
const WINDOW = 8;
/**
 * Pieces being read (copied to staging, mapped) while earlier ones are encoded and on the wire.
 * Under the device's staging slots (residency.ts, 4), so that evictions still find one.
 */
const READ_AHEAD = 3;
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_ROUNDS = 4;

/** Moves `client`'s process to the node at `options.address`; see the file comment. */
export async function migrateOut(client: MovingClient, options: MigrateOutOptions, log: LogFn): Promise<MigrateOutResult> {
  const { session, handle } = client;
  const startedAt = performance.now();
  if (client.clientVersion < 4) throw new GpunixError(ErrorCodes.BUSY, `process ${handle.pid}'s client speaks protocol ${client.clientVersion}; moving it needs 4 (a newer gpunix client)`);
  if (session.movingOut) throw new GpunixError(ErrorCodes.BUSY, `process ${handle.pid} is being moved already`);
  // A suspended process's queue does not run: the copy, which reads through it, could not go on.
  if (handle.record().state === 'suspended') throw new GpunixError(ErrorCodes.BUSY, `process ${handle.pid} is suspended; resume it before moving it`);
  const blocker = session.moveBlocker();
  if (blocker) throw new GpunixError(ErrorCodes.BUSY, `cannot move process ${handle.pid} now: ${blocker}`);
  const devices = session.devices();
  if (devices.length > 1) throw new GpunixError(ErrorCodes.BUSY, `process ${handle.pid} has ${devices.length} devices; a move takes a process with at most one`);
  const device = devices[0]?.device ?? null;

  session.movingOut = true;
  try {
    return await moveWith(client, options, log, startedAt, device, devices);
  } finally {
    session.movingOut = false;
  }
}

/** migrateOut once the process may move: the loop of the file comment. */
async function moveWith(
  client: MovingClient,
  options: MigrateOutOptions,
  log: LogFn,
  startedAt: number,
  device: ReturnType<ProcessSession['devices']>[number]['device'] | null,
  devices: ReturnType<ProcessSession['devices']>,
): Promise<MigrateOutResult> {
  const { session, handle } = client;
  const peer = await openPeer(options);
  const record = handle.record();
  let migration: string | null = null;
  let fenced = false;
  let bytes = 0;
  let rounds = 0;
  try {
    session.trackWrites();
    const { log: creations, mark } = session.creations.export();
    const begun = (await peer.call('MigrateIn', {
      process: { name: record.name, tenant: record.tenant, priority: record.priority, weight: record.weight, memoryLimit: record.memoryLimit ?? null },
      log: creations,
    })) as { migration: string };
    migration = begun.migration;
    const sender = new Sender(peer, migration);

    // Pre-copy: everything once, then what was written meanwhile.
    const all = liveBuffers(session);
    const total = all.reduce((sum, { buffer }) => sum + buffer.size, 0);
    const idOf = new Map(all.map(({ id, buffer }) => [buffer, id] as const));
    const later = new Set<VirtualBuffer>();
    const sent = (n: number): void => {
      bytes += n;
      options.onProgress?.(bytes, total);
    };
    session.takeDirty(); // from here on, writes count for the next round
    let pending: Array<{ id: number; buffer: VirtualBuffer }> = all;
    let previousDirty = Infinity;
    const maxRounds = 1 + (options.rounds ?? DEFAULT_ROUNDS);
    while (device && pending.length > 0 && rounds < maxRounds && handle.state !== 'exited') {
      rounds++;
      // A buffer written again since this round began is in the next round (or the stop) anyway: not read now.
      const unread = await transfer(device, sender, pending, (b) => session.isDirty(b), sent);
      for (const b of unread) later.add(b); // unreadable now (MAP_READ, mapped): at the stop
      const dirty = [...session.takeDirty()].filter((b) => idOf.has(b));
      const dirtyBytes = dirty.reduce((sum, b) => sum + b.size, 0);
      // Stop rounds when what comes back is small, or no longer shrinks: the stop sends the rest.
      const small = dirtyBytes <= Math.max(total / 64, 1 << 20);
      const shrinking = dirtyBytes < previousDirty * 0.75;
      previousDirty = dirtyBytes;
      for (const b of dirty) later.add(b);
      if (small || !shrinking) {
        pending = [];
        break;
      }
      pending = dirty.map((b) => ({ id: idOf.get(b)!, buffer: b }));
      for (const b of dirty) later.delete(b);
    }
    // Rounds ran out with buffers still to resend (`rounds` reached): they go at the stop.
    for (const { buffer } of pending) later.add(buffer);
    await sender.drain();

    // The stop.
    const stopAt = performance.now();
    const deadline = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    await within(deadline, 'the client did not answer MoveBegin with MoveFence', () => {
      const fence = new Promise<void>((resolve) => (session.onFence = resolve));
      client.wire.send('MoveBegin', {});
      fenced = true;
      // A client that leaves (its process ends) answers nothing: the move fails at once, not at the timeout.
      const ended = handle.wait().then(() => {
        throw new GpunixError(ErrorCodes.PROCESS_EXITED, `process ${handle.pid} ended while it was being moved`);
      });
      ended.catch(() => {}); // after a move that succeeded, the process ends here too: nobody listens then
      return Promise.race([fence, ended]);
    });
    session.onFence = null;
    await within(deadline, 'the process did not finish its queued work', async () => {
      await session.whenAnswered();
      if (device) await device.queue.onSubmittedWorkDone();
      await session.whenAnswered();
    });
    if (handle.state === 'exited') throw new GpunixError(ErrorCodes.PROCESS_EXITED, `process ${handle.pid} ended while it was being moved`);
    const stopBlocker = session.moveBlocker();
    if (stopBlocker) throw new GpunixError(ErrorCodes.BUSY, `cannot move process ${handle.pid} now: ${stopBlocker}`);
    for (const b of session.takeDirty()) if (idOf.has(b)) later.add(b);
    // Buffers made since the first export are in the delta log; their contents go too.
    for (const { id, buffer } of liveBuffers(session)) {
      if (!idOf.has(buffer)) {
        idOf.set(buffer, id);
        later.add(buffer);
      }
    }
    // The rest, pieces read while earlier ones are on the wire; what cannot be read so (MAP_READ
    // buffers) is read by mapping: the process is quiet now.
    const finalAt = performance.now();
    const bytesBefore = bytes;
    const rest = [...later].filter((b) => !b.isDestroyed).map((buffer) => ({ id: idOf.get(buffer)!, buffer }));
    const unread = device ? await transfer(device, sender, rest, () => false, sent) : [];
    for (const buffer of unread) {
      if (buffer.isDestroyed) continue;
      const data = await buffer.residency.readContents();
      if (!data) throw new GpunixError(ErrorCodes.BUSY, `the contents of buffer "${buffer.label}" could not be read (mapped, or a size not a multiple of 4)`);
      await sender.send(idOf.get(buffer)!, data);
      sent(data.byteLength);
    }
    await sender.drain();
    const finalBytes = bytes - bytesBefore;
    const finalMs = performance.now() - finalAt;
    const state = {
      log: session.creations.delta(mark),
      errorScopes: devices.map(({ id, device: d }) => ({ device: id, scopes: d.errorScopeState() })),
    };
    const committed = (await peer.call('MigrateCommit', { migration, state })) as { pid: number; token: string };
    // The point of no return: the process lives there now.
    migration = null;
    client.wire.send('Moved', { address: options.address, token: committed.token });
    const downtimeMs = performance.now() - stopAt;
    session.untrackWrites();
    session.creations.unmark();
    client.movedAway(`${options.node ?? describe(options.address)} (pid ${committed.pid} there)`);
    peer.close();
    const totalMs = performance.now() - startedAt;
    const result: MigrateOutResult = {
      moved: true,
      node: options.node ?? null,
      address: options.address,
      pid: committed.pid,
      bytes,
      rounds,
      totalMs: Math.round(totalMs * 10) / 10,
      downtimeMs: Math.round(downtimeMs * 10) / 10,
      finalBytes,
      finalMs: Math.round(finalMs * 10) / 10,
      bytesPerSecond: Math.round(bytes / (totalMs / 1000)),
    };
    log('info', 'process moved to another node', { pid: handle.pid, to: describe(options.address), targetPid: committed.pid, bytes, rounds, totalMs: result.totalMs, downtimeMs: result.downtimeMs, finalBytes, finalMs: result.finalMs });
    return result;
  } catch (error) {
    session.onFence = null;
    session.untrackWrites();
    session.creations.unmark();
    const reason = (error as Error)?.message ?? String(error);
    if (fenced && handle.state !== 'exited') client.wire.send('MoveCancelled', { reason });
    if (migration !== null && peer.isOpen) void peer.call('MigrateAbort', { migration }).catch(() => {});
    setTimeout(() => peer.close(), 100).unref();
    log('warn', 'moving a process to another node failed; it goes on here', { pid: handle.pid, to: describe(options.address), error: reason });
    if (error instanceof GpunixError && (error.code === ErrorCodes.BUSY || error.code === ErrorCodes.PROCESS_EXITED || error.code === ErrorCodes.MIGRATION_FAILED || error.code === ErrorCodes.TIMEOUT)) throw error;
    if (error instanceof GpunixError) throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `the node at ${describe(options.address)} refused: ${error.code}: ${error.message}`);
    throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `moving to ${describe(options.address)} failed: ${reason}`);
  }
}

/** The buffers the process's log makes, alive, with their client ids. */
function liveBuffers(session: ProcessSession): Array<{ id: number; buffer: VirtualBuffer }> {
  return session.creations
    .buffers()
    .filter(({ object }) => object && typeof object === 'object' && 'residency' in object && !(object as VirtualBuffer).isDestroyed && (object as VirtualBuffer).residency.token !== null)
    .map(({ id, object }) => ({ id, buffer: object as VirtualBuffer }));
}

/** An admin control session on the target daemon. */
async function openPeer(options: MigrateOutOptions): Promise<Session> {
  let peer: Session;
  try {
    peer = await Session.open(sessionOptionsFor(options.address, options.token), { role: 'control' });
  } catch (error) {
    throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `cannot reach the node at ${describe(options.address)}: ${(error as Error).message}`);
  }
  if (!peer.welcome.admin) {
    peer.close();
    throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `the token given for ${describe(options.address)} is not that daemon's admin token (migration.peerToken, or the token option)`);
  }
  if (peer.welcome.version < 4) {
    peer.close();
    throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `the daemon at ${describe(options.address)} speaks protocol ${peer.welcome.version}; moving a process there needs 4`);
  }
  return peer;
}

/** Sends buffer contents in pieces, at most WINDOW unanswered (the target answers each once taken). */
class Sender {
  private readonly inFlight = new Set<Promise<unknown>>();
  private failure: unknown = null;
  constructor(
    private readonly peer: Session,
    private readonly migration: string,
  ) {}

  /** Sends `data` as buffer `buffer`'s bytes from `at`; returns once every frame is encoded (`data` may then be reused). */
  async send(buffer: number, data: Uint8Array, at = 0): Promise<void> {
    for (let offset = 0; offset < data.byteLength || (offset === 0 && data.byteLength === 0); offset += PIECE_BYTES) {
      if (this.failure) throw this.failure;
      while (this.inFlight.size >= WINDOW) await Promise.race(this.inFlight);
      if (this.failure) throw this.failure;
      const piece = data.subarray(offset, Math.min(offset + PIECE_BYTES, data.byteLength));
      const sent: Promise<unknown> = this.peer.call('MigrateData', { migration: this.migration, buffer, offset: at + offset, data: piece }).then(
        () => this.inFlight.delete(sent),
        (error: unknown) => {
          this.inFlight.delete(sent);
          this.failure ??= error;
        },
      );
      this.inFlight.add(sent);
      if (data.byteLength === 0) break;
    }
  }

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
  }
}

/**
 * Sends the contents of `buffers`, each piece read in the process's queue order (after every write
 * queued before the read was asked for: readRangeInOrder) and encoded straight from the mapped
 * staging range, up to READ_AHEAD pieces being read while earlier ones go out. A buffer for which
 * `skip` is true when its turn (or its next piece's) comes is left out from there on (it goes
 * again later whole); an evicted one is read whole from host memory.
 * Within one call each byte range goes once, so pieces may arrive in any order. Returns the buffers
 * that could not be read (MAP_READ, mapped, replaced meanwhile): the caller sends them otherwise.
 */
async function transfer(
  device: VirtualDevice,
  sender: Sender,
  buffers: Array<{ id: number; buffer: VirtualBuffer }>,
  skip: (buffer: VirtualBuffer) => boolean,
  sent: (bytes: number) => void,
): Promise<VirtualBuffer[]> {
  const unread = new Set<VirtualBuffer>();
  const reading = new Set<Promise<void>>();
  let failure: unknown = null;
  for (const { id, buffer } of buffers) {
    if (buffer.isDestroyed || buffer.size === 0 || skip(buffer)) continue;
    if (!buffer.residency.resident) {
      const data = await device.readInOrder(buffer);
      if (!data) unread.add(buffer);
      else {
        await sender.send(id, data);
        sent(data.byteLength);
      }
      continue;
    }
    for (let offset = 0; offset < buffer.size && !unread.has(buffer); offset += PIECE_BYTES) {
      while (reading.size >= READ_AHEAD) await Promise.race(reading);
      if (failure) break;
      // Written meanwhile: the whole buffer goes again later, so its other pieces would be wasted now.
      if (offset > 0 && skip(buffer)) break;
      const size = Math.min(PIECE_BYTES, buffer.size - offset);
      const piece: Promise<void> = device.readRangeInOrder(buffer, offset, size, (bytes) => sender.send(id, bytes, offset)).then(
        (read) => {
          reading.delete(piece);
          if (read) sent(size);
          else unread.add(buffer);
        },
        (error: unknown) => {
          reading.delete(piece);
          failure ??= error;
        },
      );
      reading.add(piece);
    }
    if (failure) break;
  }
  while (reading.size > 0) await Promise.race(reading);
  if (failure) throw failure;
  return [...unread];
}

/** Runs `body`, failing with GPUNIX_E_TIMEOUT (`what`) past `ms`. */
async function within<T>(ms: number, what: string, body: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new GpunixError(ErrorCodes.TIMEOUT, `${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([body(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** How a client library session reaches the daemon at `address` with `token`. */
export function sessionOptionsFor(address: NodeAddress, token: string): SessionOptions {
  return 'socket' in address ? { socket: address.socket, token } : { url: address.url, token };
}

export function describe(address: NodeAddress): string {
  return 'socket' in address ? address.socket : address.url;
}

/** `to` as the operator gives it: a socket path, or tcp:// / tls:// URL. */
export function parseAddress(to: string): NodeAddress {
  if (/^(tcp|tls):\/\//.test(to)) return { url: to };
  if (to.includes('://')) throw new GpunixError(ErrorCodes.BAD_OPTION, `to: ${JSON.stringify(to)} is neither a socket path nor a tcp:// or tls:// address`);
  return { socket: to };
}
