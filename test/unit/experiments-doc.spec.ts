import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import {
  compileParams,
  EXPERIMENT_FIELDS,
  loadExperiments,
  parseExperiment,
  REQUIRED_EXPERIMENT_FIELDS,
} from '../../libs/jobs/src';

// docs/EXPERIMENTS.md is the page an experiment author reads instead of the parser: this keeps
// it true to the parser (libs/jobs/src/experiments/experiment.ts), as env-template.spec.ts does
// for .env.template.
const ROOT = path.join(__dirname, '..', '..');
const doc = readFileSync(path.join(ROOT, 'docs', 'EXPERIMENTS.md'), 'utf8');

/** The text of the section `## title`, up to the next `## `. */
function section(title: string): string {
  const start = doc.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`docs/EXPERIMENTS.md has no section "## ${title}"`);
  const end = doc.indexOf('\n## ', start + 1);
  return doc.slice(start, end < 0 ? undefined : end);
}

/** A table's body rows, each cell trimmed and stripped of its code span (`x` or `` x ``). */
function rows(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('| ') && !/^\|\s*-/.test(l))
    .slice(1)
    .map((l) =>
      l
        .slice(1, -1)
        .split(' | ')
        .map((c) => c.trim().replace(/^``? ?(.*?) ?``?$/, '$1')),
    );
}

/** The YAML examples of the page that are whole experiments. */
const examples = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)]
  .map((m) => m[1])
  .filter((y) => /^name: /m.test(y));
const train = parseYaml(examples.find((y) => /^name: train$/m.test(y))!) as Record<string, unknown>;

/** `train` with `change` (a YAML mapping, braces optional; null leaves a field out). */
function trainWith(change: string): string {
  const d: Record<string, unknown> = { ...train };
  const given = parseYaml(change.startsWith('{') ? change : `{ ${change} }`) as object;
  for (const [k, v] of Object.entries(given)) {
    if (v === null) delete d[k];
    else d[k] = v;
  }
  return stringify(d);
}

/** Parses an experiment file's text as the worker does, params schema included. */
function check(file: string, text: string): void {
  compileParams(parseExperiment(file, text));
}

describe('docs/EXPERIMENTS.md', () => {
  const fields = rows(section('Fields'));
  const byField = new Map(
    fields.map(([name, , dflt, runner, example]) => [name, { dflt, runner, example }]),
  );

  it('has one row for every field the parser accepts, and none other', () => {
    expect([...byField.keys()].sort()).toEqual([...EXPERIMENT_FIELDS].sort());
  });

  it('says "required" of exactly the required fields', () => {
    const required = fields.filter(([, , dflt]) => dflt === 'required').map(([n]) => n);
    expect(required.sort()).toEqual([...REQUIRED_EXPERIMENT_FIELDS].sort());
  });

  it("each field's example is accepted by the runners its row names; docker-only ones are refused on a process experiment", () => {
    const processBase = trainWith('{ runner: process, image: null, memory: null }');
    for (const [field, { runner, example }] of byField) {
      const value = parseYaml(example) as unknown;
      const text = (base: string) => stringify({ ...(parseYaml(base) as object), [field]: value });
      const file = `/x/${field === 'name' ? String(value) : 'train'}.yaml`;
      expect([field, runner]).toEqual([field, expect.stringMatching(/^(both|docker)$/)]);
      expect(() => check(file, text(trainWith('{}')))).not.toThrow();
      // `image` is not refused on a process experiment (only not used); `runner` picks the base.
      if (runner === 'docker' && field !== 'image') {
        expect(() => check(file, text(processBase))).toThrow(
          `${field} applies only to \`runner: docker\``,
        );
      } else if (runner === 'both' && field !== 'runner') {
        expect(() => check(file, text(processBase))).not.toThrow();
      }
    }
  });

  it('every example experiment on the page, and in examples/experiments, is valid', () => {
    expect(examples.length).toBeGreaterThanOrEqual(2);
    for (const y of examples) {
      const name = /^name: (.*)$/m.exec(y)![1];
      expect(() => check(`/x/${name}.yaml`, y)).not.toThrow();
    }
    const installed = loadExperiments(path.join(ROOT, 'examples', 'experiments')).list();
    expect(installed.map((e) => e.name)).toEqual(['hello', 'hello-docker']);
  });

  it('"What a bad value says" is what the worker says, for every field', () => {
    const table = rows(section('What a bad value says'));
    expect(table.length).toBeGreaterThan(0);
    for (const [change, says] of table) {
      const prefix = 'experiment file /etc/gpu-sidecar/experiments/train.yaml: ';
      let message = '(accepted)';
      try {
        check('/etc/gpu-sidecar/experiments/train.yaml', trainWith(change));
      } catch (err) {
        message = (err as Error).message;
      }
      // A row ending in ", ..." gives the start of a long message.
      const expected = says.endsWith(', ...') ? says.slice(0, -3) : says;
      const got = says.endsWith(', ...')
        ? message.slice(0, prefix.length + expected.length)
        : message;
      expect([change, got]).toEqual([change, prefix + expected]);
    }
    const named = new Set(table.map(([, says]) => /^[a-z_]+/.exec(says)![0]));
    expect(EXPERIMENT_FIELDS.filter((f) => !named.has(f))).toEqual([]);
  });
});
