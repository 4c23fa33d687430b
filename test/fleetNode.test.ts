// The fleet's node side (src/fleet/nodeAgent.ts) against a real etcd and real gpunixd processes:
// the test plays the scheduler by writing Binding keys and reads what the node writes (NodeRecord,
// MemberStatus, CheckpointRecord), and checks the daemon's kernel through an admin control session.

import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Session } from '../src/client/session.js';
import { ErrorCodes, GpunixError } from '../src/errors.js';
import type { Binding, CheckpointRecord, MemberStatus, NodeRecord } from '../src/fleet/records.js';
import { HOST_ALLOWANCE_PER_MEMBER } from '../src/fleet/nodeAgent.js';
import { FleetStore } from '../src/fleet/store.js';
import type { ProcessRecord } from '../src/kernel/proc.js';
import { EtcdCluster, startEtcd } from './etcdCluster.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const programs = join(root, 'test/programs');
const ADMIN = randomBytes(32).toString('hex');
const hashOf = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns something other than undefined/false; fails naming `what` (and the node's log) after `timeoutMs`. */
async function until<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000, context?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value as T;
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}${context ? `\n${context()}` : ''}`);
    await sleep(100);
  }
}

/** The hex id of the lease `key` is under (etcdctl; the JSON's int64 is read as text: it exceeds a double's precision), or null. */
function leaseOfKey(endpoint: string, key: string): string | null {
  const got = spawnSync('etcdctl', ['--endpoints', endpoint, 'get', key, '-w', 'json'], { encoding: 'utf8' });
  const lease = /"lease":(\d+)/.exec(got.stdout)?.[1];
  return lease && lease !== '0' ? BigInt(lease).toString(16) : null;
}

/** A gpunixd child process with a fleet section. */
interface TestNode {
  name: string;
  child: ChildProcess;
  socket: string;
  dir: string;
  workDir: string;
  log(): string;
  exited: Promise<void>;
}

/** More for one node: `fleet` fields, top-level config fields, the daemon's environment additions. */
interface NodeExtras {
  fleet?: Record<string, unknown>;
  config?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** The node directory's mode (e.g. 0o755 so that a member run as another user reaches the socket). */
  dirMode?: number;
}

async function startNode(etcd: EtcdCluster, prefix: string, name: string, leaseTtlSeconds: number, waitFor = 'joined the fleet', devices = 1, extras: NodeExtras = {}): Promise<TestNode> {
  const dir = mkdtempSync(join(tmpdir(), `gpunix-fleetnode-${name}-`));
  if (extras.dirMode !== undefined) chmodSync(dir, extras.dirMode);
  const socket = join(dir, 'gpunixd.sock');
  const workDir = join(dir, 'work');
  const config = {
    socket,
    imageDir: join(dir, 'images'),
    adminTokenHash: hashOf(ADMIN),
    log: { level: 'info' },
    drainTimeoutMs: 5_000,
    kernel: { devices },
    fleet: { etcd: { endpoints: etcd.endpoints, prefix }, node: name, labels: { zone: 'z1' }, leaseTtlSeconds, workDir, ...extras.fleet },
    ...extras.config,
  };
  const configPath = join(dir, 'gpunixd.json');
  writeFileSync(configPath, JSON.stringify(config));
  const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'daemon', '--config', configPath], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...extras.env } });
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const node: TestNode = { name, child, socket, dir, workDir, log: () => log, exited };
  await until(`the node logs "${waitFor}"`, () => log.includes(waitFor) || (child.exitCode !== null ? assert.fail(`gpunixd exited: ${log}`) : false), 60_000);
  return node;
}

async function stopNode(node: TestNode, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
  if (node.child.exitCode === null && node.child.signalCode === null) node.child.kill(signal);
  await node.exited;
}

/** One request on an admin control session of `node`'s daemon. */
async function control<T>(node: TestNode, name: 'ListProcesses' | 'MemoryReport' | 'ListTenants' | 'Ping' | 'AddTenant', payload: Record<string, unknown> = {}): Promise<T> {
  const session = await Session.open({ socket: node.socket, token: ADMIN }, { role: 'control' });
  try {
    return (await session.call(name, payload as never)) as T;
  } finally {
    session.close();
  }
}

describe('fleet node (gpunixd with a fleet section)', () => {
  let etcd: EtcdCluster;
  let store: FleetStore;
  let node: TestNode;
  const prefix = `/t-${randomBytes(4).toString('hex')}/`;
  const checkpointDir = mkdtempSync(join(tmpdir(), 'gpunix-fleetnode-images-'));
  const nodes: TestNode[] = [];
  /** fleet-counter.mjs's checksum after 40 steps (computed on the CPU). */
  let expected40: number;

  const bind = async (job: string, member: number, program: string, args: string[], extra: Partial<Binding> = {}): Promise<Binding> => {
    const binding: Binding = { job, member, generation: 1, device: 0, tenant: 'lab', class: 'normal', share: 0.5, memory: 16 << 20, program: join(programs, program), args, desired: 'run', ...extra };
    await store.put(store.keys.binding(node.name, job, member), binding);
    return binding;
  };
  const statusOf = async (job: string, member = 0) => (await store.get<MemberStatus>(store.keys.status(job, member)))?.value;
  const memberLog = (job: string, member = 0) => {
    const path = join(node.workDir, job, `${member}.log`);
    return existsSync(path) ? readFileSync(path, 'utf8') : '';
  };
  const ended = (job: string, member = 0) =>
    until(`member ${job}/${member} ends`, async () => {
      const status = await statusOf(job, member);
      return status && (status.state === 'exited' || status.state === 'failed') ? status : undefined;
    }, 90_000, () => `member log: ${memberLog(job, member)}\nnode log tail: ${node.log().slice(-3000)}`);
  const processOf = async (job: string, member = 0) => (await control<{ processes: ProcessRecord[] }>(node, 'ListProcesses')).processes.find((p) => p.name === `${job}.${member}` && p.tenant === `fleet.${job}`);

  before(async () => {
    etcd = await startEtcd();
    store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
    // Two devices (lavapipe twice): members must land on the one their binding names.
    node = await startNode(etcd, prefix, 'n1', 2, 'joined the fleet', 2, { env: { GPUNIX_TEST_SECRET: 'etcd-password' } });
    nodes.push(node);
    const { expectedChecksum } = (await import(pathToFileURL(join(programs, 'fleet-counter.mjs')).href)) as { expectedChecksum(steps: number): number };
    expected40 = expectedChecksum(40);
  });

  after(async () => {
    for (const n of nodes) await stopNode(n, 'SIGKILL');
    store?.close();
    await etcd?.stop();
    for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
    rmSync(checkpointDir, { recursive: true, force: true });
  });

  it('registers the node with its devices, labels and address under a lease', async () => {
    const record = (await store.get<NodeRecord>(store.keys.node('n1')))?.value;
    assert.ok(record, 'nodes/n1 exists');
    assert.equal(record.name, 'n1');
    assert.deepEqual(record.labels, { zone: 'z1' });
    assert.equal(record.health, 'ready');
    assert.equal(record.address.socket, node.socket);
    assert.equal(record.devices.length, 2);
    assert.deepEqual(record.devices.map((d) => d.index), [0, 1]);
    const device = record.devices[0];
    assert.equal(device.index, 0);
    assert.ok(device.backend && device.name && device.featureLevel, JSON.stringify(device));
    assert.ok(device.memoryBudget > 0 && device.maxBufferSize > 0 && device.maxStorageBufferBindingSize > 0, JSON.stringify(device));
    assert.equal(record.used.length, record.devices.length);
    // Its incarnation is the lease it registered under.
    const lease = leaseOfKey(etcd.endpoints[0], `${prefix}nodes/n1`);
    assert.ok(record.incarnation && lease);
    assert.equal(BigInt(record.incarnation).toString(16), lease);
  });

  it('a second daemon with the same node name is refused (logged) and keeps retrying; the first stays registered', async () => {
    const before = (await store.get<NodeRecord>(store.keys.node('n1')))!.value;
    const twin = await startNode(etcd, prefix, 'n1', 2, 'is taken');
    nodes.push(twin);
    // Stopped before any assertion can fail: a twin left retrying would take nodes/n1 when n1's lease goes.
    const log = twin.log();
    await stopNode(twin, 'SIGTERM');
    assert.match(log, /node name \\"n1\\" is taken.*cannot register the node in the fleet; retrying/);
    const after = (await store.get<NodeRecord>(store.keys.node('n1')))!.value;
    assert.equal(after.incarnation, before.incarnation, 'the first node still holds nodes/n1');
  });

  it('ignores a binding made for another incarnation; runs members with a reduced environment; refuses `tenants add fleet.*`', async () => {
    const { incarnation } = (await store.get<NodeRecord>(store.keys.node('n1')))!.value;
    await bind('j-stale', 0, 'counter.mjs', ['full'], { incarnation: '1' });
    await bind('j-env', 0, 'fleet-env.mjs', [], { incarnation });
    const status = await ended('j-env');
    assert.equal(status.exitCode, 0, `${JSON.stringify(status)} ${memberLog('j-env')}`);
    // The daemon was started with GPUNIX_TEST_SECRET in its environment: the member does not see it.
    const env = /^env (.*)$/m.exec(memberLog('j-env'))?.[1].split(' ') ?? [];
    assert.ok(env.includes('GPUNIX_TOKEN') && env.includes('PATH'), env.join(' '));
    assert.ok(!env.includes('GPUNIX_TEST_SECRET'), `the daemon's other variables stay out: ${env.join(' ')}`);
    assert.equal(await statusOf('j-stale'), undefined, 'the stale binding was not run');
    assert.match(node.log(), /ignoring a binding made for an earlier life of this node/);
    await store.delete(store.keys.binding('n1', 'j-stale', 0));
    await store.delete(store.keys.binding('n1', 'j-env', 0));
    await assert.rejects(control(node, 'AddTenant', { name: 'fleet.x', quota: {} }), (error: GpunixError) => error.code === ErrorCodes.BAD_OPTION && /reserved for the fleet node/.test(error.message));
  });

  it('runs a bound member to completion: counter.mjs full ends exited 0 with its checksum in its log', async () => {
    await bind('j-full', 0, 'counter.mjs', ['full']);
    const status = await ended('j-full');
    assert.equal(status.state, 'exited', JSON.stringify(status));
    assert.equal(status.exitCode, 0);
    assert.equal(status.node, 'n1');
    assert.equal(status.generation, 1);
    assert.ok(typeof status.pid === 'number');
    assert.match(memberLog('j-full'), /checksum \d+/);
    // The member ran as its job's tenant, weight = share.
    const record = await processOf('j-full');
    assert.ok(record, 'its kernel process is in the table');
    assert.equal(record.pid, status.pid);
    // Binding deleted: the status goes, and so does the job's tenant.
    await store.delete(store.keys.binding('n1', 'j-full', 0));
    await until('the status of an unbound member is deleted', async () => (await statusOf('j-full')) === undefined);
  });

  it('suspends a member with swap when told, and resumes it to the exact result', async () => {
    const binding = await bind('j-susp', 0, 'fleet-counter.mjs', ['40', '150']);
    await until('the member runs', async () => (await statusOf('j-susp'))?.state === 'running' && memberLog('j-susp').includes('started at step 0'));
    await sleep(500);
    await store.put(store.keys.binding('n1', 'j-susp', 0), { ...binding, desired: 'suspend' });
    const suspended = await until('the member is suspended', async () => {
      const status = await statusOf('j-susp');
      return status?.state === 'suspended' ? status : undefined;
    });
    const record = await processOf('j-susp');
    assert.equal(record?.state, 'suspended');
    // Its job's tenant: weight = share, memory limit = memory (+ the host allowance), its class only.
    const { tenants } = await control<{ tenants: Array<{ name: string; weight: number; memoryLimit: number | null; priorities: string[]; maxProcesses: number | null }> }>(node, 'ListTenants');
    const tenant = tenants.find((t) => t.name === 'fleet.j-susp');
    assert.ok(tenant, 'the job has its own tenant');
    assert.equal(tenant.weight, 0.5);
    assert.equal(tenant.memoryLimit, (16 << 20) + HOST_ALLOWANCE_PER_MEMBER);
    assert.deepEqual(tenant.priorities, ['normal']);
    assert.equal(tenant.maxProcesses, 1);
    assert.equal(record.memoryLimit, 16 << 20, "the member's process has exactly its memory");
    // Swapped out: it holds no device memory (what its program touched after the swap is swapped
    // out again), and the node's `used` says so.
    let memory: unknown;
    await until('the suspended member holds no device memory', async () => {
      const report = await control<{ processes: Array<{ pid: number; residentBytes: number; evictedBytes: number }> }>(node, 'MemoryReport');
      memory = report.processes.find((p) => p.pid === suspended.pid);
      const swapped = report.processes.find((p) => p.pid === suspended.pid);
      return swapped !== undefined && swapped.residentBytes === 0 && swapped.evictedBytes > 0;
    }, 20_000, () => JSON.stringify(memory));
    await until('the node publishes the freed memory', async () => (await store.get<NodeRecord>(store.keys.node('n1')))?.value.used[0].bytes === 0, 20_000, () => JSON.stringify(memory));
    await store.put(store.keys.binding('n1', 'j-susp', 0), { ...binding, desired: 'run' });
    await until('the member runs again', async () => (await statusOf('j-susp'))?.state !== 'suspended');
    const status = await ended('j-susp');
    assert.equal(status.exitCode, 0, JSON.stringify(status));
    assert.ok((status.gpuTimeMs ?? 0) > 0, 'its GPU time is reported');
    assert.ok(memberLog('j-susp').includes(`checksum ${expected40}`), memberLog('j-susp'));
    await store.delete(store.keys.binding('n1', 'j-susp', 0));
  });

  it('enforces the memory limit: a member over its memory gets out-of-memory alone', async () => {
    const mib = 1 << 20;
    // Both at once on one node and device: one asks 4 MiB with memory 2 MiB, one exactly its 2 MiB.
    await bind('j-over', 0, 'node-alloc.mjs', [String(4 * mib), '0'], { memory: 2 * mib });
    await bind('j-fits', 0, 'node-alloc.mjs', [String(2 * mib), '3000'], { memory: 2 * mib });
    const over = await ended('j-over');
    const fits = await ended('j-fits');
    assert.equal(over.exitCode, 2, `${JSON.stringify(over)} ${memberLog('j-over')}`);
    assert.match(memberLog('j-over'), /out-of-memory/);
    assert.equal(fits.exitCode, 0, `${JSON.stringify(fits)} ${memberLog('j-fits')}`);
    assert.match(memberLog('j-fits'), new RegExp(`allocated ${2 * mib}`));
    await store.delete(store.keys.binding('n1', 'j-over', 0));
    await store.delete(store.keys.binding('n1', 'j-fits', 0));
  });

  it('checkpoints a member periodically, and a member bound with restoreFrom resumes from the image', async () => {
    // A member whose record already holds a newer generation (it was rebound elsewhere): never overwritten.
    const newer: CheckpointRecord = { path: '/elsewhere/j-ckold.g5.gpimg', generation: 5, at: 1 };
    await store.put(store.keys.checkpoint('j-ckold', 0), newer);
    await bind('j-ckold', 0, 'fleet-counter.mjs', ['40', '150'], { checkpoint: { intervalMs: 500, dir: checkpointDir } });
    await bind('j-ckpt', 0, 'fleet-counter.mjs', ['40', '150'], { checkpoint: { intervalMs: 500, dir: checkpointDir } });
    const first = await until('a checkpoint is recorded', async () => (await store.get<CheckpointRecord>(store.keys.checkpoint('j-ckpt', 0)))?.value);
    assert.equal(first.generation, 1);
    const later = await until('a later checkpoint is recorded', async () => {
      const record = (await store.get<CheckpointRecord>(store.keys.checkpoint('j-ckpt', 0)))?.value;
      return record && record.path !== first.path ? record : undefined;
    });
    // The node deletes the binding's member ("the node died", as the scheduler sees it): killed, status gone.
    await store.delete(store.keys.binding('n1', 'j-ckpt', 0));
    await until('the unbound member is gone', async () => (await statusOf('j-ckpt')) === undefined && (await processOf('j-ckpt'))?.state !== 'running');
    const record = (await store.get<CheckpointRecord>(store.keys.checkpoint('j-ckpt', 0)))!.value;
    assert.ok(existsSync(record.path), `the recorded image exists: ${record.path}`);
    assert.ok(record.at >= later.at);
    const kept = readdirSync(join(checkpointDir, 'j-ckpt')).filter((f) => f.endsWith('.gpimg'));
    assert.ok(kept.length >= 1 && kept.length <= 2, `at most 2 images kept: ${kept.join(', ')}`);
    // Rebound (generation 2) from the image: it resumes where the image left off.
    await bind('j-ckpt', 0, 'fleet-counter.mjs', ['40', '0'], { generation: 2, restoreFrom: record.path });
    const status = await ended('j-ckpt');
    const log = memberLog('j-ckpt');
    assert.equal(status.exitCode, 0, `${JSON.stringify(status)} ${log}`);
    assert.equal(status.generation, 2);
    const resumedAt = /started at step (\d+) \(restored\)/.exec(log);
    assert.ok(resumedAt && Number(resumedAt[1]) > 0, `restored from a later step: ${log}`);
    assert.ok(log.includes(`checksum ${expected40}`), log);
    await store.delete(store.keys.binding('n1', 'j-ckpt', 0));
    await until('the node declined to record a checkpoint over a newer generation', () => node.log().includes('checkpoint not recorded: a newer generation has one'), 30_000, () => node.log().slice(-3000));
    assert.deepEqual((await store.get<CheckpointRecord>(store.keys.checkpoint('j-ckold', 0)))?.value, newer);
    await store.delete(store.keys.binding('n1', 'j-ckold', 0));
  });

  it('runs a member on the device its binding names; a device the node lacks fails the member with the reason', async () => {
    await bind('j-dev1', 0, 'fleet-counter.mjs', ['40', '150'], { device: 1 });
    let seen: unknown;
    await until('the member runs', async () => (seen = await statusOf('j-dev1'))?.state === 'running' && memberLog('j-dev1').includes('started at step 0'), 60_000, () => `${JSON.stringify(seen)} ${memberLog('j-dev1')}`);
    const listed = (await control<{ processes: Array<ProcessRecord & { devices: string[] }> }>(node, 'ListProcesses')).processes.find((p) => p.name === 'j-dev1.0');
    assert.deepEqual(listed?.devices, ['gpu1']);
    await until('the node publishes a process on device 1', async () => (await store.get<NodeRecord>(store.keys.node('n1')))?.value.used[1].processes === 1);
    assert.equal((await ended('j-dev1')).exitCode, 0);
    await store.delete(store.keys.binding('n1', 'j-dev1', 0));
    await bind('j-nodev', 0, 'counter.mjs', ['full'], { device: 7 });
    const status = await ended('j-nodev');
    assert.equal(status.state, 'failed', JSON.stringify(status));
    assert.match(status.message ?? '', /GPUNIX_E_BAD_OPTION.*no device 7/);
    await store.delete(store.keys.binding('n1', 'j-nodev', 0));
  });

  it('a lost lease kills the members and the node registers afresh, not rerunning them at the same generation', async () => {
    await bind('j-lost', 0, 'fleet-counter.mjs', ['400', '100']);
    const running = await until('the member runs', async () => {
      const status = await statusOf('j-lost');
      return status?.state === 'running' ? status : undefined;
    });
    // Revoke the node's lease behind its back (etcd's own client: FleetStore does not show leases).
    const endpoint = etcd.endpoints[0];
    const lease = leaseOfKey(endpoint, `${prefix}nodes/n1`);
    assert.ok(lease, 'nodes/n1 is under a lease');
    const revoked = spawnSync('etcdctl', ['--endpoints', endpoint, 'lease', 'revoke', lease], { encoding: 'utf8' });
    assert.equal(revoked.status, 0, revoked.stderr);
    await until('the node registers again under a new lease', () => {
      const now = leaseOfKey(endpoint, `${prefix}nodes/n1`);
      return now !== null && now !== lease;
    });
    await until('the member was killed', async () => (await processOf('j-lost'))?.state === 'exited' || (await processOf('j-lost')) === undefined);
    const killed = (await control<{ processes: ProcessRecord[] }>(node, 'ListProcesses')).processes.find((p) => p.pid === running.pid);
    assert.ok(!killed || killed.state === 'exited', 'the old process is not running');
    // Its binding (generation 1) is still there: the node does not start it again...
    await sleep(1500);
    assert.equal(await statusOf('j-lost'), undefined, 'no status for the abandoned generation');
    assert.ok(!(await control<{ processes: ProcessRecord[] }>(node, 'ListProcesses')).processes.some((p) => p.name === 'j-lost.0' && p.state !== 'exited'));
    // ...until the scheduler rebinds it (generation 2).
    await bind('j-lost', 0, 'counter.mjs', ['full'], { generation: 2 });
    const status = await ended('j-lost');
    assert.equal(status.exitCode, 0);
    assert.equal(status.generation, 2);
    await store.delete(store.keys.binding('n1', 'j-lost', 0));
  });

  it("the node's key vanishes after its TTL when the daemon is SIGKILLed, at once when it is stopped", async () => {
    await stopNode(node, 'SIGKILL');
    const killedAt = Date.now();
    await until('nodes/n1 vanishes after the TTL', async () => (await store.get(store.keys.node('n1'))) === null, 30_000);
    console.log(`# SIGKILLed node's key gone after ${Date.now() - killedAt} ms (TTL 2 s)`);
    // A node with a long TTL, stopped: its lease is revoked, so the key goes well before the TTL.
    const slow = await startNode(etcd, prefix, 'n2', 60);
    nodes.push(slow);
    assert.ok(await store.get(store.keys.node('n2')));
    // With a member running: the lease is still revoked (the key must not wait for the 60 s TTL).
    const binding: Binding = { job: 'j-leave', member: 0, generation: 1, device: 0, tenant: 'lab', class: 'normal', share: 0.5, memory: 16 << 20, program: join(programs, 'fleet-counter.mjs'), args: ['400', '100'], desired: 'run' };
    await store.put(store.keys.binding('n2', 'j-leave', 0), binding);
    await until('the member on n2 runs', async () => (await statusOf('j-leave'))?.state === 'running', 60_000, () => slow.log().slice(-3000));
    const stoppedAt = Date.now();
    await stopNode(slow, 'SIGTERM');
    assert.equal(await store.get(store.keys.node('n2')), null, 'nodes/n2 is gone once the daemon has stopped');
    assert.equal(await statusOf('j-leave'), undefined, "its member's status is gone too");
    console.log(`# stopped node's key gone within ${Date.now() - stoppedAt} ms (TTL 60 s)`);
  });
});

