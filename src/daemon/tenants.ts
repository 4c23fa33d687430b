// Who may act as whom: tenants' token hashes and the admin's, and runtime tenant changes, which
// are applied to the kernel and persisted to the state file (atomically) so a restart keeps them.

import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes, GpunixError } from '../errors.js';
import type { Kernel } from '../kernel/kernel.js';
import type { TenantRecord } from '../kernel/tenant.js';
import { DEFAULT_TENANT } from '../params.js';
import { DaemonConfig, DaemonState, hashesEqual, hashToken, isTenantName, newToken, parseState, Quota, quotaSchema, describeIssues } from './config.js';

/** Who a session is, once its token is checked. */
export interface Principal {
  tenant: string;
  admin: boolean;
}

type TenantEntry = Quota & { tokenHash: string };

/** The quota fields the daemon enforces itself (the kernel does not know them): see ObjectAccount. */
export interface ObjectQuota {
  /** WebGPU objects the tenant's sessions may hold at once; null: no limit. */
  maxObjects: number | null;
  /** WGSL source bytes of the tenant's live shader modules; null: no limit. */
  maxShaderBytes: number | null;
}
type ObjectQuotaInput = { maxObjects?: number | null; maxShaderBytes?: number | null };

/**
 * Host memory the daemon is taken to hold per WebGPU object of a session: its table entry and the
 * Dawn object behind it (about 3.3 KB per buffer was measured on lavapipe). Counted against the
 * tenant's memoryLimit together with its device memory and shader source.
 */
export const HOST_BYTES_PER_OBJECT = 4096;
/** Refused creations (failed objects) a tenant may hold beyond maxObjects before its session is closed. */
export const REFUSED_OBJECTS_GRACE = 1024;

/** Splits a tenant entry into what the kernel enforces and what the daemon does (object quotas). */
function splitQuota<T extends ObjectQuotaInput>(entry: T): { kernel: Omit<T, 'maxObjects' | 'maxShaderBytes'>; objects: ObjectQuotaInput } {
  const { maxObjects, maxShaderBytes, ...kernel } = entry;
  const objects: ObjectQuotaInput = {};
  if (maxObjects !== undefined) objects.maxObjects = maxObjects;
  if (maxShaderBytes !== undefined) objects.maxShaderBytes = maxShaderBytes;
  return { kernel, objects };
}

/** Every tenant entry, daemon-side quota fields included: the configuration's, with the state file's changes applied. */
function allTenantEntries(config: DaemonConfig): Record<string, TenantEntry> {
  const tenants: Record<string, TenantEntry> = { ...config.tenants };
  const state = readState(config.stateFile);
  if (state) {
    for (const name of state.removed) delete tenants[name];
    Object.assign(tenants, state.tenants);
  }
  return tenants;
}

/** The tenants the daemon starts with, as the kernel takes them (the daemon's object quotas left out). */
export function initialTenants(config: DaemonConfig): Record<string, TenantEntry> {
  return Object.fromEntries(Object.entries(allTenantEntries(config)).map(([name, entry]) => [name, splitQuota(entry).kernel as TenantEntry]));
}

/**
 * What one tenant's sessions hold in the daemon: WebGPU objects (every kind, failed ones
 * included, until released) and shader source bytes. refusal() says why one more is refused:
 * the tenant's object quotas, or its memoryLimit, which counts the daemon's host memory for it
 * (objects x HOST_BYTES_PER_OBJECT + shader bytes) on top of its device memory.
 */
export class ObjectAccount {
  objects = 0;
  shaderBytes = 0;
  /** Bytes of unfinished frames its sessions have the daemon hold now (bounded by maxBufferedBytesPerTenant). */
  bufferedBytes = 0;
  constructor(
    readonly tenant: string,
    private readonly quota: () => ObjectQuota,
    /** The tenant's memoryLimit and device bytes now (the kernel's count); null when it has no limit. */
    private readonly memory: () => { limit: number; deviceBytes: number } | null,
  ) {}

  /** Host memory the daemon holds for the tenant's objects (an estimate). */
  get hostBytes(): number {
    return this.objects * HOST_BYTES_PER_OBJECT + this.shaderBytes;
  }

