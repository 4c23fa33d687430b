// The binary codec, derived from the message table: a frame is
//   u32 length (bytes after this field) | u16 message code | the fields, in table order.
// Decoding checks every length and kind against the table and the frame's end; anything off is a
// ProtocolError with a code, never an exception of another kind and never a partial message.

import { ErrorCodes, GpunixError } from '../errors.js';
import { LargeBufferPool } from '../largeBufferPool.js';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FieldKind,
  joinId,
  Message,
  MESSAGES,
  MessageName,
  Payload,
} from './messages.js';

/** Bytes before the fields: the u32 length and the u16 code. */
export const FRAME_HEADER_BYTES = 6;

export class ProtocolError extends GpunixError {}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** One message's layout, read from the table once (not per frame): its code and its fields in order. */
interface Layout {
  readonly name: MessageName;
  readonly code: number;
  readonly fields: readonly (readonly [string, FieldKind])[];
}

const LAYOUTS = new Map<MessageName, Layout>(
  (Object.keys(MESSAGES) as MessageName[]).map((name) => [name, { name, code: MESSAGES[name].code, fields: Object.entries(MESSAGES[name].fields) as [string, FieldKind][] }]),
);
const LAYOUT_BY_CODE = new Map<number, Layout>([...LAYOUTS.values()].map((layout) => [layout.code, layout]));

function layoutOf(name: MessageName): Layout {
  const layout = LAYOUTS.get(name);
  if (!layout) throw new ProtocolError(ErrorCodes.PROTOCOL_UNKNOWN_MESSAGE, `unknown message ${String(name)}`);
  return layout;
}

function badField(field: string, what: string): ProtocolError {
  return new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `field ${field}: ${what}`);
}

/**
 * The text of each str and json field of the frame being encoded, in field order, between
 * measureFrame() and writeFrame() (reused: encoding allocates nothing but the strings JSON makes).
 */
const texts: string[] = [];

/**
 * Checks `payload` against `layout` and returns the whole frame's size (header included); leaves
 * the str and json fields' text in `texts` for writeFrame(). Throws ProtocolError.
 */
function measureFrame(layout: Layout, values: Record<string, unknown>): number {
  texts.length = 0;
  let size = FRAME_HEADER_BYTES;
  for (const [field, kind] of layout.fields) {
    const value = values[field];
    switch (kind) {
      case 'u8':
      case 'u16':
      case 'u32': {
        const max = kind === 'u8' ? 0xff : kind === 'u16' ? 0xffff : 0xffffffff;
        if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > max) throw badField(field, `expected ${kind}, got ${String(value)}`);
        size += kind === 'u8' ? 1 : kind === 'u16' ? 2 : 4;
        break;
      }
      case 'f64':
        if (typeof value !== 'number') throw badField(field, `expected a number, got ${typeof value}`);
        size += 8;
        break;
      case 'bool':
        if (typeof value !== 'boolean') throw badField(field, `expected a boolean, got ${typeof value}`);
        size += 1;
        break;
      case 'str':
        if (typeof value !== 'string') throw badField(field, `expected a string, got ${typeof value}`);
        texts.push(value);
        size += 4 + Buffer.byteLength(value, 'utf8');
        break;
      case 'json': {
        // JSON.stringify gives undefined for undefined and functions: both travel as null.
        const text = JSON.stringify(value ?? null) ?? 'null';
        texts.push(text);
        size += 4 + Buffer.byteLength(text, 'utf8');
        break;
      }
      case 'bytes':
        if (!ArrayBuffer.isView(value)) throw badField(field, 'expected bytes');
        size += 4 + value.byteLength;
        break;
      case 'id':
        if (!Number.isSafeInteger(value) || (value as number) < 0) throw badField(field, `expected an object id, got ${String(value)}`);
        size += 8;
        break;
      case 'ids':
        if (!Array.isArray(value) || !value.every((v) => Number.isSafeInteger(v) && v >= 0)) throw badField(field, 'expected a list of object ids');
        size += 4 + 8 * value.length;
        break;
    }
  }
  return size;
}

