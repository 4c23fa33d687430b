// The fleet's key layout in etcd, in one place (docs/fleet.md reproduces it). Every key lives under
// the fleet's prefix (default "/gpunix/"); values are JSON (records.ts).

export class FleetKeys {
  constructor(readonly prefix: string) {
    if (!prefix.endsWith('/')) this.prefix = `${prefix}/`;
  }
  /** nodes/<node> → NodeRecord, under the node's lease. */
  nodes = (): string => `${this.prefix}nodes/`;
  node = (name: string): string => `${this.prefix}nodes/${name}`;
  /** jobs/<id> → JobRecord. */
  jobs = (): string => `${this.prefix}jobs/`;
  job = (id: string): string => `${this.prefix}jobs/${id}`;
  /** bindings/<node>/<job>/<member> → Binding: what the node must run. */
  bindings = (): string => `${this.prefix}bindings/`;
  nodeBindings = (node: string): string => `${this.prefix}bindings/${node}/`;
  binding = (node: string, job: string, member: number): string => `${this.prefix}bindings/${node}/${job}/${member}`;
  /** status/<job>/<member> → MemberStatus, under the node's lease while the member runs; a finished member's without (it outlives the node). */
  statuses = (): string => `${this.prefix}status/`;
  jobStatuses = (job: string): string => `${this.prefix}status/${job}/`;
  status = (job: string, member: number): string => `${this.prefix}status/${job}/${member}`;
  /** checkpoints/<job>/<member> → CheckpointRecord (no lease: it outlives the node). */
  checkpoints = (): string => `${this.prefix}checkpoints/`;
  jobCheckpoints = (job: string): string => `${this.prefix}checkpoints/${job}/`;
  checkpoint = (job: string, member: number): string => `${this.prefix}checkpoints/${job}/${member}`;
  /** arrivals/<job>/<member> → ArrivalRecord: a move's target is ready for it (under the target node's lease). */
  arrival = (job: string, member: number): string => `${this.prefix}arrivals/${job}/${member}`;
  /** queues/<path> → QueueSpec ("/" in a queue path stays "/"). */
  queues = (): string => `${this.prefix}queues/`;
  queue = (name: string): string => `${this.prefix}queues/${name}`;
  /** scheduler/leader → LeaderRecord, under the leader replica's lease. */
  leader = (): string => `${this.prefix}scheduler/leader`;

  /** The last path component(s) of `key` after `prefixKey` (e.g. a node's name). */
  rest(prefixKey: string, key: string): string {
    return key.startsWith(prefixKey) ? key.slice(prefixKey.length) : key;
  }
}
