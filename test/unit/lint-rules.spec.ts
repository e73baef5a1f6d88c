import { execFileSync } from 'node:child_process';
import path from 'node:path';

// Proves that the layout rules of eslint.config.mjs are on: each case lints a line of code as if
// it were a file at that path and expects (or not) the no-restricted-imports error.
const root = path.join(__dirname, '..', '..');

// ESLint loads its flat config with a dynamic import, which jest's VM does not allow: lint in a
// child node process, the way `npm run lint` does.
const LINT = `
const { ESLint } = require('eslint');
const tseslint = require('typescript-eslint');
const [file, code] = JSON.parse(process.argv[1]);
// The probe file does not exist, so type-aware parsing is off; the import rules need no types.
const overrideConfig = [
  tseslint.configs.disableTypeChecked,
  { languageOptions: { parserOptions: { projectService: false } } },
];
new ESLint({ cwd: process.cwd(), overrideConfig }).lintText(code, { filePath: file }).then(([r]) => {
  process.stdout.write(JSON.stringify(r.messages));
});`;

async function restrictedImportErrors(file: string, code: string): Promise<string[]> {
  const out = execFileSync(
    process.execPath,
    ['-e', LINT, JSON.stringify([path.join(root, file), code])],
    {
      cwd: root,
      encoding: 'utf8',
    },
  );
  const messages = JSON.parse(out) as { ruleId: string | null; message: string; fatal?: boolean }[];
  const fatal = messages.find((m) => m.fatal);
  if (fatal) throw new Error(`eslint could not parse the probe: ${fatal.message}`);
  return messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('import direction lint rules', () => {
  jest.setTimeout(60_000);

  it('fails when a lib imports an app', async () => {
    const errors = await restrictedImportErrors(
      'libs/jobs/src/lint-probe.ts',
      "import { startWorker } from '../../../apps/worker/src/main';\nexport const x = startWorker;\n",
    );
    expect(errors).toEqual([expect.stringContaining('libs must never import apps')]);
  });

  it('fails when one app imports another', async () => {
    const errors = await restrictedImportErrors(
      'apps/relay/src/lint-probe.ts',
      "import { startWorker } from '../../worker/src/main';\nexport const x = startWorker;\n",
    );
    expect(errors).toEqual([expect.stringContaining('apps/relay must not import apps/worker')]);
  });

  it('fails when the tunnel protocol imports anything but node:crypto and tweetnacl', async () => {
    const errors = await restrictedImportErrors(
      'libs/tunnel/src/protocol/lint-probe.ts',
      "import { readFileSync } from 'node:fs';\nexport const x = readFileSync;\n",
    );
    expect(errors).toEqual([
      expect.stringContaining('imports nothing but node:crypto and tweetnacl'),
    ]);
  });

  it('lets an app import a lib, and the protocol import node:crypto', async () => {
    expect(
      await restrictedImportErrors(
        'apps/relay/src/lint-probe.ts',
        "import { loadRelayConfig } from '../../../libs/config/src';\nexport const x = loadRelayConfig;\n",
      ),
    ).toEqual([]);
    expect(
      await restrictedImportErrors(
        'libs/tunnel/src/protocol/lint-probe.ts',
        "import { randomBytes } from 'node:crypto';\nexport const x = randomBytes;\n",
      ),
    ).toEqual([]);
  });
});