/** Writes the frame measureFrame() measured (`size` bytes) into `frame` at `start`. */
function writeFrame(layout: Layout, values: Record<string, unknown>, frame: Buffer, start: number, size: number): void {
  frame.writeUInt32LE(size - 4, start);
  frame.writeUInt16LE(layout.code, start + 4);
  let at = start + FRAME_HEADER_BYTES;
  let text = 0;
  for (const [field, kind] of layout.fields) {
    const value = values[field];
    switch (kind) {
      case 'u8':
        at = frame.writeUInt8(value as number, at);
        break;
      case 'u16':
        at = frame.writeUInt16LE(value as number, at);
        break;
      case 'u32':
        at = frame.writeUInt32LE(value as number, at);
        break;
      case 'f64':
        at = frame.writeDoubleLE(value as number, at);
        break;
      case 'bool':
        at = frame.writeUInt8(value ? 1 : 0, at);
        break;
      case 'id':
        at = writeId(frame, value as number, at);
        break;
      case 'ids':
        at = frame.writeUInt32LE((value as number[]).length, at);
        for (const id of value as number[]) at = writeId(frame, id, at);
        break;
      case 'bytes': {
        const view = value as ArrayBufferView;
        at = frame.writeUInt32LE(view.byteLength, at);
        frame.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), at);
        at += view.byteLength;
        break;
      }
      default: {
        // str and json: the text measured, written as UTF-8 straight into the frame.
        const length = frame.write(texts[text++], at + 4, 'utf8');
        at = frame.writeUInt32LE(length, at);
        at += length;
      }
    }
  }
}

/** Encodes one message as a whole frame. Throws ProtocolError if the payload does not fit the table. */
export function encodeFrame<N extends MessageName>(name: N, payload: Payload<N>): Buffer {
  const layout = layoutOf(name);
  const values = payload as Record<string, unknown>;
  const size = measureFrame(layout, values);
  const frame = Buffer.allocUnsafe(size);
  writeFrame(layout, values, frame, 0, size);
  return frame;
}

/** Frames up to this size are encoded into a shared chunk (FrameEncoder); larger ones get a buffer of their own. */
const SMALL_FRAME_BYTES = 16 * 1024;

/** The process's pool of large frame buffers (one for every connection: a frame is written once). */
export const largeFrameBuffers = new LargeBufferPool(160 * 1024 * 1024);
/** The chunk small frames are packed into; a new one is taken when it is full. */
const CHUNK_BYTES = 64 * 1024;

/**
 * Encodes frames back to back for one writer, packing small ones into a shared chunk (one
 * allocation per 64 KiB of small frames, not one per frame), and hands out what was encoded since
 * the last take() as a few buffers, in order, to go out in one write. Bytes handed out are never
 * written again (the stream may still hold them): later frames go after them, or into a new chunk.
 */
export class FrameEncoder {
  private chunk = Buffer.allocUnsafe(0);
  /** chunk[taken, end) is encoded and not yet handed out. */
  private taken = 0;
  private end = 0;
  private readonly out: Buffer[] = [];
  /** Buffers of large frames in `out`, from largeFrameBuffers: the writer gives them back once written. */
  private borrowed: Buffer[] = [];
  /** Bytes encoded and not yet taken. */
  pendingBytes = 0;

  /** Encodes one message; returns its frame's size. Throws ProtocolError (nothing is queued then). */
  encode<N extends MessageName>(name: N, payload: Payload<N>): number {
    const layout = layoutOf(name);
    const values = payload as Record<string, unknown>;
    const size = measureFrame(layout, values);
    if (size > SMALL_FRAME_BYTES) {
      this.cut();
      const whole = largeFrameBuffers.take(size);
      writeFrame(layout, values, whole, 0, size);
      this.out.push(whole.subarray(0, size));
      this.borrowed.push(whole);
    } else {
      if (this.end + size > this.chunk.byteLength) {
        this.cut();
        this.chunk = Buffer.allocUnsafe(CHUNK_BYTES);
        this.taken = this.end = 0;
      }
      writeFrame(layout, values, this.chunk, this.end, size);
      this.end += size;
    }
    this.pendingBytes += size;
    return size;
  }