describe('fleet node whose etcd is unreachable', () => {
  it('starts and serves while etcd is down, and registers once etcd is back', async (t) => {
    const etcd = await startEtcd();
    const prefix = `/t-${randomBytes(4).toString('hex')}/`;
    let node: TestNode | null = null;
    t.after(async () => {
      if (node) await stopNode(node, 'SIGKILL');
      await etcd.stop();
      if (node) rmSync(node.dir, { recursive: true, force: true });
    });
    await etcd.kill(etcd.members[0]);
    node = await startNode(etcd, prefix, 'n3', 2, 'gpunixd listening');
    assert.equal(await control(node, 'Ping'), null, 'the daemon serves');
    const started = node;
    await until('the node logs that it cannot register', () => started.log().includes('cannot register the node in the fleet'), 30_000, () => started.log());
    await etcd.restart(etcd.members[0]);
    const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
    try {
      const record = await until('the node registers', async () => (await store.get<NodeRecord>(store.keys.node('n3')))?.value, 60_000, () => started.log().slice(-3000));
      assert.equal(record.health, 'ready');
    } finally {
      store.close();
    }
  });
});

describe('fleet node with fleet.runAs', () => {
  it('runs its members as that user (uid/gid 65534), and they still reach the daemon and a device', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('runAs needs the test to run as root');
      return;
    }
    const etcd = await startEtcd();
    const prefix = `/t-${randomBytes(4).toString('hex')}/`;
    let node: TestNode | null = null;
    const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
    t.after(async () => {
      if (node) await stopNode(node, 'SIGKILL');
      store.close();
      await etcd.stop();
      if (node) rmSync(node.dir, { recursive: true, force: true });
    });
    // The socket must let the member's user connect (mode 0666 in a directory it can enter).
    node = await startNode(etcd, prefix, 'n-runas', 2, 'joined the fleet', 1, { fleet: { runAs: { uid: 65534, gid: 65534 } }, config: { socketMode: '0666' }, dirMode: 0o755 });
    const binding: Binding = { job: 'j-runas', member: 0, generation: 1, device: 0, tenant: 'lab', class: 'normal', share: 0.5, memory: 16 << 20, program: join(programs, 'fleet-env.mjs'), args: [], desired: 'run' };
    await store.put(store.keys.binding('n-runas', 'j-runas', 0), binding);
    const started = node;
    const logPath = join(started.workDir, 'j-runas', '0.log');
    const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
    const status = await until('the member ends', async () => {
      const s = (await store.get<MemberStatus>(store.keys.status('j-runas', 0)))?.value;
      return s && (s.state === 'exited' || s.state === 'failed') ? s : undefined;
    }, 90_000, () => `member log: ${log()}\nnode log: ${started.log().slice(-3000)}`);
    assert.equal(status.exitCode, 0, `${JSON.stringify(status)} ${log()}`);
    assert.match(log(), /^uid 65534$/m);
    assert.match(log(), /device ok/);
  });
});
