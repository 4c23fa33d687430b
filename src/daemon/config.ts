// gpunixd's configuration: a JSON file (or the same object in code), validated with zod so that
// every error names the field it is about (`tenants.alice.memoryLimit: ...`). Also the tokens:
// the daemon stores and compares only their hashes. Documented in docs/daemon.md.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { ErrorCodes, GpunixError } from '../errors.js';
import { DEFAULT_SOCKET_MODE, defaultSocketPath, MAX_DAWN_POLL_INTERVAL_US, parseBytes, PRIORITY_CLASSES } from '../params.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../protocol/messages.js';
import { fleetConfigSchema } from '../fleet/spec.js';

/** How long a drain shutdown lets processes run before it kills the rest (ms). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;
/** Authenticated sessions of tenants the daemon serves at once (the admin's and handshaking connections not counted). */
export const DEFAULT_MAX_SESSIONS = 1024;
/** Connections that have not yet authenticated (sent Hello) at once; beyond it the oldest is closed. */
export const DEFAULT_MAX_HANDSHAKES = 64;
/** The largest frame accepted before Hello has authenticated the peer (a Hello is a few hundred bytes). */
export const DEFAULT_MAX_HANDSHAKE_FRAME_BYTES = 64 * 1024;
/** Sessions kept for the admin alone, beyond maxSessions: a flood of tenant sessions never locks the admin out. */
export const DEFAULT_ADMIN_SESSIONS = 16;
/** A frame begun on an authenticated session must be complete within this (ms). */
export const DEFAULT_FRAME_TIMEOUT_MS = 60_000;
/** A control session that sends nothing for this long is closed (ms); process sessions have no idle timeout. */
export const DEFAULT_CONTROL_IDLE_TIMEOUT_MS = 600_000;
/** WebGPU objects one tenant's sessions may hold at once, unless its quota says otherwise. */
export const DEFAULT_MAX_OBJECTS_PER_TENANT = 100_000;
/** Bytes of unfinished frames the daemon holds for one tenant's sessions together. */
export const DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT = 256 * 1024 * 1024;
/** WGSL source bytes one tenant's live shader modules may hold at once, unless its quota says otherwise. */
export const DEFAULT_MAX_SHADER_BYTES_PER_TENANT = 64 * 1024 * 1024;
/** Sessions one tenant may hold at once unless configured: a quarter of the default total. */
export const DEFAULT_MAX_SESSIONS_PER_TENANT = 256;
/** A connection that sends no Hello within this time is closed (ms). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const TOKEN_HASH = /^sha256:[0-9a-f]{64}$/;
const TENANT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/**
 * Names that fit TENANT_NAME but cannot be a tenant's: "." and ".." would make the tenant's image
 * directory `<imageDir>/<name>` the image directory itself or its parent (every other tenant's
 * images), and "__proto__" is no plain key of the JSON objects the tenants are kept in.
 */
const RESERVED_TENANT_NAMES: ReadonlySet<string> = new Set(['.', '..', '__proto__']);

/** Whether `name` may be a tenant's name (the kernel's rule, less the reserved names). */
export function isTenantName(name: unknown): name is string {
  return typeof name === 'string' && TENANT_NAME.test(name) && !RESERVED_TENANT_NAMES.has(name);
}

const tenantName = z
  .string()
  .regex(TENANT_NAME, 'tenant names are 1-64 of A-Z a-z 0-9 _ . -')
  .refine((name) => !RESERVED_TENANT_NAMES.has(name), { message: 'tenant names cannot be ".", ".." or "__proto__"' });

const tokenHash = z.string().regex(TOKEN_HASH, 'must be "sha256:" and 64 lowercase hex digits (make one with `gpunix token hash`)');

