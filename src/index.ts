// gpunix's public embedded API. Stable: later tools and checks use it.
export { createKernel, Kernel, ProcessHandle } from './kernel/kernel.js';
export { resolveTenantQuota } from './kernel/kernel.js';
export type { TenantQuotaOptions, KernelOptions, SpawnOptions, RestoreOptions, ReniceOptions, KernelStats, DeviceStats, DeviceDescription } from './kernel/kernel.js';
export type { OperationOptions, CheckpointOptions } from './kernel/kernel.js';
export type { TenantRecord, TenantQuota } from './kernel/tenant.js';
export type { ChromeTrace } from './kernel/trace.js';
export type { LatencySnapshot } from './kernel/latency.js';
export type { ProcessRecord, ProcessState, ExitStatus, ExitReason, ProcessAccounting } from './kernel/proc.js';
export type { PriorityClass } from './params.js';
export { GpunixError, ErrorCodes } from './errors.js';
export type { ErrorCode } from './errors.js';
export { gpunixGlobals, installGlobals, runInProcess } from './vgpu/globals.js';
export { bypassEventPump, eventPumpStats } from './device/eventPump.js';
export type { EventPumpStats } from './device/eventPump.js';
export { readImage, writeImage, IMAGE_FORMAT_VERSION } from './kernel/image.js';
export type { ProcessImage, WrittenImage, QueuedWork, ImageCommandBuffer, ImageCommand, ImagePassCommand, ImageBindGroup, ImageQuerySet, ImageBuffer, ImageShader, ImagePipeline, ImageFormatVersion, ImageHeader, ReadImageOptions } from './kernel/image.js';
export { connect, RemoteProcess } from './client/index.js';
export type { SessionOptions, ConnectOptions } from './client/index.js';
