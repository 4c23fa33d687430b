// How much JavaScript heap does one round of a benchmark workload allocate, under bare Dawn and
// under gpunix? Garbage per call is paid twice: allocating it, and the scavenges it brings on,
// each of which copies every object still alive, Dawn's wrappers of the encoders and command
// buffers of every round since the last one included (dawn.node holds them through weak handles,
// which a scavenge keeps: a few ms per scavenge; docs/benchmarks.md, "issue 17 eleventh pass").
//
//   node scripts/probe-allocation.mjs [workload ...]     (default: bandwidth-256B step; also bandwidth-4MiB, dispatch-loop)
//
// Runs bench/overhead's own workloads (dist/bench/workloads.js) in a child Node whose young
// generation is large enough that no collection runs during a sample, twice per side at two
// sizes, so that what a sample allocates once (its device, buffers, pipeline) cancels out:
// bytes per round = (heap used after the long sample - after the short one) / (rounds between).
// A collection during a sample spoils its figure; the probe says so instead of printing one.
// The figures move from pair to pair by a fraction (each is printed): a round allocates for every
// Dawn poll made while it waits (dawn.node's own polls and the kernel's event pump's alike, some
// hundreds of bytes each), and how many polls a wait takes depends on the machine's moment.
// At issue 17's eleventh pass (lavapipe): bandwidth-256B 5.2-6.2 KB a round under gpunix against
// 1.9-3.3 KB under bare Dawn (6.6-8.0 KB on the commit before it).

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const WORKLOADS = ['bandwidth-256B', 'step', 'bandwidth-4MiB', 'dispatch-loop'];
/** Untimed samples per side before measuring, and the short/long pairs measured (each gives a figure). */
const WARM_SAMPLES = 4;
const PAIRS = 2;

if (process.argv[2] === '--child') {
  const names = process.argv.slice(3);
  const { getHeapStatistics } = await import('node:v8');
  const { PerformanceObserver } = await import('node:perf_hooks');
  const { create, globals } = await import('webgpu');
  const { createKernel, bypassEventPump } = await import('../dist/src/index.js');
  const { bandwidthWorkload, countingDispatchLoop, stepWorkload } = await import('../dist/bench/workloads.js');
  Object.assign(globalThis, globals);
  // As bench/overhead.ts defines them (rounds at scale 1).
  const made = {
    'bandwidth-256B': () => bandwidthWorkload('bandwidth-256B', 5000, 256, ''),
    'bandwidth-4MiB': () => bandwidthWorkload('bandwidth-4MiB', 1000, 4 * 1024 * 1024, ''),
    step: () => stepWorkload('step', 2000, ''),
  };
  let collections = 0;
  new PerformanceObserver((list) => {
    collections += list.getEntries().length;
  }).observe({ entryTypes: ['gc'] });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 10));
  const bare = create([]);
  const kernel = await createKernel();
  /** Heap bytes one sample of `w` at `scale` leaves allocated, and whether a collection ran during it. */
  async function allocated(w, side, scale) {
    const proc = side === 'gpunix' ? await kernel.spawn({ name: `probe-${w.name}` }) : null;
    globalThis.gc();
    await settle();
    const before = getHeapStatistics().used_heap_size;
    const collectionsBefore = collections;
    if (proc) await w.run(proc.gpu, scale);
    else {
      bypassEventPump(true);
      try {
        await w.run(bare, scale);
      } finally {
        bypassEventPump(false);
      }
    }
    const bytes = getHeapStatistics().used_heap_size - before;
    await settle();
    if (proc) await proc.exit();
    return { bytes, collected: collections !== collectionsBefore };
  }
  /**
   * dispatch-loop (bench/overhead's call path alone): the loop makes no await, so no Dawn poll
   * allocates during it and one warm device per side measures it exactly: bytes per iteration.
   */
  async function dispatchLoopLine() {
    const line = [];
    for (const side of ['bare', 'gpunix']) {
      const proc = side === 'gpunix' ? await kernel.spawn({ name: 'probe-dispatch-loop' }) : null;
      bypassEventPump(!proc);
      const device = await (await (proc ? proc.gpu : bare).requestAdapter()).requestDevice();
      const { loop } = countingDispatchLoop(device);
      const figures = [];
      for (let i = 0; i < WARM_SAMPLES + PAIRS; i++) {
        loop(4000);
        await device.queue.onSubmittedWorkDone();
        globalThis.gc();
        await settle();
        const before = getHeapStatistics().used_heap_size;
        const collectionsBefore = collections;
        loop(4000);
        const bytes = getHeapStatistics().used_heap_size - before;
        await device.queue.onSubmittedWorkDone();
        if (i >= WARM_SAMPLES) figures.push(collections !== collectionsBefore ? 'a collection ran during a sample: no figure' : `${(bytes / 4000).toFixed(0)} B`);
      }
      device.destroy();
      bypassEventPump(false);
      if (proc) await proc.exit();
      line.push(`${side} ${figures.join(' / ')}`);
    }
    console.log(`${'dispatch-loop'.padEnd(15)} per iteration: ${line.join(', ')}`);
  }
  for (const name of names) {
    if (name === 'dispatch-loop') {
      await dispatchLoopLine();
      continue;
    }
    const w = made[name]();
    const rounds = name === 'bandwidth-256B' ? 5000 : name === 'step' ? 2000 : 1000;
    const [short, long] = name === 'bandwidth-4MiB' ? [0.25, 0.75] : [0.2, 0.6];
    const line = [];
    const between = Math.round(rounds * long) - Math.round(rounds * short);
    for (const side of ['bare', 'gpunix']) {
      // Warm first, as a benchmark's later samples are: the call path optimized, its feedback settled
      // (a cold round allocates twice what a warm one does).
      for (let i = 0; i < WARM_SAMPLES; i++) await allocated(w, side, 1);
      const figures = [];
      for (let i = 0; i < PAIRS; i++) {
        const a = await allocated(w, side, short);
        const b = await allocated(w, side, long);
        figures.push(a.collected || b.collected ? 'a collection ran during a sample: no figure' : `${((b.bytes - a.bytes) / between).toFixed(0)} B`);
      }
      line.push(`${side} ${figures.join(' / ')}`);
    }
    console.log(`${name.padEnd(15)} per round: ${line.join(', ')}`);
  }
  await kernel.shutdown();
  process.exit(0);
}

const names = process.argv.length > 2 ? process.argv.slice(2) : ['bandwidth-256B', 'step'];
for (const name of names) {
  if (!WORKLOADS.includes(name)) {
    console.error(`probe-allocation: unknown workload '${name}' (one of ${WORKLOADS.join(', ')})`);
    process.exit(2);
  }
}
// A young generation of 256 MB a semi-space: a sample's garbage fits, so none is collected mid-sample.
const child = spawnSync(
  process.execPath,
  ['--expose-gc', '--min-semi-space-size=256', '--max-semi-space-size=256', fileURLToPath(import.meta.url), '--child', ...names],
  { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
);
process.stdout.write(child.stdout);
if (child.status !== 0) {
  process.stderr.write(child.stderr);
  process.exit(1);
}
