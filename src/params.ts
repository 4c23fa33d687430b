// Every limit and default of gpunix in one place. Documented in docs/configuration.md.

const GiB = 1024 ** 3;

/** Default per-device memory budget: what the kernel lets all processes allocate on one device. */
export const DEFAULT_MEMORY_BUDGET_BYTES = 4 * GiB;

/** Environment variable that overrides the default memory budget (bytes, or with a K/M/G suffix). */
export const MEMORY_BUDGET_ENV = 'GPUNIX_MEMORY_BUDGET';

/**
 * Dawn toggles the kernel sets on every device it opens. Only the kernel chooses toggles: a program
 * never reaches `create()` (a toggle such as disable_robustness would undo isolation).
 * Unquantized timestamps let the kernel measure short GPU work exactly.
 */
export const KERNEL_DAWN_OPTIONS: readonly string[] = ['disable-dawn-features=timestamp_quantization'];

/**
 * Most unfinished fences (points in the device's queue where ownership changes hands, and each
 * atom) the dispatcher lets one device hold before it holds work back. This bounds how long newly
 * ready work of a higher class waits: about this many atoms. Two keeps the device fed (one piece
 * runs while the next is queued behind it).
 */
export const DEFAULT_MAX_IN_FLIGHT = 2;

/**
 * On a device that runs on the host's CPU (lavapipe), a submit with checked loops (it may run
 * long) goes to the device only once the work ahead of it has completed, unless its kernels were
 * last seen to run at most this long there (ns), or, for a kernel never seen, its process's last
 * checked piece was (Dispatcher.drainFirst). Dawn frees a pipeline the program let go of in the
 * poll that sees the work ahead complete, and lavapipe's vkDestroyPipeline waits for the submit
 * its queue runs: the kernel's thread would stop for the whole long kernel (docs/daemon.md,
 * "What never waits for the device"). Above the atoms' lengths (a few milliseconds, alone on the
 * device), so atomized work never waits: a stop as long as an atom is what any atom costs.
 */
export const CHECKED_DRAIN_AFTER_NS = 10e6;

/**
 * How many rounds a migration waits for what the program made or used meanwhile (new pipelines
 * to make on the target, buffers brought back before their contents were copied) before it gives
 * up with GPUNIX_E_BUSY, leaving the process where it was (src/vgpu/device.ts migrateTo). A
 * program that awaits its results stops within a round or two: a held process's work does not run.
 */
export const MIGRATION_ROUNDS = 32;

/** Device time one atom (one piece of a split dispatch) aims to take. */
export const DEFAULT_TARGET_SLICE_MS = 1;

/**
 * While no other process of the same or a higher class has had work on a device for
 * DEFAULT_CONTENTION_WINDOW_MS, nobody the bounds above protect is there to be protected: a
 * process then gets atoms of DEFAULT_UNCONTENDED_SLICE_FACTOR slices and up to
 * DEFAULT_UNCONTENDED_MAX_IN_FLIGHT fences. Fewer, larger atoms and a deeper queue cost the
 * device far less (on lavapipe, 1 ms atoms two deep run at ~0.75 of one whole dispatch, 4 ms atoms
 * four deep at ~0.9 or better), and the queue then outlasts a JavaScript stall (a GC pause, a
 * descheduled thread on a CPU device). The price: a process that arrives after such a quiet spell
 * waits for at most UNCONTENDED_MAX_IN_FLIGHT uncontended atoms, once; from its arrival on, the
 * others' atoms are bounded as above again.
 */
export const DEFAULT_CONTENTION_WINDOW_MS = 100;
export const DEFAULT_UNCONTENDED_SLICE_FACTOR = 4;
export const DEFAULT_UNCONTENDED_MAX_IN_FLIGHT = 4;

/**
 * The least time between two of Dawn's event polls while a kernel runs (µs; see
 * src/device/eventPump.ts). dawn.node polls on every turn of the event loop, which spins the main
 * thread and feeds the garbage collector; 100 µs keeps completions seen within 0.1 ms of a spinning
 * poll while the thread sleeps instead (on lavapipe: GC from ~150 to ~5 ms per second under load).
 */
export const DEFAULT_DAWN_POLL_INTERVAL_US = 100;
/** Longer intervals would make every completion late by more than a typical atom. */
export const MAX_DAWN_POLL_INTERVAL_US = 10_000;

