// Lint rules that enforce what the layout promises (docs/ARCHITECTURE.md, "Layout and the direction of imports"):
// apps import libs, libs never import apps, apps never import each other (apps/cli is the one
// composition root and may start either daemon); a lib imports the floor (config; docker and
// metrics over it) and never a sibling; another lib is imported through its src/index.ts only;
// and libs/tunnel's protocol imports nothing but node:crypto and tweetnacl. The spec files next
// to the code follow the same rules; test/ does not (tests drive a lib's internals and its
// testing/ helpers on purpose). test/unit/lint-rules.spec.ts proves these rules fire, and
// `npm run graph` (scripts/import-graph.js) prints the graph they keep free of cycles.
import { readdirSync } from 'node:fs';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const appPatterns = (except) =>
  ['relay', 'worker', 'cli']
    .filter((a) => a !== except)
    .map((a) => ({
      group: [`**/apps/${a}/**`, `**/apps/${a}`, `../../${a}/**`, `../${a}/**`],
      message: `apps/${except ?? 'libs'} must not import apps/${a}: move shared code into a lib.`,
    }));

/** Every lib: each folder of libs/. */
const LIBS = readdirSync(new URL('./libs/', import.meta.url), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();
/** The floor: libs that every other lib may import. config imports no lib; the rest only config. */
const FLOOR = ['config', 'docker', 'metrics'];
const mayImport = (lib) =>
  lib === 'config' ? [] : FLOOR.includes(lib) ? ['config'] : FLOOR.filter((l) => l !== lib);

/** Another lib's file other than its src/index.ts: `../../config/src/logger`, not `../../config/src`. */
const deepImport = (self) => ({
  regex: `(^|/)(${LIBS.filter((l) => l !== self).join('|')})/src/.`,
  message:
    'import another lib through its src/index.ts (export what is needed there), never one of its files.',
});

const noApps = {
  group: ['**/apps/**', '**/apps'],
  message: 'libs must never import apps (docs/ARCHITECTURE.md: layout).',
};

/** The libs `lib` may not import at all. */
const otherLibs = (lib) => {
  const banned = LIBS.filter((l) => l !== lib && !mayImport(lib).includes(l));
  const floor = mayImport(lib).map((l) => `libs/${l}`);
  return banned.length === 0
    ? []
    : [
        {
          regex: `(^|/)(${banned.join('|')})/src(/|$)`,
          message: `libs/${lib} may import ${floor.length ? floor.join(', ') : 'no other lib'}: libs over the floor (config, docker, metrics) never import each other; the apps put them together.`,
        },
      ];
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', '.local/**', 'test/fixtures/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/unbound-method': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
      '@typescript-eslint/no-redundant-type-constituents': 'off',
    },
  },
  ...LIBS.map((lib) => ({
    files: [`libs/${lib}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [noApps, deepImport(lib), ...otherLibs(lib)] },
      ],
    },
  })),
  {
    files: ['libs/tunnel/src/protocol/**/*.ts'],
    ignores: ['**/*.spec.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!node:crypto$|tweetnacl$|\\./|\\.\\./)',
              message: 'the tunnel protocol imports nothing but node:crypto and tweetnacl.',
            },
            {
              group: ['../../../**', '**/apps/**'],
              message: 'the tunnel protocol is self-contained.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['apps/relay/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...appPatterns('relay'), deepImport()] }],
    },
  },
  {
    files: ['apps/worker/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...appPatterns('worker'), deepImport()] }],
    },
  },
  {
    files: ['apps/cli/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [deepImport()] }] },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      parserOptions: { projectService: false, project: false },
      sourceType: 'commonjs',
      globals: {
        require: 'readonly',
        module: 'writable',
        process: 'readonly',
        console: 'readonly',
        __dirname: 'readonly',
        Buffer: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        URL: 'readonly',
        fetch: 'readonly',
        performance: 'readonly',
      },
    },
  },
  { files: ['**/*.js', '**/*.cjs'], rules: { '@typescript-eslint/no-require-imports': 'off' } },
  { files: ['**/*.mjs'], languageOptions: { sourceType: 'module' } },
  {
    files: ['**/*.spec.ts', 'test/**/*.ts'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
