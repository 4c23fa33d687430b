// How often does TurboFan compile gpunix's call path again during bench/overhead? Each sample of
// the benchmark runs in a new gpunix process after a full collection; code that a collection
// throws away (a closure's, whose kind no live closure has any more; code that checked an object
// shape the collection freed) is run in the interpreter again and compiled anew on V8's helper
// threads, which on a 2-vCPU machine compete with a CPU device (lavapipe) for the second core.
//
//   node scripts/probe-reoptimizations.mjs [reps] [workload,...]     (defaults 5 and all workloads)
//
// Runs dist/bench/overhead.js in a child Node under --perf-basic-prof, whose map file names every
// optimized function V8 compiled by file, line and column (anonymous ones included), and counts
// the optimized compilations of each of gpunix's functions (dist/src). A function compiled once
// per workload is expected (a workload's calls reach branches another's did not); one compiled in
// most gpunix samples is code the kernel keeps losing between processes. Prints those compiled at
// least `threshold` times (default: half the gpunix samples), most first, with the sample count.
// Issue 17's thirteenth pass: a run's settle and the map path's promise executor and reaction were
// compiled in 17, 12 and 17 of 21 samples (bandwidth-256B, bandwidth-4MiB, step), none after.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const reps = Number(process.argv[2] ?? 5);
const only = process.argv[3];
if (!Number.isInteger(reps) || reps < 1) throw new Error(`reps must be a positive integer, got ${process.argv[2]}`);
const root = fileURLToPath(new URL('..', import.meta.url));
const bench = fileURLToPath(new URL('../dist/bench/overhead.js', import.meta.url));
if (!existsSync(bench)) throw new Error('dist/bench/overhead.js is missing: build first (npx tsc -p .)');

const args = ['--perf-basic-prof', bench, '--reps', String(reps)];
if (only) args.push('--only', only);
const child = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
if (child.status !== 0) {
  process.stderr.write(child.stderr);
  throw new Error(`the benchmark's child exited with ${child.status}`);
}
const result = JSON.parse(child.stdout);
const workloads = Object.keys(result.workloads ?? {}).length || (only ? only.split(',').length : 1);
// One warm-up sample per workload, then `reps` (overhead.ts's method).
const samples = workloads * (reps + 1);
const mapFile = `/tmp/perf-${child.pid}.map`;
if (!existsSync(mapFile)) throw new Error(`${mapFile} is missing: --perf-basic-prof wrote no map`);
const counts = new Map();
for (const line of readFileSync(mapFile, 'utf8').split('\n')) {
  // "<address> <size> JS:*<name> <url>:<line>:<column>": '*' marks optimized (TurboFan) code.
  const optimized = / JS:\*(\S*) (\S+)$/.exec(line);
  if (!optimized || !optimized[2].includes('/dist/src/')) continue;
  const where = `${optimized[1] || '(anonymous)'} ${optimized[2].replace(`file://${root}`, '')}`;
  counts.set(where, (counts.get(where) ?? 0) + 1);
}
rmSync(mapFile, { force: true });
const threshold = Number(process.env.THRESHOLD ?? Math.ceil(samples / 2));
const often = [...counts].filter(([, n]) => n >= threshold).sort((a, b) => b[1] - a[1]);
console.log(`gpunix functions compiled by TurboFan at least ${threshold} times in ${samples} gpunix samples (${workloads} workloads, ${reps} reps and a warm-up each): ${often.length}`);
for (const [where, n] of often) console.log(`  ${String(n).padStart(3)}  ${where}`);
