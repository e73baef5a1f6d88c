import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import {
  describeConfig,
  NestPinoLogger,
  type Logger,
  type WorkerConfig,
} from '../../../libs/config/src';
import { WorkerModule } from './worker.module';

/** A running daemon: `close()` stops it cleanly (used on SIGTERM/SIGINT and by tests). */
export interface Daemon {
  close(): Promise<void>;
}

/** Starts the worker daemon: the job API on API_LISTEN. */
export async function startWorker(config: WorkerConfig, log: Logger): Promise<Daemon> {
  log.info({ config: describeConfig(config) }, 'worker starting');
  const app = await NestFactory.create<NestExpressApplication>(WorkerModule.forRoot(config, log), {
    logger: new NestPinoLogger(log),
    abortOnError: false,
  });
  app.disable('x-powered-by');
  await app.listen(config.apiListen.port, config.apiListen.host);
  const url = await app.getUrl();
  log.info({ api: url }, 'worker ready');
  return {
    close: async () => {
      await app.close();
      log.info('worker stopped');
    },
  };
}
