import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import {
  describeConfig,
  NestPinoLogger,
  type Logger,
  type WorkerConfig,
} from '../../../libs/config/src';
import { createRegistry, createTunnelMetrics } from '../../../libs/metrics/src';
import { startWorkerTunnels } from './tunnel';
import { WorkerModule } from './worker.module';

/** A running daemon: `close()` stops it cleanly (SIGTERM/SIGINT); `reload()` on SIGHUP. */
export interface Daemon {
  close(): Promise<void>;
  reload?(): Promise<void>;
}

/** Starts the worker daemon: the job API on API_LISTEN, then the tunnels that lead to it. */
export async function startWorker(config: WorkerConfig, log: Logger): Promise<Daemon> {
  log.info({ config: describeConfig(config) }, 'worker starting');
  const app = await NestFactory.create<NestExpressApplication>(WorkerModule.forRoot(config, log), {
    logger: new NestPinoLogger(log),
    abortOnError: false,
  });
  app.disable('x-powered-by');
  await app.listen(config.apiListen.port, config.apiListen.host);
  const url = await app.getUrl();
  // Tunnels come up last, so the first stream through them finds the API listening.
  const registry = createRegistry('worker');
  const tunnels = await startWorkerTunnels(config, log, createTunnelMetrics(registry));
  log.info({ api: url }, 'worker ready');
  return {
    reload: async () => {
      await tunnels.reload();
      log.info('tunnel keys reloaded');
    },
    close: async () => {
      await tunnels.close();
      await app.close();
      log.info('worker stopped');
    },
  };
}
