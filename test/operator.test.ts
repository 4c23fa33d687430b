// The operator's command line against a real daemon (in this process, on a temp socket): each
// command runs as `node bin/gpunix.js ... --json` in a child process, as an operator would.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { createKernel, type ProcessHandle } from '../src/kernel/kernel.js';
import { deviceSummary, topTable } from '../src/cli/top.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN = 'operator-admin-token-0123456789abcdef0123456789';
const ALICE = 'operator-alice-token-0123456789abcdef0123456789';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the gpunix command (asynchronously: the daemon answers from this same process). */
function gpunix(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((done) => {
    execFile(process.execPath, [join(root, 'bin/gpunix.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 30_000, env: { ...process.env, GPUNIX_TOKEN: '', ...env } }, (error, stdout, stderr) => {
      done({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('the operator commands against gpunixd', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;
  let alices: ProcessHandle;
  let bobs: ProcessHandle;
  const as = (token: string, ...args: string[]) => gpunix([...args, '--socket', socket, '--token', token]);
  const json = async (token: string, ...args: string[]): Promise<any> => {
    const result = await as(token, ...args, '--json');
    assert.equal(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
    return JSON.parse(result.stdout);
  };
  /** Asserts a refusal: exit code 2 and exactly one line `gpunix: CODE: ...` on stderr. */
  const refused = (result: Result, code: string) => {
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, new RegExp(`^gpunix: ${code}: .+\\n$`));
    assert.equal(result.stdout, '');
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-operator-'));
    socket = join(dir, 'gpunixd.sock');
    daemon = await startDaemon({
      socket,
      log: { level: 'silent' },
      adminTokenHash: hashToken(ADMIN),
      stateFile: join(dir, 'state.json'),
      tenants: { alice: { tokenHash: hashToken(ALICE), priorities: ['normal', 'batch'] }, bob: { tokenHash: hashToken('bob-token') } },
    });
    alices = await daemon.kernel.spawn({ tenant: 'alice', name: 'alice-job' });
    bobs = await daemon.kernel.spawn({ tenant: 'bob', name: 'bob-job' });
    await (await alices.gpu.requestAdapter())!.requestDevice();
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  it('ps: a tenant sees its own processes, the admin all', async () => {
    const [own, all] = await Promise.all([json(ALICE, 'ps'), json(ADMIN, 'ps')]);
    assert.deepEqual(own.processes.map((p: { name: string }) => p.name), ['alice-job']);
    assert.deepEqual(all.processes.map((p: { name: string }) => p.name).sort(), ['alice-job', 'bob-job']);
    const table = await as(ADMIN, 'ps');
    assert.equal(table.code, 0);
    assert.match(table.stdout, /PID\s+TENANT\s+NAME\s+STATE/);
    assert.match(table.stdout, /bob-job/);
  });

  it('kill, suspend, resume and renice another tenant\'s process: one clear line, non-zero exit', async () => {
    const pid = String(bobs.pid);
    const results = await Promise.all([
      as(ALICE, 'kill', pid),
      as(ALICE, 'suspend', pid),
      as(ALICE, 'resume', pid),
      as(ALICE, 'renice', pid, '--weight', '3'),
      as(ALICE, 'checkpoint', pid, 'x.img'),
      as(ALICE, 'trace', '--pid', pid, '--out', join(dir, 'stolen.json')),
    ]);
    for (const result of results) refused(result, 'GPUNIX_E_FORBIDDEN');
    assert.equal(bobs.state, 'waiting');
    assert.equal(existsSync(join(dir, 'stolen.json')), false);
    refused(await as('wrong-token', 'ps'), 'GPUNIX_E_AUTH');
    const nobody = await gpunix(['ps', '--socket', join(dir, 'nobody.sock')]);
    refused(nobody, 'GPUNIX_E_DISCONNECTED');
    assert.match(nobody.stderr, /nobody\.sock.*is the daemon running\?/);
  });

  it('ps: filters, columns, the device column, CSV without a header, and exited processes only with --all', async () => {
    const ended = await daemon.kernel.spawn({ tenant: 'bob', name: 'bob-done' });
    await ended.exit(3);
    const [bobCsv, device, live, all, exited, tenantCsv] = await Promise.all([
      as(ADMIN, 'ps', '--tenant', 'bob', '-o', 'pid,name,tenant', '--format', 'csv'),
      as(ALICE, 'ps', '-o', 'pid,device', '--format', 'csv', '--no-header', '--pid', String(alices.pid)),
      json(ADMIN, 'ps'),
      json(ADMIN, 'ps', '--all'),
      as(ADMIN, 'ps', '--state', 'exited', '-o', 'name,state,exit,reason', '--format', 'csv', '--no-header'),
      as(ADMIN, 'tenants', 'list', '--format', 'csv'),
    ]);
    assert.equal(bobCsv.stdout, `pid,name,tenant\n${bobs.pid},bob-job,bob\n`, bobCsv.stderr);
    assert.equal(device.stdout, `${alices.pid},gpu0\n`, device.stderr);
    assert.ok(!live.processes.some((p: { name: string }) => p.name === 'bob-done'), 'exited processes are hidden without --all');
    const done = all.processes.find((p: { name: string }) => p.name === 'bob-done');
    assert.deepEqual([done.state, done.exit.code], ['exited', 3]);
    assert.deepEqual(all.processes.find((p: { pid: number }) => p.pid === alices.pid).devices, ['gpu0']);
    assert.equal(exited.stdout, 'bob-done,exited,3,error\n', exited.stderr);
    assert.match(tenantCsv.stdout, /^tenant,memory-limit,memory,weight,max-processes,processes,priorities\nalice,,0,1,,1,normal batch\n/m);
    const table = await as(ADMIN, 'ps', '--all', '-o', 'pid,name,device');
    assert.match(table.stdout, new RegExp(`^PID\\s+NAME\\s+DEVICE\\n(.*\\n)*\\s*${alices.pid}\\s+alice-job\\s+gpu0\\n`));
  });

  it('kill of an exited process is idempotent; suspend of it is PROCESS_EXITED; run --connect refuses what it would ignore', async () => {
    const gone = await daemon.kernel.spawn({ tenant: 'alice', name: 'alice-gone' });
    await gone.exit(0);
    const before = daemon.kernel.ps().length;
    const [kill, suspend, missing, checkpoint, migrate] = await Promise.all([
      as(ALICE, 'kill', String(gone.pid)),
      as(ALICE, 'suspend', String(gone.pid)),
      as(ALICE, 'run', '--connect', join(dir, 'nosuch.mjs')),
      as(ALICE, 'run', '--connect', '--checkpoint', join(dir, 'x.img'), 'examples/saxpy.mjs'),
      as(ALICE, 'migrate', String(alices.pid), 'gpu0'),
    ]);
    assert.equal(kill.code, 0, kill.stderr);
    assert.equal(kill.stdout, `pid ${gone.pid}: already exited: normal (exit code 0)\n`);
    refused(suspend, 'GPUNIX_E_PROCESS_EXITED');
    refused(missing, 'GPUNIX_E_PROGRAM_LOAD');
    refused(checkpoint, 'GPUNIX_E_BAD_OPTION');
    assert.equal(daemon.kernel.ps().length, before, 'no process was made for a program that cannot run');
    assert.equal(migrate.code, 0, migrate.stderr);
    assert.match(migrate.stdout, /already on gpu0/);
    const restore = await as(ALICE, 'run', '--connect', '--restore', 'nosuch.img', 'test/programs/resume.mjs');
    assert.equal(restore.code, 2, restore.stderr);
    assert.match(restore.stderr, /^gpunix: GPUNIX_E_\w+: .+\n$/, 'a missing image: one coded line');
  });

  it('suspend, resume, renice and checkpoint its own process', async () => {
    const pid = String(alices.pid);
    assert.equal((await json(ALICE, 'suspend', pid)).state, 'suspended');
    assert.equal((await json(ALICE, 'resume', pid)).state, 'waiting');
    const reniced = await json(ALICE, 'renice', pid, '--priority', 'batch', '--weight', '2');
    assert.deepEqual([reniced.priority, reniced.weight], ['batch', 2]);
    refused(await as(ALICE, 'renice', pid, '--priority', 'realtime'), 'GPUNIX_E_QUOTA');
    const written = await json(ALICE, 'checkpoint', pid, 'alice.img');
    assert.ok(existsSync(written.path) && written.path.includes(join('images', 'alice')));
  });

  it('devices --connect, mem, status, trace and top --once', async () => {
    const [devices, mem, status, top] = await Promise.all([
      json(ALICE, 'devices', '--connect'),
      json(ALICE, 'mem'),
      json(ALICE, 'status'),
      json(ALICE, 'top', '--once', '--interval', '100', '--sort', 'mem'),
    ]);
    assert.equal(devices.devices[0].id, 'gpu0');
    assert.equal(typeof devices.devices[0].utilization, 'number');
    assert.ok(mem.devices.length >= 1 && mem.processes.every((p: { tenant: string }) => p.tenant === 'alice'));
    assert.equal(status.tenant, 'alice');
    assert.equal(top.sort, 'mem');
    assert.deepEqual(Object.keys(top.processes[0]).sort(), ['gpuSharePct', 'memoryBytes', 'name', 'p99LatencyUs', 'pid', 'preemptions', 'priority', 'state', 'tenant']);
    assert.ok(top.processes.every((p: { tenant: string }) => p.tenant === 'alice'));
    const out = join(dir, 'trace.json');
    const traced = await json(ADMIN, 'trace', '--out', out);
    assert.equal(traced.path, out);
    assert.ok(Array.isArray(JSON.parse(readFileSync(out, 'utf8')).traceEvents));
    const frame = await as(ADMIN, 'top', '--once', '--interval', '100');
    assert.equal(frame.code, 0, frame.stderr);
    assert.match(frame.stdout, /^gpu0 {2}.+ {2}\d+\.\d% busy {2}\S+ \S+ \/ \S+ \S+/m, 'a device summary line');
    assert.match(frame.stdout, /PID\s+TENANT\s+NAME\s+STATE\s+PRIORITY\s+GPU %\s+MEMORY\s+PREEMPTED\s+P99 LATENCY/);
  });

  it('tenants: the admin adds, changes and removes them; the new token works at once', async () => {
    const added = await json(ADMIN, 'tenants', 'add', 'carol', '--memory-limit', '1G', '--max-processes', '2', '--priorities', 'batch');
    assert.equal(added.memoryLimit, 1024 ** 3);
    const carol = await json(added.token, 'tenants');
    assert.deepEqual(carol.tenants.map((t: { name: string }) => t.name), ['carol']);
    const changed = await json(ADMIN, 'tenants', 'set', 'carol', '--max-processes', 'none', '--weight', '4');
    const misnamed = await as(ADMIN, 'tenants', 'change', 'carol', '--weight', '5');
    assert.equal(misnamed.code, 1);
    assert.match(misnamed.stderr, /^error: unknown command 'change' for `gpunix tenants` \(did you mean 'set'\?\) — see `gpunix tenants --help`\n$/);
    assert.deepEqual([changed.maxProcesses, changed.weight, changed.memoryLimit], [null, 4, 1024 ** 3]);
    refused(await as(ALICE, 'tenants', 'add', 'mallory'), 'GPUNIX_E_FORBIDDEN');
    const listed = await json(ADMIN, 'tenants', 'list');
    assert.deepEqual(listed.tenants.map((t: { name: string }) => t.name).sort(), ['alice', 'bob', 'carol', 'default']);
    await json(ADMIN, 'tenants', 'rm', 'carol'); // rm: remove's alias
    refused(await as(added.token, 'ps'), 'GPUNIX_E_AUTH');
    assert.ok(JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')).removed.includes('carol'));
  });

  it('kill its own process', async () => {
    const status = await json(ALICE, 'kill', String(alices.pid));
    assert.deepEqual([status.code, status.reason], [137, 'killed']);
  });

  it('token new and token hash', async () => {
    const made = JSON.parse((await gpunix(['token', 'new', '--json'])).stdout);
    assert.match(made.token, /^[0-9a-f]{64}$/);
    assert.equal(made.hash, hashToken(made.token));
    assert.equal((await gpunix(['token', 'hash', made.token])).stdout.trim(), made.hash);
  });
});

describe('reaping exited processes', () => {
  it('an exited process is gone for good once exitedRetentionMs has passed (0: at the next listing)', async () => {
    await assert.rejects(createKernel({ exitedRetentionMs: -1 }), (e: Error & { code?: string }) => e.code === 'GPUNIX_E_BAD_OPTION' && /exitedRetentionMs/.test(e.message));
    const kernel = await createKernel({ exitedRetentionMs: 0, devices: 1 });
    try {
      const live = await kernel.spawn({ name: 'stays' });
      const done = await kernel.spawn({ name: 'reaped' });
      await done.exit(0);
      assert.deepEqual(kernel.ps().map((p) => p.name), ['stays']);
      await assert.rejects(kernel.kill(done.pid), (e: Error & { code?: string }) => e.code === 'GPUNIX_E_NO_SUCH_PROCESS');
      await live.exit(0);
    } finally {
      await kernel.shutdown();
    }
  });
});

describe('top on a terminal', () => {
  it('cuts process names and adapter descriptions so that every line fits the width', () => {
    const row = { pid: 7, tenant: 'alice', name: 'a-training-job-with-a-very-long-descriptive-name-indeed', state: 'running', priority: 'normal', gpuSharePct: 12.5, memoryBytes: 1 << 20, preemptions: 3, p99LatencyUs: null };
    const cut = topTable([row], 90).split('\n');
    assert.ok(cut.every((line) => line.length <= 90), cut.join('\n'));
    assert.match(cut[1], /a-training-job.*…/);
    assert.ok(topTable([row]).includes(row.name), 'piped (no width): nothing is cut');
    const device = { id: 'gpu0', description: 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6), a long adapter description', budgetBytes: 4 * 1024 ** 3, usedBytes: 1 << 20, evictedBytes: 0, utilization: 0.25 };
    const line = deviceSummary([device], 70);
    assert.ok(line.length <= 70, line);
    assert.match(line, /^gpu0 {2}llvmpipe.*… {2}25\.0% busy {2}1\.0 MiB \/ 4\.0 GiB$/);
  });
});
