// gpunixd in-process on a temp socket: configuration errors name their field, tokens and tenant
// isolation, quotas, runtime tenant changes and their persistence, protocol errors that close only
// the offending session, metrics, and the two shutdown modes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, connect as netConnect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Session, SessionOptions } from '../src/client/session.js';
import { hashToken, loadConfigFile, parseConfig } from '../src/daemon/config.js';
import { imagePath } from '../src/daemon/control.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { GpunixError } from '../src/errors.js';
import { encodeFrame, FrameDecoder } from '../src/protocol/codec.js';
import { Message, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { Wire } from '../src/protocol/wire.js';
import './helpers.js';

const ADMIN = 'admin-token-0123456789abcdef0123456789abcdef';
const ALICE = 'alice-token-0123456789abcdef0123456789abcdef';
const BOB = 'bob-token-0123456789abcdef0123456789abcdef01';

/** Asserts that `promise` rejects with a GpunixError of `code`. */
async function rejectsWith(promise: Promise<unknown>, code: string, what = code): Promise<GpunixError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof GpunixError, `${what}: expected a GpunixError, got ${String(error)}`);
    assert.equal(error.code, code, `${what}: ${error.message}`);
    return error;
  }
  assert.fail(`${what}: expected ${code}, but it succeeded`);
}

/** Polls until `check` holds. */
async function eventually(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A raw connection: writes bytes, and collects the daemon's messages until it closes the connection. */
async function raw(socket: string, ...frames: Buffer[]): Promise<Message[]> {
  const sock: Socket = netConnect({ path: socket });
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  const decoder = new FrameDecoder();
  const messages: Message[] = [];
  sock.on('data', (chunk: Buffer) => messages.push(...decoder.push(chunk)));
  sock.on('error', () => {});
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  for (const frame of frames) sock.write(frame);
  const timeout = setTimeout(() => sock.destroy(new Error('the daemon did not close the connection')), 4000);
  await closed;
  clearTimeout(timeout);
  return messages;
}

function hello(token: string, role: 'process' | 'control' = 'control', extra: { priority?: string; version?: number } = {}): Buffer {
  return encodeFrame('Hello', { version: extra.version ?? PROTOCOL_VERSION, role, token, name: 'raw', priority: extra.priority ?? 'normal', weight: 1, options: {} });
}

/** One small dispatch on a new device of `gpu`: device work the trace records. */
async function dispatchOnce(gpu: GPU): Promise<void> {
  const device = await (await gpu.requestAdapter())!.requestDevice();
  const buffer = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
  const module = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> b: array<u32>; @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3u) { b[i.x] = i.x; }' });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
  pass.dispatchWorkgroups(1);
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
}

function protocolErrorOf(messages: Message[]): string {
  const last = messages.at(-1);
  assert.ok(last && last.name === 'ProtocolError', `expected a ProtocolError, got ${messages.map((m) => m.name).join(', ') || 'nothing'}`);
  return last.payload.code;
}

