// The fleet moves running work between nodes (issue 16, item 4): reclaim by live migration. A real
// etcd, real gpunixd nodes (child processes sharing one admin token, which is also each node's
// migration.peerToken), a scheduler replica in this process, and the fleet-counter program on
// lavapipe (4 KiB of state, 4 MiB of memory per member). What a user would check: a running job is
// moved to another node to make room for a gang that needs its node, with the exact result, one
// run, never suspended or restarted; a move whose target dies mid-way leaves the job running where
// it was, with the exact result, and the gang waits.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { Capacity } from '../src/fleet/capacity.js';
import { FleetClient } from '../src/fleet/client.js';
import { selectMoves } from '../src/fleet/reclaim.js';
import { FleetScheduler } from '../src/fleet/scheduler.js';
import type { Binding, JobPhase, JobRecord, MemberStatus, NodeRecord } from '../src/fleet/records.js';
import { JobSpecInput, parseJobSpec } from '../src/fleet/spec.js';
import { FleetStore } from '../src/fleet/store.js';
import { EtcdCluster, memoryBackedDir, startEtcd } from './etcdCluster.js';
import { FleetNode, root, startNodes, testPrefix, waitFor } from './fleetNodes.js';

const counterProgram = join(root, 'test/programs/fleet-counter.mjs');
const { expectedChecksum } = (await import(pathToFileURL(counterProgram).href)) as { expectedChecksum(steps: number): number };

describe('selectMoves: which running members to move to make room', () => {
  const MiB = 1024 * 1024;
  const nodeRecord = (name: string, labels: Record<string, string> = {}): NodeRecord => ({
    name,
    labels,
    devices: [{ index: 0, name: 'dev0', backend: 'vulkan', featureLevel: 'core', memoryBudget: 1024 * MiB, maxBufferSize: 256 * MiB, maxStorageBufferBindingSize: 256 * MiB }],
    health: 'ready',
    address: {},
    used: [],
    startedAt: 0,
    updatedAt: 0,
  });
  const job = (id: string, input: Partial<JobSpecInput>): JobRecord => ({
    id,
    spec: parseJobSpec({ tenant: 't', program: '/p.js', memory: 64 * MiB, ...input }),
    phase: 'running',
    generation: 1,
    placement: [],
    submittedAt: 0,
    updatedAt: 0,
    restarts: 0,
    suspensions: 0,
  });
  /** n1 (big) and n2 (not), one device each; `running` placed as given and reserved. */
  function setup(placed: Array<[JobRecord, string[]]>) {
    const capacity = new Capacity();
    capacity.setNode(nodeRecord('n1', { big: 'yes' }));
    capacity.setNode(nodeRecord('n2'));
    const running = placed.map(([record, nodes]) => {
      const placement = nodes.map((node) => ({ node, device: 0 }));
      capacity.reserve(record.spec, placement);
      return { job: { ...record, placement }, placement };
    });
    return { capacity, running };
  }
  const big = { gang: 2, share: 0.5, placement: { sameNode: true, nodeSelector: { big: 'yes' } } };
  const free = (capacity: Capacity) => JSON.stringify([capacity.free('n1', 0), capacity.free('n2', 0)]);

  it('moves only the members in the way, to a node with room, and leaves the capacity as it was', () => {
    const { capacity, running } = setup([[job('a', { share: 0.5 }), ['n1']], [job('b', { share: 0.25 }), ['n2']]]);
    const before = free(capacity);
    const moves = selectMoves(job('gang', big), running, capacity, () => true);
    assert.deepEqual(moves?.map((m) => [m.job.id, m.member, m.from.node, m.to.node]), [['a', 0, 'n1', 'n2']]);
    assert.equal(free(capacity), before);
    // Nothing in the way: nothing to move.
    assert.deepEqual(selectMoves(job('small', { share: 0.25 }), running, capacity, () => true), []);
  });

  it('moves nobody who opted out, has nowhere to go, or may not move; null then', () => {
    const optOut = setup([[job('a', { share: 0.5, movable: false }), ['n1']]]);
    assert.equal(selectMoves(job('gang', big), optOut.running, optOut.capacity, () => true), null);
    const full = setup([[job('a', { share: 0.5 }), ['n1']], [job('b', { share: 0.75 }), ['n2']]]);
    assert.equal(selectMoves(job('gang', big), full.running, full.capacity, () => true), null, 'n2 has no room for a');
    const once = setup([[job('a', { share: 0.5 }), ['n1']]]);
    assert.equal(selectMoves(job('gang', big), once.running, once.capacity, () => false), null);
    // A member of a sameNode gang is never moved alone.
    const gang = setup([[job('pair', { gang: 2, share: 0.25, placement: { sameNode: true } }), ['n1', 'n1']]]);
    assert.equal(selectMoves(job('gang', big), gang.running, gang.capacity, () => true), null);
  });
});