  /** Why one more object with `shaderBytes` of source is refused (a sentence), or null if it fits. */
  refusal(shaderBytes = 0): string | null {
    const quota = this.quota();
    if (quota.maxObjects !== null && this.objects >= quota.maxObjects) {
      return `tenant ${this.tenant} holds ${this.objects} WebGPU objects, its quota (maxObjects) is ${quota.maxObjects}; release some (destroy() and drop references)`;
    }
    if (shaderBytes > 0 && quota.maxShaderBytes !== null && this.shaderBytes + shaderBytes > quota.maxShaderBytes) {
      return `a shader module of ${shaderBytes} bytes would take tenant ${this.tenant}'s shader source to ${this.shaderBytes + shaderBytes} bytes, over its quota (maxShaderBytes) of ${quota.maxShaderBytes}`;
    }
    const memory = this.memory();
    if (memory && memory.deviceBytes + this.hostBytes + HOST_BYTES_PER_OBJECT + shaderBytes > memory.limit) {
      return `tenant ${this.tenant}'s memoryLimit of ${memory.limit} bytes is used up (${memory.deviceBytes} bytes of device memory, ${this.hostBytes} bytes the daemon holds for its objects)`;
    }
    return null;
  }

  /**
   * Why a session must end rather than hold one more table entry: a refused creation still takes
   * an entry (a failed object, as WebGPU's invalid objects are), and a client that goes on creating
   * past REFUSED_OBJECTS_GRACE refusals without releasing any is not a program that handles them.
   */
  hardRefusal(): string | null {
    const { maxObjects } = this.quota();
    if (maxObjects !== null && this.objects >= maxObjects + REFUSED_OBJECTS_GRACE) {
      return `tenant ${this.tenant} went on creating WebGPU objects ${REFUSED_OBJECTS_GRACE} times past its quota (maxObjects ${maxObjects}); the session is closed`;
    }
    return null;
  }

  charge(shaderBytes = 0): void {
    this.objects++;
    this.shaderBytes += shaderBytes;
  }

  refund(shaderBytes = 0): void {
    this.objects = Math.max(0, this.objects - 1);
    this.shaderBytes = Math.max(0, this.shaderBytes - shaderBytes);
  }
}

