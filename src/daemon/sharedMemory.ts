// A process session's shared-memory region (docs/daemon.md, "Bulk data"): memory the daemon makes
// and owns and the session's client opens, through which buffer contents travel instead of
// through the socket. Two kinds:
// - a sealed memory file (memfd, src/sharedMapping.ts), wherever libc's calls are reachable:
//   both sides map it and copy with memcpy. It is sealed against shrinking, so no client can
//   truncate it under the daemon's mapping (SIGBUS). It has no name: its descriptor goes to the
//   one client that asked, over the handoff socket (src/daemon/regionHandoff.ts).
// - otherwise a file in a tmpfs (by default /dev/shm), which the daemon never maps (a client of
//   another user could truncate it): it moves bytes with pread/pwrite, a copy in the kernel that
//   merely fails if the file was cut short. The client maps it if it can.
//
// Isolation of the tmpfs file: it is made O_EXCL with a 128-bit random name in `<directory>/gpunix-<uid>`, a
// directory of the daemon's own that nobody else can list; its name goes to the one session that
// asked, over that session's socket, and is unlinked as soon as the client says it has opened it
// (or the session ends), so from then on only the two open descriptors reach it. Its mode follows
// the socket's: 0600 when only the daemon's user may connect, 0660 when its group may (a client of
// another user in that group must be able to open it). The daemon reads and writes a region only
// for the session that owns it, at offsets checked against its size: no message names a region.

import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, GpunixError } from '../errors.js';
import { createSealedMemoryFile, SharedMapping } from '../sharedMapping.js';
import type { RegionHandoff } from './regionHandoff.js';

/** Where regions are made unless the configuration says otherwise. */
export const DEFAULT_SHARED_MEMORY_DIRECTORY = '/dev/shm';
/** The largest region one session may have unless the configuration says otherwise (bytes). */
export const DEFAULT_MAX_SHARED_MEMORY_BYTES = 256 * 1024 * 1024;
/** The most region bytes one tenant's sessions may have together unless the configuration says otherwise. */
export const DEFAULT_MAX_SHARED_MEMORY_BYTES_PER_TENANT = 1024 * 1024 * 1024;

export interface SharedMemorySettings {
  /** Where regions' descriptors are handed to clients (null: no memory files; tmpfs files by name). */
  handoff: RegionHandoff | null;
  /** The tmpfs directory regions are made under (in a `gpunix-<uid>` directory of their own). */
  directory: string;
  /** The largest region of one session (bytes). */
  maxBytes: number;
  /** The most bytes one tenant's regions may have together (the client may fill them: they are host memory). */
  maxBytesPerTenant: number;
  /** The region file's mode: 0o600, or 0o660 when the socket lets its group connect. */
  mode: number;
}

/** The settings for a daemon whose socket has mode `socketMode`; null when shared memory is off. */
export function sharedMemorySettings(
  config: { directory?: string | null; maxBytes?: number; maxBytesPerTenant?: number } | undefined,
  socketMode: number,
  handoff: RegionHandoff | null = null,
): SharedMemorySettings | null {
  const directory = config?.directory === undefined ? DEFAULT_SHARED_MEMORY_DIRECTORY : config.directory;
  if (directory === null) return null;
  return {
    handoff,
    directory,
    maxBytes: config?.maxBytes ?? DEFAULT_MAX_SHARED_MEMORY_BYTES,
    maxBytesPerTenant: config?.maxBytesPerTenant ?? DEFAULT_MAX_SHARED_MEMORY_BYTES_PER_TENANT,
    mode: socketMode & 0o060 ? 0o660 : 0o600,
  };
}

/** Region bytes held per tenant (keyed by the tenant's account object; a session of its own when it has none). */
const tenantBytes = new WeakMap<object, { bytes: number }>();

/** What one tenant's regions hold together; regions charge and refund it as they grow and close. */
export function tenantRegionBytes(tenant: object): { bytes: number } {
  let held = tenantBytes.get(tenant);
  if (!held) tenantBytes.set(tenant, (held = { bytes: 0 }));
  return held;
}

/** The smallest region worth making: below it, bulk data stays in frames. */
const MIN_REGION_BYTES = 1024 * 1024;

const unsupported = (message: string) => new GpunixError(ErrorCodes.UNSUPPORTED, message);

/**
 * `<directory>/gpunix-<uid>`, made if missing (mode 0700, or 0710 for a group-shared region: the
 * group may open a file whose name it is told, never list them); refused unless it is a real
 * directory of the daemon's user (not a symbolic link someone else planted).
 */
