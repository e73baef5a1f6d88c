import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BullModule, getQueueToken } from '@nestjs/bullmq';
import { NestFactory } from '@nestjs/core';
import { loadWorkerConfig, silentLogger } from '../../config/src';
import { JobsModule } from './jobs.module';
import { JobsRuntime } from './jobs.runtime';
import { JobQueue, QUEUE_NAME, type BullQueue } from './queue/bullmq.adapter';
import { JobRecordsRepository } from './queue/job-records.repository';
import * as redis from './queue/redis-connection';
import { JobIsolation } from './runner/isolation';

jest.mock('./queue/redis-connection', () => ({
  ...jest.requireActual('./queue/redis-connection'),
  openRedis: jest.fn(),
}));
const openRedis = redis.openRedis as jest.MockedFunction<typeof redis.openRedis>;

/** Every BullMQ queue that BullModule makes, as it makes it (its documented `queueClass`). */
const queuesMade: BullQueue[] = [];
type QueueClass = new (name: string, opts?: object) => BullQueue;
const BullMQQueue = (BullModule as unknown as { _queueClass: QueueClass })._queueClass;
beforeAll(() => {
  BullModule.queueClass = class extends BullMQQueue {
    constructor(name: string, opts?: object) {
      super(name, opts);
      queuesMade.push(this);
    }
  };
});
afterAll(() => {
  BullModule.queueClass = BullMQQueue;
});
/** What Nest goes on making after NestFactory.create rejected (the rest of its providers). */
const settled = () => new Promise((resolve) => setTimeout(resolve, 100));

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
    queuesMade.length = 0;
  });
  afterEach(async () => {
    await Promise.all(queuesMade.map((q) => q.close()));
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
    // Nor the queues, on BullMQ's default connection (localhost:6379) for want of the shared config.
    await settled();
    expect(queuesMade).toHaveLength(0);
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
    await settled();
    expect(queuesMade).toHaveLength(0);
  });

  it("hands JobQueue the queues registered through BullModule, on REDIS_BACKEND's connection", async () => {
    writeFileSync(
      path.join(dir, 'ok.yaml'),
      'name: ok\nrunner: process\ncommand: ["true"]\nparams: { type: object }\n',
    );
    // A Redis that is not there: nothing here needs one to answer.
    const socket = path.join(dir, 'no-redis.sock');
    const stop = jest.fn(async () => undefined);
    openRedis.mockResolvedValue({ options: { path: socket }, describe: socket, stop });
    jest.spyOn(JobRecordsRepository.prototype, 'init').mockResolvedValue();
    jest.spyOn(JobQueue.prototype, 'waitUntilReady').mockResolvedValue();
    jest.spyOn(JobIsolation, 'detect').mockReturnValue(JobIsolation.proc());
    jest.spyOn(JobsRuntime.prototype, 'start').mockResolvedValue();
    const app = await start();
    try {
      const byToken = [QUEUE_NAME.cpu, QUEUE_NAME.gpu].map((name) =>
        app.get<string, BullQueue>(getQueueToken(name), { strict: false }),
      );
      const queues = app.get(JobQueue, { strict: false }).bullQueues();
      expect(queues).toHaveLength(2);
      queues.forEach((q, i) => expect(q).toBe(byToken[i]));
      expect(queuesMade).toEqual(byToken);
      expect(queues.map((q) => q.name)).toEqual(['gsc-cpu', 'gsc-gpu']);
      for (const q of queues) {
        expect(q.opts).toMatchObject({
          prefix: 'bull',
          connection: { path: socket, maxRetriesPerRequest: 3 },
        });
        expect(q.listenerCount('error')).toBeGreaterThan(0);
      }
    } finally {
      await app.close();
    }
    expect(stop).toHaveBeenCalled();
    expect(queuesMade.every((q) => q.closing !== undefined)).toBe(true);
  });
});
