// Bounded compilation: a shader module whose compilation would cost every tenant seconds or
// gigabytes (bench/compile.ts measured them) is refused before Dawn sees it, the WebGPU way: the
// program gets a module object, a GPUValidationError coded GPUNIX_E_SHADER_LIMIT in its error
// scope, the same message in getCompilationInfo(), and invalid pipelines; its neighbours never
// notice. Every real program passes with room to spare; an operator can raise the limits.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { globals } from 'webgpu';
import { chainedFunctions, constantArray, nestedExpression, privateArray, straightLine } from '../bench/shaderModules.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import { parseConfig } from '../src/daemon/config.js';
import { connect, createKernel, ErrorCodes, Kernel } from '../src/index.js';
import { DEFAULT_SHADER_LIMITS } from '../src/params.js';
import { checkShader, measureShader, SHADER_LIMIT_NAMES, type ShaderLimits } from '../src/wgsl/complexity.js';
import { corpus } from './corpus/index.js';
import * as saxpy from './corpus/saxpy.js';
import { assertSameBytes, bareResult } from './helpers.js';

const GPUValidationError = (globals as Record<string, unknown>).GPUValidationError as new (message: string) => GPUError;

/** What f_{n-1}(x) of chainedFunctions(n, 1) computes: f0(x) = 3x + 1, f_i(x) = f_{i-1}(x) + i. */
function chainValue(n: number, x: number): number {
  return (3 * x + 1 + (n * (n - 1)) / 2) >>> 0;
}

/** The storage binding and entry point of the array modules below (as bench/shaderModules.ts writes them). */
function arrayModule(decls: string, body: string): string {
  return `@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n${decls}\n@compute @workgroup_size(1) fn main(@builtin(global_invocation_id) gid: vec3u) {\n${body}\n}\n`;
}

/** `array(p, p, ...)` of `copies` references to a private array of `words` u32s: `copies` × its size per invocation. */
function arrayOfArrays(words: number, copies: number): string {
  return arrayModule(
    `var<private> p: array<u32, ${words}>;`,
    `  p[gid.x % ${words}u] = gid.x;\n  var big = array(${Array(copies).fill('p').join(', ')});\n  out[gid.x] = big[gid.x % ${copies}u][(gid.x * 7u) % ${words}u];`,
  );
}

/** `copies` locals of inferred type (`var a0 = p;`, `let a1 = p;`, ...) copying a private array of `words` u32s, indexed at run time. */
function inferredCopies(words: number, copies: number): string {
  const locals = Array.from({ length: copies }, (_, i) => `  ${i % 2 === 0 ? 'var' : 'let'} a${i} = p;`);
  const reads = Array.from({ length: copies }, (_, i) => `a${i}[(gid.x + ${i}u) % ${words}u]`);
  return arrayModule(`var<private> p: array<u32, ${words}>;`, `  p[gid.x % ${words}u] = gid.x;\n${locals.join('\n')}\n  out[gid.x] = ${reads.join(' + ')};`);
}

/** A function returning an array of `words` u32s by value, called `calls` times: one result per call. */
function arrayResults(words: number, calls: number): string {
  const sum = Array.from({ length: calls }, (_, i) => `make(gid.x + ${i}u)[gid.x % ${words}u]`).join(' + ');
  return arrayModule(`fn make(x: u32) -> array<u32, ${words}> {\n  var r: array<u32, ${words}>;\n  r[x % ${words}u] = x;\n  return r;\n}`, `  out[gid.x] = ${sum};`);
}

/** Makes `code` on `device` inside a validation scope: the module and the scope's error. */
async function createModule(device: GPUDevice, code: string, label: string): Promise<{ module: GPUShaderModule; error: GPUError | null }> {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label });
  return { module, error: await device.popErrorScope() };
}

