#!/usr/bin/env node
'use strict';
// The package's bin: runs the compiled command line. `npm run build` makes dist/.
const path = require('node:path');
const main = path.join(__dirname, '..', 'dist', 'apps', 'cli', 'src', 'main.js');
try {
  require.resolve(main);
} catch {
  process.stderr.write('gpu-sidecar: not built yet; run `npm ci && npm run build` first\n');
  process.exit(1);
}
require(main)
  .buildProgram()
  .parseAsync(process.argv)
  .catch((err) => {
    process.stderr.write(`gpu-sidecar: ${err.message}\n`);
    process.exit(1);
  });
