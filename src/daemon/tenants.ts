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

/** The tenants the daemon starts with: the configuration's, with the state file's changes applied. */
export function initialTenants(config: DaemonConfig): Record<string, TenantEntry> {
  const tenants: Record<string, TenantEntry> = { ...config.tenants };
  const state = readState(config.stateFile);
  if (state) {
    for (const name of state.removed) delete tenants[name];
    Object.assign(tenants, state.tenants);
  }
  return tenants;
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

  constructor(
    private readonly kernel: Kernel,
    private readonly config: DaemonConfig,
    tenants: Record<string, TenantEntry>,
  ) {
    for (const [name, entry] of Object.entries(tenants)) this.hashes.set(name, entry.tokenHash);
    const existing = readState(config.stateFile);
    if (existing) Object.assign(this.state, existing);
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
    const record = this.kernel.addTenant(name, quota);
    const token = newToken();
    this.hashes.set(name, hashToken(token));
    this.persist(name);
    return { tenant: record, token };
  }

  /** Changes a tenant's quota (given fields only); with `rotate`, issues a new token. */
  update(name: string, quota: Quota, rotate: boolean): { tenant: TenantRecord; token?: string } {
    const record = this.kernel.updateTenant(name, quota);
    let token: string | undefined;
    if (rotate) {
      token = newToken();
      this.hashes.set(name, hashToken(token));
    }
    this.persist(name);
    return token === undefined ? { tenant: record } : { tenant: record, token };
  }

  /** Removes a tenant: its token stops working at once, then its processes are killed. */
  async remove(name: string): Promise<void> {
    if (name === DEFAULT_TENANT) throw new GpunixError(ErrorCodes.BAD_OPTION, `the ${DEFAULT_TENANT} tenant cannot be removed`);
    if (!this.kernelHas(name)) throw new GpunixError(ErrorCodes.BAD_OPTION, `no tenant ${JSON.stringify(name)}`);
    this.hashes.delete(name);
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
    };
    this.state.removed = this.state.removed.filter((n) => n !== name);
    this.write();
  }

  private write(): void {
    if (!this.config.stateFile) return;
    writeFileAtomic(this.config.stateFile, `${JSON.stringify(this.state, null, 2)}\n`);
  }
}
