'use strict';
// `node -r scripts/ts-register.js file.ts`: runs TypeScript sources directly, compiled by
// @swc/core (a dev dependency) as they are required. Only for code run from the sources, such as
// the process runner's spawn helper under jest; the built daemons run dist/ and never load this.
const { readFileSync } = require('node:fs');
const { transformSync } = require('@swc/core');

require.extensions['.ts'] = (module, filename) => {
  const { code } = transformSync(readFileSync(filename, 'utf8'), {
    filename,
    module: { type: 'commonjs' },
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
    sourceMaps: 'inline',
  });
  module._compile(code, filename);
};