/** A byte count: a positive number, or a string such as "512M" or "4G". */
const byteCount = z.union([z.number(), z.string()]).transform((raw, ctx) => {
  let bytes: number;
  try {
    bytes = typeof raw === 'number' ? raw : parseBytes(raw);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
  if (!Number.isFinite(bytes) || bytes <= 0) {
    ctx.addIssue({ code: 'custom', message: `must be a positive byte count, got ${JSON.stringify(raw)}` });
    return z.NEVER;
  }
  return Math.floor(bytes);
});

/** A tenant's quota fields, as AddTenant/UpdateTenant take them and the config file gives them. */
export const quotaSchema = z.strictObject({
  memoryLimit: byteCount.nullable().optional(),
  weight: z.number().positive().finite().optional(),
  maxProcesses: z.number().int().positive().nullable().optional(),
  priorities: z.array(z.enum(PRIORITY_CLASSES)).nonempty().optional(),
  /** The longest one piece of its processes' device work may take (ms); the watchdog ends longer ones. */
  maxDispatchMs: z.number().min(1).max(3_600_000).nullable().optional(),
  /** WebGPU objects its sessions may hold at once (the daemon enforces it; null: no limit; absent: maxObjectsPerTenant). */
  maxObjects: z.number().int().positive().nullable().optional(),
  /** WGSL source bytes its live shader modules may hold at once (daemon; null: no limit; absent: maxShaderBytesPerTenant). */
  maxShaderBytes: byteCount.nullable().optional(),
});
export type QuotaInput = z.input<typeof quotaSchema>;
export type Quota = z.output<typeof quotaSchema>;

const tenantSchema = quotaSchema.extend({ tokenHash });

const tenantsSchema = z.record(tenantName, tenantSchema);

/** A Unix file mode: a number (0o660) or an octal string ("0660"). */
const fileMode = z.union([z.number().int(), z.string().regex(/^0?[0-7]{3}$/, 'an octal mode such as "0660"')]).transform((m) => (typeof m === 'number' ? m : parseInt(m, 8)));

const port = z.number().int().min(0).max(65535);

export const configSchema = z.strictObject({
  /** The Unix socket. */
  socket: z.string().min(1).optional(),
  socketMode: fileMode.optional(),
  /** TCP: TLS unless `insecure: true` says plain TCP on purpose. */
  tcp: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port,
      tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1), ca: z.string().min(1).optional() }).optional(),
      insecure: z.boolean().optional(),
    })
    .refine((tcp) => tcp.tls !== undefined || tcp.insecure === true, {
      message: 'TCP needs tls {cert, key}; plain TCP (tokens in clear text) only with insecure: true',
      path: ['tls'],
    })
    .refine((tcp) => !(tcp.tls !== undefined && tcp.insecure === true), { message: 'give tls or insecure: true, not both', path: ['insecure'] })
    .optional(),
  /** The Prometheus endpoint (off unless given). */
  metrics: z.strictObject({ host: z.string().min(1).default('127.0.0.1'), port }).optional(),
  kernel: z
    .strictObject({
      /** Dawn backends to open devices on, in order (docs/configuration.md); unknown names are refused by the kernel as kernel.backends. */
      backends: z.array(z.string().min(1)).min(1).optional(),
      devices: z.number().int().positive().optional(),
      memoryBudget: byteCount.optional(),
      maxInFlight: z.number().int().positive().optional(),
      targetSliceMs: z.number().positive().finite().optional(),
      dawnPollIntervalUs: z.number().nonnegative().max(MAX_DAWN_POLL_INTERVAL_US).optional(),
      issueLeadMs: z.number().nonnegative().finite().optional(),
      maxDispatchMs: z.number().min(1).max(3_600_000).optional(),
      atomize: z.boolean().optional(),
      coalesceSubmitsWithinUs: z.number().nonnegative().max(1e6).optional(),
      /** What one shader module may cost to compile (docs/configuration.md); each field a positive integer. */
      shaderLimits: z
        .strictObject({
          maxModuleBytes: z.number().int().positive().optional(),
          maxNestingDepth: z.number().int().positive().optional(),
          maxFunctions: z.number().int().positive().optional(),
          maxCallDepth: z.number().int().positive().optional(),
          maxInlinedCost: z.number().int().positive().optional(),
          maxPrivateArrayBytes: z.number().int().positive().optional(),
        })
        .optional(),
      traceEvents: z.number().int().nonnegative().optional(),
      // Checked by the kernel (0 is allowed there); its refusal is reported as kernel.<field>.
      hostMemoryLimit: z.union([z.number().nonnegative(), z.string()]).nullable().optional(),
      spillDirectory: z.string().min(1).optional(),
      exitedRetentionMs: z.number().nonnegative().finite().optional(),
    })
    .default({}),
  adminTokenHash: tokenHash.optional(),
  /** Sessions that present no token act as this tenant (never as the admin). Off unless given. */
  anonymousTenant: tenantName.optional(),
  tenants: tenantsSchema.default({}),
  /** Where runtime tenant changes persist (JSON, written atomically). */
  stateFile: z.string().min(1).optional(),
  /** Where tenants' checkpoint images live: `<imageDir>/<tenant>/<name>` (admins may use any path). */
  imageDir: z.string().min(1).optional(),
  log: z.strictObject({ level: z.enum(LOG_LEVELS).default('info'), file: z.string().min(1).optional() }).default({ level: 'info' }),
  drainTimeoutMs: z.number().int().nonnegative().default(DEFAULT_DRAIN_TIMEOUT_MS),
  handshakeTimeoutMs: z.number().int().positive().default(DEFAULT_HANDSHAKE_TIMEOUT_MS),
  maxFrameBytes: z.number().int().min(1024).default(DEFAULT_MAX_FRAME_BYTES),
  /** Frame size limit before Hello (the lower of this and maxFrameBytes applies): nothing large is buffered for a stranger. */
  maxHandshakeFrameBytes: z.number().int().min(1024).default(DEFAULT_MAX_HANDSHAKE_FRAME_BYTES),
  /** Connections not yet authenticated at once; a new one beyond it closes the oldest, so a flood cannot lock anyone out. */
  maxHandshakes: z.number().int().positive().default(DEFAULT_MAX_HANDSHAKES),
  /** Authenticated tenant sessions at once (the admin's not counted). */
  maxSessions: z.number().int().positive().default(DEFAULT_MAX_SESSIONS),
  /** Sessions one tenant may hold at once (the admin is not limited), so no tenant can take every slot. */
  maxSessionsPerTenant: z.number().int().positive().default(DEFAULT_MAX_SESSIONS_PER_TENANT),
  /** Admin sessions at once, kept apart from maxSessions. */
  adminSessions: z.number().int().positive().default(DEFAULT_ADMIN_SESSIONS),
  /** A frame begun on an authenticated session must be complete within this (ms); null: no limit. */
  frameTimeoutMs: z.number().int().positive().nullable().default(DEFAULT_FRAME_TIMEOUT_MS),
  /** A control session idle this long is closed (ms); null: never. Process sessions are not idle-timed. */
  controlIdleTimeoutMs: z.number().int().positive().nullable().default(DEFAULT_CONTROL_IDLE_TIMEOUT_MS),
  /** Tenants' default maxObjects (a tenant's own quota overrides it); null: no limit. */
  maxObjectsPerTenant: z.number().int().positive().nullable().default(DEFAULT_MAX_OBJECTS_PER_TENANT),
  /** Bytes of unfinished frames one tenant's sessions may have the daemon hold together; beyond it the session reading gets GPUNIX_E_QUOTA. */
  maxBufferedBytesPerTenant: byteCount.default(DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT),
  /** Tenants' default maxShaderBytes (a tenant's own quota overrides it); null: no limit. */
  maxShaderBytesPerTenant: byteCount.nullable().default(DEFAULT_MAX_SHADER_BYTES_PER_TENANT),
  /** Shared memory for bulk data of clients on the Unix socket (docs/daemon.md, "Bulk data"): where regions are made (null: off), one session's largest, one tenant's together. */
  sharedMemory: z.strictObject({ directory: z.string().min(1).nullable().optional(), maxBytes: byteCount.optional(), maxBytesPerTenant: byteCount.optional() }).optional(),
  /**
   * The daemon joins a fleet as a node (src/fleet/nodeAgent.ts, docs/fleet.md): etcd, node name, labels,
   * leaseTtlSeconds, workDir, scheduler. Lazy: src/fleet/spec.ts imports this module (describeIssues).
   */
  fleet: z.lazy(() => fleetConfigSchema).optional(),
  /**
   * Moving processes to other nodes (docs/fleet.md, "Live migration between nodes"): `peerToken` is
   * the admin token this daemon presents to the daemon it moves a process to (a fleet's nodes share
   * one); a MigrateProcess may give its own.
   */
  migration: z.strictObject({ peerToken: z.string().min(1).nullable().default(null) }).optional(),
  /** This daemon's name among its peers (segments "name@node" homed here are local). Default: fleet.node. */
  node: z.string().regex(/^[A-Za-z0-9_.-]{1,48}$/, '1-48 of A-Za-z0-9_.-').optional(),
  /**
   * Another node's host memory for evicted buffer contents beyond kernel.hostMemoryLimit, before
   * spill files (docs/memory.md, "Remote host memory as a tier"): `node` (one of `peers`), `maxBytes`.
   */
  remoteTier: z.strictObject({ node: z.string().min(1), maxBytes: byteCount }).optional(),
  /** Host memory this node keeps for other nodes' evicted contents (their remoteTier); absent: none. */
  lendHostMemory: byteCount.optional(),
  /** Other nodes this daemon reaches by name (segments homed there, migrate --node): name -> socket path, tcp:// or tls:// address. A fleet node also finds the fleet's nodes in etcd. */
  peers: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,48}$/), z.string().min(1)).optional(),
});

