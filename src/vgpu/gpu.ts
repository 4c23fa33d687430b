// The `navigator.gpu` a process sees. Adapter options are hints to the kernel's placement; Dawn's
// own options (toggles, backends) are never reachable from here.

import { dawnInstance } from '../device/adapters.js';
import { VirtualAdapter } from './adapter.js';
import { requestAdapterOptions } from '../webidl.js';
import type { ProcessHost } from './host.js';

export class VirtualGPU {
  constructor(private readonly host: ProcessHost) {}

  async requestAdapter(options?: GPURequestAdapterOptions): Promise<VirtualAdapter | null> {
    // Converted as WebIDL says (a failure rejects): the kernel never reads the program's object.
    const converted = requestAdapterOptions(options);
    if (!this.host.proc.alive) return null;
    const device = this.host.chooseDevice(converted);
    return device ? new VirtualAdapter(this.host, device) : null;
  }

  getPreferredCanvasFormat(): GPUTextureFormat {
    return 'rgba8unorm';
  }

  get wgslLanguageFeatures(): ReadonlySet<string> {
    return dawnInstance().wgslLanguageFeatures;
  }
}
