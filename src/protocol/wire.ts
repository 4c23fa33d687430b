// One end of a gpunix connection: frames out (encoded from the message table) and messages in,
// over any byte stream (a Unix socket, TCP, TLS). Used by both the daemon and the client.

import type { Duplex } from 'node:stream';
import { ErrorCodes } from '../errors.js';
import { FrameDecoder, FrameEncoder, largeFrameBuffers, ProtocolError } from './codec.js';
import { DEFAULT_MAX_FRAME_BYTES, Message, MessageName, Payload } from './messages.js';

export interface WireHandlers {
  /**
   * One decoded message, in arrival order. Returning true says the handler is done with the
   * message's bytes fields (it copied what it keeps): on a Wire that recycles frames, the buffer a
   * large frame was gathered in is then reused for the next one (FrameDecoder.recycle).
   */
  message(message: Message): unknown;
  /** The peer sent bytes that are not a valid frame; the stream is no longer in sync. */
  protocolError(error: ProtocolError): void;
  /** The stream ended or failed; called once. */
  closed(error: Error | null): void;
  /** Bytes of an unfinished frame held now, after each read (the daemon counts them against the peer's tenant). */
  buffered?(bytes: number): void;
}

/**
 * Bytes queued for a peer that is not reading them, past which the Wire stops reading from that
 * peer until they have gone out. A client that sends requests but never reads the replies thus
 * stops itself (its writes block) instead of growing the daemon's memory without bound.
 */
export const OUTPUT_HIGH_WATER_BYTES = 4 * 1024 * 1024;

/** Bytes queued in one turn past which they are written at once rather than at the turn's end. */
const FLUSH_NOW_BYTES = 64 * 1024;

/**
 * A QueueSubmit is written at once, not at the turn's end, when nothing was written for this long
 * (ms): a program that submits and then computes on the CPU without yielding must not leave the
 * device idle meanwhile. A burst of submits still shares writes (at most one per interval).
 */
const SUBMIT_FLUSH_INTERVAL_MS = 0.2;

