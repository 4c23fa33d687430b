// The binary codec, derived from the message table: a frame is
//   u32 length (bytes after this field) | u16 message code | the fields, in table order.
// Decoding checks every length and kind against the table and the frame's end; anything off is a
// ProtocolError with a code, never an exception of another kind and never a partial message.

import { ErrorCodes, GpunixError } from '../errors.js';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FieldKind,
  joinId,
  Message,
  MESSAGE_BY_CODE,
  MESSAGES,
  MessageName,
  Payload,
  splitId,
} from './messages.js';

/** Bytes before the fields: the u32 length and the u16 code. */
export const FRAME_HEADER_BYTES = 6;

export class ProtocolError extends GpunixError {}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function fieldsOf(name: MessageName): [string, FieldKind][] {
  return Object.entries(MESSAGES[name].fields) as [string, FieldKind][];
}

/** The encoded form of one field value, or its byte size; checks the value against its kind. */
function encodedField(kind: FieldKind, value: unknown, field: string): Uint8Array | number {
  const bad = (what: string) => new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `field ${field}: ${what}`);
  switch (kind) {
    case 'u8':
    case 'u16':
    case 'u32': {
      const max = kind === 'u8' ? 0xff : kind === 'u16' ? 0xffff : 0xffffffff;
      if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > max) throw bad(`expected ${kind}, got ${String(value)}`);
      return kind === 'u8' ? 1 : kind === 'u16' ? 2 : 4;
    }
    case 'f64':
      if (typeof value !== 'number') throw bad(`expected a number, got ${typeof value}`);
      return 8;
    case 'bool':
      if (typeof value !== 'boolean') throw bad(`expected a boolean, got ${typeof value}`);
      return 1;
    case 'str':
      if (typeof value !== 'string') throw bad(`expected a string, got ${typeof value}`);
      return utf8.encode(value);
    case 'json':
      return utf8.encode(JSON.stringify(value ?? null));
    case 'bytes':
      if (!ArrayBuffer.isView(value)) throw bad('expected bytes');
      return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    case 'id':
      if (!Number.isSafeInteger(value) || (value as number) < 0) throw bad(`expected an object id, got ${String(value)}`);
      return 8;
    case 'ids':
      if (!Array.isArray(value) || !value.every((v) => Number.isSafeInteger(v) && v >= 0)) throw bad('expected a list of object ids');
      return 4 + 8 * value.length;
  }
}

/** Encodes one message as a whole frame. Throws ProtocolError if the payload does not fit the table. */
export function encodeFrame<N extends MessageName>(name: N, payload: Payload<N>): Buffer {
  const fields = fieldsOf(name);
  const values = payload as Record<string, unknown>;
  const parts = fields.map(([field, kind]) => encodedField(kind, values[field], field));
  let size = FRAME_HEADER_BYTES;
  for (const part of parts) size += typeof part === 'number' ? part : 4 + part.byteLength;
  const frame = Buffer.allocUnsafe(size);
  frame.writeUInt32LE(size - 4, 0);
  frame.writeUInt16LE(MESSAGES[name].code, 4);
  let at = FRAME_HEADER_BYTES;
  fields.forEach(([field, kind], i) => {
    const value = values[field];
    const part = parts[i];
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
      default: {
        const bytes = part as Uint8Array;
        at = frame.writeUInt32LE(bytes.byteLength, at);
        frame.set(bytes, at);
        at += bytes.byteLength;
      }
    }
  });
  return frame;
}

function writeId(frame: Buffer, id: number, at: number): number {
  const { slot, generation } = splitId(id);
  at = frame.writeUInt32LE(slot, at);
  return frame.writeUInt32LE(generation, at);
}

