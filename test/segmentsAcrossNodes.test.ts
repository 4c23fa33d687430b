// Shared segments across nodes, end to end (docs/memory.md, "Shared segments across nodes"): two
// real gpunixd nodes "a" and "b" that know each other (node, peers), a producer on one node and a
// consumer on the other exchanging rounds through segment "frames" homed on a, in both directions
// (a's local processes use the segment itself; b's use its copy, "frames@a"); another tenant never
// reaches it; an unknown home is an error on the program's device, not a crash.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { root } from './fleetNodes.js';
import { labToken, Node, otherToken, startNode } from './peerNodes.js';

const program = join(root, 'test/programs/segment-peer.mjs');

/** Runs segment-peer.mjs; resolves with what it printed. */
function peer(role: string, node: Node, token: string, segment: string, rounds: number, dir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [program, role, node.socket, token, segment, String(rounds), dir], { cwd: root, encoding: 'utf8', timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('shared segments across nodes', () => {
  let a: Node;
  let b: Node;

  before(async () => {
    const dirs = { a: mkdtempSync(join(tmpdir(), 'gpunix-seg-a-')), b: mkdtempSync(join(tmpdir(), 'gpunix-seg-b-')) };
    const socket = (name: 'a' | 'b') => join(dirs[name], 'gpunixd.sock');
    [a, b] = await Promise.all([
      startNode('a', { dir: dirs.a, config: { node: 'a', peers: { b: socket('b') } } }),
      startNode('b', { dir: dirs.b, config: { node: 'b', peers: { a: socket('a') } } }),
    ]);
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('a consumer on b sees, at its next submit, what a producer on a wrote before its onSubmittedWorkDone resolved', async () => {
    const rounds = mkdtempSync(join(tmpdir(), 'gpunix-seg-rounds-'));
    const [producer, consumer] = await Promise.all([peer('producer', a, labToken, 'frames', 3, rounds), peer('consumer', b, labToken, 'frames@a', 3, rounds)]);
    assert.equal(producer.code, 0, producer.stderr);
    assert.match(consumer.stdout, /^consumer exact$/m, `${consumer.stdout}\n${consumer.stderr.slice(-1500)}`);
    assert.match(a.log(), /a remote node attached a shared segment/);
    assert.match(b.log(), /attached a shared segment homed on another node/);
  });

  it('and the other way: a producer on b writes the copy, a consumer on a reads the home', async () => {
    const rounds = mkdtempSync(join(tmpdir(), 'gpunix-seg-rounds-'));
    const [producer, consumer] = await Promise.all([peer('producer', b, labToken, 'frames@a', 3, rounds), peer('consumer', a, labToken, 'frames@a', 3, rounds)]);
    assert.equal(producer.code, 0, producer.stderr);
    assert.match(consumer.stdout, /^consumer exact$/m, `${consumer.stdout}\n${consumer.stderr.slice(-1500)}`);
  });

  it("another tenant's frames@a is its own segment: it never sees lab's data", async () => {
    const rounds = mkdtempSync(join(tmpdir(), 'gpunix-seg-rounds-'));
    // lab's producer writes one round and waits for a read that never comes: its segment holds data meanwhile.
    const producer = peer('producer', a, labToken, 'frames', 2, rounds);
    const wrote = join(rounds, 'wrote.1');
    while (!existsSync(wrote)) await new Promise((resolve) => setTimeout(resolve, 20));
    const lab = await peer('peek', b, labToken, 'frames@a', 1, rounds);
    assert.match(lab.stdout, /^data$/m, `lab on b sees lab's segment: ${lab.stdout}${lab.stderr.slice(-1000)}`);
    const other = await peer('peek', b, otherToken, 'frames@a', 1, rounds);
    assert.match(other.stdout, /^zeros$/m, `tenant other gets a segment of its own: ${other.stdout}${other.stderr.slice(-1000)}`);
    writeFileSync(join(rounds, 'read.1'), '');
    writeFileSync(join(rounds, 'read.2'), '');
    assert.equal((await producer).code, 0);
  });

  it('a home this node does not know is an error on the device, and the program goes on', async () => {
    const result = await peer('peek', b, labToken, 'frames@nowhere', 1, tmpdir());
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /uncaptured: .*knows no node "nowhere"/, result.stdout);
  });
});
