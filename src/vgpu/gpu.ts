// The `navigator.gpu` a process sees. Adapter options are hints to the kernel's placement; Dawn's
// own options (toggles, backends) are never reachable from here.

import { dawnInstance } from '../device/adapters.js';
import { VirtualAdapter } from './adapter.js';
import { requestAdapterOptions } from '../webidl.js';
import type { ProcessHost } from './host.js';

export class VirtualGPU {
  // A private field, not an own property: a GPU object has none (WebIDL).
  #host: ProcessHost;
  constructor(host: ProcessHost) {
    this.#host = host;
  }

  async requestAdapter(options?: GPURequestAdapterOptions): Promise<VirtualAdapter | null> {
    // Converted as WebIDL says (a failure rejects): the kernel never reads the program's object.
    const converted = requestAdapterOptions(options);
    if (!this.#host.proc.alive) return null;
    // featureLevel must be a feature level string, else no adapter (WebGPU §4.3).
    if (converted.featureLevel !== 'core' && converted.featureLevel !== 'compatibility') return null;
    const device = this.#host.chooseDevice(converted);
    if (!device) return null;
    // "core" needs an adapter that supports core: a compatibility-only device (GL, GLES) gives
    // none. "compatibility" gives a compatibility-defaulting adapter on any device, so that the
    // process's device is one every backend can hold (docs/vgpu.md, "Feature levels").
    if (converted.featureLevel === 'core' && device.adapter.featureLevel !== 'core') return null;
    return new VirtualAdapter(this.#host, device, converted.featureLevel);
  }

  getPreferredCanvasFormat(): GPUTextureFormat {
    return 'rgba8unorm';
  }

  get wgslLanguageFeatures(): ReadonlySet<string> {
    return dawnInstance().wgslLanguageFeatures;
  }
}
