// gpunixd's observability as an operator and a monitoring system see it, against a real daemon on
// the real device: the metrics a DCGM-exporter user looks for (busy time, memory used and free,
// device info, per-process series with their device, preemption/eviction/swap/watchdog counters,
// build info), an exposition `promtool check metrics` accepts, /healthz through a drain, and the
// log: JSON lines without duplicate keys, an audit line per operator action, every process exit
// with its reason, and native libraries' stderr output wrapped as JSON.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect, RemoteProcess } from '../src/index.js';
import { Session } from '../src/client/session.js';
import { hashToken } from '../src/daemon/config.js';
import { Daemon, startDaemon } from '../src/daemon/daemon.js';
import { GpunixError } from '../src/errors.js';
import { eventually } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN = 'admin-token-metrics-0123456789abcdef0123456789';
const ALICE = 'alice-token-metrics-0123456789abcdef0123456789';
const BOB = 'bob-token-metrics-0123456789abcdef0123456789ab';

/** promtool from $PROMTOOL, PATH, or scripts/install-promtool.sh's .tools/bin; null if none. */
function findPromtool(): string | null {
  const candidates = [process.env.PROMTOOL, ...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'promtool')), join(root, '.tools/bin/promtool')];
  return candidates.find((c): c is string => !!c && existsSync(c)) ?? null;
}

/** The top-level keys of one JSON object line, in order, duplicates included (JSON.parse keeps only the last). */
function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(line.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/** Parses JSON log lines, asserting each is one object without a duplicate key. */
function parseLog(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        assert.fail(`a log line that is not JSON: ${line}`);
      }
      const keys = topLevelKeys(line);
      assert.equal(new Set(keys).size, keys.length, `duplicate keys in ${line}`);
      return entry;
    });
}

/** The value of the series `name{labels}` in an exposition (labels as written, in order), or NaN. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

/** One small dispatch and a 4 KiB buffer on a new device of `gpu`: busy time and memory to see. */
async function work(gpu: GPU): Promise<void> {
  const device = await (await gpu.requestAdapter())!.requestDevice();
  const buffer = device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE });
  const module = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> b: array<u32>; @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3u) { b[i.x] = i.x * 3u; }' });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
  pass.dispatchWorkgroups(16);
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
}

