// What a submit asks of a compute pass's commands, found once per pass record.
//
// Every submit asks three things of each pass it carries: whether each buffer and query set it
// uses can be submitted now (submission.ts submittable), whether any dispatch is worth splitting
// (worthSplitting), and which pipelines it runs (summarizePipelines). Each walked every command,
// so a pass of a hundred dispatches was walked three hundred commands' worth per submit. The
// facts are found in one walk and kept on the pass's record (RecordedCommand's `facts`); a loop
// that encodes the same pass alone in its encoder shares one record (commandEncoder.ts
// loneRecordOf), so its submits find them made. The facts are what the commands name, never the
// state of those objects (a buffer's mapping, a pipeline's atomized twin, its cost model): that
// is read at each submit, as before.
//
// Kept on the record rather than in a map beside it: the record is what a submit holds, it lives
// exactly as long as what the facts name, and a lookup costs nothing.

import { Resources, type PassCommand } from './commandBuffer.js';
import { VirtualComputePipeline } from './computePipeline.js';
import type { VirtualObject } from './object.js';
import { keepShape } from '../keptShapes.js';

export class PassFacts {
  /** The objects its commands use besides pipelines (bind groups' bindings in their place: buffers, query sets), each once. */
  readonly resources: readonly VirtualObject[];
  /** The compute pipelines it sets, each once, in first-set order. */
  readonly pipelines: readonly VirtualComputePipeline[];
  /** For each of `pipelines` (same index), the most workgroups one of its direct dispatches asks for (0: none). */
  readonly widestDispatch: readonly number[];

  constructor(resources: VirtualObject[], pipelines: VirtualComputePipeline[], widestDispatch: number[]) {
    this.resources = resources;
    this.pipelines = pipelines;
    this.widestDispatch = widestDispatch;
  }
}
// Most facts live as long as their pass's list: one kept keeps the shape (src/keptShapes.ts says why).
keepShape(new PassFacts([], [], []));

/** A compute pass's record: its facts are kept in it (null until first asked, unless made with them). */
interface PassRecord {
  readonly commands: readonly PassCommand[];
  facts: PassFacts | null;
}

/** The facts of a pass's record: found at its first submit and kept in it (a frozen record is made with them). */
export function passFacts(record: PassRecord): PassFacts {
  const known = record.facts;
  if (known !== null) return known;
  const facts = findFacts(record.commands);
  if (!Object.isFrozen(record)) record.facts = facts;
  return facts;
}

/** One walk over `commands` (indexed loops: see submission.ts submittable). */
export function findFacts(commands: readonly PassCommand[]): PassFacts {
  const resources = new Resources();
  const pipelines: VirtualComputePipeline[] = [];
  const widest: number[] = [];
  // The index in `pipelines` of the pipeline the pass has set (-1: none, or not a compute pipeline of gpunix's).
  let current = -1;
  for (let p = 0; p < commands.length; p++) {
    const { op, args } = commands[p];
    if (op === 'setPipeline') {
      const pipeline = args[0];
      if (!(pipeline instanceof VirtualComputePipeline)) {
        current = -1;
        continue;
      }
      current = pipelines.indexOf(pipeline);
      if (current < 0) {
        current = pipelines.push(pipeline) - 1;
        widest.push(0);
      }
      continue;
    }
    if (op === 'dispatchWorkgroups') {
      if (current < 0) continue;
      const workgroups = (args[0] as number) * ((args[1] as number | undefined) ?? 1) * ((args[2] as number | undefined) ?? 1);
      if (workgroups > widest[current]) widest[current] = workgroups;
      continue;
    }
    // Its bind groups' bindings, buffers, query sets (commandBuffer.ts Resources: a Set beside the list once long).
    for (let a = 0; a < args.length; a++) resources.add(args[a]);
  }
  return new PassFacts(resources.list, pipelines, widest);
}
