// gpunixd's listeners and sessions: a Unix socket (and TLS, or explicitly insecure plain TCP), one
// Connection per client. A connection's first message must be Hello; the token decides the
// tenant; a process session gets a kernel process and a ProcessSession, a control session the
// operators' handlers. A protocol error (or a bug in a handler) ends that session only.

import { chmodSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { AddressInfo, connect as netConnect, createServer as createNetServer, Server as NetServer, Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer } from 'node:tls';
import { widenSocketBuffers } from '../socketBuffers.js';
import { z } from 'zod';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { Kernel, ProcessHandle } from '../kernel/kernel.js';
import type { ExitStatus } from '../kernel/proc.js';
import { PRIORITY_CLASSES, PriorityClass } from '../params.js';
import { ProtocolError } from '../protocol/codec.js';
import { acceptedFrom, Message, MESSAGES, MessageName, MIN_PROTOCOL_VERSION, Payload, PROTOCOL_VERSION } from '../protocol/messages.js';
import { OUTPUT_HIGH_WATER_BYTES, Wire } from '../protocol/wire.js';
import { DaemonConfig, describeIssues } from './config.js';
import type { FleetClient } from '../fleet/client.js';
import { ControlContext, handleControl, imagePath, ResultWithData, SessionCounts } from './control.js';
import type { LogFn } from './log.js';
import type { Metrics } from './metrics.js';
import { ProcessSession } from './processSession.js';
import { MigrationsIn } from './migrationIn.js';
import { migrateOut, MigrateOutOptions, MigrateOutResult, MovingClient, NodeAddress, parseAddress } from './migrationOut.js';
import { SegmentHomes } from './segmentHome.js';
import { LentHostMemory } from './lentHostMemory.js';
import { SegmentReplicas } from './segmentReplica.js';
import { sharedMemorySettings } from './sharedMemory.js';
import type { RegionHandoff } from './regionHandoff.js';
import type { Principal, TenantStore } from './tenants.js';

const ACCEPTED = { process: acceptedFrom('process'), control: acceptedFrom('control') };

/** Control requests queued on one session before the daemon stops reading from it (backpressure). */
const CONTROL_QUEUE_HIGH_WATER = 64;
/** The most often the daemon warns that it closes unauthenticated connections to make room. */
const EVICTION_LOG_INTERVAL_MS = 10_000;
/** Messages a process session may pipeline while its process is being created. */
const STARTING_QUEUE_LIMIT = 100_000;
/**
 * The longest process name a Hello may give (UTF-16 units). A name is in every process listing,
 * trace and metrics scrape: an unbounded one would let one tenant make the admin's replies too
 * large to receive.
 */
export const MAX_PROCESS_NAME_LENGTH = 256;

/** A client's string, quoted and cut short, for an error message (it is echoed back and logged). */
const quoted = (value: string) => JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}...` : value);

const processOptionsSchema = z.strictObject({
  memoryLimit: z.union([z.number(), z.string()]).optional(),
  restoreImage: z.string().min(1).optional(),
  /** The device the process's adapters stand on: an index or id ("gpu1"); absent: placement, per request. */
  device: z.union([z.number().int().nonnegative(), z.string().min(1).max(64)]).optional(),
  /** The token of a Moved message: this session takes over the process that moved here (migrationIn.ts). */
  resume: z.string().min(1).max(256).optional(),
});

export interface ServerDeps {
  kernel: Kernel;
  config: DaemonConfig;
  tenants: TenantStore;
  log: LogFn;
  metrics: Metrics | null;
  startedAt: number;
  /**
   * The fleet (a daemon with a `fleet` section), for the fleet's control messages: asked for at
   * each message, since a node reaches etcd after it listens (it may throw FLEET_UNAVAILABLE until
   * then). Absent: not a fleet node.
   */
  fleet?: () => FleetClient;
  /** Where shared-memory regions' descriptors go to clients (src/daemon/regionHandoff.ts); absent: regions are tmpfs files. */
  regionHandoff?: RegionHandoff | null;
}

export class Server {
  private readonly connections = new Set<Connection>();
  /** Connections that have not sent Hello yet, oldest first (a Set keeps insertion order). */
  private readonly handshaking = new Set<Connection>();
  /** Handshaking connections closed to make room since the last warning about it, and when that was. */
  private evictedSinceLog = 0;
  private lastEvictionLog = 0;
  private readonly listeners: NetServer[] = [];
  private nextSession = 1;
  /** False once a drain or close has begun: no new process may start. */
  accepting = true;
  tcpAddress: AddressInfo | null = null;
  /** Whether the socket file is this daemon's (and so its to remove). */
  private ownsSocket = false;

  /** Processes moving in from other nodes, and those waiting for their client (migrationIn.ts). */
  readonly migrationsIn: MigrationsIn;
  /** Shared segments homed here that other nodes attach (segmentHome.ts). */
  readonly segmentHomes: SegmentHomes;
  /** This node's copies of segments homed on other nodes (segmentReplica.ts). */
  readonly segmentReplicas: SegmentReplicas;
  /** Host memory lent to other nodes for their evicted contents (lentHostMemory.ts). */
  readonly lentHostMemory: LentHostMemory;

  constructor(readonly deps: ServerDeps) {
    this.migrationsIn = new MigrationsIn({ kernel: deps.kernel, objectAccount: (tenant) => deps.tenants.objectAccount(tenant), log: deps.log });
    this.segmentHomes = new SegmentHomes({ kernel: deps.kernel, log: deps.log });
    this.lentHostMemory = new LentHostMemory(deps.config.lendHostMemory ?? 0, deps.log);
    const { config } = deps;
    this.segmentReplicas = new SegmentReplicas({
      node: config.node ?? config.fleet?.node ?? null,
      peerToken: config.migration?.peerToken ?? null,
      log: deps.log,
      resolve: (name) => this.resolveNode(name),
    });
  }

  /** Where node `name` listens: the configured peers, else the fleet's node records; null if unknown. */
  async resolveNode(name: string): Promise<NodeAddress | null> {
    const configured = this.deps.config.peers?.[name];
    if (configured) return parseAddress(configured);
    if (!this.deps.fleet) return null;
    const node = (await this.deps.fleet().nodes()).find((n) => n.name === name);
    if (node?.address.socket) return { socket: node.address.socket };
    if (node?.address.url) return { url: node.address.url };
    return null;
  }

  /**
   * Moves process `pid` (a process session's) to another node, live (migrationOut.ts). Throws
   * NO_SUCH_PROCESS when no session of this daemon holds it.
   */
  moveProcess(pid: number, options: MigrateOutOptions): Promise<MigrateOutResult> {
    for (const c of this.connections) {
      const moving = c.movingClient(pid);
      if (moving) return migrateOut(moving, options, this.deps.log);
    }
    throw new GpunixError(ErrorCodes.NO_SUCH_PROCESS, `process ${pid} is not a connected program of this daemon (only those move between nodes)`);
  }

  /** Listens on the Unix socket (mode set before anyone can connect) and, if configured, TCP. */
  async listen(): Promise<void> {
    const { config } = this.deps;
    await prepareSocketPath(config.socket);
    const unix = createNetServer((socket) => this.accept(socket, 'unix'));
    // The socket file is created with the umask's bits: narrow them first so that there is no moment
    // when it is more open than configured, then set the mode exactly.
    const umask = process.umask(0o777 & ~config.socketMode);
    try {
      await listenOn(unix, { path: config.socket });
    } finally {
      process.umask(umask);
    }
    this.ownsSocket = true;
    chmodSync(config.socket, config.socketMode);
    this.listeners.push(unix);
    if (config.tcp) {
      const tcp = config.tcp;
      const server = tcp.tls
        ? createTlsServer(
            {
              cert: readFileSync(tcp.tls.cert),
              key: readFileSync(tcp.tls.key),
              ca: tcp.tls.ca ? readFileSync(tcp.tls.ca) : undefined,
              minVersion: 'TLSv1.2',
              // A client that never finishes the TLS handshake is dropped as soon as one that never sends Hello.
              handshakeTimeout: config.handshakeTimeoutMs,
            },
            (socket) => this.accept(socket, 'tls'),
          )
        : createNetServer((socket) => this.accept(socket, 'tcp'));
      if (tcp.tls) server.on('tlsClientError', (error: Error) => this.deps.log('warn', 'TLS handshake failed', { error: error.message }));
      // The raw TCP connection (before any TLS): room for a large frame from the first byte (src/socketBuffers.ts).
      server.on('connection', (raw: Socket) => widenSocketBuffers(raw));
      await listenOn(server, { host: tcp.host, port: tcp.port });
      this.listeners.push(server);
      this.tcpAddress = server.address() as AddressInfo;
    }
  }

  counts(): SessionCounts {
    const counts: SessionCounts = { process: 0, control: 0, handshaking: 0 };
    for (const c of this.connections) {
      if (c.role === 'process') counts.process++;
      else if (c.role === 'control') counts.control++;
      else counts.handshaking++;
    }
    return counts;
  }

  /** Stops listening (no new connections; open ones go on) and removes the socket file. */
  stopListening(): void {
    this.accepting = false;
    // close() only stops accepting; its callback would wait for every open connection to end.
    for (const listener of this.listeners.splice(0)) listener.close();
    if (!this.ownsSocket) return;
    this.ownsSocket = false;
    try {
      unlinkSync(this.deps.config.socket);
    } catch {
      // Already gone (node removes it on close): nothing to do.
    }
  }

  /** Ends every session now. */
  closeAll(): void {
    for (const c of [...this.connections]) c.end();
    this.migrationsIn.close();
  }

  /** Ends the sessions of a removed tenant (its processes are already killed). */
  closeTenant(name: string): void {
    for (const c of [...this.connections]) if (c.principal && !c.principal.admin && c.principal.tenant === name) c.end();
  }

  /**
   * A new connection. Unauthenticated ones have their own limit (maxHandshakes), apart from the
   * sessions: when it is full the oldest is closed to make room, so under a flood of connections
   * that never authenticate a client that sends Hello promptly still gets in (and the flood
   * cannot take the tenants' or the admin's session slots, which are counted at Hello).
   */
  private accept(stream: Duplex, transport: string): void {
    // The Wire batches what one turn sends into one write: Nagle's delay would only hold replies back.
    if (transport !== 'unix') (stream as Socket).setNoDelay(true);
    const id = this.nextSession++;
    const { maxHandshakes } = this.deps.config;
    while (this.handshaking.size >= maxHandshakes) {
      const oldest = this.handshaking.values().next().value!;
      this.handshaking.delete(oldest);
      // Under a flood, one line per eviction would flood the log too: each is a debug line, and a
      // warning sums them up at most every EVICTION_LOG_INTERVAL_MS.
      oldest.fail(ErrorCodes.BUSY, `closed to make room: more than ${maxHandshakes} connections were waiting to authenticate; send Hello at once`, 'debug');
      this.evictedSinceLog++;
      if (Date.now() - this.lastEvictionLog >= EVICTION_LOG_INTERVAL_MS) {
        this.deps.log('warn', 'unauthenticated connections closed to make room (maxHandshakes reached): a flood, or maxHandshakes too low', { closed: this.evictedSinceLog, maxHandshakes });
        this.evictedSinceLog = 0;
        this.lastEvictionLog = Date.now();
      }
    }
    const connection = new Connection(this, id, stream, transport);
    this.connections.add(connection);
    this.handshaking.add(connection);
  }

  /** The connection has sent Hello (or closed): it no longer counts as handshaking. */
  handshakeDone(connection: Connection): void {
    this.handshaking.delete(connection);
  }

  /**
   * Whether an authenticated session of `principal` may open now (besides `self`): the admin has
   * adminSessions of its own; a tenant at most maxSessionsPerTenant, and all tenants together
   * maxSessions. Throws GPUNIX_E_BUSY or GPUNIX_E_QUOTA.
   */
  admit(principal: Principal, self: Connection): void {
    const { config } = this.deps;
    let admins = 0;
    let tenants = 0;
    let ofTenant = 0;
    for (const c of this.connections) {
      if (c === self || !c.principal) continue;
      if (c.principal.admin) admins++;
      else {
        tenants++;
        if (c.principal.tenant === principal.tenant) ofTenant++;
      }
    }
    if (principal.admin) {
      if (admins >= config.adminSessions) throw new ProtocolError(ErrorCodes.BUSY, `the admin already holds ${config.adminSessions} sessions (adminSessions), the most it may`);
      return;
    }
    if (ofTenant >= config.maxSessionsPerTenant) {
      throw new ProtocolError(ErrorCodes.QUOTA, `tenant ${principal.tenant} already holds ${config.maxSessionsPerTenant} sessions, the most one tenant may`);
    }
    if (tenants >= config.maxSessions) throw new ProtocolError(ErrorCodes.BUSY, `gpunixd serves at most ${config.maxSessions} tenant sessions at once; try again later`);
  }

  forget(connection: Connection): void {
    this.connections.delete(connection);
    this.handshaking.delete(connection);
  }
}

/** One client connection and its session. */
class Connection {
  readonly wire: Wire;
  role: 'process' | 'control' | null = null;
  principal: Principal | null = null;
  private state: 'handshake' | 'starting' | 'open' | 'closed' = 'handshake';
  private readonly starting: Message[] = [];
  private handle: ProcessHandle | null = null;
  private processSession: ProcessSession | null = null;
  private control: ControlContext | null = null;
  private controlChain: Promise<void> = Promise.resolve();
  private controlQueued = 0;
  private saidGoodbye = false;
  /** The protocol version of the client's Hello. */
  private clientVersion = 0;
  /** The process moved to another node: its end here is not the client's business. */
  private movedOut = false;
  private readonly handshakeTimer: NodeJS.Timeout;
  /** A control session's idle clock (see armIdleTimer); null on process sessions. */
  private idleTimer: NodeJS.Timeout | null = null;
  private lastMessageAt = Date.now();
  /** Bytes of an unfinished frame counted against the tenant's account now. */
  private countedBuffered = 0;

  constructor(
    private readonly server: Server,
    readonly id: number,
    stream: Duplex,
    private readonly transport: string,
  ) {
    const deps = server.deps;
    this.wire = new Wire(
      stream,
      {
        message: (message) => this.receive(message),
        protocolError: (error) => this.fail(error.code, error.message),
        closed: (error) => {
          if (error && this.state !== 'closed') this.log('debug', 'connection failed', { error: error.message });
          this.cleanup();
        },
        buffered: (bytes) => this.buffered(bytes),
      },
      // Before Hello only a small frame is buffered for a peer not yet known (raised in hello()).
      Math.min(deps.config.maxHandshakeFrameBytes, deps.config.maxFrameBytes),
      OUTPUT_HIGH_WATER_BYTES,
    );
    this.handshakeTimer = setTimeout(() => {
      if (this.state === 'handshake') this.fail(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `no Hello within ${deps.config.handshakeTimeoutMs} ms`);
    }, deps.config.handshakeTimeoutMs);
    this.handshakeTimer.unref();
  }

  private log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
    this.server.deps.log(level, msg, { session: this.id, transport: this.transport, tenant: this.principal?.tenant, pid: this.handle?.pid, ...fields });
  }

  private receive(message: Message): void {
    if (this.state === 'closed') return;
    this.lastMessageAt = Date.now();
    try {
      switch (this.state) {
        case 'handshake':
          if (message.name !== 'Hello') throw new ProtocolError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `the first message must be Hello, not ${message.name}`);
          this.state = 'starting';
          clearTimeout(this.handshakeTimer);
          this.server.handshakeDone(this);
          // What the client pipelines behind Hello waits in memory until the process exists: read no
          // more than what has already arrived (open() resumes), however long the spawn or restore takes.
          this.wire.hold('starting');
          this.hello(message.payload).catch((error: unknown) => this.failWith(error, 'Hello'));
          return;
        case 'starting':
          // A client pipelines its first objects behind Hello: they wait for the process.
          if (this.starting.length >= STARTING_QUEUE_LIMIT) throw new ProtocolError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, 'too many messages before Welcome');
          this.starting.push(message);
          return;
        case 'open':
          this.route(message);
          return;
      }
    } catch (error) {
      this.failWith(error, message.name);
    }
  }

  private async hello(hello: Payload<'Hello'>): Promise<void> {
    const { kernel, tenants, config } = this.server.deps;
    // Older clients are served (they never send what was added since); Welcome says the daemon's version.
    if (hello.version < MIN_PROTOCOL_VERSION || hello.version > PROTOCOL_VERSION) {
      throw new ProtocolError(ErrorCodes.PROTOCOL_VERSION, `gpunixd speaks protocol versions ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}, the client ${hello.version}`);
    }
    if (hello.role !== 'process' && hello.role !== 'control') {
      throw new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, `role must be "process" or "control", not ${quoted(hello.role)}`);
    }
    if (!this.server.accepting) throw new ProtocolError(ErrorCodes.SHUTDOWN, 'gpunixd is shutting down');
    this.clientVersion = hello.version;
    const resume = hello.role === 'process' ? (hello.options as { resume?: unknown } | null)?.resume : undefined;
    if (typeof resume === 'string') return this.resume(resume);
    const principal = tenants.authenticate(hello.token);
    if (!principal) {
      this.server.deps.metrics?.authFailures.inc();
      throw new ProtocolError(
        ErrorCodes.AUTH,
        hello.token === '' ? 'no token given (use --token or $GPUNIX_TOKEN)' : 'the token is not valid for this daemon',
      );
    }
    this.server.admit(principal, this);
    this.principal = principal;
    // Authenticated (still synchronously with Hello's arrival, so this applies to the frames behind
    // it): the full frame size, and a bound on how long a frame begun may take.
    this.wire.setMaxFrameBytes(config.maxFrameBytes);
    this.wire.setFrameTimeout(config.frameTimeoutMs);
    if (hello.role === 'control') {
      this.control = {
        kernel,
        tenants,
        principal,
        imageDir: config.imageDir,
        startedAt: this.server.deps.startedAt,
        sessions: () => this.server.counts(),
        tenantRemoved: (name) => this.server.closeTenant(name),
        progress: (req, what, done, total) => void this.wire.send('Progress', { req, what, done, total }),
        log: this.server.deps.log,
        session: this.id,
        transport: this.transport,
      };
      const fleet = this.server.deps.fleet;
      if (fleet) Object.defineProperty(this.control, 'fleet', { get: fleet, enumerable: true });
      this.control.migrationsIn = this.server.migrationsIn;
      this.control.moveProcess = (pid, options) => this.server.moveProcess(pid, options);
      this.control.peerToken = config.migration?.peerToken ?? null;
      this.control.segmentHomes = this.server.segmentHomes;
      this.control.resolveNode = (name) => this.server.resolveNode(name);
      this.control.lentHostMemory = this.server.lentHostMemory;
      this.open('control', 0);
      this.armIdleTimer();
      return;
    }
    const parsed = processOptionsSchema.safeParse(hello.options ?? {});
    if (!parsed.success) throw new ProtocolError(ErrorCodes.BAD_OPTION, `Hello options: ${describeIssues(parsed.error.issues)}`);
    const options = parsed.data;
    if (!PRIORITY_CLASSES.includes(hello.priority as PriorityClass) && hello.priority !== '') {
      throw new ProtocolError(ErrorCodes.BAD_OPTION, `priority must be one of ${PRIORITY_CLASSES.join(', ')}, got ${quoted(hello.priority)}`);
    }
    if (hello.name.length > MAX_PROCESS_NAME_LENGTH) {
      throw new ProtocolError(ErrorCodes.BAD_OPTION, `a process name is at most ${MAX_PROCESS_NAME_LENGTH} characters, got ${hello.name.length}`);
    }
    const name = hello.name === '' ? undefined : hello.name;
    // The kernel checks the tenant's quotas (process count, priority classes): GPUNIX_E_QUOTA.
    const handle = options.restoreImage
      ? // What the client asked for wins over the image's (priority '' and weight 0: none asked).
        await kernel.restore(imagePath(principal, config.imageDir, options.restoreImage), {
          name,
          tenant: principal.tenant,
          priority: (hello.priority || undefined) as PriorityClass | undefined,
          weight: hello.weight === 0 ? undefined : hello.weight,
          memoryLimit: options.memoryLimit,
          device: options.device,
        })
      : await kernel.spawn({
          tenant: principal.tenant,
          name,
          priority: (hello.priority || 'normal') as PriorityClass,
          weight: hello.weight === 0 ? undefined : hello.weight,
          memoryLimit: options.memoryLimit,
          device: options.device,
        });
    if (this.state === 'closed') {
      // The client left while its process was being made.
      await kernel.kill(handle.pid).catch(() => {});
      return;
    }
    this.handle = handle;
    this.processSession = new ProcessSession({
      handle,
      wire: this.wire,
      log: (level, msg, fields) => this.log(level, msg, fields),
      failed: (error, what) => this.failWith(error, what),
      objects: tenants.objectAccount(principal.tenant),
      sharedMemory: this.sharedMemory(),
      replicas: this.server.segmentReplicas,
    });
    this.watchProcess(handle);
    this.open('process', handle.pid);
  }

  /** Shared memory reaches only a client on this machine: one on the Unix socket. */
  private sharedMemory(): ReturnType<typeof sharedMemorySettings> | null {
    const { config } = this.server.deps;
    return this.transport === 'unix' ? sharedMemorySettings(config.sharedMemory, config.socketMode, this.server.deps.regionHandoff ?? null) : null;
  }

  /** Hello {resume}: the client of a process that moved here takes it over; the token is the credential. */
  private resume(token: string): void {
    const found = this.server.migrationsIn.take(token);
    if (!found) throw new ProtocolError(ErrorCodes.AUTH, 'the resume token is not valid here (unknown, used, or expired: a moved process waits 30 s for its client)');
    const principal: Principal = { tenant: found.tenant, admin: false };
    try {
      this.server.admit(principal, this);
    } catch (error) {
      void this.server.deps.kernel.kill(found.handle.pid).catch(() => {});
      throw error;
    }
    this.principal = principal;
    this.wire.setMaxFrameBytes(this.server.deps.config.maxFrameBytes);
    this.wire.setFrameTimeout(this.server.deps.config.frameTimeoutMs);
    this.handle = found.handle;
    this.processSession = found.session;
    found.session.attach(this.wire, this.sharedMemory());
    this.watchProcess(found.handle);
    this.log('info', 'a moved process was taken over by its client');
    this.open('process', found.handle.pid);
  }

  /** The process session's end, however it comes, goes to the log, the metrics and the client. */
  private watchProcess(handle: ProcessHandle): void {
    void handle.wait().then((status) => {
      // Every exit of a daemon process, with its reason (docs/daemon.md#logs).
      const expected = status.reason === 'normal' || status.reason === 'killed' || status.reason === 'kernel-shutdown' || status.reason === 'moved';
      this.log(expected ? 'info' : 'warn', 'process exited', { processName: handle.name, code: status.code, reason: status.reason, message: status.message });
      this.server.deps.metrics?.processExits.inc({ reason: status.reason });
      try {
        this.processEnded(status);
      } catch (error) {
        this.failWith(error, 'the end of the process');
      }
    });
  }

  /** This connection's process session for `pid`, as a move to another node needs it; null if not ours. */
  movingClient(pid: number): MovingClient | null {
    if (this.state !== 'open' || this.role !== 'process' || !this.handle || this.handle.pid !== pid || !this.processSession) return null;
    return {
      session: this.processSession,
      handle: this.handle,
      wire: this.wire,
      clientVersion: this.clientVersion,
      movedAway: (where) => {
        this.movedOut = true;
        const pid = this.handle!.pid;
        // Ended here with its own reason before the connection's end would kill it.
        void this.server.deps.kernel.endMoved(pid, where).catch(() => {});
        this.end();
      },
    };
  }

  private open(role: 'process' | 'control', pid: number): void {
    this.role = role;
    this.state = 'open';
    this.server.deps.metrics?.sessionsOpened.inc({ role });
    this.wire.send('Welcome', { version: PROTOCOL_VERSION, session: this.id, pid, tenant: this.principal!.tenant, admin: this.principal!.admin });
    this.log('info', 'session opened', { role, admin: this.principal!.admin });
    for (const message of this.starting.splice(0)) {
      if (this.state !== 'open') return;
      try {
        this.route(message);
      } catch (error) {
        this.failWith(error, message.name);
      }
    }
    if (this.state === 'open') this.wire.release('starting');
  }

  private route(message: Message): void {
    const role = this.role!;
    if (MESSAGES[message.name].from !== 'client') {
      throw new ProtocolError(ErrorCodes.PROTOCOL_UNKNOWN_MESSAGE, `${message.name} is sent by the daemon, never by a client`);
    }
    if (!ACCEPTED[role].has(message.name)) {
      throw new ProtocolError(ErrorCodes.PROTOCOL_OUT_OF_ORDER, `${message.name} is not accepted on a ${role} session`);
    }
    if (message.name === 'Goodbye') {
      const payload = message.payload;
      // After what the process session still holds back (see ProcessSession.after); nothing more is read.
      if (this.processSession) {
        this.wire.stopReceiving();
        this.processSession.after(() => this.goodbye(payload));
      } else {
        this.goodbye(payload);
      }
      return;
    }
    if (role === 'process') this.processSession!.handle(message);
    else this.enqueueControl(message);
  }

  /**
   * Counts the bytes of an unfinished frame against the tenant (once authenticated: before, the
   * frame is at most maxHandshakeFrameBytes); a session that takes the tenant's total over
   * maxBufferedBytesPerTenant is closed with GPUNIX_E_QUOTA, so one tenant's many sessions cannot
   * each make the daemon hold a maxFrameBytes frame.
   */
  private buffered(bytes: number): void {
    if (!this.principal || this.state === 'closed') return;
    const account = this.server.deps.tenants.objectAccount(this.principal.tenant);
    account.bufferedBytes += bytes - this.countedBuffered;
    this.countedBuffered = bytes;
    const limit = this.server.deps.config.maxBufferedBytesPerTenant;
    if (account.bufferedBytes > limit) {
      this.fail(ErrorCodes.QUOTA, `tenant ${this.principal.tenant}'s sessions have sent ${account.bufferedBytes} bytes of unfinished frames, over maxBufferedBytesPerTenant (${limit})`);
    }
  }

  /**
   * Closes a control session that has sent nothing for controlIdleTimeoutMs with no request of it
   * in progress (a long checkpoint is not idleness). Process sessions have no idle timeout: their
   * program may compute on the CPU, or wait for the device, for as long as it likes; what they
   * hold is bounded by the tenant's quotas, and an operator can kill them.
   */
  private armIdleTimer(): void {
    const idleMs = this.server.deps.config.controlIdleTimeoutMs;
    if (idleMs === null || this.state === 'closed') return;
    const due = this.controlQueued > 0 ? idleMs : this.lastMessageAt + idleMs - Date.now();
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.state !== 'open') return;
      if (this.controlQueued === 0 && Date.now() - this.lastMessageAt >= idleMs) {
        this.fail(ErrorCodes.PROTOCOL_TIMEOUT, `the control session was idle for ${idleMs} ms (controlIdleTimeoutMs); reconnect to go on`);
        return;
      }
      this.armIdleTimer();
    }, Math.max(due, 1));
    this.idleTimer.unref();
  }

  /** Control requests run one after another, so their replies come in the order they were asked. */
  private enqueueControl(message: Message): void {
    const req = (message.payload as { req: number }).req;
    this.controlQueued++;
    if (this.controlQueued > CONTROL_QUEUE_HIGH_WATER) this.wire.hold('control');
    this.controlChain = this.controlChain.then(async () => {
      if (this.state !== 'open') return;
      try {
        if (!this.server.deps.tenants.stillValid(this.principal!)) throw new GpunixError(ErrorCodes.AUTH, `tenant ${this.principal!.tenant} has been removed`);
        const result = await handleControl(this.control!, message);
        if (result instanceof ResultWithData) this.wire.send('ReplyData', { req, result: result.result ?? null, data: result.data });
        else this.wire.send('Reply', { req, result: result ?? null });
      } catch (error) {
        this.sendFailure(req, error, message.name);
      } finally {
        // A reply is activity too: the idle clock starts again when a long request ends.
        this.lastMessageAt = Date.now();
        this.controlQueued--;
        if (this.controlQueued <= CONTROL_QUEUE_HIGH_WATER / 2) this.wire.release('control');
      }
    });
  }

  private sendFailure(req: number, error: unknown, what: MessageName): void {
    if (error instanceof GpunixError) {
      this.wire.send('Failure', { req, code: error.code, name: 'GpunixError', message: error.message });
      return;
    }
    // A bug, not the client's fault: logged with its stack; the client learns only that it failed.
    this.log('error', `internal error handling ${what}`, { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    this.wire.send('Failure', { req, code: '', name: 'Error', message: `gpunixd failed to handle ${what} (an internal error, logged)` });
  }

  /** Goodbye: a process session's process exits with `code` once its queued work is done. */
  private goodbye(payload: Payload<'Goodbye'>): void {
    this.saidGoodbye = true;
    this.wire.stopReceiving();
    const handle = this.handle;
    const finish = (result: unknown) => {
      this.wire.send('Reply', { req: payload.req, result });
      this.end();
    };
    if (!handle) {
      finish(null);
      return;
    }
    handle.exit(payload.code).then(
      (status) => finish(status),
      (error: unknown) => {
        this.sendFailure(payload.req, error, 'Goodbye');
        this.end();
      },
    );
  }

  /** The process ended on its own account (killed by an operator, daemon shutdown): tell the client. */
  private processEnded(status: ExitStatus): void {
    if (this.state === 'closed' || this.saidGoodbye || this.movedOut) return;
    this.wire.send('ProcessEnded', { code: status.code, reason: status.reason, message: status.message ?? '' });
    this.log('debug', 'process ended: closing its session', { code: status.code, reason: status.reason });
    this.end();
  }

  /** Ends the session with a ProtocolError of `code`. */
  fail(code: string, message: string, level: 'warn' | 'debug' = 'warn'): void {
    if (this.state === 'closed') return;
    this.log(level, 'protocol error; closing the session', { code, message });
    this.server.deps.metrics?.protocolErrors.inc({ code });
    this.wire.send('ProtocolError', { code, message });
    this.end();
  }

  private failWith(error: unknown, what: string): void {
    if (error instanceof GpunixError) {
      this.fail(error.code, error.message);
      return;
    }
    this.log('error', `internal error handling ${what}; closing the session`, { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    this.fail(ErrorCodes.PROTOCOL_MALFORMED, `gpunixd could not handle ${what} (an internal error, logged); the session is closed`);
  }

  /** Closes the connection (after what was sent) and releases the session's process. */
  end(): void {
    this.wire.close();
    this.cleanup();
  }

  private cleanup(): void {
    if (this.state === 'closed') return;
    const wasOpen = this.state === 'open';
    this.state = 'closed';
    clearTimeout(this.handshakeTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.principal && this.countedBuffered > 0) this.server.deps.tenants.objectAccount(this.principal.tenant).bufferedBytes -= this.countedBuffered;
    this.countedBuffered = 0;
    this.server.forget(this);
    if (this.role === 'control') {
      this.server.migrationsIn.peerGone(this.id);
      this.server.segmentHomes.peerGone(this.id);
      this.server.lentHostMemory.peerGone(this.id);
    }
    try {
      this.processSession?.close();
    } catch (error) {
      this.log('error', 'internal error closing the process session', { error: (error as Error).stack ?? String(error) });
    }
    const handle = this.handle;
    // The client is gone: its process ends and everything it held is released.
    if (handle && handle.state !== 'exited') {
      this.server.deps.kernel.kill(handle.pid).catch((error: unknown) => this.log('debug', 'kill at disconnect failed', { error: String(error) }));
    }
    if (wasOpen) this.log('info', 'session closed');
  }
}

function listenOn(server: NetServer, options: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Makes `path` ready to listen on: creates its directory, and removes a stale socket left by a
 * daemon that died; refuses when another daemon answers on it, or when it is not a socket.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  let stat;
  try {
    stat = lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new GpunixError(ErrorCodes.BAD_CONFIG, `socket: ${path} exists and is not a socket; remove it or choose another path`);
  const answered = await new Promise<boolean>((resolve) => {
    const probe: Socket = netConnect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (answered) throw new GpunixError(ErrorCodes.BUSY, `another gpunixd is listening on ${path}`);
  unlinkSync(path);
}
