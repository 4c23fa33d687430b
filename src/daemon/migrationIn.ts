// Processes moving in from another node (the target's side of a live migration; the source's is
// migrationOut.ts). A peer daemon, on an admin control session, sends MigrateIn (the process and
// its creation log), MigrateData (buffer contents, several rounds), then MigrateCommit. Here the
// process is spawned under its tenant, the log replayed on it with no client attached, the
// contents kept in host memory and handed to the buffers at the commit; then the process waits
// (30 s at most) for its client, whose Hello carries the resume token the commit returned.
// Until the commit nothing is visible to the client: a peer that gives up (MigrateAbort) or goes
// away (its session closes) takes the half-made process with it.

import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { Kernel, ProcessHandle } from '../kernel/kernel.js';
import type { PriorityClass } from '../params.js';
import type { MessageName, Payload } from '../protocol/messages.js';
import type { VirtualBuffer } from '../vgpu/buffer.js';
import type { LoggedMessage } from './creationLog.js';
import { ProcessSession, ReplaySink } from './processSession.js';
import type { ObjectAccount } from './tenants.js';
import { z } from 'zod';

type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/**
 * A piece that is a whole buffer of at least this size is kept in the frame it came in; smaller
 * ones are copied (they may be views into a shared read chunk, which keeping would pin).
 */
const KEEP_IN_PLACE_BYTES = 1024 * 1024;

/** Buffers larger than this get host memory faulted in ahead of their pieces, on another thread. */
const PREFAULT_MIN_BYTES = 8 * 1024 * 1024;

/** How long a commit waits for arrays still being faulted in before it makes them itself. */
const SETTLE_MS = 2000;

