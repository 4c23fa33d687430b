// Renders the protocol reference (docs/protocol.md) from the message table, so the document can
// never disagree with the codec. `npm run docs:protocol` writes it; a test checks it is current.

import { FIELD_KINDS, MESSAGES, MessageName, PROTOCOL_VERSION, DEFAULT_MAX_FRAME_BYTES } from './messages.js';

const KIND_LAYOUT: Record<(typeof FIELD_KINDS)[number], string> = {
  u8: '1 byte, unsigned',
  u16: '2 bytes, unsigned, little-endian',
  u32: '4 bytes, unsigned, little-endian',
  f64: '8 bytes, IEEE-754 double, little-endian',
  bool: '1 byte: 0 or 1 (anything else is malformed)',
  str: 'u32 byte length, then that many bytes of UTF-8 (invalid UTF-8 is malformed)',
  bytes: 'u32 length, then that many raw bytes',
  json: 'u32 byte length, then UTF-8 JSON text',
  id: 'u32 slot, then u32 generation (below 2^21): a client-assigned object id',
  ids: 'u32 count, then that many ids',
};

export function renderReference(): string {
  const lines: string[] = [];
  lines.push('# The gpunix wire protocol, message by message');
  lines.push('');
  lines.push('Generated from `src/protocol/messages.ts` by `npm run docs:protocol`: do not edit by hand.');
  lines.push('How sessions, ids and errors work is in [daemon.md](daemon.md); the WebGPU command encoding in [protocol-webgpu.md](protocol-webgpu.md).');
  lines.push('');
  lines.push(`Protocol version: **${PROTOCOL_VERSION}**. Default frame size limit: ${DEFAULT_MAX_FRAME_BYTES} bytes.`);
  lines.push('');
  lines.push('## Framing');
  lines.push('');
  lines.push('Every message is one frame: `u32 length` (little-endian; the bytes after this field), `u16 code`, then the');
  lines.push('fields in the order listed below, with no padding. A frame whose length exceeds the limit, an unknown');
  lines.push('code, a field running past the frame\'s end, or bytes left after the last field is a protocol error:');
  lines.push('the daemon answers `ProtocolError` with a `GPUNIX_E_PROTOCOL_*` code and closes that session only.');
  lines.push('The first frame of a session must be `Hello`.');
  lines.push('');
  lines.push('| kind | layout |');
  lines.push('| --- | --- |');
  for (const kind of FIELD_KINDS) lines.push(`| \`${kind}\` | ${KIND_LAYOUT[kind]} |`);
  lines.push('');
  const groups: [string, (name: MessageName) => boolean][] = [
    ['Session and replies', (n) => MESSAGES[n].code < 16],
    ['WebGPU (process sessions)', (n) => MESSAGES[n].code >= 16 && MESSAGES[n].code < 64],
    ['Control (operator sessions)', (n) => MESSAGES[n].code >= 64],
  ];
  const names = Object.keys(MESSAGES) as MessageName[];
  for (const [title, belongs] of groups) {
    lines.push(`## ${title}`);
    lines.push('');
    lines.push('| code | message | from | session | fields | answered by |');
    lines.push('| ---: | --- | --- | --- | --- | --- |');
    for (const name of names.filter(belongs)) {
      const spec = MESSAGES[name] as { code: number; from: string; role: string; fields: Record<string, string>; reply?: string };
      const fields = Object.entries(spec.fields).map(([f, k]) => `\`${f}\`: ${k}`).join(', ') || '(none)';
      lines.push(`| ${spec.code} | [${name}](#${name.toLowerCase()}) | ${spec.from} | ${spec.role} | ${fields} | ${spec.reply ?? '—'} |`);
    }
    lines.push('');
    for (const name of names.filter(belongs)) {
      lines.push(`### ${name}`);
      lines.push('');
      lines.push(MESSAGES[name].doc);
      lines.push('');
    }
  }
  return lines.join('\n');
}
