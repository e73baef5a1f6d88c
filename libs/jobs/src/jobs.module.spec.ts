import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NestFactory } from '@nestjs/core';
import { loadWorkerConfig, silentLogger } from '../../config/src';
import { JobsModule } from './jobs.module';
import * as redis from './queue/redis-connection';
import { JobIsolation } from './runner/isolation';

jest.mock('./queue/redis-connection', () => ({
  ...jest.requireActual('./queue/redis-connection'),
  openRedis: jest.fn(),
}));
const openRedis = redis.openRedis as jest.MockedFunction<typeof redis.openRedis>;

/** JobsModule's providers start in order: what fails first stops what comes after it. */
describe('JobsModule start order', () => {
  let dir: string;
  let config: ReturnType<typeof loadWorkerConfig>;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-jobs-module-'));
    config = loadWorkerConfig({
      TUNNEL_KEY_FILE: '/unused',
      DATA_FOLDER: path.join(dir, 'data'),
      EXPERIMENTS_DIR: dir,
      GPU_DEVICES: 'none',
    });
    openRedis.mockReset();
  });
  afterEach(() => {
    jest.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = () =>
    NestFactory.createApplicationContext(JobsModule.forRoot(config, silentLogger()), {
      logger: false,
      abortOnError: false,
    });

  it('stops at a bad experiment file before Redis is opened', async () => {
    writeFileSync(path.join(dir, 'bad.yaml'), 'name: bad\nrunner: process\ncommand: 1\n');
    await expect(start()).rejects.toThrow(/bad\.yaml/);
    expect(openRedis).not.toHaveBeenCalled();
  });

  it('opens Redis after the experiments, and touches the host (job isolation) only once it answers', async () => {
    writeFileSync(
      path.join(dir, 'ok.yaml'),
      'name: ok\nrunner: process\ncommand: ["true"]\nparams: { type: object }\n',
    );
    const detect = jest.spyOn(JobIsolation, 'detect');
    openRedis.mockRejectedValue(new Error('redis-server would not start'));
    await expect(start()).rejects.toThrow('redis-server would not start');
    expect(openRedis).toHaveBeenCalledWith(config.redisUrl, config.dataFolder, expect.anything());
    expect(detect).not.toHaveBeenCalled();
  });
});
