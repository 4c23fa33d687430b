// The bulk-data path through gpunixd (docs/daemon.md, "Bulk data"): a client on the Unix socket
// moves buffer contents through a shared-memory region the daemon makes and owns; the bytes a
// program writes and reads are the same as over frames; the region's name is gone once the client
// opened it, and its file and descriptor once the session ends, a client killed mid-transfer
// included; a session can reach only its own region; an older client and a daemon without shared
// memory still work, over frames.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fstatSync, ftruncateSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as netConnect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { globals } from 'webgpu';
import { connect, GpunixError, RemoteProcess } from '../src/index.js';
import { bulkOf, receiveDescriptor, SHARED_MEMORY_ENV } from '../src/client/bulkRegion.js';
import { Session } from '../src/client/session.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { hashToken } from '../src/daemon/config.js';
import { encodeFrame, FrameDecoder } from '../src/protocol/codec.js';
import type { Message } from '../src/protocol/messages.js';
import { bulkPumpProgram, eventually, writeCopyReadBack } from './helpers.js';
import { startDaemon as startChildDaemon } from './fleetNodes.js';

Object.assign(globalThis, globals);

const root = join(fileURLToPath(import.meta.url), '../../..');
const ALICE = randomBytes(32).toString('hex');
const BOB = randomBytes(32).toString('hex');
const MiB = 1024 * 1024;

/** The region directory the daemon makes under `shm`. */
const regionDirOf = (shm: string) => join(shm, `gpunix-${process.getuid?.() ?? 0}`);

/**
 * This process's open descriptors of regions (the daemon runs in this process): files under
 * `dir`, and the sealed memory files the daemon makes for clients of its own user.
 */
function openUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir) || target.startsWith(MEMORY_FILE)) out.push(target);
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

/** How a sealed memory-file region shows in /proc/<pid>/fd. */
const MEMORY_FILE = '/memfd:gpunix-region';

/** The names left in the region directory (none if it was never made: memory-file regions need none). */
const namesIn = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);

/** BulkRegion's reply for a memory file: its descriptor is on offer at the handoff socket. */
type Offered = { path: string; size: number; handoff: { socket: string; key: string } };

/** A 4 MiB-ish round: writeBuffer, copy, mapAsync(READ); returns the bytes read back. */
async function roundTrip(device: GPUDevice, data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const usage = GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const src = device.createBuffer({ size: data.byteLength, usage });
  const readback = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    return await writeCopyReadBack(device, src, readback, data);
  } finally {
    src.destroy();
    readback.destroy();
  }
}

function pattern(bytes: number, seed: number): Uint8Array<ArrayBuffer> {
  const words = new Uint32Array(bytes / 4);
  for (let i = 0; i < words.length; i++) words[i] = (i * 2654435761 + seed) >>> 0;
  return new Uint8Array(words.buffer);
}

async function deviceOf(process: RemoteProcess): Promise<GPUDevice> {
  return (await (await process.gpu.requestAdapter())!.requestDevice()) as unknown as GPUDevice;
}

/** The region's client side, once attached (the request is pipelined behind the first calls). */
async function regionOf(process: RemoteProcess) {
  const channel = (process as unknown as { channel: Parameters<typeof bulkOf>[0] }).channel;
  await eventually('the shared-memory region is attached', () => bulkOf(channel) !== null, 10_000);
  return bulkOf(channel)!;
}