export class Wire {
  private readonly decoder: FrameDecoder;
  private readonly encoder = new FrameEncoder();
  private flushScheduled = false;
  /** performance.now() of the last write (see SUBMIT_FLUSH_INTERVAL_MS). */
  private lastFlushAt = -Infinity;
  private readonly flushNow = (): void => this.flush();
  private open = true;
  /** False once the incoming stream is out of sync: nothing more is decoded, but replies can still go out. */
  private receiving = true;
  /** Why reading from the peer is paused ('output' while its replies back up); reading resumes when none is left. */
  private readonly holds = new Set<string>();
  /** Bytes sent, and received in whole frames: for metrics and benchmarks. */
  bytesOut = 0;
  bytesIn = 0;
  /** How long a frame begun may take to complete (ms, reading time only); null: no limit. */
  private frameTimeoutMs: number | null = null;
  private frameTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly stream: Duplex,
    private readonly handlers: WireHandlers,
    maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    /**
     * Reading pauses while more than this is queued to the peer (the daemon's side: OUTPUT_HIGH_WATER_BYTES).
     * Only one side of a connection may do this, or both could stop reading at once: a client keeps reading.
     */
    private readonly outputHighWater = Infinity,
    /**
     * Gather large incoming frames in buffers from largeFrameBuffers, reused once the handler says
     * it is done with a message (returns true). A client does this: its large replies (mapped
     * ranges) are copied out at once, and a fresh buffer per reply costs page faults and, at MiBs
     * a round, full garbage collections (docs/benchmarks.md, issue 13, TLS).
     */
    recycleFrames = false,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes, recycleFrames ? largeFrameBuffers : null);
    stream.on('data', (chunk: Buffer) => this.receive(chunk));
    stream.on('error', (error) => this.finish(error));
    stream.on('close', () => this.finish(null));
  }

  get isOpen(): boolean {
    return this.open;
  }

  /** Sends one message; false when the connection is already closed (the message is dropped). */
  send<N extends MessageName>(name: N, payload: Payload<N>): boolean {
    if (!this.open) return false;
    this.bytesOut += this.encoder.encode(name, payload);
    // A turn that has already queued a chunk's worth writes it now: a large payload starts moving at
    // once, and backpressure (the output hold) is applied as soon as replies back up, not at the
    // turn's end.
    if (this.encoder.pendingBytes >= FLUSH_NOW_BYTES) this.flush();
    else if (name === 'QueueSubmit' && performance.now() - this.lastFlushAt >= SUBMIT_FLUSH_INTERVAL_MS) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      // process.nextTick runs once the current callback and the promise reactions queued so far
      // have run: everything a program's synchronous burst (or one daemon handler) sends goes in one
      // write, at no added latency. Measured against a write per frame, a microtask and setImmediate
      // (docs/benchmarks.md): the same round trip, the fewest system calls; setImmediate would also
      // queue behind Dawn's paced polls (src/device/eventPump.ts), which may sleep.
      process.nextTick(this.flushNow);
    }
    return true;
  }

  /**
   * Writes every frame sent since the last flush, in order, in one write (a writev when they are
   * several buffers). Frames sent in one turn of the event loop thus cost one system call, not one each.
   */
  flush(): void {
    this.flushScheduled = false;
    if (this.encoder.pendingBytes === 0) return;
    this.lastFlushAt = performance.now();
    const { buffers, borrowed } = this.encoder.take();
    // Called when the stream is done with the bytes (written, or dropped with the connection).
    const written = borrowed.length === 0 ? undefined : () => {
      for (const buffer of borrowed) largeFrameBuffers.give(buffer);
    };
    if (this.stream.destroyed) {
      written?.();
      return;
    }
    if (buffers.length === 1) this.stream.write(buffers[0], written);
    else {
      this.stream.cork();
      for (let i = 0; i < buffers.length; i++) this.stream.write(buffers[i], i === buffers.length - 1 ? written : undefined);
      this.stream.uncork();
    }
    if (this.stream.writableLength > this.outputHighWater && !this.holds.has('output')) {
      this.hold('output');
      this.stream.once('drain', () => this.release('output'));
    }
  }

  /** Whether reading from the peer is paused (for `reason`, or for any reason). */
  isHeld(reason?: string): boolean {
    return reason === undefined ? this.holds.size > 0 : this.holds.has(reason);
  }

  /** Stops reading from the peer until release(reason): backpressure (the peer's writes block). */
  hold(reason: string): void {
    this.holds.add(reason);
    this.stream.pause();
    this.armFrameTimer();
  }

  /** Ends one hold; reading resumes once no hold is left. */
  release(reason: string): void {
    if (!this.holds.delete(reason)) return;
    if (this.holds.size === 0 && this.open && this.receiving) this.stream.resume();
    this.armFrameTimer();
  }

  /** Stops decoding further input (the session is ending); what is sent still goes out. */
  stopReceiving(): void {
    this.receiving = false;
    this.armFrameTimer();
  }

  /** The largest frame accepted from now on (the daemon allows small frames until the peer is authenticated). */
  setMaxFrameBytes(bytes: number): void {
    this.decoder.maxFrameBytes = bytes;
  }

  /**
   * A frame whose first bytes have arrived must be complete within `ms` (null: no limit), or the
   * peer gets protocolError(GPUNIX_E_PROTOCOL_TIMEOUT). Only time spent reading counts: while this
   * side holds reading (backpressure), the peer cannot finish the frame, so the clock restarts on release.
   */
  setFrameTimeout(ms: number | null): void {
    this.frameTimeoutMs = ms;
    this.clearFrameTimer();
    this.armFrameTimer();
  }

  private clearFrameTimer(): void {
    if (this.frameTimer) clearTimeout(this.frameTimer);
    this.frameTimer = null;
  }

  /** Starts the partial-frame clock when a frame is pending and reading goes on; stops it otherwise. */
  private armFrameTimer(): void {
    const ms = this.frameTimeoutMs;
    if (ms === null || !this.open || !this.receiving || this.holds.size > 0 || this.decoder.pendingBytes === 0) {
      this.clearFrameTimer();
      return;
    }
    if (this.frameTimer) return;
    this.frameTimer = setTimeout(() => {
      this.frameTimer = null;
      if (!this.open || !this.receiving || this.decoder.pendingBytes === 0) return;
      this.receiving = false;
      this.stream.pause();
      this.handlers.protocolError(
        new ProtocolError(ErrorCodes.PROTOCOL_TIMEOUT, `a frame was begun but not completed within ${ms} ms (${this.decoder.pendingBytes} bytes of it arrived)`),
      );
    }, ms);
    this.frameTimer.unref();
  }

  /** Ends the connection after what was sent has been flushed. */
  close(): void {
    if (!this.open) return;
    this.flush();
    this.open = false;
    this.receiving = false;
    this.clearFrameTimer();
    this.stream.end();
    // A peer that never reads must not keep the socket alive forever.
    setTimeout(() => this.stream.destroy(), 2000).unref();
  }

  /** Ends the connection at once, dropping unsent frames. */
  destroy(): void {
    this.stream.destroy();
    this.finish(null);
  }

  private receive(chunk: Buffer): void {
    if (!this.open || !this.receiving) return;
    this.decoder.append(chunk);
    // One message at a time: a handler may change the frame limit for the frames behind its message.
    for (;;) {
      let message: Message | null;
      try {
        const before = this.decoder.pendingBytes;
        message = this.decoder.next();
        this.bytesIn += before - this.decoder.pendingBytes;
      } catch (error) {
        this.receiving = false;
        this.clearFrameTimer();
        this.stream.pause();
        this.handlers.protocolError(
          error instanceof ProtocolError ? error : new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, (error as Error).message),
        );
        return;
      }
      if (!message) break;
      // A frame completed: the clock of the next one starts when its first bytes are left over.
      this.clearFrameTimer();
      if (this.handlers.message(message) === true) this.decoder.recycle();
      if (!this.open || !this.receiving) return;
    }
    this.handlers.buffered?.(this.decoder.pendingBytes);
    this.armFrameTimer();
  }

  private closedOnce = false;
  private finish(error: Error | null): void {
    this.open = false;
    this.clearFrameTimer();
    if (this.closedOnce) return;
    this.closedOnce = true;
    this.handlers.closed(error);
  }
}
