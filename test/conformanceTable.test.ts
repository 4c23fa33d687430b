// The conformance table in docs/vgpu.md is the suite's: it lists exactly the rules that the
// scenario files in test/conformance/ define (group and rule), each once. The results in it come
// from a run of the suite (`npm run docs:conformance`); this test does not run the scenarios.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { Listed } from './conformance/harness.js';

const STALE = 'the conformance table in docs/vgpu.md is stale: run `npm run docs:conformance`';

/**
 * The scenarios the built scenario files define, listed by the table's own generator without
 * running them (in a process of its own: the files are imported with node:test disabled).
 */
function definedScenarios(): string[] {
  const script = fileURLToPath(new URL('../../scripts/gen-conformance-table.mjs', import.meta.url));
  const output = execFileSync(process.execPath, [script, '--list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const listed = JSON.parse(output.trim().split('\n').at(-1)!) as Listed[]; // the list is its last line
  return listed.map(({ group, rule }) => `${group}: ${rule}`);
}

/** The (group, rule) of each row of the table between the conformance markers. */
function tableRows(doc: string): string[] {
  const begin = doc.indexOf('<!-- conformance:begin -->');
  const end = doc.indexOf('<!-- conformance:end -->');
  assert.ok(begin >= 0 && end > begin, 'docs/vgpu.md has its conformance markers');
  const rows = doc
    .slice(begin, end)
    .split('\n')
    .filter((line) => line.startsWith('| ') && !line.startsWith('| group |') && !line.startsWith('| ---'));
  return rows.map((line) => {
    // Cells are split at unescaped pipes; a rule may contain an escaped one (`\|`).
    const cells = line.slice(1, -1).split(/(?<!\\)\|/).map((text) => text.trim().replace(/\\\|/g, '|'));
    return `${cells[0]}: ${cells[1]}`;
  });
}

describe('the conformance table in docs/vgpu.md', () => {
  it('lists each rule of the suite once, and no rule the suite does not define', () => {
    const defined = definedScenarios();
    assert.ok(defined.length > 0, 'the suite defines scenarios');
    assert.deepEqual(defined.filter((rule, i) => defined.indexOf(rule) !== i), [], 'each rule is defined once per group');
    const listed = tableRows(readFileSync(new URL('../../docs/vgpu.md', import.meta.url), 'utf8'));
    assert.deepEqual(
      { missing: defined.filter((rule) => !listed.includes(rule)), unknown: listed.filter((rule) => !defined.includes(rule)) },
      { missing: [], unknown: [] },
      STALE,
    );
    assert.equal(listed.length, defined.length, STALE);
  });

  it('is rendered one row per scenario, failures and scenarios without a result shown as such', async () => {
    const generator = new URL('../../scripts/gen-conformance-table.mjs', import.meta.url).href;
    const { renderTable, replaceSection } = (await import(generator)) as {
      renderTable(scenarios: Listed[], results: Map<string, unknown>): string;
      replaceSection(doc: string, section: string): string;
    };
    const scenarios: Listed[] = [
      { group: 'g', rule: 'mode READ | WRITE is refused', source: 'spec §1' },
      { group: 'g', rule: 'a rule gpunix breaks', source: 'spec §2' },
      { group: 'h', rule: 'a rule not run', source: 'spec §3' },
    ];
    const results = new Map<string, unknown>([
      [`g\u0000${scenarios[0].rule}`, { ...scenarios[0], dawn: 'breaks: Dawn takes it', gpunix: 'pass' }],
      [`g\u0000${scenarios[1].rule}`, { ...scenarios[1], dawn: 'pass', gpunix: 'FAIL' }],
    ]);
    const doc = replaceSection('before\n<!-- conformance:begin -->\nold\n<!-- conformance:end -->\nafter\n', renderTable(scenarios, results));
    assert.deepEqual(tableRows(doc), ['g: mode READ | WRITE is refused', 'g: a rule gpunix breaks', 'h: a rule not run']);
    assert.match(doc, /^before\n<!-- conformance:begin -->\n\*\*3 rules in 2 groups: 1 differs on gpunix, 1 not run; the other 1 pass\.\*\* Bare Dawn breaks 1 of them/);
    assert.ok(doc.includes('| g | mode READ \\| WRITE is refused | spec §1 | breaks: Dawn takes it | pass |'), 'pipes in a cell are escaped');
    assert.ok(doc.includes('| g | a rule gpunix breaks | spec §2 | pass | **FAIL** |'));
    assert.ok(doc.includes('| h | a rule not run | spec §3 | — | not run |'));
    assert.ok(doc.endsWith('<!-- conformance:end -->\nafter\n') && !doc.includes('old'));
  });
});
