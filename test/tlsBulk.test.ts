// Bulk data over gpunixd's TLS listener (docs/daemon.md, "Bulk data"): there is no shared memory
// across a network, so buffer contents travel in frames, gathered on the receiving side into
// buffers that the client reuses from one large reply to the next (src/protocol/codec.ts,
// FrameDecoder; src/client/session.ts, ReplySink). Every byte must arrive as sent in both
// directions, round after round (a reused buffer never shows an earlier round's bytes), for
// ranges in one frame and in pieces; and a client that dies in the middle of a transfer leaves
// the daemon serving everyone else, holding nothing of it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { globals } from 'webgpu';
import { connect, RemoteProcess } from '../src/index.js';
import { Session } from '../src/client/session.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { encodeFrame } from '../src/protocol/codec.js';
import { PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { kernelAllowsSocketBuffers, SOCKET_BUFFER_BYTES } from '../src/socketBuffers.js';
import { bulkPumpProgram, writeCopyReadBack } from './helpers.js';

Object.assign(globalThis, globals);

const root = join(fileURLToPath(import.meta.url), '../../..');
const fixtures = join(root, 'test/fixtures/tls');
const CERT = join(fixtures, 'localhost-cert.pem');
const KEY = join(fixtures, 'localhost-key.pem');
const ADMIN = randomBytes(32).toString('hex');
const ALICE = randomBytes(32).toString('hex');
const MiB = 1024 * 1024;

/** `size` bytes that differ from round to round and from place to place. */
function pattern(size: number, round: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  const words = new Uint32Array(bytes.buffer);
  for (let i = 0; i < words.length; i++) words[i] = (Math.imul(i, 2654435761) ^ Math.imul(round + 1, 40503)) >>> 0;
  return bytes;
}

/** First differing byte of two arrays, for a readable failure (-1: equal). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.byteLength !== b.byteLength) return Math.min(a.byteLength, b.byteLength);
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0
    ? -1
    : Buffer.from(a).findIndex((x, i) => x !== b[i]);
}

/** Polls the asynchronous `check` until it holds, failing with `what` after 20 s. */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * SO_SNDBUF and SO_RCVBUF of every TCP socket of this process with `port` at either end, as
 * `ss -tm` shows them (tb, rb): /proc/net/tcp gives the connections' inodes, /proc/self/fd the
 * descriptors, getsockopt (through koffi, as src/libc.ts binds libc) the sizes.
 */
function tcpBuffersOnPort(port: number): Array<{ send: number; receive: number }> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const line of readFileSync('/proc/self/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length > 9 && (fields[1].endsWith(`:${hexPort}`) || fields[2].endsWith(`:${hexPort}`)) && fields[3] === '01') inodes.add(fields[9]);
  }
  const koffi = createRequire(import.meta.url)('koffi');
  const getsockopt = koffi.load('libc.so.6').func('int getsockopt(int fd, int level, int name, _Out_ int *value, _Inout_ uint32_t *length)');
  const found: Array<{ send: number; receive: number }> = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target = '';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (!inode || !inodes.has(inode)) continue;
    const read = (name: number): number => {
      const value = [0];
      assert.equal(getsockopt(Number(fd), 1 /* SOL_SOCKET */, name, value, [4]), 0);
      return value[0];
    };
    found.push({ send: read(7 /* SO_SNDBUF */), receive: read(8 /* SO_RCVBUF */) });
  }
  return found;
}

