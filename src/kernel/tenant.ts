// A tenant's account: its identity and quotas, and what its processes hold now. Until the daemon
// issue brings tokens and isolation, tenants are named in the kernel's options and chosen at spawn.

export interface TenantQuota {
  /** Device memory all the tenant's processes may hold together (bytes); null: no limit. */
  memoryLimit: number | null;
}

export interface TenantRecord extends TenantQuota {
  name: string;
  /** Device memory its processes hold now, by the kernel's count. */
  bytes: number;
  processes: number;
}

export class TenantAccount {
  bytes = 0;
  processes = 0;
  constructor(
    readonly name: string,
    readonly quota: TenantQuota,
  ) {}

  record(): TenantRecord {
    return { name: this.name, memoryLimit: this.quota.memoryLimit, bytes: this.bytes, processes: this.processes };
  }
}