describe('bulk data through shared memory', () => {
  let dir: string;
  let shm: string;
  let daemon: Daemon;
  let socket: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-bulk-'));
    // A directory of this test's own (on /dev/shm where there is one), so other runs' regions do not count.
    shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'gpunix-bulk-test-'));
    socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({
      socket,
      // Only the daemon's user may connect: regions are 0600 (with 0660, the default, its group may open one too).
      socketMode: '0600',
      log: { level: 'silent' },
      sharedMemory: { directory: shm, maxBytes: '64M' },
      tcp: { host: '127.0.0.1', port: 0, insecure: true },
      tenants: { alice: { tokenHash: hashToken(ALICE) }, bob: { tokenHash: hashToken(BOB) } },
    });
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  });

  it('moves writeBuffer data, mapped reads and writes through the region, byte for byte', async () => {
    const process = await connect({ socket, token: ALICE });
    const device = await deviceOf(process);
    const region = await regionOf(process);
    const before = { written: region.bytesWritten, read: region.bytesRead };
    // 4 MiB rounds, and a size just at the threshold.
    for (const [size, seed] of [
      [4 * MiB, 1],
      [4 * MiB, 2],
      [64 * 1024, 3],
    ]) {
      const data = pattern(size, seed);
      assert.deepEqual(await roundTrip(device, data), data, `${size} bytes, round ${seed}`);
    }
    assert.ok(region.bytesWritten - before.written >= 8 * MiB, 'the writes went through the region');
    assert.ok(region.bytesRead - before.read >= 8 * MiB, 'the reads came through the region');

    // A range mapped for writing, and one mapped at creation, come back through the region at unmap.
    const size = MiB;
    const writable = device.createBuffer({ size, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC });
    await writable.mapAsync(GPUMapMode.WRITE);
    new Uint32Array(writable.getMappedRange(0, size / 2)).fill(0xaaaa5555);
    new Uint32Array(writable.getMappedRange(size / 2, size / 2)).fill(0x12345678);
    writable.unmap();
    const created = device.createBuffer({ size, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Uint32Array(created.getMappedRange()).fill(0x0badf00d);
    created.unmap();
    const readback = device.createBuffer({ size: 2 * size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(writable, 0, readback, 0, size);
    encoder.copyBufferToBuffer(created, 0, readback, size, size);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const words = new Uint32Array(readback.getMappedRange());
    const quarter = words.length / 4;
    assert.deepEqual([words[0], words[quarter - 1], words[quarter], words[2 * quarter - 1], words[2 * quarter], words.at(-1)], [
      0xaaaa5555, 0xaaaa5555, 0x12345678, 0x12345678, 0x0badf00d, 0x0badf00d,
    ]);
    readback.unmap();

    // Bigger than the region holds twice: it travels in frames (and the region grows up to maxBytes).
    const big = pattern(40 * MiB, 9);
    assert.deepEqual(await roundTrip(device, big), big, '40 MiB');
    assert.deepEqual(await roundTrip(device, big), big, '40 MiB again');
    await process.exit();
  });

  it('leaves no name behind once opened, and nothing at all once the session ends', async () => {
    const regionDir = regionDirOf(shm);
    const process = await connect({ socket, token: ALICE });
    const device = await deviceOf(process);
    await regionOf(process);
    assert.deepEqual(await roundTrip(device, pattern(MiB, 5)), pattern(MiB, 5));
    assert.deepEqual(namesIn(regionDir), [], 'no name in the region directory once the client has opened it');
    if (existsSync(regionDir)) assert.equal(statSync(regionDir).mode & 0o777, 0o700, 'the region directory is the daemon user\'s alone');
    assert.ok(openUnder(regionDir).length > 0, 'the daemon holds the region open while the session lasts');
    await process.exit();
    await eventually('the daemon has closed the region', () => openUnder(regionDir).length === 0);
  });

  it('hands a sealed memory file to the client, which it cannot shrink under the daemon', async () => {
    const session = await Session.open({ socket, token: ALICE }, { role: 'process' });
    try {
      const { handoff } = (await session.call('BulkRegion', { size: MiB })) as Offered;
      const fd = await receiveDescriptor(handoff.socket, handoff.key);
      try {
        assert.ok(readlinkSync(`/proc/self/fd/${fd}`).startsWith(MEMORY_FILE), 'a memory file');
        // Cutting it short would kill the daemon at its next copy (SIGBUS): the seal refuses it.
        assert.throws(() => ftruncateSync(fd, 0), { code: 'EPERM' });
        assert.throws(() => ftruncateSync(fd, MiB / 2), { code: 'EPERM' });
        assert.equal(fstatSync(fd).size, MiB);
      } finally {
        closeSync(fd);
      }
      session.post('BulkRegionOpened', { ok: true });
      await session.call('Ping', {});
    } finally {
      session.close();
    }
    // The daemon serves on, through regions, byte for byte.
    const process = await connect({ socket, token: ALICE });
    const device = await deviceOf(process);
    const region = await regionOf(process);
    const before = region.bytesRead;
    assert.deepEqual(await roundTrip(device, pattern(2 * MiB, 21)), pattern(2 * MiB, 21));
    assert.ok(region.bytesRead > before, 'through the region');
    await process.exit();
  });

  it('removes the region of a client that asked for one and vanished before opening it', async () => {
    const regionDir = regionDirOf(shm);
    const session = await Session.open({ socket, token: ALICE }, { role: 'process' });
    const { path, size, handoff } = (await session.call('BulkRegion', { size: MiB })) as Offered;
    assert.equal(size, MiB);
    // A memory file with no name: its descriptor is on offer at the handoff socket, under an unguessable key.
    assert.equal(path, '');
    assert.equal(handoff.socket, `${socket}.regions`);
    assert.match(handoff.key, /^[0-9a-f]{32}$/);
    assert.equal(statSync(handoff.socket).mode & 0o777, 0o600, 'the handoff socket has the main socket\'s mode');
    session.close();
    await eventually('the region is gone', () => openUnder(regionDir).length === 0);
    await assert.rejects(receiveDescriptor(handoff.socket, handoff.key), /sent no descriptor/, 'its offer went with the session');
  });

  it('leaves nothing behind when the client is killed in the middle of transfers', async () => {
    const regionDir = regionDirOf(shm);
    const program = join(dir, 'pump.mjs');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(program, bulkPumpProgram(0));
    const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'run', '--connect', '--socket', socket, '--token', ALICE, '--name', 'pump', program], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('pumping') && resolve());
        child.once('exit', (code) => reject(new Error(`the pump exited early (${code})`)));
      });
      await eventually('the pump has a region', () => openUnder(regionDir).length > 0);
      // Let transfers run through it, then kill the client without a word.
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      child.kill('SIGKILL');
    }
    await eventually('the pump\'s process has ended', () => daemon.kernel.ps().every((p) => p.name !== 'pump' || p.state === 'exited'));
    await eventually('no region file or descriptor remains', () => namesIn(regionDir).length === 0 && openUnder(regionDir).length === 0);
  });

  it('never lets a session reach a region but its own', async () => {
    const regionDir = regionDirOf(shm);
    const alice = await Session.open({ socket, token: ALICE }, { role: 'process' });
    const bob = await Session.open({ socket, token: BOB }, { role: 'process' });
    try {
      const a = (await alice.call('BulkRegion', { size: MiB })) as Offered;
      const b = (await bob.call('BulkRegion', { size: MiB })) as Offered;
      assert.notEqual(a.handoff.key, b.handoff.key, 'each session has a region of its own');
      // A key is good once: alice takes hers; nobody gets it again, and a guessed key gets nothing.
      closeSync(await receiveDescriptor(a.handoff.socket, a.handoff.key));
      await assert.rejects(receiveDescriptor(a.handoff.socket, a.handoff.key), /sent no descriptor/);
      await assert.rejects(receiveDescriptor(b.handoff.socket, randomBytes(16).toString('hex')), /sent no descriptor/);
      alice.post('BulkRegionOpened', { ok: true });
      await alice.call('Ping', {});
      // Bob's offer stands until he says he has it.
      closeSync(await receiveDescriptor(b.handoff.socket, b.handoff.key));
      // Bob's messages name offsets in his own region only: past its end is a protocol error.
      bob.post('BufferMapAsyncShared', { req: 77, buffer: 1, mode: 1, offset: 0, size: 4096, at: MiB });
      const error = (await bob.closed) as GpunixError | null;
      assert.equal(error?.code, 'GPUNIX_E_PROTOCOL_MALFORMED');
      assert.match(error!.message, /not inside the session's shared-memory region/);
      await eventually('bob\'s region is gone with his session', () => !existsSync(b.path));
    } finally {
      alice.close();
      bob.close();
    }
    await eventually('no region remains', () => namesIn(regionDir).length === 0 && openUnder(regionDir).length === 0);
  });

  it('closes a handoff connection that sends garbage or nothing, bounds how many are open, and goes on serving', async () => {
    const handoffSocket = `${socket}.regions`;
    /** Connects, sends `bytes`, and resolves with what came back once the daemon closed the connection. */
    const exchange = (bytes: Buffer | null) =>
      new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const connection = netConnect({ path: handoffSocket }, () => bytes && connection.write(bytes));
        connection.on('data', (chunk: Buffer) => chunks.push(chunk));
        connection.on('error', () => resolve(Buffer.concat(chunks)));
        connection.on('close', () => resolve(Buffer.concat(chunks)));
        setTimeout(() => reject(new Error('the daemon kept the connection open')), 20_000).unref();
      });
    assert.equal((await exchange(randomBytes(1 << 20))).byteLength, 0, 'a megabyte of garbage: closed, nothing sent');
    assert.equal((await exchange(Buffer.from('x'.repeat(32) + '\n'))).byteLength, 0, 'a key line naming nothing: closed');
    assert.equal((await exchange(null)).byteLength, 0, 'silence: closed after the handoff timeout');
    // A flood of silent connections: past 64 open ones, each is closed at once (the daemon's descriptors are not used up).
    const flood: Socket[] = [];
    let closedAtOnce = 0;
    for (let i = 0; i < 80; i++) {
      const connection = netConnect({ path: handoffSocket });
      connection.on('error', () => {});
      connection.on('close', () => closedAtOnce++);
      flood.push(connection);
    }
    await eventually('the connections past the bound are closed', () => closedAtOnce >= 16, 3_000);
    for (const connection of flood) connection.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const process = await connect({ socket, token: ALICE });
    const device = await deviceOf(process);
    await regionOf(process);
    assert.deepEqual(await roundTrip(device, pattern(MiB, 41)), pattern(MiB, 41));
    await process.exit();
  });

  it('refuses a region to a session that has not asked for one, and to a TCP client', async () => {
    const session = await Session.open({ socket, token: ALICE }, { role: 'process' });
    session.post('BufferUnmapShared', { buffer: 1, offset: 0, at: 0, size: 4 });
    const error = (await session.closed) as GpunixError | null;
    assert.equal(error?.code, 'GPUNIX_E_PROTOCOL_OUT_OF_ORDER');

    const remote = await Session.open({ url: `tcp://127.0.0.1:${daemon.tcpAddress!.port}`, token: ALICE }, { role: 'process' });
    await assert.rejects(remote.call('BulkRegion', { size: MiB }), { code: 'GPUNIX_E_UNSUPPORTED' });
    remote.close();
    // A TCP client's program runs as ever, its bulk data in frames: ranges larger than a frame
    // come in pieces (MappedData), and go in pieces at unmap (BufferWriteMapped).
    const process = await connect({ url: `tcp://127.0.0.1:${daemon.tcpAddress!.port}`, token: ALICE, maxFrameBytes: 8 * MiB + 4096 });
    const device = await deviceOf(process);
    assert.deepEqual(await roundTrip(device, pattern(MiB, 7)), pattern(MiB, 7));
    const big = pattern(20 * MiB, 8);
    assert.deepEqual(await roundTrip(device, big), big, 'a range larger than the client\'s frame limit');
    const created = device.createBuffer({ size: big.byteLength, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Uint8Array(created.getMappedRange()).set(big);
    created.unmap();
    const readback = device.createBuffer({ size: big.byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(created, 0, readback, 0, big.byteLength);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    assert.deepEqual(new Uint8Array(readback.getMappedRange()), big, 'a range written at creation, larger than a frame');
    readback.unmap();
    await process.exit();
  });

  it('serves a client of the previous protocol version over frames', async () => {
    const sock: Socket = netConnect({ path: socket });
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const decoder = new FrameDecoder();
    const messages: Message[] = [];
    sock.on('data', (chunk: Buffer) => messages.push(...decoder.push(chunk)));
    sock.write(encodeFrame('Hello', { version: 2, role: 'process', token: ALICE, name: 'old', priority: '', weight: 0, options: {} }));
    sock.write(encodeFrame('Ping', { req: 1 }));
    await eventually('the daemon answers', () => messages.some((m) => m.name === 'Reply'));
    assert.deepEqual(messages.map((m) => m.name), ['Welcome', 'Reply']);
    sock.destroy();
  });

  it('keeps bulk data in frames where the client says so', async () => {
    process.env[SHARED_MEMORY_ENV] = '0';
    try {
      const remote = await connect({ socket, token: ALICE });
      const device = await deviceOf(remote);
      assert.deepEqual(await roundTrip(device, pattern(4 * MiB, 11)), pattern(4 * MiB, 11));
      const channel = (remote as unknown as { channel: Parameters<typeof bulkOf>[0] }).channel;
      assert.equal(bulkOf(channel), null);
      await remote.exit();
    } finally {
      delete process.env[SHARED_MEMORY_ENV];
    }
  });
});

describe('shared memory per tenant', () => {
  it('makes regions smaller, then none, past the tenant\'s maxBytesPerTenant, and gives back what a session held', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-bulk-tenant-'));
    const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'gpunix-bulk-test-'));
    const daemon = await startDaemon({
      socket: join(dir, 'gpunixd.sock'),
      log: { level: 'silent' },
      anonymousTenant: 'default',
      sharedMemory: { directory: shm, maxBytesPerTenant: '3M' },
    });
    try {
      const open = () => Session.open({ socket: daemon.socketPath }, { role: 'process' });
      const [first, second, third] = await Promise.all([open(), open(), open()]);
      assert.equal(((await first.call('BulkRegion', { size: 2 * MiB })) as { size: number }).size, 2 * MiB);
      assert.equal(((await second.call('BulkRegion', { size: 2 * MiB })) as { size: number }).size, MiB, 'what the tenant has left');
      await assert.rejects(third.call('BulkRegion', { size: 2 * MiB }), { code: 'GPUNIX_E_UNSUPPORTED' });
      // Growing is bounded the same way.
      assert.equal(((await first.call('BulkRegion', { size: 8 * MiB })) as { size: number }).size, 2 * MiB);
      first.close();
      await first.closed;
      await eventually('the first session\'s region is given back', () => openUnder(regionDirOf(shm)).length === 1);
      assert.equal(((await third.call('BulkRegion', { size: 2 * MiB })) as { size: number }).size, 2 * MiB);
      second.close();
      third.close();
    } finally {
      await daemon.close('immediate');
      rmSync(dir, { recursive: true, force: true });
      rmSync(shm, { recursive: true, force: true });
    }
  });
});