describe('bulk data over TLS', () => {
  let dir: string;
  let daemon: Daemon;
  let url: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-tls-bulk-'));
    daemon = await startDaemon({
      socket: join(dir, 'gpunixd.sock'),
      log: { level: 'silent' },
      adminTokenHash: hashToken(ADMIN),
      tenants: { alice: { tokenHash: hashToken(ALICE) } },
      tcp: { host: '127.0.0.1', port: 0, tls: { cert: CERT, key: KEY } },
    });
    url = `tls://127.0.0.1:${daemon.tcpAddress!.port}`;
  });
  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  const open = (name: string): Promise<RemoteProcess> => connect({ url, ca: readFileSync(CERT), servername: 'localhost', token: ALICE, name });

  it('gives both ends of a connection socket buffers that hold a large frame', async () => {
    const before = tcpBuffersOnPort(daemon.tcpAddress!.port).length;
    const proc = await open('buffers');
    try {
      // The daemon runs in this process: its end and the client's are both here.
      const ends = tcpBuffersOnPort(daemon.tcpAddress!.port);
      assert.equal(ends.length, before + 2, 'the client end and the daemon end of the new connection');
      for (const end of ends) {
        if (kernelAllowsSocketBuffers()) {
          // The kernel doubles what was asked.
          assert.ok(end.send >= SOCKET_BUFFER_BYTES, `send buffer ${end.send} B`);
          assert.ok(end.receive >= SOCKET_BUFFER_BYTES, `receive buffer ${end.receive} B`);
        } else {
          // Caps below the size: the buffers stay the kernel's (autotuned), never pinned at the cap (set sizes are doubled).
          const cap = Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));
          assert.notEqual(end.send, 2 * cap, `send buffer ${end.send} B left to the kernel`);
        }
      }
    } finally {
      await proc.exit().catch(() => {});
    }
  });

  it('moves buffer contents byte for byte both ways, round after round, in one frame and in pieces', async () => {
    const proc = await open('bulk');
    try {
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      // 4 MiB: one frame each way; 12 MiB: the write in two pieces, the mapped range streamed in pieces.
      for (const size of [4 * MiB, 12 * MiB]) {
        const src = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
        const readback = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        for (let round = 0; round < 3; round++) {
          const sent = pattern(size, round + size);
          const got = await writeCopyReadBack(device, src, readback, sent);
          assert.equal(firstDifference(got, sent), -1, `${size / MiB} MiB, round ${round}: the bytes read back differ`);
        }
        src.destroy();
        readback.destroy();
      }
      // The other way round: bytes written into a mapped range travel at unmap.
      const size = 4 * MiB;
      const upload = device.createBuffer({ size, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC });
      const readback = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      for (let round = 0; round < 2; round++) {
        const sent = pattern(size, 100 + round);
        await upload.mapAsync(GPUMapMode.WRITE);
        new Uint8Array(upload.getMappedRange()).set(sent);
        upload.unmap();
        const encoder = device.createCommandEncoder();
        encoder.copyBufferToBuffer(upload, 0, readback, 0, size);
        device.queue.submit([encoder.finish()]);
        await readback.mapAsync(GPUMapMode.READ);
        const got = new Uint8Array(readback.getMappedRange()).slice();
        readback.unmap();
        assert.equal(firstDifference(got, sent), -1, `mapped write, round ${round}: the bytes read back differ`);
      }
      device.destroy();
    } finally {
      await proc.exit().catch(() => {});
    }
  });

  it('keeps serving others, and holds nothing, when a client dies in the middle of a transfer', async () => {
    const admin = await Session.open({ socket: join(dir, 'gpunixd.sock'), token: ADMIN }, { role: 'control' });
    const buffered = async () => {
      const { tenants } = (await admin.call('ListTenants', {})) as { tenants: { name: string; bufferedBytes: number }[] };
      return tenants.find((t) => t.name === 'alice')!.bufferedBytes;
    };
    try {
      // A program that moves 4 MiB each way over TLS in a loop, killed while it does.
      const program = join(dir, 'pump.mjs');
      writeFileSync(program, bulkPumpProgram(2));
      // (By name: the test certificate names localhost.)
      const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'run', '--connect', '--url', url.replace('127.0.0.1', 'localhost'), '--ca', CERT, '--token', ALICE, '--name', 'pump', program], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('pumping') && resolve());
        child.once('exit', (code) => reject(new Error(`the pump exited (${code}) before pumping: ${stderr}`)));
      });
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));

      // A peer that authenticates, begins a 4 MiB frame and vanishes after 1 MiB of it.
      const raw = tlsConnect({ host: '127.0.0.1', port: daemon.tcpAddress!.port, ca: readFileSync(CERT), servername: 'localhost' });
      await new Promise<void>((resolve, reject) => raw.once('secureConnect', resolve).once('error', reject));
      raw.on('error', () => {});
      const header = Buffer.alloc(4);
      header.writeUInt32LE(4 * MiB);
      raw.write(encodeFrame('Hello', { version: PROTOCOL_VERSION, role: 'process', token: ALICE, name: 'raw', priority: '', weight: 0, options: {} }));
      raw.write(Buffer.concat([header, Buffer.alloc(MiB, 9)]));
      await until('the daemon holds the unfinished frame', async () => (await buffered()) >= MiB);
      raw.destroy();

      await until('what they held is counted back', async () => (await buffered()) === 0);
      const other = await open('other');
      try {
        const device = await (await other.gpu.requestAdapter())!.requestDevice();
        const size = 4 * MiB;
        const src = device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
        const readback = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        const sent = pattern(size, 7);
        assert.equal(firstDifference(await writeCopyReadBack(device, src, readback, sent), sent), -1, 'another client still moves its bytes intact');
        device.destroy();
      } finally {
        await other.exit().catch(() => {});
      }
    } finally {
      admin.close();
    }
  });
});
