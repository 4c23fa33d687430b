// Resumes counter.mjs from a restored image: finds its buffer and pipeline by label, runs steps 3-5.
import { advance, checksum } from './counter.mjs';
const device = await (await navigator.gpu.requestAdapter()).requestDevice();
const state = device.gpunix.findBuffer('state');
const pipeline = device.gpunix.findPipeline('step');
if (!state || !pipeline) throw new Error(`not restored: ${JSON.stringify(device.gpunix.labels())}`);
await advance(device, pipeline, state, 3, 6);
console.log(`checksum ${await checksum(device, state)}`);
