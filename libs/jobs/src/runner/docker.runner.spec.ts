import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../../config/src';
import { DOCKER_UNREACHABLE_CODES } from '../../../health/src/containers/probe';
import type { ContainerEngine } from './docker.engine';
import { DockerRunner } from './docker.runner';
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
  it('uses the one shared list of unreachable codes (libs/health)', () => {
    expect([...DOCKER_UNREACHABLE_CODES].sort()).toEqual([
      'EACCES',
      'ECONNREFUSED',
      'ECONNRESET',
      'EHOSTUNREACH',
      'ENOENT',
      'EPIPE',
      'ETIMEDOUT',
    ]);
  });

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
