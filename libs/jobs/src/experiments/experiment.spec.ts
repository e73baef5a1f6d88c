import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadExperiments } from './catalog';
import {
  compileParams,
  describeGpuRequest,
  ExperimentFileError,
  gpuRequestOf,
  parseExperiment,
  parseGpuMemory,
  parseMemory,
  patternRegExp,
} from './experiment';

const HELLO = `
name: hello
runner: process
command: ["sh", "-c", "true"]
timeout: 2m
params:
  type: object
  properties: { name: { type: string }, epochs: { type: integer, minimum: 1 } }
  required: [name]
`;

function dirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-exp-'));
  for (const [n, t] of Object.entries(files)) writeFileSync(path.join(dir, n), t);
  return dir;
}

describe('experiment files', () => {
  it('reads a valid file with its defaults and timeout', () => {
    const e = parseExperiment('/x/hello.yaml', HELLO);
    expect(e).toMatchObject({
      name: 'hello',
      runner: 'process',
      gpus: 0,
      attempts: 1,
      timeoutMs: 120_000,
    });
  });

  it('names the file, the field and the problem when a field is wrong', () => {
    const dir = dirWith({ 'hello.yaml': HELLO.replace('runner: process', 'runner: podman') });
    expect(() => loadExperiments(dir)).toThrow(ExperimentFileError);
    expect(() => loadExperiments(dir)).toThrow(
      /hello\.yaml: runner must be one of docker, process/,
    );
  });

  it('names a missing required field', () => {
    expect(() => parseExperiment('/x/hello.yaml', HELLO.replace(/command:.*\n/, ''))).toThrow(
      /hello\.yaml: command is required/,
    );
  });

  it('refuses a docker experiment without an image', () => {
    expect(() =>
      parseExperiment('/x/hello.yaml', HELLO.replace('runner: process', 'runner: docker')),
    ).toThrow(/image is required/);
  });

  it('refuses a bad timeout and a name that differs from the file', () => {
    expect(() => parseExperiment('/x/hello.yaml', HELLO.replace('2m', 'soon'))).toThrow(
      /timeout expected a duration/,
    );
    expect(() => parseExperiment('/x/other.yaml', HELLO)).toThrow(
      /name must match the file name 'other'/,
    );
  });

  it('refuses a params schema that is not JSON Schema', () => {
    const dir = dirWith({ 'hello.yaml': HELLO.replace('type: integer', 'type: whole') });
    expect(() => loadExperiments(dir)).toThrow(/params is not a valid JSON Schema/);
  });

  it('validates job params against the schema, naming the field', () => {
    const cat = loadExperiments(dirWith({ 'hello.yaml': HELLO }));
    expect(cat.validateParams('hello', { name: 'a' })).toBeUndefined();
    expect(cat.validateParams('hello', {})).toEqual({
      field: 'params.name',
      problem: 'is required',
    });
    expect(cat.validateParams('hello', { name: 'a', epochs: 0 })).toEqual({
      field: 'params.epochs',
      problem: 'must be >= 1',
    });
  });

  it('reads the docker limits: network, memory and cpus', () => {
    const docker = HELLO.replace('runner: process', 'runner: docker\nimage: busybox:latest');
    expect(parseExperiment('/x/hello.yaml', docker)).toMatchObject({
      network: false,
      image: 'busybox:latest',
    });
    const e = parseExperiment('/x/hello.yaml', `${docker}network: true\nmemory: 1.5g\ncpus: 0.5\n`);
    expect(e).toMatchObject({ network: true, memoryBytes: 1.5 * 1024 ** 3, cpus: 0.5 });
    expect(parseMemory('512m')).toBe(512 * 1024 * 1024);
    expect(parseMemory('2048')).toBe(2048);
  });

  it('refuses docker limits on a process experiment and a memory Docker would refuse', () => {
    expect(() => parseExperiment('/x/hello.yaml', `${HELLO}memory: 512m\n`)).toThrow(
      /hello\.yaml: memory applies only to `runner: docker`/,
    );
    const docker = HELLO.replace('runner: process', 'runner: docker\nimage: busybox');
    expect(() => parseExperiment('/x/hello.yaml', `${docker}memory: 1m\n`)).toThrow(
      /memory must be at least 6m/,
    );
    expect(() => parseExperiment('/x/hello.yaml', `${docker}memory: lots\n`)).toThrow(
      /memory must be a size like 512m or 2g, or unlimited/,
    );
    expect(() => parseExperiment('/x/hello.yaml', `${docker}cpus: 0\n`)).toThrow(
      /cpus must be > 0/,
    );
  });

  it('reads the container defaults each experiment may override', () => {
    const docker = HELLO.replace('runner: process', 'runner: docker\nimage: busybox');
    expect(parseExperiment('/x/hello.yaml', docker)).not.toHaveProperty('pids');
    const e = parseExperiment(
      '/x/hello.yaml',
      `${docker}memory: unlimited\npids: 64\ntmp: 2g\nrootfs: writable\nuser: root\n` +
        'ulimits:\n  nofile: 1024\n  memlock: unlimited\n  stack: { soft: 8388608, hard: unlimited }\n',
    );
    expect(e).toMatchObject({
      memoryBytes: 'unlimited',
      pids: 64,
      tmpBytes: 2 * 1024 ** 3,
      writableRootfs: true,
      runAsRoot: true,
      ulimits: {
        nofile: { soft: 1024, hard: 1024 },
        memlock: { soft: -1, hard: -1 },
        stack: { soft: 8388608, hard: -1 },
      },
    });
    expect(parseExperiment('/x/hello.yaml', `${docker}pids: unlimited\n`).pids).toBe('unlimited');
  });

  it.each([
    ['pids: 0', /pids must be a whole number from 1 to 4194304, or unlimited/],
    ['pids: 1.5', /pids must be a whole number/],
    ['pids: lots', /pids must be a whole number/],
    ['ulimits: { files: 10 }', /ulimits\.files is not a ulimit: use one of core, cpu/],
    [
      'ulimits: { nofile: -5 }',
      /ulimits\.nofile must be a whole number of at least 0, or unlimited/,
    ],
    ['ulimits: { nofile: { soft: 10, hard: 5 } }', /ulimits\.nofile soft must not be above hard/],
    ['ulimits: { nofile: { soft: 1, max: 5 } }', /ulimits\.nofile\.max is not allowed/],
    ['tmp: huge', /tmp must be a size like 512m or 2g/],
    ['tmp: 10k', /tmp must be at least 1m/],
    ['rootfs: rw', /rootfs must be one of read-only, writable/],
    [
      'user: admin',
      /user must be root, or left out \(the job then runs as JOB_UID, never as uid 0\)/,
    ],
    ['memory: 512', /memory must be a size like 512m or 2g, or unlimited/],
    ['env: { EPOCHS: 10 }', /env\.EPOCHS must be a string: quote it, like '10'/],
    ['shm: 1g', /shm is not a field of experiment files: use one of name, runner, image, command/],
  ])('refuses %s with a message that says what to write', (line, message) => {
    const docker = HELLO.replace('runner: process', 'runner: docker\nimage: busybox');
    expect(() => parseExperiment('/x/hello.yaml', `${docker}${line}\n`)).toThrow(message);
  });

  it.each([
    ['timeout: 2m', 'timeout: 30', /timeout must be a duration with its unit, like 30s, 5m or 2h/],
    [
      /command: .*/,
      'command: python train.py',
      /command must be a list of strings, like \[python, train\.py\]: the program and its arguments, no shell/,
    ],
  ])('refuses %s written as %s with a message that says what to write', (from, to, message) => {
    expect(() => parseExperiment('/x/hello.yaml', HELLO.replace(from, to))).toThrow(message);
  });

  it.each(['pids: 64', 'ulimits: { nofile: 10 }', 'tmp: 1g', 'rootfs: writable', 'user: root'])(
    'refuses %s on a process experiment: only a container can enforce it',
    (line) => {
      expect(() => parseExperiment('/x/hello.yaml', `${HELLO}${line}\n`)).toThrow(
        /applies only to `runner: docker`/,
      );
    },
  );
});

