// What a shader costs to compile, on bare Dawn: createShaderModule and createComputePipeline
// (Tint, then the driver) for the pathological modules of bench/shaderModules.ts, each in a
// fresh child process so its peak memory is its own. Also the time gpunix's own static check
// (src/wgsl/complexity.ts: the wesl parse and the cost walk) takes on the same text, and what
// the check measures. These numbers chose the defaults of the kernel's `shaderLimits`
// (docs/configuration.md).
//
//   node dist/bench/compile.js [--only chain1:500,chain2:16,...] [--timeout S]
//
// JSON on stdout, a table on stderr. A case past --timeout (default 60 s) is reported as such.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { create, globals } from 'webgpu';
import { measureShader } from '../src/wgsl/complexity.js';
import { machine, runBenchmark } from './machine.js';
import { GENERATORS } from './shaderModules.js';

Object.assign(globalThis, globals);

const DEFAULT_CASES = [
  'chain1:60', 'chain1:150', 'chain1:300', 'chain1:1000', 'chain1:2000',
  'chain2:10', 'chain2:12', 'chain2:14', 'chain2:16',
  'straight:1000', 'straight:3500', 'straight:10000', 'straight:50000',
  'wide:500', 'wide:2000',
  'nestedIf:100', 'nestedIf:200', 'nestedExpr:1000',
  'privateArray:1024', 'privateArray:2048', 'privateArray:4096', 'privateArray:16384',
  'modulePrivate:8192', 'constIndexed:8192', 'constArray:1000', 'constArray:4096', 'workgroupArray:4096',
  'constLoop:1000',
];

interface Result {
  case: string;
  bytes: number;
  /** What complexity.ts measures (null: it refused to parse). */
  measured: Record<string, number> | { error: string };
  checkMs: number;
  moduleMs?: number;
  pipelineMs?: number;
  /** Peak RSS growth over the process after the device was opened (MiB). */
  peakRssMiB?: number;
  error?: string;
  timedOut?: boolean;
}

async function child(spec: string): Promise<void> {
  const [name, n] = spec.split(':');
  const code = GENERATORS[name](Number(n));
  const t0 = performance.now();
  let measured: Result['measured'];
  try {
    const { tree, ...m } = measureShader(code);
    measured = { ...m, tree: tree ? 1 : 0 };
  } catch (e) {
    measured = { error: String(e) };
  }
  const checkMs = performance.now() - t0;
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  const device = await adapter!.requestDevice();
  const base = process.resourceUsage().maxRSS;
  device.pushErrorScope('validation');
  const t1 = performance.now();
  const module = device.createShaderModule({ code });
  const t2 = performance.now();
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const t3 = performance.now();
  const error = await device.popErrorScope();
  const peak = process.resourceUsage().maxRSS;
  void pipeline;
  const result: Result = {
    case: spec,
    bytes: code.length,
    measured,
    checkMs,
    moduleMs: t2 - t1,
    pipelineMs: t3 - t2,
    peakRssMiB: (peak - base) / 1024,
    ...(error ? { error: error.message.split('\n')[0].slice(0, 160) } : {}),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  void gpu;
  process.exit(0);
}

function runChild(spec: string, timeoutS: number): Promise<Result> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', spec], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutS * 1000);
    proc.on('exit', (codeOrNull, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop();
      if (line && line.startsWith('{')) resolve(JSON.parse(line));
      else resolve({ case: spec, bytes: 0, measured: { error: 'n/a' }, checkMs: 0, timedOut: signal === 'SIGKILL', error: `child ended ${signal ?? codeOrNull}` });
    });
  });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return child(args[1]);
  const only = args.indexOf('--only');
  const cases = only >= 0 ? args[only + 1].split(',') : DEFAULT_CASES;
  const timeoutAt = args.indexOf('--timeout');
  const timeoutS = timeoutAt >= 0 ? Number(args[timeoutAt + 1]) : 60;
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  const results: Result[] = [];
  for (const spec of cases) {
    const r = await runChild(spec, timeoutS);
    results.push(r);
    const m = r.measured as Record<string, number>;
    process.stderr.write(
      `${spec.padEnd(22)} ${String(r.bytes).padStart(8)} B  check ${r.checkMs.toFixed(1).padStart(7)} ms  module ${(r.moduleMs ?? NaN).toFixed(1).padStart(8)} ms  pipeline ${(r.pipelineMs ?? NaN).toFixed(1).padStart(9)} ms  peak +${(r.peakRssMiB ?? NaN).toFixed(0).padStart(5)} MiB  ` +
        `fns ${m.functions ?? "-"} depth ${m.callDepth ?? "-"} inlined ${m.inlinedCost ?? "-"} arrays ${m.privateArrayBytes ?? "-"} nest ${m.nestingDepth ?? "-"}${r.timedOut ? '  TIMED OUT' : ''}${r.error ? `  error: ${r.error}` : ''}${'error' in r.measured ? `  check: ${String(r.measured.error).slice(0, 80)}` : ''}\n`,
    );
  }
  process.stdout.write(JSON.stringify({ benchmark: 'gpunix-shader-compile', ...machine(adapter!), results }, null, 2) + '\n');
}

runBenchmark(main);
