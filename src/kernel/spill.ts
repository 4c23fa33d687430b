// Spill files: where evicted buffers' contents go when host memory for them has a limit
// (`hostMemoryLimit`). Evicted contents arrive in host memory; while those held there exceed the
// limit, the oldest evicted are written to files in the spill directory (least recently used
// first: what was evicted first was used longest ago) and their host memory is freed. A restore
// reads its file back and removes it. A failed write (disk full, unwritable directory) loses
// nothing: the contents stay in host memory, the failure is counted and logged, and spilling
// pauses for a moment before it is tried again.
//
// With a remote tier (another node's host memory, lent through gpunixd: src/daemon/remoteTier.ts),
// the oldest go there first, while it has room, and to files only beyond it (or when a store
// there fails): a tier below this node's host memory and above its disk. A restore fetches them
// back synchronously, as it reads a file.

import { accessSync, closeSync, constants, openSync, readSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { lstat, mkdir, open, readFile, rmdir, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ErrorCodes, GpunixError } from '../errors.js';
import { parseBytes } from '../params.js';
import type { SwapCounters } from './residency.js';

/** The kernel's spill settings, checked. */
export interface SpillSettings {
  /** Most bytes of evicted contents kept in host memory; null: no limit (nothing is spilled). */
  hostLimitBytes: number | null;
  /** Where spill files go (absolute). */
  directory: string;
  /** True for the default directory, which must be private to this user (mode 0700, owned). */
  isDefault: boolean;
  /** Another node's host memory, tried before files; absent or null: none. */
  remote?: RemoteTier | null;
}

/** Host memory of another node, below this node's host memory and above its spill files. */
export interface RemoteTier {
  /** Whether `bytes` more fit there now (as far as this node knows). */
  hasRoom(bytes: number): boolean;
  /** Keeps a copy of `data` there; resolves with its key, or rejects (the contents then go to a file). */
  store(data: Uint8Array): Promise<string>;
  /** Fills `into` with `key`'s bytes, synchronously (a restore); throws when it cannot. */
  fetchSync(key: string, into: Uint8Array): void;
  /** The bytes of `key` (checkpoints read them without moving them). */
  fetch(key: string): Promise<Uint8Array>;
  /** Frees `key` there. */
  drop(key: string): void;
}

/** No limit on host memory: nothing is ever spilled. */
export const NO_SPILL: SpillSettings = { hostLimitBytes: null, directory: defaultSpillDirectory(), isDefault: true };

/** The default spill directory of this OS process: `os.tmpdir()/gpunix-spill-<pid>`. */
export function defaultSpillDirectory(): string {
  return join(tmpdir(), `gpunix-spill-${process.pid}`);
}

/** After a failed spill, how long the store keeps everything in host memory before trying again. */
const SPILL_RETRY_MS = 1000;

/** Host memory for evicted contents (the residency's recycling pool). */
export interface HostMemory {
  take(size: number): Uint8Array<ArrayBuffer>;
  give(array: Uint8Array<ArrayBuffer>): void;
}

/** Whose evicted bytes these are: the process, which counts its bytes on disk. */
export interface SpillOwner {
  spilledBytes: number;
  bytesSpilled: number;
}

/** One evicted buffer's contents: in host memory, being written to a file, or in a file. */
export class Evicted {
  /** In host memory (also while being written); null once in a file. */
  host: Uint8Array<ArrayBuffer> | null;
  /** The complete spill file holding the contents; null while in host memory. */
  file: string | null = null;
  /** The key of the contents in the remote tier; null when not there. */
  remote: string | null = null;
  /** A write to a file is in progress (the host array is being read by it). */
  writing = false;
  /** Taken back or dropped: a write that finishes now removes its file. */
  gone = false;
  constructor(
    readonly size: number,
    readonly owner: SpillOwner,
    host: Uint8Array<ArrayBuffer>,
  ) {
    this.host = host;
  }
}

let storeSequence = 0;
/** Stores with files that may exist: removed at the OS process's exit if the kernel never shut down. */
const openStores = new Set<SpillStore>();
let exitHookInstalled = false;

export class SpillStore {
  /** Contents in host memory and not being written, oldest evicted first (the spill order). */
  private readonly queue = new Set<Evicted>();
  /** Bytes of host contents being written now (they still count in hostBytes until written). */
  private pendingBytes = 0;
  /** Every file this store has created and not yet removed. */
  private readonly files = new Set<string>();
  private readonly writes = new Set<Promise<void>>();
  private directoryReady: Promise<void> | null = null;
  private createdDirectory = false;
  private readonly prefix = `${process.pid}-${++storeSequence}`;
  private sequence = 0;
  private retryAfterMs = 0;
  private closed = false;

  constructor(
    readonly settings: SpillSettings,
    private readonly swap: SwapCounters,
    private readonly pool: HostMemory,
  ) {}

  /** Takes evicted contents (given up by the caller) into the store; spills the oldest if over the limit. */
  hold(data: Uint8Array<ArrayBuffer>, owner: SpillOwner): Evicted {
    const evicted = new Evicted(data.byteLength, owner, data);
    this.swap.hostBytes += evicted.size;
    this.queue.add(evicted);
    this.spillExcess();
    return evicted;
  }

  /**
   * The contents, synchronously, for a restore: the host array, or a pooled array filled from the
   * file (which is then removed). `recycle`: the caller gives the array to the pool after use.
   * Throws (and keeps the file) when the file cannot be read back whole.
   */
  take(evicted: Evicted): { data: Uint8Array<ArrayBuffer>; recycle: boolean } {
    if (evicted.host) {
      const data = evicted.host;
      this.forgetHost(evicted);
      evicted.gone = true;
      return { data, recycle: !evicted.writing };
    }
    if (evicted.remote) return this.takeRemote(evicted);
    const data = this.pool.take(evicted.size);
    try {
      readWhole(evicted.file!, data);
    } catch (error) {
      this.pool.give(data);
      this.swap.spillFailures++;
      throw new Error(`gpunix: spill file ${evicted.file} could not be read back (${(error as Error).message}); it is kept for another try`, { cause: error });
    }
    evicted.gone = true;
    this.forgetFile(evicted);
    return { data, recycle: true };
  }

  /** A copy of the contents, wherever they are (checkpoints); nothing moves. */
  async peek(evicted: Evicted): Promise<Uint8Array> {
    if (evicted.host) return evicted.host.slice();
    if (evicted.remote) return this.settings.remote!.fetch(evicted.remote);
    const data = await readFile(evicted.file!);
    if (data.byteLength !== evicted.size) throw new Error(`spill file ${evicted.file} holds ${data.byteLength} bytes, not ${evicted.size}`);
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }

  /** Frees the contents (the buffer was destroyed): host memory back to the pool, the file removed. */
  drop(evicted: Evicted): void {
    if (evicted.gone) return;
    evicted.gone = true;
    if (evicted.host) {
      const host = evicted.host;
      this.forgetHost(evicted);
      if (!evicted.writing) this.pool.give(host);
    } else if (evicted.file) this.forgetFile(evicted);
    else if (evicted.remote) this.forgetRemote(evicted);
  }

  /** take() of contents in the remote tier: fetched back into a pooled array, and freed there. */
  private takeRemote(evicted: Evicted): { data: Uint8Array<ArrayBuffer>; recycle: boolean } {
    const data = this.pool.take(evicted.size);
    try {
      this.settings.remote!.fetchSync(evicted.remote!, data);
    } catch (error) {
      this.pool.give(data);
      this.swap.spillFailures++;
      throw new Error(`gpunix: evicted contents held on another node could not be fetched back (${(error as Error).message}); they are kept there for another try`, { cause: error });
    }
    evicted.gone = true;
    this.forgetRemote(evicted);
    return { data, recycle: true };
  }

  private forgetRemote(evicted: Evicted): void {
    const key = evicted.remote!;
    evicted.remote = null;
    this.swap.remoteBytes -= evicted.size;
    this.settings.remote!.drop(key);
  }

  private forgetHost(evicted: Evicted): void {
    this.swap.hostBytes -= evicted.size;
    this.queue.delete(evicted);
    if (evicted.writing) this.pendingBytes -= evicted.size;
    evicted.host = null;
  }

  private forgetFile(evicted: Evicted): void {
    const file = evicted.file!;
    evicted.file = null;
    this.swap.spillFiles--;
    this.swap.spilledBytes -= evicted.size;
    evicted.owner.spilledBytes -= evicted.size;
    this.remove(file);
  }

  /** Starts writing the oldest host contents to files until what stays in host memory is within the limit. */
  private spillExcess(): void {
    const limit = this.settings.hostLimitBytes;
    if (limit === null || this.closed || performance.now() < this.retryAfterMs) return;
    for (const evicted of this.queue) {
      if (this.swap.hostBytes - this.pendingBytes <= limit) break;
      this.queue.delete(evicted);
      evicted.writing = true;
      this.pendingBytes += evicted.size;
      const remote = this.settings.remote;
      this.track(remote && remote.hasRoom(evicted.size) ? this.sendRemote(evicted, remote) : this.write(evicted));
    }
  }

  private track(work: Promise<void>): void {
    this.writes.add(work);
    void work.finally(() => this.writes.delete(work));
  }

  /** Sends one buffer's contents to the remote tier; on success frees their host memory, on failure writes a file. Never rejects. */
  private async sendRemote(evicted: Evicted, remote: RemoteTier): Promise<void> {
    const host = evicted.host!;
    let key: string;
    try {
      key = await remote.store(host);
    } catch (error) {
      if (evicted.gone) {
        // Taken back or dropped meanwhile (its host array went with it): nothing to write.
        evicted.writing = false;
        return;
      }
      console.warn(`gpunix: could not keep evicted contents on another node (${(error as Error).message}); writing a spill file instead`);
      return this.write(evicted);
    }
    evicted.writing = false;
    if (evicted.gone || this.closed) {
      remote.drop(key);
      if (!evicted.gone) {
        this.pendingBytes -= evicted.size;
        this.queue.add(evicted);
      }
      return;
    }
    this.pendingBytes -= evicted.size;
    evicted.remote = key;
    evicted.host = null;
    this.pool.give(host);
    this.swap.hostBytes -= evicted.size;
    this.swap.remoteBytes += evicted.size;
    this.swap.bytesToRemote += evicted.size;
  }

  /** Writes one buffer's contents to a new file; on success frees their host memory. Never rejects. */
  private async write(evicted: Evicted): Promise<void> {
    const file = join(this.settings.directory, `${this.prefix}-${++this.sequence}.swap`);
    const host = evicted.host!;
    let written = false;
    try {
      const handle = await this.createFile(file);
      try {
        for (let offset = 0; offset < host.byteLength; ) {
          const { bytesWritten } = await handle.write(host, offset, host.byteLength - offset, offset);
          offset += bytesWritten;
        }
        written = true;
      } finally {
        await handle.close();
      }
    } catch (error) {
      written = false;
      this.failed(file, error);
    }
    evicted.writing = false;
    if (evicted.gone) {
      // Taken back or dropped while being written: the file is not needed (nor the array, which
      // was kept from the pool while the write read it).
      this.remove(file);
      return;
    }
    this.pendingBytes -= evicted.size;
    if (!written || this.closed) {
      // Nothing lost: the contents stay in host memory, first in line to spill again.
      if (written) this.remove(file);
      const rest = [...this.queue];
      this.queue.clear();
      for (const e of [evicted, ...rest]) this.queue.add(e);
      return;
    }
    evicted.file = file;
    evicted.host = null;
    this.pool.give(host);
    this.swap.hostBytes -= evicted.size;
    this.swap.spilledBytes += evicted.size;
    this.swap.spillFiles++;
    this.swap.bytesSpilled += evicted.size;
    evicted.owner.spilledBytes += evicted.size;
    evicted.owner.bytesSpilled += evicted.size;
  }

  /** Opens a new file (0600, never an existing one), making the directory first when needed. */
  private async createFile(file: string): Promise<import('node:fs/promises').FileHandle> {
    for (let attempt = 0; ; attempt++) {
      await this.ensureDirectory();
      try {
        const handle = await open(file, 'wx', 0o600);
        this.files.add(file);
        return handle;
      } catch (error) {
        // Another kernel of this OS process removed the shared default directory: make it again.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt > 0) throw error;
        this.directoryReady = null;
      }
    }
  }

  private ensureDirectory(): Promise<void> {
    this.directoryReady ??= (async () => {
      const { directory, isDefault } = this.settings;
      if ((await mkdir(directory, { recursive: true, mode: 0o700 })) !== undefined) this.createdDirectory = true;
      // The default directory must be the kernel's own: no symbolic link, owned, mode 0700.
      const info = isDefault ? await lstat(directory) : await stat(directory);
      if (!info.isDirectory()) throw new Error(`${directory} is not a directory`);
      if (isDefault && ((process.getuid && info.uid !== process.getuid()) || (info.mode & 0o077) !== 0)) {
        throw new Error(`${directory} is not a private directory of this user (mode 0700)`);
      }
      this.installExitHook();
    })();
    return this.directoryReady.catch((error) => {
      this.directoryReady = null;
      throw error;
    });
  }

  private failed(file: string, error: unknown): void {
    this.swap.spillFailures++;
    this.retryAfterMs = performance.now() + SPILL_RETRY_MS;
    setTimeout(() => this.spillExcess(), SPILL_RETRY_MS + 1).unref();
    if (this.files.has(file)) this.remove(file);
    console.warn(`gpunix: could not spill evicted contents to ${file} (${(error as Error).message}); they stay in host memory`);
  }

  private remove(file: string): void {
    if (!this.files.delete(file)) return;
    this.track(unlink(file).catch(() => undefined));
  }

  private installExitHook(): void {
    openStores.add(this);
    if (exitHookInstalled) return;
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const store of openStores) store.removeAllSync();
    });
  }

  /** Removes every file (and the directory, when the kernel made it or it is the default), at once. */
  private removeAllSync(): void {
    for (const file of this.files) {
      try {
        unlinkSync(file);
      } catch {
        /* gone already */
      }
    }
    this.files.clear();
    if (this.createdDirectory || this.settings.isDefault) {
      try {
        rmdirSync(this.settings.directory);
      } catch {
        /* not empty (another kernel's files), or gone */
      }
    }
  }

  /** The kernel's shutdown: waits for writes in progress, then removes every file and the directory. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.writes.size > 0) await Promise.all([...this.writes]);
    await Promise.all([...this.files].map((file) => unlink(file).catch(() => undefined)));
    this.files.clear();
    if (this.directoryReady && (this.createdDirectory || this.settings.isDefault)) {
      await rmdir(this.settings.directory).catch(() => undefined);
    }
    openStores.delete(this);
  }
}

/** Fills `data` from `file`, which must hold exactly its length. */
function readWhole(file: string, data: Uint8Array): void {
  const fd = openSync(file, 'r');
  try {
    let offset = 0;
    while (offset < data.byteLength) {
      const read = readSync(fd, data, offset, data.byteLength - offset, offset);
      if (read === 0) throw new Error(`truncated at ${offset} of ${data.byteLength} bytes`);
      offset += read;
    }
  } finally {
    closeSync(fd);
  }
}

