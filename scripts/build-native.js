#!/usr/bin/env node
'use strict';
/**
 * Builds the optional native frame cipher (native/frame-cipher) with node-gyp. npm runs this at
 * `npm ci` and `npm install` (package.json "install"); `npm run build:native` runs it again.
 *
 * Optional on purpose: it needs a C compiler, make and python3. Where they are missing the
 * build fails, this prints why and exits 0, and the tunnel seals frames with node:crypto
 * (same wire, more CPU per frame; the daemons log which one they use). GPU_SIDECAR_NATIVE:
 *   require  a failed build fails the install (the project's CI sets it)
 *   off      nothing is built (and the daemons do not load it)
 *
 * node-gyp comes with npm: npm hands its path to scripts it runs (npm_config_node_gyp); run by
 * hand, it is looked up next to this node's npm. Node's headers: where this node has them next
 * to its binary (official tarballs and images: PREFIX/include/node; Debian: /usr/include/node),
 * they are used, so that the build needs no download; else node-gyp fetches them.
 */
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dir = path.join(root, 'native', 'frame-cipher');
const mode = process.env.GPU_SIDECAR_NATIVE ?? '';

function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
    '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
  ];
  return candidates.find((p) => p && existsSync(p));
}

function nodeDir() {
  if (process.env.npm_config_nodedir) return undefined; // npm passes it on itself
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function main() {
  if (mode === 'off') return console.log('build-native: GPU_SIDECAR_NATIVE=off, not built');
  const gyp = nodeGyp();
  const fail = (why) => {
    const hint =
      'the tunnel will seal frames with node:crypto (same wire, more CPU per frame); to build ' +
      'it, install a C compiler, make and python3, then run: npm run build:native';
    if (mode === 'require') {
      console.error(`build-native: ${why} (GPU_SIDECAR_NATIVE=require)`);
      process.exit(1);
    }
    console.warn(`build-native: ${why}; ${hint}`);
  };
  if (!gyp) return fail('node-gyp not found');
  const nodedir = nodeDir();
  const args = [gyp, 'rebuild', `--directory=${dir}`, ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) return fail(`node-gyp rebuild failed (exit ${r.status ?? r.signal})`);
  console.log(
    `build-native: built ${path.relative(root, path.join(dir, 'build', 'Release', 'frame_cipher.node'))}`,
  );
}

main();
