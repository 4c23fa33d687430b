// A process session's creation log: the messages that made the objects its client still holds (or
// that objects it holds still use), in the order they came. Replayed into a fresh session on
// another node, it makes the same objects under the same client ids — the protocol is data, so a
// session's object graph moves as the messages that built it (src/daemon/migrationOut.ts).
//
// What is kept: adapter and device requests, every creation (buffers, shader modules, pipelines,
// layouts, bind groups, query sets, command buffers), and what changes an object afterwards
// (labels, destroy). What is dropped: objects the client released that nothing kept uses
// (swept now and then, so a program that makes and drops bind groups every step keeps the log
// small), and a command buffer's commands once it is submitted (it is consumed: it moves as a
// spent object).

import type { Message, MessageName } from '../protocol/messages.js';
import { splitId } from '../protocol/messages.js';

/** One logged message: a creation (`id` set) or a change to object `target`. */
interface LogRecord {
  name: MessageName;
  payload: unknown;
  /** The object it made (creations), or null. */
  id: number | null;
  /** The object it changes (SetLabel, destroys), or null. */
  target: number | null;
  released: boolean;
  /** A submitted command buffer: moves as a spent one (its commands are gone). */
  consumed: boolean;
  /** Object ids it names (references in its descriptor, its device or pipeline), found when first needed. */
  refs: number[] | null;
  /** The object a buffer creation made (its contents move; the client may have released the id). */
  object?: unknown;
  /** When it was logged (a counter): a move sends what came after its first export at the stop. */
  seq: number;
  /** When the client released it (its Release replays there: a later object may take its slot). */
  releasedSeq?: number;
}

/** A logged message as it travels in MigrateIn: [name, payload], or ["ConsumedCommandBuffer", {device, id}]. */
export type LoggedMessage = [string, unknown];

/** Messages whose `id` field is the object they make. */
const CREATIONS: ReadonlySet<MessageName> = new Set<MessageName>([
  'CreateBuffer',
  'CreateShaderModule',
  'CreateComputePipeline',
  'CreateComputePipelineAsync',
  'GetBindGroupLayout',
  'CreateBindGroupLayout',
  'CreatePipelineLayout',
  'CreateBindGroup',
  'CreateQuerySet',
  'FinishCommandEncoder',
  'AttachShared',
]);

/** Messages that change an existing object (field naming it). */
const CHANGES: Partial<Record<MessageName, string>> = {
  SetLabel: 'object',
  BufferDestroy: 'buffer',
  QuerySetDestroy: 'querySet',
  DeviceDestroy: 'device',
};

/** Released records beyond which a sweep runs (plus half the live ones: amortized). */
const SWEEP_SLACK = 256;

export class CreationLog {
  private readonly records: LogRecord[] = [];
  /** Creation records by object slot. */
  private readonly bySlot = new Map<number, LogRecord>();
  private releasedSinceSweep = 0;
  private seq = 0;
  /** Ids released and command buffers consumed, with when, for the delta a move sends at its stop. */
  private releases: Array<{ id: number; createdSeq: number; seq: number }> = [];
  private consumptions: Array<{ id: number; createdSeq: number; seq: number }> = [];
  /** Whether a move is under way (releases and consumptions are kept only then). */
  private marking = false;

  /** Notes `message` if it makes or changes an object (called as the session runs it). */
  note(message: Message): void {
    const name = message.name;
    const payload = message.payload as { [field: string]: unknown };
    if (name === 'RequestAdapter') return this.add(name, payload, payload.adapter as number, null);
    if (name === 'RequestDevice') {
      // The device's queue comes with it: one record makes both.
      this.add(name, payload, payload.device as number, null);
      this.bySlot.set(splitId(payload.queue as number).slot, this.records[this.records.length - 1]);
      return;
    }
    if (CREATIONS.has(name)) return this.add(name, payload, payload.id as number, null);
    const field = CHANGES[name];
    if (field) return this.add(name, payload, null, payload[field] as number);
    if (name === 'QueueSubmit') {
      for (const id of payload.commandBuffers as number[]) {
        const record = this.bySlot.get(splitId(id).slot);
        if (record && record.id === id) {
          record.consumed = true;
          record.refs = [];
          // Its commands are spent: only its device remains worth keeping.
          record.payload = { device: (record.payload as { device: number }).device };
          if (this.marking) this.consumptions.push({ id, createdSeq: record.seq, seq: ++this.seq });
        }
      }
      return;
    }
    if (name === 'Release') {
      for (const id of payload.ids as number[]) {
        const record = this.bySlot.get(splitId(id).slot);
        // A device's queue id maps to the device's record, whose id is the device's: it stays.
        if (record && record.id === id) {
          record.released = true;
          record.releasedSeq = ++this.seq;
          this.bySlot.delete(splitId(id).slot);
          this.releasedSinceSweep++;
          if (this.marking) this.releases.push({ id, createdSeq: record.seq, seq: record.releasedSeq });
        }
      }
      if (this.releasedSinceSweep > SWEEP_SLACK + this.bySlot.size / 2) this.sweep();
    }
  }

  /** A creation that failed at once on the daemon (the client never holds the id): forget it. */
  forget(id: number): void {
    const record = this.bySlot.get(splitId(id).slot);
    if (record && record.id === id) {
      record.released = true;
      this.bySlot.delete(splitId(id).slot);
    }
  }

  /** Keeps the object a creation made (buffers: their contents are read when the process moves). */
  made(id: number, object: unknown): void {
    const record = this.bySlot.get(splitId(id).slot);
    if (record && record.id === id) record.object = object;
  }

  /** The object creation `id` made (kept by made()), also after the client released the id. */
  objectOf(id: number): unknown {
    for (let i = this.records.length - 1; i >= 0; i--) if (this.records[i].id === id) return this.records[i].object;
    return undefined;
  }

