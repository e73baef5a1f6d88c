import { execFileSync } from 'node:child_process';
import path from 'node:path';

// Proves that the layout rules of eslint.config.mjs are on: each case lints a line of code as if
// it were a file at that path and expects (or not) the no-restricted-imports error.
const root = path.join(__dirname, '..', '..');

// ESLint loads its flat config with a dynamic import, which jest's VM does not allow: lint in a
// child node process, the way `npm run lint` does.
// Several probes are linted by one process (one ESLint start).
const LINT = `
const { ESLint } = require('eslint');
const tseslint = require('typescript-eslint');
const probes = JSON.parse(process.argv[1]);
// The probe file does not exist, so type-aware parsing is off; the import rules need no types.
const overrideConfig = [
  tseslint.configs.disableTypeChecked,
  { languageOptions: { parserOptions: { projectService: false } } },
];
const eslint = new ESLint({ cwd: process.cwd(), overrideConfig });
(async () => {
  const out = [];
  for (const [file, code] of probes) out.push((await eslint.lintText(code, { filePath: file }))[0].messages);
  process.stdout.write(JSON.stringify(out));
})();`;

type Message = { ruleId: string | null; message: string; fatal?: boolean };

/** The no-restricted-imports messages for each probe: [file as if in the repository, its code]. */
function restrictedImportErrorsOf(probes: [string, string][]): string[][] {
  const out = execFileSync(
    process.execPath,
    ['-e', LINT, JSON.stringify(probes.map(([file, code]) => [path.join(root, file), code]))],
    { cwd: root, encoding: 'utf8' },
  );
  return (JSON.parse(out) as Message[][]).map((messages) => {
    const fatal = messages.find((m) => m.fatal);
    if (fatal) throw new Error(`eslint could not parse the probe: ${fatal.message}`);
    return messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
  });
}

async function restrictedImportErrors(file: string, code: string): Promise<string[]> {
  return restrictedImportErrorsOf([[file, code]])[0];
}

/** A probe that imports `name` from `from` and uses it. */
const importing = (name: string, from: string) =>
  `import { ${name} } from '${from}';\nexport const x = ${name};\n`;
const DEEP = 'import another lib through its src/index.ts';

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

  it("fails when a lib, an app or a spec next to the code reaches into another lib's files", () => {
    expect(
      restrictedImportErrorsOf([
        ['libs/jobs/src/runner/lint-probe.ts', importing('Logger', '../../../config/src/logger')],
        ['libs/tunnel/src/lint-probe.ts', importing('redactUrl', '../../config/src/redact')],
        [
          'libs/health/src/lint-probe.spec.ts',
          importing('createRegistry', '../../metrics/src/registry'),
        ],
        [
          'apps/cli/src/lint-probe.ts',
          importing('generateKeyFile', '../../../libs/tunnel/src/keys'),
        ],
        [
          'apps/worker/src/health/lint-probe.ts',
          importing('JobMetrics', '../../../../libs/jobs/src/jobs.metrics'),
        ],
      ]),
    ).toEqual([
      [expect.stringContaining(DEEP)],
      [expect.stringContaining(DEEP)],
      [expect.stringContaining(DEEP)],
      [expect.stringContaining(DEEP)],
      [expect.stringContaining(DEEP)],
    ]);
  });

  it('fails when a lib imports a sibling, or a floor lib anything but libs/config', () => {
    const [health, metrics, config] = restrictedImportErrorsOf([
      ['libs/jobs/src/lint-probe.ts', importing('probeDisk', '../../health/src')],
      ['libs/metrics/src/lint-probe.ts', importing('metricReason', '../../tunnel/src')],
      ['libs/config/src/lint-probe.ts', importing('createRegistry', '../../metrics/src')],
    ]);
    expect(health).toEqual([
      expect.stringContaining('libs/jobs may import libs/config, libs/docker, libs/metrics'),
    ]);
    expect(metrics).toEqual([expect.stringContaining('libs/metrics may import libs/config')]);
    expect(config).toEqual([expect.stringContaining('libs/config may import no other lib')]);
  });

  it("lets a lib import the floor through its index, and leaves test/ free to reach a lib's internals", () => {
    expect(
      restrictedImportErrorsOf([
        ['libs/jobs/src/runner/lint-probe.ts', importing('dockerClient', '../../../docker/src')],
        ['libs/health/src/lint-probe.ts', importing('withDeadline', '../../config/src')],
        ['apps/worker/src/lint-probe.ts', importing('JobMetrics', '../../../libs/jobs/src')],
        [
          'test/integration/lint-probe.int-spec.ts',
          importing('writeTestExperiments', '../../libs/jobs/src/testing/client'),
        ],
      ]),
    ).toEqual([[], [], [], []]);
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
