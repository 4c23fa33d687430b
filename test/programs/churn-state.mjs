// A program for the live-migration tests (test/nodeMigration.test.ts): while it runs, it keeps
// making and destroying buffers (so a move sees buffers made and destroyed during its pre-copy),
// and holds a MAP_READ buffer whose contents only a mapping can read (a move reads it at the stop).
// Each step s makes buffer T_s (64 KiB + 4 s bytes, word i = s * 7919 + i, written by writeBuffer)
// and destroys T_{s-2}. At the end it reads the MAP_READ buffer and the last two T buffers back and
// checks every word. Prints, one per line:
//   pid N            once the first steps are done (the tests wait for it)
//   moved A B pid N  on each move between nodes
//   exact | mismatch ...
//   final pid N
// Usage: node churn-state.mjs --socket S --token T [--name N] --stop-file F [--after 5]
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { connect } from './gpunix-client.mjs';

const { values: flags } = parseArgs({
  options: {
    socket: { type: 'string' },
    token: { type: 'string' },
    name: { type: 'string', default: 'churn-state' },
    'stop-file': { type: 'string' },
    after: { type: 'string', default: '5' },
  },
});

const proc = await connect({ socket: flags.socket, token: flags.token, name: flags.name });
proc.on('moved', (moved) => console.log(`moved ${moved.from} ${moved.to} pid ${moved.pid}`));
const device = await (await proc.gpu.requestAdapter()).requestDevice();

/** Word i of T_s. */
const wordOf = (s, i) => (Math.imul(s, 7919) + i) >>> 0;
const sizeOf = (s) => 65536 + 4 * s;

// The MAP_READ buffer: filled once by a copy from a buffer of known words, then only mapped at the end.
const READ_WORDS = 16384;
const source = device.createBuffer({ size: READ_WORDS * 4, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(source, 0, Uint32Array.from({ length: READ_WORDS }, (_, i) => (i * 31 + 5) >>> 0));
const readable = device.createBuffer({ size: READ_WORDS * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const encoder = device.createCommandEncoder();
encoder.copyBufferToBuffer(source, 0, readable, 0, READ_WORDS * 4);
device.queue.submit([encoder.finish()]);
source.destroy();

const live = new Map();
async function step(s) {
  const buffer = device.createBuffer({ size: sizeOf(s), usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buffer, 0, Uint32Array.from({ length: sizeOf(s) / 4 }, (_, i) => wordOf(s, i)));
  live.set(s, buffer);
  live.get(s - 2)?.destroy();
  live.delete(s - 2);
  await device.queue.onSubmittedWorkDone();
}

let steps = 0;
for (; steps < 3; steps++) await step(steps);
console.log(`pid ${proc.pid}`);
let until = Infinity;
while (steps < until) {
  await step(steps++);
  if (until === Infinity && existsSync(flags['stop-file'])) until = steps + Number(flags.after);
  await new Promise((r) => setTimeout(r, 2));
}

let mismatch = null;
await readable.mapAsync(GPUMapMode.READ);
const got = new Uint32Array(readable.getMappedRange());
for (let i = 0; i < READ_WORDS && !mismatch; i++) if (got[i] !== ((i * 31 + 5) >>> 0)) mismatch = `mismatch MAP_READ word ${i}: got ${got[i]}`;
readable.unmap();
for (const [s, buffer] of live) {
  const staging = device.createBuffer({ size: sizeOf(s), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const copy = device.createCommandEncoder();
  copy.copyBufferToBuffer(buffer, 0, staging, 0, sizeOf(s));
  device.queue.submit([copy.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(staging.getMappedRange());
  for (let i = 0; i < out.length && !mismatch; i++) if (out[i] !== wordOf(s, i)) mismatch = `mismatch T_${s} word ${i}: got ${out[i]}, want ${wordOf(s, i)}`;
  staging.unmap();
  staging.destroy();
}
console.log(mismatch ?? 'exact');
console.log(`final pid ${proc.pid}`);
await proc.exit(mismatch ? 1 : 0);
process.exit(mismatch ? 1 : 0);
