// The client library: a gpunix process that runs in gpunixd, driven over the wire. connect()
// opens a process session (the daemon spawns the process) and gives its navigator.gpu; an
// unmodified WebGPU program uses it as it would Dawn's. See docs/protocol-webgpu.md.

import { EventEmitter } from 'node:events';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { ExitStatus } from '../kernel/proc.js';
import type { PriorityClass } from '../params.js';
import { Channel } from './channel.js';
import { deliverEvent, deviceTableOf, loseAll, RemoteGPU } from './remote.js';
import { MoveInfo, Session, SessionOptions } from './session.js';

export type { MoveInfo, SessionOptions } from './session.js';
export {
  RemoteAdapter,
  RemoteBindGroup,
  RemoteBindGroupLayout,
  RemoteBuffer,
  RemoteCommandBuffer,
  RemoteCommandEncoder,
  RemoteComputePassEncoder,
  RemoteComputePipeline,
  RemoteDevice,
  RemoteGPU,
  RemotePipelineLayout,
  RemoteQuerySet,
  RemoteQueue,
  RemoteShaderModule,
} from './remote.js';

export interface ConnectOptions extends SessionOptions {
  /** The process's name in the process table. */
  name?: string;
  priority?: PriorityClass;
  weight?: number;
  /** The process's device memory limit (bytes, or a string such as "512M"). */
  memoryLimit?: number | string;
  /** A process image path on the daemon's machine: the session's process is that image, restored. */
  restoreImage?: string;
  /** The daemon's device the process's adapters stand on: an index or id ("gpu1"); absent: the daemon places it. */
  device?: number | string;
  /** Further Hello options, as the protocol names them ({memoryLimit?, restoreImage?}); the fields above win. */
  options?: Record<string, unknown>;
}

/** Opens a process session with gpunixd: the daemon spawns (or restores) a process for it. */
export async function connect(options: ConnectOptions = {}): Promise<RemoteProcess> {
  const helloOptions: Record<string, unknown> = { ...(options.options ?? {}) };
  if (options.memoryLimit !== undefined) helloOptions.memoryLimit = options.memoryLimit;
  if (options.restoreImage !== undefined) helloOptions.restoreImage = options.restoreImage;
  if (options.device !== undefined) helloOptions.device = options.device;
  const session = await Session.open(options, {
    role: 'process',
    name: options.name,
    priority: options.priority,
    weight: options.weight,
    options: helloOptions,
  });
  return new RemoteProcess(session);
}

/**
 * A program's process in gpunixd. Emits 'moved' (MoveInfo: {fromPid, from, to, pid}) when the
 * daemon has moved it live to another node (`gpunix migrate PID --to`): every object goes on
 * working there, and `pid` is its pid on that node from then on.
 */
export class RemoteProcess extends EventEmitter<{ moved: [MoveInfo] }> {
  /** The process's navigator.gpu. */
  readonly gpu: GPU;
  /** Resolves with the exit status when the process ends (exit(), or killed by the daemon), or null if the connection just ended. */
  readonly ended: Promise<ExitStatus | null>;
  private resolveEnded!: (status: ExitStatus | null) => void;
  private status: ExitStatus | null = null;
  private readonly channel: Channel;

  constructor(private readonly session: Session) {
    super();
    this.channel = new Channel(session);
    const devices = deviceTableOf(this.channel);
    this.channel.onCollected = (id) => devices.forget(id);
    this.gpu = new RemoteGPU(this.channel) as unknown as GPU;
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    session.onEvent = (message) => {
      if (message.name === 'ProcessEnded') {
        const { code, reason, message: text } = message.payload;
        this.finish({ code, reason: reason as ExitStatus['reason'], ...(text ? { message: text } : {}) });
        loseAll(this.channel, text || `process ${this.pid} ended (${reason})`);
      } else {
        deliverEvent(this.channel, message);
      }
    };
    session.onMoved((moved) => {
      if (moved) this.emit('moved', moved);
    });
    void session.closed.then((error) => {
      loseAll(this.channel, error ? `the session with gpunixd ended: ${error.message}` : 'the session with gpunixd ended');
      this.finish(null);
    });
  }

  /** The process's pid on the node it runs on now (a move between nodes changes it). */
  get pid(): number {
    return this.session.welcome.pid;
  }

  /** The tenant it runs as. */
  get tenant(): string {
    return this.session.welcome.tenant;
  }

  /** The daemon it is connected to now ("unix:PATH" or the URL; a move changes it). */
  get address(): string {
    return this.session.address;
  }

  private finish(status: ExitStatus | null): void {
    if (status && !this.status) this.status = status;
    this.resolveEnded(this.status);
  }

  /** Ends the process normally once its queued work has finished; resolves with its exit status. */
  async exit(code = 0): Promise<ExitStatus> {
    if (this.status) return this.status;
    if (!this.session.isOpen) throw new GpunixError(ErrorCodes.DISCONNECTED, 'the session with gpunixd has ended');
    let status: ExitStatus;
    try {
      status = (await this.session.call('Goodbye', { code })) as ExitStatus;
    } catch (error) {
      // The process ended another way meanwhile (ProcessEnded came first): that is its status.
      if (this.status) return this.status;
      throw error;
    }
    this.finish(status);
    this.session.close();
    return status;
  }

  /** Drops the connection: the daemon kills the process and releases everything it held. */
  close(): void {
    this.session.close();
  }
}
