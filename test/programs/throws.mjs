// A WebGPU program that fails after starting GPU work.
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
device.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE });
throw new Error('the program gave up');
