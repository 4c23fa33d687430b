// The fleet scheduler (src/fleet/scheduler.ts) against a real etcd, with no daemons: the test plays
// the nodes itself — it puts NodeRecords under a lease of its own (as a node would), reads the
// bindings the scheduler writes, and writes MemberStatus and CheckpointRecords. Covered: a gang is
// bound all or nothing (in one revision); only the leader of two replicas binds, and the other
// takes over when the leader stops or dies; reclaim suspends a lower-priority preemptible job and
// resumes it when the higher one ends; a node whose lease is lost has its jobs rebound elsewhere
// (from their checkpoints, restarted, or failed), and so is a member whose status vanishes under
// a node that re-registered; queue limits and reclaim of borrowed quota; cancel; member statuses
// drive phases.

import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { FleetClient } from '../src/fleet/client.js';
import type { Binding, CheckpointRecord, JobRecord, MemberStatus, NodeRecord } from '../src/fleet/records.js';
import { FleetScheduler, SchedulerLog } from '../src/fleet/scheduler.js';
import type { JobSpecInput } from '../src/fleet/spec.js';
import { Entry, FleetStore, StoreLease } from '../src/fleet/store.js';
import { EtcdCluster, startEtcd } from './etcdCluster.js';
import { root, testPrefix, waitFor } from './fleetNodes.js';

/** A scheduler replica in its own process (argv[1]: {root, endpoints, prefix}); prints "leading" once it leads. */
const REPLICA_SCRIPT = `
const { root, endpoints, prefix } = JSON.parse(process.argv[1]);
const { FleetStore } = await import(root + '/dist/src/fleet/store.js');
const { FleetScheduler } = await import(root + '/dist/src/fleet/scheduler.js');
const store = await FleetStore.connect({ endpoints, prefix });
const scheduler = new FleetScheduler(store, { id: 'replica-child', leaseTtlSeconds: 2 });
await scheduler.start();
const timer = setInterval(() => { if (scheduler.isLeader) { console.log('leading'); clearInterval(timer); } }, 20);
`;

const GiB = 1024 ** 3;

/** A node as the test plays it: its record is under its own lease, like a gpunixd's. */
interface PlayedNode {
  name: string;
  lease: StoreLease;
}

