import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../../config/src';
import { DOCKER_UNREACHABLE_CODES } from '../../../docker/src';
import type { ContainerEngine } from './docker.engine';
import { containerOptions, containerUser, DockerRunner, ownOpenFilesLimit } from './docker.runner';
import type { RunSpec } from './runner';
import { jobPathsIn } from '../store/results.store';

const HOST = 'unix:///run/fake-docker.sock';

/** An engine whose create() fails with `err`; nothing else is reached in these tests. */
function failingEngine(err: Error): ContainerEngine {
  const unused = () => Promise.reject(new Error('not expected in this test'));
  return {
    info: unused,
    create: () => Promise.reject(err),
    attach: unused,
    start: unused,
    wait: unused,
    inspectEnd: async () => undefined,
    labelsOf: async () => undefined,
    kill: async () => undefined,
    remove: async () => undefined,
    listByLabel: async () => [],
  };
}

function spec(): RunSpec {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-dock-'));
  for (const d of ['input', 'output', 'logs']) mkdirSync(path.join(dir, d));
  return {
    jobId: 'job-1',
    experiment: {
      name: 'd',
      runner: 'docker',
      image: 'busybox',
      command: ['true'],
      gpus: 0,
      attempts: 1,
      env: {},
      params: {},
      file: 'd.yaml',
    },
    paths: jobPathsIn(dir),
    gpus: [],
    user: { uid: process.getuid!() },
    signal: new AbortController().signal,
    onProgress: () => undefined,
  };
}

async function runWith(err: Error) {
  const runner = new DockerRunner({
    engine: failingEngine(err),
    host: HOST,
    workerName: 'w1',
    killGraceMs: 100,
    log: silentLogger(),
  });
  try {
    return await runner.run(spec());
  } finally {
    runner.close();
  }
}

const coded = (code: string) => Object.assign(new Error(`connect ${code} /x.sock`), { code });

describe('DockerRunner: Docker unreachable', () => {
  it.each([...DOCKER_UNREACHABLE_CODES])(
    'lets the job wait without using a try when the engine fails with %s',
    async (code) => {
      expect(await runWith(coded(code))).toEqual({
        kind: 'unavailable',
        reason: `Docker Engine at ${HOST} is unreachable: connect ${code} /x.sock`,
      });
    },
  );

  it('fails the try on any other engine error', async () => {
    expect(await runWith(coded('EPERM'))).toEqual({
      kind: 'error',
      message: 'docker: connect EPERM /x.sock',
    });
    const engineSaid = Object.assign(new Error('(HTTP code 500) server error'), {
      statusCode: 500,
      json: { message: 'something broke' },
    });
    expect(await runWith(engineSaid)).toEqual({
      kind: 'error',
      message: 'docker: something broke',
    });
  });
});

describe('containerOptions: what a container gets by default, and per experiment', () => {
  const GiB = 1024 ** 3;
  const withExp = (extra: Partial<RunSpec['experiment']>, uid = 1000): RunSpec => {
    const s = spec();
    return { ...s, user: { uid, gid: uid }, experiment: { ...s.experiment, ...extra } };
  };

  it('limits processes, memory (90% of the host), core dumps and open files, with a read-only image', () => {
    const hc = containerOptions(withExp({}), 'w1', 10 * GiB).HostConfig!;
    expect(hc).toMatchObject({
      PidsLimit: 4096,
      Memory: Math.floor(9 * GiB),
      MemorySwap: Math.floor(9 * GiB),
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${GiB}` },
      LogConfig: { Type: 'none', Config: {} },
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
    });
    const nofile = Math.min(65536, ownOpenFilesLimit() ?? Infinity);
    expect(hc.Ulimits).toEqual([
      { Name: 'nofile', Soft: nofile, Hard: nofile },
      { Name: 'core', Soft: 0, Hard: 0 },
    ]);
  });

  it('takes each limit from the experiment when it sets one', () => {
    const hc = containerOptions(
      withExp({
        memoryBytes: 'unlimited',
        pids: 'unlimited',
        tmpBytes: 2 * GiB,
        writableRootfs: true,
        ulimits: { nofile: { soft: 1024, hard: 2048 }, memlock: { soft: -1, hard: -1 } },
      }),
      'w1',
      10 * GiB,
    ).HostConfig!;
    expect(hc.Memory).toBeUndefined();
    expect(hc.MemorySwap).toBeUndefined();
    expect(hc.PidsLimit).toBe(-1);
    expect(hc.ReadonlyRootfs).toBe(false);
    expect(hc.Tmpfs).toEqual({ '/tmp': `rw,nosuid,nodev,size=${2 * GiB}` });
    expect(hc.Ulimits).toEqual([
      { Name: 'nofile', Soft: 1024, Hard: 2048 },
      { Name: 'core', Soft: 0, Hard: 0 },
      { Name: 'memlock', Soft: -1, Hard: -1 },
    ]);
    expect(
      containerOptions(withExp({ memoryBytes: 512 * 1024 ** 2, pids: 64 }), 'w1').HostConfig,
    ).toMatchObject({ Memory: 512 * 1024 ** 2, MemorySwap: 512 * 1024 ** 2, PidsLimit: 64 });
  });

  it('never runs as root unless the experiment says user: root', () => {
    expect(containerOptions(withExp({}, 1000), 'w1').User).toBe('1000:1000');
    expect(containerOptions(withExp({}, 0), 'w1').User).toBe('65534:65534');
    expect(containerUser(withExp({}, 0))).toEqual({ uid: 65534, gid: 65534 });
    expect(containerOptions(withExp({ runAsRoot: true }, 0), 'w1').User).toBe('0:0');
  });

  it('gives the job a writable HOME in /tmp unless its env says otherwise', () => {
    expect(containerOptions(withExp({}), 'w1').Env).toContain('HOME=/tmp');
    const own = containerOptions(withExp({ env: { HOME: '/job/output' } }), 'w1').Env!;
    expect(own).toContain('HOME=/job/output');
    expect(own).not.toContain('HOME=/tmp');
  });
});
