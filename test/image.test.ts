// The process image format: what is written reads back identical; anything damaged, cut, foreign
// or malformed is refused with GPUNIX_E_BAD_IMAGE and a sentence saying what and where; a write
// that fails or crashes midway leaves the previous image as it was.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { GpunixError } from '../src/errors.js';
import { IMAGE_FORMAT_VERSION, ProcessImage, readImage, writeImage } from '../src/kernel/image.js';

function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

function sampleImage(seed = 1): ProcessImage {
  return {
    version: IMAGE_FORMAT_VERSION,
    createdAt: '2025-01-02T03:04:05.678Z',
    process: { name: 'train', priority: 'batch', weight: 2, tenant: 'alice', memoryLimit: 1 << 20 },
    device: { description: 'llvmpipe (LLVM 15.0.7, 256 bits)', vendor: 'mesa', backend: 'vulkan' },
    limits: { maxBufferSize: 268435456, maxStorageBufferBindingSize: 134217728, maxComputeWorkgroupSizeX: 256 },
    features: ['timestamp-query', 'shader-f16'],
    shaders: [
      {
        id: 1,
        label: 'step',
        code: '@group(0) @binding(0) var<storage, read_write> a: array<u32>;\n@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) { a[g.x] += 1u; }\n',
      },
    ],
    pipelines: [
      { id: 2, label: 'step', shader: 1, entryPoint: 'main', constants: { n: 4 }, layout: 'auto' },
      { id: 3, label: 'explicit', shader: 1, layout: { bindGroupLayouts: [{ entries: [{ binding: 0, visibility: 4, buffer: { type: 'storage' } }] }] } },
    ],
    buffers: [
      { id: 10, label: 'state', size: 20, usage: 0x88, contents: pattern(20, seed) },
      { id: 11, label: '', size: 0, usage: 0x08, contents: new Uint8Array(0) },
      { id: 12, label: 'weights ✓ ünïcode', size: 64, usage: 0x8c, contents: pattern(64, seed + 1) },
    ],
    bindGroups: [
      { id: 5, label: 'group', layout: { pipeline: 2, group: 0 }, entries: [{ binding: 0, buffer: 10 }] },
      { id: 6, label: '', layout: { descriptor: { entries: [{ binding: 0, visibility: 4, buffer: { type: 'storage', hasDynamicOffset: true } }] } }, entries: [{ binding: 0, buffer: 12, offset: 0, size: 32 }] },
    ],
    querySets: [{ id: 7, label: 'times', type: 'timestamp', count: 2 }],
    queued: [
      { kind: 'writeBuffer', buffer: 10, bufferOffset: 4, data: pattern(12, seed + 2) },
      {
        kind: 'submit',
        commandBuffers: [
          {
            label: 'step',
            commands: [
              {
                op: 'computePass',
                label: 'pass',
                timestampWrites: { querySet: 7, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
                commands: [
                  { op: 'pushDebugGroup', label: 'step ✓' },
                  { op: 'setPipeline', pipeline: 2 },
                  { op: 'setBindGroup', index: 0, bindGroup: 5 },
                  { op: 'setBindGroup', index: 1, bindGroup: 6, dynamicOffsets: [256] },
                  { op: 'setBindGroup', index: 2, bindGroup: null },
                  { op: 'setImmediates', offset: 0, data: '0102abcd' },
                  { op: 'dispatchWorkgroups', workgroups: [4, 1, 1] },
                  { op: 'dispatchWorkgroupsIndirect', buffer: 12, offset: 16 },
                  { op: 'popDebugGroup' },
                  { op: 'insertDebugMarker', label: 'done' },
                ],
              },
              { op: 'copyBufferToBuffer', source: 10, sourceOffset: 0, destination: 12, destinationOffset: 8, size: 8 },
              { op: 'clearBuffer', buffer: 12, offset: 32 },
              { op: 'clearBuffer', buffer: 12, offset: 40, size: 8 },
              { op: 'resolveQuerySet', querySet: 7, firstQuery: 0, queryCount: 2, destination: 12, destinationOffset: 48 },
            ],
          },
          { label: '', commands: [] },
        ],
      },
      { kind: 'writeBuffer', buffer: 12, bufferOffset: 0, data: pattern(20, seed + 3) },
      { kind: 'destroyQuerySet', querySet: 7 },
      { kind: 'destroyBuffer', buffer: 11 },
    ],
  };
}

/** The queued writes' bytes of an image, in order: the data section after the buffers' contents. */
function writesOf(image: ProcessImage): Uint8Array[] {
  return image.queued.flatMap((q) => (q.kind === 'writeBuffer' ? [q.data] : []));
}

/** Everything in an image's data section, in order. */
function dataOf(image: ProcessImage): Uint8Array[] {
  return [...image.buffers.map((b) => b.contents), ...writesOf(image)];
}

/** What docs/image-format.md specifies, implemented again independently of src/kernel/image.ts. */
function forge(header: unknown, contents: Uint8Array[], version = 2): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (n: number): Buffer => Buffer.alloc((8 - (n % 8)) % 8);
  const preamble = Buffer.alloc(56);
  preamble.write('GPUNIXIMG\0', 0, 'latin1');
  preamble.writeUInt32LE(version, 12);
  preamble.writeUInt32LE(json.length, 16);
  createHash('sha256').update(json).digest().copy(preamble, 24);
  const parts: Uint8Array[] = [preamble, json, pad(56 + json.length)];
  for (const c of contents) parts.push(c, pad(c.length));
  const body = Buffer.concat(parts);
  const trailer = Buffer.alloc(40);
  createHash('sha256').update(body).digest().copy(trailer, 0);
  trailer.writeBigUInt64LE(BigInt(body.length + 40), 32);
  return Buffer.concat([body, trailer]);
}