describe('a client of another user', () => {
  // The production daemon runs as its own user (contrib/gpunixd.service), its clients as theirs:
  // they get the memory file through the handoff socket all the same. Needs root (to run as nobody).
  it('gets a mapped region through the handoff socket, byte for byte', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-bulk-user-'));
    chmodSync(dir, 0o755);
    const daemon = await startDaemon({ socket: join(dir, 'gpunixd.sock'), socketMode: '0666', log: { level: 'silent' }, tenants: { alice: { tokenHash: hashToken(ALICE) } } });
    try {
      const program = join(dir, 'rounds.mjs');
      writeFileSync(
        program,
        `import { readdirSync, readlinkSync } from 'node:fs';
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
const size = 4 << 20;
const src = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
const readback = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
let exact = true;
for (let round = 0; round < 3; round++) {
  const data = new Uint32Array(size / 4).map((_, i) => (i * 2654435761 + round) >>> 0);
  device.queue.writeBuffer(src, 0, data);
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(src, 0, readback, 0, size);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const back = new Uint32Array(readback.getMappedRange());
  exact &&= back.every((word, i) => word === data[i]);
  readback.unmap();
}
const regions = readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd).startsWith('/memfd:gpunix-region'); } catch { return false; } });
console.log(JSON.stringify({ uid: process.getuid(), exact, regions: regions.length }));
`,
      );
      // (Not spawnSync: the daemon runs in this process and must go on serving.)
      const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'run', '--connect', '--socket', daemon.socketPath, '--token', ALICE, program], { uid: 65534, gid: 65534 });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk));
      child.stderr.on('data', (chunk: Buffer) => (out += chunk));
      await new Promise((resolve) => child.once('exit', resolve));
      const line = out.trim().split('\n').find((l) => l.startsWith('{"uid"')) ?? 'null';
      assert.deepEqual(JSON.parse(line), { uid: 65534, exact: true, regions: 1 }, out);
    } finally {
      await daemon.close('immediate');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('without the libc calls', () => {
  // Where koffi has no binary (GPUNIX_MMAP=0 stands in for that here), regions are tmpfs files
  // opened by name, which the daemon reads and writes with pread/pwrite and never maps.
  it('moves bulk data through a tmpfs file the daemon never maps, byte for byte', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-bulk-nommap-'));
    const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'gpunix-bulk-test-'));
    const admin = randomBytes(32).toString('hex');
    const node = await startChildDaemon('nommap', dir, {
      socket: join(dir, 'gpunixd.sock'),
      log: { level: 'debug' },
      sharedMemory: { directory: shm },
      adminTokenHash: hashToken(admin),
      tenants: { alice: { tokenHash: hashToken(ALICE) } },
    }, { adminToken: admin, env: { GPUNIX_MMAP: '0' } });
    try {
      const remote = await connect({ socket: node.socket, token: ALICE });
      const device = await deviceOf(remote);
      const region = await regionOf(remote);
      for (const seed of [31, 32]) assert.deepEqual(await roundTrip(device, pattern(4 * MiB, seed)), pattern(4 * MiB, seed));
      assert.ok(region.bytesRead >= 8 * MiB, 'through the region');
      const made = node.log().split('\n').filter((line) => line.includes('shared-memory region made'));
      assert.ok(made.length > 0 && made.every((line) => line.includes('"mapped":false')), `a tmpfs file, not mapped by the daemon: ${made.join('\n')}`);
      assert.equal(existsSync(`${node.socket}.regions`), false, 'no handoff socket without the calls to pass descriptors');
      await remote.exit();
    } finally {
      await node.stop();
      rmSync(shm, { recursive: true, force: true });
    }
  });
});

