// Several gpunixd nodes on this machine for the tests of what crosses nodes (live migration,
// shared segments homed on another node): each a real daemon child (`gpunix daemon --config`) in
// its own directory with its own socket, all with the same admin token (each presents it to the
// others: migration.peerToken) and a tenant "lab" (and "other") with the same token everywhere.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProcessRecord } from '../src/kernel/proc.js';
import { FleetNode, root, startDaemon } from './fleetNodes.js';

export const hashOf = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`;
export const adminToken = randomBytes(32).toString('hex');
export const labToken = randomBytes(32).toString('hex');
export const otherToken = randomBytes(32).toString('hex');
export const gpunixBin = join(root, 'bin/gpunix.js');


/** A node: a gpunixd child (see startDaemon in fleetNodes.ts). */
export type Node = FleetNode;

/** Starts a gpunixd child named `name` in its own directory (or `options.dir`); resolves once it listens. */
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
  return startDaemon(name, dir, config, { adminToken });
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