/** The header JSON of an image file, parsed. */
function headerOf(file: Buffer): Record<string, any> {
  const length = file.readUInt32LE(16);
  return JSON.parse(file.subarray(56, 56 + length).toString('utf8'));
}

async function refused(path: string, message: RegExp | string): Promise<void> {
  await assert.rejects(readImage(path), (error: unknown) => {
    assert.ok(error instanceof GpunixError, `expected a GpunixError, got ${String(error)}`);
    assert.equal(error.code, 'GPUNIX_E_BAD_IMAGE');
    if (typeof message === 'string') assert.ok(error.message.includes(message), `"${error.message}" should say "${message}"`);
    else assert.match(error.message, message);
    return true;
  });
}

describe('process images', () => {
  let dir: string;
  let good: Buffer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gpunix-image-'));
    await writeImage(join(dir, 'good.img'), sampleImage());
    good = await readFile(join(dir, 'good.img'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('an image reads back equal: metadata, and buffer contents byte for byte', async () => {
    const path = join(dir, 'round.img');
    const image = sampleImage();
    const written = await writeImage(path, image);
    const file = await readFile(path);
    assert.equal(written.bytes, file.length);
    assert.equal(written.sha256, createHash('sha256').update(file.subarray(0, -40)).digest('hex'));
    assert.equal(written.sha256, file.subarray(-40, -8).toString('hex'));
    const back = await readImage(path);
    assert.deepEqual(back, image);
    for (const [i, b] of back.buffers.entries()) assert.equal(Buffer.compare(b.contents, image.buffers[i].contents), 0);
    // The same image always makes the same bytes.
    await writeImage(path, image);
    assert.deepEqual(await readFile(path), file);
  });

  it('the file is laid out exactly as docs/image-format.md says', async () => {
    const image = sampleImage();
    assert.deepEqual(forge(headerOf(good), dataOf(image)), good);
    assert.equal(good.subarray(0, 10).toString('latin1'), 'GPUNIXIMG\0');
    assert.equal(good.readUInt32LE(12), 2);
    const header = headerOf(good);
    assert.deepEqual(Object.keys(header), ['createdAt', 'process', 'device', 'limits', 'features', 'shaders', 'pipelines', 'buffers', 'bindGroups', 'querySets', 'queued']);
    assert.deepEqual(
      header.buffers.map((b: { offset: number }) => b.offset),
      [0, 24, 24],
    );
    assert.equal(header.buffers[0].sha256, createHash('sha256').update(image.buffers[0].contents).digest('hex'));
    // Queued writes' bytes follow the buffers' contents, back to back; the header keeps where and their hash.
    const writes = header.queued.filter((q: { kind: string }) => q.kind === 'writeBuffer');
    assert.deepEqual(
      writes.map((w: Record<string, unknown>) => [w.buffer, w.bufferOffset, w.size, w.offset]),
      [
        [10, 4, 12, 88],
        [12, 0, 20, 104],
      ],
    );
    assert.equal(writes[1].sha256, createHash('sha256').update(writesOf(image)[1]).digest('hex'));
    assert.deepEqual(header.queued[1], image.queued[1]);
    assert.equal(good.readBigUInt64LE(good.length - 8), BigInt(good.length));
    assert.equal(good.length % 8, 0);
  });

  it('large buffers are written in pieces and read back exact', async () => {
    const path = join(dir, 'large.img');
    const image = sampleImage();
    const big = pattern(20 * 1024 * 1024 + 3, 7);
    image.buffers.push({ id: 13, label: 'big', size: big.length, usage: 0x80, contents: big });
    const progress: number[] = [];
    const written = await writeImage(path, image, { onProgress: (done, total) => progress.push(done, total) });
    const dones = progress.filter((_, i) => i % 2 === 0);
    assert.ok(dones.length > 5, 'written in several pieces');
    assert.deepEqual([...dones].sort((a, b) => a - b), dones);
    assert.equal(dones.at(-1), written.bytes);
    assert.ok(progress.filter((_, i) => i % 2 === 1).every((t) => t === written.bytes));
    const back = await readImage(path);
    assert.equal(Buffer.compare(back.buffers[3].contents, big), 0);
    assert.deepEqual(back, image);
  });

  it('every single-byte corruption is refused, and the message names the damaged section', async () => {
    const path = join(dir, 'corrupt.img');
    const headerLength = good.readUInt32LE(16);
    const dataStart = Math.ceil((56 + headerLength) / 8) * 8;
    const trailerStart = good.length - 40;
    const [b0, , b2] = headerOf(good).buffers as { offset: number; size: number }[];
    const [w0, w1] = headerOf(good).queued.filter((q: { kind: string }) => q.kind === 'writeBuffer') as { offset: number; size: number }[];
    const expected = (at: number): RegExp => {
      if (at < 10) return /bad magic/;
      if (at < 12 || (at >= 20 && at < 24)) return /reserved bytes/;
      if (at < 16) return /unsupported format version/;
      if (at < 20) return /./; // the header length: any refusal (overrun, truncation, checksum)
      if (at < 56 + headerLength) return /checksum mismatch in section header/;
      if (at < dataStart) return /padding after the header/;
      const d = at - dataStart;
      if (at < trailerStart) {
        if (d < b0.offset + b0.size) return /checksum mismatch in section data, buffers\[0\] \(id 10, label "state"/;
        if (d < b2.offset) return /padding after buffers\[0\]/;
        if (d < b2.offset + b2.size) return /checksum mismatch in section data, buffers\[2\]/;
        if (d < w0.offset) return /padding after buffers\[2\]/;
        if (d < w0.offset + w0.size) return /checksum mismatch in section data, queued\[0\] \(a write of 12 bytes to buffer id 10, bytes \d+-\d+\)/;
        if (d < w1.offset) return /padding after queued\[0\]/;
        if (d < w1.offset + w1.size) return /checksum mismatch in section data, queued\[2\]/;
        return /padding after queued\[2\]/;
      }
      if (at < trailerStart + 32) return /checksum mismatch in section trailer/;
      return /malformed trailer: it records a length of/;
    };
    // Every position, one bit flipped (which bit rotates); every seventh, also the top bit and all bits.
    for (let at = 0; at < good.length; at++) {
      for (const flip of at % 7 === 0 ? [1 << at % 8, 0x80, 0xff] : [1 << at % 8]) {
        const bad = Buffer.from(good);
        bad[at] ^= flip;
        await writeFile(path, bad);
        await refused(path, expected(at));
      }
    }
  });

  it('an image cut at any length, or with bytes after its end, is refused', async () => {
    const path = join(dir, 'cut.img');
    for (let length = 0; length < good.length; length++) {
      await writeFile(path, good.subarray(0, length));
      await refused(path, `truncated at byte ${length}`);
    }
    await writeFile(path, good.subarray(0, good.length - 100));
    await refused(path, `truncated at byte ${good.length - 100} (the complete image is ${good.length} bytes)`);
    for (const extra of [1, 40, 4096]) {
      await writeFile(path, Buffer.concat([good, Buffer.alloc(extra, 7)]));
      await refused(path, `${extra} unexpected bytes after the end of the image at byte ${good.length}`);
    }
  });

  it('a file that is not an image, or an image of another format version, is refused saying so', async () => {
    const path = join(dir, 'foreign.img');
    await writeFile(path, 'this is a text file, not a process image\n'.repeat(10));
    await refused(path, /bad magic: it does not begin with "GPUNIXIMG\\0", so it is not a gpunix process image/);
    await writeFile(path, 'GPUNIXIMX');
    await refused(path, /bad magic/);
    await writeFile(path, '');
    await refused(path, 'truncated at byte 0');
    const image = sampleImage();
    await writeFile(path, forge(headerOf(good), dataOf(image), 3));
    await refused(path, 'unsupported format version 3 (this gpunix reads versions 1 and 2)');
    await writeFile(path, good.subarray(0, 16).map((byte, i) => (i === 12 ? 9 : byte)));
    await refused(path, 'unsupported format version 9');
    await assert.rejects(readImage(join(dir, 'absent.img')), { code: 'ENOENT' });
  });

  it('a version 1 image still reads, as one with no queued work; opaque version 1 queued records are refused', async () => {
    const path = join(dir, 'v1.img');
    const image = sampleImage();
    const contents = image.buffers.map((b) => b.contents);
    const header = headerOf(good);
    delete header.bindGroups;
    delete header.querySets;
    header.queued = [];
    await writeFile(path, forge(header, contents, 1));
    assert.deepEqual(await readImage(path), { ...image, version: 1, bindGroups: [], querySets: [], queued: [] });
    // A version 1 header has version 1's keys, no others.
    await writeFile(path, forge({ ...header, bindGroups: [] }, contents, 1));
    await refused(path, 'malformed metadata field bindGroups: not a field of image format version 1');
    // Version 1 kept queued work as opaque JSON (gpunix wrote none): records it cannot replay are refused.
    await writeFile(path, forge({ ...header, queued: [{ kind: 'dispatch', pipeline: 2 }] }, contents, 1));
    await refused(path, 'malformed metadata field queued: expected [] in a version 1 image (its queued records are opaque and cannot be replayed)');
  });

  it('a checksummed header with a malformed field is refused naming the field', async () => {
    const path = join(dir, 'malformed.img');
    const contents = dataOf(sampleImage());
    const pass = (h: Record<string, any>): Record<string, any>[] => h.queued[1].commandBuffers[0].commands[0].commands;
    const cases: [string, (h: Record<string, any>) => void, string][] = [
      ['buffer usage not a number', (h) => (h.buffers[0].usage = 'storage'), 'malformed metadata field buffers[0].usage: expected an integer from 0 to 4294967295, got "storage"'],
      ['duplicate buffer id', (h) => (h.buffers[1].id = 10), 'malformed metadata field buffers[1].id: duplicate id 10'],
      ['pipeline of a missing shader', (h) => (h.pipelines[1].shader = 99), 'malformed metadata field pipelines[1].shader: refers to shader id 99, which is not in the image'],
      ['unknown priority', (h) => (h.process.priority = 'urgent'), 'malformed metadata field process.priority: expected one of realtime, normal, batch, got "urgent"'],
      ['non-positive weight', (h) => (h.process.weight = 0), 'malformed metadata field process.weight'],
      ['memory limit a string', (h) => (h.process.memoryLimit = '1M'), 'malformed metadata field process.memoryLimit'],
      ['createdAt not a time', (h) => (h.createdAt = 'yesterday'), 'malformed metadata field createdAt: expected an ISO 8601 time, got "yesterday"'],
      ['missing queued', (h) => delete h.queued, 'malformed metadata field queued: expected a value, got nothing'],
      ['unknown top-level field', (h) => (h.extra = 1), 'malformed metadata field extra: not a field of image format version 2'],
      ['unknown buffer field', (h) => (h.buffers[2].mapped = true), 'malformed metadata field buffers[2].mapped'],
      ['limit not a number', (h) => (h.limits.maxBufferSize = 'big'), 'malformed metadata field limits.maxBufferSize'],
      ['feature not a string', (h) => (h.features[1] = 16), 'malformed metadata field features[1]'],
      ['shader code missing', (h) => delete h.shaders[0].code, 'malformed metadata field shaders[0].code'],
      ['bad layout', (h) => (h.pipelines[0].layout = 'manual'), 'malformed metadata field pipelines[0].layout: expected an object, got "manual"'],
      ['bad sha256', (h) => (h.buffers[0].sha256 = 'XYZ'), 'malformed metadata field buffers[0].sha256: expected 64 lowercase hex digits'],
      ['gap between buffers', (h) => (h.buffers[2].offset = 32), 'malformed metadata field buffers[2].offset: expected 24'],
      ['device not an object', (h) => (h.device = 'gpu'), 'malformed metadata field device: expected an object'],
      // The work section (version 2): every record, and every id it names.
      ['missing bindGroups', (h) => delete h.bindGroups, 'malformed metadata field bindGroups: expected a value, got nothing'],
      ['unknown queued kind', (h) => (h.queued[3].kind = 'launch'), 'malformed metadata field queued[3].kind: expected one of submit, writeBuffer, destroyBuffer, destroyQuerySet, got "launch"'],
      ['pipeline not in the image', (h) => (pass(h)[1].pipeline = 9), 'malformed metadata field queued[1].commandBuffers[0].commands[0].commands[1].pipeline: refers to pipeline id 9, which is not in the image'],
      ['bind group not in the image', (h) => (pass(h)[2].bindGroup = 4), 'commands[2].bindGroup: refers to bind group id 4, which is not in the image'],
      ['indirect buffer not in the image', (h) => (pass(h)[7].buffer = 13), 'commands[7].buffer: refers to buffer id 13'],
      ['unknown pass command', (h) => (pass(h)[6].op = 'draw'), 'commands[6].op: expected a compute pass command'],
      ['workgroups not three', (h) => (pass(h)[6].workgroups = [4, 1]), 'commands[6].workgroups: expected three counts [x, y, z]'],
      ['workgroups beyond u32', (h) => (pass(h)[6].workgroups = [2 ** 32, 1, 1]), 'commands[6].workgroups[0]: expected an integer from 0 to 4294967295'],
      ['immediates not hex', (h) => (pass(h)[5].data = '0x01'), 'commands[5].data: expected bytes as lowercase hex digits'],
      ['extra key in a pass command', (h) => (pass(h)[1].index = 0), 'commands[1].index: not a field of image format version 2'],
      ['copy to a missing buffer', (h) => (h.queued[1].commandBuffers[0].commands[1].destination = 99), 'commands[1].destination: refers to buffer id 99'],
      ['query set not in the image', (h) => (h.queued[1].commandBuffers[0].commands[0].timestampWrites.querySet = 1), 'timestampWrites.querySet: refers to query set id 1'],
      ['bad query set type', (h) => (h.querySets[0].type = 'pipeline-statistics'), 'malformed metadata field querySets[0].type: expected "timestamp" or "occlusion"'],
      ['duplicate bind group id', (h) => (h.bindGroups[1].id = 5), 'malformed metadata field bindGroups[1].id: duplicate id 5'],
      ['bind group layout of a missing pipeline', (h) => (h.bindGroups[0].layout.pipeline = 7), 'bindGroups[0].layout.pipeline: refers to pipeline id 7'],
      ['bind group entry of a missing buffer', (h) => (h.bindGroups[0].entries[0].buffer = 1), 'bindGroups[0].entries[0].buffer: refers to buffer id 1'],
      ['write bytes not back to back', (h) => (h.queued[2].offset = 112), 'malformed metadata field queued[2].offset: expected 104 (buffers and then queued writes lie back to back'],
      ['write with a bad hash', (h) => (h.queued[0].sha256 = 'abc'), 'malformed metadata field queued[0].sha256: expected 64 lowercase hex digits'],
      ['write with inline data', (h) => (h.queued[0].data = [1, 2, 3, 4]), 'malformed metadata field queued[0].data: not a field of image format version 2'],
      ['destroy of a missing buffer', (h) => (h.queued[4].buffer = 3), 'malformed metadata field queued[4].buffer: refers to buffer id 3'],
    ];
    for (const [what, mutate, message] of cases) {
      const header = headerOf(good);
      mutate(header);
      await writeFile(path, forge(header, contents));
      await refused(path, message).catch((error) => assert.fail(`${what}: ${(error as Error).message}`));
    }
    await writeFile(path, forge([headerOf(good)], contents));
    await refused(path, 'malformed metadata field (top level): expected an object, got [{');
    // A header whose checksum is right but which is not JSON.
    const notJson = forge(headerOf(good), contents);
    const length = notJson.readUInt32LE(16);
    notJson[56] = 0x7b + 1; // '{' -> '|'
    createHash('sha256').update(notJson.subarray(56, 56 + length)).digest().copy(notJson, 24);
    createHash('sha256').update(notJson.subarray(0, -40)).digest().copy(notJson, notJson.length - 40);
    await writeFile(path, notJson);
    await refused(path, 'malformed header: not UTF-8 JSON');
  });

  it('a malformed image is not written, naming the field, and the old image stays', async () => {
    const path = join(dir, 'keep.img');
    await writeFile(path, good);
    const cases: [(i: ProcessImage) => void, string][] = [
      [(i) => (i.buffers[0].contents = new Uint8Array(12)), 'cannot write process image ' + path + ': malformed field buffers[0].contents: expected a Uint8Array of 20 bytes (the size), got a Uint8Array of 12 bytes'],
      [(i) => (i.process.weight = NaN), 'malformed field process.weight: expected a finite number, got NaN'],
      [(i) => (i.queued = [{ kind: 'writeBuffer', buffer: 10, bufferOffset: 0, data: [1, 2, 3, 4] } as never]), 'malformed field queued[0].data: expected a Uint8Array, got [1,2,3,4]'],
      [(i) => (i.queued = [new Date(0) as never]), 'malformed field queued[0]: expected an object'],
      [(i) => (i.queued = [{ kind: 'destroyBuffer', buffer: 99 }]), 'malformed field queued[0].buffer: refers to buffer id 99, which is not in the image'],
      [
        (i) => {
          const loop: Record<string, unknown> = {};
          loop.self = loop;
          i.bindGroups[1].layout = { descriptor: loop };
        },
        'nested deeper than 64 levels (or a cycle)',
      ],
      [(i) => (i.pipelines[0].shader = 5), 'malformed field pipelines[0].shader: refers to shader id 5'],
      [(i) => (i.buffers[2].id = 10), 'malformed field buffers[2].id: duplicate id 10'],
      [(i) => ((i as { version: number }).version = 3), 'malformed field version: expected 2, got 3'],
      // Only the current version is written; version 1 is read, never written.
      [(i) => ((i as { version: number }).version = 1), 'malformed field version: expected 2, got 1'],
    ];
    for (const [mutate, message] of cases) {
      const image = sampleImage(2);
      mutate(image);
      await assert.rejects(writeImage(path, image), (error: unknown) => {
        assert.ok(error instanceof GpunixError);
        assert.equal(error.code, 'GPUNIX_E_BAD_IMAGE');
        assert.ok(error.message.includes(message), `"${error.message}" should say "${message}"`);
        return true;
      });
    }
    assert.deepEqual(await readFile(path), good);
    assert.deepEqual(await readdir(dir).then((names) => names.filter((n) => n.includes('.tmp-'))), []);
  });

  it('a write that fails midway leaves the previous image byte-identical and no temporary file', async () => {
    const sub = await mkdtemp(join(dir, 'fail-'));
    const path = join(sub, 'proc.img');
    await writeFile(path, good);
    const image = sampleImage(3);
    image.buffers.push({ id: 13, label: 'big', size: 9 * 1024 * 1024, usage: 0x80, contents: pattern(9 * 1024 * 1024, 3) });
    let calls = 0;
    const crash = new Error('disk pulled out');
    await assert.rejects(
      writeImage(path, image, {
        onProgress: () => {
          if (++calls === 4) throw crash;
        },
      }),
      (error) => error === crash,
    );
    assert.equal(calls, 4);
    assert.deepEqual(await readFile(path), good);
    assert.deepEqual(await readdir(sub), ['proc.img']);

    // Contents that change while being written would make an unreadable image: refused instead.
    let changed = false;
    await assert.rejects(
      writeImage(path, image, {
        onProgress: () => {
          if (!changed) image.buffers[3].contents[5 * 1024 * 1024] ^= 1;
          changed = true;
        },
      }),
      (error: unknown) => error instanceof GpunixError && error.code === 'GPUNIX_E_BAD_IMAGE' && /buffers\[3\] \(id 13\) changed while/.test(error.message),
    );
    assert.deepEqual(await readFile(path), good);
    assert.deepEqual(await readdir(sub), ['proc.img']);

    // Into a directory that does not exist: nothing is created anywhere.
    await assert.rejects(writeImage(join(sub, 'absent', 'proc.img'), image), { code: 'ENOENT' });
    assert.deepEqual(await readdir(sub), ['proc.img']);

    // And a successful write replaces it whole.
    await writeImage(path, image);
    assert.deepEqual(await readImage(path), image);
    assert.deepEqual(await readdir(sub), ['proc.img']);
  });

  it('a writer killed mid-write leaves the previous image intact and readable', async () => {
    const sub = await mkdtemp(join(dir, 'kill-'));
    const path = join(sub, 'proc.img');
    await writeFile(path, good);
    const moduleUrl = pathToFileURL(join(import.meta.dirname, '..', 'src', 'kernel', 'image.js')).href;
    const child = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { writeImage } from ${JSON.stringify(moduleUrl)};
         const image = ${JSON.stringify({ ...sampleImage(4), buffers: [], bindGroups: [], querySets: [], queued: [] })};
         image.buffers = [{ id: 1, label: 'big', size: 16 << 20, usage: 128, contents: new Uint8Array(16 << 20).fill(9) }];
         await writeImage(${JSON.stringify(path)}, image, {
           onProgress: (done) => { if (done > 8 << 20) process.kill(process.pid, 'SIGKILL'); },
         });`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    assert.deepEqual(await readFile(path), good);
    assert.deepEqual(await readImage(path), sampleImage());
    // A killed writer cannot clean up: its partial temporary file is left, never the image.
    const names = (await readdir(sub)).sort();
    assert.equal(names.length, 2);
    assert.match(names[1], /^proc\.img\.tmp-\d+-[0-9a-f]{12}$/);
  });
});
