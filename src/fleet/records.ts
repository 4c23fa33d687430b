// What the fleet keeps in etcd about nodes, jobs, bindings and members (the values of the keys in
// keys.ts, JSON). Who writes each: nodes write their NodeRecord and MemberStatus (under the node's
// lease) and checkpoints; submit writes a JobRecord; the scheduler leader writes bindings and job
// phases. docs/fleet.md shows the layout with examples.

import type { PriorityClass } from '../params.js';
import type { JobSpec } from './spec.js';

/** One device of a node, as the scheduler places on it: a time capacity of 1.0 and its memory budget. */
export interface NodeDevice {
  index: number;
  name: string;
  backend: string;
  featureLevel: string;
  /** Device memory the node's kernel lets its processes hold on this device (bytes). */
  memoryBudget: number;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

/** Under the node's lease: present while the node lives. */
export interface NodeRecord {
  name: string;
  labels: Record<string, string>;
  devices: NodeDevice[];
  /** `ready` takes new work; `draining` keeps what it has; `unhealthy` (a device lost) takes nothing. */
  health: 'ready' | 'draining' | 'unhealthy';
  /** How programs reach this node's daemon (the Unix socket, and a TLS URL when it listens on TCP). */
  address: { socket?: string; url?: string };
  /** What the node measures it holds now, per device index: device bytes and live processes. */
  used: Array<{ bytes: number; processes: number }>;
  startedAt: number;
  updatedAt: number;
  /**
   * This life of the node: the id of the lease it registered under (a node restarted, or one that
   * lost its lease and registered afresh, has a new one). A scheduler copies it into Binding.incarnation.
   */
  incarnation?: string;
}

export type JobPhase = 'pending' | 'bound' | 'running' | 'suspended' | 'succeeded' | 'failed' | 'cancelled';

/** One job: its spec and where it stands. Written by submit (pending) and then by the scheduler leader. */
export interface JobRecord {
  id: string;
  spec: JobSpec;
  phase: JobPhase;
  /** Bumped each time the job is bound anew (rescheduling): statuses of older generations are stale. */
  generation: number;
  /** Where each member is bound now (index = member); empty while pending. */
  placement: Array<{ node: string; device: number }>;
  submittedAt: number;
  updatedAt: number;
  /** Set by `job cancel`; the scheduler then ends the members and marks it cancelled. */
  cancelRequested?: boolean;
  /** Times it was started over on another node (node death without a usable checkpoint). */
  restarts: number;
  /** Times it was suspended to make room (reclaim). */
  suspensions: number;
  /** Why it is in its phase, for people (e.g. "no node has 512 MiB free on one device", "suspended for job j-..."). */
  message?: string;
  /** Milliseconds from submit to the first binding. */
  bindLatencyMs?: number;
  /** A member being moved, live, to another node now (one at a time per job); absent: none. */
  move?: MemberMove;
  /** The last move id handed out (MemberMove.id is moveSeq + 1). */
  moveSeq?: number;
  /** Members moved to another node so far (live migrations that committed). */
  moves?: number;
  /** When the last move ended (committed or failed; ms since the epoch): a job is not moved again sooner than MOVE_COOLDOWN_MS after. */
  lastMoveAt?: number;
  /** The last move that failed: the member went on where it was; the job is not moved again for MOVE_RETRY_MS. */
  moveFailure?: { at: number; to: string; message: string };
  /**
   * Members whose program (the `gpunix run --connect` child) runs on another node than their GPU
   * process, because the process moved: member → the node whose agent supervises the program (its
   * exit is the member's). The placement names where the GPU process is.
   */
  clients?: Record<number, string>;
}

/** A live move of one member's GPU process to another node (JobRecord.move). */
export interface MemberMove {
  /** The job's move counter at the start (statuses and bindings name the move they are about). */
  id: number;
  member: number;
  /** Where the process is (its placement when the move began). */
  from: { node: string; device: number };
  /** Where it goes: capacity there is held for it from the start. */
  to: { node: string; device: number };
  /** The pending job the move makes room for (reclaim by migration). */
  forJob?: string;
  startedAt: number;
}

/** What a node is told to run: one member of a job, on one of its devices. Key bindings/<node>/<job>/<member>. */
export interface Binding {
  job: string;
  member: number;
  generation: number;
  device: number;
  tenant: string;
  class: PriorityClass;
  share: number;
  memory: number;
  program: string;
  args: string[];
  /** Start the member from this image (a periodic checkpoint after a node died, or the spec's image). */
  restoreFrom?: string;
  checkpoint?: { intervalMs: number; dir: string };
  /** The incarnation (NodeRecord.incarnation) of the node it was bound to; a node of another incarnation ignores it. */
  incarnation?: string;
  /** `run`: keep it running; `suspend`: swap it out (reclaim) and keep it until told `run` again. */
  desired: 'run' | 'suspend';
  /**
   * Move the member's process, live, to `node` (where it gets `device`): the agent calls its
   * daemon's moveProcess once the target says it is ready (arrivals/<job>/<member>) and reports the
   * outcome in MemberStatus.move. Only on the binding where the process runs.
   */
  move?: { id: number; node: string; device: number };
  /**
   * The member's program runs on node `client.node` (that node's agent supervises it); this node
   * holds its GPU process, which moved here live — or, with `arriving` (the move id), is about to:
   * the agent makes the job's tenant, says it is ready (arrivals/<job>/<member>) and never spawns.
   */
  client?: { node: string; arriving?: number };
  /**
   * On the node that supervises the member's program after its process moved away: keep the
   * program (its exit is the member's exit); the process runs on `node`. Holds no capacity here.
   */
  movedTo?: { node: string };
}

export type MemberState = 'starting' | 'running' | 'suspended' | 'exited' | 'failed';

/** A member as its node sees it; under the node's lease. Key status/<job>/<member>. */
export interface MemberStatus {
  node: string;
  generation: number;
  state: MemberState;
  /** The process id on the node's kernel. */
  pid?: number;
  exitCode?: number;
  message?: string;
  /** GPU time the member's process has had (ms), for fraction accounting. */
  gpuTimeMs?: number;
  /** Where its GPU process runs when not on `node` (it moved; `node` supervises its program, and `pid` is there). */
  gpuNode?: string;
  /** The latest move of its process this node tried (Binding.move): under way, committed, or failed (the member went on here). */
  move?: { id: number; outcome: 'moving' | 'moved' | 'failed'; node: string; message?: string; ms?: number };
  updatedAt: number;
}

/** A move's target is ready for it (the job's tenant exists there). Key arrivals/<job>/<member>, under the target node's lease. */
export interface ArrivalRecord {
  node: string;
  move: number;
}

/** A member's latest periodic checkpoint; not under a lease, so it outlives its node. Key checkpoints/<job>/<member>. */
export interface CheckpointRecord {
  path: string;
  generation: number;
  at: number;
}

/** The scheduler leader's key: the replica's id, under the replica's lease. */
export interface LeaderRecord {
  id: string;
  since: number;
}