/** Asserts the refusal the WebGPU way: the coded validation error, compilation info, invalid pipelines. */
async function assertRefused(device: GPUDevice, code: string, limit: keyof ShaderLimits, measured: number): Promise<void> {
  const { module, error } = await createModule(device, code, `too-much-${limit}`);
  assert.ok(error instanceof GPUValidationError, `a GPUValidationError, got ${error}`);
  assert.ok(error.message.startsWith(`${ErrorCodes.SHADER_LIMIT}:`), error.message);
  assert.ok(error.message.includes(`shader module "too-much-${limit}"`), error.message);
  assert.ok(error.message.includes(` is ${measured} `), `${error.message} names the measured value ${measured}`);
  assert.ok(error.message.includes(`shaderLimits.${limit}`), `${error.message} names the option`);
  const info = await module.getCompilationInfo();
  assert.deepEqual(
    [...info.messages].map((m) => [m.type, m.message]),
    [['error', error.message]],
  );
  device.pushErrorScope('validation');
  device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  assert.ok((await device.popErrorScope()) instanceof GPUValidationError, 'a pipeline from a refused module is invalid');
  await assert.rejects(device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } }), 'an async pipeline from it rejects');
}

/** Runs chainedFunctions(n) for 4 invocations and returns out[0..3]. */
async function runChain(device: GPUDevice, n: number): Promise<number[]> {
  const { module, error } = await createModule(device, chainedFunctions(n), `chain-${n}`);
  assert.equal(error, null);
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const out = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] }));
  pass.dispatchWorkgroups(4);
  pass.end();
  encoder.copyBufferToBuffer(out, 0, read, 0, 16);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const values = [...new Uint32Array(read.getMappedRange().slice(0))];
  read.unmap();
  return values;
}

