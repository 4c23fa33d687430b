// A real etcd for the fleet's tests: a 1- or 3-member cluster of `etcd` processes on free loopback
// ports, data under os.tmpdir() (or `dir`; memoryBackedDir() for tests whose machine is loaded).
// A test can SIGKILL a member, restart it (same data: it rejoins), and ask which member leads (each
// member's /v3/maintenance/status, through etcd's HTTP gateway). stop() kills every member and
// removes the data; members still running when the test process exits (a test that failed before
// its t.after ran) are killed by an exit hook.

import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdMember {
  name: string;
  /** http://127.0.0.1:<port>: what clients (FleetStore) connect to. */
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  /** True while its process lives (between start/restart and kill/stop). */
  readonly running: boolean;
  /** The etcd log of this member (its stderr), for a failing test's message. */
  log(): string;
}

export interface EtcdCluster {
  /** Every member's client URL (members that are down included: clients fail over). */
  endpoints: string[];
  members: EtcdMember[];
  /** The member that leads now (waits, up to 10 s, for a live leader after an election). */
  leader(): Promise<EtcdMember>;
  /** SIGKILLs `member` and waits for its process to end. */
  kill(member: EtcdMember): Promise<void>;
  /** Starts a killed member again on its data (it rejoins as itself) and waits until it is healthy. */
  restart(member: EtcdMember): Promise<void>;
  /**
   * SIGSTOPs every running member (etcd answers nobody, its clock-driven lease expiry included)
   * and returns a function that SIGCONTs them; `stop()` continues them too.
   */
  freeze(): () => void;
  /** Kills every member and removes the data directories (idempotent). */
  stop(): Promise<void>;
}

/** How long a member may take to report healthy (a loaded 2-core machine: etcd itself starts in ~0.2 s). */
const START_TIMEOUT_MS = 20_000;

/** Every etcd process any cluster of this test process started and has not yet reaped. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * /dev/shm when this machine has it (writable), else os.tmpdir(): etcd's fsyncs cost nothing in
 * memory, so a loaded test machine's disk does not stall its elections and lease renewals. For
 * tests of the fleet's behaviour, not of etcd's durability.
 */
export function memoryBackedDir(): string {
  try {
    accessSync('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}

/** Throws, naming the set-up script, when there is no `etcd` on PATH (CI installs it: tests never skip silently). */
export function requireEtcd(): void {
  const probe = spawnSync('etcd', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) {
    throw new Error('etcd is not installed (no `etcd` on PATH): run `bash scripts/setup.sh` (it installs etcd-server and etcd-client)');
  }
}

/** `count` distinct free TCP ports on 127.0.0.1 (held open together so they differ, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as { port: number }).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

class Member implements EtcdMember {
  child: ChildProcess | null = null;
  exited: Promise<void> = Promise.resolve();
  constructor(
    readonly name: string,
    readonly clientUrl: string,
    readonly peerUrl: string,
    readonly dataDir: string,
    readonly logFile: string,
    private readonly args: string[],
  ) {}

  get running(): boolean {
    return this.child !== null;
  }

  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  start(): void {
    // The log goes to a file (not a pipe): a member must never block on a full pipe nobody reads.
    const fd = openSync(this.logFile, 'a');
    const child = spawn('etcd', this.args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    live.add(child);
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        live.delete(child);
        if (this.child === child) this.child = null;
        resolve();
      }),
    );
  }

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  async kill(): Promise<void> {
    if (!this.child) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** Polls /health until it says true (this member is serving in a cluster with a leader). */
  async healthy(timeoutMs = START_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.child) throw new Error(`etcd member ${this.name} exited while starting:\n${this.log().slice(-2000)}`);
      try {
        const response = await fetch(`${this.clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
        const body = (await response.json()) as { health?: string };
        if (body.health === 'true') return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`etcd member ${this.name} did not become healthy within ${timeoutMs} ms:\n${this.log().slice(-2000)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** This member's id and the leader it knows (ids as etcd's gateway prints them: decimal strings), or null when it does not answer. */
  async status(): Promise<{ id: string; leader: string } | null> {
    if (!this.child) return null;
    try {
      const response = await fetch(`${this.clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(1_000) });
      const body = (await response.json()) as { header?: { member_id?: string }; leader?: string };
      if (!body.header?.member_id || !body.leader || body.leader === '0') return null;
      return { id: body.header.member_id, leader: body.leader };
    } catch {
      return null;
    }
  }
}

/** Starts a `members`-member etcd cluster on loopback and waits until every member is healthy. */
export async function startEtcd(options: { members?: 1 | 3; dir?: string } = {}): Promise<EtcdCluster> {
  requireEtcd();
  const count = options.members ?? 1;
  const root = mkdtempSync(join(options.dir ?? tmpdir(), 'gpunix-etcd-'));
  const ports = await freePorts(count * 2);
  const names = Array.from({ length: count }, (_, i) => `m${i}`);
  const peerUrls = names.map((_, i) => `http://127.0.0.1:${ports[2 * i + 1]}`);
  const initialCluster = names.map((name, i) => `${name}=${peerUrls[i]}`).join(',');
  const token = `gpunix-test-${process.pid}-${ports[0]}`;
  const members = names.map((name, i) => {
    const clientUrl = `http://127.0.0.1:${ports[2 * i]}`;
    const dataDir = join(root, name);
    const args = [
      '--name', name,
      '--data-dir', dataDir,
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrls[i],
      '--initial-advertise-peer-urls', peerUrls[i],
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', token,
      // etcd's default timings (100 ms heartbeat, 1 s election): shorter ones make a loaded
      // 2-core machine hold spurious elections.
      '--logger', 'zap',
      '--log-level', 'warn',
    ];
    return new Member(name, clientUrl, peerUrls[i], dataDir, join(root, `${name}.log`), args);
  });

  let stopped = false;
  const thaws = new Set<() => void>();
  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.clientUrl),
    members,
    async leader() {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const statuses = await Promise.all(members.map((m) => m.status()));
        const byId = new Map<string, Member>();
        statuses.forEach((status, i) => status && byId.set(status.id, members[i]));
        for (const status of statuses) {
          const leader = status && byId.get(status.leader);
          if (leader && leader.running) return leader;
        }
        if (Date.now() > deadline) throw new Error(`no etcd member leads (statuses: ${JSON.stringify(statuses)})`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async kill(member) {
      await (member as Member).kill();
    },
    async restart(member) {
      const m = member as Member;
      if (m.running) throw new Error(`etcd member ${m.name} is running`);
      m.start();
      await m.healthy();
    },
    freeze() {
      const frozen = members.filter((m) => m.running);
      for (const m of frozen) m.signal('SIGSTOP');
      const thaw = () => {
        for (const m of frozen) m.signal('SIGCONT');
        thaws.delete(thaw);
      };
      thaws.add(thaw);
      return thaw;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const thaw of [...thaws]) thaw();
      await Promise.all(members.map((m) => m.kill()));
      rmSync(root, { recursive: true, force: true });
    },
  };

  try {
    for (const member of members) member.start();
    await Promise.all(members.map((m) => m.healthy()));
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
