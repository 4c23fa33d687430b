// The fleet scheduler's decisions as pure functions: capacity accounting (exact shares),
// gang placement (best fit against first fit, constraints, all-or-nothing), queues (limits,
// borrowing, fair order) and reclaim (whom to suspend). No etcd, no GPU.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Capacity, MemberPlacement } from '../src/fleet/capacity.js';
import { explainUnplaceable, firstFitGang, placeGang } from '../src/fleet/placement.js';
import { QueueTree } from '../src/fleet/queues.js';
import { selectVictims } from '../src/fleet/reclaim.js';
import type { JobRecord, NodeRecord } from '../src/fleet/records.js';
import { JobSpec, JobSpecInput, parseJobSpec, parseQueueSpec, QueueSpecInput } from '../src/fleet/spec.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function node(name: string, devices = 1, options: { labels?: Record<string, string>; memory?: number; health?: NodeRecord['health'] } = {}): NodeRecord {
  return {
    name,
    labels: options.labels ?? {},
    devices: Array.from({ length: devices }, (_, index) => ({
      index,
      name: `dev${index}`,
      backend: 'vulkan',
      featureLevel: 'core',
      memoryBudget: options.memory ?? 8 * GiB,
      maxBufferSize: GiB,
      maxStorageBufferBindingSize: GiB,
    })),
    health: options.health ?? 'ready',
    address: {},
    used: [],
    startedAt: 0,
    updatedAt: 0,
  };
}

function spec(input: Partial<JobSpecInput> = {}): JobSpec {
  return parseJobSpec({ tenant: 't', program: '/p.js', memory: 256 * MiB, ...input });
}

function job(id: string, input: Partial<JobSpecInput> = {}, submittedAt = 0): JobRecord {
  return { id, spec: spec(input), phase: 'pending', generation: 0, placement: [], submittedAt, updatedAt: submittedAt, restarts: 0, suspensions: 0 };
}

function fleet(...records: NodeRecord[]): Capacity {
  const capacity = new Capacity();
  for (const record of records) capacity.setNode(record);
  return capacity;
}

function queues(...specs: QueueSpecInput[]): QueueTree {
  return new QueueTree(specs.map(parseQueueSpec));
}

/** Every device's free share and memory, to check that nothing changed. */
function snapshot(capacity: Capacity): string {
  const out: string[] = [];
  for (const record of capacity.nodes()) for (const d of record.devices) out.push(`${record.name}/${d.index}:${JSON.stringify(capacity.free(record.name, d.index))}`);
  return out.join(' ');
}

const nodesOf = (placement: MemberPlacement[] | null): string[] => (placement ?? []).map((m) => m.node);

/** A small deterministic generator (mulberry32), so the mixed stream is the same every run. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The best-fit rule, written the slow and obvious way: every device with room, ranked by (free share,
// node free share, free memory, name order), filled in that order (spread: each node's best device).
// `only`: the nodes that may take it (nodeSelector, a sameLabel group).
function reference(s: JobSpec, capacity: Capacity, only: (record: NodeRecord) => boolean = () => true): MemberPlacement[] | null {
  const share = Math.round(s.share * 1e6);
  const rows: Array<{ node: string; device: number; k: number; a: number; b: number; c: number; rank: number }> = [];
  let rank = 0;
  for (const record of capacity.nodes()) {
    if (record.health !== 'ready' || !only(record)) continue;
    const frees = record.devices.map((d) => capacity.free(record.name, d.index));
    const nodeFree = frees.reduce((sum, f) => sum + Math.max(0, Math.round(f.share * 1e6)), 0);
    const fitting = record.devices
      .map((d, i) => ({ node: record.name, device: d.index, a: Math.round(frees[i].share * 1e6), b: nodeFree, c: frees[i].memory, rank: rank++ }))
      .map((row) => ({ ...row, k: Math.min(Math.floor(row.a / share), Math.floor(row.c / s.memory)) }))
      .filter((row) => row.k > 0);
    fitting.sort((x, y) => x.a - y.a || x.c - y.c || x.rank - y.rank);
    if (s.placement.spread) rows.push(...fitting.slice(0, 1).map((row) => ({ ...row, k: 1 })));
    else rows.push(...fitting);
  }
  rows.sort((x, y) => x.a - y.a || x.b - y.b || x.c - y.c || x.rank - y.rank);
  const out: MemberPlacement[] = [];
  for (const row of rows) for (let i = 0; i < row.k && out.length < s.gang; i++) out.push({ node: row.node, device: row.device });
  return out.length === s.gang ? out : null;
}

/** Free share units of the ready nodes `only` takes. */
function freeShareOf(capacity: Capacity, only: (record: NodeRecord) => boolean): number {
  let free = 0;
  for (const record of capacity.nodes()) {
    if (record.health !== 'ready' || !only(record)) continue;
    for (const d of record.devices) free += Math.max(0, Math.round(capacity.free(record.name, d.index).share * 1e6));
  }
  return free;
}

