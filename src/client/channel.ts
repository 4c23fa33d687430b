// What every remote WebGPU object of one session shares: the session, the object ids, and the
// garbage collector's Release messages. Ids are chosen here (slot | generation << 32): creating an
// object never waits for the daemon. A slot is reused only after the Release that frees it has
// been sent, with the next generation, so a stale id can never name a newer object.

import { ErrorCodes, GpunixError } from '../errors.js';
import { joinId, MessageName, Payload, splitId } from '../protocol/messages.js';
import { programError } from './errors.js';
import type { ReplySink, Session } from './session.js';

export class IdAllocator {
  private readonly free: number[] = [];
  private readonly generations = new Map<number, number>();
  private nextSlot = 1;

  allocate(): number {
    const slot = this.free.pop() ?? this.nextSlot++;
    return joinId(slot, this.generations.get(slot) ?? 0);
  }

  /** The daemon no longer holds `id` (released, or never made): its slot may be reused, one generation on. */
  recycle(id: number): void {
    const { slot, generation } = splitId(id);
    this.generations.set(slot, (generation + 1) % 2 ** 21);
    this.free.push(slot);
  }
}

export class Channel {
  readonly ids = new IdAllocator();
  private readonly unreachable: number[] = [];
  private flushScheduled = false;
  private readonly registry = new FinalizationRegistry<number>((id) => this.collected(id));
  /** Called for each id the program dropped, before its Release goes (the device table forgets it). */
  onCollected: (id: number) => void = () => {};

  constructor(readonly session: Session) {}

  /** The process's pid on the node it runs on now (a move between nodes changes it: the session's welcome is the new node's). */
  get pid(): number {
    return this.session.welcome.pid;
  }

  /** Sends a pipelined message; after the session ended it is dropped (as a lost device's calls do nothing). */
  post<N extends MessageName>(name: N, payload: Payload<N>): void {
    if (this.session.isOpen) this.session.post(name, payload);
  }

  /**
   * Sends a request; rejects with the WebGPU error (or GpunixError) the program should see.
   * `sink` copies a ReplyData's bytes out as they arrive (see ReplySink).
   */
  async request<N extends MessageName>(name: N, payload: Omit<Payload<N>, 'req'>, sink?: ReplySink): Promise<{ result: unknown; data?: Uint8Array }> {
    if (!this.session.isOpen) throw new GpunixError(ErrorCodes.DISCONNECTED, 'the session with gpunixd has ended');
    try {
      return await this.session.request(name, payload, undefined, sink);
    } catch (error) {
      throw programError(error);
    }
  }

  /** Sends Release for `object`'s id once the program has dropped it. */
  track(object: object, id: number): void {
    this.registry.register(object, id);
  }

  private collected(id: number): void {
    this.onCollected(id);
    this.unreachable.push(id);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Batched: a collection frees many objects at once.
    setImmediate(() => {
      this.flushScheduled = false;
      const ids = this.unreachable.splice(0);
      if (ids.length === 0 || !this.session.isOpen) return;
      this.session.post('Release', { ids });
      for (const released of ids) this.ids.recycle(released);
    }).unref();
  }
}
