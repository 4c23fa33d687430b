// The wire batches what one turn of the event loop sends into one write, in both directions:
// frames still arrive whole and in order, a program's errors still land in the error scope current
// at each call, replies to pipelined requests come back in order, and garbage from a client still
// gets a coded ProtocolError (sent before the connection closes). Also the codec's text fields:
// non-ASCII and unpaired surrogates travel as they did with TextEncoder.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { connect } from '../src/client/index.js';
import { Session } from '../src/client/session.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { decodeBody, encodeFrame, FrameDecoder } from '../src/protocol/codec.js';
import { Message, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { Wire } from '../src/protocol/wire.js';
import { eventually } from './helpers.js';

const ALICE = 'alice-token-0123456789abcdef0123456789abcdef';

/** A byte stream that records each write the Wire makes (one entry per write or writev call). */
function recordingStream(): { stream: Duplex; writes: Buffer[][] } {
  const writes: Buffer[][] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      writes.push([chunk]);
      callback();
    },
    writev(chunks, callback) {
      writes.push(chunks.map((c) => c.chunk as Buffer));
      callback();
    },
  });
  return { stream, writes };
}

const noHandlers = { message: () => {}, protocolError: () => {}, closed: () => {} };

describe('the wire batches each turn into one write', () => {
  it('sends the frames of one turn in one write, whole and in order', async () => {
    const { stream, writes } = recordingStream();
    const wire = new Wire(stream, noHandlers);
    for (let req = 1; req <= 200; req++) wire.send('Ping', { req });
    // A frame too large to share a chunk with small ones keeps its place among them.
    wire.send('QueueWriteBuffer', { queue: 1, buffer: 2, offset: 0, data: new Uint8Array(20_000).fill(9) });
    wire.send('Ping', { req: 201 });
    assert.equal(writes.length, 0, 'nothing is written before the turn ends');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(writes.length, 1, 'one write for the whole turn');
    const messages = new FrameDecoder().push(Buffer.concat(writes[0]));
    assert.equal(messages.length, 202);
    assert.deepEqual(
      messages.filter((m) => m.name === 'Ping').map((m) => (m.payload as { req: number }).req),
      Array.from({ length: 201 }, (_, i) => i + 1),
    );
    assert.equal(messages[200].name, 'QueueWriteBuffer');
    assert.deepEqual((messages[200].payload as { data: Uint8Array }).data, new Uint8Array(20_000).fill(9));

    // A turn that queues more than a chunk's worth (64 KiB) writes it at once, in order.
    wire.send('Ping', { req: 202 });
    wire.send('QueueWriteBuffer', { queue: 1, buffer: 2, offset: 0, data: new Uint8Array(100_000).fill(7) });
    assert.equal(writes.length, 2, 'a large payload goes out without waiting for the turn to end');
    assert.deepEqual(
      new FrameDecoder().push(Buffer.concat(writes[1])).map((m) => m.name),
      ['Ping', 'QueueWriteBuffer'],
    );

    // The next frames wait for the turn's end, and close() sends what is pending before ending.
    wire.send('Ping', { req: 300 });
    wire.close();
    assert.equal(writes.length, 3);
    assert.deepEqual(new FrameDecoder().push(Buffer.concat(writes[2])), [{ name: 'Ping', payload: { req: 300 } }]);
  });

  it('writes a submit at once when nothing went out for a while, so the device starts while the program computes', () => {
    const { stream, writes } = recordingStream();
    const wire = new Wire(stream, noHandlers);
    wire.send('FinishCommandEncoder', { device: 1, id: 3, descriptor: {}, commands: [], finishDescriptor: {} });
    wire.send('QueueSubmit', { queue: 2, commandBuffers: [3] });
    assert.equal(writes.length, 1, 'the first submit went out without waiting for the turn to end');
    assert.deepEqual(new FrameDecoder().push(Buffer.concat(writes[0])).map((m) => m.name), ['FinishCommandEncoder', 'QueueSubmit']);
    // The program computes without yielding; its next submit goes out as soon as it is made.
    const until = performance.now() + 2;
    while (performance.now() < until);
    wire.send('QueueSubmit', { queue: 2, commandBuffers: [3] });
    assert.equal(writes.length, 2);
    wire.destroy();
  });

  it('reuses the buffers of large frames only once they are written: every frame arrives intact', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-wire-pool-'));
    const path = join(dir, 'pool.sock');
    const received: Message[] = [];
    let receiver!: Wire;
    const server = createNetServer((socket) => {
      receiver = new Wire(socket, { ...noHandlers, message: (m) => received.push(m) }, 8 << 20);
      // A slow reader: frames wait in flight while the sender encodes the next ones.
      socket.pause();
      setTimeout(() => socket.resume(), 100);
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const socket = netConnect({ path });
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    const sender = new Wire(socket, noHandlers);
    try {
      for (let round = 0; round < 12; round++) {
        sender.send('QueueWriteBuffer', { queue: 1, buffer: 2, offset: round, data: new Uint8Array(2 << 20).fill(round + 1) });
        await new Promise((resolve) => setImmediate(resolve));
      }
      await eventually('every frame has arrived', () => received.length === 12);
      const rounds = received.map((m) => m.payload as { offset: number; data: Uint8Array });
      assert.deepEqual(rounds.map((r) => r.offset), Array.from({ length: 12 }, (_, i) => i));
      for (const r of rounds) assert.ok(r.data.byteLength === 2 << 20 && r.data.every((byte) => byte === r.offset + 1), `round ${r.offset} arrived intact`);
    } finally {
      sender.destroy();
      receiver?.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps text fields as UTF-8 (non-ASCII, unpaired surrogates as U+FFFD, as TextEncoder)', () => {
    for (const label of ['', 'plain', 'grüße ✓ 日本', 'lone \ud800 surrogate', 'x'.repeat(300) + 'é']) {
      const frame = encodeFrame('SetLabel', { object: 5, label });
      const decoded = decodeBody(frame.subarray(4)) as Message & { name: 'SetLabel' };
      assert.equal(decoded.payload.label, new TextDecoder().decode(new TextEncoder().encode(label)));
      assert.equal(frame.readUInt32LE(0) + 4, frame.byteLength);
    }
    const descriptor = { label: 'ß', size: 4, nested: [1, { a: null }] };
    const decoded = decodeBody(encodeFrame('CreateBuffer', { device: 1, id: 2 ** 32 * 3 + 7, descriptor }).subarray(4)) as Message & { name: 'CreateBuffer' };
    assert.deepEqual(decoded.payload, { device: 1, id: 2 ** 32 * 3 + 7, descriptor });
  });
});

describe('batched sessions through gpunixd', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-wire-batching-'));
    socket = join(dir, 'd.sock');
    daemon = await startDaemon({ socket, log: { level: 'silent' }, tenants: { alice: { tokenHash: hashToken(ALICE) } } });
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('delivers each error to the scope current at its call when a turn sends many calls at once', async () => {
    const proc = await connect({ socket, token: ALICE, name: 'scopes' });
    try {
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      const uncaptured: string[] = [];
      device.addEventListener('uncapturederror', (event) => uncaptured.push((event as GPUUncapturedErrorEvent).error.constructor.name));
      // All in one turn: scopes nested and interleaved with valid and invalid calls.
      const pops: Promise<GPUError | null>[] = [];
      for (let i = 0; i < 20; i++) {
        device.pushErrorScope('validation');
        device.pushErrorScope('out-of-memory');
        if (i % 2 === 0) device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE }); // invalid: validation
        else device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
        pops.push(device.popErrorScope()); // out-of-memory: never this one
        pops.push(device.popErrorScope()); // validation: the even rounds' error
      }
      device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE }); // no scope: uncaptured
      const results = await Promise.all(pops);
      for (let i = 0; i < 20; i++) {
        assert.equal(results[2 * i], null, `round ${i}: the out-of-memory scope caught nothing`);
        if (i % 2 === 0) assert.equal(results[2 * i + 1]?.constructor.name, 'GPUValidationError', `round ${i}: the validation scope caught the invalid buffer`);
        else assert.equal(results[2 * i + 1], null, `round ${i}: nothing to catch`);
      }
      await device.queue.onSubmittedWorkDone();
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(uncaptured, ['GPUValidationError'], 'the call outside every scope is uncaptured');
    } finally {
      await proc.exit();
    }
  });

  it('answers requests pipelined in one turn in order', async () => {
    const session = await Session.open({ socket, token: ALICE }, { role: 'control' });
    try {
      const order: number[] = [];
      await Promise.all(Array.from({ length: 100 }, (_, i) => session.request('Ping', {}).then(() => order.push(i))));
      assert.deepEqual(order, Array.from({ length: 100 }, (_, i) => i));
    } finally {
      session.close();
    }
  });

  it('still answers garbage sent in the same write as Hello with a coded ProtocolError', async () => {
    const raw = netConnect({ path: socket });
    await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
    const decoder = new FrameDecoder();
    const messages: Message[] = [];
    raw.on('data', (chunk: Buffer) => messages.push(...decoder.push(chunk)));
    raw.on('error', () => {});
    const closed = new Promise((resolve) => raw.once('close', resolve));
    const hello = encodeFrame('Hello', { version: PROTOCOL_VERSION, role: 'control', token: ALICE, name: 'raw', priority: 'normal', weight: 1, options: {} });
    const garbage = Buffer.from([3, 0, 0, 0, 0xee, 0xee, 0]);
    raw.write(Buffer.concat([hello, garbage]));
    await closed;
    assert.deepEqual(
      messages.map((m) => m.name),
      ['Welcome', 'ProtocolError'],
      'the Welcome and the error, sent in the same turn, both reach the client before the close',
    );
    assert.equal((messages[1].payload as { code: string }).code, 'GPUNIX_E_PROTOCOL_UNKNOWN_MESSAGE');
  });
});
