// The split of a poll's worth of completed runs (src/kernel/sighting.ts), as numbers: which time
// each run is charged. scheduler.test.ts checks the same on a device, through processes' GPU time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Sighting, SplitBasis, type SightedRun } from '../src/kernel/sighting.js';

const ms = 1e6;
const run = (issuedMs: number, costMs: number | null, issueMs = 0): SightedRun => ({
  firstIssuedAtNs: issuedMs * ms,
  costNs: costMs === null ? null : costMs * ms,
  issueNs: issueMs * ms,
});

/** Each run's charged [start, end] (ms) once `runs` were seen at `seenMs`, the work ahead of them seen done at `aheadMs`. */
function split(runs: SightedRun[], seenMs: number, aheadMs = 0): { basis: SplitBasis; spans: Array<[number, number]> } {
  const sighting = new Sighting<SightedRun>();
  for (const r of runs) sighting.add(r, NaN, seenMs * ms, aheadMs * ms);
  const basis = sighting.split();
  const spans = runs.map((_, i): [number, number] => [sighting.startNs[i] / ms, sighting.endNs[i] / ms]);
  sighting.clear();
  assert.equal(sighting.count, 0);
  return { basis, spans };
}

describe('a sighting (the runs one poll reported complete)', () => {
  it('charges a lone run from its issue, or the end of the work ahead, to the sighting', () => {
    assert.deepEqual(split([run(10, null)], 14), { basis: SplitBasis.Alone, spans: [[10, 14]] });
    assert.deepEqual(split([run(10, null)], 14, 12), { basis: SplitBasis.Alone, spans: [[12, 14]] });
  });

  it('splits by the time spent in the issue calls when they took most of it (the submit ran the work)', () => {
    const { basis, spans } = split([run(0, 5, 3), run(3.1, 5, 1)], 4.2);
    assert.equal(basis, SplitBasis.Issue);
    assert.deepEqual(spans.map(([s, e]) => [s, +e.toFixed(3)]), [[0, 3.15], [3.15, 4.2]]);
  });

  it('splits by the forecasts otherwise, and in equal parts when a run has none', () => {
    const byForecast = split([run(0, 1), run(0.1, 3)], 8);
    assert.equal(byForecast.basis, SplitBasis.Forecast);
    assert.deepEqual(byForecast.spans, [[0, 2], [2, 8]]);
    const equal = split([run(0, 1), run(0.1, null), run(0.2, 2)], 9);
    assert.equal(equal.basis, SplitBasis.Equal);
    assert.deepEqual(equal.spans, [[0, 3], [3, 6], [6, 9]]);
  });

  it('charges no run from before its issue: the device idled until then', () => {
    const { spans } = split([run(0, 1), run(6, 1)], 8);
    assert.deepEqual(spans, [[0, 4], [6, 8]]);
  });

  it('reuses its arrays from one poll to the next', () => {
    const sighting = new Sighting<SightedRun>();
    for (let poll = 0; poll < 3; poll++) {
      sighting.add(run(poll * 10, 1), NaN, (poll * 10 + 2) * ms, 0);
      sighting.add(run(poll * 10, 1), NaN, (poll * 10 + 2) * ms, 0);
      sighting.split();
      assert.deepEqual([sighting.startNs[1], sighting.endNs[1]], [(poll * 10 + 1) * ms, (poll * 10 + 2) * ms]);
      sighting.clear();
    }
    assert.equal(sighting.runs.length, 2);
    assert.ok(sighting.runs.every((r) => r === null), 'lets go of the runs');
  });
});
