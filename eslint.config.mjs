// Lint rules that enforce what the layout promises (docs/ARCHITECTURE.md, "Layout and the direction of imports"):
// apps import libs, libs never import apps, apps never import each other (apps/cli is the one
// composition root and may start either daemon), and libs/tunnel's protocol imports nothing but
// node:crypto and tweetnacl. test/lint-rules.spec proves these rules fire.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const appPatterns = (except) =>
  ['relay', 'worker', 'cli']
    .filter((a) => a !== except)
    .map((a) => ({
      group: [`**/apps/${a}/**`, `**/apps/${a}`, `../../${a}/**`, `../${a}/**`],
      message: `apps/${except ?? 'libs'} must not import apps/${a}: move shared code into a lib.`,
    }));

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
  {
    files: ['libs/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/apps/**', '**/apps'],
              message: 'libs must never import apps (docs/ARCHITECTURE.md: layout).',
            },
          ],
        },
      ],
    },
  },
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
    rules: { 'no-restricted-imports': ['error', { patterns: appPatterns('relay') }] },
  },
  {
    files: ['apps/worker/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: appPatterns('worker') }] },
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
