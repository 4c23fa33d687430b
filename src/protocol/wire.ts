// One end of a gpunix connection: frames out (encoded from the message table) and messages in,
// over any byte stream (a Unix socket, TCP, TLS). Used by both the daemon and the client.

import type { Duplex } from 'node:stream';
import { ErrorCodes } from '../errors.js';
import { encodeFrame, FrameDecoder, ProtocolError } from './codec.js';
import { DEFAULT_MAX_FRAME_BYTES, Message, MessageName, Payload } from './messages.js';

export interface WireHandlers {
  /** One decoded message, in arrival order. */
  message(message: Message): void;
  /** The peer sent bytes that are not a valid frame; the stream is no longer in sync. */
  protocolError(error: ProtocolError): void;
  /** The stream ended or failed; called once. */
  closed(error: Error | null): void;
}

/**
 * Bytes queued for a peer that is not reading them, past which the Wire stops reading from that
 * peer until they have gone out. A client that sends requests but never reads the replies thus
 * stops itself (its writes block) instead of growing the daemon's memory without bound.
 */
export const OUTPUT_HIGH_WATER_BYTES = 4 * 1024 * 1024;

export class Wire {
  private readonly decoder: FrameDecoder;
  private open = true;
  /** False once the incoming stream is out of sync: nothing more is decoded, but replies can still go out. */
  private receiving = true;
  /** Why reading from the peer is paused ('output' while its replies back up); reading resumes when none is left. */
  private readonly holds = new Set<string>();
  /** Bytes sent, and received in whole frames: for metrics and benchmarks. */
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly stream: Duplex,
    private readonly handlers: WireHandlers,
    maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    /**
     * Reading pauses while more than this is queued to the peer (the daemon's side: OUTPUT_HIGH_WATER_BYTES).
     * Only one side of a connection may do this, or both could stop reading at once: a client keeps reading.
     */
    private readonly outputHighWater = Infinity,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes);
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
    const frame = encodeFrame(name, payload);
    this.bytesOut += frame.byteLength;
    this.stream.write(frame);
    if (this.stream.writableLength > this.outputHighWater && !this.holds.has('output')) {
      this.hold('output');
      this.stream.once('drain', () => this.release('output'));
    }
    return true;
  }

  /** Whether reading from the peer is paused (for `reason`, or for any reason). */
  isHeld(reason?: string): boolean {
    return reason === undefined ? this.holds.size > 0 : this.holds.has(reason);
  }

  /** Stops reading from the peer until release(reason): backpressure (the peer's writes block). */
  hold(reason: string): void {
    this.holds.add(reason);
    this.stream.pause();
  }

  /** Ends one hold; reading resumes once no hold is left. */
  release(reason: string): void {
    if (!this.holds.delete(reason)) return;
    if (this.holds.size === 0 && this.open && this.receiving) this.stream.resume();
  }

  /** Stops decoding further input (the session is ending); what is sent still goes out. */
  stopReceiving(): void {
    this.receiving = false;
  }

  /** Ends the connection after what was sent has been flushed. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.receiving = false;
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
    let messages: Message[];
    try {
      const before = this.decoder.pendingBytes;
      messages = this.decoder.push(chunk);
      this.bytesIn += before + chunk.byteLength - this.decoder.pendingBytes;
    } catch (error) {
      this.receiving = false;
      this.stream.pause();
      this.handlers.protocolError(
        error instanceof ProtocolError ? error : new ProtocolError(ErrorCodes.PROTOCOL_MALFORMED, (error as Error).message),
      );
      return;
    }
    for (const message of messages) {
      if (!this.open || !this.receiving) return;
      this.handlers.message(message);
    }
  }

  private closedOnce = false;
  private finish(error: Error | null): void {
    this.open = false;
    if (this.closedOnce) return;
    this.closedOnce = true;
    this.handlers.closed(error);
  }
}