/** The configuration as written (a file's JSON, or an object in code). */
export type DaemonConfigInput = z.input<typeof configSchema>;

/** The checked configuration, with defaults filled in. */
export interface DaemonConfig extends Omit<z.output<typeof configSchema>, 'socket' | 'socketMode' | 'imageDir'> {
  socket: string;
  socketMode: number;
  imageDir: string;
}

const article = (word: string): string => (/^[aeiou]/.test(word) ? 'an' : 'a');

/** One line per problem, each naming its field: `tenants.alice.memoryLimit: not a byte count ...`. */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((issue) => {
      const path = issue.path.map(String).join('.');
      if (issue.code === 'unrecognized_keys') return `${path || '(top level)'}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
      // zod's "Invalid input: expected string, received undefined", in an operator's words.
      const type = issue.code === 'invalid_type' ? /received (\w+)/.exec(issue.message)?.[1] : undefined;
      if (issue.code === 'invalid_type' && type === 'undefined') return `field ${path ? `"${path}"` : '(top level)'} is required (${article(issue.expected)} ${issue.expected})`;
      if (issue.code === 'invalid_type' && type) return `${path || '(top level)'}: must be ${article(issue.expected)} ${issue.expected}, not ${article(type)} ${type}`;
      return `${path || '(top level)'}: ${issue.message}`;
    })
    .join('; ');
}

/** zod leaves a "__proto__" key out of a record without a word: refuse the reserved names before it looks. */
function refuseReservedTenants(raw: unknown, source: string): void {
  const tenants = typeof raw === 'object' && raw !== null ? (raw as { tenants?: unknown }).tenants : undefined;
  if (typeof tenants !== 'object' || tenants === null) return;
  for (const name of Object.keys(tenants)) {
    if (RESERVED_TENANT_NAMES.has(name)) throw new GpunixError(ErrorCodes.BAD_CONFIG, `${source}: tenants.${name}: tenant names cannot be ".", ".." or "__proto__"`);
  }
}

/** Checks a configuration object; throws GPUNIX_E_BAD_CONFIG naming every bad field. */
export function parseConfig(raw: unknown, source = 'configuration'): DaemonConfig {
  refuseReservedTenants(raw, source);
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new GpunixError(ErrorCodes.BAD_CONFIG, `${source}: ${describeIssues(result.error.issues)}`);
  const config = result.data;
  const socket = config.socket ?? defaultSocketPath();
  return {
    ...config,
    socket,
    socketMode: config.socketMode ?? DEFAULT_SOCKET_MODE,
    imageDir: config.imageDir ?? join(dirname(socket), 'images'),
  };
}

/** Reads and checks a JSON configuration file; `overrides` (e.g. a --socket flag) replace its fields (`kernel`'s field by field). */
export function loadConfigFile(path: string, overrides: Partial<DaemonConfigInput> = {}): DaemonConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new GpunixError(ErrorCodes.BAD_CONFIG, `cannot read the configuration ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new GpunixError(ErrorCodes.BAD_CONFIG, `${path}: not JSON: ${(error as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new GpunixError(ErrorCodes.BAD_CONFIG, `${path}: the configuration must be one JSON object`);
  const kernel = overrides.kernel === undefined ? {} : { kernel: { ...((raw as { kernel?: object }).kernel ?? {}), ...overrides.kernel } };
  return parseConfig({ ...raw, ...overrides, ...kernel }, path);
}

// ---- tokens -------------------------------------------------------------------------------------
// A token is 32 random bytes (256 bits). The daemon keeps only sha256(token). A slow password hash
// (bcrypt, argon2) exists to make guessing low-entropy passwords expensive; a 256-bit random token
// cannot be guessed at any cost, and sha256's preimage resistance means a leaked hash does not give
// the token back. A fast hash also keeps every handshake cheap.

/** A new token: 32 random bytes as 64 hex digits. Shown once; store only hashToken(token). */
export function newToken(): string {
  return randomBytes(32).toString('hex');
}

/** The stored form of a token: `sha256:<hex>` of its UTF-8 text. */
export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** Compares two `sha256:<hex>` hashes in constant time (they are of equal length by construction). */
export function hashesEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

// ---- the state file: runtime tenant changes -----------------------------------------------------

export const stateSchema = z.strictObject({
  version: z.literal(1),
  /** Tenants added or changed at runtime: each replaces the configuration's entry of that name. */
  tenants: tenantsSchema,
  /** Tenants removed at runtime: removed even when the configuration still lists them. */
  removed: z.array(z.string()),
});
export type DaemonState = z.output<typeof stateSchema>;

/** Checks the state file's contents; throws GPUNIX_E_BAD_CONFIG naming the field. */
export function parseState(raw: unknown, source: string): DaemonState {
  refuseReservedTenants(raw, source);
  const result = stateSchema.safeParse(raw);
  if (!result.success) throw new GpunixError(ErrorCodes.BAD_CONFIG, `${source}: ${describeIssues(result.error.issues)}`);
  return result.data;
}
