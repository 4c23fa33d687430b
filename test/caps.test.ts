// `gpunix caps`: the measured capabilities as JSON, and --require's verdicts and exit codes.
// Measurements run briefly (--duration/--overhead-duration); no test depends on how fast anything is.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkRequirements, DeviceCapabilities, parseRequirements } from '../src/kernel/capabilities.js';
import { GpunixError } from '../src/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(join(tmpdir(), 'gpunix-caps-'));
const SHORT = ['--duration', '300', '--overhead-duration', '200'];

function gpunix(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [resolve(root, 'bin/gpunix.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function requirementsFile(name: string, content: string): string {
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

describe('gpunix caps', () => {
  it('prints every capability of every device as JSON', () => {
    const result = gpunix('caps', '--json', ...SHORT);
    assert.equal(result.code, 0, result.stderr);
    const { devices } = JSON.parse(result.stdout) as { devices: DeviceCapabilities[] };
    assert.ok(devices.length >= 1);
    const listed = JSON.parse(gpunix('devices', '--json').stdout) as Array<{ id: string; features: string[]; limits: Record<string, number> }>;
    for (const caps of devices) {
      const device = listed.find((d) => d.id === caps.device)!;
      assert.ok(device, `${caps.device} is a device gpunix devices lists`);
      for (const key of ['preemption_bound_ms', 'realtime_p50_ms', 'solo_p99_ms', 'atomization_overhead_pct']) {
        assert.equal(typeof caps[key as keyof DeviceCapabilities], 'number', key);
      }
      assert.ok(caps.preemption_bound_ms > 0);
      assert.ok(caps.measured.realtime_samples > 0);
      assert.ok(caps.measured.atoms > 0, 'the batch kernel ran as atoms');
      assert.equal(caps.timestamps, device.features.includes('timestamp-query'));
      assert.equal(caps.immediate_bytes, device.limits.maxImmediateSize ?? 0);
      assert.equal(caps.immediates, caps.immediate_bytes > 0);
      // The isolation guarantees hold exactly on every device gpunix opens.
      assert.equal(caps.robust_access, true);
      assert.equal(caps.zero_init, true);
      assert.equal(caps.per_process_buffers, true);
    }
  });

  it('exits 0 and prints each requirement as met when all are met', () => {
    const file = requirementsFile(
      'met.json',
      JSON.stringify({ robust_access: true, zero_init: true, per_process_buffers: true, immediate_bytes: { min: 0 }, preemption_bound_ms: { max: 1e12 } }),
    );
    const result = gpunix('caps', '--require', file, ...SHORT);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /requirements \(.*met\.json\): all met/);
    for (const line of ['robust_access = true', 'zero_init = true', 'per_process_buffers = true', 'immediate_bytes >= 0', 'preemption_bound_ms <= 1000000000000']) {
      assert.match(result.stdout, new RegExp(`^met\\s+${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s`, 'm'));
    }
  });

  it('exits 1 and says which requirement is not met, with the measured value', () => {
    const file = requirementsFile('unmet.json', JSON.stringify({ zero_init: true, per_process_buffers: false, immediate_bytes: { min: 1e12 } }));
    const result = gpunix('caps', '--json', '--require', file, ...SHORT);
    assert.equal(result.code, 1, result.stderr);
    const { devices, requirements } = JSON.parse(result.stdout);
    assert.equal(requirements.met, false);
    assert.equal(requirements.checks.length, 3 * devices.length);
    const byText = (text: string) => requirements.checks.find((c: { requirement: string }) => c.requirement === text);
    assert.deepEqual(byText('zero_init = true'), { device: devices[0].device, requirement: 'zero_init = true', measured: true, met: true });
    assert.deepEqual(byText('per_process_buffers = false'), { device: devices[0].device, requirement: 'per_process_buffers = false', measured: true, met: false });
    assert.equal(byText('immediate_bytes >= 1000000000000').met, false);
    assert.equal(byText('immediate_bytes >= 1000000000000').measured, devices[0].immediate_bytes);
  });

  it('refuses a malformed requirements file with exit 2 and a coded error, before measuring', () => {
    const cases: Array<[string, RegExp]> = [
      ['{ "preemption_bound_ms": { "max": 2 ', /not valid JSON/],
      ['{ "preemption_bound": { "max": 2 } }', /unknown capability "preemption_bound"/],
      ['{ "preemption_bound_ms": 2 }', /"preemption_bound_ms" must be an object with "min" and\/or "max"/],
      ['{ "preemption_bound_ms": { "below": 2 } }', /unknown key "below"/],
      ['{ "timestamps": "yes" }', /"timestamps" must be true or false/],
      ['[]', /must be one JSON object/],
      ['{ "backend": "cuda" }', /"backend" must be one of vulkan, opengles, opengl, .* got "cuda"/],
    ];
    for (const [i, [content, message]] of cases.entries()) {
      const result = gpunix('caps', '--require', requirementsFile(`bad${i}.json`, content));
      assert.equal(result.code, 2, `${content}: ${result.stderr}`);
      assert.match(result.stderr, /gpunix: GPUNIX_E_BAD_REQUIREMENTS: /);
      assert.match(result.stderr, message);
      assert.equal(result.stdout, '', 'nothing was measured');
    }
    const missing = gpunix('caps', '--require', join(dir, 'no-such-file.json'));
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /GPUNIX_E_BAD_REQUIREMENTS: cannot read requirements file/);
  });

  it('measures each backend\'s device, names its backend and feature level, and checks a demanded backend per device', () => {
    const file = requirementsFile('backend.json', JSON.stringify({ backend: 'vulkan', feature_level: ['core', 'compatibility'], robust_access: true }));
    const result = gpunix('caps', '--json', '--backends', 'vulkan,opengles', '--require', file, ...SHORT);
    assert.equal(result.code, 1, `the OpenGL ES device is not on vulkan: ${result.stderr}`);
    const { devices, requirements } = JSON.parse(result.stdout) as {
      devices: DeviceCapabilities[];
      requirements: { met: boolean; checks: Array<{ device: string; requirement: string; measured: unknown; met: boolean }> };
    };
    assert.deepEqual(
      devices.map((d) => [d.backend, d.feature_level]),
      [
        ['vulkan', 'core'],
        ['opengles', 'compatibility'],
      ],
    );
    const [vulkan, gles] = devices;
    assert.match(gles.description, /OpenGL ES/);
    for (const caps of devices) {
      // Measured on that backend's device: its clients ran there (as atoms) and isolation holds there too.
      assert.ok(caps.preemption_bound_ms > 0, caps.backend);
      assert.ok(caps.measured.atoms > 0, `${caps.backend}: the batch kernel ran as atoms`);
      assert.equal(caps.robust_access, true, caps.backend);
      assert.equal(caps.zero_init, true, caps.backend);
    }
    assert.equal(gles.timestamps, false, 'compatibility mode has no timestamp-query');
    assert.equal(requirements.met, false);
    const check = (device: string, requirement: string) => requirements.checks.find((c) => c.device === device && c.requirement === requirement);
    assert.deepEqual(check(vulkan.device, 'backend = vulkan'), { device: vulkan.device, requirement: 'backend = vulkan', measured: 'vulkan', met: true });
    assert.deepEqual(check(gles.device, 'backend = vulkan'), { device: gles.device, requirement: 'backend = vulkan', measured: 'opengles', met: false });
    assert.equal(check(gles.device, 'feature_level in [core, compatibility]')?.met, true);
    assert.equal(check(gles.device, 'robust_access = true')?.met, true);
  });

  it('prints the backend and feature level, and a demanded feature level as met or NOT MET', () => {
    const file = requirementsFile('level.json', JSON.stringify({ backend: ['vulkan', 'opengles'], feature_level: 'core' }));
    const result = gpunix('caps', '--backends', 'opengles', '--require', file, ...SHORT);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stdout, /^gpu0 {2}.*OpenGL ES.* \((.*, )?opengles, compatibility\)$/m);
    assert.match(result.stdout, /^backend\s+opengles\s/m);
    assert.match(result.stdout, /^feature level\s+compatibility\s/m);
    assert.match(result.stdout, /^met\s+backend in \[vulkan, opengles\]\s+opengles\s+gpu0$/m);
    assert.match(result.stdout, /^NOT MET\s+feature_level = core\s+compatibility\s+gpu0$/m);
  });

  it('refuses an unknown backend', () => {
    const result = gpunix('caps', '--backends', 'vulkan,cuda', ...SHORT);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /unknown backend "cuda"/);
    assert.equal(result.stdout, '');
  });

  it('refuses an unknown device with a coded error', () => {
    const result = gpunix('caps', '--device', 'gpu99', ...SHORT);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /GPUNIX_E_BAD_OPTION: no device "gpu99"/);
  });

  it('checks bounds and booleans exactly, on every device', () => {
    const requirements = parseRequirements(
      JSON.stringify({ preemption_bound_ms: { max: 2 }, atomization_overhead_pct: { min: -5, max: 10 }, timestamps: true }),
    );
    const caps = (device: string, bound: number, overhead: number, timestamps: boolean) =>
      ({ device, preemption_bound_ms: bound, atomization_overhead_pct: overhead, timestamps }) as unknown as DeviceCapabilities;
    const checks = checkRequirements([caps('gpu0', 2, 10, true), caps('gpu1', 2.01, -6, false)], requirements);
    assert.deepEqual(
      checks.map((c) => [c.device, c.requirement, c.met]),
      [
        ['gpu0', 'preemption_bound_ms <= 2', true],
        ['gpu0', '-5 <= atomization_overhead_pct <= 10', true],
        ['gpu0', 'timestamps = true', true],
        ['gpu1', 'preemption_bound_ms <= 2', false],
        ['gpu1', '-5 <= atomization_overhead_pct <= 10', false],
        ['gpu1', 'timestamps = true', false],
      ],
    );
    assert.equal(checkRequirements([caps('gpu0', NaN, 0, true)], requirements)[0].met, false, 'a missing measurement meets no bound');
    const onBackend = (device: string, backend: string, level: string) => ({ device, backend, feature_level: level }) as unknown as DeviceCapabilities;
    assert.deepEqual(
      checkRequirements(
        [onBackend('gpu0', 'vulkan', 'core'), onBackend('gpu1', 'opengl', 'compatibility')],
        parseRequirements(JSON.stringify({ backend: ['vulkan', 'opengles'], feature_level: 'compatibility' })),
      ).map((c) => [c.device, c.requirement, c.measured, c.met]),
      [
        ['gpu0', 'backend in [vulkan, opengles]', 'vulkan', true],
        ['gpu0', 'feature_level = compatibility', 'core', false],
        ['gpu1', 'backend in [vulkan, opengles]', 'opengl', false],
        ['gpu1', 'feature_level = compatibility', 'compatibility', true],
      ],
    );
    assert.throws(() => parseRequirements('{}'), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_REQUIREMENTS');
    for (const [content, message] of [
      ['{ "feature_level": ["core", 1] }', /"feature_level" must be one of core, compatibility or a list of them .* got 1/],
      ['{ "feature_level": "full" }', /"feature_level" must be one of core, compatibility .* got "full"/],
      ['{ "backend": [] }', /"backend" lists no value/],
    ] as const) {
      assert.throws(() => parseRequirements(content), (e: unknown) => e instanceof GpunixError && e.code === 'GPUNIX_E_BAD_REQUIREMENTS' && message.test(e.message));
    }
  });
});