describe('gpunixd', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;
  let stateFile: string;
  const baseConfig = () => ({
    socket,
    log: { level: 'silent' as const },
    adminTokenHash: hashToken(ADMIN),
    stateFile,
    imageDir: join(dir, 'images'),
    maxFrameBytes: 64 * 1024,
    metrics: { host: '127.0.0.1', port: 0 },
    tenants: {
      alice: { tokenHash: hashToken(ALICE), maxProcesses: 1, priorities: ['normal', 'batch'] as ('normal' | 'batch')[] },
      bob: { tokenHash: hashToken(BOB) },
    },
  });
  const as = (token: string): SessionOptions => ({ socket, token });
  const control = (token: string) => Session.open(as(token), { role: 'control' });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunixd-test-'));
    socket = join(dir, 'run', 'gpunixd.sock');
    stateFile = join(dir, 'state', 'tenants.json');
    daemon = await startDaemon(baseConfig());
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  describe('configuration', () => {
    it('names the bad field in every error', () => {
      const bad = (raw: unknown, pattern: RegExp) => {
        assert.throws(
          () => parseConfig(raw),
          (error: unknown) => error instanceof GpunixError && error.code === 'GPUNIX_E_BAD_CONFIG' && pattern.test(error.message),
          `expected ${pattern}`,
        );
      };
      bad({ tenants: { alice: { tokenHash: hashToken('x'), memoryLimit: 'lots' } } }, /tenants\.alice\.memoryLimit: not a byte count/);
      bad({ tenants: { alice: { tokenHash: 'plain-text-token' } } }, /tenants\.alice\.tokenHash: must be "sha256:"/);
      bad({ tenants: { alice: { tokenHash: hashToken('x'), priorities: ['urgent'] } } }, /tenants\.alice\.priorities\.0/);
      bad({ tenants: { 'no spaces': { tokenHash: hashToken('x') } } }, /tenants\.no spaces/);
      bad({ tcp: { port: 7000 } }, /tcp\.tls: TCP needs tls/);
      bad({ kernel: { maxInFlight: 0 } }, /kernel\.maxInFlight/);
      bad({ socketMode: '999' }, /socketMode/);
      bad({ logLevel: 'debug' }, /\(top level\): unknown field "logLevel"/);
      bad({ log: { level: 'loud' } }, /log\.level/);
      const config = parseConfig({ socket: '/x/y.sock', socketMode: '0600', tcp: { port: 0, insecure: true }, tenants: { a: { tokenHash: hashToken('a'), memoryLimit: '1G' } } });
      assert.equal(config.socketMode, 0o600);
      assert.equal(config.tenants.a.memoryLimit, 1024 ** 3);
      assert.equal(config.imageDir, '/x/images');
    });

    it('reads a JSON file, naming the file in its errors', () => {
      const file = join(dir, 'bad.json');
      writeFileSync(file, '{ "tenants": { "bob": { "tokenHash": 3 } } }');
      assert.throws(() => loadConfigFile(file), (e: unknown) => e instanceof GpunixError && e.message.includes(file) && /tenants\.bob\.tokenHash/.test(e.message));
      writeFileSync(file, '{ nope');
      assert.throws(() => loadConfigFile(file), /not JSON/);
      writeFileSync(file, JSON.stringify({ socket: '/s.sock', drainTimeoutMs: 5 }));
      assert.equal(loadConfigFile(file, { socket: '/t.sock' }).socket, '/t.sock');
    });

    it('makes the socket with the configured mode, and refuses a socket another daemon answers on', async () => {
      const { statSync } = await import('node:fs');
      assert.equal(statSync(socket).mode & 0o777, 0o660);
      await rejectsWith(startDaemon({ ...baseConfig(), metrics: undefined }), 'GPUNIX_E_BUSY', 'a second daemon on the same socket');
    });

    it('replaces a stale socket left by a daemon that died', async () => {
      const stale = join(dir, 'stale.sock');
      // A process that listens and is killed leaves its socket file behind.
      const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      assert.ok(existsSync(stale));
      const other = await startDaemon({ socket: stale, log: { level: 'silent' }, adminTokenHash: hashToken(ADMIN) });
      try {
        const session = await Session.open({ socket: stale, token: ADMIN }, { role: 'control' });
        assert.equal(session.welcome.admin, true);
        session.close();
      } finally {
        await other.close('immediate');
      }
      assert.equal(existsSync(stale), false, 'the socket is removed at shutdown');
    });
  });

  describe('tokens', () => {
    it('refuses a wrong or missing token with GPUNIX_E_AUTH', async () => {
      await rejectsWith(control('not-a-token'), 'GPUNIX_E_AUTH', 'wrong token');
      await rejectsWith(control(''), 'GPUNIX_E_AUTH', 'missing token');
      await rejectsWith(Session.open(as('nope'), { role: 'process' }), 'GPUNIX_E_AUTH', 'wrong token, process role');
      assert.equal(daemon.kernel.ps().filter((p) => p.state !== 'exited' && p.tenant !== 'default').length, 0, 'nothing was spawned');
    });

    it('refuses another protocol version', async () => {
      assert.equal(protocolErrorOf(await raw(socket, hello(ALICE, 'control', { version: PROTOCOL_VERSION + 1 }))), 'GPUNIX_E_PROTOCOL_VERSION');
    });

    it('tells the admin and tenants apart', async () => {
      const admin = await control(ADMIN);
      const alice = await control(ALICE);
      assert.deepEqual([admin.welcome.admin, alice.welcome.admin, alice.welcome.tenant, alice.welcome.pid], [true, false, 'alice', 0]);
      admin.close();
      alice.close();
    });
  });

  describe('tenant isolation', () => {
    it('refuses every operation on another tenant\'s process with GPUNIX_E_FORBIDDEN, and shows none of it', async () => {
      const bobs = await daemon.kernel.spawn({ tenant: 'bob', name: 'bob-secret-job' });
      // Give bob's process a device and a dispatch, so it is in the trace.
      await dispatchOnce(bobs.gpu);
      const alice = await control(ALICE);
      const admin = await control(ADMIN);
      try {
        const listed = (await alice.call('ListProcesses', {})) as { processes: Array<{ pid: number; tenant: string }> };
        assert.ok(listed.processes.every((p) => p.tenant === 'alice'), 'alice lists only her processes');
        const pid = bobs.pid;
        const refused: Array<[string, Promise<unknown>]> = [
          ['kill', alice.call('KillProcess', { pid })],
          ['suspend', alice.call('SuspendProcess', { pid, swap: false })],
          ['swap', alice.call('SuspendProcess', { pid, swap: true })],
          ['resume', alice.call('ResumeProcess', { pid })],
          ['renice', alice.call('ReniceProcess', { pid, options: { weight: 5 } })],
          ['trace', alice.call('GetTrace', { pid })],
          ['checkpoint', alice.call('CheckpointProcess', { pid, path: 'stolen.img' })],
          ['migrate', alice.call('MigrateProcess', { pid, device: 'gpu0' })],
        ];
        for (const [what, call] of refused) {
          const error = await rejectsWith(call, 'GPUNIX_E_FORBIDDEN', what);
          assert.doesNotMatch(error.message, /bob/, `${what}: the refusal says nothing about the process`);
        }
        await rejectsWith(alice.call('KillProcess', { pid: 999_999 }), 'GPUNIX_E_NO_SUCH_PROCESS', 'a pid that does not exist');
        assert.equal(bobs.state !== 'exited' && bobs.record().priority === 'normal' && bobs.record().weight === 1, true, 'bob\'s process is untouched');
        const trace = (await alice.call('GetTrace', { pid: 0 })) as { traceEvents: Array<{ tid?: number; args?: { name?: string } }> };
        assert.ok(trace.traceEvents.every((e) => e.tid !== pid && !JSON.stringify(e).includes('bob-secret-job')), 'the trace has none of bob\'s events');
        const memory = (await alice.call('MemoryReport', {})) as { processes: Array<{ pid: number }>; swap: unknown };
        assert.ok(memory.processes.every((p) => p.pid !== pid));
        assert.equal(memory.swap, null);
        const status = JSON.stringify(await alice.call('DaemonStatus', {}));
        assert.doesNotMatch(status, /bob/);
        const tenants = (await alice.call('ListTenants', {})) as { tenants: Array<{ name: string }> };
        assert.deepEqual(tenants.tenants.map((t) => t.name), ['alice']);
        await rejectsWith(alice.call('AddTenant', { name: 'mallory', quota: {} }), 'GPUNIX_E_FORBIDDEN', 'a tenant adding tenants');
        await rejectsWith(alice.call('UpdateTenant', { name: 'alice', quota: { maxProcesses: 100 }, rotateToken: false }), 'GPUNIX_E_FORBIDDEN', 'a tenant raising its quota');
        await rejectsWith(alice.call('RemoveTenant', { name: 'bob' }), 'GPUNIX_E_FORBIDDEN', 'a tenant removing another');

        // The admin sees and controls everything.
        const all = (await admin.call('ListProcesses', {})) as { processes: Array<{ pid: number }> };
        assert.ok(all.processes.some((p) => p.pid === pid));
        const adminTrace = (await admin.call('GetTrace', { pid })) as { traceEvents: Array<{ tid?: number; ph: string }> };
        assert.ok(adminTrace.traceEvents.some((e) => e.tid === pid && e.ph === 'X'), 'the admin gets bob\'s trace');
        assert.equal(((await admin.call('SuspendProcess', { pid, swap: false })) as { state: string }).state, 'suspended');
        assert.equal(((await admin.call('ResumeProcess', { pid })) as { state: string }).state, 'waiting');
        assert.equal(((await admin.call('KillProcess', { pid })) as { reason: string }).reason, 'killed');
      } finally {
        alice.close();
        admin.close();
        await bobs.kill().catch(() => {});
      }
    });

    it('keeps a tenant\'s checkpoint images inside its own directory', async () => {
      const alice = await control(ALICE);
      const own = await daemon.kernel.spawn({ tenant: 'alice', name: 'alice-job' });
      try {
        await rejectsWith(alice.call('CheckpointProcess', { pid: own.pid, path: '/etc/passwd' }), 'GPUNIX_E_FORBIDDEN', 'an absolute path');
        await rejectsWith(alice.call('CheckpointProcess', { pid: own.pid, path: '../bob/x.img' }), 'GPUNIX_E_FORBIDDEN', 'a path out of the directory');
        await own.gpu.requestAdapter().then((a) => a!.requestDevice());
        const written = (await alice.call('CheckpointProcess', { pid: own.pid, path: 'job.img' })) as { path: string; bytes: number };
        assert.equal(written.path, join(dir, 'images', 'alice', 'job.img'));
        assert.ok(existsSync(written.path) && written.bytes > 0);
      } finally {
        alice.close();
        await own.kill();
      }
    });
  });

  describe('quotas', () => {
    it('refuses a process over the tenant\'s process count or priority classes with GPUNIX_E_QUOTA', async () => {
      await rejectsWith(Session.open(as(ALICE), { role: 'process', priority: 'realtime' }), 'GPUNIX_E_QUOTA', 'a priority class the tenant may not use');
      const first = await Session.open(as(ALICE), { role: 'process', priority: 'batch', name: 'first' });
      try {
        assert.ok(first.welcome.pid > 0);
        assert.equal(daemon.kernel.ps().find((p) => p.pid === first.welcome.pid)?.tenant, 'alice');
        await rejectsWith(Session.open(as(ALICE), { role: 'process', name: 'second' }), 'GPUNIX_E_QUOTA', 'over maxProcesses');
        const alice = await control(ALICE);
        await rejectsWith(alice.call('ReniceProcess', { pid: first.welcome.pid, options: { priority: 'realtime' } }), 'GPUNIX_E_QUOTA', 'renice to a forbidden class');
        await rejectsWith(alice.call('ReniceProcess', { pid: first.welcome.pid, options: { priority: 'urgent' } }), 'GPUNIX_E_BAD_OPTION', 'renice to no class');
        assert.equal(((await alice.call('ReniceProcess', { pid: first.welcome.pid, options: { priority: 'normal', weight: 2 } })) as { weight: number }).weight, 2);
        alice.close();
      } finally {
        first.close();
      }
      // A client that goes away takes its process with it, and the quota is free again.
      await eventually('the disconnected client\'s process is killed', () => daemon.kernel.ps().find((p) => p.pid === first.welcome.pid)?.exit?.reason === 'killed');
      const again = await Session.open(as(ALICE), { role: 'process', name: 'again' });
      again.close();
    });

    it('tells a process session when an operator kills its process, then closes it', async () => {
      const session = await Session.open(as(BOB), { role: 'process', name: 'victim' });
      const ended = new Promise<Message>((resolve) => (session.onEvent = resolve));
      const admin = await control(ADMIN);
      await admin.call('KillProcess', { pid: session.welcome.pid });
      admin.close();
      const message = await ended;
      assert.equal(message.name, 'ProcessEnded');
      assert.deepEqual(message.name === 'ProcessEnded' && [message.payload.code, message.payload.reason], [137, 'killed']);
      await session.closed;
    });
  });

  describe('tenants at runtime', () => {
    it('adds, changes and removes tenants without a restart, persisting them (hashes only) to the state file', async () => {
      const admin = await control(ADMIN);
      const added = (await admin.call('AddTenant', { name: 'carol', quota: { memoryLimit: '64M', maxProcesses: 2 } })) as { name: string; token: string; memoryLimit: number };
      assert.equal(added.memoryLimit, 64 * 1024 ** 2);
      assert.match(added.token, /^[0-9a-f]{64}$/);
      await rejectsWith(admin.call('AddTenant', { name: 'dave', quota: { memoryLimit: 'huge' } }), 'GPUNIX_E_BAD_OPTION', 'a bad quota');
      await rejectsWith(admin.call('AddTenant', { name: 'carol', quota: {} }), 'GPUNIX_E_BAD_OPTION', 'a tenant that exists');

      const carol = await control(added.token);
      assert.equal(carol.welcome.tenant, 'carol');
      let state = readFileSync(stateFile, 'utf8');
      assert.ok(!state.includes(added.token), 'the token itself is never stored');
      assert.equal(JSON.parse(state).tenants.carol.tokenHash, hashToken(added.token));

      const updated = (await admin.call('UpdateTenant', { name: 'carol', quota: { maxProcesses: 5 }, rotateToken: true })) as { maxProcesses: number; memoryLimit: number; token: string };
      assert.equal(updated.maxProcesses, 5);
      assert.equal(updated.memoryLimit, 64 * 1024 ** 2, 'fields not given stay');
      await rejectsWith(control(added.token), 'GPUNIX_E_AUTH', 'the rotated-away token');
      (await control(updated.token)).close();

      // Restarting from the same configuration and state file keeps the changes.
      const other = await startDaemon({ ...baseConfig(), socket: join(dir, 'restart.sock'), metrics: undefined });
      try {
        const carolThere = other.kernel.tenants().find((t) => t.name === 'carol');
        assert.equal(carolThere?.maxProcesses, 5);
        const s = await Session.open({ socket: other.socketPath, token: updated.token }, { role: 'control' });
        assert.equal(s.welcome.tenant, 'carol');
        s.close();
      } finally {
        await other.close('immediate');
      }

      const carolProcess = await daemon.kernel.spawn({ tenant: 'carol' });
      const carolClosed = carol.closed;
      await admin.call('RemoveTenant', { name: 'carol' });
      await carolClosed;
      assert.equal(carolProcess.state, 'exited', 'the removed tenant\'s processes are killed');
      await rejectsWith(control(updated.token), 'GPUNIX_E_AUTH', 'a removed tenant\'s token');
      state = readFileSync(stateFile, 'utf8');
      assert.deepEqual(JSON.parse(state).removed, ['carol']);
      assert.equal(JSON.parse(state).tenants.carol, undefined);
      admin.close();
    });
  });

  describe('protocol errors', () => {
    it('closes only the offending session, with a coded ProtocolError', async () => {
      const bystander = await control(BOB);
      assert.equal(protocolErrorOf(await raw(socket, Buffer.from([3, 0, 0, 0, 0xff, 0xff, 0x01]))), 'GPUNIX_E_PROTOCOL_UNKNOWN_MESSAGE', 'an unknown code first');
      assert.equal(protocolErrorOf(await raw(socket, Buffer.from('GET / HTTP/1.1\r\n\r\n'))), 'GPUNIX_E_PROTOCOL_TOO_LARGE', 'garbage (its length field is huge)');
      assert.equal(protocolErrorOf(await raw(socket, encodeFrame('Ping', { req: 1 }))), 'GPUNIX_E_PROTOCOL_OUT_OF_ORDER', 'a first frame that is not Hello');
      const oversize = Buffer.alloc(8);
      oversize.writeUInt32LE(64 * 1024 + 1, 0);
      assert.equal(protocolErrorOf(await raw(socket, hello(BOB), oversize)), 'GPUNIX_E_PROTOCOL_TOO_LARGE', 'a frame over the limit');
      assert.equal(protocolErrorOf(await raw(socket, hello(BOB), Buffer.from([2, 0, 0, 0, 0xee, 0x0e]))), 'GPUNIX_E_PROTOCOL_UNKNOWN_MESSAGE', 'an unknown code');
      assert.equal(protocolErrorOf(await raw(socket, hello(BOB), hello(BOB))), 'GPUNIX_E_PROTOCOL_OUT_OF_ORDER', 'a second Hello');
      assert.equal(
        protocolErrorOf(await raw(socket, hello(BOB), encodeFrame('BufferDestroy', { buffer: 1 }))),
        'GPUNIX_E_PROTOCOL_OUT_OF_ORDER',
        'a process message on a control session',
      );
      assert.equal(
        protocolErrorOf(await raw(socket, hello(BOB, 'process'), encodeFrame('ListProcesses', { req: 1 }))),
        'GPUNIX_E_PROTOCOL_OUT_OF_ORDER',
        'a control message on a process session',
      );
      assert.equal(
        protocolErrorOf(await raw(socket, hello(BOB), encodeFrame('Welcome', { version: 1, session: 1, pid: 0, tenant: 'x', admin: true }))),
        'GPUNIX_E_PROTOCOL_UNKNOWN_MESSAGE',
        'a daemon message sent by a client',
      );
      const truncated = encodeFrame('KillProcess', { req: 1, pid: 1 });
      truncated.writeUInt32LE(truncated.byteLength - 4 - 2, 0);
      assert.equal(protocolErrorOf(await raw(socket, hello(BOB), truncated.subarray(0, truncated.byteLength - 2))), 'GPUNIX_E_PROTOCOL_MALFORMED', 'a truncated field');
      // The bystander's session, and the daemon, carry on.
      assert.equal(await bystander.call('Ping', {}), null);
      assert.ok(Array.isArray(((await bystander.call('ListProcesses', {})) as { processes: unknown[] }).processes));
      bystander.close();
      await eventually('the broken sessions are gone', () => daemon.sessions().handshaking === 0 && daemon.sessions().control === 0);
      assert.ok(daemon.kernel.ps().every((p) => p.state === 'exited' || p.tenant !== 'bob'), 'no broken session left a process behind');
    });
  });

  describe('metrics', () => {
    it('serves the named metrics in the Prometheus text format', async () => {
      const busy = await daemon.kernel.spawn({ tenant: 'bob', name: 'measured' });
      const device = await (await busy.gpu.requestAdapter())!.requestDevice();
      const buffer = device.createBuffer({ size: 4096, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
      device.queue.writeBuffer(buffer, 0, new Uint8Array(4096));
      await device.queue.onSubmittedWorkDone();
      const url = `http://127.0.0.1:${daemon.metricsAddress!.port}`;
      const response = await fetch(`${url}/metrics`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /text\/plain/);
      const text = await response.text();
      for (const name of [
        `gpunix_device_utilization_ratio{device="gpu0",backend="${daemon.kernel.describeDevices()[0].backend}"}`,
        `gpunix_device_memory_budget_bytes{device="gpu0",backend="${daemon.kernel.describeDevices()[0].backend}"}`,
        `gpunix_device_memory_used_bytes{device="gpu0",backend="${daemon.kernel.describeDevices()[0].backend}"}`,
        `gpunix_device_memory_evicted_bytes{device="gpu0",backend="${daemon.kernel.describeDevices()[0].backend}"}`,
        'gpunix_tenant_gpu_time_seconds_total{tenant="bob"}',
        'gpunix_tenant_memory_bytes{tenant="bob"} 4096',
        `gpunix_process_gpu_time_seconds_total{pid="${busy.pid}",tenant="bob",name="measured",device="gpu0"}`,
        `gpunix_process_memory_bytes{pid="${busy.pid}",tenant="bob",name="measured",device="gpu0"} 4096`,
        'gpunix_submission_latency_seconds_bucket{le="+Inf",tenant="bob"}',
        'gpunix_submission_latency_seconds_count{tenant="bob"}',
        'gpunix_sessions{role="process"}',
        'gpunix_watchdog_processes_ended_total 0',
        '# TYPE gpunix_tenant_gpu_time_seconds_total counter',
        '# TYPE gpunix_submission_latency_seconds histogram',
      ]) {
        assert.ok(text.includes(name), `metrics include ${name}`);
      }
      const count = Number(/gpunix_submission_latency_seconds_count\{tenant="bob"\} (\d+)/.exec(text)?.[1]);
      assert.ok(count >= 1, 'bob\'s write was measured');
      assert.equal((await fetch(`${url}/other`)).status, 404);
      await busy.kill();
    });
  });
});

describe('gpunixd shutdown', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gpunixd-stop-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const start = (name: string) => startDaemon({ socket: join(dir, `${name}.sock`), log: { level: 'silent' }, adminTokenHash: hashToken(ADMIN) });

  it('drain: stops accepting, lets processes finish, and kills what is left at the timeout', async () => {
    const daemon = await start('drain');
    const finishing = await daemon.kernel.spawn({ name: 'finishing' });
    const stubborn = await daemon.kernel.spawn({ name: 'stubborn' });
    const session = await Session.open({ socket: daemon.socketPath, token: ADMIN }, { role: 'control' });
    const began = Date.now();
    const closed = daemon.close('drain', 600);
    await new Promise((r) => setTimeout(r, 100));
    await rejectsWith(Session.open({ socket: daemon.socketPath, token: ADMIN }, { role: 'control' }), 'GPUNIX_E_DISCONNECTED', 'a connection during the drain');
    assert.equal(await session.call('Ping', {}), null, 'open sessions carry on during the drain');
    await finishing.exit(0);
    await closed;
    assert.ok(Date.now() - began >= 550, 'the drain waited for its timeout');
    assert.equal((await finishing.wait()).reason, 'normal');
    assert.equal((await stubborn.wait()).reason, 'kernel-shutdown');
    await session.closed;
    assert.equal(existsSync(daemon.socketPath), false);
  });

  it('drain ends as soon as the last process has', async () => {
    const daemon = await start('quick');
    const only = await daemon.kernel.spawn({ name: 'only' });
    const began = Date.now();
    const closed = daemon.close('drain', 10_000);
    setTimeout(() => void only.exit(0), 100);
    await closed;
    assert.ok(Date.now() - began < 3000, `drained in ${Date.now() - began} ms`);
    assert.equal((await only.wait()).reason, 'normal');
  });

  it('immediate: kills everything at once and tells the process sessions', async () => {
    const daemon = await start('now');
    const session = await Session.open({ socket: daemon.socketPath, token: ADMIN }, { role: 'process', name: 'p' });
    const ended = new Promise<Message>((resolve) => (session.onEvent = resolve));
    const began = Date.now();
    await daemon.close('immediate');
    assert.ok(Date.now() - began < 2000);
    const message = await ended;
    assert.equal(message.name === 'ProcessEnded' && message.payload.reason, 'kernel-shutdown');
    await session.closed;
    await daemon.close('immediate'); // idempotent
  });

  it('refuses a socket path that is not a socket', async () => {
    const file = join(dir, 'plain-file');
    writeFileSync(file, 'x');
    await rejectsWith(startDaemon({ socket: file, log: { level: 'silent' } }), 'GPUNIX_E_BAD_CONFIG');
  });

  it('serves TLS over TCP with the configured certificate', async () => {
    // A fixed self-signed certificate (test/fixtures/tls): no openssl needed where the test runs.
    const fixtures = fileURLToPath(new URL('../../test/fixtures/tls/', import.meta.url));
    const cert = join(fixtures, 'localhost-cert.pem');
    const key = join(fixtures, 'localhost-key.pem');
    const daemon = await startDaemon({ socket: join(dir, 'tls.sock'), log: { level: 'silent' }, adminTokenHash: hashToken(ADMIN), tcp: { host: '127.0.0.1', port: 0, tls: { cert, key } } });
    try {
      const url = `tls://127.0.0.1:${daemon.tcpAddress!.port}`;
      const session = await Session.open({ url, token: ADMIN, ca: readFileSync(cert), servername: 'localhost' }, { role: 'control' });
      assert.equal(session.welcome.admin, true);
      session.close();
      await rejectsWith(Session.open({ url, token: ADMIN, servername: 'localhost' }, { role: 'control' }), 'GPUNIX_E_DISCONNECTED', 'a client that does not trust the certificate');
    } finally {
      await daemon.close('immediate');
    }
  });

  it('serves plain TCP when insecure is set', async () => {
    const daemon = await startDaemon({ socket: join(dir, 'tcp.sock'), log: { level: 'silent' }, adminTokenHash: hashToken(ADMIN), tcp: { host: '127.0.0.1', port: 0, insecure: true } });
    try {
      const session = await Session.open({ url: `tcp://127.0.0.1:${daemon.tcpAddress!.port}`, token: ADMIN }, { role: 'control' });
      assert.equal(session.welcome.admin, true);
      session.close();
    } finally {
      await daemon.close('immediate');
    }
  });
});