/** sameNode: of the ready nodes `only` takes that have room for the whole gang, the one with the least free share (ties: name order); best fit on it. */
function referenceOneNode(s: JobSpec, capacity: Capacity, only: (record: NodeRecord) => boolean): MemberPlacement[] | null {
  let best: MemberPlacement[] | null = null;
  let bestFree = Infinity;
  for (const record of capacity.nodes()) {
    if (record.health !== 'ready' || !only(record)) continue;
    const placement = reference(s, capacity, (r) => r.name === record.name);
    const free = freeShareOf(capacity, (r) => r.name === record.name);
    if (placement !== null && free < bestFree) {
      best = placement;
      bestFree = free;
    }
  }
  return best;
}

/** The reference with sameLabel, sameNode and nodeSelector: each label group in value order, the one with the least free share (ready matching nodes) that takes the gang. */
function referenceConstrained(s: JobSpec, capacity: Capacity): MemberPlacement[] | null {
  const matches = (record: NodeRecord) => Object.entries(s.placement.nodeSelector ?? {}).every(([k, v]) => record.labels[k] === v);
  const label = s.placement.sameLabel;
  const pick = (only: (record: NodeRecord) => boolean) => (s.placement.sameNode && s.gang > 1 ? referenceOneNode(s, capacity, only) : reference(s, capacity, only));
  if (label === undefined) return pick(matches);
  const values = [...new Set([...capacity.nodes()].map((r) => r.labels[label]).filter((v) => v !== undefined))].sort();
  let best: MemberPlacement[] | null = null;
  let bestFree = Infinity;
  for (const value of values) {
    const inGroup = (record: NodeRecord) => record.labels[label] === value && matches(record);
    const placement = pick(inGroup);
    if (placement === null) continue;
    const free = freeShareOf(capacity, inGroup);
    if (free < bestFree) {
      best = placement;
      bestFree = free;
    }
  }
  return best;
}

