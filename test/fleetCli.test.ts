// The fleet's commands (submit, jobs, job show/cancel, nodes, queues, queue set/remove) as a user
// runs them: `node bin/gpunix.js ...` child processes against a real etcd, straight (--etcd) and
// through a real gpunixd that is a fleet node (a tenant's token: only its own jobs), and against
// a daemon that is no fleet node (GPUNIX_E_FLEET_UNAVAILABLE).

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { FleetClient } from '../src/fleet/client.js';
import type { Binding, JobRecord, NodeRecord } from '../src/fleet/records.js';
import { FleetStore } from '../src/fleet/store.js';
import { EtcdCluster, startEtcd } from './etcdCluster.js';
import { FleetNode, root, startNode, testPrefix, waitFor } from './fleetNodes.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the gpunix command in a child process, as a user would (no fleet or token settings inherited). */
function gpunix(args: string[], cwd = root): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env, GPUNIX_TOKEN: '' };
  delete env.GPUNIX_ETCD_ENDPOINTS;
  delete env.GPUNIX_ETCD_PASSWORD;
  return new Promise((done) => {
    execFile(process.execPath, [join(root, 'bin/gpunix.js'), ...args], { cwd, encoding: 'utf8', timeout: 60_000, env }, (error, stdout, stderr) => {
      done({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Asserts a refusal: exit code 2, nothing on stdout, one line `gpunix: CODE: ...` on stderr; returns that line. */
function refused(result: Result, code: string): string {
  assert.equal(result.code, 2, `${result.stdout}${result.stderr}`);
  assert.equal(result.stdout, '');
  assert.match(result.stderr, new RegExp(`^gpunix: ${code}: [^\\n]+\\n$`));
  return result.stderr;
}

/**
 * `args` with `flags` added where the command takes them: for submit, before the program (what
 * follows the program is the program's own arguments, as for `gpunix run`); else at the end.
 */
function withFlags(args: string[], flags: string[]): string[] {
  return args[0] === 'submit' ? [args[0], ...flags, ...args.slice(1)] : [...args, ...flags];
}

function parsed(result: Result, what: string): any {
  assert.equal(result.code, 0, `${what}: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

describe('fleet commands', () => {
  let etcd: EtcdCluster;
  let dir: string;

  before(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), 'gpunix-fleet-cli-'));
  });
  after(async () => {
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('straight to etcd (--etcd)', () => {
    const prefix = testPrefix();
    const fleet = (...args: string[]) => gpunix(withFlags(args, ['--etcd', etcd.endpoints.join(','), '--etcd-prefix', prefix]));
    const json = async (...args: string[]) => parsed(await gpunix(withFlags(args, ['--etcd', etcd.endpoints.join(','), '--etcd-prefix', prefix, '--json'])), args.join(' '));

    it('submit prints the job id; jobs, job show and --json show it pending, with absolute paths', async () => {
      const submitted = await gpunix(
        ['submit', '--etcd', etcd.endpoints.join(','), '--etcd-prefix', prefix, '--tenant', 'alice', '--name', 'count', '--memory', '64M', '--gang', '2', '--share', '0.5',
          '--priority', '5', '--queue', 'research/vision', '--spread', '--node-selector', 'zone=a', '--checkpoint-every', '1000', '--checkpoint-dir', 'ckpt',
          '--not-preemptible', 'programs/counter.mjs', '7', '--flag-for-the-program'],
        join(root, 'test'),
      );
      assert.equal(submitted.code, 0, submitted.stderr);
      const id = submitted.stdout.trim();
      assert.match(id, /^j-[0-9a-z]+$/);

      const shown = await json('job', 'show', id);
      const job: JobRecord = shown.job;
      assert.equal(job.id, id);
      assert.equal(job.phase, 'pending');
      assert.deepEqual(shown.members, []);
      assert.equal(job.spec.tenant, 'alice');
      assert.equal(job.spec.program, join(root, 'test/programs/counter.mjs'));
      assert.deepEqual(job.spec.args, ['7', '--flag-for-the-program']);
      assert.deepEqual(job.spec.checkpoint, { intervalMs: 1000, dir: join(root, 'test/ckpt') });
      assert.equal(job.spec.memory, 64 * 1024 * 1024);
      assert.deepEqual([job.spec.gang, job.spec.share, job.spec.priority, job.spec.queue, job.spec.preemptible], [2, 0.5, 5, 'research/vision', false]);
      assert.deepEqual(job.spec.placement, { spread: true, nodeSelector: { zone: 'a' } });

      const listed = await json('jobs');
      assert.deepEqual(listed.jobs.map((j: JobRecord) => j.id), [id]);
      const table = await fleet('jobs');
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^ID\s+NAME\s+TENANT\s+QUEUE\s+PRIO\s+PHASE\s+GANG\s+SHARE\s+MEMORY\s+NODES\s+AGE\s+MESSAGE\n/);
      assert.match(table.stdout, new RegExp(`${id}\\s+count\\s+alice\\s+research/vision\\s+5\\s+pending\\s+2\\s+0.5\\s+64.0 MiB`));
      const text = await fleet('job', 'show', id);
      assert.match(text.stdout, /phase:\s+pending \(generation 0\)/);
      assert.deepEqual((await json('jobs', '--phase', 'running,succeeded')).jobs, []);
    });

    it('--spec: a JSON job spec, its relative paths from its own directory, flags on top', async () => {
      const specDir = mkdtempSync(join(dir, 'spec-'));
      writeFileSync(join(specDir, 'job.json'), JSON.stringify({ tenant: 'carol', program: 'prog.mjs', args: ['a'], memory: '16M', gang: 1 }));
      const job: JobRecord = await json('submit', '--spec', join(specDir, 'job.json'), '--priority', '-3');
      assert.equal(job.spec.program, join(specDir, 'prog.mjs'));
      assert.deepEqual([job.spec.tenant, job.spec.priority, job.spec.args, job.spec.memory], ['carol', -3, ['a'], 16 * 1024 * 1024]);
    });

    it('a bad spec is GPUNIX_E_BAD_JOB naming the field, and nothing is submitted', async () => {
      const before = (await json('jobs')).jobs.length;
      assert.match(refused(await fleet('submit', '--tenant', 'alice', '--memory', '64M', '--gang', '0', 'x.mjs'), 'GPUNIX_E_BAD_JOB'), /gang/);
      assert.match(refused(await fleet('submit', '--tenant', 'alice', '--memory', 'lots', 'x.mjs'), 'GPUNIX_E_BAD_JOB'), /memory/);
      assert.match(refused(await fleet('submit', '--tenant', 'alice', 'x.mjs'), 'GPUNIX_E_BAD_JOB'), /memory/);
      assert.match(refused(await fleet('submit', '--tenant', 'alice', '--memory', '1M', '--share', '1.5', 'x.mjs'), 'GPUNIX_E_BAD_JOB'), /share/);
      assert.match(refused(await fleet('submit', '--tenant', 'a/b', '--memory', '1M', 'x.mjs'), 'GPUNIX_E_BAD_JOB'), /tenant/);
      assert.equal((await json('jobs')).jobs.length, before);
    });

    it('job cancel asks the scheduler to end it; an unknown id is GPUNIX_E_NO_SUCH_JOB', async () => {
      const job: JobRecord = await json('submit', '--tenant', 'alice', '--memory', '1M', 'x.mjs');
      const cancelled: JobRecord = await json('job', 'cancel', job.id);
      assert.equal(cancelled.cancelRequested, true);
      assert.equal((await json('job', 'show', job.id)).job.cancelRequested, true);
      const table = await fleet('jobs', '--phase', 'pending');
      assert.match(table.stdout, new RegExp(`${job.id}.*cancel requested`));
      refused(await fleet('job', 'cancel', 'j-nosuchjob'), 'GPUNIX_E_NO_SUCH_JOB');
      refused(await fleet('job', 'show', 'j-nosuchjob'), 'GPUNIX_E_NO_SUCH_JOB');
    });

    it('queue set (only the flags given change), queues with their use, queue remove', async () => {
      assert.deepEqual(await json('queue', 'set', 'research', '--guaranteed', '2', '--limit', '3'), { name: 'research', guaranteed: 2, limit: 3, weight: 1 });
      assert.deepEqual(await json('queue', 'set', 'research', '--weight', '4'), { name: 'research', guaranteed: 2, limit: 3, weight: 4 });
      assert.deepEqual(await json('queue', 'set', 'research', '--limit', 'none'), { name: 'research', guaranteed: 2, limit: null, weight: 4 });
      const queues = (await json('queues')).queues as Array<{ name: string; set: boolean; pending: number }>;
      assert.deepEqual(queues.find((q) => q.name === 'research'), { name: 'research', guaranteed: 2, limit: null, weight: 4, set: true, used: 0, pending: 0, running: 0 });
      // A queue only jobs name is listed with the defaults.
      assert.equal(queues.find((q) => q.name === 'research/vision')?.set, false);
      assert.equal(queues.find((q) => q.name === 'research/vision')?.pending, 1);
      assert.match((await fleet('queues')).stdout, /^NAME\s+GUARANTEED\s+LIMIT\s+WEIGHT\s+USED\s+RUNNING\s+PENDING\s+SET\n/);
      assert.match(refused(await fleet('queue', 'set', 'research', '--weight', '-1'), 'GPUNIX_E_BAD_JOB'), /weight/);
      assert.deepEqual(await json('queue', 'remove', 'research'), { name: 'research', removed: true });
      assert.equal((await json('queues')).queues.find((q: { name: string }) => q.name === 'research'), undefined);
      refused(await fleet('queue', 'remove', 'research'), 'GPUNIX_E_BAD_OPTION');
    });

    it('nodes: each live node with what is bound on its devices', async () => {
      // Play a node and the scheduler: a node record and one binding on its device 0.
      const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
      try {
        const now = Date.now();
        const device = { index: 0, name: 'llvmpipe', backend: 'vulkan', featureLevel: 'core', memoryBudget: 1024 ** 3, maxBufferSize: 2 ** 28, maxStorageBufferBindingSize: 2 ** 27 };
        const node: NodeRecord = { name: 'n1', labels: { zone: 'a' }, devices: [device], health: 'ready', address: {}, used: [{ bytes: 0, processes: 0 }], startedAt: now, updatedAt: now };
        await store.put(store.keys.node('n1'), node);
        const binding: Binding = { job: 'j-x', member: 0, generation: 1, device: 0, tenant: 'alice', class: 'normal', share: 0.25, memory: 256 * 1024 ** 2, program: '/x.mjs', args: [], desired: 'run' };
        await store.put(store.keys.binding('n1', 'j-x', 0), binding);
        await store.put(store.keys.binding('n1', 'j-x', 1), { ...binding, member: 1, desired: 'suspend' });
      } finally {
        store.close();
      }
      const nodes = (await json('nodes')).nodes;
      assert.equal(nodes.length, 1);
      assert.deepEqual([nodes[0].name, nodes[0].health, nodes[0].labels], ['n1', 'ready', { zone: 'a' }]);
      // The suspended member holds nothing.
      assert.deepEqual(nodes[0].allocated, [{ share: 0.25, memory: 256 * 1024 ** 2, members: 1 }]);
      const table = await fleet('nodes');
      assert.match(table.stdout, /^NAME\s+HEALTH\s+LABELS\s+DEVICES\s+SHARE FREE\/USED\s+MEMORY FREE\/USED/);
      assert.match(table.stdout, /n1\s+ready\s+zone=a\s+1 \(vulkan\)\s+0.75\/0.25\s+768.0 MiB\/256.0 MiB/);
    });

    it('scheduler: a replica leads until SIGTERM, then resigns and exits 0', async () => {
      const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'scheduler', '--id', 'cli-replica', '--etcd', etcd.endpoints.join(','), '--etcd-prefix', prefix], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
      try {
        await waitFor('the replica leads', async () => (await store.get<{ id: string }>(store.keys.leader()))?.value.id === 'cli-replica', 30_000);
        // The leader cancels what was asked to be cancelled (the job from the cancel test).
        await waitFor('a cancelled job', async () => (await new FleetClient(store).jobs({ phase: ['cancelled'] })).length > 0, 30_000);
        child.kill('SIGTERM');
        assert.equal(await exited, 0, stderr);
        assert.equal(await store.get(store.keys.leader()), null);
      } finally {
        child.kill('SIGKILL');
        store.close();
      }
      assert.match(stderr, /"msg":"scheduler replica started","id":"cli-replica"/);
      refused(await gpunix(['scheduler']), 'GPUNIX_E_BAD_OPTION');
    });

    it('an etcd nobody answers on is GPUNIX_E_FLEET_UNAVAILABLE naming it', async () => {
      const result = await gpunix(['jobs', '--etcd', '127.0.0.1:1']);
      assert.match(refused(result, 'GPUNIX_E_FLEET_UNAVAILABLE'), /127\.0\.0\.1:1/);
    });
  });

  describe('through a daemon that is no fleet node', () => {
    let daemon: Daemon;
    let socket: string;
    const PLAIN_ADMIN = 'fleet-cli-plain-admin-token-0123456789ab';
    before(async () => {
      socket = join(dir, 'plain.sock');
      daemon = await startDaemon({ socket, log: { level: 'silent' }, adminTokenHash: hashToken(PLAIN_ADMIN), stateFile: join(dir, 'plain-state.json'), imageDir: join(dir, 'plain-images') });
    });
    after(async () => {
      await daemon?.close('immediate');
    });

    it('every fleet command is GPUNIX_E_FLEET_UNAVAILABLE', async () => {
      for (const args of [['jobs'], ['nodes'], ['queues'], ['job', 'show', 'j-x'], ['submit', '--memory', '1M', 'x.mjs']]) {
        const message = refused(await gpunix(withFlags(args, ['--socket', socket, '--token', PLAIN_ADMIN])), 'GPUNIX_E_FLEET_UNAVAILABLE');
        assert.match(message, /not a fleet node \(no fleet section in its configuration\)/);
      }
    });
  });

  describe('through a fleet node as tenants', () => {
    const prefix = testPrefix();
    const ALICE = 'fleet-cli-alice-token-0123456789abcdef';
    const BOB = 'fleet-cli-bob-token-0123456789abcdef012';
    let node: FleetNode;
    const as = (token: string, ...args: string[]) => gpunix(withFlags(args, ['--socket', node.socket, '--token', token]));
    const json = async (token: string, ...args: string[]) => parsed(await gpunix(withFlags(args, ['--socket', node.socket, '--token', token, '--json'])), args.join(' '));

    before(async () => {
      node = await startNode({
        endpoints: etcd.endpoints,
        prefix,
        name: 'cli-node',
        labels: { zone: 'a' },
        // Its scheduler replica binds what fits: the tenant tests' jobs select a zone no node has, so they stay pending.
        scheduler: true,
        config: { tenants: { alice: { tokenHash: hashToken(ALICE) }, bob: { tokenHash: hashToken(BOB) } } },
      });
    });
    after(async () => {
      await node?.stop();
    });

    it('a tenant submits as itself, sees and cancels only its own jobs; another tenant\'s are not there', async () => {
      const job: JobRecord = await json(ALICE, 'submit', '--memory', '32M', '--name', 'mine', '--node-selector', 'zone=nowhere', 'x.mjs');
      assert.equal(job.spec.tenant, 'alice');
      assert.equal(job.phase, 'pending');
      const bobs: JobRecord = await json(BOB, 'submit', '--tenant', 'bob', '--memory', '32M', '--node-selector', 'zone=nowhere', 'y.mjs');
      assert.equal(bobs.spec.tenant, 'bob');

      assert.deepEqual((await json(ALICE, 'jobs')).jobs.map((j: JobRecord) => j.id), [job.id]);
      assert.deepEqual((await json(BOB, 'jobs')).jobs.map((j: JobRecord) => j.id), [bobs.id]);
      assert.deepEqual((await json(node.adminToken, 'jobs')).jobs.map((j: JobRecord) => j.id).sort(), [job.id, bobs.id].sort());
      assert.equal((await json(ALICE, 'job', 'show', job.id)).job.id, job.id);

      // Bob cannot see, cancel or submit as Alice; what he is told reveals nothing of her job.
      const hidden = refused(await as(BOB, 'job', 'show', job.id), 'GPUNIX_E_NO_SUCH_JOB');
      assert.doesNotMatch(hidden, /alice|mine/);
      refused(await as(BOB, 'job', 'cancel', job.id), 'GPUNIX_E_NO_SUCH_JOB');
      refused(await as(BOB, 'submit', '--tenant', 'alice', '--memory', '32M', 'z.mjs'), 'GPUNIX_E_FORBIDDEN');
      assert.equal((await json(node.adminToken, 'jobs')).jobs.length, 2);

      const cancelled: JobRecord = await json(ALICE, 'job', 'cancel', job.id);
      assert.equal(cancelled.cancelRequested, true);
      // Seen straight in etcd too: the daemon's fleet is the test's.
      const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
      try {
        assert.equal((await new FleetClient(store).job(job.id)).cancelRequested, true);
      } finally {
        store.close();
      }
    });

    it('a bad spec through the daemon is GPUNIX_E_BAD_JOB naming the field', async () => {
      assert.match(refused(await as(ALICE, 'submit', '--memory', '32M', '--gang', '99', 'x.mjs'), 'GPUNIX_E_BAD_JOB'), /gang/);
    });

    it('nodes and queues; queue changes are the admin\'s', async () => {
      const nodes = (await json(ALICE, 'nodes')).nodes as NodeRecord[];
      assert.deepEqual(nodes.map((n) => [n.name, n.labels]), [['cli-node', { zone: 'a' }]]);
      assert.ok(nodes[0].devices.length >= 1);
      refused(await as(ALICE, 'queue', 'set', 'team', '--guaranteed', '1'), 'GPUNIX_E_FORBIDDEN');
      refused(await as(ALICE, 'queue', 'remove', 'default'), 'GPUNIX_E_FORBIDDEN');
      assert.deepEqual(await json(node.adminToken, 'queue', 'set', 'team', '--guaranteed', '1'), { name: 'team', guaranteed: 1, limit: null, weight: 1 });
      assert.ok((await json(ALICE, 'queues')).queues.some((q: { name: string; set: boolean }) => q.name === 'team' && q.set));
      // The tenant rules: a queue's tenants and maxPriority; no image or checkpoint dir without fleet.tenantDataRoot.
      assert.deepEqual(await json(node.adminToken, 'queue', 'set', 'capped', '--max-priority', '5', '--tenants', 'alice'), { name: 'capped', guaranteed: 0, limit: null, weight: 1, maxPriority: 5, tenants: ['alice'] });
      const pending = ['--memory', '32M', '--node-selector', 'zone=nowhere'];
      assert.match(refused(await as(ALICE, 'submit', ...pending, '--queue', 'capped', '--priority', '6', 'x.mjs'), 'GPUNIX_E_FORBIDDEN'), /maxPriority 5/);
      assert.match(refused(await as(BOB, 'submit', '--tenant', 'bob', ...pending, '--queue', 'capped', 'x.mjs'), 'GPUNIX_E_FORBIDDEN'), /tenant bob may not submit/);
      assert.match(refused(await as(ALICE, 'submit', ...pending, '--image', '/tmp/a.gpimg', 'x.mjs'), 'GPUNIX_E_FORBIDDEN'), /image: a tenant may not give it/);
      // The operator actions are in the daemon's audit log.
      assert.match(node.log(), /"audit":"queue set"/);
      assert.match(node.log(), /"audit":"submit"/);
    });

    it('a job submitted through the daemon runs on the fleet: job show follows it to succeeded', async () => {
      const job: JobRecord = await json(ALICE, 'submit', '--memory', '16M', '--name', 'counter', 'test/programs/counter.mjs', 'full');
      let shown: { job: JobRecord; members: Array<{ member: number; node: string; state: string; exitCode?: number }> } | undefined;
      const deadline = Date.now() + 90_000;
      while (Date.now() < deadline) {
        shown = await json(ALICE, 'job', 'show', job.id);
        if (['succeeded', 'failed', 'cancelled'].includes(shown!.job.phase)) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.equal(shown?.job.phase, 'succeeded', `job ${job.id}: ${JSON.stringify(shown)}\n${node.log().slice(-3000)}`);
      assert.deepEqual(shown!.job.placement, [{ node: 'cli-node', device: 0 }]);
      const table = await as(ALICE, 'jobs');
      assert.match(table.stdout, new RegExp(`${job.id}\\s+counter\\s+alice\\s+default\\s+0\\s+succeeded\\s+1\\s+1\\s+16.0 MiB\\s+cli-node`));
    });
  });
});