describe('experiment GPU size: gpu_memory and mig_profile', () => {
  const withGpu = (extra: string) => parseExperiment('/x/hello.yaml', `${HELLO}${extra}\n`);

  it('mig_profile alone asks for one MIG instance of that profile', () => {
    const e = withGpu('mig_profile: 3g.40gb');
    expect(e).toMatchObject({ gpus: 1, migProfile: '3g.40gb' });
    expect(gpuRequestOf(e)).toEqual({ count: 1, migProfile: '3g.40gb' });
    expect(describeGpuRequest(e)).toBe('1 GPU(s) with mig_profile 3g.40gb');
    expect(withGpu('mig_profile: 1c.3g.71gb').migProfile).toBe('1c.3g.71gb');
    expect(withGpu('mig_profile: 1g.10gb+me').migProfile).toBe('1g.10gb+me');
  });

  it('gpu_memory reads GB as decimal (as MIG profiles are named) and GiB as binary', () => {
    expect(withGpu('gpus: 2\ngpu_memory: 20GB')).toMatchObject({ gpus: 2, gpuMemoryBytes: 20e9 });
    expect(withGpu('gpu_memory: 40GiB').gpuMemoryBytes).toBe(40 * 1024 ** 3);
    expect(withGpu('gpu_memory: 9.5gb').gpuMemoryBytes).toBe(9.5e9);
    expect(parseGpuMemory('512MiB')).toBe(512 * 1024 ** 2);
    // A 2g.20gb instance has 20096 MiB: 20GB (19073 MiB) fits it, 20GiB (20480 MiB) would not.
    expect(parseGpuMemory('20GB')).toBeLessThan(20096 * 1024 ** 2);
    const both = withGpu('gpu_memory: 20GB\nmig_profile: 2g.20gb');
    expect(gpuRequestOf(both)).toEqual({ count: 1, memoryBytes: 20e9, migProfile: '2g.20gb' });
    expect(describeGpuRequest(both)).toBe(
      '1 GPU(s) with mig_profile 2g.20gb and gpu_memory 19074 MiB or more',
    );
  });

  it('refuses a size without GPUs, a size without a unit and a profile nvidia-smi would not print', () => {
    expect(() => withGpu('gpus: 0\nmig_profile: 3g.40gb')).toThrow(
      /hello\.yaml: mig_profile needs gpus of 1 or more/,
    );
    expect(() => withGpu('gpu_memory: 20')).toThrow(
      /hello\.yaml: gpu_memory must be a size with its unit, like 20GB or 40GiB/,
    );
    expect(() => withGpu('gpu_memory: 20 GB; rm')).toThrow(/gpu_memory must be a size/);
    expect(() => withGpu('mig_profile: big')).toThrow(
      /hello\.yaml: mig_profile must be a MIG profile as nvidia-smi -L prints it, like 3g\.40gb/,
    );
    expect(() => withGpu('mig_profile: 3g.40gb,all')).toThrow(/mig_profile must be a MIG profile/);
    expect(() => withGpu('mig_profile: 3')).toThrow(/mig_profile must be a MIG profile/);
  });

  it('leaves an experiment without a size as before', () => {
    const e = withGpu('gpus: 2');
    expect(e).not.toHaveProperty('gpuMemoryBytes');
    expect(e).not.toHaveProperty('migProfile');
    expect(gpuRequestOf(e)).toEqual({ count: 2 });
  });
});