describe('capacity', () => {
  it('keeps shares exact: ten members of 0.1 fill one device, and 0.1 + 0.2 fill what 0.3 leaves', () => {
    const capacity = fleet(node('a'));
    const ten = placeGang(spec({ gang: 10, share: 0.1, memory: 1 }), capacity);
    assert.deepEqual(ten, Array.from({ length: 10 }, () => ({ node: 'a', device: 0 })));
    capacity.reserve({ share: 0.1, memory: 1 }, ten!);
    assert.equal(capacity.free('a', 0).share, 0);
    assert.equal(placeGang(spec({ share: 0.1, memory: 1 }), capacity), null, 'an eleventh member does not fit');
    assert.equal(capacity.fragmentation().partial, 0, 'the device is full, not partly used');

    const other = fleet(node('b'));
    other.reserve({ share: 0.7, memory: 1 }, [{ node: 'b', device: 0 }]);
    for (const share of [0.1, 0.2]) {
      const placement = placeGang(spec({ share, memory: 1 }), other);
      assert.deepEqual(placement, [{ node: 'b', device: 0 }], `${share} fits`);
      other.reserve({ share, memory: 1 }, placement!);
    }
    assert.equal(other.free('b', 0).share, 0);
  });

  it('keeps usage of a node that is gone until released, and applies a reservation made before its node appears', () => {
    const capacity = fleet(node('a'));
    capacity.reserve({ share: 0.5, memory: GiB }, [{ node: 'a', device: 0 }]);
    capacity.removeNode('a');
    capacity.reserve({ share: 0.25, memory: GiB }, [{ node: 'b', device: 0 }]);
    capacity.setNode(node('a'));
    capacity.setNode(node('b'));
    assert.deepEqual(capacity.free('a', 0), { share: 0.5, memory: 7 * GiB });
    assert.deepEqual(capacity.free('b', 0), { share: 0.75, memory: 7 * GiB });
    capacity.removeNode('a');
    capacity.release({ share: 0.5, memory: GiB }, [{ node: 'a', device: 0 }]);
    capacity.setNode(node('a'));
    assert.deepEqual(capacity.free('a', 0), { share: 1, memory: 8 * GiB });
  });

  it('keeps every usage across many nodes leaving (the device table is compacted)', () => {
    const capacity = fleet(...Array.from({ length: 3000 }, (_, i) => node(`n${i}`)));
    for (let i = 0; i < 3000; i++) capacity.reserve({ share: 0.25, memory: i + 1 }, [{ node: `n${i}`, device: 0 }]);
    for (let i = 0; i < 2500; i++) capacity.removeNode(`n${i}`);
    capacity.setNode(node('n7'));
    for (const i of [7, 2500, 2999]) assert.deepEqual(capacity.free(`n${i}`, 0), { share: 0.75, memory: 8 * GiB - i - 1 }, `n${i}`);
    assert.equal([...capacity.nodes()].length, 501);
    assert.deepEqual(placeGang(spec({ share: 1 }), capacity), null);
    assert.deepEqual(placeGang(spec({ share: 0.75 }), capacity), [{ node: 'n2999', device: 0 }], 'equal shares: the least free memory');
  });

  it('clone and trial leave the original as it was', () => {
    const capacity = fleet(node('a', 2), node('b'));
    capacity.reserve({ share: 0.5, memory: GiB }, [{ node: 'a', device: 1 }]);
    const before = snapshot(capacity);
    const copy = capacity.clone();
    copy.reserve({ share: 0.5, memory: GiB }, [{ node: 'b', device: 0 }]);
    copy.setNode(node('c'));
    copy.removeNode('a');
    assert.equal(snapshot(capacity), before);
    assert.equal([...capacity.nodes()].length, 2);
    capacity.trial(() => {
      capacity.release({ share: 0.5, memory: GiB }, [{ node: 'a', device: 1 }]);
      assert.equal(capacity.free('a', 1).share, 1);
    });
    assert.equal(snapshot(capacity), before);
  });

  it('fits: whether members could run where a placement says (a suspended job resuming in place)', () => {
    const capacity = fleet(node('a'), node('b', 1, { health: 'unhealthy' }));
    const two = [
      { node: 'a', device: 0 },
      { node: 'a', device: 0 },
    ];
    assert.equal(capacity.fits({ share: 0.5, memory: GiB }, two), true);
    capacity.reserve({ share: 0.25, memory: 1 }, [{ node: 'a', device: 0 }]);
    assert.equal(capacity.fits({ share: 0.5, memory: GiB }, two), false, 'both members together need the whole device');
    assert.equal(capacity.fits({ share: 0.5, memory: GiB }, [{ node: 'a', device: 0 }]), true);
    assert.equal(capacity.fits({ share: 0.1, memory: 1 }, [{ node: 'b', device: 0 }]), false, 'unhealthy node');
    assert.equal(capacity.fits({ share: 0.1, memory: 1 }, [{ node: 'c', device: 0 }]), false, 'no such node');
  });

  it('measures fragmentation: partly used devices and the free share stranded on them', () => {
    const capacity = fleet(node('a', 2), node('b', 2));
    capacity.reserve({ share: 0.25, memory: 1 }, [{ node: 'a', device: 0 }]);
    capacity.reserve({ share: 1, memory: 1 }, [{ node: 'b', device: 0 }]);
    assert.deepEqual(capacity.fragmentation(), { devices: 4, used: 2, partial: 1, strandedShare: 0.75, score: 0.75 / 2.75 });
  });
});

