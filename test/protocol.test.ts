// The codec against the message table: every message round-trips; truncated, oversized, unknown,
// mistyped and trailing-garbage frames are refused with coded ProtocolErrors (never another kind
// of exception); random bytes never crash the decoder; docs/protocol.md is the table's rendering.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { decodeBody, encodeFrame, FrameDecoder, ProtocolError } from '../src/protocol/codec.js';
import { FieldKind, joinId, Message, MESSAGES, MessageName, Payload, splitId } from '../src/protocol/messages.js';
import { renderReference } from '../src/protocol/reference.js';

/** A deterministic value of each kind, varied by `seed`. */
function sample(kind: FieldKind, seed: number): unknown {
  switch (kind) {
    case 'u8':
      return seed % 256;
    case 'u16':
      return (seed * 257) % 65536;
    case 'u32':
      return (seed * 2654435761) % 2 ** 32;
    case 'f64':
      return seed * 1.5 - 7;
    case 'bool':
      return seed % 2 === 0;
    case 'str':
      return `naïve ${seed} ✓`;
    case 'bytes':
      return new Uint8Array(seed % 9).map((_, i) => (i * 37 + seed) & 255);
    case 'json':
      return { seed, list: [1, 'two', null, { $ref: joinId(seed, 3) }] };
    case 'id':
      return joinId(seed * 7, seed % 5);
    case 'ids':
      return [joinId(1, 0), joinId(seed, 2 ** 21 - 1)];
  }
}

function samplePayload(name: MessageName, seed: number): Record<string, unknown> {
  const payload: Record<string, unknown> = {};
  for (const [field, kind] of Object.entries(MESSAGES[name].fields) as [string, FieldKind][]) payload[field] = sample(kind, seed);
  return payload;
}

const names = Object.keys(MESSAGES) as MessageName[];

function expectProtocolError(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => error instanceof ProtocolError && error.code === code);
}

