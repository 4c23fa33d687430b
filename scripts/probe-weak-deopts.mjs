// Does a full garbage collection throw away gpunix's optimized call path? Runs bench-like samples
// (a new gpunix process each, `step` rounds, a full collection before each) in a child Node
// under V8's --trace-deopt, and counts the "weak objects" deoptimizations after the first
// sample: each means an object shape (hidden class) the function checked had no live object left
// at the collection, so V8 freed it and the function goes back to the interpreter until TurboFan
// compiles it again. A class whose objects live for one call, a field added after an object was
// made, a keeper that no longer has the program's shape: docs/benchmarks.md ("issue 17 tenth
// pass") says how each was found (V8's --log-maps beside --print-opt-code) and kept
// (src/keptShapes.ts, src/vgpu/shapeKeepers.ts).
//
//   node scripts/probe-weak-deopts.mjs [samples] [rounds]     (defaults 4 and 2000)
//
// Prints the count and the functions, gpunix's own apart from Node's and the WGSL parser's, and
// the count by sample: one that every sample repeats costs each new process its optimized code,
// one seen in a single sample (a shape replaced once) does not. At issue 17's tenth pass: 1-2 (the
// WGSL parser's at shader creation, now and then one of gpunix's); 29-33 on the commit before it.
// At the thirteenth: 8 (6 of gpunix's, all in one sample: the shared pass records' frozen
// shapes, kept since), 2 with them kept. At the fourteenth: 0 (the parser's token stream is kept:
// KEPT_PARSER_STREAM in src/wgsl/source.ts).

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

if (process.argv[2] === '--child') {
  // The samples are bench/overhead's own `step` workload (dist/bench/workloads.js), each in a new
  // gpunix process after a full collection, as the benchmark runs them.
  const samples = Number(process.argv[3]);
  const rounds = Number(process.argv[4]);
  const { globals } = await import('webgpu');
  const { createKernel } = await import('../dist/src/index.js');
  const { stepWorkload } = await import('../dist/bench/workloads.js');
  Object.assign(globalThis, globals);
  const step = stepWorkload('step', rounds, 'the probe\'s samples');
  const kernel = await createKernel();
  for (let sample = 0; sample < samples; sample++) {
    globalThis.gc();
    console.log(`--- sample ${sample}`);
    const proc = await kernel.spawn({ name: `sample-${sample}` });
    await step.run(proc.gpu, 1);
    await proc.exit();
  }
  await kernel.shutdown();
  process.exit(0);
}

const samples = Number(process.argv[2] ?? 4);
const rounds = Number(process.argv[3] ?? 2000);
const child = spawnSync(process.execPath, ['--expose-gc', '--trace-deopt', fileURLToPath(import.meta.url), '--child', String(samples), String(rounds)], {
  encoding: 'utf8',
  maxBuffer: 256 * 1024 * 1024,
});
if (child.status !== 0) {
  process.stderr.write(child.stderr);
  throw new Error(`the samples' child exited with ${child.status}`);
}
let sample = -1;
const after = new Map();
/** Per sample from the second: a deoptimization every sample repeats costs each new process; one seen once does not. */
const perSample = new Array(samples).fill(0);
for (const line of child.stdout.split('\n')) {
  const mark = /^--- sample (\d+)/.exec(line);
  if (mark) sample = Number(mark[1]);
  const weak = /SharedFunctionInfo ([^>]*)>.*reason: weak objects/.exec(line);
  if (weak && sample >= 1) {
    after.set(weak[1], (after.get(weak[1]) ?? 0) + 1);
    perSample[sample]++;
  }
}
const NODE_OWN = /^(processImmediate|setImmediate|Immediate|ref|initAsyncResource|runMicrotask|queueMicrotask|runInAsyncScope|AsyncResource)$/;
const PARSER = /^(matchText|position|isWordChar)$/;
const groups = { gpunix: [], node: [], 'WGSL parser': [] };
for (const [name, count] of after) (NODE_OWN.test(name) ? groups.node : PARSER.test(name) ? groups['WGSL parser'] : groups.gpunix).push(`${name}${count > 1 ? ` x${count}` : ''}`);
const total = [...after.values()].reduce((a, b) => a + b, 0);
console.log(`weak-object deoptimizations after the first of ${samples} samples of ${rounds} rounds: ${total}`);
for (const [group, names] of Object.entries(groups)) console.log(`  ${group}: ${names.length ? names.join(', ') : '-'}`);
console.log(`  by sample (from the second): ${perSample.slice(1).join(', ')}`);
