// Says what a fleet member sees of its process: "uid <n>", "env <sorted variable names>", and that it
// reached a device ("device ok"). For the fleet node's environment and runAs tests. Usage: node fleet-env.mjs
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(buffer, 0, new Uint32Array([1, 2, 3, 4]));
await device.queue.onSubmittedWorkDone();
console.log(`uid ${process.getuid?.() ?? -1}`);
console.log(`env ${Object.keys(process.env).sort().join(' ')}`);
console.log('device ok');
