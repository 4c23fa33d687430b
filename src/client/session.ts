// A client's session with gpunixd: connects (Unix socket, TCP or TLS), does the handshake, and
// matches replies to requests. The remote WebGPU objects and the operator's commands build on it.

import { connect as netConnect, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
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
    // A TLS socket connects (TCP) before its handshake can fail: keep `fail` until secureConnect.
    socket.once(options.url?.startsWith('tls:') ? 'secureConnect' : 'connect', () => socket.off('error', fail));
  });
}

/** How long Session.open waits for Welcome unless told otherwise (ms). */
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

type Pending = { resolve(value: { result: unknown; data?: Uint8Array }): void; reject(error: Error): void; onProgress?: ProgressListener };

/** Receives a long request's Progress messages: `done` of `total` units of `what` (e.g. "bytes written"). */
export type ProgressListener = (progress: { what: string; done: number; total: number }) => void;

export class Session {
  private nextReq = 1;
  private readonly pending = new Map<number, Pending>();
  /** Messages that are not replies (events), in arrival order. */
  onEvent: (message: Message) => void = () => {};
  /** Called once when the session ends, with why. */
  readonly closed: Promise<Error | null>;
  private resolveClosed!: (error: Error | null) => void;
  private endError: Error | null = null;
  welcome!: Payload<'Welcome'>;

  private constructor(readonly wire: Wire) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Connects and does the handshake; rejects with the daemon's coded error if it refuses. */
  static async open(options: SessionOptions, hello: HelloOptions): Promise<Session> {
    const stream = await openStream(options);
    let session!: Session;
    const welcomed = new Promise<Payload<'Welcome'>>((resolve, reject) => {
      const wire = new Wire(
        stream,
        {
          message: (message) => {
            if (message.name === 'Welcome') resolve(message.payload);
            else if (message.name === 'ProtocolError') {
              const error = new GpunixError(message.payload.code as GpunixError['code'], message.payload.message);
              session.endError = error;
              reject(error);
            } else session.receive(message);
          },
          protocolError: (error) => {
            session.endError = error;
            reject(error);
            wire.destroy();
          },
          closed: (error) => {
            const why = session.endError ?? new GpunixError(ErrorCodes.DISCONNECTED, `the connection to gpunixd closed${error ? `: ${error.message}` : ''}`);
            reject(why);
            session.end(why);
          },
        },
        options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      );
      session = new Session(wire);
    });
    session.wire.send('Hello', {
      version: PROTOCOL_VERSION,
      role: hello.role,
      token: options.token ?? process.env[TOKEN_ENV] ?? '',
      name: hello.name ?? '',
      // '' and 0: none asked for (the daemon's default, or a restored image's own).
      priority: hello.priority ?? '',
      weight: hello.weight ?? 0,
      options: hello.options ?? {},
    });
    // A peer that accepts the connection but never answers must not hang the caller forever.
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new GpunixError(ErrorCodes.DISCONNECTED, `gpunixd did not answer the handshake within ${timeoutMs} ms`));
        session.wire.destroy();
      }, timeoutMs);
    });
    try {
      session.welcome = await Promise.race([welcomed, timedOut]);
    } finally {
      clearTimeout(timer);
    }
    return session;
  }

  get isOpen(): boolean {
    return this.wire.isOpen;
  }

  /** A fresh request number, for messages that carry `req`. */
  newRequest(): number {
    const req = this.nextReq;
    this.nextReq = this.nextReq >= 0xffffffff ? 1 : this.nextReq + 1;
    return req;
  }

  /** Sends a message that gets no answer. Returns false if the session has ended. */
  post<N extends MessageName>(name: N, payload: Payload<N>): boolean {
    return this.wire.send(name, payload);
  }

  /**
   * Sends a request (a message with `req`, filled in here) and resolves with its reply's result
   * (and bytes, for ReplyData); rejects with the Failure as an error, or if the session ends.
   * `onProgress` receives the Progress messages the daemon sends for it before the reply.
   */
  request<N extends MessageName>(name: N, payload: Omit<Payload<N>, 'req'>, onProgress?: ProgressListener): Promise<{ result: unknown; data?: Uint8Array }> {
    const req = this.newRequest();
    return new Promise((resolve, reject) => {
      if (!this.wire.isOpen) {
        reject(this.endError ?? new GpunixError(ErrorCodes.DISCONNECTED, 'the session with gpunixd has ended'));
        return;
      }
      this.pending.set(req, { resolve, reject, onProgress });
      this.wire.send(name, { ...payload, req } as unknown as Payload<N>);
    });
  }

  /** Like request(), resolving with the result alone. */
  async call<N extends MessageName>(name: N, payload: Omit<Payload<N>, 'req'>, onProgress?: ProgressListener): Promise<unknown> {
    return (await this.request(name, payload, onProgress)).result;
  }

  /** Ends the session now. */
  close(): void {
    this.wire.close();
  }

  private receive(message: Message): void {
    switch (message.name) {
      case 'Reply':
      case 'ReplyData': {
        const waiter = this.pending.get(message.payload.req);
        this.pending.delete(message.payload.req);
        waiter?.resolve({ result: message.payload.result, data: message.name === 'ReplyData' ? message.payload.data : undefined });
        return;
      }
      case 'Failure': {
        const waiter = this.pending.get(message.payload.req);
        this.pending.delete(message.payload.req);
        waiter?.reject(failureError(message.payload.code, message.payload.name, message.payload.message));
        return;
      }
      case 'Progress': {
        const { req, what, done, total } = message.payload;
        this.pending.get(req)?.onProgress?.({ what, done, total });
        return;
      }
      case 'ProtocolError':
        this.endError = new GpunixError(message.payload.code as GpunixError['code'], message.payload.message);
        this.onEvent(message);
        return;
      default:
        this.onEvent(message);
    }
  }

  private end(why: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(why);
    this.pending.clear();
    this.resolveClosed(this.endError);
  }
}
