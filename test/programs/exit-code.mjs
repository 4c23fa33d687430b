// A WebGPU program that checks the globals gpunix installs, does one dispatch, and exits with
// the code given as its first argument.
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter.requestDevice();
if (!(device instanceof GPUDevice)) throw new Error('device is not a GPUDevice');
const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(buffer, 0, new Uint32Array([0]));
device.pushErrorScope('validation');
device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
const error = await device.popErrorScope();
if (!(error instanceof GPUValidationError)) throw new Error('expected a GPUValidationError');
await buffer.mapAsync(GPUMapMode.READ);
buffer.unmap();
console.log(`args: ${process.argv.slice(2).join(' ')}`);
process.exitCode = Number(process.argv[2] ?? 0);
