// The conformance harness: each scenario is one rule of the WebGPU or WebIDL spec, run on bare
// Dawn and on a gpunix process (a fresh process of one shared kernel), each with its own WebGPU
// globals. The scenario returns an observation (plain JSON data: what a program would see); the
// test fails when gpunix's observation differs from Dawn's. A rule Dawn itself breaks is marked
// `dawnBreaks` with what the spec expects: then gpunix is held to the spec's observation instead,
// and the table in docs/vgpu.md says so. Every result is recorded for that table
// (scripts/gen-conformance-table.mjs sets CONFORMANCE_RESULTS: one JSON line per scenario run).

import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { globals as dawnGlobals } from 'webgpu';
import { createKernel, gpunixGlobals, Kernel, KernelOptions, runInProcess } from '../../src/index.js';
import { bareGpu } from '../helpers.js';

export type Side = 'dawn' | 'gpunix';

/** What a scenario is given: the side's navigator.gpu and the globals a program there would see. */
export interface Env {
  side: Side;
  gpu: GPU;
  globals: Record<string, unknown>;
  /** A fresh device on this side (its own adapter), with `descriptor`. */
  device(descriptor?: GPUDeviceDescriptor): Promise<GPUDevice>;
}

export interface Scenario {
  /** The rule, as a reader of the conformance table would want it (one line). */
  rule: string;
  /** Where the rule comes from (spec section or CTS query), for the table. */
  source: string;
  /** Observes the rule on one side; the result must be JSON data. */
  run(env: Env): Promise<unknown>;
  /** When bare Dawn breaks the rule: the observation the spec expects (gpunix must give it). */
  dawnBreaks?: { expected: unknown; why: string };
}

/** A scenario as the conformance table lists it. */
export interface Listed {
  group: string;
  rule: string;
  source: string;
}

/**
 * Every scenario that `conformance` was given in this process, in definition order. With
 * CONFORMANCE_LIST set, `conformance` only fills this (defines no tests): the table's generator
 * and test/conformanceTable.test.ts import the scenario files that way to list the rules.
 */
export const registry: Listed[] = [];

/** Runs `scenarios` as one suite named `group`, on both sides (`kernelOptions`: the gpunix kernel's options, e.g. atomSize). */
export function conformance(group: string, scenarios: Scenario[], kernelOptions: KernelOptions = {}): void {
  for (const { rule, source } of scenarios) registry.push({ group, rule, source });
  if (process.env.CONFORMANCE_LIST) return;
  describe(`conformance: ${group}`, () => {
    let kernel: Kernel;
    before(async () => {
      kernel = await createKernel(kernelOptions);
    });
    after(async () => {
      await kernel.shutdown();
    });
    for (const scenario of scenarios) {
      it(scenario.rule, async () => {
        const dawn = await observe(scenario, 'dawn', bareGpu(), dawnGlobals as Record<string, unknown>);
        const expected = scenario.dawnBreaks ? scenario.dawnBreaks.expected : dawn;
        const dawnAsSpec = scenario.dawnBreaks ? isDeepStrictEqual(dawn, scenario.dawnBreaks.expected) : true;
        const result = { group, rule: scenario.rule, source: scenario.source, dawn: dawnAsSpec ? 'pass' : `breaks: ${scenario.dawnBreaks!.why}` };
        const proc = await kernel.spawn({ name: 'conformance' });
        let gpunix: unknown;
        try {
          gpunix = await runInProcess(proc, () => observe(scenario, 'gpunix', proc.gpu, gpunixGlobals()));
        } catch (error) {
          record({ ...result, gpunix: 'FAIL' }); // it threw where Dawn observed: a difference too
          throw error;
        } finally {
          await proc.kill();
        }
        const same = isDeepStrictEqual(gpunix, expected);
        record({ ...result, gpunix: same ? 'pass' : 'FAIL' });
        assert.deepStrictEqual(gpunix, expected, `gpunix differs from ${scenario.dawnBreaks ? 'the spec' : 'bare Dawn'}`);
      });
    }
  });
}

async function observe(scenario: Scenario, side: Side, gpu: GPU, globals: Record<string, unknown>): Promise<unknown> {
  const env: Env = {
    side,
    gpu,
    globals,
    async device(descriptor) {
      const adapter = await gpu.requestAdapter();
      if (!adapter) throw new Error(`${side}: no adapter`);
      return adapter.requestDevice(descriptor);
    },
  };
  return scenario.run(env);
}

/** Appends one result line (JSON) to $CONFORMANCE_RESULTS, when set (the table's generator sets it). */
function record(result: { group: string; rule: string; source: string; dawn: string; gpunix: string }): void {
  const file = process.env.CONFORMANCE_RESULTS;
  if (file) appendFileSync(file, `${JSON.stringify(result)}\n`);
}

/**
 * What a call raised, as data: null when it returned, else the exception's name (a TypeError,
 * an OperationError...). For comparing what a program sees on both sides.
 */
export function thrown(call: () => unknown): string | null {
  try {
    call();
    return null;
  } catch (error) {
    return (error as Error)?.name ?? String(error);
  }
}

/** What a promise did: 'resolved' or the rejection's name. */
export async function settled(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (error) {
    return (error as Error)?.name ?? String(error);
  }
}

/** The error type `body` produced in a validation scope on `device`: null when none. */
export async function validationOf(device: GPUDevice, body: () => unknown): Promise<string | null> {
  device.pushErrorScope('validation');
  try {
    body();
  } catch (error) {
    await device.popErrorScope();
    return `threw ${(error as Error)?.name}`;
  }
  const error = await device.popErrorScope();
  return error ? error.constructor.name : null;
}
