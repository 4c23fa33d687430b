// A node's copy of a shared segment homed on another node (docs/memory.md, "Shared segments
// across nodes"; the home's side is segmentHome.ts). A program attaches "N@home"; its processes
// on this node share one local segment of that name (kernel/segments.ts), which this module keeps
// consistent with the home under release consistency:
// - acquire, before a submit that uses the segment runs: the blocks changed at the home since this
//   node last had them are pulled, and the words in them that differ from what this node last
//   knew are written into the local copy (words this node wrote and has not published yet stay);
// - release, when a process awaits onSubmittedWorkDone (before the promise resolves): the words
//   its node changed since it last knew the segment are pushed to the home.
// So what one process wrote before its onSubmittedWorkDone resolved is seen by a process on any
// node at its next submit that uses the segment. Writes racing on the same word from two nodes
// without that order are a race: one of them wins.

import { ErrorCodes, GpunixError } from '../errors.js';
import { Session } from '../client/session.js';
import type { VirtualBuffer } from '../vgpu/buffer.js';
import type { VirtualDevice } from '../vgpu/device.js';
import { NodeAddress, sessionOptionsFor } from './migrationOut.js';

type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** How often an open replica pings its home (well within the home's control idle timeout). */
const KEEPALIVE_MS = 60_000;

/** One local copy of a remote segment, shared by this node's processes that attached it. */
export class SegmentReplica {
  /** What this node last knew the segment to hold (pulled or pushed). */
  private readonly shadow: Uint8Array;
  private turn: Promise<unknown> = Promise.resolve();
  /** Process sessions attached here; the last to go closes it at the home. */
  users = 0;

  constructor(
    readonly key: string,
    readonly name: string,
    readonly home: string,
    readonly size: number,
    private readonly peer: Session,
    private readonly handle: number,
    private readonly log: LogFn,
  ) {
    this.shadow = new Uint8Array(size);
    // The home closes control sessions idle for controlIdleTimeoutMs (10 min): a quiet segment stays open.
    this.keepalive = setInterval(() => void this.peer.call('Ping', {}).catch(() => {}), KEEPALIVE_MS);
    this.keepalive.unref();
  }
  private readonly keepalive: NodeJS.Timeout;

  /** Brings the home's changes into the local copy, through `device`'s queue (before what the process queues next). */
  acquire(device: VirtualDevice, buffer: VirtualBuffer): Promise<void> {
    return this.inTurn(async () => {
      const { result, data } = await this.peer.request('SegmentPull', { segment: this.handle });
      const blocks = (result as { blocks: Array<[number, number]> }).blocks;
      let at = 0;
      for (const [offset, length] of blocks) {
        const incoming = data!.subarray(at, at + length);
        at += length;
        for (const [start, end] of changedRuns(incoming, this.shadow.subarray(offset, offset + length))) {
          const bytes = incoming.slice(start, end);
          device.queue.writeBuffer(buffer as unknown as GPUBuffer, offset + start, bytes);
          this.shadow.set(bytes, offset + start);
        }
      }
    });
  }

  /** Publishes the words this node changed (read after the process's queued work) to the home. */
  release(device: VirtualDevice, buffer: VirtualBuffer): Promise<void> {
    return this.inTurn(async () => {
      const local = await device.readInOrder(buffer);
      if (!local) throw new GpunixError(ErrorCodes.BUSY, `shared segment "${this.name}@${this.home}" could not be read`);
      const runs = changedRuns(local, this.shadow);
      if (runs.length === 0) return;
      const bytes = runs.reduce((sum, [start, end]) => sum + end - start, 0);
      const data = new Uint8Array(bytes);
      let at = 0;
      for (const [start, end] of runs) {
        data.set(local.subarray(start, end), at);
        this.shadow.set(local.subarray(start, end), start);
        at += end - start;
      }
      await this.peer.call('SegmentPush', { segment: this.handle, runs: runs.map(([start, end]) => [start, end - start]), data });
    });
  }

  /** The last process here let go: closed at the home. */
  close(): void {
    clearInterval(this.keepalive);
    void this.peer.call('SegmentClose', { segment: this.handle }).catch(() => {}).finally(() => this.peer.close());
    this.log('debug', 'closed a remote shared segment', { segment: `${this.name}@${this.home}` });
  }

  private inTurn<T>(body: () => Promise<T>): Promise<T> {
    const run = this.turn.then(body, body);
    this.turn = run.catch(() => undefined);
    return run;
  }
}

/** This node's copies of remote segments, by tenant and name@home. */
export class SegmentReplicas {
  private readonly replicas = new Map<string, Promise<SegmentReplica>>();

  constructor(
    private readonly deps: {
      /** The daemon's own node name (segments homed here are local). */
      node: string | null;
      /** Where node `name` listens, or null when unknown. */
      resolve: (name: string) => Promise<NodeAddress | null>;
      /** The admin token other nodes accept (migration.peerToken). */
      peerToken: string | null;
      log: LogFn;
    },
  ) {}

  /** The home node a segment name asks for ("frames@node-b"), or null when it is homed here. */
  homeOf(name: string): string | null {
    const at = name.lastIndexOf('@');
    if (at <= 0 || at === name.length - 1) return null;
    const home = name.slice(at + 1);
    return home === this.deps.node ? null : home;
  }

  /** The name a segment has on this node: "name@<this node>" is plain "name". */
  localName(name: string): string {
    const at = name.lastIndexOf('@');
    return at > 0 && name.slice(at + 1) === this.deps.node ? name.slice(0, at) : name;
  }

  /** The replica of tenant's `name` (with its @home) for one more user: opened at the home if new. */
  async attach(tenant: string, name: string, size: number): Promise<SegmentReplica> {
    const key = `${tenant}\u0000${name}`;
    let made = this.replicas.get(key);
    if (!made) {
      made = this.open(key, tenant, name, size);
      this.replicas.set(key, made);
      made.catch(() => this.replicas.delete(key));
    }
    const replica = await made;
    if (replica.size !== size) throw new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}" has ${replica.size} bytes, not ${size}`);
    replica.users++;
    return replica;
  }

  /** A user let go; the last closes it at the home. */
  detach(replica: SegmentReplica): void {
    if (--replica.users > 0) return;
    this.replicas.delete(replica.key);
    replica.close();
  }

  private async open(key: string, tenant: string, name: string, size: number): Promise<SegmentReplica> {
    const at = name.lastIndexOf('@');
    const bare = name.slice(0, at);
    const home = name.slice(at + 1);
    const address = await this.deps.resolve(home);
    if (!address) throw new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}": this daemon knows no node "${home}" (peers in its configuration, or the fleet's nodes)`);
    if (!this.deps.peerToken) throw new GpunixError(ErrorCodes.BAD_OPTION, `shared segment "${name}": this daemon has no migration.peerToken to present to node ${home}`);
    let peer: Session;
    try {
      peer = await Session.open(sessionOptionsFor(address, this.deps.peerToken), { role: 'control' });
    } catch (error) {
      throw new GpunixError(ErrorCodes.DISCONNECTED, `shared segment "${name}": cannot reach node ${home}: ${(error as Error).message}`);
    }
    try {
      const { segment } = (await peer.call('SegmentOpen', { tenant, name: bare, size })) as { segment: number };
      this.deps.log('info', 'attached a shared segment homed on another node', { tenant, segment: name, bytes: size });
      return new SegmentReplica(key, bare, home, size, peer, segment, this.deps.log);
    } catch (error) {
      peer.close();
      throw error;
    }
  }
}

/** Word-aligned [start, end) runs where `a` and `b` (same length, a multiple of 4) differ. */
export function changedRuns(a: Uint8Array, b: Uint8Array): Array<[number, number]> {
  // Views of decoded frames may start anywhere: word views need aligned copies then.
  if (a.byteOffset % 4 !== 0) a = a.slice();
  if (b.byteOffset % 4 !== 0) b = b.slice();
  const runs: Array<[number, number]> = [];
  const words = a.byteLength >>> 2;
  const wa = new Uint32Array(a.buffer, a.byteOffset, words);
  const wb = new Uint32Array(b.buffer, b.byteOffset, words);
  let start = -1;
  for (let i = 0; i < words; i++) {
    if (wa[i] !== wb[i]) {
      if (start < 0) start = i;
    } else if (start >= 0) {
      runs.push([start * 4, i * 4]);
      start = -1;
    }
  }
  if (start >= 0) runs.push([start * 4, words * 4]);
  return runs;
}
