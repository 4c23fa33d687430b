// How a client gets its shared-memory region's descriptor (docs/daemon.md, "Bulk data").
//
// The daemon's regions are sealed memory files (memfd, src/sharedMapping.ts): they have no name a
// client could open, and a client of another user could not open /proc/<daemon>/fd/<n> either. So
// the daemon hands the descriptor itself over a Unix socket (SCM_RIGHTS), on a listener of its own
// beside the main socket (`<socket>.regions`, the same mode): the client's session socket cannot
// carry it, as Node reads that socket with read(2), which drops passed descriptors.
//
// The exchange: the session asks for a region (BulkRegion); the daemon makes it, offers its
// descriptor under a one-time 128-bit key and replies {handoff: {socket, key}} on the session's
// own authenticated socket; the client connects to the handoff socket and writes the key and a
// newline; the daemon sends one byte carrying the descriptor and closes. A key works once, and
// only until the session says it has its region (BulkRegionOpened) or ends; a connection that
// sends anything else, or nothing within HANDOFF_TIMEOUT_MS, is closed with nothing sent, and at
// most MAX_OPEN_HANDOFFS are open at once. Only the session that asked ever sees its key.

import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, Server, Socket } from 'node:net';
import { memoryCalls } from '../libc.js';
import type { LogFn } from './log.js';

/** A handoff connection must send its key within this long. */
const HANDOFF_TIMEOUT_MS = 5_000;
/** Handoff connections open at once; more are closed at once (a client needs one, briefly, per region). */
const MAX_OPEN_HANDOFFS = 64;
/** 32 hex digits and a newline. */
const KEY_LINE_BYTES = 33;

/** The handoff listener's path for a daemon listening on `socket`. */
export const handoffPathOf = (socket: string): string => `${socket}.regions`;

export class RegionHandoff {
  /** Descriptors on offer, by key. */
  private readonly offers = new Map<string, number>();
  /** Handoff connections open now (bounded: a flood of them must not use up the daemon's descriptors). */
  private open = 0;

  private constructor(
    private readonly server: Server,
    readonly path: string,
    private readonly log: LogFn,
  ) {}

  /**
   * Listens at handoffPathOf(socket) with the socket's mode; null where descriptors cannot be
   * passed here (no libc calls: regions are then tmpfs files opened by name). A file left at the
   * path by an earlier daemon is removed (the main socket's check already showed no daemon runs).
   */
  static async listen(socket: string, mode: number, log: LogFn): Promise<RegionHandoff | null> {
    if (!memoryCalls()) return null;
    const path = handoffPathOf(socket);
    try {
      if (lstatSync(path).isSocket()) unlinkSync(path);
    } catch {
      // Nothing there.
    }
    const server = createServer((connection) => handoff.serve(connection));
    const handoff = new RegionHandoff(server, path, log);
    const umask = process.umask(0o777 & ~mode);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => resolve());
      });
    } finally {
      process.umask(umask);
    }
    chmodSync(path, mode);
    server.on('error', (error) => log('warn', 'the region handoff listener failed', { error: error.message }));
    return handoff;
  }

  /** Offers `fd` under a fresh key (for the one session that asked). */
  offer(fd: number): string {
    const key = randomBytes(16).toString('hex');
    this.offers.set(key, fd);
    return key;
  }

  /** Withdraws an offer (taken, given up or the session ended); the descriptor stays the caller's. */
  withdraw(key: string): void {
    this.offers.delete(key);
  }

  /** One handoff connection: a key line in, the descriptor out (once), closed either way. */
  private serve(connection: Socket): void {
    connection.on('error', () => {});
    if (this.open >= MAX_OPEN_HANDOFFS) {
      connection.destroy();
      return;
    }
    this.open++;
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => connection.destroy(), HANDOFF_TIMEOUT_MS);
    timer.unref();
    connection.on('close', () => {
      this.open--;
      clearTimeout(timer);
    });
    let answered = false;
    connection.on('data', (chunk: Buffer) => {
      if (answered) return;
      received = Buffer.concat([received, chunk]);
      if (received.byteLength < KEY_LINE_BYTES) return;
      answered = true;
      const line = received.subarray(0, KEY_LINE_BYTES).toString('latin1');
      const key = line.slice(0, -1);
      const fd = line.endsWith('\n') ? this.offers.get(key) : undefined;
      if (fd === undefined) {
        // (debug: any local user who may connect could fill a warning log with these)
        this.log('debug', 'a region handoff named no region on offer; closed', {});
        connection.destroy();
        return;
      }
      this.offers.delete(key);
      const socketFd = (connection as unknown as { _handle?: { fd?: number } })._handle?.fd;
      const sent = typeof socketFd === 'number' && socketFd >= 0 && memoryCalls()!.sendDescriptor(socketFd, fd);
      if (!sent) this.log('warn', 'a region descriptor could not be sent', {});
      connection.end();
    });
  }

  /** Stops listening and removes the socket file; offers lapse. */
  close(): void {
    this.offers.clear();
    this.server.close();
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }
}
