// What the test programs that run as gpunixd clients share: the client library's connect(), from
// this checkout's build, and the WebGPU enums (GPUBufferUsage, GPUMapMode) as Dawn's globals define
// them (a client program has no navigator.gpu of its own).
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { globals } = await import('webgpu');
Object.assign(globalThis, globals);

export const { connect } = await import(pathToFileURL(resolve(root, 'dist/src/client/index.js')).href);
