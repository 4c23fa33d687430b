// Runs the conformance suite (test/conformance/*.test.ts, built into dist/ by `npm run build`) and
// writes its results into docs/vgpu.md, between <!-- conformance:begin --> and
// <!-- conformance:end -->: one row per scenario (group, rule, source, bare Dawn, gpunix) and a
// summary line. `npm run docs:conformance` builds and runs it. Failing scenarios are listed as
// such: the table says what the suite found, and the script exits 0 whenever it wrote the table.
// With --list it only prints the scenarios the built files define (JSON), running none.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const suiteDir = join(root, 'dist/test/conformance');
const docPath = join(root, 'docs/vgpu.md');
export const BEGIN = '<!-- conformance:begin -->';
export const END = '<!-- conformance:end -->';

/** The built scenario files, in name order (any number of them: each helper's group has its own). */
function scenarioFiles() {
  if (!existsSync(suiteDir)) throw new Error(`${suiteDir} is missing: run \`npm run build\` first`);
  return readdirSync(suiteDir)
    .filter((name) => name.endsWith('.test.js'))
    .sort()
    .map((name) => join(suiteDir, name));
}

/**
 * Every scenario the files define ({group, rule, source}), without running any: `conformance()`
 * only registers its scenarios under CONFORMANCE_LIST, and node:test's functions are made no-ops
 * here first, so that a scenario file's other suites (plain describe/it) do not start either.
 */
async function listScenarios(files) {
  const nodeTest = createRequire(import.meta.url)('node:test');
  const noop = Object.assign(() => {}, { skip: () => {}, todo: () => {}, only: () => {} });
  for (const name of ['describe', 'suite', 'it', 'test', 'before', 'after', 'beforeEach', 'afterEach']) nodeTest[name] = noop;
  syncBuiltinESMExports(); // the ES module bindings of node:test follow
  process.env.CONFORMANCE_LIST = '1';
  for (const file of files) await import(pathToFileURL(file).href);
  const { registry } = await import(pathToFileURL(join(suiteDir, 'harness.js')).href);
  delete process.env.CONFORMANCE_LIST;
  return registry;
}

/** Runs the suite in a child `node --test`; returns the result lines the harness recorded, by key. */
function runSuite(files) {
  const dir = mkdtempSync(join(tmpdir(), 'gpunix-conformance-'));
  const resultsFile = join(dir, 'results.jsonl');
  try {
    const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=dot', ...files], {
      cwd: root,
      env: { ...process.env, CONFORMANCE_RESULTS: resultsFile },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (run.error) throw run.error;
    const results = new Map();
    const text = existsSync(resultsFile) ? readFileSync(resultsFile, 'utf8') : '';
    for (const line of text.split('\n').filter(Boolean)) {
      const result = JSON.parse(line);
      results.set(key(result), result);
    }
    return { results, exitCode: run.status ?? run.signal };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const key = ({ group, rule }) => `${group}\u0000${rule}`;

/** A table cell: one line, pipes escaped. */
const cell = (text) => String(text).replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');

/** The section between the markers: summary line and table, scenarios in definition order. */
export function renderTable(scenarios, results) {
  const rows = scenarios.map((scenario) => {
    const result = results.get(key(scenario));
    return {
      ...scenario,
      dawn: result ? result.dawn : '—',
      // A scenario with no result line did not get to compare (the suite was cut short, or the
      // bare Dawn side threw): say so rather than guess.
      gpunix: result ? result.gpunix : 'not run',
    };
  });
  const failing = rows.filter((row) => row.gpunix === 'FAIL').length;
  const notRun = rows.filter((row) => row.gpunix === 'not run').length;
  const dawnBreaks = rows.filter((row) => row.dawn.startsWith('breaks')).length;
  const groups = new Set(rows.map((row) => row.group)).size;
  const verdict =
    failing + notRun === 0
      ? 'gpunix observes all of them as bare Dawn does (or as the spec says, where Dawn breaks the rule)'
      : [failing && `${failing} ${failing === 1 ? 'differs' : 'differ'} on gpunix`, notRun && `${notRun} not run`].filter(Boolean).join(', ') +
        `; the other ${rows.length - failing - notRun} pass`;
  const lines = [
    BEGIN,
    `**${rows.length} rules in ${groups} groups: ${verdict}.** ` +
      `Bare Dawn breaks ${dawnBreaks === 0 ? 'none' : dawnBreaks} of them` +
      (dawnBreaks ? ' (there gpunix is held to the spec instead)' : '') +
      '. Generated from the suite in `test/conformance/` by `npm run docs:conformance`.',
    '',
    '| group | rule | source | bare Dawn | gpunix |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map((row) => `| ${cell(row.group)} | ${cell(row.rule)} | ${cell(row.source)} | ${cell(row.dawn)} | ${row.gpunix === 'FAIL' ? '**FAIL**' : cell(row.gpunix)} |`),
    END,
  ];
  return lines.join('\n');
}

/** `doc` with the section between the markers replaced by `section` (markers included). */
export function replaceSection(doc, section) {
  const begin = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`docs/vgpu.md has no ${BEGIN} … ${END} section`);
  return doc.slice(0, begin) + section + doc.slice(end + END.length);
}

async function main() {
  const files = scenarioFiles();
  const scenarios = await listScenarios(files);
  if (process.argv.includes('--list')) {
    // For test/conformanceTable.test.ts: the rules the suite defines, as JSON on the last line.
    process.stdout.write(`${JSON.stringify(scenarios)}\n`);
    return;
  }
  const { results, exitCode } = runSuite(files);
  writeFileSync(docPath, replaceSection(readFileSync(docPath, 'utf8'), renderTable(scenarios, results)));
  const failing = [...results.values()].filter((r) => r.gpunix === 'FAIL').length;
  console.log(`wrote docs/vgpu.md: ${scenarios.length} rules, ${failing} differ (node --test exited ${exitCode})`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await main();
  process.exit(0); // the listing loaded the scenario files (and Dawn's module): do not wait on their handles
}
