// Exits 0 when Dawn (npm `webgpu`) can open a device on some Vulkan adapter, 1 otherwise.
// Used by setup.sh to decide whether the CPU Vulkan driver (lavapipe) must be installed.
import { create } from 'webgpu';

const gpu = create([]);
try {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no adapter');
  const device = await adapter.requestDevice();
  const info = adapter.info;
  console.log(`vulkan device: ${info.vendor} ${info.architecture} ${info.description}`.trim());
  device.destroy();
  process.exit(0);
} catch (e) {
  console.log(`no usable WebGPU device: ${e?.message ?? e}`);
  process.exit(1);
}
