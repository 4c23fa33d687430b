// Writes docs/protocol.md from the message table (run after `npm run build`).
import { writeFileSync } from 'node:fs';
import { renderReference } from '../dist/src/protocol/reference.js';
writeFileSync(new URL('../docs/protocol.md', import.meta.url), renderReference());
console.log('wrote docs/protocol.md');
