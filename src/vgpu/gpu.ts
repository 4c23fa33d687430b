// The `navigator.gpu` a process sees. Adapter options are hints to the kernel's placement; Dawn's
// own options (toggles, backends) are never reachable from here.

import { dawnInstance } from '../device/adapters.js';
import { VirtualAdapter } from './adapter.js';
import type { ProcessHost } from './host.js';

export class VirtualGPU {
  constructor(private readonly host: ProcessHost) {}

  async requestAdapter(options?: GPURequestAdapterOptions): Promise<VirtualAdapter | null> {
    if (!this.host.proc.alive) return null;
    const device = this.host.chooseDevice(options);
    return device ? new VirtualAdapter(this.host, device) : null;
  }

  getPreferredCanvasFormat(): GPUTextureFormat {
    return 'rgba8unorm';
  }

  get wgslLanguageFeatures(): ReadonlySet<string> {
    return dawnInstance().wgslLanguageFeatures;
  }
}
