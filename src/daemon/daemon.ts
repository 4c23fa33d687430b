// gpunixd: the kernel behind a socket. startDaemon() opens the devices, listens (Unix socket, and
// TLS/TCP and metrics when configured) and serves until close(): 'drain' stops accepting and lets
// running processes finish (up to a timeout) before killing the rest; 'immediate' kills all now.
// See docs/daemon.md.

import type { AddressInfo } from 'node:net';
import { ErrorCodes, GpunixError } from '../errors.js';
import { NodeAgent } from '../fleet/nodeAgent.js';
import { createKernel, Kernel } from '../kernel/kernel.js';
import { parseAddress, sessionOptionsFor } from './migrationOut.js';
import { RemoteHostTier } from './remoteTier.js';
import { DaemonConfig, DaemonConfigInput, loadConfigFile, parseConfig } from './config.js';
import type { SessionCounts } from './control.js';
import { captureNativeStderr, createLogger, DaemonLogger, LogFn } from './log.js';
import { Metrics } from './metrics.js';
import { ServiceManager, serviceManagerFromEnvironment } from './readiness.js';
import { prepareSocketPath, Server } from './server.js';
import { RegionHandoff } from './regionHandoff.js';
import { initialTenants, TenantStore } from './tenants.js';

export type ShutdownMode = 'drain' | 'immediate';

export interface Daemon {
  readonly kernel: Kernel;
  readonly config: DaemonConfig;
  /** The Unix socket it listens on. */
  readonly socketPath: string;
  /** The TCP (TLS or insecure) address, when configured (port 0 in the config: the port chosen). */
  readonly tcpAddress: AddressInfo | null;
  /** The metrics endpoint's address, when configured. */
  readonly metricsAddress: AddressInfo | null;
  sessions(): SessionCounts;
  /** The daemon's structured log. */
  readonly log: LogFn;
  /** Its membership in the fleet (the configuration's `fleet` section); null when it is not a fleet node. */
  readonly nodeAgent: NodeAgent | null;
  /** Shuts down (default: drain with the configured timeout); resolves when everything is closed. Idempotent. */
  close(mode?: ShutdownMode, timeoutMs?: number): Promise<void>;
  /** Resolves once the daemon has shut down, however that happened. */
  readonly closed: Promise<void>;
}

/** How the daemon runs, beyond its configuration. */
export interface DaemonRuntime {
  /**
   * The daemon is this OS process's program (`gpunix daemon`): it may take over fd 2, routing native
   * libraries' output through a relay that wraps it as JSON log lines (log.ts). Never in a process
   * that hosts other things (a test runner).
   */
  ownsProcess?: boolean;
}