describe('placement', () => {
  it('packs: a member goes to the device it leaves fullest, and to a node already in use', () => {
    const capacity = fleet(node('a', 2), node('b', 2));
    capacity.reserve({ share: 0.5, memory: 1 }, [{ node: 'b', device: 1 }]);
    assert.deepEqual(placeGang(spec({ share: 0.5 }), capacity), [{ node: 'b', device: 1 }]);
    assert.deepEqual(placeGang(spec({ share: 0.75 }), capacity), [{ node: 'b', device: 0 }], 'the empty device of the node in use');
    assert.deepEqual(firstFitGang(spec({ share: 0.75 }), capacity), [{ node: 'a', device: 0 }]);
  });

  it('puts members of one gang on one device when it has room and the gang is not spread', () => {
    const capacity = fleet(node('a', 2), node('b', 2), node('c', 2));
    assert.deepEqual(nodesOf(placeGang(spec({ gang: 3, share: 0.25 }), capacity)), ['a', 'a', 'a']);
    assert.deepEqual(new Set(placeGang(spec({ gang: 3, share: 0.25 }), capacity)!.map((m) => m.device)).size, 1);
  });

  it('spread: members on distinct nodes', () => {
    const capacity = fleet(node('a', 2), node('b', 2), node('c', 2));
    for (const place of [placeGang, firstFitGang]) {
      const placement = place(spec({ gang: 3, share: 0.25, placement: { spread: true } }), capacity);
      assert.deepEqual(nodesOf(placement).sort(), ['a', 'b', 'c']);
    }
    assert.equal(placeGang(spec({ gang: 4, share: 0.25, placement: { spread: true } }), capacity), null);
  });

  it('sameNode: all members on one node with room for them all', () => {
    const capacity = fleet(node('a', 1), node('b', 4), node('c', 2));
    for (const place of [placeGang, firstFitGang]) {
      assert.deepEqual(nodesOf(place(spec({ gang: 3, share: 1, placement: { sameNode: true } }), capacity)), ['b', 'b', 'b']);
    }
    assert.equal(placeGang(spec({ gang: 5, share: 1, placement: { sameNode: true } }), capacity), null);
  });

  it('sameLabel: all members on nodes with one value of the label, the group in use first', () => {
    const x = { labels: { zone: 'x' } };
    const y = { labels: { zone: 'y' } };
    const capacity = fleet(node('a', 1, x), node('b', 1, x), node('c', 1, y), node('d', 1, y), node('e', 1, y), node('f', 4));
    const three = spec({ gang: 3, share: 1, placement: { sameLabel: 'zone' } });
    for (const place of [placeGang, firstFitGang]) assert.deepEqual(nodesOf(place(three, capacity)).sort(), ['c', 'd', 'e']);
    capacity.reserve({ share: 0.5, memory: 1 }, [{ node: 'e', device: 0 }]);
    assert.equal(placeGang(three, capacity), null, 'no zone has room for 3 whole devices; node f has no zone');
    assert.match(explainUnplaceable(three, capacity), /one value of label zone; the best value has room for 2 \(best: zone=x\)/);

    // Two groups of the same size: the one in use (less free) takes the gang.
    const even = fleet(node('g', 1, x), node('h', 1, x), node('i', 1, y), node('j', 1, y));
    even.reserve({ share: 0.5, memory: 1 }, [{ node: 'i', device: 0 }]);
    assert.deepEqual(nodesOf(placeGang(spec({ gang: 2, share: 0.5, placement: { sameLabel: 'zone', spread: true } }), even)), ['i', 'j']);
    assert.deepEqual(nodesOf(firstFitGang(spec({ gang: 2, share: 0.5, placement: { sameLabel: 'zone', spread: true } }), even)), ['g', 'h']);
  });

  it('nodeSelector and health: only matching ready nodes', () => {
    const capacity = fleet(
      node('a', 1, { labels: { gpu: 'small' } }),
      node('b', 1, { labels: { gpu: 'big' }, health: 'draining' }),
      node('c', 1, { labels: { gpu: 'big' } }),
    );
    const big = spec({ placement: { nodeSelector: { gpu: 'big' } } });
    for (const place of [placeGang, firstFitGang]) assert.deepEqual(place(big, capacity), [{ node: 'c', device: 0 }]);
    capacity.reserve(big, [{ node: 'c', device: 0 }]);
    assert.equal(placeGang(big, capacity), null);
    assert.equal(explainUnplaceable(spec({ placement: { nodeSelector: { gpu: 'huge' } } }), capacity), 'no ready node matching nodeSelector gpu=huge');
  });

  it('a gang is placed whole or not at all, and placing reserves nothing', () => {
    const capacity = fleet(node('a'), node('b'));
    capacity.reserve({ share: 0.5, memory: 1 }, [{ node: 'a', device: 0 }]);
    const before = snapshot(capacity);
    const gang = spec({ gang: 3, share: 0.5, placement: { spread: true } });
    assert.equal(placeGang(gang, capacity), null);
    assert.equal(firstFitGang(gang, capacity), null);
    assert.equal(placeGang(spec({ gang: 4, share: 0.5 }), capacity), null, 'three members have room, not four');
    assert.equal(snapshot(capacity), before);
    assert.equal(explainUnplaceable(gang, capacity), 'needs 3 nodes with share 0.5 and 256 MiB free on one device; 2 have it');
    assert.equal(explainUnplaceable(spec({ gang: 4, share: 0.5 }), capacity), 'needs room for 4 members of share 0.5 and 256 MiB each; the fleet has room for 3');
    assert.match(explainUnplaceable(spec({ memory: 9 * GiB }), capacity), /1 device has the share free but not the memory/);
    assert.equal(explainUnplaceable(spec({ gang: 3, share: 0.5 }), capacity), '3 members of share 0.5 and 256 MiB fit now');
  });

  it('best fit leaves less fragmentation than first fit on a mixed stream with departures', () => {
    const run = (place: typeof placeGang) => {
      const next = random(15);
      const capacity = fleet(...Array.from({ length: 40 }, (_, i) => node(`n${String(i).padStart(2, '0')}`, 4)));
      const running: Array<{ spec: JobSpec; placement: MemberPlacement[] }> = [];
      let placed = 0;
      let scoreSum = 0;
      let partialSum = 0;
      const steps = 3000;
      for (let step = 0; step < steps; step++) {
        if (next() < 0.55 || running.length === 0) {
          const s = spec({ gang: [1, 1, 2, 4][Math.floor(next() * 4)], share: [0.25, 0.25, 0.5, 0.75, 1][Math.floor(next() * 5)], memory: GiB });
          const placement = place(s, capacity);
          if (placement !== null) {
            capacity.reserve(s, placement);
            running.push({ spec: s, placement });
            placed++;
          }
        } else {
          const [gone] = running.splice(Math.floor(next() * running.length), 1);
          capacity.release(gone.spec, gone.placement);
        }
        const f = capacity.fragmentation();
        scoreSum += f.score;
        partialSum += f.partial;
      }
      return { placed, score: scoreSum / steps, partial: partialSum / steps };
    };
    const best = run(placeGang);
    const first = run(firstFitGang);
    console.log(
      `mixed stream, 40 nodes x 4 devices: best fit placed ${best.placed}, mean score ${best.score.toFixed(3)}, mean partial devices ${best.partial.toFixed(1)}; ` +
        `first fit placed ${first.placed}, mean score ${first.score.toFixed(3)}, mean partial devices ${first.partial.toFixed(1)}`,
    );
    assert.ok(best.score <= first.score, `best fit ${best.score} vs first fit ${first.score}`);
  });

  it('best fit follows its ranking rule exactly on random fleets (against a plain sort)', () => {
    const next = random(42);
    const outcomes = { placed: 0, refused: 0 };
    for (let round = 0; round < 30; round++) {
      const capacity = fleet(
        ...Array.from({ length: 3 + Math.floor(next() * 12) }, (_, i) =>
          node(`n${i}`, 1 + Math.floor(next() * 4), { memory: [4, 8][Math.floor(next() * 2)] * GiB, health: next() < 0.1 ? 'draining' : 'ready' }),
        ),
      );
      const running: Array<[JobSpec, MemberPlacement[]]> = [];
      for (let step = 0; step < 40; step++) {
        if (running.length > 0 && next() < 0.3) {
          const [[gone, where]] = running.splice(Math.floor(next() * running.length), 1);
          capacity.release(gone, where);
        }
        const s = spec({
          gang: [1, 2, 3, 5][Math.floor(next() * 4)],
          share: [0.1, 0.25, 0.3, 0.5, 1][Math.floor(next() * 5)],
          memory: [1, 2, 3][Math.floor(next() * 3)] * GiB,
          placement: next() < 0.3 ? { spread: true } : {},
        });
        const placement = placeGang(s, capacity);
        assert.deepEqual(placement, reference(s, capacity), `round ${round} step ${step}`);
        if (placement !== null) {
          capacity.reserve(s, placement);
          running.push([s, placement]);
        }
        outcomes[placement === null ? 'refused' : 'placed']++;
      }
    }
    assert.ok(outcomes.placed > 200 && outcomes.refused > 200, JSON.stringify(outcomes));
  });

  it('best fit with sameLabel, sameNode and nodeSelector, while nodes change health, budgets and come and go, follows the same rule', () => {
    const next = random(99);
    const outcomes = { placed: 0, refused: 0, grouped: 0, oneNode: 0 };
    const zones = ['x', 'y', 'z', undefined];
    for (let round = 0; round < 25; round++) {
      const records = Array.from({ length: 4 + Math.floor(next() * 12) }, (_, i) => {
        const zone = zones[Math.floor(next() * zones.length)];
        const labels: Record<string, string> = { gpu: next() < 0.5 ? 'big' : 'small', ...(zone === undefined ? {} : { zone }) };
        return node(`n${i}`, 1 + Math.floor(next() * 4), { labels, memory: [4, 8][Math.floor(next() * 2)] * GiB });
      });
      const capacity = fleet(...records);
      const running: Array<[JobSpec, MemberPlacement[]]> = [];
      for (let step = 0; step < 40; step++) {
        if (running.length > 0 && next() < 0.3) {
          const [[gone, where]] = running.splice(Math.floor(next() * running.length), 1);
          capacity.release(gone, where);
        }
        if (next() < 0.15) {
          // A node changes: health, memory budget, zone, or it leaves and comes back (its usage kept).
          const i = Math.floor(next() * records.length);
          const change = Math.floor(next() * 4);
          if (change === 0) records[i] = { ...records[i], health: records[i].health === 'ready' ? 'draining' : 'ready' };
          if (change === 1) records[i] = { ...records[i], devices: records[i].devices.map((d) => ({ ...d, memoryBudget: [4, 6, 8][Math.floor(next() * 3)] * GiB })) };
          if (change === 2) capacity.removeNode(records[i].name);
          if (change === 3) {
            const { zone: _old, ...rest } = records[i].labels;
            const zone = zones[Math.floor(next() * zones.length)];
            records[i] = { ...records[i], labels: zone === undefined ? rest : { ...rest, zone } };
          }
          capacity.setNode(records[i]);
        }
        const r = next();
        const s = spec({
          gang: [1, 2, 3, 5][Math.floor(next() * 4)],
          share: [0.1, 0.25, 0.3, 0.5, 1][Math.floor(next() * 5)],
          memory: [1, 2, 3][Math.floor(next() * 3)] * GiB,
          placement: {
            ...(r < 0.5 ? { sameLabel: 'zone' } : {}),
            ...(next() < 0.3 ? { spread: true } : next() < 0.3 ? { sameNode: true } : {}),
            ...(next() < 0.25 ? { nodeSelector: { gpu: 'big' } } : {}),
          },
        });
        const placement = placeGang(s, capacity);
        assert.deepEqual(placement, referenceConstrained(s, capacity), `round ${round} step ${step} ${JSON.stringify(s.placement)}`);
        if (step % 10 === 0) assert.deepEqual(placeGang(s, capacity.clone()), placement, 'a clone places the same');
        if (placement !== null) {
          capacity.reserve(s, placement);
          running.push([s, placement]);
          if (s.placement.sameLabel !== undefined) outcomes.grouped++;
          if (s.placement.sameNode && s.gang > 1) outcomes.oneNode++;
        }
        outcomes[placement === null ? 'refused' : 'placed']++;
      }
    }
    assert.ok(outcomes.placed > 200 && outcomes.refused > 200 && outcomes.grouped > 100 && outcomes.oneNode > 30, JSON.stringify(outcomes));
  });

  it('places 1 000 gangs on 10 000 nodes (timed, printed)', () => {
    for (const [label, place] of [
      ['best fit', placeGang],
      ['first fit', firstFitGang],
    ] as const) {
      const capacity = new Capacity();
      const t0 = performance.now();
      for (let i = 0; i < 10_000; i++) capacity.setNode(node(`n${String(i).padStart(5, '0')}`, 1, { labels: { zone: `z${i % 10}` } }));
      const t1 = performance.now();
      const next = random(7);
      let placed = 0;
      // The total per gang counts parsing the spec and reserving too; placement alone is timed apart.
      let placing = 0;
      for (let i = 0; i < 1000; i++) {
        const s = spec({ gang: [1, 2, 4][i % 3], share: [0.25, 0.5, 1][Math.floor(next() * 3)], placement: i % 5 === 0 ? { sameLabel: 'zone' } : {} });
        const before = performance.now();
        const placement = place(s, capacity);
        placing += performance.now() - before;
        if (placement !== null) {
          capacity.reserve(s, placement);
          placed++;
        }
      }
      const t2 = performance.now();
      console.log(
        `${label}: 10 000 nodes registered in ${(t1 - t0).toFixed(0)} ms; ${placed}/1000 gangs placed, ${((t2 - t1) / 1000).toFixed(3)} ms a gang ` +
          `(placement alone ${(placing / 1000).toFixed(3)} ms); fragmentation score ${capacity.fragmentation().score.toFixed(4)}`,
      );
      assert.equal(placed, 1000);
    }
  });
});

