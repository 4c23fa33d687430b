// What a process's virtual WebGPU objects need from the kernel: the process they belong to, a
// device to stand on, and that device's dispatcher. The kernel implements it; vgpu never reaches
// further into the kernel than this.

import type { PhysicalDevice } from '../device/physicalDevice.js';
import type { Dispatcher } from '../kernel/dispatch.js';
import type { MemoryManager } from '../kernel/mem.js';
import type { SharedSegments } from '../kernel/segments.js';
import type { Proc } from '../kernel/proc.js';
import type { ShaderLimits } from '../wgsl/complexity.js';
import type { VirtualDevice } from './device.js';

export interface ProcessHost {
  readonly proc: Proc;
  /** The device a new adapter of this process stands on, or null when none fits the request. */
  chooseDevice(options: GPURequestAdapterOptions | undefined): PhysicalDevice | null;
  dispatcherFor(device: PhysicalDevice): Dispatcher;
  /** Keeps devices within budget by evicting idle processes' buffers. */
  readonly memory: MemoryManager;
  /** Named buffers shared by processes of one tenant. */
  readonly segments: SharedSegments;
  /**
   * Registers a new virtual device: the kernel turns it lost when its process or device ends. A
   * promise when the device receives a process image: the device is the program's once it settles.
   */
  adopt(device: VirtualDevice): void | Promise<void>;
  /**
   * When true, the dispatcher encodes every command buffer afresh from the kernel's record instead
   * of using the encoding checked at finish(): the path preemption and eviction rely on.
   */
  readonly reencodeCommandBuffers: boolean;
  /** Split dispatches into atoms (pipelines get an atomized twin). */
  readonly atomize: boolean;
  /** Fixed workgroups per atom, overriding the cost model (null: the cost model decides). */
  readonly atomSize: number | null;
  /** The longest one piece of this process's device work may take (ms): the watchdog's limit. */
  maxDispatchMs(): number;
  /** What a shader module may cost to compile (checked before Dawn sees it; src/wgsl/complexity.ts). */
  readonly shaderLimits: ShaderLimits;
}