/** Starts a daemon from a configuration object, or from a JSON file with `{ configPath }`. */
export async function startDaemon(options: DaemonConfigInput | { configPath: string; socket?: string; backends?: string[] }, runtime: DaemonRuntime = {}): Promise<Daemon> {
  const config =
    'configPath' in options && typeof options.configPath === 'string'
      ? loadConfigFile(options.configPath, {
          ...(options.socket === undefined ? {} : { socket: options.socket }),
          ...(options.backends === undefined ? {} : { kernel: { backends: options.backends } }),
        })
      : parseConfig(options);
  // Before the devices are opened: a socket another daemon answers on is refused at once.
  await prepareSocketPath(config.socket);
  const logger = createLogger(config.log);
  const log = logger.log;
  // Before the devices are opened: Dawn and the driver print their warnings then.
  if (runtime.ownsProcess && !config.log.file) {
    const problem = await captureNativeStderr(config.log.level);
    if (problem) log('warn', 'native libraries\' output on stderr is not wrapped as JSON', { reason: problem });
  }
  const tenantEntries = initialTenants(config);
  const quotas = Object.fromEntries(Object.entries(tenantEntries).map(([name, { tokenHash: _hash, ...quota }]) => [name, quota]));
  let kernel: Kernel;
  try {
    kernel = await createKernel({ ...config.kernel, tenants: quotas, remoteTier: remoteTierOf(config) });
  } catch (error) {
    // A kernel option the schema let through (its own checks are finer): still a configuration error.
    if (error instanceof GpunixError && error.code === ErrorCodes.BAD_OPTION) throw new GpunixError(ErrorCodes.BAD_CONFIG, `kernel: ${error.message}`, { cause: error });
    throw error;
  }
  const tenants = new TenantStore(kernel, config, tenantEntries);
  let server: Server | null = null;
  // Healthy while accepting sessions with at least one usable device (GET /healthz).
  const health = (): string | null => {
    if (!server || !server.accepting) return 'draining';
    if (kernel.isShutdown) return 'shutting down';
    if (kernel.stats().devices.every((d) => d.lost !== null)) return 'no usable device';
    return null;
  };
  const metrics = config.metrics ? new Metrics(kernel, () => server?.counts() ?? { process: 0, control: 0, handshaking: 0 }, health) : null;
  // Made once the daemon listens (below); the fleet's control messages ask it for its client.
  let nodeAgent: NodeAgent | null = null;
  const fleet = config.fleet
    ? () => {
        if (!nodeAgent) throw new GpunixError(ErrorCodes.FLEET_UNAVAILABLE, 'the fleet node is not started yet');
        return nodeAgent.client();
      }
    : undefined;
  server = new Server({ kernel, config, tenants, log, metrics, startedAt: Date.now(), regionHandoff: null, ...(fleet ? { fleet } : {}) });
  let metricsAddress: AddressInfo | null = null;
  // Shared-memory regions' descriptors go to clients through a socket of their own (regionHandoff.ts),
  // opened once the main socket is ours: a daemon that fails to start never touches a running one's.
  let regionHandoff: RegionHandoff | null = null;
  try {
    await server.listen();
    try {
      regionHandoff = config.sharedMemory?.directory === null ? null : await RegionHandoff.listen(config.socket, config.socketMode, log);
      server.deps.regionHandoff = regionHandoff;
    } catch (error) {
      log('warn', 'no region handoff socket: shared-memory regions are tmpfs files', { error: error instanceof Error ? error.message : String(error) });
    }
    if (metrics && config.metrics) metricsAddress = await metrics.listen(config.metrics.host, config.metrics.port);
  } catch (error) {
    server.stopListening();
    regionHandoff?.close();
    await metrics?.close();
    await kernel.shutdown();
    logger.flush();
    throw error;
  }
  log('info', 'gpunixd listening', {
    socket: config.socket,
    tcp: server.tcpAddress ? `${config.tcp?.tls ? 'tls' : 'tcp'}://${server.tcpAddress.address}:${server.tcpAddress.port}` : null,
    metrics: metricsAddress ? `http://${metricsAddress.address}:${metricsAddress.port}/metrics` : null,
    devices: kernel.describeDevices().map((d) => `${d.id}: ${d.description} (${d.backend}, ${d.featureLevel})`),
    tenants: Object.keys(tenantEntries),
  });
  // systemd's Type=notify (readiness.ts): ready now that every listener is up.
  const serviceManager = runtime.ownsProcess ? serviceManagerFromEnvironment(log) : null;
  serviceManager?.ready(`listening on ${config.socket}`);
  // A fleet node joins once it serves: an unreachable etcd is retried in the background, and the
  // daemon serves its local tenants meanwhile.
  const tcp = server.tcpAddress;
  nodeAgent = config.fleet
    ? new NodeAgent({
        fleet: config.fleet,
        kernel,
        tenants,
        log,
        socket: config.socket,
        url: tcp ? `${config.tcp?.tls ? 'tls' : 'tcp'}://${tcp.address}:${tcp.port}` : null,
        imageDir: config.imageDir,
        // Moving fleet members between nodes (docs/fleet.md, "Moving running work"): the daemon's live migration, with the peers' admin token.
        moveProcess: (pid, options) => server!.moveProcess(pid, options),
        peerToken: config.migration?.peerToken ?? null,
      })
    : null;
  nodeAgent?.start();
  return new RunningDaemon(kernel, config, server, metrics, metricsAddress, logger, serviceManager, nodeAgent, regionHandoff);
}

class RunningDaemon implements Daemon {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private closing: Promise<void> | null = null;
  private hurry: (() => void) | null = null;