function readState(path: string | undefined): DaemonState | null {
  if (!path) return null;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new GpunixError(ErrorCodes.BAD_CONFIG, `cannot read the state file ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new GpunixError(ErrorCodes.BAD_CONFIG, `state file ${path}: not JSON: ${(error as Error).message}`);
  }
  return parseState(raw, `state file ${path}`);
}

/** Writes `text` to `path` so that readers see the old file or the new one, never a part. */
export function writeFileAtomic(path: string, text: string, mode = 0o600): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Checks a quota from the wire (AddTenant/UpdateTenant); BAD_OPTION names the bad field. */
export function checkQuota(raw: unknown, name: string): Quota {
  const result = quotaSchema.safeParse(raw ?? {});
  if (!result.success) throw new GpunixError(ErrorCodes.BAD_OPTION, `quota of ${name}: ${describeIssues(result.error.issues)}`);
  return result.data;
}

export class TenantStore {
  private readonly hashes = new Map<string, string>();
  private readonly state: DaemonState = { version: 1, tenants: {}, removed: [] };
  /** Tenants' own object quota fields (absent ones take the daemon's defaults). */
  private readonly objectQuotas = new Map<string, ObjectQuotaInput>();
  private readonly accounts = new Map<string, ObjectAccount>();

  constructor(
    private readonly kernel: Kernel,
    private readonly config: DaemonConfig,
    tenants: Record<string, TenantEntry>,
  ) {
    for (const [name, entry] of Object.entries(tenants)) this.hashes.set(name, entry.tokenHash);
    for (const [name, entry] of Object.entries(allTenantEntries(config))) this.objectQuotas.set(name, splitQuota(entry).objects);
    const existing = readState(config.stateFile);
    if (existing) Object.assign(this.state, existing);
  }

  /** The object quota of `tenant`: its own fields, else the daemon's maxObjectsPerTenant and maxShaderBytesPerTenant. */
  objectQuota(tenant: string): ObjectQuota {
    const own = this.objectQuotas.get(tenant) ?? {};
    return {
      maxObjects: own.maxObjects !== undefined ? own.maxObjects : this.config.maxObjectsPerTenant,
      maxShaderBytes: own.maxShaderBytes !== undefined ? own.maxShaderBytes : this.config.maxShaderBytesPerTenant,
    };
  }

  /** The account of what `tenant`'s sessions hold in the daemon, shared by all its sessions. */
  objectAccount(tenant: string): ObjectAccount {
    let account = this.accounts.get(tenant);
    if (!account) {
      account = new ObjectAccount(
        tenant,
        () => this.objectQuota(tenant),
        () => this.kernel.tenantMemory(tenant),
      );
      this.accounts.set(tenant, account);
    }
    return account;
  }

  /** A tenant's record with the daemon's object quotas and usage added (for AddTenant, UpdateTenant, ListTenants). */
  withObjects(record: TenantRecord): TenantRecord & ObjectQuota & { objects: number; shaderBytes: number; hostBytes: number; bufferedBytes: number } {
    const account = this.accounts.get(record.name);
    return {
      ...record,
      ...this.objectQuota(record.name),
      objects: account?.objects ?? 0,
      shaderBytes: account?.shaderBytes ?? 0,
      hostBytes: account?.hostBytes ?? 0,
      bufferedBytes: account?.bufferedBytes ?? 0,
    };
  }

  /**
   * The principal a token stands for, or null. Every stored hash is compared (in constant time), so
   * the time taken says nothing about which tenant, if any, matched.
   */
  authenticate(token: string): Principal | null {
    if (token === '') {
      const anonymous = this.config.anonymousTenant;
      return anonymous && this.kernelHas(anonymous) ? { tenant: anonymous, admin: false } : null;
    }
    const presented = hashToken(token);
    let found: Principal | null = null;
    if (this.config.adminTokenHash && hashesEqual(presented, this.config.adminTokenHash)) found = { tenant: DEFAULT_TENANT, admin: true };
    for (const [name, hash] of this.hashes) {
      if (hashesEqual(presented, hash) && !found) found = { tenant: name, admin: false };
    }
    return found;
  }

  /** Whether the principal's tenant still exists (a removed tenant's sessions lose their rights). */
  stillValid(principal: Principal): boolean {
    return principal.admin || this.hashes.has(principal.tenant) || principal.tenant === this.config.anonymousTenant;
  }

  private kernelHas(name: string): boolean {
    return this.kernel.tenants().some((t) => t.name === name);
  }

  /** Adds a tenant with a fresh token; returns the record and the token (shown this once). */
  add(name: string, quota: Quota): { tenant: TenantRecord; token: string } {
    if (!isTenantName(name)) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `tenant names are 1-64 letters, digits, '_', '.' or '-', and not ".", ".." or "__proto__"; got ${JSON.stringify(String(name).slice(0, 80))}`);
    }
    const { kernel, objects } = splitQuota(quota);
    const record = this.kernel.addTenant(name, kernel);
    this.objectQuotas.set(name, objects);
    const token = newToken();
    this.hashes.set(name, hashToken(token));
    this.persist(name);
    return { tenant: this.withObjects(record), token };
  }

  /** Changes a tenant's quota (given fields only); with `rotate`, issues a new token. */
  update(name: string, quota: Quota, rotate: boolean): { tenant: TenantRecord; token?: string } {
    const { kernel, objects } = splitQuota(quota);
    const record = this.kernel.updateTenant(name, kernel);
    this.objectQuotas.set(name, { ...this.objectQuotas.get(name), ...objects });
    let token: string | undefined;
    if (rotate) {
      token = newToken();
      this.hashes.set(name, hashToken(token));
    }
    this.persist(name);
    const tenant = this.withObjects(record);
    return token === undefined ? { tenant } : { tenant, token };
  }

  /** Removes a tenant: its token stops working at once, then its processes are killed. */
  async remove(name: string): Promise<void> {
    if (name === DEFAULT_TENANT) throw new GpunixError(ErrorCodes.BAD_OPTION, `the ${DEFAULT_TENANT} tenant cannot be removed`);
    if (!this.kernelHas(name)) throw new GpunixError(ErrorCodes.BAD_OPTION, `no tenant ${JSON.stringify(name)}`);
    this.hashes.delete(name);
    this.objectQuotas.delete(name);
    await this.kernel.removeTenant(name);
    delete this.state.tenants[name];
    if (!this.state.removed.includes(name)) this.state.removed.push(name);
    this.write();
  }

  /** Records tenant `name` as it is now (quota from the kernel, token hash) in the state file. */
  private persist(name: string): void {
    const record = this.kernel.tenants().find((t) => t.name === name);
    if (!record) return;
    // A tenant without a token (e.g. `default`) persists its quota with an all-zero hash, which no
    // token hashes to in practice: it stays reachable only as the anonymous tenant or by the admin.
    const tokenHash = this.hashes.get(name) ?? `sha256:${'0'.repeat(64)}`;
    this.state.tenants[name] = {
      tokenHash,
      memoryLimit: record.memoryLimit,
      weight: record.weight,
      maxProcesses: record.maxProcesses,
      maxDispatchMs: record.maxDispatchMs,
      priorities: [...record.priorities] as Quota['priorities'],
      ...this.objectQuotas.get(name),
    };
    this.state.removed = this.state.removed.filter((n) => n !== name);
    this.write();
  }

  private write(): void {
    if (!this.config.stateFile) return;
    writeFileAtomic(this.config.stateFile, `${JSON.stringify(this.state, null, 2)}\n`);
  }
}
