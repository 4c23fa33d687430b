// A client's session with gpunixd: connects (Unix socket, TCP or TLS), does the handshake, and
// matches replies to requests. The remote WebGPU objects and the operator's commands build on it.

import { connect as netConnect, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { widenSocketBuffers } from '../socketBuffers.js';
import { ErrorCodes, GpunixError } from '../errors.js';
import { DEFAULT_MAX_FRAME_BYTES, Message, MessageName, Payload, PROTOCOL_VERSION } from '../protocol/messages.js';
import { Wire } from '../protocol/wire.js';
import { defaultSocketPath, PriorityClass, TOKEN_ENV } from '../params.js';

export interface SessionOptions {
  /** Unix socket path (default: $GPUNIX_SOCKET or the platform default; see docs/daemon.md). */
  socket?: string;
  /** Instead of a socket: `tcp://host:port` or `tls://host:port`. */
  url?: string;
  /** The tenant's (or admin's) token (default: $GPUNIX_TOKEN). */
  token?: string;
  /** For tls:// URLs: PEM certificate authority to trust (e.g. the daemon's self-signed certificate). */
  ca?: string | Buffer;
  /** For tls:// URLs: the name the daemon's certificate must carry (default: the URL's host). */
  servername?: string;
  maxFrameBytes?: number;
  /** How long to wait for the daemon's Welcome before giving up with GPUNIX_E_DISCONNECTED (default 10 s). */
  handshakeTimeoutMs?: number;
}

export interface HelloOptions {
  role: 'process' | 'control';
  name?: string;
  priority?: PriorityClass;
  weight?: number;
  options?: Record<string, unknown>;
}

/** A Failure reply as an exception: gpunix errors keep their code; WebGPU errors their class name. */
export class RemoteFailure extends Error {
  constructor(
    readonly code: string,
    name: string,
    message: string,
  ) {
    super(message);
    this.name = name || 'Error';
  }
}

function failureError(code: string, name: string, message: string): Error {
  if (code) return new GpunixError(code as GpunixError['code'], message);
  return new RemoteFailure(code, name, message);
}

/** Opens the byte stream a session runs on. */
function openStream(options: SessionOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let socket: Socket;
    const describe = options.url ?? options.socket ?? defaultSocketPath();
    const fail = (error: Error) =>
      reject(new GpunixError(ErrorCodes.DISCONNECTED, `cannot connect to gpunixd at ${describe}: ${error.message}`, { cause: error }));
    if (options.url) {
      let url: URL;
      try {
        url = new URL(options.url);
      } catch {
        reject(new GpunixError(ErrorCodes.BAD_OPTION, `not a URL: ${options.url} (use tcp://host:port or tls://host:port)`));
        return;
      }
      const host = url.hostname.replace(/^\[|\]$/g, '');
      const port = Number(url.port);
      if (!port) {
        reject(new GpunixError(ErrorCodes.BAD_OPTION, `${options.url}: a port is required`));
        return;
      }
      if (url.protocol === 'tls:') {
        socket = tlsConnect({ host, port, ca: options.ca, servername: options.servername ?? host }, () => resolve(socket));
      } else if (url.protocol === 'tcp:') {
        socket = netConnect({ host, port }, () => resolve(socket));
      } else {
        reject(new GpunixError(ErrorCodes.BAD_OPTION, `${options.url}: the scheme must be tcp: or tls:`));
        return;
      }
    } else {
      socket = netConnect({ path: options.socket ?? defaultSocketPath() }, () => resolve(socket));
    }
    socket.once('error', fail);
    // The Wire batches what one turn sends into one write: Nagle's delay would only hold requests back.
    if (options.url) socket.setNoDelay(true);
    // Room for a large frame as soon as the TCP connection exists (src/socketBuffers.ts).
    if (options.url) socket.once('connect', () => widenSocketBuffers(socket));
    // A TLS socket connects (TCP) before its handshake can fail: keep `fail` until secureConnect.
    socket.once(options.url?.startsWith('tls:') ? 'secureConnect' : 'connect', () => socket.off('error', fail));
  });
}

/** How long Session.open waits for Welcome unless told otherwise (ms). */
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

type Pending = { resolve(value: { result: unknown; data?: Uint8Array }): void; reject(error: Error): void; onProgress?: ProgressListener; sink?: ReplySink };

/**
 * Takes a ReplyData's bytes in the turn they arrive and returns its own copy of them, which the
 * reply then carries: the buffer the frame was gathered in is reused for the next large frame
 * (Wire's recycleFrames) instead of each large reply being fresh memory for the collector.
 */
export type ReplySink = (data: Uint8Array) => Uint8Array;

/** Receives a long request's Progress messages: `done` of `total` units of `what` (e.g. "bytes written"). */
export type ProgressListener = (progress: { what: string; done: number; total: number }) => void;

