import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const programs = resolve(root, 'test/programs');

function gpunix(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [resolve(root, 'bin/gpunix.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The same, asynchronously: several commands at once. */
function gpunixAsync(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [resolve(root, 'bin/gpunix.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 }, (error, stdout, stderr) => {
      done({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** stderr less Dawn's own warnings (printed when a device opens; not gpunix's output). */
const ownLines = (stderr: string): string[] => stderr.split('\n').filter((line) => line !== '' && !line.startsWith('Warning: '));

/** Asserts a command-line mistake: exit 1, nothing on stdout, one line naming the command's --help. */
function usageError(result: { code: number; stdout: string; stderr: string }, pattern: RegExp, help: string): void {
  assert.equal(result.code, 1, result.stderr);
  assert.equal(result.stdout, '');
  const lines = ownLines(result.stderr);
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0], pattern);
  assert.ok(lines[0].endsWith(`see \`${help} --help\``), lines[0]);
}

/** Asserts a coded refusal: exit 2 and, besides any `extra` lines before it, one line `gpunix: CODE: ...`. */
function coded(result: { code: number | null; stdout: string; stderr: string }, code: string, pattern: RegExp, extra = 0): void {
  assert.equal(result.code, 2, result.stderr);
  const lines = ownLines(result.stderr);
  assert.equal(lines.length, 1 + extra, result.stderr);
  assert.match(lines[lines.length - 1], new RegExp(`^gpunix: ${code}: `));
  assert.match(lines[lines.length - 1], pattern);
  assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack trace');
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

  it('answers bad flags, unknown verbs and kill(1) habits with one line naming --help', async () => {
    const [flag, close, change, remove, nine, dashS, verb, stop, column, changeBare] = await Promise.all([
      gpunixAsync('ps', '--x'),
      gpunixAsync('ps', '--tenat', 'a'),
      gpunixAsync('tenants', 'change', 'alice', '--weight', '2'),
      gpunixAsync('tenants', 'rm'),
      gpunixAsync('kill', '-9', '3'),
      gpunixAsync('kill', '-s', 'TERM', '3'),
      gpunixAsync('tenantz'),
      gpunixAsync('stop', '3'),
      gpunixAsync('ps', '-o', 'pid,colour'),
      gpunixAsync('tenants', 'delete', 'alice'),
    ]);
    usageError(flag, /^error: unknown option '--x'/, 'gpunix ps');
    usageError(close, /did you mean '--tenant'\?/, 'gpunix ps');
    usageError(change, /unknown command 'change' for `gpunix tenants` \(did you mean 'set'\?\)/, 'gpunix tenants');
    usageError(remove, /missing required argument 'name'/, 'gpunix tenants remove'); // rm is remove
    usageError(nine, /gpunix kill takes no signal.*gpunix suspend PID/, 'gpunix kill');
    usageError(dashS, /gpunix kill takes no signal/, 'gpunix kill');
    usageError(verb, /unknown command 'tenantz'.*did you mean 'tenants'\?/, 'gpunix');
    usageError(stop, /did you mean 'suspend'\?/, 'gpunix');
    usageError(column, /no column "colour"; columns: pid, tenant, name/, 'gpunix ps');
    usageError(changeBare, /unknown command 'delete' for `gpunix tenants` \(did you mean 'remove'\?\)/, 'gpunix tenants');
  });

  it('refuses programs that cannot load, and options that would be ignored, with one coded line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-load-'));
    const broken = join(dir, 'broken.mjs');
    writeFileSync(broken, 'const ok = 1;\nconst broken = ;\n');
    mkdirSync(join(dir, 'adir'));
    const nowhere = join(dir, 'no-daemon.sock');
    const [directory, syntax, remoteMissing, remoteCheckpoint, traceWithPid, badConfig] = await Promise.all([
      gpunixAsync('run', join(dir, 'adir')),
      gpunixAsync('run', broken),
      // Checked before connecting: no daemon needed, and none would be left with a process.
      gpunixAsync('run', '--connect', '--socket', nowhere, join(dir, 'nosuch.mjs')),
      gpunixAsync('run', '--connect', '--socket', nowhere, '--checkpoint', join(dir, 'x.img'), 'examples/saxpy.mjs'),
      gpunixAsync('trace', '--pid', '3', 'examples/saxpy.mjs'),
      (() => {
        const config = join(dir, 'bad.json');
        writeFileSync(config, JSON.stringify({ socket: join(dir, 'd.sock'), tenants: { bob: { weight: 2 } } }));
        return gpunixAsync('daemon', '--config', config);
      })(),
    ]);
    coded(directory, 'GPUNIX_E_PROGRAM_LOAD', /adir is a directory/);
    // As node shows a syntax error: file:line, the line, a caret; then the coded line.
    coded(syntax, 'GPUNIX_E_PROGRAM_LOAD', /broken\.mjs: SyntaxError: Unexpected token ';'/, 3);
    assert.match(syntax.stderr, /broken\.mjs:2\nconst broken = ;\n\s+\^/);
    coded(remoteMissing, 'GPUNIX_E_PROGRAM_LOAD', /program not found/);
    coded(remoteCheckpoint, 'GPUNIX_E_BAD_OPTION', /--checkpoint .*gpunix checkpoint PID PATH/);
    coded(traceWithPid, 'GPUNIX_E_BAD_OPTION', /--pid: only for the daemon's timeline/);
    coded(badConfig, 'GPUNIX_E_BAD_CONFIG', /field "tenants\.bob\.tokenHash" is required \(a string\)/);
    assert.doesNotMatch(badConfig.stderr, /received undefined/);
  });

  it('a metrics port already in use: one line, GPUNIX_E_BUSY', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-busy-'));
    const holder = createServer();
    await new Promise<void>((done) => holder.listen(0, '127.0.0.1', done));
    const port = (holder.address() as { port: number }).port;
    try {
      const config = join(dir, 'gpunixd.json');
      writeFileSync(config, JSON.stringify({ socket: join(dir, 'gpunixd.sock'), metrics: { host: '127.0.0.1', port }, log: { level: 'error' } }));
      const result = await gpunixAsync('daemon', '--config', config);
      // Once the devices open, the daemon's stderr is JSON lines (docs/daemon.md): the coded line is one log record's msg.
      const lines = ownLines(result.stderr).map((line) => (line.startsWith('{') ? String(JSON.parse(line).msg) : line));
      assert.equal(result.code, 2, result.stderr);
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0], new RegExp(`^gpunix: GPUNIX_E_BUSY: cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`));
    } finally {
      holder.close();
    }
  });

  it("runs the README's embedded example as it is written", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const block = /Embedded API[^\n]*\n\n```js\n([\s\S]*?)```/.exec(readme);
    assert.ok(block, 'the README has the embedded example');
    const dir = mkdtempSync(join(tmpdir(), 'gpunix-readme-'));
    const source = block[1].replace(/from 'gpunix'/, `from '${pathToFileURL(join(root, 'dist/src/index.js')).href}'`);
    writeFileSync(join(dir, 'example.mjs'), source);
    const result = spawnSync(process.execPath, [join(dir, 'example.mjs')], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.ok(readFileSync(join(dir, 'job.img')).length > 0, 'the example wrote its checkpoint');
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
    const csv = gpunix('devices', '--format', 'csv', '--no-header', '--memory-budget', '1G');
    assert.equal(csv.code, 0, csv.stderr);
    const line = csv.stdout.trim().split('\n')[0];
    assert.match(line, /^gpu0,/, 'no header line');
    assert.ok(line.includes(`,${1024 ** 3},`), `the budget as a raw byte count: ${line}`);
  });

  it('traces a program: the atom timeline is Chrome trace JSON with the process named', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'gpunix-trace-')), 'trace.json');
    const result = gpunix('trace', '--out', out, '--name', 'tracee', '--mem-report', 'examples/saxpy.mjs', '3');
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /wrote \d+ trace events/);
    assert.match(result.stderr, /PID\s+NAME\s+RESIDENT\s+EVICTED/, 'trace takes run\'s --mem-report');
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
    coded(gpunix('restore', join(dirname(image), 'nosuch.gpunix'), `${programs}/resume.mjs`), 'GPUNIX_E_[A-Z_]+', /nosuch\.gpunix/);
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