describe('queues', () => {
  it('limits: a queue and its ancestors; borrowing beyond the guarantee; exact sums', () => {
    const tree = queues({ name: 'a', limit: 2 }, { name: 'a/b', guaranteed: 1 });
    assert.deepEqual(tree.admits('a/b', 1), { ok: true, borrowing: false });
    tree.charge('a/b', 1);
    assert.deepEqual(tree.admits('a/b', 0.5), { ok: true, borrowing: true });
    tree.charge('a/c', 0.5);
    assert.equal(tree.usage('a'), 1.5);
    assert.equal(tree.guaranteed('a/c'), 0, 'implicit queue');
    const refused = tree.admits('a/b', 1);
    assert.equal(refused.ok, false);
    assert.match((refused as { reason: string }).reason, /queue a uses 1.5 of its limit 2/);
    tree.credit('a/c', 0.5);
    assert.deepEqual(tree.admits('a/b', 1), { ok: true, borrowing: true });

    const exact = queues({ name: 'q', guaranteed: 0.3, limit: 0.3 });
    exact.charge('q', 0.1);
    assert.deepEqual(exact.admits('q', 0.2), { ok: true, borrowing: false });
    exact.charge('q', 0.2);
    assert.equal(exact.underGuarantee('q', 0), true);
    assert.equal(exact.admits('q', 0.001).ok, false);
  });

  it('guarantee holds only when every ancestor that guarantees something is within its own', () => {
    const tree = queues({ name: 'org', guaranteed: 2 }, { name: 'org/x', guaranteed: 2 }, { name: 'org/y', guaranteed: 2 });
    tree.charge('org/y', 1.5);
    assert.equal(tree.underGuarantee('org/x', 0.5), true);
    assert.equal(tree.underGuarantee('org/x', 1), false, 'org would use 2.5 of its 2');
    const implicitParent = queues({ name: 'p/x', guaranteed: 1 });
    assert.equal(implicitParent.underGuarantee('p/x', 1), true, 'an implicit parent does not constrain');
    assert.equal(queues({ name: 'p', limit: 4 }, { name: 'p/x', guaranteed: 1 }).underGuarantee('p/x', 1), true, 'nor one with only a limit');
  });

  it('orders by fair share between queues, then priority, then submit time; deterministically', () => {
    const tree = queues({ name: 'a' }, { name: 'b' }, { name: 'c', weight: 2 }, { name: 'g', guaranteed: 2 });
    tree.charge('g', 1);
    tree.charge('a', 1);
    const pending = [
      job('a1', { queue: 'a' }, 1),
      job('a2', { queue: 'a', priority: 5 }, 2),
      job('a3', { queue: 'a', priority: 5 }, 3),
      job('b1', { queue: 'b' }, 4),
      job('b2', { queue: 'b' }, 5),
      job('c1', { queue: 'c' }, 6),
      job('c2', { queue: 'c' }, 7),
      job('c3', { queue: 'c' }, 8),
      job('g1', { queue: 'g' }, 9),
      job('g2', { queue: 'g' }, 10),
    ];
    const expected = ['g1', 'b1', 'c1', 'c2', 'a2', 'b2', 'c3', 'a3', 'g2', 'a1'];
    // g is under its guarantee (1 of 2): first. Then usage / weight, ties by name: b 0 = c 0 -> b1;
    // c 0 -> c1; c 0.5 -> c2; a 1 = b 1 = c 1 -> a2 (priority 5 first); b 1 = c 1 -> b2; c 1 -> c3;
    // a 2 = g 2 -> a3; g 2 < a 3 -> g2; a1.
    assert.deepEqual(
      tree.order(pending).map((j) => j.id),
      expected,
    );
    const shuffled = [...pending].reverse();
    assert.deepEqual(
      tree.order(shuffled).map((j) => j.id),
      expected,
    );
  });

  it('orders top-down through the hierarchy', () => {
    const tree = queues({ name: 'r' }, { name: 's' });
    tree.charge('r/x', 2);
    const pending = [job('rx', { queue: 'r/x' }, 1), job('ry', { queue: 'r/y' }, 2), job('s1', { queue: 's' }, 3), job('s2', { queue: 's' }, 4)];
    // r uses 2, s 0: s first twice (s reaches 2), then r (name tie at 2: r), inside r: r/y (0) before r/x (2).
    assert.deepEqual(
      tree.order(pending).map((j) => j.id),
      ['s1', 's2', 'ry', 'rx'],
    );
  });
});

