// Processes moving in from another node (the target's side of a live migration; the source's is
// migrationOut.ts). A peer daemon, on an admin control session, sends MigrateIn (the process and
// its creation log), MigrateData (buffer contents, several rounds), then MigrateCommit. Here the
// process is spawned under its tenant, the log replayed on it with no client attached, the
// contents kept in host memory and handed to the buffers at the commit; then the process waits
// (30 s at most) for its client, whose Hello carries the resume token the commit returned.
// Until the commit nothing is visible to the client: a peer that gives up (MigrateAbort) or goes
// away (its session closes) takes the half-made process with it.

import { randomBytes } from 'node:crypto';
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
    const id = randomBytes(12).toString('base64url');
    const incoming: Incoming = { id, peerSession, handle, session, contents: new Map(), bytes: 0, replayError: () => replayError };
    this.incoming.set(id, incoming);
    try {
      await session.replay(parsedLog.data as LoggedMessage[], sink);
      if (replayError) throw replayError;
    } catch (error) {
      this.discard(incoming, 'its log did not replay');
      throw asMigrationError(error);
    }
    this.deps.log('info', 'a process is moving in', { pid: handle.pid, tenant: meta.tenant, processName: meta.name, migration: id });
    return { migration: id };
  }

  /** MigrateData: a piece of a buffer's contents (a later round's piece replaces an earlier one's bytes). */
  data(peerSession: number, payload: Payload<'MigrateData'>): null {
    const incoming = this.get(peerSession, payload.migration);
    const buffer = incoming.session.creations.objectOf(payload.buffer) as VirtualBuffer | undefined;
    if (!buffer) throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateData: buffer ${payload.buffer} is not in the moved-in log`);
    const { offset, data } = payload;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + data.byteLength > buffer.size) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateData: [${offset}, ${offset + data.byteLength}) is outside buffer ${payload.buffer} of ${buffer.size} bytes`);
    }
    let contents = incoming.contents.get(payload.buffer);
    if (!contents) {
      contents = new Uint8Array(buffer.size);
      incoming.contents.set(payload.buffer, contents);
    }
    contents.set(data, offset);
    incoming.bytes += data.byteLength;
    return null;
  }

  /** MigrateCommit: replays what changed since, gives the buffers their contents and the devices their error scopes. */
  async commit(peerSession: number, payload: Payload<'MigrateCommit'>): Promise<{ pid: number; token: string }> {
    const incoming = this.get(peerSession, payload.migration);
    const parsed = stateSchema.safeParse(payload.state ?? {});
    if (!parsed.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `MigrateCommit.state: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const { session, handle } = incoming;
    try {
      await session.replay(parsed.data.log as LoggedMessage[], new Sink());
      if (incoming.replayError()) throw incoming.replayError();
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
    this.deps.log('info', 'a process moved in; waiting for its client', { pid: handle.pid, bytes: incoming.bytes });
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
    incoming.session.close();
    this.deps.log('info', 'a process moving in was discarded', { pid: incoming.handle.pid, why });
    void this.deps.kernel.kill(incoming.handle.pid).catch(() => {});
  }
}

function asMigrationError(error: unknown): GpunixError {
  if (error instanceof GpunixError) return error.code === ErrorCodes.MIGRATION_FAILED ? error : new GpunixError(ErrorCodes.MIGRATION_FAILED, `${error.code}: ${error.message}`);
  return new GpunixError(ErrorCodes.MIGRATION_FAILED, (error as Error)?.message ?? String(error));
}

