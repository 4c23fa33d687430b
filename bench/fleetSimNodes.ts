// Simulated fleet nodes for bench/fleet.ts: thousands of NodeRecords in a real etcd, and the one
// thing a node does that the scheduler waits on — acknowledging its bindings with MemberStatus
// 'running' — done for all of them by one agent. What is simulated and what is not:
//   - no GPU and no daemon: a node is its NodeRecord (1-8 devices with memory budgets, labels
//     zone and rack) and nothing runs; a binding is acknowledged as soon as it is seen;
//   - shared leases: the nodes' keys (and their members' statuses) are spread over a few leases
//     (LEASES) instead of one lease a node, and ONE watch over bindings/ serves every node instead
//     of one watch a node — 10 000 leases and 10 000 watches would measure this 2-core machine's
//     etcd and Node, not the scheduler;
//   - status writes are batched (up to STATUS_BATCH puts a transaction), as many nodes writing at
//     once would reach etcd together;
//   - members never finish: capacity does not turn over (the job stream is sized to fit).
// Everything else is real: etcd, the key layout, the records, the commits.

import type { NodeDevice, NodeRecord, Binding, MemberStatus } from '../src/fleet/records.js';
import type { FleetStore, StoreLease } from '../src/fleet/store.js';

const GiB = 1024 ** 3;

/** How many leases the simulated nodes share (node i is under lease i % LEASES). */
export const LEASES = 4;
/** Their TTL (s): long, since one keepalive stream per lease serves thousands of nodes. */
const LEASE_TTL_SECONDS = 30;
/** Keys per registration or status transaction (etcd allows 128 operations a transaction). */
const REGISTER_BATCH = 100;
const STATUS_BATCH = 100;
/** Transactions in flight at once while registering or acknowledging. */
const WINDOW = 8;

/** A small seeded PRNG (mulberry32): the same seed gives the same fleet and the same job stream. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Picks one of `choices` with probability proportional to its weight. */
export function pickWeighted<T>(random: () => number, choices: Array<[T, number]>): T {
  const total = choices.reduce((sum, [, weight]) => sum + weight, 0);
  let r = random() * total;
  for (const [value, weight] of choices) {
    r -= weight;
    if (r < 0) return value;
  }
  return choices[choices.length - 1][0];
}

/** Node names sort in creation order (zero-padded), so first-fit's node-name order is the fleet's order. */
export const simNodeName = (i: number): string => `sim-${String(i).padStart(5, '0')}`;

/** Nodes per rack, racks per zone: topology for sameLabel constraints. */
const RACK_SIZE = 40;
const ZONES = 8;

/**
 * The NodeRecords of a simulated fleet of `count` nodes, the same for the same seed: 1, 2, 4 or 8
 * devices (15/20/35/30 %), one memory budget per node (16/24/40/80 GiB), labels zone and rack.
 */
export function simNodeRecords(count: number, seed: number): NodeRecord[] {
  const random = seededRandom(seed);
  const now = Date.now();
  const records: NodeRecord[] = [];
  for (let i = 0; i < count; i++) {
    const devices = pickWeighted(random, [[1, 15], [2, 20], [4, 35], [8, 30]]);
    const memoryBudget = pickWeighted(random, [[16 * GiB, 25], [24 * GiB, 25], [40 * GiB, 25], [80 * GiB, 25]]);
    const rack = Math.floor(i / RACK_SIZE);
    const deviceList: NodeDevice[] = Array.from({ length: devices }, (_, index) => ({
      index,
      name: 'simulated (no GPU)',
      backend: 'none',
      featureLevel: 'core',
      memoryBudget,
      maxBufferSize: memoryBudget,
      maxStorageBufferBindingSize: Math.min(memoryBudget, 4 * GiB),
    }));
    records.push({
      name: simNodeName(i),
      labels: { zone: `z${rack % ZONES}`, rack: `r${rack}` },
      devices: deviceList,
      health: 'ready',
      address: {},
      used: deviceList.map(() => ({ bytes: 0, processes: 0 })),
      startedAt: now,
      updatedAt: now,
    });
  }
  return records;
}

/** Runs `tasks` with at most `window` of them in flight. */
async function inWindow(tasks: Array<() => Promise<void>>, window: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(window, tasks.length) }, worker));
}