describe('gpunixd metrics and logs', () => {
  let dir: string;
  let daemon: Daemon;
  let socket: string;
  let logFile: string;
  let url: string;
  let alice: RemoteProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-metrics-'));
    socket = join(dir, 'gpunixd.sock');
    logFile = join(dir, 'gpunixd.log');
    daemon = await startDaemon({
      socket,
      log: { level: 'info', file: logFile },
      adminTokenHash: hashToken(ADMIN),
      imageDir: join(dir, 'images'),
      metrics: { host: '127.0.0.1', port: 0 },
      tenants: { alice: { tokenHash: hashToken(ALICE) }, bob: { tokenHash: hashToken(BOB) } },
    });
    url = `http://127.0.0.1:${daemon.metricsAddress!.port}`;
    alice = await connect({ socket, token: ALICE, name: 'alice-job' });
    await work(alice.gpu);
  });

  after(async () => {
    await daemon.close('immediate');
    rmSync(dir, { recursive: true, force: true });
  });

  /** The per-device series' labels for gpu0: its id and the backend it was opened on. */
  const gpu0 = (): string => `device="gpu0",backend="${daemon.kernel.describeDevices()[0].backend}"`;

  const scrape = async () => {
    const response = await fetch(`${url}/metrics`);
    assert.equal(response.status, 200);
    return response.text();
  };

  it('serves device busy time, memory used and free, device info, per-process series with their device, and build info', async () => {
    const text = await scrape();
    const busy = sample(text, `gpunix_device_busy_seconds_total{${gpu0()}}`);
    assert.ok(busy > 0, `the device was busy with alice's dispatch (${busy} s)`);
    assert.match(text, /# TYPE gpunix_device_busy_seconds_total counter/);
    const budget = sample(text, `gpunix_device_memory_budget_bytes{${gpu0()}}`);
    const used = sample(text, `gpunix_device_memory_used_bytes{${gpu0()}}`);
    const free = sample(text, `gpunix_device_memory_free_bytes{${gpu0()}}`);
    assert.ok(used >= 4096, `alice's buffer is resident (${used})`);
    assert.equal(free, budget - used, 'free is the budget not used');
    const [device] = daemon.kernel.describeDevices();
    const info = text.split('\n').find((l) => l.startsWith('gpunix_device_info{'));
    assert.ok(info, 'a device info series');
    assert.ok(info.includes(`device="gpu0"`) && info.includes(`backend="${device.backend}"`) && info.endsWith(' 1'), info);
    assert.match(info, /adapter="[^"]*",driver="[^"]*",fallback="(true|false)"/);
    assert.equal(sample(text, `gpunix_process_memory_bytes{pid="${alice.pid}",tenant="alice",name="alice-job",device="gpu0"}`), 4096);
    assert.ok(sample(text, `gpunix_process_gpu_time_seconds_total{pid="${alice.pid}",tenant="alice",name="alice-job",device="gpu0"}`) > 0);
    const build = text.split('\n').find((l) => l.startsWith('gpunix_build_info{'));
    const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
    assert.equal(build, `gpunix_build_info{version="${version}",node="${process.version}",webgpu="0.6.2"} 1`);
    for (const series of [
      `gpunix_device_preemptions_total{${gpu0()}}`,
      `gpunix_device_evictions_total{${gpu0()}}`,
      `gpunix_device_restores_total{${gpu0()}}`,
      `gpunix_device_up{${gpu0()}}`,
      'gpunix_swap_bytes_total{direction="out"}',
      'gpunix_swap_bytes_total{direction="in"}',
      'gpunix_swap_transfer_seconds_total{direction="out"}',
      'gpunix_swap_host_bytes',
      'gpunix_swap_spilled_bytes',
      'gpunix_swap_spill_failures_total',
      'gpunix_watchdog_processes_ended_total',
      'gpunix_watchdog_pieces_excused_total',
      'gpunix_watchdog_bracket_stamps_total',
      'gpunix_watchdog_shared_openings_total',
      'gpunix_watchdog_spent_flag_reads_total',
      'gpunix_watchdog_ended_by_spent_flag_total',
    ]) {
      assert.ok(Number.isFinite(sample(text, series)), `the scrape has ${series}`);
    }
    assert.equal(sample(text, `gpunix_device_up{${gpu0()}}`), 1);
    assert.ok(sample(text, `gpunix_device_processes{${gpu0()}}`) >= 1, "alice's process, alive and having used gpu0, is held by its scheduler");
    // Counters only grow: more work, a larger busy time.
    await work(alice.gpu);
    assert.ok(sample(await scrape(), `gpunix_device_busy_seconds_total{${gpu0()}}`) > busy, 'busy time grew with more work');
  });

  it('counts evictions and swap traffic when a process is swapped out and back', async () => {
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    try {
      await admin.call('SuspendProcess', { pid: alice.pid, swap: true });
      await admin.call('ResumeProcess', { pid: alice.pid });
    } finally {
      admin.close();
    }
    await work(alice.gpu); // the restore happens before its work runs
    const text = await scrape();
    assert.ok(sample(text, `gpunix_device_evictions_total{${gpu0()}}`) >= 1, 'alice\'s buffer was evicted');
    assert.ok(sample(text, 'gpunix_swap_bytes_total{direction="out"}') >= 4096);
    await eventually('the buffer is restored', () => daemon.kernel.stats().devices[0].restores >= 1);
    assert.ok(sample(await scrape(), `gpunix_device_restores_total{${gpu0()}}`) >= 1);
  });

  it('passes promtool check metrics', async (t) => {
    const promtool = findPromtool();
    if (!promtool) {
      t.skip('promtool not found ($PROMTOOL, PATH or .tools/bin): run scripts/install-promtool.sh (Debian\'s prometheus package, a 19 MB download)');
      return;
    }
    const checked = spawnSync(promtool, ['check', 'metrics'], { input: await scrape(), encoding: 'utf8' });
    assert.equal(checked.status, 0, `promtool: ${checked.stdout}${checked.stderr}`);
    assert.equal(`${checked.stdout}${checked.stderr}`.trim(), '', 'promtool has nothing to say');
  });

  it('answers /healthz with 200 ok while serving', async () => {
    const response = await fetch(`${url}/healthz`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), 'ok\n');
    assert.equal((await fetch(`${url}/nothing`)).status, 404);
  });

  it('logs an audit line for every operator action, and every process exit with its reason', async () => {
    const admin = await Session.open({ socket, token: ADMIN }, { role: 'control' });
    const bob = await Session.open({ socket, token: BOB }, { role: 'control' });
    const victim = await connect({ socket, token: BOB, name: 'bob-job' });
    let finishedPid = 0;
    let savedPid = 0;
    try {
      await admin.call('ReniceProcess', { pid: alice.pid, options: { priority: 'batch' } });
      await admin.call('SuspendProcess', { pid: alice.pid, swap: false });
      await admin.call('ResumeProcess', { pid: alice.pid });
      const saved = await connect({ socket, token: ALICE, name: 'alice-saved' });
      await (await saved.gpu.requestAdapter())!.requestDevice();
      savedPid = saved.pid;
      await admin.call('CheckpointProcess', { pid: saved.pid, path: 'saved.img', options: {} });
      await saved.exit(0);
      await admin.call('AddTenant', { name: 'carol', quota: { maxProcesses: 2 } });
      await admin.call('UpdateTenant', { name: 'carol', quota: { maxProcesses: 3 }, rotateToken: true });
      await admin.call('RemoveTenant', { name: 'carol' });
      await assert.rejects(bob.call('KillProcess', { pid: alice.pid }), (error: unknown) => error instanceof GpunixError && error.code === 'GPUNIX_E_FORBIDDEN');
      await bob.call('KillProcess', { pid: victim.pid });
      assert.equal((await victim.ended)?.reason, 'killed');
      const finished = await connect({ socket, token: BOB, name: 'bob-done' });
      finishedPid = finished.pid;
      await finished.exit(3);
    } finally {
      admin.close();
      bob.close();
    }
    const exitLogged = (pid: number) => parseLog(readFileSync(logFile, 'utf8')).some((e) => e.msg === 'process exited' && e.gpid === pid);
    await eventually('the exits are logged', () => exitLogged(victim.pid) && exitLogged(finishedPid));
    const entries = parseLog(readFileSync(logFile, 'utf8'));
    for (const entry of entries) {
      assert.equal(entry.pid, process.pid, 'pid is always the daemon\'s OS pid');
      assert.equal(entry.name, 'gpunixd');
    }
    const audits = entries.filter((e) => typeof e.audit === 'string');
    const find = (action: string, check: (e: Record<string, unknown>) => boolean = () => true) => {
      const found = audits.find((e) => e.audit === action && check(e));
      assert.ok(found, `an audit line for ${action}: ${JSON.stringify(audits)}`);
      return found;
    };
    const renice = find('renice');
    assert.equal(renice.actor, 'admin');
    assert.equal(renice.gpid, alice.pid);
    assert.equal(renice.targetTenant, 'alice');
    assert.equal(renice.result, 'ok');
    assert.equal(renice.transport, 'unix');
    assert.equal(typeof renice.session, 'number');
    assert.deepEqual(renice.args, { options: { priority: 'batch' } });
    find('suspend', (e) => e.gpid === alice.pid);
    find('resume', (e) => e.gpid === alice.pid);
    find('checkpoint', (e) => e.gpid === savedPid && e.result === 'ok' && (e.args as { path?: string }).path === 'saved.img');
    find('tenants add', (e) => e.targetTenant === 'carol' && e.result === 'ok');
    find('tenants set', (e) => e.targetTenant === 'carol' && (e.args as { rotateToken?: boolean }).rotateToken === true);
    find('tenants remove', (e) => e.targetTenant === 'carol');
    const refused = find('kill', (e) => e.gpid === alice.pid);
    assert.equal(refused.actor, 'tenant');
    assert.equal(refused.tenant, 'bob');
    assert.equal(refused.result, 'GPUNIX_E_FORBIDDEN');
    assert.equal(refused.targetTenant, 'alice', 'the operator reading the log sees whose process bob tried to kill');
    find('kill', (e) => e.gpid === victim.pid && e.result === 'ok' && e.targetName === 'bob-job');
    const exit = entries.find((e) => e.msg === 'process exited' && e.gpid === victim.pid);
    assert.ok(exit, 'the kill is logged as an exit');
    assert.equal(exit.reason, 'killed');
    assert.equal(exit.processName, 'bob-job');
    const exited = entries.find((e) => e.msg === 'process exited' && e.gpid === finishedPid);
    assert.deepEqual([exited?.reason, exited?.code, exited?.level], ['error', 3, 40], 'an exit with a nonzero code is a warning');
    const text = await scrape();
    assert.ok(sample(text, 'gpunix_process_exits_total{reason="killed"}') >= 1, 'the kill is counted');
    assert.ok(sample(text, 'gpunix_process_exits_total{reason="error"}') >= 1, 'the exit with code 3 is counted');
    assert.equal(exit.tenant, 'bob');
    assert.equal(typeof exit.code, 'number');
    assert.ok(!readFileSync(logFile, 'utf8').includes(ADMIN) && !readFileSync(logFile, 'utf8').includes(BOB), 'no token is logged');
  });
});

