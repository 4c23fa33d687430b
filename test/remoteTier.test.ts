// Another node's host memory as a tier for evicted buffers, end to end (docs/memory.md, "Remote
// host memory as a tier"): node a's device budget is below what its two programs hold and its own
// host memory for evicted contents is 0 bytes, so what it evicts goes to node b (which lends host
// memory) and comes back at the next use; the programs (test/programs/running-state.mjs) check
// their results exactly. When b lends nothing, the same goes to a's spill files: nothing is lost.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { SwapCounters } from '../src/kernel/residency.js';
import { root } from './fleetNodes.js';
import { adminToken, gpunix, labToken, Node, startNode } from './peerNodes.js';

const program = join(root, 'test/programs/running-state.mjs');

/** running-state.mjs on `node` for `steps` steps over 2 buffers of 4 MiB; resolves with its output. */
function run(node: Node, name: string, steps: number): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = [program, '--socket', node.socket, '--token', labToken, '--name', name, '--buffers', '2', '--mib', '4', '--steps', String(steps)];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 180_000 }, (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

async function swapOf(node: Node): Promise<SwapCounters> {
  const status = await gpunix('status', '--json', '--socket', node.socket, '--token', adminToken);
  assert.equal(status.code, 0, status.stderr);
  return (JSON.parse(status.stdout) as { stats: { swap: SwapCounters } }).stats.swap;
}

/** Nodes a (borrowing: 10 MiB budget, no host memory for evicted contents) and b (lending `lend`; null: nothing). */
async function pair(lend: string | null): Promise<[Node, Node]> {
  const dirs = { a: mkdtempSync(join(tmpdir(), 'gpunix-tier-a-')), b: mkdtempSync(join(tmpdir(), 'gpunix-tier-b-')) };
  const b = await startNode('b', { dir: dirs.b, config: { node: 'b', ...(lend ? { lendHostMemory: lend } : {}) } });
  const a = await startNode('a', {
    dir: dirs.a,
    config: { node: 'a', peers: { b: b.socket }, kernel: { memoryBudget: '10M', hostMemoryLimit: 0, spillDirectory: join(dirs.a, 'spill') }, remoteTier: { node: 'b', maxBytes: '64M' } },
  });
  return [a, b];
}

describe('remote host memory as a tier', () => {
  const nodes: Node[] = [];
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it("evicted buffers go to the lending node's host memory and come back exact", async () => {
    const [a, b] = await pair('64M');
    nodes.push(a, b);
    const results = await Promise.all([run(a, 'p1', 30), run(a, 'p2', 30)]);
    for (const result of results) assert.match(result.stdout, /^exact$/m, `${result.stdout}\n${result.stderr.slice(-1500)}`);
    const swap = await swapOf(a);
    assert.ok(swap.bytesToRemote > 0, `a sent evicted contents to b (${JSON.stringify(swap)})`);
    assert.equal(swap.bytesSpilled, 0, 'nothing went to spill files while b had room');
    assert.equal(swap.remoteBytes, 0, 'the programs ended: nothing of theirs is kept on b any more');
  });

  it('a lender without room: the same contents go to spill files, nothing lost', async () => {
    const [a, b] = await pair(null);
    nodes.push(a, b);
    const results = await Promise.all([run(a, 'p1', 20), run(a, 'p2', 20)]);
    for (const result of results) assert.match(result.stdout, /^exact$/m, `${result.stdout}\n${result.stderr.slice(-1500)}`);
    const swap = await swapOf(a);
    assert.equal(swap.bytesToRemote, 0);
    assert.ok(swap.bytesSpilled > 0, `a spilled to files instead (${JSON.stringify(swap)})\n${a.log().split('\n').filter((l) => /spill|evicted|another node/.test(l)).slice(-10).join('\n')}`);
  });
});
