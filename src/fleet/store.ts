// The fleet's one door to etcd (the only module that imports `etcd3`): JSON values under the
// layout of keys.ts, all-or-nothing commits given as data (conditions, puts, deletes), leases,
// watches that start where a listing left off, and leader election by a lease-held key. Every
// failure to reach etcd becomes GPUNIX_E_FLEET_UNAVAILABLE naming the endpoints.

import { readFileSync } from 'node:fs';
import { Etcd3, IOptions, Lease, Range, Watcher } from 'etcd3';
import { ErrorCodes, GpunixError } from '../errors.js';
import { FleetKeys } from './keys.js';
import { EtcdConnection, EtcdConnectionInput, etcdConnectionSchema, parseSpec } from './spec.js';

/** One key's JSON value, with the revisions a later commit can be conditioned on. */
export interface Entry<T> {
  key: string;
  value: T;
  modRevision: number;
  createRevision: number;
}

/** A commit's condition: the key unchanged since `modRevision`, absent, present, or held under `lease`. */
export type Condition = { key: string; modRevision: number } | { key: string; absent: true } | { key: string; present: true } | { key: string; lease: string };

/** An all-or-nothing change: when every condition holds, all puts and deletes happen; else none. */
export interface Commit {
  ifs?: Condition[];
  puts?: Array<{ key: string; value: unknown; lease?: StoreLease }>;
  deletes?: string[];
  deletePrefixes?: string[];
}

export interface WatchEvent<T> {
  type: 'put' | 'delete';
  key: string;
  /** The new value (put); absent for a delete or a value that is not JSON. */
  value?: T;
  modRevision: number;
}

/** A lease: keys put under it vanish when it is revoked or expires (its holder stopped renewing it). */
export interface StoreLease {
  readonly id: string;
  /** True once etcd no longer holds it (expired, revoked, or unreachable past its TTL). */
  readonly lost: boolean;
  revoke(): Promise<void>;
}

/** Holding the leader key: `condition` makes a commit happen only while this replica still leads. */
export interface Leadership {
  readonly lease: StoreLease;
  readonly condition: Condition;
  resign(): Promise<void>;
}

/** Keys per read of a list (a page of NodeRecords is about 1 MB, well under gRPC's 4 MiB). */
const LIST_PAGE = 1000;

/** How long a connect waits for etcd to answer before giving up (ms). */
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * How long any one store call (get, list page, put, commit, grant, revoke, watch creation) waits
 * for etcd (ms): an unreachable etcd makes the call fail with FLEET_UNAVAILABLE, never hang.
 */
export const CALL_TIMEOUT_MS = 5_000;
/** How often a lease checks that its keepalives still get through (ms). */
const LEASE_CHECK_MS = 200;

/**
 * How long a lease may go without a successful keepalive before its holder counts it lost (ms):
 * TTL − max(1 s, TTL/3). etcd3 itself says 'lost' only about 2×TTL after the last keepalive, when
 * etcd has long expired the lease and the scheduler may have rebound the holder's work elsewhere;
 * counting it lost before etcd can expire it lets a node stop its members first.
 */
export function leaseSilenceLimitMs(ttlSeconds: number): number {
  return Math.round((ttlSeconds - Math.max(1, ttlSeconds / 3)) * 1000);
}

class EtcdLease implements StoreLease {
  id = '';
  lost = false;
  /** The keepalive watchdog (see leaseSilenceLimitMs); cleared once the lease is lost or revoked. */
  watchdog: NodeJS.Timeout | null = null;
  constructor(readonly raw: Lease) {}
  async revoke(): Promise<void> {
    this.lost = true;
    this.stopWatchdog();
    await withTimeout(this.raw.revoke(), CALL_TIMEOUT_MS, 'lease revoke').catch(() => undefined);
  }
  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }
}

export class FleetStore {
  readonly keys: FleetKeys;
  private closed = false;

  private constructor(
    private readonly client: Etcd3,
    readonly connection: EtcdConnection,
  ) {
    this.keys = new FleetKeys(connection.prefix);
  }