describe('gpunixd /healthz through a drain', () => {
  it('answers 503 draining once a drain has begun', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-health-'));
    const socket = join(dir, 'gpunixd.sock');
    const daemon = await startDaemon({ socket, log: { level: 'silent' }, anonymousTenant: 'default', metrics: { host: '127.0.0.1', port: 0 } });
    try {
      const url = `http://127.0.0.1:${daemon.metricsAddress!.port}/healthz`;
      assert.equal((await fetch(url)).status, 200);
      const job = await connect({ socket, name: 'draining-job' });
      const closed = daemon.close('drain', 30_000);
      const response = await fetch(url);
      assert.equal(response.status, 503);
      assert.equal(await response.text(), 'draining\n');
      await job.exit(0);
      await closed;
    } finally {
      await daemon.close('immediate');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gpunixd as a program: native stderr', () => {
  it('wraps what native code writes to fd 2 as JSON lines, and audits the stop signal', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-stderr-'));
    // The daemon as `gpunix daemon` runs it, plus a raw write to fd 2 (what Dawn's fprintf does).
    const script = join(dir, 'daemon.mjs');
    writeFileSync(
      script,
      `import { writeSync } from 'node:fs';
import { installSignalHandlers, startDaemon } from ${JSON.stringify(join(root, 'dist/src/daemon/daemon.js'))};
const daemon = await startDaemon({ socket: ${JSON.stringify(join(dir, 'd.sock'))}, anonymousTenant: 'default' }, { ownsProcess: true });
installSignalHandlers(daemon);
writeSync(2, 'Warning: a native library wrote this\\nand this, with "quotes"\\n');
daemon.log('info', 'ready for the test');
await daemon.closed;
process.exit(0);
`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    try {
      await eventually('the daemon is up', () => stderr.includes('ready for the test'), 60_000);
      child.kill('SIGTERM');
      // The relay writes the last lines after the daemon exits, then closes the pipe.
      await new Promise<void>((resolve) => child.stderr.once('end', () => resolve()));
    } finally {
      child.kill('SIGKILL');
    }
    const entries = parseLog(stderr);
    const native = entries.filter((e) => e.source === 'stderr');
    assert.deepEqual(
      native.filter((e) => String(e.msg).includes('native library') || String(e.msg).includes('quotes')).map((e) => [e.level, e.msg, e.pid]),
      [
        [40, 'Warning: a native library wrote this', child.pid],
        [30, 'and this, with "quotes"', child.pid],
      ],
    );
    // Dawn's own warnings at device open (lavapipe prints some), if any, are wrapped the same way.
    assert.ok(entries.every((e) => e.name === 'gpunixd' && e.pid === child.pid), 'every line is the daemon\'s');
    assert.ok(entries.some((e) => e.audit === 'drain' && e.actor === 'signal' && e.signal === 'SIGTERM'), 'the SIGTERM is audited');
    assert.ok(entries.some((e) => e.msg === 'gpunixd stopped'), 'the last line came through after the daemon exited');
    rmSync(dir, { recursive: true, force: true });
  });
});
