// Allocates one storage buffer of <bytes> inside an out-of-memory error scope and says what
// happened: "allocated <bytes>" (then holds it <holdMs> and exits 0) or "out-of-memory: <message>"
// (exit code 2). For the fleet node's memory-limit test. Usage: node-alloc.mjs <bytes> [holdMs]
const bytes = Number(process.argv[2]);
const holdMs = Number(process.argv[3] ?? 0);
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
device.pushErrorScope('out-of-memory');
const buffer = device.createBuffer({ label: 'big', size: bytes, usage: GPUBufferUsage.STORAGE });
const error = await device.popErrorScope();
if (error) {
  console.log(`out-of-memory: ${error.message}`);
  process.exitCode = 2;
} else {
  // Touch it: the allocation is real device memory, not a promise of it.
  device.queue.writeBuffer(buffer, 0, new Uint32Array([1, 2, 3, 4]));
  await device.queue.onSubmittedWorkDone();
  console.log(`allocated ${bytes}`);
  if (holdMs > 0) await new Promise((r) => setTimeout(r, holdMs));
}
