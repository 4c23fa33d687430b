// The suite's device-facing scenarios on the other Dawn backends: after the main suite (on the
// platform's own backend), `npm test` runs these test files again with GPUNIX_BACKENDS=opengles
// and then GPUNIX_BACKENDS=opengl. Every kernel a test opens reads $GPUNIX_BACKENDS, and the bare
// Dawn baseline (test/helpers.ts) opens the same backend, so every bare-vs-gpunix comparison is
// like for like; a case that needs what a compatibility-mode device lacks is skipped by name.
//
//   node scripts/test-backends.mjs [backend ...]      (default: opengles opengl)
//
// $GPUNIX_TEST_BACKENDS (comma list) overrides the default list; `none` runs nothing. A backend
// that opens no adapter fails the run on Linux (scripts/setup.sh installs Mesa's GL libraries:
// CI must cover every backend) and is skipped, with a line saying so, elsewhere. Needs `tsc -p .`
// first (it runs dist/). Exit code: 0 when every backend's run passed.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The device-facing scenarios: the corpus programs (byte-identical to bare Dawn on the same
 * backend), the atomizer, preemption and the scheduler, eviction, checkpoint/restore, migration,
 * isolation, memory and process lifetimes. Chosen to take about a minute per backend on a 2-core
 * machine (75-90 s each measured while heavily loaded); the rest of the suite (CLI, daemon,
 * protocol, spill files, ...) exercises host-side code that does not depend on the backend beneath.
 */
export const BACKEND_SUITE = ['corpus', 'atomizer', 'kernel', 'scheduler', 'eviction', 'checkpoint', 'migration', 'isolation', 'memory', 'lifecycle', 'watchdogSpentFlag'];

const DEFAULT_BACKENDS = ['opengles', 'opengl'];

function chosenBackends() {
  const args = process.argv.slice(2);
  if (args.length > 0) return args;
  const env = process.env.GPUNIX_TEST_BACKENDS;
  if (env === undefined || env.trim() === '') return DEFAULT_BACKENDS;
  if (env.trim() === 'none') return [];
  return env.split(',').map((s) => s.trim()).filter(Boolean);
}

/** Whether `backend` opens an adapter here (in a child: Dawn instances live as long as their process). */
function probe(backend) {
  const code = `
    const { findAdapters } = await import(${JSON.stringify(join(root, 'dist/src/device/adapters.js'))});
    const found = await findAdapters(${JSON.stringify(backend)});
    console.log(found.map((a) => a.description.description).join('; '));
    process.exit(found.length > 0 ? 0 : 3);`;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  return { ok: result.status === 0, adapter: result.stdout.trim(), error: (result.stderr || result.stdout).trim().split('\n').pop() ?? '' };
}

function main() {
  const files = BACKEND_SUITE.map((name) => join('dist/test', `${name}.test.js`));
  const missing = files.filter((f) => !existsSync(join(root, f)));
  if (missing.length > 0) {
    process.stderr.write(`test-backends: ${missing.join(', ')} not built: run \`npx tsc -p .\` first\n`);
    return 1;
  }
  let failed = 0;
  for (const backend of chosenBackends()) {
    const found = probe(backend);
    if (!found.ok) {
      const line = `test-backends: no adapter on the ${backend} backend (${found.error})`;
      if (process.platform === 'linux') {
        process.stderr.write(`${line}: run scripts/setup.sh (it installs Mesa's EGL/GL libraries)\n`);
        failed++;
      } else {
        process.stderr.write(`${line}: skipped on ${process.platform}\n`);
      }
      continue;
    }
    process.stdout.write(`\n# test-backends: GPUNIX_BACKENDS=${backend} (${found.adapter}): ${BACKEND_SUITE.join(', ')}\n`);
    const start = performance.now();
    const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, GPUNIX_BACKENDS: backend },
    });
    const seconds = ((performance.now() - start) / 1000).toFixed(0);
    process.stdout.write(`# test-backends: ${backend}: ${run.status === 0 ? 'passed' : `FAILED (exit ${run.status ?? run.signal})`} in ${seconds} s\n`);
    if (run.status !== 0) failed++;
  }
  return failed > 0 ? 1 : 0;
}

process.exitCode = main();
