// Live migration of a process between nodes, end to end: two real gpunixd processes (A and B, each
// its own socket, the same admin token, a tenant "lab" with the same token on both), a program
// (test/programs/running-state.mjs, connect() from the client library) computing a running state
// on A, and `gpunix migrate PID --to <B's socket>` through the CLI while it computes. The program
// checks its own results against a CPU oracle at the end (docs/daemon.md, "Moving to another node").

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { root, waitFor } from './fleetNodes.js';
import { adminToken, gpunix, gpunixBin, labToken, Node, ps, startNode } from './peerNodes.js';

const programPath = join(root, 'test/programs/running-state.mjs');

/** The running-state program, started on `node` as tenant lab; computes until stop() (then a few more steps) and checks itself. */
function startProgram(node: Node, name: string, options: { buffers?: number; mib?: number } = {}) {
  const stopFile = join(node.dir, `${name}.stop`);
  const child = spawn(
    process.execPath,
    [programPath, '--socket', node.socket, '--token', labToken, '--name', name, '--buffers', String(options.buffers ?? 3), '--mib', String(options.mib ?? 1), '--stop-file', stopFile],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
  return {
    output: () => stdout,
    /** Its pid on the node it started on, once its first steps are done. */
    pid: async () => Number((await waitFor(`${name} starts computing (${stderr.slice(-500)})`, () => /^pid (\d+)$/m.exec(stdout) ?? undefined, 60_000))[1]),
    /** Tells it to finish; resolves with what it printed once it has exited. */
    async finish() {
      writeFileSync(stopFile, '');
      const code = await done;
      return { code, stdout, stderr };
    },
    kill: () => child.kill('SIGKILL'),
  };
}

/** Asserts the program finished with exact results, on `pid` at the end. */
function assertExact(result: { code: number; stdout: string; stderr: string }, pid: number): void {
  assert.match(result.stdout, /^exact$/m, `the program's results: ${result.stdout}\n${result.stderr.slice(-2000)}`);
  assert.equal(result.code, 0, result.stderr.slice(-2000));
  assert.match(result.stdout, new RegExp(`^final pid ${pid}$`, 'm'));
}

/** The GPUNIX_E_* code a failed CLI command printed (`gpunix: CODE: message`). */
function errorCode(stderr: string): string | undefined {
  return /gpunix: (GPUNIX_E_[A-Z_]+):/.exec(stderr)?.[1];
}

describe('live migration between nodes', () => {
  let a: Node;
  let b: Node;

  before(async () => {
    [a, b] = await Promise.all([startNode('a'), startNode('b')]);
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('moves a computing process from A to B: exact results, gone from A, listed on B', async (t) => {
    const program = startProgram(a, 'mover');
    const pid = await program.pid();
    const moved = await gpunix('migrate', String(pid), '--to', b.socket, '--socket', a.socket, '--token', adminToken, '--json');
    assert.equal(moved.code, 0, moved.stderr);
    const result = JSON.parse(moved.stdout) as { moved: boolean; pid: number; bytes: number; rounds: number; totalMs: number; downtimeMs: number };
    assert.equal(result.moved, true);
    t.diagnostic(`moved ${result.bytes} bytes in ${result.rounds} rounds, ${result.totalMs} ms in all, stopped ${result.downtimeMs} ms (loaded machine, provisional)`);
    assert.ok(result.bytes >= 3 * 1024 * 1024, `the buffers' bytes went over (${result.bytes})`);
    assert.ok((await ps(a)).every((p) => p.name !== 'mover'), 'A no longer lists it');
    const there = (await ps(b)).find((p) => p.pid === result.pid);
    assert.ok(there, `B lists pid ${result.pid}`);
    assert.equal(there.name, 'mover');
    assert.equal(there.tenant, 'lab');
    const finished = await program.finish();
    assertExact(finished, result.pid);
    assert.match(finished.stdout, new RegExp(`^moved unix:${a.socket} unix:${b.socket} pid ${result.pid}$`, 'm'));
  });

  it('moves buffers that span several pieces, and many small buffers, exactly; reports what the stop sent', async () => {
    // 2 x 20 MiB: three 8 MiB pieces each, the last a partial one; 24 x 64 KiB: many reads in flight at once.
    for (const [name, buffers, mib] of [['pieces', 2, 20], ['small', 24, 1 / 16]] as const) {
      const program = startProgram(a, name, { buffers, mib });
      const pid = await program.pid();
      const moved = await gpunix('migrate', String(pid), '--to', b.socket, '--socket', a.socket, '--token', adminToken, '--json');
      assert.equal(moved.code, 0, moved.stderr);
      const result = JSON.parse(moved.stdout) as { pid: number; bytes: number; downtimeMs: number; finalBytes: number; finalMs: number };
      assert.ok(result.bytes >= buffers * mib * 1024 * 1024, `${name}: every buffer's bytes went over (${result.bytes})`);
      assert.ok(Number.isInteger(result.finalBytes) && result.finalBytes >= 0 && result.finalBytes <= result.bytes, `${name}: finalBytes ${result.finalBytes}`);
      assert.ok(result.finalMs >= 0 && result.finalMs <= result.downtimeMs, `${name}: finalMs ${result.finalMs} is part of downtimeMs ${result.downtimeMs}`);
      assertExact(await program.finish(), result.pid);
    }
  });

  it('moves exactly with --rounds 0 (one pre-copy round, then the stop)', async () => {
    const program = startProgram(a, 'one-round');
    const pid = await program.pid();
    const moved = await gpunix('migrate', String(pid), '--to', b.socket, '--rounds', '0', '--socket', a.socket, '--token', adminToken, '--json');
    assert.equal(moved.code, 0, moved.stderr);
    const result = JSON.parse(moved.stdout) as { pid: number; rounds: number };
    assert.equal(result.rounds, 1);
    assertExact(await program.finish(), result.pid);
  });

  it('moves buffers made and destroyed during the copy, and a MAP_READ buffer\'s contents', async () => {
    const stopFile = join(a.dir, 'churn.stop');
    const child = spawn(process.execPath, [join(root, 'test/programs/churn-state.mjs'), '--socket', a.socket, '--token', labToken, '--name', 'churn', '--stop-file', stopFile], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const done = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
    try {
      const pid = Number((await waitFor(`churn starts (${stderr.slice(-500)})`, () => /^pid (\d+)$/m.exec(stdout) ?? undefined, 60_000))[1]);
      const moved = await gpunix('migrate', String(pid), '--to', b.socket, '--socket', a.socket, '--token', adminToken, '--json');
      assert.equal(moved.code, 0, moved.stderr);
      const result = JSON.parse(moved.stdout) as { pid: number; finalBytes: number };
      // The MAP_READ buffer (64 KiB) can only be read at the stop, by mapping it.
      assert.ok(result.finalBytes >= 65536, `the stop sent ${result.finalBytes} bytes`);
      writeFileSync(stopFile, '');
      assertExact({ code: await done, stdout, stderr }, result.pid);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('moves a process twice (A to B, then back to A)', async () => {
    const program = startProgram(a, 'twice');
    const first = await gpunix('migrate', String(await program.pid()), '--to', b.socket, '--socket', a.socket, '--token', adminToken, '--json');
    assert.equal(first.code, 0, first.stderr);
    const onB = (JSON.parse(first.stdout) as { pid: number }).pid;
    const second = await gpunix('migrate', String(onB), '--to', a.socket, '--socket', b.socket, '--token', adminToken, '--json');
    assert.equal(second.code, 0, second.stderr);
    const back = (JSON.parse(second.stdout) as { pid: number }).pid;
    assert.ok((await ps(b)).every((p) => p.name !== 'twice'), 'B no longer lists it');
    assert.ok((await ps(a)).some((p) => p.pid === back && p.name === 'twice' && p.tenant === 'lab'), 'A lists it again');
    const finished = await program.finish();
    assertExact(finished, back);
    assert.equal(finished.stdout.match(/^moved /gm)?.length, 2, finished.stdout);
  });

  it('fails with a coded error when nothing listens at --to; the program goes on', async () => {
    const program = startProgram(a, 'nowhere');
    const pid = await program.pid();
    const result = await gpunix('migrate', String(pid), '--to', join(a.dir, 'nothing-here.sock'), '--socket', a.socket, '--token', adminToken);
    assert.notEqual(result.code, 0);
    assert.match(errorCode(result.stderr) ?? '', /^GPUNIX_E_/, result.stderr);
    assertExact(await program.finish(), pid);
  });

  it('refuses a tenant\'s control session (admin only); the program goes on', async () => {
    const program = startProgram(a, 'tenant-tries');
    const pid = await program.pid();
    const result = await gpunix('migrate', String(pid), '--to', b.socket, '--socket', a.socket, '--token', labToken);
    assert.notEqual(result.code, 0);
    assert.match(errorCode(result.stderr) ?? '', /^GPUNIX_E_/, result.stderr);
    assert.ok((await ps(a)).some((p) => p.pid === pid), 'still on A');
    assertExact(await program.finish(), pid);
  });

  it('refuses a suspended process (GPUNIX_E_BUSY); resumed, it goes on and finishes exact', async () => {
    const program = startProgram(a, 'sleeper');
    const pid = await program.pid();
    const suspended = await gpunix('suspend', String(pid), '--socket', a.socket, '--token', adminToken);
    assert.equal(suspended.code, 0, suspended.stderr);
    const result = await gpunix('migrate', String(pid), '--to', b.socket, '--socket', a.socket, '--token', adminToken);
    assert.equal(errorCode(result.stderr), 'GPUNIX_E_BUSY', result.stderr);
    assert.match(result.stderr, /suspended; resume it/);
    const resumed = await gpunix('resume', String(pid), '--socket', a.socket, '--token', adminToken);
    assert.equal(resumed.code, 0, resumed.stderr);
    assertExact(await program.finish(), pid);
  });

  it('keeps the process on A when B dies during the copy', async () => {
    // Large enough that the copy is still going when B is killed at its first progress report.
    const program = startProgram(a, 'target-dies', { buffers: 6, mib: 32 });
    const pid = await program.pid();
    const migrate = spawn(process.execPath, [gpunixBin, 'migrate', String(pid), '--to', b.socket, '--socket', a.socket, '--token', adminToken, '--json'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    migrate.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    migrate.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number>((resolve) => migrate.once('exit', (code) => resolve(code ?? 1)));
    await waitFor('the copy to B has begun', () => /"event":"progress"/.test(stderr) || migrate.exitCode !== null, 120_000);
    await b.kill();
    const code = await exited;
    assert.notEqual(code, 0, `the migration should fail: ${stdout}`);
    assert.match(errorCode(stderr) ?? '', /^GPUNIX_E_/, stderr);
    assert.ok((await ps(a)).some((p) => p.pid === pid && p.name === 'target-dies'), 'still on A');
    const finished = await program.finish();
    assertExact(finished, pid);
    assert.doesNotMatch(finished.stdout, /^moved /m);
  });
});