/** Where a process moved to (the Moved message's `address`): a Unix socket path or a tcp://, tls:// URL. */
export type MoveAddress = { socket: string } | { url: string };

/** A move between nodes, as Session.onMoved reports it (docs/daemon.md, "Moving to another node"). */
export interface MoveInfo {
  /** The pid the process had on the node it left. */
  fromPid: number;
  /** The node it left and the node it runs on now, as addresses ("unix:PATH" or the URL). */
  from: string;
  to: string;
  /** Its pid there. */
  pid: number;
}

/** A message the program sent while its process was moving, kept to be sent once it has moved (or the move failed). */
type KeptMessage = { name: MessageName; payload: Record<string, unknown> };

/**
 * Where a move is: 'none'; 'fenced' (MoveBegin came, MoveFence went: the program's messages are
 * kept); 'resuming' (Moved came: connecting to the new node, the old connection no longer counts).
 */
type MoveState = 'none' | 'fenced' | 'resuming';

/** An address as the Session describes it (the node a session runs on). */
function describeAddress(options: SessionOptions): string {
  return options.url ?? `unix:${options.socket ?? defaultSocketPath()}`;
}

export class Session {
  private nextReq = 1;
  private readonly pending = new Map<number, Pending>();
  /** Messages that are not replies (events), in arrival order. */
  onEvent: (message: Message) => void = () => {};
  /** Called once when the session ends, with why. */
  readonly closed: Promise<Error | null>;
  private resolveClosed!: (error: Error | null) => void;
  private endError: Error | null = null;
  private ended = false;
  /** close() was called: a move under way does not reconnect. */
  private closing = false;
  welcome!: Payload<'Welcome'>;
  /** The connection the session runs on now (a move replaces it). */
  private current!: Wire;
  private moveState: MoveState = 'none';
  private kept: KeptMessage[] = [];
  /** Called when a move begins (MoveBegin: the shared-memory region must no longer be chosen). */
  private readonly moveBeginListeners: (() => void)[] = [];
  /** Called when a move ends: cancelled (null: the process stays) or done (the process runs on the new node now). */
  private readonly moveEndListeners: ((moved: MoveInfo | null) => void)[] = [];

