// Several gpunixd nodes on this machine for the tests of what crosses nodes (live migration,
// shared segments homed on another node): each a real daemon child (`gpunix daemon --config`) in
// its own directory with its own socket, all with the same admin token (each presents it to the
// others: migration.peerToken) and a tenant "lab" (and "other") with the same token everywhere.

import assert from 'node:assert/strict';
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProcessRecord } from '../src/kernel/proc.js';
import { root, waitFor } from './fleetNodes.js';

export const hashOf = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`;
export const adminToken = randomBytes(32).toString('hex');
export const labToken = randomBytes(32).toString('hex');
export const otherToken = randomBytes(32).toString('hex');
export const gpunixBin = join(root, 'bin/gpunix.js');

/** Daemons still running when the test process exits (a failed test) are SIGKILLed. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface Node {
  name: string;
  socket: string;
  dir: string;
  readonly running: boolean;
  log(): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts a gpunixd child (`gpunix daemon --config`) in its own directory; resolves once it listens. */
export async function startNode(name: string, options: { dir?: string; config?: Record<string, unknown> } = {}): Promise<Node> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), `gpunix-node-${name}-`));
  const socket = join(dir, 'gpunixd.sock');
  const config = {
    socket,
    adminTokenHash: hashOf(adminToken),
    tenants: { lab: { tokenHash: hashOf(labToken) }, other: { tokenHash: hashOf(otherToken) } },
    stateFile: join(dir, 'state.json'),
    imageDir: join(dir, 'images'),
    log: { level: 'info' },
    // The admin token this node presents to the node it moves a process to (both have the same).
    migration: { peerToken: adminToken },
    ...options.config,
  };
  const configPath = join(dir, 'gpunixd.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const logPath = join(dir, 'daemon.log');
  // To a file, not a pipe: a daemon must never block on output nobody reads.
  const fd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [gpunixBin, 'daemon', '--config', configPath], { cwd: root, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  live.add(child);
  let running = true;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      running = false;
      live.delete(child);
      resolve();
    }),
  );
  const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const node: Node = {
    name,
    socket,
    dir,
    get running() {
      return running;
    },
    log,
    async kill() {
      if (!running) return;
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (running) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await waitFor(`node ${name}'s daemon listens`, () => existsSync(socket) || !running, 60_000);
  if (!running) throw new Error(`node ${name}'s daemon exited: ${log().slice(-3000)}`);
  return node;
}

/** Runs the gpunix CLI; resolves with its exit code and output. */
export function gpunix(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [gpunixBin, ...args], { cwd: root, encoding: 'utf8', timeout: 180_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The live (not exited) processes `gpunix ps --json` lists on `node` (as the admin). */
export async function ps(node: Node): Promise<ProcessRecord[]> {
  const result = await gpunix('ps', '--json', '--socket', node.socket, '--token', adminToken);
  assert.equal(result.code, 0, `gpunix ps on ${node.name}: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { processes: ProcessRecord[] }).processes.filter((p) => p.state !== 'exited');
}

