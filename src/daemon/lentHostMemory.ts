// Host memory this node lends to other nodes for their evicted buffer contents (their remote
// tier: src/daemon/remoteTier.ts, kernel/spill.ts). A peer daemon, on an admin control session,
// keeps byte arrays here (HostStore), fetches them back (HostFetch) and frees them (HostDrop);
// what a session kept is freed when it closes (its node went away: its evicted contents are gone
// with it, as its spill files would be). `lendHostMemory` bounds the total.

import { randomBytes } from 'node:crypto';
import { ErrorCodes, GpunixError } from '../errors.js';

type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export class LentHostMemory {
  private readonly kept = new Map<string, { peerSession: number; data: Uint8Array }>();
  /** Bytes kept now, for all peers. */
  bytes = 0;

  constructor(
    /** Most bytes kept for other nodes at once (0: none lent). */
    private readonly limitBytes: number,
    private readonly log: LogFn,
  ) {}

  /** HostStore: keeps a copy of `data` for the peer; its key. */
  store(peerSession: number, data: Uint8Array): { key: string } {
    if (this.bytes + data.byteLength > this.limitBytes) {
      throw new GpunixError(ErrorCodes.OUT_OF_MEMORY, `this node lends ${this.limitBytes} bytes of host memory (lendHostMemory), ${this.bytes} in use: no room for ${data.byteLength} more`);
    }
    const key = randomBytes(12).toString('base64url');
    // A copy: the decoded frame's bytes may be a view of a larger buffer the wire reuses.
    this.kept.set(key, { peerSession, data: data.slice() });
    this.bytes += data.byteLength;
    return { key };
  }

  /** HostFetch: the bytes kept under `key` by this peer. */
  fetch(peerSession: number, key: string): Uint8Array {
    const found = this.kept.get(key);
    if (!found || found.peerSession !== peerSession) throw new GpunixError(ErrorCodes.BAD_OPTION, `nothing is kept under ${JSON.stringify(key)} for this session`);
    return found.data;
  }

  /** HostDrop. */
  drop(peerSession: number, keys: unknown): null {
    if (!Array.isArray(keys)) throw new GpunixError(ErrorCodes.BAD_OPTION, 'HostDrop.keys must be an array of keys');
    for (const key of keys) {
      const found = typeof key === 'string' ? this.kept.get(key) : undefined;
      if (!found || found.peerSession !== peerSession) continue;
      this.kept.delete(key as string);
      this.bytes -= found.data.byteLength;
    }
    return null;
  }

  /** A peer's session ended: everything it kept is freed. */
  peerGone(peerSession: number): void {
    let freed = 0;
    for (const [key, found] of this.kept) {
      if (found.peerSession !== peerSession) continue;
      this.kept.delete(key);
      freed += found.data.byteLength;
    }
    this.bytes -= freed;
    if (freed > 0) this.log('info', "a node's evicted contents kept here were freed (its session closed)", { bytes: freed });
  }
}