  private constructor(
    /** How this session connected (a move connects to the new node with the same options but the address). */
    private options: SessionOptions,
    /** The handshake it made (a move says the same, with options {resume}). */
    private readonly hello: HelloOptions,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** The connection the session runs on now; a move between nodes replaces it. */
  get wire(): Wire {
    return this.current;
  }

  /** Whether a move between nodes is under way (the program's messages are kept until it ends). */
  get moving(): boolean {
    return this.moveState !== 'none';
  }

  /** Where this session is connected now ("unix:PATH" or the URL). */
  get address(): string {
    return describeAddress(this.options);
  }

  /** `listener` runs when a move begins (MoveBegin), before any message is kept. */
  onMoveBegin(listener: () => void): void {
    this.moveBeginListeners.push(listener);
  }

  /** `listener` runs when a move ends: with the move when the process moved (after the kept messages went), null when it was cancelled. */
  onMoved(listener: (moved: MoveInfo | null) => void): void {
    this.moveEndListeners.push(listener);
  }

  /** Connects and does the handshake; rejects with the daemon's coded error if it refuses. */
  static async open(options: SessionOptions, hello: HelloOptions): Promise<Session> {
    const session = new Session(options, hello);
    const { welcome } = await session.dial(options, hello.options ?? {}, (wire) => (session.current = wire));
    session.welcome = welcome;
    return session;
  }

  /**
   * Opens a connection to `options`' daemon and does the handshake (Hello with this session's
   * role, name, priority and weight, and `helloOptions`). `made` receives the Wire as soon as it
   * exists. Messages after Welcome go to receive(); the Wire's end reaches wireClosed().
   */
  private async dial(options: SessionOptions, helloOptions: Record<string, unknown>, made: (wire: Wire) => void): Promise<{ wire: Wire; welcome: Payload<'Welcome'> }> {
    const stream = await openStream(options);
    let wire!: Wire;
    let welcomed = false;
    /** Why this connection failed before Welcome (the daemon's ProtocolError, or a bad frame). */
    let refused: Error | null = null;
    const welcome = new Promise<Payload<'Welcome'>>((resolve, reject) => {
      wire = new Wire(
        stream,
        {
          message: (message) => {
            if (!welcomed && message.name === 'Welcome') {
              welcomed = true;
              resolve(message.payload);
            } else if (!welcomed && message.name === 'ProtocolError') {
              refused = new GpunixError(message.payload.code as GpunixError['code'], message.payload.message);
              if (wire === this.current) this.endError = refused;
              reject(refused);
            } else return this.receive(wire, message);
          },
          protocolError: (error) => {
            refused ??= error;
            if (wire === this.current) this.endError = error;
            reject(error);
            wire.destroy();
          },
          closed: (error) => {
            const why =
              (wire === this.current ? this.endError : null) ?? refused ?? new GpunixError(ErrorCodes.DISCONNECTED, `the connection to gpunixd closed${error ? `: ${error.message}` : ''}`);
            reject(why);
            this.wireClosed(wire, why);
          },
        },
        options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
        Infinity,
        true,
      );
      made(wire);
    });
    wire.send('Hello', {
      version: PROTOCOL_VERSION,
      role: this.hello.role,
      token: options.token ?? process.env[TOKEN_ENV] ?? '',
      name: this.hello.name ?? '',
      // '' and 0: none asked for (the daemon's default, or a restored image's own).
      priority: this.hello.priority ?? '',
      weight: this.hello.weight ?? 0,
      options: helloOptions,
    });
    // A peer that accepts the connection but never answers must not hang the caller forever.
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new GpunixError(ErrorCodes.DISCONNECTED, `gpunixd did not answer the handshake within ${timeoutMs} ms`));
        wire.destroy();
      }, timeoutMs);
    });
    try {
      return { wire, welcome: await Promise.race([welcome, timedOut]) };
    } finally {
      clearTimeout(timer);
    }
  }

  /** A connection ended: the session ends with it, unless it is one a move has left (or is leaving) behind. */
  private wireClosed(wire: Wire, why: Error): void {
    if (wire !== this.current) return;
    // After Moved the old node closes its end: the move's outcome (resume()) decides the session's.
    if (this.moveState === 'resuming') return;
    this.end(why);
  }

  get isOpen(): boolean {
    // While a move is under way the old connection may already be closed: the session is not.
    return !this.ended && (this.moveState !== 'none' || this.current.isOpen);
  }

  /** A fresh request number, for messages that carry `req`. */
  newRequest(): number {
    const req = this.nextReq;
    this.nextReq = this.nextReq >= 0xffffffff ? 1 : this.nextReq + 1;
    return req;
  }

  /** Sends a message that gets no answer (kept while the process moves). Returns false if the session has ended. */
  post<N extends MessageName>(name: N, payload: Payload<N>): boolean {
    if (this.moveState !== 'none') return this.keep(name, payload as Record<string, unknown>);
    return this.current.send(name, payload);
  }

  /**
   * Sends a request (a message with `req`, filled in here) and resolves with its reply's result
   * (and bytes, for ReplyData); rejects with the Failure as an error, or if the session ends.
   * `onProgress` receives the Progress messages the daemon sends for it before the reply.
   * While the process moves the request is kept (its reply then comes from the new node).
   */
  request<N extends MessageName>(name: N, payload: Omit<Payload<N>, 'req'>, onProgress?: ProgressListener, sink?: ReplySink): Promise<{ result: unknown; data?: Uint8Array }> {
    const req = this.newRequest();
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(this.endError ?? new GpunixError(ErrorCodes.DISCONNECTED, 'the session with gpunixd has ended'));
        return;
      }
      this.pending.set(req, { resolve, reject, onProgress, sink });
      this.post(name, { ...payload, req } as unknown as Payload<N>);
    });
  }

  /** Like request(), resolving with the result alone. */
  async call<N extends MessageName>(name: N, payload: Omit<Payload<N>, 'req'>, onProgress?: ProgressListener): Promise<unknown> {
    return (await this.request(name, payload, onProgress)).result;
  }

  /** Ends the session now. */
  close(): void {
    this.closing = true;
    // Connecting to the node the process moved to: that connection is not ours to wait for.
    if (this.moveState === 'resuming') this.end(new GpunixError(ErrorCodes.DISCONNECTED, 'the session with gpunixd was closed'));
    this.current.close();
  }

  /**
   * Keeps a message sent while the process moves. Bytes are copied now: the program may reuse its
   * array as soon as the call returns (as WebGPU allows), and a frame would have copied them too.
   */
  private keep(name: MessageName, payload: Record<string, unknown>): boolean {
    if (this.ended) return false;
    const copy: Record<string, unknown> = { ...payload };
    for (const [key, value] of Object.entries(copy)) if (value instanceof Uint8Array) copy[key] = value.slice();
    this.kept.push({ name, payload: copy });
    return true;
  }

  /** Sends the kept messages, in order, on the connection the session runs on now. */
  private sendKept(): void {
    const kept = this.kept;
    this.kept = [];
    for (const { name, payload } of kept) this.current.send(name, payload as Payload<typeof name>);
  }

  /** MoveBegin: fence at once; from now on the program's messages are kept. */
  private beginMove(wire: Wire): void {
    if (this.moveState !== 'none' || wire !== this.current) return;
    wire.send('MoveFence', {});
    // Flushed now, not at the turn's end: the daemon waits for it.
    wire.flush();
    this.moveState = 'fenced';
    for (const listener of this.moveBeginListeners) listener();
  }

  /** MoveCancelled: the process stays; what was kept goes on this connection. */
  private cancelMove(): void {
    if (this.moveState !== 'fenced') return;
    this.moveState = 'none';
    this.sendKept();
    for (const listener of this.moveEndListeners) listener(null);
  }

  /**
   * Moved: connects to the node the process runs on now (the same options but the address; Hello
   * with options {resume: token}), puts the session on that connection, and sends what was kept.
   * If that fails, the session ends (GPUNIX_E_DISCONNECTED naming the node and why): the process
   * there waits for its client only a while (docs/daemon.md, "Moving to another node").
   */
  private async resume(address: unknown, token: string): Promise<void> {
    if (this.moveState !== 'fenced') return;
    this.moveState = 'resuming';
    const target = moveAddress(address);
    const options: SessionOptions = { ...this.options, socket: undefined, url: undefined, ...target };
    const to = target ? describeAddress(options) : JSON.stringify(address);
    let dialled: { wire: Wire; welcome: Payload<'Welcome'> };
    try {
      if (!target) throw new Error('the daemon named no address (expected {socket} or {url})');
      // Only {resume}: the process exists there already (its memory limit, image, device were the first node's business).
      dialled = await this.dial(options, { resume: token }, () => {});
    } catch (error) {
      const reason = (error as Error).message;
      this.end(new GpunixError(ErrorCodes.DISCONNECTED, `the process moved to ${to} but its session could not follow: ${reason}`, { cause: error }));
      this.current.destroy();
      return;
    }
    if (this.ended || this.closing) {
      dialled.wire.close();
      return;
    }
    const old = this.current;
    const from = this.address;
    const fromPid = this.welcome.pid;
    this.current = dialled.wire;
    this.welcome = dialled.welcome;
    this.options = options;
    this.moveState = 'none';
    this.sendKept();
    // The old node closes its end; ours goes too (what it had to say came before Moved).
    old.close();
    const moved: MoveInfo = { fromPid, from, to, pid: dialled.welcome.pid };
    for (const listener of this.moveEndListeners) listener(moved);
  }

  /** One message after Welcome; true when nothing keeps its bytes past this call (the Wire may reuse their buffer). */
  private receive(wire: Wire, message: Message): boolean {
    switch (message.name) {
      case 'Reply':
      case 'ReplyData': {
        const waiter = this.pending.get(message.payload.req);
        this.pending.delete(message.payload.req);
        if (message.name === 'ReplyData' && waiter?.sink) {
          waiter.resolve({ result: message.payload.result, data: waiter.sink(message.payload.data) });
          return true;
        }
        waiter?.resolve({ result: message.payload.result, data: message.name === 'ReplyData' ? message.payload.data : undefined });
        return !waiter;
      }
      case 'Failure': {
        const waiter = this.pending.get(message.payload.req);
        this.pending.delete(message.payload.req);
        waiter?.reject(failureError(message.payload.code, message.payload.name, message.payload.message));
        return false;
      }
      case 'Progress': {
        const { req, what, done, total } = message.payload;
        this.pending.get(req)?.onProgress?.({ what, done, total });
        return false;
      }
      case 'ProtocolError':
        this.endError = new GpunixError(message.payload.code as GpunixError['code'], message.payload.message);
        this.onEvent(message);
        return false;
      case 'MoveBegin':
        this.beginMove(wire);
        return false;
      case 'MoveCancelled':
        this.cancelMove();
        return false;
      case 'Moved':
        void this.resume(message.payload.address, message.payload.token);
        return false;
      default:
        this.onEvent(message);
        // A MappedData piece is copied into the range being gathered as it is delivered
        // (deliverEvent, src/client/remote.ts): its buffer is free again.
        return message.name === 'MappedData';
    }
  }

  private end(why: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.kept = [];
    for (const waiter of this.pending.values()) waiter.reject(why);
    this.pending.clear();
    // A move that failed says why the session ended (the connection's own close says nothing more).
    this.resolveClosed(this.endError ?? (this.moveState === 'resuming' && !this.closing ? why : null));
  }
}

/** The Moved message's address as SessionOptions fields, or null if it is neither {socket} nor {url}. */
function moveAddress(address: unknown): { socket: string } | { url: string } | null {
  if (typeof address !== 'object' || address === null) return null;
  const { socket, url } = address as { socket?: unknown; url?: unknown };
  if (typeof socket === 'string' && socket !== '') return { socket };
  if (typeof url === 'string' && url !== '') return { url };
  return null;
}