  /**
   * Everything encoded since the last take(), in order (empty when nothing is pending), and the
   * large buffers among them to give back to largeFrameBuffers once they are written.
   */
  take(): { buffers: Buffer[]; borrowed: Buffer[] } {
    this.cut();
    this.pendingBytes = 0;
    const borrowed = this.borrowed;
    this.borrowed = [];
    return { buffers: this.out.splice(0), borrowed };
  }

  /** Closes the run of small frames in the chunk so far (frames after it go after it in `out`). */
  private cut(): void {
    if (this.end === this.taken) return;
    this.out.push(this.chunk.subarray(this.taken, this.end));
    this.taken = this.end;
  }
}

function writeId(frame: Buffer, id: number, at: number): number {
  const slot = id % 2 ** 32;
  at = frame.writeUInt32LE(slot, at);
  return frame.writeUInt32LE((id - slot) / 2 ** 32, at);
}

function frameEndsEarly(name: MessageName, field: string, missing: number): ProtocolError {
  return new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${name}.${field}: frame ends ${missing} bytes early`);
}

/** Decodes one frame's body (code and fields, without the length). Throws ProtocolError. */
export function decodeBody(body: Buffer): Message {
  const end = body.byteLength;
  if (end < 2) throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, 'frame too short for a message code');
  const code = body.readUInt16LE(0);
  const layout = LAYOUT_BY_CODE.get(code);
  if (!layout) throw new ProtocolError(ErrorCodes.PROTOCOL_UNKNOWN_MESSAGE, `unknown message code ${code}`);
  const name = layout.name;
  let at = 2;
  const payload: Record<string, unknown> = {};
  for (const [field, kind] of layout.fields) {
    switch (kind) {
      case 'u8':
        if (at + 1 > end) throw frameEndsEarly(name, field, at + 1 - end);
        payload[field] = body[at];
        at += 1;
        break;
      case 'u16':
        if (at + 2 > end) throw frameEndsEarly(name, field, at + 2 - end);
        payload[field] = body.readUInt16LE(at);
        at += 2;
        break;
      case 'u32':
        if (at + 4 > end) throw frameEndsEarly(name, field, at + 4 - end);
        payload[field] = body.readUInt32LE(at);
        at += 4;
        break;
      case 'f64':
        if (at + 8 > end) throw frameEndsEarly(name, field, at + 8 - end);
        payload[field] = body.readDoubleLE(at);
        at += 8;
        break;
      case 'bool': {
        if (at + 1 > end) throw frameEndsEarly(name, field, at + 1 - end);
        const byte = body[at];
        if (byte > 1) throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${name}.${field}: a bool must be 0 or 1, got ${byte}`);
        payload[field] = byte === 1;
        at += 1;
        break;
      }
      case 'id':
        if (at + 8 > end) throw frameEndsEarly(name, field, at + 8 - end);
        payload[field] = readId(body, at, name, field);
        at += 8;
        break;
      case 'ids': {
        if (at + 4 > end) throw frameEndsEarly(name, field, at + 4 - end);
        const count = body.readUInt32LE(at);
        at += 4;
        if (at + count * 8 > end) throw frameEndsEarly(name, field, at + count * 8 - end);
        const ids: number[] = new Array(count);
        for (let i = 0; i < count; i++, at += 8) ids[i] = readId(body, at, name, field, i);
        payload[field] = ids;
        break;
      }
      default: {
        if (at + 4 > end) throw frameEndsEarly(name, field, at + 4 - end);
        const length = body.readUInt32LE(at);
        at += 4;
        if (at + length > end) throw frameEndsEarly(name, field, at + length - end);
        const from = at;
        at += length;
        if (kind === 'bytes') {
          payload[field] = new Uint8Array(body.buffer, body.byteOffset + from, length);
          break;
        }
        const text = decodeText(body, from, at, name, field);
        if (kind === 'str') {
          payload[field] = text;
          break;
        }
        try {
          payload[field] = JSON.parse(text);
        } catch (error) {
          throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${name}.${field}: not valid JSON (${(error as Error).message})`);
        }
      }
    }
  }
  if (at !== end) throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${name}: ${end - at} bytes after the last field`);
  return { name, payload } as Message;
}

