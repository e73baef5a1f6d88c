import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ExperimentFileError, loadExperiments, parseExperiment, parseMemory } from './experiment';

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
    ['user: admin', /user must be one of root/],
  ])('refuses %s with a message that says what to write', (line, message) => {
    const docker = HELLO.replace('runner: process', 'runner: docker\nimage: busybox');
    expect(() => parseExperiment('/x/hello.yaml', `${docker}${line}\n`)).toThrow(message);
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