describe('the wire codec', () => {
  it('has unique codes for all messages', () => {
    assert.equal(new Set(names.map((n) => MESSAGES[n].code)).size, names.length);
  });

  it('round-trips every message of the table', () => {
    for (const name of names) {
      for (const seed of [0, 1, 5]) {
        const payload = samplePayload(name, seed);
        const frame = encodeFrame(name, payload as Payload<typeof name>);
        assert.equal(frame.readUInt32LE(0), frame.byteLength - 4);
        const decoded = decodeBody(frame.subarray(4));
        assert.equal(decoded.name, name);
        const normalized = JSON.parse(JSON.stringify(decoded.payload, (_, v) => (v instanceof Uint8Array ? [...v] : v)));
        const expected = JSON.parse(JSON.stringify(payload, (_, v) => (v instanceof Uint8Array ? [...v] : v)));
        assert.deepEqual(normalized, expected, name);
      }
    }
  });

  it('keeps object ids exact: slot and generation', () => {
    for (const [slot, generation] of [[0, 0], [2 ** 32 - 1, 0], [12, 2 ** 21 - 1], [7, 99]]) {
      assert.deepEqual(splitId(joinId(slot, generation)), { slot, generation });
    }
  });

  it('refuses a payload that does not fit the table, naming the field', () => {
    assert.throws(
      () => encodeFrame('KillProcess', { req: 1, pid: -1 }),
      (e: unknown) => e instanceof ProtocolError && /pid/.test(e.message),
    );
    assert.throws(() => encodeFrame('SetLabel', { object: 1, label: 5 as unknown as string }), ProtocolError);
  });

  it('refuses truncated frames, trailing bytes, unknown codes, bad bools, bad UTF-8 and bad JSON', () => {
    const frame = encodeFrame('Hello', samplePayload('Hello', 3) as Payload<'Hello'>);
    const body = frame.subarray(4);
    for (let cut = 0; cut < body.byteLength; cut += 3) {
      expectProtocolError(() => decodeBody(body.subarray(0, cut)), 'GPUNIX_E_PROTOCOL_MALFORMED');
    }
    expectProtocolError(() => decodeBody(Buffer.concat([body, Buffer.from([0])])), 'GPUNIX_E_PROTOCOL_MALFORMED');
    expectProtocolError(() => decodeBody(Buffer.from([0xff, 0x7f, 1, 2])), 'GPUNIX_E_PROTOCOL_UNKNOWN_MESSAGE');
    const suspend = Buffer.from(encodeFrame('SuspendProcess', { req: 1, pid: 2, swap: true }).subarray(4));
    suspend[suspend.byteLength - 1] = 2;
    expectProtocolError(() => decodeBody(suspend), 'GPUNIX_E_PROTOCOL_MALFORMED');
    const label = Buffer.from(encodeFrame('SetLabel', { object: 1, label: 'ab' }).subarray(4));
    label[label.byteLength - 1] = 0xff;
    expectProtocolError(() => decodeBody(label), 'GPUNIX_E_PROTOCOL_MALFORMED');
    const json = Buffer.from(encodeFrame('ReniceProcess', { req: 1, pid: 2, options: 'xy' }).subarray(4));
    json[json.byteLength - 1] = 0x7b; // the closing quote becomes '{': no longer valid JSON
    expectProtocolError(() => decodeBody(json), 'GPUNIX_E_PROTOCOL_MALFORMED');
  });

  it('cuts a stream into frames however it is chunked, and refuses an oversized frame from its length alone', () => {
    const frames = names.slice(0, 12).map((name) => encodeFrame(name, samplePayload(name, 2) as Payload<typeof name>));
    const stream = Buffer.concat(frames);
    for (const step of [1, 3, 7, 64, stream.byteLength]) {
      const decoder = new FrameDecoder();
      const got: string[] = [];
      for (let at = 0; at < stream.byteLength; at += step) got.push(...decoder.push(stream.subarray(at, at + step)).map((m) => m.name));
      assert.deepEqual(got, names.slice(0, 12));
      assert.equal(decoder.pendingBytes, 0);
    }
    const small = new FrameDecoder(1024);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(5000, 0);
    expectProtocolError(() => small.push(header), 'GPUNIX_E_PROTOCOL_TOO_LARGE');
  });

  it('receives large frames that arrive in many reads byte for byte, with small frames around them in the same reads', () => {
    // Bulk payloads (a writeBuffer, a mapped range over TLS) arrive in 16-64 KiB reads and are
    // gathered into a buffer of their own as they come: every byte must land, whatever the cuts.
    const bulk = (size: number, seed: number) => new Uint8Array(size).map((_, i) => (i * 31 + seed) & 255);
    const sent: Payload<'QueueWriteBuffer'>[] = [
      { queue: 1, buffer: 2, offset: 0, data: bulk(300 * 1024 + 4, 1) },
      { queue: 1, buffer: 3, offset: 8, data: bulk(64 * 1024, 2) },
      { queue: 1, buffer: 4, offset: 16, data: bulk(1024 * 1024, 3) },
    ];
    const stream = Buffer.concat([
      encodeFrame('SetLabel', { object: 1, label: 'before' }),
      encodeFrame('QueueWriteBuffer', sent[0]),
      encodeFrame('SetLabel', { object: 2, label: 'between' }),
      encodeFrame('QueueWriteBuffer', sent[1]),
      encodeFrame('QueueWriteBuffer', sent[2]),
      encodeFrame('SetLabel', { object: 3, label: 'after' }),
    ]);
    for (const step of [16 * 1024, 65_537, 5000, 1_000_000]) {
      const decoder = new FrameDecoder();
      const got: Message[] = [];
      for (let at = 0; at < stream.byteLength; at += step) got.push(...decoder.push(stream.subarray(at, at + step)));
      assert.deepEqual(got.map((m) => m.name), ['SetLabel', 'QueueWriteBuffer', 'SetLabel', 'QueueWriteBuffer', 'QueueWriteBuffer', 'SetLabel'], `reads of ${step}`);
      const writes = got.filter((m) => m.name === 'QueueWriteBuffer').map((m) => m.payload as Payload<'QueueWriteBuffer'>);
      writes.forEach((write, i) => {
        assert.equal(write.buffer, sent[i].buffer);
        assert.ok(Buffer.from(write.data).equals(Buffer.from(sent[i].data)), `reads of ${step}: write ${i}'s bytes`);
      });
      assert.equal(decoder.pendingBytes, 0);
    }
  });

  it('counts a large frame\'s reserved body as held from when it is reserved (what the daemon charges a tenant)', () => {
    const frame = encodeFrame('QueueWriteBuffer', { queue: 1, buffer: 2, offset: 0, data: new Uint8Array(4 * 1024 * 1024) });
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    // A third of it: received bytes only, nothing reserved yet.
    decoder.append(frame.subarray(0, frame.byteLength / 3));
    assert.equal(decoder.next(), null);
    // Past a quarter the body is reserved whole, and counted whole.
    decoder.append(frame.subarray(frame.byteLength / 3, frame.byteLength / 2));
    assert.equal(decoder.next(), null);
    assert.ok(decoder.pendingBytes >= frame.byteLength - 4, `held ${decoder.pendingBytes} of a ${frame.byteLength}-byte frame`);
    decoder.append(frame.subarray(frame.byteLength / 2));
    assert.equal(decoder.next()?.name, 'QueueWriteBuffer');
    assert.equal(decoder.pendingBytes, 0);
  });

  it('never throws anything but ProtocolError on random or mutated input', () => {
    let x = 0x12345678;
    const random = () => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x;
    };
    const valid = names.map((name) => encodeFrame(name, samplePayload(name, 4) as Payload<typeof name>));
    for (let i = 0; i < 3000; i++) {
      let bytes: Buffer;
      if (i % 2 === 0) {
        bytes = Buffer.from(valid[random() % valid.length]);
        for (let k = 0; k < 1 + (random() % 4); k++) bytes[random() % bytes.byteLength] = random() & 255;
      } else {
        bytes = Buffer.from(new Uint8Array(random() % 64).map(() => random() & 255));
      }
      const decoder = new FrameDecoder(1 << 16);
      try {
        decoder.push(bytes);
      } catch (error) {
        assert.ok(error instanceof ProtocolError, `iteration ${i}: ${String(error)}`);
      }
    }
  });

  it('documents every message in docs/protocol.md, generated from the table', () => {
    const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
    assert.equal(doc, renderReference(), 'docs/protocol.md is stale: run `npm run docs:protocol`');
    for (const name of names) assert.ok(doc.includes(`### ${name}`), name);
  });
});