// Defects found in review: each test fails without its fix.
describe('gpunixd robustness', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunixd-robust-'));
    socket = join(dir, 'd.sock');
    daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      adminTokenHash: hashToken(ADMIN),
      imageDir: join(dir, 'images'),
      tenants: { alice: { tokenHash: hashToken(ALICE) } },
    });
  });
  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops reading from a peer whose replies back up, and reads on once they have gone out', async () => {
    const path = join(dir, 'wire.sock');
    const accepted = new Promise<Socket>((resolve) => {
      const server = createNetServer((s) => {
        server.close();
        resolve(s);
      }).listen(path);
    });
    const peer = netConnect({ path });
    peer.pause(); // a peer that does not read
    const serverSide = await accepted;
    const wire = new Wire(serverSide, { message: () => {}, protocolError: () => {}, closed: () => {} }, 1 << 20, 256 * 1024);
    const data = new Uint8Array(64 * 1024);
    for (let i = 0; i < 64 && !wire.isHeld('output'); i++) wire.send('ReplyData', { req: i, result: null, data });
    assert.ok(wire.isHeld('output'), 'reading stops once over 256 KiB wait for the peer');
    assert.ok(serverSide.isPaused());
    peer.resume(); // the peer reads again: the replies go out, and so does the hold
    await eventually('the hold is released', () => !wire.isHeld());
    assert.equal(serverSide.isPaused(), false);
    peer.destroy();
    wire.destroy();
  });

  it('reads no more than has arrived while a process session\'s process is being made', async () => {
    // 150k pipelined Pings behind Hello: more than the daemon would queue before Welcome, had it
    // gone on reading while the process was made. Paused instead, it answers every one.
    const count = 150_000;
    const ping = encodeFrame('Ping', { req: 7 });
    const sock = netConnect({ path: socket });
    await new Promise<void>((resolve) => sock.once('connect', resolve));
    const decoder = new FrameDecoder();
    let replies = 0;
    const names = new Set<string>();
    sock.on('data', (chunk: Buffer) => {
      for (const m of decoder.push(chunk)) {
        names.add(m.name);
        if (m.name === 'Reply') replies++;
      }
    });
    // A slow spawn (a restore of a large image takes a while): the client's Pings arrive meanwhile.
    const kernel = daemon.kernel as { spawn: Daemon['kernel']['spawn'] };
    const spawn = kernel.spawn;
    kernel.spawn = async (options) => {
      await new Promise((r) => setTimeout(r, 400));
      return spawn.call(daemon.kernel, options);
    };
    try {
      sock.write(Buffer.concat([hello(ALICE, 'process'), Buffer.concat(Array(count).fill(ping))]));
      await eventually('the process exists', () => daemon.sessions().process === 1);
    } finally {
      kernel.spawn = spawn;
    }
    await eventually(`every Ping is answered (${replies} so far; got ${[...names].join(', ')})`, () => replies === count || names.has('ProtocolError'), 20_000);
    assert.ok(!names.has('ProtocolError'), 'no ProtocolError');
    sock.destroy();
    await eventually('the session is gone', () => daemon.sessions().process === 0);
  });

  it('refuses tenant names that would share or leave the image directory', async () => {
    for (const name of ['..', '.', '__proto__']) {
      assert.throws(
        () => parseConfig({ tenants: { [name]: { tokenHash: hashToken('x') } } }),
        (error: unknown) => error instanceof GpunixError && error.code === 'GPUNIX_E_BAD_CONFIG' && /tenants\./.test(error.message),
        `config tenant ${name}`,
      );
    }
    assert.throws(() => parseConfig({ anonymousTenant: '..' }), /anonymousTenant/);
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    try {
      for (const name of ['..', '.', '__proto__']) await rejectsWith(admin.call('AddTenant', { name, quota: {} }), 'GPUNIX_E_BAD_OPTION', `AddTenant ${name}`);
      assert.ok(daemon.kernel.tenants().every((t) => !['..', '.', '__proto__'].includes(t.name)));
    } finally {
      admin.close();
    }
    // And were there one: its image directory would be imageDir's parent, holding every tenant's images.
    assert.throws(() => imagePath({ tenant: '..', admin: false }, join(dir, 'images'), 'images/alice/job.img'), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_FORBIDDEN');
    assert.throws(() => imagePath({ tenant: '.', admin: false }, join(dir, 'images'), 'alice/job.img'), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_FORBIDDEN');
  });

  it('does not follow a symbolic link out of a tenant\'s image directory', async () => {
    const own = join(dir, 'images', 'alice');
    const outside = join(dir, 'outside');
    mkdirSync(own, { recursive: true });
    mkdirSync(outside, { recursive: true });
    symlinkSync(outside, join(own, 'out'));
    symlinkSync(join(outside, 'planted.img'), join(own, 'dangling.img'));
    writeFileSync(join(outside, 'secret.img'), 'not yours');
    const alice = await Session.open({ socket, token: ALICE }, { role: 'control' });
    const job = await daemon.kernel.spawn({ tenant: 'alice', name: 'job' });
    try {
      await job.gpu.requestAdapter().then((a) => a!.requestDevice());
      await rejectsWith(alice.call('CheckpointProcess', { pid: job.pid, path: 'out/x.img' }), 'GPUNIX_E_FORBIDDEN', 'through a linked directory');
      await rejectsWith(alice.call('CheckpointProcess', { pid: job.pid, path: 'dangling.img' }), 'GPUNIX_E_FORBIDDEN', 'through a dangling link');
      assert.equal(existsSync(join(outside, 'x.img')) || existsSync(join(outside, 'planted.img')), false, 'nothing was written outside');
      await rejectsWith(Session.open({ socket, token: ALICE }, { role: 'process', options: { restoreImage: 'out/secret.img' } }), 'GPUNIX_E_FORBIDDEN', 'restoring through a link');
      // A real subdirectory is fine.
      const written = (await alice.call('CheckpointProcess', { pid: job.pid, path: 'runs/ok.img' })) as { path: string };
      assert.equal(written.path, join(own, 'runs', 'ok.img'));
    } finally {
      alice.close();
      await job.kill().catch(() => {});
    }
  });

  it('refuses an overlong process name, which every listing would carry', async () => {
    await rejectsWith(Session.open({ socket, token: ALICE }, { role: 'process', name: 'x'.repeat(10_000) }), 'GPUNIX_E_BAD_OPTION', 'a 10k-character name');
    const refused = await raw(socket, hello(ALICE, 'process', { priority: 'p'.repeat(100_000) }));
    assert.equal(refused.at(-1)?.name, 'ProtocolError');
    assert.ok(refused.at(-1)!.name === 'ProtocolError' && (refused.at(-1)!.payload as { message: string }).message.length < 300, 'the bad value is not echoed back whole');
  });

  it('reports a queue.writeBuffer with an offset out of range to the program, as WebGPU would', async () => {
    const session = await Session.open({ socket, token: ALICE }, { role: 'process' });
    try {
      const events: Message[] = [];
      session.onEvent = (m) => events.push(m);
      await session.call('RequestAdapter', { adapter: 1, options: {} });
      await session.call('RequestDevice', { adapter: 1, device: 2, queue: 3, descriptor: {} });
      session.post('CreateBuffer', { device: 2, id: 4, descriptor: { size: 16, usage: GPUBufferUsage.COPY_DST } });
      for (const offset of [Number.NaN, -4, 2 ** 60]) session.post('QueueWriteBuffer', { queue: 3, buffer: 4, offset, data: new Uint8Array(4) });
      assert.equal(await session.call('Ping', {}), null);
      const errors = events.filter((m) => m.name === 'UncapturedError');
      assert.equal(errors.length, 3, `one uncaptured TypeError per bad write, got ${JSON.stringify(events)}`);
      assert.ok(errors.every((m) => m.name === 'UncapturedError' && /^TypeError: /.test(m.payload.message) && m.payload.device === 2));
    } finally {
      session.close();
    }
  });
});

