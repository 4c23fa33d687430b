// Exits 0 when Dawn (npm `webgpu`) can open a device on an OpenGL ES adapter through Mesa's EGL
// (or on the backend named as the first argument: opengles or opengl), 1 otherwise. Used by
// setup.sh to decide whether Mesa's EGL/GLES/GL libraries must be installed.
import { create } from 'webgpu';

const backend = process.argv[2] ?? 'opengles';
// Mesa's EGL reads EGL_PLATFORM when Dawn loads it: without a display only "surfaceless" works.
process.env.EGL_PLATFORM ??= 'surfaceless';
const gpu = create([`backend=${backend}`]);
try {
  // GL and GLES adapters exist only in WebGPU's compatibility mode.
  const adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' });
  if (!adapter) throw new Error(`no ${backend} adapter`);
  const device = await adapter.requestDevice();
  console.log(`${backend} device: ${adapter.info.description}`.trim());
  device.destroy();
  process.exit(0);
} catch (e) {
  console.log(`no usable ${backend} device: ${e?.message ?? e}`);
  process.exit(1);
}
