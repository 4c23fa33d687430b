// The corpus: WebGPU compute programs that gpunix must run byte-identically to bare Dawn.
// Each program requests its own adapter and device from the `GPU` it is given.

import * as asyncPipeline from './asyncPipeline.js';
import type { CorpusProgram } from './common.js';
import * as copies from './copies.js';
import * as dynamicOffsets from './dynamicOffsets.js';
import * as grid2d from './grid2d.js';
import * as grid3d from './grid3d.js';
import * as histogram from './histogram.js';
import * as indirect from './indirect.js';
import * as reduction from './reduction.js';
import * as saxpy from './saxpy.js';
import * as timestamps from './timestamps.js';

export type { CorpusProgram } from './common.js';

export const corpus: readonly CorpusProgram[] = [
  saxpy,
  grid2d,
  grid3d,
  reduction,
  histogram,
  dynamicOffsets,
  indirect,
  copies,
  timestamps,
  asyncPipeline,
];