describe('bulk data without shared memory', () => {
  it('works over frames when shared memory is off, and makes nothing at a missing directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-bulk-none-'));
    const missing = join(dir, 'no-such-dir');
    const off = await startDaemon({ socket: join(dir, 'off.sock'), log: { level: 'silent' }, anonymousTenant: 'default', sharedMemory: { directory: null } });
    const noDirectory = await startDaemon({ socket: join(dir, 'missing.sock'), log: { level: 'silent' }, anonymousTenant: 'default', sharedMemory: { directory: missing } });
    try {
      const session = await Session.open({ socket: off.socketPath }, { role: 'process' });
      await assert.rejects(session.call('BulkRegion', { size: MiB }), { code: 'GPUNIX_E_UNSUPPORTED' });
      session.close();
      for (const daemon of [off, noDirectory]) {
        const remote = await connect({ socket: daemon.socketPath });
        const device = await deviceOf(remote);
        const data = pattern(4 * MiB, 13);
        assert.deepEqual(await roundTrip(device, data), data);
        await remote.exit();
      }
      // (A client of the daemon's own user still gets a memory-file region, which needs no directory.)
      assert.equal(existsSync(missing), false, 'nothing was made in its place');
    } finally {
      await off.close('immediate');
      await noDirectory.close('immediate');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