describe('bounded compilation', () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await createKernel();
  });
  after(async () => {
    await kernel.shutdown();
  });

  it('a 2000-function chained module is refused with GPUNIX_E_SHADER_LIMIT while a neighbour process keeps computing exact results', async () => {
    const neighbour = await kernel.spawn({ name: 'neighbour' });
    const attacker = await kernel.spawn({ name: 'attacker' });
    try {
      const expected = await bareResult(saxpy);
      const device = await (await attacker.gpu.requestAdapter())!.requestDevice();
      const running = saxpy.run(neighbour.gpu);
      await assertRefused(device, chainedFunctions(2000), 'maxFunctions', 2001);
      assertSameBytes(await running, expected, 'the neighbour, meanwhile');
      assertSameBytes(await saxpy.run(neighbour.gpu), expected, 'the neighbour, after');
      // The refusal is a validation error, nothing more: the program goes on with a module that fits.
      assert.equal(attacker.state === 'exited', false);
      assert.deepEqual(await runChain(device, 10), [0, 1, 2, 3].map((x) => chainValue(10, x)));
    } finally {
      await attacker.exit();
      await neighbour.exit();
    }
  });

  it('refuses each expensive shape by the limit it breaks, before Dawn compiles anything', async () => {
    const proc = await kernel.spawn({ name: 'shapes' });
    try {
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      const padded = `// ${'x'.repeat(DEFAULT_SHADER_LIMITS.maxModuleBytes)}\n${chainedFunctions(2)}`;
      const cases: [string, string, keyof ShaderLimits][] = [
        ['a module over the size limit (a huge comment)', padded, 'maxModuleBytes'],
        ['an expression nested 1000 deep', nestedExpression(1000), 'maxNestingDepth'],
        ['a chain of 100 functions', chainedFunctions(100), 'maxCallDepth'],
        ['a chain of 16 functions each calling the previous twice', chainedFunctions(16, 2), 'maxInlinedCost'],
        ['4000 statements of straight-line code', straightLine(4000), 'maxInlinedCost'],
        ['a 64 KiB function-scope array', privateArray(16_384), 'maxPrivateArrayBytes'],
        ['a 16 KiB constant array indexed at run time', constantArray(4096), 'maxPrivateArrayBytes'],
        ['array(p, p, ...) of 8 references to a 4 KiB private array', arrayOfArrays(1024, 8), 'maxPrivateArrayBytes'],
        ['8 copies of an 8 KiB private array into locals of inferred type', inferredCopies(2048, 8), 'maxPrivateArrayBytes'],
        ['a function returning a 4 KiB array, called 8 times', arrayResults(1024, 8), 'maxPrivateArrayBytes'],
      ];
      // A module the WGSL parser here rejects is measured from its tokens: nothing unmeasured reaches Dawn.
      const unparsed = `${chainedFunctions(100)}\nfn broken( {`;
      assert.equal(measureShader(unparsed).tree, false);
      cases.push(['a chain of 100 functions with a syntax error', unparsed, 'maxCallDepth']);
      for (const [what, code, limit] of cases) {
        const cost = measureShader(code);
        const measured = { maxModuleBytes: cost.bytes, maxNestingDepth: cost.nestingDepth, maxFunctions: cost.functions, maxCallDepth: cost.callDepth, maxInlinedCost: cost.inlinedCost, maxPrivateArrayBytes: cost.privateArrayBytes }[limit];
        assert.equal(checkShader(code, DEFAULT_SHADER_LIMITS)?.limit, limit, what);
        await assertRefused(device, code, limit, measured);
      }
      // A small malformed module still gets Dawn's own verdict.
      const { error } = await createModule(device, 'fn broken( {', 'broken');
      assert.ok(error instanceof GPUValidationError);
      assert.ok(!error.message.startsWith('GPUNIX_E_'), error.message);
    } finally {
      await proc.exit();
    }
  });

  it('counts every per-invocation array by its type: inferred locals, array constructors, results per call', () => {
    const bytes = (code: string): number => measureShader(code).privateArrayBytes;
    // Each reference in array(p, ...) is a whole p (4 KiB), not a 4-byte element: 4 KiB for p, 32 KiB for big.
    assert.equal(bytes(arrayOfArrays(1024, 8)), 9 * 4096);
    // Each inferred-type copy of p holds all of it.
    assert.equal(bytes(inferredCopies(2048, 8)), 9 * 8192);
    // p alone (8 KiB, the default limit) fits; one copy of it does not.
    assert.equal(checkShader(inferredCopies(2048, 0), DEFAULT_SHADER_LIMITS), null);
    assert.equal(checkShader(inferredCopies(2048, 1), DEFAULT_SHADER_LIMITS)?.limit, 'maxPrivateArrayBytes');
    // The local r, and a result per call site.
    assert.equal(bytes(arrayResults(1024, 8)), 4096 + 8 * 4096);
    // Through structs, nested arrays, indexing and pointers: s 4100, t 4096, u 4100, w 256, v 4100.
    const nested = arrayModule(
      'struct S { a: array<array<u32, 64>, 16>, n: u32 }\nvar<private> s: S;',
      '  var t = s.a;\n  let u = s;\n  var w = t[1];\n  var v = *(&s);\n  let x = w[gid.x % 64u];\n  out[gid.x] = t[gid.x % 16u][gid.x % 64u] + u.n + v.n + x;',
    );
    assert.equal(bytes(nested), 4100 + 4096 + 4100 + 256 + 4100);
    // A workgroup array is not per invocation, but a copy of it into a local is (and is not waved through by the tokens).
    const tile = arrayModule('var<workgroup> tile: array<u32, 4096>;', '  var c = tile;\n  out[gid.x] = c[gid.x % 4096u];');
    assert.equal(checkShader(tile, DEFAULT_SHADER_LIMITS)?.measured, 16384);
    // Unparsed, the tokens count each whole array an inferred-type initializer names.
    assert.equal(measureShader(`${inferredCopies(2048, 8)}\nfn broken( {`).privateArrayBytes, 9 * 8192);
    assert.equal(measureShader(`${arrayOfArrays(1024, 8)}\nfn broken( {`).privateArrayBytes, 9 * 4096);
  });

  it('every corpus program passes the limits with a tenfold margin', async () => {
    const tenth = Object.fromEntries(SHADER_LIMIT_NAMES.map((name) => [name, Math.ceil(DEFAULT_SHADER_LIMITS[name] / 10)]));
    const strict = await createKernel({ shaderLimits: tenth });
    try {
      for (const program of corpus) {
        const proc = await strict.spawn({ name: program.name });
        try {
          assertSameBytes(await program.run(proc.gpu), await bareResult(program), program.name);
        } finally {
          await proc.exit();
        }
      }
    } finally {
      await strict.shutdown();
    }
  });

  it('a raised limit lets a big module through, and it computes exactly', async () => {
    const n = 150;
    assert.equal(checkShader(chainedFunctions(n), DEFAULT_SHADER_LIMITS)?.limit, 'maxCallDepth');
    const raised = await createKernel({ shaderLimits: { maxCallDepth: 200, maxInlinedCost: 100_000 } });
    try {
      const proc = await raised.spawn({ name: 'big' });
      const device = await (await proc.gpu.requestAdapter())!.requestDevice();
      assert.deepEqual(await runChain(device, n), [0, 1, 2, 3].map((x) => chainValue(n, x)));
      await proc.exit();
    } finally {
      await raised.shutdown();
    }
  });

  it('bad shaderLimits values are refused with GPUNIX_E_BAD_OPTION, and in the daemon configuration with the field named', async () => {
    const bad: unknown[] = [
      { maxFunctions: 0 },
      { maxInlinedCost: -1 },
      { maxCallDepth: 1.5 },
      { maxModuleBytes: '1M' },
      { maxNestingDepth: Number.POSITIVE_INFINITY },
      { maxPrivateArrayBytes: null },
      { maxShaders: 3 },
      'strict',
      null,
    ];
    for (const shaderLimits of bad) {
      await assert.rejects(createKernel({ shaderLimits: shaderLimits as ShaderLimits }), (e: Error & { code?: string }) => {
        assert.equal(e.code, ErrorCodes.BAD_OPTION, `${JSON.stringify(shaderLimits)}: ${e.message}`);
        assert.match(e.message, /shaderLimits/);
        return true;
      });
    }
    assert.throws(
      () => parseConfig({ kernel: { shaderLimits: { maxFunctions: 0 } } }),
      (e: Error & { code?: string }) => e.code === ErrorCodes.BAD_CONFIG && e.message.includes('kernel.shaderLimits.maxFunctions'),
    );
    assert.throws(
      () => parseConfig({ kernel: { shaderLimits: { maxShaders: 3 } } }),
      (e: Error & { code?: string }) => e.code === ErrorCodes.BAD_CONFIG && e.message.includes('kernel.shaderLimits'),
    );
    assert.deepEqual(parseConfig({ kernel: { shaderLimits: { maxFunctions: 42 } } }).kernel.shaderLimits, { maxFunctions: 42 });
  });

  describe('through gpunixd', () => {
    let dir: string;
    let daemon: Daemon;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'gpunix-shader-limits-'));
      daemon = await startDaemon({ socket: join(dir, 'd.sock'), log: { level: 'silent' }, anonymousTenant: 'default', kernel: { shaderLimits: { maxFunctions: 100 } } });
    });
    after(async () => {
      await daemon.close('immediate');
      rmSync(dir, { recursive: true, force: true });
    });

    it('a remote program gets the same refusal, under the daemon\'s configured limit, and its neighbour keeps computing exact results', async () => {
      const socket = join(dir, 'd.sock');
      const [attacker, neighbour] = await Promise.all([connect({ socket, name: 'attacker' }), connect({ socket, name: 'neighbour' })]);
      try {
        const device = await (await attacker.gpu.requestAdapter())!.requestDevice();
        const running = saxpy.run(neighbour.gpu);
        await assertRefused(device, chainedFunctions(101), 'maxFunctions', 102);
        assertSameBytes(await running, await bareResult(saxpy), 'the remote neighbour');
      } finally {
        await attacker.exit();
        await neighbour.exit();
      }
    });
  });
});