function regionDirectory(settings: SharedMemorySettings): string {
  const uid = process.getuid?.() ?? 0;
  const path = join(settings.directory, `gpunix-${uid}`);
  const mode = settings.mode & 0o060 ? 0o710 : 0o700;
  try {
    mkdirSync(path, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw unsupported(`no shared memory: cannot make ${path}: ${(error as Error).message}`);
  }
  const stat = lstatSync(path);
  if (!stat.isDirectory() || stat.uid !== uid) throw unsupported(`no shared memory: ${path} is not a directory of the daemon's user`);
  if ((stat.mode & 0o777) !== mode) chmodSync(path, mode);
  return path;
}

export class SharedRegion {
  /** The region's file name until unlinked (null after, and for a memory file). */
  private name: string | null;
  /** The key its descriptor is on offer under until the client has it (a memory file). */
  private handoffKey: string | null;
  private fd: number;
  /** Its size now (bytes); it only grows. */
  size: number;

  private constructor(
    path: string | null,
    fd: number,
    size: number,
    private readonly held: { bytes: number },
    /** The daemon's own mapping of a sealed memory file (null: a tmpfs file, moved with pread/pwrite). */
    private mapping: SharedMapping | null,
    private readonly handoff: RegionHandoff | null,
    /** The most it may grow to (sharedMemory.maxBytes): the client reserves that much address space too. */
    private readonly limit = size,
  ) {
    this.name = path;
    this.handoffKey = handoff ? handoff.offer(fd) : null;
    this.fd = fd;
    this.size = size;
    held.bytes += size;
  }

  /** Whether the daemon maps the region (a sealed memory file) rather than reading and writing its file. */
  get mapped(): boolean {
    return this.mapping !== null;
  }

  /**
   * Makes a region of `requested` bytes, or less: at most maxBytes, and what the tenant's regions
   * have left of maxBytesPerTenant; GPUNIX_E_UNSUPPORTED when that is under 1 MiB or the directory
   * cannot hold one (the session's bulk data then goes in frames).
   */
  static create(settings: SharedMemorySettings, requested: number, tenant: object): SharedRegion {
    const held = tenantRegionBytes(tenant);
    const size = Math.min(requested, settings.maxBytes, settings.maxBytesPerTenant - held.bytes);
    if (size < Math.min(requested, MIN_REGION_BYTES)) {
      throw unsupported(`the tenant's shared-memory regions hold ${held.bytes} bytes, near sharedMemory.maxBytesPerTenant (${settings.maxBytesPerTenant})`);
    }
    // A sealed memory file, its descriptor offered on the handoff socket.
    if (settings.handoff) {
      const fd = createSealedMemoryFile('gpunix-region', size, ftruncateSync, closeSync);
      if (fd !== null) {
        // Address space for the largest it may grow to: growing then re-faults nothing (sharedMapping.ts).
        const mapping = SharedMapping.map(fd, size, settings.maxBytes);
        if (mapping) return new SharedRegion(null, fd, size, held, mapping, settings.handoff, settings.maxBytes);
        closeSync(fd);
      }
    }
    const path = join(regionDirectory(settings), randomBytes(16).toString('hex'));
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, settings.mode);
    } catch (error) {
      throw unsupported(`no shared memory: cannot make a region in ${settings.directory}: ${(error as Error).message}`);
    }
    try {
      // The umask may have narrowed the mode given to open: set it as meant.
      if ((fstatSync(fd).mode & 0o777) !== settings.mode) chmodSync(path, settings.mode);
      ftruncateSync(fd, size);
    } catch (error) {
      closeSync(fd);
      unlinkSync(path);
      throw unsupported(`no shared memory: cannot size a region in ${settings.directory}: ${(error as Error).message}`);
    }
    return new SharedRegion(path, fd, size, held, null, null);
  }

  /** How the client reaches it: a tmpfs file's path while it has one, or where its descriptor is on offer. */
  get whereabouts(): { path: string } | { path: ''; handoff: { socket: string; key: string }; limit: number } | null {
    if (this.handoff && this.handoffKey) return { path: '', handoff: { socket: this.handoff.path, key: this.handoffKey }, limit: this.limit };
    return this.name === null ? null : { path: this.name };
  }

  /** Grows the region to `requested` bytes, at most maxBytes (the client's descriptor sees the new size at once). */
  grow(requested: number, settings: SharedMemorySettings): void {
    const size = Math.min(requested, settings.maxBytes, this.size + settings.maxBytesPerTenant - this.held.bytes);
    if (size <= this.size) return;
    ftruncateSync(this.fd, size);
    this.mapping?.remap(size);
    this.held.bytes += size - this.size;
    this.size = size;
  }

  /** Removes the file's name, or withdraws its descriptor's offer: those who have it open keep it; nobody can open it anew. */
  unlink(): void {
    if (this.handoffKey) this.handoff!.withdraw(this.handoffKey);
    this.handoffKey = null;
    const name = this.name;
    this.name = null;
    if (name === null) return;
    try {
      unlinkSync(name);
    } catch {
      // Already gone (someone emptied the directory): nothing to remove.
    }
  }

  /** The region's bytes [at, at + size) in place (no copy) when the daemon maps it; null otherwise. */
  viewOf(at: number, size: number): Uint8Array | null {
    return this.mapping ? this.mapping.bytes.subarray(at, at + size) : null;
  }

  /** Reads [at, at + target.byteLength) of the region into `target` (one copy: memcpy, or in the kernel). */
  read(at: number, target: Uint8Array): void {
    if (this.mapping) {
      target.set(this.mapping.bytes.subarray(at, at + target.byteLength));
      return;
    }
    let done = 0;
    while (done < target.byteLength) {
      const n = readSync(this.fd, target, done, target.byteLength - done, at + done);
      if (n === 0) throw new GpunixError(ErrorCodes.PROTOCOL_MALFORMED, `the shared-memory region ends before ${at + target.byteLength}`);
      done += n;
    }
  }

  /** Writes `bytes` into the region at `at`. */
  write(at: number, bytes: Uint8Array): void {
    if (this.mapping) {
      this.mapping.bytes.set(bytes, at);
      return;
    }
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
  }

  /** Ends the region: unlinked and closed (its memory goes once the client's descriptor closes too). */
  close(): void {
    this.unlink();
    if (this.fd < 0) return;
    this.mapping?.close();
    this.mapping = null;
    closeSync(this.fd);
    this.fd = -1;
    this.held.bytes -= this.size;
  }
}
