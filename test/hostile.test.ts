// gpunixd against hostile clients, each scenario on a real daemon: a flood of connections that never
// authenticate locks no one out; nothing large is buffered before Hello; a tenant's object quotas
// refuse that tenant alone; a frame begun must be finished, and an idle control session ends (a
// process session does not).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect } from '../src/client/index.js';
import { Session } from '../src/client/session.js';
import { DaemonConfigInput, hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { GpunixError } from '../src/errors.js';
import { encodeFrame, FrameDecoder } from '../src/protocol/codec.js';
import { Message, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { eventually } from './helpers.js';

const ADMIN = 'admin-token-0123456789abcdef0123456789abcdef';
const ALICE = 'alice-token-0123456789abcdef0123456789abcdef';
const BOB = 'bob-token-0123456789abcdef0123456789abcdef01';

/** A raw connection to the daemon: what it sent so far, and whether it has closed the connection. */
interface RawPeer {
  socket: Socket;
  messages: Message[];
  closed: boolean;
  whenClosed: Promise<void>;
}

async function openRaw(path: string): Promise<RawPeer> {
  const socket = netConnect({ path });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const decoder = new FrameDecoder();
  const peer: RawPeer = { socket, messages: [], closed: false, whenClosed: Promise.resolve() };
  socket.on('data', (chunk: Buffer) => peer.messages.push(...decoder.push(chunk)));
  socket.on('error', () => {});
  peer.whenClosed = new Promise((resolve) =>
    socket.once('close', () => {
      peer.closed = true;
      resolve();
    }),
  );
  return peer;
}

/** The code of the ProtocolError the daemon ended the connection with ('' if none). */
function protocolErrorCode(peer: RawPeer): string {
  const last = peer.messages.at(-1);
  return last?.name === 'ProtocolError' ? last.payload.code : '';
}

function hello(token: string, role: 'process' | 'control' = 'control'): Buffer {
  return encodeFrame('Hello', { version: PROTOCOL_VERSION, role, token, name: 'raw', priority: 'normal', weight: 1, options: {} });
}

/** Polls the asynchronous `check` until it holds, failing with `what` after 20 s. */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Asserts that `promise` rejects with a GpunixError of `code`. */
async function rejectsWith(promise: Promise<unknown>, code: string, what: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => error instanceof GpunixError && error.code === code, what);
}

/** A small real computation on `gpu`: doubles four numbers on the device and reads them back. */
async function double(gpu: GPU): Promise<number[]> {
  const device = await (await gpu.requestAdapter())!.requestDevice();
  const data = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const out = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(data, 0, new Uint32Array([1, 2, 3, 4]));
  const module = device.createShaderModule({
    code: '@group(0) @binding(0) var<storage, read_write> d: array<u32>; @compute @workgroup_size(4) fn main(@builtin(global_invocation_id) i: vec3u) { d[i.x] = d[i.x] * 2u; }',
  });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: data } }] }));
  pass.dispatchWorkgroups(1);
  pass.end();
  encoder.copyBufferToBuffer(data, 0, out, 0, 16);
  device.queue.submit([encoder.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  const result = [...new Uint32Array(out.getMappedRange().slice(0))];
  out.unmap();
  return result;
}

describe('gpunixd against hostile clients', () => {
  let dir: string;
  let count = 0;
  const daemons: Daemon[] = [];

  /** A daemon of its own for one scenario, with alice and bob as tenants. */
  async function daemonWith(config: Partial<DaemonConfigInput> & { tenants?: DaemonConfigInput['tenants'] } = {}): Promise<{ daemon: Daemon; socket: string }> {
    const socket = join(dir, `d${count++}.sock`);
    const daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      adminTokenHash: hashToken(ADMIN),
      ...config,
      tenants: config.tenants ?? { alice: { tokenHash: hashToken(ALICE) }, bob: { tokenHash: hashToken(BOB) } },
    });
    daemons.push(daemon);
    return { daemon, socket };
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gpunixd-hostile-'));
  });

  after(async () => {
    for (const daemon of daemons) await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('lets a tenant and the admin in and work while connections that never authenticate flood it', async () => {
    const { socket } = await daemonWith({ maxHandshakes: 4, maxSessions: 2 });
    const flood: RawPeer[] = [];
    for (let i = 0; i < 12; i++) {
      const peer = await openRaw(socket);
      // Half stay silent, half begin a Hello and never finish it.
      if (i % 2 === 1) peer.socket.write(hello('no-such-token').subarray(0, 10));
      flood.push(peer);
    }
    // The daemon keeps at most 4 of them, closing the oldest first, each told why.
    await eventually('the 8 oldest flooding connections are closed', () => flood.slice(0, 8).every((p) => p.closed));
    for (const peer of flood.slice(0, 8)) assert.equal(protocolErrorCode(peer), 'GPUNIX_E_BUSY');
    assert.ok(flood.slice(8).every((p) => !p.closed), 'the 4 newest are still waiting');

    const alice = await connect({ socket, token: ALICE, name: 'under-flood' });
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    try {
      assert.deepEqual(await double(alice.gpu), [2, 4, 6, 8], 'the tenant computes');
      const { processes } = (await admin.call('ListProcesses', {})) as { processes: { pid: number }[] };
      assert.ok(processes.some((p) => p.pid === alice.pid), 'the admin sees the tenant\'s process');
      // Authenticated sessions have their own limit (maxSessions: 2 for all tenants), and the admin room of its own.
      const bob = await Session.open({ socket, token: BOB }, { role: 'control' });
      await rejectsWith(Session.open({ socket, token: BOB }, { role: 'control' }), 'GPUNIX_E_BUSY', 'a third tenant session');
      const admin2 = await Session.open({ socket, token: ADMIN }, { role: 'control' });
      assert.equal(await admin2.call('Ping', {}), null);
      admin2.close();
      bob.close();
    } finally {
      await alice.exit().catch(() => {});
      admin.close();
      for (const peer of flood) peer.socket.destroy();
    }
  });

  it('buffers nothing large before Hello, and allows large frames once the peer has authenticated', async () => {
    const { socket } = await daemonWith({ maxFrameBytes: 64 * 1024 * 1024 });
    // A frame header announcing 60 MiB, before any Hello: refused on its length, nothing of it kept.
    const stranger = await openRaw(socket);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(60 * 1024 * 1024);
    stranger.socket.write(header);
    await stranger.whenClosed;
    assert.equal(protocolErrorCode(stranger), 'GPUNIX_E_PROTOCOL_TOO_LARGE');
    assert.match((stranger.messages.at(-1)!.payload as { message: string }).message, /limit of 65536/);

    // Sixteen strangers at once fare the same: each is cut off at the header.
    const strangers = await Promise.all(Array.from({ length: 16 }, () => openRaw(socket)));
    for (const peer of strangers) peer.socket.write(header);
    await Promise.all(strangers.map((p) => p.whenClosed));
    assert.ok(strangers.every((p) => protocolErrorCode(p) === 'GPUNIX_E_PROTOCOL_TOO_LARGE'));

    // A tenant's 200 KiB frame right behind its Hello (in the same write) is read whole.
    const tenant = await openRaw(socket);
    tenant.socket.write(Buffer.concat([hello(ALICE), encodeFrame('AddTenant', { req: 1, name: 'x'.repeat(200 * 1024), quota: {} })]));
    await eventually('the tenant gets a reply to its large request', () => tenant.messages.some((m) => m.name === 'Failure'));
    const failure = tenant.messages.find((m) => m.name === 'Failure')!;
    assert.equal(failure.name === 'Failure' && failure.payload.code, 'GPUNIX_E_FORBIDDEN', 'read and answered (only the admin adds tenants)');
    assert.ok(!tenant.closed);
    tenant.socket.destroy();
  });

  it('bounds the unfinished frames one tenant\'s sessions make it hold, sparing other tenants', async () => {
    const { socket } = await daemonWith({ maxBufferedBytesPerTenant: '1M' });
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    /** Hello, then the first `bytes` of a 10 MiB frame. */
    const begin = async (token: string, bytes: number): Promise<RawPeer> => {
      const peer = await openRaw(socket);
      const header = Buffer.alloc(4);
      header.writeUInt32LE(10 * 1024 * 1024);
      peer.socket.write(Buffer.concat([hello(token), header, Buffer.alloc(bytes)]));
      return peer;
    };
    const buffered = async (tenant: string) => {
      const { tenants } = (await admin.call('ListTenants', {})) as { tenants: { name: string; bufferedBytes: number }[] };
      return tenants.find((t) => t.name === tenant)!.bufferedBytes;
    };
    try {
      const first = await begin(ALICE, 600 * 1024);
      await until('the daemon holds alice\'s first 600 KiB', async () => (await buffered('alice')) >= 600 * 1024);
      const second = await begin(ALICE, 600 * 1024);
      await second.whenClosed;
      assert.equal(protocolErrorCode(second), 'GPUNIX_E_QUOTA', 'the session that took alice over her limit');
      assert.ok(!first.closed, 'her first session goes on');
      const bobs = await begin(BOB, 600 * 1024);
      await until('the daemon holds bob\'s 600 KiB too', async () => (await buffered('bob')) >= 600 * 1024);
      assert.ok(!bobs.closed, 'bob has a limit of his own');
      first.socket.destroy();
      bobs.socket.destroy();
      await until('what they held is counted back', async () => (await buffered('alice')) === 0 && (await buffered('bob')) === 0);
    } finally {
      admin.close();
    }
  });

  it('refuses objects beyond a tenant\'s object quotas to that tenant alone, with GPUNIX_E_QUOTA in its error scope', async () => {
    const { socket } = await daemonWith({
      tenants: {
        alice: { tokenHash: hashToken(ALICE), maxObjects: 20, maxShaderBytes: 2048 },
        bob: { tokenHash: hashToken(BOB) },
      },
    });
    const alice = await connect({ socket, token: ALICE, name: 'greedy' });
    const bob = await connect({ socket, token: BOB, name: 'modest' });
    try {
      const aliceDevice = await (await alice.gpu.requestAdapter())!.requestDevice();
      // Shader source beyond maxShaderBytes.
      aliceDevice.pushErrorScope('out-of-memory');
      aliceDevice.createShaderModule({ code: `// ${'x'.repeat(4096)}\n@compute @workgroup_size(1) fn main() {}` });
      const shaderError = await aliceDevice.popErrorScope();
      assert.ok(shaderError, 'a shader module over maxShaderBytes is refused');
      assert.match(shaderError.message, /^GPUNIX_E_QUOTA: .*maxShaderBytes/);

      // Objects beyond maxObjects (adapter, device and queue count too).
      aliceDevice.pushErrorScope('out-of-memory');
      const buffers = Array.from({ length: 30 }, () => aliceDevice.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE }));
      const objectError = await aliceDevice.popErrorScope();
      assert.ok(objectError, 'buffers beyond maxObjects are refused');
      assert.equal(objectError.constructor.name, 'GPUOutOfMemoryError');
      assert.match(objectError.message, /^GPUNIX_E_QUOTA: tenant alice holds \d+ WebGPU objects, its quota \(maxObjects\) is 20/);
      assert.equal(buffers.length, 30);

      // Bob, another tenant, is not affected.
      assert.deepEqual(await double(bob.gpu), [2, 4, 6, 8]);
      const bobDevice = await (await bob.gpu.requestAdapter())!.requestDevice();
      bobDevice.pushErrorScope('out-of-memory');
      for (let i = 0; i < 30; i++) bobDevice.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
      assert.equal(await bobDevice.popErrorScope(), null, 'bob creates his 30 buffers');
    } finally {
      await alice.exit().catch(() => {});
      await bob.exit().catch(() => {});
    }
    // What alice's session held is given back when it ends: a new session of hers works.
    const again = await connect({ socket, token: ALICE, name: 'again' });
    try {
      assert.deepEqual(await double(again.gpu), [2, 4, 6, 8]);
    } finally {
      await again.exit();
    }
  });

  it('counts the host memory the daemon holds for a tenant\'s objects against its memoryLimit', async () => {
    const { socket } = await daemonWith({ tenants: { carol: { tokenHash: hashToken(ALICE), memoryLimit: '64K' } } });
    const carol = await connect({ socket, token: ALICE, name: 'many-small' });
    try {
      const device = await (await carol.gpu.requestAdapter())!.requestDevice();
      device.pushErrorScope('out-of-memory');
      // 32 buffers of 16 bytes: 512 bytes of device memory, but about 4 KiB each in the daemon.
      for (let i = 0; i < 32; i++) device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
      const error = await device.popErrorScope();
      assert.ok(error, 'tiny buffers are refused once the daemon holds memoryLimit for them');
      assert.match(error.message, /^GPUNIX_E_QUOTA: tenant carol's memoryLimit of 65536 bytes is used up/);
    } finally {
      await carol.exit().catch(() => {});
    }
  });

  it('shows a tenant\'s object quotas where the admin adds and changes tenants', async () => {
    const stateFile = join(dir, 'state.json');
    const { daemon, socket } = await daemonWith({ stateFile });
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    try {
      const added = (await admin.call('AddTenant', { name: 'carol', quota: { maxObjects: 500, maxShaderBytes: '1M' } })) as { maxObjects: number; maxShaderBytes: number };
      assert.deepEqual([added.maxObjects, added.maxShaderBytes], [500, 1024 * 1024]);
      const changed = (await admin.call('UpdateTenant', { name: 'carol', quota: { maxObjects: null }, rotateToken: false })) as { maxObjects: number | null; maxShaderBytes: number };
      assert.deepEqual([changed.maxObjects, changed.maxShaderBytes], [null, 1024 * 1024], 'null lifts the limit; fields not given stay');
      await rejectsWith(admin.call('AddTenant', { name: 'dave', quota: { maxObjects: -1 } }), 'GPUNIX_E_BAD_OPTION', 'a bad object quota');
    } finally {
      admin.close();
    }
    // They persist: a daemon restarted on the same state file has them.
    daemons.splice(daemons.indexOf(daemon), 1);
    await daemon.close('immediate');
    const restarted = await daemonWith({ stateFile });
    const admin2 = await Session.open({ socket: restarted.socket, token: ADMIN }, { role: 'control' });
    try {
      const { tenants } = (await admin2.call('ListTenants', {})) as { tenants: { name: string; maxObjects: number | null; maxShaderBytes: number | null }[] };
      const carol = tenants.find((t) => t.name === 'carol')!;
      assert.deepEqual([carol.maxObjects, carol.maxShaderBytes], [null, 1024 * 1024]);
      const alice = tenants.find((t) => t.name === 'alice')!;
      assert.deepEqual([alice.maxObjects, alice.maxShaderBytes], [100_000, 64 * 1024 * 1024], 'the daemon\'s defaults where a tenant gives none');
    } finally {
      admin2.close();
    }
  });

  it('ends a session whose frame is begun and not finished, and an idle control session, but not an idle process session', async () => {
    const { socket } = await daemonWith({ frameTimeoutMs: 200, controlIdleTimeoutMs: 300 });
    // Hello, then the first bytes of a Ping and nothing more.
    const slow = await openRaw(socket);
    slow.socket.write(Buffer.concat([hello(ALICE), encodeFrame('Ping', { req: 1 }).subarray(0, 6)]));
    await slow.whenClosed;
    assert.equal(slow.messages[0]?.name, 'Welcome');
    assert.equal(protocolErrorCode(slow), 'GPUNIX_E_PROTOCOL_TIMEOUT');
    assert.match((slow.messages.at(-1)!.payload as { message: string }).message, /begun but not completed within 200 ms/);

    const thinker = await connect({ socket, token: BOB, name: 'thinking' });
    const idle = await Session.open({ socket, token: ALICE }, { role: 'control' });
    try {
      const why = await idle.closed;
      assert.ok(why instanceof GpunixError && why.code === 'GPUNIX_E_PROTOCOL_TIMEOUT', `the idle control session ends with a code, got ${String(why)}`);
      // The process session, as idle for as long, still works (its program may be computing on the CPU).
      assert.deepEqual(await double(thinker.gpu), [2, 4, 6, 8]);
    } finally {
      idle.close();
      await thinker.exit().catch(() => {});
    }
  });
});
