// The fleet's store (src/fleet/store.ts) against a real 3-member etcd cluster: commits happen all
// or nothing under their conditions; a watch started from a listing's revision sees every later
// change; leader election hands over when the leader resigns and when it dies (its lease stops
// being renewed); writes keep being acknowledged, none lost, while etcd's own leader is killed; a
// watch handler's error reaches onError; and with etcd gone a lease counts itself lost before etcd
// could expire it, and calls fail FLEET_UNAVAILABLE instead of hanging.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes, GpunixError } from '../src/errors.js';
import type { LeaderRecord } from '../src/fleet/records.js';
import { FleetStore, Leadership, leaseSilenceLimitMs, WatchEvent } from '../src/fleet/store.js';
import { EtcdCluster, memoryBackedDir, startEtcd } from './etcdCluster.js';
import { root, testPrefix, waitFor } from './fleetNodes.js';

describe('fleet store on a 3-member etcd cluster', () => {
  let etcd: EtcdCluster;
  const stores: FleetStore[] = [];
  const connect = async (prefix: string): Promise<FleetStore> => {
    const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix });
    stores.push(store);
    return store;
  };

  before(async () => {
    etcd = await startEtcd({ members: 3, dir: memoryBackedDir() });
  });
  after(async () => {
    for (const store of stores) store.close();
    await etcd?.stop();
  });

  it('commits all or nothing: a failed condition changes no key, and each kind of condition holds or fails as etcd sees it', async () => {
    const store = await connect(testPrefix());
    const [a, b, c] = ['a', 'b', 'c'].map((name) => `${store.keys.prefix}${name}`);
    await store.put(a, { v: 1 });
    await store.put(b, { v: 1 });
    const entryA = (await store.get<{ v: number }>(a))!;
    const entryB = (await store.get<{ v: number }>(b))!;

    // One condition holds (b unchanged), one is stale (a changed since): neither the puts nor the delete happen.
    await store.put(a, { v: 2 });
    const stale = await store.commit({ ifs: [{ key: b, modRevision: entryB.modRevision }, { key: a, modRevision: entryA.modRevision }], puts: [{ key: b, value: { v: 9 } }, { key: c, value: { v: 9 } }], deletes: [a] });
    assert.equal(stale, false, 'a commit on a stale modRevision is refused');
    assert.deepEqual((await store.get(a))?.value, { v: 2 });
    assert.deepEqual((await store.get(b))?.value, { v: 1 }, 'no put of a refused commit happened');
    assert.equal(await store.get(c), null, 'no key of a refused commit was created');

    // absent: holds for a missing key, fails for a present one (even when the other conditions hold).
    const current = (await store.get(a))!;
    assert.equal(await store.commit({ ifs: [{ key: a, modRevision: current.modRevision }, { key: b, absent: true }], puts: [{ key: c, value: 1 }] }), false, 'absent fails on a present key');
    assert.equal(await store.get(c), null);
    assert.equal(await store.commit({ ifs: [{ key: a, modRevision: current.modRevision }, { key: c, absent: true }], puts: [{ key: c, value: 3 }, { key: b, value: { v: 3 } }], deletes: [a] }), true);
    assert.deepEqual([(await store.get(a))?.value, (await store.get(b))?.value, (await store.get(c))?.value], [undefined, { v: 3 }, 3], 'every put and delete of a commit that held happened');

    // lease: holds while the key is held under that lease, fails once the lease is revoked.
    const lease = await store.lease(10);
    const held = `${store.keys.prefix}held`;
    await store.put(held, 'x', lease);
    assert.equal(await store.commit({ ifs: [{ key: held, lease: lease.id }], puts: [{ key: c, value: 4 }] }), true, 'the lease condition holds');
    await lease.revoke();
    assert.equal(await store.get(held), null, 'keys under a revoked lease are gone');
    assert.equal(await store.commit({ ifs: [{ key: held, lease: lease.id }], puts: [{ key: c, value: 5 }] }), false, 'the lease condition fails after the revoke');
    assert.equal((await store.get(c))?.value, 4);

    // No conditions: always happens; deletePrefixes removes a whole subtree.
    await store.put(`${store.keys.prefix}tree/1`, 1);
    await store.put(`${store.keys.prefix}tree/2`, 2);
    assert.equal(await store.commit({ deletePrefixes: [`${store.keys.prefix}tree/`] }), true);
    assert.deepEqual((await store.list(`${store.keys.prefix}tree/`)).entries, []);
  });

  it('a watch started from a listing\'s revision sees every change made after the listing, once each, in order', async () => {
    const store = await connect(testPrefix());
    const writer = await connect(store.keys.prefix);
    const prefix = `${store.keys.prefix}w/`;
    for (let i = 0; i < 5; i++) await store.put(`${prefix}before-${i}`, i);
    const listing = await store.list<number>(prefix);
    assert.equal(listing.entries.length, 5);

    // Changes between the listing and the watch's creation (the window a watcher could miss), and
    // during and after it, from another client.
    const count = 40;
    const writes = (async () => {
      for (let i = 0; i < count; i++) {
        if (i % 10 === 9) await writer.delete(`${prefix}k-${i - 1}`);
        else await writer.put(`${prefix}k-${i}`, i);
      }
    })();
    await new Promise((r) => setTimeout(r, 30));
    const seen: Array<WatchEvent<number>> = [];
    const watch = await store.watch<number>(prefix, listing.revision, (event) => seen.push(event));
    try {
      await writes;
      const expected: string[] = [];
      for (let i = 0; i < count; i++) expected.push(i % 10 === 9 ? `delete k-${i - 1}` : `put k-${i}=${i}`);
      await waitFor('every change has been seen', () => seen.length >= expected.length, 15_000);
      await new Promise((r) => setTimeout(r, 200)); // nothing more arrives (no duplicates)
      const described = seen.map((e) => (e.type === 'put' ? `put ${e.key.slice(prefix.length)}=${e.value}` : `delete ${e.key.slice(prefix.length)}`));
      assert.deepEqual(described, expected, 'exactly the changes after the listing, in order');
      assert.ok(seen.every((e, i) => i === 0 || e.modRevision > seen[i - 1].modRevision), 'revisions increase');
      assert.ok(seen[0].modRevision > listing.revision, 'nothing from before the listing');
    } finally {
      await watch.close();
    }
  });

  it('a watch whose handler throws reports the error through onError and delivers nothing after it', async () => {
    const store = await connect(testPrefix());
    const prefix = `${store.keys.prefix}w/`;
    const { revision } = await store.list(prefix);
    const seen: string[] = [];
    let reported: Error | null = null;
    const watch = await store.watch<number>(
      prefix,
      revision,
      (event) => {
        seen.push(event.key);
        if (event.value === 2) throw new Error('handler failed on 2');
      },
      (error) => (reported = error),
    );
    try {
      for (const v of [1, 2, 3]) await store.put(`${prefix}${v}`, v);
      await waitFor('the handler error is reported', () => reported !== null, 10_000);
      assert.match((reported as Error | null)?.message ?? '', /handler failed on 2/);
      await store.put(`${prefix}4`, 4);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(seen, [`${prefix}1`, `${prefix}2`], 'nothing is delivered after the failed event');
    } finally {
      await watch.close();
    }
  });

  it('leader election: one replica leads; the other takes over when it resigns, and when it dies (its lease no longer renewed)', async () => {
    const prefix = testPrefix();
    const [a, b] = [await connect(prefix), await connect(prefix)];
    const lost: string[] = [];
    const record = (id: string): LeaderRecord => ({ id, since: Date.now() });
    const leaderA = await a.campaign(record('a'), 2, () => lost.push('a'));
    assert.ok(leaderA);
    assert.equal((await a.get<LeaderRecord>(a.keys.leader()))?.value.id, 'a');

    let leaderB: Leadership | null = null;
    let stopB = false;
    const campaignB = b.campaign(record('b'), 2, () => lost.push('b'), () => stopB).then((l) => (leaderB = l));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(leaderB, null, 'b waits while a leads');
    const target = `${prefix}bound`;
    assert.equal(await a.commit({ ifs: [leaderA.condition], puts: [{ key: target, value: 'a' }] }), true, 'the leader\'s commits happen');

    await leaderA.resign();
    await campaignB;
    assert.ok(leaderB, 'b leads after a resigned');
    assert.equal((await b.get<LeaderRecord>(b.keys.leader()))?.value.id, 'b');
    assert.equal(await a.commit({ ifs: [leaderA.condition], puts: [{ key: target, value: 'a-again' }] }), false, 'a deposed leader\'s commit is refused');
    assert.equal((await b.get(target))?.value, 'a');
    await (leaderB as Leadership).resign();

    // Death: a replica in its own process leads, then is SIGKILLed; its lease expires after its TTL.
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { FleetStore } from ${JSON.stringify(join(root, 'dist/src/fleet/store.js'))};
         const store = await FleetStore.connect({ endpoints: ${JSON.stringify(etcd.endpoints)}, prefix: ${JSON.stringify(prefix)} });
         await store.campaign({ id: 'child', since: Date.now() }, 2, () => {});
         console.log('leading');
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('leading') && resolve());
        child.once('exit', (code) => reject(new Error(`the replica process exited (${code}) before leading`)));
      });
      stopB = false;
      const waiting = a.campaign(record('a2'), 2, () => lost.push('a2'));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await a.get<LeaderRecord>(a.keys.leader()))?.value.id, 'child');
      child.kill('SIGKILL');
      const killedAt = Date.now();
      const next = await waiting;
      assert.ok(next, 'a leads after the leader died');
      assert.equal((await a.get<LeaderRecord>(a.keys.leader()))?.value.id, 'a2');
      console.log(`# election: the next replica led ${Date.now() - killedAt} ms after the leader was killed (lease TTL 2 s)`);
      await next.resign();
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    }
  });

  it('keeps acknowledging writes while etcd\'s leader is killed, and loses none of those it acknowledged', async () => {
    const store = await connect(testPrefix());
    const prefix = `${store.keys.prefix}seq/`;
    const acknowledged: number[] = [];
    let failures = 0;
    let longestGapMs = 0;
    let lastAck = Date.now();
    let stop = false;
    // One writer, each write retried until acknowledged (a put of the same value is idempotent).
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        for (;;) {
          try {
            await store.put(`${prefix}${String(i).padStart(6, '0')}`, i);
            break;
          } catch (error) {
            assert.ok(error instanceof GpunixError && error.code === ErrorCodes.FLEET_UNAVAILABLE, `a failed write is FLEET_UNAVAILABLE: ${error}`);
            failures++;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        const now = Date.now();
        longestGapMs = Math.max(longestGapMs, now - lastAck);
        lastAck = now;
        acknowledged.push(i);
      }
    })();
    try {
      await waitFor('some writes are acknowledged', () => acknowledged.length >= 20, 10_000);
      const leader = await etcd.leader();
      await etcd.kill(leader);
      const atKill = acknowledged.length;
      const newLeader = await etcd.leader();
      assert.notEqual(newLeader.name, leader.name);
      await waitFor('writes are acknowledged after the kill', () => acknowledged.length >= atKill + 50, 20_000);
      stop = true;
      await writer;
      await etcd.restart(leader);
    } finally {
      stop = true;
      await writer.catch(() => undefined);
    }
    // The longest gap is about 5 s when a write was in flight through a follower as the leader
    // died: etcd would answer it only after its request timeout (5 s + 2 × the 1 s election
    // timeout); the store's own deadline (CALL_TIMEOUT_MS, 5 s) fails it first and it is retried.
    const stored = new Set((await store.list<number>(prefix)).entries.map((e) => e.value));
    const lostWrites = acknowledged.filter((i) => !stored.has(i));
    console.log(`# etcd leader kill: ${acknowledged.length} writes acknowledged, ${failures} failed attempts retried, lost writes: ${lostWrites.length}, longest gap between acknowledged writes ${longestGapMs} ms`);
    assert.deepEqual(lostWrites, [], 'no acknowledged write is lost');
  });
});