  /** True when the session holds a shared segment (AttachShared): it cannot move. */
  get attachesShared(): boolean {
    return this.records.some((r) => r.name === 'AttachShared' && !r.released);
  }

  /** The buffers the log makes (sweeping first), in creation order, with the objects made. */
  buffers(): Array<{ id: number; object: unknown }> {
    this.sweep();
    return this.records.filter((r) => r.name === 'CreateBuffer').map((r) => ({ id: r.id!, object: r.object }));
  }

  /**
   * The whole log to replay, in order: creations and changes as they came, each Release where it
   * came (a later object may take the released slot). Returns the mark to pass to `delta` at the
   * stop; from now on releases and consumptions are remembered for it.
   */
  export(): { log: LoggedMessage[]; mark: number } {
    this.sweep();
    this.marking = true;
    this.releases = [];
    this.consumptions = [];
    return { log: this.events(-1, []), mark: this.seq };
  }

  /**
   * What changed since `export` returned `mark`, to replay after it: new records and releases in
   * order, then command buffers submitted since ("Consume").
   */
  delta(mark: number): LoggedMessage[] {
    const present = new Set(this.records.map((r) => r.id));
    // Released since the mark, made before it, and swept since: the other side still holds them.
    const swept = this.releases.filter((r) => r.createdSeq <= mark && !present.has(r.id)).map((r) => ({ seq: r.seq, id: r.id }));
    const out = this.events(mark, swept);
    const consumed = this.consumptions.filter((c) => c.seq > mark && c.createdSeq <= mark).map((c) => c.id);
    if (consumed.length > 0) out.push(['Consume', { ids: consumed }]);
    return out;
  }

  /** Records and releases after `mark`, in the order they came; adjacent releases go as one Release. */
  private events(mark: number, extraReleases: Array<{ seq: number; id: number }>): LoggedMessage[] {
    const events: Array<{ seq: number; message?: LoggedMessage; release?: number }> = [];
    for (const record of this.records) {
      if (record.seq > mark) events.push({ seq: record.seq, message: this.message(record) });
      if (record.released && record.id !== null && record.releasedSeq !== undefined && record.releasedSeq > mark) events.push({ seq: record.releasedSeq, release: record.id });
    }
    for (const { seq, id } of extraReleases) if (seq > mark) events.push({ seq, release: id });
    events.sort((a, b) => a.seq - b.seq);
    const out: LoggedMessage[] = [];
    for (const event of events) {
      if (event.message) {
        out.push(event.message);
        continue;
      }
      const last = out[out.length - 1];
      if (last && last[0] === 'Release') (last[1] as { ids: number[] }).ids.push(event.release!);
      else out.push(['Release', { ids: [event.release!] }]);
    }
    return out;
  }

  /** A command buffer that came already submitted (a process that moved here): it moves on as spent. */
  addConsumed(device: number, id: number): void {
    this.add('FinishCommandEncoder', { device, id }, id, null);
    const record = this.records[this.records.length - 1];
    record.consumed = true;
    record.refs = [];
  }

  /** The move ended: stop remembering releases and consumptions. */
  unmark(): void {
    this.marking = false;
    this.releases = [];
    this.consumptions = [];
  }

  private message(record: LogRecord): LoggedMessage {
    if (!record.consumed) return [record.name, record.payload];
    const { device } = record.payload as { device: number };
    return ['ConsumedCommandBuffer', { device, id: record.id }];
  }

  private add(name: MessageName, payload: unknown, id: number | null, target: number | null): void {
    const record: LogRecord = { name, payload, id, target, released: false, consumed: false, refs: null, seq: ++this.seq };
    this.records.push(record);
    if (id !== null) this.bySlot.set(splitId(id).slot, record);
  }

  /**
   * Drops released objects nothing live uses (and the changes made to them): a mark from the
   * objects the client holds, following references.
   */
  private sweep(): void {
    this.releasedSinceSweep = 0;
    const byId = new Map<number, LogRecord>();
    for (const record of this.records) if (record.id !== null) byId.set(record.id, record);
    const live = new Set<LogRecord>();
    const stack = this.records.filter((r) => r.id !== null && !r.released);
    while (stack.length > 0) {
      const record = stack.pop()!;
      if (live.has(record)) continue;
      live.add(record);
      for (const ref of refsOf(record)) {
        const used = byId.get(ref);
        if (used && !live.has(used)) stack.push(used);
      }
    }
    const kept = this.records.filter((r) => (r.id !== null ? live.has(r) : r.target !== null && byId.has(r.target) && live.has(byId.get(r.target)!)));
    this.records.length = 0;
    this.records.push(...kept);
  }
}

/** The object ids a record names: its device, adapter or pipeline field, and every {"$ref": id} in its payload. */
function refsOf(record: LogRecord): number[] {
  if (record.refs) return record.refs;
  const refs: number[] = [];
  const payload = record.payload as { [field: string]: unknown };
  for (const field of ['device', 'adapter', 'pipeline']) {
    if (typeof payload[field] === 'number' && payload[field] !== record.id) refs.push(payload[field] as number);
  }
  const walk = (value: unknown, depth: number): void => {
    if (depth > 40 || value === null || typeof value !== 'object') return;
    if (Array.isArray(value)) {
      for (const item of value) walk(item, depth + 1);
      return;
    }
    const ref = (value as { $ref?: unknown }).$ref;
    if (typeof ref === 'number') {
      refs.push(ref);
      return;
    }
    for (const item of Object.values(value)) walk(item, depth + 1);
  };
  for (const field of ['descriptor', 'commands']) walk(payload[field], 0);
  record.refs = refs;
  return refs;
}