/** The prefaulting thread: for each {id, size}, a zero-filled (so faulted-in) ArrayBuffer, handed over. */
const PREFAULT_WORKER = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', ({ id, size }) => {
  const buffer = new ArrayBuffer(size);
  new Uint8Array(buffer).fill(0);
  parentPort.postMessage({ id, buffer }, [buffer]);
});`;

/**
 * Host arrays for a moving-in process's large buffers, faulted in by a worker thread while the
 * pieces are on their way: on a VM, faulting fresh memory in cost more than receiving the bytes
 * (docs/benchmarks.md), and the daemon's main thread receives them. The arrays come over without
 * a copy (transferred), asked in the order the source sends (the log's). Pieces that come before
 * their buffer's array are held as they came (views of their frames) and put in once it is there.
 */
class Prefaulter {
  private readonly worker: Worker;
  /** Buffers asked for whose array has not come: the pieces held for each, in order. */
  private readonly waiting = new Map<number, Array<{ offset: number; data: Uint8Array }>>();
  private closed = false;
  private failed = false;
  private onEmpty: (() => void) | null = null;

  /** `arrived` gets each array, with the pieces held for it, to put them in (in order). */
  constructor(
    buffers: Array<{ id: number; size: number }>,
    private readonly arrived: (id: number, array: Uint8Array<ArrayBuffer>, held: Array<{ offset: number; data: Uint8Array }>) => void,
  ) {
    this.worker = new Worker(PREFAULT_WORKER, { eval: true });
    this.worker.unref();
    this.worker.on('message', ({ id, buffer }: { id: number; buffer: ArrayBuffer }) => {
      const held = this.waiting.get(id);
      if (!held || this.closed) return;
      this.waiting.delete(id);
      this.arrived(id, new Uint8Array(buffer), held);
      if (this.waiting.size === 0) {
        this.onEmpty?.();
        this.close();
      }
    });
    // A worker that cannot start or fails: what it did not bring is made on the spot (settle).
    this.worker.on('error', () => {
      this.failed = true;
      this.onEmpty?.();
      void this.worker.terminate();
    });
    for (const { id, size } of buffers) {
      this.waiting.set(id, []);
      this.worker.postMessage({ id, size });
    }
  }

  /** Holds a piece of buffer `id` until its array comes; false when none is coming (put it in now). */
  hold(id: number, offset: number, data: Uint8Array): boolean {
    const held = this.waiting.get(id);
    if (!held || this.closed) return false;
    held.push({ offset, data });
    return true;
  }

  /**
   * At the commit: waits (at most SETTLE_MS) for the arrays that have pieces held for them (the
   * worker has faulted most of such an array in already: cheaper than a fresh one made now, in the
   * downtime), stops, and hands back the pieces still held (their arrays are made by the caller).
   */
  async settle(): Promise<Array<{ id: number; held: Array<{ offset: number; data: Uint8Array }> }>> {
    for (const [id, held] of this.waiting) if (held.length === 0) this.waiting.delete(id);
    if (this.waiting.size > 0 && !this.failed && !this.closed) {
      await new Promise<void>((resolve) => {
        this.onEmpty = resolve;
        setTimeout(resolve, SETTLE_MS).unref();
      });
    }
    const left = [...this.waiting].map(([id, held]) => ({ id, held }));
    this.close();
    return left;
  }

  close(): void {
    this.closed = true;
    this.waiting.clear();
    this.onEmpty?.();
    void this.worker.terminate();
  }
}

/** How long a committed process waits for its client before it is killed. */
export const RESUME_TIMEOUT_MS = 30_000;

const processSchema = z.object({
  name: z.string().max(256),
  tenant: z.string().min(1),
  priority: z.enum(['realtime', 'normal', 'batch']),
  weight: z.number().positive(),
  memoryLimit: z.number().int().positive().nullable(),
});

const logSchema = z.array(z.tuple([z.string(), z.unknown()])).max(1 << 20);

const stateSchema = z.object({
  log: logSchema.default([]),
  errorScopes: z
    .array(
      z.object({
        device: z.number(),
        scopes: z.array(z.object({ filter: z.string(), error: z.object({ type: z.string(), message: z.string() }).nullable() })).max(1024),
      }),
    )
    .default([]),
});

/** The connection of a session being replayed: nothing goes out; answers reach whoever expects them. */
class Sink implements ReplaySink {
  readonly stream = null as unknown as ReplaySink['stream'];
  private readonly waiters = new Map<number, (answer: { name: string; payload: unknown }) => void>();
  send<N extends MessageName>(name: N, payload: Payload<N>): boolean {
    const req = (payload as { req?: number }).req;
    if ((name === 'Reply' || name === 'ReplyData' || name === 'Failure') && req !== undefined) {
      const waiter = this.waiters.get(req);
      this.waiters.delete(req);
      waiter?.({ name, payload });
    }
    return true;
  }
  hold(): void {}
  release(): void {}
  close(): void {}
  expect(req: number): Promise<{ name: string; payload: unknown }> {
    return new Promise((resolve) => this.waiters.set(req, resolve));
  }
}

interface Incoming {
  id: string;
  /** The peer's control session: its end aborts what it has not committed. */
  peerSession: number;
  handle: ProcessHandle;
  session: ProcessSession;
  /** Buffer contents received so far, by client id. */
  contents: Map<number, Uint8Array<ArrayBuffer>>;
  bytes: number;
  /** Large buffers' host arrays being faulted in ahead of their pieces (null: none). */
  prefault: Prefaulter | null;
  /** Pieces of buffers the log does not make yet (made after MigrateIn), by client id, in arrival order. */
  early: Map<number, Array<{ offset: number; data: Uint8Array }>>;
  /** Time spent taking MigrateData pieces (copying them into `contents`), for the log. */
  dataMs: number;
  /** What failed in a replayed message run after a wait (null: nothing). */
  replayError: () => unknown;
}

/** A committed process waiting for its client. */
export interface Resumable {
  handle: ProcessHandle;
  session: ProcessSession;
  tenant: string;
}

export class MigrationsIn {
  private readonly incoming = new Map<string, Incoming>();
  private readonly resumable = new Map<string, Resumable & { timer: NodeJS.Timeout }>();

  constructor(
    private readonly deps: {
      kernel: Kernel;
      objectAccount: (tenant: string) => ObjectAccount;
      log: LogFn;
    },
  ) {}

  /** MigrateIn: spawns the process and replays its log. Returns the migration's id. */
  async begin(peerSession: number, payload: Payload<'MigrateIn'>): Promise<{ migration: string }> {
    const parsedProcess = processSchema.safeParse(payload.process);
    if (!parsedProcess.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateIn.process: ${parsedProcess.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const parsedLog = logSchema.safeParse(payload.log);
    if (!parsedLog.success) throw new GpunixError(ErrorCodes.BAD_OPTION, 'MigrateIn.log must be an array of [name, payload] pairs');
    const meta = parsedProcess.data;
    const { kernel } = this.deps;
    if (!kernel.tenants().some((t) => t.name === meta.tenant)) {
      throw new GpunixError(ErrorCodes.MIGRATION_FAILED, `tenant ${meta.tenant} does not exist on this node; add it here first (gpunix tenants add)`);
    }
    const handle = await kernel.spawn({
      tenant: meta.tenant,
      name: meta.name || undefined,
      priority: meta.priority as PriorityClass,
      weight: meta.weight,
      memoryLimit: meta.memoryLimit ?? undefined,
    });
    const sink = new Sink();
    let replayError: unknown = null;
    const session = new ProcessSession({
      handle,
      wire: sink,
      log: (level, msg, fields) => this.deps.log(level, msg, { pid: handle.pid, migration: true, ...fields }),
      // A protocol error in a replayed log (a peer's bug, or its garbage): the move fails.
      failed: (error) => {
        this.deps.log('warn', 'a moved-in log failed to replay', { pid: handle.pid, error: (error as Error).message });
        replayError ??= error;
      },
      objects: this.deps.objectAccount(meta.tenant),
    });
    const beganAt = performance.now();
    const id = randomBytes(12).toString('base64url');
    const incoming: Incoming = { id, peerSession, handle, session, contents: new Map(), early: new Map(), prefault: null, bytes: 0, dataMs: 0, replayError: () => replayError };
    this.incoming.set(id, incoming);
    try {
      await session.replay(parsedLog.data as LoggedMessage[], sink);
      if (replayError) throw replayError;
    } catch (error) {
      this.discard(incoming, 'its log did not replay');
      throw asMigrationError(error);
    }
    const large = session.creations
      .buffers()
      .flatMap(({ id, object }) => (object && typeof object === 'object' && 'residency' in object && (object as VirtualBuffer).size > PREFAULT_MIN_BYTES ? [{ id, size: (object as VirtualBuffer).size }] : []));
    // Not the first: its pieces come at once, before a worker could have faulted it in (this thread
    // does, at its first piece); the worker works ahead on the others meanwhile.
    if (large.length > 1) {
      incoming.prefault = new Prefaulter(large.slice(1), (bufferId, array, held) => {
        if (!this.incoming.has(incoming.id) || incoming.contents.has(bufferId)) return;
        incoming.contents.set(bufferId, array);
        for (const piece of held) array.set(piece.data, piece.offset);
      });
    }
    this.deps.log('info', 'a process is moving in', { pid: handle.pid, tenant: meta.tenant, processName: meta.name, migration: id, replayMs: Math.round(performance.now() - beganAt) });
    return { migration: id };
  }

  /** MigrateData: a piece of a buffer's contents (a later round's piece replaces an earlier one's bytes). */
  data(peerSession: number, payload: Payload<'MigrateData'>): null {
    const t0 = performance.now();
    const incoming = this.get(peerSession, payload.migration);
    const buffer = incoming.session.creations.objectOf(payload.buffer) as VirtualBuffer | undefined;
    const { offset, data } = payload;
    if (!buffer) {
      // A buffer made after MigrateIn: the commit's log makes it, so its pieces (sent at the stop,
      // before the commit) wait for it; the commit fails if the log does not make it.
      if (!Number.isSafeInteger(offset) || offset < 0) throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateData: offset ${offset} is not a byte offset`);
      let pieces = incoming.early.get(payload.buffer);
      if (!pieces) incoming.early.set(payload.buffer, (pieces = []));
      pieces.push({ offset, data: data.slice() });
      incoming.bytes += data.byteLength;
      return null;
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + data.byteLength > buffer.size) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateData: [${offset}, ${offset + data.byteLength}) is outside buffer ${payload.buffer} of ${buffer.size} bytes`);
    }
    // Its array still being faulted in: the piece waits for it (a view of its frame, no copy).
    if (!incoming.contents.has(payload.buffer) && incoming.prefault?.hold(payload.buffer, offset, data)) {
      incoming.bytes += data.byteLength;
      return null;
    }
    this.place(incoming, payload.buffer, buffer, offset, data);
    incoming.dataMs += performance.now() - t0;
    return null;
  }

  /** Puts a piece of buffer `id`'s contents in place (MigrateData's work, once the buffer exists here). */
  private place(incoming: Incoming, id: number, buffer: VirtualBuffer, offset: number, data: Uint8Array): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + data.byteLength > buffer.size) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateData: [${offset}, ${offset + data.byteLength}) is outside buffer ${id} of ${buffer.size} bytes`);
    }
    let contents = incoming.contents.get(id);
    if (!contents && offset === 0 && data.byteLength === buffer.size && data.byteLength >= KEEP_IN_PLACE_BYTES) {
      // A whole buffer in one piece: the frame it arrived in (memory of its own, as the decoder
      // joins a large frame's reads into a fresh buffer) is kept as is. Copying it into a fresh
      // array cost more, in page faults, than receiving it (docs/benchmarks.md).
      incoming.contents.set(id, data as Uint8Array<ArrayBuffer>);
    } else {
      if (!contents) {
        contents = new Uint8Array(buffer.size);
        // Every page touched now, during the pre-copy: pieces the source skipped (written again)
        // come at the stop, where faulting fresh pages in cost more than receiving them.
        contents.fill(0);
        incoming.contents.set(id, contents);
      }
      contents.set(data, offset);
    }
    incoming.bytes += data.byteLength;
  }

  /** MigrateCommit: replays what changed since, gives the buffers their contents and the devices their error scopes. */
  async commit(peerSession: number, payload: Payload<'MigrateCommit'>): Promise<{ pid: number; token: string }> {
    const incoming = this.get(peerSession, payload.migration);
    const parsed = stateSchema.safeParse(payload.state ?? {});
    if (!parsed.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateCommit.state: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const { session, handle } = incoming;
    const t0 = performance.now();
    let t1 = t0;
    try {
      await session.replay(parsed.data.log as LoggedMessage[], new Sink());
      t1 = performance.now();
      if (incoming.replayError()) throw incoming.replayError();
      for (const [id, pieces] of incoming.early) {
        const buffer = session.creations.objectOf(id) as VirtualBuffer | undefined;
        if (!buffer) throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateData: buffer ${id} is not in the moved-in log`);
        for (const { offset, data } of pieces) {
          incoming.bytes -= data.byteLength; // counted when it came
          this.place(incoming, id, buffer, offset, data);
        }
      }
      incoming.early.clear();
      // Arrays the worker has not brought yet: made here, with the pieces held for them.
      for (const { id, held } of (await incoming.prefault?.settle()) ?? []) {
        const buffer = session.creations.objectOf(id) as VirtualBuffer | undefined;
        if (!buffer) continue;
        for (const { offset, data } of held) {
          incoming.bytes -= data.byteLength; // counted when it came
          this.place(incoming, id, buffer, offset, data);
        }
      }
      for (const [id, contents] of incoming.contents) {
        const buffer = session.creations.objectOf(id) as VirtualBuffer | undefined;
        if (buffer && !buffer.isDestroyed && buffer.residency.token !== null) buffer.residency.adoptContents(contents);
      }
      const devices = new Map(session.devices().map(({ id, device }) => [id, device] as const));
      for (const { device, scopes } of parsed.data.errorScopes) devices.get(device)?.importErrorScopes(scopes);
    } catch (error) {
      this.discard(incoming, 'the commit failed');
      throw asMigrationError(error);
    }
    if (handle.state === 'exited') {
      this.incoming.delete(incoming.id);
      throw new GpunixError(ErrorCodes.MIGRATION_FAILED, 'the process ended on this node before the commit');
    }
    this.incoming.delete(incoming.id);
    incoming.contents.clear();
    const token = randomBytes(32).toString('base64url');
    const timer = setTimeout(() => {
      if (!this.resumable.delete(token)) return;
      this.deps.log('warn', 'a moved-in process was never taken over by its client; killing it', { pid: handle.pid });
      session.close();
      void this.deps.kernel.kill(handle.pid).catch(() => {});
    }, RESUME_TIMEOUT_MS);
    timer.unref();
    this.resumable.set(token, { handle, session, tenant: handle.record().tenant, timer });
    this.deps.log('info', 'a process moved in; waiting for its client', { pid: handle.pid, bytes: incoming.bytes, dataMs: Math.round(incoming.dataMs), replayMs: Math.round(t1 - t0), adoptMs: Math.round(performance.now() - t1) });
    return { pid: handle.pid, token };
  }

  /** MigrateAbort: gives the migration up. */
  abort(peerSession: number, payload: Payload<'MigrateAbort'>): null {
    const incoming = this.incoming.get(payload.migration);
    if (incoming && incoming.peerSession === peerSession) this.discard(incoming, 'the peer gave it up');
    return null;
  }

  /** A peer's control session ended: what it had not committed is discarded. */
  peerGone(peerSession: number): void {
    for (const incoming of [...this.incoming.values()]) if (incoming.peerSession === peerSession) this.discard(incoming, 'the peer went away before the commit');
  }

  /** Hello {resume}: the committed process for `token` (once), or null. */
  take(token: string): Resumable | null {
    const found = this.resumable.get(token);
    if (!found) return null;
    this.resumable.delete(token);
    clearTimeout(found.timer);
    if (found.handle.state === 'exited') return null;
    return { handle: found.handle, session: found.session, tenant: found.tenant };
  }

  /** The daemon is closing: everything half-moved goes. */
  close(): void {
    for (const incoming of [...this.incoming.values()]) this.discard(incoming, 'the daemon is closing');
    for (const [token, found] of this.resumable) {
      clearTimeout(found.timer);
      this.resumable.delete(token);
    }
  }

  private get(peerSession: number, id: string): Incoming {
    const incoming = this.incoming.get(id);
    if (!incoming || incoming.peerSession !== peerSession) throw new GpunixError(ErrorCodes.BAD_OPTION, `no migration ${JSON.stringify(id)} of this session is under way`);
    return incoming;
  }

  private discard(incoming: Incoming, why: string): void {
    this.incoming.delete(incoming.id);
    incoming.contents.clear();
    incoming.early.clear();
    incoming.prefault?.close();
    incoming.session.close();
    this.deps.log('info', 'a process moving in was discarded', { pid: incoming.handle.pid, why });
    void this.deps.kernel.kill(incoming.handle.pid).catch(() => {});
  }
}

function asMigrationError(error: unknown): GpunixError {
  if (error instanceof GpunixError) return error.code === ErrorCodes.MIGRATION_FAILED ? error : new GpunixError(ErrorCodes.MIGRATION_FAILED, `${error.code}: ${error.message}`);
  return new GpunixError(ErrorCodes.MIGRATION_FAILED, (error as Error)?.message ?? String(error));
}

