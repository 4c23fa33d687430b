// A tenant's account: its identity, its quotas, and what its processes hold now. The kernel
// enforces the quotas (memory at allocation, the rest at spawn and renice); who may act as a
// tenant (tokens) is the daemon's business.

import type { PriorityClass } from '../params.js';
import { startAsDoubles } from '../doubleFields.js';

export interface TenantQuota {
  /** Device memory all the tenant's processes may hold together (bytes); null: no limit. */
  memoryLimit: number | null;
  /**
   * The tenant's share of GPU time within a priority class, relative to other tenants' (default 1).
   * The tenant's processes split it by their own weights.
   */
  weight: number;
  /** Live processes the tenant may have at once; null: no limit. */
  maxProcesses: number | null;
  /** Priority classes the tenant's processes may use. */
  priorities: readonly PriorityClass[];
  /** The longest one piece of its processes' device work may take (ms); null: the kernel's maxDispatchMs. */
  maxDispatchMs: number | null;
}

export interface TenantRecord extends TenantQuota {
  name: string;
  /** Device memory its processes hold now, by the kernel's count. */
  bytes: number;
  processes: number;
}

/** What a tenant's process needs for fair sharing: its own weight. */
interface Member {
  readonly weight: number;
}

export class TenantAccount {
  bytes = 0;
  processes = 0;
  /** Live processes, for splitting the tenant's weight among them. */
  readonly members = new Set<Member>();
  constructor(
    readonly name: string,
    public quota: TenantQuota,
  ) {
    startAsDoubles<TenantAccount>(this, ['bytes']);
  }

  /** The fraction of the tenant's share that `member` gets, times the tenant's weight. */
  shareOf(member: Member): number {
    let total = 0;
    for (const m of this.members) total += m.weight;
    return total > 0 ? (this.quota.weight * member.weight) / total : this.quota.weight;
  }

  record(): TenantRecord {
    return { name: this.name, ...this.quota, priorities: [...this.quota.priorities], bytes: this.bytes, processes: this.processes };
  }
}
