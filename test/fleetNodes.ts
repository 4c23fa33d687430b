// Fleet nodes for tests: each a real gpunixd child process (`node bin/gpunix.js daemon --config`)
// with its own socket, directories, admin token, and a `fleet` section naming the test's etcd and
// key prefix. A test SIGKILLs one (node death) or stops it (SIGTERM: the node leaves at once).
// Daemons still running when the test process exits (a test that failed before its cleanup ran)
// are SIGKILLed by an exit hook.

import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Session } from '../src/client/session.js';
import { hashToken, newToken } from '../src/daemon/config.js';
import type { ProcessRecord } from '../src/kernel/proc.js';
import type { NodeRecord } from '../src/fleet/records.js';
import { FleetStore } from '../src/fleet/store.js';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface NodeOptions {
  /** The test's etcd (EtcdCluster.endpoints). */
  endpoints: string[];
  /** The test's key prefix (e.g. testPrefix()): tests never see each other's keys. */
  prefix: string;
  /** The node's name in the fleet. */
  name: string;
  labels?: Record<string, string>;
  /** Default 2 s (the daemon's default is 5): tests see a dead node sooner. */
  leaseTtlSeconds?: number;
  /** Run a scheduler replica in this daemon too. */
  scheduler?: boolean;
  /** The daemon's `kernel` section (e.g. { memoryBudget: '64M' }). */
  kernel?: Record<string, unknown>;
  /** More top-level config fields (merged over the defaults). */
  config?: Record<string, unknown>;
  /** More `fleet` fields (e.g. workDir). */
  fleet?: Record<string, unknown>;
  /** Wait until the node's key is in etcd (default true); false: only until the daemon listens. */
  awaitRegistration?: boolean;
  /** Environment additions for the daemon (and so its members). */
  env?: NodeJS.ProcessEnv;
}

export interface FleetNode {
  name: string;
  socket: string;
  /** The node's own scratch directory (config, state, images, log). */
  dir: string;
  /** The admin token of this daemon (control sessions see every process). */
  adminToken: string;
  /** The daemon's process id (e.g. to SIGSTOP it). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** The daemon's stderr and stdout (its JSON log lines) so far. */
  log(): string;
  /** Resolves when the daemon process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` (default SIGKILL: node death) and waits for the process to end. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM (SIGKILL after 20 s), then removes the node's directory. Idempotent. */
  stop(): Promise<void>;
  /** The daemon's process table (all tenants: an admin session). */
  ps(): Promise<ProcessRecord[]>;
}

/** A fresh key prefix for one test: `/t-<random>/`. */
export function testPrefix(): string {
  return `/t-${Math.random().toString(36).slice(2, 10)}/`;
}

/**
 * The admin token every node of this test process shares, and so also each node's
 * migration.peerToken: a node moving a member connects to the target daemon as its admin.
 */
export const FLEET_ADMIN_TOKEN = newToken();

/** Every daemon started here and not yet exited. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** How long a daemon may take to listen (it opens a lavapipe device first; a loaded machine is slow). */
const LISTEN_TIMEOUT_MS = 60_000;

/** Polls `check` every 50 ms until it returns a value that is not undefined/false; throws `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value as T;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The node `name`'s record in etcd, or undefined while it has none. */
export async function nodeRecord(store: FleetStore, name: string): Promise<NodeRecord | undefined> {
  return (await store.get<NodeRecord>(store.keys.node(name)))?.value;
}

/** Starts a gpunixd child that joins the fleet as `options.name`; waits until it listens (and, by default, has registered). */
export async function startNode(options: NodeOptions): Promise<FleetNode> {
  const dir = mkdtempSync(join(tmpdir(), `gpunix-node-${options.name}-`));
  const socket = join(dir, 'gpunixd.sock');
  const adminToken = FLEET_ADMIN_TOKEN;
  const config = {
    socket,
    adminTokenHash: hashToken(adminToken),
    migration: { peerToken: FLEET_ADMIN_TOKEN },
    stateFile: join(dir, 'state.json'),
    imageDir: join(dir, 'images'),
    log: { level: 'info' },
    kernel: options.kernel ?? {},
    ...options.config,
    fleet: {
      etcd: { endpoints: options.endpoints, prefix: options.prefix },
      node: options.name,
      labels: options.labels ?? {},
      leaseTtlSeconds: options.leaseTtlSeconds ?? 2,
      scheduler: options.scheduler ?? false,
      ...options.fleet,
    },
  };
  const node = await startDaemon(options.name, dir, config, { adminToken, env: options.env });
  if (options.awaitRegistration ?? true) {
    try {
      const store = await FleetStore.connect({ endpoints: options.endpoints, prefix: options.prefix });
      try {
        await waitFor(`node ${options.name} registers in etcd`, async () => !node.running || (await nodeRecord(store, options.name)) !== undefined, 30_000);
      } finally {
        store.close();
      }
      if (!node.running) throw new Error(`node ${options.name}'s daemon exited`);
    } catch (error) {
      const message = `${(error as Error).message}\n--- ${options.name}'s log ---\n${node.log().slice(-3000)}`;
      await node.stop();
      throw new Error(message);
    }
  }
  return node;
}

/**
 * Starts a gpunixd child (`gpunix daemon --config`) with `config` written into `dir` and its log in
 * `dir/daemon.log`; resolves once it listens (rejects, with its log, if it exits first).
 */
export async function startDaemon(name: string, dir: string, config: Record<string, unknown> & { socket: string }, options: { adminToken: string; env?: NodeJS.ProcessEnv }): Promise<FleetNode> {
  const { socket } = config;
  const { adminToken } = options;
  const configPath = join(dir, 'gpunixd.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const logPath = join(dir, 'daemon.log');
  // To a file, not a pipe: a daemon must never block on output nobody reads.
  const fd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'daemon', '--config', configPath], { cwd: root, stdio: ['ignore', fd, fd], env: { ...process.env, ...options.env } });
  closeSync(fd);
  live.add(child);
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running = false;
      live.delete(child);
      resolve({ code, signal });
    }),
  );
  const log = () => {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  let stopped = false;
  const node: FleetNode = {
    name,
    socket,
    dir,
    adminToken,
    pid: child.pid,
    get running() {
      return running;
    },
    log,
    exited,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (!running) return;
      child.kill(signal);
      await exited;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (running) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
    async ps() {
      const control = await Session.open({ socket, token: adminToken }, { role: 'control' });
      try {
        return ((await control.call('ListProcesses', {})) as { processes: ProcessRecord[] }).processes;
      } finally {
        control.close();
      }
    },
  };
  try {
    await waitFor(`node ${name}'s daemon listens`, () => existsSync(socket) || !running, LISTEN_TIMEOUT_MS);
    if (!running) throw new Error(`node ${name}'s daemon exited`);
  } catch (error) {
    const message = `${(error as Error).message}\n--- ${name}'s log ---\n${log().slice(-3000)}`;
    await node.stop();
    throw new Error(message);
  }
  return node;
}

/** Starts `names.length` nodes at once (in parallel: each opens its own device). */
export async function startNodes(names: string[], options: Omit<NodeOptions, 'name'>): Promise<FleetNode[]> {
  const results = await Promise.allSettled(names.map((name) => startNode({ ...options, name })));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(results.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    throw failed.reason;
  }
  return results.map((r) => (r as PromiseFulfilledResult<FleetNode>).value);
}