/** Checks `hostMemoryLimit` and `spillDirectory` (createKernel); a bad value is GPUNIX_E_BAD_OPTION. */
export function resolveSpillSettings(hostMemoryLimit: number | string | null | undefined, spillDirectory: string | undefined): SpillSettings {
  let hostLimitBytes: number | null = null;
  if (hostMemoryLimit !== undefined && hostMemoryLimit !== null) {
    let bytes: number;
    if (typeof hostMemoryLimit === 'number') bytes = hostMemoryLimit;
    else if (typeof hostMemoryLimit === 'string') {
      try {
        bytes = parseBytes(hostMemoryLimit);
      } catch (error) {
        throw new GpunixError(ErrorCodes.BAD_OPTION, `hostMemoryLimit: ${(error as Error).message}`);
      }
    } else bytes = NaN;
    if (!Number.isFinite(bytes) || bytes < 0) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `hostMemoryLimit must be a byte count of 0 or more (or "512M"), got ${String(hostMemoryLimit)}`);
    }
    hostLimitBytes = Math.floor(bytes);
  }
  if (spillDirectory === undefined) return { hostLimitBytes, directory: defaultSpillDirectory(), isDefault: true };
  if (typeof spillDirectory !== 'string' || spillDirectory.trim() === '' || spillDirectory.includes('\0')) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `spillDirectory must be a directory path, got ${JSON.stringify(spillDirectory)}`);
  }
  const directory = resolve(spillDirectory);
  // The directory, or (when it does not exist yet) the nearest existing folder above it, must be
  // a directory the kernel may write in: the directory is made on first need.
  let existing = directory;
  for (;;) {
    let isDirectory: boolean;
    try {
      isDirectory = statSync(existing).isDirectory();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(existing) !== existing) {
        if (code === 'ENOTDIR') {
          throw new GpunixError(ErrorCodes.BAD_OPTION, `spillDirectory ${directory}: a part of the path is not a directory`);
        }
        existing = dirname(existing);
        continue;
      }
      throw new GpunixError(ErrorCodes.BAD_OPTION, `spillDirectory ${directory}: ${(error as Error).message}`);
    }
    if (!isDirectory) {
      throw new GpunixError(
        ErrorCodes.BAD_OPTION,
        existing === directory ? `spillDirectory ${directory} is not a directory` : `spillDirectory ${directory}: ${existing} is not a directory`,
      );
    }
    break;
  }
  try {
    accessSync(existing, constants.W_OK | constants.X_OK);
  } catch {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `spillDirectory ${directory}: ${existing} is not writable`);
  }
  return { hostLimitBytes, directory, isDefault: false };
}
