#!/usr/bin/env node
// The `gpunix` command. Built code lives in dist/: run `npm run build` (setup does) first.
import('../dist/src/cli/main.js').catch((error) => {
  if (error?.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/src/cli')) {
    process.stderr.write('gpunix: not built yet; run `npm run build` (or scripts/setup.sh) first\n');
    process.exit(1);
  }
  throw error;
});