  constructor(
    readonly kernel: Kernel,
    readonly config: DaemonConfig,
    private readonly server: Server,
    private readonly metrics: Metrics | null,
    readonly metricsAddress: AddressInfo | null,
    private readonly logger: DaemonLogger,
    private readonly serviceManager: ServiceManager | null = null,
    readonly nodeAgent: NodeAgent | null = null,
    private readonly regionHandoff: RegionHandoff | null = null,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  get log(): LogFn {
    return this.logger.log;
  }

  get socketPath(): string {
    return this.config.socket;
  }

  get tcpAddress(): AddressInfo | null {
    return this.server.tcpAddress;
  }

  sessions(): SessionCounts {
    return this.server.counts();
  }

  close(mode: ShutdownMode = 'drain', timeoutMs = this.config.drainTimeoutMs): Promise<void> {
    // An immediate close during a drain cuts the drain short.
    if (this.closing) {
      if (mode === 'immediate') this.hurry?.();
      return this.closing;
    }
    this.closing = this.shutdown(mode, timeoutMs).finally(() => this.resolveClosed());
    return this.closing;
  }

  private async shutdown(mode: ShutdownMode, timeoutMs: number): Promise<void> {
    const log = this.logger.log;
    const live = () => this.kernel.ps().filter((p) => p.state !== 'exited').length;
    log('info', `shutting down (${mode})`, { processes: live(), timeoutMs: mode === 'drain' ? timeoutMs : 0 });
    this.serviceManager?.stopping(mode === 'drain' ? `draining (${live()} running)` : 'stopping', mode === 'drain' ? timeoutMs : undefined);
    // First out of the fleet: its members are killed and the lease revoked, so the scheduler reruns
    // them elsewhere at once (a drain that let them finish here would race their second copies).
    await this.nodeAgent?.stop().catch((error: unknown) => log('warn', 'leaving the fleet failed', { error: error instanceof Error ? error.message : String(error) }));
    this.server.stopListening();
    this.regionHandoff?.close();
    if (mode === 'drain') {
      const deadline = Date.now() + timeoutMs;
      let hurried = false;
      const hurry = new Promise<void>((resolve) => (this.hurry = () => ((hurried = true), resolve())));
      while (live() > 0 && Date.now() < deadline && !hurried) {
        await Promise.race([new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now())))), hurry]);
      }
      if (live() > 0) log('warn', hurried ? 'drain cut short: killing the remaining processes' : 'drain timeout: killing the remaining processes', { processes: live() });
    }
    // Every live process ends with kernel-shutdown; their sessions get ProcessEnded, then close.
    await this.kernel.shutdown();
    this.server.closeAll();
    await this.metrics?.close();
    await this.serviceManager?.settled();
    log('info', 'gpunixd stopped');
    this.logger.flush();
  }
}

/**
 * For a daemon run as a program: maps signals to shutdown modes: SIGTERM drains (what systemd sends
 * on stop), SIGINT (Ctrl-C) kills everything at once; a second signal during a drain goes immediate.
 */
export function installSignalHandlers(daemon: Daemon): void {
  let signalled = false;
  // An operator's stop is audited like the control actions (docs/daemon.md#logs).
  const audit = (signal: string, mode: ShutdownMode) => daemon.log('info', `audit: ${mode === 'drain' ? 'drain' : 'shutdown'}`, { audit: mode === 'drain' ? 'drain' : 'shutdown', actor: 'signal', signal, result: 'ok' });
  process.on('SIGTERM', () => {
    const mode: ShutdownMode = signalled ? 'immediate' : 'drain';
    audit('SIGTERM', mode);
    void daemon.close(mode);
    signalled = true;
  });
  process.on('SIGINT', () => {
    signalled = true;
    audit('SIGINT', 'immediate');
    void daemon.close('immediate');
  });
  // The last line of defence: a bug that escapes every handler is logged, and the daemon (and
  // everyone else's processes) carries on.
  process.on('uncaughtException', (error) => daemon.log('error', 'uncaught exception', { error: error.stack ?? String(error) }));
  process.on('unhandledRejection', (error) => daemon.log('error', 'unhandled rejection', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) }));
}

/** The remote tier of `remoteTier` (another node's host memory), or null; BAD_CONFIG when it cannot be reached by name. */
function remoteTierOf(config: DaemonConfig): RemoteHostTier | null {
  const tier = config.remoteTier;
  if (!tier) return null;
  const address = config.peers?.[tier.node];
  if (!address) throw new GpunixError(ErrorCodes.BAD_CONFIG, `remoteTier.node: "${tier.node}" is not one of peers (name -> address)`);
  const token = config.migration?.peerToken;
  if (!token) throw new GpunixError(ErrorCodes.BAD_CONFIG, 'remoteTier: needs migration.peerToken (the admin token of the node that lends its memory)');
  return new RemoteHostTier(sessionOptionsFor(parseAddress(address), token), tier.maxBytes, tier.node);
}
