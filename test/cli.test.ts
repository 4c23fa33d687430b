import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const programs = resolve(root, 'test/programs');

function gpunix(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [resolve(root, 'bin/gpunix.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('the gpunix command', () => {
  it('runs an unmodified WebGPU program and exits with its exit code', () => {
    const result = gpunix('run', '--name', 'exiter', `${programs}/exit-code.mjs`, '3', '--flag-for-the-program');
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stdout, /args: 3 --flag-for-the-program/);
  });

  it('runs an example program to completion with exit code 0', () => {
    const result = gpunix('run', '--priority', 'batch', 'examples/saxpy.mjs', '4');
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /saxpy: 4 iterations over \d+ floats verified/);
  });

  it('exits 1 with the error when the program throws', () => {
    const result = gpunix('run', `${programs}/throws.mjs`);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /the program gave up/);
  });

  it('refuses a missing program with a coded error', () => {
    const result = gpunix('run', `${programs}/no-such-program.mjs`);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /GPUNIX_E_PROGRAM_LOAD: program not found/);
  });

  it('refuses an unknown priority class with usage help', () => {
    const result = gpunix('run', '--priority', 'urgent', 'examples/saxpy.mjs');
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /Allowed choices are realtime, normal, batch/);
  });

  it('lists devices as JSON with adapter description, limits, features and budget', () => {
    const result = gpunix('devices', '--json', '--memory-budget', '1G');
    assert.equal(result.code, 0, result.stderr);
    const devices = JSON.parse(result.stdout);
    assert.equal(devices[0].id, 'gpu0');
    assert.equal(devices[0].budgetBytes, 1024 ** 3);
    assert.equal(typeof devices[0].isFallbackAdapter, 'boolean');
    assert.ok(devices[0].limits.maxComputeWorkgroupsPerDimension >= 65535);
    assert.ok(Array.isArray(devices[0].features));
  });

  it('traces a program: the atom timeline is Chrome trace JSON with the process named', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'gpunix-trace-')), 'trace.json');
    const result = gpunix('trace', '--out', out, '--name', 'tracee', 'examples/saxpy.mjs', '3');
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /wrote \d+ trace events/);
    const trace = JSON.parse(readFileSync(out, 'utf8'));
    const complete = trace.traceEvents.filter((e: { ph: string }) => e.ph === 'X');
    assert.ok(complete.length > 0);
    for (const e of complete) assert.ok(typeof e.ts === 'number' && e.dur >= 0 && e.tid === 1);
    assert.ok(trace.traceEvents.some((e: { ph: string; args: { name: string } }) => e.ph === 'M' && e.args.name === 'tracee (pid 1)'));
  });

  it('checkpoints a running program on a signal and restores it to finish with the same result', async () => {
    const image = join(mkdtempSync(join(tmpdir(), 'gpunix-image-')), 'counter.gpunix');
    const full = gpunix('run', `${programs}/counter.mjs`, 'full');
    assert.equal(full.code, 0, full.stderr);
    const child = spawn(process.execPath, [resolve(root, 'bin/gpunix.js'), 'run', '--checkpoint', image, `${programs}/counter.mjs`, 'first', image], { cwd: root });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    await new Promise<void>((done, fail) => {
      child.stdout.on('data', (d) => String(d).includes('ready') && child.kill('SIGUSR2'));
      child.on('exit', (code) => (code === 0 ? done() : fail(new Error(`exit ${code}: ${stderr}`))));
    });
    assert.match(stderr, /checkpoint of pid 1 written to/);
    const resumed = gpunix('restore', image, `${programs}/resume.mjs`);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(resumed.stdout.trim(), full.stdout.trim());
    const corrupt = gpunix('restore', `${programs}/counter.mjs`, `${programs}/resume.mjs`);
    assert.equal(corrupt.code, 2);
    assert.match(corrupt.stderr, /GPUNIX_E_BAD_IMAGE/);
  });

  it('runs the demo: every example exits normally and everything is released', () => {
    const result = gpunix('demo', '--json');
    assert.equal(result.code, 0, result.stderr);
    const { processes, stats } = JSON.parse(result.stdout);
    assert.ok(processes.length >= 4);
    for (const p of processes) {
      assert.deepEqual(p.exit, { code: 0, reason: 'normal' }, `${p.name} exited normally`);
      assert.ok(p.accounting.dispatches > 0, `${p.name} ran dispatches`);
    }
    assert.equal(stats.liveObjects.total, 0);
    assert.equal(stats.bytesAllocated, 0);
  });
});