export interface SimNodesOptions {
  store: FleetStore;
  records: NodeRecord[];
  /** Hears progress: how many nodes are registered so far. */
  onRegistered?: (registered: number) => void;
  /** Hears a failure of a lease, the watch or a status write (default: a line on stderr; the placements measured do not depend on the statuses). */
  onError?: (error: Error) => void;
}

/** A simulated fleet: its nodes registered under shared leases, and one agent acknowledging every binding. */
export class SimulatedNodes {
  /** Member statuses written ('running' for a binding desired 'run', 'suspended' for 'suspend'). */
  acknowledged = 0;
  /** Binding puts seen on the watch. */
  bindingsSeen = 0;
  private readonly leaseOf = new Map<string, StoreLease>();
  /** The generation and desired state last acknowledged per binding key (a re-put of the same state is not re-acknowledged). */
  private readonly acked = new Map<string, string>();
  private queue: Array<{ key: string; value: MemberStatus; lease: StoreLease }> = [];
  private flushing = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  private watch: { close(): Promise<void> } | null = null;
  private stopped = false;

  private constructor(
    private readonly store: FleetStore,
    private readonly leases: StoreLease[],
    private readonly onError: (error: Error) => void,
  ) {}

  /** Registers every node (REGISTER_BATCH a transaction, WINDOW in flight), then starts acknowledging bindings. */
  static async start(options: SimNodesOptions): Promise<SimulatedNodes> {
    const { store, records } = options;
    const onError = options.onError ?? ((error) => process.stderr.write(`simulated nodes: ${error.message}\n`));
    const leases = await Promise.all(Array.from({ length: LEASES }, () => store.lease(LEASE_TTL_SECONDS, onError)));
    const sim = new SimulatedNodes(store, leases, onError);
    records.forEach((record, i) => sim.leaseOf.set(record.name, leases[i % LEASES]));
    let registered = 0;
    const tasks: Array<() => Promise<void>> = [];
    for (let at = 0; at < records.length; at += REGISTER_BATCH) {
      const batch = records.slice(at, at + REGISTER_BATCH);
      tasks.push(async () => {
        await store.commit({ puts: batch.map((record) => ({ key: store.keys.node(record.name), value: record, lease: sim.leaseOf.get(record.name) })) });
        registered += batch.length;
        options.onRegistered?.(registered);
      });
    }
    await inWindow(tasks, WINDOW);
    const revision = await store.revision();
    sim.watch = await store.watch<Binding>(store.keys.bindings(), revision, (event) => sim.onBinding(event.type, event.key, event.value), onError);
    return sim;
  }

  /** A binding put: queue its member's status as the node would report it (once per generation and desired state). */
  private onBinding(type: 'put' | 'delete', key: string, binding: Binding | undefined): void {
    if (this.stopped) return;
    if (type === 'delete') {
      this.acked.delete(key);
      return;
    }
    if (!binding) return;
    this.bindingsSeen++;
    const state = binding.desired === 'run' ? 'running' : 'suspended';
    const mark = `${binding.generation}/${state}`;
    if (this.acked.get(key) === mark) return;
    this.acked.set(key, mark);
    const node = this.store.keys.rest(this.store.keys.bindings(), key).split('/')[0];
    const lease = this.leaseOf.get(node);
    if (!lease) return; // not one of ours
    const status: MemberStatus = { node, generation: binding.generation, state, pid: 1000 + binding.member, updatedAt: Date.now() };
    this.queue.push({ key: this.store.keys.status(binding.job, binding.member), value: status, lease });
    if (this.queue.length >= STATUS_BATCH) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), 2);
  }

  /** Writes queued statuses, STATUS_BATCH a transaction, at most WINDOW transactions in flight. */
  private flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    while (this.queue.length > 0 && this.flushing < WINDOW && !this.stopped) {
      const batch = this.queue.splice(0, STATUS_BATCH);
      this.flushing++;
      this.store.commit({ puts: batch }).then(
        () => {
          this.acknowledged += batch.length;
          this.flushing--;
          if (this.queue.length > 0) this.flush();
        },
        (error: Error) => {
          this.flushing--;
          if (!this.stopped) this.onError(error);
        },
      );
    }
  }

  /** Stops acknowledging and revokes the leases (every node key and status vanishes with them). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.watch?.close();
    await Promise.all(this.leases.map((lease) => lease.revoke()));
  }
}
