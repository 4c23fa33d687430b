// gpunixd end to end on the real device: the corpus through the daemon from 16 clients at once,
// byte-identical to bare Dawn; clients killed mid-work leave nothing behind; a bounded fuzz of
// random and mutated frames from several clients never takes the daemon down, while a
// well-behaved client alongside keeps getting exact results.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { connect } from '../src/index.js';
import { Session } from '../src/client/session.js';
import { startDaemon, Daemon } from '../src/daemon/daemon.js';
import { encodeFrame } from '../src/protocol/codec.js';
import { acceptedFrom, FieldKind, joinId, MESSAGES, MessageName, Payload, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { corpus } from './corpus/index.js';
import { assertSameBytes, bareResult, eventually } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');


const hashOf = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`;


describe('gpunixd end to end', () => {
  let dir: string;
  let socket: string;
  let daemon: Daemon;
  const token = randomBytes(32).toString('hex');
  const otherToken = randomBytes(32).toString('hex');

  const nothingHeld = () => {
    const stats = daemon.kernel.stats();
    return stats.liveObjects.total === 0 && stats.bytesAllocated === 0 && daemon.kernel.ps().every((p) => p.state === 'exited');
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-e2e-'));
    socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      tenants: { lab: { tokenHash: hashOf(token) }, other: { tokenHash: hashOf(otherToken) } },
    });
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the corpus from 16 clients at once, byte-identical to bare Dawn', async () => {
    const clients = Array.from({ length: 16 }, (_, i) => corpus[i % corpus.length]);
    const expected = await Promise.all(clients.map((program) => bareResult(program)));
    const processes = await Promise.all(clients.map((program, i) => connect({ socket, token, name: `${program.name}-${i}` })));
    assert.equal(new Set(processes.map((p) => p.pid)).size, 16, 'every client is its own process');
    await eventually('all 16 are in the process table', () => daemon.kernel.ps().filter((p) => p.state !== 'exited').length >= 16);
    const results = await Promise.all(clients.map((program, i) => program.run(processes[i].gpu)));
    results.forEach((result, i) => assertSameBytes(result, expected[i], clients[i].name));
    const statuses = await Promise.all(processes.map((p) => p.exit()));
    for (const status of statuses) assert.equal(status.reason, 'normal');
    await eventually('everything is released', nothingHeld);
  });

  it('releases everything of clients killed in the middle of their work', async () => {
    const children = [0, 1, 2].map((i) =>
      spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'run', '--connect', '--socket', socket, '--token', token, '--name', `spin${i}`, join(root, 'test/programs/spin.mjs')], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    try {
      await Promise.all(
        children.map(
          (child) =>
            new Promise<void>((resolve, reject) => {
              let stderr = '';
              child.stderr!.on('data', (d) => (stderr += d));
              child.stdout!.on('data', (d) => String(d).includes('spinning') && resolve());
              child.once('exit', (code) => reject(new Error(`client exited early (${code}): ${stderr}`)));
            }),
        ),
      );
      const spinning = daemon.kernel.ps().filter((p) => p.name.startsWith('spin') && p.state !== 'exited');
      assert.equal(spinning.length, 3);
      for (const p of spinning) {
        assert.ok(p.liveObjects > 0 && p.accounting.bytesAllocated > 0 && p.accounting.dispatches > 0, `${p.name} holds objects and has run work`);
      }
      for (const child of children) child.kill('SIGKILL');
      await eventually('the killed clients\' processes have exited and released everything', nothingHeld);
      for (const pid of spinning.map((p) => p.pid)) {
        const record = daemon.kernel.ps().find((p) => p.pid === pid);
        assert.ok(!record || record.exit?.reason === 'killed', `pid ${pid} ended as ${record?.exit?.reason}`);
      }
    } finally {
      for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('checkpoints a process through the daemon and restores it as a new one whose program finds its buffers by label', async () => {
    // The iterative program of the CLI checkpoint test: 6 steps uninterrupted, or 3, a checkpoint,
    // the process killed, a restore, and the last 3 on the restored buffers.
    const counter = (await import(pathToFileURL(join(root, 'test/programs/counter.mjs')).href)) as {
      WGSL: string;
      advance(device: GPUDevice, pipeline: GPUComputePipeline, state: GPUBuffer, from: number, to: number): Promise<void>;
      checksum(device: GPUDevice, state: GPUBuffer): Promise<number>;
    };
    const start = async (proc: { gpu: GPU }) => {
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      const pipeline = device.createComputePipeline({ label: 'step', layout: 'auto', compute: { module: device.createShaderModule({ label: 'wgsl', code: counter.WGSL }) } });
      const state = device.createBuffer({ label: 'state', size: 4096, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      return { device, pipeline, state };
    };
    const whole = await connect({ socket, token, name: 'uninterrupted' });
    const w = await start(whole);
    await counter.advance(w.device, w.pipeline, w.state, 0, 6);
    const expected = await counter.checksum(w.device, w.state);
    await whole.exit();

    const first = await connect({ socket, token, name: 'first-half' });
    const f = await start(first);
    await counter.advance(f.device, f.pipeline, f.state, 0, 3);
    const operator = await Session.open({ socket, token }, { role: 'control' });
    try {
      const written = (await operator.call('CheckpointProcess', { pid: first.pid, path: 'e2e/step.img' })) as { path: string; bytes: number };
      assert.ok(written.bytes > 4096, `the image holds the state buffer (${written.bytes} bytes)`);
      await operator.call('KillProcess', { pid: first.pid });
    } finally {
      operator.close();
    }
    assert.equal((await first.ended)?.reason, 'killed');

    const resumed = await connect({ socket, token, name: 'second-half', restoreImage: 'e2e/step.img' });
    const device = await (await resumed.gpu.requestAdapter())!.requestDevice();
    const gpunix = (device as unknown as { gpunix: { restored: boolean; findBuffer(l: string): GPUBuffer | null; findPipeline(l: string): GPUComputePipeline | null; labels(): { buffers: string[] } } }).gpunix;
    assert.equal(gpunix.restored, true);
    assert.ok(gpunix.labels().buffers.includes('state'), `restored buffers: ${gpunix.labels().buffers.join(', ')}`);
    const state = gpunix.findBuffer('state')!;
    const pipeline = gpunix.findPipeline('step')!;
    assert.equal(state.size, 4096);
    await counter.advance(device, pipeline, state, 3, 6);
    assert.equal(await counter.checksum(device, state), expected, 'restored through the daemon: the same result as uninterrupted');
    await resumed.exit();
    await eventually('everything is released', nothingHeld);
  });

  it('shares a segment between two processes of one tenant over the wire, and not with another tenant', async () => {
    const readAll = async (device: GPUDevice, buffer: GPUBuffer): Promise<Uint32Array> => {
      const staging = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(buffer, 0, staging, 0, 256);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const words = new Uint32Array(staging.getMappedRange().slice(0));
      staging.destroy();
      return words;
    };
    type WithShared = GPUDevice & { gpunix: { attachShared(name: string, size: number): GPUBuffer } };
    const open = async (proc: { gpu: GPU }) => (await (await proc.gpu.requestAdapter())!.requestDevice()) as WithShared;
    const producer = await connect({ socket, token, name: 'producer' });
    const consumer = await connect({ socket, token, name: 'consumer' });
    const stranger = await connect({ socket, token: otherToken, name: 'stranger' });
    const [p, c, x] = [await open(producer), await open(consumer), await open(stranger)];
    const written = new Uint32Array(64).map((_, i) => i * 7 + 1);
    p.queue.writeBuffer(p.gpunix.attachShared('frames', 256), 0, written);
    await p.queue.onSubmittedWorkDone();
    assert.deepEqual([...(await readAll(c, c.gpunix.attachShared('frames', 256)))], [...written], 'the consumer reads what the producer wrote');
    assert.ok((await readAll(x, x.gpunix.attachShared('frames', 256))).every((w) => w === 0), "another tenant's 'frames' is its own, empty segment");
    await Promise.all([producer.exit(), consumer.exit(), stranger.exit()]);
    await eventually('everything is released', nothingHeld);
  });

  it('survives a bounded fuzz of random and mutated frames while a well-behaved client gets exact results', async () => {
    const FUZZ_CLIENTS = 4;
    const FRAMES_PER_CLIENT = 500;
    const TIME_CAP_MS = 15_000;
    let seed = 0xc0ffee;
    const random = (n: number) => {
      seed ^= seed << 13;
      seed >>>= 0;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      seed >>>= 0;
      return seed % n;
    };
    const trickyJson = [null, {}, [], 0, -1, 'x', { size: -1 }, { size: 1e300, usage: 'all' }, { $ref: joinId(1, 0) }, { $ref: 'no' },
      { code: '@compute @workgroup_size(1) fn main() {}' }, { layout: 'auto', compute: { module: { $ref: joinId(3, 0) } } },
      { entries: [{ binding: 0, resource: { buffer: { $ref: joinId(2, 0) } } }], layout: { $ref: joinId(4, 0) } },
      [['beginComputePass', {}], ['dispatchWorkgroups', 1e9], ['end']], [['nonsense']], { a: { b: { c: { d: [[[[[]]]]] } } } }];
    const value = (kind: FieldKind): unknown => {
      switch (kind) {
        case 'u8': return random(256);
        case 'u16': return random(65536);
        case 'u32': return [0, 1, 2, 0xffffffff, random(100)][random(5)];
        case 'f64': return [0, -1, 4, 1e20, NaN, 2 ** 53][random(6)];
        case 'bool': return random(2) === 1;
        case 'str': return ['', 'validation', 'x'.repeat(random(300)), 'ö'][random(4)];
        case 'bytes': return new Uint8Array(random(64)).map(() => random(256));
        case 'json': return trickyJson[random(trickyJson.length)];
        case 'id': return joinId(random(8), random(3));
        case 'ids': return Array.from({ length: random(4) }, () => joinId(random(8), random(2)));
      }
    };
    const processMessages = [...acceptedFrom('process')].filter((n) => n !== 'Goodbye');
    const fuzzFrame = (): Buffer => {
      const choice = random(10);
      if (choice === 0) return Buffer.from(new Uint8Array(1 + random(40)).map(() => random(256))); // random bytes
      const name = processMessages[random(processMessages.length)] as MessageName;
      const payload: Record<string, unknown> = {};
      for (const [field, kind] of Object.entries(MESSAGES[name].fields) as [string, FieldKind][]) payload[field] = value(kind);
      const frame = encodeFrame(name, payload as Payload<typeof name>);
      if (choice <= 2) for (let k = 0; k < 1 + random(3); k++) frame[random(frame.byteLength)] = random(256); // mutated
      return frame;
    };
    const hello = (withToken: boolean) =>
      encodeFrame('Hello', { version: PROTOCOL_VERSION, role: 'process', token: withToken ? token : 'wrong', name: 'fuzz', priority: 'normal', weight: 1, options: {} });

    const deadline = Date.now() + TIME_CAP_MS;
    let sessionsClosedByDaemon = 0;
    const fuzzClient = async (index: number): Promise<void> => {
      let sent = 0;
      while (sent < FRAMES_PER_CLIENT && Date.now() < deadline) {
        const sock: Socket = netConnect({ path: socket });
        await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
        const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
        sock.on('error', () => {});
        sock.on('data', () => {});
        // Most sessions get past the handshake so the fuzz reaches the WebGPU handlers.
        if (random(5) > 0) sock.write(hello(random(8) > 0 || index === 0));
        const burst = 1 + random(25);
        for (let k = 0; k < burst && sent < FRAMES_PER_CLIENT; k++, sent++) sock.write(fuzzFrame());
        await Promise.race([closed.then(() => sessionsClosedByDaemon++), new Promise((r) => setTimeout(r, 150))]);
        sock.destroy();
      }
    };
    const wellBehaved = async (): Promise<number> => {
      let rounds = 0;
      for (const program of [corpus[0], corpus[1], corpus[2], corpus[3]]) {
        const proc = await connect({ socket, token, name: `steady-${program.name}` });
        assertSameBytes(await program.run(proc.gpu), await bareResult(program), `${program.name} during the fuzz`);
        assert.equal((await proc.exit()).reason, 'normal');
        rounds++;
      }
      return rounds;
    };
    const [rounds] = await Promise.all([wellBehaved(), ...Array.from({ length: FUZZ_CLIENTS }, (_, i) => fuzzClient(i))]);
    assert.equal(rounds, 4);
    assert.ok(sessionsClosedByDaemon > 0, 'the daemon closed sessions that broke the protocol');
    // Still serving, and nothing leaked from the fuzzed sessions.
    const after = await connect({ socket, token, name: 'after-fuzz' });
    assertSameBytes(await corpus[0].run(after.gpu), await bareResult(corpus[0]), 'after the fuzz');
    await after.exit();
    await eventually('the fuzzed sessions released everything', nothingHeld);
  });
});