describe('the client session', () => {
  it('gives up with GPUNIX_E_DISCONNECTED when the peer accepts but never answers the handshake', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-silent-'));
    const path = join(dir, 'silent.sock');
    const held: Socket[] = [];
    const silent = createNetServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(path, resolve));
    try {
      const started = Date.now();
      const error = await rejectsWith(Session.open({ socket: path, handshakeTimeoutMs: 200 }, { role: 'control' }), 'GPUNIX_E_DISCONNECTED');
      assert.match(error.message, /did not answer the handshake within 200 ms/);
      assert.ok(Date.now() - started < 5000);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('per-tenant session limit', () => {
  it('refuses a tenant its session beyond maxSessionsPerTenant with GPUNIX_E_QUOTA, sparing other tenants and the admin', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunixd-sessions-'));
    const socket = join(dir, 'd.sock');
    const daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      adminTokenHash: hashToken(ADMIN),
      tenants: { alice: { tokenHash: hashToken(ALICE) }, bob: { tokenHash: hashToken(BOB) } },
      maxSessionsPerTenant: 2,
    });
    const open = (token: string) => Session.open({ socket, token }, { role: 'control' });
    try {
      const held = [await open(ALICE), await open(ALICE)];
      await rejectsWith(open(ALICE), 'GPUNIX_E_QUOTA', "alice's third session");
      const others = [await open(BOB), await open(ADMIN), await open(ADMIN), await open(ADMIN)];
      held[0].close();
      await held[0].closed;
      let again: Session | null = null;
      for (let attempt = 0; attempt < 50 && !again; attempt++) {
        again = await open(ALICE).catch(() => null);
        if (!again) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(again, 'a freed slot can be used again');
      for (const s of [held[1], again!, ...others]) s.close();
    } finally {
      await daemon.close('immediate');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