  /** Connects and checks that etcd answers (a read of the prefix); FLEET_UNAVAILABLE when it does not. */
  static async connect(input: EtcdConnectionInput, timeoutMs = CONNECT_TIMEOUT_MS): Promise<FleetStore> {
    const connection = parseSpec(etcdConnectionSchema, input, 'etcd connection');
    const options: IOptions = { hosts: connection.endpoints, dialTimeout: timeoutMs };
    if (connection.username || connection.password) {
      if (!connection.username || !connection.password) throw new GpunixError(ErrorCodes.BAD_OPTION, 'etcd credentials need both a username and a password');
      options.auth = { username: connection.username, password: connection.password };
    }
    if (connection.tls) {
      const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);
      options.credentials = { rootCertificate: read(connection.tls.ca) ?? Buffer.alloc(0), privateKey: read(connection.tls.key), certChain: read(connection.tls.cert) };
    }
    const store = new FleetStore(new Etcd3(options), connection);
    try {
      await withTimeout(store.client.get(`${connection.prefix}`).string(), timeoutMs, 'connect');
    } catch (error) {
      store.close();
      throw store.unavailable(error);
    }
    return store;
  }

  /** FLEET_UNAVAILABLE for an etcd failure (a GpunixError passes through unchanged). */
  unavailable(error: unknown): GpunixError {
    if (error instanceof GpunixError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new GpunixError(ErrorCodes.FLEET_UNAVAILABLE, `etcd at ${this.connection.endpoints.join(',')}: ${message}`);
  }

  /** Runs one etcd call with CALL_TIMEOUT_MS as its deadline; any failure becomes FLEET_UNAVAILABLE. */
  private async call<T>(work: () => Promise<T>, what = 'an etcd call'): Promise<T> {
    if (this.closed) throw new GpunixError(ErrorCodes.FLEET_UNAVAILABLE, 'the fleet store is closed');
    try {
      return await withTimeout(work(), CALL_TIMEOUT_MS, what);
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  async get<T>(key: string): Promise<Entry<T> | null> {
    const response = await this.call(() => this.client.get(key).exec());
    const kv = response.kvs[0];
    if (!kv) return null;
    const value = parseJson<T>(kv.value);
    return value === undefined ? null : { key, value, modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision) };
  }

  /** Every key under `prefix` with a JSON value (others are skipped), and the store's revision of that read. */
  async list<T>(prefix: string): Promise<{ entries: Array<Entry<T>>; revision: number }> {
    // In pages of LIST_PAGE keys, every page read at the first page's revision (one consistent
    // view): one response for a whole prefix passes gRPC's 4 MiB message limit at a few thousand
    // nodes (10 000 NodeRecords are about 11 MB).
    const range = Range.prefix(prefix);
    const entries: Array<Entry<T>> = [];
    let start: Buffer = range.start;
    let revision: string | undefined;
    for (;;) {
      const from = start;
      const response = await this.call(() => {
        const read = this.client.getAll().inRange(new Range(from, range.end)).limit(LIST_PAGE);
        return (revision === undefined ? read : read.revision(revision)).exec();
      });
      revision ??= String(response.header.revision);
      for (const kv of response.kvs) {
        const value = parseJson<T>(kv.value);
        if (value !== undefined) entries.push({ key: kv.key.toString(), value, modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision) });
      }
      if (!response.more || response.kvs.length === 0) break;
      start = Buffer.concat([response.kvs[response.kvs.length - 1].key, Buffer.from([0])]);
    }
    return { entries, revision: Number(revision) };
  }

  /** Puts `value` as JSON (under `lease` when given); returns the store's revision after it. */
  async put(key: string, value: unknown, lease?: StoreLease): Promise<number> {
    const response = await this.call(() => {
      const put = lease ? (lease as EtcdLease).raw.put(key) : this.client.put(key);
      return put.value(JSON.stringify(value)).exec();
    });
    return Number(response.header.revision);
  }

  async delete(key: string): Promise<void> {
    await this.call(() => this.client.delete().key(key).exec());
  }

  async deletePrefix(prefix: string): Promise<void> {
    await this.call(() => this.client.delete().prefix(prefix).exec());
  }

  /**
   * Applies `commit` all or nothing; true when its conditions held and it happened. A commit that
   * gets no answer within CALL_TIMEOUT_MS throws FLEET_UNAVAILABLE and its outcome is UNKNOWN: etcd
   * may still apply it (the request may be under way). A caller that must know reads the keys back
   * (conditions on modRevision make a retry safe: a commit that did happen fails its conditions).
   */
  async commit(commit: Commit): Promise<boolean> {
    return (await this.transact(commit)).succeeded;
  }

  /** commit(), also giving the store's revision after it (the modRevision of every key it put, when it succeeded). */
  async transact(commit: Commit): Promise<{ succeeded: boolean; revision: number }> {
    const response = await this.call(() => {
      // etcd3's builder starts from its first comparison; the rest are and-ed on.
      let txn = this.client.if(...firstCondition(commit.ifs ?? []));
      for (const condition of (commit.ifs ?? []).slice(1)) txn = txn.and(...comparison(condition));
      const ops = [
        ...(commit.puts ?? []).map(({ key, value, lease }) => (lease ? (lease as EtcdLease).raw.put(key) : this.client.put(key)).value(JSON.stringify(value))),
        ...(commit.deletes ?? []).map((key) => this.client.delete().key(key)),
        ...(commit.deletePrefixes ?? []).map((prefix) => this.client.delete().prefix(prefix)),
      ];
      return txn.then(...ops).commit();
    }, 'a commit');
    return { succeeded: response.succeeded, revision: Number(response.header.revision) };
  }

  /**
   * Read-modify-write of one key, retried while others change it between the read and the write:
   * `change` gets the current entry (null: absent) and returns the new value, or undefined to
   * leave it as it is. Returns what the key holds afterwards.
   */
  async update<T>(key: string, change: (current: Entry<T> | null) => T | undefined, tries = 20): Promise<T | null> {
    for (let attempt = 0; attempt < tries; attempt++) {
      const current = await this.get<T>(key);
      const next = change(current);
      if (next === undefined) return current?.value ?? null;
      const condition: Condition = current ? { key, modRevision: current.modRevision } : { key, absent: true };
      if (await this.commit({ ifs: [condition], puts: [{ key, value: next }] })) return next;
    }
    throw new GpunixError(ErrorCodes.BUSY, `${key} kept changing under ${tries} attempts to update it`);
  }

  /**
   * Calls `onEvent` for every change under `prefix` after `fromRevision` (a list's revision: no
   * change between the two is missed). `onError` hears a watch that etcd ended (compaction).
   */
  async watch<T>(prefix: string, fromRevision: number, onEvent: (event: WatchEvent<T>) => void, onError?: (error: Error) => void): Promise<{ close(): Promise<void> }> {
    // Only its creation has a deadline (the stream itself lives as long as the caller wants). A
    // watcher created after the deadline passed is cancelled at once: nobody holds it.
    const creating = this.client.watch().prefix(prefix).startRevision(String(fromRevision + 1)).create();
    let watcher: Watcher;
    try {
      watcher = await this.call(() => creating, 'a watch');
    } catch (error) {
      void creating.then((late) => late.cancel(), () => undefined).catch(() => undefined);
      throw error;
    }
    // A handler that throws ends the delivery: the error goes to onError (the caller lists again and
    // watches anew), and no later event is applied on top of the one that failed.
    let failed = false;
    const deliver = (event: WatchEvent<T>) => {
      if (failed) return;
      try {
        onEvent(event);
      } catch (error) {
        failed = true;
        onError?.(error instanceof Error ? error : new Error(String(error)));
      }
    };
    watcher.on('put', (kv) => deliver({ type: 'put', key: kv.key.toString(), value: parseJson<T>(kv.value), modRevision: Number(kv.mod_revision) }));
    watcher.on('delete', (kv) => deliver({ type: 'delete', key: kv.key.toString(), modRevision: Number(kv.mod_revision) }));
    watcher.on('error', (error) => {
      if (failed) return;
      failed = true;
      onError?.(this.unavailable(error));
    });
    return { close: () => watcher.cancel().catch(() => undefined) };
  }

  /**
   * Grants a lease of `ttlSeconds`, renewed in the background; `onLost` hears it expire or be
   * revoked, or go without a successful keepalive for leaseSilenceLimitMs(ttlSeconds) — before etcd
   * can expire it. A lease counted lost here is no longer renewed (its keys must not come back to
   * life if etcd answers again) and is revoked (best effort) unless `keepUntilRevoked`: then its
   * holder revokes it when it is ready (a node first records what its members finished), and etcd
   * expires it at the latest.
   */
  async lease(ttlSeconds: number, onLost?: (error: Error) => void, options: { keepUntilRevoked?: boolean } = {}): Promise<StoreLease> {
    const raw = this.client.lease(ttlSeconds, { autoKeepAlive: true });
    const lease = new EtcdLease(raw);
    const declareLost = (error: Error) => {
      if (lease.lost) return;
      lease.lost = true;
      lease.stopWatchdog();
      if (options.keepUntilRevoked) raw.release();
      else void raw.revoke().catch(() => undefined);
      onLost?.(this.unavailable(error));
    };
    raw.on('lost', (error) => declareLost(error));
    try {
      lease.id = await this.call(() => raw.grant(), 'a lease grant');
    } catch (error) {
      // Granted after the deadline, it would be renewed forever by nobody's wish.
      lease.lost = true;
      void raw.revoke().catch(() => undefined);
      throw error;
    }
    const limitMs = leaseSilenceLimitMs(ttlSeconds);
    let lastKeepalive = Date.now();
    raw.on('keepaliveSucceeded', () => {
      lastKeepalive = Date.now();
    });
    let lastCheck = Date.now();
    lease.watchdog = setInterval(() => {
      const now = Date.now();
      // This process itself stalled (a late tick): the keepalive answer may be waiting in the queue
      // behind this check; it gets one more tick to land before the silence counts.
      const stalled = now - lastCheck > 2 * LEASE_CHECK_MS;
      lastCheck = now;
      const silent = now - lastKeepalive;
      if (silent > limitMs && !stalled) declareLost(new Error(`no keepalive of lease ${lease.id} got through for ${silent} ms (TTL ${ttlSeconds} s)`));
    }, LEASE_CHECK_MS);
    lease.watchdog.unref?.();
    return lease;
  }

  /**
   * Waits until this replica holds the leader key (value `record`, under a lease of `ttlSeconds`)
   * and returns its leadership; `onLost` hears the lease go (another replica may then lead).
   * `stopped()` true makes the wait give up (returns null).
   */
  async campaign(record: unknown, ttlSeconds: number, onLost: (error: Error) => void, stopped: () => boolean = () => false): Promise<Leadership | null> {
    const key = this.keys.leader();
    while (!stopped()) {
      const lease = await this.lease(ttlSeconds, onLost);
      if (await this.commit({ ifs: [{ key, absent: true }], puts: [{ key, value: record, lease }] })) {
        return { lease, condition: { key, lease: lease.id }, resign: () => lease.revoke() };
      }
      await lease.revoke();
      // Someone leads: wait for its key to go (or poll, in case the delete came before the watch).
      const current = await this.get<unknown>(key);
      if (!current) continue;
      await new Promise<void>((resolve) => {
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          clearInterval(poll);
          void watch.then((w) => w.close(), () => undefined);
          resolve();
        };
        const watch = this.watch(key, current.modRevision, (event) => event.type === 'delete' && finish(), finish);
        watch.catch(finish);
        const poll = setInterval(() => {
          if (stopped()) finish();
          else void this.get(key).then((entry) => entry === null && finish(), finish);
        }, 1_000);
      });
    }
    return null;
  }

  /** The store's revision now (a cheap read). */
  async revision(): Promise<number> {
    const response = await this.call(() => this.client.get(this.keys.leader()).exec());
    return Number(response.header.revision);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}

function parseJson<T>(raw: Buffer | null | undefined): T | undefined {
  if (!raw || raw.length === 0) return undefined;
  try {
    return JSON.parse(raw.toString()) as T;
  } catch {
    return undefined;
  }
}

type Comparison = [string, 'Mod' | 'Create' | 'Lease', '==' | '>', string | number];

function comparison(condition: Condition): Comparison {
  if ('modRevision' in condition) return [condition.key, 'Mod', '==', condition.modRevision];
  if ('absent' in condition) return [condition.key, 'Create', '==', 0];
  if ('present' in condition) return [condition.key, 'Create', '>', 0];
  return [condition.key, 'Lease', '==', condition.lease];
}

/** The first comparison of a transaction (one that always holds when there are none). */
function firstCondition(ifs: Condition[]): Comparison {
  return ifs.length > 0 ? comparison(ifs[0]) : ['\0gpunix-no-such-key', 'Create', '==', 0];
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer to ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
