// The remote tier's connection (src/daemon/remoteTier.ts), on a worker thread: the daemon's main
// thread blocks (Atomics.wait) while a restore fetches evicted contents back from the lending
// node, so the bytes must arrive on a thread of their own. One admin control session to that
// node, opened at first need and again after it closes.

import { parentPort, workerData } from 'node:worker_threads';
import { Session, SessionOptions } from '../client/session.js';

interface Request {
  op: 'store' | 'fetch' | 'drop';
  id?: number;
  data?: ArrayBuffer;
  key?: string;
  keys?: string[];
  /** For a synchronous fetch: where the bytes go, and a flag (1: done, 2: failed) the main thread waits on. */
  shared?: SharedArrayBuffer;
  state?: SharedArrayBuffer;
}

const options = (workerData as { options: SessionOptions }).options;
let session: Promise<Session> | null = null;

function open(): Promise<Session> {
  session ??= Session.open(options, { role: 'control' }).then(
    (opened) => {
      void opened.closed.then(() => (session = null));
      return opened;
    },
    (error: unknown) => {
      session = null;
      throw error;
    },
  );
  return session;
}

parentPort!.on('message', (request: Request) => void handle(request));

async function handle(request: Request): Promise<void> {
  try {
    const peer = await open();
    switch (request.op) {
      case 'store': {
        const { key } = (await peer.call('HostStore', { data: new Uint8Array(request.data!) })) as { key: string };
        parentPort!.postMessage({ id: request.id, key });
        return;
      }
      case 'fetch': {
        const { data } = await peer.request('HostFetch', { key: request.key! });
        if (request.shared) {
          new Uint8Array(request.shared).set(data!);
          settle(request.state!, 1);
        } else {
          parentPort!.postMessage({ id: request.id, data: data!.slice() });
        }
        return;
      }
      case 'drop':
        await peer.call('HostDrop', { keys: request.keys! });
        return;
    }
  } catch (error) {
    if (request.state) settle(request.state, 2);
    else if (request.id !== undefined) parentPort!.postMessage({ id: request.id, error: (error as Error).message });
  }
}

function settle(state: SharedArrayBuffer, value: number): void {
  const flag = new Int32Array(state);
  Atomics.store(flag, 0, value);
  Atomics.notify(flag, 0);
}
