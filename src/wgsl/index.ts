// WGSL parsing, reflection and rewriting (see DESIGN.md, "Fine-grained preemption by kernel atomization").
export { atomize, atomParams, ATOM_RECORD_SIZE } from './atomize.js';
export type { AtomizedEntry, AtomizeOptions, AtomMode, WholeCause } from './atomize.js';
export { boundLoops, MAX_LOOP_BUDGET, type BoundedModule, type BoundOptions, type Budget, type WatchdogMode } from './watchdog.js';