describe('fleet store when etcd goes away', () => {
  it('a lease whose keepalives stop getting through counts itself lost (before etcd could expire it); calls fail FLEET_UNAVAILABLE, never hang', async (t) => {
    const etcd = await startEtcd();
    const store = await FleetStore.connect({ endpoints: etcd.endpoints, prefix: testPrefix() });
    t.after(async () => {
      store.close();
      await etcd.stop();
    });
    const lostErrors: Error[] = [];
    const lease = await store.lease(3, (error) => lostErrors.push(error));
    await store.put(`${store.keys.prefix}held`, 1, lease);
    await etcd.kill(etcd.members[0]);
    const killedAt = Date.now();
    await waitFor('the lease is counted lost', () => lostErrors.length > 0, 30_000);
    console.log(`# lease (TTL 3 s) counted lost ${Date.now() - killedAt} ms after etcd died (limit ${leaseSilenceLimitMs(3)} ms without a keepalive)`);
    assert.ok(lease.lost);
    const [lostError] = lostErrors;
    assert.ok(lostError instanceof GpunixError && lostError.code === ErrorCodes.FLEET_UNAVAILABLE, String(lostError));
    assert.equal(lostErrors.length, 1, 'onLost is heard once');
    await assert.rejects(store.commit({ puts: [{ key: `${store.keys.prefix}x`, value: 1 }] }), (error) => error instanceof GpunixError && error.code === ErrorCodes.FLEET_UNAVAILABLE);
    await assert.rejects(store.get(`${store.keys.prefix}held`), (error) => error instanceof GpunixError && error.code === ErrorCodes.FLEET_UNAVAILABLE);
  });
});
