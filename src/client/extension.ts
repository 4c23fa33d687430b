// `device.gpunix` on a remote device: the same documented extension as on an embedded virtual
// device (src/vgpu/extension.ts, docs/vgpu.md): a resuming program finds a restored image's
// buffers, pipelines and shader modules by label, and attaches its tenant's shared segments.
// The daemon lists the restored objects when the device is made; the client names them with its
// own ids (BindRestored), so finding them is synchronous, as embedded.

import type { Channel } from './channel.js';
import { RestoredIndex } from '../restoredIndex.js';
import type { RemoteBuffer, RemoteComputePipeline, RemoteDevice, RemoteShaderModule } from './remote.js';

/** What RequestDevice's result lists for a restored image (docs/protocol.md, BindRestored). */
export interface RestoredListing {
  buffers: { label: string; size: number; usage: number }[];
  pipelines: { label: string }[];
  shaderModules: { label: string }[];
}

export interface RestoredObjects {
  buffers: RemoteBuffer[];
  pipelines: RemoteComputePipeline[];
  shaderModules: RemoteShaderModule[];
}

export class RemoteGpunixExtension extends RestoredIndex<RemoteBuffer, RemoteComputePipeline, RemoteShaderModule> {
  constructor(
    private readonly channel: Channel,
    private readonly device: RemoteDevice,
    /** Makes the proxy of a buffer the daemon will create under `id`. */
    private readonly bufferProxy: (id: number, size: number, usage: number, label: string) => RemoteBuffer,
  ) {
    super();
  }

  /** Records the restored objects under their labels (the daemon lists each label once). */
  adopt(objects: RestoredObjects): void {
    this.index(objects.buffers, objects.pipelines, objects.shaderModules);
  }

  /**
   * Attaches the named shared segment of this process's tenant, creating it with `size` bytes if
   * it does not exist yet (usage STORAGE | COPY_SRC | COPY_DST). Over the wire a refusal cannot
   * throw here: it arrives as an uncaptured error on the device, and the buffer is invalid.
   */
  attachShared(name: string, size: number): GPUBuffer {
    const id = this.channel.ids.allocate();
    this.channel.post('AttachShared', { device: this.device.id, id, name: String(name), size: Number(size) });
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
    return this.bufferProxy(id, Number(size), usage, '') as unknown as GPUBuffer;
  }
}

/** WebGPU's buffer usage bits this file needs (the client does not load Dawn's globals for them). */
const GPUBufferUsageFlags = { COPY_SRC: 0x0004, COPY_DST: 0x0008, STORAGE: 0x0080 } as const;