/** Text shorter than this that is all ASCII is decoded by latin1 (no validation needed: ASCII is valid UTF-8). */
const ASCII_FAST_BYTES = 256;

/** body[from, to) as a string; invalid UTF-8 is malformed. */
function decodeText(body: Buffer, from: number, to: number, name: MessageName, field: string): string {
  if (to - from <= ASCII_FAST_BYTES) {
    let ascii = true;
    for (let i = from; i < to; i++) {
      if (body[i] > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return body.toString('latin1', from, to);
  }
  try {
    return strictUtf8.decode(body.subarray(from, to));
  } catch {
    throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${name}.${field}: not valid UTF-8`);
  }
}

function readId(body: Buffer, at: number, name: MessageName, field: string, index?: number): number {
  const slot = body.readUInt32LE(at);
  const generation = body.readUInt32LE(at + 4);
  if (generation >= 2 ** 21) {
    throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${name}.${field}${index === undefined ? '' : `[${index}]`}: object id generation ${generation} is out of range`);
  }
  return joinId(slot, generation);
}

/**
 * A frame body at least this large that arrives in many reads (a bulk payload over TCP or TLS, whose
 * reads are 16-64 KiB) is copied into a buffer of its own as it arrives, instead of its reads being
 * kept and joined once it is complete: the join (a fresh multi-megabyte buffer, filled at once) then
 * no longer delays the message, and the reads are garbage at once, collected young, rather than
 * held (and promoted to the old generation, which costs full collections) until the frame ends.
 */
const ASSEMBLE_MIN_BYTES = 64 * 1024;
/**
 * A fresh buffer is taken once 1/ASSEMBLE_AFTER_PART of the frame has arrived: a peer that declares a
 * large frame makes this side reserve at most that many times what it has sent (and what it has
 * sent is what the daemon counts against its tenant, maxBufferedBytesPerTenant).
 */
const ASSEMBLE_AFTER_PART = 4;

/**
 * Cuts a byte stream into frames. push() takes whatever the socket delivered and returns the
 * messages completed by it; a frame over the size limit is refused as soon as its length is read,
 * before any of it is buffered. append() and next() do the same one message at a time, so that a
 * message can change the limit (`maxFrameBytes`) for the frames behind it (the daemon raises it
 * once Hello has authenticated the peer).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  /** Where the unread bytes of chunks[0] begin (frames are cut from it without copying the rest). */
  private offset = 0;
  private buffered = 0;
  /**
   * The body of a large frame being received, filled in as its bytes arrive (see ASSEMBLE_MIN_BYTES),
   * and how much of it has arrived; the bytes after its end wait in `chunks`.
   */
  private assembly: Buffer | null = null;
  private assembled = 0;
  /** The whole pooled buffer `assembly` begins (a pooled buffer may be larger than the frame); null when not pooled. */
  private poolBuffer: Buffer | null = null;
  /** The pooled buffer under the large frame next() returned last, until recycle() or the next next(). */
  private lastAssembled: Buffer | null = null;

  constructor(
    public maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    /**
     * Where large frames are assembled (see ASSEMBLE_MIN_BYTES), so that recycle() can give their
     * buffers back for the next ones; null: a fresh buffer each, which stays with its message.
     */
    private readonly pool: LargeBufferPool | null = null,
  ) {}

  push(chunk: Buffer): Message[] {
    this.append(chunk);
    const messages: Message[] = [];
    for (let message = this.next(); message; message = this.next()) messages.push(message);
    return messages;
  }

  /** Takes bytes from the stream; decodes nothing (see next()). */
  append(chunk: Buffer): void {
    if (chunk.byteLength === 0) return;
    this.buffered += chunk.byteLength;
    const assembly = this.assembly;
    if (assembly) {
      // Straight into the large frame's body; whatever comes after its end waits in `chunks`.
      const take = Math.min(chunk.byteLength, assembly.byteLength - this.assembled);
      chunk.copy(assembly, this.assembled, 0, take);
      this.assembled += take;
      if (take < chunk.byteLength) this.chunks.push(take === 0 ? chunk : chunk.subarray(take));
      return;
    }
    this.chunks.push(chunk);
  }

  /** The next whole message, or null until more bytes arrive; throws ProtocolError for a bad or oversized frame. */
  next(): Message | null {
    this.lastAssembled = null;
    const assembly = this.assembly;
    if (assembly) {
      if (this.assembled < assembly.byteLength) return null;
      this.assembly = null;
      this.buffered -= 4 + assembly.byteLength;
      const message = decodeBody(assembly);
      this.lastAssembled = this.poolBuffer;
      this.poolBuffer = null;
      return message;
    }
    if (this.buffered < 4) return null;
    let first = this.chunks[0];
    if (first.byteLength - this.offset < 4) first = this.merge();
    const length = first.readUInt32LE(this.offset);
    if (length + 4 > this.maxFrameBytes) {
      throw new ProtocolError(ErrorCodes.PROTOCOL_TOO_LARGE, `frame of ${length + 4} bytes exceeds the limit of ${this.maxFrameBytes}`);
    }
    if (this.buffered < 4 + length) {
      // At once when a reused buffer is at hand (it reserves nothing new), else after a part of the frame.
      if (length >= ASSEMBLE_MIN_BYTES && (this.pool?.has(length) || (this.buffered - 4) * ASSEMBLE_AFTER_PART >= length)) this.assemble(length);
      return null;
    }
    // A frame split across reads is joined once, when all of it has arrived.
    if (first.byteLength - this.offset < 4 + length) first = this.merge();
    const body = first.subarray(this.offset + 4, this.offset + 4 + length);
    this.offset += 4 + length;
    this.buffered -= 4 + length;
    if (this.offset === first.byteLength) {
      this.chunks.shift();
      this.offset = 0;
    }
    return decodeBody(body);
  }

  /**
   * Bytes held for frames not yet whole: those received, and the rest of a large frame's body
   * reserved ahead of them (assemble): the daemon charges a tenant for what it holds, so a peer
   * that announces a large frame and sends a quarter of it is charged for all of it.
   */
  get pendingBytes(): number {
    return this.buffered + (this.assembly ? this.assembly.byteLength - this.assembled : 0);
  }

  /**
   * Starts receiving the frame of `length` bytes that begins the buffered bytes (all of them its
   * own, as it is not complete) into a buffer of its own, and moves what has arrived of it there.
   */
  private assemble(length: number): void {
    this.poolBuffer = this.pool ? this.pool.take(length) : null;
    const body = this.poolBuffer ? this.poolBuffer.subarray(0, length) : Buffer.allocUnsafeSlow(length);
    let at = 0;
    for (let i = 0; i < this.chunks.length; i++) {
      const chunk = i === 0 ? this.chunks[0].subarray(this.offset + 4) : this.chunks[i];
      chunk.copy(body, at);
      at += chunk.byteLength;
    }
    this.chunks = [];
    this.offset = 0;
    this.assembly = body;
    this.assembled = at;
  }

  /**
   * The message next() returned last was a large frame assembled in a pooled buffer, and its
   * receiver is done with its bytes (it copied what it keeps): the buffer goes back to the pool,
   * for the next large frame to be assembled in (no fresh memory to fault in and collect). Its
   * bytes views are then invalid. Does nothing for any other message.
   */
  recycle(): void {
    if (this.lastAssembled) this.pool?.give(this.lastAssembled);
    this.lastAssembled = null;
  }

  /** Joins every unread byte into one chunk; returns it. */
  private merge(): Buffer {
    const first = this.chunks[0].subarray(this.offset);
    const joined = this.chunks.length === 1 ? first : Buffer.concat([first, ...this.chunks.slice(1)], this.buffered);
    this.chunks = [joined];
    this.offset = 0;
    return joined;
  }
}