describe('reclaim', () => {
  const setup = () => {
    const capacity = fleet(node('n', 2));
    const tree = queues({ name: 'gold', guaranteed: 2 }, { name: 'spot', guaranteed: 0 });
    const running: Array<{ job: JobRecord; placement: MemberPlacement[] }> = [];
    const run = (record: JobRecord, device: number): JobRecord => {
      const placement = [{ node: 'n', device }];
      capacity.reserve(record.spec, placement);
      tree.charge(record.spec.queue, record.spec.share * record.spec.gang);
      running.push({ job: { ...record, phase: 'running', placement }, placement });
      return record;
    };
    return { capacity, tree, running, run };
  };

  it('takes borrowers before lower-priority jobs of the own queue', () => {
    const { capacity, tree, running, run } = setup();
    run(job('spot-high', { queue: 'spot', priority: 10 }, 1), 0);
    run(job('gold-low', { queue: 'gold', priority: 0 }, 2), 1);
    const before = snapshot(capacity);
    const victims = selectVictims(job('gold-new', { queue: 'gold', priority: 5 }, 3), running, capacity, tree);
    assert.deepEqual(
      victims?.map((j) => j.id),
      ['spot-high'],
    );
    assert.equal(snapshot(capacity), before, 'capacity unchanged');
  });

  it('never takes a job that is not preemptible', () => {
    const { capacity, tree, running, run } = setup();
    run(job('spot', { queue: 'spot', preemptible: false }, 1), 0);
    run(job('gold-low', { queue: 'gold', priority: 0 }, 2), 1);
    assert.deepEqual(
      selectVictims(job('gold-new', { queue: 'gold', priority: 5 }, 3), running, capacity, tree)?.map((j) => j.id),
      ['gold-low'],
    );
    running[1].job.spec.preemptible = false;
    assert.equal(selectVictims(job('gold-new', { queue: 'gold', priority: 5 }, 3), running, capacity, tree), null);
  });

  it('takes the fewest: lowest priority and newest first, then drops the ones not needed', () => {
    const capacity = fleet(node('n'));
    const tree = queues({ name: 'gold', guaranteed: 1 });
    const running = [
      { job: job('small-old', { queue: 'spot', share: 0.25 }, 1), placement: [{ node: 'n', device: 0 }] },
      { job: job('small-new', { queue: 'spot', share: 0.25 }, 2), placement: [{ node: 'n', device: 0 }] },
      { job: job('half', { queue: 'spot', share: 0.5, priority: 1 }, 0), placement: [{ node: 'n', device: 0 }] },
    ];
    for (const r of running) {
      capacity.reserve(r.job.spec, r.placement);
      tree.charge('spot', r.job.spec.share);
    }
    // Two quarters make room for a quarter-and-a-half... a 0.5 job: the two newest smalls (lowest priority).
    assert.deepEqual(
      selectVictims(job('g', { queue: 'gold', share: 0.5 }, 9), running, capacity, tree)?.map((j) => j.id),
      ['small-new', 'small-old'],
    );
    // A 0.75 job: greedy takes small-new, small-old, then half; small-old and small-new are then not both needed.
    assert.deepEqual(
      selectVictims(job('g', { queue: 'gold', share: 0.75 }, 9), running, capacity, tree)?.map((j) => j.id),
      ['small-new', 'half'],
    );
    // Without the guarantee to claim, nothing of another queue may go.
    assert.equal(selectVictims(job('g', { queue: 'other', share: 0.5 }, 9), running, capacity, tree), null);
  });

  it('takes back only what a queue borrowed, and answers null when no set makes room', () => {
    const capacity = fleet(node('a'), node('b'));
    const tree = queues({ name: 'gold', guaranteed: 2 }, { name: 'spot', guaranteed: 1 });
    const running = [
      { job: job('s1', { queue: 'spot' }, 1), placement: [{ node: 'a', device: 0 }] },
      { job: job('s2', { queue: 'spot' }, 2), placement: [{ node: 'b', device: 0 }] },
    ];
    for (const r of running) {
      capacity.reserve(r.job.spec, r.placement);
      tree.charge('spot', 1);
    }
    assert.deepEqual(
      selectVictims(job('g', { queue: 'gold' }, 9), running, capacity, tree)?.map((j) => j.id),
      ['s2'],
    );
    assert.equal(selectVictims(job('g', { queue: 'gold', gang: 2 }, 9), running, capacity, tree), null, 'spot keeps its guaranteed 1');
    assert.equal(selectVictims(job('g', { queue: 'gold', memory: 9 * GiB }, 9), running, capacity, tree), null, 'fits no device at all');
    assert.deepEqual(selectVictims(job('g', { queue: 'gold' }, 9), [], fleet(node('c')), tree), [], 'fits without victims');
  });
});