describe('params patterns (patternRegExp)', () => {
  it('compiles a pattern without the u flag unless it needs it, so that V8 may fall back to its linear engine', () => {
    expect(patternRegExp('^(a+)+$', 'u').flags).toBe('');
    expect(patternRegExp('^[a-z0-9-]+$', 'u').flags).toBe('');
    expect(patternRegExp('^\\p{L}+$', 'u').flags).toBe('u');
    expect(patternRegExp('^\\P{L}+$', 'u').flags).toBe('u');
    expect(patternRegExp('^\\u{1F600}$', 'u').flags).toBe('u');
    expect(patternRegExp('^😀+$', 'u').flags).toBe('u');
    // Ajv compiles with u only when its unicodeRegExp option is on: nothing to keep otherwise.
    expect(patternRegExp('^\\p{L}+$', '').flags).toBe('');
  });

  it('checks params against a pattern as written, with or without the u flag', () => {
    const exp = parseExperiment(
      'p.yaml',
      [
        'name: p',
        'runner: process',
        'command: ["true"]',
        'params:',
        '  type: object',
        '  properties:',
        "    id: { type: string, pattern: '^[a-z]{2}-\\d+$' }",
        "    word: { type: string, pattern: '^\\p{L}+$' }",
        '',
      ].join('\n'),
    );
    const validate = compileParams(exp);
    expect(validate({ id: 'ab-12', word: 'Grüße' })).toBe(true);
    expect(validate({ id: 'AB-12' })).toBe(false);
    expect(validate({ word: 'x1' })).toBe(false);
  });
});