/** Decodes one frame's body (code and fields, without the length). Throws ProtocolError. */
export function decodeBody(body: Buffer): Message {
  const malformed = (what: string) => new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, what);
  if (body.byteLength < 2) throw malformed('frame too short for a message code');
  const code = body.readUInt16LE(0);
  const name = MESSAGE_BY_CODE.get(code);
  if (!name) throw new ProtocolError(ErrorCodes.PROTOCOL_UNKNOWN_MESSAGE, `unknown message code ${code}`);
  let at = 2;
  const need = (bytes: number, field: string) => {
    if (at + bytes > body.byteLength) throw malformed(`${name}.${field}: frame ends ${at + bytes - body.byteLength} bytes early`);
  };
  const payload: Record<string, unknown> = {};
  for (const [field, kind] of fieldsOf(name)) {
    switch (kind) {
      case 'u8':
        need(1, field);
        payload[field] = body.readUInt8(at);
        at += 1;
        break;
      case 'u16':
        need(2, field);
        payload[field] = body.readUInt16LE(at);
        at += 2;
        break;
      case 'u32':
        need(4, field);
        payload[field] = body.readUInt32LE(at);
        at += 4;
        break;
      case 'f64':
        need(8, field);
        payload[field] = body.readDoubleLE(at);
        at += 8;
        break;
      case 'bool': {
        need(1, field);
        const byte = body.readUInt8(at);
        if (byte > 1) throw malformed(`${name}.${field}: a bool must be 0 or 1, got ${byte}`);
        payload[field] = byte === 1;
        at += 1;
        break;
      }
      case 'id':
        need(8, field);
        payload[field] = readId(body, at, `${name}.${field}`);
        at += 8;
        break;
      case 'ids': {
        need(4, field);
        const count = body.readUInt32LE(at);
        at += 4;
        need(count * 8, field);
        const ids: number[] = [];
        for (let i = 0; i < count; i++, at += 8) ids.push(readId(body, at, `${name}.${field}[${i}]`));
        payload[field] = ids;
        break;
      }
      default: {
        need(4, field);
        const length = body.readUInt32LE(at);
        at += 4;
        need(length, field);
        const bytes = body.subarray(at, at + length);
        at += length;
        if (kind === 'bytes') {
          payload[field] = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
          break;
        }
        let text: string;
        try {
          text = strictUtf8.decode(bytes);
        } catch {
          throw malformed(`${name}.${field}: not valid UTF-8`);
        }
        if (kind === 'str') {
          payload[field] = text;
          break;
        }
        try {
          payload[field] = JSON.parse(text);
        } catch (error) {
          throw malformed(`${name}.${field}: not valid JSON (${(error as Error).message})`);
        }
      }
    }
  }
  if (at !== body.byteLength) throw malformed(`${name}: ${body.byteLength - at} bytes after the last field`);
  return { name, payload } as Message;
}

function readId(body: Buffer, at: number, field: string): number {
  const slot = body.readUInt32LE(at);
  const generation = body.readUInt32LE(at + 4);
  if (generation >= 2 ** 21) throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `${field}: object id generation ${generation} is out of range`);
  return joinId(slot, generation);
}

/**
 * Cuts a byte stream into frames. push() takes whatever the socket delivered and returns the
 * messages completed by it; a frame over the size limit is refused as soon as its length is read,
 * before any of it is buffered. append() and next() do the same one message at a time, so that a
 * message can change the limit (`maxFrameBytes`) for the frames behind it (the daemon raises it
 * once Hello has authenticated the peer).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(public maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  push(chunk: Buffer): Message[] {
    this.append(chunk);
    const messages: Message[] = [];
    for (let message = this.next(); message; message = this.next()) messages.push(message);
    return messages;
  }

  /** Takes bytes from the stream; decodes nothing (see next()). */
  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
  }

  /** The next whole message, or null until more bytes arrive; throws ProtocolError for a bad or oversized frame. */
  next(): Message | null {
    if (this.buffered < 4) return null;
    const head = this.peek(4);
    const length = head.readUInt32LE(0);
    if (length + 4 > this.maxFrameBytes) {
      throw new ProtocolError(ErrorCodes.PROTOCOL_TOO_LARGE, `frame of ${length + 4} bytes exceeds the limit of ${this.maxFrameBytes}`);
    }
    if (this.buffered < 4 + length) return null;
    const frame = this.take(4 + length);
    return decodeBody(frame.subarray(4));
  }

  /** Bytes received but not yet part of a whole frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(bytes: number): Buffer {
    if (this.chunks[0].byteLength >= bytes) return this.chunks[0];
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0];
  }

  private take(bytes: number): Buffer {
    const first = this.peek(bytes);
    const frame = first.subarray(0, bytes);
    const rest = first.subarray(bytes);
    this.chunks = rest.byteLength > 0 ? [rest, ...this.chunks.slice(1)] : this.chunks.slice(1);
    this.buffered -= bytes;
    return frame;
  }
}