/**
 * While a higher class has been active within the contention window, a lower class's next piece
 * goes on the device this long before the device is predicted to run out of work (the cost
 * models' forecast), not as soon as an in-flight slot frees: a realtime arrival then waits for
 * the rest of the running atom, and a whole second one only when it arrives within this long of
 * the first one's end (a wait of half an atom plus the lead on average). Long enough to cover a
 * completion seen late (one event-pump interval, a scheduling hiccup) so the device seldom idles:
 * on lavapipe 0.25 took ~0.25 ms off the median wait against 0.5, with batch throughput within
 * the noise (docs/benchmarks.md, "Preemption").
 */
export const DEFAULT_ISSUE_LEAD_MS = 0.25;

/** Workgroups in the first atom of a pipeline whose cost is still unknown (the probe). */
export const COST_PROBE_WORKGROUPS = 4;

/**
 * The most command buffers of a burst of whole submits the dispatcher holds before giving them to
 * Dawn as one real submit (src/device/physicalDevice.ts holdSubmit): it bounds how long the first
 * of them waits for the program's loop (16 one-dispatch submits: ~0.5 ms on lavapipe), while one
 * real submit per 16 leaves little of Dawn's per-submit cost (docs/benchmarks.md, "Submits held
 * for a burst").
 */
export const HELD_SUBMITS_MAX = 16;

/**
 * By default a whole submit is held only when the program called it less than this long (µs) after
 * its previous one (kernel option `coalesceSubmitsWithinUs`): in a loop of submits, 25-60 µs apart
 * on lavapipe and on an H200 through Vulkan. The first submit after a pause reaches Dawn at once, so
 * that a program that submits and then works on the CPU keeps the device busy meanwhile, as on
 * bare Dawn.
 */
export const DEFAULT_COALESCE_SUBMITS_WITHIN_US = 250;

/** Copies and buffer writes larger than this are issued in pieces of this size (bytes). */
export const COPY_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * The longest one piece of device work (a dispatch run whole, or one atom) may take, in ms
 * (kernel option and tenant quota `maxDispatchMs`). Every loop of every kernel is bounded so that it
 * ends after about this long (src/wgsl/watchdog.ts); a process whose work takes longer is ended
 * with reason `watchdog`. 2 s: longer than any single dispatch an interactive tenant should wait behind.
 */
export const DEFAULT_MAX_DISPATCH_MS = 2000;
/**
 * Loop budget = iterations per ms (calibrated, src/device/loopRate.ts) x maxDispatchMs x this: a
 * budget spent must mean more than maxDispatchMs of device time, so that every cut-short loop is
 * caught by the time check and never passes as a result. The calibration is the fastest of several
 * runs, timed by CPU time on a CPU device (a busy machine does not slow it); 2 keeps the guarantee
 * through a calibration up to 2x slow all the same (a GPU shared with work outside gpunix, clocks
 * still rising), at the price of a runaway lasting about twice the limit. Where a pipeline has the
 * budget-spent flag (src/vgpu/loopFlag.ts), a calibration up to 16x slow is caught too
 * (WATCHDOG_FLAG_READ_FRACTION); the slack stays for the pipelines without one.
 */
export const WATCHDOG_BUDGET_SLACK = 2;
/**
 * A checked piece that ran at least 1/this of its owner's limit, and within it, has its owner's
 * budget-spent flag read (src/vgpu/loopFlag.ts): a loop cut short then ends the process though the
 * piece's time did not. With WATCHDOG_BUDGET_SLACK 2, a cut piece runs at least 2/R of the limit
 * when the device runs R times faster than its calibration said: the flag catches it up to R = 16.
 * Shorter pieces are not read (a copy and a map each): a calibration 16x slow is not a slip.
 */
export const WATCHDOG_FLAG_READ_FRACTION = 8;

/** Events the atom timeline keeps per kernel (the oldest are dropped first). */
export const DEFAULT_TRACE_EVENTS = 100_000;

/** Default share weight of a process within its priority class. */
export const DEFAULT_WEIGHT = 1;

/**
 * How long a checkpoint or migration waits for its process to stop at a piece boundary (behind
 * earlier operations on the same process included) before it gives up with GPUNIX_E_TIMEOUT (ms).
 */
export const DEFAULT_OPERATION_TIMEOUT_MS = 30_000;

/** How many exited processes `ps()` keeps listing (like zombies) until they are waited for. */
export const EXITED_PROCESS_RETENTION = 64;