describe('fleet: moving running work between nodes', () => {
  let etcd: EtcdCluster;
  let store: FleetStore;
  let client: FleetClient;
  let scheduler: FleetScheduler;
  const schedulerLog: string[] = [];
  const prefix = testPrefix();
  const shared = mkdtempSync(join(tmpdir(), 'gpunix-move-'));
  const nodes = new Map<string, FleetNode>();
  const jobs: string[] = [];

  before(async () => {
    etcd = await startEtcd({ members: 1, dir: memoryBackedDir() });
    store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
    client = new FleetClient(store);
    scheduler = new FleetScheduler(store, {
      id: 'move-test',
      log: (level, msg, fields) => {
        if (level !== 'debug') schedulerLog.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
      },
    });
    await scheduler.start();
    // n1 is the only node labelled big: a gang that asks for it needs all of n1.
    const [n1, n2] = await Promise.all([
      startNodes(['n1'], { endpoints: etcd.endpoints, prefix, labels: { big: 'yes' }, kernel: { memoryBudget: '64M' } }),
      startNodes(['n2'], { endpoints: etcd.endpoints, prefix, kernel: { memoryBudget: '64M' } }),
    ]).then(([a, b]) => [a[0], b[0]]);
    nodes.set('n1', n1).set('n2', n2);
  });

  after(async () => {
    for (const id of jobs) await client.cancel(id).catch(() => undefined);
    await scheduler?.stop().catch(() => undefined);
    await Promise.all([...nodes.values()].map((node) => node.stop()));
    store?.close();
    await etcd?.stop();
    rmSync(shared, { recursive: true, force: true });
  });

  const out = (name: string) => join(shared, `${name}.out`);
  const lines = (name: string) => (existsSync(out(name)) ? readFileSync(out(name), 'utf8').split('\n').filter(Boolean) : []);
  const counter = (name: string, steps: number, more: Partial<JobSpecInput> = {}): JobSpecInput => ({
    tenant: 'lab',
    name,
    program: counterProgram,
    args: [String(steps), '20', out(name)],
    memory: '4M',
    ...more,
  });
  const submit = async (spec: JobSpecInput) => {
    const job = await client.submit(spec);
    jobs.push(job.id);
    return job;
  };
  const record = async (id: string) => (await store.get<JobRecord>(store.keys.job(id)))!.value;

  /** The job, its bindings and statuses, the members' logs and the nodes' and scheduler's last warnings: a failing wait's message. */
  async function describeJob(id: string): Promise<string> {
    const bindings = (await store.list<Binding>(store.keys.bindings())).entries.filter((e) => e.value.job === id).map((e) => ({ key: e.key, ...e.value }));
    const statuses = (await store.list<MemberStatus>(store.keys.jobStatuses(id))).entries.map((e) => e.value);
    const logs: string[] = [];
    for (const node of nodes.values()) {
      const dir = join(node.dir, 'images', 'fleet', id);
      for (const file of existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.log')) : []) logs.push(`--- ${node.name} ${file} ---\n${readFileSync(join(dir, file), 'utf8').split('\n').slice(-10).join('\n')}`);
      const warnings = node.log().split('\n').filter((line) => /"level":(4|5)\d/.test(line)).slice(-6);
      if (warnings.length) logs.push(`--- ${node.name}: last warnings ---\n${warnings.join('\n')}`);
    }
    return `${JSON.stringify({ job: await record(id).catch(() => null), bindings, statuses })}\n${logs.join('\n')}\n--- scheduler ---\n${schedulerLog.slice(-15).join('\n')}`;
  }

  async function waitJob(id: string, what: string, check: (job: JobRecord) => boolean, timeoutMs = 60_000): Promise<JobRecord> {
    try {
      return await waitFor(`job ${id} ${what}`, async () => {
        const job = await record(id);
        if (check(job)) return job;
        if (['failed', 'cancelled'].includes(job.phase)) throw new Error(`job ${id} ended ${job.phase} (${job.message ?? ''}) while waiting until ${what}`);
        return undefined;
      }, timeoutMs);
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${await describeJob(id).catch(() => '')}`);
    }
  }
  const waitPhase = (id: string, phases: JobPhase[], timeoutMs?: number) => waitJob(id, `is ${phases.join(' or ')}`, (job) => phases.includes(job.phase), timeoutMs);

  it('moves a running job to another node to make room for a gang that needs all of its node: exact results, nobody suspended or restarted', { timeout: 180_000 }, async () => {
    const steps = 300;
    // With periodic checkpoints: the source pauses them for the move, the target takes them over.
    const mover = await submit(counter('mover', steps, { share: 0.5, checkpoint: { intervalMs: 300, dir: join(shared, 'checkpoints') } }));
    const running = await waitPhase(mover.id, ['running'], 60_000);
    assert.equal(running.placement[0].node, 'n1', 'best fit, ties by node name: the first job lands on n1');

    // A gang of 2 × 0.5 on one node labelled big: only n1, and only with the mover gone from it.
    // Its priority would let reclaim suspend the mover; moving it is preferred (no progress lost).
    const gang = await submit(counter('gang', 20, { gang: 2, share: 0.5, priority: 10, placement: { sameNode: true, nodeSelector: { big: 'yes' } } }));
    const moved = await waitJob(mover.id, 'has moved to n2', (job) => job.placement[0]?.node === 'n2' && (job.moves ?? 0) >= 1, 60_000);
    assert.equal(moved.generation, 1, 'moved, not bound anew');
    assert.deepEqual(moved.clients, { 0: 'n1' }, 'its program stays supervised by n1');
    const status = (await store.get<MemberStatus>(store.keys.status(mover.id, 0)))!.value;
    assert.equal(status.node, 'n1', 'the status comes from the node that runs its program');
    assert.equal(status.gpuNode, 'n2', 'and says where its GPU process runs');
    assert.equal(status.move?.outcome, 'moved');
    const onN2 = (await nodes.get('n2')!.ps()).filter((p) => p.tenant === `fleet.${mover.id}` && p.state !== 'exited');
    assert.equal(onN2.length, 1, 'its process runs on n2 now');
    assert.equal(onN2[0].pid, status.pid);

    await waitFor('n2 checkpoints the process that moved there', () => nodes.get('n2')!.log().split('\n').some((line) => line.includes('fleet member checkpointed') && line.includes(mover.id)), 30_000);
    const placed = await waitPhase(gang.id, ['bound', 'running', 'succeeded'], 60_000);
    assert.deepEqual(placed.placement.map((p) => p.node), ['n1', 'n1'], 'the gang took all of n1');
    await waitPhase(gang.id, ['succeeded'], 90_000);
    const done = await waitPhase(mover.id, ['succeeded'], 120_000);
    assert.equal(done.suspensions, 0, 'never suspended');
    assert.equal(done.restarts, 0, 'never restarted');
    assert.equal(done.generation, 1);
    assert.deepEqual(lines('mover'), ['started at step 0', `checksum ${expectedChecksum(steps)}`], 'one run, moved live, with the exact checksum');
    assert.deepEqual(lines('gang').filter((l) => l.startsWith('checksum')), Array(2).fill(`checksum ${expectedChecksum(20)}`), 'each gang member ends with the exact checksum');
    const stats = scheduler.stats();
    console.log(`# move: ${stats.movesDone} done, ${stats.movesFailed} failed; the member's move took ${status.move?.ms} ms (loaded machine, provisional)`);
    await waitFor('the jobs\' bindings are deleted', async () => (await store.list<Binding>(store.keys.bindings())).entries.length === 0, 20_000);
  });

  it('a move whose target dies mid-way leaves the job running where it was, with the exact result; the gang waits', { timeout: 180_000 }, async () => {
    const steps = 250;
    const stay = await submit(counter('stay', steps, { share: 0.5 }));
    const running = await waitPhase(stay.id, ['running'], 60_000);
    assert.equal(running.placement[0].node, 'n1');

    // Freeze n2 the moment the move's target binding appears (the move is then under way and can
    // never commit there), keep it frozen a second, then kill it.
    const n2 = nodes.get('n2')!;
    const { revision } = await store.list<Binding>(store.keys.nodeBindings('n2'));
    let frozen!: () => void;
    const targetBound = new Promise<void>((resolve) => (frozen = resolve));
    const watch = await store.watch<Binding>(store.keys.nodeBindings('n2'), revision, (event) => {
      if (event.type === 'put' && event.value?.job === stay.id && event.value.client?.arriving !== undefined) {
        process.kill(n2.pid!, 'SIGSTOP');
        frozen();
      }
    });
    const gang = await submit(counter('waiting', 10, { gang: 2, share: 0.5, placement: { sameNode: true, nodeSelector: { big: 'yes' } } }));
    try {
      await Promise.race([targetBound, new Promise((_, reject) => setTimeout(() => reject(new Error('no move began')), 60_000))]);
    } finally {
      await watch.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await n2.kill('SIGKILL');

    const failed = await waitJob(stay.id, 'has its move given up', (job) => job.move === undefined && job.moveFailure !== undefined, 60_000);
    assert.equal(failed.placement[0].node, 'n1', 'still on n1');
    assert.equal(failed.moveFailure?.to, 'n2');
    console.log(`# the failed move: "${failed.moveFailure?.message}"`);
    const pending = await record(gang.id);
    assert.equal(pending.phase, 'pending', 'the gang waits (nowhere to move the job to)');
    assert.deepEqual(pending.placement, []);

    const done = await waitPhase(stay.id, ['succeeded'], 120_000);
    assert.equal(done.suspensions, 0);
    assert.equal(done.restarts, 0);
    assert.equal(done.generation, 1);
    assert.equal(done.moves ?? 0, 0);
    assert.deepEqual(lines('stay'), ['started at step 0', `checksum ${expectedChecksum(steps)}`], 'one run, never interrupted, with the exact checksum');
    // With the job done, n1 is free: the gang runs.
    await waitPhase(gang.id, ['succeeded'], 90_000);
    assert.deepEqual(lines('waiting').filter((l) => l.startsWith('checksum')), Array(2).fill(`checksum ${expectedChecksum(10)}`));
  });
});
