// The corpus scenarios: every corpus program gives byte-identical results on bare Dawn and as a
// gpunix process, through either execution path (the checked command buffer or the kernel's
// re-encoding of its record), alone or with all the others running at once; and the kernel
// accounts for the work and releases everything when the processes exit.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKernel, Kernel } from '../src/index.js';
import { corpus, CorpusProgram } from './corpus/index.js';
import * as indirect from './corpus/indirect.js';
import { assertSameBytes, bareResult as bare, runnableOnSuiteDevice, skipIfLacking } from './helpers.js';

/** Runs the program as a new gpunix process of `kernel` and ends the process normally. */
async function asProcess(kernel: Kernel, program: CorpusProgram): Promise<Uint8Array> {
  const proc = await kernel.spawn({ name: program.name });
  try {
    return await program.run(proc.gpu);
  } finally {
    assert.deepEqual(await proc.exit(), { code: 0, reason: 'normal' });
  }
}

function assertNotAllZero(result: Uint8Array, program: string): void {
  assert.ok(result.byteLength > 0 && result.some((b) => b !== 0), `${program}: result is all zeros`);
}

function assertNothingHeld(kernel: Kernel): void {
  const stats = kernel.stats();
  assert.equal(stats.liveObjects.total, 0, `live objects left: ${JSON.stringify(stats.liveObjects.byKind)}`);
  assert.equal(stats.bytesAllocated, 0);
}

describe('the corpus', () => {
  it('has at least nine programs with distinct names', () => {
    assert.ok(corpus.length >= 9);
    assert.equal(new Set(corpus.map((p) => p.name)).size, corpus.length);
  });

  for (const [label, options] of [
    ['a gpunix process', {}],
    ['a gpunix process whose command buffers the kernel re-encodes', { reencodeCommandBuffers: true }],
    ['a gpunix process whose dispatches run as one-workgroup atoms', { atomSize: 1 }],
    ['a gpunix process whose dispatches run as atoms of 5 workgroups', { atomSize: 5 }],
    ['a gpunix process that never splits dispatches', { atomize: false }],
  ] as const) {
    describe(`runs byte-identically to bare Dawn as ${label}`, () => {
      let kernel: Kernel;
      before(async () => {
        kernel = await createKernel(options);
      });
      after(async () => {
        await kernel.shutdown();
      });

      for (const program of corpus) {
        it(program.name, async (t) => {
          if (await skipIfLacking(t, program.needs)) return;
          const expected = await bare(program);
          assertNotAllZero(expected, program.name);
          const actual = await asProcess(kernel, program);
          assertSameBytes(actual, expected, program.name);
          assertNothingHeld(kernel);
        });
      }

      if ('atomSize' in options) {
        it('really ran the dispatches as atoms of that size', () => {
          const records = kernel.ps();
          const atoms = records.reduce((sum, p) => sum + p.accounting.atomsRun, 0);
          const dispatches = records.reduce((sum, p) => sum + p.accounting.dispatches, 0);
          assert.ok(atoms > dispatches, `${atoms} atoms for ${dispatches} dispatches`);
          const atomEvents = kernel.trace().traceEvents.filter((e) => e.ph === 'X' && (e.args as { size?: number[] })?.size);
          assert.ok(atomEvents.length > 0);
          for (const event of atomEvents) {
            const size = (event.args as { size: number[] }).size;
            assert.ok(size[0] * size[1] * size[2] <= options.atomSize, `atom of ${size.join('x')} workgroups`);
          }
        });
      }
      if ('atomize' in options) {
        it('ran no atoms', () => {
          assert.equal(kernel.ps().reduce((sum, p) => sum + p.accounting.atomsRun, 0), 0);
        });
      }
    });
  }

  for (const [label, options] of [
    ['', {}],
    [' that re-encodes command buffers', { reencodeCommandBuffers: true }],
    [' that runs every dispatch as atoms of 3 workgroups', { atomSize: 3 }],
  ] as const) {
    describe(`runs every program at once as separate processes of one kernel${label}`, () => {
      let kernel: Kernel;
      before(async () => {
        kernel = await createKernel(options);
      });
      after(async () => {
        await kernel.shutdown();
      });

      it(`${corpus.length} concurrent processes each match their bare result, and release everything on exit`, async () => {
        // On a device that lacks what a program needs, the others (that program is skipped by name above).
        const programs = await runnableOnSuiteDevice(corpus);
        const expected = await Promise.all(programs.map((program) => bare(program)));
        const procs = await Promise.all(programs.map((program) => kernel.spawn({ name: program.name })));
        const actual = await Promise.all(programs.map((program, i) => program.run(procs[i].gpu)));
        const live = kernel.ps().filter((row) => row.state !== 'exited');
        assert.equal(live.length, programs.length, 'every process is alive until it exits');
        const statuses = await Promise.all(procs.map((proc) => proc.exit()));
        for (const status of statuses) assert.deepEqual(status, { code: 0, reason: 'normal' });
        programs.forEach((program, i) => {
          assertNotAllZero(actual[i], program.name);
          assertSameBytes(actual[i], expected[i], program.name);
        });
        assertNothingHeld(kernel);
      });
    });
  }

  describe('one process', () => {
    let kernel: Kernel;
    before(async () => {
      kernel = await createKernel();
    });
    after(async () => {
      await kernel.shutdown();
    });

    it('runs the whole corpus in turn, one device after another, with bare results', async () => {
      const proc = await kernel.spawn({ name: 'whole-corpus' });
      const programs = await runnableOnSuiteDevice(corpus);
      for (const program of programs) assertSameBytes(await program.run(proc.gpu), await bare(program), program.name);
      assert.deepEqual(await proc.exit(), { code: 0, reason: 'normal' });
      const [row] = kernel.ps().filter((p) => p.pid === proc.pid);
      assert.ok(row.accounting.dispatches >= programs.length);
      assert.ok(row.accounting.gpuTimeNs > 0);
      assertNothingHeld(kernel);
    });
  });

  describe('accounting', () => {
    let kernel: Kernel;
    before(async () => {
      kernel = await createKernel();
    });
    after(async () => {
      await kernel.shutdown();
    });

    it('ps shows the dispatches, submits, buffer writes and GPU time of a process that ran a program', async () => {
      const proc = await kernel.spawn({ name: 'accounted', priority: 'batch' });
      const result = await indirect.run(proc.gpu);
      assertSameBytes(result, await bare(indirect), indirect.name);
      await proc.exit();
      const [row] = kernel.ps().filter((p) => p.pid === proc.pid);
      assert.equal(row.name, 'accounted');
      assert.equal(row.state, 'exited');
      // The program: one direct dispatch (the planner) and two indirect ones, in two submits
      // (work, readback), after three writeBuffer calls.
      assert.equal(row.accounting.dispatches, 1);
      assert.equal(row.accounting.indirectDispatches, 2);
      assert.equal(row.accounting.submits, 2);
      assert.equal(row.accounting.bufferWrites, 3);
      assert.ok(row.accounting.gpuTimeNs > 0, 'GPU time is measured');
      assert.ok(row.accounting.peakBytesAllocated > 0);
      assert.equal(row.accounting.bytesAllocated, 0);
      assertNothingHeld(kernel);
    });
  });
});