/** The priority classes, strongest first. */
export const PRIORITY_CLASSES = ['realtime', 'normal', 'batch'] as const;
export type PriorityClass = (typeof PRIORITY_CLASSES)[number];

/** The one tenant that exists until tenants arrive with the daemon. */
export const DEFAULT_TENANT = 'default';

/**
 * WebGPU's default limits (spec §limits), which a virtual device reports unless the program
 * asks for better ones in requestDevice. The real device is opened with the adapter's limits so
 * that any program's request can be granted; gpunix enforces the program's own limits where
 * they decide validity (see docs/vgpu.md, "Limits").
 */
export const WEBGPU_DEFAULT_LIMITS: Readonly<Record<string, number>> = {
  maxTextureDimension1D: 8192,
  maxTextureDimension2D: 8192,
  maxTextureDimension3D: 2048,
  maxTextureArrayLayers: 256,
  maxBindGroups: 4,
  maxBindGroupsPlusVertexBuffers: 24,
  maxBindingsPerBindGroup: 1000,
  maxDynamicUniformBuffersPerPipelineLayout: 8,
  maxDynamicStorageBuffersPerPipelineLayout: 4,
  maxSampledTexturesPerShaderStage: 16,
  maxSamplersPerShaderStage: 16,
  maxStorageBuffersPerShaderStage: 8,
  maxStorageBuffersInVertexStage: 8,
  maxStorageBuffersInFragmentStage: 8,
  maxStorageTexturesPerShaderStage: 4,
  maxStorageTexturesInVertexStage: 4,
  maxStorageTexturesInFragmentStage: 4,
  maxUniformBuffersPerShaderStage: 12,
  maxUniformBufferBindingSize: 65536,
  maxStorageBufferBindingSize: 134217728,
  minUniformBufferOffsetAlignment: 256,
  minStorageBufferOffsetAlignment: 256,
  maxVertexBuffers: 8,
  maxBufferSize: 268435456,
  maxVertexAttributes: 16,
  maxVertexBufferArrayStride: 2048,
  maxInterStageShaderVariables: 16,
  maxColorAttachments: 8,
  maxColorAttachmentBytesPerSample: 32,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
  maxImmediateSize: 64,
};

/** Parses a byte count such as `1073741824`, `512M` or `4G`; throws on anything else. */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!m) throw new Error(`not a byte count: ${JSON.stringify(text)} (use e.g. 512M or 4G)`);
  const scale: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
  return Math.floor(Number(m[1]) * scale[m[2].toLowerCase()]);
}

/** Environment variable naming the daemon's Unix socket, for the daemon and its clients. */
export const SOCKET_ENV = 'GPUNIX_SOCKET';

/** Environment variable holding the token a client presents (instead of --token). */
export const TOKEN_ENV = 'GPUNIX_TOKEN';

/**
 * Where gpunixd listens when neither its configuration nor $GPUNIX_SOCKET says: the system path
 * for root (a systemd service), else the user's runtime directory.
 */
export function defaultSocketPath(): string {
  const fromEnv = process.env[SOCKET_ENV];
  if (fromEnv) return fromEnv;
  if (process.getuid?.() === 0) return '/run/gpunix/gpunixd.sock';
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime ? `${runtime}/gpunix/gpunixd.sock` : `/tmp/gpunix-${process.getuid?.() ?? 'user'}/gpunixd.sock`;
}

/** Permissions of the daemon's socket: owner and group may connect; tokens decide the rest. */
export const DEFAULT_SOCKET_MODE = 0o660;

/**
 * Default limits on a shader module, checked before any of it reaches Dawn (src/wgsl/complexity.ts;
 * kernel option `shaderLimits`). Compilation runs on the kernel's thread and the driver inlines
 * every call, so one tenant's module could cost every other tenant seconds and gigabytes. Chosen
 * from bench/compile.ts on lavapipe (docs/configuration.md has the numbers): every program in
 * test/corpus and examples/ sits far below each limit, and what passes compiles in well under a second.
 */
export const DEFAULT_SHADER_LIMITS = {
  maxModuleBytes: 128 * 1024,
  maxNestingDepth: 128,
  maxFunctions: 500,
  maxCallDepth: 64,
  maxInlinedCost: 25_000,
  maxPrivateArrayBytes: 8192,
} as const;