describe('fleet scheduler against a real etcd (the test plays the nodes)', () => {
  let etcd: EtcdCluster;
  const stores: FleetStore[] = [];
  const schedulers: FleetScheduler[] = [];
  const children: ChildProcess[] = [];
  const logs: string[] = [];
  const log: SchedulerLog = (level, msg, fields) => {
    if (level !== 'debug' || process.env.FLEET_DEBUG) logs.push(`${level} ${msg} ${fields ? JSON.stringify(fields) : ''}`);
    if (process.env.FLEET_DEBUG) console.log(`# ${level} ${msg} ${fields ? JSON.stringify(fields) : ''}`);
  };

  before(async () => {
    etcd = await startEtcd({ members: 1 });
  });
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const scheduler of schedulers) await scheduler.stop().catch(() => undefined);
    for (const store of stores) store.close();
    await etcd?.stop();
  });

  const connect = async (prefix: string): Promise<FleetStore> => {
    const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
    stores.push(store);
    return store;
  };
  const startScheduler = async (store: FleetStore, id: string, options: { retentionMs?: number } = {}): Promise<FleetScheduler> => {
    const scheduler = new FleetScheduler(store, { id, log, leaseTtlSeconds: 2, resyncMs: 500, ...options });
    schedulers.push(scheduler);
    await scheduler.start();
    return scheduler;
  };
  /** A fresh fleet: its own prefix, store, client and one scheduler replica (leading). */
  const fleet = async (options: { retentionMs?: number } = {}) => {
    const store = await connect(testPrefix());
    const client = new FleetClient(store);
    const scheduler = await startScheduler(store, 'only', options);
    await waitFor('the scheduler leads', () => scheduler.isLeader, 10_000);
    return { store, client, scheduler };
  };

  const addNode = async (store: FleetStore, name: string, options: { devices?: number; labels?: Record<string, string>; incarnation?: string; lease?: StoreLease } = {}): Promise<PlayedNode> => {
    const lease = options.lease ?? (await store.lease(5));
    const devices = options.devices ?? 1;
    const record: NodeRecord = {
      name,
      labels: options.labels ?? {},
      devices: Array.from({ length: devices }, (_, index) => ({ index, name: 'lavapipe', backend: 'vulkan', featureLevel: 'core', memoryBudget: GiB, maxBufferSize: GiB, maxStorageBufferBindingSize: GiB })),
      health: 'ready',
      address: { socket: `/tmp/${name}.sock` },
      used: Array.from({ length: devices }, () => ({ bytes: 0, processes: 0 })),
      startedAt: Date.now(),
      updatedAt: Date.now(),
      ...(options.incarnation ? { incarnation: options.incarnation } : {}),
    };
    await store.put(store.keys.node(name), record, lease);
    return { name, lease };
  };

  const job = async (store: FleetStore, id: string): Promise<Entry<JobRecord>> => (await store.get<JobRecord>(store.keys.job(id)))!;
  const waitJob = (store: FleetStore, id: string, what: string, check: (job: JobRecord) => boolean, timeoutMs = 10_000) =>
    waitFor(`job ${id} ${what}`, async () => {
      const entry = await job(store, id);
      return entry && check(entry.value) ? entry : undefined;
    }, timeoutMs);
  /** Every binding of job `id`, by member, with its node (from the key). */
  const bindingsOf = async (store: FleetStore, id: string): Promise<Array<Entry<Binding> & { node: string }>> => {
    const { entries } = await store.list<Binding>(store.keys.bindings());
    return entries
      .map((entry) => ({ ...entry, node: store.keys.rest(store.keys.bindings(), entry.key).split('/')[0] }))
      .filter((entry) => entry.value.job === id)
      .sort((a, b) => a.value.member - b.value.member);
  };
  /** Plays a node reporting a member's state (under the node's lease, as a node does). */
  const report = async (store: FleetStore, node: PlayedNode, binding: Binding, state: MemberStatus['state'], exitCode?: number) => {
    const status: MemberStatus = { node: node.name, generation: binding.generation, state, ...(exitCode === undefined ? {} : { exitCode }), updatedAt: Date.now() };
    await store.put(store.keys.status(binding.job, binding.member), status, node.lease);
  };
  const spec = (overrides: Partial<JobSpecInput>): JobSpecInput => ({ tenant: 'alice', program: '/shared/prog.mjs', memory: '64M', ...overrides });

  it('binds a gang all or nothing: 2 nodes for a spread gang of 3 leave it pending with a reason; a third node binds all 3 in one revision', async () => {
    const { store, client } = await fleet();
    const nodes = [await addNode(store, 'n1'), await addNode(store, 'n2')];
    const submitted = await client.submit(spec({ gang: 3, share: 0.5, placement: { spread: true } }));
    const pending = await waitJob(store, submitted.id, 'explains why it waits', (j) => j.message !== undefined);
    assert.equal(pending.value.phase, 'pending');
    assert.match(pending.value.message!, /3|2/, `the message says what is missing: ${pending.value.message}`);
    assert.deepEqual(await bindingsOf(store, submitted.id), [], 'no member is bound while the gang does not fit whole');

    nodes.push(await addNode(store, 'n3'));
    const bound = await waitJob(store, submitted.id, 'is bound', (j) => j.phase === 'bound');
    const bindings = await bindingsOf(store, submitted.id);
    assert.equal(bindings.length, 3);
    assert.deepEqual(new Set(bindings.map((b) => b.node)), new Set(['n1', 'n2', 'n3']), 'spread: one member a node');
    assert.ok(bindings.every((b) => b.modRevision === bound.modRevision), 'every binding and the job record were written in one transaction');
    assert.equal(bound.value.generation, 1);
    assert.equal(bound.value.message, undefined, 'the waiting message is cleared');
    assert.equal(typeof bound.value.bindLatencyMs, 'number');
    assert.deepEqual(bound.value.placement.map((p) => p.node), bindings.map((b) => b.node));
    for (const b of bindings) assert.deepEqual([b.value.desired, b.value.generation, b.value.share, b.value.memory, b.value.tenant], ['run', 1, 0.5, 64 * 1024 * 1024, 'alice']);

    // The members report running → the job runs; all exit 0 → it succeeded and its bindings go.
    for (const b of bindings) await report(store, nodes.find((n) => n.name === b.node)!, b.value, 'running');
    await waitJob(store, submitted.id, 'runs', (j) => j.phase === 'running');
    for (const b of bindings) await report(store, nodes.find((n) => n.name === b.node)!, b.value, 'exited', 0);
    await waitJob(store, submitted.id, 'succeeded', (j) => j.phase === 'succeeded');
    assert.deepEqual(await bindingsOf(store, submitted.id), [], 'a finished job has no bindings');
  });

  it('a member that exits non-zero fails the job and ends the others', async () => {
    const { store, client } = await fleet();
    const nodes = [await addNode(store, 'n1', { devices: 2 })];
    const submitted = await client.submit(spec({ gang: 2 }));
    await waitJob(store, submitted.id, 'is bound', (j) => j.phase === 'bound');
    const bindings = await bindingsOf(store, submitted.id);
    await report(store, nodes[0], bindings[0].value, 'running');
    await report(store, nodes[0], bindings[1].value, 'exited', 3);
    const failed = await waitJob(store, submitted.id, 'failed', (j) => j.phase === 'failed');
    assert.match(failed.value.message ?? '', /member 1 exited with code 3/);
    assert.deepEqual(await bindingsOf(store, submitted.id), [], 'every member binding is deleted (the node kills the others)');
  });

  it('of two replicas only the leader binds; when it dies (SIGKILL), and when it stops, another takes over within seconds', async () => {
    const prefix = testPrefix();
    const store = await connect(prefix);
    const client = new FleetClient(store);
    await addNode(store, 'n1');
    // The first leader is a replica in a child process, so that it can die the way a process dies.
    const child = spawn(process.execPath, ['--input-type=module', '-e', REPLICA_SCRIPT, JSON.stringify({ root, endpoints: etcd.endpoints, prefix })], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (data: Buffer) => data.toString().includes('leading') && resolve());
      child.once('exit', (code) => reject(new Error(`the replica process exited (${code}) before it led`)));
    });
    const standby = await startScheduler(store, 'replica-a');
    const first = await client.submit(spec({ share: 0.25 }));
    await waitJob(store, first.id, 'is bound by the leader', (j) => j.phase === 'bound');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(standby.isLeader, false);
    assert.equal(standby.stats().placements, 0, 'the standby binds nothing');

    // Death: SIGKILL; its lease expires after its TTL (2 s) and the standby leads and binds.
    let started = Date.now();
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited; // so that the job below is not bound by the dying leader in its last milliseconds
    const second = await client.submit(spec({ share: 0.25 }));
    await waitJob(store, second.id, 'is bound after the leader died', (j) => j.phase === 'bound', 10_000);
    const failover = Date.now() - started;
    assert.ok(standby.isLeader);
    // The record says bound as soon as etcd applied the commit; the standby counts it when the answer reaches it.
    await waitFor('the standby counts the bind it made', () => standby.stats().placements === 1 || undefined, 5_000);

    // Stop (resign): the leader key goes at once; the next replica leads and binds.
    const next = await startScheduler(await connect(prefix), 'replica-b');
    started = Date.now();
    await standby.stop();
    const third = await client.submit(spec({ share: 0.25 }));
    await waitJob(store, third.id, 'is bound by the new leader', (j) => j.phase === 'bound', 10_000);
    const handover = Date.now() - started;
    assert.ok(next.isLeader);
    console.log(`# scheduler failover: ${failover} ms after the leader was SIGKILLed (lease TTL 2 s); ${handover} ms after it resigned`);
    assert.ok(failover < 10_000 && handover < 10_000);
    // Each new leader started from etcd's state: the device holds 0.75 of what its predecessors bound, so 0.5 more waits.
    const fourth = await client.submit(spec({ share: 0.5 }));
    const waiting = await waitJob(store, fourth.id, 'waits with a reason', (j) => j.message !== undefined);
    assert.equal(waiting.value.phase, 'pending');
    // Nothing was bound twice: each job has one binding, of generation 1.
    for (const id of [first.id, second.id, third.id]) {
      const bindings = await bindingsOf(store, id);
      assert.equal(bindings.length, 1);
      assert.equal(bindings[0].value.generation, 1);
    }
  });

  it('reclaim: a higher-priority job suspends a lower-priority preemptible one, which resumes when the higher one succeeds', async () => {
    const { store, client, scheduler } = await fleet();
    const node = await addNode(store, 'n1');
    const low = await client.submit(spec({ priority: 0, share: 1 }));
    await waitJob(store, low.id, 'is bound', (j) => j.phase === 'bound');
    const [lowBinding] = await bindingsOf(store, low.id);
    await report(store, node, lowBinding.value, 'running');
    await waitJob(store, low.id, 'runs', (j) => j.phase === 'running');

    const high = await client.submit(spec({ priority: 10, share: 1, preemptible: false }));
    const highBound = await waitJob(store, high.id, 'is bound', (j) => j.phase === 'bound');
    const suspended = await job(store, low.id);
    assert.equal(suspended.value.phase, 'suspended');
    assert.equal(suspended.value.suspensions, 1);
    assert.equal(suspended.value.message, `suspended to make room for ${high.id}`);
    const [suspendedBinding] = await bindingsOf(store, low.id);
    assert.equal(suspendedBinding.value.desired, 'suspend', 'the victim is told to swap out, not killed');
    assert.equal(suspendedBinding.value.generation, 1, 'same generation: its process keeps its progress');
    assert.deepEqual(highBound.value.placement, [{ node: 'n1', device: 0 }]);
    assert.equal(scheduler.stats().reclaims, 1);
    await report(store, node, suspendedBinding.value, 'suspended');

    // The high job runs and ends: the low one resumes in place.
    const [highBinding] = await bindingsOf(store, high.id);
    await report(store, node, highBinding.value, 'running');
    await report(store, node, highBinding.value, 'exited', 0);
    await waitJob(store, high.id, 'succeeded', (j) => j.phase === 'succeeded');
    await waitJob(store, low.id, 'resumes', (j) => j.phase === 'bound' || j.phase === 'running');
    const [resumed] = await bindingsOf(store, low.id);
    assert.equal(resumed.value.desired, 'run');
    assert.equal(resumed.node, 'n1');
    await report(store, node, resumed.value, 'running');
    await waitJob(store, low.id, 'runs again', (j) => j.phase === 'running');
  });

  it('queues: a limit keeps a job pending; a queue under its guarantee reclaims from a borrowing queue (newest first)', async () => {
    const { store, client } = await fleet();
    await client.setQueue({ name: 'a', limit: 2 });
    await client.setQueue({ name: 'b', guaranteed: 1 });
    await addNode(store, 'n1', { devices: 2 });
    const a1 = await client.submit(spec({ queue: 'a', share: 1 }));
    await waitJob(store, a1.id, 'is bound', (j) => j.phase === 'bound');
    const a2 = await client.submit(spec({ queue: 'a', share: 1 }));
    await waitJob(store, a2.id, 'is bound (borrowing: queue a guarantees nothing)', (j) => j.phase === 'bound');
    const a3 = await client.submit(spec({ queue: 'a', share: 1 }));
    const limited = await waitJob(store, a3.id, 'waits with a reason', (j) => j.message !== undefined);
    assert.equal(limited.value.phase, 'pending', `over queue a's limit: ${limited.value.message}`);

    const b1 = await client.submit(spec({ queue: 'b', share: 1 }));
    await waitJob(store, b1.id, 'is bound', (j) => j.phase === 'bound');
    const victim = await job(store, a2.id);
    assert.equal(victim.value.phase, 'suspended', 'the newest borrower is suspended');
    assert.equal(victim.value.message, `suspended to make room for ${b1.id}`);
    assert.equal((await job(store, a1.id)).value.phase, 'bound', 'one victim is enough');
    assert.equal((await job(store, a3.id)).value.phase, 'pending');
  });

  it('a node whose lease is lost has its jobs rebound elsewhere: from their checkpoints, restarted, or failed', async () => {
    const { store, client, scheduler } = await fleet();
    const n1 = await addNode(store, 'n1');
    const checkpointed = await client.submit(spec({ share: 0.3, checkpoint: { intervalMs: 1000, dir: '/shared/ckpt' } }));
    const restartable = await client.submit(spec({ share: 0.3 }));
    const fragile = await client.submit(spec({ share: 0.3, restartable: false }));
    for (const id of [checkpointed.id, restartable.id, fragile.id]) await waitJob(store, id, 'is bound', (j) => j.phase === 'bound');
    for (const id of [checkpointed.id, restartable.id, fragile.id]) await report(store, n1, (await bindingsOf(store, id))[0].value, 'running');
    const image = '/shared/ckpt/j/0.g1.3.gpimg';
    const checkpoint: CheckpointRecord = { path: image, generation: 1, at: Date.now() };
    await store.put(store.keys.checkpoint(checkpointed.id, 0), checkpoint);
    await waitJob(store, checkpointed.id, 'runs', (j) => j.phase === 'running');

    await addNode(store, 'n2');
    await n1.lease.revoke(); // the node is gone: its key (and its statuses) vanish with its lease
    const moved = await waitJob(store, checkpointed.id, 'is rebound on n2', (j) => j.phase === 'bound' && j.placement[0]?.node === 'n2');
    assert.equal(moved.value.generation, 2);
    assert.equal(moved.value.restarts, 0, 'restored from its checkpoint: no progress thrown away');
    const [restored] = await bindingsOf(store, checkpointed.id);
    assert.deepEqual([restored.node, restored.value.restoreFrom, restored.value.generation], ['n2', image, 2]);

    const restarted = await waitJob(store, restartable.id, 'is rebound on n2', (j) => j.phase === 'bound' && j.placement[0]?.node === 'n2');
    assert.equal(restarted.value.restarts, 1);
    const [fresh] = await bindingsOf(store, restartable.id);
    assert.equal(fresh.value.restoreFrom, undefined, 'no checkpoint: it starts from the beginning');

    const failed = await waitJob(store, fragile.id, 'fails', (j) => j.phase === 'failed');
    assert.match(failed.value.message ?? '', /not restartable/);
    assert.deepEqual(await bindingsOf(store, fragile.id), []);
    const onDeadNode = (await store.list<Binding>(store.keys.nodeBindings('n1'))).entries;
    assert.deepEqual(onDeadNode, [], 'nothing is left bound to the dead node');
    assert.equal(scheduler.stats().reschedules, 3);
  });

  it('a member whose status vanishes while its node stays (the node re-registered under a new lease) is rebound', async () => {
    const { store, client } = await fleet();
    const node = await addNode(store, 'n1');
    const submitted = await client.submit(spec({ share: 0.5 }));
    await waitJob(store, submitted.id, 'is bound', (j) => j.phase === 'bound');
    const [binding] = await bindingsOf(store, submitted.id);
    // The node's statuses are under an older lease than its record now: that lease ends.
    const oldLease = await store.lease(5);
    await report(store, { name: node.name, lease: oldLease }, binding.value, 'running');
    await waitJob(store, submitted.id, 'runs', (j) => j.phase === 'running');
    await oldLease.revoke();
    const rebound = await waitJob(store, submitted.id, 'is bound again', (j) => j.phase === 'bound' && j.generation === 2);
    assert.equal(rebound.value.restarts, 1, 'no checkpoint: restarted');
    const bindings = await bindingsOf(store, submitted.id);
    assert.deepEqual(bindings.map((b) => b.value.generation), [2], 'only the new generation is bound');
  });

  it('cancel: a bound job loses its bindings and a pending one never binds; both end cancelled', async () => {
    const { store, client } = await fleet();
    await addNode(store, 'n1');
    const bound = await client.submit(spec({ share: 1 }));
    await waitJob(store, bound.id, 'is bound', (j) => j.phase === 'bound');
    const waiting = await client.submit(spec({ share: 1, preemptible: false }));
    await waitJob(store, waiting.id, 'waits with a reason', (j) => j.phase === 'pending' && j.message !== undefined);
    await client.cancel(bound.id);
    await client.cancel(waiting.id);
    await waitJob(store, bound.id, 'is cancelled', (j) => j.phase === 'cancelled');
    await waitJob(store, waiting.id, 'is cancelled', (j) => j.phase === 'cancelled');
    assert.deepEqual(await bindingsOf(store, bound.id), []);
    assert.deepEqual(await bindingsOf(store, waiting.id), []);
  });

  it('a node that restarted (new incarnation) has its jobs rebound, but not while it still reports the earlier member', async () => {
    const { store, client } = await fleet();
    const n1 = await addNode(store, 'n1', { incarnation: 'a' });
    const submitted = await client.submit(spec({ share: 1 }));
    await waitJob(store, submitted.id, 'is bound', (j) => j.phase === 'bound');
    const [first] = await bindingsOf(store, submitted.id);
    assert.equal(first.value.incarnation, 'a', 'the binding names the node incarnation it was made for');
    await report(store, n1, first.value, 'running');
    await waitJob(store, submitted.id, 'runs', (j) => j.phase === 'running');

    // The node comes back as another incarnation (its key never went away), still reporting the old member.
    await addNode(store, 'n1', { incarnation: 'b', lease: n1.lease });
    const waiting = await waitJob(store, submitted.id, 'waits for the old member to stop', (j) => j.phase === 'pending' && /waiting for node n1/.test(j.message ?? ''));
    assert.equal(waiting.value.restarts, 1);
    assert.deepEqual(await bindingsOf(store, submitted.id), [], 'never two copies: nothing is bound while n1 reports generation 1');
    // The node stops the member and deletes its status: the job is bound again, for incarnation b.
    await store.delete(store.keys.status(submitted.id, 0));
    const rebound = await waitJob(store, submitted.id, 'is bound again', (j) => j.phase === 'bound' && j.generation === 2);
    const [second] = await bindingsOf(store, submitted.id);
    assert.deepEqual([second.value.generation, second.value.incarnation, rebound.value.placement[0].node], [2, 'b', 'n1']);
  });

  it('retention: finishing deletes the checkpoints; records of jobs finished longer ago than retentionMs are deleted', async () => {
    const { store, client } = await fleet({ retentionMs: 1_500 });
    const node = await addNode(store, 'n1');
    const submitted = await client.submit(spec({ share: 1, checkpoint: { intervalMs: 1000, dir: '/shared/ckpt' } }));
    await waitJob(store, submitted.id, 'is bound', (j) => j.phase === 'bound');
    const [binding] = await bindingsOf(store, submitted.id);
    await store.put(store.keys.checkpoint(submitted.id, 0), { path: '/shared/ckpt/x.gpimg', generation: 1, at: Date.now() } satisfies CheckpointRecord);
    await report(store, node, binding.value, 'exited', 0);
    await waitJob(store, submitted.id, 'succeeded', (j) => j.phase === 'succeeded');
    assert.deepEqual((await store.list(store.keys.jobCheckpoints(submitted.id))).entries, [], 'its checkpoints went with the commit that finished it');
    await waitFor('the finished record is deleted after its retention', async () => (await store.get(store.keys.job(submitted.id))) === null, 10_000);
  });

  it('malformed records are skipped (logged), and the scheduler goes on binding', async () => {
    const { store, client } = await fleet();
    await store.put(store.keys.job('j-broken'), { id: 'j-broken', phase: 'pending' });
    await store.put(store.keys.node('n-broken'), { name: 'n-broken', labels: {} });
    await addNode(store, 'n1');
    const submitted = await client.submit(spec({ share: 1 }));
    await waitJob(store, submitted.id, 'is bound', (j) => j.phase === 'bound');
    assert.ok(logs.some((line) => /malformed job record/.test(line) && line.includes('j-broken')));
    assert.ok(logs.some((line) => /malformed node record/.test(line) && line.includes('n-broken')));
  });

  it('submit: a commit reported refused although it applied (a retried transaction) returns the job, not a duplicate', async () => {
    const { store } = await fleet();
    // The store answers "refused" after applying, as etcd3 does when it retries a transaction whose first attempt applied.
    const lying = new Proxy(store, {
      get: (target, property, receiver) => (property === 'commit' ? async (commit: Parameters<FleetStore['commit']>[0]) => (await target.commit(commit), false) : Reflect.get(target, property, receiver)),
    });
    const submitted = await new FleetClient(lying).submit(spec({ share: 1 }));
    const jobs = await new FleetClient(store).jobs();
    assert.deepEqual(jobs.map((j) => j.id), [submitted.id], 'exactly one job');
  });

  it('tenant rules: image and checkpoint.dir only under <tenantDataRoot>/<tenant>/; a queue\'s tenants and maxPriority', async () => {
    const { store } = await fleet();
    const open = new FleetClient(store);
    const rooted = new FleetClient(store, { tenantDataRoot: '/data/fleet' });
    const forbidden = (what: RegExp) => (error: unknown) => (error as { code?: string }).code === 'GPUNIX_E_FORBIDDEN' && what.test((error as Error).message);
    await assert.rejects(open.submit(spec({ image: '/data/fleet/alice/a.gpimg' }), { asTenant: 'alice' }), forbidden(/image.*tenantDataRoot/));
    await rooted.submit(spec({ image: '/data/fleet/alice/a.gpimg', checkpoint: { intervalMs: 1000, dir: '/data/fleet/alice/ckpt' } }), { asTenant: 'alice' });
    await assert.rejects(rooted.submit(spec({ image: '/data/fleet/bob/a.gpimg' }), { asTenant: 'alice' }), forbidden(/image: must be an absolute path under \/data\/fleet\/alice\//));
    await assert.rejects(rooted.submit(spec({ checkpoint: { intervalMs: 1000, dir: '/data/fleet/alice/../bob' } }), { asTenant: 'alice' }), forbidden(/checkpoint\.dir/));
    await open.submit(spec({ image: '/anywhere/a.gpimg' })); // the admin, or an operator with --etcd

    await open.setQueue({ name: 'capped', maxPriority: 5, tenants: ['alice'] });
    await open.submit(spec({ queue: 'capped', priority: 5 }), { asTenant: 'alice' });
    await assert.rejects(open.submit(spec({ queue: 'capped', priority: 6 }), { asTenant: 'alice' }), forbidden(/priority: 6 is above queue capped's maxPriority 5/));
    await assert.rejects(open.submit(spec({ tenant: 'bob', queue: 'capped' }), { asTenant: 'bob' }), forbidden(/tenant bob may not submit/));
    await open.submit(spec({ tenant: 'bob', queue: 'capped', priority: 100 })); // the admin's are not capped
  });

  it('a bind commit reported refused although it applied: the scheduler reads the job and its bindings back (it reclaims it correctly later)', async () => {
    const store = await connect(testPrefix());
    const client = new FleetClient(store);
    let lied = false;
    // The scheduler's store answers "refused" once for a commit that applied a binding (as etcd3 does
    // when it retries a transaction whose first attempt applied).
    const lying = new Proxy(store, {
      get: (target, property, receiver) =>
        property === 'transact'
          ? async (commit: Parameters<FleetStore['transact']>[0]) => {
              const binds = (commit.puts ?? []).some((put) => put.key.startsWith(store.keys.bindings()));
              const result = await target.transact(commit);
              if (!lied && result.succeeded && binds) {
                lied = true;
                return { ...result, succeeded: false };
              }
              return result;
            }
          : Reflect.get(target, property, receiver),
    });
    const scheduler = await startScheduler(lying, 'lied-to');
    await waitFor('the scheduler leads', () => scheduler.isLeader, 10_000);
    const node = await addNode(store, 'n1');
    const low = await client.submit(spec({ priority: 0, share: 1 }));
    await waitJob(store, low.id, 'is bound', (j) => j.phase === 'bound');
    // The test's read may see the bind before the scheduler's own answer arrives: wait for that too.
    await waitFor('the scheduler heard "refused" for the applied bind', () => lied, 10_000);
    const [binding] = await bindingsOf(store, low.id);
    await report(store, node, binding.value, 'running');
    await waitJob(store, low.id, 'runs', (j) => j.phase === 'running');
    const high = await client.submit(spec({ priority: 10, share: 1, preemptible: false }));
    await waitJob(store, high.id, 'is bound', (j) => j.phase === 'bound');
    const [suspended] = await bindingsOf(store, low.id);
    assert.deepEqual([suspended.value.desired, suspended.value.generation], ['suspend', 1], 'the victim\'s binding (known from etcd, not from the lost answer) is told to suspend');
  });

  it('room that frees goes to a waiting job of higher priority in the queue before a suspended lower one resumes', async () => {
    const { store, client } = await fleet();
    const node = await addNode(store, 'n1');
    const low = await client.submit(spec({ priority: 0, share: 1 }));
    await waitJob(store, low.id, 'is bound', (j) => j.phase === 'bound');
    const high = await client.submit(spec({ priority: 10, share: 1, preemptible: false }));
    await waitJob(store, high.id, 'is bound', (j) => j.phase === 'bound');
    await waitJob(store, low.id, 'is suspended', (j) => j.phase === 'suspended');
    const middle = await client.submit(spec({ priority: 5, share: 1, preemptible: false }));
    await waitJob(store, middle.id, 'waits with a reason', (j) => j.phase === 'pending' && j.message !== undefined);
    const [highBinding] = await bindingsOf(store, high.id);
    await report(store, node, highBinding.value, 'exited', 0);
    await waitJob(store, middle.id, 'is bound', (j) => j.phase === 'bound');
    const still = await job(store, low.id);
    assert.deepEqual([still.value.phase, still.value.suspensions], ['suspended', 1], 'the low job was not resumed only to be suspended again');
  });
});
